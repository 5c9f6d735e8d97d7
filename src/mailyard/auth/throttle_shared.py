"""One login throttle for every worker process of ``mailyard serve``.

With ``[server] workers`` above 1, a guesser spreading connections over the
workers must meet the same budgets as against one process. The supervisor
keeps the one `LoginThrottle` (auth/throttle.py) and answers each worker's
calls over a SOCK_SEQPACKET socket pair: `SharedThrottle` is the worker's
side, with the same synchronous methods, so the login service
(auth/service.py) uses it unchanged. A call is one small request and reply
between two processes of one machine (tens of microseconds), made only for a
login attempt, next to a password hash costing tens of milliseconds.

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
worker asks it with `SharedThrottle.ask_or`, which falls back to the
worker's own counter like the throttle does.

Messages are pickles: both ends are processes of the same program,
connected by a socket pair nobody else holds.
"""

from __future__ import annotations

import logging
import pickle
import socket
import threading
from collections.abc import Callable
from typing import Any

from .throttle import Attempt, Busy, Locked, LoginThrottle, ThrottlePolicy

log = logging.getLogger("mailyard.auth.throttle")

_MAX_MESSAGE = 64 * 1024
REPLY_TIMEOUT = 5.0  # seconds; the supervisor answers in microseconds


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
    supervisor stopped answering."""

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

    def _ask(self, method: str, *args: Any) -> Any:
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
        status, value = pickle.loads(data)
        if status != "ok":
            raise RuntimeError(f"shared throttle: {value}")
        return value

    def reserve(self, ip: str, account: str | None, now: float) -> Attempt | Locked | Busy:
        if not self.fallback:
            self._next += 1
            token = self._next
            try:
                verdict = self._ask("reserve", token, ip, account, now)
            except _Unavailable:
                pass
            else:
                if isinstance(verdict, Attempt):
                    self._tokens[id(verdict)] = token
                return verdict
        return super().reserve(ip, account, now)

    def _settle(self, method: str, attempt: Attempt, now: float) -> bool:
        """Settle a reservation the supervisor made; False if it was not one."""
        token = self._tokens.pop(id(attempt), None)
        if token is None:
            return False
        attempt.settled = True
        try:
            self._ask(method, token, now)
        except _Unavailable:
            return True
        if self.on_settle is not None:
            self.on_settle()
        return True

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

    def record_failure(self, ip: str, account: str | None, now: float) -> None:
        if not self.fallback:
            try:
                return self._ask("record_failure", ip, account, now)
            except _Unavailable:
                pass
        super().record_failure(ip, account, now)

    def record_success(self, ip: str, account: str, now: float) -> None:
        if not self.fallback:
            try:
                return self._ask("record_success", ip, account, now)
            except _Unavailable:
                pass
        super().record_success(ip, account, now)

    def ask_or(self, fallback: Callable[..., Any], method: str, *args: Any) -> Any:
        """Ask the supervisor's counter registered as ``method``; while the
        supervisor does not answer, ``fallback(*args)`` (this process's own)."""
        if not self.fallback:
            try:
                return self._ask(method, *args)
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


class _Unavailable(Exception):
    """The supervisor did not answer."""
