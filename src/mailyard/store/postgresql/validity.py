"""The validity of session references on PostgreSQL: an account's epoch
(``credentials_current``) and a mailbox's owner and UIDVALIDITY
(``mailbox_current``), cached in memory, read through the pool and forgotten
at every revocation heard from any node, so the event loop goes on while
the database answers; and the plain connection whose name marks this store
alive to the other nodes (the rows of mailbox_holds and the queue leases
that name this node), opened again when the database ended it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import psycopg

from ..api import MailboxGone, MailboxRef, StoreUnavailable
from .core import _DOWN, _T, PostgreSQLCore, log

_CACHE_MAX = 100_000  # entries of each validity cache
_UNKNOWN = object()  # not in a validity cache
# Seconds between two looks at the connection that marks this store alive
# (``_watch_marker``). While it is gone, the other nodes take this node's
# holds and queue leases for those of a dead node; an idle connection that
# the database ended is noticed only when used, so it is used this often.
MARKER_CHECK = 5.0
# Reads of a validity entry in a row during each of which a revocation was
# heard (``_read_validity``): the last one is answered, and not kept.
VALIDITY_REREADS = 8


class ValidityMixin(PostgreSQLCore):
    """Checks of session references, and the connection that marks this store alive."""

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
