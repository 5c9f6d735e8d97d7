"""Webmail search with operators: the query language and its evaluation.

A query is words and operators, all of which must match (AND):

- a bare word or a "quoted phrase": the full-text index (header and body,
  case-insensitive substring, as IMAP SEARCH TEXT, RFC 9051 6.4.4);
- ``from:`` ``to:`` ``cc:`` ``subject:``: that header field contains the
  value (the stored decoded header fields, as IMAP SEARCH FROM etc.);
- ``has:attachment``; ``is:unread`` ``is:read`` ``is:flagged``
  ``is:answered``;
- ``before:YYYY-MM-DD`` (arrived before that day) and ``after:YYYY-MM-DD``
  (arrived on that day or later), the days in UTC, like IMAP BEFORE/SINCE on
  the internal date: the date the message list shows and sorts by;
- ``larger:`` / ``smaller:`` a size (``500K``, ``2M``, ``1G``, bytes without
  a unit; units of 1024), like IMAP LARGER/SMALLER;
- ``in:FOLDER`` (a folder name) or ``in:all`` (every folder);
- ``-`` before any of them negates it (``-from:bob``, ``-draft``).

Every term is answered from the store's indexes (``search_text``,
``search_headers``) or from an in-memory index of each mailbox's flags, sizes
and dates kept current with ``changes_since`` (``InfoIndex``), so a query
over 100,000 messages reads no message.
"""

from __future__ import annotations

import asyncio
import calendar
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..gcpause import gc_paused
from ..store.api import Changes, Mailbox, MessageInfo, Store
from .listing import Row, has_attachment, sender_of, subject_of
from .pages import folders, page, state

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from .security import Session

HEADER_KEYS = ("from", "to", "cc", "subject")
IS_VALUES = ("unread", "read", "flagged", "answered")
KEYS = (*HEADER_KEYS, "has", "is", "in", "before", "after", "larger", "smaller")
MAX_TERMS = 20
ATTACHMENT_CHUNK = 10_000  # BODYSTRUCTUREs per store call of the has:attachment test
INFO_INLINE = 2_000  # a folder of more messages gets its InfoIndex rows made in a thread
_SIZE = re.compile(r"(\d{1,12})(?:\.(\d{1,3}))?\s*([kmg]?)b?", re.I)
_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_TOKEN = re.compile(r'(-?)(?:([A-Za-z]+):)?(?:"([^"]*)"?|(\S+))')
SEEN, FLAGGED, ANSWERED = 1, 2, 4
_FLAG_BITS = {"\\Seen": SEEN, "\\Flagged": FLAGGED, "\\Answered": ANSWERED}


@dataclass(frozen=True)
class Term:
    """One condition: ``key`` "text" for words and phrases, else an operator."""

    key: str
    value: str
    negated: bool = False


@dataclass
class Query:
    terms: list[Term] = field(default_factory=list)
    folder: str | None = None  # in:NAME; "all" for every folder
    errors: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.terms


