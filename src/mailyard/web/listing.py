"""Message lists for the web: sorted, searched, paged by key, not by offset.

A folder of 100,000 messages must page as fast as one of 100. So:

- per mailbox the web keeps its UIDs with their arrival times in a
  ``MailboxView`` (store/view.py: ``store.list_messages``, one read, then only
  what ``store.changes_since`` reports when the mailbox's highest
  mod-sequence has moved); "date" order is the arrival time (INTERNALDATE,
  equal times in UID order), the date the Date column shows, so what is shown
  and how it is sorted agree even for imported mail whose UIDs are not in
  date order;
- sort keys for sender and subject are computed once per message (from the
  derived data stored at delivery, never by re-parsing) and kept; the sorted
  order is rebuilt only when messages come or go, not when flags change;
- a page is found by its key (``after``/``before`` = a UID in the sorted
  order, located by a dict lookup), never by scanning ``OFFSET`` rows of
  decoded data; only the page's 50 messages get their index rows
  (``get_messages``) and envelopes (``get_derived(fields=...)``) fetched;
- sorting a folder of more than ``SORT_INLINE`` messages, and finding a page
  in its order (search hits kept, the order reversed), run in a thread
  (``asyncio.to_thread``), so a big folder never holds the event loop that
  serves every other request and mail session; a small one is done in place,
  where a thread hop would cost more than the work.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..gcpause import gc_paused
from ..message.headers import decode_words
from ..message.reply import base_subject
from ..store.api import Mailbox, MessageInfo, Store, StoreError
from ..store.view import MailboxView

_T = TypeVar("_T")
_S = TypeVar("_S")

PAGE_SIZE = 50
# Sort keys computed inside a request at most for this many messages; more go
# to a background task (NotReady) so no request waits for a whole big folder.
SYNC_KEY_LIMIT = 5000
SORTS = ("date", "from", "to", "subject")
MAX_CACHED_MAILBOXES = 256
# Orders of more messages than this are built and paged in a thread: sorting
# 100,000 entries takes some 100 ms of CPU, 2,000 about as long as the hop.
SORT_INLINE = 2_000
_SORT_SLICE = 4096  # entries per list.sort call of sorted_in_turns (about 2 ms)


@dataclass
class _BoxCache:
    uids: MailboxView[float] = field(default_factory=lambda: MailboxView(_arrival))
    keys: dict[str, dict[int, Any]] = field(default_factory=lambda: {"from": {}, "to": {}, "subject": {}})
    order: dict[str, list[tuple[Any, int]]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    filling: asyncio.Future | None = None


log = logging.getLogger("mailyard.web")


def _arrival(info: MessageInfo) -> float:
    return info.internal_date


def _filled(task: asyncio.Future) -> None:
    """The end of a big folder's sort keys computed in the background: a
    failure is logged here, in one line when the store could not serve
    (its database down, the folder deleted), rather than left to asyncio's
    "exception never retrieved" traceback. The folder's next request starts
    the work again."""
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, StoreError):
        log.info("web: the sort keys of a folder were not prepared: %s", exc)
    elif exc is not None:
        log.error("web: preparing the sort keys of a folder failed", exc_info=exc)


class NotReady(Exception):
    """Sort keys of a big folder are being computed; ``done`` of ``total``."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"{done} of {total}")
        self.done = done
        self.total = total


@dataclass
class Row:
    uid: int
    info: MessageInfo
    sender: str
    sender_addr: str
    subject: str
    date: float  # the arrival time (INTERNALDATE), which "date" order sorts by
    has_attachment: bool
    recipient: str = ""  # the first To address's name (or address), for Sent and Drafts
    recipient_addr: str = ""
    # the first text of the body (RFC 8970 3, at most 256 characters), kept
    # with the derived data at delivery: the phone list's second line
    preview: str = ""

    @property
    def seen(self) -> bool:
        return "\\Seen" in self.info.flags

    @property
    def flagged(self) -> bool:
        return "\\Flagged" in self.info.flags

    @property
    def answered(self) -> bool:
        return "\\Answered" in self.info.flags


@dataclass
class Page:
    rows: list[Row]
    total: int
    first_index: int
    prev_uid: int | None  # ?before=<uid> for the previous page
    next_uid: int | None  # ?after=<uid> for the next page


def _env_text(value: Any) -> str:
    return decode_words(value) if isinstance(value, str) else ""


def sender_of(derived: dict, slot: int = 2) -> tuple[str, str]:
    """The first address of the envelope's From (``slot`` 2; 5 for To,
    RFC 9051 7.5.2 ENVELOPE) as (name or address, address)."""
    env = derived.get("envelope") or []
    addrs = env[slot] if len(env) > slot and env[slot] else []
    for a in addrs:
        if a and a[2] is not None and a[3] is not None:
            addr = f"{a[2]}@{a[3]}"
            return (_env_text(a[0]) or addr), addr
    return "", ""


