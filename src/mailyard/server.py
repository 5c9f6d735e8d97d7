"""The running server (``mailyard serve``): the store, the router, and one
listener per enabled protocol port, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .delivery.router import Router
from .net.listener import Connection, ConnectionLimits, Listener
from .store.api import Store
from .store.sqlite import SQLiteStore

log = logging.getLogger("mailyard")

Session = Callable[["MailServer", Connection], Awaitable[None]]


@dataclass(frozen=True)
class Service:
    """A protocol service: which port of [ports] it uses and how a session runs."""

    name: str  # key in [ports]
    session: Session
    refuse: Callable[[Connection, str], Awaitable[None]] | None = None
    implicit_tls: bool = False


def services() -> list[Service]:
    """Every protocol service this build offers, in start-up order."""
    from .net import imap, pop3, smtp

    return [
        Service("smtp", smtp.smtp_session, smtp.refuse),
        Service("pop3", pop3.pop3_session, pop3.refuse),
        Service("imap", imap.imap_session, imap.refuse),
    ]


class MailServer:
    def __init__(
        self,
        data_dir: Path,
        config: Config,
        store: Store | None = None,
        ephemeral_ports: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.config = config
        self.ephemeral_ports = ephemeral_ports
        self._store = store
        self.listeners: dict[str, Listener] = {}
        self._stopped = asyncio.Event()

    @property
    def store(self) -> Store:
        assert self._store is not None, "server not started"
        return self._store

    def port(self, name: str) -> int:
        """The bound port of a service (useful with ephemeral ports)."""
        return self.listeners[name].bound_port

    async def start(self) -> None:
        from .net.smtp import engine_config

        if self._store is None:
            self._store = SQLiteStore(self.data_dir, self.config.store)
        cfg = self.config
        self.router = Router(self.store, cfg.smtp.max_expansion_depth, cfg.smtp.max_expansion_recipients)
        self.smtp_engine_config = engine_config(self)
        limits = ConnectionLimits(
            cfg.limits.max_connections, cfg.limits.max_connections_per_ip, cfg.limits.idle_timeout
        )
        try:
            for service in services():
                port = getattr(cfg.ports, service.name)
                if port == 0:
                    continue
                if service.implicit_tls:
                    continue  # implicit TLS listeners arrive with the TLS work
                listener = Listener(
                    service.name,
                    cfg.server.bind,
                    0 if self.ephemeral_ports else port,
                    self._bind_session(service.session),
                    limits,
                    refuse=service.refuse,
                )
                await listener.start()
                self.listeners[service.name] = listener
        except BaseException:
            await self.stop()
            raise

    def _bind_session(self, session: Session) -> Callable[[Connection], Awaitable[None]]:
        async def run(conn: Connection) -> None:
            await session(self, conn)

        return run

    async def stop(self) -> None:
        """Stop accepting, let sessions end (SMTP answers 421), finish commits, close the store."""
        grace = self.config.server.shutdown_grace
        await asyncio.gather(*(listener.stop(grace) for listener in self.listeners.values()))
        self.listeners.clear()
        if self._store is not None:
            await self._store.close()
            self._store = None
        self._stopped.set()

    async def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down cleanly."""
        await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        for name, listener in self.listeners.items():
            print(f"  {name:<11} {self.config.server.bind}:{listener.bound_port}", flush=True)
        print("mailyard is running; press Ctrl-C to stop.", flush=True)
        await stop.wait()
        log.info("shutting down")
        print("shutting down...", flush=True)
        await self.stop()
