"""Workers take turns accepting (net/accept.py): two acceptors on one
listening socket, as two worker processes have, each with its view of the
shared counts; clients that connect together end up spread over both."""

from __future__ import annotations

import asyncio
import socket

from mailyard.net.accept import GONE, Acceptor, AcceptShare
from tests.waiting import wait_until_async

CLIENTS = 10
TIMEOUT = 10.0  # bounds a failure, not a figure


class _Session(asyncio.Protocol):
    def __init__(self, held: list[asyncio.Protocol]) -> None:
        self.held = held

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.held.append(self)


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    return sock


async def _worker(share: AcceptShare, slot: int, listening: socket.socket) -> tuple[Acceptor, list[asyncio.Protocol]]:
    """What one worker's listener sets up: its count among the others', and its accept loop."""
    held: list[asyncio.Protocol] = []
    load = share.load("imap", slot)
    assert load is not None
    load.active = lambda: len(held)
    acceptor = Acceptor(listening, lambda _source: _Session(held), None, "imap", load=load)
    acceptor.start()
    return acceptor, held


async def _connect_together(port: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    return await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(CLIENTS)))


def test_clients_that_connect_together_are_spread_over_the_workers() -> None:
    async def go() -> list[int]:
        share = AcceptShare(["imap"], 2)
        listening = _listening()
        # (each worker has its own descriptor of the shared socket, as after fork)
        workers = [await _worker(share, slot, sock) for slot, sock in enumerate((listening, listening.dup()))]
        clients = await _connect_together(listening.getsockname()[1])
        await wait_until_async(lambda: sum(len(h) for _, h in workers) == CLIENTS, TIMEOUT, "every client accepted")
        for acceptor, _ in workers:
            acceptor.close()
            acceptor.listening.close()
        for _, w in clients:
            w.close()
        return sorted(len(h) for _, h in workers)

    spread = asyncio.run(go())
    assert spread[0] >= CLIENTS // 2 - 1, spread  # 5/5 or 6/4, never all on one


def test_a_worker_that_is_gone_is_not_waited_for() -> None:
    async def go() -> int:
        share = AcceptShare(["imap"], 2)
        listening = _listening()
        other = share.load("imap", 1)  # a worker that held nothing, then ended
        assert other is not None
        share.gone(1)
        acceptor, held = await _worker(share, 0, listening)
        clients = await _connect_together(listening.getsockname()[1])
        await wait_until_async(lambda: len(held) == CLIENTS, TIMEOUT, "every client accepted")
        assert not acceptor.load.busier()  # type: ignore[union-attr]
        acceptor.close()
        for _, w in clients:
            w.close()
        listening.close()
        return len(held)

    assert asyncio.run(go()) == CLIENTS


def test_a_live_worker_that_does_not_accept_holds_no_connection_up_for_good() -> None:
    # slot 1 is live (count 0) but never accepts: a hung or busy worker
    async def go() -> int:
        share = AcceptShare(["imap"], 2)
        listening = _listening()
        assert share.load("imap", 1) is not None
        _, held = await _worker(share, 0, listening)
        clients = await _connect_together(listening.getsockname()[1])
        await wait_until_async(lambda: len(held) == CLIENTS, TIMEOUT, "every client accepted by the live worker")
        for _, w in clients:
            w.close()
        listening.close()
        return len(held)

    assert asyncio.run(go()) == CLIENTS


def test_counts_are_per_service_and_a_gone_slot_is_ignored() -> None:
    share = AcceptShare(["imap", "smtp"], 3)
    imap = [share.load("imap", slot) for slot in range(3)]
    smtp0 = share.load("smtp", 0)
    assert share.load("http", 0) is None  # not shared among the workers
    assert all(v is not None for v in imap) and smtp0 is not None
    counts = {0: 7, 1: 2, 2: 7}
    for slot, view in enumerate(imap):
        view.active = lambda n=counts[slot]: n  # type: ignore[union-attr]
        view.update()  # type: ignore[union-attr]
    assert imap[0].busier() and imap[2].busier() and not imap[1].busier()  # type: ignore[union-attr]
    assert not smtp0.busier()  # the IMAP counts say nothing about SMTP
    share.gone(1)
    assert not imap[0].busier() and not imap[2].busier()  # type: ignore[union-attr]
    assert share._counts[1] == GONE and share._counts[3 + 1] == GONE  # every service's count of slot 1


def test_a_small_difference_among_many_connections_is_no_reason_to_wait() -> None:
    share = AcceptShare(["smtp"], 2)
    a, b = share.load("smtp", 0), share.load("smtp", 1)
    assert a is not None and b is not None
    a.active, b.active = (lambda: 11), (lambda: 10)
    a.update()
    b.update()
    assert not a.busier()  # short connections come and go: 11 against 10 is even
    a.active = lambda: 2
    b.active = lambda: 0
    a.update()
    b.update()
    assert a.busier()


def test_a_share_of_no_service_marks_any_slot_gone() -> None:
    # a server with webmail only: the workers share no mail port's counts
    share = AcceptShare([], 3)
    assert share.load("imap", 0) is None
    for slot in range(3):
        share.gone(slot)


def test_a_connection_another_worker_took_leaves_the_next_one_its_own_wait() -> None:
    # worker 0 is busier; slot 1 is a live worker whose accepts the test
    # makes itself. Worker 0 leaves each connection to it, not only the
    # first: the wait spent on a connection the other took is no reason
    # to take the next one at once.
    async def go() -> int:
        share = AcceptShare(["imap"], 2)
        listening = _listening()
        other = share.load("imap", 1)
        assert other is not None  # live, holding nothing
        acceptor, held = await _worker(share, 0, listening)
        acceptor.load.active = lambda: 10  # type: ignore[union-attr]
        acceptor.load.update()  # type: ignore[union-attr]
        port = listening.getsockname()[1]
        taken, clients = [], []
        for _ in range(2):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT))
            # worker 0 either waits for the other (paused) or takes it
            await wait_until_async(lambda: acceptor._later is not None or held, TIMEOUT, "worker 0 to look")
            if held:
                break
            taken.append(listening.accept()[0])  # the other worker takes it
            await wait_until_async(lambda: acceptor._later is None, TIMEOUT, "worker 0 to watch again")
        acceptor.close()
        for sock in taken + clients:
            sock.close()
        listening.close()
        return len(held)

    assert asyncio.run(go()) == 0
