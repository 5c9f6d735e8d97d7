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
checks, so one slow DNS answer does not hold up the others. The answer
comes back in the same frames, the verdict as plain values (``_pack``),
read by a protocol on the event loop (``_Worker``) that rebuilds it and
wakes its check; a check's bound is a timer on its answer.

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
import itertools
import logging
import multiprocessing
import os
import pickle
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from multiprocessing.connection import Connection
from typing import Any

from .arc import ARCResult
from .dkim import DKIMResult
from .dmarc import DMARCResult, Policy, organizational_domain
from .dnscache import Resolver
from .inbound import InboundChecker, InboundVerdict, check_message
from .spf import SPFResult

log = logging.getLogger("mailyard.mailauth")

PROCESS_MAX = 1 << 20
TASK_TIMEOUT = 120.0
_HEADER = struct.Struct("!i")  # multiprocessing.Connection's frame header


class WorkerGone(Exception):
    """The worker process ended (or could not start) with checks in flight."""


# The verdict travels as plain values: a tuple of each result's fields in
# their declared order (``_pack``), rebuilt with the result classes' own
# constructors (``_unpack``). Unpickled as dataclasses (a class, a new object
# and a field-name dictionary per result) it takes the event loop about
# 10 µs per check; as values and constructors about 6.
_NAMES = {cls: tuple(f.name for f in fields(cls)) for cls in (SPFResult, DKIMResult, DMARCResult, Policy, ARCResult)}
_PUBLISHED = _NAMES[DMARCResult].index("published")  # the DMARC record: a Policy, itself sent as its values


def _values(result: Any) -> tuple[Any, ...]:
    return tuple([getattr(result, name) for name in _NAMES[type(result)]])


def _pack(verdict: InboundVerdict) -> tuple[Any, ...]:
    """``verdict`` as plain values, for ``_unpack`` in the server."""
    dmarc_values: list[Any] | None = None
    if verdict.dmarc is not None:
        dmarc_values = list(_values(verdict.dmarc))
        if verdict.dmarc.published is not None:
            dmarc_values[_PUBLISHED] = _values(verdict.dmarc.published)
    return (verdict.message, verdict.header, _values(verdict.spf), _values(verdict.helo),
            [_values(r) for r in verdict.dkim], dmarc_values,
            None if verdict.arc is None else _values(verdict.arc))


def _unpack(values: tuple[Any, ...]) -> InboundVerdict:
    """The ``InboundVerdict`` that ``_pack`` sent, equal to the worker's."""
    message, header, spf, helo, dkim, dmarc_values, arc = values
    dmarc = None
    if dmarc_values is not None:
        if dmarc_values[_PUBLISHED] is not None:
            dmarc_values[_PUBLISHED] = Policy(*dmarc_values[_PUBLISHED])
        dmarc = DMARCResult(*dmarc_values)
    return InboundVerdict(message, header, SPFResult(*spf), SPFResult(*helo), [DKIMResult(*r) for r in dkim],
                          dmarc, None if arc is None else ARCResult(*arc))


def _serve(conn: Connection, nameservers: str, dns_timeout: float, authserv_id: str, threads: int) -> None:
    """A worker process: answer each request ``(id, message, ip, helo,
    reverse_path)`` with ``(id, "ok", verdict)`` (the verdict as ``_pack``
    gives it) or ``(id, "error", text)``. The verdict's message is ``b""``
    when the checks left it unchanged (no forged Authentication-Results
    removed): the server has it already."""
    resolver = Resolver(nameservers, dns_timeout)
    send_lock = threading.Lock()
    organizational_domain("example.com")  # load the Public Suffix List now, not at the first message
    conn.send_bytes(pickle.dumps((0, "ready", None)))

    def run(req_id: int, message: bytes, ip: str, helo: str, reverse_path: str) -> None:
        try:
            verdict = check_message(resolver, message, authserv_id=authserv_id, ip=ip, helo=helo,
                                    reverse_path=reverse_path)
            if verdict.message is message:
                verdict.message = b""
            reply: tuple[Any, ...] = (req_id, "ok", _pack(verdict))
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


