"""Bodies: the bytes of messages, and the ``bodies`` table that indexes them.

A body is written once however many messages share it (the recipients of one
delivery, COPY, a queue entry and its local copies); ``bodies.refs`` counts
its users and the last one to go releases it with its derived data.

Where the bytes are. A body of at most ``INLINE_MAX`` bytes is kept in the
index: a ``body_data`` row beside its ``bodies`` row, whose segment is 0
(``blobs.INLINE``; segment files are numbered from 1) and offset 0. A larger
one is appended to a segment file (store/blobs.py) and its row holds
(segment, offset, length). The bytes of an inline body are in a table of
their own, not a column of ``bodies``, because ``bodies`` rows are updated
after they are written (``refs`` at COPY and expunge, ``derived`` when the
indexer reaches the body) and SQLite writes a whole row again when one of its
columns changes: measured, marking 200 bodies of 1 KB derived wrote 205 KiB
to the WAL with the bytes in the row, 8 KiB with them beside it (1.6 MiB
against 8 KiB for bodies of 8 KB). Readers go through ``blobs.body_bytes``
(``SegmentFiles.body``), selecting ``blobs.BODY_PLACE`` from ``bodies b``
joined with ``blobs.BODY_DATA``. Segment space of expunged bodies stays in
its file until compaction rewrites a sealed segment whose live share fell
below ``COMPACT_LIVE_RATIO``; compaction and the ``segments`` accounting see
segment bodies only. An inline body's bytes go with its row (the schema's
ON DELETE CASCADE).

Durability. An inline body is written in the transaction of the rows that
use it, so it is committed (and synced with the WAL) with them, or not at
all. A segment body is appended before its row is inserted, and the writer
syncs the segment file before the commit (``before_commit``), so a committed
row never points at bytes that are not on disk. Bytes of a write rolled back
are dead space for compaction. A batch that appended nothing to a segment
syncs none (``SegmentFiles.sync``): a group commit of small messages costs
one sync, the WAL's.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable

from ..blobs import INLINE
from . import textindex
from .core import SQLiteCore

log = logging.getLogger("mailyard.store")

# Bodies of at most this many bytes are kept in the index (body_data), above
# it in a segment file. Inline, a body costs no sync of its own: it goes
# with the WAL sync the commit makes anyway, which saves a segment's
# fdatasync for every batch of small messages. But its bytes are written
# twice, to the WAL and then by the checkpoint into the database file (which
# is synced too), and they bring the WAL to its checkpoint sooner; a body in
# a segment is written once. Measured through the store's write path (20
# writers, fsync on, a virtual disk whose fdatasync takes 0.15-0.4 ms; median
# messages a second of 5 or 7 interleaved rounds, segment -> inline): 512 B
# 10,800 -> 13,600, 1 KB 10,800 -> 13,200, 2 KB 8,900 -> 10,700, 3 KB even,
# 4 KB even to 4 % fewer, 8 KB 10,500 -> 8,800, 16 KB 10,000 -> 7,100, 30 KB
# 7,000 -> 4,600 (8 KB inline is even again when no checkpoint runs: the
# second write is the cost). Where a sync is dearer the crossing is higher.
INLINE_MAX = 4 * 1024

# A sealed segment whose live bytes fall below this share is rewritten (compaction).
COMPACT_LIVE_RATIO = 0.5
COMPACT_INTERVAL = 60.0  # seconds between compaction passes of the background work


def count_segment_bytes(c: sqlite3.Connection, segment: int, length: int) -> None:
    """Account ``length`` new bytes to ``segment`` (a file, never ``INLINE``),
    creating its row if need be.

    The row is made with the bytes rather than once at rollover: a rollover
    happens inside some op's SAVEPOINT, and if that op (or its whole batch)
    is rolled back, the blob writer still appends to the new file. The next
    body stored there then brings the row back; without it the file would
    hold committed bodies the segments table does not know, and
    ``_remove_retired_segments`` would delete it."""
    c.execute(
        "INSERT INTO segments(id, size, live) VALUES (?, ?, ?)"
        " ON CONFLICT(id) DO UPDATE SET size = size + excluded.size, live = live + excluded.live",
        (segment, length, length),
    )


def release_bodies(c: sqlite3.Connection, body_ids: Iterable[int]) -> None:
    """Drop one reference to each body; a body nobody uses goes, with its
    derived data, and its bytes count as dead in their segment.

    Its full-text index rows are not removed here but listed for removal
    (textindex.py ``defer_delete``): that costs as much as indexing the text
    again, and would hold up every write batched with the expunge. Rows of a
    body that is gone match no message (ids are never reused), so a search
    is right before they go. An inline body's bytes go with it; they count
    against no segment."""
    for body_id in body_ids:
        row = c.execute(
            "UPDATE bodies SET refs = refs - 1 WHERE id = ? RETURNING refs, segment, length", (body_id,)
        ).fetchone()
        if row is not None and row[0] <= 0:
            c.execute("DELETE FROM bodies WHERE id = ?", (body_id,))
            textindex.defer_delete(c, body_id)
            c.execute("DELETE FROM body_derived WHERE body_id = ?", (body_id,))
            c.execute("DELETE FROM header_fields WHERE body_id = ?", (body_id,))
            c.execute("DELETE FROM sort_keys WHERE body_id = ?", (body_id,))
            # an inline body's bytes went with its row (body_data: ON DELETE CASCADE)
            if row[1] != INLINE:
                c.execute("UPDATE segments SET live = live - ? WHERE id = ?", (row[2], row[1]))


class BodiesMixin(SQLiteCore):
    """Writing bodies, and compacting the segment files."""

    def _store_body(self, c: sqlite3.Connection, body: bytes, refs: int) -> int:
        """Store ``body`` with ``refs`` users, inside the caller's write: in
        the index up to ``INLINE_MAX`` bytes, else appended to the current
        segment; returns its id."""
        if len(body) <= INLINE_MAX:
            cur = c.execute(
                "INSERT INTO bodies(segment, offset, length, refs) VALUES (?, 0, ?, ?)", (INLINE, len(body), refs)
            )
            assert cur.lastrowid is not None
            c.execute("INSERT INTO body_data(body_id, data) VALUES (?, ?)", (cur.lastrowid, body))
            return cur.lastrowid
        self._follow_segments(c)
        if self.blobs.needs_rollover():
            self.blobs.open_for_append(self.blobs.current_segment + 1)
        segment, offset = self.blobs.append(body)
        count_segment_bytes(c, segment, len(body))
        cur = c.execute(
            "INSERT INTO bodies(segment, offset, length, refs) VALUES (?, ?, ?, ?)",
            (segment, offset, len(body), refs),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def _follow_segments(self, c: sqlite3.Connection) -> None:
        """Catch up with appends and rollovers of other processes serving
        this store (store/blobs.py ``follow``); inside a write transaction."""
        latest = c.execute("SELECT max(id) FROM segments").fetchone()[0]
        self.blobs.follow(latest or 0)

    # --- compaction --------------------------------------------------------------
    async def compact(self) -> None:
        """Reclaim the space of expunged messages now (``mailyard store compact``)."""

        def run() -> None:
            conn = self._writer._conn
            while self.compact_step(conn):
                pass

        await self._writer.run_exclusive(run)

    def compact_step(self, c: sqlite3.Connection) -> bool:
        """Rewrite one mostly-dead sealed segment: copy its live bodies to the
        current segment (whatever their size: the bodies of a segment file
        stay in segment files), sync, repoint their rows, commit; the old file is
        deleted on a later pass, once no read that began before the commit can
        still be using it. Returns True if there may be more to do."""
        self._remove_retired_segments(c)
        current = self.blobs.current_segment
        row = c.execute(
            "SELECT id FROM segments WHERE id < ? AND size > 0 AND live < size * ? ORDER BY live LIMIT 1",
            (current, COMPACT_LIVE_RATIO),
        ).fetchone()
        if row is None:
            return False
        segment = row[0]
        c.execute("BEGIN IMMEDIATE")
        try:
            self._follow_segments(c)
            # read inside the transaction: another process may have released bodies meanwhile
            bodies = c.execute(
                "SELECT id, offset, length FROM bodies WHERE segment = ? ORDER BY offset", (segment,)
            ).fetchall()
            moved = 0
            for body_id, offset, length in bodies:
                data = self.blobs.read(segment, offset, length)
                new_segment, new_offset = self.blobs.append(data)
                c.execute(
                    "UPDATE bodies SET segment = ?, offset = ? WHERE id = ?", (new_segment, new_offset, body_id)
                )
                count_segment_bytes(c, new_segment, length)
                moved += length
            c.execute("DELETE FROM segments WHERE id = ?", (segment,))
            self.blobs.sync()
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:  # SQLITE_FULL may have rolled it back already
                c.execute("ROLLBACK")
            raise
        log.info("compacted segment %d: %d bodies (%d bytes) kept", segment, len(bodies), moved)
        return True

    def _remove_retired_segments(self, c: sqlite3.Connection) -> None:
        """Delete segment files no index row points to any more (compacted ones,
        and, after a crash, files whose rows were never committed). Inline
        bodies (segment 0) have no file: none is ever listed here."""
        known = {r[0] for r in c.execute("SELECT id FROM segments")}
        for segment in self.blobs.existing():
            if segment not in known and segment < self.blobs.current_segment:
                # belt and braces: never a file a body row still points into
                if c.execute("SELECT 1 FROM bodies WHERE segment = ? LIMIT 1", (segment,)).fetchone():
                    log.error("segment %d has no row but holds bodies; kept", segment)
                    continue
                self.blobs.remove(segment)
