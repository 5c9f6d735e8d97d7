"""What every part of the SQLite store shares: the two connections, the
group-commit writer, the checks of session references, change listeners.

Reads run on the caller's thread on a read-only connection (WAL readers never
block the writer). Writes are functions ``op(conn, ctx)`` run on the
group-commit writer thread (writer.py); ``_write`` hands one over and returns
after its commit. Each aggregate (directory.py, mailboxes.py, messages.py,
search.py, queue.py) is a mixin on ``SQLiteCore``; ``SQLiteStore``
(__init__.py) composes them.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ...config import StoreConfig
from ...gcpause import gc_paused
from ..api import MailboxGone, MailboxRef, StorageFull, Store, StoreError, StoreUnavailable
from ..blobs import SegmentFiles
from ..notify import DIRECTORY, MAILBOXES, QUEUE, ChangeChannel
from ..revocation import RevocationSignal
from . import schema
from .changelog import ChangeLog
from .writer import GroupCommitWriter, WriteContext

log = logging.getLogger("mailyard.store")

DB_FILE = "index.sqlite3"
_CACHE_MAX = 100_000  # entries of each validity cache
# The writer cuts the WAL file back to this size when it starts the log
# again after a checkpoint (``PRAGMA journal_size_limit``, set in ``_connect``).
WAL_SIZE_LIMIT = 64 << 20

_T = TypeVar("_T")

LIST_LANE = "list"  # _bulk_read's lane of the whole-mailbox listings
# A mailbox of more messages than this is listed off the event loop: its
# UIDs for SELECT, its index data for an IMAP session's cache (about 3 ms of
# reading per 1,000 messages). See ``many_messages``.
LIST_INLINE = 2_000


class _Lane:
    """One lane of ``_bulk_read``: a read-only connection and the one
    thread of its own that runs the lane's reads, in turn. A read waiting
    for its turn is a queued call, not a blocked thread: it takes nothing
    from the event loop's default executor, which the other work handed to
    threads shares (asyncio.to_thread: DKIM signing, spool reads, SORT)."""

    __slots__ = ("conn", "executor")

    def __init__(self, name: str) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mailyard-store-{name}")
        self.conn: sqlite3.Connection | None = None  # used on the lane's thread only


class SQLiteCore(Store):
    """Connections, writer and validity checks of a store on SQLite +
    segment files in ``data_dir``."""

    def __init__(self, data_dir: Path, config: StoreConfig | None = None, background: bool = True) -> None:
        self.config = config or StoreConfig()
        # Other processes serving the same store (``[server] workers``): told
        # of every change committed here (store/notify.py).
        self.peers: ChangeChannel | None = None
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        db_path = self.data_dir / DB_FILE
        self._listeners: list[Callable[[int], None]] = []
        # Validity caches (credentials_current, mailbox_current), dropped when
        # any process sharing the directory revokes something.
        self._revoked = RevocationSignal(self.data_dir / "revocations")
        self._token = self._revoked.value()
        # Moved by every commit of account settings, in any process sharing
        # the directory (a `mailyard user` command beside the server): the
        # same eight shared bytes as the revocation signal, in a file of its own.
        self._settings_changes = RevocationSignal(self.data_dir / "settings-changes")
        self._live: dict[int, tuple[int, int]] = {}  # mailbox id -> (account id, UIDVALIDITY)
        self._epochs: dict[int, int | None] = {}  # account id -> epoch, None: removed
        self._changelogs: dict[int, ChangeLog] = {}  # mailbox id -> its recent changes, oldest use first
        self._changelog_cost = 0  # records held by the logs (changelog.LOG_BUDGET)
        # (mailbox id, since) -> the reads of many changes on the listing
        # lane, each shared by the sessions asking it meanwhile
        # (messages.py ``SharedRead``)
        self._change_reads: dict[tuple[int, int], list[Any]] = {}
        self._pending_saves: set[asyncio.Task[None]] = set()  # cache writes nobody waits for
        self._bulk_lanes: dict[str, _Lane] = {}  # _bulk_read's connections, made on first use
        self._lanes_closed = False
        # Derived records FETCH computed, waiting for the writer to save them
        # between its batches (search.py _upkeep_slice): body id -> record,
        # and the memory they hold (search.py _queued_cost: bounded).
        self._derived_queue: dict[int, Any] = {}
        self._derived_queue_chars = 0
        self._derived_queue_lock = threading.Lock()
        write_conn = self._connect(db_path)
        schema.create(write_conn)
        self._recover(write_conn)
        self.blobs = SegmentFiles(self.data_dir / "blobs", self.config.segment_size, self.config.fsync)
        last = write_conn.execute("SELECT max(id) FROM segments").fetchone()[0]
        if last is None:
            last = 1
            write_conn.execute("INSERT INTO segments(id) VALUES (1)")
        self.blobs.open_for_append(last)
        self._read = self._connect(db_path, readonly=True)
        self._writer = GroupCommitWriter(
            write_conn,
            self,
            self.config.group_commit_max,
            before_commit=self.blobs.sync,
            after_commit=lambda changed: None,
            # Background indexing and compaction run in one process of a
            # multi-process server (``background``), not in all at once.
            idle_work=self._background_work if background else None,
            between=(self._upkeep_wanted, self._upkeep_slice),
            pressing=self._upkeep_pressing,
        )

    def _connect(self, path: Path, readonly: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        # FULL: the WAL is fsynced at every commit, so an acknowledged write survives a crash.
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        # Pages of the database file are read through a memory map, without a
        # pread() per page: reads of a whole mailbox (FETCH 1:* ENVELOPE) seek
        # once per message, and the writer finds its page cache emptied at
        # every transaction that follows another process's commit (``[server]
        # workers``), so it reads the pages of each write again. Writes still
        # go through the WAL (SQLite writes never use the map).
        conn.execute("PRAGMA mmap_size=268435456")
        if readonly:
            conn.execute("PRAGMA query_only=ON")
        else:
            # SQLite writes the WAL from its start again after a checkpoint
            # but never makes the file smaller: without a limit it would keep
            # for good the size of the largest burst of writes, and the WAL
            # carries the bytes of inline bodies (bodies.py ``INLINE_MAX``).
            # The limit is far above the usual run of commits between two
            # checkpoints (1,000 pages, 4 MiB), which never has to grow it again.
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        return conn

    @property
    def _synchronous(self) -> str:
        return "FULL" if self.config.fsync else "OFF"

    @property
    def _cache_synchronous(self) -> str:
        """For a commit of cache data only, which need not be durable: no
        sync of its WAL frames (the next durable commit syncs them). NORMAL,
        not OFF: a commit may run the WAL checkpoint, which copies the mail
        committed before into the database file, and under OFF it would not
        sync that file before the WAL is written over again."""
        return "NORMAL" if self.config.fsync else "OFF"

    async def close(self) -> None:
        await self._flush_upkeep()
        if self._pending_saves:
            await asyncio.gather(*self._pending_saves, return_exceptions=True)
        self.peers = None
        await asyncio.to_thread(self._writer.close)
        if self._writer.lock_fd is not None:
            os.close(self._writer.lock_fd)
            self._writer.lock_fd = None
        self.blobs.close()
        self._read.close()
        loop = asyncio.get_running_loop()
        self._lanes_closed = True  # a read asked from now on is refused
        for lane in list(self._bulk_lanes.values()):  # _bulk_read: big reads off the event loop
            # on the lane's thread: after the reads queued before
            await loop.run_in_executor(lane.executor, _close_lane, lane)
            lane.executor.shutdown(wait=False)
        self._revoked.close()
        self._settings_changes.close()

    # --- reads and writes ---------------------------------------------------------
    async def _bulk_read(self, fn: Callable[[sqlite3.Connection], _T], lane: str = "bulk") -> _T:
        """``fn`` on a read-only connection of its own in a worker thread:
        reads of a whole big mailbox or queue, and searches over the text and
        header indexes, that would hold up the event loop.

        Each ``lane`` has one connection and one thread (``_Lane``) and runs
        its reads one at a time, in turn: however many wait, a lane holds one
        thread (and a share of the GIL the event loop also needs). A mailbox
        listing (``LIST_LANE``, the session's view and index data of a big
        mailbox, a fraction of a second) has a lane of its own, so a SELECT
        never waits behind a text search of many seconds.

        Cancelled (the caller is gone), a read that has not started is
        skipped and one that runs is stopped in the statement it runs or the
        next one it starts (``Connection.interrupt``, and a progress handler
        for the time between statements), so the connection is free for the
        next."""

        if self._lanes_closed:
            raise StoreUnavailable("the store is closed")
        bulk = self._bulk_lanes.get(lane)
        if bulk is None:
            bulk = self._bulk_lanes[lane] = _Lane(lane)
        cancelled = threading.Event()
        running: list[sqlite3.Connection] = []  # the connection while fn runs on it
        guard = threading.Lock()

        def run() -> _T:
            if cancelled.is_set():
                raise asyncio.CancelledError  # nobody waits for it
            # no cyclic garbage collection meanwhile: 100,000 rows are
            # 300,000 new tuples, which would start full collections that
            # hold the GIL, and so the event loop, while they walk every
            # object of the process (rows hold no cycles)
            with gc_paused():
                conn = bulk.conn
                if conn is None:
                    conn = bulk.conn = self._connect(self.data_dir / DB_FILE, readonly=True)
                with guard:
                    running.append(conn)
                # SQLite forgets an interrupt() that lands between two
                # statements; this asks the flag during every statement
                # (every 100,000 virtual-machine steps, not more often: each
                # call takes the GIL back) and stops it as the interrupt does
                conn.set_progress_handler(cancelled.is_set, 100_000)
                try:
                    return fn(conn)
                finally:
                    conn.set_progress_handler(None, 0)
                    with guard:
                        running.clear()
                    if conn.in_transaction:
                        # fn ended inside its BEGIN: an interrupt that landed
                        # on the COMMIT. The connection would stay in that
                        # read transaction: its next BEGIN would fail, and the
                        # WAL could not be checkpointed past its snapshot.
                        try:
                            conn.rollback()
                        except sqlite3.Error:
                            conn.close()  # the next read opens another
                            bulk.conn = None

        try:
            return await asyncio.get_running_loop().run_in_executor(bulk.executor, run)
        except asyncio.CancelledError:
            cancelled.set()
            with guard:
                for conn in running:
                    conn.interrupt()
            raise

    def _q(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        return self._read.execute(sql, args).fetchall()

    def _q1(self, sql: str, args: Sequence[Any] = ()) -> tuple | None:
        return self._read.execute(sql, args).fetchone()

    async def _write(
        self, op: Callable[[sqlite3.Connection, WriteContext], Any], directory: bool = False, revoke: bool = False
    ) -> Any:
        """Run ``op`` in the next group commit; returns its result once durable.
        ``directory``: it changes domains, accounts, aliases or lists (caches
        of lookups forget); ``revoke``: it ends sessions or mailbox references."""
        try:
            return await self._writer.submit(op)
        finally:
            if directory:
                self.directory_version += 1
                if self.peers is not None:
                    self.peers.publish(DIRECTORY)
            if revoke:
                # after the commit: a reader refilling its cache now sees it
                self._revoked.bump()

    def _background_work(self, c: sqlite3.Connection) -> bool | float:
        """Idle-time work on the writer thread (SQLiteStore fills it in)."""
        return False

    def _upkeep_wanted(self, c: sqlite3.Connection) -> bool:
        """Whether cache upkeep waits to run between write batches (search.py fills it in)."""
        return False

    def _upkeep_slice(self, c: sqlite3.Connection) -> bool:
        """One short slice of that upkeep, in its own transaction; False if
        it cannot go on now (search.py fills it in)."""
        return False

    async def _flush_upkeep(self) -> None:
        """At close: save what only this process holds for the upkeep (search.py fills it in)."""

    def _recover(self, c: sqlite3.Connection) -> None:
        """At start, before the writer runs: drop what only the sessions of
        an earlier run needed (messages.py fills it in)."""

    def translate_error(self, exc: BaseException) -> BaseException:
        """Map low-level errors to StoreError kinds the protocols can answer with."""
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
            return StorageFull("the disk is full")
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageFull("the disk is full")
        return exc

    # --- change notification ----------------------------------------------------
    def notify(self, mailbox_ids: Iterable[int]) -> None:
        """Called by the writer (on the event loop) after a commit."""
        ids = list(mailbox_ids)
        if self.peers is not None and ids:
            self.peers.publish(MAILBOXES, ids)
        self.notify_local(ids)

    def attach_peers(self, channel: ChangeChannel) -> None:
        """Exchange change notes with the other workers (store/notify.py);
        the channel runs the handlers on the event loop it is attached to."""
        self.peers = channel
        channel.on(MAILBOXES, self._peer_changes)
        channel.on(DIRECTORY, self._peer_directory)
        channel.on(QUEUE, self._peer_queue)
        # the writers of all workers take turns through one lock file (writer.py)
        self._writer.lock_fd = os.open(self.data_dir / "write.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _peer_changes(self, ids: list[int]) -> None:
        self._writer.wake_idle_work()  # new bodies to index, if this process indexes
        self.notify_local(ids)

    def _peer_directory(self, ids: list[int]) -> None:
        self.directory_version += 1

    def _peer_queue(self, ids: list[int]) -> None:
        if self.on_queue_note is not None:
            self.on_queue_note()

    def notify_local(self, mailbox_ids: Iterable[int]) -> None:
        """Run this process's listeners for ``mailbox_ids``."""
        # STATUS counts (mailboxes.py) of a changed mailbox are read again,
        # also after a change that kept its modseq, uid_next and recent_uid
        status_cache = self.__dict__.get("_status_cache", {})
        for mailbox_id in mailbox_ids:
            status_cache.pop(mailbox_id, None)
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

    # --- validity of session references --------------------------------------
    def _fresh(self) -> None:
        """Drop the validity caches if any process revoked something since
        they were filled (store/revocation.py). The token is read before the
        database, so a revocation committed meanwhile is seen at the next call."""
        token = self._revoked.value()
        if token != self._token:
            self._token = token
            self._live.clear()
            self._epochs.clear()

    def revocation_version(self) -> int:
        # the shared token itself: any process's revocation moves it
        return self._revoked.value()

    async def credentials_current(self, account_id: int, epoch: int) -> bool:
        return self.credentials_known(account_id, epoch)

    def credentials_known(self, account_id: int, epoch: int) -> bool:
        # a read of the local database: answered here, never None
        self._fresh()
        epochs = self._epochs
        if account_id in epochs:
            return epochs[account_id] == epoch
        row = self._q1("SELECT epoch FROM accounts WHERE id = ?", (account_id,))
        if len(epochs) >= _CACHE_MAX:
            epochs.clear()
        # a removed account is remembered as None: its id is never reused
        epochs[account_id] = current = row[0] if row else None
        return current == epoch

    async def mailbox_current(self, mailbox: MailboxRef) -> bool:
        return self._mailbox_current(mailbox)

    def _mailbox_current(self, mailbox: MailboxRef) -> bool:
        self._fresh()
        key = self._live.get(mailbox.id)
        if key is None:
            row = self._q1("SELECT account_id, uid_validity FROM mailboxes WHERE id = ?", (mailbox.id,))
            if row is None:
                return False
            if len(self._live) >= _CACHE_MAX:
                self._live.clear()
            # owner and UIDVALIDITY of an id never change; only deletion
            # (which revokes) ends it
            key = self._live[mailbox.id] = (row[0], row[1])
        return key[0] == mailbox.account_id and key[1] == mailbox.uid_validity

    def _owned(self, mailbox: MailboxRef) -> int:
        """The id of ``mailbox`` for a read, after checking the reference.
        A deletion racing with the read leaves it nothing to read: the rows go
        with the mailbox and its id is never reused."""
        if not self._mailbox_current(mailbox):
            raise MailboxGone(mailbox.id)
        return mailbox.id

    @staticmethod
    def _owned_w(c: sqlite3.Connection, mailbox: MailboxRef) -> int:
        """The same check inside a write's transaction (atomic with the write)."""
        if not c.execute(
            "SELECT 1 FROM mailboxes WHERE id = ? AND account_id = ? AND uid_validity = ?",
            (mailbox.id, mailbox.account_id, mailbox.uid_validity),
        ).fetchone():
            raise MailboxGone(mailbox.id)
        return mailbox.id


