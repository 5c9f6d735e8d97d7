"""The Prometheus endpoint: ``GET /metrics`` on its own port (``[metrics]
listen``, loopback by default), apart from the webmail port so it is never
exposed with it.

A deliberately small HTTP/1.1 server (RFC 9112): one request per
connection, a bounded request head read under a deadline, ``Connection:
close``. The body is mailyard/metrics.py's exposition with the shared state
read at scrape time: the queue's figures counted by the store
(``Store.queue_stats``, never the entries themselves) and the store's size
on disk, walked in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

from .. import logs, metrics
from ..store.api import PENDING, Store

log = logging.getLogger("mailyard.net")

MAX_HEAD = 8192
READ_DEADLINE = 10.0


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9154`` for IPv6) -> (host, port); ValueError if malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"[metrics] listen must be host:port, not {listen!r}")
    return host.strip("[]"), int(port)


def _dir_bytes(root: Path) -> int:
    total = 0
    for dirpath, dirs, files in os.walk(root):
        if dirpath == str(root) and "run" in dirs:
            dirs.remove("run")  # the processes' run area (metrics files), not the store
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


async def snapshot(store: Store, store_dir: Path) -> metrics.Snapshot:
    """The queue and store figures, read now."""
    queue = await store.queue_stats()  # counted by the store, not read entry by entry
    size = await asyncio.get_running_loop().run_in_executor(None, _dir_bytes, store_dir)
    return metrics.Snapshot(
        queue_messages=queue.entries,
        queue_recipients=queue.recipients.get(PENDING, 0),
        queue_oldest_seconds=max(0.0, time.time() - queue.oldest) if queue.oldest is not None else 0.0,
        store_bytes=size,
    )


class MetricsListener:
    """Serves ``/metrics``; ``bound_port`` and ``stop()`` like the other listeners."""

    def __init__(self, store: Store, store_dir: Path, host: str, port: int) -> None:
        self.store = store
        self.store_dir = store_dir
        self.host = host
        self.port = port
        self._server: asyncio.AbstractServer | None = None
        self.bound_port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)
        self.bound_port = self._server.sockets[0].getsockname()[1]
        logs.event(log, logging.INFO, "listening", proto="metrics", ip=self.host, port=self.bound_port)

    async def stop(self, grace: float = 0.0) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), max(grace, 1.0))
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_DEADLINE)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            if len(head) > MAX_HEAD:
                return
            method, _, rest = head.partition(b" ")
            target = rest.split(b" ", 1)[0]
            path = target.split(b"?", 1)[0]
            if method not in (b"GET", b"HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET /metrics\n"
            elif path != b"/metrics":
                status, ctype, body = "404 Not Found", "text/plain", b"GET /metrics\n"
            else:
                snap = await snapshot(self.store, self.store_dir)
                status, ctype, body = "200 OK", metrics.CONTENT_TYPE_LATEST, metrics.exposition(snap)
            headers = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                       "Connection: close\r\n\r\n").encode()
            writer.write(headers + (b"" if method == b"HEAD" else body))
            await writer.drain()
        except Exception:
            log.exception("metrics request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
