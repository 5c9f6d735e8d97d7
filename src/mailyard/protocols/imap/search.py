"""Evaluating a search program (RFC 9051 6.4.4) against message data, and
the forms of its result (``SEARCH``, ``ESEARCH``, SEARCHRES: `result_form`).

Pure: the session supplies each message's index data and derived header fields,
the current time (for RFC 5032 OLDER/YOUNGER) and the answers of the full-text
index for BODY and TEXT keys (ImapBackend.search_text), so SEARCH never scans
bodies. A program is bounded (MAX_SEARCH_KEYS) and evaluated over the whole
mailbox at once (evaluate_program), each distinct key once; `matches` tests
one message.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress

from ...message.address import search_value
from ...message.dates import sent_day
from .commands import SearchKey, SequenceSet
from .response import Atom, format_uid_list_ordered, format_uid_set


@dataclass(slots=True)
class SearchMessage:
    seq: int
    uid: int
    flags: frozenset[str]
    internal_date: float
    size: int
    modseq: int
    # lower-case field name -> decoded values; None when no key needs them
    headers: Mapping[str, Sequence[str]] | None = None
    save_date: float | None = None  # RFC 8514; None: the mailbox keeps no save dates
    # the day SENT* compare (message/dates.py sent_day), when ``headers`` is
    # None: the backend's ``sent_dates`` answered it for the whole mailbox
    sent: dt.date | None = None


@dataclass
class SearchContext:
    max_seq: int
    max_uid: int
    now: float = 0.0
    saved: frozenset[int] = frozenset()  # RFC 5182 "$": UIDs of the saved result
    text_hits: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    # (lower-case field name, string) -> UIDs, from the store's header index
    # (store.search_headers); a pair not here is evaluated on m.headers
    header_hits: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    # (EMAILID / THREADID, objectid) -> UIDs (RFC 8474 6)
    id_hits: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    # UID -> its stored flags (without the session's \Recent), for FLAG keys
    # answered over the whole mailbox at once (evaluate_program); None: per message
    flags: Callable[[int], frozenset[str]] | None = None


def walk(key: SearchKey) -> Iterator[SearchKey]:
    yield key
    for arg in key.args:
        if isinstance(arg, SearchKey):
            yield from walk(arg)


_FIELD_KEYS = {"FROM", "TO", "CC", "BCC", "SUBJECT"}
_SENT_KEYS = {"SENTBEFORE", "SENTON", "SENTSINCE"}


_ID_KEYS = {"EMAILID", "THREADID"}


def id_queries(key: SearchKey) -> set[tuple[str, str]]:
    """(EMAILID or THREADID, objectid) pairs of a program (RFC 8474 6)."""
    return {(k.name, k.args[0]) for k in walk(key) if k.name in _ID_KEYS}


def needs_sent(key: SearchKey) -> bool:
    """Whether the program has a SENTBEFORE / SENTON / SENTSINCE key (the
    backend's ``sent_dates`` answers them)."""
    return any(k.name in _SENT_KEYS for k in walk(key))


def needs_headers(key: SearchKey, indexed: bool = True) -> bool:
    """Whether messages need their header fields (``SearchMessage.headers``):
    with the header index (``header_queries``) only the SENT* keys do."""
    names = _SENT_KEYS if indexed else _SENT_KEYS | _FIELD_KEYS | {"HEADER"}
    return any(k.name in names for k in walk(key))


def header_queries(key: SearchKey) -> set[tuple[str, str]]:
    """(lower-case field name, string) pairs of FROM/TO/CC/BCC/SUBJECT/HEADER
    keys, to answer from the store's header index first."""
    out: set[tuple[str, str]] = set()
    for k in walk(key):
        if k.name in _FIELD_KEYS:
            out.add((k.name.lower(), k.args[0]))
        elif k.name == "HEADER":
            out.add((k.args[0].lower(), k.args[1]))
    return out


def text_queries(key: SearchKey) -> set[tuple[str, str]]:
    """(BODY|TEXT, string) pairs to answer from the full-text index first."""
    return {(k.name, k.args[0]) for k in walk(key) if k.name in ("BODY", "TEXT")}


def uses_modseq(key: SearchKey) -> bool:
    return any(k.name == "MODSEQ" for k in walk(key))


def _utc_date(ts: float) -> dt.date:
    return dt.datetime.fromtimestamp(ts, dt.UTC).date()


def _contains(name: str, values: Sequence[str] | None, needle: str) -> bool:
    # RFC 9051 6.4.4: case-insensitive substring match, on the field text and
    # (address fields) the addresses as parsed
    if not values:
        return False
    n = needle.casefold()
    return any(n in search_value(name, v).casefold() for v in values)


def _in_set(s: SequenceSet, n: int, largest: int, saved: frozenset[int] | None = None) -> bool:
    if s.saved:
        return saved is not None and n in saved
    return s.contains(n, largest)


# The most search keys (leaf criteria: FROM x, SEEN, LARGER n, a sequence
# set ...; not the AND/OR/NOT combining them) one SEARCH, SORT or THREAD
# program may hold (RFC 5530 LIMIT). Clients send a few: a quick filter is
# FROM/TO/CC/SUBJECT/BODY of one string under ORs (Thunderbird, Apple Mail),
# a saved search or a mutt pattern a dozen or two, a tag filter a KEYWORD
# per tag; a hundred leaves several times their room. Each distinct text or
# header key is an index query, and each a pass over the mailbox, so the
# bound is what keeps one command's work in proportion to the mailbox.
MAX_SEARCH_KEYS = 100

_COMBINING = frozenset(("AND", "OR", "NOT"))


def program_size(key: SearchKey, stop: int = MAX_SEARCH_KEYS) -> tuple[int, int]:
    """The number of search keys (leaves) and of nodes of a program, the
    count ending once the keys pass ``stop`` (so what it costs is bounded
    by the bound, not by the command line); iterative, any depth."""
    keys = nodes = 0
    todo = [key]
    while todo and keys <= stop:
        k = todo.pop()
        nodes += 1
        if k.name in _COMBINING:
            todo.extend(k.args)
        else:
            keys += 1
    return keys, nodes


# bytes 0/1 <-> the digits of a mask's binary form
_TO_DIGITS = bytes.maketrans(b"\x00\x01", b"01")
_FROM_DIGITS = bytes.maketrans(b"01", b"\x00\x01")


def evaluate_program(key: SearchKey, ctx: SearchContext, seqs: Sequence[int], uids: Sequence[int],
                     messages: Callable[[], Sequence[SearchMessage]]) -> list[int]:
    """The positions (indexes into ``uids``) of the messages matching
    ``key``, for the messages ``uids`` (ascending) whose sequence numbers
    are ``seqs``; ``messages()`` gives their `SearchMessage` in the same
    order, asked at most once, only when some key is evaluated per message.

    The result of every key is a set of positions held as the bits of one
    int (n/8 bytes for n messages), combined as it comes (AND stops once
    nothing is left, OR once everything is in), so the work follows the
    distinct keys times the mailbox, whatever the program repeats: an
    identical subtree is evaluated once (`_Program.memo`), a flag or
    keyword's set once per name, BODY/TEXT, header and EMAILID/THREADID
    keys come from the index answers in ``ctx``, sequence sets from their
    ranges; the other keys are `matches` on each message, once per key."""
    n = len(uids)
    if not n:
        return []
    mask = _Program(ctx, seqs, uids, messages).mask(key)
    picks = format(mask, f"0{n}b").encode("ascii").translate(_FROM_DIGITS)
    return list(compress(range(n), picks))


class _Program:
    """One evaluation of a program over a list of messages: position i of
    the list is the bit 1 << (n - 1 - i) of each mask (the digit i of its
    binary form)."""

    __slots__ = ("ctx", "everything", "flag_masks", "memo", "messages", "n", "seqs", "uids", "_msgs")

    def __init__(self, ctx: SearchContext, seqs: Sequence[int], uids: Sequence[int],
                 messages: Callable[[], Sequence[SearchMessage]]) -> None:
        self.ctx, self.seqs, self.uids, self.messages = ctx, seqs, uids, messages
        self.n = len(uids)
        self.everything = (1 << self.n) - 1
        self.memo: dict[SearchKey, int] = {}
        self.flag_masks: dict[str, int] = {}
        self._msgs: Sequence[SearchMessage] | None = None

    def mask(self, key: SearchKey) -> int:
        negate = False
        while key.name == "NOT":
            key, negate = key.args[0], not negate
        out = self.memo.get(key)
        if out is None:
            out = self.memo[key] = self._combine(key)
        return self.everything ^ out if negate else out

    def _combine(self, key: SearchKey) -> int:
        n = key.name
        if n == "AND":
            out = self.everything
            for x in key.args:
                out &= self.mask(x)
                if not out:
                    break
            return out
        if n == "OR":
            out = 0
            for x in key.args:
                out |= self.mask(x)
                if out == self.everything:
                    break
            return out
        return self._leaf(key)

    def _leaf(self, key: SearchKey) -> int:
        n, ctx = key.name, self.ctx
        if n == "ALL":
            return self.everything
        if n in ("BODY", "TEXT"):
            return self._of_uids(ctx.text_hits.get((n, key.args[0]), ()))
        if n in _FIELD_KEYS or n == "HEADER":
            pair = (n.lower(), key.args[0]) if n != "HEADER" else (key.args[0].lower(), key.args[1])
            hits = ctx.header_hits.get(pair)
            if hits is not None:
                return self._of_uids(hits)
        elif n in _ID_KEYS:
            return self._of_uids(ctx.id_hits.get((n, key.args[0]), ()))
        elif n in ("SEQ", "UID"):
            s: SequenceSet = key.args[0]
            if s.saved:
                return self._of_uids(ctx.saved)
            return self._ranges(self.seqs if n == "SEQ" else self.uids, s, ctx.max_seq if n == "SEQ" else ctx.max_uid)
        elif n == "FLAG" and ctx.flags is not None and key.args[0].lower() != "\\recent":
            # \Recent is the session's (RFC 3501 2.3.2), in the messages only
            return self._flag(key.args[0].lower(), ctx.flags)
        return self._each(key)

    def _of_uids(self, hits: Collection[int]) -> int:
        """The mask of the messages whose UIDs are in ``hits``."""
        if not hits:
            return 0
        return int(bytes(map(hits.__contains__, self.uids)).translate(_TO_DIGITS), 2)

    def _flag(self, want: str, flags: Callable[[int], frozenset[str]]) -> int:
        """The messages with the flag or keyword ``want`` (lower case): once
        per name, and a mailbox has few distinct flag sets, each tested once."""
        out = self.flag_masks.get(want)
        if out is None:
            has: dict[frozenset[str], bool] = {}

            def hit(uid: int) -> bool:
                fs = flags(uid)
                h = has.get(fs)
                if h is None:
                    h = has[fs] = any(f.lower() == want for f in fs)
                return h

            out = self.flag_masks[want] = int(bytes([49 if hit(u) else 48 for u in self.uids]), 2)
        return out

    def _ranges(self, nums: Sequence[int], s: SequenceSet, largest: int) -> int:
        """The messages whose numbers (``nums``, ascending) are in ``s``: each
        range found by bisection, the runs merged, so a set of many ranges
        costs its ranges and the mailbox, not their product."""
        runs = sorted((bisect_left(nums, a), bisect_right(nums, b)) for a, b in s.resolve(largest))
        digits = bytearray(b"0") * self.n
        end = 0
        for lo, hi in runs:
            lo = max(lo, end)
            if hi > lo:
                digits[lo:hi] = b"1" * (hi - lo)
                end = hi
        return int(digits, 2)

    def _each(self, key: SearchKey) -> int:
        """A key evaluated on each message (dates, sizes, SENT*, MODSEQ ...)."""
        if self._msgs is None:
            self._msgs = self.messages()
        ctx = self.ctx
        return int(bytes([49 if matches(key, m, ctx) else 48 for m in self._msgs]), 2)


def matches(key: SearchKey, m: SearchMessage, ctx: SearchContext) -> bool:
    """Does message ``m`` satisfy ``key``?"""
    return _EVAL[key.name](key, m, ctx)


def _hdr(name: str) -> Callable[[SearchKey, SearchMessage, SearchContext], bool]:
    def ev(k: SearchKey, m: SearchMessage, c: SearchContext) -> bool:
        hits = c.header_hits.get((name, k.args[0]))
        if hits is not None:
            return m.uid in hits
        return _contains(name, (m.headers or {}).get(name), k.args[0])

    return ev


def _header(k: SearchKey, m: SearchMessage, c: SearchContext) -> bool:
    hits = c.header_hits.get((k.args[0].lower(), k.args[1]))
    if hits is not None:
        return m.uid in hits
    values = (m.headers or {}).get(k.args[0].lower())
    if k.args[1] == "":
        return values is not None  # RFC 9051 6.4.4: empty string matches presence
    return _contains(k.args[0].lower(), values, k.args[1])


def _sent(cmp: Callable[[dt.date, dt.date], bool]) -> Callable[[SearchKey, SearchMessage, SearchContext], bool]:
    def ev(k: SearchKey, m: SearchMessage, c: SearchContext) -> bool:
        # RFC 9051 6.4.4 SENT*: the Date header, "disregarding time and timezone"
        d = m.sent if m.headers is None else sent_day(m.headers.get("date", ()))
        return d is not None and cmp(d, k.args[0])

    return ev


def _seq(k: SearchKey, m: SearchMessage, c: SearchContext) -> bool:
    s: SequenceSet = k.args[0]
    if s.saved:
        return m.uid in c.saved
    return s.contains(m.seq, c.max_seq)


def _uid(k: SearchKey, m: SearchMessage, c: SearchContext) -> bool:
    s: SequenceSet = k.args[0]
    if s.saved:
        return m.uid in c.saved
    return s.contains(m.uid, c.max_uid)


_EVAL: dict[str, Callable[[SearchKey, SearchMessage, SearchContext], bool]] = {
    "ALL": lambda k, m, c: True,
    "NONE": lambda k, m, c: False,
    "AND": lambda k, m, c: all(matches(x, m, c) for x in k.args),
    "OR": lambda k, m, c: matches(k.args[0], m, c) or matches(k.args[1], m, c),
    "NOT": lambda k, m, c: not matches(k.args[0], m, c),
    # flags compare case-insensitively (RFC 9051 2.3.2 keywords are case-insensitive)
    "FLAG": lambda k, m, c: k.args[0].lower() in {f.lower() for f in m.flags},
    "FROM": _hdr("from"),
    "TO": _hdr("to"),
    "CC": _hdr("cc"),
    "BCC": _hdr("bcc"),
    "SUBJECT": _hdr("subject"),
    "HEADER": _header,
    "BODY": lambda k, m, c: m.uid in c.text_hits.get(("BODY", k.args[0]), ()),
    "TEXT": lambda k, m, c: m.uid in c.text_hits.get(("TEXT", k.args[0]), ()),
    "BEFORE": lambda k, m, c: _utc_date(m.internal_date) < k.args[0],
    "ON": lambda k, m, c: _utc_date(m.internal_date) == k.args[0],
    "SINCE": lambda k, m, c: _utc_date(m.internal_date) >= k.args[0],
    # RFC 8514 4: like BEFORE / ON / SINCE, on the save date
    "SAVEDBEFORE": lambda k, m, c: m.save_date is not None and _utc_date(m.save_date) < k.args[0],
    "SAVEDON": lambda k, m, c: m.save_date is not None and _utc_date(m.save_date) == k.args[0],
    "SAVEDSINCE": lambda k, m, c: m.save_date is not None and _utc_date(m.save_date) >= k.args[0],
    # RFC 8514 4: every message of a mailbox that keeps save dates, none otherwise
    "SAVEDATESUPPORTED": lambda k, m, c: m.save_date is not None,
    "SENTBEFORE": _sent(lambda d, x: d < x),
    "SENTON": _sent(lambda d, x: d == x),
    "SENTSINCE": _sent(lambda d, x: d >= x),
    "LARGER": lambda k, m, c: m.size > k.args[0],
    "SMALLER": lambda k, m, c: m.size < k.args[0],
    "OLDER": lambda k, m, c: c.now - m.internal_date >= k.args[0],  # RFC 5032
    "YOUNGER": lambda k, m, c: c.now - m.internal_date <= k.args[0],
    "MODSEQ": lambda k, m, c: m.modseq >= k.args[0],  # RFC 7162 3.1.5
    "SEQ": _seq,
    "UID": _uid,
    "EMAILID": lambda k, m, c: m.uid in c.id_hits.get((k.name, k.args[0]), ()),
    "THREADID": lambda k, m, c: m.uid in c.id_hits.get((k.name, k.args[0]), ()),
}


def result_form(
    tag: str, uid: bool, hits: Sequence[tuple[int, int]], modseq: int, mod: bool,
    return_opts: tuple[str, ...] | None, rev2: bool, modseqs: Sequence[int] | None = None,
    partial: tuple[int, int] | None = None,
) -> tuple[list[list[object]], frozenset[int] | None]:
    """The untagged responses of a SEARCH with ``hits`` ((seq, uid) pairs,
    ascending) and the new SEARCHRES result (None: unchanged).

    - no RETURN from a rev1 client: ``* SEARCH n...`` (RFC 9051 7.3.4 of rev1),
      with ``(MODSEQ m)`` when the program used MODSEQ (RFC 7162 3.1.5);
    - otherwise ``* ESEARCH (TAG "t") [UID] MIN MAX ALL COUNT [MODSEQ]``
      (RFC 4731, RFC 9051 6.4.4: a rev2 server answers every SEARCH so;
      RETURN () means RETURN (ALL));
    - SAVE keeps the UIDs for "$" (`saved_result`);
    - PARTIAL m:n: ``PARTIAL (m:n set)`` of the results m to n (RFC 5267
      4.4, RFC 9394 3.1).

    ``modseq`` is the highest mod-sequence of all hits; ``modseqs`` (one per
    hit, when given) lets MIN/MAX without ALL or COUNT report the
    mod-sequence of the messages they return (RFC 7162 3.1.5, RFC 4731 3.2).
    """
    nums = [u for _, u in hits] if uid else [q for q, _ in hits]
    found = [u for _, u in hits]
    if partial is not None:
        hits = partial_slice(hits, partial)
    opts = return_opts
    if opts is None and rev2:
        opts = ("ALL",)
    elif opts is not None and not opts:
        opts = ("ALL",)
    if opts is None:
        parts: list[object] = [Atom("SEARCH"), *nums]
        if mod and nums:
            parts += [[Atom("MODSEQ"), modseq]]
        return [parts], None
    saved: frozenset[int] | None = None
    if "SAVE" in opts:
        saved = saved_result(opts, found, [u for _, u in hits] if partial is not None else None)
    if set(opts) == {"SAVE"}:
        return [], saved
    parts = [Atom("ESEARCH"), [Atom("TAG"), tag]]
    if uid:
        parts.append(Atom("UID"))
    if nums:
        if "MIN" in opts:
            parts += [Atom("MIN"), min(nums)]
        if "MAX" in opts:
            parts += [Atom("MAX"), max(nums)]
        if "ALL" in opts:
            parts += [Atom("ALL"), Atom(format_uid_set(nums))]
    if partial is not None:
        parts += partial_result(partial, [u for _, u in hits] if uid else [q for q, _ in hits], ordered=False)
    if "COUNT" in opts:
        parts += [Atom("COUNT"), len(nums)]
    if mod and nums:
        if modseqs is not None and not {"ALL", "COUNT"} & set(opts):
            # RFC 7162 3.1.5: the highest mod-sequence of the messages returned,
            # which for MIN and MAX alone is that of the first and/or last hit
            modseq = max(modseqs[0] if "MIN" in opts else 0, modseqs[-1] if "MAX" in opts else 0)
        parts += [Atom("MODSEQ"), modseq]
    return [parts], saved


def saved_result(opts: Sequence[str], found: Sequence[int], part: Sequence[int] | None) -> frozenset[int]:
    """The UIDs RETURN (SAVE ...) keeps for "$", of the results ``found`` in
    result order (ascending, or sort order) and the ``part`` PARTIAL returned:
    RFC 5182 2.4: MIN and/or MAX alone keep only those messages; RFC 9394
    3.2: with PARTIAL, the part returned together with the MIN and/or MAX
    message, or every result when COUNT is asked too."""
    o = set(opts)
    ends = [x for x in (found[0] if found and "MIN" in o else None,
                        found[-1] if found and "MAX" in o else None) if x is not None]
    if part is not None:
        return frozenset(found) if "COUNT" in o else frozenset([*part, *ends])
    if ("MIN" in o or "MAX" in o) and not {"ALL", "COUNT"} & o:
        return frozenset(ends)
    return frozenset(found)


def partial_slice(items: Sequence[tuple[int, int]], rng: tuple[int, int]) -> list[tuple[int, int]]:
    """The results at positions ``rng`` (1-based; negative: from the end,
    -1 the last) of ``items`` (RFC 5267 4.4, RFC 9394 3.1)."""
    lo, hi = rng
    if lo > 0:
        return list(items[lo - 1 : hi])
    n = len(items)
    # -a:-b with a <= b: positions n-b+1 .. n-a+1, in the list's order
    return list(items[max(0, n + hi) : max(0, n + lo + 1)])


def partial_result(rng: tuple[int, int], nums: Sequence[int], ordered: bool) -> list[object]:
    """``PARTIAL (range set)``, the set NIL when empty (RFC 5267 4.4); the
    set in list order for SORT (``ordered``), else compressed."""
    lo, hi = rng
    text = f"{lo}:{hi}"
    if not nums:
        return [Atom("PARTIAL"), [Atom(text), None]]
    seq = format_uid_list_ordered(nums) if ordered else format_uid_set(nums)
    return [Atom("PARTIAL"), [Atom(text), Atom(seq)]]
