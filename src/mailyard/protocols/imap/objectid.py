"""OBJECTID (RFC 8474): the wire form of the ids of mailboxes and messages.

An objectid is 1*255(ALPHA / DIGIT / "_" / "-") (RFC 8474 7); a letter
first keeps it from being taken for a number (RFC 8474 8). MAILBOXID is the
store's mailbox id (kept across RENAME, never handed out again); EMAILID is
the stored body's id, so copies of a message share it (RFC 8474 5.1 allows
this: same content, same id). THREADID is NIL for every message (RFC 8474
5.2 allows a server without threads): no thread is computed at delivery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backend import MailboxRecord

_MAILBOX, _EMAIL = "F", "M"


def mailbox_id(box: MailboxRecord) -> str:
    return f"{_MAILBOX}{box.id}"


def email_id(body_id: int) -> str:
    return f"{_EMAIL}{body_id}"


def parse_email_id(text: str) -> int | None:
    """The body id an EMAILID names; None for one this server never gave out."""
    if text[:1] != _EMAIL or not text[1:].isdigit() or not text[1:].isascii() or len(text) > 20:
        return None
    return int(text[1:])
