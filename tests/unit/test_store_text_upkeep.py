"""The full-text index (store/sqlite/textindex.py) is kept up outside the
write batches: indexing the text of a body a FETCH derived, and removing the
rows of a body that is gone, each cost about as much as a dozen writes, and
inside a batch every write batched with it, and every session waiting for
that commit, would wait for them too. They run between batches on the writer
thread (store/sqlite/search.py ``_upkeep_slice``); a SEARCH still finds a
message whose text is not indexed yet (RFC 9051 6.4.4)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mailyard.config import StoreConfig
from mailyard.store.api import AppendItem, DeliveryTarget, Mailbox
from mailyard.store.blobs import BODY_DATA, BODY_PLACE
from mailyard.store.sqlite import SQLiteStore, search, textindex, writer


@pytest.fixture
def in_batch(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Records each full-text index write and whether it ran inside a write batch."""
    calls: list[tuple[str, bool]] = []
    inside = {"now": False}
    commit_once = writer.GroupCommitWriter._commit_once

    def traced_commit(self: Any, *args: Any) -> Any:
        inside["now"] = True
        try:
            return commit_once(self, *args)
        finally:
            inside["now"] = False

    def traced(name: str, fn: Any) -> Any:
        def call(*args: Any, **kw: Any) -> Any:
            calls.append((name, inside["now"]))
            return fn(*args, **kw)
        return call

    monkeypatch.setattr(writer.GroupCommitWriter, "_commit_once", traced_commit)
    monkeypatch.setattr(textindex, "save", traced("save", textindex.save))
    monkeypatch.setattr(textindex, "delete", traced("delete", textindex.delete))
    return calls


async def _until(cond: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.02)


async def _inbox(store: SQLiteStore) -> Mailbox:
    """The INBOX of a@example.test, made in ``store``."""
    await store.add_domain("example.test")
    account = await store.add_account("a@example.test", "h")
    box = await store.get_mailbox(account.id, "INBOX")
    assert box is not None
    return box


def _message(n: int) -> bytes:
    return (f"From: a@remote.test\r\nSubject: note {n}\r\n\r\n"
            f"body of note {n} {'wombat' if n % 2 else 'quokka'}\r\n" + "filler line\r\n" * 200).encode()


async def test_fetch_and_expunge_keep_text_indexing_out_of_the_write_batches(
        tmp_path: Path, in_batch: list[tuple[str, bool]]) -> None:
    # no background indexer: only what FETCH derives gets indexed here
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False), background=False)
    try:
        box = await _inbox(store)
        for n in range(6):
            await store.deliver(_message(n), [DeliveryTarget(box.id)])
        got = await store.get_derived(box, list(range(1, 7)), ["envelope_imap"])  # FETCH ENVELOPE
        assert set(got) == set(range(1, 7))
        await _until(lambda: store._q1("SELECT count(*) FROM bodies WHERE derived IS NULL") == (0,),
                     "the derived data FETCH computed was never saved")
        assert store._q1("SELECT count(*) FROM search_text") == (6,)
        await store.expunge(box, [1, 2, 3])
        await _until(lambda: store._q1("SELECT count(*) FROM search_text") == (3,),
                     "the index rows of expunged bodies were kept")
        saves = [inside for name, inside in in_batch if name == "save"]
        deletes = [inside for name, inside in in_batch if name == "delete"]
        assert len(saves) == 6 and len(deletes) >= 3, in_batch
        assert not any(saves), "a body's text was indexed inside a write batch"
        assert not any(deletes), "a gone body's text left the index inside a write batch"
        assert await store.search_text(box, "wombat", "body") == {4, 6}
        assert await store.search_text(box, "QUOKKA", "text") == {5}
    finally:
        await store.close()


async def test_search_right_after_fetch_finds_text_not_indexed_yet(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False), background=False)
    # the writer never reaches its upkeep: the records FETCH derived stay queued
    store._writer._between = None
    parses = []
    derive_record = search.derive_record

    def counted(raw: bytes) -> Any:
        parses.append(1)
        return derive_record(raw)

    monkeypatch.setattr(search, "derive_record", counted)
    try:
        box = await _inbox(store)
        for n in range(4):
            await store.deliver(_message(n), [DeliveryTarget(box.id)])
        await store.get_derived(box, [1, 2, 3, 4], ["envelope_imap"])
        assert len(store._derived_queue) == 4
        assert store._q1("SELECT count(*) FROM search_text") == (0,)
        # a second FETCH and the SEARCH use what the first derived (no second parse)
        await store.get_derived(box, [1, 2], ["bodystructure_imap"])
        assert await store.search_text(box, "wombat", "body") == {2, 4}
        assert await store.search_headers(box, "subject", "note 3") == {4}
        assert len(parses) == 4
        assert store._derived_queue == {} and store._q1("SELECT count(*) FROM search_text") == (4,)
    finally:
        await store.close()