def subject_of(derived: dict) -> str:
    env = derived.get("envelope") or []
    return _env_text(env[1]) if len(env) > 1 else ""


def has_attachment(bs: Any) -> bool:
    """From the BODYSTRUCTURE: any part with an attachment disposition or a file name."""
    if not isinstance(bs, list) or not bs:
        return False
    if isinstance(bs[0], list):  # multipart: children, then subtype, params, disposition...
        children = []
        for c in bs:
            if not isinstance(c, list):
                break
            children.append(c)
        return any(has_attachment(c) for c in children)
    disp = None
    # single part: [type, subtype, params, id, desc, enc, octets, (...), md5, disposition, ...]
    for item in bs[7:]:
        if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and \
                item[0].upper() in ("ATTACHMENT", "INLINE"):
            disp = item
            break
    if disp and disp[0].upper() == "ATTACHMENT":
        return True
    params = bs[2] if len(bs) > 2 and isinstance(bs[2], list) else []
    if any(isinstance(p, str) and p.upper() == "NAME" for p in params[::2]):
        return True
    return isinstance(bs[0], str) and bs[0].upper() == "MESSAGE"


def preview_text(value: Any) -> str:
    return " ".join(value.split())[:200] if isinstance(value, str) else ""


class Listing:
    """Per-server cache of mailbox indexes for the web (see module doc)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._boxes: OrderedDict[int, _BoxCache] = OrderedDict()

    async def _derived(self, box: Mailbox, uids: list[int],
                       fields: tuple[str, ...] = ("envelope", "bodystructure", "date")) -> dict[int, dict]:
        return await self.store.get_derived(box, uids, fields=fields)

    async def _cache(self, box: Mailbox) -> _BoxCache:
        cache = self._boxes.get(box.id)
        if cache is None or cache.uids.uid_validity not in (None, box.uid_validity):
            # a new UIDVALIDITY: sort keys of the old UIDs mean nothing now
            cache = _BoxCache()
            self._boxes[box.id] = cache
            while len(self._boxes) > MAX_CACHED_MAILBOXES:
                self._boxes.popitem(last=False)
        self._boxes.move_to_end(box.id)
        async with cache.lock:
            update = await cache.uids.refresh(self.store, box)
            if update.reloaded:
                for keys in cache.keys.values():
                    keys.clear()
            if update.moved:
                cache.order.clear()
        return cache

    async def _order(self, box: Mailbox, cache: _BoxCache, sort: str) -> list[tuple[Any, int]]:
        order = cache.order.get(sort)
        if order is not None:
            return order
        # under the lock: a sort in a thread reads the view, which a refresh
        # (_cache, under the same lock) changes
        async with cache.lock:
            order = cache.order.get(sort)
            if order is not None:
                return order
            entries = cache.uids.entries
            if sort == "date":
                order = await _off_loop(len(entries), _date_order, entries)
            else:
                keys = cache.keys[sort]
                missing = await _off_loop(len(entries), _missing, entries, keys)
                if len(missing) > SYNC_KEY_LIMIT:
                    # A big folder sorted this way for the first time: compute the
                    # keys in the background and let the page say so, rather than
                    # hold the request (and the event loop) for seconds.
                    if cache.filling is None or cache.filling.done():
                        cache.filling = asyncio.ensure_future(self._fill_keys(box, cache, missing))
                        cache.filling.add_done_callback(_filled)
                    raise NotReady(len(entries) - len(missing), len(entries))
                await self._fill_keys(box, cache, missing)
                order = await _off_loop(len(entries), _key_order, entries, keys)
            cache.order[sort] = order
        return order

    async def _fill_keys(self, box: Mailbox, cache: _BoxCache, uids: list[int]) -> None:
        for i in range(0, len(uids), 500):
            chunk = uids[i : i + 500]
            derived = await self._derived(box, chunk)
            for uid, d in derived.items():
                cache.keys["from"][uid] = sender_of(d)[0].casefold()
                cache.keys["to"][uid] = sender_of(d, 5)[0].casefold()
                cache.keys["subject"][uid] = base_subject(subject_of(d)).casefold()
            for uid in chunk:
                cache.keys["from"].setdefault(uid, "")
                cache.keys["to"].setdefault(uid, "")
                cache.keys["subject"].setdefault(uid, "")
            await asyncio.sleep(0)  # let other requests run between batches

    async def page(
        self,
        box: Mailbox,
        sort: str = "date",
        descending: bool = True,
        after: int | None = None,
        before: int | None = None,
        only: set[int] | None = None,
        size: int = PAGE_SIZE,
    ) -> Page:
        """One page of a mailbox in the given order; ``only`` limits it to search hits."""
        if sort not in SORTS:
            sort = "date"
        cache = await self._cache(box)
        order = await self._order(box, cache, sort)
        after_key = self._key_of(cache, sort, after) if after is not None else None
        before_key = self._key_of(cache, sort, before) if before is not None else None
        chunk, start, total = await _off_loop(len(order), _window, order, only, descending,
                                              (after_key, after) if after_key is not None else None,
                                              (before_key, before) if before_key is not None else None, size)
        uids = [uid for _k, uid in chunk]
        derived = await self._derived(box, uids, ("envelope", "bodystructure", "date", "preview")) if uids else {}
        infos = {m.uid: m for m in await self.store.get_messages(box, uids)} if uids else {}
        rows: list[Row] = []
        for uid in uids:
            d = derived.get(uid, {})
            info = infos.get(uid)
            if info is None:
                continue  # expunged meanwhile
            name, addr = sender_of(d)
            # the arrival time, the order "date" sorts by (UIDs grow with arrival)
            rows.append(Row(uid, info, name, addr, subject_of(d), info.internal_date,
                            has_attachment(d.get("bodystructure")), *sender_of(d, 5), preview_text(d.get("preview"))))
        prev_uid = uids[0] if start > 0 and uids else None
        next_uid = uids[-1] if start + size < total and uids else None
        return Page(rows, total, start, prev_uid, next_uid)

    async def arrivals(self, box: Mailbox) -> dict[int, float]:
        """Every UID of ``box`` with its arrival time (INTERNALDATE), kept current."""
        return (await self._cache(box)).uids.entries

    async def info(self, box: Mailbox, uid: int) -> MessageInfo | None:
        found = await self.store.get_messages(box, [uid])
        return found[0] if found else None

    @staticmethod
    def _key_of(cache: _BoxCache, sort: str, uid: int) -> Any:
        if sort == "date":
            return cache.uids.entries.get(uid)
        return cache.keys[sort].get(uid)


async def _off_loop(n: int, fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)``, over ``n`` messages: in a thread past ``SORT_INLINE``."""
    if n > SORT_INLINE:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


