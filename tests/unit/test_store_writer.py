"""The group-commit writer when SQLite rolls back a whole transaction under a
write (SQLITE_FULL does, when the page cache spills to a full disk): that
write's caller gets the disk-full error, the batch's other writes commit."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from mailyard.config import StoreConfig
from mailyard.store.api import StorageFull
from mailyard.store.sqlite import SQLiteStore


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
