"""The HTTP service of ``mailyard serve``: uvicorn running the webmail app
inside the server's own event loop, started and stopped with the other
listeners (it offers the same ``bound_port`` / ``stop(grace)`` as
``net.listener.Listener``, so ``MailServer.port("http")`` works).

On https, uvicorn gets no listening socket: the accept loop of the mail
ports (net/accept.py `Acceptor`) accepts, counts each connection against
the ``[limits]`` caps before its TLS handshake (uvicorn's protocol learns
of a connection only after it) and hands it, TLS and all, to uvicorn's
protocol."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import uvicorn

from ..net.accept import Acceptor
from ..net.listener import ConnectionLimits, listen_error
from .limits import limited_h11

if TYPE_CHECKING:
    from ..config import LimitsConfig
    from ..net.tls import ReloadableTLS
    from ..services import Services

log = logging.getLogger("mailyard.web")


class _Server(uvicorn.Server):
    # mailyard serve owns SIGTERM/SIGINT; uvicorn must not take them over.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _connection_limits(cfg: LimitsConfig) -> ConnectionLimits:
    """The ``[limits]`` of the HTTP ports, whole: unlike a mail port, whose
    caps each worker of a multi-process server keeps its share of (server.py),
    the webmail is served by one worker (workers.py ``WEB``)."""
    return ConnectionLimits(
        max_connections=cfg.max_connections,
        max_connections_per_ip=cfg.max_connections_per_ip,
        idle_timeout=cfg.idle_timeout,
        command_deadline=cfg.command_deadline,
    )


def _session_factory(config: uvicorn.Config, server: uvicorn.Server,
                     protocol: type[asyncio.Protocol]) -> Callable[[object], asyncio.Protocol]:
    """What makes uvicorn's protocol for a connection our accept loop took,
    as uvicorn's own ``Server.startup`` makes it. These are uvicorn's
    internals (its tested versions: pyproject.toml), so they are all read,
    and the protocol's constructor checked against the arguments it will
    get, here, once, at start: a uvicorn that changed them stops the start
    with this error rather than failing each connection."""
    try:
        made = config.http_protocol_class
        server_state = server.server_state
        app_state = server.lifespan.state
    except AttributeError as exc:
        raise RuntimeError(f"uvicorn {uvicorn.__version__} does not offer what the https accept loop "
                           f"needs ({exc}); install a version pyproject.toml allows") from exc
    if made is not protocol:
        raise RuntimeError(f"uvicorn {uvicorn.__version__} serves {made!r}, not the protocol it was given")
    try:  # the constructor's arguments, as uvicorn's Server.startup passes them
        inspect.signature(protocol).bind(config=config, server_state=server_state, app_state=app_state)
    except TypeError as exc:
        raise RuntimeError(f"uvicorn {uvicorn.__version__} makes its protocol with other arguments ({exc}); "
                           "install a version pyproject.toml allows") from exc

    def session(_source: object) -> asyncio.Protocol:
        return protocol(config=config, server_state=server_state, app_state=app_state)  # type: ignore[call-arg]

    return session


class HTTPService:
    """The webmail on one port: plain HTTP, or HTTPS when given ``tls`` (the
    server's reloadable certificate, net/tls.py: a renewal applies to the
    next handshake). ``app`` may be shared by the HTTP and HTTPS services."""

    def __init__(self, services: Services, host: str, port: int, sock: socket.socket | None = None,
                 *, tls: ReloadableTLS | None = None, app: Any = None) -> None:
        self.name = "https" if tls is not None else "http"
        self.tls = tls
        self.services = services
        self.host = host
        self.port = port
        # A listening socket bound by the supervisor of a multi-process server.
        self._bound = sock
        self.bound_port = 0
        self._task: asyncio.Task | None = None
        self._uvicorn: _Server | None = None
        self._acceptor: Acceptor | None = None  # https: our accept loop, not uvicorn's
        self.app: Any = app

    async def start(self) -> None:
        from .app import create_app

        if self.app is None:
            self.app = create_app(self.services)
        if not getattr(self.app.state, "resumed", False):
            # messages held for undo send when the server stopped (web/undo.py)
            from .undo import resume

            self.app.state.resumed = True
            resume(self.services)
        if self._bound is not None:
            sock = self._bound
        else:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, self.port))
            except OSError as exc:
                sock.close()
                raise listen_error(f"{self.name} (webmail)", self.host, self.port, exc) from exc
            sock.listen(128)
        sock.setblocking(False)
        self.bound_port = sock.getsockname()[1]
        protocol = limited_h11(_connection_limits(self.services.config.limits), self.name)
        config = uvicorn.Config(
            self.app,
            loop="none",
            lifespan="off",
            log_level="warning",
            # no handlers of uvicorn's own: its records reach the root
            # logger, in the server's one format (mailyard/logs.py)
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
            server_header=False,
            # X-Forwarded-* from [http] trusted_proxies only: web/transport.py
            proxy_headers=False,
            # [limits] connection caps and request-head deadline (web/limits.py)
            http=protocol,
            # No WebSocket: an upgrade would hand the connection to another
            # protocol, and its slot would never be given back.
            ws="none",
        )
        server = self._uvicorn = _Server(config)
        # https: uvicorn serves no socket of its own (see the module docstring)
        self._task = asyncio.create_task(server.serve(sockets=[] if self.tls else [sock]),
                                         name=f"mailyard-{self.name}")
        while not server.started:
            if self._task.done():
                self._task.result()  # raises the start-up error
                raise RuntimeError("HTTP service did not start")
            await asyncio.sleep(0.01)
        if self.tls is not None:
            try:
                session = _session_factory(config, server, protocol)
            except RuntimeError:
                await self.stop()
                if self._bound is None:
                    sock.close()  # (bound here; no accept loop holds it to close it)
                raise
            # The front context switches each handshake to the current
            # certificate (reloads, ACME TLS-ALPN-01 answers).
            self._acceptor = Acceptor(sock, session, self.tls.listener_context, self.name,
                                      caps=protocol.caps)  # type: ignore[attr-defined]
            self._acceptor.start()

    async def stop(self, grace: float = 2.0) -> None:
        if self.app is not None:
            self.app.state.web.closing.set()  # ends server-sent event streams
            from .undo import cancel_all

            cancel_all(self.services)  # held sends wait on disk for the next start
            self.app.state.web.pool.close()  # the render worker processes (closing twice is harmless)
        if self._acceptor is not None:
            self._acceptor.close()  # (connections in their handshake are dropped)
            self._acceptor.listening.close()
            self._acceptor = None
        if self._uvicorn is None or self._task is None:
            return
        self._uvicorn.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=grace + 3)
        except TimeoutError:
            self._uvicorn.force_exit = True
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        except Exception:
            log.exception("HTTP service stopped with an error")
        self._uvicorn = None
        self._task = None
