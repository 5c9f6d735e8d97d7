"""``mailyard mail ...``: the mail user agent on the command line.

Every command works on one account (``--account NAME``, else the default or
only one) kept in the client configuration directory (``--config-dir``,
``$MAILYARD_CLIENT_HOME``, else the platform's user config directory).
Messages are named by their IMAP UID in a folder (``--folder``, default
INBOX), as ``ls`` shows them; several at once as ``3,5,9-12``.

Errors are one line naming the server and its reply; exit status 1.
"""

# One module per group of commands, each with its parsers: ``accounts``
# (account), ``sending`` (send, reply, forward, redirect), ``viewing`` (ls,
# search, read), ``folders`` (folders, move, delete, flag), ``fetch`` (POP3);
# ``common`` holds what they share and ``parser`` puts the tree together.

from .parser import add_mail_parser

__all__ = ["add_mail_parser"]