def parse_size(text: str) -> int | None:
    """``500K`` -> 512000, ``2M``, ``1.5M``, ``1G``, ``300`` (bytes)."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        return None
    whole, frac, unit = m.groups()
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]
    return int(whole) * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)


def parse_day(text: str) -> float | None:
    """The start (UTC) of the day ``YYYY-MM-DD``, or None."""
    m = _DATE.fullmatch(text.strip())
    if m is None:
        return None
    try:
        return float(calendar.timegm(time.struct_time((int(m[1]), int(m[2]), int(m[3]), 0, 0, 0, 0, 0, 0))))
    except (ValueError, OverflowError):
        return None


def parse(text: str) -> Query:
    """The query of a search box. Unknown operators (``foo:bar``) are words;
    a malformed value of a known one is reported in ``errors`` and left out."""
    q = Query()
    for m in _TOKEN.finditer(text[:1000]):
        neg, key, quoted, bare = m.group(1) == "-", (m.group(2) or "").lower(), m.group(3), m.group(4)
        value = quoted if quoted is not None else (bare or "")
        if key and key not in KEYS:
            value = f"{m.group(2)}:{value}"
            key = ""
        if not key:
            if value.strip():
                q.terms.append(Term("text", value.strip(), neg))
            continue
        value = value.strip()
        if key in HEADER_KEYS:
            if value:
                q.terms.append(Term(key, value, neg))
        elif key == "has":
            if value.lower() in ("attachment", "attachments"):
                q.terms.append(Term("has", "attachment", neg))
            else:
                q.errors.append(f"has:{value}: only has:attachment is known")
        elif key == "is":
            if value.lower() in IS_VALUES:
                q.terms.append(Term("is", value.lower(), neg))
            else:
                q.errors.append(f"is:{value}: use is:unread, is:read, is:flagged or is:answered")
        elif key == "in":
            if value:
                q.folder = value
        elif key in ("before", "after"):
            if parse_day(value) is None:
                q.errors.append(f"{key}:{value}: give a date as YYYY-MM-DD")
            else:
                q.terms.append(Term(key, value, neg))
        elif key in ("larger", "smaller"):
            if parse_size(value) is None:
                q.errors.append(f"{key}:{value}: give a size such as 500K or 2M")
            else:
                q.terms.append(Term(key, value, neg))
    if len(q.terms) > MAX_TERMS:
        q.errors.append(f"at most {MAX_TERMS} terms are searched")
        del q.terms[MAX_TERMS:]
    return q


@dataclass
class _Entries:
    uid_validity: int | None = None
    modseq: int = 0
    # uid -> (flag bits, size, internal date)
    rows: dict[int, tuple[int, int, float]] = field(default_factory=dict)
    attachment: dict[int, bool] = field(default_factory=dict)  # from the BODYSTRUCTURE, per UID
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _bits(flags: frozenset[str]) -> int:
    bits = 0
    for f in flags:
        bits |= _FLAG_BITS.get(f, 0)
    return bits


def _info_rows(infos: list[MessageInfo]) -> dict[int, tuple[int, int, float]]:
    with gc_paused():  # a burst of small objects holding no cycles
        return {m.uid: (_bits(m.flags), m.size, m.internal_date) for m in infos}


def _apply(rows: dict[int, tuple[int, int, float]], changes: Changes) -> None:
    """``rows`` brought up to ``changes`` (expunges, new and changed messages)."""
    for uid in changes.vanished:
        rows.pop(uid, None)
    for m in changes.changed:
        rows[m.uid] = (_bits(m.flags), m.size, m.internal_date)


def _applied(rows: dict[int, tuple[int, int, float]], changes: Changes) -> dict[int, tuple[int, int, float]]:
    """A copy of ``rows`` brought up to ``changes``."""
    with gc_paused():
        copy = dict(rows)
        _apply(copy, changes)
        return copy


class InfoIndex:
    """Per mailbox: each message's flags, size and internal date, read once
    and then kept current from ``changes_since`` (new messages, flag changes,
    expunges), for the operators the text indexes cannot answer."""

    def __init__(self, store: Store, max_boxes: int = 32) -> None:
        self.store = store
        self.max_boxes = max_boxes
        self._boxes: OrderedDict[int, _Entries] = OrderedDict()

    async def rows(self, box: Mailbox) -> dict[int, tuple[int, int, float]]:
        entries = self._boxes.get(box.id)
        # (an entry not read yet is being read: waited for, not read twice)
        if entries is None or entries.uid_validity not in (None, box.uid_validity):
            entries = _Entries()
            self._boxes[box.id] = entries
            while len(self._boxes) > self.max_boxes:
                self._boxes.popitem(last=False)
        self._boxes.move_to_end(box.id)
        async with entries.lock:
            if entries.uid_validity != box.uid_validity:
                modseq = box.highest_modseq
                infos = await self.store.list_messages(box)
                # a big folder's rows in a thread, off the event loop
                entries.rows = (await asyncio.to_thread(_info_rows, infos) if len(infos) > INFO_INLINE
                                else _info_rows(infos))
                entries.uid_validity, entries.modseq = box.uid_validity, modseq
            elif entries.modseq != box.highest_modseq:
                changes = await self.store.changes_since(box, entries.modseq)
                for uid in changes.vanished:
                    entries.attachment.pop(uid, None)
                if len(changes.changed) + len(changes.vanished) > INFO_INLINE:
                    # many changes ("mark all read" of a big folder): applied
                    # to a copy in a thread, which then replaces the rows, so
                    # a filter reading the old ones meanwhile is left alone
                    entries.rows = await asyncio.to_thread(_applied, entries.rows, changes)
                else:
                    _apply(entries.rows, changes)
                entries.modseq = max(entries.modseq, changes.highest_modseq)
        return entries.rows

    async def with_attachment(self, box: Mailbox, candidates: set[int]) -> set[int]:
        """Those of ``candidates`` with an attachment, judged by the
        BODYSTRUCTURE (listing.has_attachment) and remembered per UID."""
        entries = self._boxes.get(box.id)
        known = entries.attachment if entries is not None else {}
        missing = sorted(u for u in candidates if u not in known)
        # big chunks: the SQLite store reads and decodes a request of more
        # than 2,000 messages off the event loop (a small one in place)
        for i in range(0, len(missing), ATTACHMENT_CHUNK):
            chunk = missing[i : i + ATTACHMENT_CHUNK]
            derived = await self.store.get_derived(box, chunk, fields=("bodystructure",))
            for uid in chunk:
                known[uid] = has_attachment(derived.get(uid, {}).get("bodystructure"))
        return {u for u in candidates if known.get(u)}


MEMORY_KEYS = frozenset({"is", "before", "after", "larger", "smaller"})


def _predicate(term: Term) -> Callable[[tuple[int, int, float]], bool]:
    """The test of an in-memory term on a message's (flag bits, size, date)."""
    key, value = term.key, term.value
    if key == "is":
        if value == "unread":
            return lambda r: not r[0] & SEEN
        bit = {"read": SEEN, "flagged": FLAGGED, "answered": ANSWERED}[value]
        return lambda r: bool(r[0] & bit)
    if key in ("before", "after"):
        day = parse_day(value)
        assert day is not None
        return (lambda r: r[2] < day) if key == "before" else (lambda r: r[2] >= day)
    size = parse_size(value)
    assert size is not None
    return (lambda r: r[1] > size) if key == "larger" else (lambda r: r[1] < size)


