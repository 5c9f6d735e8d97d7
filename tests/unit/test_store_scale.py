"""What keeps the SQLite store's everyday reads from growing with the size of
a mailbox (bench/scale.py measures it at 10,000 to 1,000,000 messages):
STATUS counts, the facts SELECT announces, and SEARCH's look for bodies the
indexer has not reached are answered from indexes, not by reading every
message row. Each test checks the answers against the messages themselves,
and the query plans SQLite chose for the statements the call ran."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

from mailyard.config import StoreConfig
from mailyard.store.api import DeliveryTarget, Mailbox
from mailyard.store.sqlite import SQLiteStore

MESSAGES = 400
ROW_SCAN = "USING PRIMARY KEY (mailbox_id=?)"  # every message row of the mailbox is read


def _message(n: int) -> bytes:
    return (f"From: Sender {n} <s{n}@remote.test>\r\nTo: a@example.test\r\nSubject: note {n}\r\n\r\n"
            f"body {n}\r\n").encode()


def _flags(rng: random.Random) -> frozenset[str]:
    return rng.choice([frozenset({"\\Seen"})] * 8 + [frozenset(), frozenset({"\\Seen", "\\Deleted"}),
                       frozenset({"$Work", "\\Seen"}), frozenset({"$Later"})])


async def _filled(tmp_path: Path) -> tuple[SQLiteStore, Mailbox]:
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    await store.add_domain("example.test")
    account = await store.add_account("a@example.test", "h")
    box = await store.get_mailbox(account.id, "INBOX")
    assert box is not None
    rng = random.Random(3)
    for n in range(MESSAGES):
        await store.deliver(_message(n), [DeliveryTarget(box.id, b"", _flags(rng))])
    return store, box


async def _plans(store: SQLiteStore, call: Callable[[], Awaitable[object]]) -> tuple[object, dict[str, str]]:
    """The result of ``call()`` and, for each statement it ran on the read
    connection that reads messages, SQLite's query plan."""
    statements: list[str] = []
    store._read.set_trace_callback(statements.append)
    try:
        result = await call()
    finally:
        store._read.set_trace_callback(None)
    plans = {}
    for sql in statements:
        if "messages" in sql and sql.lstrip().upper().startswith(("SELECT", "WITH")):
            rows = store._read.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
            plans[sql] = " | ".join(r[3] for r in rows)
    return result, plans


async def test_status_counts_come_from_indexes(tmp_path: Path) -> None:
    store, box = await _filled(tmp_path)
    try:
        status, plans = await _plans(store, lambda: store.mailbox_status(box))
        infos = await store.list_messages(box)
        assert (status.messages, status.unseen, status.deleted, status.size) == (
            len(infos),
            sum("\\Seen" not in m.flags for m in infos),
            sum("\\Deleted" in m.flags for m in infos),
            sum(m.size for m in infos),
        )
        assert 0 < status.unseen < status.messages and 0 < status.deleted < status.messages
        assert plans
        # max(uid) over the primary key is one seek (SQLite's min/max
        # optimisation), though its plan names the same search
        scans = [f"{sql}\n  -> {plan}" for sql, plan in plans.items()
                 if ROW_SCAN in plan and "(SELECT max(uid) FROM messages WHERE mailbox_id = mailboxes.id)" not in sql]
        assert not scans, "STATUS reads every message row:\n" + "\n".join(scans)
    finally:
        await store.close()


async def test_select_summary_reads_only_the_uids_row_by_row(tmp_path: Path) -> None:
    store, box = await _filled(tmp_path)
    try:
        summary, plans = await _plans(store, lambda: store.mailbox_summary(box))
        infos = await store.list_messages(box)
        assert summary.uids == [m.uid for m in infos]
        assert summary.keywords == {"$Work", "$Later"}
        assert summary.first_unseen == min(m.uid for m in infos if "\\Seen" not in m.flags)
        scans = [f"{sql}\n  -> {plan}" for sql, plan in plans.items()
                 if ROW_SCAN in plan and "group_concat(uid)" not in sql]
        assert not scans, "SELECT reads every message row more than once:\n" + "\n".join(scans)
    finally:
        await store.close()


async def test_search_looks_for_unindexed_bodies_from_their_side(tmp_path: Path) -> None:
    store, box = await _filled(tmp_path)
    try:
        await store._derive_now([r[0] for r in store._q("SELECT id FROM bodies")])
        # the background indexer stays away: the next two bodies wait for SEARCH
        store._index_some = lambda c: False  # type: ignore[method-assign]
        uids = [await store.deliver(_message(n), [DeliveryTarget(box.id)]) for n in (9000, 9001)]
        assert store._q1("SELECT count(*) FROM bodies WHERE derived IS NULL") == (2,)
        found, plans = await _plans(store, lambda: store.search_headers(box, "subject", "note 900"))
        assert found == {uids[0][0], uids[1][0]}
        looks = [plan for sql, plan in plans.items() if "derived IS NULL" in sql and "bodies b" in sql]
        assert looks
        scans = [plan for plan in looks if ROW_SCAN in plan]
        assert not scans, f"SEARCH reads every message to find the unindexed ones: {scans}"
        assert store._q1("SELECT count(*) FROM bodies WHERE derived IS NULL") == (0,)
    finally:
        await store.close()


def test_the_partial_indexes_match_the_queries(tmp_path: Path) -> None:
    """A partial index is used only for a query with its very term: the
    indexes in schema.py and the terms in mailboxes.py must not drift apart."""
    from mailyard.store.sqlite import schema
    from mailyard.store.sqlite.mailboxes import DELETED, UNSEEN

    c = sqlite3.connect(":memory:")
    c.executescript(schema.SCHEMA)
    for index, term in (("messages_unseen", UNSEEN), ("messages_deleted", DELETED)):
        plan = c.execute(
            f"EXPLAIN QUERY PLAN SELECT count(*) FROM messages INDEXED BY {index} WHERE mailbox_id = 1 AND {term}"
        ).fetchall()
        assert index in plan[0][3]
