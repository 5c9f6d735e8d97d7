"""IMAP session glue: executes the engine's commands against the store.

- core.py: the connection loop, dispatch, untagged updates of the selected
  mailbox (RFC 9051 5.2, 7.5.1) and IDLE (RFC 2177)
- auth.py: LOGIN, AUTHENTICATE, ENABLE, ID, CAPABILITY
- mailboxes.py: CREATE DELETE RENAME (UN)SUBSCRIBE LIST LSUB NAMESPACE STATUS
- selection.py: SELECT/EXAMINE with CONDSTORE/QRESYNC, CLOSE, UNSELECT, EXPUNGE
- messages.py: FETCH, STORE, COPY, MOVE, APPEND
- searching.py: SEARCH / ESEARCH
"""
