"""What only the SQLite backend has: the migration of older data directories,
segment files and their compaction, the background indexer, the write path's
failure handling, and the rule that nothing outside store/ touches SQLite.
The behaviour every backend shares is in tests/unit/test_store.py."""

from __future__ import annotations

import ast
import asyncio
import errno
import re
import sqlite3
from pathlib import Path

import pytest

from mailyard.config import StoreConfig
from mailyard.message.derived import FORMAT_VERSION
from mailyard.store import open_store, store_exists
from mailyard.store.api import (
    AppendItem,
    DeliveryTarget,
    Mailbox,
    NewQueueEntry,
    NewRecipient,
    NotFound,
    StoreError,
)
from mailyard.store.sqlite import SQLiteStore, schema
from mailyard.store.sqlite.bodies import INLINE_MAX
from tests.unit.test_store import MIME

SRC = Path(__file__).resolve().parents[2] / "src" / "mailyard"


async def _inbox(store: SQLiteStore) -> Mailbox:
    a = await store.add_account("a@example.test", "h")
    box = await store.get_mailbox(a.id, "INBOX")
    assert box
    return box


def test_nothing_outside_the_store_touches_sqlite() -> None:
    """Every other layer goes through the Store API (``open_store`` to open
    one): no import of sqlite3 or of the backend, no path of its files."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "store":
            continue
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n == "sqlite3" or re.search(r"(^|\.)store\.sqlite\b", n) for n in names):
                offenders.append(f"{rel}:{node.lineno}")
        if "index.sqlite3" in text:
            offenders.append(f"{rel}: names index.sqlite3")
    assert offenders == []


async def test_open_store_opens_the_sqlite_backend(tmp_path: Path) -> None:
    assert not store_exists(tmp_path / "d")
    s = open_store(tmp_path / "d", StoreConfig(fsync=False))
    try:
        assert isinstance(s, SQLiteStore) and store_exists(tmp_path / "d")
    finally:
        await s.close()


async def test_append_many_leaves_nothing_when_a_body_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 3502 MULTIAPPEND: a failure on the second message leaves neither."""
    s = SQLiteStore(tmp_path / "a", StoreConfig(fsync=False))
    try:
        await s.add_domain("example.test")
        inbox = await _inbox(s)
        await s.append(inbox, b"one\r\n")
        real = SQLiteStore._store_body
        calls = []

        def failing(self, c, body, refs):  # noqa: ANN001, ANN202
            calls.append(body)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
            return real(self, c, body, refs)

        monkeypatch.setattr(SQLiteStore, "_store_body", failing)
        with pytest.raises(StoreError):
            await s.append_many(inbox, [AppendItem(b"three\r\n"), AppendItem(b"four\r\n")])
        monkeypatch.setattr(SQLiteStore, "_store_body", real)
        assert [m.uid for m in await s.list_messages(inbox)] == [1]
        # nothing is left of the failed write's bodies (kept in the index)
        assert s._q("SELECT body_id, data FROM body_data") == [(1, b"one\r\n")]
        assert await s.append(inbox, b"two\r\n") == 2
    finally:
        await s.close()


async def test_a_queued_body_is_shared_with_its_local_copies(tmp_path: Path) -> None:
    """One body row for the local copy and the queue entry, released when both are gone."""
    s = SQLiteStore(tmp_path / "q", StoreConfig(fsync=False))
    try:
        await s.add_domain("example.test")
        inbox = await _inbox(s)
        entry = NewQueueEntry("a@example.test", [NewRecipient("b@b.test")])
        _, qid = await s.queue_submit(b"x\r\n", entry, [DeliveryTarget(inbox.id)])
        assert qid is not None
        assert s._q("SELECT refs FROM bodies") == [(2,)]
        await s.expunge(inbox, [1])
        assert s._q("SELECT refs FROM bodies") == [(1,)]
        await s.queue_delete(qid)
        assert s._q("SELECT count(*) FROM bodies") == [(0,)]
        with pytest.raises(NotFound):
            await s.queue_body(qid)
    finally:
        await s.close()


def _segment_accounts(s: SQLiteStore) -> tuple[list[tuple], list[tuple]]:
    """Each segment's (id, size, live) by the segments table, and (id, sum of
    the lengths of its bodies) by the bodies that point into it."""
    return (s._q("SELECT id, size, live FROM segments WHERE size > 0 ORDER BY id"),
            s._q("SELECT segment, sum(length) FROM bodies WHERE segment <> 0 GROUP BY segment ORDER BY segment"))


