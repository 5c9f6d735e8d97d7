"""Messages in mailboxes: deliver and append, flags, expunge, copy and move;
reading index rows and bytes; what changed since a mod-sequence.

A message row holds its mailbox, UID, flags, INTERNALDATE, mod-sequence and
per-recipient trace prefix, and points at a shared body (bodies.py). Every
change takes the mailbox's next mod-sequence (RFC 7162 3.1); an expunged UID
is remembered with the mod-sequence that removed it (``expunged``), for
VANISHED and for sessions catching up. UIDs come from ``mailboxes.uid_next``
and are never reused in a mailbox (RFC 9051 2.3.1.1). Every row inserted
here gets the time of the write as its save date (RFC 8514). Quotas (RFC
9208) are checked here, in the write's transaction, against the account's
running totals (schema.py USAGE_SCHEMA keeps them).

Expunged but still held: an IMAP session keeps serving FETCH of a message
another session expunged until it has told its client (RFC 2180 4.1.1), so
while some session holds the mailbox (``hold_expunged``) an expunge keeps the
row, moved under the negated mailbox id: no mailbox's query sees it, its
body keeps its reference, and reads ``expunged=True`` find it. Once every
holder has announced the expunge the row goes and its body reference is
released (``_purge_expunged``); rows left by an earlier run go at start
(``_recover``), since no session of that run is left to need them.

Across processes (``share_holds``): each serving process publishes the
lowest mod-sequence its holders of each mailbox have announced (holds.py).
With ``[server] workers`` above 1 an expunge always keeps the rows, since a
session of another process may be between its hold and its first read of
the mailbox; the purge that follows the commit, in a later transaction,
deletes what no holder of any live process still needs. A process opening
the store drops only what no live process holds, so a worker started
again leaves the other workers' sessions their messages.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ...config import StoreConfig
from ..api import (
    FLAG_SLICE,
    AppendItem,
    Changes,
    DeliveryTarget,
    FlagMode,
    FlagsPartlyStored,
    MailboxGone,
    MailboxRef,
    MessageInfo,
    NotFound,
    Quota,
    QuotaExceeded,
    RecentClaim,
    StoreError,
)
from ..blobs import BODY_DATA, BODY_PLACE
from ..keywords import keywords_of, spelled, spelled_removal
from ..notify import ChangeChannel
from ..rows import MESSAGE_COLS, QUOTA_COLS, flags_set, flags_text, message_row, quota_row
from . import changelog
from .bodies import BodiesMixin, release_bodies
from .changelog import ChangeLog
from .core import LIST_LANE, many_changes, many_messages, select_uids
from .holds import HoldBoard
from .keywords import admit_keywords, define_keywords, defined_keywords, fit_keywords
from .writer import WriteContext

log = logging.getLogger("mailyard.store")

# Flags text (octets read and written) one slice of store_flags rewrites at
# most, besides FLAG_SLICE messages: a row costs some 5 us plus 85 us a KiB
# of flags (its row and its messages_flags index entry), so a slice of
# messages with many keywords holds the writer some 10-20 ms, as one of
# FLAG_SLICE messages with few does.
FLAG_SLICE_OCTETS = 128 * 1024

PUBLISH_DELAY = 0.1  # seconds a rise of this process's holds may wait to be published (coalescing)

def mailbox_quota(c: sqlite3.Connection, mailbox_id: int) -> Quota:
    """The quota of the account owning ``mailbox_id``, in the caller's transaction."""
    row = c.execute(
        f"SELECT {QUOTA_COLS} FROM accounts WHERE id = (SELECT account_id FROM mailboxes WHERE id = ?)",
        (mailbox_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"mailbox {mailbox_id} does not exist")
    return quota_row(row)


def check_quota(c: sqlite3.Connection, mailbox_id: int, octets: int, messages: int) -> None:
    """RFC 9208 5.1 / 5.2: refuse (QuotaExceeded) a write that would take the
    account of ``mailbox_id`` over its STORAGE or MESSAGE limit."""
    if not mailbox_quota(c, mailbox_id).fits(octets, messages):
        raise QuotaExceeded("over quota", [mailbox_id])


def _read_listing(c: sqlite3.Connection, mailbox_id: int) -> tuple[int, dict[int, MessageInfo]]:
    """Every message of a mailbox by UID, in UID order, and the mailbox's
    highest mod-sequence they are the state at (one read snapshot): a
    listing read by ``_bulk_read``, in its thread."""
    c.execute("BEGIN")
    try:
        box = c.execute("SELECT highest_modseq FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
        if box is None:
            raise MailboxGone(mailbox_id)  # deleted since the reference was checked
        rows = c.execute(f"SELECT {MESSAGE_COLS} FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,))
        return box[0], {r[1]: message_row(r) for r in rows}
    finally:
        c.execute("COMMIT")


class SharedRead:
    """A read of many changes on the listing lane (``_changes_off_loop``),
    shared by the sessions that ask the same question while it waits or
    runs. ``started`` is set in the lane's thread before its snapshot
    begins and ``top`` (the mailbox's highest mod-sequence in it) once the
    snapshot is read; ``waiters`` counts the sessions awaiting it, and the
    last one to leave stops it."""

    __slots__ = ("started", "task", "top", "waiters")

    def __init__(self) -> None:
        self.started = False
        self.top: int | None = None
        self.waiters = 0
        self.task: asyncio.Future[Changes] | None = None

    def serves(self, top: int) -> bool:
        """Whether a session that saw the mailbox at ``top`` may take this
        read's answer: the read has not started (its snapshot begins later,
        after ``top`` was committed), or its snapshot holds ``top``, so the
        answer holds every change the session may have been told of."""
        if not self.started:
            return True
        seen = self.top
        return seen is not None and seen >= top


def _read_changes(c: sqlite3.Connection, mailbox_id: int, modseq: int, shared: SharedRead | None = None) -> Changes:
    """What changed in a mailbox after ``modseq``, from the tables in one
    read snapshot (``Store.changes_since`` without the change log);
    ``shared`` is told where the snapshot stands."""
    if shared is not None:
        shared.started = True  # (before the snapshot: see SharedRead.serves)
    c.execute("BEGIN")
    try:
        box = c.execute("SELECT highest_modseq FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
        if box is None:
            raise MailboxGone(mailbox_id)  # deleted since the reference was checked
        if shared is not None:
            shared.top = box[0]
        changed = c.execute(
            f"SELECT {MESSAGE_COLS} FROM messages WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
            (mailbox_id, modseq),
        ).fetchall()
        vanished = c.execute(
            "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid", (mailbox_id, modseq)
        ).fetchall()
    finally:
        c.execute("COMMIT")
    return Changes(box[0], [message_row(r) for r in changed], [r[0] for r in vanished])


def bump_modseq(c: sqlite3.Connection, mailbox_id: int) -> int:
    """Take the mailbox's next mod-sequence value (RFC 7162 3.1)."""
    row = c.execute(
        "UPDATE mailboxes SET highest_modseq = highest_modseq + 1 WHERE id = ? RETURNING highest_modseq",
        (mailbox_id,),
    ).fetchone()
    if row is None:
        raise NotFound("no such mailbox")
    return row[0]


def drop_mailbox_messages(c: sqlite3.Connection, mailbox_id: int) -> None:
    """Remove every message of a mailbox (which is going away), the expunged
    ones still held, and its expunge memory."""
    body_ids = [r[0] for r in c.execute("SELECT body_id FROM messages WHERE mailbox_id IN (?, ?)",
                                        (mailbox_id, -mailbox_id))]
    c.execute("DELETE FROM messages WHERE mailbox_id IN (?, ?)", (mailbox_id, -mailbox_id))
    c.execute("DELETE FROM expunged WHERE mailbox_id = ?", (mailbox_id,))
    release_bodies(c, body_ids)


def check_targets(c: sqlite3.Connection, targets: Sequence[DeliveryTarget], body_len: int) -> None:
    """QuotaExceeded naming every target with ``enforce_quota`` whose account
    one more message of this size would take over quota (RFC 9208 5)."""
    over = [t.mailbox_id for t in targets if t.enforce_quota
            and not mailbox_quota(c, t.mailbox_id).fits(len(t.trace_prefix) + body_len, 1)]
    if over:
        raise QuotaExceeded("over quota", over)


def insert_targets(
    c: sqlite3.Connection, ctx: WriteContext, body_id: int, body_len: int,
    targets: Sequence[DeliveryTarget], fit: bool = True,
) -> list[int]:
    """Index rows for one stored body in each target mailbox (shared by
    ``deliver`` and the outbound queue's combined local+queued commit).
    The caller runs ``check_targets`` before it writes the body, so a
    delivery refused for quota writes nothing at all. ``fit`` False: the
    targets' flags are as their mailboxes keep them already (``append_many``)."""
    now = time.time()
    uids = []
    for t in targets:
        row = c.execute(
            "UPDATE mailboxes SET uid_next = uid_next + 1, highest_modseq = highest_modseq + 1"
            " WHERE id = ? RETURNING uid_next - 1, highest_modseq",
            (t.mailbox_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"mailbox {t.mailbox_id} does not exist")
        uid, modseq = row
        # a delivered message goes in without the keywords its mailbox has no room for
        flags = fit_keywords(c, t.mailbox_id, [t.flags])[0][0] if fit else t.flags
        c.execute(
            "INSERT INTO messages(mailbox_id, uid, body_id, prefix, size, flags, internal_date, modseq, save_date)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                t.mailbox_id, uid, body_id, t.trace_prefix, len(t.trace_prefix) + body_len,
                flags_text(flags), t.internal_date if t.internal_date is not None else now, modseq, now,
            ),
        )
        ctx.changed.add(t.mailbox_id)
        uids.append(uid)
    return uids


class MessagesMixin(BodiesMixin):
    """Messages of mailboxes: writes and reads."""

    def __init__(self, data_dir: Path, config: StoreConfig | None = None, background: bool = True) -> None:
        # hold_expunged: mailbox id -> {holder: mod-sequence its expunges are announced up to};
        # mailbox id -> lowest expunge mod-sequence of its held rows (a hint: may be stale low).
        # Shared by the event loop (holds) and the writer thread (expunge, purge).
        self._holds: dict[int, dict[object, int]] = {}
        self._held_by: dict[object, int] = {}
        self._held_rows: dict[int, int] = {}
        self._purging: set[int] = set()
        self._holds_lock = threading.Lock()
        # Holds shared with the other processes of the data directory (holds.py):
        # what this process's board says (mailbox id -> lowest announced
        # mod-sequence, never above the truth) and the rises not yet published.
        self._board = HoldBoard(Path(data_dir) / "holds")
        self._published: dict[int, int] = {}
        self._rises: set[int] = set()
        self._rose: set[int] = set()  # published rises whose freed rows are not purged yet
        self._publish_timer: asyncio.TimerHandle | None = None
        self._keep_all = False  # every expunge keeps its rows until a purge (share_holds)
        super().__init__(data_dir, config, background)

    def _recover(self, c: sqlite3.Connection) -> None:
        """Drop the held rows no session of a live process needs: all of them
        when this is the only process (a start), else those every other
        process has announced (a worker started again, a command run beside
        the server)."""
        super()._recover(c)
        if c.execute("SELECT 1 FROM messages WHERE mailbox_id < 0 LIMIT 1").fetchone() is None:
            return  # nothing held: no write
        c.execute("BEGIN IMMEDIATE")
        try:
            others = self._board.others()  # inside the write lock: see _purge_expunged
            rows = c.execute(
                "SELECT g.mailbox_id, g.uid, g.body_id, coalesce(e.modseq, 0) FROM messages g"
                " LEFT JOIN expunged e ON e.mailbox_id = -g.mailbox_id AND e.uid = g.uid"
                " WHERE g.mailbox_id < 0").fetchall()
            doomed = [r for r in rows if r[3] <= others.get(-r[0], r[3])]
            c.executemany("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", [(r[0], r[1]) for r in doomed])
            release_bodies(c, [r[2] for r in doomed])
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        if doomed:
            log.info("dropped %d expunged messages no live session holds", len(doomed))
        if len(rows) > len(doomed):
            log.info("kept %d expunged messages sessions of other processes hold", len(rows) - len(doomed))

    def share_holds(self, keep_expunged: bool = True) -> None:
        """Publish this process's holds to the other processes opening the
        data directory (holds.py). ``keep_expunged`` (other processes serve
        sessions too): every expunge keeps its rows until the purge that
        follows has asked them; else (a single server, beside which only
        commands run) an expunge decides from this process's holds."""
        with self._holds_lock:
            self._keep_all = keep_expunged
            self._board.join()
            self._published = self._lowest_holds()
            self._board.publish(self._published)

    def _lowest_holds(self) -> dict[int, int]:
        """Mailbox id -> the lowest mod-sequence its holders here announced (with _holds_lock)."""
        return {m: min(holders.values()) for m, holders in self._holds.items() if holders}

    def _remove_rows(self, c: sqlite3.Connection, mailbox_id: int, rows: Sequence[tuple[int, int]],
                     modseq: int, holder: object) -> None:
        """Expunge (uid, body_id) rows inside a write: kept under the negated
        mailbox id while a session other than ``holder`` (the caller, which
        announces the expunge at once) holds the mailbox, or always when the
        holds are shared with other processes (``share_holds``), else deleted."""
        with self._holds_lock:
            # shared: a session of another process may hold it unseen (its hold
            # is published before it reads, but this transaction's check could
            # come between the two); the purge after the commit decides
            held = self._keep_all or any(h is not holder for h in self._holds.get(mailbox_id, ()))
            if held:
                self._held_rows[mailbox_id] = min(self._held_rows.get(mailbox_id, modseq), modseq)
        if held:
            c.executemany("UPDATE messages SET mailbox_id = ? WHERE mailbox_id = ? AND uid = ?",
                          [(-mailbox_id, mailbox_id, r[0]) for r in rows])
            # the account's usage (RFC 9208) drops now, as for a delete; the
            # USAGE_SCHEMA trigger finds no mailbox for the held row when it goes
            size = sum(r[0] for r in select_uids(c, "SELECT size FROM messages WHERE mailbox_id = ?",
                                                 -mailbox_id, [r[0] for r in rows]))
            c.execute("UPDATE accounts SET used_storage = used_storage - ?, used_messages = used_messages - ?"
                      " WHERE id = (SELECT account_id FROM mailboxes WHERE id = ?)", (size, len(rows), mailbox_id))
            return
        c.executemany("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", [(mailbox_id, r[0]) for r in rows])
        release_bodies(c, [r[1] for r in rows])

    def hold_expunged(self, holder: object, mailbox: MailboxRef | None, seen_modseq: int = 0) -> None:
        mailbox_id = None if mailbox is None else mailbox.id
        with self._holds_lock:
            before = self._held_by.pop(holder, None)
            if before is not None:
                holders = self._holds.get(before, {})
                holders.pop(holder, None)
                if not holders:
                    self._holds.pop(before, None)
            if mailbox_id is not None:
                self._holds.setdefault(mailbox_id, {})[holder] = seen_modseq
                self._held_by[holder] = mailbox_id
            touched = {m for m in (before, mailbox_id) if m is not None}
            due = [m for m in touched if self._purge_due(m)]
            if self._board.joined:
                self._share(touched)
        for m in due:
            self._purge_expunged(m)

    def _share(self, mailboxes: set[int]) -> None:
        """Bring this process's board up to date for ``mailboxes`` (with
        _holds_lock): a fall at once, before the holder reads the mailbox;
        rises (an announce, a holder leaving) coalesced a moment later."""
        fell = False
        for m in mailboxes:
            holders = self._holds.get(m)
            now = min(holders.values()) if holders else None
            was = self._published.get(m)
            if now is not None and (was is None or now < was):
                fell = True
            elif now != was:
                self._rises.add(m)
        if fell:
            self._publish_now()
        if (self._rises or self._rose) and self._publish_timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop: what the rises freed goes at a later purge
                self._publish_now()
                return
            self._publish_timer = loop.call_later(PUBLISH_DELAY, self._publish_rises)

    def _publish_now(self) -> None:
        """Publish every hold of this process, noting in ``_rose`` the
        mailboxes whose published value rose or went (with _holds_lock)."""
        lowest = self._lowest_holds()
        rose = [m for m, was in self._published.items() if lowest.get(m, was + 1) > was]
        self._rises.clear()
        try:
            self._board.publish(lowest)
        except OSError as exc:  # the board says less than the truth: other processes only keep more
            log.warning("holds of expunged messages not published: %s", exc)
            return
        self._published = lowest
        self._rose.update(rose)

    def _publish_rises(self) -> None:
        """Publish the rises, then purge what they may have freed in the
        mailboxes that have held rows (another process's expunges)."""
        with self._holds_lock:
            self._publish_timer = None
            if not self._board.joined:
                return
            if self._rises:
                self._publish_now()
            rose, self._rose = self._rose, set()
        for m in rose:
            if self._q1("SELECT 1 FROM messages WHERE mailbox_id = ? LIMIT 1", (-m,)) is not None:
                with self._holds_lock:
                    busy = m in self._purging
                    if busy:  # that purge may have read the board before this rise: look again
                        self._rose.add(m)
                        self._share(set())
                if not busy:
                    self._purge_expunged(m)

    def attach_peers(self, channel: ChangeChannel) -> None:
        super().attach_peers(channel)
        self.share_holds()

    async def close(self) -> None:
        await super().close()
        self._unshare()

    def _unshare(self) -> None:
        """The store closes: this process holds nothing any more."""
        with self._holds_lock:
            if self._publish_timer is not None:
                self._publish_timer.cancel()
                self._publish_timer = None
            self._board.leave()

    def _removed(self, mailbox_id: int) -> None:
        """After the commit of an expunge: purge now what nobody here holds
        (shared holds keep every row until a purge asks the other processes)."""
        with self._holds_lock:
            due = self._keep_all and self._purge_due(mailbox_id)
        if due:
            self._purge_expunged(mailbox_id)

    def _purge_due(self, mailbox_id: int) -> bool:
        """Whether held rows of the mailbox may go now (with _holds_lock)."""
        lowest = self._held_rows.get(mailbox_id)
        if lowest is None or mailbox_id in self._purging:
            return False
        holders = self._holds.get(mailbox_id)
        return not holders or min(holders.values()) >= lowest

    def _purge_expunged(self, mailbox_id: int) -> None:
        """Delete, in the next write, the held rows of a mailbox that every
        holder has announced as expunged, releasing their bodies."""

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            with self._holds_lock:
                holders = self._holds.get(mailbox_id)
                local = min(holders.values()) if holders else None
            # Read in the write transaction, after the expunges of the rows:
            # a session of another process that holds the mailbox later
            # read it after they were expunged, so it never sees them.
            other = self._board.others().get(mailbox_id) if self._board.joined else None
            upto = local if other is None else other if local is None else min(local, other)
            rows = c.execute(
                "SELECT g.uid, g.body_id, coalesce(e.modseq, 0) FROM messages g"
                " LEFT JOIN expunged e ON e.mailbox_id = ? AND e.uid = g.uid WHERE g.mailbox_id = ?",
                (mailbox_id, -mailbox_id),
            ).fetchall()
            doomed = [r for r in rows if upto is None or r[2] <= upto]
            c.executemany("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?",
                          [(-mailbox_id, r[0]) for r in doomed])
            release_bodies(c, [r[1] for r in doomed])
            # what only other processes still hold is theirs to purge (_publish_rises)
            left = [r[2] for r in rows if local is not None and r[2] > local]
            with self._holds_lock:
                if left:
                    self._held_rows[mailbox_id] = min(left)
                else:
                    self._held_rows.pop(mailbox_id, None)

        def done(fut: asyncio.Future[None]) -> None:
            with self._holds_lock:
                self._purging.discard(mailbox_id)
                again = self._purge_due(mailbox_id)
            if not fut.cancelled() and fut.exception() is not None:
                log.warning("expunged messages of mailbox %d not yet dropped: %s", mailbox_id, fut.exception())
            elif again:
                self._purge_expunged(mailbox_id)

        try:
            fut = self._writer.submit(op)
        except RuntimeError:  # no event loop (shutting down): what is left goes at the next start
            return
        with self._holds_lock:
            self._purging.add(mailbox_id)
        fut.add_done_callback(done)

    async def deliver(self, body: bytes, targets: Sequence[DeliveryTarget]) -> list[int]:
        if not targets:
            return []

        def op(c: sqlite3.Connection, ctx: WriteContext) -> list[int]:
            check_targets(c, targets, len(body))  # before the body is written
            body_id = self._store_body(c, body, len(targets))
            return insert_targets(c, ctx, body_id, len(body), targets)

        return await self._write(op)

    async def append_many(self, mailbox: MailboxRef, items: Sequence[AppendItem],
                          recent: RecentClaim | None = None, left_out: set[str] | None = None) -> list[int]:
        if not items:
            return []
        batch = list(items)
        wanted = [item.flags for item in batch]

        def op(c: sqlite3.Connection, ctx: WriteContext) -> tuple[list[int], int | None, set[str]]:
            mailbox_id = self._owned_w(c, mailbox)
            # RFC 9208 / RFC 3502: the whole MULTIAPPEND fits, or none of it is written
            check_quota(c, mailbox_id, sum(len(item.data) for item in batch), len(batch))
            left: set[str] = set()
            if left_out is None:
                # the keywords all fit, or none is written (store/keywords.py)
                flag_sets = admit_keywords(c, mailbox_id, wanted)
            else:
                flag_sets, left = fit_keywords(c, mailbox_id, wanted)
            # one SAVEPOINT in one commit: every message or none (RFC 3502)
            uids: list[int] = []
            for item, flags in zip(batch, flag_sets, strict=True):
                body_id = self._store_body(c, item.data, 1)
                target = DeliveryTarget(mailbox_id, b"", flags, item.internal_date)
                uids += insert_targets(c, ctx, body_id, len(item.data), [target], fit=False)
            # RFC 3501 2.3.2: \Recent for the appending session, in this
            # write, unless an earlier message is still unclaimed (that one
            # goes to the first session told of it, with these)
            claimed = recent is not None and c.execute(
                "UPDATE mailboxes SET recent_uid = ? WHERE id = ? AND recent_uid = ?",
                (uids[-1], mailbox_id, uids[0] - 1)).rowcount > 0
            return uids, uids[0] - 1 if claimed else None, left

        uids, first, left = await self._write(op)
        if left_out is not None:
            left_out.update(left)
        if recent is not None and first is not None:
            recent.first, recent.last = first, uids[-1]
            if self._claimed.get(mailbox.id, -1) < uids[-1]:
                self._claimed[mailbox.id] = uids[-1]  # (mailboxes.py claim_recent: known without a read)
        return uids

    async def store_flags(
        self,
        mailbox: MailboxRef,
        uids: Sequence[int],
        flags: Iterable[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> tuple[list[MessageInfo], list[int]]:
        flag_set = frozenset(flags)
        pending = sorted(set(uids))
        changed_all: list[MessageInfo] = []
        failed_all: list[int] = []
        while True:
            try:
                changed, failed, last = await self._write(self._flags_op(
                    mailbox, pending[:FLAG_SLICE], flag_set, mode, unchanged_since))
            except StoreError as exc:
                if changed_all or failed_all:
                    raise FlagsPartlyStored(changed_all, failed_all, exc) from exc
                raise
            changed_all += changed
            failed_all += failed
            pending = pending[bisect.bisect_right(pending, last):] if last is not None else []
            if not pending:
                return changed_all, failed_all

    def _flags_op(self, mailbox: MailboxRef, wanted: list[int], flag_set: frozenset[str], mode: FlagMode,
                  unchanged_since: int | None) -> Callable[[sqlite3.Connection, WriteContext],
                                                           tuple[list[MessageInfo], list[int], int | None]]:
        """The write of one slice of ``store_flags``: the messages of ``wanted``
        up to the one where the flags text read and written passes
        ``FLAG_SLICE_OCTETS``, and the last UID of ``wanted`` it did."""

        def op(c: sqlite3.Connection, ctx: WriteContext) -> tuple[list[MessageInfo], list[int], int | None]:
            mailbox_id = self._owned_w(c, mailbox)
            given = flag_set
            if keywords_of(given):
                # as the mailbox spells them (store/keywords.py)
                defined, saved = defined_keywords(c, mailbox_id)
                given = spelled_removal(defined, given) if mode == "remove" else spelled(defined, [given])[0][0]
            changed: list[tuple[int, str]] = []
            failed: list[int] = []
            rows = select_uids(c, "SELECT uid, flags, modseq FROM messages WHERE mailbox_id = ?", mailbox_id, wanted)
            rows.sort()
            octets, last = 0, None
            for uid, text, modseq in rows:
                if octets > FLAG_SLICE_OCTETS:
                    break
                last = uid
                # RFC 7162 3.1.3: UNCHANGEDSINCE fails messages modified after it.
                if unchanged_since is not None and modseq > unchanged_since:
                    failed.append(uid)
                    continue
                current = flags_set(text)
                if mode == "add":
                    new = current | given
                elif mode == "remove":
                    new = current - given
                else:
                    new = given
                if new != current:
                    changed.append((uid, flags_text(new)))
                    # a row's rewrite costs with its old and new flags, kept
                    # in the row and in the messages_flags index
                    octets += len(text) + len(changed[-1][1])
            else:
                last = wanted[-1] if wanted else None
            if not changed:
                return [], failed, last
            if mode != "remove" and keywords_of(given):
                # defined once a message has them (KeywordLimit: nothing written)
                define_keywords(c, mailbox_id, defined, saved, given)
            modseq = bump_modseq(c, mailbox_id)
            c.executemany(
                "UPDATE messages SET flags = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?",
                [(text, modseq, mailbox_id, uid) for uid, text in changed],
            )
            ctx.changed.add(mailbox_id)
            infos = select_uids(c, f"SELECT {MESSAGE_COLS} FROM messages WHERE mailbox_id = ?", mailbox_id,
                                 [uid for uid, _ in changed], uid_at=1)
            return [message_row(r) for r in infos], failed, last

        return op

    async def expunge(self, mailbox: MailboxRef, uids: Sequence[int], holder: object = None) -> list[int]:
        wanted = list(uids)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> list[int]:
            mailbox_id = self._owned_w(c, mailbox)
            rows = select_uids(c, "SELECT uid, body_id FROM messages WHERE mailbox_id = ?", mailbox_id, wanted)
            if not rows:
                return []
            modseq = bump_modseq(c, mailbox_id)
            self._remove_rows(c, mailbox_id, rows, modseq, holder)
            c.executemany(
                "INSERT OR REPLACE INTO expunged(mailbox_id, uid, modseq) VALUES (?, ?, ?)",
                [(mailbox_id, r[0], modseq) for r in rows],
            )
            ctx.changed.add(mailbox_id)
            return sorted(r[0] for r in rows)

        gone = await self._write(op)
        if gone:
            self._removed(mailbox.id)
        return gone

    async def copy_messages(
        self, src: MailboxRef, uids: Sequence[int], dst: MailboxRef, move: bool = False, holder: object = None,
    ) -> list[tuple[int, int]]:
        wanted = list(uids)
        if dst.account_id != src.account_id:
            raise MailboxGone(dst.id, "the target mailbox does not exist")

        def op(c: sqlite3.Connection, ctx: WriteContext) -> list[tuple[int, int]]:
            src_mailbox_id = self._owned_w(c, src)
            try:
                dst_mailbox_id = self._owned_w(c, dst)
            except MailboxGone as exc:
                raise MailboxGone(dst.id, "the target mailbox does not exist") from exc
            rows = select_uids(
                c,
                "SELECT uid, body_id, prefix, size, flags, internal_date FROM messages WHERE mailbox_id = ?",
                src_mailbox_id,
                wanted,
            )
            if not rows:
                return []
            if not move:
                # RFC 9208 5: a copy adds to the account's usage; a move
                # within the account (one quota root) leaves it as it is
                check_quota(c, dst_mailbox_id, sum(r[3] for r in rows), len(rows))
            rows.sort(key=lambda r: r[0])
            now = time.time()
            first = c.execute(
                "UPDATE mailboxes SET uid_next = uid_next + ?, highest_modseq = highest_modseq + 1"
                " WHERE id = ? RETURNING uid_next - ?, highest_modseq",
                (len(rows), dst_mailbox_id, len(rows)),
            ).fetchone()
            start, modseq = first
            pairs = []
            # RFC 9051 6.4.7: the flags go with the copy, but for keywords the
            # target has no room for (store/keywords.py)
            texts = sorted({r[4] for r in rows})
            kept = dict(zip(texts, map(flags_text, fit_keywords(c, dst_mailbox_id, list(map(flags_set, texts)))[0]),
                            strict=True))
            for i, (uid, body_id, prefix, size, flags, internal_date) in enumerate(rows):
                flags = kept[flags]
                c.execute(
                    "INSERT INTO messages(mailbox_id, uid, body_id, prefix, size, flags, internal_date, modseq,"
                    " save_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    # RFC 8514 2: the copy is saved now; INTERNALDATE is kept (RFC 9051 6.4.7)
                    (dst_mailbox_id, start + i, body_id, prefix, size, flags, internal_date, modseq, now),
                )
                c.execute("UPDATE bodies SET refs = refs + 1 WHERE id = ?", (body_id,))
                pairs.append((uid, start + i))
            ctx.changed.add(dst_mailbox_id)
            if move:
                src_modseq = bump_modseq(c, src_mailbox_id)
                self._remove_rows(c, src_mailbox_id, [(r[0], r[1]) for r in rows], src_modseq, holder)
                c.executemany(
                    "INSERT OR REPLACE INTO expunged(mailbox_id, uid, modseq) VALUES (?, ?, ?)",
                    [(src_mailbox_id, r[0], src_modseq) for r in rows],
                )
                ctx.changed.add(src_mailbox_id)
            return pairs

        pairs = await self._write(op)
        if move and pairs:
            self._removed(src.id)
        return pairs

    async def list_messages(self, mailbox: MailboxRef) -> list[MessageInfo]:
        mailbox_id = self._owned(mailbox)
        c = self._read

        def load() -> list[MessageInfo]:
            rows = c.execute(f"SELECT {MESSAGE_COLS} FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,))
            return [message_row(r) for r in rows]

        # Each session that selects the mailbox lists it (SELECT, the first
        # FETCH, STATUS RECENT): from one list kept current by the change
        # log (changelog.py), within the logs' memory budget.
        out: list[MessageInfo] | None = None
        c.execute("BEGIN")  # one read snapshot: the list is the state at the log's top
        try:
            log = self._current_log(c, mailbox_id, None)
            before = log.cost()
            if log.listed():
                out, _loaded = log.messages(load)  # brought forward: the changes' cost
            elif not many_messages(c, mailbox_id):
                out, _loaded = log.messages(load)
        finally:
            c.execute("COMMIT")
        if out is not None:
            self._charge(mailbox_id, log.cost() - before)
            return out
        # A big mailbox is read off the event loop; the list is kept for the
        # other sessions unless too large.
        top, listed = await self._bulk_read(lambda conn: _read_listing(conn, mailbox_id), LIST_LANE)
        if len(listed) <= changelog.LOG_BUDGET // 4:
            self._keep_listing(mailbox_id, top, listed)
        return list(listed.values())

    def _keep_listing(self, mailbox_id: int, top: int, listed: dict[int, MessageInfo]) -> None:
        """Give the mailbox's change log a list read off the event loop at
        mod-sequence ``top``, for the next listings to bring forward."""
        log = self._changelogs.get(mailbox_id)
        if log is None:
            return  # (the log went for the budget meanwhile: the next listing reads again)
        before = log.cost()
        if log.adopt(listed, top):
            self._charge(mailbox_id, log.cost() - before)

    async def get_messages(
        self, mailbox: MailboxRef, uids: Sequence[int], expunged: bool = False
    ) -> list[MessageInfo]:
        mailbox_id = self._owned(mailbox)
        where = -mailbox_id if expunged else mailbox_id
        rows = select_uids(self._read, f"SELECT {MESSAGE_COLS} FROM messages WHERE mailbox_id = ?",
                            where, sorted(set(uids)), uid_at=1)
        rows.sort(key=lambda r: r[1])
        return [message_row((mailbox_id, *r[1:])) for r in rows]

    async def read_message(self, mailbox: MailboxRef, uid: int, expunged: bool = False) -> bytes:
        mailbox_id = self._owned(mailbox)
        sql = (f"SELECT m.prefix, {BODY_PLACE} FROM messages m JOIN bodies b ON b.id = m.body_id {BODY_DATA}"
               " WHERE m.mailbox_id = ? AND m.uid = ?")
        row = self._q1(sql, (mailbox_id, uid))
        if row is None and expunged:
            row = self._q1(sql, (-mailbox_id, uid))  # expunged, still held
        if row is None:
            raise NotFound(f"no message with UID {uid}")
        return bytes(row[0]) + self.blobs.body(*row[1:])

    async def read_messages(self, mailbox: MailboxRef, uids: Sequence[int]) -> list[tuple[int, bytes]]:
        mailbox_id = self._owned(mailbox)
        rows = select_uids(
            self._read,
            f"SELECT m.uid, m.prefix, {BODY_PLACE} FROM messages m JOIN bodies b ON b.id = m.body_id {BODY_DATA}"
            " WHERE m.mailbox_id = ?",
            mailbox_id, sorted(set(uids)), column="m.uid",
        )
        # read in the order of the segment files, answer in UID order
        rows.sort(key=lambda r: (r[2], r[3]))
        body = self.blobs.body
        out = [(uid, bytes(prefix) + body(*place)) for uid, prefix, *place in rows]
        out.sort(key=lambda item: item[0])
        return out

    async def changes_since(self, mailbox: MailboxRef, modseq: int) -> Changes:
        mailbox_id = self._owned(mailbox)
        # Every session asks after every write: answer from the mailbox's
        # shared log of recent changes (changelog.py) when it reaches back
        # far enough, so a write's rows are read once, not once per session.
        c = self._read
        log = self._changelogs.get(mailbox_id)
        top = c.execute("SELECT highest_modseq FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
        if top is None:
            raise NotFound("no such mailbox")
        if log is None or top[0] != log.top:
            c.execute("BEGIN")  # one read snapshot (WAL): the log's top and its rows agree
            try:
                log = self._current_log(c, mailbox_id, modseq)
            finally:
                c.execute("COMMIT")
        if modseq >= log.base:
            return log.since(modseq)
        # A question from before the log (a session far behind, QRESYNC,
        # CHANGEDSINCE) is answered from the tables: off the event loop when
        # that is a read of many rows (every message may have changed since).
        if many_changes(c, mailbox_id, modseq):
            return await self._changes_off_loop(mailbox_id, modseq, log.top)
        return _read_changes(c, mailbox_id, modseq)

    async def _changes_off_loop(self, mailbox_id: int, modseq: int, top: int) -> Changes:
        """``_read_changes`` on the listing lane, one read for the sessions
        that ask the same question while it waits or runs: after a write of
        many rows (a STORE 1:* of a big mailbox) every session of the
        mailbox asks from where it was, most of them from the same
        mod-sequence, while other commits (deliveries) move the mailbox's
        top. A session that saw the mailbox at ``top`` joins a read that has
        not started or whose snapshot holds ``top`` (``SharedRead.serves``),
        so it never gets an answer older than what it may have been told
        of; otherwise it starts another. The read is stopped (``_bulk_read``
        cancelled: skipped if it has not started, interrupted if it runs)
        when the last session waiting for it goes (its client left)."""
        key = (mailbox_id, modseq)
        reads = self._change_reads
        shared = next((r for r in reads.get(key, ()) if r.serves(top)), None)
        if shared is None:
            shared = SharedRead()
            one = shared
            task = shared.task = asyncio.ensure_future(
                self._bulk_read(lambda conn: _read_changes(conn, mailbox_id, modseq, one), LIST_LANE))
            reads.setdefault(key, []).append(shared)

            def done(f: asyncio.Future[Changes]) -> None:
                self._forget_read(key, one)
                if not f.cancelled():
                    f.exception()  # (retrieved: every asker may have gone)

            task.add_done_callback(done)
        task = shared.task
        assert task is not None
        shared.waiters += 1
        try:
            # a session that goes (its client left) leaves the read to the others
            return await asyncio.shield(task)
        finally:
            shared.waiters -= 1
            if not shared.waiters and not task.done():
                # nobody waits for it any more; and nobody joins it
                self._forget_read(key, shared)
                task.cancel()

    def _forget_read(self, key: tuple[int, int], shared: SharedRead) -> None:
        """``shared`` is over (done, or stopped): no session joins it now."""
        reads = self._change_reads
        waiting = reads.get(key)
        if waiting is not None and shared in waiting:
            waiting.remove(shared)
            if not waiting:
                del reads[key]

    def _current_log(self, c: sqlite3.Connection, mailbox_id: int, since: int | None) -> ChangeLog:
        """The mailbox's change log brought up to its highest_modseq, inside
        the caller's read transaction on ``c``. A new log begins at ``since``
        (the first question) when that is recent: the usual case is the
        first write after the sessions selected the mailbox."""
        box = c.execute("SELECT highest_modseq FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
        if box is None:
            raise NotFound("no such mailbox")
        top = box[0]
        logs = self._changelogs
        log = logs.pop(mailbox_id, None)
        if log is None:
            start = since if since is not None and 0 <= top - since <= changelog.FIRST_REACH else top
            log = ChangeLog(start)
        logs[mailbox_id] = log  # the most recently used last
        if top > log.top:
            before = log.cost()
            if not log.catch_up(c, mailbox_id, top, MESSAGE_COLS, message_row, changelog.CATCH_UP_INLINE):
                # more rows than are read on the event loop: the log starts
                # again at ``top``, and the questions from before it are
                # answered from the tables on the listing lane, one read
                # for the sessions asking the same (``changes_since``)
                log = logs[mailbox_id] = ChangeLog(top)
            self._charge(mailbox_id, log.cost() - before)
        return log

    def _charge(self, mailbox_id: int, grown: int) -> None:
        """Count what a log grew by; over the budget, the least recently used
        logs go (they are rebuilt when next asked)."""
        self._changelog_cost += grown
        logs = self._changelogs
        while self._changelog_cost > changelog.LOG_BUDGET and len(logs) > 1:
            oldest = next(iter(logs))
            if oldest == mailbox_id:
                break
            self._changelog_cost -= logs.pop(oldest).cost()
