"""IMAP4rev2 (RFC 9051) / IMAP4rev1 (RFC 3501) server protocol, sans-I/O.

The wire:

- framing.py: lines and literals from the byte stream, with size limits
- reader.py, parser.py, search_parser.py, fetch_parser.py: the command grammar
- commands.py: parsed command dataclasses
- response.py, utf7.py: response serialisation, modified UTF-7
- engine.py: connection state machine and event loop interface

The semantics, answered against the interfaces of backend.py:

- session.py: one session (`ImapSession.execute` answers a command)
- handlers/: the commands, one module per group
- backend.py: what IMAP needs from outside (ImapBackend, ImapLogin, ImapIO)
- selected.py: the selected mailbox's view and its untagged updates
- fetch_plan.py, fetch.py: FETCH plans, item encoding, body sections, BINARY
- search.py: evaluating a search program; ESEARCH / SEARCHRES result forms
- flags.py: flag rules, \\Recent, FLAGS on the wire
- names.py: mailbox-name validation and LIST pattern matching
- memory.py: an in-memory backend and a hand-driven connection (tests, fuzzing)
"""

from ..contract import FLUSH, NEED_DATA, PAUSED, AbuseBudgets, Closed, ProtocolMisuse
from .engine import AuthResponse, IdleDone, ImapEngine, State
from .framing import Limits

__all__ = [
    "FLUSH", "NEED_DATA", "PAUSED", "AbuseBudgets", "AuthResponse", "Closed", "IdleDone", "ImapEngine", "Limits",
    "ProtocolMisuse", "State",
]
