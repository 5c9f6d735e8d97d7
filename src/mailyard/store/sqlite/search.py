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
import itertools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Literal

from ...message.address import search_value
from ...message.derived import derive
from ...message.threadkeys import KEY_FIELDS, SortKeys, keys_from_json, sort_keys
from ..api import DERIVED_FIELDS, DerivedRecord, MailboxRef, StorageFull, derive_record
from . import textindex
from .core import SQLiteCore, select_uids

log = logging.getLogger("mailyard.store")

INDEX_BATCH = 50
# Fewer bodies than this waiting for the indexer: SEARCH finds those of its
# mailbox from the bodies' side (_ensure_indexed).
FEW_UNINDEXED = 1000
INDEX_SLICE = 0.01  # seconds of deriving the background indexer does before it looks at the write queue
INDEXED = "2"  # bodies.derived once body_derived/header_fields/the text index hold the body's data
# Disk full while indexing: first wait, doubled after each failure up to the last.
INDEX_BACKOFF = (1.0, 60.0)
INDEX_FREE_POLL = 1.0  # seconds between looks at the free space while it is below the reserve
# SORT/THREAD keys kept in memory, per body (bodies never change and their ids
# are never reused: AUTOINCREMENT): about 500 bytes each with the shared
# strings interned, so at most some 50 MiB.
SORT_CACHE_BODIES = 100_000
SORT_INLINE = 2_000  # more bodies' keys than this are computed off the event loop

_META_KEYS = frozenset({"envelope", "bodystructure", "parts", "messages", "date", "size", "preview"})
_IMAP_COLS = {"envelope_imap": "envelope", "bodystructure_imap": "bodystructure", "body_imap": "body"}


