"""The SQLite store's reads off the event loop (store/sqlite/core.py
``_bulk_read``): each lane's reads wait for their turn without holding a
thread of the event loop's default executor; which mailboxes are big
enough to be read there; a lane's connection after an interrupted read.

The mailboxes here are just above the real threshold (core.LIST_INLINE),
so the tests hold for the code as it is, not for patched constants."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mailyard.config import StoreConfig
from mailyard.store.api import AppendItem, Mailbox
from mailyard.store.sqlite import SQLiteStore, core, mailboxes
from tests.waiting import wait_until_async

BIG = core.LIST_INLINE + 5


def _message(n: int) -> bytes:
    return f"From: b@example.test\r\nSubject: m{n}\r\n\r\nbody {n}\r\n".encode()


async def _big_store(tmp_path: Path, count: int = BIG) -> tuple[SQLiteStore, Mailbox]:
    s = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False), background=False)
    await s.add_domain("example.test")
    a = await s.add_account("a@example.test", "h")
    inbox = await s.get_mailbox(a.id, "INBOX")
    assert inbox is not None
    await s.append_many(inbox, [AppendItem(_message(n)) for n in range(count)])
    return s, inbox


@pytest.fixture
async def small_default_executor() -> AsyncIterator[ThreadPoolExecutor]:
    """The event loop's default executor (asyncio.to_thread) with two
    threads, whatever the machine's cores: what queued reads could fill."""
    pool = ThreadPoolExecutor(max_workers=2)
    asyncio.get_running_loop().set_default_executor(pool)
    yield pool
    pool.shutdown(wait=False)


async def test_queued_big_reads_leave_the_default_executor_free(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_default_executor: ThreadPoolExecutor) -> None:
    """Eight SELECT summaries of a big mailbox at once: one runs, the rest
    wait for the lane. Meanwhile an unrelated asyncio.to_thread call (DKIM
    signing, a spool read) gets a thread: here it is the call that lets
    the first read finish, so it must run while the reads queue."""
    s, inbox = await _big_store(tmp_path)
    entered = threading.Event()
    release = threading.Event()
    first: list[bool] = []  # whether the first read was released (not timed out)
    threads: set[str] = set()

    def held_loads(text: str) -> Any:
        threads.add(threading.current_thread().name)
        if not entered.is_set():
            entered.set()
            first.append(release.wait(10))  # (bounds a failure only)
        return json.loads(text)

    monkeypatch.setattr(mailboxes, "json", SimpleNamespace(loads=held_loads))
    try:
        reads = [asyncio.create_task(s.mailbox_summary(inbox)) for _ in range(8)]
        await wait_until_async(entered.is_set, what="the first read to start")
        await asyncio.to_thread(release.set)
        summaries = await asyncio.gather(*reads)
        assert first == [True], "the unrelated to_thread call waited for the queued reads"
        assert all(len(x.uids) == BIG for x in summaries)
        assert len(threads) == 1, threads  # the lane's one thread
    finally:
        await s.close()


async def test_a_mailbox_that_held_many_and_holds_few_is_read_in_place(tmp_path: Path) -> None:
    """The size test counts the messages (up to the bound), not the UIDs
    ever given: after most messages are expunged, SELECT's summary and the
    listing are read on the event loop's connection, as any small
    mailbox's are."""
    s, inbox = await _big_store(tmp_path)
    lanes: list[str] = []
    bulk = s._bulk_read

    async def recorded(fn, lane: str = "bulk"):  # noqa: ANN001, ANN202
        lanes.append(lane)
        return await bulk(fn, lane)

    try:
        s._bulk_read = recorded  # type: ignore[method-assign]
        assert len((await s.mailbox_summary(inbox)).uids) == BIG
        assert lanes == ["list"]  # big: on the lane
        uids = list(range(1, BIG - 2))
        await s.store_flags(inbox, uids, ["\\Deleted"], "add")
        await s.expunge(inbox, uids)
        s._changelogs.clear()  # (the next listing is read from the tables)
        lanes.clear()
        assert list((await s.mailbox_summary(inbox)).uids) == [BIG - 2, BIG - 1, BIG]
        assert [m.uid for m in await s.list_messages(inbox)] == [BIG - 2, BIG - 1, BIG]
        assert lanes == []
    finally:
        await s.close()


