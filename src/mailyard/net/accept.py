"""Accepting connections, and spreading them evenly over the workers of a
multi-process server.

The workers of ``mailyard serve`` (mailyard/workers.py) all accept on the
same listening sockets. A new connection wakes every worker waiting on its
socket and the first to run takes it; asyncio's own accept loop then takes
every connection queued behind it too. So clients that connect together
land on one worker: 10 IMAP clients that started at once all ended up in
the same process, one core serving their whole sessions while the other
idled.

`AcceptShare` is a small table in memory shared by the workers (made by
the supervisor before it forks): for each service, how many connections
each worker holds. Before it accepts, a worker holding more of a service's
connections than the least loaded live worker lets that one take the
connection: it waits ``DEFER_STEP`` and looks again, for at most
``MAX_DEFER`` in all, so a worker that is busy or hung holds no connection
up for longer than that.

`Acceptor` is the accept loop of such a listener, of a listener that
reads PROXY protocol headers (net/proxy_protocol.py), and of every
implicit-TLS listener (imaps, pop3s, smtps, https...). A TLS connection is
counted against the connection caps (net/conncaps.py) as soon as it is
accepted, before its handshake: asyncio calls the session's
``connection_made``, where a plain connection is counted, only once the
handshake is done, and a handshake holds a socket and about 100 KB of
buffers for up to ``HANDSHAKE_TIMEOUT``. A connection over a cap is closed
at once, before any TLS work; one whose handshake fails gives its slot
back, one whose handshake succeeds keeps it for its session: once the
session has admitted itself (its ``connection_made``), the slot is the
session's, even if a stop cancels the accept task before it resumes
(``ConnectionCaps.withdraw``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import select
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from .conncaps import log_refusal
from .tls import log_tls_failure

log = logging.getLogger("mailyard.net")

ACCEPT_BURST = 64  # connections accepted in one go (then other events have their turn)
DEFER_STEP = 0.002  # seconds a busier worker waits before it looks at the others' counts again
MAX_DEFER = 0.05  # seconds a busier worker leaves a connection to the others, at most
GONE = -1  # the count of a worker slot with no live worker
# Seconds a client has for its TLS handshake on an implicit-TLS port (RFC 8446
# sets none; asyncio's default is 60). Its slot is counted meanwhile.
HANDSHAKE_TIMEOUT = 30.0


class AcceptShare:
    """Each worker's number of connections, per service, in shared memory.

    One 32-bit count per (service, worker slot); a worker writes only its
    own, the others only read them (an aligned 32-bit store is atomic).
    The supervisor marks the slots of a worker that ended ``GONE``."""

    def __init__(self, services: Sequence[str], workers: int) -> None:
        self.services = list(services)
        self.workers = workers
        self._map = mmap.mmap(-1, max(1, len(self.services) * workers) * 4)  # MAP_SHARED: seen after fork
        self._counts = memoryview(self._map).cast("i")
        for i in range(len(self._counts)):
            self._counts[i] = GONE

    def load(self, service: str, slot: int) -> WorkerLoad | None:
        """The view of one worker on one service's counts (None: the service
        is not shared among the workers)."""
        if service not in self.services:
            return None
        return WorkerLoad(self._counts, self.services.index(service) * self.workers, self.workers, slot)

    def gone(self, slot: int) -> None:
        """The worker in ``slot`` ended: its connections ended with it."""
        # (the services' counts only: with none shared, the map still has its one word)
        for service in range(len(self.services)):
            self._counts[service * self.workers + slot] = GONE


class WorkerLoad:
    """One worker's count of one service's connections, and the others'."""

    def __init__(self, counts: memoryview, base: int, workers: int, slot: int) -> None:
        self._counts = counts
        self._base = base
        self._workers = workers
        self._slot = slot
        self.active: Callable[[], int] = lambda: 0  # the listener's admitted connections (TLS handshakes too)
        self.opening = 0  # accepted, not yet admitted or refused (PROXY headers, the turn of a plain session)
        self.update()

    def update(self) -> None:
        self._counts[self._base + self._slot] = self.active() + self.opening

    def busier(self) -> bool:
        """Whether another live worker holds clearly fewer of these
        connections: fewer by more than one, and than an eighth of its own
        (so short connections, SMTP's, are not held up for a difference
        that is gone a moment later)."""
        mine = self._counts[self._base + self._slot]
        counts = self._counts[self._base : self._base + self._workers]
        least = min((n for n in counts if n > GONE), default=mine)
        return mine > least + 1 + least // 8


class Admission(Protocol):
    """The connection caps an accept loop counts TLS connections in with
    (net/listener.py `Listener`, net/conncaps.py `ConnectionCaps`)."""

    def refusal(self, ip: str) -> str | None: ...

    def admit(self, connection: Any, ip: str) -> str | None: ...

    def withdraw(self, connection: Any) -> None: ...


# the PROXY protocol's step for one accepted socket: the client's address
# from its header, None to use the socket's peer, False to drop it
SourceOf = Callable[[socket.socket, Any], Awaitable["tuple[str, int] | None | bool"]]


