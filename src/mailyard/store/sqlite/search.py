"""Derived data and search: what FETCH and SEARCH read instead of parsing.

Each body's ``DerivedRecord`` (store/api.py ``derive_record``) is saved once:
``body_derived`` (ENVELOPE / BODYSTRUCTURE in IMAP syntax and as JSON),
``header_fields`` (decoded fields, searched with ``instr`` on the case-folded
value) and the full-text index (textindex.py). ``bodies.derived`` marks a
body as done.

The background indexer (``_index_some``, on the writer thread when it has no
writes) derives new bodies in short slices; a read that meets a body it has
not reached derives it on the spot. Derived data is a cache: it is written
only while the disk keeps ``index_min_free`` bytes for mail, so on a full
disk reads still answer (from data derived on the spot) and indexing resumes
once there is room.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Literal, TypeVar

from ...message.address import search_value
from ...message.dates import sent_day
from ...message.derived import derive
from ...message.objectids import EMAIL, THREAD, opaque_id
from ...message.threadkeys import KEY_FIELDS, SortKeys, ThreadKeys, keys_from_json, sort_keys
from ..api import DERIVED_FIELDS, SENT_BATCH, DerivedRecord, MailboxRef, StorageFull, derive_record
from ..blobs import BODY_DATA, BODY_PLACE
from ..rows import THREAD_LOOKUP_IDS
from . import textindex
from .core import SQLiteCore, select_uids

log = logging.getLogger("mailyard.store")
_T = TypeVar("_T")

INDEX_BATCH = 50
# Fewer bodies than this waiting for the indexer: SEARCH finds those of its
# mailbox from the bodies' side (_ensure_indexed).
FEW_UNINDEXED = 1000
# Octets of memory (as ``_queued_cost`` reckons them) the derived records
# waiting for their save between write batches may hold (core.py
# _derived_queue); beyond, a record is dropped.
DERIVED_QUEUE_BYTES = 8_000_000
UNINDEX_BATCH = 20  # gone bodies removed from the full-text index per slice between write batches
INDEX_SLICE = 0.01  # seconds of deriving the background indexer does before it looks at the write queue
INDEXED = "2"  # bodies.derived once body_derived/header_fields/the text index hold the body's data
# Disk full while indexing: first wait, doubled after each failure up to the last.
INDEX_BACKOFF = (1.0, 60.0)
INDEX_FREE_POLL = 1.0  # seconds between looks at the free space while it is below the reserve
SORT_INLINE = 2_000  # more messages' SORT/THREAD keys than this are read off the event loop
SORT_BACKFILL_BATCH = 500  # bodies per slice of filling sort_keys for bodies derived before it existed
FIELDS_BACKFILL_BATCH = 200  # bodies per slice of filling fts_fields for bodies derived before it existed
_SORT_COLS = ("date", "subject", "refwd", "from_mailbox", "from_display", "to_mailbox", "to_display", "cc_mailbox",
              "message_id", "parents")
# the first Date field of each message, and whether its body is derived
_SENT_SELECT = ("SELECT m.uid, b.derived IS NOT NULL, (SELECT h.value FROM header_fields h WHERE h.body_id = m.body_id"
                " AND h.name = 'date' ORDER BY h.n LIMIT 1) FROM messages m JOIN bodies b ON b.id = m.body_id"
                " WHERE m.mailbox_id = ?")
_SORT_SELECT = ("SELECT m.uid, m.body_id, k.body_id, " + ", ".join(f"k.{c}" for c in _SORT_COLS)
                + " FROM messages m LEFT JOIN sort_keys k ON k.body_id = m.body_id WHERE m.mailbox_id = ?")
# SORT keys (RFC 5256 section 3, RFC 5957) as SQL over messages m and sort_keys k
_ORDER_BY = {"ARRIVAL": "m.internal_date", "SIZE": "m.size", "DATE": "coalesce(k.date, m.internal_date)",
             "SUBJECT": "k.subject", "FROM": "k.from_mailbox", "TO": "k.to_mailbox", "CC": "k.cc_mailbox",
             "DISPLAYFROM": "k.from_display", "DISPLAYTO": "k.to_display"}
_KEY_ATTR = {"SUBJECT": "subject", "FROM": "from_mailbox", "TO": "to_mailbox", "CC": "cc_mailbox",
             "DISPLAYFROM": "from_display", "DISPLAYTO": "to_display"}
_SORT_UPSERT = (
    f"INSERT INTO sort_keys(body_id, {', '.join(_SORT_COLS)}, thread_id) VALUES ({', '.join('?' * 12)})"
    " ON CONFLICT(body_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _SORT_COLS)  # a body's thread never changes
)

_META_KEYS = frozenset({"envelope", "bodystructure", "parts", "messages", "date", "size", "preview"})
_OBJECT_IDS = frozenset({"email_id", "thread_id"})  # computed, only when asked for
_IMAP_COLS = {"envelope_imap": "envelope", "bodystructure_imap": "bodystructure", "body_imap": "body"}


def _queued_cost(rec: DerivedRecord) -> int:
    """About the octets of memory a derived record holds: its text, its IMAP
    forms (the body structure a second time as the JSON-able tree in
    ``meta``), a tuple per header field and a few kilobytes whatever its size
    (a record of a message of a few octets holds about 2.5 KB)."""
    return (len(rec.header_text) + len(rec.body_text)
            + 4 * (len(rec.envelope_imap) + len(rec.body_imap)) + 8 * len(rec.bodystructure_imap)
            + 256 * len(rec.headers) + 2048)


class SearchMixin(SQLiteCore):
    """Derived data, header and full-text search, background indexing."""

    # Indexing waits (monotonic time) after a disk-full failure; see _index_deferred.
    _index_resume_at = 0.0
    _index_backoff = 0.0

    async def get_derived(
        self, mailbox: MailboxRef, uids: Sequence[int], fields: Iterable[str] | None = None,
        expunged: bool = False,
    ) -> dict[int, dict]:
        mailbox_id = self._owned(mailbox)
        wanted = set(DERIVED_FIELDS - _IMAP_COLS.keys() - _OBJECT_IDS) if fields is None else set(fields)
        unknown = wanted - DERIVED_FIELDS
        if unknown:
            raise ValueError(f"unknown derived fields: {', '.join(sorted(unknown))}")
        imap = [k for k in _IMAP_COLS if k in wanted]
        meta_keys = _META_KEYS & wanted
        cols = ", ".join(["m.uid", "m.body_id", "d.body_id", *(f"d.{_IMAP_COLS[k]}" for k in imap),
                          *(["d.meta"] if meta_keys else [])])
        sql = f"SELECT {cols} FROM messages m LEFT JOIN body_derived d ON d.body_id = m.body_id WHERE m.mailbox_id = ?"
        wanted_uids = list(uids)
        n_imap = len(imap)

        def read(c: sqlite3.Connection) -> tuple[dict[int, dict], dict[int, int], list[int], list[int]]:
            rows = select_uids(c, sql, mailbox_id, wanted_uids, column="m.uid")
            if expunged and len(rows) < len(set(wanted_uids)):
                # expunged messages still held: their rows sit under the negated id (messages.py)
                found = {r[0] for r in rows}
                rows += select_uids(c, sql, -mailbox_id, [u for u in set(wanted_uids) if u not in found],
                                    column="m.uid")
            out: dict[int, dict] = {}
            body_of: dict[int, int] = {}
            missing: list[int] = []
            no_preview: list[int] = []  # derived before previews were (RFC 8970)
            for row in rows:
                uid = row[0]
                body_of[uid] = row[1]
                if row[2] is None:  # not derived yet
                    missing.append(uid)
                    continue
                item: dict = {}
                for i, key in enumerate(imap):
                    item[key] = row[3 + i]
                if meta_keys:
                    data = json.loads(row[3 + n_imap])
                    for key in meta_keys:
                        item[key] = data.get(key)
                    if "preview" in meta_keys and item["preview"] is None:
                        no_preview.append(uid)
                out[uid] = item
            return out, body_of, missing, no_preview

        # FETCH asks for at most a thousand at a time (in place, one step);
        # a bigger request (the webmail's attachment test over a mailbox)
        # reads and decodes its rows off the event loop
        big = len(wanted_uids) > SORT_INLINE
        out, body_of, missing, no_preview = await self._bulk_read(read) if big else read(self._read)
        if missing:
            # FETCH answers from what it derived; the save to the cache needs
            # no wait for its commit (the fsync of everyone's writes). Records
            # derived by an earlier FETCH and not saved yet are taken as they are.
            records = self._queued_records({body_of[u] for u in missing})
            rest = [body_of[u] for u in missing if body_of[u] not in records]
            if rest:
                derived, _saved = await self._derive_now(rest, wait=False)
                records.update(derived)
            for uid in missing:
                rec = records.get(body_of[uid])
                if rec is None:
                    continue
                item = {k: getattr(rec, k) for k in imap}
                for key in meta_keys:
                    item[key] = rec.meta[key]
                if "headers" in wanted:
                    item["headers"] = _headers_dict(rec.headers)
                out[uid] = item
        if no_preview:
            previews = await self._previews_now([body_of[u] for u in no_preview])
            for uid in no_preview:
                out[uid]["preview"] = previews.get(body_of[uid], "")
        if "body_id" in wanted:
            for uid, item in out.items():
                item["body_id"] = body_of[uid]
        if "email_id" in wanted:
            key = self.objectid_key
            for uid, item in out.items():
                item["email_id"] = opaque_id(key, EMAIL, body_of[uid])
        if "thread_id" in wanted:
            key = self.objectid_key
            threads = await self.thread_ids([body_of[u] for u in out])
            for uid, item in out.items():
                body_id = body_of[uid]
                # a body derived but not stored (the disk is full): its own thread for now
                item["thread_id"] = opaque_id(key, THREAD, threads.get(body_id, body_id))
        if "headers" in wanted:
            need = [u for u in out if "headers" not in out[u]]
            ids = sorted({body_of[u] for u in need})

            def read_fields(c: sqlite3.Connection) -> dict[int, dict[str, list[str]]]:
                by_body: dict[int, dict[str, list[str]]] = {}
                for i in range(0, len(ids), 900):
                    chunk = ids[i : i + 900]
                    for body_id, name, value in c.execute(
                        f"SELECT body_id, name, value FROM header_fields WHERE body_id IN ({','.join('?' * len(chunk))})"
                        " ORDER BY body_id, n",
                        chunk,
                    ):
                        by_body.setdefault(body_id, {}).setdefault(name, []).append(value)
                return by_body

            by_body = await self._bulk_read(read_fields) if len(ids) > SORT_INLINE else read_fields(self._read)
            for uid in need:
                out[uid]["headers"] = by_body.get(body_of[uid], {})
        return out

    async def search_headers(self, mailbox: MailboxRef, field: str, text: str,
                             within: Collection[int] | None = None) -> set[int]:
        mailbox_id = self._owned(mailbox)
        pending = await self._ensure_indexed(mailbox_id)
        name = field.lower()
        needle = text.casefold()
        fields_indexed = self._fields_indexed()

        def read(c: sqlite3.Connection) -> set[int]:
            if not text:
                rows = c.execute(
                    "SELECT m.uid FROM messages m WHERE m.mailbox_id = ? AND EXISTS"
                    " (SELECT 1 FROM header_fields h WHERE h.body_id = m.body_id AND h.name = ?)",
                    (mailbox_id, name),
                )
                return {r[0] for r in rows}
            return textindex.search_fields(c, mailbox_id, name, needle, fields_indexed, within)

        found = await self._search_read(mailbox_id, within, read)
        for uid, rec in pending.items():
            if any(n == name and needle in search_value(n, value).casefold() for n, value in rec.headers):
                found.add(uid)
        return found if within is None else found.intersection(within)

    def _fields_indexed(self) -> bool:
        """Whether every derived body has its rows in ``fts_fields``
        (textindex.py): not while the backfill of a directory from before
        schema version 9 runs (``meta.fields_index_backfill``)."""
        if self.__dict__.get("_fields_done"):
            return True
        row = self._q1("SELECT value FROM meta WHERE key = 'fields_index_backfill'")
        done = row is None or row[0] == "done"
        if done:
            self._fields_done = True
        return done

    async def sort_keys(self, mailbox: MailboxRef, uids: Sequence[int]) -> dict[int, SortKeys]:
        mailbox_id = self._owned(mailbox)
        pending = await self._ensure_indexed(mailbox_id)
        wanted = list(uids)

        def read(c: sqlite3.Connection) -> tuple[dict[int, SortKeys], dict[int, list[int]]]:
            # one narrow row per message (sort_keys, schema version 5); a
            # body without one was derived before it existed
            out: dict[int, SortKeys] = {}
            missing: dict[int, list[int]] = {}  # body_id -> uids
            for r in select_uids(c, _SORT_SELECT, mailbox_id, wanted, column="m.uid"):
                if r[2] is None:
                    missing.setdefault(r[1], []).append(r[0])
                else:
                    out[r[0]] = SortKeys(r[3], r[4], bool(r[5]), r[6], r[7], r[8], r[9], r[10], r[11],
                                         tuple(r[12].split()))
            return out, missing

        # 100,000 rows take a good part of a second to read and turn into
        # keys: off the event loop, on a connection of their own
        big = len(wanted) > SORT_INLINE
        out, missing = await self._bulk_read(read) if big else read(self._read)
        pending_by_body = {body_id: pending[u] for body_id, us in missing.items() for u in us if u in pending}
        for body_id, us in missing.items():
            rec = pending_by_body.get(body_id)
            if rec is not None:  # derived but not stored (the disk is full)
                for u in us:
                    out[u] = keys_from_json(rec.meta["sort"])
        need = [b for b in missing if b not in pending_by_body]
        if need:
            found = await self._fill_sort_keys(need, off_loop=big)
            for body_id in need:
                keys = found.get(body_id)
                if keys is not None:
                    for u in missing[body_id]:
                        out[u] = keys
        return out

    async def sort_order(self, mailbox: MailboxRef, keys: Sequence[tuple[str, bool]],
                         uids: Sequence[int]) -> list[int]:
        mailbox_id = self._owned(mailbox)
        pending = await self._ensure_indexed(mailbox_id)
        order = ", ".join(f"{_ORDER_BY[name]}{' DESC' if reverse else ''}" for name, reverse in keys)
        wanted = list(uids)
        if not wanted:
            return []
        # One query ordered by SQLite over the typed columns: several times
        # faster than reading 100,000 rows of keys and sorting them here.
        # TEXT compares by memcmp of UTF-8, which is code point order, as
        # i;unicode-casemap keys are compared (RFC 5051 2); equal messages
        # stay in UID order, also under REVERSE (RFC 5256 section 3).
        sql = ("SELECT m.uid, k.body_id IS NULL FROM messages m LEFT JOIN sort_keys k ON k.body_id = m.body_id"
               " WHERE m.mailbox_id = ?")
        if len(wanted) <= 900:
            sql += f" AND m.uid IN ({','.join('?' * len(wanted))})"
            args: tuple = (mailbox_id, *wanted)
        else:
            sql += " AND m.uid BETWEEN ? AND ?"
            args = (mailbox_id, min(wanted), max(wanted))
        sql += f" ORDER BY {order}, m.uid"
        big = len(wanted) > SORT_INLINE
        keep = set(wanted)

        def read(c: sqlite3.Connection) -> tuple[list[int], bool]:
            rows = c.execute(sql, args).fetchall()
            return [r[0] for r in rows if r[0] in keep], any(r[1] for r in rows)

        out, incomplete = await self._bulk_read(read) if big else read(self._read)
        if incomplete and not pending:
            # bodies derived before sort_keys existed: their rows now, then again
            missing = [r[0] for r in self._q(
                "SELECT DISTINCT m.body_id FROM messages m LEFT JOIN sort_keys k ON k.body_id = m.body_id"
                " WHERE m.mailbox_id = ? AND k.body_id IS NULL", (mailbox_id,))]
            await self._fill_sort_keys(missing, off_loop=big)
            out, incomplete = await self._bulk_read(read) if big else read(self._read)
        if incomplete:
            # keys that could not be saved (the disk is full): sorted here
            return await self._sort_here(mailbox, keys, wanted)
        return out

    async def _sort_here(self, mailbox: MailboxRef, keys: Sequence[tuple[str, bool]], uids: list[int]) -> list[int]:
        infos = {m.uid: m for m in await self.get_messages(mailbox, uids)}
        found = await self.sort_keys(mailbox, uids)

        def value(name: str, u: int) -> object:
            k = found[u]
            if name == "ARRIVAL":
                return infos[u].internal_date
            if name == "SIZE":
                return infos[u].size
            if name == "DATE":
                return infos[u].internal_date if k.date is None else k.date
            return getattr(k, _KEY_ATTR[name])

        out = sorted(u for u in uids if u in found and u in infos)
        for name, reverse in reversed(keys):
            out.sort(key=lambda u, name=name: value(name, u), reverse=reverse)  # type: ignore[misc]
        return out

    async def thread_keys(self, mailbox: MailboxRef, uids: Sequence[int]) -> dict[int, ThreadKeys]:
        mailbox_id = self._owned(mailbox)
        wanted = list(uids)
        keep = set(wanted)
        sql = ("SELECT m.uid, coalesce(k.date, m.internal_date), k.subject, k.refwd, k.message_id, k.parents,"
               " k.body_id IS NULL FROM messages m LEFT JOIN sort_keys k ON k.body_id = m.body_id"
               " WHERE m.mailbox_id = ?")

        def read(c: sqlite3.Connection) -> tuple[dict[int, ThreadKeys], list[int]]:
            # only the five columns THREAD needs, straight into tuples
            out: dict[int, ThreadKeys] = {}
            missing: list[int] = []
            for r in select_uids(c, sql, mailbox_id, wanted, column="m.uid"):
                if r[0] not in keep:
                    continue
                if r[6]:
                    missing.append(r[0])
                else:
                    out[r[0]] = (r[1], r[2], bool(r[3]), r[4], tuple(r[5].split()) if r[5] else ())
            return out, missing

        big = len(wanted) > SORT_INLINE
        out, missing = await self._bulk_read(read) if big else read(self._read)
        if missing:
            # bodies not derived yet, derived before sort_keys existed, or
            # not stored (the disk is full): sort_keys derives or fills them
            found = await self.sort_keys(mailbox, missing)
            dates = {m.uid: m.internal_date for m in await self.get_messages(mailbox, list(found))}
            for u, k in found.items():
                if u in dates:
                    out[u] = (dates[u] if k.date is None else k.date, k.subject, k.refwd, k.message_id, k.parents)
        return out

    async def _fill_sort_keys(self, body_ids: list[int], off_loop: bool = False) -> dict[int, SortKeys]:
        """The sort_keys rows of bodies derived before the table existed:
        computed from their derived data and saved (with their thread), as
        the background backfill does. Returns the keys by body id."""

        def compute(c: sqlite3.Connection) -> dict[int, SortKeys]:
            return _keys_from_derived(c, sorted(body_ids))

        found = await self._bulk_read(compute) if off_loop else compute(self._read)
        if found and not self._index_deferred():
            items = sorted(found.items())
            try:
                await self._write(lambda c, ctx: _save_sort_keys(c, items))
            except StorageFull:
                log.warning("store: sort keys not saved, the disk is full")
        return found

    async def thread_ids(self, body_ids: Sequence[int]) -> dict[int, int]:
        """The thread (RFC 8474 5.2: the body id of its first known message)
        of each of ``body_ids`` that is derived; bodies derived before
        sort_keys existed get their row now."""
        ids = sorted(set(body_ids))
        # derived data FETCH left for the writer to save (_derive_now wait=False):
        # a thread is decided when its row is written, so those are saved first
        await self._save_queued(ids)
        out: dict[int, int] = {}
        for i in range(0, len(ids), 900):
            chunk = ids[i : i + 900]
            out.update(self._q(f"SELECT body_id, thread_id FROM sort_keys WHERE body_id IN ({','.join('?' * len(chunk))})",
                               chunk))
        need = [b for b in ids if b not in out]
        if need:
            await self._fill_sort_keys(need, off_loop=len(need) > SORT_INLINE)
            for i in range(0, len(need), 900):
                chunk = need[i : i + 900]
                out.update(self._q(
                    f"SELECT body_id, thread_id FROM sort_keys WHERE body_id IN ({','.join('?' * len(chunk))})", chunk))
        return out

    @property
    def objectid_key(self) -> bytes:
        """The data directory's secret for EMAILID / THREADID (message/objectids.py)."""
        key = self.__dict__.get("_objectid_key")
        if key is None:
            row = self._q1("SELECT value FROM meta WHERE key = 'objectid_key'")
            key = self._objectid_key = bytes.fromhex(row[0])
        return key

    def _backfill_slice(self, c: sqlite3.Connection, mark: str, what: str, work: Callable[[], int | None]) -> bool:
        """One slice of a background backfill in one transaction: ``work``
        writes the slice and returns the last body id done (None: nothing
        was left), which goes to ``meta`` under ``mark`` ("done" at the end).
        False when the disk is full: the backfill pauses and is tried later."""
        c.execute("BEGIN IMMEDIATE")
        try:
            last = work()
            c.execute("UPDATE meta SET value = ? WHERE key = ?", (str(last) if last is not None else "done", mark))
            c.execute("COMMIT")
        except BaseException as exc:
            if c.in_transaction:
                c.execute("ROLLBACK")
            if not isinstance(self.translate_error(exc), StorageFull):
                raise
            log.warning("store: %s backfill paused, the disk is full", what)
            self._index_failed()
            return False
        return True

    def _backfill_sort_keys(self, c: sqlite3.Connection) -> bool:
        """Background work on the writer thread: sort_keys rows for a slice of
        the bodies derived before the table existed (schema version 5), from
        their derived data; True if a slice was done."""
        row = c.execute("SELECT value FROM meta WHERE key = 'sort_keys_backfill'").fetchone()
        if row is None or row[0] == "done" or self._index_deferred():
            return False
        last = int(row[0])
        ids = [r[0] for r in c.execute(
            "SELECT b.id FROM bodies b WHERE b.id > ? AND b.derived IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM sort_keys k WHERE k.body_id = b.id) ORDER BY b.id LIMIT ?",
            (last, SORT_BACKFILL_BATCH),
        )]
        found = _keys_from_derived(c, ids)

        def save() -> int | None:
            _save_sort_keys(c, sorted(found.items()))
            return ids[-1] if ids else None

        if not self._backfill_slice(c, "sort_keys_backfill", "sort keys", save):
            return False
        if not ids:
            log.info("store: sort keys of older bodies filled in")
        return bool(ids)

    def _backfill_fields(self, c: sqlite3.Connection) -> bool:
        """Background work on the writer thread: the ``fts_fields`` rows of a
        slice of the bodies derived before the table existed (schema version
        9); True if a slice was done. Until the last slice, header search
        reads the mailbox's rows (``_fields_indexed``)."""
        row = c.execute("SELECT value FROM meta WHERE key = 'fields_index_backfill'").fetchone()
        if row is None or row[0] == "done" or self._index_deferred():
            return False
        started = time.monotonic()
        done: list[int | None] = []

        def fill() -> int | None:
            done.append(textindex.backfill_fields(c, int(row[0]), FIELDS_BACKFILL_BATCH))
            return done[0]

        if not self._backfill_slice(c, "fields_index_backfill", "header field index", fill):
            return False
        last = done[0]
        if last is None:
            log.info("store: header field index of older bodies filled in")
        else:
            log.debug("store: header field index filled up to body %d (%.3f s)", last, time.monotonic() - started)
        return last is not None

    async def search_text(self, mailbox: MailboxRef, text: str, where: Literal["body", "text"],
                          within: Collection[int] | None = None) -> set[int]:
        mailbox_id = self._owned(mailbox)
        pending = await self._ensure_indexed(mailbox_id)
        needle = text.strip()

        def read(c: sqlite3.Connection) -> set[int]:
            if not needle:
                return {r[0] for r in c.execute("SELECT uid FROM messages WHERE mailbox_id = ?", (mailbox_id,))}
            return textindex.search(c, mailbox_id, needle, where, within)

        found = await self._search_read(mailbox_id, within, read)
        if needle:
            for uid, rec in pending.items():
                if textindex.matches(rec.header_text, rec.body_text, needle, where):
                    found.add(uid)
        return found if within is None else found.intersection(within)

    async def _search_read(self, mailbox_id: int, within: Collection[int] | None,
                           fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """``fn``, a search over the text or header index: in place when it
        checks a handful of messages without the index (textindex.py
        ``few_messages``), else off the event loop (``_bulk_read``). Its cost
        follows the bodies of every account holding the string's trigrams,
        and for a short or common string the size of the mailbox, which the
        other sessions of this worker must not wait for (RFC 9051 6.4.4
        BODY/TEXT are substring matches: the candidates are checked one by
        one)."""
        if textindex.few_messages(self._read, mailbox_id, within):
            return fn(self._read)
        return await self._bulk_read(fn)

    async def sent_dates(self, mailbox: MailboxRef, uids: Sequence[int]) -> dict[int, dt.date | None]:
        mailbox_id = self._owned(mailbox)
        pending = await self._ensure_indexed(mailbox_id)
        wanted = list(uids)

        def read(c: sqlite3.Connection) -> tuple[dict[int, dt.date | None], list[int]]:
            # the first Date field of each message (header_fields is in field
            # order, n), parsed here: 100,000 of them are seconds of work
            rows = select_uids(c, _SENT_SELECT, mailbox_id, wanted, column="m.uid")
            if len(rows) < len(set(wanted)):
                # expunged messages the session still holds (RFC 2180 4.1.1)
                found = {r[0] for r in rows}
                rows += select_uids(c, _SENT_SELECT, -mailbox_id, [u for u in set(wanted) if u not in found],
                                    column="m.uid")
            out: dict[int, dt.date | None] = {}
            underived: list[int] = []
            for uid, derived, value in rows:
                if derived:
                    out[uid] = sent_day(() if value is None else (value,))
                elif uid in pending:  # derived, but not stored (the disk is full)
                    out[uid] = sent_day(_headers_dict(pending[uid].headers).get("date", ()))
                else:
                    underived.append(uid)
            return out, underived

        out, underived = await self._bulk_read(read) if len(wanted) > SORT_INLINE else read(self._read)
        if underived:
            # held expunged messages the indexer has not reached: derived now
            for uid, d in (await self.get_derived(mailbox, underived, ("headers",), expunged=True)).items():
                out[uid] = sent_day(d.get("headers", {}).get("date", ()))
        return out

    async def object_id_hits(self, mailbox: MailboxRef, uids: Sequence[int],
                             wanted: Collection[tuple[str, str]]) -> dict[tuple[str, str], set[int]]:
        mailbox_id = self._owned(mailbox)
        hits: dict[tuple[str, str], set[int]] = {key: set() for key in wanted}
        names = {name for name, _ in hits}
        if names - _OBJECT_IDS:
            raise ValueError(f"not an object id: {', '.join(sorted(names - _OBJECT_IDS))}")
        emails = {value: hits[(name, value)] for name, value in hits if name == "email_id"}
        threads = {value: hits[(name, value)] for name, value in hits if name == "thread_id"}
        asked = list(uids)
        key = self.objectid_key
        # each message's body (EMAILID, RFC 8474 5.1) and the thread kept
        # with its sort keys (THREADID, 5.2)
        sql = ("SELECT m.uid, m.body_id, k.thread_id FROM messages m LEFT JOIN sort_keys k ON k.body_id = m.body_id"
               " WHERE m.mailbox_id = ?")

        def read(c: sqlite3.Connection) -> list[int]:
            # the ids made and compared here: a few microseconds a message,
            # a whole mailbox's in one read (off the event loop when big)
            rows = select_uids(c, sql, mailbox_id, asked, column="m.uid")
            if len(rows) < len(set(asked)):
                # expunged messages the session still holds (RFC 2180 4.1.1)
                found = {r[0] for r in rows}
                rows += select_uids(c, sql, -mailbox_id, [u for u in set(asked) if u not in found], column="m.uid")
            no_thread: list[int] = []
            for uid, body_id, thread in rows:
                if emails:
                    hit = emails.get(opaque_id(key, EMAIL, body_id))
                    if hit is not None:
                        hit.add(uid)
                if threads:
                    if thread is None:
                        no_thread.append(uid)
                        continue
                    hit = threads.get(opaque_id(key, THREAD, thread))
                    if hit is not None:
                        hit.add(uid)
            return no_thread

        no_thread = await self._bulk_read(read) if len(asked) > SORT_INLINE else read(self._read)
        # bodies without their thread yet (not derived, derived and not saved,
        # derived before sort_keys existed): get_derived decides it, a batch
        # at a time, each deriving or saving what it needs in its own await
        for start in range(0, len(no_thread), SENT_BATCH):
            chunk = no_thread[start : start + SENT_BATCH]
            for uid, d in (await self.get_derived(mailbox, chunk, ("thread_id",), expunged=True)).items():
                hit = threads.get(d["thread_id"])
                if hit is not None:
                    hit.add(uid)
        return hits

    async def _ensure_indexed(self, mailbox_id: int) -> dict[int, DerivedRecord]:
        """Derive the mailbox's bodies the indexer has not reached yet. Returns,
        by UID, the records that could not be saved (the disk is full, or
        indexing is deferred): the caller searches them itself."""
        if self._q1("SELECT 1 FROM bodies WHERE derived IS NULL LIMIT 1") is None:
            # the usual case, from the partial index bodies_unindexed: no
            # walk over a big mailbox's messages on the event loop
            return {}
        backlog = self._q1(
            "SELECT count(*) FROM (SELECT 1 FROM bodies WHERE derived IS NULL LIMIT ?)", (FEW_UNINDEXED,)
        )
        if backlog is not None and backlog[0] < FEW_UNINDEXED:
            # Usually the indexer is only a few bodies behind, if at all: start
            # from those (partial index bodies_unindexed) and look up their
            # messages (messages_body), not from every message of the mailbox.
            rows = self._q(
                "SELECT m.uid, b.id FROM bodies b CROSS JOIN messages m"
                " WHERE b.derived IS NULL AND m.body_id = b.id AND m.mailbox_id = ?",
                (mailbox_id,),
            )
        else:
            # a big backlog (an import): a walk over the mailbox's messages,
            # off the event loop
            rows = await self._bulk_read(lambda c: c.execute(
                "SELECT m.uid, b.id FROM messages m JOIN bodies b ON b.id = m.body_id"
                " WHERE m.mailbox_id = ? AND b.derived IS NULL",
                (mailbox_id,),
            ).fetchall())
        if not rows:
            return {}
        records, saved = await self._derive_now([r[1] for r in rows])
        if saved:
            return {}
        return {uid: records[body_id] for uid, body_id in rows if body_id in records}

    async def _previews_now(self, body_ids: list[int]) -> dict[int, str]:
        """The RFC 8970 previews of bodies derived before previews were kept:
        computed off the event loop, and saved into their derived data (a
        cache: a full disk only means they are computed again next time)."""
        places = []
        for body_id in reversed(dict.fromkeys(body_ids)):
            row = self._q1(f"SELECT {BODY_PLACE} FROM bodies b {BODY_DATA} WHERE b.id = ?", (body_id,))
            if row is not None:
                places.append((body_id, row))

        def compute() -> dict[int, str]:
            previews: dict[int, str] = {}
            while places:  # each place goes as its body is read (as in _derive_now)
                body_id, row = places.pop()
                previews[body_id] = derive(self.blobs.body(*row)).preview
            return previews

        out = await asyncio.to_thread(compute) if places else {}
        if out and not self._index_deferred():

            def save(c: sqlite3.Connection, ctx: object) -> None:
                c.executemany("UPDATE body_derived SET meta = json_set(meta, '$.preview', ?) WHERE body_id = ?",
                              [(text, body_id) for body_id, text in out.items()])

            try:
                await self._write(save)
            except StorageFull:
                log.warning("store: previews not saved, the disk is full")
        return out

    async def _derive_now(
        self, body_ids: list[int], wait: bool = True
    ) -> tuple[dict[int, DerivedRecord], bool]:
        """Derive bodies the indexer has not reached yet (FETCH/SEARCH must
        neither wait for it nor answer without them) and store the result if
        there is room. Returns the records and whether they were stored.

        ``wait=False``: the store goes on in the background and the second
        value is False. Derived data is a cache (the indexer derives what is
        missing), so a caller that only needs the records does not wait for a
        group commit: under a steady stream of writes the writer is never
        idle long enough for the background indexer, and every FETCH of a new
        message would otherwise wait for an fsync."""
        queued: dict[int, DerivedRecord] = {}  # derived by a FETCH, not saved yet
        look: list[int] = []
        for body_id in dict.fromkeys(body_ids):
            rec = self._derived_queue.get(body_id)
            if rec is not None:
                queued[body_id] = rec
            else:
                look.append(body_id)

        def read_places(c: sqlite3.Connection) -> dict[int, tuple[int, int, int, bytes | None]]:
            found: dict[int, tuple[int, int, int, bytes | None]] = {}
            for i in range(0, len(look), 900):
                chunk = look[i : i + 900]
                for body_id, *place in c.execute(
                    f"SELECT b.id, {BODY_PLACE} FROM bodies b {BODY_DATA}"
                    f" WHERE b.id IN ({','.join('?' * len(chunk))})", chunk
                ):
                    found[body_id] = tuple(place)  # type: ignore[assignment]
            return found

        # (after an import, a search may meet thousands: read off the event loop)
        found = await self._bulk_read(read_places) if len(look) > SORT_INLINE else read_places(self._read)
        # last asked first, popped from the end as each body is derived: the
        # bytes of the inline bodies, which their places hold (up to
        # bodies.py INLINE_MAX each), go one by one, not all after the last
        places = [(b, found.pop(b)) for b in reversed(look) if b in found]

        def derive_all() -> dict[int, DerivedRecord]:
            records: dict[int, DerivedRecord] = {}
            while places:
                body_id, place = places.pop()
                records[body_id] = derive_record(self.blobs.body(*place))
            return records

        # Parsing a message may take a good part of a second (a million MIME
        # parts, deep nesting): off the event loop, so one such message cannot
        # stall the other clients (the background indexer runs on the writer
        # thread for the same reason).
        out = await asyncio.to_thread(derive_all) if places else {}
        out.update(queued)
        items = list(out.items())
        if not items:
            return out, True
        if self._index_deferred():
            return out, False
        if not wait:
            self._queue_derived(items)
            return out, False
        try:
            await self._write(lambda c, ctx: self._save_derived(c, items))
        except StorageFull:
            # Derived data is a cache the indexer fills again later: a full
            # disk must not make FETCH/SEARCH of stored mail fail.
            log.warning("store: derived data not saved, the disk is full")
            self._index_failed()
            return out, False
        self._unqueue_derived(queued)
        return out, True

    # --- derived data saved between write batches --------------------------------
    def _queue_derived(self, items: list[tuple[int, DerivedRecord]]) -> None:
        """Leave records FETCH derived for the writer to save between its
        batches (``_upkeep_slice``): saving one is mostly indexing its text,
        which inside a batch would hold up every write and every session
        waiting for that commit. Past ``DERIVED_QUEUE_BYTES`` of records one
        is dropped (the background indexer derives its body again later)."""
        with self._derived_queue_lock:
            for body_id, rec in items:
                size = _queued_cost(rec)
                if body_id in self._derived_queue or self._derived_queue_chars + size > DERIVED_QUEUE_BYTES:
                    continue
                self._derived_queue[body_id] = rec
                self._derived_queue_chars += size
        self._writer.wake_upkeep()

    def _queued_records(self, body_ids: Iterable[int]) -> dict[int, DerivedRecord]:
        """The queued records of those of ``body_ids`` that have one (the
        writer thread takes saved ones out meanwhile: under the lock)."""
        with self._derived_queue_lock:
            queue = self._derived_queue
            return {b: queue[b] for b in body_ids if b in queue}

    def _unqueue_derived(self, body_ids: Iterable[int]) -> None:
        with self._derived_queue_lock:
            for body_id in body_ids:
                rec = self._derived_queue.pop(body_id, None)
                if rec is not None:
                    self._derived_queue_chars -= _queued_cost(rec)

    async def _save_queued(self, body_ids: Iterable[int]) -> None:
        """Save now (in the next batch, waiting for it) the queued records of
        ``body_ids``, for a reader that needs them in the database."""
        items = list(self._queued_records(body_ids).items())
        if not items:
            return
        try:
            await self._write(lambda c, ctx: self._save_derived(c, items))
        except StorageFull:
            log.warning("store: derived data not saved, the disk is full")
            self._index_failed()
            return
        self._unqueue_derived(b for b, _ in items)

    def _upkeep_wanted(self, c: sqlite3.Connection) -> bool:
        # (records wait while the disk is short of the reserve for index data)
        return (bool(self._derived_queue) and not self._index_deferred()) or textindex.deferred(c)

    def _upkeep_pressing(self) -> bool:
        """The queue of derived records is more than half full: the upkeep
        runs after each batch instead of waiting for a pause in the writes
        (under a steady load there is none, and a full queue drops records
        that FETCH then derives again, in every worker)."""
        return self._derived_queue_chars > DERIVED_QUEUE_BYTES // 2

    def _upkeep_slice(self, c: sqlite3.Connection) -> bool:
        """On the writer thread, between batches: remove from the full-text
        index a few bodies that are gone, and save derived records FETCH
        left (``_queue_derived``), in one transaction, for at most about
        ``INDEX_SLICE`` seconds or until a write is queued. Committed without
        an fsync: it is all a cache (the next durable commit syncs it; if it
        is lost, the bodies are still marked not derived and are derived
        again; see ``_cache_synchronous``)."""
        started = time.monotonic()
        with self._derived_queue_lock:
            queued = list(itertools.islice(self._derived_queue.items(), INDEX_BATCH))
        save = not self._index_deferred()
        done: list[int] = []
        c.execute(f"PRAGMA synchronous={self._cache_synchronous}")
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                textindex.delete_deferred(c, UNINDEX_BATCH)
                for body_id, rec in queued if save else ():
                    if done and (self._writer.has_pending() or time.monotonic() - started > INDEX_SLICE):
                        break
                    self._save_derived(c, [(body_id, rec)])
                    done.append(body_id)
                c.execute("COMMIT")
            except BaseException as exc:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                # the records are dropped (not tried again after each batch):
                # the background indexer derives their bodies later
                self._unqueue_derived(b for b, _ in queued)
                if not isinstance(self.translate_error(exc), StorageFull):
                    raise
                log.warning("store: derived data not saved, the disk is full")
                self._index_failed()
                return False
        finally:
            c.execute(f"PRAGMA synchronous={self._synchronous}")
        self._unqueue_derived(done)
        # (disk nearly full: the records wait, the gone bodies' rows still go)
        return save or textindex.deferred(c)

    async def _flush_upkeep(self) -> None:
        with self._derived_queue_lock:
            ids = list(self._derived_queue)
        await self._save_queued(ids)

    @staticmethod
    def _save_derived(c: sqlite3.Connection, items: list[tuple[int, DerivedRecord]]) -> None:
        for body_id, rec in items:
            cur = c.execute("UPDATE bodies SET derived = ? WHERE id = ? AND derived IS NULL", (INDEXED, body_id))
            if not cur.rowcount:
                continue  # gone, or derived meanwhile
            c.execute(
                "INSERT OR REPLACE INTO body_derived(body_id, envelope, bodystructure, body, meta)"
                " VALUES (?, ?, ?, ?, ?)",
                (body_id, rec.envelope_imap, rec.bodystructure_imap, rec.body_imap,
                 json.dumps(rec.meta, separators=(",", ":"))),
            )
            c.execute("DELETE FROM header_fields WHERE body_id = ?", (body_id,))
            folded = [(name, search_value(name, value).casefold()) for name, value in rec.headers]
            c.executemany(
                "INSERT OR REPLACE INTO header_fields(body_id, name, n, value, folded) VALUES (?, ?, ?, ?, ?)",
                [(body_id, name, n, value, folded[n][1]) for n, (name, value) in enumerate(rec.headers)],
            )
            textindex.save(c, body_id, rec.header_text, rec.body_text)
            textindex.save_fields(c, body_id, folded)
            _save_sort_keys(c, [(body_id, keys_from_json(rec.meta["sort"]))])

    # --- when index data may be written -----------------------------------------
    def _free_bytes(self) -> int:
        try:
            st = os.statvfs(self.data_dir)
        except OSError:
            return 1 << 62
        return st.f_bavail * st.f_frsize

    def _index_deferred(self) -> float:
        """Index data is a cache: it is written only while the disk keeps
        ``index_min_free`` bytes for mail, and not again soon after a write of
        it failed for lack of space. Reads then answer from data derived on the
        spot, and the background indexer catches up once there is room.
        Returns 0 if it may be written now, else the seconds to wait."""
        wait = self._index_resume_at - time.monotonic()
        if wait > 0:
            return wait
        if self._free_bytes() < self.config.index_min_free:
            return INDEX_FREE_POLL
        return 0.0

    def _index_failed(self) -> None:
        """A write of index data failed with the disk full: wait, longer each time."""
        first, last = INDEX_BACKOFF
        self._index_backoff = min(last, self._index_backoff * 2) if self._index_backoff else first
        self._index_resume_at = time.monotonic() + self._index_backoff

    def _index_some(self, c: sqlite3.Connection) -> bool | float:
        """Background indexing on the writer thread when it has no writes to do:
        derive bodies delivered since, so FETCH/SEARCH find them ready.

        Deriving holds the GIL and the writer thread, so it works in short
        slices and stops as soon as a write is waiting: a delivery never queues
        behind more than one body's derivation. Each slice is one commit of at
        most INDEX_BATCH bodies; when the free space falls below the reserve,
        or a commit fails with the disk full, it stops and returns the seconds
        after which to look again."""
        if self._upkeep_wanted(c):
            # first what this process derived already (no second parse)
            self._upkeep_slice(c)
            if self._derived_queue and not self._index_deferred():
                return True
        wait = self._index_deferred()
        if wait:
            if c.execute("SELECT 1 FROM bodies WHERE derived IS NULL LIMIT 1").fetchone() is None:
                return False
            return max(0.05, wait)
        rows = c.execute(
            f"SELECT b.id, {BODY_PLACE} FROM bodies b {BODY_DATA} WHERE b.derived IS NULL LIMIT ?", (INDEX_BATCH,)
        ).fetchall()
        if not rows:
            return self._backfill_sort_keys(c) or self._backfill_fields(c)
        items: list[tuple[int, DerivedRecord]] = []
        started = time.monotonic()
        for body_id, *place in rows:
            items.append((body_id, derive_record(self.blobs.body(*place))))
            if self._writer.has_pending() or time.monotonic() - started > INDEX_SLICE:
                break
        # Derived data can always be computed again (bodies.derived stays NULL if
        # this commit is lost), so it is committed without an fsync: the next
        # durable commit syncs the WAL up to and including it (a checkpoint
        # this commit runs still syncs: ``_cache_synchronous``). A delivery that
        # arrives meanwhile then waits for a memory write, not for a disk flush.
        c.execute(f"PRAGMA synchronous={self._cache_synchronous}")
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                self._save_derived(c, items)
                c.execute("COMMIT")
            except BaseException as exc:
                # SQLite may have rolled the transaction back already (SQLITE_FULL)
                if c.in_transaction:
                    c.execute("ROLLBACK")
                if not isinstance(self.translate_error(exc), StorageFull):
                    raise
                log.warning("store: indexing paused, the disk is full")
                self._index_failed()
                return max(0.05, self._index_resume_at - time.monotonic())
        finally:
            c.execute(f"PRAGMA synchronous={self._synchronous}")
        self._index_backoff = 0.0
        return True


def _keys_from_derived(c: sqlite3.Connection, body_ids: list[int]) -> dict[int, SortKeys]:
    """SortKeys of derived bodies from what was kept before sort_keys: the
    JSON list in body_derived.meta, else (older still) the header fields."""
    texts: dict[int, str | None] = {}
    for i in range(0, len(body_ids), 900):
        chunk = body_ids[i : i + 900]
        texts.update(c.execute(
            "SELECT body_id, json_extract(meta, '$.sort') FROM body_derived"
            f" WHERE body_id IN ({','.join('?' * len(chunk))})",
            chunk,
        ).fetchall())
    out: dict[int, SortKeys] = {}
    for body_id, text in texts.items():
        keys = _json_keys(text)
        if keys is not None:
            out[body_id] = keys
    rest = [b for b in texts if b not in out]
    for body_id, fields in _sort_fields(c, rest).items():
        out[body_id] = keys_from_json(list(sort_keys(fields)))
    return out


def _sort_fields(c: sqlite3.Connection, body_ids: list[int]) -> dict[int, dict[str, str]]:
    """For bodies derived before SortKeys were kept: the first value of
    each KEY_FIELDS field, in primary-key order (body_id, name, n)."""
    fields: dict[int, dict[str, str]] = {b: {} for b in body_ids}
    ids = sorted(body_ids)
    for i in range(0, len(ids), 900):
        chunk = ids[i : i + 900]
        for body_id, name, value in c.execute(
            f"SELECT body_id, name, value FROM header_fields WHERE body_id IN ({','.join('?' * len(chunk))})"
            f" AND name IN ({','.join('?' * len(KEY_FIELDS))}) ORDER BY body_id, name, n",
            (*chunk, *KEY_FIELDS),
        ):
            fields[body_id].setdefault(name, value)
    return fields


def _save_sort_keys(c: sqlite3.Connection, items: Sequence[tuple[int, SortKeys]]) -> None:
    """Write bodies' sort_keys rows inside the caller's transaction. A new
    row gets its thread (RFC 8474 5.2): that of a message of the same
    account(s) whose Message-ID is the body's own or one of its last parent
    ids (the lowest if several); else a thread of its own, named by the
    body's id.
    A message that arrives before its parent keeps its own thread (the RFC
    asks for the same id only "as far as the server knows"); a row written
    again (a new derivation format) keeps the thread it had."""
    for body_id, k in items:
        row = c.execute("SELECT thread_id FROM sort_keys WHERE body_id = ?", (body_id,)).fetchone()
        thread = row[0] if row is not None else _thread_of(c, body_id, k)
        c.execute(_SORT_UPSERT, (body_id, k.date, k.subject, int(k.refwd), k.from_mailbox, k.from_display,
                                 k.to_mailbox, k.to_display, k.cc_mailbox, k.message_id, " ".join(k.parents), thread))


def _thread_of(c: sqlite3.Connection, body_id: int, k: SortKeys) -> int:
    ids = list(dict.fromkeys([*k.parents[-THREAD_LOOKUP_IDS:], *([k.message_id] if k.message_id else [])]))
    found: list[int] = []
    for mid in ids:
        # per id the first body of the account(s) holding this one that
        # carries it (a thread never joins another account's mail): the
        # index walk stops there, however many messages reuse the id
        row = c.execute(
            "SELECT k.thread_id FROM sort_keys k WHERE k.message_id = ? AND k.body_id != ?"
            " AND EXISTS (SELECT 1 FROM messages m JOIN mailboxes x ON x.id = m.mailbox_id"
            "  WHERE m.body_id = k.body_id AND x.account_id IN"
            "  (SELECT x2.account_id FROM messages m2 JOIN mailboxes x2 ON x2.id = m2.mailbox_id"
            "   WHERE m2.body_id = ?))"
            " ORDER BY k.body_id LIMIT 1",
            (mid, body_id, body_id),
        ).fetchone()
        if row is not None:
            found.append(row[0])
    return min(found, default=body_id)


def _json_keys(text: str | None) -> SortKeys | None:
    if text is None:
        return None
    try:
        return keys_from_json(json.loads(text))
    except (ValueError, TypeError, IndexError):
        return None  # not ours: computed from header_fields instead


def _headers_dict(headers: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in headers:
        out.setdefault(name, []).append(value)
    return out
