"""One login throttle for every worker process of ``mailyard serve``.

With ``[server] workers`` above 1, a guesser spreading connections over the
workers must meet the same budgets as against one process. The supervisor
keeps the one `LoginThrottle` (auth/throttle.py) and answers each worker's
calls over a SOCK_SEQPACKET socket pair: `SharedThrottle` is the worker's
side, with `LoginThrottle`'s methods, so the login service (auth/service.py)
uses it unchanged. A call is one small request and reply between two
processes of one machine: tens of microseconds, but on a busy machine the
supervisor may first wait for a core, and a worker's event loop must not
stand still meanwhile. So the worker's loop never waits for a reply: it
sends its request and reads the reply when it comes (`SharedThrottle.attach`).

A login that finds the budget left held by attempts in flight (``Busy``)
waits for one of them to settle: a worker settling one tells the others
over the change channel (store/notify.py ``SETTLED``), so the wait ends at
once whichever worker held the attempt.

An attempt reserved by a worker that dies is settled as a failure by the
supervisor (`ThrottleServer.release_all`): the budget it held comes back,
and the attempt counts as the failure it would have been.

Should the supervisor stop answering (it is gone: the worker is about to be
killed too), a worker falls back to the throttle tables of its own process
rather than letting logins through unthrottled.

The same channel carries the other counters every worker must share (the
MX port's connection and message rates, spam/rates.py): the supervisor
registers each as a named call (``ThrottleServer(extra=...)``) and a
worker asks it with `SharedThrottle.ask_or_async` (`ask_or` from a
thread), which falls back to the worker's own counter like the throttle
does.

Messages are pickles: both ends are processes of the same program,
connected by a socket pair nobody else holds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import pickle
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .throttle import Attempt, Busy, Locked, LoginThrottle, ThrottlePolicy

log = logging.getLogger("mailyard.auth.throttle")

_MAX_MESSAGE = 64 * 1024
REPLY_TIMEOUT = 5.0  # seconds; the supervisor answers in microseconds
# Requests a worker's loop has sent and not had answered; more wait in the
# worker. The supervisor's socket is non-blocking and a reply it cannot
# send ends the connection (the worker is taken for dead): the replies in
# flight must fit in the pair's buffer (about 270 small ones by default).
MAX_IN_FLIGHT = 64


class ThrottleServer:
    """The supervisor's side: the one throttle, and the attempts each worker holds."""

    def __init__(self, throttle: LoginThrottle, extra: dict[str, Callable[..., Any]] | None = None) -> None:
        self.throttle = throttle
        self._held: dict[socket.socket, dict[int, Attempt]] = {}
        # Other shared counters, by call name (see the module docstring).
        self.extra: dict[str, Callable[..., Any]] = dict(extra or {})

    def handle(self, conn: socket.socket) -> bool:
        """Answer one request waiting on ``conn``; False when the worker is gone."""
        try:
            data = conn.recv(_MAX_MESSAGE)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:
            return False
        held = self._held.setdefault(conn, {})
        try:
            method, args = pickle.loads(data)
            reply: Any = ("ok", self._call(held, method, args))
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            log.exception("shared throttle call failed")
            reply = ("error", repr(exc))
        try:
            conn.send(pickle.dumps(reply))
        except OSError:
            return False
        return True

    def _call(self, held: dict[int, Attempt], method: str, args: tuple) -> Any:
        t = self.throttle
        if method == "reserve":
            token, ip, account, now = args
            verdict = t.reserve(ip, account, now)
            if isinstance(verdict, Attempt):
                held[token] = verdict
            return verdict
        if method in ("fail", "succeed"):
            token, now = args
            attempt = held.pop(token, None)
            if attempt is not None:
                getattr(t, method)(attempt, now)
            return None
        if method == "before_attempt":
            return t.before_attempt(*args)
        if method == "record_failure":
            return t.record_failure(*args)
        if method == "record_success":
            return t.record_success(*args)
        if method == "len":
            return len(t)
        if method in self.extra:
            return self.extra[method](*args)
        raise ValueError(f"unknown throttle call {method!r}")

    def release_all(self, conn: socket.socket, now: float) -> int:
        """The worker on ``conn`` died: its attempts in flight count as failures."""
        held = self._held.pop(conn, {})
        for attempt in held.values():
            self.throttle.fail(attempt, now)
        return len(held)