def _time_out(future: asyncio.Future[Any]) -> None:
    """A check's bound (``task_timeout``) has passed without its answer."""
    if not future.done():
        future.set_exception(TimeoutError())


class _Worker(asyncio.Protocol):
    """One worker process and the event loop's end of its socket. The
    replies are read as a protocol: each chunk the loop reads is cut into
    frames at once and each answer set on its check's future, with no
    stream reader, reading task or wake-up of it between the socket and
    the waiting check."""

    def __init__(self, process: multiprocessing.process.BaseProcess, threads: int) -> None:
        self.process = process
        self.transport: asyncio.Transport | None = None
        self.slots = asyncio.Semaphore(threads)
        self.pending: dict[int, asyncio.Future[InboundVerdict]] = {}
        self.alive = True
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # its libraries are loaded
        self._buffer = bytearray()  # the start of a frame not whole yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        try:
            while len(buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(buffer)
                if size < 0:
                    raise ValueError(f"a frame of {size} octets")
                end = _HEADER.size + size
                if len(buffer) < end:
                    break
                reply = pickle.loads(buffer[_HEADER.size:end])
                del buffer[:end]
                self._answer(*reply)
        except Exception:  # noqa: BLE001 - a reply that cannot be read: the worker is stopped, its checks fall back
            log.exception("mailauth: an unreadable reply from the check worker; it is restarted")
            self.stop()

    def _answer(self, req_id: int, status: str, value: Any) -> None:
        if status == "ready":
            if not self.ready.done():
                self.ready.set_result(None)
            return
        # left in pending until answered: a reply _unpack cannot read (the
        # exception stops the worker) leaves its check to stop()'s fallback
        future = self.pending.get(req_id)
        if future is not None and not future.done():
            if status == "ok":
                future.set_result(_unpack(value))
            else:
                future.set_exception(RuntimeError(value))
        self.pending.pop(req_id, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop()

    def send(self, data: bytes) -> None:
        # one write, so one send(2) for the frame rather than one for its header and one for its data
        assert self.transport is not None
        self.transport.write(_HEADER.pack(len(data)) + data)

    def stop(self) -> None:
        """End the process; checks in flight fail with ``WorkerGone``."""
        if not self.alive:
            return
        self.alive = False
        if not self.ready.done():
            self.ready.set_exception(WorkerGone("the check worker stopped"))
            self.ready.exception()  # retrieved: nobody may be waiting for it
        for future in self.pending.values():
            if not future.done():
                future.set_exception(WorkerGone("the check worker stopped"))
        self.pending.clear()
        if self.transport is not None:
            self.transport.close()
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
        worker = _Worker(process, self.threads)
        try:
            await asyncio.get_running_loop().create_connection(lambda: worker, sock=sock)
        except BaseException:
            sock.close()
            worker.stop()
            raise
        return worker

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
            loop = asyncio.get_running_loop()
            future: asyncio.Future[InboundVerdict] = loop.create_future()
            worker.pending[req_id] = future
            worker.send(pickle.dumps((req_id, message, ip, helo, reverse_path), protocol=pickle.HIGHEST_PROTOCOL))
            self.stats["process"] += 1
            # the bound is a timer on the answer's future itself (asyncio.wait_for
            # would add a future and a callback hop to every check)
            timer = loop.call_later(self.task_timeout, _time_out, future)
            try:
                verdict = await future
            except TimeoutError:
                log.warning("mailauth: a check took more than %.0f s; its worker is restarted", self.task_timeout)
                worker.stop()
                raise
            except WorkerGone:
                log.warning("mailauth: the check worker stopped; checking in the server process")
                self.stats["thread"] += 1
                return await self.fallback.check(message, ip=ip, helo=helo, reverse_path=reverse_path)
            finally:
                timer.cancel()
                worker.pending.pop(req_id, None)
        if not verdict.message:
            verdict.message = message  # _unpack built this verdict for this check alone: set in place
        return verdict

    def close(self) -> None:
        self._closed = True
        for worker in self._workers:
            worker.stop()
        self._workers.clear()
        self.fallback.close()