def sorted_in_turns(items: list[_S]) -> list[_S]:
    """``sorted(items)`` for work run in a thread beside the event loop:
    ``list.sort`` is one C call that keeps the GIL all along (some 50 ms for
    100,000 tuples), so the loop's thread would wait for it as if it ran on
    the loop. Sorted a slice at a time and merged by ``heapq.merge`` (Python
    code, between whose steps the GIL changes hands), about twice the CPU."""
    if len(items) <= _SORT_SLICE:
        return sorted(items)
    runs = [sorted(items[i : i + _SORT_SLICE]) for i in range(0, len(items), _SORT_SLICE)]
    return list(heapq.merge(*runs))


def _date_order(entries: dict[int, float]) -> list[tuple[Any, int]]:
    with gc_paused():  # a burst of tuples holding no cycles
        return sorted_in_turns([(date, uid) for uid, date in entries.items()])


def _missing(entries: dict[int, float], keys: dict[int, Any]) -> list[int]:
    return [uid for uid in entries if uid not in keys]


def _key_order(entries: dict[int, float], keys: dict[int, Any]) -> list[tuple[Any, int]]:
    with gc_paused():
        return sorted_in_turns([(keys[uid], uid) for uid in entries])


def _window(order: list[tuple[Any, int]], only: set[int] | None, descending: bool,
            after: tuple[Any, int] | None, before: tuple[Any, int] | None,
            size: int) -> tuple[list[tuple[Any, int]], int, int]:
    """The page of ``order`` (ascending by (key, uid)) a request asks for:
    its entries, the index of its first and the number of entries in the
    listing, after keeping only ``only`` and reversing when ``descending``.
    ``after``/``before`` are the (key, uid) of the message the page follows
    or precedes."""
    if only is not None:
        order = [k for k in order if k[1] in only]
    if descending:
        order = order[::-1]
    total = len(order)

    def position(at: tuple[Any, int]) -> int:
        # the listing is ascending by (key, uid) (or descending): where this one sits
        if descending:
            return bisect.bisect_left(order, _Desc(at), key=_Desc)
        return bisect.bisect_left(order, at)

    start = 0
    if after is not None:
        pos = position(after)
        start = pos + (1 if pos < total and order[pos][1] == after[1] else 0)
    elif before is not None:
        start = max(0, position(before) - size)
    return order[start : start + size], start, total


class _Desc:
    """Reverses comparison, for bisecting a descending list."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v.v if isinstance(v, _Desc) else v

    def __lt__(self, other: _Desc) -> bool:
        return self.v > other.v
