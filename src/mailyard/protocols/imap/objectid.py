"""OBJECTID (RFC 8474): the wire form of the ids of mailboxes and messages.

An objectid is 1*255(ALPHA / DIGIT / "_" / "-") (RFC 8474 7); a letter
first keeps it from being taken for a number (RFC 8474 8). MAILBOXID is the
store's mailbox id (kept across RENAME, never handed out again). EMAILID
and THREADID come from the backend (``get_derived`` fields "email_id" and
"thread_id"), opaque keyed hashes of the stored body's id and of its
thread's (message/objectids.py): copies of a message share their EMAILID
(RFC 8474 5.1 allows this: same content, same id), and messages the server
linked by References / In-Reply-To / Message-ID share their THREADID (RFC
8474 5.2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backend import MailboxRecord

_MAILBOX = "F"


def mailbox_id(box: MailboxRecord) -> str:
    return f"{_MAILBOX}{box.id}"
