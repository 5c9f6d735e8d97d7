"""Entering the outbound queue (delivery/queue.py ``OutboundQueue.enqueue``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mailyard.config import DeliveryConfig, StoreConfig
from mailyard.delivery.queue import OutboundQueue
from mailyard.net.tls import client_context
from mailyard.store.api import StoreUnavailable
from mailyard.store.sqlite import SQLiteStore


async def test_a_store_out_of_reach_after_the_commit_does_not_fail_the_enqueue(tmp_path: Path) -> None:
    # The entry is committed: a failure of the read that names it in the log
    # must not reach the caller, who would submit the message again (twice).
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    queue = OutboundQueue(store, None, DeliveryConfig(), "mx.example.test",  # type: ignore[arg-type]
                          client_tls=client_context)
    queue_entry = store.queue_entry

    async def unavailable(*args: Any, **kw: Any) -> Any:
        raise StoreUnavailable("the mail store is unavailable, try again later")

    try:
        store.queue_entry = unavailable  # type: ignore[method-assign]
        queue_id = await queue.enqueue(b"From: a@example.test\r\n\r\nhi\r\n", "a@example.test", ["b@remote.test"])
        store.queue_entry = queue_entry  # type: ignore[method-assign]
        assert queue_id is not None
        entry = await store.queue_entry(queue_id)
        assert entry is not None and [r.address for r in entry.recipients] == ["b@remote.test"]
    finally:
        await store.close()
