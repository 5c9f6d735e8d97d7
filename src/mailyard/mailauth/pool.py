"""The inbound checks in worker processes, so the MX port's event loop keeps
its core.

Why: ``inbound.check_message`` costs Python time per message (about
0.13 ms for 1 KB with two signatures; a message dkimpy must judge, or a
sender whose SPF result is not kept, costs several times that). Run
on the server's threads (``InboundChecker``) it competes with the event
loop for the GIL: each of the many points where a check releases and takes
the GIL back can wait a whole switch interval behind the busy loop, and the
MX port accepted less than half as many messages with the checks on. Here
the checks run in ``processes`` separate interpreters (started with
``spawn`` on first use, each with its own DNS cache, ``dnscache.Resolver``),
on the other cores. The server starts them with ``start`` as it starts
(spawning and importing the libraries takes a second or more, which the
first messages should not wait for).

The event loop speaks to a worker over a socket pair with asyncio (no
thread of the server waits on it): a request is the message and its
envelope, pickled, framed as ``multiprocessing.Connection`` frames (a 4-octet
big-endian length, then the data), so the worker reads it with
``recv_bytes``. In the worker a small thread pool (``threads``) runs the
checks, so one slow DNS answer does not hold up the others.

Bounds and fallbacks:

* at most ``threads`` checks in flight per worker process; more wait for a
  free slot (the SMTP sessions that sent them wait for their answer);
* a message over ``process_max`` octets is checked on the server's own
  threads (``InboundChecker``), as before: copying it through the socket
  would cost more memory than the GIL costs time at that size;
* a check that does not answer within ``task_timeout`` seconds fails (the
  SMTP layer then accepts the message without a verdict, as for any failed
  check) and its worker is stopped; the next check starts a new one;
* a worker that cannot be started or dies: the message is checked on the
  server's threads instead, and a new worker is started for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import pickle
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from .dmarc import organizational_domain
from .dnscache import Resolver
from .inbound import InboundChecker, InboundVerdict, check_message

log = logging.getLogger("mailyard.mailauth")

PROCESS_MAX = 1 << 20
TASK_TIMEOUT = 120.0
_HEADER = struct.Struct("!i")  # multiprocessing.Connection's frame header


class WorkerGone(Exception):
    """The worker process ended (or could not start) with checks in flight."""


def _serve(conn: Connection, nameservers: str, dns_timeout: float, authserv_id: str, threads: int) -> None:
    """A worker process: answer each request ``(id, message, ip, helo,
    reverse_path)`` with ``(id, "ok", verdict)`` or ``(id, "error", text)``.
    The verdict's message is ``b""`` when the checks left it unchanged (no
    forged Authentication-Results removed): the server has it already."""
    resolver = Resolver(nameservers, dns_timeout)
    send_lock = threading.Lock()
    organizational_domain("example.com")  # load the Public Suffix List now, not at the first message
    conn.send_bytes(pickle.dumps((0, "ready", None)))

    def run(req_id: int, message: bytes, ip: str, helo: str, reverse_path: str) -> None:
        try:
            verdict = check_message(resolver, message, authserv_id=authserv_id, ip=ip, helo=helo,
                                    reverse_path=reverse_path)
            if verdict.message is message:
                verdict = replace(verdict, message=b"")
            reply: tuple[Any, ...] = (req_id, "ok", verdict)
        except Exception as exc:  # noqa: BLE001 - reported to the server, which logs it
            reply = (req_id, "error", f"{type(exc).__name__}: {exc}")
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        with send_lock:
            try:
                conn.send_bytes(data)
            except OSError:
                pass  # the server is gone; the read loop below ends too

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mailauth-check") as pool:
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                return
            pool.submit(run, *pickle.loads(data))


class _Worker:
    """One worker process and the event loop's end of its socket."""

    def __init__(self, process: multiprocessing.process.BaseProcess, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, threads: int) -> None:
        self.process = process
        self.reader = reader
        self.writer = writer
        self.slots = asyncio.Semaphore(threads)
        self.pending: dict[int, asyncio.Future[InboundVerdict]] = {}
        self.alive = True
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()  # its libraries are loaded
        self.task = loop.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                (size,) = _HEADER.unpack(await self.reader.readexactly(_HEADER.size))
                req_id, status, value = pickle.loads(await self.reader.readexactly(size))
                if status == "ready":
                    if not self.ready.done():
                        self.ready.set_result(None)
                    continue
                future = self.pending.pop(req_id, None)
                if future is None or future.done():
                    continue
                if status == "ok":
                    future.set_result(value)
                else:
                    future.set_exception(RuntimeError(value))
        except (asyncio.IncompleteReadError, ConnectionError, OSError, pickle.UnpicklingError, ValueError):
            pass
        finally:
            self.stop()

    def send(self, data: bytes) -> None:
        self.writer.write(_HEADER.pack(len(data)))
        self.writer.write(data)

    def stop(self) -> None:
        """End the process; checks in flight fail with ``WorkerGone``."""
        self.alive = False
        if not self.ready.done():
            self.ready.set_exception(WorkerGone("the check worker stopped"))
            self.ready.exception()  # retrieved: nobody may be waiting for it
        for future in self.pending.values():
            if not future.done():
                future.set_exception(WorkerGone("the check worker stopped"))
        self.pending.clear()
        with contextlib.suppress(Exception):
            self.writer.close()
        if self.process.is_alive():
            self.process.kill()
        # reap it off the loop's path: a killed process ends at once
        threading.Thread(target=self.process.join, args=(5,), daemon=True).start()


