"""The outbound queue on SQLite (the Store API's ``queue_*`` operations).

A queue entry is one message on its way to remote recipients: the body
(stored once, as a body shared with any local copies of the same delivery),
the reverse-path, the RFC 3461 envelope parameters, and one row per remaining
recipient with its destination domain, attempt count, last reply and next
attempt time (tables: schema.py ``QUEUE_SCHEMA``). Every attempt is logged.
When no recipient is pending any more the entry and its attempt log go, and
the body's reference is released.

Everything that changes the queue is one write in the group-commit writer,
so "queued" means durable, exactly like "delivered": ``queue_submit`` stores
local copies and the queue entry in one commit, and ``queue_update`` records
an attempt's outcome together with the bounce it causes (delivered locally or
queued), so a crash can neither lose the bounce nor send it twice.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Iterable, Sequence

from ..api import (
    NewMessage,
    NotFound,
    QueueAttempt,
    QueueEntry,
    QueueRecipient,
    QueueStats,
    RecipientOutcome,
)
from ..blobs import BODY_DATA, BODY_PLACE
from ..rows import QUEUE_STATS_SQL, queue_stats_row
from .bodies import BodiesMixin, release_bodies
from .messages import check_targets, insert_targets
from .writer import WriteContext


def _notify_text(notify: frozenset[str] | None) -> str | None:
    return ",".join(sorted(notify)) if notify is not None else None


def _orcpt_text(orcpt: tuple[str, str] | None) -> str | None:
    return f"{orcpt[0]};{orcpt[1]}" if orcpt is not None else None


def _recipient(row: tuple) -> QueueRecipient:
    notify = frozenset(row[4].split(",")) if row[4] is not None else None
    orcpt = None
    if row[5] is not None:
        kind, _, addr = row[5].partition(";")
        orcpt = (kind, addr)
    return QueueRecipient(row[0], row[2], row[3], notify, orcpt, row[6], row[7], row[8], row[9], row[10])


_RCPT_COLS = "id, queue_id, address, domain, notify, orcpt, state, attempts, next_attempt, last_reply, last_host"
_ENTRY_COLS = "id, reverse_path, envid, ret, smtputf8, eight_bit, size, created, warned"


def _entry(row: tuple, recipients: list[QueueRecipient], attempts: list[QueueAttempt]) -> QueueEntry:
    return QueueEntry(
        row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5]), row[6], row[7], bool(row[8]),
        recipients, attempts,
    )


class QueueMixin(BodiesMixin):
    """The outbound queue's operations of the Store API."""

    # --- writes --------------------------------------------------------------
    def _op_new_message(self, c: sqlite3.Connection, ctx: WriteContext, msg: NewMessage) -> tuple[list[int], int | None]:
        refs = len(msg.targets) + (1 if msg.entry is not None else 0)
        if refs == 0:
            return [], None
        check_targets(c, msg.targets, len(msg.body))  # before the body is written
        body_id = self._store_body(c, msg.body, refs)
        uids = insert_targets(c, ctx, body_id, len(msg.body), msg.targets) if msg.targets else []
        queue_id = None
        entry = msg.entry
        if entry is not None:
            now = time.time()
            created = entry.created if entry.created is not None else now
            cur = c.execute(
                "INSERT INTO queue(body_id, reverse_path, envid, ret, smtputf8, eight_bit, size, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (body_id, entry.reverse_path, entry.envid, entry.ret, int(entry.smtputf8), int(entry.eight_bit),
                 len(msg.body), created),
            )
            queue_id = cur.lastrowid
            due = entry.next_attempt if entry.next_attempt is not None else now
            c.executemany(
                "INSERT INTO queue_rcpts(queue_id, address, domain, notify, orcpt, next_attempt)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (queue_id, r.address, r.address.rpartition("@")[2].lower(), _notify_text(r.notify),
                     _orcpt_text(r.orcpt), due)
                    for r in entry.recipients
                ],
            )
        return uids, queue_id

    async def queue_submit_all(self, messages: Sequence[NewMessage]) -> list[tuple[list[int], int | None]]:
        """Store each message once: into its local targets and (if its entry
        has recipients) the outbound queue, all in one durable commit.
        Returns each one's (UIDs, queue id)."""
        msgs = [NewMessage(m.body, m.targets, m.entry if m.entry is not None and m.entry.recipients else None)
                for m in messages]
        return await self._write(lambda c, ctx: [self._op_new_message(c, ctx, msg) for msg in msgs])

    async def queue_update(
        self,
        queue_id: int,
        outcomes: Sequence[RecipientOutcome],
        attempts: Iterable[tuple[str, str | None, str]] = (),
        *,
        warned: bool = False,
        follow_up: Sequence[NewMessage] = (),
    ) -> bool:
        """Record one delivery attempt's results (and any report it causes) in
        one commit. ``attempts``: (domain, host, outcome) log lines. Returns
        True when the entry is finished (no recipient pending) and was removed."""
        now = time.time()
        log_rows = list(attempts)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> bool:
            row = c.execute("SELECT body_id FROM queue WHERE id = ?", (queue_id,)).fetchone()
            if row is None:
                return True  # deleted meanwhile (mailyard queue delete)
            for o in outcomes:
                c.execute(
                    "UPDATE queue_rcpts SET state = ?, attempts = attempts + 1, next_attempt = ?,"
                    " last_reply = ?, last_host = ? WHERE id = ? AND queue_id = ?",
                    (o.state, o.next_attempt, o.reply, o.host, o.recipient_id, queue_id),
                )
            c.executemany(
                "INSERT INTO queue_attempts(queue_id, ts, domain, host, outcome) VALUES (?, ?, ?, ?, ?)",
                [(queue_id, now, d, h, text) for d, h, text in log_rows],
            )
            if warned:
                c.execute("UPDATE queue SET warned = 1 WHERE id = ?", (queue_id,))
            for msg in follow_up:
                self._op_new_message(c, ctx, msg)
            left = c.execute(
                "SELECT count(*) FROM queue_rcpts WHERE queue_id = ? AND state = 'pending'", (queue_id,)
            ).fetchone()[0]
            if left:
                return False
            self._op_drop(c, queue_id, row[0])
            return True

        return await self._write(op)

    def _op_drop(self, c: sqlite3.Connection, queue_id: int, body_id: int) -> None:
        c.execute("DELETE FROM queue_attempts WHERE queue_id = ?", (queue_id,))
        c.execute("DELETE FROM queue_rcpts WHERE queue_id = ?", (queue_id,))
        c.execute("DELETE FROM queue WHERE id = ?", (queue_id,))
        release_bodies(c, [body_id])

    async def queue_delete(self, queue_id: int) -> None:
        """Remove an entry without delivering or bouncing (``mailyard queue delete``)."""

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            row = c.execute("SELECT body_id FROM queue WHERE id = ?", (queue_id,)).fetchone()
            if row is None:
                raise NotFound(f"no queue entry {queue_id}")
            self._op_drop(c, queue_id, row[0])

        await self._write(op)

    async def queue_retry(self, queue_id: int | None = None) -> int:
        """Make pending recipients (of one entry, or all) due now; returns how many."""
        now = time.time()

        def op(c: sqlite3.Connection, ctx: WriteContext) -> int:
            if queue_id is None:
                cur = c.execute("UPDATE queue_rcpts SET next_attempt = ? WHERE state = 'pending'", (now,))
            else:
                if c.execute("SELECT 1 FROM queue WHERE id = ?", (queue_id,)).fetchone() is None:
                    raise NotFound(f"no queue entry {queue_id}")
                cur = c.execute(
                    "UPDATE queue_rcpts SET next_attempt = ? WHERE state = 'pending' AND queue_id = ?",
                    (now, queue_id),
                )
            return cur.rowcount

        return await self._write(op)

    # --- reads ---------------------------------------------------------------
    def _entries(self, rows: list[tuple], with_attempts: bool) -> list[QueueEntry]:
        if not rows:
            return []
        ids = [row[0] for row in rows]
        rcpts: dict[int, list[QueueRecipient]] = {i: [] for i in ids}
        attempts: dict[int, list[QueueAttempt]] = {i: [] for i in ids}
        for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._q(f"SELECT {_RCPT_COLS} FROM queue_rcpts WHERE queue_id IN ({marks}) ORDER BY id", chunk):
                rcpts[r[1]].append(_recipient(r))
            if with_attempts:
                for a in self._q(
                    "SELECT queue_id, ts, domain, host, outcome FROM queue_attempts"
                    f" WHERE queue_id IN ({marks}) ORDER BY rowid", chunk,
                ):
                    attempts[a[0]].append(QueueAttempt(*a[1:]))
        return [_entry(row, rcpts[row[0]], attempts[row[0]]) for row in rows]

    async def queue_entry(self, queue_id: int) -> QueueEntry | None:
        rows = self._q(f"SELECT {_ENTRY_COLS} FROM queue WHERE id = ?", (queue_id,))
        entries = self._entries(rows, with_attempts=True)
        return entries[0] if entries else None

    async def queue_list(self) -> list[QueueEntry]:
        rows = self._q(f"SELECT {_ENTRY_COLS} FROM queue ORDER BY id")
        return self._entries(rows, with_attempts=False)

    async def queue_due(self, now: float, limit: int = 1000, *, exclude: Collection[int] = (),
                        skip_domains: Collection[str] = ()) -> list[QueueEntry]:
        """Entries with at least one recipient due at ``now`` (oldest first)
        that is neither in ``exclude`` nor at one of ``skip_domains``."""
        if limit <= 0:
            return []
        # (No DISTINCT in the subquery: IN ignores repeats, and with it SQLite
        # walks every recipient in queue_id order instead of the due index,
        # work that grows with the queue on every dispatch.) The lists are
        # one JSON parameter each, whatever their length.
        sql = (f"SELECT {', '.join('q.' + c.strip() for c in _ENTRY_COLS.split(','))} FROM queue q"
               " WHERE q.id IN (SELECT queue_id FROM queue_rcpts WHERE state = 'pending' AND next_attempt <= ?")
        args: list[object] = [now]
        if exclude:
            sql += " AND id NOT IN (SELECT value FROM json_each(?))"
            args.append(json.dumps(list(exclude)))
        if skip_domains:
            sql += " AND domain NOT IN (SELECT value FROM json_each(?))"
            args.append(json.dumps(list(skip_domains)))
        rows = self._q(sql + ") ORDER BY q.id LIMIT ?", (*args, limit))
        return self._entries(rows, with_attempts=False)

    async def queue_size(self) -> int:
        row = self._q1("SELECT count(*) FROM queue")
        return int(row[0]) if row else 0

    async def queue_stats(self) -> QueueStats:
        """One statement (one snapshot), run off the event loop: it walks
        every recipient row, tens of milliseconds for 100,000 entries."""

        def read(c: sqlite3.Connection) -> QueueStats:
            return queue_stats_row(c.execute(QUEUE_STATS_SQL).fetchall())

        return await self._bulk_read(read)

    async def queue_next_due(self, after: float | None = None) -> float | None:
        if after is None:
            row = self._q1("SELECT min(next_attempt) FROM queue_rcpts WHERE state = 'pending'")
        else:
            row = self._q1("SELECT min(next_attempt) FROM queue_rcpts WHERE state = 'pending' AND next_attempt > ?",
                           (after,))
        return row[0] if row else None

    async def queue_body(self, queue_id: int) -> bytes:
        row = self._q1(
            f"SELECT {BODY_PLACE} FROM queue q JOIN bodies b ON b.id = q.body_id {BODY_DATA} WHERE q.id = ?",
            (queue_id,),
        )
        if row is None:
            raise NotFound(f"no queue entry {queue_id}")
        return self.blobs.body(*row)
