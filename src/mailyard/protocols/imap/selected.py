"""Message sequence numbers of a selected mailbox (RFC 9051 2.3.1.2).

A session's view of its mailbox: the UIDs in sequence order. The view changes
only when the session *announces* a change (EXISTS grows it, EXPUNGE shrinks
it), so numbers stay what the client believes (RFC 9051 7.5.1).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable

from .commands import SequenceSet


class SequenceError(ValueError):
    """A message sequence number beyond the mailbox size (RFC 9051 9: tagged BAD)."""


class MessageMap:
    """UIDs of the selected mailbox, ascending; index + 1 is the sequence number."""

    def __init__(self, uids: Iterable[int] = ()) -> None:
        self.uids = array("Q", sorted(uids))

    def __len__(self) -> int:
        return len(self.uids)

    @property
    def max_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def uid_of(self, seq: int) -> int:
        return self.uids[seq - 1]

    def seq_of(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None

    def resolve_seqs(self, seqset: SequenceSet) -> list[tuple[int, int]]:
        """(seq, uid) pairs for a message sequence set, ascending, no duplicates."""
        n = len(self.uids)
        if n == 0 or (seqset.highest() or 0) > n:
            raise SequenceError("message sequence number out of range")
        ranges = list(seqset.resolve(n))
        if len(ranges) == 1:  # "n" or "a:b" or "1:*": no set to build and sort
            a, b = ranges[0]
            return list(zip(range(a, b + 1), self.uids[a - 1 : b], strict=True))
        idx: set[int] = set()
        for a, b in ranges:
            idx.update(range(a - 1, b))
        return [(i + 1, self.uids[i]) for i in sorted(idx)]

    def resolve_uids(self, uidset: SequenceSet) -> list[tuple[int, int]]:
        """(seq, uid) pairs for the UIDs of a uid-set that exist (RFC 9051 6.4.9:
        non-existent UIDs are ignored; ``*`` is the largest UID)."""
        largest = self.max_uid
        ranges = list(uidset.resolve(largest))
        if len(ranges) == 1:  # the common case: no set to build and sort
            lo = bisect_left(self.uids, ranges[0][0])
            hi = bisect_right(self.uids, ranges[0][1])
            return list(zip(range(lo + 1, hi + 1), self.uids[lo:hi], strict=True))
        idx: set[int] = set()
        for a, b in ranges:
            lo = bisect_left(self.uids, a)
            hi = bisect_right(self.uids, b)
            idx.update(range(lo, hi))
        return [(i + 1, self.uids[i]) for i in sorted(idx)]

    def append(self, uids: Iterable[int]) -> None:
        """New messages (announce with EXISTS); UIDs are above all known ones."""
        for uid in sorted(uids):
            if uid > self.max_uid:
                self.uids.append(uid)

    def expunge(self, uids: Iterable[int]) -> list[int]:
        """Remove UIDs; return the sequence numbers to announce, in order, each
        valid at the time of its EXPUNGE response (RFC 9051 7.5.1)."""
        out: list[int] = []
        for uid in sorted(set(uids)):
            seq = self.seq_of(uid)
            if seq is not None:
                del self.uids[seq - 1]
                out.append(seq)
        return out