async def test_indexing_new_bodies_and_removing_gone_ones_query_fts_fields_once(tmp_path: Path) -> None:
    # A DELETE from an FTS5 table queries it, which writes the rows given in
    # the transaction so far into a segment of their own: per body, that was
    # most of the cost of a slice of indexing (textindex.py delete_fields).
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False), background=False)
    store._writer._between = None  # the slices run here, traced
    try:
        box = await _inbox(store)
        for n in range(8):
            await store.deliver(_message(n), [DeliveryTarget(box.id)])
        statements: list[str] = []

        def traced(c: Any, ctx: Any) -> None:
            c.set_trace_callback(statements.append)
            try:
                store._upkeep_slice(c)
            finally:
                c.set_trace_callback(None)

        store._queue_derived([(b, search.derive_record(store.blobs.body(*store._q1(
            f"SELECT {BODY_PLACE} FROM bodies b {BODY_DATA} WHERE b.id = ?", (b,))))) for b in range(1, 9)])
        await store._writer.run_exclusive(lambda: traced(store._writer._conn, None))
        assert store._q1("SELECT count(*) FROM search_text") == (8,)
        deletes = [s for s in statements if "DELETE FROM fts_fields" in s]
        assert not deletes, f"fts_fields queried for bodies it has no rows of: {len(deletes)}"
        assert store._q1("SELECT count(*) FROM fts_fields_content") == (8 * 2,)  # From and Subject
        await store.expunge(box, list(range(1, 9)))
        statements.clear()
        await store._writer.run_exclusive(lambda: traced(store._writer._conn, None))
        assert store._q1("SELECT count(*) FROM search_text") == (0,)
        deletes = [s for s in statements if "DELETE FROM fts_fields" in s]
        assert len(deletes) == 1, deletes
        assert store._q1("SELECT count(*) FROM fts_fields_content") == (0,)
    finally:
        await store.close()


async def test_an_expunge_of_many_messages_lists_their_bodies_in_rows_of_constant_size(tmp_path: Path) -> None:
    # Each gone body waits for the removal of its index rows in a row of its
    # own: one JSON list in one meta row was rewritten whole for each body
    # added (json_insert) and for each slice removed, so an expunge of n
    # messages cost O(n^2) inside one write (tens of seconds of the write
    # lock for a few ten thousand messages, every process waiting).
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False), background=False)
    between, store._writer._between = store._writer._between, None  # the listing is looked at before it drains
    try:
        box = await _inbox(store)
        count = 2000
        uids = await store.append_many(box, [AppendItem(b"Subject: n%d\r\n\r\nx\r\n" % n) for n in range(count)])
        await store.expunge(box, uids)
        listed = store._q1("SELECT count(*), max(length(value)), max(length(key)) FROM meta"
                           " WHERE key >= 'text_unindex' AND key < 'text_unindex;'")
        assert listed is not None
        print(f"\n{count} gone bodies listed in {listed[0]} meta rows, the longest row {listed[1] + listed[2]} chars")
        assert listed[1] + listed[2] < 64, "one row holds the whole list: rewritten for each body"
        assert listed[0] == count
        store._writer._between = between
        store._writer.wake_upkeep()
        await _until(lambda: not store._q1("SELECT 1 FROM meta WHERE key >= 'text_unindex' AND key < 'text_unindex;'"),
                     "the listed bodies were never taken out of the index")
    finally:
        store._writer._between = between
        await store.close()


async def test_a_gone_body_list_of_the_one_row_form_is_still_worked_off(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False), background=False)
    try:
        box = await _inbox(store)
        for n in range(4):
            await store.deliver(_message(n), [DeliveryTarget(box.id)])
        await store.get_derived(box, [1, 2, 3, 4])
        await store._flush_upkeep()
        assert store._q1("SELECT count(*) FROM search_text") == (4,)

        def gone_as_one_row(c: Any, ctx: Any) -> None:
            # bodies 1 and 2 gone, listed the way a directory written before may hold them
            c.execute("UPDATE messages SET body_id = 3 WHERE body_id IN (1, 2)")
            c.execute("DELETE FROM bodies WHERE id IN (1, 2)")
            c.execute("INSERT INTO meta(key, value) VALUES ('text_unindex', '[1,2]')")

        await store._write(gone_as_one_row)
        store._writer.wake_upkeep()
        await _until(lambda: store._q1("SELECT count(*) FROM search_text") == (2,),
                     "the bodies of the one-row list kept their index rows")
        assert store._q1("SELECT 1 FROM meta WHERE key >= 'text_unindex' AND key < 'text_unindex;'") is None
    finally:
        await store.close()


