"""Flag rules (RFC 9051 2.3.2, RFC 3501 2.3.2 \\Recent) and their wire form.

- Clients may set the five permanent system flags and any keyword; \\Recent
  and unknown system flags are refused.
- \\Recent is per session: a new message is \\Recent in the first session
  told of it (the store keeps the claims; `RecentUids` keeps this session's
  share), and only a rev1 client sees it (RFC 9051 dropped the flag).
- FLAGS are written in the order of `response.flag_list`; the few distinct
  flag sets of a mailbox are serialised once each.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .response import flag_list

if TYPE_CHECKING:
    from .backend import MessageRecord

PERMANENT_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
SYSTEM_FLAGS = frozenset(f.lower() for f in PERMANENT_FLAGS)
RECENT = frozenset({"\\Recent"})


def flags_from_client(flags: Sequence[str]) -> tuple[list[str], str | None]:
    """Validate flags for STORE/APPEND: keywords and the five system flags
    (in their canonical spelling); \\Recent and unknown system flags are
    refused (RFC 9051 2.3.2). Returns (flags, problem)."""
    out: list[str] = []
    for f in flags:
        if f.startswith("\\"):
            if f.lower() not in SYSTEM_FLAGS:
                return [], f"flag {f} cannot be set"
            f = next(p for p in PERMANENT_FLAGS if p.lower() == f.lower())
        out.append(f)
    return out, None


class RecentUids:
    """The UIDs that are \\Recent in this session, as ranges (lo, hi]: each
    claim in the store (claim_recent) hands a session the UIDs above the last
    claim up to the highest it announced, so a few ranges describe even a
    mailbox of new messages, and an idle connection keeps no per-message set
    (RFC 3501 2.3.2).

    The ranges are kept ascending and disjoint, with their upper ends in a
    list of their own: a session of a busy mailbox claims once per command
    that noticed new mail, so it can hold hundreds of ranges, and both the
    test of one UID (FETCH FLAGS, per message) and the count (the RECENT
    response, per command that noticed new mail) are bisections, not walks
    over every range."""

    __slots__ = ("_his", "ranges")

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []
        self._his: list[int] = []  # the ranges' upper ends, ascending

    def add(self, above: int, upto: int) -> None:
        if upto <= above:
            return
        ranges = self.ranges
        if ranges and above <= ranges[-1][1]:
            lo, hi = ranges[-1]
            if above >= lo:  # touches or overlaps the last range: extend it
                ranges[-1] = (lo, max(hi, upto))
                self._his[-1] = max(hi, upto)
                return
            self._normalise((above, upto))
            return
        ranges.append((above, upto))
        self._his.append(upto)

    def _normalise(self, extra: tuple[int, int]) -> None:
        """Sort and merge the ranges with ``extra``, which came out of order."""
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted([*self.ranges, extra]):
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self.ranges = merged
        self._his = [hi for _, hi in merged]

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __contains__(self, uid: object) -> bool:
        # the first range ending at or above uid is the only one that can hold it
        i = bisect_left(self._his, uid)  # type: ignore[call-overload]
        return i < len(self.ranges) and self.ranges[i][0] < uid  # type: ignore[operator]

    def count(self, uids: Sequence[int]) -> int:
        """How many of ``uids`` (ascending: a view's) are \\Recent."""
        above = getattr(uids, "index_right", None)  # UidRuns: a bisection over its runs
        if above is None:
            return sum(bisect_right(uids, hi) - bisect_right(uids, lo) for lo, hi in self.ranges)
        return sum(above(hi) - above(lo) for lo, hi in self.ranges)


_FLAG_BYTES: dict[frozenset[str], bytes] = {}
_FLAG_BYTES_RECENT: dict[frozenset[str], bytes] = {}  # keyed by the flags without \\Recent


def flags_bytes(flags: frozenset[str]) -> bytes:
    """``(\\Seen ...)`` in the order of ``flag_list``. Few distinct flag sets
    exist, so each is serialised once (FETCH 1:* FLAGS of a large mailbox)."""
    b = _FLAG_BYTES.get(flags)
    if b is None:
        b = b"(" + b" ".join(f.encode("utf-8") for f in flag_list(flags)) + b")"
        if len(_FLAG_BYTES) < 4096:
            _FLAG_BYTES[flags] = b
    return b


def flags_with_recent(flags: frozenset[str]) -> bytes:
    """``flags_bytes(flags | {\\Recent})`` without a new frozenset per message."""
    b = _FLAG_BYTES_RECENT.get(flags)
    if b is None:
        b = flags_bytes(flags | RECENT)
        if len(_FLAG_BYTES_RECENT) < 4096:
            _FLAG_BYTES_RECENT[flags] = b
    return b


def session_flags(info: MessageRecord, recent: RecentUids | None) -> bytes:
    """A message's FLAGS as a session reports them: with \\Recent when the
    session saw the message first. ``recent`` is None for a rev2 client."""
    if recent and info.uid in recent:
        return flags_with_recent(info.flags)
    return flags_bytes(info.flags)


def flags_reporter(recent: RecentUids | None) -> Callable[[MessageRecord], bytes]:
    """`session_flags` for one command over many messages: the \\Recent
    question is settled once, so a session without \\Recent messages (every
    rev2 client) formats FLAGS with one dict lookup per message."""
    if recent:
        return lambda info: session_flags(info, recent)
    return lambda info: flags_bytes(info.flags)
