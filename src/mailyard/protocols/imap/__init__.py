"""IMAP4rev2 (RFC 9051) / IMAP4rev1 (RFC 3501) server protocol, sans-I/O.

- framing.py: lines and literals from the byte stream, with size limits
- reader.py, parser.py, search_parser.py, fetch_parser.py: the command grammar
- commands.py: parsed command dataclasses
- response.py, utf7.py: response serialisation, modified UTF-7
- engine.py: connection state machine and event loop interface
- selected.py: the message sequence number map of a selected mailbox
- search.py: evaluating a search program against message data
- fetch.py: body sections, partial fetch, BODYSTRUCTURE/ENVELOPE output
- names.py: mailbox-name validation and LIST pattern matching
"""

from .engine import CLOSED, NEED_DATA, AuthResponse, IdleDone, ImapEngine, State
from .framing import Limits

__all__ = ["CLOSED", "NEED_DATA", "AuthResponse", "IdleDone", "ImapEngine", "Limits", "State"]