async def test_bodies_up_to_the_threshold_are_kept_in_the_index(tmp_path: Path) -> None:
    """Up to INLINE_MAX bytes a body is written in the index, in the
    transaction of its rows, and counted against no segment; one byte more
    and it goes to a segment file. Both read back exactly, for a mailbox and
    for the queue, and an expunge takes the inline bytes with the row."""
    s = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False, segment_size=1 << 20))
    try:
        await s.add_domain("example.test")
        inbox = await _inbox(s)
        at, above = b"a" * INLINE_MAX, b"b" * (INLINE_MAX + 1)
        assert await s.append(inbox, at) == 1
        assert await s.append(inbox, above) == 2
        entry = NewQueueEntry("a@example.test", [NewRecipient("b@b.test")])
        _, qid = await s.queue_submit(b"queued\r\n", entry, [])
        assert qid is not None
        assert s._q("SELECT segment, offset, length FROM bodies ORDER BY id") == [
            (0, 0, INLINE_MAX), (1, 0, INLINE_MAX + 1), (0, 0, 8)]
        assert s._q("SELECT id, size, live FROM segments") == [(1, INLINE_MAX + 1, INLINE_MAX + 1)]
        assert (tmp_path / "d" / "blobs" / "00000001.seg").stat().st_size == INLINE_MAX + 1
        assert await s.read_message(inbox, 1) == at and await s.read_message(inbox, 2) == above
        assert await s.read_messages(inbox, [1, 2]) == [(1, at), (2, above)]
        assert await s.queue_body(qid) == b"queued\r\n"
        await s.expunge(inbox, [1])
        await s.queue_delete(qid)
        assert s._q("SELECT count(*) FROM body_data") == [(0,)]
        assert s._q("SELECT id, size, live FROM segments") == [(1, INLINE_MAX + 1, INLINE_MAX + 1)]
        await s.expunge(inbox, [2])
        assert s._q("SELECT id, size, live FROM segments") == [(1, INLINE_MAX + 1, 0)]
    finally:
        await s.close()


async def test_a_store_of_inline_and_segment_bodies_compacts_with_exact_bytes(tmp_path: Path) -> None:
    """Compaction moves the live bodies of a mostly-dead segment and leaves
    the inline ones where they are; the segments' accounts stay equal to
    the bodies that point into them."""
    s = SQLiteStore(tmp_path / "c", StoreConfig(fsync=False, segment_size=100_000))
    try:
        await s.add_domain("example.test")
        inbox = await _inbox(s)
        bodies = {}
        for i in range(40):  # small and big in turn: about 20 big ones over several segments
            size = 1000 + i if i % 2 else 40_000 + i
            body = b"Subject: %d\r\n\r\n" % i + bytes([65 + i % 26]) * size
            bodies[await s.append(inbox, body)] = body
        assert s._q("SELECT count(*) FROM bodies WHERE segment = 0") == [(20,)]
        blob_dir = tmp_path / "c" / "blobs"
        before = sum(p.stat().st_size for p in blob_dir.glob("*.seg"))
        assert before == sum(len(b) for b in bodies.values() if len(b) > INLINE_MAX)
        await s.expunge(inbox, [uid for uid in bodies if uid % 4 not in (0, 1)])
        await s.compact()
        await s.compact()  # the second pass removes the retired files
        after = sum(p.stat().st_size for p in blob_dir.glob("*.seg"))
        assert after < before * 0.7
        kept = {uid: body for uid, body in bodies.items() if uid % 4 in (0, 1)}
        assert await s.read_messages(inbox, list(kept)) == sorted(kept.items())
        assert s._q("SELECT count(*) FROM body_data") == s._q("SELECT count(*) FROM bodies WHERE segment = 0")
        accounts, pointed = _segment_accounts(s)
        assert [(seg, live) for seg, _, live in accounts if live] == pointed
    finally:
        await s.close()


