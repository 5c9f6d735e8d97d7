"""Messages in mailboxes: deliver and append, flags, expunge, copy and move;
reading index rows and bytes; what changed since a mod-sequence.

A message row holds its mailbox, UID, flags, INTERNALDATE, mod-sequence and
per-recipient trace prefix, and points at a shared body (bodies.py). Every
change takes the mailbox's next mod-sequence (RFC 7162 3.1); an expunged UID
is remembered with the mod-sequence that removed it (``expunged``), for
VANISHED and for sessions catching up. UIDs come from ``mailboxes.uid_next``
and are never reused in a mailbox (RFC 9051 2.3.1.1).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence

from ..api import (
    AppendItem,
    Changes,
    DeliveryTarget,
    FlagMode,
    MailboxGone,
    MailboxRef,
    MessageInfo,
    NotFound,
)
from .bodies import BodiesMixin, release_bodies
from .core import select_uids
from .writer import WriteContext

MESSAGE_COLS = "mailbox_id, uid, size, flags, internal_date, modseq"


def flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


_FLAG_SETS: dict[str, frozenset[str]] = {}


def flags_set(text: str) -> frozenset[str]:
    # A mailbox has few distinct flag combinations: share their frozensets
    # (SELECT / FETCH FLAGS of 10,000 messages builds 10,000 MessageInfos).
    fs = _FLAG_SETS.get(text)
    if fs is None:
        fs = frozenset(text.split()) if text else frozenset()
        if len(_FLAG_SETS) < 4096:
            _FLAG_SETS[text] = fs
    return fs


def message_row(row: tuple) -> MessageInfo:
    return MessageInfo(row[0], row[1], row[2], flags_set(row[3]), row[4], row[5])


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
    """Remove every message of a mailbox (which is going away) and its expunge memory."""
    body_ids = [r[0] for r in c.execute("SELECT body_id FROM messages WHERE mailbox_id = ?", (mailbox_id,))]
    c.execute("DELETE FROM messages WHERE mailbox_id = ?", (mailbox_id,))
    c.execute("DELETE FROM expunged WHERE mailbox_id = ?", (mailbox_id,))
    release_bodies(c, body_ids)


def insert_targets(
    c: sqlite3.Connection, ctx: WriteContext, body_id: int, body_len: int,
    targets: Sequence[DeliveryTarget],
) -> list[int]:
    """Index rows for one stored body in each target mailbox (shared by
    ``deliver`` and the outbound queue's combined local+queued commit)."""
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
        c.execute(
            "INSERT INTO messages(mailbox_id, uid, body_id, prefix, size, flags, internal_date, modseq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                t.mailbox_id, uid, body_id, t.trace_prefix, len(t.trace_prefix) + body_len,
                flags_text(t.flags), t.internal_date if t.internal_date is not None else now, modseq,
            ),
        )
        ctx.changed.add(t.mailbox_id)
        uids.append(uid)
    return uids


