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
from mailyard.store.api import Store
from mailyard.store.sqlite import SQLiteStore
from tests.integration.test_crash_safety import FakePeer
from tests.unit.test_store import Backend
from tests.unit.test_store import backend as backend  # noqa: F401  (the parametrised fixture)
from tests.waiting import wait_until_async


def count_reads(store: Store) -> list[int]:
    """Records each read of due entries (``store.queue_due``) the runner
    makes: one item per read, how many entries it returned."""
    reads: list[int] = []
    queue_due = store.queue_due

    async def counted(*args: Any, **kw: Any) -> Any:
        due = await queue_due(*args, **kw)
        reads.append(len(due))
        return due

    store.queue_due = counted  # type: ignore[method-assign]
    return reads


async def silent_server(host: str, port: int = 0) -> tuple[asyncio.Server, list[asyncio.StreamWriter]]:
    """A destination that accepts connections and never says a word, and the
    writers of the connections it got (closing one ends that delivery)."""
    peers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)

    return await asyncio.start_server(silent, host, port), peers


def accepted(peer: FakePeer) -> list[str]:
    """The recipients ``peer`` gave a 250 for the message, in order."""
    with peer.lock:
        return [rcpt for _, rcpt, *_ in peer.accepted]


def message(n: int) -> bytes:
    return b"From: a@example.test\r\nSubject: %d\r\n\r\nhi\r\n" % n


async def test_the_runner_waits_while_its_deliveries_are_in_flight(tmp_path: Path) -> None:
    # A delivery in flight keeps its entry due. The runner must not read the
    # due entries again and again meanwhile, on the event loop of worker 0:
    # the delivery wakes it when it ends.
    smarthost, peers = await silent_server("127.0.0.1")
    port = smarthost.sockets[0].getsockname()[1]
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    cfg = DeliveryConfig(relay_host="127.0.0.1", relay_port=port, relay_tls="none")
    queue = OutboundQueue(store, None, cfg, "mx.example.test", client_tls=client_context)  # type: ignore[arg-type]
    reads = count_reads(store)
    await queue.start()
    try:
        await queue.enqueue(message(0), "a@example.test", ["b@remote.test"])
        await wait_until_async(lambda: peers, what="the delivery's connection")
        before = len(reads)
        await asyncio.sleep(0.5)  # the delivery waits for the greeting all along
        assert len(reads) - before <= 2, f"the due entries were read {len(reads) - before} times in half a second"
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
    monkeypatch.setattr(queue_module, "DUE_BATCH", 2)
    peer = FakePeer(lambda: 0)
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    cfg = DeliveryConfig(relay_host="127.0.0.1", relay_port=peer.server_address[1], relay_tls="none",
                         connection_cache_time=60.0, poll_interval=60.0)
    queue = OutboundQueue(store, None, cfg, "mx.example.test", client_tls=client_context)  # type: ignore[arg-type]
    try:
        for n in range(6):
            await queue.enqueue(message(n), "a@example.test", [f"b{n}@remote.test"])
        await queue.start()
        await wait_until_async(lambda: len(accepted(peer)) == 6, timeout=20,
                               what=lambda: f"6 sent; {len(accepted(peer))} were, the rest waited")
    finally:
        await queue.stop()
        peer.close()
        await store.close()


