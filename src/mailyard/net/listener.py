"""asyncio listeners: accept connections, enforce connection limits, time out
silent clients, and hand each connection to a protocol session.

This is the only place that owns listening sockets. A protocol's glue module
(net/smtp.py, net/pop3.py, net/imap.py) supplies a ``SessionFactory``: given a
``Connection`` it returns a coroutine that runs the session to its end. The glue
feeds bytes from ``Connection.read`` to its sans-I/O engine and writes what the
engine returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("mailyard.net")

READ_SIZE = 65536


class ShutdownRequested(Exception):
    """Raised by Connection.read when the server is shutting down; the session
    answers with its protocol's goodbye (SMTP 421, IMAP BYE, POP3 -ERR) and ends."""


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 2000
    max_connections_per_ip: int = 100
    idle_timeout: float = 300.0
    # Seconds to finish a command line once its first byte arrived; unlike
    # the idle timeout, bytes trickling in do not extend it (slowloris).
    command_deadline: float = 120.0
    # Seconds for a whole IMAP literal (APPEND) once its command began.
    literal_deadline: float = 600.0


class CommandClock:
    """When the client's incomplete command began, for the command deadline.

    The idle timeout restarts on every byte, so a client sending one byte
    every few seconds would hold a session (and a connection slot) forever.
    This clock starts when the engine first holds an incomplete unit of
    input (a command line, SMTP DATA, an IMAP literal) and restarts only
    when the engine completes one (``progress`` changes): the client then
    has ``deadline`` seconds in total, however it spaces its bytes.
    """

    __slots__ = ("progress", "started")

    def __init__(self) -> None:
        self.started: float | None = None
        self.progress = -1

    def remaining(self, now: float, partial: bool, progress: int, deadline: float) -> float | None:
        """Seconds left for the incomplete unit; None when there is none (or no deadline)."""
        if not partial or deadline <= 0:
            self.started = None
            return None
        if self.started is None or progress != self.progress:
            self.started = now
            self.progress = progress
        return self.started + deadline - now


