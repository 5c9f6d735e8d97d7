"""``mailyard serve`` on every core: a supervisor process and N workers.

One asyncio process saturates one core; the store (SQLite in WAL mode plus
segment files) can be shared by several processes. So with ``[server]
workers`` above 1 (0, the default, means one per available core):

- the supervisor binds every listening socket (SMTP, submission, SMTPS,
  IMAP, IMAPS, POP3, POP3S, HTTP), prepares the store once (schema
  migration, spool sweep), then forks the workers; it opens no store and
  runs no event loop, so forking is safe;
- each worker is a whole ``MailServer`` (server.py) over the inherited
  sockets: the kernel hands each new connection to one of the workers
  waiting in accept(); each opens the store, whose writes SQLite's write
  lock orders across processes (store/blobs.py ``follow``);
- worker 0 also runs what must run once: the outbound queue runner and the
  store's background indexing and compaction (the others announce new
  queue entries to it), and the webmail, whose sessions live in the
  memory of the process that made them;
- a commit in one worker wakes the listeners (IMAP IDLE, webmail) of every
  other through a datagram socket per worker (store/notify.py);
- the supervisor keeps the one login throttle and answers the workers'
  calls (auth/throttle_shared.py); the POP3 maildrop lock is an flock()
  (net/pop3.py) and \\Recent is claimed in a store transaction, so both hold
  across workers;
- each worker enforces its share of the ``[limits]`` connection caps
  (rounded up), so the server as a whole keeps to them; a client whose
  connections the kernel happens to give mostly to one worker meets that
  worker's share first;
- SIGTERM/SIGINT to the supervisor: every worker drains as a single server
  does (IMAP BYE, SMTP 421), then the supervisor exits 0; SIGHUP: every
  worker reloads its certificate; a worker that dies is started again (a
  worker that dies within a second of starting, after a pause), and the
  kernel kills the workers if the supervisor itself is killed.

``workers = 1`` runs today's single process, with no supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import Config

# The webmail listeners: served by worker 0 only.
WEB = ("http", "https")

log = logging.getLogger("mailyard")

RESTART_PAUSE = 1.0  # seconds before restarting a worker that died young
YOUNG = 1.0  # a worker dying within this many seconds of its start "died young"
GIVE_UP = 5  # a worker that died young this many times in a row: the server stops (status 1)
KILL_AFTER = 15.0  # seconds past shutdown_grace before a draining worker is killed
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_M_ARENA_MAX = -8  # <malloc.h>
# glibc malloc arenas per process (its default: 8 per core).
MALLOC_ARENAS = 2


def worker_count(cfg: Config) -> int:
    """``[server] workers``, with 0 meaning one per core this process may use."""
    if cfg.server.workers > 0:
        return cfg.server.workers
    count = getattr(os, "process_cpu_count", None)
    cores = count() if count is not None else None
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count()
    return max(1, cores or 1)


def serve(data_dir: Path, cfg: Config, runner: Callable[[Any], Any] = asyncio.run) -> int:
    """Run ``mailyard serve`` until SIGTERM/SIGINT; returns the exit status."""
    from .server import MailServer

    limit_malloc_arenas()

    count = worker_count(cfg)
    if count <= 1 or not hasattr(os, "fork"):
        runner(MailServer(data_dir, cfg).serve_forever())
        return 0
    return Supervisor(data_dir, cfg, count, runner).run()


def limit_malloc_arenas(count: int = MALLOC_ARENAS) -> None:
    """Cap glibc's malloc arenas for this process and the workers it forks.

    glibc gives threads that allocate at the same time arenas of their own,
    and memory freed in an arena stays mapped while any live allocation
    pins its pages. The server's short-lived thread work (argon2 password
    checks, store reads and writes) then leaves fragments in many arenas
    while the sessions it served live on: with 1,000 IDLE connections the
    memory per connection more than doubled (24 KiB against 10 KiB with two
    arenas, `make bench` imap). The threads spend most of their time in C
    with the GIL released or waiting for it, so two arenas cost no
    measurable contention. A MALLOC_ARENA_MAX set in the environment wins.
    """
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.mallopt(_M_ARENA_MAX, count)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator has its own policy


def _die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent dies (Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class _Slot:
    """One worker position; its worker is started again when it dies."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.pid = 0
        self.started = 0.0
        self.restart_at: float | None = 0.0  # monotonic time to (re)start; None: running
        self.young_deaths = 0  # in a row
        self.conn: socket.socket | None = None  # the supervisor's end of the throttle pair