async def test_a_version_9_store_reads_its_bodies_and_keeps_new_small_ones_inline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data directory from before inline bodies (every body in a segment,
    no body_data) opens, reads its bodies, compacts them, and keeps the
    small bodies written from then on in the index."""
    from mailyard.store.sqlite import bodies as bodies_module

    place = tmp_path / "v9"
    monkeypatch.setattr(bodies_module, "INLINE_MAX", -1)  # every body to a segment, as before
    s = SQLiteStore(place, StoreConfig(fsync=False, segment_size=8_000))
    await s.add_domain("example.test")
    inbox = await _inbox(s)
    old = [b"Subject: old %d\r\n\r\n" % i + b"o" * (900 + i) for i in range(30)]
    for body in old:
        await s.append(inbox, body)
    await s.close()
    c = sqlite3.connect(place / "index.sqlite3")
    c.executescript("DROP TABLE IF EXISTS body_data; UPDATE meta SET value = '9' WHERE key = 'schema_version';")
    c.close()
    monkeypatch.undo()
    s = SQLiteStore(place, StoreConfig(fsync=False, segment_size=8_000))
    try:
        assert s._q1("SELECT value FROM meta WHERE key = 'schema_version'") == (str(schema.SCHEMA_VERSION),)
        # the migration's body_data goes with its bodies rows too
        assert [(r[2], r[3], r[4], r[6]) for r in s._q("PRAGMA foreign_key_list(body_data)")] == [
            ("bodies", "body_id", "id", "CASCADE")]
        assert [body for _, body in await s.read_messages(inbox, range(1, 31))] == old
        segment_bytes = sum(p.stat().st_size for p in (place / "blobs").glob("*.seg"))
        new = [b"Subject: new %d\r\n\r\n" % i + b"n" * 2000 for i in range(5)]
        for body in new:
            await s.append(inbox, body)
        assert sum(p.stat().st_size for p in (place / "blobs").glob("*.seg")) == segment_bytes
        assert s._q("SELECT count(*) FROM bodies WHERE segment = 0") == [(5,)]
        await s.expunge(inbox, list(range(1, 31, 2)))  # half of the old ones
        await s.compact()
        await s.compact()
        expect = {uid: old[uid - 1] for uid in range(2, 31, 2)} | {30 + i: body for i, body in enumerate(new, 1)}
        assert await s.read_messages(inbox, list(expect)) == sorted(expect.items())
        accounts, pointed = _segment_accounts(s)
        assert [(seg, live) for seg, _, live in accounts if live] == pointed
    finally:
        await s.close()


def test_a_data_directory_of_a_newer_schema_is_refused_and_left_as_it_is(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Code that knows a lower schema version than the directory's could
    neither read nor release what the newer one added (a version 9 server
    looks for an inline body in segment file 0): opening the store and
    ``mailyard store migrate`` refuse it, say why and what to do, and
    change nothing."""
    from mailyard.cli import main
    from mailyard.store import migrate_store

    data = tmp_path / "data"
    assert main(["--data", str(data), "init", "--domain", "example.test"]) == 0
    index = data / "index.sqlite3"
    c = sqlite3.connect(index)
    c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(schema.SCHEMA_VERSION + 1),))
    c.execute("DROP TABLE body_data")  # as if the newer schema had moved it: nothing may create it again
    c.commit()
    c.close()
    capsys.readouterr()
    newer = f"the data directory {data} was written by a newer mailyard"
    with pytest.raises(StoreError, match=re.escape(newer)):
        SQLiteStore(data, StoreConfig(fsync=False))
    with pytest.raises(StoreError, match="run that version or a later one"):
        migrate_store(data)
    assert main(["--data", str(data), "store", "migrate"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and newer in err and "migrated" not in err
    c = sqlite3.connect(index)
    try:
        assert c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(schema.SCHEMA_VERSION + 1),)
        assert c.execute("SELECT 1 FROM sqlite_master WHERE name = 'body_data'").fetchone() is None
    finally:
        c.close()


async def test_a_body_row_deleted_by_any_code_takes_its_inline_bytes(tmp_path: Path) -> None:
    """The bytes of an inline body go with its row whoever deletes it (the
    schema's ON DELETE CASCADE; every connection of the store turns foreign
    keys on), not only through release_bodies."""
    s = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    try:
        await s.add_domain("example.test")
        inbox = await _inbox(s)
        for i in range(3):
            await s.append(inbox, b"Subject: %d\r\n\r\nsmall\r\n" % i)
        assert s._q("SELECT count(*) FROM body_data") == [(3,)]

        def delete(c: sqlite3.Connection) -> None:
            assert c.execute("PRAGMA foreign_keys").fetchone() == (1,)
            c.execute("BEGIN")
            c.execute("DELETE FROM messages WHERE uid = 2")
            c.execute("DELETE FROM bodies WHERE id = 2")
            c.execute("COMMIT")

        await s._writer.run_exclusive(lambda: delete(s._writer._conn))
        assert s._q("SELECT body_id FROM body_data ORDER BY body_id") == [(1,), (3,)]
    finally:
        await s.close()


async def test_compaction_reclaims_expunged_space_and_keeps_live_bytes(tmp_path: Path, segment_bodies: None) -> None:
    s = SQLiteStore(tmp_path / "c", StoreConfig(segment_size=20_000))
    try:
        await s.add_domain("example.test")
        a = await s.add_account("a@example.test", "h")
        inbox = await s.get_mailbox(a.id, "INBOX")
        assert inbox
        bodies = {}
        for i in range(60):  # about 1 KB each: several 20 KB segments
            body = b"Subject: %d\r\n\r\n" % i + bytes([65 + i % 26]) * 1000
            bodies[await s.append(inbox, body)] = body
        blob_dir = tmp_path / "c" / "blobs"
        before = sum(p.stat().st_size for p in blob_dir.glob("*.seg"))
        dead = [uid for uid in bodies if uid % 4 != 0]
        await s.expunge(inbox, dead)
        await s.compact()
        await s.compact()  # the second pass removes the retired files
        after = sum(p.stat().st_size for p in blob_dir.glob("*.seg"))
        assert after < before * 0.6
        for uid, body in bodies.items():
            if uid % 4 == 0:
                assert await s.read_message(inbox, uid) == body
    finally:
        await s.close()
    s2 = SQLiteStore(tmp_path / "c", StoreConfig(segment_size=20_000))
    try:
        assert len(await s2.list_messages(inbox)) == 15
        assert await s2.read_message(inbox, 4) == bodies[4]
    finally:
        await s2.close()



async def test_background_indexer_yields_and_fills_tables(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "i", StoreConfig(fsync=False))
    try:
        await s.add_domain("example.test")
        inbox = await _inbox(s)
        for i in range(30):
            await s.append(inbox, MIME.replace(b"quokka", b"quokka%d" % i))
        deadline = asyncio.get_running_loop().time() + 20
        while s._read.execute("SELECT count(*) FROM bodies WHERE derived IS NULL").fetchone()[0]:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert s._read.execute("SELECT count(*) FROM body_derived").fetchone()[0] == 30
        assert await s.search_text(inbox, "quokka17", "body") == {18}
        assert await s.search_headers(inbox, "subject", "grüße") == set(range(1, 31))
    finally:
        await s.close()



async def test_version1_data_directory_is_migrated(tmp_path: Path) -> None:
    """A data directory written by schema version 1 opens: subscriptions move
    to names, derived data is rebuilt, \\Recent starts after what exists."""
    s = SQLiteStore(tmp_path / "v1", StoreConfig(fsync=False))
    await s.add_domain("example.test")
    a = await s.add_account("a@example.test", "h")
    inbox = await s.get_mailbox(a.id, "INBOX")
    assert inbox
    await s.append(inbox, MIME)
    await s.create_mailbox(a.id, "Old")
    await s.close()
    # turn it into what version 1 left: derived JSON in bodies, subscribed column
    c = sqlite3.connect(tmp_path / "v1" / "index.sqlite3")
    c.executescript(
        "DROP TABLE body_derived; DROP TABLE header_fields; DROP TABLE subscriptions;"
        "ALTER TABLE mailboxes DROP COLUMN recent_uid;"
        "UPDATE mailboxes SET subscribed = (name != 'Old');"
        "UPDATE bodies SET derived = '{\"v\": 1}';"
        "UPDATE meta SET value = '1' WHERE key = 'schema_version';"
    )
    c.commit()
    c.close()
    s2 = SQLiteStore(tmp_path / "v1", StoreConfig(fsync=False))
    try:
        subs = await s2.list_subscriptions(a.id)
        assert "INBOX" in subs and "Old" not in subs
        assert await s2.claim_recent(inbox) == 1
        got = await s2.get_derived(inbox, [1], ["envelope_imap"])
        assert got[1]["envelope_imap"].startswith(b'("Mon, 7 Feb 1994 21:52:25 -0800"')
        assert await s2.search_headers(inbox, "subject", "carol") == {1}
        version = s2._read.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        assert version == str(schema.SCHEMA_VERSION)
    finally:
        await s2.close()



async def test_a_rolled_back_segment_rollover_loses_no_later_body(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, segment_bodies: None) -> None:
    """A write that rolls the blob store over to a new segment file and then
    fails is rolled back with its segment row; the bodies written next into
    that file must still be known to the index, or the next compaction pass
    deletes the file as one nobody references. (Small bodies, in segment
    files: ``segment_bodies``.)"""
    s = SQLiteStore(tmp_path / "r", StoreConfig(segment_size=1000))
    try:
        await s.add_domain("example.test")
        a = await s.add_account("a@example.test", "h")
        inbox = await s.get_mailbox(a.id, "INBOX")
        assert inbox
        await s.append(inbox, b"a" * 1200)  # segment 1 is full: the next body rolls over
        real = SQLiteStore._store_body

        def failing(self, c, body, refs):  # noqa: ANN001, ANN202
            if body == b"x" * 10:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(self, c, body, refs)

        monkeypatch.setattr(SQLiteStore, "_store_body", failing)
        with pytest.raises(StoreError):  # the first rolls over to segment 2, the second fails: neither stays
            await s.append_many(inbox, [AppendItem(b"b" * 10), AppendItem(b"x" * 10)])
        monkeypatch.setattr(SQLiteStore, "_store_body", real)
        assert s._q("SELECT id FROM segments") == [(1,)]  # segment 2's row went with the write
        kept = await s.append(inbox, b"c" * 1200)  # written to segment 2
        await s.append(inbox, b"d" * 10)  # rolls over to segment 3
        assert s._q("SELECT DISTINCT segment FROM bodies ORDER BY segment") == [(1,), (2,), (3,)]
        # segment 2 has its row again, with the bytes of its body: without
        # it compaction would never reclaim it (and only a last check before
        # removing a file without a row would keep the body)
        accounts, pointed = _segment_accounts(s)
        assert [(seg, live) for seg, _, live in accounts] == pointed == [(1, 1200), (2, 1200), (3, 10)]
        await s.compact()
        await s.compact()
        assert await s.read_message(inbox, kept) == b"c" * 1200
    finally:
        await s.close()
    s2 = SQLiteStore(tmp_path / "r", StoreConfig(segment_size=1000))
    try:
        assert await s2.read_message(inbox, kept) == b"c" * 1200
    finally:
        await s2.close()



def _version3_schema() -> str:
    """The schema as version 3 created it: no quota columns, no save date."""
    old = re.sub(r",( *--[^\n]*)?\n\s*quota_storage.*?\n\);", r"\1\n);", schema.SCHEMA, count=1, flags=re.DOTALL)
    old = re.sub(r"\n\s*save_date\s+REAL[^\n]*", "", old, count=1)
    assert "quota_" not in old and "save_date" not in old and "used_storage" not in old
    return old


def _version2_schema() -> str:
    """The schema as version 2 created it: plain INTEGER PRIMARY KEY ids
    (SQLite reuses a freed max id), no account epoch."""
    old = _version3_schema().replace(" PRIMARY KEY AUTOINCREMENT", " PRIMARY KEY")
    return re.sub(r",\n\s*epoch\s+INTEGER[^\n]*\n\);", "\n);", old, count=1)


async def test_version3_data_directory_gets_quota_totals_and_save_dates(tmp_path: Path) -> None:
    """A version-3 directory opens as version 4: the accounts get their usage
    summed from the messages they hold (and the triggers keep it from then
    on), no limits, and every message its INTERNALDATE as save date."""
    d = tmp_path / "v3"
    d.mkdir()
    c = sqlite3.connect(d / "index.sqlite3")
    c.executescript(_version3_schema())
    c.executescript(schema.QUEUE_SCHEMA)
    c.executescript(
        "INSERT INTO meta VALUES ('schema_version', '3');"
        "INSERT INTO domains VALUES ('example.test');"
        "INSERT INTO accounts(id, address, domain, password_hash, created) VALUES"
        " (1, 'alice@example.test', 'example.test', 'h', 0), (2, 'bob@example.test', 'example.test', 'h', 0);"
        "INSERT INTO mailboxes(id, account_id, name, uid_validity, uid_next) VALUES"
        " (1, 1, 'INBOX', 100, 3), (2, 1, 'Work', 101, 2), (3, 2, 'INBOX', 102, 1);"
        "INSERT INTO bodies(id, segment, offset, length, refs) VALUES (1, 0, 0, 0, 3);"
        "INSERT INTO messages(mailbox_id, uid, body_id, prefix, size, flags, internal_date, modseq) VALUES"
        " (1, 1, 1, x'', 100, '', 1000000000, 1), (1, 2, 1, x'', 250, '', 1000000500, 2),"
        " (2, 1, 1, x'', 40, '', 1100000000, 1);"
    )
    c.commit()
    c.close()
    s = SQLiteStore(d, StoreConfig(fsync=False))
    try:
        assert s._read.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(
            schema.SCHEMA_VERSION)
        alice = await s.get_quota(1)
        assert (alice.storage_used, alice.messages_used) == (390, 3)
        assert (alice.storage_limit, alice.messages_limit) == (None, None)
        assert (await s.get_quota(2)).messages_used == 0
        inbox = await s.get_mailbox(1, "INBOX")
        assert inbox is not None
        infos = await s.list_messages(inbox)
        assert [m.save_date for m in infos] == [1000000000, 1000000500]
        await s.expunge(inbox, [1])
        alice = await s.get_quota(1)
        assert (alice.storage_used, alice.messages_used) == (290, 2)
    finally:
        await s.close()



async def test_version2_data_directory_gets_ids_that_are_never_reused(tmp_path: Path) -> None:
    """A store created with plain INTEGER PRIMARY KEY ids is rebuilt on open
    (ids and rows kept, AUTOINCREMENT, sqlite_sequence seeded), and ids then
    keep increasing after deletes, also across a reopen."""
    d = tmp_path / "v2"
    d.mkdir()
    c = sqlite3.connect(d / "index.sqlite3")
    c.executescript(_version2_schema())
    c.executescript(schema.QUEUE_SCHEMA)
    c.executescript(
        "INSERT INTO meta VALUES ('schema_version', '2');"
        "INSERT INTO domains VALUES ('example.test');"
        "INSERT INTO accounts(id, address, domain, password_hash, created) VALUES"
        " (1, 'alice@example.test', 'example.test', 'h', 0), (2, 'bob@example.test', 'example.test', 'h', 0);"
        "INSERT INTO mailboxes(id, account_id, name, uid_validity, uid_next) VALUES"
        " (1, 1, 'INBOX', 100, 1), (2, 2, 'INBOX', 101, 2), (3, 2, 'Work', 102, 1);"
        "INSERT INTO subscriptions VALUES (1, 'INBOX'), (2, 'INBOX'), (2, 'Work');"
    )
    assert "AUTOINCREMENT" not in c.execute("SELECT sql FROM sqlite_master WHERE name = 'mailboxes'").fetchone()[0]
    c.commit()
    c.close()
    s = SQLiteStore(d, StoreConfig(fsync=False))
    try:
        bob = await s.get_account("bob@example.test")
        assert bob is not None and bob.id == 2 and bob.epoch == 0
        bob_inbox = await s.get_mailbox(2, "INBOX")
        assert bob_inbox is not None and (bob_inbox.id, bob_inbox.uid_validity) == (2, 101)
        assert await s.append(bob_inbox, b"Subject: kept\r\n\r\nx\r\n") == 2  # uid_next kept
        for table in ("accounts", "mailboxes", "bodies"):
            sql = s._read.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
            assert "AUTOINCREMENT" in sql, table
        assert s._read.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(schema.SCHEMA_VERSION)
        await s.delete_mailbox(2, "Work")  # frees the highest mailbox id, 3
        fresh = await s.create_mailbox(1, "Fresh")
        assert fresh.id == 4
        await s.remove_account("bob@example.test")  # frees the highest account id, 2
        carol = await s.add_account("carol@example.test", "h")
        assert carol.id == 3
        body_ids = [r[0] for r in s._read.execute("SELECT id FROM bodies")]
        assert body_ids == []  # bob's message went with him, leaving sqlite_sequence at 1
    finally:
        await s.close()
    s = SQLiteStore(d, StoreConfig(fsync=False))
    try:
        await s.remove_account("carol@example.test")
        dave = await s.add_account("dave@example.test", "h")
        assert dave.id == 4
        assert min(m.id for m in await s.list_mailboxes(dave.id)) > fresh.id
        inbox = await s.get_mailbox(1, "INBOX")
        assert inbox is not None
        await s.append(inbox, b"Subject: new\r\n\r\ny\r\n")
        assert [r[0] for r in s._read.execute("SELECT id FROM bodies")] == [2]
    finally:
        await s.close()


async def test_a_message_not_derived_yet_is_parsed_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FETCH or SEARCH reaching a message before the indexer derives it in
    another thread: one hostile message (a million MIME parts) must not stall
    every client of the event loop while it is parsed."""
    import threading

    from mailyard.store.sqlite import search

    monkeypatch.setattr(SQLiteStore, "_background_work", lambda self, c: False)  # no indexer
    threads: list[threading.Thread] = []
    real = search.derive_record

    def spy(raw: bytes):  # noqa: ANN202
        threads.append(threading.current_thread())
        return real(raw)

    monkeypatch.setattr(search, "derive_record", spy)
    s = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    try:
        await s.add_domain("example.test")
        inbox = await _inbox(s)
        await s.append(inbox, MIME)
        derived = await s.get_derived(inbox, [1])
        assert derived[1]["envelope"]
        assert threads and all(t is not threading.main_thread() for t in threads)
    finally:
        await s.close()


async def test_deriving_many_inline_bodies_holds_their_bytes_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FETCH of many messages the indexer has not reached reads the bodies'
    places together, and an inline body's place holds its bytes (up to
    INLINE_MAX): each goes once its body is derived, so the memory held
    falls while they are derived instead of lasting to the last one."""
    import tracemalloc

    from mailyard.store.sqlite import search

    monkeypatch.setattr(SQLiteStore, "_background_work", lambda self, c: False)  # no indexer
    count, size = 1500, INLINE_MAX - 100
    record = search.derive_record(b"Subject: x\r\n\r\nx\r\n")
    held: list[int] = []

    def spy(raw: bytes):  # noqa: ANN202
        held.append(tracemalloc.get_traced_memory()[0])
        return record

    s = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    try:
        await s.add_domain("example.test")
        inbox = await _inbox(s)
        await s.append_many(inbox, [AppendItem(b"Subject: %d\r\n\r\n" % i + b"x" * size) for i in range(count)])
        monkeypatch.setattr(search, "derive_record", spy)
        tracemalloc.start()
        try:
            await s.get_derived(inbox, range(1, count + 1))
        finally:
            tracemalloc.stop()
        assert len(held) == count
        # all the bytes when the first is derived, about none left at the last
        assert held[0] - held[-1] > count * size * 0.8, (held[0], held[-1])
    finally:
        await s.close()


async def test_bodies_derived_by_an_earlier_derivation_are_derived_again(tmp_path: Path) -> None:
    """A directory whose derived data an earlier ``derive`` wrote (no
    'derived_format' in meta, header_fields.folded the bare value) is derived
    again when opened: SEARCH FROM finds the address as parsed, and the
    background indexer refills the tables."""
    address = b"From: <user-from (comment)@ (comment) domain.org>\r\nSubject: s\r\n\r\nbody\r\n"
    s = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    await s.add_domain("example.test")
    inbox = await _inbox(s)
    await s.append(inbox, address)
    assert await s.search_headers(inbox, "from", "user-from@domain.org") == {1}
    await s.close()
    c = sqlite3.connect(tmp_path / "d" / "index.sqlite3")
    c.executescript("UPDATE header_fields SET folded = lower(value); DELETE FROM meta WHERE key = 'derived_format';")
    c.commit()
    c.close()
    s2 = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    try:
        assert await s2.search_headers(inbox, "from", "user-from@domain.org") == {1}
        assert await s2.search_headers(inbox, "from", "(comment)") == {1}  # the field text still matches
        row = s2._read.execute("SELECT value FROM meta WHERE key = 'derived_format'").fetchone()
        assert row is not None and row[0] == str(FORMAT_VERSION)
    finally:
        await s2.close()
    # opened again with the same derivation: nothing is marked
    s3 = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    try:
        assert s3._read.execute("SELECT count(*) FROM bodies WHERE derived IS NULL").fetchone()[0] == 0
    finally:
        await s3.close()


async def test_sessions_told_of_a_claimed_delivery_claim_without_reading(tmp_path: Path) -> None:
    """RFC 3501 2.3.2: one session gets a new message as \\Recent; every
    other session that announces it claims too and finds it taken. Those
    claims are answered without a query: claims only raise recent_uid, so
    a value this process read or committed that covers ``upto`` settles it.
    A claim beyond what this process knows (another process claimed, or a
    new delivery) still asks the database, and exactly one session wins."""
    s = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    try:
        await s.add_domain("example.test")
        inbox = await _inbox(s)
        for _ in range(3):
            await s.append(inbox, MIME)
        assert await s.claim_recent(inbox, upto=3) == 0  # this session: 1..3 are \Recent
        reads: list[str] = []
        s._read.set_trace_callback(lambda sql: reads.append(sql) if "recent_uid" in sql else None)
        assert [await s.claim_recent(inbox, upto=3) for _ in range(20)] == [3] * 20
        s._read.set_trace_callback(None)
        assert reads == []
        # another process appends UID 4 and a session of it claims it
        other = sqlite3.connect(tmp_path / "d" / "index.sqlite3", isolation_level=None)
        try:
            await s.append(inbox, MIME)
            other.execute("UPDATE mailboxes SET recent_uid = 4 WHERE id = ?", (inbox.id,))
        finally:
            other.close()
        assert await s.claim_recent(inbox, upto=4) == 4  # read: taken elsewhere
        await s.append(inbox, MIME)
        firsts = await asyncio.gather(*(s.claim_recent(inbox, upto=5) for _ in range(5)))
        assert sorted(firsts) == [4, 5, 5, 5, 5]  # exactly one session gets UID 5
        assert await s.claim_recent(inbox, claim=False) == 5  # EXAMINE reads the truth
    finally:
        await s.close()


async def test_finding_the_due_queue_entries_does_not_walk_the_whole_queue(tmp_path: Path) -> None:
    # The queue runner asks for the due entries at every wake-up (each new
    # message), on its event loop: that must cost the same with 20,000
    # deferred entries waiting as with none.
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    try:
        def backlog(c: sqlite3.Connection, ctx: object) -> None:
            c.executemany("INSERT INTO queue(id, body_id, reverse_path, size, created) VALUES (?, 0, 'a@x.test', 1, 0)",
                          [(i,) for i in range(1, 20_002)])
            c.executemany("INSERT INTO queue_rcpts(queue_id, address, domain, next_attempt) VALUES (?, 'b@y.test', 'y.test', ?)",
                          [(i, 5000.0 if i <= 20_000 else 10.0) for i in range(1, 20_002)])

        await store._write(backlog)
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0

        store._read.set_progress_handler(count, 100)
        try:
            due = await store.queue_due(100.0)
        finally:
            store._read.set_progress_handler(None, 0)
        assert [entry.id for entry in due] == [20_001]
        # a walk over every recipient is hundreds of thousands of VM steps
        assert steps * 100 < 20_000, f"about {steps * 100} SQLite VM steps for one due entry"
    finally:
        await store.close()


async def test_a_flag_change_slice_stops_at_its_octets_of_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slice of store_flags also ends once the flags text it rewrites
    passes FLAG_SLICE_OCTETS (messages.py): messages with long keyword lists
    are rewritten in smaller commits, each with its mod-sequence."""
    import mailyard.store.sqlite.messages as sqlite_messages

    monkeypatch.setattr(sqlite_messages, "FLAG_SLICE_OCTETS", 100)
    store = SQLiteStore(tmp_path, StoreConfig(fsync=False))
    try:
        await store.add_domain("example.test")
        inbox = await _inbox(store)
        long = [f"keyword-{i:02d}" for i in range(8)]  # 95 octets of flags text
        for i in range(3):
            await store.append(inbox, b"m%d\r\n" % i, long)
        changed, _ = await store.store_flags(inbox, [1, 2, 3], ["\\Seen"], "add")
        # the first message's old and new text pass 100 octets: one message a commit
        assert len({m.modseq for m in changed}) == 3 and [m.uid for m in changed] == [1, 2, 3]
    finally:
        await store.close()