class SharedThrottle(LoginThrottle):
    """A worker's view of the supervisor's throttle, with `LoginThrottle`'s
    methods. Its own tables (the base class's) serve only once the
    supervisor stopped answering.

    Once attached (`attach`) to the worker's event loop, no call made on the loop
    blocks it: a supervisor busy or waiting for a core would otherwise hold
    every session of the worker still. The loop's callers use the async
    calls (`reserve_async`, `before_attempt_async`, `ask_or_async`); the
    calls that only report (`fail`, `succeed`, `record_failure`,
    `record_success`) send their request and go on. Requests go out in the
    order they are made and the supervisor answers a connection's requests in
    that order, so each reply is matched to the oldest request waiting."""

    def __init__(self, conn: socket.socket, policy: ThrottlePolicy) -> None:
        super().__init__(policy)
        self._conn = conn
        conn.setblocking(True)
        conn.settimeout(REPLY_TIMEOUT)
        self._lock = threading.Lock()
        self._tokens: dict[int, int] = {}  # id(Attempt) -> the supervisor's token
        self._next = 0
        self.fallback = False  # the supervisor stopped answering: this process's tables count
        # Called after an attempt settled: the other workers' logins waiting
        # for a budget (``Busy``) ask again (set by server.py).
        self.on_settle: Callable[[], None] | None = None
        # Attached (`attach`): the loop, its thread, what waits for each
        # request sent (in order) and the requests not sent yet.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._waiting: deque[_OnReply] = deque()
        self._outbox: deque[bytes] = deque()

    # -- the event loop's side -------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve the calls of ``loop``'s thread (the caller's) without blocking it."""
        with self._lock:
            self._conn.setblocking(False)
            self._loop = loop
            self._loop_thread = threading.get_ident()
            if not self.fallback:
                loop.add_reader(self._conn.fileno(), self._readable)

    def detach(self) -> None:
        """Back to blocking calls (the loop is closing). Requests still
        waiting count as unanswered, and since their replies may still come
        and would be read as later calls', this process's tables count from
        then on."""
        loop = self._loop
        if loop is None:
            return
        self._stop_watching()
        self._loop = self._loop_thread = None
        waiting, self._waiting = self._waiting, deque()
        self._outbox.clear()
        if waiting:
            self.fallback = True
        for on_reply in waiting:
            on_reply(None)
        self._conn.setblocking(True)
        self._conn.settimeout(REPLY_TIMEOUT)

    def _on_loop(self) -> bool:
        return self._loop is not None and threading.get_ident() == self._loop_thread

    def _post(self, method: str, args: tuple, on_reply: _OnReply) -> None:
        """Send one request from the loop's thread; ``on_reply`` gets its
        reply, or None if it will never come (the supervisor is gone)."""
        if self.fallback or self._loop is None:
            raise _Unavailable
        data = pickle.dumps((method, args))
        self._waiting.append(on_reply)
        self._outbox.append(data)
        self._flush()

    def _flush(self) -> None:
        """Send the requests waiting in the worker, at most MAX_IN_FLIGHT
        unanswered; the rest go as replies come (`_readable`)."""
        loop = self._loop
        while self._outbox and len(self._waiting) - len(self._outbox) < MAX_IN_FLIGHT:
            try:
                self._conn.send(self._outbox[0])
            except (BlockingIOError, InterruptedError):
                if loop is not None:
                    loop.add_writer(self._conn.fileno(), self._writable)
                return
            except OSError as exc:
                self._lost(str(exc))
                return
            self._outbox.popleft()

    def _writable(self) -> None:
        if self._loop is not None:
            self._loop.remove_writer(self._conn.fileno())
        self._flush()

    def _readable(self) -> None:
        while True:
            try:
                data = self._conn.recv(_MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lost(str(exc))
                return
            if not data:
                self._lost("closed")
                return
            if self._waiting:
                self._waiting.popleft()(data)
                self._flush()

    def _stop_watching(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._conn.fileno())
            self._loop.remove_writer(self._conn.fileno())

    def _lost(self, why: str) -> None:
        """The supervisor does not answer: this process's tables count from
        now on, and every request waiting is told its reply will not come."""
        if not self.fallback:
            log.error("the supervisor's login throttle does not answer (%s); using this worker's own", why)
        self.fallback = True
        self._stop_watching()
        self._outbox.clear()
        waiting, self._waiting = self._waiting, deque()
        for on_reply in waiting:
            on_reply(None)

    async def _ask_async(self, method: str, args: tuple,
                         orphan: Callable[[Any], None] | None = None) -> Any:
        """One call from the loop's thread, waited for without blocking the
        loop. A reply that finds its caller gone (cancelled: the client
        left) goes to ``orphan``."""
        loop = self._loop
        if loop is None:
            raise _Unavailable
        fut: asyncio.Future[bytes] = loop.create_future()

        def on_reply(data: bytes | None) -> None:
            if fut.done():
                if data is not None and orphan is not None and fut.cancelled():
                    with contextlib.suppress(Exception):
                        orphan(_value(data))
            elif data is None:
                fut.set_exception(_Unavailable())
            else:
                fut.set_result(data)

        self._post(method, args, on_reply)
        # A loop timer, not asyncio.wait_for: a login may run in an eager
        # step that has no current task (net/session_protocol.py).
        timer = loop.call_later(REPLY_TIMEOUT, self._overdue, fut)
        try:
            data = await fut
        except asyncio.CancelledError:
            # cancelled after the reply came, before this coroutine resumed
            if orphan is not None and fut.done() and not fut.cancelled() and fut.exception() is None:
                with contextlib.suppress(Exception):
                    orphan(_value(fut.result()))
            raise
        finally:
            timer.cancel()
        return _value(data)

    def _overdue(self, fut: asyncio.Future[bytes]) -> None:
        """``REPLY_TIMEOUT`` has passed without ``fut``'s reply being read.
        After the loop itself stalled that long (a busy worker), the reply
        may be waiting in the socket: libuv runs due timers before it polls
        for input. It is read first; only a reply still missing means the
        supervisor stopped answering (and this process's tables count for
        good: a late reply could be read as a later request's)."""
        if not fut.done() and not self.fallback:
            self._readable()
        if not fut.done():
            self._lost("no reply")

    def _tell(self, method: str, args: tuple, on_reply: Callable[[bytes | None], None] | None = None) -> bool:
        """Send a report from the loop's thread without waiting for its
        reply; False when the supervisor no longer answers."""
        try:
            self._post(method, args, on_reply or _ignore)
        except _Unavailable:
            return False
        return True

    # -- blocking calls (threads, or before `attach`) --------------------------
    def _ask(self, method: str, *args: Any) -> Any:
        if self._loop is not None:
            if self._on_loop():
                raise RuntimeError(f"shared throttle: a blocking {method!r} on the event loop")
            # another thread of an attached worker: the loop sends and reads
            ask = self._ask_async(method, args)
            try:
                call = asyncio.run_coroutine_threadsafe(ask, self._loop)
            except RuntimeError:  # the loop is closed
                ask.close()
                raise _Unavailable from None
            try:
                return call.result(REPLY_TIMEOUT + 1.0)
            except concurrent.futures.TimeoutError:  # the loop is stuck
                call.cancel()
                raise _Unavailable from None
        with self._lock:
            if self.fallback:
                # A caller before this one gave up waiting: its late reply
                # may still come, and must not be read as this one's.
                raise _Unavailable
            try:
                self._conn.send(pickle.dumps((method, args)))
                data = self._conn.recv(_MAX_MESSAGE)
            except OSError as exc:
                log.error("the supervisor's login throttle does not answer (%s); using this worker's own", exc)
                data = b""
            if not data:
                self.fallback = True
                raise _Unavailable
        return _value(data)

    # -- LoginThrottle's methods -----------------------------------------------
    def _token(self) -> int:
        self._next += 1
        return self._next

    def _keep_token(self, verdict: Any, token: int) -> Any:
        if isinstance(verdict, Attempt):
            self._tokens[id(verdict)] = token
        return verdict

    def reserve(self, ip: str, account: str | None, now: float) -> Attempt | Locked | Busy:
        if not self.fallback:
            token = self._token()
            try:
                return self._keep_token(self._ask("reserve", token, ip, account, now), token)
            except _Unavailable:
                pass
        return super().reserve(ip, account, now)

    async def reserve_async(self, ip: str, account: str | None, now: float) -> Attempt | Locked | Busy:
        if not self._on_loop():
            return self.reserve(ip, account, now)
        if not self.fallback:
            token = self._token()

            def orphan(verdict: Any) -> None:
                # reserved for a caller that is gone: it counts as the
                # abandoned attempt it is, and its budget comes back
                if isinstance(verdict, Attempt):
                    self._tell("fail", (token, now), lambda data: data is not None and self._settled())

            try:
                return self._keep_token(await self._ask_async("reserve", (token, ip, account, now), orphan), token)
            except _Unavailable:
                pass
        return super().reserve(ip, account, now)

    def _settle(self, method: str, attempt: Attempt, now: float) -> bool:
        """Settle a reservation the supervisor made; False if it was not one."""
        token = self._tokens.pop(id(attempt), None)
        if token is None:
            return False
        attempt.settled = True
        if self._on_loop():
            # the other workers hear of it once the supervisor has it
            self._tell(method, (token, now), lambda data: data is not None and self._settled())
            return True
        try:
            self._ask(method, token, now)
        except _Unavailable:
            return True
        self._settled()
        return True

    def _settled(self) -> None:
        if self.on_settle is not None:
            self.on_settle()

    def fail(self, attempt: Attempt, now: float) -> None:
        if not self._settle("fail", attempt, now):
            super().fail(attempt, now)

    def succeed(self, attempt: Attempt, now: float) -> None:
        if not self._settle("succeed", attempt, now):
            super().succeed(attempt, now)

    def before_attempt(self, ip: str, account: str | None, now: float) -> float | Locked | Busy:
        if not self.fallback:
            try:
                return self._ask("before_attempt", ip, account, now)
            except _Unavailable:
                pass
        return super().before_attempt(ip, account, now)

    async def before_attempt_async(self, ip: str, account: str | None, now: float) -> float | Locked | Busy:
        if not self._on_loop():
            return self.before_attempt(ip, account, now)
        return await self.ask_or_async(super().before_attempt, "before_attempt", ip, account, now)

    def _report(self, method: str, local: Callable[..., None], *args: Any) -> None:
        """A report (a failure or success without a reservation): to the
        supervisor, or to this process's tables while it does not answer."""
        if self._on_loop():
            # should the reply never come, the report counts here instead
            if not self._tell(method, args, lambda data: data is None and local(*args)):
                local(*args)
            return
        if not self.fallback:
            try:
                self._ask(method, *args)
                return
            except _Unavailable:
                pass
        local(*args)

    def record_failure(self, ip: str, account: str | None, now: float) -> None:
        self._report("record_failure", super().record_failure, ip, account, now)

    def record_success(self, ip: str, account: str, now: float) -> None:
        self._report("record_success", super().record_success, ip, account, now)

    def ask_or(self, fallback: Callable[..., Any], method: str, *args: Any) -> Any:
        """Ask the supervisor's counter registered as ``method``; while the
        supervisor does not answer, ``fallback(*args)`` (this process's own).
        Blocking: from the event loop, use `ask_or_async`."""
        if not self.fallback:
            try:
                return self._ask(method, *args)
            except _Unavailable:
                pass
        return fallback(*args)

    async def ask_or_async(self, fallback: Callable[..., Any], method: str, *args: Any) -> Any:
        """`ask_or` for a caller on the event loop, which it does not block."""
        if not self._on_loop():
            return self.ask_or(fallback, method, *args)
        if not self.fallback:
            try:
                return await self._ask_async(method, args)
            except _Unavailable:
                pass
        return fallback(*args)

    def __len__(self) -> int:
        if not self.fallback:
            try:
                return int(self._ask("len"))
            except _Unavailable:
                pass
        return super().__len__()


_OnReply = Callable[[bytes | None], Any]


def _ignore(data: bytes | None) -> None:
    """A report's reply: nothing to do with it."""


def _value(data: bytes) -> Any:
    status, value = pickle.loads(data)
    if status != "ok":
        raise RuntimeError(f"shared throttle: {value}")
    return value


class _Unavailable(Exception):
    """The supervisor did not answer."""
