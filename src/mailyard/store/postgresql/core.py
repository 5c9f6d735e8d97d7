"""What every part of the PostgreSQL store shares: the connection pool and
its life cycle, the transaction of a write (``_write``), change notification
across nodes (LISTEN/NOTIFY) and the advisory locks across nodes.

Reads go through the pool (``_q``, ``_q1``; a big result is decoded on the
listing lane, ``_decoded``). Writes are functions ``op(conn, tx)`` that
``_write`` runs in one transaction, committed before it returns, the notes
of the write sent with pg_notify inside it. Each aggregate (validity.py,
directory.py, mailboxes.py, messages.py, search.py, queue.py) is a mixin on
``PostgreSQLCore``; ``PostgreSQLStore`` (store.py) composes them with the
address book (contacts.py). The helpers run inside a write's transaction
are in transaction.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ...config import StoreConfig
from ...gcpause import gc_paused
from ..api import ChannelLike, StorageFull, Store, StoreError, StoreUnavailable
from ..notify import DIRECTORY, MAILBOXES, QUEUE
from ..revocation import RevocationSignal
from . import schema
from .transaction import _AfterCommit, _Rows, _Tx

log = logging.getLogger("mailyard.store")

CHANNEL = "mailyard_changes"
REVOKE = b"R"  # sessions or mailbox references ended: validity caches forget
SETTINGS = b"S"  # account settings changed: caches of get_settings forget (settings_version)
HELD = b"H"  # an expunge kept rows for holders (hold_expunged): their nodes purge them once announced
_RETRIES = 20  # a write that met a deadlock or a serialization failure runs again
_T = TypeVar("_T")
# Seconds between attempts to listen again after the connection was lost: first, most.
LISTEN_RETRY = (0.1, 5.0)
# Seconds after a failure that looked like the database going away during
# which the pool tests each connection before handing it out (connections
# opened before a restart are dead; the test costs a round trip).
SUSPECT_WINDOW = 60.0
# Errors meaning the database cannot be reached (a deadlock or serialization
# failure, also an OperationalError, is retried by ``_write`` first; a full
# disk is StorageFull).
_DOWN = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, OSError)


def _settled(task: asyncio.Task[Any]) -> None:
    """A background task's end: its failure is retrieved (whoever needed its
    result has awaited it and seen the failure)."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("store: background task failed: %s", task.exception())


def _lock_space(space: str) -> int:
    """An advisory lock's first key: a stable 31-bit number for ``space``."""
    return zlib.crc32(("mailyard:" + space).encode()) & 0x7FFFFFFF


def _int32(key: int) -> int:
    """An advisory lock's second key (int4): ids above 2**31 wrap around."""
    return (key + 2**31) % 2**32 - 2**31


