"""The group-commit writer when SQLite rolls back a whole transaction under a
write (SQLITE_FULL does, when the page cache spills to a full disk): that
write's caller gets the disk-full error, the batch's other writes commit."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from mailyard.config import StoreConfig
from mailyard.store.api import DeliveryTarget, Mailbox, StorageFull
from mailyard.store.sqlite import SQLiteStore
from mailyard.store.sqlite.bodies import INLINE_MAX


async def test_a_write_rolled_back_by_sqlite_fails_alone_with_storage_full(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    try:
        gate = threading.Event()
        held = s._writer.run_exclusive(gate.wait)  # the three writes below queue up into one batch

        def before(c: sqlite3.Connection, ctx: object) -> str:
            c.execute("INSERT INTO domains(name) VALUES ('before.test')")
            return "before"

        def full(c: sqlite3.Connection, ctx: object) -> None:
            c.execute("INSERT INTO domains(name) VALUES ('lost.test')")
            # what SQLite does when a statement hits SQLITE_FULL while spilling
            # the cache: the whole transaction, savepoints included, is gone
            c.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")

        def after(c: sqlite3.Connection, ctx: object) -> str:
            c.execute("INSERT INTO domains(name) VALUES ('after.test')")
            return "after"

        futures = [asyncio.ensure_future(s._write(op)) for op in (before, full, after)]
        await asyncio.sleep(0)
        gate.set()
        await held
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert results[0] == "before" and results[2] == "after"
        assert isinstance(results[1], StorageFull), results[1]
        assert await s.list_domains() == ["after.test", "before.test"]
    finally:
        await s.close()


@pytest.mark.parametrize("error", ["database or disk is full", "disk I/O error"])
async def test_the_writer_keeps_working_after_such_a_failure(tmp_path: Path, error: str) -> None:
    s = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    try:
        def broken(c: sqlite3.Connection, ctx: object) -> None:
            c.execute("ROLLBACK")
            raise sqlite3.OperationalError(error)

        with pytest.raises(Exception) as failed:
            await s._write(broken)
        assert "savepoint" not in str(failed.value)
        await s.add_domain("example.test")
        assert await s.list_domains() == ["example.test"]
    finally:
        await s.close()


async def test_callers_are_woken_after_the_write_lock_is_given_up(tmp_path: Path) -> None:
    # The writers of every worker take turns through one lock file: waking
    # this process's callers (a system call, and a contest for the GIL)
    # while holding it would make the others wait for that too.
    s = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    lock_path = tmp_path / "write.lock"
    s._writer.lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    probe = os.open(lock_path, os.O_RDWR)
    loop = asyncio.get_running_loop()
    held_at_wake: list[bool] = []
    wake = loop.call_soon_threadsafe

    def watched(*args: object) -> object:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held_at_wake.append(True)
        else:
            fcntl.flock(probe, fcntl.LOCK_UN)
            held_at_wake.append(False)
        return wake(*args)  # type: ignore[arg-type]

    loop.call_soon_threadsafe = watched  # type: ignore[method-assign]
    try:
        await s.add_domain("example.test")
        assert held_at_wake and not any(held_at_wake), held_at_wake
    finally:
        del loop.call_soon_threadsafe
        os.close(probe)
        await s.close()


_BODY = b"Subject: x\r\n\r\n" + b"y" * 1500 + b"\r\n"  # three to a 4 KiB segment


async def _small_segments(tmp_path: Path) -> tuple[SQLiteStore, Mailbox]:
    """A durable store whose segments hold three of ``_BODY`` (with the
    ``segment_bodies`` fixture), and an INBOX in it."""
    s = SQLiteStore(tmp_path / "data", StoreConfig(fsync=True, segment_size=4096))
    await s.add_domain("example.test")
    account = await s.add_account("a@example.test", "h")
    box = await s.get_mailbox(account.id, "INBOX")
    assert box is not None
    return s, box


async def _one_batch_of_deliveries(
        s: SQLiteStore, box: Mailbox, count: int = 6, bodies: list[bytes] | None = None) -> list[object]:
    """Deliver ``count`` copies of ``_BODY`` (or ``bodies``) in one batch (they
    queue while the writer is held); each delivery's UIDs or its error."""
    gate = threading.Event()
    held = s._writer.run_exclusive(gate.wait)
    bodies = bodies or [_BODY] * count
    count = len(bodies)
    futures = [asyncio.ensure_future(s.deliver(body, [DeliveryTarget(box.id)])) for body in bodies]
    while s._writer._queue.qsize() < count:  # every delivery waits behind the gate
        await asyncio.sleep(0)
    gate.set()
    await held
    return await asyncio.gather(*futures, return_exceptions=True)


