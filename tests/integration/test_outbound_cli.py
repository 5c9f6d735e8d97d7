"""`mailyard queue list|show|retry|delete` (subprocesses, as an administrator runs them)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mailyard.config import Config
from mailyard.store import open_store
from mailyard.store.api import NewQueueEntry, NewRecipient, RecipientOutcome

# the store of MAILYARD_TEST_BACKEND (conftest.py); not both_backends: each of its
# CLI subprocesses opens the PostgreSQL store anew, 20 s on the shared CI machine


def run(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailyard", "--data", str(data), *args],
        capture_output=True, text=True, timeout=60,
    )


def test_queue_commands(tmp_path: Path, use_store_backend: Callable[[Config], None]) -> None:
    data = tmp_path / "data"
    assert run(data, "init", "--domain", "a.test").returncode == 0
    cfg = Config.load(data / "config.toml")
    use_store_backend(cfg)
    (data / "config.toml").write_text(cfg.to_toml())

    async def fill() -> tuple[int, int]:
        store = open_store(data, cfg.store, background=False)
        try:
            body = b"Subject: queued\r\n\r\nx\r\n"
            _, first = await store.queue_submit(body, NewQueueEntry(
                "alice@a.test", [NewRecipient("bob@b.test"), NewRecipient("carol@c.test")], envid="E-1", ret="HDRS"))
            _, second = await store.queue_submit(body, NewQueueEntry("alice@a.test", [NewRecipient("dave@d.test")]))
            entry = await store.queue_entry(first)
            await store.queue_update(first, [RecipientOutcome(entry.recipients[0].id, "pending",
                                                              "451 4.3.0 try later", "mx.b.test",
                                                              time.time() + 3600)],
                                     [("b.test", "mx.b.test", "451 4.3.0 try later")])
            return first, second
        finally:
            await store.close()

    first, second = asyncio.run(fill())
    r = run(data, "queue", "list")
    assert r.returncode == 0, r.stderr
    assert "2 message(s) in the queue, 3 recipient(s) pending" in r.stdout
    assert f"{first:>8}" in r.stdout and "b.test, c.test" in r.stdout and "(now)" in r.stdout

    r = run(data, "queue", "show", str(first))
    assert "<bob@b.test> pending, 1 attempt(s)  next:" in r.stdout and "(in " in r.stdout
    assert "last: 451 4.3.0 try later (mx.b.test)" in r.stdout
    assert "attempt:" in r.stdout and "b.test via mx.b.test: 451 4.3.0 try later" in r.stdout
    assert "ENVID=E-1 RET=HDRS" in r.stdout

    r = run(data, "queue", "retry", str(first))
    assert "2 recipient(s) due now" in r.stdout
    assert "(in " not in run(data, "queue", "show", str(first)).stdout

    r = run(data, "queue", "delete", str(second))
    assert r.returncode == 0 and f"deleted queue entry {second}" in r.stdout
    assert "1 message(s) in the queue" in run(data, "queue", "list").stdout
    r = run(data, "queue", "show", "999")
    assert r.returncode == 1 and "no queue entry 999" in r.stderr
    r = run(data, "queue", "retry")
    assert r.returncode == 0 and "2 recipient(s) due now" in r.stdout