class PostgreSQLCore(Store):
    """The pool, the write transaction, notification and locks across nodes
    (the aggregates are mixins on it)."""

    def __init__(self, dsn: str, config: StoreConfig | None = None, background: bool = True,
                 pool_size: int = 10, data_dir: Path | None = None) -> None:
        """``data_dir``: the node's data directory, when there is one: the
        processes of one node (the CLI beside ``mailyard serve``, workers)
        see each other's revocations at once through its revocation file;
        other nodes a moment later, through the database's notifications."""
        self.config = config or StoreConfig()
        self.dsn = dsn
        self.node = os.urandom(6).hex()  # tells this store's notes from other nodes'
        self.peers: ChannelLike | None = None
        timeout = self.config.pool_timeout
        self._connect_args: dict[str, Any] = {"autocommit": True, "connect_timeout": max(2, round(timeout))}
        self._suspect_until = 0.0
        # reconnect_timeout: the pool's attempts to reconnect back off (1, 2,
        # 4 ... s) and stop after it; the next request starts them afresh at
        # once, so a database back after a long outage is used within seconds
        self._pool = AsyncConnectionPool(dsn, min_size=1, max_size=pool_size, open=False, timeout=timeout,
                                         reconnect_timeout=timeout, kwargs=self._connect_args, check=self._check)
        self._opened: asyncio.Future[None] | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._listen_conn: psycopg.AsyncConnection | None = None
        self._listeners: list[Callable[[int], None]] = []
        self._handlers: dict[bytes, list[Callable[[list[int]], None]]] = {}
        # validity caches (credentials_current, mailbox_current): filled by
        # reads through the pool, cleared by notes of revocations;
        # ``_forgotten`` counts the clearings, so that a read that was under
        # way during one is not cached (nor answered) from before it
        self._live: dict[int, tuple[int, int]] = {}
        self._epochs: dict[int, int | None] = {}
        self._forgotten = 0
        # reads under way, by entry and the ``_forgotten`` their askers came
        # at: shared by those askers only (_look_up)
        self._lookups: dict[tuple[str, int, int], asyncio.Task[Any]] = {}
        # a plain connection whose name (application_name) marks this store
        # as alive to the other nodes (_LIVE_HOLD); it publishes the holds
        # that must be seen before a session goes on, always off the event
        # loop (asyncio.to_thread)
        self._sync: psycopg.Connection | None = None
        self._sync_lock = threading.Lock()
        self._sync_opens = 0  # times it was opened (a second one: _marker_reopened)
        # opened again since the holds were last published on it: they are,
        # after the next work that succeeds there (_on_marker)
        self._republish_due = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._marker_task: asyncio.Task[None] | None = None
        self._revoked: RevocationSignal | None = None
        # settings_version: moved by this store's settings writes and by the
        # SETTINGS notes of every other store (other nodes, other workers,
        # a `mailyard user` command), each a process of its own
        self._settings_changes = 0
        if data_dir is not None:
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            self._revoked = RevocationSignal(Path(data_dir) / "revocations")
            self._token = self._revoked.value()
        # hold_expunged (RFC 2180 4.1.1), for this node's sessions
        self._holds: dict[int, dict[object, int]] = {}
        self._held_by: dict[object, int] = {}
        # mailbox id -> the mod-sequence this node's row of mailbox_holds
        # says its holders announced: at most their lowest (a row below it
        # only keeps more), raised only when held rows wait for a purge
        self._published_holds: dict[int, int] = {}
        self._hold_gens = itertools.count(1)
        self._hold_gen: dict[int, int] = {}  # mailbox id -> gen of the latest write of its hold
        # mailbox id -> the write of a lowered hold: reads of the mailbox wait for it
        self._publishing: dict[int, asyncio.Future[Any]] = {}
        # mailboxes where held rows may wait for this store's purge (an
        # expunge kept some, a HELD note, this store's row lowered); the
        # purge runs when this node's holders move, one at a time per mailbox
        self._unpurged: set[int] = set()
        self._purging: set[int] = set()
        self._purge_again: set[int] = set()
        self._objectid_key: bytes | None = None
        self._closed = False
        self._lock_conn: psycopg.AsyncConnection | None = None
        self._lock_mutex = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        # the listing lane: one thread that decodes big results (_decoded),
        # in turn, taking no thread of the loop's default executor
        self._list_lane: ThreadPoolExecutor | None = None

    # --- life cycle ------------------------------------------------------------
    async def _ready(self) -> None:
        if self._opened is None:
            self._opened = asyncio.get_running_loop().create_future()
            try:
                await asyncio.to_thread(schema.migrate_sync, self.dsn)
                await self._pool.open(wait=True)
                await self._start_listening()
                self._loop = asyncio.get_running_loop()
                self._marker_task = self._loop.create_task(self._watch_marker())
            except BaseException as exc:
                self._opened.set_exception(exc)
                fut, self._opened = self._opened, None
                fut.exception()
                raise
            self._opened.set_result(None)
        else:
            # each caller waits on a future of its own (shield): IMAP and POP3
            # start a command's step by hand and give what it waits on to a
            # task only afterwards (net/session_protocol.py eager_steps), and
            # asyncio refuses a pending future awaited by a second such step
            # before the first's task took it ("await wasn't used with
            # future"); nor may a cancelled caller cancel the others' opening
            await asyncio.shield(self._opened)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in (self._listen_task, self._marker_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for conn in (self._listen_conn, self._lock_conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        if self._opened is not None:
            await self._pool.close()
        with self._sync_lock:
            if self._sync is not None:
                self._sync.close()
                self._sync = None
        if self._list_lane is not None:
            self._list_lane.shutdown(wait=False)
        if self._revoked is not None:
            self._revoked.close()

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection]:
        try:
            await self._ready()
            async with self._pool.connection() as conn:
                yield conn
        except StoreError:
            raise
        except pg_errors.DiskFull as exc:
            raise StorageFull("the database is full") from exc
        except _DOWN as exc:
            raise self._down(exc) from exc

    def _down(self, exc: BaseException) -> StoreUnavailable:
        """The StoreUnavailable for a failure to reach the database; the pool
        tests its connections for a while (those it holds may be dead)."""
        if time.monotonic() > self._suspect_until:
            log.warning("store: the database is unavailable: %s", str(exc).strip() or type(exc).__name__)
        self._suspect_until = time.monotonic() + SUSPECT_WINDOW
        return StoreUnavailable("the mail store is unavailable, try again later")

    async def _check(self, conn: psycopg.AsyncConnection) -> None:
        """The pool's test of a connection it hands out: only after a failure
        (``_down``), when connections opened before may be dead."""
        if time.monotonic() < self._suspect_until:
            await AsyncConnectionPool.check_connection(conn)

    async def _q(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        async with self._conn() as c:
            return await (await c.execute(sql, args)).fetchall()

    async def _q1(self, sql: str, args: Sequence[Any] = ()) -> tuple | None:
        async with self._conn() as c:
            return await (await c.execute(sql, args)).fetchone()

    async def _decoded(self, make: Callable[..., _T], *results: _Rows) -> _T:
        """``make(*rows)``, the rows of each of ``results`` as tuples: in
        place when every result is small, else on the listing lane, so that
        turning a big mailbox's rows into Python values (and ``make``'s
        work over them) never holds the event loop. The rows came from the
        database through the pool as usual; only their decoding moves."""
        if all(r.rows is not None for r in results):
            return make(*(r.rows for r in results))

        def run() -> _T:
            with gc_paused():  # a burst of small objects holding no cycles
                return make(*(r.load() for r in results))

        if self._closed:
            raise StoreUnavailable("the store is closed")
        if self._list_lane is None:
            self._list_lane = ThreadPoolExecutor(1, thread_name_prefix="mailyard-pg-list")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._list_lane, run)
        except RuntimeError:
            if self._closed:  # the lane was shut down as the store closed
                raise StoreUnavailable("the store is closed") from None
            raise

    async def _write(self, op: Callable[[psycopg.AsyncConnection, _Tx], Any], directory: bool = False,
                     revoke: bool = False, pipeline: bool = False) -> Any:
        """Run ``op`` in one transaction; returns its result once committed.
        A deadlock or serialization failure (concurrent writers) runs it again.

        ``pipeline``: the transaction runs in psycopg's pipeline mode, so
        BEGIN goes with the first statement and the notes with the COMMIT,
        and statements whose results ``op`` does not read wait for the next
        one it does (fewer round trips, above all while mailbox rows are
        locked). Only for an ``op`` that catches no database error: one
        surfaces at the next read, or at the COMMIT."""
        try:
            await self._ready()
        except _DOWN as exc:
            raise self._down(exc) from exc
        for attempt in range(_RETRIES):
            tx = _Tx()
            if directory:
                tx.notes.add(DIRECTORY)
            if revoke:
                tx.notes.add(REVOKE)
            try:
                async with self._pool.connection() as c:
                    async with c.pipeline() if pipeline else contextlib.nullcontext(), c.transaction():
                        result = await op(c, tx)
                        if tx.changed:
                            tx.notes.add(MAILBOXES)
                        if tx.held:
                            tx.notes.add(HELD)
                        for kind in tx.notes:
                            ids = tx.changed if kind == MAILBOXES else tx.held if kind == HELD else ()
                            payload = f"{self.node}:{kind.decode()}:{','.join(map(str, sorted(ids)))}"
                            await c.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                    if isinstance(result, _AfterCommit):
                        result = await result.read()
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                if attempt == _RETRIES - 1:
                    raise
                await asyncio.sleep(0.001 * (attempt + 1))
                continue
            except pg_errors.DiskFull as exc:
                raise StorageFull("the database is full") from exc
            except StoreError:
                raise
            except _DOWN as exc:
                # a COMMIT whose answer was lost may have been applied: the
                # caller reports a temporary failure, the client retries
                # (RFC 5321 6.1 accepts the rare duplicate that may follow)
                raise self._down(exc) from exc
            break
        if directory:
            self.directory_version += 1
        if revoke:
            self._forget()
            if self._revoked is not None:
                self._revoked.bump()
        if tx.changed:
            self.notify_local(tx.changed)
        for mailbox_id in tx.held:
            self._unpurged.add(mailbox_id)
            self._purge_soon(mailbox_id)
        return result

    def translate_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, pg_errors.DiskFull):
            return StorageFull("the database is full")
        if isinstance(exc, _DOWN):
            return self._down(exc)
        return exc

    # --- change notification -------------------------------------------------
    async def _start_listening(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self.dsn, **self._connect_args)
        await conn.execute(f"LISTEN {CHANNEL}")
        self._listen_conn = conn
        self._listen_task = asyncio.get_running_loop().create_task(self._listen(conn))

    async def _listen(self, conn: psycopg.AsyncConnection) -> None:
        """Hear the other nodes' notes; when the connection is lost (the
        database restarted, a network cut), connect again with a growing
        pause, and then treat every note missed meanwhile as having come."""
        pause = LISTEN_RETRY[0]
        while True:
            try:
                async for note in conn.notifies():
                    pause = LISTEN_RETRY[0]
                    self._note(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed:
                    return
                log.warning("store: notification connection lost (%s); connecting again", exc)
                self._suspect_until = time.monotonic() + SUSPECT_WINDOW
            if self._closed:
                return
            with contextlib.suppress(Exception):
                await conn.close()
            while not self._closed:
                await asyncio.sleep(pause)
                pause = min(pause * 2, LISTEN_RETRY[1])
                try:
                    conn = await psycopg.AsyncConnection.connect(self.dsn, **self._connect_args)
                    await conn.execute(f"LISTEN {CHANNEL}")
                except Exception as exc:
                    log.warning("store: cannot listen for notifications yet: %s", exc)
                    continue
                self._listen_conn = conn
                self._missed_notes()
                break

    def _note(self, payload: str) -> None:
        node, _, rest = payload.partition(":")
        if node == self.node:
            return
        kind, _, text = rest.partition(":")
        ids = [int(x) for x in text.split(",") if x]
        try:
            self._peer_note(kind.encode(), ids)
        except Exception:
            log.exception("change note handling failed")

    def _missed_notes(self) -> None:
        """After a gap in listening: caches forget, the queue runner looks,
        the sessions of every mailbox held here look for changes, and held
        rows are looked for where this node holds or held a mailbox (a HELD
        note may be among the missed). The connection that marks this store
        alive is opened again (the database may have restarted), off the
        event loop."""
        self._forget()
        self.directory_version += 1
        self._settings_changes += 1
        if self.on_queue_note is not None:
            self.on_queue_note()
        self.notify_local(list(self._holds))
        self._background_task(asyncio.to_thread(self._sync_q1, "SELECT 1", ()))
        for mailbox_id in set(self._holds) | set(self._published_holds):
            self._unpurged.add(mailbox_id)
            self._purge_soon(mailbox_id)

    def _peer_note(self, kind: bytes, ids: list[int]) -> None:
        if kind == MAILBOXES:
            self.notify_local(ids)
        elif kind == DIRECTORY:
            self.directory_version += 1
        elif kind == REVOKE:
            self._forget()
        elif kind == HELD:
            for mailbox_id in ids:
                if mailbox_id in self._holds or mailbox_id in self._published_holds:
                    self._unpurged.add(mailbox_id)
                    self._purge_soon(mailbox_id)
        elif kind == SETTINGS:
            self._settings_changes += 1
        elif kind == QUEUE and self.on_queue_note is not None:
            self.on_queue_note()
        for handle in self._handlers.get(kind, ()):
            handle(ids)

    def attach_peers(self, channel: ChannelLike) -> None:
        """The nodes already hear each other through LISTEN/NOTIFY; a local
        channel (worker processes of one node) also gets this store's notes."""
        self.peers = channel
        channel.on(MAILBOXES, self.notify_local)
        channel.on(DIRECTORY, lambda ids: setattr(self, "directory_version", self.directory_version + 1))

    def notify_local(self, mailbox_ids: Iterable[int]) -> None:
        for mailbox_id in mailbox_ids:
            for callback in list(self._listeners):
                try:
                    callback(mailbox_id)
                except Exception:
                    log.exception("store listener failed")

    def add_listener(self, callback: Callable[[int], None]) -> Callable[[], None]:
        self._listeners.append(callback)

        def remove() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return remove

    async def publish(self, kind: bytes, ids: Iterable[int] = ()) -> None:
        """Send a note to every other node (``kind`` as store/notify.py's)."""
        payload = f"{self.node}:{kind.decode()}:{','.join(map(str, sorted(ids)))}"
        async with self._conn() as c:
            await c.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    # --- locks across nodes -----------------------------------------------------
    # Session-level advisory locks on one connection of their own: PostgreSQL
    # drops them when that connection ends, so a node that dies releases its
    # locks. They are reentrant per connection, so the caller keeps its own
    # lock within the process (net/pop3.py MaildropLocks) and asks here second.
    async def _lock_connection(self) -> psycopg.AsyncConnection:
        try:
            await self._ready()
        except _DOWN as exc:
            raise self._down(exc) from exc
        if self._lock_conn is None or self._lock_conn.closed:
            self._lock_conn = await psycopg.AsyncConnection.connect(self.dsn, **self._connect_args)
        return self._lock_conn

    async def lock_exclusive(self, space: str, key: int) -> bool:
        async with self._lock_mutex:
            for attempt in (1, 2):
                try:
                    conn = await self._lock_connection()
                    row = await (await conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                                    (_lock_space(space), _int32(key)))).fetchone()
                    return bool(row and row[0])
                except StoreError:
                    raise
                except _DOWN as exc:
                    # a connection from before a restart of the database is
                    # dead, and the locks it held went with it: a new one
                    if self._lock_conn is not None:
                        with contextlib.suppress(Exception):
                            await self._lock_conn.close()
                        self._lock_conn = None
                    if attempt == 2:
                        raise self._down(exc) from exc
            raise AssertionError("unreachable")

    def unlock_exclusive(self, space: str, key: int) -> None:
        async def release() -> None:
            async with self._lock_mutex:
                if self._lock_conn is not None and not self._lock_conn.closed:
                    await self._lock_conn.execute("SELECT pg_advisory_unlock(%s, %s)",
                                                  (_lock_space(space), _int32(key)))

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop: the lock goes with the connection
        self._background_task(release())

    def _background_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in a task ``close`` waits for; its failure is logged
        at debug level only (whoever needs its result awaits the task)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(_settled)
        task.add_done_callback(self._background.discard)
        return task