class Supervisor:
    """Binds the sockets, forks the workers, restarts them, relays signals."""

    def __init__(self, data_dir: Path, cfg: Config, count: int, runner: Callable[[Any], Any]) -> None:
        self.data_dir = Path(data_dir)
        self.cfg = cfg
        self.count = count
        self.runner = runner
        self.slots = [_Slot(i) for i in range(count)]
        self.sockets: dict[str, list[socket.socket]] = {}
        self.pid = os.getpid()
        self.restarts = 0
        self.failed = False  # a worker kept failing at start: stop, exit status 1

    # --- preparation -----------------------------------------------------------------
    def _prepare(self) -> None:
        from .net.listener import bind_sockets
        from .server import FD_RESERVE, MailServer, protocol_services, raise_fd_limit
        from .store import open_store
        from .store.spool import MessageSpool

        cfg = self.cfg
        # The certificate (made here if need be, once, not by N workers at once)
        # and the configuration's TLS files are checked before anything starts.
        MailServer(self.data_dir, cfg)._load_tls()

        async def migrate() -> None:
            store = open_store(self.data_dir, cfg.store, background=False)
            await store.close()

        asyncio.run(migrate())  # schema creation/migration, once; no thread is left
        stray = MessageSpool(self.data_dir / "spool").sweep()
        if stray:
            log.info("removed %d stray spool file(s)", stray)
        services = [svc.name for svc in protocol_services() if getattr(cfg.ports, svc.name)]
        raise_fd_limit(len(services) * cfg.limits.max_connections + FD_RESERVE)
        for name in [*services, "http", "https"]:
            port = getattr(cfg.ports, name)
            if port:
                self.sockets[name] = bind_sockets(
                    cfg.server.bind, port, service=f"{name} (webmail)" if name in WEB else name)
        # Import what every worker runs before forking: the pages are shared.
        from .net import imap, pop3, smtp  # noqa: F401

        if cfg.ports.http or cfg.ports.https:
            from .web import app, service  # noqa: F401
        if cfg.ports.managesieve or cfg.ports.managesieve_tls:
            from .net import managesieve  # noqa: F401
        # The objects made so far are kept for good: moved out of the
        # collector's reach, a worker's collections never write to (and so
        # copy) the pages it shares with the others.
        gc.freeze()

    # --- the supervisor's loop -------------------------------------------------------
    def run(self) -> int:
        from .auth.throttle_shared import ThrottleServer
        from .net.accept import AcceptShare
        from .net.login import throttle_from_config
        from .spam.limits import SendLimiter
        from .spam.rates import RateLimiter, rate_policy_from_config
        from .store.notify import make_slots

        try:
            self._prepare()
        except BaseException:
            self._close_sockets()
            raise
        self.notes = make_slots(self.count)
        # every worker accepts on every mail port (not webmail: one worker serves it)
        self.accept_share = AcceptShare([n for n in self.sockets if n not in WEB], self.count)
        # The login throttle, the MX port's rates and the accounts' submission
        # limits: one of each for all workers.
        rates = RateLimiter(rate_policy_from_config(self.cfg.spam))
        self.throttle = ThrottleServer(throttle_from_config(self.cfg.auth, self.cfg.store),
                                       extra={"spam_rate": rates.hit, "spam_send": SendLimiter().check})
        self.selector = selectors.DefaultSelector()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self._wake_fds = (wake_r, wake_w)
        self.selector.register(wake_r, selectors.EVENT_READ, None)
        pending: list[int] = []
        old_wakeup = signal.set_wakeup_fd(wake_w)
        handlers = {}
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            handlers[sig] = signal.signal(sig, lambda s, _f: pending.append(s))
        for name, socks in self.sockets.items():
            port = socks[0].getsockname()[1]
            print(f"  {name:<11} {self.cfg.server.bind}:{port}", flush=True)
        try:
            for slot in self.slots:
                self._start(slot)
            print(f"mailyard is running with {self.count} worker processes; press Ctrl-C to stop.", flush=True)
            self._loop(pending)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self._close_sockets()
            for pair in self.notes:
                for sock in pair:
                    sock.close()
            self.selector.close()
            for fd in self._wake_fds:
                os.close(fd)
        print("stopped.", flush=True)
        return 1 if self.failed else 0

    def _loop(self, pending: list[int]) -> None:
        stopping_since: float | None = None
        while True:
            now = time.monotonic()
            if stopping_since is None:
                for slot in self.slots:
                    if slot.restart_at is not None and slot.restart_at <= now:
                        self._start(slot)
            elif not any(slot.pid for slot in self.slots):
                return
            elif now - stopping_since > self.cfg.server.shutdown_grace + KILL_AFTER:
                for slot in self.slots:
                    if slot.pid:
                        log.error("worker %d (pid %d) did not stop; killing it", slot.index, slot.pid)
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(slot.pid, signal.SIGKILL)
            waits = [s.restart_at - now for s in self.slots if s.restart_at is not None and stopping_since is None]
            timeout = max(0.0, min(waits)) if waits else (1.0 if stopping_since is not None else None)
            for key, _events in self.selector.select(timeout):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(key.fd, 512):
                            pass
                elif not self.throttle.handle(key.fileobj):  # type: ignore[arg-type]
                    self._drop_conn(key.data)
            if self.failed and stopping_since is None:
                pending.append(signal.SIGTERM)
            while pending:
                sig = pending.pop(0)
                if sig == signal.SIGCHLD:
                    self._reap(stopping_since is not None)
                elif sig == signal.SIGHUP:
                    log.info("SIGHUP: workers reload the TLS certificate")
                    self._signal_all(signal.SIGHUP)
                elif stopping_since is None:
                    log.info("shutting down %d workers", self.count)
                    print("shutting down...", flush=True)
                    stopping_since = time.monotonic()
                    self._signal_all(signal.SIGTERM)
            self._reap(stopping_since is not None)  # a SIGCHLD may have come before the handler ran

    def _signal_all(self, sig: int) -> None:
        for slot in self.slots:
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, sig)

    def _reap(self, stopping: bool) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for slot in self.slots:
                if slot.pid == pid:
                    self._ended(slot, status, stopping)

    def _ended(self, slot: _Slot, status: int, stopping: bool) -> None:
        slot.pid = 0
        self.accept_share.gone(slot.index)
        if slot.conn is not None:
            self._drop_conn(slot)
        if stopping:
            return
        code = os.waitstatus_to_exitcode(status)
        lived = time.monotonic() - slot.started
        slot.young_deaths = slot.young_deaths + 1 if lived < YOUNG else 0
        log.error("worker %d ended (%s) after %.1f s%s", slot.index,
                  f"signal {-code}" if code < 0 else f"status {code}", lived,
                  "" if slot.young_deaths >= GIVE_UP else "; starting it again")
        self.restarts += 1
        if slot.young_deaths >= GIVE_UP:
            # it cannot start (the store, the certificate...): a server that
            # keeps failing should stop and say so, as one process would
            log.error("worker %d keeps failing at start; stopping the server", slot.index)
            self.failed = True
            return
        slot.restart_at = time.monotonic() + (RESTART_PAUSE if lived < YOUNG else 0.0)

    def _drop_conn(self, slot: _Slot) -> None:
        conn = slot.conn
        if conn is None:
            return
        slot.conn = None
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn)
        released = self.throttle.release_all(conn, time.monotonic())
        if released:
            log.warning("worker %d ended with %d login attempts in flight; counted as failures",
                        slot.index, released)
        conn.close()

    # --- a worker --------------------------------------------------------------------
    def _start(self, slot: _Slot) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                parent_end.close()
                code = self._worker(slot.index, child_end)
            except BaseException:  # noqa: BLE001 - reported, then the process ends
                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        child_end.close()
        slot.pid = pid
        slot.started = time.monotonic()
        slot.restart_at = None
        slot.conn = parent_end
        parent_end.setblocking(False)
        self.selector.register(parent_end, selectors.EVENT_READ, slot)
        log.info("worker %d started (pid %d)", slot.index, pid)

    def _worker(self, index: int, throttle_conn: socket.socket) -> int:
        """The body of a worker process (after fork)."""
        from .auth.throttle_shared import SharedThrottle
        from .server import MailServer, WorkerRole
        from .store.notify import ChangeChannel

        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        # a SIGHUP before the event loop takes it must not end the worker
        # (ReloadableTLS.install_sighup loads files changed since their first load)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        _die_with_parent()
        if os.getppid() != self.pid:
            return 1  # the supervisor died before the request took effect
        # What only the supervisor uses: its selector, wake-up pipe, the other
        # workers' throttle connections.
        self.selector.close()
        for fd in self._wake_fds:
            os.close(fd)
        for other in self.slots:
            if other.conn is not None:
                other.conn.close()
        from .auth.passwords import share_pool

        share_pool(self.count)
        role = WorkerRole(
            slot=index,
            count=self.count,
            channel=ChangeChannel(self.notes, index),
            throttle=SharedThrottle(throttle_conn, self.throttle.throttle.policy),
            # Webmail sessions live in the memory of the process that made
            # them (web/security.py): one worker serves HTTP, so a browser's
            # requests all reach the process that knows its session. That
            # worker (slot 0) also runs ACME, so it holds the challenge answers.
            sockets={n: socks for n, socks in self.sockets.items() if n not in WEB or index == 0},
            accept_share=self.accept_share,
        )
        self.runner(MailServer(self.data_dir, self.cfg, worker=role).serve_forever())
        return 0

    def _close_sockets(self) -> None:
        for socks in self.sockets.values():
            for sock in socks:
                sock.close()
        self.sockets.clear()
