"""Group commit: one thread owns the SQLite write connection and runs every
write of every session; writes queued while a commit is in progress share the
next commit, so throughput is not bounded by one fsync per message
(DESIGN.md "Durability").

Each write is a function ``op(conn, ctx)`` run inside its own SAVEPOINT: a
failing write is rolled back alone and its caller gets the exception, the
others in the batch still commit. Some errors (SQLITE_FULL, SQLITE_IOERR)
make SQLite roll back the whole transaction, savepoints included: the failing
write's caller then gets that error, and the batch's other writes run again
in a new transaction. The caller's future resolves only after COMMIT returned
(and, with fsync on, the WAL and the blob segment, if the batch appended
to one, were synced).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("mailyard.store")

_STOP = object()
_WAKE = object()  # idle work has something new (another process wrote)
_UPKEEP = object()  # the upkeep between batches has something new
IDLE_PAUSE = 0.2  # seconds without writes before background work starts
# seconds without writes before the upkeep between batches runs: while
# writes keep coming it waits (unless its backlog presses), so they do not
# queue behind it
UPKEEP_PAUSE = 0.1


class _Exclusive:
    """A function to run on the writer thread outside any batch transaction."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn


class WriteContext:
    """What an op may use besides the connection, and where it records which
    mailboxes changed (for listeners)."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.changed: set[int] = set()


Op = Callable[[sqlite3.Connection, WriteContext], Any]


class GroupCommitWriter:
    def __init__(
        self,
        conn: sqlite3.Connection,
        owner: Any,
        max_batch: int,
        before_commit: Callable[[], None],
        after_commit: Callable[[set[int]], None],
        idle_work: Callable[[sqlite3.Connection], bool | float] | None = None,
        between: tuple[Callable[[sqlite3.Connection], bool], Callable[[sqlite3.Connection], bool]] | None = None,
        pressing: Callable[[], bool] | None = None,
    ) -> None:
        self._conn = conn
        self._owner = owner
        self._max_batch = max_batch
        self._before_commit = before_commit
        self._after_commit = after_commit
        self._idle_work = idle_work
        # (has work, do a slice of it): cache upkeep kept out of the write
        # batches, done between them once the writes pause (UPKEEP_PAUSE) or
        # its backlog presses (see _between_batches)
        self._between = between
        self._upkeep_due: float | None = None  # monotonic time the upkeep between batches may run
        # whether the upkeep's backlog is too large to wait for a pause in the writes
        self._pressing = pressing
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="mailyard-store-writer", daemon=True)
        self._idle_pending = True
        self._idle_running = False  # idle work said it has more: continue without the pause
        self._idle_wait = IDLE_PAUSE  # seconds without writes before idle work (runs) again
        # Set when other processes write to the same database (``[server]
        # workers``): a file whose flock() the writers of all of them take
        # around each transaction. A writer waiting for it is woken by the
        # kernel the moment the holder commits, where SQLite's busy handler
        # would poll with sleeps of up to 100 ms; the writes that queue up
        # meanwhile share the next commit.
        self.lock_fd: int | None = None
        self._thread.start()

    def submit(self, op: Op) -> asyncio.Future[Any]:
        """Queue ``op``; the returned future resolves after its commit."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.put((op, fut, loop))
        return fut

    def run_exclusive(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run ``fn()`` on the writer thread between batches (it manages its own
        transactions); the future resolves with its result."""

        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.put((_Exclusive(fn), fut, loop))
        return fut

    def has_pending(self) -> bool:
        """A write is waiting: background work should stop and let it run."""
        return not self._queue.empty()

    def wake_idle_work(self) -> None:
        """Let idle work look again (after the pause): another process
        committed something it may have to index."""
        if self._idle_work is not None and not self._idle_pending:
            self._queue.put(_WAKE)

    def wake_upkeep(self) -> None:
        """Let the upkeep between batches run even if no write comes (it was
        given work outside a write)."""
        if self._between is not None:
            self._queue.put(_UPKEEP)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            timeout, upkeep = self._wait()
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                if upkeep:
                    self._upkeep_due = None
                    if self._idle_pending and not self._idle_running and timeout is not None:
                        # that wait counts towards the idle work's pause
                        self._idle_wait = max(0.0, self._idle_wait - timeout)
                    self._between_batches()
                else:
                    self._do_idle_work()
                continue
            while item is not None:
                if item is _STOP:
                    return
                if item is _WAKE:
                    self._idle_pending = True
                    self._idle_wait = IDLE_PAUSE
                    item = None
                    continue
                if item is _UPKEEP:
                    self._want_upkeep(postpone=False)
                    item = None
                    continue
                if isinstance(item[0], _Exclusive):
                    self._run_exclusive(item)
                    item = None
                    continue
                batch = [item]
                item = None
                resolved: list[_Resolved] = []
                # The callers are woken after the lock is given up: the other
                # processes' writers wait for it, and waking a loop is a
                # system call and a contest for this process's GIL.
                try:
                    # (writes that queue while this waits for its turn join the batch)
                    with self._turn():
                        while len(batch) < self._max_batch:
                            try:
                                more = self._queue.get_nowait()
                            except queue.Empty:
                                break
                            if more is _WAKE or more is _UPKEEP:
                                continue  # this batch's commit wakes idle work and the upkeep anyway
                            if more is _STOP or isinstance(more[0], _Exclusive):
                                item = more  # after this batch's commit
                                break
                            batch.append(more)
                        resolved = self._commit(batch)
                finally:
                    _hand_over(resolved, self._owner)
                if item is None and self._pressing is not None and self._pressing():
                    self._between_batches()  # writes that keep coming wait for a slice, else it grows
                else:
                    self._want_upkeep(postpone=True)

    def _wait(self) -> tuple[float | None, bool]:
        """Seconds the writer waits for a write before its next piece of
        background work (None: there is none), and whether that piece is the
        upkeep between batches (else the idle work). Idle work starts after
        ``IDLE_PAUSE`` without writes, then continues slice after slice until
        it is done or a write arrives."""
        idle = (0.0 if self._idle_running else self._idle_wait) if self._idle_pending else None
        if self._upkeep_due is not None:
            upkeep = max(0.0, self._upkeep_due - time.monotonic())
            if idle is None or upkeep <= idle:
                return upkeep, True
        return idle, False

    def _want_upkeep(self, postpone: bool) -> None:
        """Ask for the upkeep between batches once no write has come for
        ``UPKEEP_PAUSE`` (``postpone``: a batch was just committed, so the
        pause starts again)."""
        if self._between is not None and (postpone or self._upkeep_due is None):
            self._upkeep_due = time.monotonic() + UPKEEP_PAUSE

    def _between_batches(self) -> None:
        """Upkeep of caches (the full-text index) in a transaction of its own
        after a batch, not inside it: the writes of a batch, and the sessions
        waiting for its commit, never wait for it. It runs only when no write
        of this process waits, one short slice at a time; a write queued
        meanwhile waits for at most that slice."""
        if self._between is None:
            return
        wants, work = self._between
        try:
            while self._queue.empty() and wants(self._conn):
                with self._turn():
                    if not work(self._conn):
                        break
        except Exception:
            log.exception("store upkeep between writes failed")

    @contextlib.contextmanager
    def _turn(self) -> Any:
        """This process's turn to write, among the processes sharing the database."""
        fd = self.lock_fd
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _run_exclusive(self, item: tuple[Any, asyncio.Future[Any], asyncio.AbstractEventLoop]) -> None:
        exclusive, fut, loop = item
        try:
            with self._turn():
                result = exclusive.fn()
            exc = None
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            result, exc = None, error
        try:
            loop.call_soon_threadsafe(_resolve, [(fut, result, exc)], frozenset(), self._owner)
        except RuntimeError:
            pass

    def _commit(self, batch: list[tuple[Op, asyncio.Future[Any], asyncio.AbstractEventLoop]]) -> list[_Resolved]:
        """Run and commit ``batch``; returns the outcomes to hand to the
        callers' loops (``_hand_over``)."""
        resolved: list[_Resolved] = []
        while batch:
            batch = self._commit_once(batch, resolved)
        return resolved

    def _commit_once(
        self, batch: list[tuple[Op, asyncio.Future[Any], asyncio.AbstractEventLoop]], resolved: list[_Resolved]
    ) -> list[tuple[Op, asyncio.Future[Any], asyncio.AbstractEventLoop]]:
        """Run and commit ``batch``, adding its outcomes to ``resolved``;
        returns the writes to run again when one of them failed in a way that
        rolled back the whole transaction."""
        conn = self._conn
        ctx = WriteContext(self._owner)
        outcomes: list[tuple[asyncio.Future[Any], asyncio.AbstractEventLoop, Any, BaseException | None]] = []
        again: list[tuple[Op, asyncio.Future[Any], asyncio.AbstractEventLoop]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for i, (op, fut, loop) in enumerate(batch):
                conn.execute("SAVEPOINT op")
                try:
                    result = op(conn, ctx)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    if not conn.in_transaction:
                        # SQLite rolled back the whole transaction (SQLITE_FULL
                        # does): the savepoint is gone with the writes before
                        # this one. This write gets its own error, not "no
                        # such savepoint"; the others are run again.
                        log.warning("store write failed, transaction rolled back: %s", exc)
                        outcomes = [(fut, loop, None, exc)]
                        again = [item for j, item in enumerate(batch) if j != i]
                        ctx.changed.clear()
                        break
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((fut, loop, None, exc))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((fut, loop, result, None))
            else:
                self._before_commit()
                conn.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - the whole batch failed
            log.error("store commit failed: %s", exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            err = self._owner.translate_error(exc)
            outcomes = [(fut, loop, None, err) for _, fut, loop in batch]
            again = []
            ctx.changed.clear()
        self._idle_pending = True
        self._idle_running = False
        self._idle_wait = IDLE_PAUSE
        self._after_commit(ctx.changed)
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for fut, loop, result, exc in outcomes:
            by_loop.setdefault(loop, []).append((fut, result, exc))
        changed = frozenset(ctx.changed)
        resolved.extend((loop, items, changed) for loop, items in by_loop.items())
        return again

    def _do_idle_work(self) -> None:
        if self._idle_work is None:
            self._idle_pending = False
            return
        try:
            with self._turn():
                more = self._idle_work(self._conn)
        except Exception:
            log.exception("store background work failed")
            more = False
        # True: more now; a number: again after that many seconds; False: after the next write
        self._idle_pending = bool(more)
        self._idle_running = more is True
        self._idle_wait = IDLE_PAUSE if more is True or not more else float(more)


# (the loop of the callers, their (future, result, error) triples, the mailboxes the commit changed)
_Resolved = tuple[asyncio.AbstractEventLoop, list[Any], frozenset[int]]


def _hand_over(resolved: list[_Resolved], owner: Any) -> None:
    """Resolve committed writes' futures on their loops."""
    for loop, items, changed in resolved:
        try:
            loop.call_soon_threadsafe(_resolve, items, changed, owner)
        except RuntimeError:  # that loop is closed; nobody is waiting
            pass


def _resolve(items: list[Any], changed: frozenset[int], owner: Any) -> None:
    for fut, result, exc in items:
        if fut.done():
            continue
        if exc is not None:
            fut.set_exception(owner.translate_error(exc))
        else:
            fut.set_result(result)
    if changed:
        owner.notify(changed)
