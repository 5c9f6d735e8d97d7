"""Mailboxes: create, look up, rename, delete; subscriptions; \\Recent; the
counts and the snapshot that opening a mailbox needs.

Names are "/"-separated (HIERARCHY_DELIMITER) with "INBOX" matched
case-insensitively; UIDVALIDITY values strictly increase across the store
(``next_uid_validity``), and mailbox ids are never reused, so a session's
``MailboxRef`` can never come to name another mailbox. Deleting a mailbox
bumps the revocation signal: sessions holding it find it gone at their next
call (``MailboxGone``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from ...config import StoreConfig
from ..api import (
    HIERARCHY_DELIMITER,
    AlreadyExists,
    InvalidName,
    Mailbox,
    MailboxGone,
    MailboxRef,
    MailboxStatus,
    MailboxSummary,
    NotFound,
    StoreError,
    TooManyMailboxes,
    TooManySubscriptions,
)
from ..keywords import is_full, parse_defined
from ..names import canonical_name, superior_names
from ..rows import MAILBOX_COLS, mailbox_row
from .core import LIST_LANE, SQLiteCore, many_messages
from .keywords import keywords_in_use
from .messages import bump_modseq, drop_mailbox_messages
from .writer import WriteContext

# The terms of the partial indexes messages_unseen and messages_deleted
# (schema.py): a query can use the index only if it has the same term. The
# queries name the index (INDEXED BY): the planner would otherwise read
# every entry of messages_flags, which holds the flags too.
UNSEEN = "instr(' ' || flags || ' ', ' \\Seen ') = 0"
DELETED = "instr(' ' || flags || ' ', ' \\Deleted ') > 0"

def _read_summary(c: sqlite3.Connection, mailbox: MailboxRef) -> MailboxSummary:
    """What SELECT announces (``Store.mailbox_summary``), from one read snapshot."""
    mailbox_id = mailbox.id
    c.execute("BEGIN")  # one read snapshot (WAL) for all four queries
    try:
        row = c.execute(
            f"SELECT {MAILBOX_COLS} FROM mailboxes WHERE id = ? AND account_id = ? AND uid_validity = ?",
            (mailbox_id, mailbox.account_id, mailbox.uid_validity),
        ).fetchone()
        if row is None:
            raise MailboxGone(mailbox_id)
        text = c.execute(
            "SELECT group_concat(uid) FROM (SELECT uid FROM messages WHERE mailbox_id = ? ORDER BY uid)",
            (mailbox_id,),
        ).fetchone()[0]
        keywords = keywords_in_use(c, mailbox_id)
        defined = c.execute("SELECT keywords FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()[0]
        first_unseen = c.execute(
            f"SELECT min(uid) FROM messages INDEXED BY messages_unseen WHERE mailbox_id = ? AND {UNSEEN}",
            (mailbox_id,),
        ).fetchone()[0]
    finally:
        c.execute("COMMIT")
    # "1,2,3": read as a JSON array, three times faster than int() per UID
    # (a SELECT of a 10,000-message mailbox, bench/imap.py)
    uids = json.loads("[" + text + "]") if text else []
    full = is_full(keywords if defined is None else parse_defined(defined))
    return MailboxSummary(mailbox_row(row), uids, keywords, first_unseen, full)


def next_uid_validity(c: sqlite3.Connection) -> int:
    """UIDVALIDITY values strictly increase across the store, so a mailbox
    deleted and recreated under the same name never repeats one (RFC 9051 2.3.1.1)."""
    row = c.execute("SELECT value FROM meta WHERE key = 'last_uid_validity'").fetchone()
    value = max(int(time.time()), int(row[0]) + 1 if row else 0)
    c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_uid_validity', ?)", (str(value),))
    return value


def _has_entries(c: sqlite3.Connection, table: str, account_id: int, n: int) -> bool:
    """Whether the account has at least ``n`` rows in ``table`` (mailboxes
    or subscriptions): one seek past ``n - 1`` entries of its (account_id,
    name) index, not a count of them all."""
    return n <= 0 or c.execute(f"SELECT 1 FROM {table} WHERE account_id = ? LIMIT 1 OFFSET ?",
                               (account_id, n - 1)).fetchone() is not None


def check_room(c: sqlite3.Connection, account_id: int, count: int, limit: int | None) -> None:
    """TooManyMailboxes unless the account has room for ``count`` more
    mailboxes under ``limit``, inside the caller's write (the writer runs
    one at a time, so concurrent creations are counted one after the other)."""
    if limit is not None and count > 0 and _has_entries(c, "mailboxes", account_id, limit - count + 1):
        raise TooManyMailboxes(f"the account has the most folders allowed ({limit})")


def mailbox_exists(c: sqlite3.Connection, account_id: int, name: str) -> bool:
    return c.execute("SELECT 1 FROM mailboxes WHERE account_id = ? AND name = ?",
                     (account_id, name)).fetchone() is not None


def missing_superiors(c: sqlite3.Connection, account_id: int, name: str) -> list[str]:
    """The superior names of ``name`` that are not mailboxes of the account,
    outermost first (RFC 9051 6.3.4)."""
    return [parent for parent in superior_names(name) if not mailbox_exists(c, account_id, parent)]


def subscribe_name(c: sqlite3.Connection, account_id: int, name: str, limit: int | None) -> bool:
    """Subscribe ``name`` inside the caller's write; False, writing nothing,
    when it is not subscribed yet and the account has ``limit``
    subscriptions already (``Store.max_subscriptions``)."""
    if limit is not None and _has_entries(c, "subscriptions", account_id, limit) and not c.execute(
            "SELECT 1 FROM subscriptions WHERE account_id = ? AND name = ?", (account_id, name)).fetchone():
        return False
    c.execute("INSERT OR IGNORE INTO subscriptions(account_id, name) VALUES (?, ?)", (account_id, name))
    return True


def insert_mailbox(c: sqlite3.Connection, account_id: int, name: str, special_use: str | None,
                   subscribe: bool = False, limit: int | None = None, subscriptions: int | None = None) -> int:
    """Create a mailbox inside the caller's write; subscribe to its name too
    if asked (a new account's INBOX and special-use mailboxes, a webmail
    folder) while the account has fewer than ``subscriptions``. IMAP CREATE
    does not subscribe (RFC 9051 6.3.4, 6.3.7). ``limit``: TooManyMailboxes
    when the account has that many already (``check_room``)."""
    check_room(c, account_id, 1, limit)
    try:
        cur = c.execute(
            "INSERT INTO mailboxes(account_id, name, uid_validity, special_use, keywords) VALUES (?, ?, ?, ?, '')",
            (account_id, name, next_uid_validity(c), special_use),
        )
    except sqlite3.IntegrityError:
        raise AlreadyExists(f"mailbox {name} exists already") from None
    assert cur.lastrowid is not None
    if subscribe:
        subscribe_name(c, account_id, name, subscriptions)
    return cur.lastrowid


_CLAIMED_MAX = 100_000  # mailboxes whose claimed \Recent UID (or STATUS counts) is remembered
# A state of a mailbox, which its STATUS counts follow (``mailbox_status``);
# the highest UID (one seek of the primary key) for restore_messages, which
# adds messages below the uid_next and modseq restore_mailbox set already.
_STATUS_KEY = ("SELECT uid_next, uid_validity, highest_modseq, recent_uid,"
               " (SELECT max(uid) FROM messages WHERE mailbox_id = mailboxes.id) FROM mailboxes WHERE id = ?")


def _read_status(c: sqlite3.Connection, mailbox_id: int) -> tuple[tuple, MailboxStatus] | None:
    """A mailbox's state (``_STATUS_KEY``) and STATUS counts, inside the
    caller's read transaction; None when the mailbox is gone."""
    box = c.execute(_STATUS_KEY, (mailbox_id,)).fetchone()
    if box is None:
        return None
    # each count from an index (schema.py messages_flags, messages_unseen,
    # messages_deleted), not from the message rows
    messages, size = c.execute(
        "SELECT count(*), coalesce(sum(size), 0) FROM messages WHERE mailbox_id = ?", (mailbox_id,)
    ).fetchone()
    unseen = c.execute(
        f"SELECT count(*) FROM messages INDEXED BY messages_unseen WHERE mailbox_id = ? AND {UNSEEN}",
        (mailbox_id,),
    ).fetchone()[0]
    deleted, deleted_size = c.execute(
        "SELECT count(*), coalesce(sum(size), 0) FROM messages INDEXED BY messages_deleted"
        f" WHERE mailbox_id = ? AND {DELETED}",
        (mailbox_id,),
    ).fetchone()
    # RFC 3501 6.3.10 RECENT: the UIDs above the last claimed (primary key range)
    recent = c.execute("SELECT count(*) FROM messages WHERE mailbox_id = ? AND uid > ?",
                       (mailbox_id, box[3])).fetchone()[0]
    return tuple(box), MailboxStatus(
        messages=messages, unseen=unseen, deleted=deleted, size=size,
        uid_next=box[0], uid_validity=box[1], highest_modseq=box[2], deleted_size=deleted_size, recent=recent,
    )


