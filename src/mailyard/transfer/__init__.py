"""Moving mail in and out of the store: import from mbox files, Maildir
trees and live IMAP servers, export to Maildir++ and mboxrd.

The layer sits below ``cli/`` and above ``store/``: readers turn a source
into ``Incoming`` messages (exact bytes, flags, INTERNALDATE and a source key),
``importer.Importer`` writes them in batches through the store's one append
path (``Store.append_many``: quota applies) and remembers every source key in
``DATA/import-state.sqlite`` so a re-run imports nothing twice.
"""