def _close_lane(lane: _Lane) -> None:
    """Close a ``_bulk_read`` lane's connection (on the lane's thread)."""
    if lane.conn is not None:
        lane.conn.close()
        lane.conn = None


def more_rows_than(c: sqlite3.Connection, bound: int, sql: str, args: Sequence[Any] = ()) -> bool:
    """Whether the query ``sql`` has more than ``bound`` rows, counting no
    more than ``bound + 1`` of them: some 80 us for 2,001 entries of an
    index, where a count of a mailbox of 200,000 messages takes 6 ms."""
    return c.execute(f"SELECT count(*) FROM ({sql} LIMIT ?)", (*args, bound + 1)).fetchone()[0] > bound


def many_messages(c: sqlite3.Connection, mailbox_id: int) -> bool:
    """Whether the mailbox holds more than ``LIST_INLINE`` messages, to be
    listed off the event loop. Its uid_next - 1 bounds the count (one row):
    only a mailbox that ever received more is counted, up to the bound, so a
    mailbox that once held many and now holds few is listed in place."""
    most = c.execute("SELECT uid_next - 1 FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
    if most is None or most[0] <= LIST_INLINE:
        return False
    return more_rows_than(c, LIST_INLINE, "SELECT 1 FROM messages WHERE mailbox_id = ?", (mailbox_id,))


def many_changes(c: sqlite3.Connection, mailbox_id: int, modseq: int) -> bool:
    """Whether what changed in the mailbox after ``modseq``, read from the
    tables, is more than ``LIST_INLINE`` rows to read: the messages changed
    since (an index range), or the mailbox's remembered expunges (all read,
    to pick those since)."""
    return more_rows_than(
        c, LIST_INLINE, "SELECT 1 FROM messages WHERE mailbox_id = ? AND modseq > ?", (mailbox_id, modseq)
    ) or more_rows_than(c, LIST_INLINE, "SELECT 1 FROM expunged WHERE mailbox_id = ?", (mailbox_id,))


def select_uids(
    c: sqlite3.Connection, sql: str, mailbox_id: int, uids: list[int], column: str = "uid", uid_at: int = 0
) -> list[tuple]:
    """Run ``sql`` (which ends in a mailbox_id condition) for a list of UIDs,
    in chunks that stay under SQLite's bound-parameter limit; ``uid_at`` is
    the position of the UID among the selected columns."""
    out: list[tuple] = []
    if len(uids) > 64:
        lo, hi = min(uids), max(uids)
        if hi - lo < 4 * len(uids):
            # a dense set (1:*, 1000:2000): one range scan of the primary key,
            # filtered here, instead of IN lists of 900 bound parameters
            wanted = set(uids)
            rows = c.execute(f"{sql} AND {column} BETWEEN ? AND ?", (mailbox_id, lo, hi)).fetchall()
            return [r for r in rows if r[uid_at] in wanted]
    for i in range(0, len(uids), 900):
        chunk = uids[i : i + 900]
        marks = ",".join("?" * len(chunk))
        out.extend(c.execute(f"{sql} AND {column} IN ({marks})", (mailbox_id, *chunk)).fetchall())
    return out
