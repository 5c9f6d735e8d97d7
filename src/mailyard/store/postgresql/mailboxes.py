"""Mailboxes on PostgreSQL: creation, renaming, deletion, subscriptions,
\\Recent (claimed with ``SELECT ... FOR UPDATE``, once across nodes), STATUS
and SELECT's summary (decoded on the listing lane when the mailbox is big).
"""

from __future__ import annotations

import asyncio

import psycopg

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
    TooManySubscriptions,
)
from ..names import canonical_name
from ..rows import MAILBOX_COLS, mailbox_row
from .core import PostgreSQLCore
from .transaction import (
    _all,
    _bump_modseq,
    _check_room,
    _drop_mailbox_messages,
    _insert_mailbox,
    _missing_superiors,
    _one,
    _rows,
    _subscribe,
    _summary,
    _Tx,
)


class MailboxesMixin(PostgreSQLCore):
    """Mailboxes, subscriptions, \\Recent, status."""

    # --- mailboxes ---------------------------------------------------------------------
    async def create_mailbox(self, account_id: int, name: str, special_use: str | None = None,
                             subscribe: bool = False, superiors: bool = False) -> Mailbox:
        canonical = canonical_name(name)

        async def op(c: psycopg.AsyncConnection, tx: _Tx) -> int:
            if await _one(c, "SELECT 1 FROM accounts WHERE id = %s", (account_id,)) is None:
                raise NotFound(f"no account with id {account_id}")
            if await _one(c, "SELECT 1 FROM mailboxes WHERE account_id = %s AND name = %s", (account_id, canonical)):
                raise AlreadyExists(f"mailbox {canonical} exists already")
            # the superiors and the mailbox, or (past the bound) nothing
            made = await _missing_superiors(c, account_id, canonical) if superiors else []
            await _check_room(c, account_id, len(made) + 1, self.max_mailboxes)
            for parent in made:
                await _insert_mailbox(c, account_id, parent, None)
            return await _insert_mailbox(c, account_id, canonical, special_use, subscribe,
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

    async def has_inferiors(self, account_id: int, name: str) -> bool:
        # the names below ``name/`` sort between it and ``name0`` in octet
        # order ("0" follows "/" in ASCII): the range of the index on the
        # names in the "C" collation (schema migration 7)
        try:
            base = canonical_name(name)
        except InvalidName:
            return False  # (no mailbox has that name, nor any below it)
        return bool(await self._q('SELECT 1 FROM mailboxes WHERE account_id = %s AND name COLLATE "C" > %s'
                                  ' AND name COLLATE "C" < %s LIMIT 1', (account_id, base + "/", base + "0")))

    async def rename_mailbox(self, account_id: int, old: str, new: str, superiors: bool = False) -> None:
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
            # the superiors of the new name (none of them below the old one,
            # which the new name is not), and the new INBOX, or nothing
            made = await _missing_superiors(c, account_id, new_name) if superiors else []
            await _check_room(c, account_id, len(made) + (old_name == "INBOX"), self.max_mailboxes)
            for parent in made:
                await _insert_mailbox(c, account_id, parent, None)
            if old_name == "INBOX":
                # RFC 9051 6.3.6: renaming INBOX moves its messages to the new
                # mailbox and leaves INBOX empty; its inferiors stay where they are.
                new_id = await _insert_mailbox(c, account_id, new_name, None)
                # INBOX's defined keywords go with its messages (store/keywords.py)
                await c.execute("UPDATE mailboxes SET uid_next = %s, keywords = (SELECT keywords FROM mailboxes"
                                " WHERE id = %s) WHERE id = %s", (src[1], src[0], new_id))
                await c.execute("UPDATE mailboxes SET keywords = '' WHERE id = %s", (src[0],))
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
                limit = self.max_subscriptions
                if not await _subscribe(c, account_id, canonical, limit):
                    raise TooManySubscriptions(f"the account has the most subscriptions allowed ({limit})")
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
            row = await _one(c, f"SELECT {MAILBOX_COLS}, keywords FROM mailboxes WHERE id = %s AND account_id = %s"
                                " AND uid_validity = %s", (mailbox.id, mailbox.account_id, mailbox.uid_validity))
            if row is None:
                raise MailboxGone(mailbox.id)
            rows = await _rows(c, "SELECT uid, flags FROM messages WHERE mailbox_id = %s ORDER BY uid",
                               (mailbox.id,))
        return await self._decoded(lambda listed: _summary(mailbox_row(row[:-1]), listed, row[-1]), rows)