class MessagesMixin(BodiesMixin):
    """Messages of mailboxes: writes and reads."""

    async def deliver(self, body: bytes, targets: Sequence[DeliveryTarget]) -> list[int]:
        if not targets:
            return []

        def op(c: sqlite3.Connection, ctx: WriteContext) -> list[int]:
            body_id = self._store_body(c, body, len(targets))
            return insert_targets(c, ctx, body_id, len(body), targets)

        return await self._write(op)

    async def append_many(self, mailbox: MailboxRef, items: Sequence[AppendItem]) -> list[int]:
        if not items:
            return []
        batch = list(items)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> list[int]:
            mailbox_id = self._owned_w(c, mailbox)
            # one SAVEPOINT in one commit: every message or none (RFC 3502)
            uids: list[int] = []
            for item in batch:
                body_id = self._store_body(c, item.data, 1)
                target = DeliveryTarget(mailbox_id, b"", item.flags, item.internal_date)
                uids += insert_targets(c, ctx, body_id, len(item.data), [target])
            return uids

        return await self._write(op)

    async def store_flags(
        self,
        mailbox: MailboxRef,
        uids: Sequence[int],
        flags: Iterable[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> tuple[list[MessageInfo], list[int]]:
        flag_set = frozenset(flags)
        wanted = list(uids)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> tuple[list[MessageInfo], list[int]]:
            mailbox_id = self._owned_w(c, mailbox)
            changed: list[tuple[int, str]] = []
            failed: list[int] = []
            rows = select_uids(c, "SELECT uid, flags, modseq FROM messages WHERE mailbox_id = ?", mailbox_id, wanted)
            for uid, text, modseq in rows:
                # RFC 7162 3.1.3: UNCHANGEDSINCE fails messages modified after it.
                if unchanged_since is not None and modseq > unchanged_since:
                    failed.append(uid)
                    continue
                current = flags_set(text)
                if mode == "add":
                    new = current | flag_set
                elif mode == "remove":
                    new = current - flag_set
                else:
                    new = flag_set
                if new != current:
                    changed.append((uid, flags_text(new)))
            if not changed:
                return [], failed
            modseq = bump_modseq(c, mailbox_id)
            c.executemany(
                "UPDATE messages SET flags = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?",
                [(text, modseq, mailbox_id, uid) for uid, text in changed],
            )
            ctx.changed.add(mailbox_id)
            infos = select_uids(c, f"SELECT {MESSAGE_COLS} FROM messages WHERE mailbox_id = ?", mailbox_id,
                                 [uid for uid, _ in changed], uid_at=1)
            return [message_row(r) for r in infos], failed

        return await self._write(op)

    async def expunge(self, mailbox: MailboxRef, uids: Sequence[int]) -> list[int]:
        wanted = list(uids)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> list[int]:
            mailbox_id = self._owned_w(c, mailbox)
            rows = select_uids(c, "SELECT uid, body_id FROM messages WHERE mailbox_id = ?", mailbox_id, wanted)
            if not rows:
                return []
            modseq = bump_modseq(c, mailbox_id)
            c.executemany("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", [(mailbox_id, r[0]) for r in rows])
            c.executemany(
                "INSERT OR REPLACE INTO expunged(mailbox_id, uid, modseq) VALUES (?, ?, ?)",
                [(mailbox_id, r[0], modseq) for r in rows],
            )
            release_bodies(c, [r[1] for r in rows])
            ctx.changed.add(mailbox_id)
            return sorted(r[0] for r in rows)

        return await self._write(op)

    async def copy_messages(
        self, src: MailboxRef, uids: Sequence[int], dst: MailboxRef, move: bool = False
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
            rows.sort(key=lambda r: r[0])
            first = c.execute(
                "UPDATE mailboxes SET uid_next = uid_next + ?, highest_modseq = highest_modseq + 1"
                " WHERE id = ? RETURNING uid_next - ?, highest_modseq",
                (len(rows), dst_mailbox_id, len(rows)),
            ).fetchone()
            start, modseq = first
            pairs = []
            for i, (uid, body_id, prefix, size, flags, internal_date) in enumerate(rows):
                c.execute(
                    "INSERT INTO messages(mailbox_id, uid, body_id, prefix, size, flags, internal_date, modseq)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (dst_mailbox_id, start + i, body_id, prefix, size, flags, internal_date, modseq),
                )
                c.execute("UPDATE bodies SET refs = refs + 1 WHERE id = ?", (body_id,))
                pairs.append((uid, start + i))
            ctx.changed.add(dst_mailbox_id)
            if move:
                src_modseq = bump_modseq(c, src_mailbox_id)
                c.executemany(
                    "DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", [(src_mailbox_id, r[0]) for r in rows]
                )
                c.executemany(
                    "INSERT OR REPLACE INTO expunged(mailbox_id, uid, modseq) VALUES (?, ?, ?)",
                    [(src_mailbox_id, r[0], src_modseq) for r in rows],
                )
                release_bodies(c, [r[1] for r in rows])
                ctx.changed.add(src_mailbox_id)
            return pairs

        return await self._write(op)

    async def list_messages(self, mailbox: MailboxRef) -> list[MessageInfo]:
        mailbox_id = self._owned(mailbox)
        rows = self._q(f"SELECT {MESSAGE_COLS} FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,))
        return [message_row(r) for r in rows]

    async def get_messages(self, mailbox: MailboxRef, uids: Sequence[int]) -> list[MessageInfo]:
        mailbox_id = self._owned(mailbox)
        rows = select_uids(self._read, f"SELECT {MESSAGE_COLS} FROM messages WHERE mailbox_id = ?",
                            mailbox_id, sorted(set(uids)), uid_at=1)
        rows.sort(key=lambda r: r[1])
        return [message_row(r) for r in rows]

    async def read_message(self, mailbox: MailboxRef, uid: int) -> bytes:
        mailbox_id = self._owned(mailbox)
        row = self._q1(
            "SELECT m.prefix, b.segment, b.offset, b.length FROM messages m JOIN bodies b ON b.id = m.body_id"
            " WHERE m.mailbox_id = ? AND m.uid = ?",
            (mailbox_id, uid),
        )
        if row is None:
            raise NotFound(f"no message with UID {uid}")
        return bytes(row[0]) + self.blobs.read(row[1], row[2], row[3])

    async def read_messages(self, mailbox: MailboxRef, uids: Sequence[int]) -> list[tuple[int, bytes]]:
        mailbox_id = self._owned(mailbox)
        rows = select_uids(
            self._read,
            "SELECT m.uid, m.prefix, b.segment, b.offset, b.length FROM messages m JOIN bodies b ON b.id = m.body_id"
            " WHERE m.mailbox_id = ?",
            mailbox_id, sorted(set(uids)), column="m.uid",
        )
        # read in the order of the segment files, answer in UID order
        rows.sort(key=lambda r: (r[2], r[3]))
        read = self.blobs.read
        out = [(uid, bytes(prefix) + read(segment, offset, length)) for uid, prefix, segment, offset, length in rows]
        out.sort(key=lambda item: item[0])
        return out

    async def changes_since(self, mailbox: MailboxRef, modseq: int) -> Changes:
        mailbox_id = self._owned(mailbox)
        box = self._q1("SELECT highest_modseq FROM mailboxes WHERE id = ?", (mailbox_id,))
        if box is None:
            raise NotFound("no such mailbox")
        changed = self._q(
            f"SELECT {MESSAGE_COLS} FROM messages WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
            (mailbox_id, modseq),
        )
        vanished = self._q(
            "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid", (mailbox_id, modseq)
        )
        return Changes(box[0], [message_row(r) for r in changed], [r[0] for r in vanished])