async def _index_uids(store: Store, index: InfoIndex, box: Mailbox, term: Term,
                      within: set[int] | None = None) -> set[int]:
    """The UIDs an indexed term (words, header fields, attachments) matches,
    of ``within`` if given (the store then checks only those)."""
    key, value = term.key, term.value
    if key == "text":
        return await store.search_text(box, value, "text", within=within)
    if key in HEADER_KEYS:
        return await store.search_headers(box, key, value, within=within)
    # has:attachment: a message with an attachment is multipart/mixed (RFC
    # 2046 5.1.3) or a single part that is itself the attachment; the
    # BODYSTRUCTURE decides. The same two header searches narrow every
    # has:attachment (within what earlier terms left, if any), so a
    # message's answer never depends on the other terms of the query.
    candidates = await store.search_headers(box, "content-type", "multipart/mixed", within=within)
    candidates |= await store.search_headers(box, "content-disposition", "attachment", within=within)
    return await index.with_attachment(box, candidates)


def _order(term: Term) -> tuple[bool, bool, int]:
    """The order positive indexed terms are searched in: each later one
    checks only what the earlier ones left, so the likely most selective
    first: a header field (an index of that field alone) before words (the
    whole text), longer strings (fewer candidates) before shorter, and
    has:attachment last (it reads the candidates' BODYSTRUCTURE)."""
    return (term.key == "has", term.key == "text", -len(term.value))


def _filtered(rows: dict[int, tuple[int, int, float]], candidates: list[int],
              tests: list[tuple[Callable[[tuple[int, int, float]], bool], bool]]) -> set[int]:
    """The ``candidates`` whose row passes every test (negated ones failing)."""
    get = rows.get
    return {u for u in candidates if (r := get(u)) is not None
            and all(test(r) != negated for test, negated in tests)}


async def evaluate(store: Store, index: InfoIndex, box: Mailbox, query: Query) -> set[int]:
    """The UIDs of ``box`` matching every term of ``query`` (``in:`` aside:
    the caller picks the mailboxes). The indexed terms are searched first,
    each within what the ones before it left (``_order``); the flag, date
    and size tests then filter what is left in one pass over it; negated
    indexed terms are subtracted last, each searched within what is left."""
    rows = await index.rows(box)
    result: set[int] | None = None
    indexed = [t for t in query.terms if t.key not in MEMORY_KEYS]
    for term in sorted((t for t in indexed if not t.negated), key=_order):
        result = await _index_uids(store, index, box, term, result)
        if not result:
            return set()
    tests = [(_predicate(t), t.negated) for t in query.terms if t.key in MEMORY_KEYS]
    if tests:
        candidates = list(rows) if result is None else list(result)
        if len(candidates) > INFO_INLINE:
            # a big folder's pass in a thread, off the event loop: it goes
            # through a list of UIDs, and a row taken out meanwhile (a small
            # change, applied in place on the loop) is left out of it
            result = await asyncio.to_thread(_filtered, rows, candidates, tests)
        else:
            result = _filtered(rows, candidates, tests)
    elif result is None:
        result = set(rows)
    for term in sorted((t for t in indexed if t.negated), key=_order):
        if not result:
            break
        result -= await _index_uids(store, index, box, term, result)
    return result