class Acceptor:
    """The accept loop of one listening socket, in the event loop's reader
    callback (as asyncio's own): each accepted socket is handed to asyncio
    with its session, and TLS on an implicit-TLS port, in a task of its own,
    so one slow handshake or PROXY header delays no other client.
    ``factory(source)`` makes the session, with the client's address from a
    PROXY header (``source_of``; None: the socket's own peer). ``caps``:
    count each TLS connection in before its handshake (see the module
    docstring; a plain one is counted by its session). ``load``: take turns
    with the other workers."""

    def __init__(
        self,
        listening: socket.socket,
        factory: Callable[[tuple[str, int] | None], asyncio.Protocol],
        ssl_context: Callable[[], ssl.SSLContext] | None,
        name: str,
        *,
        source_of: SourceOf | None = None,
        caps: Admission | None = None,
        load: WorkerLoad | None = None,
    ) -> None:
        self.listening = listening
        self.factory = factory
        self.ssl_context = ssl_context
        self.name = name
        self.source_of = source_of
        self.caps = caps
        self.load = load
        self._loop = asyncio.get_running_loop()
        self._pending: set[asyncio.Task] = set()
        self._deferred = 0.0  # seconds this worker has left the next connection to the others
        self._later: asyncio.TimerHandle | None = None
        self._closed = False

    def start(self) -> None:
        self._loop.add_reader(self.listening.fileno(), self._ready)

    def close(self) -> None:
        """Stop accepting; the connections being set up are dropped."""
        self._closed = True
        if self._later is not None:
            self._later.cancel()
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self.listening.fileno())
        for task in self._pending:
            task.cancel()

    def _pause(self, seconds: float) -> None:
        self._loop.remove_reader(self.listening.fileno())
        self._later = self._loop.call_later(seconds, self._resume)

    def _resume(self) -> None:
        self._later = None
        if self._closed:
            return
        self.start()
        if _waiting(self.listening):
            self._ready()
        else:
            self._deferred = 0.0  # another worker took it: the next connection has a wait of its own

    def _ready(self) -> None:
        for _ in range(ACCEPT_BURST):
            load = self.load
            if load is not None and self._deferred < MAX_DEFER and load.busier():
                self._deferred += DEFER_STEP
                self._pause(DEFER_STEP)
                return
            try:
                conn, peer = self.listening.accept()
            except (BlockingIOError, InterruptedError):
                self._deferred = 0.0  # (taken by another worker meanwhile)
                return
            except OSError as exc:  # EMFILE and the like: back off a little
                log.warning("%s: accept failed: %s", self.name, exc)
                self._pause(0.1)
                return
            self._deferred = 0.0
            conn.setblocking(False)
            if load is not None:
                load.opening += 1
                load.update()
            task = self._loop.create_task(self._serve(conn, peer))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _serve(self, conn: socket.socket, peer: Any) -> None:
        opening = True  # counted in ``load.opening``
        counted: asyncio.Protocol | None = None  # the session counted in the caps by this loop
        try:
            source: Any = None
            if self.source_of is not None:
                source = await self.source_of(conn, peer)
                if source is False:
                    conn.close()
                    return
            ctx = self.ssl_context() if self.ssl_context else None
            caps = self.caps if ctx is not None else None
            ip = (source or peer or ("",))[0]
            if caps is not None and self._refused(conn, ip, caps.refusal(ip)):
                return  # (before a session is made for it)
            refused: str | None = None
            try:
                protocol = self.factory(source)
                if caps is not None:
                    refused = caps.admit(protocol, ip)  # (the factory ran since the check)
                    if refused is None:
                        counted = protocol
                        self._opened()
                        opening = False
            except Exception:  # a bug, or a library that changed: this connection is dropped, not the loop
                log.exception("%s: no session could be made for a connection from %s", self.name, ip)
                conn.close()
                return  # (what was counted is given back below)
            if self._refused(conn, ip, refused):
                return
            started = self._loop.time()
            try:
                await self._loop.connect_accepted_socket(lambda: protocol, conn, ssl=ctx,
                                                         ssl_handshake_timeout=HANDSHAKE_TIMEOUT if ctx else None)
                counted = None  # the session holds the slot now; its connection_lost gives it back
            except (OSError, ssl.SSLError, ConnectionError, TimeoutError) as exc:
                if ctx is not None:
                    log_tls_failure(log, self.name, ip, exc, self._loop.time() - started, HANDSHAKE_TIMEOUT)
                with contextlib.suppress(OSError):
                    conn.close()
        finally:
            if counted is not None:  # the handshake failed, timed out or was cancelled
                assert self.caps is not None
                # (cancelled after connection_made ran, the session holds the
                # slot: withdraw leaves it counted, its connection_lost releases it)
                self.caps.withdraw(counted)
            if opening:
                self._opened()

    def _refused(self, conn: socket.socket, ip: str, reason: str | None) -> bool:
        """Close ``conn`` if the caps refuse it (``reason``), before any TLS:
        its handshake is the cost the caps spare (one log line, as a refused
        plain session logs)."""
        if reason is None:
            return False
        log_refusal(log, self.name, ip, reason)
        conn.close()
        return True

    def _opened(self) -> None:
        """The connection is no longer ``opening`` (admitted, refused or gone)."""
        if self.load is not None:
            self.load.opening -= 1
            self.load.update()


def _waiting(listening: socket.socket) -> bool:
    """Whether a connection waits on ``listening`` to be accepted (without taking it)."""
    poller = select.poll()
    poller.register(listening.fileno(), select.POLLIN)
    return bool(poller.poll(0))