async def test_a_backlog_is_read_a_batch_at_a_time_not_once_per_delivery(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    # 60 messages for one smarthost, one connection, 10 entries a read. A
    # delivery that ends must not read the due entries again each time (a
    # read of up to DUE_BATCH entries with their recipients on worker 0's
    # event loop, per message delivered): about one read per half a batch
    # delivered, and still every message once.
    monkeypatch.setattr(queue_module, "DUE_BATCH", 10)
    peer = FakePeer(lambda: 0)
    store = backend.open(StoreConfig(fsync=False))
    cfg = DeliveryConfig(relay_host="127.0.0.1", relay_port=peer.server_address[1], relay_tls="none",
                         max_connections_per_domain=1, connection_cache_time=60.0, poll_interval=60.0)
    queue = OutboundQueue(store, None, cfg, "mx.example.test", client_tls=client_context)  # type: ignore[arg-type]
    reads = count_reads(store)
    sent = [f"b{n}@remote.test" for n in range(60)]
    try:
        for n, rcpt in enumerate(sent):
            await queue.enqueue(message(n), "a@example.test", [rcpt])
        await queue.start()
        await wait_until_async(lambda: queue.stats["delivered"] == 60, timeout=30,
                               what=lambda: f"60 delivered; {queue.stats['delivered']} were")
        assert sorted(accepted(peer)) == sorted(sent)
        assert len(reads) <= 60 // 5 + 2, f"{len(reads)} reads of due entries for 60 deliveries: {reads}"
    finally:
        await queue.stop()
        peer.close()
        await store.close()


async def test_a_backlog_for_one_destination_does_not_hold_up_mail_for_another(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    # 30 messages for a destination that never answers (its one connection
    # waits for the greeting), more than a read of 10 takes. A message for
    # another destination queued meanwhile goes out at once: the backlog
    # must not fill every read until it has drained.
    monkeypatch.setattr(queue_module, "DUE_BATCH", 10)
    peer = FakePeer(lambda: 0)
    port = peer.server_address[1]
    stuck, peers = await silent_server("127.0.0.2", port)  # [delivery] smtp_port is one port for every MX
    store = backend.open(StoreConfig(fsync=False))
    cfg = DeliveryConfig(smtp_port=port, max_connections_per_domain=1, connection_cache_time=60.0,
                         poll_interval=60.0)
    queue = OutboundQueue(store, None, cfg, "mx.example.test", client_tls=client_context)  # type: ignore[arg-type]
    try:
        for n in range(30):
            await queue.enqueue(message(n), "a@example.test", [f"a{n}@[127.0.0.2]"])
        await queue.start()
        await wait_until_async(lambda: peers, what="the connection to the destination that never answers")
        await queue.enqueue(message(30), "a@example.test", ["b@[127.0.0.1]"])
        await wait_until_async(lambda: accepted(peer) == ["b@[127.0.0.1]"],
                               what="the message for the other destination")
    finally:
        for writer in peers:
            writer.close()
        stuck.close()
        await queue.stop()
        peer.close()
        await store.close()


async def test_a_retry_goes_out_when_due_while_the_same_message_waits_at_another_destination(
        backend: Backend) -> None:  # noqa: F811
    # One message for two destinations: one never answers (its recipient
    # stays in flight), the other defers the first attempt. Its retry goes
    # out when due: a recipient held elsewhere does not hold up its entry's
    # other recipients.
    peer = FakePeer(lambda: 0)
    port = peer.server_address[1]
    stuck, peers = await silent_server("127.0.0.2", port)
    store = backend.open(StoreConfig(fsync=False))
    cfg = DeliveryConfig(smtp_port=port, retry_initial=0.3, connection_cache_time=0.1, poll_interval=60.0)
    queue = OutboundQueue(store, None, cfg, "mx.example.test", client_tls=client_context)  # type: ignore[arg-type]
    try:
        await queue.enqueue(message(0), "a@example.test", ["defer-b@[127.0.0.1]", "c@[127.0.0.2]"])
        await queue.start()
        await wait_until_async(lambda: accepted(peer) == ["defer-b@[127.0.0.1]"], what="the retry")
        assert peers and peer.deferred == {"defer-b@[127.0.0.1]"}
    finally:
        for writer in peers:
            writer.close()
        stuck.close()
        await queue.stop()
        peer.close()
        await store.close()


async def test_a_delivery_report_that_cannot_be_made_leaves_nothing_stranded_or_sent_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Making the bounce fails (a store error while reading the body, say):
    # the outcomes are recorded all the same, the jobs leave flight (else
    # their recipients are never read again and, held, fill the runner
    # until it reads no more), and no recipient gets a second attempt.
    monkeypatch.setattr(queue_module, "DUE_BATCH", 2)  # the runner holds at most 8 jobs
    peer = FakePeer(lambda: 0)
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    cfg = DeliveryConfig(relay_host="127.0.0.1", relay_port=peer.server_address[1], relay_tls="none",
                         connection_cache_time=0.1, poll_interval=0.2)
    queue = OutboundQueue(store, None, cfg, "mx.example.test", client_tls=client_context)

    async def broken_report(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("the store failed while the report was made")

    monkeypatch.setattr(queue, "_report", broken_report)
    try:
        await queue.start()
        for n in range(8):
            await queue.enqueue(message(n), "a@example.test", [f"reject-{n}@remote.test"])
        await wait_until_async(lambda: queue.stats["failed"] == 8, timeout=10, what="8 refusals recorded")
        await queue.enqueue(message(99), "a@example.test", ["ok@remote.test"])
        await wait_until_async(lambda: "ok@remote.test" in accepted(peer), timeout=5, what="the next message")
        await asyncio.sleep(0.5)  # more than two poll intervals
        assert queue.stats["failed"] == 8  # no refused recipient was tried again
        assert not queue._inflight
    finally:
        await queue.stop()
        peer.close()
        await store.close()


async def test_the_runner_reads_at_least_every_few_minutes_whatever_the_poll_interval(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Reads renew the store's claims on what the runner holds (PostgreSQL's
    # 15-minute leases, past half their term): a poll interval of an hour
    # must not let them lapse while a delivery waits.
    monkeypatch.setattr(queue_module, "MAX_POLL", 0.1)
    smarthost, peers = await silent_server("127.0.0.1")
    port = smarthost.sockets[0].getsockname()[1]
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    cfg = DeliveryConfig(relay_host="127.0.0.1", relay_port=port, relay_tls="none", poll_interval=3600.0)
    queue = OutboundQueue(store, None, cfg, "mx.example.test", client_tls=client_context)  # type: ignore[arg-type]
    reads = count_reads(store)
    await queue.start()
    try:
        await queue.enqueue(message(0), "a@example.test", ["b@remote.test"])
        await wait_until_async(lambda: peers, what="the delivery's connection")
        before = len(reads)
        await asyncio.sleep(0.6)
        assert len(reads) - before >= 3, f"{len(reads) - before} reads in 0.6 s"
    finally:
        for writer in peers:
            writer.close()
        smarthost.close()
        await queue.stop()
        await store.close()
