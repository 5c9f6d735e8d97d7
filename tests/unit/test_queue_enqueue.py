"""Entering the outbound queue (delivery/queue.py ``OutboundQueue.enqueue``)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from mailyard.config import DeliveryConfig, StoreConfig
from mailyard.delivery.queue import OutboundQueue, queue_name
from mailyard.net.tls import client_context
from mailyard.store.api import StoreUnavailable
from mailyard.store.sqlite import SQLiteStore


async def test_nothing_after_the_commit_fails_the_enqueue_and_the_log_names_the_entry(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The entry is committed: nothing after it may reach the caller (the
    # SMTP glue would answer 451 and the client send the message again), and
    # the "queued" line names the entry as the queue's later lines do
    # (``queue_name`` of its stored creation time). A read of the entry
    # after the commit (here slow, then failing) must not be needed.
    caplog.set_level(logging.INFO, logger="mailyard")
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    queue = OutboundQueue(store, None, DeliveryConfig(), "mx.example.test",  # type: ignore[arg-type]
                          client_tls=client_context)
    queue_entry = store.queue_entry

    async def unavailable(*args: Any, **kw: Any) -> Any:
        await asyncio.sleep(0.01)
        raise StoreUnavailable("the mail store is unavailable, try again later")

    try:
        store.queue_entry = unavailable  # type: ignore[method-assign]
        queue_id = await queue.enqueue(b"From: a@example.test\r\n\r\nhi\r\n", "a@example.test", ["b@remote.test"])
        store.queue_entry = queue_entry  # type: ignore[method-assign]
        assert queue_id is not None
        entry = await store.queue_entry(queue_id)
        assert entry is not None and [r.address for r in entry.recipients] == ["b@remote.test"]
        (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("queued ")]
        assert f"queue_id={queue_name(queue_id, entry.created)}" in line, line
    finally:
        await store.close()
