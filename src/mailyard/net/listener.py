"""asyncio listeners: accept connections, enforce connection limits, and run
an asyncio.Protocol session per connection (net/session_protocol.py).

This is the only place that owns listening sockets. A protocol's glue module
(net/smtp.py, net/pop3.py, net/imap.py) supplies the protocol factory; the
session feeds bytes from ``data_received`` to its sans-I/O engine and writes
what the engine returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import logs
from .accept import Acceptor, WorkerLoad
from .addresses import AddressSet
from .conncaps import ConnectionCaps
from .proxy_protocol import header_reader

log = logging.getLogger("mailyard.net")


class ShutdownRequested(Exception):
    """Raised into a session step that waits for input (IMAP IDLE) when the
    server is shutting down; the session answers with its protocol's goodbye
    (SMTP 421, IMAP BYE, POP3 -ERR) and ends."""


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


class Listener:
    """One listening address/port, with limits, running a protocol per connection."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        protocol_factory: Callable[[Listener], asyncio.Protocol],
        limits: ConnectionLimits,
        ssl_context: Callable[[], ssl.SSLContext] | None = None,
        sockets: list[socket.socket] | None = None,
        proxy_from: AddressSet | None = None,
        load: WorkerLoad | None = None,
    ) -> None:
        self.name = name
        # Addresses that must send a PROXY protocol header first (net/proxy_protocol.py).
        self.proxy_from = proxy_from
        # Listening sockets bound by the supervisor of a multi-process server
        # (mailyard/workers.py): every worker accepts on the same ones.
        self.sockets = sockets or []
        self.protocol_factory = protocol_factory
        self.host = host
        self.port = port
        self.limits = limits
        self.ssl_context = ssl_context
        self._server: asyncio.Server | None = None
        self._more: list[asyncio.Server] = []  # the other addresses of ``sockets``
        # With our own accept loops (proxy_from, load): the loops, and the listening sockets we bound.
        self._accepting: list[Acceptor] = []
        self._own_socks: list[socket.socket] = []
        self._accept_port = 0
        self.caps = ConnectionCaps(limits.max_connections, limits.max_connections_per_ip)
        # With ``sockets`` shared by several workers: this worker's count of
        # connections among theirs, to take turns accepting (net/accept.py).
        self.load = load
        if load is not None:
            load.active = lambda: self.caps.active

    @property
    def bound_port(self) -> int:
        """The real port (useful when configured as 0: an ephemeral port)."""
        if self._accept_port:
            return self._accept_port
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def active(self) -> int:
        return self.caps.active

    def refusal(self, ip: str) -> str | None:
        """Why a new connection from ``ip`` would be refused now, or None."""
        return self.caps.refusal(ip)

    def admit(self, protocol: Any, ip: str) -> str | None:
        """Count a connection in (net/conncaps.py); returns why it is refused,
        or None (also for one counted in already, before its TLS handshake)."""
        refused = self.caps.admit(protocol, ip)
        if self.load is not None:
            self.load.update()
        return refused

    def release(self, protocol: Any) -> None:
        self.caps.release(protocol)
        if self.load is not None:
            self.load.update()

    def withdraw(self, protocol: Any) -> None:
        """Give back the slot of a connection counted in at its accept whose
        session has not claimed it (net/conncaps.py `ConnectionCaps.withdraw`)."""
        self.caps.withdraw(protocol)
        if self.load is not None:
            self.load.update()

    async def start(self) -> None:
        factory = self.protocol_factory
        if self.proxy_from or self.load is not None or self.ssl_context is not None:
            await self._start_accepting()
            return
        loop = asyncio.get_running_loop()
        if self.sockets:
            for sock in self.sockets:
                server = await loop.create_server(lambda: factory(self), sock=sock, backlog=1024)
                if self._server is None:
                    self._server = server
                else:
                    self._more.append(server)
            log.info("%s accepting on %s:%d", self.name, self.host, self.bound_port)
            return
        try:
            self._server = await loop.create_server(
                lambda: factory(self), self.host, self.port, reuse_address=True, backlog=1024,
            )
        except OSError as exc:
            raise listen_error(self.name, self.host, self.port, exc) from exc
        logs.event(log, logging.INFO, "listening", proto=self.name, ip=self.host, port=self.bound_port)

    async def _start_accepting(self) -> None:
        """Accept with our own loop (`Acceptor`, net/accept.py),
        not asyncio's: to take turns with the other workers (``load``), for
        the PROXY header of ``proxy_from`` addresses, which comes before
        the session and TLS (net/proxy_protocol.py), and on an implicit-TLS
        port to count each connection in from its accept, before its
        handshake (asyncio's loop tells the session only after it)."""
        socks = self.sockets or bind_sockets(self.host, self.port, service=self.name)
        self._own_socks = [] if self.sockets else socks  # (the supervisor's are not ours to close)
        self._accept_port = socks[0].getsockname()[1]
        factory = self.protocol_factory

        def session(source: tuple[str, int] | None) -> asyncio.Protocol:
            protocol = factory(self)
            if source is not None:
                protocol.peer_override = source  # type: ignore[attr-defined]
            return protocol

        source_of = header_reader(self.proxy_from, self.name) if self.proxy_from else None
        for sock in socks:
            acceptor = Acceptor(sock, session, self.ssl_context, self.name, source_of=source_of, caps=self,
                                load=self.load)
            acceptor.start()
            self._accepting.append(acceptor)
        if self.proxy_from:
            logs.event(log, logging.INFO, "listening", proto=self.name, ip=self.host, port=self.bound_port,
                       proxy_protocol="yes")
        elif self.sockets:  # a worker on the supervisor's sockets, as with asyncio's loop below
            log.info("%s accepting on %s:%d", self.name, self.host, self.bound_port)
        else:
            logs.event(log, logging.INFO, "listening", proto=self.name, ip=self.host, port=self.bound_port)

    async def stop_accepting(self) -> None:
        for acceptor in self._accepting:
            acceptor.close()
        self._accepting.clear()
        if self._server is not None:
            self._server.close()
        for sock in self._own_socks:
            sock.close()
        self._own_socks = []
        for server in self._more:
            server.close()

    async def stop(self, grace: float) -> None:
        """Stop accepting, ask sessions to end, wait up to ``grace`` seconds, then cut."""
        await self.stop_accepting()
        # One session that raises (a bug) is logged and cut with the rest at
        # the end: it does not keep the others from their goodbye, nor the
        # server's stop from closing the queue and the store.
        for protocol in self.caps.connections():
            try:
                protocol.shutdown()  # answers its goodbye now, or after the step in progress
            except Exception:
                log.exception("%s: a session failed to say goodbye at stop", self.name)
        deadline = asyncio.get_running_loop().time() + grace
        while self.caps.active and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for protocol in self.caps.connections():
            try:
                protocol.abort()
            except Exception:
                log.exception("%s: a session failed to be cut at stop", self.name)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


def listen_error(service: str, host: str, port: int, exc: OSError) -> OSError:
    """The error of a listener that cannot bind, naming the service, the
    address and the [ports] key (every listener, webmail too, says the same)."""
    return OSError(
        exc.errno,
        f"cannot listen for {service} on {host}:{port}: {exc.strerror or exc}"
        " (is another server using the port? change [ports] in config.toml)",
    )


def bind_sockets(host: str, port: int, backlog: int = 1024, service: str = "the service") -> list[socket.socket]:
    """Listening sockets for ``host``:``port``, one per address it resolves
    to (as ``loop.create_server`` binds them), for a supervisor to hand to
    its workers."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    seen: set[tuple] = set()
    try:
        for family, kind, proto, _name, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and len(infos) > 1:
                # the IPv4 address gets its own socket
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr[0], port, *addr[2:]))
            sock.listen(backlog)
            sock.setblocking(False)
            port = sock.getsockname()[1]  # an ephemeral port: the same for every address
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise listen_error(service, host, port, exc) from exc
    return socks
