"""The outbound queue runner's schedule (delivery/queue.py ``_run``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mailyard.config import DeliveryConfig, StoreConfig
from mailyard.delivery import queue as queue_module
from mailyard.delivery.queue import OutboundQueue
from mailyard.net.tls import client_context
from mailyard.store.sqlite import SQLiteStore


async def test_the_runner_waits_while_its_deliveries_are_in_flight(tmp_path: Path) -> None:
    # A delivery in flight keeps its entry due. The runner must not read the
    # due entries again and again meanwhile, on the event loop of worker 0:
    # the delivery wakes it when it ends.
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


async def test_due_entries_past_one_read_go_out_without_waiting_for_a_connection_to_close(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The runner reads DUE_BATCH due entries at a time. The rest must follow
    # as soon as those are recorded, not once the open connection has idled
    # for connection_cache_time and closed.
    from tests.integration.test_crash_safety import FakePeer

    monkeypatch.setattr(queue_module, "DUE_BATCH", 2)
    peer = FakePeer(lambda: 0)
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    cfg = DeliveryConfig(relay_host="127.0.0.1", relay_port=peer.server_address[1], relay_tls="none",
                         connection_cache_time=60.0, poll_interval=60.0)
    queue = OutboundQueue(store, None, cfg, "mx.example.test", client_tls=client_context)  # type: ignore[arg-type]
    try:
        for n in range(6):
            await queue.enqueue(b"From: a@example.test\r\nSubject: %d\r\n\r\nhi\r\n" % n, "a@example.test",
                                [f"b{n}@remote.test"])
        await queue.start()
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            with peer.lock:
                sent = len(peer.accepted)
            if sent == 6:
                break
            assert asyncio.get_running_loop().time() < deadline, f"{sent} of 6 sent; the rest waited"
            await asyncio.sleep(0.02)
    finally:
        await queue.stop()
        peer.close()
        await store.close()
