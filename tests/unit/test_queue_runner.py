"""The outbound queue runner's schedule (delivery/queue.py ``_run``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mailyard.config import DeliveryConfig, StoreConfig
from mailyard.delivery.queue import OutboundQueue
from mailyard.net.tls import client_context
from mailyard.store.sqlite import SQLiteStore


async def test_the_runner_waits_while_its_deliveries_are_in_flight(tmp_path: Path) -> None:
    # A delivery in flight keeps its entry due. The runner must not read the
    # due entries again and again meanwhile (it did, once a millisecond, on
    # the event loop of worker 0): the delivery wakes it when it ends.
    peers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)  # a smarthost that accepts and says nothing yet

    smarthost = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = smarthost.sockets[0].getsockname()[1]
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    cfg = DeliveryConfig(relay_host="127.0.0.1", relay_port=port, relay_tls="none")
    queue = OutboundQueue(store, None, cfg, "mx.example.test", client_tls=client_context)  # type: ignore[arg-type]
    reads = 0
    queue_due = store.queue_due

    async def counted(*args: Any, **kw: Any) -> Any:
        nonlocal reads
        reads += 1
        return await queue_due(*args, **kw)

    store.queue_due = counted  # type: ignore[method-assign]
    await queue.start()
    try:
        await queue.enqueue(b"From: a@example.test\r\nSubject: x\r\n\r\nhi\r\n", "a@example.test",
                            ["b@remote.test"])
        deadline = asyncio.get_running_loop().time() + 10
        while not peers:
            assert asyncio.get_running_loop().time() < deadline, "the delivery never connected"
            await asyncio.sleep(0.01)
        before = reads
        await asyncio.sleep(0.5)  # the delivery waits for the greeting all along
        assert reads - before <= 2, f"the due entries were read {reads - before} times in half a second"
    finally:
        for writer in peers:
            writer.close()  # the delivery fails at once, and the runner stops without waiting for it
        smarthost.close()
        await queue.stop()
        await store.close()
