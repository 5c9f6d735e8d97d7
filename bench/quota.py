"""Quota usage (RFC 9208) on a 100,000-message account: what reading it costs
and what keeping it costs.

An account is filled with 100,000 small messages through the store API (in
MULTIAPPEND batches). Then, median of many runs:

- ``get_quota``: the account's usage from its running totals (one row);
- the same usage summed over the account's messages with an index
  (``SELECT sum(size), count(*)`` over messages joined to mailboxes), which
  is what a store without running totals would read at every RCPT, APPEND
  and GETQUOTA;
- the cost of keeping the totals: single-message deliveries per second with
  the triggers of store/sqlite/schema.py ``USAGE_SCHEMA``, and with them
  dropped, on the same account;
- the version-3 to version-4 migration's one-off sum over the directory.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from .common import Result, progress

MESSAGES = 100_000
BATCH = 1_000
DELIVERIES = 2_000


def _median_us(fn: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def run(quick: bool = False) -> list[Result]:
    from mailyard.config import StoreConfig
    from mailyard.store.api import AppendItem, DeliveryTarget
    from mailyard.store.sqlite import SQLiteStore, schema

    total = 10_000 if quick else MESSAGES
    deliveries = 500 if quick else DELIVERIES
    results: list[Result] = []

    async def go(place: Path) -> None:
        store = SQLiteStore(place, StoreConfig(fsync=False))
        try:
            await store.add_domain("example.test")
            a = await store.add_account("big@example.test", "h")
            inbox = await store.get_mailbox(a.id, "INBOX")
            assert inbox is not None
            started = time.perf_counter()
            for n in range(0, total, BATCH):
                await store.append_many(inbox, [
                    AppendItem(b"Subject: m%d\r\n\r\n%s\r\n" % (i, b"x" * 200)) for i in range(n, n + BATCH)])
                if n and n % 20_000 == 0:
                    progress(f"{n} messages")
            progress(f"filled {total} messages in {time.perf_counter() - started:.1f} s")
            quota = await store.get_quota(a.id)
            assert quota.messages_used == total
            read = store._read

            def totals() -> None:
                read.execute("SELECT quota_storage, quota_messages, used_storage, used_messages"
                             " FROM accounts WHERE id = ?", (a.id,)).fetchone()

            def summed() -> None:
                read.execute("SELECT coalesce(sum(m.size), 0), count(*) FROM messages m"
                             " JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.account_id = ?",
                             (a.id,)).fetchone()

            t_totals = _median_us(totals, 2_000)
            t_sum = _median_us(summed, 20)
            results.append(Result("quota", f"usage read, running totals ({total} msgs)", t_totals, "us",
                                  "one row, whatever the account's size"))
            results.append(Result("quota", f"usage read, indexed sum ({total} msgs)", t_sum, "us",
                                  "what each RCPT/APPEND would pay without the totals"))

            async def deliver_rate() -> float:
                started = time.perf_counter()
                for _ in range(deliveries):
                    await store.deliver(b"Subject: d\r\n\r\nbody\r\n", [DeliveryTarget(inbox.id, enforce_quota=True)])
                return deliveries / (time.perf_counter() - started)

            with_triggers = await deliver_rate()

            def drop(c: object) -> None:
                c.execute("DROP TRIGGER messages_usage_insert")  # type: ignore[attr-defined]
                c.execute("DROP TRIGGER messages_usage_delete")  # type: ignore[attr-defined]

            await store._write(lambda c, ctx: drop(c))
            without = await deliver_rate()
            results.append(Result("quota", "deliveries/s with usage triggers", with_triggers, "msg/s",
                                  f"{without:.0f} msg/s without them (fsync off)"))

            def migrate_sum() -> None:
                read.execute(
                    "SELECT (SELECT coalesce(sum(m.size), 0) FROM messages m JOIN mailboxes b"
                    " ON b.id = m.mailbox_id WHERE b.account_id = accounts.id) FROM accounts").fetchall()

            results.append(Result("quota", "v3->v4 migration sum (once)", _median_us(migrate_sum, 3) / 1000, "ms",
                                  f"{total} messages; schema version {schema.SCHEMA_VERSION}"))
        finally:
            await store.close()

    with tempfile.TemporaryDirectory(prefix="mailyard-bench-quota-") as tmp:
        asyncio.run(go(Path(tmp) / "data"))
    return results
