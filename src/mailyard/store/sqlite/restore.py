"""Writing mailboxes and messages copied from another store with their
IMAP identity (UIDVALIDITY, UIDs, MODSEQs): ``mailyard store copy``."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..api import AlreadyExists, Mailbox, MailboxRef, NotFound, RestoredMessage
from ..names import canonical_name
from ..rows import flags_text
from .bodies import BodiesMixin
from .core import SQLiteCore
from .writer import WriteContext


class RestoreMixin(BodiesMixin, SQLiteCore):
    """``restore_mailbox`` and ``restore_messages`` on SQLite."""

    async def restore_mailbox(self, account_id: int, name: str, uid_validity: int, uid_next: int,
                              highest_modseq: int, special_use: str | None = None) -> Mailbox:
        canonical = canonical_name(name)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> int:
            if c.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone() is None:
                raise NotFound(f"no account with id {account_id}")
            row = c.execute("SELECT id, uid_validity, uid_next FROM mailboxes WHERE account_id = ? AND name = ?",
                            (account_id, canonical)).fetchone()
            if row is not None and row[1] == uid_validity:
                c.execute("UPDATE mailboxes SET uid_next = max(uid_next, ?), highest_modseq = max(highest_modseq, ?)"
                          " WHERE id = ?", (uid_next, highest_modseq, row[0]))
                ctx.changed.add(row[0])
                return int(row[0])
            if row is not None:
                if row[2] != 1:
                    raise AlreadyExists(f"mailbox {canonical} exists already with other UIDs")
                # never held a message: made again (a new id: references to the old one end)
                c.execute("DELETE FROM mailboxes WHERE id = ?", (row[0],))
                ctx.changed.add(row[0])
            last = c.execute("SELECT value FROM meta WHERE key = 'last_uid_validity'").fetchone()
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_uid_validity', ?)",
                      (str(max(uid_validity, int(last[0]) if last else 0)),))
            cur = c.execute("INSERT INTO mailboxes(account_id, name, uid_validity, uid_next, highest_modseq,"
                            " special_use) VALUES (?, ?, ?, ?, ?, ?)",
                            (account_id, canonical, uid_validity, max(uid_next, 1), max(highest_modseq, 1),
                             special_use))
            assert cur.lastrowid is not None
            return int(cur.lastrowid)

        mailbox_id = await self._write(op, directory=True, revoke=True)
        mailbox = await self.get_mailbox_by_id(account_id, mailbox_id)
        assert mailbox is not None
        return mailbox

    async def restore_messages(self, mailbox: MailboxRef, items: Sequence[RestoredMessage]) -> None:
        batch = sorted(items, key=lambda m: m.uid)
        if not batch:
            return

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            mailbox_id = self._owned_w(c, mailbox)
            top = c.execute("SELECT max(uid) FROM messages WHERE mailbox_id = ?", (mailbox_id,)).fetchone()[0] or 0
            if batch[0].uid <= top or len({m.uid for m in batch}) != len(batch):
                raise AlreadyExists(f"UID {batch[0].uid} is not above the mailbox's UIDs")
            for item in batch:
                body_id = self._store_body(c, item.data, 1)
                c.execute(
                    "INSERT INTO messages(mailbox_id, uid, body_id, prefix, size, flags, internal_date, modseq,"
                    " save_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (mailbox_id, item.uid, body_id, b"", len(item.data), flags_text(item.flags), item.internal_date,
                     item.modseq, item.save_date))
            # keywords NULL: the mailbox's defined keywords are read from
            # its messages when next needed (sqlite/keywords.py), restored ones too
            c.execute("UPDATE mailboxes SET uid_next = max(uid_next, ?), highest_modseq = max(highest_modseq, ?),"
                      " keywords = NULL WHERE id = ?", (batch[-1].uid + 1, max(m.modseq for m in batch), mailbox_id))
            ctx.changed.add(mailbox_id)

        await self._write(op)