class CheckPool:
    """``InboundChecker``'s face (``check``, ``close``), with the checks in
    worker processes (see the module docstring)."""

    def __init__(self, nameservers: str, dns_timeout: float, authserv_id: str, *, processes: int = 1,
                 threads: int = 4, process_max: int = PROCESS_MAX, task_timeout: float = TASK_TIMEOUT) -> None:
        self.nameservers = nameservers
        self.dns_timeout = dns_timeout
        self.authserv_id = authserv_id
        self.processes = max(1, processes)
        self.threads = max(1, threads)
        self.process_max = process_max
        self.task_timeout = task_timeout
        # large messages, and any message whose worker is gone
        self.fallback = InboundChecker(Resolver(nameservers, dns_timeout), authserv_id)
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._ids = itertools.count(1)
        self._starting: asyncio.Lock | None = None
        self._closed = False
        self.stats = {"process": 0, "thread": 0, "restarts": 0}

    async def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_serve, args=(child, self.nameservers, self.dns_timeout, self.authserv_id, self.threads),
            name="mailyard-mailauth", daemon=True,
        )
        try:
            process.start()
        finally:
            child.close()
        sock = socket.socket(fileno=os.dup(parent.fileno()))
        parent.close()
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        return _Worker(process, reader, writer, self.threads)

    async def start(self, timeout: float = 30.0) -> None:
        """Start the worker processes now rather than at the first message,
        and wait (at most ``timeout`` seconds) until they have loaded their
        libraries: the server starts serving with its checks ready, and the
        workers' start-up does not compete with the first messages for the
        CPU. A failure is logged (the checks then start them, or fall back)."""
        try:
            while len(self._workers) < self.processes:
                self._workers.append(await self._start())
            await asyncio.wait_for(asyncio.gather(*(w.ready for w in self._workers)), timeout)
        except Exception:
            log.exception("mailauth: the check workers did not start; the checks will retry or use threads")

    async def _worker(self) -> _Worker:
        """The least busy live worker, starting one while there are fewer than ``processes``."""
        self._workers = [w for w in self._workers if w.alive]
        if len(self._workers) < self.processes:
            if self._starting is None:
                self._starting = asyncio.Lock()
            async with self._starting:
                self._workers = [w for w in self._workers if w.alive]
                if len(self._workers) < self.processes:
                    if self._workers or self.stats["process"]:
                        self.stats["restarts"] += 1
                    self._workers.append(await self._start())
        return min(self._workers, key=lambda w: len(w.pending))

    async def check(self, message: bytes, *, ip: str, helo: str, reverse_path: str) -> InboundVerdict:
        if self._closed or len(message) > self.process_max:
            self.stats["thread"] += 1
            return await self.fallback.check(message, ip=ip, helo=helo, reverse_path=reverse_path)
        try:
            worker = await self._worker()
        except Exception:
            log.exception("mailauth: cannot start a check worker; checking in the server process")
            self.stats["thread"] += 1
            return await self.fallback.check(message, ip=ip, helo=helo, reverse_path=reverse_path)
        async with worker.slots:
            if not worker.alive:
                self.stats["thread"] += 1
                return await self.fallback.check(message, ip=ip, helo=helo, reverse_path=reverse_path)
            req_id = next(self._ids)
            future: asyncio.Future[InboundVerdict] = asyncio.get_running_loop().create_future()
            worker.pending[req_id] = future
            worker.send(pickle.dumps((req_id, message, ip, helo, reverse_path), protocol=pickle.HIGHEST_PROTOCOL))
            self.stats["process"] += 1
            try:
                verdict = await asyncio.wait_for(future, self.task_timeout)
            except TimeoutError:
                log.warning("mailauth: a check took more than %.0f s; its worker is restarted", self.task_timeout)
                worker.stop()
                raise
            except WorkerGone:
                log.warning("mailauth: the check worker stopped; checking in the server process")
                self.stats["thread"] += 1
                return await self.fallback.check(message, ip=ip, helo=helo, reverse_path=reverse_path)
            finally:
                worker.pending.pop(req_id, None)
        if not verdict.message:
            verdict = replace(verdict, message=message)
        return verdict

    def close(self) -> None:
        self._closed = True
        for worker in self._workers:
            worker.stop()
        self._workers.clear()
        self.fallback.close()
