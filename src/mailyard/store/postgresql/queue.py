"""The outbound queue on PostgreSQL, shared by the nodes: each claims due
recipients with ``FOR UPDATE SKIP LOCKED`` and a lease that names it
(``QUEUE_LEASE``); the leases of a node that is gone are over at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import psycopg

from ..api import (
    PENDING,
    DerivedRecord,
    NewMessage,
    NotFound,
    QueueAttempt,
    QueueEntry,
    QueueRecipient,
    QueueStats,
    RecipientOutcome,
)
from ..notify import QUEUE
from ..rows import QUEUE_STATS_SQL, queue_stats_row
from .core import PostgreSQLCore
from .transaction import (
    _all,
    _check_targets,
    _drop_queue_entry,
    _insert_targets,
    _lock_mailboxes,
    _one,
    _save_derived,
    _store_body,
    _Tx,
)

_RCPT_COLS = "id, queue_id, address, domain, notify, orcpt, state, attempts, next_attempt, last_reply, last_host"
_ENTRY_COLS = "id, reverse_path, envid, ret, smtputf8, eight_bit, size, created, warned"
# Seconds a node's claim on due queue recipients lasts (queue_due): longer
# than an attempt takes; after it another node may try them.
QUEUE_LEASE = 900.0


class QueueMixin(PostgreSQLCore):
    """The outbound queue: entries, recipients, their leases across nodes."""

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