class SearchMixin(SQLiteCore):
    """Derived data, header and full-text search, background indexing."""

    # SORT and THREAD keys (message/threadkeys.py) by body id, computed from
    # header_fields on first use and kept (bounded by SORT_CACHE_BODIES): a
    # SORT of a mailbox already sorted once reads one row per message.
    _sort_cache: dict[int, SortKeys]

    # Indexing waits (monotonic time) after a disk-full failure; see _index_deferred.
    _index_resume_at = 0.0
    _index_backoff = 0.0

    async def get_derived(
        self, mailbox: MailboxRef, uids: Sequence[int], fields: Iterable[str] | None = None,
        expunged: bool = False,
    ) -> dict[int, dict]:
        mailbox_id = self._owned(mailbox)
        wanted = set(DERIVED_FIELDS - _IMAP_COLS.keys()) if fields is None else set(fields)
        unknown = wanted - DERIVED_FIELDS
        if unknown:
            raise ValueError(f"unknown derived fields: {', '.join(sorted(unknown))}")
        imap = [k for k in _IMAP_COLS if k in wanted]
        meta_keys = _META_KEYS & wanted
        cols = ", ".join(["m.uid", "m.body_id", "d.body_id", *(f"d.{_IMAP_COLS[k]}" for k in imap),
                          *(["d.meta"] if meta_keys else [])])
        sql = f"SELECT {cols} FROM messages m LEFT JOIN body_derived d ON d.body_id = m.body_id WHERE m.mailbox_id = ?"
        rows = select_uids(self._read, sql, mailbox_id, list(uids), column="m.uid")
        if expunged and len(rows) < len(set(uids)):
            # expunged messages still held: their rows sit under the negated id (messages.py)
            found = {r[0] for r in rows}
            rows += select_uids(self._read, sql, -mailbox_id, [u for u in set(uids) if u not in found],
                                column="m.uid")
        out: dict[int, dict] = {}
        body_of: dict[int, int] = {}
        missing: list[int] = []
        no_preview: list[int] = []  # derived before previews were (RFC 8970)
        n_imap = len(imap)
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
        if missing:
            # FETCH answers from what it derived; the save to the cache needs
            # no wait for its commit (the fsync of everyone's writes)
            records, _saved = await self._derive_now([body_of[u] for u in missing], wait=False)
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
        if "headers" in wanted:
            need = [u for u in out if "headers" not in out[u]]
            by_body: dict[int, dict[str, list[str]]] = {}
            ids = sorted({body_of[u] for u in need})
            for i in range(0, len(ids), 900):
                chunk = ids[i : i + 900]
                for body_id, name, value in self._q(
                    f"SELECT body_id, name, value FROM header_fields WHERE body_id IN ({','.join('?' * len(chunk))})"
                    " ORDER BY body_id, n",
                    chunk,
                ):
                    by_body.setdefault(body_id, {}).setdefault(name, []).append(value)
            for uid in need:
                out[uid]["headers"] = by_body.get(body_of[uid], {})
        return out

    async def search_headers(self, mailbox: MailboxRef, field: str, text: str) -> set[int]:
        mailbox_id = self._owned(mailbox)
        pending = await self._ensure_indexed(mailbox_id)
        name = field.lower()
        needle = text.casefold()
        if not text:
            rows = self._q(
                "SELECT m.uid FROM messages m WHERE m.mailbox_id = ? AND EXISTS"
                " (SELECT 1 FROM header_fields h WHERE h.body_id = m.body_id AND h.name = ?)",
                (mailbox_id, name),
            )
        else:
            rows = self._q(
                "SELECT m.uid FROM messages m WHERE m.mailbox_id = ? AND EXISTS"
                " (SELECT 1 FROM header_fields h WHERE h.body_id = m.body_id AND h.name = ?"
                " AND instr(h.folded, ?) > 0)",
                (mailbox_id, name, needle),
            )
        found = {r[0] for r in rows}
        for uid, rec in pending.items():
            if any(n == name and needle in search_value(n, value).casefold() for n, value in rec.headers):
                found.add(uid)
        return found

    async def sort_keys(self, mailbox: MailboxRef, uids: Sequence[int]) -> dict[int, SortKeys]:
        mailbox_id = self._owned(mailbox)
        pending = await self._ensure_indexed(mailbox_id)
        wanted = set(uids)
        cache = self.__dict__.get("_sort_cache")
        if cache is None:
            cache = self._sort_cache = {}
        out: dict[int, SortKeys] = {}
        missing: dict[int, list[int]] = {}  # body_id -> uids
        for uid, body_id in self._q("SELECT uid, body_id FROM messages WHERE mailbox_id = ?", (mailbox_id,)):
            if uid not in wanted:
                continue
            keys = cache.get(body_id)
            if keys is None:
                missing.setdefault(body_id, []).append(uid)
            else:
                out[uid] = keys
        if not missing:
            return out
        # The SQL runs here; turning 100,000 stored JSON lists (or header
        # fields) into keys takes a good part of a second, so a large batch is
        # done off the event loop, as _derive_now parses messages.
        texts = self._stored_sort_texts(sorted(missing))
        fields = self._sort_fields([b for b in missing if texts.get(b) is None])

        def compute() -> dict[int, SortKeys | None]:
            keys: dict[int, SortKeys | None] = {b: _json_keys(t) for b, t in texts.items()}
            for body_id, f in fields.items():
                keys[body_id] = keys_from_json(list(sort_keys(f)))
            return keys

        found = await asyncio.to_thread(compute) if len(missing) > SORT_INLINE else compute()
        bad = [b for b in missing if found.get(b) is None]
        if bad:  # kept keys of another shape: from the header fields
            for body_id, f in self._sort_fields(bad).items():
                found[body_id] = keys_from_json(list(sort_keys(f)))
        pending_by_body = {body_id: pending[u] for body_id, us in missing.items() for u in us if u in pending}
        if len(cache) + len(missing) > SORT_CACHE_BODIES:
            # forget the oldest entries (dicts keep insertion order)
            for body_id in list(itertools.islice(cache, len(cache) // 4 + len(missing))):
                cache.pop(body_id, None)
        for body_id, us in missing.items():
            rec = pending_by_body.get(body_id)
            keys = found.get(body_id)
            if rec is not None:
                # derived but not stored (the disk is full): not cached
                keys = keys_from_json(rec.meta["sort"])
            elif keys is None:
                continue  # gone meanwhile
            else:
                cache[body_id] = keys
            for u in us:
                out[u] = keys
        return out

    def _stored_sort_texts(self, body_ids: list[int]) -> dict[int, str | None]:
        """The SortKeys kept in the bodies' derived data (derive_record), as JSON text."""
        out: dict[int, str | None] = {}
        for i in range(0, len(body_ids), 900):
            chunk = body_ids[i : i + 900]
            out.update(self._q(
                "SELECT body_id, json_extract(meta, '$.sort') FROM body_derived"
                f" WHERE body_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ))
        return out

    def _sort_fields(self, body_ids: list[int]) -> dict[int, dict[str, str]]:
        """For bodies derived before SortKeys were kept: the first value of
        each KEY_FIELDS field, in primary-key order (body_id, name, n)."""
        fields: dict[int, dict[str, str]] = {b: {} for b in body_ids}
        ids = sorted(body_ids)
        for i in range(0, len(ids), 900):
            chunk = ids[i : i + 900]
            for body_id, name, value in self._q(
                f"SELECT body_id, name, value FROM header_fields WHERE body_id IN ({','.join('?' * len(chunk))})"
                f" AND name IN ({','.join('?' * len(KEY_FIELDS))}) ORDER BY body_id, name, n",
                (*chunk, *KEY_FIELDS),
            ):
                fields[body_id].setdefault(name, value)
        return fields

    async def search_text(self, mailbox: MailboxRef, text: str, where: Literal["body", "text"]) -> set[int]:
        mailbox_id = self._owned(mailbox)
        pending = await self._ensure_indexed(mailbox_id)
        needle = text.strip()
        if not needle:
            return {r[0] for r in self._q("SELECT uid FROM messages WHERE mailbox_id = ?", (mailbox_id,))}
        found = textindex.search(self._read, mailbox_id, needle, where)
        for uid, rec in pending.items():
            if textindex.matches(rec.header_text, rec.body_text, needle, where):
                found.add(uid)
        return found

    async def _ensure_indexed(self, mailbox_id: int) -> dict[int, DerivedRecord]:
        """Derive the mailbox's bodies the indexer has not reached yet. Returns,
        by UID, the records that could not be saved (the disk is full, or
        indexing is deferred): the caller searches them itself."""
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
            rows = self._q(
                "SELECT m.uid, b.id FROM messages m JOIN bodies b ON b.id = m.body_id"
                " WHERE m.mailbox_id = ? AND b.derived IS NULL",
                (mailbox_id,),
            )
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
        places = {}
        for body_id in dict.fromkeys(body_ids):
            row = self._q1("SELECT segment, offset, length FROM bodies WHERE id = ?", (body_id,))
            if row is not None:
                places[body_id] = row

        def compute() -> dict[int, str]:
            return {body_id: derive(self.blobs.read(*row)).preview for body_id, row in places.items()}

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
        places = {}
        for body_id in dict.fromkeys(body_ids):
            row = self._q1("SELECT segment, offset, length FROM bodies WHERE id = ?", (body_id,))
            if row is not None:
                places[body_id] = row

        def derive_all() -> dict[int, DerivedRecord]:
            return {body_id: derive_record(self.blobs.read(*row)) for body_id, row in places.items()}

        # Parsing a message may take a good part of a second (a million MIME
        # parts, deep nesting): off the event loop, so one such message cannot
        # stall the other clients (the background indexer runs on the writer
        # thread for the same reason).
        out = await asyncio.to_thread(derive_all) if places else {}
        items = list(out.items())
        if not items:
            return out, True
        if self._index_deferred():
            return out, False
        if not wait:
            task = asyncio.get_running_loop().create_task(self._save_derived_soon(items))
            self._pending_saves.add(task)
            task.add_done_callback(self._pending_saves.discard)
            return out, False
        try:
            await self._write(lambda c, ctx: self._save_derived(c, items))
        except StorageFull:
            # Derived data is a cache the indexer fills again later: a full
            # disk must not make FETCH/SEARCH of stored mail fail.
            log.warning("store: derived data not saved, the disk is full")
            self._index_failed()
            return out, False
        return out, True

    async def _save_derived_soon(self, items: list[tuple[int, DerivedRecord]]) -> None:
        """The background save of ``_derive_now(wait=False)``: a failure is
        logged, never raised (nobody waits for it)."""
        try:
            await self._write(lambda c, ctx: self._save_derived(c, items))
        except StorageFull:
            log.warning("store: derived data not saved, the disk is full")
            self._index_failed()
        except Exception:
            log.exception("store: derived data not saved")

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
            c.executemany(
                "INSERT OR REPLACE INTO header_fields(body_id, name, n, value, folded) VALUES (?, ?, ?, ?, ?)",
                [(body_id, name, n, value, search_value(name, value).casefold())
                 for n, (name, value) in enumerate(rec.headers)],
            )
            textindex.save(c, body_id, rec.header_text, rec.body_text)

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
        wait = self._index_deferred()
        if wait:
            if c.execute("SELECT 1 FROM bodies WHERE derived IS NULL LIMIT 1").fetchone() is None:
                return False
            return max(0.05, wait)
        rows = c.execute(
            "SELECT id, segment, offset, length FROM bodies WHERE derived IS NULL LIMIT ?", (INDEX_BATCH,)
        ).fetchall()
        if not rows:
            return False
        items: list[tuple[int, DerivedRecord]] = []
        started = time.monotonic()
        for body_id, segment, offset, length in rows:
            items.append((body_id, derive_record(self.blobs.read(segment, offset, length))))
            if self._writer.has_pending() or time.monotonic() - started > INDEX_SLICE:
                break
        # Derived data can always be computed again (bodies.derived stays NULL if
        # this commit is lost), so it is committed without an fsync: the next
        # durable commit syncs the WAL up to and including it. A delivery that
        # arrives meanwhile then waits for a memory write, not for a disk flush.
        c.execute("PRAGMA synchronous=OFF")
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
