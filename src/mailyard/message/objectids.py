"""Opaque ids of stored messages and threads (RFC 8474 EMAILID / THREADID).

What: ``opaque_id`` turns a store's internal number (a body id, a thread's
first body id) into an objectid, ``1*255(ALPHA / DIGIT / "_" / "-")`` with a
letter first (RFC 8474 7 and 8), by a keyed hash with the store's secret.

Why: the internal numbers count up, so handing them out would tell every
client how much mail the server has stored between two of its messages, and
let it guess ids of messages that are not its own. A keyed hash (BLAKE2b in
its keyed mode, RFC 7693 2.5: a MAC, and one C call, some three times cheaper
than ``hmac.new``) gives ids that reveal nothing without the secret and stay
the same for the life of the data directory (RFC 8474 5.1: immutable). It is
not reversed: SEARCH EMAILID / THREADID hashes the ids of the selected
mailbox's messages and compares (a few microseconds each), so no second
index of ids has to be kept. 120 bits make a collision between two of an
account's messages vanishingly unlikely (about 2^-60 at a billion messages).
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["EMAIL", "THREAD", "opaque_id"]

EMAIL = "M"  # EMAILID: a stored body (copies of a message share it, RFC 8474 5.1)
THREAD = "T"  # THREADID (RFC 8474 5.2)
_DIGEST = 15  # octets: 24 base32 characters, no padding


def opaque_id(key: bytes, kind: str, number: int) -> str:
    """The objectid of ``number`` in the id space ``kind`` (EMAIL, THREAD):
    ``kind`` then 24 characters of base32 (A-Z, 2-7)."""
    digest = hashlib.blake2b(b"%s%d" % (kind.encode("ascii"), number), key=key[:64],
                             digest_size=_DIGEST).digest()
    return kind + base64.b32encode(digest).decode("ascii")
