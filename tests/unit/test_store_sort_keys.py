"""The SQLite store's ``sort_keys`` (IMAP SORT/THREAD keys, RFC 5256): kept
in the sort_keys table with each body's derived data, computed from the
derived JSON or header_fields for bodies derived before that (and then
kept), the same either way; a version-4 data directory gets its rows and
threads (RFC 8474 5.2) in the background."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from mailyard.config import StoreConfig
from mailyard.message.threadkeys import SortKeys
from mailyard.store.api import AppendItem
from mailyard.store.sqlite import SQLiteStore

MAIL = [
    b"Date: Mon, 1 Jan 2024 09:00:00 -0200\r\nFrom: Bob <bob@example.test>\r\nTo: a@example.test\r\n"
    b"Subject: Re: [team] =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <2@x>\r\nReferences: <0@x> <1@x>\r\n\r\nhi\r\n",
    b"From: carl@example.test\r\nCc: \"Dee\" <dee@example.test>, eve@example.test\r\n\r\nno subject\r\n",
]
WANT = {
    1: SortKeys(1704106800.0, "GRU\u0308\u00dfE", True, "BOB", "BOB", "A", "A@EXAMPLE.TEST", "", "2@x", ("0@x", "1@x")),
    2: SortKeys(None, "", False, "CARL", "CARL@EXAMPLE.TEST", "", "", "DEE", None, ()),
}


async def test_sort_keys_stored_and_recomputed(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s", StoreConfig(fsync=False))
    try:
        await s.add_domain("example.test")
        a = await s.add_account("a@example.test", "h")
        inbox = await s.get_mailbox(a.id, "INBOX")
        assert inbox
        for data in MAIL:
            await s.append(inbox, data)
        # before the indexer: derived on the spot
        assert await s.sort_keys(inbox, [1, 2, 3]) == WANT
        deadline = asyncio.get_running_loop().time() + 20
        while s._read.execute("SELECT count(*) FROM bodies WHERE derived IS NULL").fetchone()[0]:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert await s.sort_keys(inbox, [2]) == {2: WANT[2]}
        assert _count(s, "SELECT count(*) FROM sort_keys") == 2
        stored = s._read.execute("SELECT count(*) FROM body_derived WHERE json_extract(meta, '$.sort') IS NOT NULL")
        assert stored.fetchone()[0] == 2
        # data derived before the keys were kept: the same keys from header_fields
        await s._write(lambda c, ctx: c.execute("UPDATE body_derived SET meta = json_remove(meta, '$.sort')"))
        await s._write(lambda c, ctx: c.execute("DELETE FROM sort_keys"))
        assert await s.sort_keys(inbox, [1, 2]) == WANT
        assert _count(s, "SELECT count(*) FROM sort_keys") == 2  # kept from now on
        assert s._read.execute(
            "SELECT count(*) FROM body_derived WHERE json_extract(meta, '$.sort') IS NOT NULL").fetchone()[0] == 0
    finally:
        await s.close()


def _count(s: SQLiteStore, sql: str) -> int:
    return s._read.execute(sql).fetchone()[0]


THREAD_MAIL = [
    b"From: a@example.test\r\nSubject: plans\r\nMessage-ID: <root@x>\r\n\r\nroot\r\n",
    b"From: b@example.test\r\nSubject: Re: plans\r\nMessage-ID: <reply@x>\r\nIn-Reply-To: <root@x>\r\n\r\nr\r\n",
    b"From: c@example.test\r\nSubject: lunch\r\nMessage-ID: <lunch@x>\r\n\r\nl\r\n",
    b"From: d@example.test\r\nSubject: Re: plans\r\nReferences: <root@x> <reply@x>\r\n\r\nd\r\n",
]


async def _indexed(s: SQLiteStore, sql: str = "SELECT count(*) FROM bodies WHERE derived IS NULL") -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while _count(s, sql):
        assert asyncio.get_running_loop().time() < deadline, sql
        await asyncio.sleep(0.05)


async def test_version4_directory_gets_sort_keys_and_threads(tmp_path: Path) -> None:
    """A version-4 directory (no sort_keys table; keys in the derived JSON,
    or older still only in header_fields) opens as version 5: SORT answers
    at once from the derived data, and the background indexer fills the
    table, threads included, then marks the backfill done."""
    from mailyard.store.sqlite import schema

    d = tmp_path / "v4"
    s = SQLiteStore(d, StoreConfig(fsync=False))
    try:
        await s.add_domain("example.test")
        a = await s.add_account("a@example.test", "h")
        inbox = await s.get_mailbox(a.id, "INBOX")
        assert inbox
        for data in [*MAIL, *THREAD_MAIL]:
            await s.append(inbox, data)
        await _indexed(s)
        want = await s.sort_keys(inbox, range(1, 7))
        assert [want[1], want[2]] == [WANT[1], WANT[2]]
        # back to version 4: no table, no thread, no id secret; one body's
        # keys only in header_fields (derived before the JSON kept them)
        def downgrade(c: sqlite3.Connection, ctx: object) -> None:
            for sql in ("DROP TABLE sort_keys", "UPDATE meta SET value = '4' WHERE key = 'schema_version'",
                        "DELETE FROM meta WHERE key IN ('objectid_key', 'sort_keys_backfill')",
                        "UPDATE body_derived SET meta = json_remove(meta, '$.sort') WHERE body_id = 2"):
                c.execute(sql)

        await s._write(downgrade)
    finally:
        await s.close()
    s = SQLiteStore(d, StoreConfig(fsync=False))
    try:
        assert _count(s, "SELECT value FROM meta WHERE key = 'schema_version'") == str(schema.SCHEMA_VERSION)
        inbox = await s.get_mailbox(a.id, "INBOX")
        assert inbox
        assert await s.sort_keys(inbox, range(1, 7)) == want
        await _indexed(s, "SELECT count(*) FROM meta WHERE key = 'sort_keys_backfill' AND value != 'done'")
        assert _count(s, "SELECT count(*) FROM sort_keys") == 6
        threads = dict(s._read.execute("SELECT body_id, thread_id FROM sort_keys").fetchall())
        # RFC 8474 5.2: the reply and the reply to it are in the first one's thread
        assert threads[3] == threads[4] == threads[6] == 3
        assert threads[5] == 5 and threads[1] == 1 and threads[2] == 2
        got = await s.get_derived(inbox, [3, 4, 5], ("thread_id", "email_id"))
        assert got[3]["thread_id"] == got[4]["thread_id"] != got[5]["thread_id"]
        assert len({got[u]["email_id"] for u in got}) == 3
    finally:
        await s.close()


async def test_sql_sort_order_is_the_rfc5256_order(tmp_path: Path) -> None:
    """The store's sort_order (SQL over sort_keys) gives, for every key and
    REVERSE and with a second key, the order of protocols/imap/sort.py's
    sorter (RFC 5256 section 3, RFC 5957): code point order of the
    casemapped keys, missing fields as "", the sent date falling back to the
    INTERNALDATE, ties in UID order also under REVERSE; also for a subset of
    the messages and once the rows had to be made again."""
    from mailyard.protocols.imap.sort import SORT_KEYS, SortKey, SortMessage, sort_messages
    from tests.unit.imap.test_sort import MAIL as SORT_MAIL

    s = SQLiteStore(tmp_path / "s", StoreConfig(fsync=False))
    try:
        await s.add_domain("example.test")
        a = await s.add_account("a@example.test", "h")
        inbox = await s.get_mailbox(a.id, "INBOX")
        assert inbox
        corpus = [*SORT_MAIL, *((m, 1_700_000_000.0 + 5) for m in [*MAIL, *THREAD_MAIL])]
        for data, when in corpus:
            await s.append_many(inbox, [AppendItem(data, (), when)])
        uids = list(range(1, len(corpus) + 1))
        keys = await s.sort_keys(inbox, uids)
        infos = {m.uid: m for m in await s.list_messages(inbox)}
        msgs = [SortMessage(u, u, infos[u].size, infos[u].internal_date, keys[u]) for u in uids]
        for rows_again in (False, True):
            if rows_again:
                await s._write(lambda c, ctx: c.execute("DELETE FROM sort_keys"))
            for name in sorted(SORT_KEYS):
                for reverse in (False, True):
                    for program in ([(name, reverse)], [(name, reverse), ("SUBJECT", True)]):
                        want = [m.uid for m in sort_messages(msgs, [SortKey(n, r) for n, r in program])]
                        assert await s.sort_order(inbox, program, uids) == want, program
                        some = uids[::2]
                        assert await s.sort_order(inbox, program, some) == [u for u in want if u in some]
    finally:
        await s.close()


def test_first_address_takes_linear_time_on_long_runs_of_blanks() -> None:
    # a From/To/Cc value of a name and 60,000 blanks (folded, anyone can send
    # it): quadratic for the one-address patterns, 5 s per field
    import time

    from mailyard.message.threadkeys import first_address

    started = time.process_time()
    first_address("a" + " " * 60_000 + "x")
    assert first_address("Al" + " " * 2000 + "<al@example.test>") == ("al", "Al")
    assert time.process_time() - started < 1.0