class Connection:
    """One accepted client connection, as the protocol glue sees it."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        listener: Listener,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.listener = listener
        peer = writer.get_extra_info("peername") or ("", 0)
        sock = writer.get_extra_info("sockname") or ("", 0)
        self.peer_ip: str = peer[0]
        self.peer_port: int = peer[1]
        self.local_ip: str = sock[0]
        self.local_port: int = sock[1]
        self.tls: bool = writer.get_extra_info("sslcontext") is not None
        self._shutdown = listener.shutdown_event
        self.reading = False  # blocked in read(): shutdown may interrupt it
        self._loop = asyncio.get_running_loop()
        self._read_task: asyncio.Task[Any] | None = None
        self._read_timer: asyncio.TimerHandle | None = None
        self._read_deadline = 0.0
        self._read_expired = False
        self.stuck = False  # the client stopped taking our output (drain timed out)

    @property
    def is_loopback(self) -> bool:
        return self.peer_ip.startswith("127.") or self.peer_ip in ("::1", "::ffff:127.0.0.1")

    async def read(self, timeout: float | None = None) -> bytes:
        """Up to 64 KiB from the client; b"" at end of stream.

        Raises TimeoutError after ``timeout`` (default: the listener's idle
        timeout) without data, and ShutdownRequested when the server stops.
        This is on every session's hot path (one read per command): no extra
        task, and no timer per read either. One timer per connection stays
        armed; a read only moves the deadline later, and the timer re-arms
        itself for the rest when it fires early (asyncio.timeout would add and
        cancel a timer on every read: ~10-20 us a command, bench/pop3.py).
        Shutdown cancels a session blocked here.
        """
        if self._shutdown.is_set():
            raise ShutdownRequested
        limit = self.listener.limits.idle_timeout if timeout is None else timeout
        loop = self._loop
        deadline = loop.time() + limit
        self._read_deadline = deadline
        timer = self._read_timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._read_timer = loop.call_at(deadline, self._read_timer_fired)
        task = self._read_task = asyncio.current_task()
        self.reading = True
        try:
            return await self.reader.read(READ_SIZE)
        except (ConnectionError, OSError, ssl.SSLError):
            return b""
        except asyncio.CancelledError:
            if task is None:
                raise
            if self._read_expired:
                self._read_expired = False
                if task.uncancel() == 0:
                    raise TimeoutError from None  # the caller answers it (BYE, ...)
            if self._shutdown.is_set() and task.uncancel() == 0:
                raise ShutdownRequested from None
            raise
        finally:
            self.reading = False
            self._read_task = None

    def _read_timer_fired(self) -> None:
        self._read_timer = None
        task = self._read_task
        if not self.reading or task is None:
            return  # re-armed by the next read
        now = self._loop.time()
        if self._read_deadline > now:  # a later read moved the deadline
            self._read_timer = self._loop.call_at(self._read_deadline, self._read_timer_fired)
            return
        if getattr(self.reader, "_waiter", True) is None:
            return  # data arrived and the task is about to resume: not a timeout
        self._read_expired = True
        task.cancel()

    def write(self, data: bytes) -> None:
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def drain(self) -> None:
        """Wait until the kernel took what was written (flow control).

        A client that stops reading (a slow-read attack, or a dead peer)
        gets the idle timeout to take our output, then TimeoutError ends the
        session; later drains do not wait again, so its goodbye costs nothing.
        """
        if self.stuck:
            return
        transport = self.writer.transport
        if not transport.get_write_buffer_size() and not transport.is_closing():
            return  # all taken already (the usual case): no timer, no await
        try:
            async with asyncio.timeout(self.listener.limits.idle_timeout):
                await self.writer.drain()
        except TimeoutError:
            self.stuck = True
            raise
        except (ConnectionError, OSError, ssl.SSLError):
            pass

    async def send(self, data: bytes) -> None:
        self.write(data)
        await self.drain()

    async def start_tls(self, context: ssl.SSLContext) -> None:
        """Upgrade to TLS (STARTTLS, RFC 3207 / RFC 2595 / RFC 9051 6.2.1).

        Plaintext the StreamReader buffered after the command is dropped (RFC
        3207 section 4.2: the command-injection attack); asyncio keeps that
        buffer across ``start_tls``, so it is cleared here, after the last
        await before the loop stops reading plaintext. The protocol glue also
        drops what its engine buffered.
        """
        await self.drain()
        buffered = getattr(self.reader, "_buffer", None)
        if isinstance(buffered, bytearray):
            buffered.clear()
        await self.writer.start_tls(context)
        self.tls = True

    async def close(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        with contextlib.suppress(Exception):
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 1 if self.stuck else 5)
        # Output the client never read keeps a closing transport (and its
        # buffer) alive: cut it.
        with contextlib.suppress(Exception):
            if self.writer.transport.get_write_buffer_size():
                self.writer.transport.abort()


SessionFactory = Callable[[Connection], Awaitable[None]]


class Listener:
    """One listening address/port, with limits, running a session per connection."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        session: SessionFactory | None,
        limits: ConnectionLimits,
        ssl_context: Callable[[], ssl.SSLContext] | None = None,
        refuse: Callable[[Connection, str], Awaitable[None]] | None = None,
        protocol_factory: Callable[[Listener], asyncio.Protocol] | None = None,
    ) -> None:
        """Run ``session`` per connection over streams, or, when
        ``protocol_factory`` is given, an asyncio.Protocol per connection
        (net/session_protocol.py: no task switch per read, for the hot SMTP path)."""
        self.name = name
        self.protocol_factory = protocol_factory
        self._protocols: set[Any] = set()
        self.host = host
        self.port = port
        self.session = session
        self.limits = limits
        self.ssl_context = ssl_context
        self.refuse = refuse
        self.shutdown_event = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: dict[asyncio.Task[None], Connection] = {}
        self._per_ip: dict[str, int] = {}

    @property
    def bound_port(self) -> int:
        """The real port (useful when configured as 0: an ephemeral port)."""
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def active(self) -> int:
        return len(self._tasks) + len(self._protocols)

    def admit(self, protocol: Any, ip: str) -> str | None:
        """Count a protocol-style connection in; returns why it is refused, or None."""
        if self.active >= self.limits.max_connections:
            return "too many connections"
        if self._per_ip.get(ip, 0) >= self.limits.max_connections_per_ip:
            return "too many connections from your address"
        self._protocols.add(protocol)
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        return None

    def release(self, protocol: Any, ip: str) -> None:
        if protocol in self._protocols:
            self._protocols.discard(protocol)
            self._release_ip(ip)

    def _release_ip(self, ip: str) -> None:
        left = self._per_ip.get(ip, 1) - 1
        if left:
            self._per_ip[ip] = left
        else:
            self._per_ip.pop(ip, None)

    async def start(self) -> None:
        ctx = self.ssl_context() if self.ssl_context else None
        try:
            if self.protocol_factory is not None:
                factory = self.protocol_factory
                self._server = await asyncio.get_running_loop().create_server(
                    lambda: factory(self),
                    self.host,
                    self.port,
                    ssl=ctx,
                    reuse_address=True,
                    backlog=1024,
                    ssl_handshake_timeout=30 if ctx else None,
                )
            else:
                self._server = await asyncio.start_server(
                    self._accept,
                    self.host,
                    self.port,
                    ssl=ctx,
                    reuse_address=True,
                    backlog=1024,
                    limit=READ_SIZE,
                    ssl_handshake_timeout=30 if ctx else None,
                )
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot listen for {self.name} on {self.host}:{self.port}: {exc.strerror}"
                " (is another server using the port? change [ports] in config.toml)",
            ) from exc
        log.info("%s listening on %s:%d", self.name, self.host, self.bound_port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = Connection(reader, writer, self)
        ip = conn.peer_ip
        over = None
        if len(self._tasks) >= self.limits.max_connections:
            over = "too many connections"
        elif self._per_ip.get(ip, 0) >= self.limits.max_connections_per_ip:
            over = "too many connections from your address"
        if over is not None:
            log.warning("%s: refused %s: %s", self.name, ip, over)
            if self.refuse is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.refuse(conn, over), 5)
            await conn.close()
            return
        self._tasks[task] = conn
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        try:
            await self.session(conn)
        except (ConnectionError, ssl.SSLError, TimeoutError, ShutdownRequested):
            pass
        except Exception:  # a bug in one session must not take the server down
            log.exception("%s: session with %s failed", self.name, ip)
        finally:
            self._tasks.pop(task, None)
            self._release_ip(ip)
            await conn.close()

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def stop(self, grace: float) -> None:
        """Stop accepting, ask sessions to end, wait up to ``grace`` seconds, then cut."""
        await self.stop_accepting()
        self.shutdown_event.set()
        for task, conn in list(self._tasks.items()):
            if conn.reading:
                task.cancel()  # Connection.read turns this into ShutdownRequested
        for protocol in list(self._protocols):
            protocol.shutdown()  # answers its goodbye now, or after the step in progress
        deadline = asyncio.get_running_loop().time() + grace
        while self._protocols and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for protocol in list(self._protocols):
            protocol.abort()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