async def test_bodies_left_in_a_full_segment_are_synced_before_the_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, segment_bodies: None) -> None:
    # A batch whose writes fill a segment and go on in the next must sync
    # both files before its rows are committed (a crash would otherwise
    # leave committed messages whose bytes never reached the disk).
    s, box = await _small_segments(tmp_path)
    try:
        synced: list[str] = []
        unsynced: set[str] = set()
        write, fdatasync = os.write, os.fdatasync

        def name(fd: int) -> str:
            return os.readlink(f"/proc/self/fd/{fd}")

        def tracked_write(fd: int, data: bytes) -> int:
            if name(fd).endswith(".seg"):
                unsynced.add(name(fd))
            return write(fd, data)

        def tracked_sync(fd: int) -> None:
            fdatasync(fd)
            synced.append(name(fd))
            unsynced.discard(name(fd))

        monkeypatch.setattr(os, "write", tracked_write)
        monkeypatch.setattr(os, "fdatasync", tracked_sync)
        for result in await _one_batch_of_deliveries(s, box):
            assert isinstance(result, list), result
        assert len({p for p in synced if p.endswith(".seg")}) >= 2, synced  # the batch crossed a segment
        assert not unsynced, f"segment bytes committed without a sync: {unsynced}"
    finally:
        await s.close()


async def test_a_failed_sync_of_a_full_segment_fails_the_whole_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, segment_bodies: None) -> None:
    # Linux reports a writeback error to one fdatasync only: if the sync of
    # the segment left at a rollover failed inside one write, a later sync
    # would succeed and the batch's other writes into it would be committed
    # with bytes that never reached the disk.
    s, box = await _small_segments(tmp_path)
    try:
        fdatasync = os.fdatasync
        failed: list[str] = []

        def failing_once(fd: int) -> None:
            if os.readlink(f"/proc/self/fd/{fd}").endswith("00000001.seg") and not failed:
                failed.append("eio")
                raise OSError(errno.EIO, "Input/output error")
            fdatasync(fd)

        monkeypatch.setattr(os, "fdatasync", failing_once)
        results = await _one_batch_of_deliveries(s, box)
        assert failed, "the batch never synced segment 1"
        assert all(isinstance(r, Exception) for r in results), results
        assert (await s.mailbox_status(box)).messages == 0
        assert await s.deliver(_BODY, [DeliveryTarget(box.id)]) == [1]  # the store goes on
    finally:
        await s.close()


async def test_a_batch_of_small_bodies_syncs_no_segment_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small bodies are kept in the index (store/sqlite/bodies.py INLINE_MAX),
    # committed with their rows: the batch's one sync is the WAL's. A batch
    # with a body above the threshold syncs its segment before the commit.
    s, box = await _small_segments(tmp_path)
    try:
        synced: list[str] = []
        fdatasync = os.fdatasync

        def tracked_sync(fd: int) -> None:
            fdatasync(fd)
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))

        monkeypatch.setattr(os, "fdatasync", tracked_sync)
        small = [_BODY.replace(b"y", bytes([97 + i])) for i in range(6)]
        for result in await _one_batch_of_deliveries(s, box, bodies=small):
            assert isinstance(result, list), result
        assert [p for p in synced if p.endswith(".seg")] == []
        big = b"Subject: big\r\n\r\n" + b"z" * INLINE_MAX + b"\r\n"
        for result in await _one_batch_of_deliveries(s, box, bodies=[big, *small[:2]]):
            assert isinstance(result, list), result
        assert len([p for p in synced if p.endswith(".seg")]) == 1
        assert [await s.read_message(box, uid) for uid in range(1, 10)] == [*small, big, *small[:2]]
    finally:
        await s.close()


async def test_the_wal_is_cut_back_after_a_burst_of_inline_bodies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The WAL carries the bytes of inline bodies; SQLite writes it again from
    # its start after a checkpoint but never makes the file smaller: the
    # write connection's journal_size_limit (core.WAL_SIZE_LIMIT, made small
    # here) cuts it back once a burst is checkpointed.
    from mailyard.store.api import AppendItem
    from mailyard.store.sqlite import core

    limit = 1 << 20
    monkeypatch.setattr(core, "WAL_SIZE_LIMIT", limit, raising=False)
    s = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False), background=False)
    try:
        await s.add_domain("example.test")
        account = await s.add_account("a@example.test", "h")
        box = await s.get_mailbox(account.id, "INBOX")
        assert box is not None
        burst = [AppendItem(b"Subject: %d\r\n\r\n" % i + b"x" * (INLINE_MAX - 100)) for i in range(1500)]
        await s.append_many(box, burst)  # about 6 MB of bodies in one commit
        wal = tmp_path / "data" / "index.sqlite3-wal"
        assert wal.stat().st_size > 4 * limit
        for i in range(3):  # the log starts again after the checkpoint
            await s.append(box, b"Subject: after %d\r\n\r\nsmall\r\n" % i)
        assert wal.stat().st_size <= limit
    finally:
        await s.close()