async def test_the_queue_of_derived_records_is_bounded_in_memory_for_small_messages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A FETCH of many small messages queues a record per body for the writer
    # to save between its batches; a record holds a few kilobytes however
    # short its text (envelope, body structure, header list), so a bound on
    # the text alone let a mailbox of small messages hold hundreds of MB in
    # the queue, for good while the disk is below the index reserve.
    import gc
    import pickle
    import tracemalloc

    budget = 400_000
    monkeypatch.setattr(search, "DERIVED_QUEUE_BYTES", budget, raising=False)
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False), background=False)
    between, store._writer._between = store._writer._between, None  # nothing drains the queue here
    try:
        box = await _inbox(store)
        count = 2000
        await store.append_many(box, [AppendItem(b"Subject: n%d\r\n\r\nx\r\n" % n) for n in range(count)])
        got = await store.get_derived(box, list(range(1, count + 1)), ["envelope_imap"])  # FETCH 1:* ENVELOPE
        assert len(got) == count
        queued = len(store._derived_queue)
        # the memory the queued records hold: that of a copy of them
        frozen = pickle.dumps(list(store._derived_queue.values()))
        gc.collect()
        tracemalloc.start()
        try:
            copy = pickle.loads(frozen)
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        del copy
        print(f"\n{queued} records queued, holding {held / 1e6:.2f} MB for a budget of {budget / 1e6:.2f} MB")
        assert queued > 0
        assert held < 2 * budget, "the queue holds far more than its budget"
    finally:
        store._writer._between = between
        await store.close()


async def test_cache_commits_never_run_with_synchronous_off_when_the_store_syncs(tmp_path: Path) -> None:
    # The cache writes between batches (and the background indexer's) skip
    # the fsync of their commit. With synchronous=OFF a commit that reaches
    # the WAL's checkpoint threshold also copies the WAL, with the mail
    # committed durably before, into the database file without syncing it;
    # the next write then starts the WAL over those frames, and a power loss
    # loses that mail or corrupts the file (SQLite 3.40 under strace: such a
    # commit wrote 1209 pages into the database file and synced nothing).
    # NORMAL skips the commit's sync as well but syncs a checkpoint.
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=True))
    levels: list[str] = []
    current = {"level": "FULL"}

    def traced(statement: str) -> None:
        text = statement.strip().upper()
        if text.startswith("PRAGMA SYNCHRONOUS="):
            current["level"] = text.split("=", 1)[1]
        elif text == "COMMIT":
            levels.append(current["level"])

    conn = store._writer._conn
    await store._writer.run_exclusive(lambda: conn.set_trace_callback(traced))
    try:
        box = await _inbox(store)
        for n in range(4):
            await store.deliver(_message(n), [DeliveryTarget(box.id)])
        await store.get_derived(box, [1, 2], ["envelope_imap"])  # FETCH: saved between batches
        await _until(lambda: store._q1("SELECT count(*) FROM bodies WHERE derived IS NULL") == (0,),
                     "the bodies were never derived")  # 3 and 4 by the background indexer
        await store.expunge(box, [1, 2, 3])
        await _until(lambda: store._q1("SELECT count(*) FROM search_text") == (1,),
                     "the index rows of expunged bodies were kept")
        print(f"\ncommits on the writer connection at synchronous: {levels}")
        assert "OFF" not in levels
    finally:
        await store._writer.run_exclusive(lambda: conn.set_trace_callback(None))
        await store.close()