# Mailboxes whose counts ``mailbox_statuses`` reads on the event loop; more
# are read in one snapshot on the listing lane.
STATUS_INLINE = 50
# Mailboxes of an account ``list_mailboxes`` reads on the event loop; more
# are read on the listing lane.
MAILBOXES_INLINE = 1_000


class MailboxesMixin(SQLiteCore):
    """Mailboxes of accounts, subscriptions, \\Recent and status."""

    def __init__(self, data_dir: Path, config: StoreConfig | None = None, background: bool = True) -> None:
        self._claim_locks: dict[int, asyncio.Lock] = {}  # claim_recent, per mailbox
        # mailbox id -> a recent_uid this process read or committed: a lower
        # bound of the one in the database (claims only raise it)
        self._claimed: dict[int, int] = {}
        # mailbox id -> (uid_next, uid_validity, highest_modseq, recent_uid, highest UID), and the STATUS counts then
        self._status_cache: dict[int, tuple[tuple, MailboxStatus]] = {}
        super().__init__(data_dir, config, background)

    async def create_mailbox(self, account_id: int, name: str, special_use: str | None = None,
                             subscribe: bool = False, superiors: bool = False) -> Mailbox:
        canonical = canonical_name(name)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> int:
            if mailbox_exists(c, account_id, canonical):
                raise AlreadyExists(f"mailbox {canonical} exists already")
            # the superiors and the mailbox, or (past the bound) nothing
            made = missing_superiors(c, account_id, canonical) if superiors else []
            check_room(c, account_id, len(made) + 1, self.max_mailboxes)
            for parent in made:
                insert_mailbox(c, account_id, parent, None)
            return insert_mailbox(c, account_id, canonical, special_use, subscribe,
                                  subscriptions=self.max_subscriptions)

        mailbox_id = await self._write(op, directory=True)
        mailbox = await self.get_mailbox_by_id(account_id, mailbox_id)
        assert mailbox is not None
        return mailbox

    async def get_mailbox(self, account_id: int, name: str) -> Mailbox | None:
        try:
            canonical = canonical_name(name)
        except InvalidName:
            return None
        row = self._q1(
            f"SELECT {MAILBOX_COLS} FROM mailboxes WHERE account_id = ? AND name = ?", (account_id, canonical)
        )
        return mailbox_row(row) if row else None

    async def get_mailbox_by_id(self, account_id: int, mailbox_id: int) -> Mailbox | None:
        row = self._q1(
            f"SELECT {MAILBOX_COLS} FROM mailboxes WHERE id = ? AND account_id = ?", (mailbox_id, account_id)
        )
        return mailbox_row(row) if row else None

    async def list_mailboxes(self, account_id: int) -> list[Mailbox]:
        query = f"SELECT {MAILBOX_COLS} FROM mailboxes WHERE account_id = ? ORDER BY name"
        # an account of thousands (up to [limits] max_mailboxes) is read off
        # the event loop: 10,000 take some 20-40 ms; whether there are that
        # many is one seek of the (account_id, name) index
        if self._q1("SELECT 1 FROM mailboxes WHERE account_id = ? LIMIT 1 OFFSET ?", (account_id, MAILBOXES_INLINE)):
            return await self._bulk_read(
                lambda c: [mailbox_row(r) for r in c.execute(query, (account_id,))], LIST_LANE)
        return [mailbox_row(r) for r in self._q(query, (account_id,))]

    async def has_inferiors(self, account_id: int, name: str) -> bool:
        # the names below ``name/`` sort between it and ``name0`` ("0"
        # follows "/" in ASCII, and names compare by their octets)
        try:
            base = canonical_name(name)
        except InvalidName:
            return False  # (no mailbox has that name, nor any below it)
        return bool(self._q("SELECT 1 FROM mailboxes WHERE account_id = ? AND name > ? AND name < ? LIMIT 1",
                            (account_id, base + "/", base + "0")))

    async def rename_mailbox(self, account_id: int, old: str, new: str, superiors: bool = False) -> None:
        old_name = canonical_name(old)
        new_name = canonical_name(new)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            src = c.execute(
                "SELECT id, uid_next, highest_modseq FROM mailboxes WHERE account_id = ? AND name = ?",
                (account_id, old_name),
            ).fetchone()
            if src is None:
                raise NotFound(f"no mailbox {old_name}")
            if c.execute(
                "SELECT 1 FROM mailboxes WHERE account_id = ? AND name = ?", (account_id, new_name)
            ).fetchone():
                raise AlreadyExists(f"mailbox {new_name} exists already")
            if new_name == old_name or new_name.startswith(old_name + HIERARCHY_DELIMITER):
                raise InvalidName("a mailbox cannot be renamed into itself")
            # the superiors of the new name (none of them below the old one,
            # which the new name is not), and the new INBOX, or nothing
            made = missing_superiors(c, account_id, new_name) if superiors else []
            check_room(c, account_id, len(made) + (old_name == "INBOX"), self.max_mailboxes)
            for parent in made:
                insert_mailbox(c, account_id, parent, None)
            if old_name == "INBOX":
                # RFC 9051 6.3.6: renaming INBOX moves its messages to the new
                # mailbox and leaves INBOX empty; its inferiors stay where they are.
                new_id = insert_mailbox(c, account_id, new_name, None)
                # INBOX's defined keywords go with its messages (store/keywords.py)
                c.execute("UPDATE mailboxes SET uid_next = ?, keywords = (SELECT keywords FROM mailboxes"
                          " WHERE id = ?) WHERE id = ?", (src[1], src[0], new_id))
                c.execute("UPDATE mailboxes SET keywords = '' WHERE id = ?", (src[0],))
                modseq = bump_modseq(c, src[0])
                c.execute(
                    "INSERT OR REPLACE INTO expunged(mailbox_id, uid, modseq)"
                    " SELECT mailbox_id, uid, ? FROM messages WHERE mailbox_id = ?",
                    (modseq, src[0]),
                )
                c.execute("UPDATE messages SET mailbox_id = ? WHERE mailbox_id = ?", (new_id, src[0]))
                ctx.changed.update((src[0], new_id))
                return
            prefix = old_name + HIERARCHY_DELIMITER
            rows = c.execute(
                "SELECT id, name FROM mailboxes WHERE account_id = ? AND (name = ? OR substr(name, 1, ?) = ?)",
                (account_id, old_name, len(prefix), prefix),
            ).fetchall()
            for mailbox_id, name in rows:
                renamed = new_name + name[len(old_name):]
                if c.execute(
                    "SELECT 1 FROM mailboxes WHERE account_id = ? AND name = ?", (account_id, renamed)
                ).fetchone():
                    raise AlreadyExists(f"mailbox {renamed} exists already")
                c.execute("UPDATE mailboxes SET name = ? WHERE id = ?", (renamed, mailbox_id))
                # the subscription follows the mailbox
                if c.execute(
                    "DELETE FROM subscriptions WHERE account_id = ? AND name = ?", (account_id, name)
                ).rowcount:
                    c.execute(
                        "INSERT OR IGNORE INTO subscriptions(account_id, name) VALUES (?, ?)", (account_id, renamed)
                    )
                ctx.changed.add(mailbox_id)

        await self._write(op, directory=True)

    async def delete_mailbox(self, account_id: int, name: str) -> None:
        canonical = canonical_name(name)
        if canonical == "INBOX":
            raise StoreError("INBOX cannot be deleted")

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            row = c.execute(
                "SELECT id FROM mailboxes WHERE account_id = ? AND name = ?", (account_id, canonical)
            ).fetchone()
            if row is None:
                raise NotFound(f"no mailbox {canonical}")
            drop_mailbox_messages(c, row[0])
            c.execute("DELETE FROM mailboxes WHERE id = ?", (row[0],))
            # The subscription stays: only UNSUBSCRIBE ends one (RFC 9051 6.3.5,
            # 6.3.7 "MUST NOT unilaterally remove"); LIST shows it \NonExistent.
            ctx.changed.add(row[0])

        # sessions that have it selected must find it gone at once
        await self._write(op, directory=True, revoke=True)

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        canonical = canonical_name(name)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if subscribed:
                limit = self.max_subscriptions
                if not subscribe_name(c, account_id, canonical, limit):
                    raise TooManySubscriptions(f"the account has the most subscriptions allowed ({limit})")
            else:
                c.execute("DELETE FROM subscriptions WHERE account_id = ? AND name = ?", (account_id, canonical))

        await self._write(op)

    async def claim_recent(self, mailbox: MailboxRef, claim: bool = True, upto: int | None = None) -> int:
        mailbox_id = self._owned(mailbox)
        claimed = self._claimed
        if claim and upto is not None and claimed.get(mailbox_id, -1) >= upto:
            # Every session of a mailbox claims after each delivery it
            # announces, and all but the first find the UIDs claimed: known
            # here without a read. The value answered is at or above ``upto``
            # as the database's is, so the caller's new \Recent range is
            # empty either way.
            return claimed[mailbox_id]

        def seen(recent_uid: int) -> None:
            if recent_uid > claimed.get(mailbox_id, -1):
                if len(claimed) >= _CLAIMED_MAX and mailbox_id not in claimed:
                    claimed.clear()
                claimed[mailbox_id] = recent_uid

        def target(row: tuple[int, int]) -> int:
            # never beyond the last UID given out, never beyond what the caller announced
            return row[1] if upto is None else min(upto, row[1])

        def op(c: sqlite3.Connection, ctx: WriteContext) -> tuple[int, int]:
            self._owned_w(c, mailbox)
            row = c.execute("SELECT recent_uid, uid_next - 1 FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
            if row is None:
                raise NotFound("no such mailbox")
            if claim and target(row) > row[0]:
                c.execute("UPDATE mailboxes SET recent_uid = ? WHERE id = ?", (target(row), mailbox_id))
                return row[0], target(row)
            return row[0], row[0]

        def peek() -> int | None:
            row = self._q1("SELECT recent_uid, uid_next - 1 FROM mailboxes WHERE id = ?", (mailbox_id,))
            if row is None:
                raise NotFound("no such mailbox")
            seen(row[0])
            return row[0] if not claim or target(row) <= row[0] else None  # None: something to claim

        first = peek()
        if first is not None:
            return first  # nothing new to claim: no write
        # Many sessions learn of a delivery at once (IDLE): one claims in a write,
        # the others wait for it and then find nothing left -- no write each.
        lock = self._claim_locks.setdefault(mailbox_id, asyncio.Lock())
        try:
            async with lock:
                first = peek()
                if first is not None:
                    return first
                first, now = await self._write(op)
                seen(now)  # committed
                return first
        finally:
            if not lock.locked():
                self._claim_locks.pop(mailbox_id, None)

    async def list_subscriptions(self, account_id: int) -> list[str]:
        query = "SELECT name FROM subscriptions WHERE account_id = ? ORDER BY name"
        # up to Store.max_subscriptions (20,000 by default) names: many are
        # read off the event loop, as list_mailboxes reads many mailboxes
        if self._q1("SELECT 1 FROM subscriptions WHERE account_id = ? LIMIT 1 OFFSET ?",
                    (account_id, MAILBOXES_INLINE)):
            return await self._bulk_read(lambda c: [r[0] for r in c.execute(query, (account_id,))], LIST_LANE)
        return [r[0] for r in self._q(query, (account_id,))]

    async def mailbox_status(self, mailbox: MailboxRef) -> MailboxStatus:
        mailbox_id = self._owned(mailbox)
        c = self._read
        key = c.execute(_STATUS_KEY, (mailbox_id,)).fetchone()
        if key is None:
            raise NotFound("no such mailbox")
        # Every change to the counts moves the mailbox's highest_modseq
        # (RFC 7162 3.1.1: flags, expunge) or its uid_next (a new message),
        # a \Recent claim its recent_uid, and a restored message its highest
        # UID: counts read at the same five values still hold, and are not
        # read again (many sessions ask STATUS of one mailbox between its
        # changes).
        cached = self._status_cache.get(mailbox_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        c.execute("BEGIN")  # one read snapshot (WAL) for the counts
        try:
            read = _read_status(c, mailbox_id)
        finally:
            c.execute("COMMIT")
        if read is None:
            raise NotFound("no such mailbox")
        key, status = read
        if len(self._status_cache) >= _CLAIMED_MAX:
            self._status_cache.clear()
        self._status_cache[mailbox_id] = (key, status)
        return status

    async def mailbox_statuses(self, mailboxes: Sequence[MailboxRef]) -> dict[int, MailboxStatus]:
        if len(mailboxes) <= STATUS_INLINE:
            return await super().mailbox_statuses(mailboxes)
        refs = [(m.id, m.account_id, m.uid_validity) for m in mailboxes]

        def read(c: sqlite3.Connection) -> dict[int, tuple[tuple, MailboxStatus]]:
            c.execute("BEGIN")  # one snapshot for all
            try:
                return {ref[0]: r for ref in refs
                        if c.execute("SELECT 1 FROM mailboxes WHERE id = ? AND account_id = ? AND uid_validity = ?",
                                     ref).fetchone() is not None
                        and (r := _read_status(c, ref[0])) is not None}
            finally:
                c.execute("COMMIT")

        # some 0.1 ms of reads a mailbox: thousands are read off the event loop
        found = await self._bulk_read(read, LIST_LANE)
        cache = self._status_cache
        for mailbox_id, (key, status) in found.items():
            if len(cache) >= _CLAIMED_MAX:
                cache.clear()
            cache[mailbox_id] = (key, status)
        return {mailbox_id: status for mailbox_id, (_key, status) in found.items()}

    async def mailbox_summary(self, mailbox: MailboxRef) -> MailboxSummary:
        # a big mailbox's UIDs are read off the event loop: 200,000 take
        # some 60 ms
        if many_messages(self._read, mailbox.id):
            return await self._bulk_read(lambda c: _read_summary(c, mailbox), LIST_LANE)
        return _read_summary(self._read, mailbox)