async def test_an_interrupt_landing_on_the_commit_leaves_the_lane_usable(tmp_path: Path) -> None:
    """A cancelled read is interrupted (Connection.interrupt) at its next
    SQLite step; landing on the COMMIT of the read's transaction, it leaves
    the lane's connection inside it. The next read of the lane still works."""
    s, inbox = await _big_store(tmp_path)

    def commit_interrupted(c: sqlite3.Connection) -> None:
        c.execute("BEGIN")
        pending = c.execute("SELECT uid FROM messages")
        pending.fetchone()
        c.interrupt()  # (as _bulk_read's cancellation does, from the event loop)
        try:
            c.execute("COMMIT")
        finally:
            pending.close()

    try:
        with pytest.raises(sqlite3.OperationalError, match="interrupted"):
            await s._bulk_read(commit_interrupted, core.LIST_LANE)
        summary = await s.mailbox_summary(inbox)  # a big mailbox's: the same lane
        assert len(summary.uids) == BIG
    finally:
        await s.close()


async def test_closing_while_another_lane_starts_closes_everything(tmp_path: Path) -> None:
    """A read that opens a second lane while close() waits on the first:
    close() ends every lane and its own files, and a read asked once the
    lanes close is refused as the store being unavailable."""
    import threading

    from mailyard.store.api import StoreUnavailable

    s, _inbox = await _big_store(tmp_path, 10)
    gate, started = threading.Event(), threading.Event()

    def slow(conn: object) -> int:
        started.set()
        gate.wait(5)
        return 1

    first = asyncio.create_task(s._bulk_read(slow, core.LIST_LANE))
    await wait_until_async(started.is_set, what="the first read running")
    closing = asyncio.create_task(s.close())
    await wait_until_async(lambda: getattr(s, "_lanes_closed", False), what="close() at the lanes")
    other = asyncio.create_task(s._bulk_read(lambda conn: 2, "bulk"))
    await wait_until_async(other.done, what="the other read answered")
    gate.set()
    results = await asyncio.gather(first, closing, other, return_exceptions=True)
    assert results[0] == 1 and results[1] is None, results
    assert results[2] == 2 or isinstance(results[2], StoreUnavailable), results
    assert all(lane.conn is None for lane in s._bulk_lanes.values())
    with pytest.raises(StoreUnavailable):
        await s._bulk_read(lambda conn: 3, core.LIST_LANE)


async def test_a_read_cancelled_between_two_statements_stops_at_the_next(tmp_path: Path) -> None:
    """The caller goes while the read is between statements (Python work in
    ``fn``): the next statement stops at once rather than run to its end
    (SQLite forgets an interrupt that lands between statements)."""
    import threading

    s, _inbox = await _big_store(tmp_path, 10)
    try:
        between = threading.Event()
        cancelled_now = threading.Event()
        finished: list[str] = []

        def two_statements(c: sqlite3.Connection) -> None:
            c.execute("SELECT count(*) FROM messages").fetchone()
            between.set()
            cancelled_now.wait(5)  # the caller is cancelled meanwhile
            # a long statement: a count over a recursive series of ten million rows
            c.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000000)"
                      " SELECT count(*) FROM n").fetchone()
            finished.append("second")

        task = asyncio.create_task(s._bulk_read(two_statements, core.LIST_LANE))
        while not between.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled_now.set()
        # the lane is free again, and the second statement did not finish
        assert await s._bulk_read(lambda c: c.execute("SELECT 1").fetchone()[0], core.LIST_LANE) == 1
        assert finished == []
    finally:
        await s.close()