async def test_the_upkeep_waits_while_writes_keep_coming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The upkeep runs once the writer has had no write for UPKEEP_PAUSE: one
    # of its slices holds the write lock (of every worker) for up to
    # INDEX_SLICE, so while writes keep coming none of them waits behind it.
    monkeypatch.setattr(writer, "UPKEEP_PAUSE", 60.0, raising=False)
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False), background=False)
    slices: list[int] = []
    wants, work = store._writer._between

    def traced(c: Any) -> bool:
        slices.append(len(store._derived_queue))
        return work(c)

    store._writer._between = (wants, traced)
    try:
        box = await _inbox(store)
        for n in range(3):
            await store.deliver(_message(n), [DeliveryTarget(box.id)])
        await store.get_derived(box, [1, 2, 3], ["envelope_imap"])  # FETCH: records queued for the upkeep
        for n in range(3, 13):
            await store.deliver(_message(n), [DeliveryTarget(box.id)])
        assert slices == [], "the upkeep ran between writes that kept coming"
        assert len(store._derived_queue) == 3
        # once the writes stop, it runs by itself
        monkeypatch.setattr(writer, "UPKEEP_PAUSE", 0.05)
        await store.deliver(_message(13), [DeliveryTarget(box.id)])
        await _until(lambda: not store._derived_queue, "the upkeep never ran after the writes stopped")
        assert slices and store._q1("SELECT count(*) FROM search_text") == (3,)
    finally:
        await store.close()


async def test_the_upkeep_of_a_fetch_without_writes_runs_after_the_pause(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False), background=False)
    try:
        box = await _inbox(store)
        for n in range(2):
            await store.deliver(_message(n), [DeliveryTarget(box.id)])
        monkeypatch.setattr(writer, "UPKEEP_PAUSE", 0.05)
        await store.get_derived(box, [1, 2], ["envelope_imap"])  # no write follows
        await _until(lambda: store._q1("SELECT count(*) FROM search_text") == (2,),
                     "what a FETCH derived was never saved")
        assert not store._derived_queue
    finally:
        await store.close()


async def test_a_pressing_backlog_is_worked_off_between_writes_that_keep_coming(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Under a steady load the writes never pause: once the queue of derived
    # records is more than half full, the upkeep runs after each batch again
    # (a full queue drops records that FETCH then derives again).
    monkeypatch.setattr(writer, "UPKEEP_PAUSE", 60.0)
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False), background=False)
    try:
        box = await _inbox(store)
        for n in range(3):
            await store.deliver(_message(n), [DeliveryTarget(box.id)])
        await store.get_derived(box, [1, 2, 3], ["envelope_imap"])
        assert len(store._derived_queue) == 3
        limit = search.DERIVED_QUEUE_BYTES
        assert not store._upkeep_pressing()
        monkeypatch.setattr(search, "DERIVED_QUEUE_BYTES", 2 * store._derived_queue_chars - 1)
        assert store._upkeep_pressing()
        await store.deliver(_message(3), [DeliveryTarget(box.id)])  # a batch: the slices follow it
        await _until(lambda: not store._derived_queue, "a pressing backlog waited for a pause in the writes")
        monkeypatch.setattr(search, "DERIVED_QUEUE_BYTES", limit)
    finally:
        await store.close()


def test_the_idle_work_starts_idle_pause_after_the_last_write(monkeypatch: pytest.MonkeyPatch) -> None:
    # The upkeep's own wait (UPKEEP_PAUSE) after a commit is part of the
    # pause the idle work waits for, not a delay before that pause starts.
    # The writer runs here on the test's thread, with a clock that moves
    # only by the writer's own waits.
    import queue
    import sqlite3

    now = [0.0]
    monkeypatch.setattr(writer.time, "monotonic", lambda: now[0])
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t(x)")
    idle_at: list[float] = []

    def idle(c: Any) -> bool:
        idle_at.append(now[0])
        return False

    w = writer.GroupCommitWriter(conn, None, 10, lambda: None, lambda changed: None, idle_work=idle,
                                 between=(lambda c: False, lambda c: False))
    w.close()  # its own thread: the test runs the writer's loop itself below
    idle_at.clear()
    loop = asyncio.new_event_loop()
    fut = loop.create_future()
    loop.close()  # (nobody waits for the write's outcome)

    class Queue:
        items: list[Any] = [(lambda c, ctx: c.execute("INSERT INTO t VALUES (1)"), fut, loop)]

        def get(self, timeout: float | None = None) -> Any:
            if self.items:
                return self.items.pop(0)
            if idle_at or timeout is None:
                return writer._STOP
            now[0] += timeout
            raise queue.Empty

        def get_nowait(self) -> Any:
            raise queue.Empty

        def empty(self) -> bool:
            return True

    w._queue = Queue()  # type: ignore[assignment]
    w._run()
    assert idle_at == [pytest.approx(writer.IDLE_PAUSE)], idle_at
