"""The HTTP service of ``mailyard serve``: uvicorn running the webmail app
inside the server's own event loop, started and stopped with the other
listeners (it offers the same ``bound_port`` / ``stop(grace)`` as
``net.listener.Listener``, so ``MailServer.port("http")`` works)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import uvicorn

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
    return ConnectionLimits(
        max_connections=cfg.max_connections,
        max_connections_per_ip=cfg.max_connections_per_ip,
        idle_timeout=cfg.idle_timeout,
        command_deadline=cfg.command_deadline,
    )


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
            http=limited_h11(_connection_limits(self.services.config.limits)),
        )
        if self.tls is not None:
            config.load()
            # The front context switches each handshake to the current
            # certificate (reloads, ACME TLS-ALPN-01 answers).
            config.ssl = self.tls.listener_context()
        self._uvicorn = _Server(config)
        self._task = asyncio.create_task(self._uvicorn.serve(sockets=[sock]), name=f"mailyard-{self.name}")
        while not self._uvicorn.started:
            if self._task.done():
                self._task.result()  # raises the start-up error
                raise RuntimeError("HTTP service did not start")
            await asyncio.sleep(0.01)

    async def stop(self, grace: float = 2.0) -> None:
        if self.app is not None:
            self.app.state.web.closing.set()  # ends server-sent event streams
            from .undo import cancel_all

            cancel_all(self.services)  # held sends wait on disk for the next start
            self.app.state.web.pool.close()  # the render worker processes (closing twice is harmless)
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
