"""Messages on PostgreSQL: delivery and APPEND (in pipeline mode; the
derived data computed before the transaction and written in it), restored
messages, reads, flags, expunge, copy and move, changes since a
mod-sequence.

Also the expunged rows held across nodes (RFC 2180 4.1.1): each node's
sessions holding a mailbox are one row of mailbox_holds (``hold_expunged``),
which the expunges of every node read; the rows no live holder needs are
purged (``_purge``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import psycopg

from ..api import (
    FLAG_SLICE,
    AlreadyExists,
    AppendItem,
    Changes,
    DeliveryTarget,
    DerivedRecord,
    FlagMode,
    FlagsPartlyStored,
    Mailbox,
    MailboxGone,
    MailboxRef,
    MessageInfo,
    NotFound,
    QuotaExceeded,
    RecentClaim,
    RestoredMessage,
    StoreError,
    derive_record,
)
from ..keywords import keywords_of, spelled, spelled_removal
from ..names import canonical_name
from ..rows import MESSAGE_COLS, flags_set, flags_text, message_row, quota_row
from .core import PostgreSQLCore, log
from .transaction import (
    _BODY_SQL,
    _LIVE_HOLD,
    _QUOTA_SQL,
    _TARGET_QUOTA_SQL,
    _admit_keywords,
    _AfterCommit,
    _all,
    _bump_modseq,
    _collect_targets,
    _define_keywords,
    _defined_keywords,
    _fit_keywords,
    _fitted_targets,
    _lock_mailboxes,
    _mailbox_quota,
    _message_rows,
    _one,
    _queue_targets,
    _release_bodies,
    _remember_expunged,
    _remote_hold,
    _rows,
    _save_body_rows,
    _save_derived,
    _save_sort_keys,
    _store_body,
    _Tx,
)

_PUBLISH_HOLD = ("INSERT INTO mailbox_holds(mailbox_id, node, seen_modseq, gen) VALUES (%s, %s, %s, %s)"
                 " ON CONFLICT (mailbox_id, node) DO UPDATE SET seen_modseq = excluded.seen_modseq,"
                 " gen = excluded.gen WHERE mailbox_holds.gen < excluded.gen")


class MessagesMixin(PostgreSQLCore):
    """Messages, flags, UIDs, expunge, copy, changes, and the holds of expunged rows."""

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
        if len(targets) == 1 and not keywords_of(targets[0].flags):
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
            # without the keywords a mailbox has no room for (store/keywords.py)
            pending = await _queue_targets(c, body_id, len(body), await _fitted_targets(c, targets))
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
                          recent: RecentClaim | None = None, left_out: set[str] | None = None) -> list[int]:
        if not items:
            return []
        batch = list(items)
        records = await self._derive([item.data for item in batch])

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> tuple[list[int], bool, set[str]]:
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
            flag_sets = [item.flags for item in batch]
            keywords = any(keywords_of(flags) for flags in flag_sets)
            left: set[str] = set()
            if keywords:
                if await owned.fetchone() is None:
                    raise MailboxGone(mailbox.id)
                if left_out is None:
                    # the keywords all fit, or nothing is written (store/keywords.py)
                    flag_sets = await _admit_keywords(c, mailbox.id, flag_sets)
                else:
                    flag_sets, left = await _fit_keywords(c, mailbox.id, flag_sets)
            pending = []
            for item, body_id, flags in zip(batch, body_ids, flag_sets, strict=True):
                target = DeliveryTarget(mailbox.id, b"", flags, item.internal_date)
                pending += await _queue_targets(c, body_id, len(item.data), [target])
            if not keywords and await owned.fetchone() is None:
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
            return uids, claimed, left

        uids, claimed, left = await self._write(op, pipeline=True)
        if left_out is not None:
            left_out.update(left)
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
            # keywords NULL: the defined keywords are read from the messages,
            # restored ones too, when next needed (transaction.py _defined_keywords)
            await c.execute("UPDATE mailboxes SET uid_next = greatest(uid_next, %s),"
                            " highest_modseq = greatest(highest_modseq, %s), keywords = NULL WHERE id = %s",
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
        everything = sorted(set(uids))
        changed_all: list[MessageInfo] = []
        failed_all: list[int] = []
        # FLAG_SLICE messages a transaction (Store.store_flags): the
        # mailbox row stays locked for one slice at a time
        for start in range(0, max(len(everything), 1), FLAG_SLICE):
            try:
                changed, failed = await self._write(self._flags_op(
                    mailbox, everything[start:start + FLAG_SLICE], flag_set, mode, unchanged_since))
            except StoreError as exc:
                if changed_all or failed_all:
                    raise FlagsPartlyStored(changed_all, failed_all, exc) from exc
                raise
            changed_all += changed
            failed_all += failed
        return changed_all, failed_all

    def _flags_op(self, mailbox: MailboxRef, wanted: list[int], flag_set: frozenset[str], mode: FlagMode,
                  unchanged_since: int | None) -> Callable[[psycopg.AsyncConnection, _Tx],
                                                           Awaitable[tuple[list[MessageInfo], list[int]]]]:
        """The write of one slice of ``store_flags``."""

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> tuple[list[MessageInfo], list[int]]:
            mailbox_id = await self._owned_w(c, mailbox)
            given = flag_set
            if keywords_of(given):
                # as the mailbox spells them (store/keywords.py)
                defined, saved = await _defined_keywords(c, mailbox_id)
                given = spelled_removal(defined, given) if mode == "remove" else spelled(defined, [given])[0][0]
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
                new = current | given if mode == "add" else current - given if mode == "remove" else given
                if new != current:
                    changed.append((uid, flags_text(new)))
            if not changed:
                return [], failed
            if mode != "remove" and keywords_of(given):
                # defined once a message has them (KeywordLimit: nothing written)
                await _define_keywords(c, mailbox_id, defined, saved, given)
            modseq = await _bump_modseq(c, mailbox_id)
            await c.execute(
                "UPDATE messages m SET flags = v.flags, modseq = %s FROM unnest(%s::bigint[], %s::text[]) AS v(uid, flags)"
                " WHERE m.mailbox_id = %s AND m.uid = v.uid",
                (modseq, [u for u, _ in changed], [t for _, t in changed], mailbox_id))
            tx.changed.add(mailbox_id)
            infos = await _all(c, f"SELECT {MESSAGE_COLS} FROM messages WHERE mailbox_id = %s AND uid = ANY(%s)"
                                  " ORDER BY uid", (mailbox_id, [u for u, _ in changed]))
            return [message_row(r) for r in infos], failed

        return op

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
            # RFC 9051 6.4.7: the flags go with the copy, but for keywords the
            # target has no room for (store/keywords.py)
            texts = sorted({r[4] for r in rows})
            fitted_sets, _ = await _fit_keywords(c, dst_id, [flags_set(t) for t in texts])
            kept = dict(zip(texts, map(flags_text, fitted_sets), strict=True))
            rows = [(*r[:4], kept[r[4]], *r[5:]) for r in rows]
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
