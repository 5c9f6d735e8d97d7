"""Worker processes for the heavy part of showing mail: MIME parsing for
display, HTML sanitising, HTML to text, building an outgoing message.

Why: the HTTP service shares its event loop with SMTP, IMAP and POP3, and
anyone can mail a message that is costly to parse or sanitise (a million MIME
parts; tens of thousands of nested elements, which the sanitiser handles in
time quadratic in the depth). Run on the loop, opening such a message stops
every protocol; run in a thread, it still holds the GIL and the memory of the
server. Here each task runs in a separate process with

* a time bound (``timeout``): past it the worker is killed (SIGKILL) and a new
  one is started for the next task, and the caller gets ``TooComplex``;
* a memory bound (``memory_limit``): ``RLIMIT_AS`` set in the worker, so an
  allocation beyond it fails there with ``MemoryError`` (``TooComplex`` for
  the caller) instead of growing the server;
* at most ``workers`` tasks at a time; others wait their turn.

Each worker belongs to one thread of a small thread pool: the thread sends
the task over a pipe and waits for the answer with a deadline, so the event
loop only awaits a future. A task's function and arguments are pickled, so
the function must be importable by name (a module-level function).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger("mailyard.web")

DEFAULT_WORKERS = 2
DEFAULT_TIMEOUT = 10.0
DEFAULT_MEMORY = 768 * 1024 * 1024


class TooComplex(Exception):
    """The task ran out of time or memory, or its input is past a
    complexity limit: the message cannot be shown (it can be downloaded)."""


class _Failed(Exception):
    """The task raised an ordinary exception in the worker (a bug, not the input's size)."""


def _limit_memory(budget: int) -> None:
    """RLIMIT_AS of this process: what it maps now plus ``budget``."""
    try:
        import resource

        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = mapped + budget
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, OSError, ValueError):  # not Linux: time bound only
        log.warning("web worker: no memory limit on this system")


def _serve(conn: Connection, memory_budget: int, preload: tuple[str, ...]) -> None:
    """The worker's loop: receive (function, args), send ("ok", result) or a failure."""
    import importlib

    for name in preload:
        importlib.import_module(name)
    _limit_memory(memory_budget)
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, Any] = ("ok", fn(*args))
        except TooComplex as exc:
            reply = ("complex", str(exc))
        except (MemoryError, RecursionError) as exc:
            reply = ("complex", f"{type(exc).__name__} while preparing the message")
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        del fn, args
        try:
            conn.send(reply)
        except MemoryError:
            conn.send(("complex", "the result is too large"))


class _Worker:
    def __init__(self, ctx: Any, memory_budget: int, preload: tuple[str, ...]) -> None:
        parent, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, memory_budget, preload),
                                   name="mailyard-web-worker", daemon=True)
        self.process.start()
        child.close()
        self.conn: Connection = parent

    def call(self, fn: Callable[..., Any], args: tuple, timeout: float) -> Any:
        """Run one task; kill the worker (the caller drops it) on timeout or death."""
        self.conn.send((fn, args))
        if not self.conn.poll(timeout):
            raise TimeoutError
        status, value = self.conn.recv()
        if status == "ok":
            return value
        if status == "complex":
            raise TooComplex(value)
        raise _Failed(value)

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)


class RenderPool:
    """Up to ``workers`` worker processes, started on first use (see the
    module docstring). ``run`` is the only entry point; ``close`` ends them."""

    def __init__(self, workers: int = DEFAULT_WORKERS, timeout: float = DEFAULT_TIMEOUT,
                 memory_limit: int = DEFAULT_MEMORY,
                 preload: tuple[str, ...] = ("mailyard.web.render",)) -> None:
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.preload = preload
        # spawn: a fresh interpreter, not a fork of a process running an
        # event loop and threads
        self._ctx = multiprocessing.get_context("spawn")
        self._threads = ThreadPoolExecutor(max_workers=max(1, workers),
                                           thread_name_prefix="mailyard-web-render")
        self._local = threading.local()
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a worker process. Raises ``TooComplex`` when the
        task outran the time or memory bound or refused its input; re-raises
        nothing else from the worker (an error there is logged and reported as
        ``TooComplex`` too, so a page can still offer the download)."""
        if self._closed:
            raise TooComplex("the server is stopping")
        future = self._threads.submit(self._call, fn, args)
        # a cancelled request leaves the task to finish (or time out) in its thread
        return await asyncio.wrap_future(future)

    def _call(self, fn: Callable[..., Any], args: tuple) -> Any:
        worker: _Worker | None = getattr(self._local, "worker", None)
        if worker is None or not worker.process.is_alive():
            if worker is not None:
                self._drop(worker)
            with self._lock:
                if self._closed:
                    raise TooComplex("the server is stopping")
                worker = _Worker(self._ctx, self.memory_limit, self.preload)
                self._workers.add(worker)
            self._local.worker = worker
        try:
            return worker.call(fn, args, self.timeout)
        except TimeoutError:
            log.warning("web worker: %s took more than %.0f s; stopped", getattr(fn, "__name__", fn), self.timeout)
            self._drop(worker)
            raise TooComplex(f"preparing it took more than {self.timeout:.0f} seconds") from None
        except (EOFError, OSError, BrokenPipeError):
            self._drop(worker)
            raise TooComplex("the worker preparing it stopped") from None
        except _Failed as exc:
            log.error("web worker: %s failed: %s", getattr(fn, "__name__", fn), exc)
            raise TooComplex("it could not be prepared for display") from None

    def _drop(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._workers.discard(worker)
        if getattr(self._local, "worker", None) is worker:
            self._local.worker = None

    def close(self) -> None:
        """Kill the workers; tasks still running end with ``TooComplex``."""
        with self._lock:
            self._closed = True
            workers = list(self._workers)
            self._workers.clear()
        for worker in workers:
            worker.kill()
        self._threads.shutdown(wait=False, cancel_futures=True)
