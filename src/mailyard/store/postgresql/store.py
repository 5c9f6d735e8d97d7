"""``PostgreSQLStore``: the Store API over psycopg 3's async connection pool
(see the package docstring for the guarantees)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import threading
import time
import zlib
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.adapt import Transformer
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ...config import StoreConfig
from ...gcpause import gc_paused
from ...message.address import search_value
from ...message.objectids import EMAIL, THREAD, opaque_id
from ...message.threadkeys import SortKeys, ThreadKeys, keys_from_json
from ..api import (
    DERIVED_FIELDS,
    HIERARCHY_DELIMITER,
    KEEP,
    PENDING,
    SPECIAL_USE_MAILBOXES,
    Account,
    AlreadyExists,
    AppendItem,
    Changes,
    ChannelLike,
    DeliveryTarget,
    DerivedRecord,
    FlagMode,
    InvalidName,
    Mailbox,
    MailboxGone,
    MailboxRef,
    MailboxStatus,
    MailboxSummary,
    MessageInfo,
    NewMessage,
    NotFound,
    QueueAttempt,
    QueueEntry,
    QueueRecipient,
    QueueStats,
    Quota,
    QuotaExceeded,
    RecentClaim,
    RecipientOutcome,
    RestoredMessage,
    StorageFull,
    Store,
    StoreError,
    StoreUnavailable,
    WebSession,
    derive_record,
)
from ..names import (
    alias_source,
    canonical_name,
    normalize_address,
    normalize_domain,
    normalize_sender_pattern,
)
from ..notify import DIRECTORY, MAILBOXES, QUEUE
from ..revocation import RevocationSignal
from ..rows import (
    MAILBOX_COLS,
    MESSAGE_COLS,
    QUEUE_STATS_SQL,
    QUOTA_COLS,
    THREAD_LOOKUP_IDS,
    flags_set,
    flags_text,
    mailbox_row,
    merged_list,
    message_row,
    queue_stats_row,
    quota_row,
)
from . import schema
from .contacts import ContactsMixin

log = logging.getLogger("mailyard.store")

CHANNEL = "mailyard_changes"
REVOKE = b"R"  # sessions or mailbox references ended: validity caches forget
SETTINGS = b"S"  # account settings changed: caches of get_settings forget (settings_version)
HELD = b"H"  # an expunge kept rows for holders (hold_expunged): their nodes purge them once announced
_ACCOUNT_COLS = "id, address, password_hash, apop_secret, scram_sha256, epoch"
_RCPT_COLS = "id, queue_id, address, domain, notify, orcpt, state, attempts, next_attempt, last_reply, last_host"
_ENTRY_COLS = "id, reverse_path, envid, ret, smtputf8, eight_bit, size, created, warned"
_IMAP_COLS = {"envelope_imap": "envelope", "bodystructure_imap": "bodystructure", "body_imap": "body"}
_META_KEYS = frozenset({"envelope", "bodystructure", "parts", "messages", "date", "size", "preview"})
_OBJECT_IDS = frozenset({"email_id", "thread_id"})
_SORT_COLS = ("date", "subject", "refwd", "from_mailbox", "from_display", "to_mailbox", "to_display", "cc_mailbox",
              "message_id", "parents")
# SORT keys (RFC 5256 section 3, RFC 5957) over messages m and sort_keys k;
# text compares in the C collation: code point order, as i;unicode-casemap
# keys are compared (RFC 5051 2)
_ORDER_BY = {"ARRIVAL": "m.internal_date", "SIZE": "m.size", "DATE": "coalesce(k.date, m.internal_date)",
             "SUBJECT": 'k.subject COLLATE "C"', "FROM": 'k.from_mailbox COLLATE "C"',
             "TO": 'k.to_mailbox COLLATE "C"', "CC": 'k.cc_mailbox COLLATE "C"',
             "DISPLAYFROM": 'k.from_display COLLATE "C"', "DISPLAYTO": 'k.to_display COLLATE "C"'}
_RETRIES = 20
_CACHE_MAX = 100_000  # entries of each validity cache
_UNKNOWN = object()  # not in a validity cache
_T = TypeVar("_T")
# A result of more rows than this (a whole big mailbox's message list, the
# UIDs of its SELECT, a long list of changes) is decoded off the event loop,
# on the store's listing lane (``_Rows``, ``_decoded``): some 3 ms of
# decoding per 1,000 messages; the SQLite store's ``core.LIST_INLINE``.
LIST_INLINE = 2_000
# rows turned into Python values per call of psycopg's loader (a C call that
# keeps the GIL): the event loop's thread gets its turn between slices
_DECODE_SLICE = 500
# Seconds a node's claim on due queue recipients lasts (queue_due): longer
# than an attempt takes; after it another node may try them.
QUEUE_LEASE = 900.0
# Seconds between attempts to listen again after the connection was lost: first, most.
LISTEN_RETRY = (0.1, 5.0)  # a write that met a deadlock or a serialization failure runs again
# Seconds between two looks at the connection that marks this store alive
# (``_watch_marker``). While it is gone, the other nodes take this node's
# holds and queue leases for those of a dead node; an idle connection that
# the database ended is noticed only when used, so it is used this often.
MARKER_CHECK = 5.0
# Reads of a validity entry in a row during each of which a revocation was
# heard (``_read_validity``): the last one is answered, and not kept.
VALIDITY_REREADS = 8


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


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matching itself anywhere."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class _AfterCommit:
    """What an ``op`` of ``_write`` returns to have its answers read once
    the COMMIT went in the same round trip (pipeline mode)."""

    def __init__(self, read: Callable[[], Any]) -> None:
        self.read = read


class _Tx:
    """What a write collects besides its SQL: the mailboxes it changed, those
    where an expunge kept rows for holders, and notes for other nodes (sent
    with pg_notify inside the transaction)."""

    def __init__(self) -> None:
        self.changed: set[int] = set()
        self.held: set[int] = set()
        self.notes: set[bytes] = set()


class PostgreSQLStore(ContactsMixin, Store):
    """Store backend on a PostgreSQL database named by ``dsn``."""

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

    # --- validity of session references ----------------------------------------
    def _sync_q1(self, sql: str, args: Sequence[Any]) -> tuple | None:
        """One statement on the connection that marks this store alive,
        (re)opened as needed. It waits for the database: never called on the
        event loop (asyncio.to_thread, or a caller without a loop)."""
        return self._on_marker(lambda conn: conn.execute(sql, args).fetchone())

    def _on_marker(self, work: Callable[[psycopg.Connection], _T]) -> _T:
        """``work`` on the connection that marks this store alive, opened
        again when the database ended it (a restart, a kill): then every
        hold of this node is published again (``_marker_reopened``). Off the
        event loop, as ``_sync_q1``."""
        with self._sync_lock:
            for attempt in (1, 2):
                try:
                    if self._sync is None or self._sync.closed:
                        if self._closed:
                            raise StoreUnavailable("the store is closed")
                        # its name marks this store's rows of mailbox_holds as live
                        self._sync = psycopg.connect(self.dsn, **self._connect_args,
                                                     application_name=f"mailyard-{self.node}")
                        self._sync_opens += 1
                        self._republish_due = self._sync_opens > 1
                    result = work(self._sync)
                    if self._republish_due and self._loop is not None:
                        # Only once work succeeded there: a republish that fails
                        # schedules no other (a database that takes connections
                        # but fails statements would otherwise feed a reconnect
                        # loop); the next use, or _watch_marker, tries again.
                        # Scheduled before this work's answer reaches the loop,
                        # so a read that follows it waits for the holds (_owned).
                        self._republish_due = False
                        with contextlib.suppress(RuntimeError):  # the loop closed: the store is done
                            self._loop.call_soon_threadsafe(self._marker_reopened)
                    return result
                except _DOWN as exc:
                    # dead since a restart of the database: once more, on a new connection
                    if self._sync is not None:
                        with contextlib.suppress(Exception):
                            self._sync.close()
                        self._sync = None
                    if attempt == 2:
                        raise self._down(exc) from exc
            raise AssertionError("unreachable")

    def _marker_reopened(self) -> None:
        """The connection that marks this store alive was opened again. While
        it was gone the other nodes took this node's rows of mailbox_holds
        for those of a dead node, and a purge of theirs may have deleted
        them: every hold of this node is published again, and the reads of
        those mailboxes wait for it (``_owned``); the rows it published for
        mailboxes no longer held are left to the purge."""
        if self._closed:
            return
        lows = {m: low for m in self._holds if (low := self._hold_low(m)) is not None}
        if lows:
            self._publish_lowers(lows)
        for mailbox_id in set(self._holds) | set(self._published_holds):
            self._unpurged.add(mailbox_id)
            self._purge_soon(mailbox_id)

    async def _watch_marker(self) -> None:
        """Use the connection that marks this store alive every
        ``MARKER_CHECK`` seconds once it is open (off the event loop): one
        the database ended while idle is opened again within that time,
        with this node's holds (``_on_marker``)."""
        while not self._closed:
            await asyncio.sleep(MARKER_CHECK)
            # once it was opened at all: also after a reopen that failed
            if self._sync_opens and not self._closed:
                try:
                    # shielded and in a task close() waits for: the thread
                    # goes on when this task is cancelled
                    await asyncio.shield(self._background_task(
                        asyncio.to_thread(self._sync_q1, "SELECT 1", ())))
                except Exception as exc:  # the database down: the next look tries again
                    log.debug("store: the liveness connection cannot be opened: %s", exc)

    def _forget(self) -> None:
        """Drop the validity caches: something was revoked (or notes of
        revocations may have been missed)."""
        self._live.clear()
        self._epochs.clear()
        self._forgotten += 1

    def _fresh(self) -> None:
        """Drop the validity caches if a process of this node revoked something."""
        if self._revoked is not None:
            token = self._revoked.value()
            if token != self._token:
                self._token = token
                self._forget()

    def revocation_version(self) -> int:
        # the count of the validity caches' clearings: a REVOKE note from
        # any node, this store's own revocations, missed notes, and (through
        # _fresh) the revocation file of this node's other processes
        self._fresh()
        return self._forgotten

    def credentials_known(self, account_id: int, epoch: int) -> bool | None:
        self._fresh()
        current = self._epochs.get(account_id, _UNKNOWN)
        if current is _UNKNOWN:
            return None
        return current == epoch

    async def credentials_current(self, account_id: int, epoch: int) -> bool:
        known = self.credentials_known(account_id, epoch)
        if known is not None:
            return known
        return await self._look_up("epoch", account_id) == epoch

    async def mailbox_current(self, mailbox: MailboxRef) -> bool:
        self._fresh()
        key = self._live.get(mailbox.id)
        if key is None:
            key = await self._look_up("mailbox", mailbox.id)
            if key is None:
                return False
        return key[0] == mailbox.account_id and key[1] == mailbox.uid_validity

    async def _look_up(self, kind: Literal["epoch", "mailbox"], key: int) -> Any:
        """The database's value for a validity cache's entry: an account's
        epoch (None: removed) or a mailbox's (owner, UIDVALIDITY) (None: no
        such mailbox). Read through the pool, so the event loop goes on
        while the database answers.

        The askers of one entry share one read, those that asked at one
        value of ``_forgotten`` only: a read that began before a revocation
        this asker already heard of may answer from before it (its last
        reread, ``VALIDITY_REREADS``, is answered whatever came meanwhile),
        and an IDLE session whose revocation mark (``revocation_version``)
        is already past that revocation would not check again. So every
        read an asker gets its answer from began after every revocation
        heard before it asked."""
        lookup = (kind, key, self._forgotten)
        task = self._lookups.get(lookup)
        if task is None:
            task = self._lookups[lookup] = self._background_task(self._read_validity(kind, key))

            def done(t: asyncio.Task[Any]) -> None:
                if self._lookups.get(lookup) is t:
                    del self._lookups[lookup]

            task.add_done_callback(done)
        # each asker waits on a future of its own (shield), as in _ready
        return await asyncio.shield(task)

    async def _read_validity(self, kind: Literal["epoch", "mailbox"], key: int) -> Any:
        """``_look_up``'s read. A revocation heard while it was under way
        (``_forgotten`` moved: its note may have come after the read's
        snapshot) makes it read again, so no asker gets, and no cache keeps,
        what was true before the revocation. While revocations keep coming
        faster than a read takes, the askers are answered from the
        ``VALIDITY_REREADS``-th read, which is not kept: it began after the
        revocation heard during the read before it, so its answer is one a
        check that ended just before the latest revocation would have given."""
        for reads in itertools.count(1):
            forgotten = self._forgotten
            value: Any
            if kind == "epoch":
                row = await self._q1("SELECT epoch FROM accounts WHERE id = %s", (key,))
                # a removed account is remembered as None: its id is never reused
                value = row[0] if row else None
            else:
                row = await self._q1("SELECT account_id, uid_validity FROM mailboxes WHERE id = %s", (key,))
                value = (row[0], row[1]) if row else None
            self._fresh()
            if forgotten != self._forgotten:
                if reads < VALIDITY_REREADS:
                    continue
                return value
            if kind == "epoch":
                if len(self._epochs) >= _CACHE_MAX:
                    self._epochs.clear()
                self._epochs[key] = value
            elif value is not None:
                # owner and UIDVALIDITY of an id never change; only deletion (which revokes) ends it
                if len(self._live) >= _CACHE_MAX:
                    self._live.clear()
                self._live[key] = value
            return value
        raise AssertionError("unreachable")

    async def _owned(self, mailbox: MailboxRef) -> int:
        """The id of ``mailbox`` for a read, after checking the reference
        (``mailbox_current``) and after this node's hold of the mailbox,
        when one is being published, is in the database (``hold_expunged``).
        A deletion racing with the read leaves it nothing to read: the rows
        go with the mailbox and its id is never reused (an identity column)."""
        pending = self._publishing.get(mailbox.id)
        if pending is not None:
            await asyncio.shield(pending)
        if not await self.mailbox_current(mailbox):
            raise MailboxGone(mailbox.id)
        return mailbox.id

    @staticmethod
    async def _owned_w(c: psycopg.AsyncConnection, mailbox: MailboxRef, lock: bool = True) -> int:
        """Check the reference inside a write, locking the mailbox row: the
        writers of a mailbox on every node take turns on it."""
        row = await (await c.execute(
            "SELECT 1 FROM mailboxes WHERE id = %s AND account_id = %s AND uid_validity = %s"
            + (" FOR UPDATE" if lock else ""),
            (mailbox.id, mailbox.account_id, mailbox.uid_validity),
        )).fetchone()
        if row is None:
            raise MailboxGone(mailbox.id)
        return mailbox.id

    # --- domains -----------------------------------------------------------------
    async def add_domain(self, name: str) -> None:
        domain = normalize_domain(name)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if await _one(c, "SELECT 1 FROM domains WHERE name = %s", (domain,)):
                raise AlreadyExists(f"domain {domain} exists already")
            await c.execute("INSERT INTO domains(name) VALUES (%s)", (domain,))

        await self._write(op, directory=True)

    async def remove_domain(self, name: str) -> None:
        domain = normalize_domain(name)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if not await _one(c, "SELECT 1 FROM domains WHERE name = %s", (domain,)):
                raise NotFound(f"no domain {domain}")
            target = await _domain_alias_target(c, domain)
            if target is not None:
                raise StoreError(f"{domain} is an alias of {target}; remove it with: "
                                 f"mailyard domain alias remove {domain}")
            aliased = [r[0][1:] for r in await _all(
                c, "SELECT source FROM aliases WHERE lower(target) = %s ORDER BY source", ("@" + domain,))]
            if aliased:
                raise StoreError(f"domain {domain} is the target of the domain alias(es) {', '.join(aliased)}; "
                                 "remove them first")
            like = "%@" + domain
            used = (await _one(c, "SELECT count(*) FROM accounts WHERE domain = %s", (domain,)))[0]
            used += (await _one(c, "SELECT count(*) FROM aliases WHERE lower(source) LIKE %s", (like,)))[0]
            used += (await _one(c, "SELECT count(*) FROM lists WHERE lower(address) LIKE %s", (like,)))[0]
            if used:
                raise StoreError(
                    f"domain {domain} still has {used} account(s), alias(es) or list(s); remove them first")
            await c.execute("DELETE FROM domains WHERE name = %s", (domain,))

        await self._write(op, directory=True)

    async def list_domains(self) -> list[str]:
        return [r[0] for r in await self._q('SELECT name FROM domains ORDER BY name COLLATE "C"')]

    async def is_local_domain(self, name: str) -> bool:
        try:
            domain = normalize_domain(name)
        except InvalidName:
            return False
        return await self._q1("SELECT 1 FROM domains WHERE name = %s", (domain,)) is not None

    # --- accounts ----------------------------------------------------------------
    async def add_account(self, address: str, password_hash: str, apop_secret: str | None = None,
                          scram_sha256: str | None = None) -> Account:
        addr = normalize_address(address)
        domain = addr.rpartition("@")[2]

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> int:
            if not await _one(c, "SELECT 1 FROM domains WHERE name = %s", (domain,)):
                raise NotFound(f"{domain} is not a local domain; add it first (mailyard domain add {domain})")
            target = await _domain_alias_target(c, domain)
            if target is not None:
                raise StoreError(f"{domain} is an alias of {target}; add the account there")
            if await _one(c, "SELECT 1 FROM aliases WHERE lower(source) = lower(%s)", (addr,)) or await _one(
                    c, "SELECT 1 FROM lists WHERE lower(address) = lower(%s)", (addr,)):
                raise AlreadyExists(f"{addr} is an alias or a list already")
            if await _one(c, "SELECT 1 FROM accounts WHERE lower(address) = lower(%s)", (addr,)):
                raise AlreadyExists(f"account {addr} exists already")
            row = await _one(
                c, "INSERT INTO accounts(address, domain, password_hash, apop_secret, scram_sha256, created)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (addr, domain, password_hash, apop_secret, scram_sha256, time.time()))
            account_id = row[0]
            await _insert_mailbox(c, account_id, "INBOX", None, subscribe=True)
            for name, use in SPECIAL_USE_MAILBOXES:
                await _insert_mailbox(c, account_id, name, use, subscribe=True)
            return account_id

        account_id = await self._write(op, directory=True)
        account = await self.get_account_by_id(account_id)
        assert account is not None
        return account

    async def get_account(self, address: str) -> Account | None:
        try:
            addr = normalize_address(address)
        except InvalidName:
            return None
        row = await self._q1(f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE lower(address) = lower(%s)", (addr,))
        return Account(*row) if row else None

    async def get_account_by_id(self, account_id: int) -> Account | None:
        row = await self._q1(f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE id = %s", (account_id,))
        return Account(*row) if row else None

    async def list_accounts(self, domain: str | None = None) -> list[Account]:
        if domain is None:
            rows = await self._q(f'SELECT {_ACCOUNT_COLS} FROM accounts ORDER BY address COLLATE "C"')
        else:
            rows = await self._q(f'SELECT {_ACCOUNT_COLS} FROM accounts WHERE domain = %s ORDER BY address COLLATE "C"',
                                 (normalize_domain(domain),))
        return [Account(*r) for r in rows]

    async def set_password(self, address: str, password_hash: str, apop_secret: str | None = None,
                           scram_sha256: str | None = None) -> None:
        addr = normalize_address(address)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            cur = await c.execute(
                "UPDATE accounts SET password_hash = %s, apop_secret = %s, scram_sha256 = %s, epoch = epoch + 1"
                " WHERE lower(address) = lower(%s)", (password_hash, apop_secret, scram_sha256, addr))
            if cur.rowcount == 0:
                raise NotFound(f"no account {addr}")

        await self._write(op, directory=True, revoke=True)

    async def remove_account(self, address: str) -> None:
        addr = normalize_address(address)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            row = await _one(c, "SELECT id FROM accounts WHERE lower(address) = lower(%s) FOR UPDATE", (addr,))
            if row is None:
                raise NotFound(f"no account {addr}")
            for (mailbox_id,) in await _all(c, "SELECT id FROM mailboxes WHERE account_id = %s ORDER BY id FOR UPDATE",
                                            (row[0],)):
                await _drop_mailbox_messages(c, mailbox_id)
                tx.changed.add(mailbox_id)
            await c.execute("DELETE FROM accounts WHERE id = %s", (row[0],))

        await self._write(op, directory=True, revoke=True)

    # --- quotas ----------------------------------------------------------------
    async def set_quota(self, address: str, *, storage: int | None | Literal["keep"] = KEEP,
                        messages: int | None | Literal["keep"] = KEEP) -> Quota:
        addr = normalize_address(address)
        for name, value in (("storage", storage), ("message", messages)):
            if isinstance(value, int) and value < 0:
                raise InvalidName(f"a {name} limit cannot be negative")

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> Quota:
            row = await _one(c, "SELECT id FROM accounts WHERE lower(address) = lower(%s)", (addr,))
            if row is None:
                raise NotFound(f"no account {addr}")
            if storage != KEEP:
                await c.execute("UPDATE accounts SET quota_storage = %s WHERE id = %s", (storage, row[0]))
            if messages != KEEP:
                await c.execute("UPDATE accounts SET quota_messages = %s WHERE id = %s", (messages, row[0]))
            return quota_row(await _one(c, f"SELECT {QUOTA_COLS} FROM accounts WHERE id = %s", (row[0],)))

        return await self._write(op, directory=True)

    async def get_quota(self, account_id: int) -> Quota:
        row = await self._q1(f"SELECT {QUOTA_COLS} FROM accounts WHERE id = %s", (account_id,))
        if row is None:
            raise NotFound(f"no account with id {account_id}")
        return quota_row(row)

    # --- sender grants ------------------------------------------------------------
    async def allow_senders(self, address: str, patterns: Sequence[str]) -> list[str]:
        addr = normalize_address(address)
        grants = [normalize_sender_pattern(p) for p in patterns]
        if not grants:
            raise InvalidName("give at least one address or pattern")

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> int:
            row = await _one(c, "SELECT id FROM accounts WHERE lower(address) = lower(%s)", (addr,))
            if row is None:
                raise NotFound(f"no account {addr}")
            for g in grants:
                await c.execute("INSERT INTO sender_grants(account_id, pattern) VALUES (%s, %s)"
                                " ON CONFLICT DO NOTHING", (row[0], g))
            return row[0]

        return await self.allowed_senders(await self._write(op, directory=True))

    async def disallow_senders(self, address: str, patterns: Sequence[str] = ()) -> list[str]:
        addr = normalize_address(address)
        grants = [normalize_sender_pattern(p) for p in patterns]

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> int:
            row = await _one(c, "SELECT id FROM accounts WHERE lower(address) = lower(%s)", (addr,))
            if row is None:
                raise NotFound(f"no account {addr}")
            if grants:
                for g in grants:
                    await c.execute("DELETE FROM sender_grants WHERE account_id = %s AND lower(pattern) = lower(%s)",
                                    (row[0], g))
            else:
                await c.execute("DELETE FROM sender_grants WHERE account_id = %s", (row[0],))
            return row[0]

        return await self.allowed_senders(await self._write(op, directory=True))

    async def allowed_senders(self, account_id: int) -> list[str]:
        rows = await self._q('SELECT pattern FROM sender_grants WHERE account_id = %s ORDER BY pattern COLLATE "C"',
                             (account_id,))
        return [r[0] for r in rows]

    # --- webmail sessions -------------------------------------------------------------
    async def add_web_session(self, session: WebSession, keep_at_most: int, seen_after: float) -> None:
        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if await _one(c, "SELECT 1 FROM accounts WHERE id = %s", (session.account_id,)) is None:
                raise NotFound(f"no account with id {session.account_id}")
            await c.execute("DELETE FROM web_sessions WHERE account_id = %s AND last_seen < %s",
                            (session.account_id, seen_after))
            await c.execute(
                "INSERT INTO web_sessions(key, account_id, created, last_seen, ip, agent)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET account_id = excluded.account_id,"
                " created = excluded.created, last_seen = excluded.last_seen, ip = excluded.ip, agent = excluded.agent",
                (session.key, session.account_id, session.created, session.last_seen, session.ip, session.agent))
            await c.execute("DELETE FROM web_sessions WHERE key IN (SELECT key FROM web_sessions WHERE account_id = %s"
                            " ORDER BY last_seen DESC, key OFFSET %s)", (session.account_id, max(1, keep_at_most)))

        await self._write(op)

    async def get_web_session(self, key: str) -> WebSession | None:
        row = await self._q1("SELECT key, account_id, created, last_seen, ip, agent FROM web_sessions WHERE key = %s",
                             (key,))
        return WebSession(*row) if row else None

    async def list_web_sessions(self, account_id: int) -> list[WebSession]:
        rows = await self._q("SELECT key, account_id, created, last_seen, ip, agent FROM web_sessions"
                             " WHERE account_id = %s ORDER BY created DESC, key", (account_id,))
        return [WebSession(*r) for r in rows]

    async def touch_web_session(self, key: str, last_seen: float) -> bool:
        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> bool:
            cur = await c.execute("UPDATE web_sessions SET last_seen = greatest(last_seen, %s) WHERE key = %s",
                                  (last_seen, key))
            return cur.rowcount > 0

        return bool(await self._write(op))

    async def remove_web_sessions(self, account_id: int, keys: Sequence[str] | None = None,
                                  keep: str | None = None) -> int:
        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> int:
            if keys is None:
                cur = await c.execute("DELETE FROM web_sessions WHERE account_id = %s AND key IS DISTINCT FROM %s",
                                      (account_id, keep))
            else:
                cur = await c.execute("DELETE FROM web_sessions WHERE account_id = %s AND key = ANY(%s)",
                                      (account_id, list(keys)))
            return cur.rowcount

        return int(await self._write(op))

    # --- account settings -----------------------------------------------------------
    async def get_settings(self, account_id: int) -> dict[str, Any]:
        rows = await self._q("SELECT key, value FROM account_settings WHERE account_id = %s", (account_id,))
        return {key: json.loads(value) for key, value in rows}

    def settings_version(self) -> int | None:
        return self._settings_changes

    async def _settings_write(self, op: Callable[[psycopg.AsyncConnection, _Tx], Any]) -> None:
        """Run a write of account settings that tells the other stores
        (a SETTINGS note in its transaction), then move this store's own
        ``settings_version`` (also when the write failed: it may have
        committed before its answer was lost)."""

        async def noted(c: psycopg.AsyncConnection, tx: _Tx) -> Any:
            tx.notes.add(SETTINGS)
            return await op(c, tx)

        try:
            await self._write(noted)
        finally:
            self._settings_changes += 1

    async def set_settings(self, account_id: int, values: Mapping[str, Any]) -> dict[str, Any]:
        encoded: list[tuple[str, str | None]] = []
        for key, value in values.items():
            if not isinstance(key, str) or not key:
                raise InvalidName("a setting needs a name")
            try:
                encoded.append((key, None if value is None else json.dumps(value, allow_nan=False)))
            except (TypeError, ValueError) as exc:
                raise InvalidName(f"setting {key}: {exc}") from None

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if await _one(c, "SELECT 1 FROM accounts WHERE id = %s", (account_id,)) is None:
                raise NotFound(f"no account with id {account_id}")
            for key, text in encoded:
                if text is None:
                    await c.execute("DELETE FROM account_settings WHERE account_id = %s AND key = %s",
                                    (account_id, key))
                else:
                    await c.execute(
                        "INSERT INTO account_settings(account_id, key, value) VALUES (%s, %s, %s)"
                        " ON CONFLICT (account_id, key) DO UPDATE SET value = excluded.value",
                        (account_id, key, text))

        await self._settings_write(op)
        return await self.get_settings(account_id)

    async def update_setting_list(self, account_id: int, key: str, add: Sequence[str], cap: int) -> list[str]:
        if not isinstance(key, str) or not key:
            raise InvalidName("a setting needs a name")
        adding = [str(a) for a in add]
        result: list[str] = []

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            # the account's row locked: two merges into one list follow each other
            if await _one(c, "SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (account_id,)) is None:
                raise NotFound(f"no account with id {account_id}")
            row = await _one(c, "SELECT value FROM account_settings WHERE account_id = %s AND key = %s",
                             (account_id, key))
            current = json.loads(row[0]) if row is not None else []
            entries = merged_list(current, adding, cap)
            await c.execute(
                "INSERT INTO account_settings(account_id, key, value) VALUES (%s, %s, %s)"
                " ON CONFLICT (account_id, key) DO UPDATE SET value = excluded.value",
                (account_id, key, json.dumps(entries)))
            result[:] = entries

        await self._settings_write(op)
        return result

    # --- aliases and lists -------------------------------------------------------------
    async def add_alias(self, source: str, targets: Sequence[str]) -> None:
        src = alias_source(source)
        dests = [normalize_address(t) for t in targets]
        if not dests:
            raise InvalidName("an alias needs at least one target address")
        domain = src.rpartition("@")[2]

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if not await _one(c, "SELECT 1 FROM domains WHERE name = %s", (domain,)):
                raise NotFound(f"{domain} is not a local domain; add it first (mailyard domain add {domain})")
            target = await _domain_alias_target(c, domain)
            if src.startswith("@") and target is not None:
                raise AlreadyExists(f"{domain} is an alias of {target}: all its mail goes there already")
            if await _one(c, "SELECT 1 FROM accounts WHERE lower(address) = lower(%s)", (src,)) or await _one(
                    c, "SELECT 1 FROM lists WHERE lower(address) = lower(%s)", (src,)):
                raise AlreadyExists(f"{src} is an account or a list already")
            for d in dests:
                await c.execute("INSERT INTO aliases(source, target) VALUES (%s, %s) ON CONFLICT DO NOTHING", (src, d))

        await self._write(op, directory=True)

    async def remove_alias(self, source: str, targets: Sequence[str] = ()) -> None:
        src = alias_source(source)
        dests = [normalize_address(t) for t in targets]

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if not await _one(c, "SELECT 1 FROM aliases WHERE lower(source) = lower(%s) AND target NOT LIKE '@%%'",
                              (src,)):
                raise NotFound(f"no alias {src}")
            if dests:
                for d in dests:
                    await c.execute("DELETE FROM aliases WHERE lower(source) = lower(%s) AND lower(target) = lower(%s)",
                                    (src, d))
            else:
                await c.execute("DELETE FROM aliases WHERE lower(source) = lower(%s)", (src,))

        await self._write(op, directory=True)

    async def get_alias(self, source: str) -> list[str] | None:
        try:
            src = alias_source(source)
        except InvalidName:
            return None
        rows = await self._q('SELECT target FROM aliases WHERE lower(source) = lower(%s) ORDER BY lower(target) COLLATE "C"',
                             (src,))
        return [r[0] for r in rows] or None

    async def list_aliases(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for src, dst in await self._q("SELECT source, target FROM aliases WHERE target NOT LIKE '@%%'"
                                      ' ORDER BY lower(source) COLLATE "C", lower(target) COLLATE "C"'):
            out.setdefault(src, []).append(dst)
        return out

    async def add_domain_alias(self, alias: str, target: str) -> None:
        src = normalize_domain(alias)
        dst = normalize_domain(target)
        if src == dst:
            raise InvalidName(f"{src} cannot be an alias of itself")

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if await _one(c, "SELECT 1 FROM domains WHERE name = %s", (src,)):
                raise AlreadyExists(f"{src} is a local domain already; remove it first (mailyard domain remove {src})")
            if not await _one(c, "SELECT 1 FROM domains WHERE name = %s", (dst,)):
                raise NotFound(f"{dst} is not a local domain; add it first (mailyard domain add {dst})")
            other = await _domain_alias_target(c, dst)
            if other is not None:
                raise StoreError(f"{dst} is itself an alias of {other}; name {other}")
            await c.execute("INSERT INTO domains(name) VALUES (%s)", (src,))
            await c.execute("INSERT INTO aliases(source, target) VALUES (%s, %s)", ("@" + src, "@" + dst))

        await self._write(op, directory=True)

    async def remove_domain_alias(self, alias: str) -> None:
        src = normalize_domain(alias)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if await _domain_alias_target(c, src) is None:
                raise NotFound(f"no domain alias {src}")
            like = "%@" + src
            used = (await _one(c, "SELECT count(*) FROM aliases WHERE lower(source) LIKE %s AND lower(source) != %s",
                               (like, "@" + src)))[0]
            used += (await _one(c, "SELECT count(*) FROM lists WHERE lower(address) LIKE %s", (like,)))[0]
            if used:
                raise StoreError(f"{src} still has {used} alias(es) or list(s) of its own; remove them first")
            await c.execute("DELETE FROM aliases WHERE lower(source) = %s", ("@" + src,))
            await c.execute("DELETE FROM domains WHERE name = %s", (src,))

        await self._write(op, directory=True)

    async def list_domain_aliases(self) -> dict[str, str]:
        return {src[1:]: dst[1:] for src, dst in await self._q(
            "SELECT source, target FROM aliases WHERE source LIKE '@%%' AND target LIKE '@%%' ORDER BY source")}

    async def remove_address_everywhere(self, address: str) -> tuple[list[str], list[str]]:
        addr = normalize_address(address)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> tuple[list[str], list[str]]:
            aliases = [r[0] for r in await _all(
                c, "SELECT source FROM aliases WHERE lower(target) = lower(%s) ORDER BY source", (addr,))]
            lists = [r[0] for r in await _all(
                c, "SELECT list FROM list_members WHERE lower(member) = lower(%s) ORDER BY list", (addr,))]
            await c.execute("DELETE FROM aliases WHERE lower(target) = lower(%s)", (addr,))
            await c.execute("DELETE FROM list_members WHERE lower(member) = lower(%s)", (addr,))
            return aliases, lists

        return await self._write(op, directory=True)

    async def add_list(self, address: str) -> None:
        addr = normalize_address(address)
        domain = addr.rpartition("@")[2]

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if not await _one(c, "SELECT 1 FROM domains WHERE name = %s", (domain,)):
                raise NotFound(f"{domain} is not a local domain; add it first (mailyard domain add {domain})")
            if await _one(c, "SELECT 1 FROM accounts WHERE lower(address) = lower(%s)", (addr,)) or await _one(
                    c, "SELECT 1 FROM aliases WHERE lower(source) = lower(%s)", (addr,)):
                raise AlreadyExists(f"{addr} is an account or an alias already")
            if await _one(c, "SELECT 1 FROM lists WHERE lower(address) = lower(%s)", (addr,)):
                raise AlreadyExists(f"list {addr} exists already")
            await c.execute("INSERT INTO lists(address) VALUES (%s)", (addr,))

        await self._write(op, directory=True)

    async def remove_list(self, address: str) -> None:
        addr = normalize_address(address)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if (await c.execute("DELETE FROM lists WHERE lower(address) = lower(%s)", (addr,))).rowcount == 0:
                raise NotFound(f"no list {addr}")
            await c.execute("DELETE FROM list_members WHERE lower(list) = lower(%s)", (addr,))

        await self._write(op, directory=True)

    async def subscribe_list(self, address: str, member: str) -> None:
        addr = normalize_address(address)
        who = normalize_address(member)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            row = await _one(c, "SELECT address FROM lists WHERE lower(address) = lower(%s)", (addr,))
            if not row:
                raise NotFound(f"no list {addr}")
            await c.execute("INSERT INTO list_members(list, member) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                            (row[0], who))

        await self._write(op, directory=True)

    async def unsubscribe_list(self, address: str, member: str) -> None:
        addr = normalize_address(address)
        who = normalize_address(member)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if not await _one(c, "SELECT 1 FROM lists WHERE lower(address) = lower(%s)", (addr,)):
                raise NotFound(f"no list {addr}")
            cur = await c.execute("DELETE FROM list_members WHERE lower(list) = lower(%s) AND lower(member) = lower(%s)",
                                  (addr, who))
            if cur.rowcount == 0:
                raise NotFound(f"{who} is not a member of {addr}")

        await self._write(op, directory=True)

    async def get_list_members(self, address: str) -> list[str] | None:
        try:
            addr = normalize_address(address)
        except InvalidName:
            return None
        if await self._q1("SELECT 1 FROM lists WHERE lower(address) = lower(%s)", (addr,)) is None:
            return None
        return [r[0] for r in await self._q(
            'SELECT member FROM list_members WHERE lower(list) = lower(%s) ORDER BY lower(member) COLLATE "C"', (addr,))]

    async def list_lists(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {r[0]: [] for r in await self._q(
            'SELECT address FROM lists ORDER BY lower(address) COLLATE "C"')}
        keys = {k.lower(): k for k in out}
        for lst, member in await self._q(
                'SELECT list, member FROM list_members ORDER BY lower(list) COLLATE "C", lower(member) COLLATE "C"'):
            out.setdefault(keys.get(lst.lower(), lst), []).append(member)
        return out

    # --- mailboxes ---------------------------------------------------------------------
    async def create_mailbox(self, account_id: int, name: str, special_use: str | None = None,
                             subscribe: bool = False) -> Mailbox:
        canonical = canonical_name(name)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> int:
            if await _one(c, "SELECT 1 FROM accounts WHERE id = %s", (account_id,)) is None:
                raise NotFound(f"no account with id {account_id}")
            return await _insert_mailbox(c, account_id, canonical, special_use, subscribe)

        mailbox_id = await self._write(op, directory=True)
        mailbox = await self.get_mailbox_by_id(account_id, mailbox_id)
        assert mailbox is not None
        return mailbox

    async def get_mailbox(self, account_id: int, name: str) -> Mailbox | None:
        try:
            canonical = canonical_name(name)
        except InvalidName:
            return None
        row = await self._q1(f"SELECT {MAILBOX_COLS} FROM mailboxes WHERE account_id = %s AND name = %s",
                             (account_id, canonical))
        return mailbox_row(row) if row else None

    async def get_mailbox_by_id(self, account_id: int, mailbox_id: int) -> Mailbox | None:
        row = await self._q1(f"SELECT {MAILBOX_COLS} FROM mailboxes WHERE id = %s AND account_id = %s",
                             (mailbox_id, account_id))
        return mailbox_row(row) if row else None

    async def list_mailboxes(self, account_id: int) -> list[Mailbox]:
        rows = await self._q(f'SELECT {MAILBOX_COLS} FROM mailboxes WHERE account_id = %s ORDER BY name COLLATE "C"',
                             (account_id,))
        return [mailbox_row(r) for r in rows]

    async def rename_mailbox(self, account_id: int, old: str, new: str) -> None:
        old_name = canonical_name(old)
        new_name = canonical_name(new)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            src = await _one(c, "SELECT id, uid_next FROM mailboxes WHERE account_id = %s AND name = %s FOR UPDATE",
                             (account_id, old_name))
            if src is None:
                raise NotFound(f"no mailbox {old_name}")
            if await _one(c, "SELECT 1 FROM mailboxes WHERE account_id = %s AND name = %s", (account_id, new_name)):
                raise AlreadyExists(f"mailbox {new_name} exists already")
            if new_name == old_name or new_name.startswith(old_name + HIERARCHY_DELIMITER):
                raise InvalidName("a mailbox cannot be renamed into itself")
            if old_name == "INBOX":
                # RFC 9051 6.3.6: renaming INBOX moves its messages to the new
                # mailbox and leaves INBOX empty; its inferiors stay where they are.
                new_id = await _insert_mailbox(c, account_id, new_name, None)
                await c.execute("UPDATE mailboxes SET uid_next = %s WHERE id = %s", (src[1], new_id))
                modseq = await _bump_modseq(c, src[0])
                await c.execute(
                    "INSERT INTO expunged(mailbox_id, uid, modseq) SELECT mailbox_id, uid, %s FROM messages"
                    " WHERE mailbox_id = %s ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq",
                    (modseq, src[0]))
                await c.execute("UPDATE messages SET mailbox_id = %s WHERE mailbox_id = %s", (new_id, src[0]))
                tx.changed.update((src[0], new_id))
                return
            prefix = old_name + HIERARCHY_DELIMITER
            rows = await _all(c, "SELECT id, name FROM mailboxes WHERE account_id = %s"
                                 " AND (name = %s OR left(name, %s) = %s) ORDER BY id FOR UPDATE",
                              (account_id, old_name, len(prefix), prefix))
            for mailbox_id, name in rows:
                renamed = new_name + name[len(old_name):]
                if await _one(c, "SELECT 1 FROM mailboxes WHERE account_id = %s AND name = %s", (account_id, renamed)):
                    raise AlreadyExists(f"mailbox {renamed} exists already")
                await c.execute("UPDATE mailboxes SET name = %s WHERE id = %s", (renamed, mailbox_id))
                cur = await c.execute("DELETE FROM subscriptions WHERE account_id = %s AND name = %s",
                                      (account_id, name))
                if cur.rowcount:
                    await c.execute("INSERT INTO subscriptions(account_id, name) VALUES (%s, %s)"
                                    " ON CONFLICT DO NOTHING", (account_id, renamed))
                tx.changed.add(mailbox_id)

        await self._write(op, directory=True)

    async def delete_mailbox(self, account_id: int, name: str) -> None:
        canonical = canonical_name(name)
        if canonical == "INBOX":
            raise StoreError("INBOX cannot be deleted")

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            row = await _one(c, "SELECT id FROM mailboxes WHERE account_id = %s AND name = %s FOR UPDATE",
                             (account_id, canonical))
            if row is None:
                raise NotFound(f"no mailbox {canonical}")
            await _drop_mailbox_messages(c, row[0])
            await c.execute("DELETE FROM mailboxes WHERE id = %s", (row[0],))
            # the subscription stays (RFC 9051 6.3.7 "MUST NOT unilaterally remove")
            tx.changed.add(row[0])

        await self._write(op, directory=True, revoke=True)

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        canonical = canonical_name(name)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            if subscribed:
                await c.execute("INSERT INTO subscriptions(account_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                                (account_id, canonical))
            else:
                await c.execute("DELETE FROM subscriptions WHERE account_id = %s AND name = %s",
                                (account_id, canonical))

        await self._write(op)

    async def list_subscriptions(self, account_id: int) -> list[str]:
        return [r[0] for r in await self._q(
            'SELECT name FROM subscriptions WHERE account_id = %s ORDER BY name COLLATE "C"', (account_id,))]

    async def claim_recent(self, mailbox: MailboxRef, claim: bool = True, upto: int | None = None) -> int:
        await self._owned(mailbox)
        if not claim:
            row = await self._q1("SELECT recent_uid FROM mailboxes WHERE id = %s", (mailbox.id,))
            if row is None:
                raise NotFound("no such mailbox")
            return row[0]

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> int:
            await self._owned_w(c, mailbox, lock=False)
            # the row lock makes exactly one session (of any node) claim each UID
            row = await _one(c, "SELECT recent_uid, uid_next - 1 FROM mailboxes WHERE id = %s FOR UPDATE",
                             (mailbox.id,))
            if row is None:
                raise NotFound("no such mailbox")
            target = row[1] if upto is None else min(upto, row[1])
            if target > row[0]:
                await c.execute("UPDATE mailboxes SET recent_uid = %s WHERE id = %s", (target, mailbox.id))
            return row[0]

        return await self._write(op)

    async def mailbox_status(self, mailbox: MailboxRef) -> MailboxStatus:
        mailbox_id = await self._owned(mailbox)
        row = await self._q1(
            "SELECT b.uid_next, b.uid_validity, b.highest_modseq, count(m.uid), coalesce(sum(m.size), 0),"
            " count(m.uid) FILTER (WHERE position(' \\Seen ' in ' ' || m.flags || ' ') = 0),"
            " count(m.uid) FILTER (WHERE position(' \\Deleted ' in ' ' || m.flags || ' ') > 0),"
            " coalesce(sum(m.size) FILTER (WHERE position(' \\Deleted ' in ' ' || m.flags || ' ') > 0), 0),"
            " count(m.uid) FILTER (WHERE m.uid > b.recent_uid)"
            " FROM mailboxes b LEFT JOIN messages m ON m.mailbox_id = b.id WHERE b.id = %s"
            " GROUP BY b.id", (mailbox_id,))
        if row is None:
            raise NotFound("no such mailbox")
        return MailboxStatus(messages=row[3], unseen=row[5], deleted=row[6], size=int(row[4]),
                             uid_next=row[0], uid_validity=row[1], highest_modseq=row[2], deleted_size=int(row[7]),
                             recent=row[8])

    async def mailbox_summary(self, mailbox: MailboxRef) -> MailboxSummary:
        pending = self._publishing.get(mailbox.id)
        if pending is not None:
            await asyncio.shield(pending)  # this node's hold first (hold_expunged), then the snapshot
        async with self._conn() as c, c.transaction():
            # one snapshot for all three reads
            await c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = await _one(c, f"SELECT {MAILBOX_COLS} FROM mailboxes WHERE id = %s AND account_id = %s"
                                " AND uid_validity = %s", (mailbox.id, mailbox.account_id, mailbox.uid_validity))
            if row is None:
                raise MailboxGone(mailbox.id)
            rows = await _rows(c, "SELECT uid, flags FROM messages WHERE mailbox_id = %s ORDER BY uid",
                               (mailbox.id,))
        return await self._decoded(lambda listed: _summary(mailbox_row(row), listed), rows)

    # --- messages --------------------------------------------------------------------
    async def _derive(self, bodies: Sequence[bytes]) -> list[DerivedRecord]:
        """Derived data of new bodies, computed off the event loop before the
        write's transaction (so no row lock is held while parsing)."""
        return await asyncio.to_thread(lambda: [derive_record(b) for b in bodies])

    async def deliver(self, body: bytes, targets: Sequence[DeliveryTarget]) -> list[int]:
        if not targets:
            return []
        (rec,) = await self._derive([body])

        mailbox_ids = sorted({t.mailbox_id for t in targets})
        if len(targets) == 1:
            return await self._deliver_one(body, targets[0], rec)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> list[int]:
            # The body and its derived rows first, so the mailbox rows stay
            # locked only for the message rows and the COMMIT. In pipeline
            # mode (``_write``) everything after the body's id goes in one
            # round trip: the derived rows, the locks, the quota checks and
            # the message rows; an over-quota target rolls it all back.
            body_id = await _store_body(c, body, len(targets))
            await _save_body_rows(c, body_id, rec)
            await _save_sort_keys(c, body_id, rec, mailbox_ids)
            await _lock_mailboxes(c, mailbox_ids)
            # each quota is read before any of this message's rows is written
            quotas = [(t, await c.execute(_QUOTA_SQL, (t.mailbox_id,))) for t in targets if t.enforce_quota]
            pending = await _queue_targets(c, body_id, len(body), targets)
            over = []
            for t, cur in quotas:
                row = await cur.fetchone()
                if row is None:
                    raise NotFound(f"mailbox {t.mailbox_id} does not exist")
                if not quota_row(row).fits(len(t.trace_prefix) + len(body), 1):
                    over.append(t.mailbox_id)
            if over:
                raise QuotaExceeded("over quota", over)
            return await _collect_targets(tx, pending)

        return await self._write(op, pipeline=True)

    async def _deliver_one(self, body: bytes, target: DeliveryTarget, rec: DerivedRecord) -> list[int]:
        """A delivery to one mailbox in two round trips: the body's id, then
        everything else with the COMMIT, the quota checked by the statement
        that writes the message row. No round trip to this process happens
        while the mailbox row is locked: the lock is held for the database's
        own work and the commit's flush. A refusal (over quota, or no such
        mailbox) commits the body without a message: it is released then."""

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> _AfterCommit:
            body_id = await _store_body(c, body, 1)
            await _save_body_rows(c, body_id, rec)
            await _save_sort_keys(c, body_id, rec, [target.mailbox_id])
            # a statement of its own: the quota is read with a snapshot taken
            # once the lock is held (RFC 9208: the usage other deliveries left)
            await _lock_mailboxes(c, [target.mailbox_id])
            now = time.time()
            cur = await c.execute(_TARGET_QUOTA_SQL, (
                target.mailbox_id, target.enforce_quota, len(target.trace_prefix) + len(body),
                body_id, target.trace_prefix, len(target.trace_prefix) + len(body), flags_text(target.flags),
                target.internal_date if target.internal_date is not None else now, now))
            tx.changed.add(target.mailbox_id)

            async def read() -> tuple[int, tuple | None]:
                return body_id, await cur.fetchone()

            return _AfterCommit(read)

        body_id, row = await self._write(op, pipeline=True)
        if row is not None:
            return [int(row[0])]
        await self._write(lambda c, tx: _release_bodies(c, [body_id]))
        if await self._q1("SELECT 1 FROM mailboxes WHERE id = %s", (target.mailbox_id,)) is None:
            raise NotFound(f"mailbox {target.mailbox_id} does not exist")
        raise QuotaExceeded("over quota", [target.mailbox_id])

    async def append_many(self, mailbox: MailboxRef, items: Sequence[AppendItem],
                          recent: RecentClaim | None = None) -> list[int]:
        if not items:
            return []
        batch = list(items)
        records = await self._derive([item.data for item in batch])

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> tuple[list[int], bool]:
            # As in deliver: bodies and derived rows first, then the mailbox
            # row's lock, the quota and the message rows in one round trip
            # (pipeline mode); a gone mailbox or a refusal rolls it all back.
            body_cursors = [await c.execute(_BODY_SQL, (item.data, 1)) for item in batch]
            body_ids = [(await cur.fetchone())[0] for cur in body_cursors]
            for body_id, rec in zip(body_ids, records, strict=True):
                await _save_body_rows(c, body_id, rec)
                await _save_sort_keys(c, body_id, rec, [mailbox.id])
            owned = await c.execute("SELECT 1 FROM mailboxes WHERE id = %s AND account_id = %s"
                                    " AND uid_validity = %s FOR UPDATE",
                                    (mailbox.id, mailbox.account_id, mailbox.uid_validity))
            quota = await c.execute(_QUOTA_SQL, (mailbox.id,))
            pending = []
            for item, body_id in zip(batch, body_ids, strict=True):
                target = DeliveryTarget(mailbox.id, b"", item.flags, item.internal_date)
                pending += await _queue_targets(c, body_id, len(item.data), [target])
            if await owned.fetchone() is None:
                raise MailboxGone(mailbox.id)
            # RFC 9208 / RFC 3502: the whole MULTIAPPEND fits, or none of it is written
            row = await quota.fetchone()
            if row is None or not quota_row(row).fits(sum(len(i.data) for i in batch), len(batch)):
                raise QuotaExceeded("over quota", [mailbox.id])
            uids = await _collect_targets(tx, pending)
            claimed = False
            if recent is not None and uids:
                # RFC 3501 2.3.2: \Recent for the appending session, in this
                # write, unless an earlier message is still unclaimed
                claimed = await _one(c, "UPDATE mailboxes SET recent_uid = %s WHERE id = %s AND recent_uid = %s"
                                     " RETURNING 1", (uids[-1], mailbox.id, uids[0] - 1)) is not None
            return uids, claimed

        uids, claimed = await self._write(op, pipeline=True)
        if recent is not None and claimed:
            recent.first, recent.last = uids[0] - 1, uids[-1]
        return uids

    async def restore_mailbox(self, account_id: int, name: str, uid_validity: int, uid_next: int,
                              highest_modseq: int, special_use: str | None = None) -> Mailbox:
        canonical = canonical_name(name)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> int:
            if await _one(c, "SELECT 1 FROM accounts WHERE id = %s", (account_id,)) is None:
                raise NotFound(f"no account with id {account_id}")
            row = await _one(c, "SELECT id, uid_validity, uid_next FROM mailboxes WHERE account_id = %s"
                                " AND name = %s FOR UPDATE", (account_id, canonical))
            if row is not None and row[1] == uid_validity:
                await c.execute("UPDATE mailboxes SET uid_next = greatest(uid_next, %s),"
                                " highest_modseq = greatest(highest_modseq, %s) WHERE id = %s",
                                (uid_next, highest_modseq, row[0]))
                tx.changed.add(row[0])
                return int(row[0])
            if row is not None:
                if row[2] != 1:
                    raise AlreadyExists(f"mailbox {canonical} exists already with other UIDs")
                # never held a message: made again (a new id: references to the old one end)
                await c.execute("DELETE FROM mailboxes WHERE id = %s", (row[0],))
                tx.changed.add(row[0])
            await c.execute(
                "INSERT INTO meta(key, value) VALUES ('last_uid_validity', %s) ON CONFLICT (key) DO UPDATE"
                " SET value = greatest(%s::bigint, meta.value::bigint)::text", (str(uid_validity), uid_validity))
            new = await _one(c, "INSERT INTO mailboxes(account_id, name, uid_validity, uid_next, highest_modseq,"
                                " special_use) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                             (account_id, canonical, uid_validity, max(uid_next, 1), max(highest_modseq, 1),
                              special_use))
            return int(new[0])

        mailbox_id = await self._write(op, directory=True, revoke=True)
        mailbox = await self.get_mailbox_by_id(account_id, mailbox_id)
        assert mailbox is not None
        return mailbox

    async def restore_messages(self, mailbox: MailboxRef, items: Sequence[RestoredMessage]) -> None:
        batch = sorted(items, key=lambda m: m.uid)
        if not batch:
            return
        records = await self._derive([item.data for item in batch])

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            mailbox_id = await self._owned_w(c, mailbox)
            top = (await _one(c, "SELECT coalesce(max(uid), 0) FROM messages WHERE mailbox_id = %s",
                              (mailbox_id,)))[0]
            if batch[0].uid <= top or len({m.uid for m in batch}) != len(batch):
                raise AlreadyExists(f"UID {batch[0].uid} is not above the mailbox's UIDs")
            for item, rec in zip(batch, records, strict=True):
                body_id = await _store_body(c, item.data, 1)
                await c.execute(
                    "INSERT INTO messages(mailbox_id, uid, body_id, prefix, size, flags, internal_date, modseq,"
                    " save_date) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (mailbox_id, item.uid, body_id, b"", len(item.data), flags_text(item.flags), item.internal_date,
                     item.modseq, item.save_date))
                await _save_derived(c, body_id, rec)
            await c.execute("UPDATE mailboxes SET uid_next = greatest(uid_next, %s),"
                            " highest_modseq = greatest(highest_modseq, %s) WHERE id = %s",
                            (batch[-1].uid + 1, max(m.modseq for m in batch), mailbox_id))
            tx.changed.add(mailbox_id)

        await self._write(op)

    async def list_messages(self, mailbox: MailboxRef) -> list[MessageInfo]:
        mailbox_id = await self._owned(mailbox)
        async with self._conn() as c:
            rows = await _rows(c, f"SELECT {MESSAGE_COLS} FROM messages WHERE mailbox_id = %s ORDER BY uid",
                               (mailbox_id,))
        return await self._decoded(_message_rows, rows)

    async def get_messages(self, mailbox: MailboxRef, uids: Sequence[int], expunged: bool = False
                           ) -> list[MessageInfo]:
        mailbox_id = await self._owned(mailbox)
        where = -mailbox_id if expunged else mailbox_id
        rows = await self._q(f"SELECT {MESSAGE_COLS} FROM messages WHERE mailbox_id = %s AND uid = ANY(%s)"
                             " ORDER BY uid", (where, sorted(set(uids))))
        return [message_row((mailbox_id, *r[1:])) for r in rows]

    async def read_message(self, mailbox: MailboxRef, uid: int, expunged: bool = False) -> bytes:
        mailbox_id = await self._owned(mailbox)
        ids = [mailbox_id, -mailbox_id] if expunged else [mailbox_id]
        row = await self._q1("SELECT m.prefix || b.data FROM messages m JOIN bodies b ON b.id = m.body_id"
                             " WHERE m.mailbox_id = ANY(%s) AND m.uid = %s ORDER BY m.mailbox_id DESC LIMIT 1",
                             (ids, uid))
        if row is None:
            raise NotFound(f"no message with UID {uid}")
        return bytes(row[0])

    async def read_messages(self, mailbox: MailboxRef, uids: Sequence[int]) -> list[tuple[int, bytes]]:
        mailbox_id = await self._owned(mailbox)
        rows = await self._q("SELECT m.uid, m.prefix || b.data FROM messages m JOIN bodies b ON b.id = m.body_id"
                             " WHERE m.mailbox_id = %s AND m.uid = ANY(%s) ORDER BY m.uid",
                             (mailbox_id, sorted(set(uids))))
        return [(r[0], bytes(r[1])) for r in rows]

    def hold_expunged(self, holder: object, mailbox: MailboxRef | None, seen_modseq: int = 0) -> None:
        """As ``Store.hold_expunged``. Across nodes, this node's holders of a
        mailbox are one row of mailbox_holds, which the expunges of every
        node read. Its mod-sequence may lag below what the holders announced
        (the row then keeps more than they need, never less): it is lowered
        for a new holder before that holder reads the mailbox (a write off the
        event loop that the mailbox's reads wait for, ``_owned``), and raised
        or ended only when held rows wait for a purge (``_purge``). So a
        SELECT writes nothing while the row already covers it, and nothing is
        written while nothing is held."""
        mailbox_id = None if mailbox is None else mailbox.id
        before = self._held_by.pop(holder, None)
        if before is not None:
            holders = self._holds.get(before, {})
            holders.pop(holder, None)
            if not holders:
                self._holds.pop(before, None)
        if mailbox_id is not None:
            self._holds.setdefault(mailbox_id, {})[holder] = seen_modseq
            self._held_by[holder] = mailbox_id
        for m in {x for x in (before, mailbox_id) if x is not None}:
            low = self._hold_low(m)
            published = self._published_holds.get(m)
            if low is not None and (published is None or low < published):
                self._publish_lower(m, low)
            self._purge_soon(m)

    def _publish_lower(self, mailbox_id: int, low: int) -> None:
        """Lower this node's row of mailbox_holds to ``low``: the other nodes
        must see it before the new holder reads the mailbox (an expunge through
        them meanwhile would not keep the message). See ``_publish_lowers``."""
        self._publish_lowers({mailbox_id: low})

    def _publish_lowers(self, lows: Mapping[int, int]) -> None:
        """Write this node's rows of mailbox_holds at the given mod-sequences
        (mailbox id -> low), in one call of a thread, on the connection that
        marks this store alive; the reads of those mailboxes wait for it
        (``_owned``). A failed write is written by the next holder."""
        rows = []
        for mailbox_id, low in lows.items():
            gen = self._hold_gen[mailbox_id] = next(self._hold_gens)
            self._published_holds[mailbox_id] = low
            # a lowered row may hold back rows kept before for others: looked at
            # when this node's holders next move
            self._unpurged.add(mailbox_id)
            rows.append((mailbox_id, self.node, low, gen))

        def write(conn: psycopg.Connection) -> None:
            for row in rows:
                conn.execute(_PUBLISH_HOLD, row)

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._on_marker(write)  # no event loop to hold still
            return
        task = self._background_task(asyncio.to_thread(self._on_marker, write))
        for mailbox_id in lows:
            self._publishing[mailbox_id] = task

        def done(t: asyncio.Task[Any]) -> None:
            failed = t.cancelled() or t.exception() is not None
            for mailbox_id, _, _, gen in rows:
                if self._publishing.get(mailbox_id) is t:
                    del self._publishing[mailbox_id]
                if failed and self._hold_gen.get(mailbox_id) == gen:
                    self._published_holds.pop(mailbox_id, None)

        task.add_done_callback(done)

    def _hold_low(self, mailbox_id: int) -> int | None:
        """The lowest announced mod-sequence of this node's holders of a mailbox."""
        holders = self._holds.get(mailbox_id)
        return min(holders.values()) if holders else None

    def _purge_soon(self, mailbox_id: int) -> None:
        """If held rows may wait in the mailbox (``_unpurged``), purge them in
        the background (``_purge``): one run at a time per mailbox, and a call
        during a run makes it run once more."""
        if mailbox_id in self._purging:
            self._purge_again.add(mailbox_id)
            return
        if mailbox_id not in self._unpurged or self._closed or self._opened is None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._purging.add(mailbox_id)

        async def run() -> None:
            try:
                while True:
                    self._unpurged.discard(mailbox_id)
                    self._purge_again.discard(mailbox_id)
                    try:
                        unannounced = await self._purge(mailbox_id)
                    except Exception as exc:
                        log.debug("store: purge of held rows failed: %s", exc)
                        self._unpurged.add(mailbox_id)  # again when the holders next move
                        return
                    if unannounced:
                        self._unpurged.add(mailbox_id)
                    if self._closed or mailbox_id not in self._purge_again or mailbox_id not in self._unpurged:
                        return
            finally:
                self._purging.discard(mailbox_id)

        self._background_task(run())

    async def _purge(self, mailbox_id: int) -> bool:
        """Publish this node's hold of a mailbox as it now is (raised or
        ended), and drop the held rows that every holder, on every node, has
        announced. Reads only, when nothing is held. Returns whether held
        rows remain above this node's published hold: the next purge, once
        its holders move, publishes it higher. (Rows at or below it wait for
        other nodes' holders; the HELD note that kept them marked those nodes,
        and the last of them to publish its hold drops them.)"""
        if not await self._q("SELECT 1 FROM messages WHERE mailbox_id = %s LIMIT 1", (-mailbox_id,)):
            return False
        low = self._hold_low(mailbox_id)
        if low != self._published_holds.get(mailbox_id):
            # one statement outside any transaction: the row is never locked
            # across a round trip (a lowering, on the connection of
            # _sync_q1, may wait for it in its thread)
            gen = self._hold_gen[mailbox_id] = next(self._hold_gens)
            async with self._conn() as c:
                await c.execute(_PUBLISH_HOLD, (mailbox_id, self.node, low, gen))
            if self._hold_gen.get(mailbox_id) == gen:
                if low is None:
                    self._published_holds.pop(mailbox_id, None)
                    self._hold_gen.pop(mailbox_id, None)
                else:
                    self._published_holds[mailbox_id] = low

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> bool:
            # the hold just published, or lower if a holder came since
            now = self._hold_low(mailbox_id)
            local = now if low is None else low if now is None else min(low, now)
            # the holds of stores that are gone (their connection with them) count no more
            await c.execute(f"DELETE FROM mailbox_holds h WHERE mailbox_id = %s AND NOT {_LIVE_HOLD}",
                            (mailbox_id,))
            remote = await _remote_hold(c, mailbox_id, self.node)
            upto = local if remote is None else remote if local is None else min(local, remote)
            rows = await _all(
                c, "SELECT g.uid, coalesce(e.modseq, 0) FROM messages g LEFT JOIN expunged e ON e.mailbox_id = %s"
                " AND e.uid = g.uid WHERE g.mailbox_id = %s", (mailbox_id, -mailbox_id))
            done = [uid for uid, modseq in rows if upto is None or modseq <= upto]
            if done:
                # this op takes no mailbox lock: a purge of another holder
                # (of this node or another) may delete the same rows at the
                # same moment, so only the rows this DELETE removed give up
                # their body's reference (READ COMMITTED: the second DELETE
                # waits for the first and then finds them gone)
                gone = await _all(c, "DELETE FROM messages WHERE mailbox_id = %s AND uid = ANY(%s) RETURNING body_id",
                                  (-mailbox_id, done))
                await _release_bodies(c, [r[0] for r in gone])
            return local is not None and any(modseq > local for _, modseq in rows)

        return bool(await self._write(op))

    async def _remove_rows(self, c: psycopg.AsyncConnection, tx: _Tx, mailbox_id: int,
                           rows: Sequence[tuple[int, int]], holder: object) -> None:
        """Expunge (uid, body_id) rows: kept under the negated mailbox id while
        a session other than ``holder`` holds the mailbox (RFC 2180 4.1.1);
        the holders' stores hear of it (HELD) to purge them once announced."""
        uids = [r[0] for r in rows]
        if (any(h is not holder for h in self._holds.get(mailbox_id, ()))
                or await _remote_hold(c, mailbox_id, self.node) is not None):
            tx.held.add(mailbox_id)
            size = (await _one(c, "SELECT coalesce(sum(size), 0) FROM messages WHERE mailbox_id = %s AND uid = ANY(%s)",
                               (mailbox_id, uids)))[0]
            await c.execute("UPDATE messages SET mailbox_id = %s WHERE mailbox_id = %s AND uid = ANY(%s)",
                            (-mailbox_id, mailbox_id, uids))
            await c.execute("UPDATE accounts SET used_storage = used_storage - %s, used_messages = used_messages - %s"
                            " WHERE id = (SELECT account_id FROM mailboxes WHERE id = %s)",
                            (size, len(uids), mailbox_id))
            return
        await c.execute("DELETE FROM messages WHERE mailbox_id = %s AND uid = ANY(%s)", (mailbox_id, uids))
        await _release_bodies(c, [r[1] for r in rows])

    async def store_flags(self, mailbox: MailboxRef, uids: Sequence[int], flags: Iterable[str], mode: FlagMode,
                          unchanged_since: int | None = None) -> tuple[list[MessageInfo], list[int]]:
        flag_set = frozenset(flags)
        wanted = sorted(set(uids))

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> tuple[list[MessageInfo], list[int]]:
            mailbox_id = await self._owned_w(c, mailbox)
            changed: list[tuple[int, str]] = []
            failed: list[int] = []
            for uid, text, modseq in await _all(
                    c, "SELECT uid, flags, modseq FROM messages WHERE mailbox_id = %s AND uid = ANY(%s) ORDER BY uid",
                    (mailbox_id, wanted)):
                # RFC 7162 3.1.3: UNCHANGEDSINCE fails messages modified after it.
                if unchanged_since is not None and modseq > unchanged_since:
                    failed.append(uid)
                    continue
                current = flags_set(text)
                new = current | flag_set if mode == "add" else current - flag_set if mode == "remove" else flag_set
                if new != current:
                    changed.append((uid, flags_text(new)))
            if not changed:
                return [], failed
            modseq = await _bump_modseq(c, mailbox_id)
            await c.execute(
                "UPDATE messages m SET flags = v.flags, modseq = %s FROM unnest(%s::bigint[], %s::text[]) AS v(uid, flags)"
                " WHERE m.mailbox_id = %s AND m.uid = v.uid",
                (modseq, [u for u, _ in changed], [t for _, t in changed], mailbox_id))
            tx.changed.add(mailbox_id)
            infos = await _all(c, f"SELECT {MESSAGE_COLS} FROM messages WHERE mailbox_id = %s AND uid = ANY(%s)"
                                  " ORDER BY uid", (mailbox_id, [u for u, _ in changed]))
            return [message_row(r) for r in infos], failed

        return await self._write(op)

    async def expunge(self, mailbox: MailboxRef, uids: Sequence[int], holder: object = None) -> list[int]:
        wanted = sorted(set(uids))

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> list[int]:
            mailbox_id = await self._owned_w(c, mailbox)
            rows = await _all(c, "SELECT uid, body_id FROM messages WHERE mailbox_id = %s AND uid = ANY(%s)",
                              (mailbox_id, wanted))
            if not rows:
                return []
            modseq = await _bump_modseq(c, mailbox_id)
            await self._remove_rows(c, tx, mailbox_id, rows, holder)
            await _remember_expunged(c, mailbox_id, [r[0] for r in rows], modseq)
            tx.changed.add(mailbox_id)
            return sorted(r[0] for r in rows)

        return await self._write(op)

    async def copy_messages(self, src: MailboxRef, uids: Sequence[int], dst: MailboxRef, move: bool = False,
                            holder: object = None) -> list[tuple[int, int]]:
        wanted = sorted(set(uids))
        if dst.account_id != src.account_id:
            raise MailboxGone(dst.id, "the target mailbox does not exist")

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> list[tuple[int, int]]:
            await _lock_mailboxes(c, [src.id, dst.id])
            src_id = await self._owned_w(c, src, lock=False)
            try:
                dst_id = await self._owned_w(c, dst, lock=False)
            except MailboxGone as exc:
                raise MailboxGone(dst.id, "the target mailbox does not exist") from exc
            rows = await _all(c, "SELECT uid, body_id, prefix, size, flags, internal_date FROM messages"
                                 " WHERE mailbox_id = %s AND uid = ANY(%s) ORDER BY uid", (src_id, wanted))
            if not rows:
                return []
            if not move and not (await _mailbox_quota(c, dst_id)).fits(sum(r[3] for r in rows), len(rows)):
                raise QuotaExceeded("over quota", [dst_id])
            start, modseq = await _one(
                c, "UPDATE mailboxes SET uid_next = uid_next + %s, highest_modseq = highest_modseq + 1"
                " WHERE id = %s RETURNING uid_next - %s, highest_modseq", (len(rows), dst_id, len(rows)))
            now = time.time()
            async with c.cursor() as cur:
                # RFC 8514 2: the copy is saved now; INTERNALDATE is kept (RFC 9051 6.4.7)
                await cur.executemany(
                    "INSERT INTO messages(mailbox_id, uid, body_id, prefix, size, flags, internal_date, modseq,"
                    " save_date) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [(dst_id, start + i, r[1], r[2], r[3], r[4], r[5], modseq, now) for i, r in enumerate(rows)])
            await c.execute("UPDATE bodies b SET refs = refs + v.n FROM (SELECT x AS id, count(*) AS n"
                            " FROM unnest(%s::bigint[]) x GROUP BY x) v WHERE b.id = v.id", ([r[1] for r in rows],))
            tx.changed.add(dst_id)
            if move:
                src_modseq = await _bump_modseq(c, src_id)
                await self._remove_rows(c, tx, src_id, [(r[0], r[1]) for r in rows], holder)
                await _remember_expunged(c, src_id, [r[0] for r in rows], src_modseq)
                tx.changed.add(src_id)
            return [(r[0], start + i) for i, r in enumerate(rows)]

        return await self._write(op)

    async def changes_since(self, mailbox: MailboxRef, modseq: int) -> Changes:
        mailbox_id = await self._owned(mailbox)
        async with self._conn() as c, c.transaction():
            await c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            top = await _one(c, "SELECT highest_modseq FROM mailboxes WHERE id = %s", (mailbox_id,))
            if top is None:
                raise NotFound("no such mailbox")
            changed = await _rows(c, f"SELECT {MESSAGE_COLS} FROM messages WHERE mailbox_id = %s AND modseq > %s"
                                     " ORDER BY uid", (mailbox_id, modseq))
            vanished = await _rows(c, "SELECT uid FROM expunged WHERE mailbox_id = %s AND modseq > %s ORDER BY uid",
                                   (mailbox_id, modseq))
        return await self._decoded(lambda rows, gone: Changes(top[0], _message_rows(rows), [r[0] for r in gone]),
                                   changed, vanished)

    # --- derived data and search ---------------------------------------------------------
    async def _object_key(self) -> bytes:
        """The secret of the opaque EMAILID and THREADID (RFC 8474), read once."""
        if self._objectid_key is None:
            row = await self._q1("SELECT value FROM meta WHERE key = 'objectid_key'")
            assert row is not None
            self._objectid_key = bytes.fromhex(row[0])
        return self._objectid_key

    async def get_derived(self, mailbox: MailboxRef, uids: Sequence[int], fields: Iterable[str] | None = None,
                          expunged: bool = False) -> dict[int, dict]:
        mailbox_id = await self._owned(mailbox)
        wanted = set(DERIVED_FIELDS - _IMAP_COLS.keys() - _OBJECT_IDS) if fields is None else set(fields)
        unknown = wanted - DERIVED_FIELDS
        if unknown:
            raise ValueError(f"unknown derived fields: {', '.join(sorted(unknown))}")
        imap = [k for k in _IMAP_COLS if k in wanted]
        meta_keys = _META_KEYS & wanted
        ids = [mailbox_id, -mailbox_id] if expunged else [mailbox_id]
        cols = ", ".join(["m.uid", "m.body_id", *(f"d.{_IMAP_COLS[k]}" for k in imap), "d.meta", "k.thread_id"])
        rows = await self._q(
            f"SELECT DISTINCT ON (m.uid) {cols} FROM messages m JOIN body_derived d ON d.body_id = m.body_id"
            " LEFT JOIN sort_keys k ON k.body_id = m.body_id"
            " WHERE m.mailbox_id = ANY(%s) AND m.uid = ANY(%s) ORDER BY m.uid, m.mailbox_id DESC",
            (ids, sorted(set(uids))))
        out: dict[int, dict] = {}
        body_of: dict[int, int] = {}
        thread_of: dict[int, int] = {}
        for row in rows:
            uid = row[0]
            body_of[uid] = row[1]
            thread_of[uid] = row[-1] if row[-1] is not None else row[1]
            item: dict = {key: bytes(row[2 + i]) for i, key in enumerate(imap)}
            if meta_keys:
                data = json.loads(row[2 + len(imap)])
                for key in meta_keys:
                    item[key] = data.get(key)
            out[uid] = item
        if "body_id" in wanted:
            for uid, item in out.items():
                item["body_id"] = body_of[uid]
        if "email_id" in wanted or "thread_id" in wanted:
            key = await self._object_key()
            for uid, item in out.items():
                if "email_id" in wanted:
                    item["email_id"] = opaque_id(key, EMAIL, body_of[uid])
                if "thread_id" in wanted:
                    item["thread_id"] = opaque_id(key, THREAD, thread_of[uid])
        if "headers" in wanted and out:
            by_body: dict[int, dict[str, list[str]]] = {}
            for body_id, name, value in await self._q(
                    "SELECT body_id, name, value FROM header_fields WHERE body_id = ANY(%s) ORDER BY body_id, n",
                    (sorted(set(body_of.values())),)):
                by_body.setdefault(body_id, {}).setdefault(name, []).append(value)
            for uid in out:
                out[uid]["headers"] = by_body.get(body_of[uid], {})
        return out

    async def search_headers(self, mailbox: MailboxRef, field: str, text: str,
                             within: Collection[int] | None = None) -> set[int]:
        mailbox_id = await self._owned(mailbox)
        sql = ("SELECT m.uid FROM messages m WHERE m.mailbox_id = %s"
               + (" AND m.uid = ANY(%s::bigint[])" if within is not None else "")
               + " AND EXISTS (SELECT 1 FROM header_fields h WHERE h.body_id = m.body_id AND h.name = %s")
        args: tuple = (mailbox_id, *([sorted(within)] if within is not None else []), field.lower())
        if not text:
            rows = await self._q(sql + ")", args)
        else:
            # LIKE on the case-folded value: the trigram index (schema.py)
            # finds the candidates, the comparison itself is the exact
            # substring test of RFC 9051 6.4.4
            rows = await self._q(sql + " AND h.folded LIKE %s)", (*args, _like(text.casefold())))
        return {r[0] for r in rows}

    async def search_text(self, mailbox: MailboxRef, text: str, where: Literal["body", "text"],
                          within: Collection[int] | None = None) -> set[int]:
        mailbox_id = await self._owned(mailbox)
        needle = text.strip()
        only = " AND m.uid = ANY(%s::bigint[])" if within is not None else ""
        some: tuple = (sorted(within),) if within is not None else ()
        if not needle:
            return {r[0] for r in await self._q(f"SELECT uid FROM messages m WHERE mailbox_id = %s{only}",
                                                (mailbox_id, *some))}
        folded = needle.casefold()
        # LIKE on the case-folded text: the trigram index (schema.py) finds
        # the candidates, the comparison itself is the exact substring test
        # of RFC 9051 6.4.4
        cond = "t.body LIKE %s" if where == "body" else "(t.body LIKE %s OR t.header LIKE %s)"
        args: tuple = (_like(folded),) if where == "body" else (_like(folded), _like(folded))
        rows = await self._q(f"SELECT m.uid FROM messages m JOIN search_text t ON t.body_id = m.body_id"
                             f" WHERE m.mailbox_id = %s{only} AND {cond}", (mailbox_id, *some, *args))
        return {r[0] for r in rows}

    async def sort_keys(self, mailbox: MailboxRef, uids: Sequence[int]) -> dict[int, SortKeys]:
        mailbox_id = await self._owned(mailbox)
        rows = await self._q(
            "SELECT m.uid, " + ", ".join(f"k.{c}" for c in _SORT_COLS) + " FROM messages m JOIN sort_keys k"
            " ON k.body_id = m.body_id WHERE m.mailbox_id = %s AND m.uid = ANY(%s)", (mailbox_id, sorted(set(uids))))
        return {r[0]: SortKeys(r[1], r[2], bool(r[3]), r[4], r[5], r[6], r[7], r[8], r[9], tuple(r[10].split()))
                for r in rows}

    async def sort_order(self, mailbox: MailboxRef, keys: Sequence[tuple[str, bool]], uids: Sequence[int]) -> list[int]:
        mailbox_id = await self._owned(mailbox)
        if not uids:
            return []
        order = ", ".join(f"{_ORDER_BY[name]}{' DESC' if reverse else ''}" for name, reverse in keys)
        rows = await self._q(
            "SELECT m.uid FROM messages m LEFT JOIN sort_keys k ON k.body_id = m.body_id"
            f" WHERE m.mailbox_id = %s AND m.uid = ANY(%s) ORDER BY {order}, m.uid",
            (mailbox_id, sorted(set(uids))))
        return [r[0] for r in rows]

    async def thread_keys(self, mailbox: MailboxRef, uids: Sequence[int]) -> dict[int, ThreadKeys]:
        mailbox_id = await self._owned(mailbox)
        async with self._conn() as c:
            rows = await _rows(
                c, "SELECT m.uid, coalesce(k.date, m.internal_date), k.subject, k.refwd, k.message_id, k.parents"
                " FROM messages m JOIN sort_keys k ON k.body_id = m.body_id WHERE m.mailbox_id = %s"
                " AND m.uid = ANY(%s)", (mailbox_id, sorted(set(uids))))
        return await self._decoded(_thread_keys, rows)

    # --- the outbound queue ------------------------------------------------------------
    async def _op_new_message(self, c: psycopg.AsyncConnection, tx: _Tx, msg: NewMessage,
                              rec: DerivedRecord | None) -> tuple[list[int], int | None]:
        refs = len(msg.targets) + (1 if msg.entry is not None else 0)
        if refs == 0:
            return [], None
        await _lock_mailboxes(c, [t.mailbox_id for t in msg.targets])
        await _check_targets(c, msg.targets, len(msg.body))
        body_id = await _store_body(c, msg.body, refs)
        uids = await _insert_targets(c, tx, body_id, len(msg.body), msg.targets) if msg.targets else []
        if rec is not None:
            await _save_derived(c, body_id, rec)
        queue_id = None
        entry = msg.entry
        if entry is not None:
            now = time.time()
            created = entry.created if entry.created is not None else now
            (queue_id,) = await _one(
                c, "INSERT INTO queue(body_id, reverse_path, envid, ret, smtputf8, eight_bit, size, created)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (body_id, entry.reverse_path, entry.envid, entry.ret, entry.smtputf8, entry.eight_bit,
                 len(msg.body), created))
            due = entry.next_attempt if entry.next_attempt is not None else now
            async with c.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO queue_rcpts(queue_id, address, domain, notify, orcpt, next_attempt)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    [(queue_id, r.address, r.address.rpartition("@")[2].lower(),
                      ",".join(sorted(r.notify)) if r.notify is not None else None,
                      f"{r.orcpt[0]};{r.orcpt[1]}" if r.orcpt is not None else None, due) for r in entry.recipients])
            tx.notes.add(QUEUE)
        return uids, queue_id

    async def queue_submit_all(self, messages: Sequence[NewMessage]) -> list[tuple[list[int], int | None]]:
        msgs = [NewMessage(m.body, m.targets, m.entry if m.entry is not None and m.entry.recipients else None)
                for m in messages]
        bodies = [m.body for m in msgs if m.targets]
        derived = iter(await self._derive(bodies) if bodies else ())
        records = [next(derived) if m.targets else None for m in msgs]

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> list[tuple[list[int], int | None]]:
            return [await self._op_new_message(c, tx, msg, rec) for msg, rec in zip(msgs, records, strict=True)]

        return await self._write(op)

    async def queue_update(self, queue_id: int, outcomes: Sequence[RecipientOutcome],
                           attempts: Iterable[tuple[str, str | None, str]] = (), *, warned: bool = False,
                           follow_up: Sequence[NewMessage] = ()) -> bool:
        now = time.time()
        log_rows = list(attempts)
        records = await self._derive([m.body for m in follow_up])

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> bool:
            row = await _one(c, "SELECT body_id FROM queue WHERE id = %s FOR UPDATE", (queue_id,))
            if row is None:
                return True  # deleted meanwhile (mailyard queue delete)
            for o in outcomes:
                await c.execute(
                    "UPDATE queue_rcpts SET state = %s, attempts = attempts + 1, next_attempt = %s,"
                    " last_reply = %s, last_host = %s, lease_node = NULL WHERE id = %s AND queue_id = %s",
                    (o.state, o.next_attempt, o.reply, o.host, o.recipient_id, queue_id))
            for d, h, text in log_rows:
                await c.execute("INSERT INTO queue_attempts(queue_id, ts, domain, host, outcome)"
                                " VALUES (%s, %s, %s, %s, %s)", (queue_id, now, d, h, text))
            if warned:
                await c.execute("UPDATE queue SET warned = true WHERE id = %s", (queue_id,))
            for msg, rec in zip(follow_up, records, strict=True):
                await self._op_new_message(c, tx, msg, rec)
            left = (await _one(c, "SELECT count(*) FROM queue_rcpts WHERE queue_id = %s AND state = 'pending'",
                               (queue_id,)))[0]
            if left:
                return False
            await _drop_queue_entry(c, queue_id, row[0])
            return True

        return await self._write(op)

    async def queue_delete(self, queue_id: int) -> None:
        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> None:
            row = await _one(c, "SELECT body_id FROM queue WHERE id = %s FOR UPDATE", (queue_id,))
            if row is None:
                raise NotFound(f"no queue entry {queue_id}")
            await _drop_queue_entry(c, queue_id, row[0])

        await self._write(op)

    async def queue_retry(self, queue_id: int | None = None) -> int:
        now = time.time()

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> int:
            if queue_id is None:
                cur = await c.execute("UPDATE queue_rcpts SET next_attempt = %s WHERE state = 'pending'", (now,))
            else:
                if await _one(c, "SELECT 1 FROM queue WHERE id = %s", (queue_id,)) is None:
                    raise NotFound(f"no queue entry {queue_id}")
                cur = await c.execute("UPDATE queue_rcpts SET next_attempt = %s WHERE state = 'pending'"
                                      " AND queue_id = %s", (now, queue_id))
            tx.notes.add(QUEUE)
            return cur.rowcount

        return await self._write(op)

    async def _entries(self, rows: list[tuple], with_attempts: bool,
                       conn: psycopg.AsyncConnection | None = None) -> list[QueueEntry]:
        if not rows:
            return []
        if conn is not None:
            async def q(sql: str, args: Sequence[Any]) -> list[tuple]:
                return await _all(conn, sql, args)
        else:
            q = self._q
        ids = [row[0] for row in rows]
        rcpts: dict[int, list[QueueRecipient]] = {i: [] for i in ids}
        attempts: dict[int, list[QueueAttempt]] = {i: [] for i in ids}
        for r in await q(f"SELECT {_RCPT_COLS} FROM queue_rcpts WHERE queue_id = ANY(%s) ORDER BY id", (ids,)):
            notify = frozenset(r[4].split(",")) if r[4] is not None else None
            orcpt = None
            if r[5] is not None:
                kind, _, addr = r[5].partition(";")
                orcpt = (kind, addr)
            rcpts[r[1]].append(QueueRecipient(r[0], r[2], r[3], notify, orcpt, r[6], r[7], r[8], r[9], r[10]))
        if with_attempts:
            for a in await q("SELECT queue_id, ts, domain, host, outcome FROM queue_attempts"
                                   " WHERE queue_id = ANY(%s) ORDER BY id", (ids,)):
                attempts[a[0]].append(QueueAttempt(*a[1:]))
        return [QueueEntry(r[0], r[1], r[2], r[3], bool(r[4]), bool(r[5]), r[6], r[7], bool(r[8]),
                           rcpts[r[0]], attempts[r[0]]) for r in rows]

    async def queue_entry(self, queue_id: int) -> QueueEntry | None:
        entries = await self._entries(await self._q(f"SELECT {_ENTRY_COLS} FROM queue WHERE id = %s", (queue_id,)),
                                      with_attempts=True)
        return entries[0] if entries else None

    async def queue_list(self) -> list[QueueEntry]:
        return await self._entries(await self._q(f"SELECT {_ENTRY_COLS} FROM queue ORDER BY id"), with_attempts=False)

    async def queue_due(self, now: float, limit: int = 1000, *, exclude: Collection[int] = (),
                        skip_domains: Collection[str] = ()) -> list[QueueEntry]:
        """Due entries, claimed for this node: the entry rows are taken with
        ``FOR UPDATE SKIP LOCKED`` (a node claiming at the same moment gets
        others), and the due recipients' next attempt moves ``QUEUE_LEASE``
        ahead, so no other node's runner takes them while this one works on
        them; the attempt's outcome (``queue_update``) sets the real next
        attempt. The lease names its node: the leases of a node that is gone
        (its store's connections closed: it died, or it was restarted and is
        a new store) are over at once, and any node, the restarted one too,
        retries them (RFC 5321 4.5.4.1) instead of waiting for the lease's
        time to run out. The recipients in ``exclude`` are this node's
        still: their leases past half their time are renewed, so a delivery
        that waits long for its connection is not taken over by another
        node."""
        if self._sync is None or self._sync.closed:
            # the connection whose name says this node is alive (_LIVE_HOLD)
            # is open before the node takes a lease that names it
            await asyncio.to_thread(self._sync_q1, "SELECT 1", ())
        held = list(exclude)
        held_ids = set(held)
        skip = set(skip_domains)
        async with self._conn() as c, c.transaction():
            await c.execute(
                "UPDATE queue_rcpts r SET next_attempt = %s, lease_node = NULL WHERE r.lease_node IS NOT NULL"
                " AND r.state = 'pending' AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a"
                " WHERE a.application_name = 'mailyard-' || r.lease_node)", (now,))
            if held:
                await c.execute("UPDATE queue_rcpts SET next_attempt = %s WHERE id = ANY(%s::bigint[])"
                                " AND state = 'pending' AND lease_node = %s AND next_attempt < %s",
                                (now + QUEUE_LEASE, held, self.node, now + QUEUE_LEASE / 2))
            if limit <= 0:
                return []
            rows = await _all(
                c, f"SELECT {', '.join('q.' + col.strip() for col in _ENTRY_COLS.split(','))} FROM queue q"
                " WHERE EXISTS (SELECT 1 FROM queue_rcpts r WHERE r.queue_id = q.id AND r.state = 'pending'"
                " AND r.next_attempt <= %s AND NOT (r.id = ANY(%s::bigint[])) AND NOT (r.domain = ANY(%s::text[])))"
                " ORDER BY q.id LIMIT %s FOR UPDATE SKIP LOCKED", (now, held, list(skip), limit))
            # read again after the lock (a new statement, a new snapshot): a
            # node that claimed an entry just before leaves it leased, not due
            entries = [e for e in await self._entries(rows, with_attempts=False, conn=c)
                       if any(r.state == PENDING and r.next_attempt <= now and r.id not in held_ids
                              and r.domain not in skip for r in e.recipients)]
            if entries:
                await c.execute("UPDATE queue_rcpts SET next_attempt = %s, lease_node = %s WHERE queue_id = ANY(%s)"
                                " AND state = 'pending' AND next_attempt <= %s",
                                (now + QUEUE_LEASE, self.node, [e.id for e in entries], now))
        return entries

    async def queue_size(self) -> int:
        row = await self._q1("SELECT count(*) FROM queue")
        return int(row[0]) if row else 0

    async def queue_stats(self) -> QueueStats:
        return queue_stats_row(await self._q(QUEUE_STATS_SQL))

    async def queue_next_due(self, after: float | None = None) -> float | None:
        if after is None:
            row = await self._q1("SELECT min(next_attempt) FROM queue_rcpts WHERE state = 'pending'")
        else:
            row = await self._q1("SELECT min(next_attempt) FROM queue_rcpts WHERE state = 'pending'"
                                 " AND next_attempt > %s", (after,))
        return row[0] if row else None

    async def queue_body(self, queue_id: int) -> bytes:
        row = await self._q1("SELECT b.data FROM queue q JOIN bodies b ON b.id = q.body_id WHERE q.id = %s",
                             (queue_id,))
        if row is None:
            raise NotFound(f"no queue entry {queue_id}")
        return bytes(row[0])


# --- helpers inside a write's transaction ------------------------------------------------------
# A row of mailbox_holds whose store is still connected (its validity connection's name).
_LIVE_HOLD = "EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = 'mailyard-' || h.node)"


_PUBLISH_HOLD = ("INSERT INTO mailbox_holds(mailbox_id, node, seen_modseq, gen) VALUES (%s, %s, %s, %s)"
                 " ON CONFLICT (mailbox_id, node) DO UPDATE SET seen_modseq = excluded.seen_modseq,"
                 " gen = excluded.gen WHERE mailbox_holds.gen < excluded.gen")


async def _remote_hold(c: psycopg.AsyncConnection, mailbox_id: int, node: str) -> int | None:
    """The lowest mod-sequence up to which the sessions of other live nodes
    holding ``mailbox_id`` have announced its expunges; None: none holds it."""
    row = await _one(c, "SELECT min(h.seen_modseq) FROM mailbox_holds h WHERE h.mailbox_id = %s AND h.node <> %s"
                        f" AND {_LIVE_HOLD}", (mailbox_id, node))
    return None if row is None else row[0]


async def _one(c: psycopg.AsyncConnection, sql: str, args: Sequence[Any] = ()) -> Any:
    return await (await c.execute(sql, args)).fetchone()


async def _all(c: psycopg.AsyncConnection, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
    return await (await c.execute(sql, args)).fetchall()


def _message_rows(rows: list[tuple]) -> list[MessageInfo]:
    return [message_row(r) for r in rows]


def _thread_keys(rows: list[tuple]) -> dict[int, ThreadKeys]:
    return {r[0]: (r[1], r[2], bool(r[3]), r[4], tuple(r[5].split()) if r[5] else ()) for r in rows}


def _summary(mailbox: Mailbox, rows: list[tuple]) -> MailboxSummary:
    """SELECT's summary of a mailbox from its (uid, flags) rows in UID order."""
    uids = [r[0] for r in rows]
    keywords = {f for text in {r[1] for r in rows} for f in text.split() if not f.startswith("\\")}
    first_unseen = next((r[0] for r in rows if "\\Seen" not in flags_set(r[1])), None)
    return MailboxSummary(mailbox, uids, frozenset(keywords), first_unseen)


class _Rows:
    """The rows of one query for ``PostgreSQLStore._decoded``: decoded
    (``rows``) when there are at most ``LIST_INLINE``, else the result as
    libpq holds it, with the loaders of its columns, to decode in a thread
    (``load``: it touches neither the connection nor the event loop)."""

    __slots__ = ("rows", "_result", "_tx")

    def __init__(self, rows: list[tuple] | None, result: Any = None, tx: Transformer | None = None) -> None:
        self.rows = rows
        self._result = result
        self._tx = tx

    def load(self) -> list[tuple]:
        if self.rows is not None:
            return self.rows
        assert self._tx is not None and self._result is not None
        n = self._result.ntuples
        rows: list[tuple] = []
        for i in range(0, n, _DECODE_SLICE):
            rows += self._tx.load_rows(i, min(i + _DECODE_SLICE, n), tuple)
        return rows


async def _rows(c: psycopg.AsyncConnection, sql: str, args: Sequence[Any] = ()) -> _Rows:
    """The rows of ``sql``: a small result decoded, a big one kept for the
    listing lane (the loaders are set up here, on the loop, since making
    them reads the connection's encoding)."""
    cur = await c.execute(sql, args)
    result = cur.pgresult
    if result is None or result.ntuples <= LIST_INLINE:
        return _Rows(await cur.fetchall())
    tx = Transformer(cur)
    tx.set_pgresult(result)
    return _Rows(None, result, tx)


async def _domain_alias_target(c: psycopg.AsyncConnection, domain: str) -> str | None:
    row = await _one(c, "SELECT target FROM aliases WHERE lower(source) = %s AND target LIKE '@%%'", ("@" + domain,))
    return row[0][1:] if row else None


async def _next_uid_validity(c: psycopg.AsyncConnection) -> int:
    """UIDVALIDITY values strictly increase across the store (RFC 9051 2.3.1.1)."""
    row = await _one(
        c, "INSERT INTO meta(key, value) VALUES ('last_uid_validity', %s) ON CONFLICT (key) DO UPDATE"
        " SET value = greatest(%s::bigint, meta.value::bigint + 1)::text RETURNING value",
        (str(int(time.time())), int(time.time())))
    return int(row[0])


async def _insert_mailbox(c: psycopg.AsyncConnection, account_id: int, name: str, special_use: str | None,
                          subscribe: bool = False) -> int:
    if await _one(c, "SELECT 1 FROM mailboxes WHERE account_id = %s AND name = %s", (account_id, name)):
        raise AlreadyExists(f"mailbox {name} exists already")
    row = await _one(c, "INSERT INTO mailboxes(account_id, name, uid_validity, special_use) VALUES (%s, %s, %s, %s)"
                        " RETURNING id", (account_id, name, await _next_uid_validity(c), special_use))
    if subscribe:
        await c.execute("INSERT INTO subscriptions(account_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                        (account_id, name))
    return row[0]


async def _lock_mailboxes(c: psycopg.AsyncConnection, ids: Iterable[int]) -> None:
    """Lock mailbox rows in id order, so writers of several mailboxes never deadlock."""
    await c.execute("SELECT id FROM mailboxes WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (sorted(set(ids)),))


async def _bump_modseq(c: psycopg.AsyncConnection, mailbox_id: int) -> int:
    row = await _one(c, "UPDATE mailboxes SET highest_modseq = highest_modseq + 1 WHERE id = %s"
                        " RETURNING highest_modseq", (mailbox_id,))
    if row is None:
        raise NotFound("no such mailbox")
    return row[0]


_QUOTA_SQL = (f"SELECT {QUOTA_COLS} FROM accounts WHERE id = (SELECT account_id FROM mailboxes"
              " WHERE id = %s)")


async def _mailbox_quota(c: psycopg.AsyncConnection, mailbox_id: int) -> Quota:
    row = await _one(c, _QUOTA_SQL, (mailbox_id,))
    if row is None:
        raise NotFound(f"mailbox {mailbox_id} does not exist")
    return quota_row(row)


async def _check_targets(c: psycopg.AsyncConnection, targets: Sequence[DeliveryTarget], body_len: int) -> None:
    over = [t.mailbox_id for t in targets if t.enforce_quota
            and not (await _mailbox_quota(c, t.mailbox_id)).fits(len(t.trace_prefix) + body_len, 1)]
    if over:
        raise QuotaExceeded("over quota", over)


_BODY_SQL = "INSERT INTO bodies(data, refs) VALUES (%s, %s) RETURNING id"


async def _store_body(c: psycopg.AsyncConnection, body: bytes, refs: int) -> int:
    return (await _one(c, _BODY_SQL, (body, refs)))[0]


async def _insert_targets(c: psycopg.AsyncConnection, tx: _Tx, body_id: int, body_len: int,
                          targets: Sequence[DeliveryTarget]) -> list[int]:
    now = time.time()
    uids = []
    for t in targets:
        row = await _one(c, "UPDATE mailboxes SET uid_next = uid_next + 1, highest_modseq = highest_modseq + 1"
                            " WHERE id = %s RETURNING uid_next - 1, highest_modseq", (t.mailbox_id,))
        if row is None:
            raise NotFound(f"mailbox {t.mailbox_id} does not exist")
        uid, modseq = row
        await c.execute(
            "INSERT INTO messages(mailbox_id, uid, body_id, prefix, size, flags, internal_date, modseq, save_date)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (t.mailbox_id, uid, body_id, t.trace_prefix, len(t.trace_prefix) + body_len, flags_text(t.flags),
             t.internal_date if t.internal_date is not None else now, modseq, now))
        tx.changed.add(t.mailbox_id)
        uids.append(uid)
    return uids


# One statement per target: its UID and mod-sequence from the mailbox row
# (locked by the UPDATE, or before by _lock_mailboxes) and its message row.
_TARGET_SQL = (
    "WITH u AS (UPDATE mailboxes SET uid_next = uid_next + 1, highest_modseq = highest_modseq + 1"
    " WHERE id = %s RETURNING id, uid_next - 1 AS uid, highest_modseq)"
    " INSERT INTO messages(mailbox_id, uid, body_id, prefix, size, flags, internal_date, modseq, save_date)"
    " SELECT u.id, u.uid, %s, %s, %s, %s, %s, u.highest_modseq, %s FROM u RETURNING uid")


# _TARGET_SQL for one target whose quota the statement checks itself (Quota.fits):
# no UID is taken and no row written when the message does not fit.
_TARGET_QUOTA_SQL = (
    "WITH u AS (UPDATE mailboxes x SET uid_next = x.uid_next + 1, highest_modseq = x.highest_modseq + 1"
    " WHERE x.id = %s AND (NOT %s OR EXISTS (SELECT 1 FROM accounts a WHERE a.id = x.account_id"
    "  AND (a.quota_storage IS NULL OR a.used_storage + %s <= a.quota_storage)"
    "  AND (a.quota_messages IS NULL OR a.used_messages + 1 <= a.quota_messages)))"
    " RETURNING x.id, x.uid_next - 1 AS uid, x.highest_modseq)"
    " INSERT INTO messages(mailbox_id, uid, body_id, prefix, size, flags, internal_date, modseq, save_date)"
    " SELECT u.id, u.uid, %s, %s, %s, %s, %s, u.highest_modseq, %s FROM u RETURNING uid")


async def _queue_targets(c: psycopg.AsyncConnection, body_id: int, body_len: int,
                         targets: Sequence[DeliveryTarget]) -> list[tuple[int, psycopg.AsyncCursor]]:
    """Send the message rows of ``targets`` (``_TARGET_SQL``) without reading
    the answers: in pipeline mode they travel with what precedes them;
    ``_collect_targets`` reads the UIDs."""
    now = time.time()
    return [(t.mailbox_id, await c.execute(
        _TARGET_SQL, (t.mailbox_id, body_id, t.trace_prefix, len(t.trace_prefix) + body_len, flags_text(t.flags),
                      t.internal_date if t.internal_date is not None else now, now)))
            for t in targets]


async def _collect_targets(tx: _Tx, pending: Sequence[tuple[int, psycopg.AsyncCursor]]) -> list[int]:
    uids = []
    for mailbox_id, cur in pending:
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"mailbox {mailbox_id} does not exist")
        tx.changed.add(mailbox_id)
        uids.append(row[0])
    return uids


async def _save_derived(c: psycopg.AsyncConnection, body_id: int, rec: DerivedRecord) -> None:
    """A body's derived data, header fields, text index and SORT keys with
    its thread (RFC 8474 5.2), in the write that stores it, after its
    message rows (the thread is looked up among the account's messages)."""
    await _save_body_rows(c, body_id, rec)
    await _save_sort_keys(c, body_id, rec)


async def _save_body_rows(c: psycopg.AsyncConnection, body_id: int, rec: DerivedRecord) -> None:
    """The derived rows that need no message row: written before the
    mailbox rows are locked, in one round trip (pipeline mode; inside a
    pipeline already, with the statements that follow)."""
    header, body = _clean(rec.header_text.casefold()), _clean(rec.body_text.casefold())
    async with contextlib.nullcontext() if c.pgconn.pipeline_status else c.pipeline():
        await c.execute("INSERT INTO body_derived(body_id, envelope, bodystructure, body, meta)"
                        " VALUES (%s, %s, %s, %s, %s)",
                        (body_id, rec.envelope_imap, rec.bodystructure_imap, rec.body_imap, json.dumps(rec.meta)))
        if rec.headers:
            async with c.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO header_fields(body_id, name, n, value, folded) VALUES (%s, %s, %s, %s, %s)",
                    [(body_id, name, n, _clean(value), _clean(search_value(name, value).casefold()))
                     for n, (name, value) in enumerate(rec.headers)])
        await c.execute("INSERT INTO search_text(body_id, header, body, words)"
                        " VALUES (%s, %s, %s, to_tsvector('simple', left(%s, 1000000)))",
                        (body_id, header, body, body))


async def _save_sort_keys(c: psycopg.AsyncConnection, body_id: int, rec: DerivedRecord,
                          mailbox_ids: Sequence[int] | None = None) -> None:
    """The body's SORT keys and thread. The thread is looked up among the
    messages of the accounts that hold the body: those of ``mailbox_ids``
    when given (the statement may then precede the message rows), else
    those its message rows, written before, belong to."""
    k = keys_from_json(rec.meta["sort"])
    ids = list(dict.fromkeys([*k.parents[-THREAD_LOOKUP_IDS:], *([k.message_id] if k.message_id else [])]))
    accounts = ("(SELECT x2.account_id FROM mailboxes x2 WHERE x2.id = ANY(%s))" if mailbox_ids is not None else
                "(SELECT x2.account_id FROM messages m2 JOIN mailboxes x2 ON x2.id = m2.mailbox_id"
                " WHERE m2.body_id = %s)")
    # the thread: the first body of the same account(s) carrying one of the ids
    await c.execute(
        f"INSERT INTO sort_keys(body_id, {', '.join(_SORT_COLS)}, thread_id)"
        f" VALUES ({', '.join(['%s'] * 11)}, least(%s, (SELECT min(k.thread_id) FROM sort_keys k"
        " WHERE k.message_id = ANY(%s) AND k.body_id != %s"
        " AND EXISTS (SELECT 1 FROM messages m JOIN mailboxes x ON x.id = m.mailbox_id"
        f"  WHERE m.body_id = k.body_id AND x.account_id IN {accounts}))))",
        (body_id, k.date, _clean(k.subject), k.refwd, _clean(k.from_mailbox), _clean(k.from_display),
         _clean(k.to_mailbox), _clean(k.to_display), _clean(k.cc_mailbox),
         _clean(k.message_id) if k.message_id else None, _clean(" ".join(k.parents)),
         body_id, ids, body_id, list(mailbox_ids) if mailbox_ids is not None else body_id))


def _clean(text: str) -> str:
    """PostgreSQL text holds no NUL character."""
    return text.replace("\x00", "") if "\x00" in text else text


async def _release_bodies(c: psycopg.AsyncConnection, body_ids: Sequence[int]) -> None:
    """Drop one reference to each body; a body nobody uses goes with its derived data."""
    if not body_ids:
        return
    await c.execute("UPDATE bodies b SET refs = refs - v.n FROM (SELECT x AS id, count(*) AS n"
                    " FROM unnest(%s::bigint[]) x GROUP BY x) v WHERE b.id = v.id", (list(body_ids),))
    await c.execute("DELETE FROM bodies WHERE id = ANY(%s) AND refs <= 0", (list(set(body_ids)),))


async def _remember_expunged(c: psycopg.AsyncConnection, mailbox_id: int, uids: Sequence[int], modseq: int) -> None:
    """RFC 7162 3.2.10: expunged UIDs with the mod-sequence that removed them (VANISHED)."""
    await c.execute("INSERT INTO expunged(mailbox_id, uid, modseq) SELECT %s, u, %s FROM unnest(%s::bigint[]) u"
                    " ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq",
                    (mailbox_id, modseq, list(uids)))


async def _drop_mailbox_messages(c: psycopg.AsyncConnection, mailbox_id: int) -> None:
    body_ids = [r[0] for r in await _all(c, "SELECT body_id FROM messages WHERE mailbox_id IN (%s, %s)",
                                         (mailbox_id, -mailbox_id))]
    await c.execute("DELETE FROM messages WHERE mailbox_id IN (%s, %s)", (mailbox_id, -mailbox_id))
    await c.execute("DELETE FROM expunged WHERE mailbox_id = %s", (mailbox_id,))
    await _release_bodies(c, body_ids)


async def _drop_queue_entry(c: psycopg.AsyncConnection, queue_id: int, body_id: int) -> None:
    await c.execute("DELETE FROM queue WHERE id = %s", (queue_id,))
    await _release_bodies(c, [body_id])