def resolve_folders(boxes: list[Mailbox], current: Mailbox, name: str | None) -> list[Mailbox] | None:
    """The mailboxes an ``in:`` names (None: no folder of that name)."""
    if name is None:
        return [current]
    if name.lower() == "all":
        return list(boxes)
    low = name.casefold()
    for b in boxes:
        if b.name.casefold() == low or (b.special_use or "").lstrip("\\").casefold() == low:
            return [b]
    for b in boxes:
        if b.name.rsplit("/", 1)[-1].casefold() == low:
            return [b]
    return None


# --- the glue of the mailbox page (web/app.py mailbox_view) ---------------------
RESULTS_PAGE = 50


@dataclass
class Hit:
    """One row of a search over several folders: the folder and a listing.Row."""

    box: Mailbox
    row: Any


def info_index(web: Any) -> InfoIndex:
    """The web app's ``InfoIndex`` (web/pages.py WebState), made on first use."""
    if web.info_index is None:
        web.info_index = InfoIndex(web.services.store)
    return web.info_index


async def search(request: Request, session: Session, box: Mailbox, text: str) -> tuple[set[int] | None, list[str]] | Response:
    """Run the search box's ``text`` on the page of ``box``: the UIDs of
    ``box`` that match and the words for the user about terms left out; or,
    for ``in:`` another folder or ``in:all``, the results page over those
    folders."""
    web = state(request)
    store = web.services.store
    index = info_index(web)
    query = parse(text)
    boxes = await store.list_mailboxes(session.account_id)
    targets = resolve_folders(boxes, box, query.folder)
    if targets is None:
        query.errors.append(f"in:{query.folder}: no folder of that name; searched {box.name}")
        targets = [box]
    if len(targets) == 1 and targets[0].id == box.id:
        if query.empty:
            return (None, query.errors)
        return (await evaluate(store, index, box, query), query.errors)
    return await _results_page(request, session, store, index, box, targets, query, text)


async def _results_page(request: Request, session: Session, store: Store, index: InfoIndex, box: Mailbox,
                        targets: list[Mailbox], query: Query, text: str) -> Response:
    found: list[tuple[float, int, int]] = []
    by_id = {b.id: b for b in targets}
    # the folder list's counts (kept per mailbox state): an empty folder has
    # nothing to search, and each folder searched is a step of its own, the
    # other requests going on between (an account may have thousands)
    folder_list = await folders(request, session)
    counts = {f["id"]: f["messages"] for f in folder_list}
    for b in targets:
        if counts.get(b.id, 1) == 0:
            continue
        rows = await index.rows(b)
        uids = set(rows) if query.empty else await evaluate(store, index, b, query)
        found.extend((rows[u][2], b.id, u) for u in uids if u in rows)
        await asyncio.sleep(0)
    found.sort(reverse=True)
    try:
        start = max(0, int(request.query_params.get("start") or 0))
    except ValueError:
        start = 0
    chunk = found[start : start + RESULTS_PAGE]
    wanted: dict[int, list[int]] = {}
    for _d, box_id, uid in chunk:
        wanted.setdefault(box_id, []).append(uid)
    derived: dict[tuple[int, int], dict] = {}
    infos: dict[tuple[int, int], Any] = {}
    for box_id, uids in wanted.items():
        d = await store.get_derived(by_id[box_id], uids, fields=("envelope", "bodystructure"))
        derived.update({(box_id, u): v for u, v in d.items()})
        infos.update({(box_id, m.uid): m for m in await store.get_messages(by_id[box_id], uids)})
    hits: list[Hit] = []
    for _d, box_id, uid in chunk:
        info = infos.get((box_id, uid))
        if info is None:
            continue  # expunged meanwhile
        d = derived.get((box_id, uid), {})
        name, addr = sender_of(d)
        hits.append(Hit(by_id[box_id], Row(uid, info, name, addr, subject_of(d), info.internal_date,
                                           has_attachment(d.get("bodystructure")))))
    return page(request, "search.html", box=box, folders=folder_list, q=text,
                hits=hits, total=len(found), start=start, page_size=RESULTS_PAGE,
                searched="all folders" if (query.folder or "").lower() == "all" else targets[0].name,
                search_errors=query.errors, notice="")
