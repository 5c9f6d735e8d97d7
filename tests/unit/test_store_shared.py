"""Two SQLiteStore instances on one data directory, as two worker processes
of ``mailyard serve`` hold it ([server] workers): each has its own
connections, writer thread and segment-file writer. Their writes interleave
and roll over small segments; every message must read back exactly. And the
shared login throttle (auth/throttle_shared.py) over a real socket pair."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from mailyard.auth.throttle import Attempt, Locked, LoginThrottle, ThrottlePolicy
from mailyard.auth.throttle_shared import SharedThrottle, ThrottleServer
from mailyard.config import StoreConfig
from mailyard.store.api import DeliveryTarget, Mailbox
from mailyard.store.sqlite import SQLiteStore
from tests.waiting import wait_until_async


def _open(place: Path) -> SQLiteStore:
    return SQLiteStore(place, StoreConfig(segment_size=4096, fsync=False))


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[SQLiteStore, SQLiteStore]]:
    one = _open(tmp_path / "store")
    await one.add_domain("example.test")
    two = _open(tmp_path / "store")
    yield one, two
    await one.close()
    await two.close()


async def _inbox(store: SQLiteStore, name: str) -> Mailbox:
    account = await store.add_account(f"{name}@example.test", "h")
    box = await store.get_mailbox(account.id, "INBOX")
    assert box is not None
    return box


def _msg(who: str, i: int) -> bytes:
    return b"Subject: %s %d\r\n\r\n%s\r\n" % (who.encode(), i, (who.encode() * 50) * (i % 7 + 1))


async def test_interleaved_deliveries_of_two_instances_read_back_exactly(
        pair: tuple[SQLiteStore, SQLiteStore], segment_bodies: None) -> None:
    one, two = pair
    box = await _inbox(one, "a")
    sent: dict[int, bytes] = {}

    async def deliver(store: SQLiteStore, who: str) -> None:
        for i in range(60):
            body = _msg(who, i)
            [uid] = await store.deliver(body, [DeliveryTarget(box.id)])
            sent[uid] = body

    await asyncio.gather(deliver(one, "one"), deliver(two, "two"))
    assert len(sent) == 120  # UIDs from both instances are distinct
    for reader in (one, two):
        for uid, body in sent.items():
            assert await reader.read_message(box, uid) == body, uid
    # the small segments rolled over several times, and both instances followed
    assert len(one.blobs.existing()) > 3


def test_shared_throttle_is_one_budget_for_every_worker() -> None:
    policy = ThrottlePolicy(base_delay=0.0, account_max_failures=3)
    server = ThrottleServer(LoginThrottle(policy))
    ends = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(2)]
    workers = []
    for sup_end, worker_end in ends:
        sup_end.setblocking(False)
        workers.append(SharedThrottle(worker_end, policy))

    def call(worker: SharedThrottle, fn: str, *args: object) -> object:
        # the supervisor answers as its loop would, between the send and the recv
        sup_end = ends[workers.index(worker)][0]
        import threading

        t = threading.Thread(target=lambda: _serve_one(server, sup_end))
        t.start()
        result = getattr(worker, fn)(*args)
        t.join()
        return result

    now = 100.0
    for n in range(3):
        attempt = call(workers[n % 2], "reserve", "192.0.2.1", "a@example.test", now)
        assert isinstance(attempt, Attempt)
        call(workers[n % 2], "fail", attempt, now)
    # three failures through two workers: the account is locked for both
    for worker in workers:
        assert isinstance(call(worker, "reserve", "192.0.2.2", "a@example.test", now), Locked)
    # an attempt held by a worker that dies counts as a failure
    held = call(workers[0], "reserve", "192.0.2.3", "b@example.test", now)
    assert isinstance(held, Attempt)
    assert server.release_all(ends[0][0], now) == 1
    assert len(server.throttle) > 0


def _serve_one(server: ThrottleServer, conn: socket.socket) -> None:
    conn.setblocking(True)
    conn.settimeout(5)
    assert server.handle(conn)


def test_shared_throttle_falls_back_to_its_own_tables_when_the_supervisor_is_gone() -> None:
    policy = ThrottlePolicy(base_delay=0.0, account_max_failures=2)
    sup_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    worker = SharedThrottle(worker_end, policy)
    sup_end.close()
    now = 5.0
    for _ in range(2):
        attempt = worker.reserve("192.0.2.1", "a@example.test", now)
        assert isinstance(attempt, Attempt)
        worker.fail(attempt, now)
    assert worker.fallback
    assert isinstance(worker.reserve("192.0.2.1", "a@example.test", now), Locked)


async def test_a_login_waiting_for_another_workers_attempt_goes_on_when_it_settles() -> None:
    """Worker B holds the account's whole budget in flight; worker A's login
    waits (Busy) and goes on as soon as B's attempt settles: B announces the
    settle over the change channel, as server.py wires it."""
    import selectors
    import threading
    import types

    from mailyard.auth.service import LoginService
    from mailyard.server import MailServer, WorkerRole
    from mailyard.store.notify import ChangeChannel, make_slots

    policy = ThrottlePolicy(base_delay=0.0, account_max_failures=1)
    server = ThrottleServer(LoginThrottle(policy))
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(2)]
    stop = threading.Event()

    def supervise() -> None:
        with selectors.DefaultSelector() as sel:
            for sup_end, _ in pairs:
                sel.register(sup_end, selectors.EVENT_READ)
            while not stop.is_set():
                for key, _ev in sel.select(0.05):
                    server.handle(key.fileobj)  # type: ignore[arg-type]

    supervisor = threading.Thread(target=supervise, daemon=True)
    supervisor.start()
    slots = make_slots(2)
    logins = []
    channels = []
    for i, (_, worker_end) in enumerate(pairs):
        throttle = SharedThrottle(worker_end, policy)
        channel = ChangeChannel(slots, i)
        login = LoginService(None, throttle)  # type: ignore[arg-type]
        MailServer._join_peers(WorkerRole(slot=i, count=2, channel=channel, throttle=throttle), None, login)  # type: ignore[arg-type]
        logins.append(login)
        channels.append(channel)
    a, b = logins
    try:
        held = await b.throttle.reserve_async("192.0.2.9", "a@example.test", b.clock())
        assert isinstance(held, Attempt)
        waiting = asyncio.ensure_future(a.reserve("192.0.2.1", "a@example.test", "a", "imap"))
        await asyncio.sleep(0)
        assert not waiting.done()  # Busy: the budget is held by B's attempt
        b.succeeded(held, types.SimpleNamespace(address="a@example.test"), "192.0.2.9", "imap", None)  # type: ignore[arg-type]
        attempt = await asyncio.wait_for(waiting, 5)  # without the note: BUSY_WAIT (30 s)
        assert isinstance(attempt, Attempt)
    finally:
        loop = asyncio.get_running_loop()
        for channel in channels:
            channel.detach(loop)
        for login in logins:
            login.throttle.detach()  # type: ignore[attr-defined]
        stop.set()
        supervisor.join()


def test_a_late_reply_of_the_supervisor_is_never_taken_for_another_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Asks run in threads (the submission budget): one that gives up
    # waiting makes the worker fall back, and a caller queued behind it
    # must not read the late reply meant for the first.
    import threading
    import time

    from mailyard.auth import throttle_shared

    monkeypatch.setattr(throttle_shared, "REPLY_TIMEOUT", 0.2)
    policy = ThrottlePolicy()
    server = ThrottleServer(LoginThrottle(policy), extra={"spam_send": lambda who: f"reply for {who}"})
    sup_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    worker = SharedThrottle(worker_end, policy)

    def slow_supervisor() -> None:
        time.sleep(0.3)  # after the first caller gave up
        _serve_one(server, sup_end)

    answers: dict[str, object] = {}

    def ask(who: str) -> None:
        answers[who] = worker.ask_or(lambda w: f"local for {w}", "spam_send", who)

    threads = [threading.Thread(target=slow_supervisor), threading.Thread(target=ask, args=("A",))]
    for t in threads:
        t.start()
    while not worker._lock.locked():  # the first caller is waiting for its reply
        time.sleep(0.001)
    second = threading.Thread(target=ask, args=("B",))  # waits for the first's turn
    second.start()
    for t in [*threads, second]:
        t.join()
    sup_end.close()
    worker_end.close()
    assert answers == {"A": "local for A", "B": "local for B"}


class _Supervisor:
    """The supervisor's side of one worker's throttle connection, answering
    in a thread as its selector loop would, until ``paused``."""

    def __init__(self, extra: dict[str, Callable[..., object]] | None = None,
                 policy: ThrottlePolicy | None = None) -> None:
        import threading

        self.dropped = False  # handle() gave up on the worker, as workers.py then drops it

        self.policy = policy or ThrottlePolicy(base_delay=0.0)
        self.server = ThrottleServer(LoginThrottle(self.policy), extra=extra)
        self.end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.worker = SharedThrottle(worker_end, self.policy)
        self.paused = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.end, selectors.EVENT_READ)
            while not self.stop.is_set():
                ready = sel.select(0.01)
                if self.paused.is_set():  # checked after the wait: a request sent once paused waits
                    self.stop.wait(0.01)
                    continue
                for _key, _ev in ready:
                    self.end.setblocking(False)
                    if not self.server.handle(self.end):
                        self.dropped = True
                        return

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.worker.detach()
        self.end.close()


async def test_replies_reach_their_own_callers_when_many_ask_at_once() -> None:
    sup = _Supervisor(extra={"echo": lambda n: n * 10})
    sup.worker.attach(asyncio.get_running_loop())
    try:
        answers = await asyncio.gather(*(sup.worker.ask_or_async(lambda n: -1, "echo", n) for n in range(200)))
        assert answers == [n * 10 for n in range(200)]
        # another thread of the worker still gets its own answer (the loop sends and reads)
        assert await asyncio.to_thread(sup.worker.ask_or, lambda n: -1, "echo", 7) == 70
        assert not sup.worker.fallback
    finally:
        sup.close()


async def test_a_reservation_whose_caller_left_counts_as_a_failure_and_is_given_back() -> None:
    # A client that disconnects while its login waits for the supervisor:
    # the attempt the supervisor reserved for it must not hold the budget
    # until the worker dies; it counts as the abandoned attempt it is.
    sup = _Supervisor(policy=ThrottlePolicy(base_delay=0.0, account_max_failures=1))
    loop = asyncio.get_running_loop()
    sup.worker.attach(loop)
    try:
        sup.paused.set()
        gone = asyncio.ensure_future(sup.worker.reserve_async("192.0.2.1", "a@example.test", 1.0))
        await wait_until_async(lambda: sup.worker._waiting, what="the reservation to be sent")
        gone.cancel()
        sup.paused.clear()
        deadline = loop.time() + 5
        while sup.server._held.get(sup.end) != {} and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert sup.server._held.get(sup.end) == {}, "the reservation of the caller that left is still held"
        # the abandoned attempt was the account's one failure allowed
        assert isinstance(await sup.worker.reserve_async("192.0.2.2", "a@example.test", 2.0), Locked)
    finally:
        sup.close()


async def test_an_attached_worker_falls_back_when_the_supervisor_stops_answering(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mailyard.auth import throttle_shared

    monkeypatch.setattr(throttle_shared, "REPLY_TIMEOUT", 0.2)
    sup = _Supervisor(extra={"echo": lambda n: n}, policy=ThrottlePolicy(base_delay=0.0, account_max_failures=2))
    loop = asyncio.get_running_loop()
    sup.worker.attach(loop)
    try:
        sup.paused.set()
        started = loop.time()
        answers = await asyncio.gather(*(sup.worker.ask_or_async(lambda n: f"local {n}", "echo", n) for n in (1, 2)))
        assert answers == ["local 1", "local 2"]
        assert loop.time() - started < 2
        assert sup.worker.fallback
        # what is reported from now on counts in this worker's own tables
        sup.worker.record_failure("192.0.2.1", "a@example.test", 4.0)
        sup.worker.record_failure("192.0.2.1", "a@example.test", 4.0)
        assert isinstance(await sup.worker.reserve_async("192.0.2.1", "a@example.test", 4.0), Locked)
    finally:
        sup.close()


async def test_reports_in_flight_when_the_supervisor_goes_count_in_the_worker() -> None:
    sup = _Supervisor(policy=ThrottlePolicy(base_delay=0.0, account_max_failures=2))
    sup.worker.attach(asyncio.get_running_loop())
    try:
        sup.paused.set()
        sup.worker.record_failure("192.0.2.1", "a@example.test", 4.0)
        sup.worker.record_failure("192.0.2.1", "a@example.test", 4.0)
        sup.stop.set()
        sup.thread.join()
        sup.end.close()  # the supervisor is gone with both reports unanswered
        await wait_until_async(lambda: sup.worker.fallback, what="the worker to fall back")
        assert isinstance(await sup.worker.reserve_async("192.0.2.1", "a@example.test", 4.0), Locked)
    finally:
        sup.stop.set()
        sup.thread.join()
        sup.worker.detach()


async def test_a_burst_of_requests_never_makes_the_supervisor_drop_the_worker() -> None:
    # Hundreds of MX clients counted in one busy loop iteration: the
    # supervisor's non-blocking socket cannot take more replies than the
    # pair's buffer holds, and a reply it cannot send ends the worker's
    # connection (the worker is taken for dead, its logins failed).
    import time

    sup = _Supervisor(extra={"spam_rate": lambda kind, ip: None})
    loop = asyncio.get_running_loop()
    sup.worker.attach(loop)
    try:
        asks = [asyncio.ensure_future(sup.worker.ask_or_async(lambda kind, ip: "local", "spam_rate", "c", f"ip{n}"))
                for n in range(1000)]
        loop.call_soon(time.sleep, 0.3)  # the loop busy while the supervisor answers
        answers = await asyncio.gather(*asks)
        assert not sup.dropped
        assert answers == [None] * 1000 and not sup.worker.fallback
    finally:
        sup.close()


async def test_a_reservation_cancelled_after_its_reply_came_is_given_back() -> None:
    # The reply is read and the caller cancelled in the same loop iteration,
    # before the caller resumed to keep the attempt.
    sup = _Supervisor(policy=ThrottlePolicy(base_delay=0.0, account_max_failures=1))
    loop = asyncio.get_running_loop()
    worker = sup.worker
    caller: list[asyncio.Future[object]] = []
    readable = worker._readable

    def read_then_cancel() -> None:
        readable()
        if caller:
            caller.pop().cancel()  # e.g. the client's connection torn down

    worker._readable = read_then_cancel  # type: ignore[method-assign]
    worker.attach(loop)
    try:
        sup.paused.set()
        caller.append(asyncio.ensure_future(worker.reserve_async("192.0.2.1", "a@example.test", 1.0)))
        await asyncio.sleep(0.02)
        sup.paused.clear()
        deadline = loop.time() + 5
        while sup.server._held.get(sup.end) != {} and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert sup.server._held.get(sup.end) == {}, "the reservation of the cancelled caller is still held"
    finally:
        sup.close()


async def test_replies_still_due_at_detach_are_never_read_as_later_calls() -> None:
    sup = _Supervisor(policy=ThrottlePolicy(base_delay=0.0, account_max_failures=1))
    worker = sup.worker
    worker.attach(asyncio.get_running_loop())
    try:
        sup.paused.set()
        in_flight = asyncio.ensure_future(worker.reserve_async("192.0.2.7", "b@example.test", 2.0))
        await asyncio.sleep(0)
        worker.detach()  # the server stops with a login waiting for its reply
        sup.paused.clear()
        got = await in_flight
        assert isinstance(got, Attempt) and isinstance(got.delay, float)
        assert worker.fallback  # the supervisor's late reply is never read as the next call's
        worker.record_failure("192.0.2.1", "a@example.test", 3.0)
        assert isinstance(worker.reserve("192.0.2.1", "a@example.test", 3.0), Locked)
    finally:
        sup.close()


def test_a_reply_that_came_while_the_worker_stalled_is_read_not_taken_for_a_dead_supervisor(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The supervisor answers at once, then the worker's loop stalls past
    REPLY_TIMEOUT (a busy worker). uvloop (the server's loop) runs the due
    timer before it polls for the reply that is waiting: the reply must be
    read, not the supervisor declared gone, which would leave this worker on
    its own counters for good (each worker then allows a whole budget)."""
    import time

    from mailyard.auth import throttle_shared

    uvloop = pytest.importorskip("uvloop")

    monkeypatch.setattr(throttle_shared, "REPLY_TIMEOUT", 0.2)
    policy = ThrottlePolicy(base_delay=0.0, account_max_failures=2)
    server = ThrottleServer(LoginThrottle(policy))
    sup_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    worker = SharedThrottle(worker_end, policy)

    busy_in, busy_out = socket.socketpair()

    def busy() -> None:
        # another connection's input, taking the loop for longer than the
        # timeout (in an input callback: the next turn runs the due timers
        # before it polls again)
        busy_in.recv(1)
        _serve_one(server, sup_end)  # meanwhile the supervisor has answered
        time.sleep(0.5)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        worker.attach(loop)
        loop.add_reader(busy_in.fileno(), busy)
        ask = asyncio.ensure_future(worker.reserve_async("192.0.2.1", "a@example.test", 5.0))
        while not worker._waiting:
            await asyncio.sleep(0)  # the request is sent
        busy_out.send(b"x")
        assert isinstance(await ask, Attempt)
        assert not worker.fallback
        loop.remove_reader(busy_in.fileno())
        worker.detach()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    for end in (sup_end, worker_end, busy_in, busy_out):
        end.close()
