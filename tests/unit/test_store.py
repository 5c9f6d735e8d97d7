"""The store contract, written against the Store interface so every backend
(SQLite now, PostgreSQL later) runs the same suite: add a backend to
``BACKENDS`` and it is covered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailyard.config import StoreConfig
from mailyard.store.api import (
    AlreadyExists,
    DeliveryTarget,
    InvalidName,
    Mailbox,
    NotFound,
    Store,
    StoreError,
)
from mailyard.store.sqlite import SQLiteStore

BACKENDS = ["sqlite"]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    s = SQLiteStore(tmp_path / "data", StoreConfig(segment_size=4096))
    await s.add_domain("example.test")
    yield s
    await s.close()


async def test_domains(store: Store) -> None:
    assert await store.list_domains() == ["example.test"]
    assert await store.is_local_domain("EXAMPLE.test")
    assert not await store.is_local_domain("other.test")
    with pytest.raises(AlreadyExists):
        await store.add_domain("Example.Test")
    await store.add_account("a@example.test", "h")
    with pytest.raises(StoreError):
        await store.remove_domain("example.test")


async def test_account_has_inbox_and_special_use(store: Store) -> None:
    acct = await store.add_account("Alice@Example.TEST", "hash")
    assert acct.address == "Alice@example.test"
    assert (await store.get_account("alice@example.test")) == acct
    names = {m.name: m.special_use for m in await store.list_mailboxes(acct.id)}
    assert names == {
        "INBOX": None, "Drafts": "\\Drafts", "Sent": "\\Sent", "Trash": "\\Trash",
        "Junk": "\\Junk", "Archive": "\\Archive",
    }
    with pytest.raises(AlreadyExists):
        await store.add_account("alice@example.test", "x")
    with pytest.raises(NotFound):
        await store.add_account("bob@nowhere.test", "x")
    await store.set_password("alice@example.test", "new", apop_secret="s")
    acct2 = await store.get_account("alice@example.test")
    assert acct2 is not None and acct2.password_hash == "new" and acct2.apop_secret == "s"
    await store.remove_account("alice@example.test")
    assert await store.get_account("alice@example.test") is None


async def test_aliases_and_lists(store: Store) -> None:
    await store.add_account("alice@example.test", "h")
    await store.add_alias("info@example.test", ["alice@example.test", "x@remote.test"])
    assert await store.get_alias("INFO@example.test") == ["alice@example.test", "x@remote.test"]
    with pytest.raises(AlreadyExists):
        await store.add_alias("alice@example.test", ["x@remote.test"])
    await store.remove_alias("info@example.test", ["x@remote.test"])
    assert await store.get_alias("info@example.test") == ["alice@example.test"]
    await store.add_list("team@example.test")
    await store.subscribe_list("team@example.test", "alice@example.test")
    await store.subscribe_list("team@example.test", "bob@remote.test")
    assert await store.get_list_members("team@example.test") == ["alice@example.test", "bob@remote.test"]
    assert await store.get_list_members("nolist@example.test") is None
    await store.unsubscribe_list("team@example.test", "bob@remote.test")
    assert await store.list_lists() == {"team@example.test": ["alice@example.test"]}


async def test_deliver_many_targets_shares_body_and_keeps_bytes(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    b = await store.add_account("b@example.test", "h")
    inbox_a = await store.get_mailbox(a.id, "inbox")
    inbox_b = await store.get_mailbox(b.id, "INBOX")
    assert inbox_a and inbox_b
    body = b"Received: from x\r\nSubject: hi\r\n\r\nbody\r\n"
    uids = await store.deliver(
        body,
        [DeliveryTarget(inbox_a.id, b"Delivered-To: a@example.test\r\n"),
         DeliveryTarget(inbox_b.id, b"Delivered-To: b@example.test\r\n", frozenset({"\\Seen"}))],
    )
    assert uids == [1, 1]
    assert await store.read_message(inbox_a, 1) == b"Delivered-To: a@example.test\r\n" + body
    assert await store.read_message(inbox_b, 1) == b"Delivered-To: b@example.test\r\n" + body
    info = (await store.list_messages(inbox_b))[0]
    assert info.flags == {"\\Seen"} and info.size == len(body) + 30
    status = await store.mailbox_status(inbox_a)
    assert (status.messages, status.unseen, status.uid_next) == (1, 1, 2)


async def test_deliver_is_atomic(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    with pytest.raises(NotFound):
        await store.deliver(b"x\r\n", [DeliveryTarget(inbox.id), DeliveryTarget(999999)])
    assert await store.list_messages(inbox) == []
    # the failed delivery did not consume a UID visible to anyone
    assert await store.append(inbox, b"y\r\n") == 1


async def test_concurrent_deliveries_get_distinct_uids(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    bodies = [b"Subject: %d\r\n\r\n" % i + b"x" * 1000 for i in range(200)]
    uids = await asyncio.gather(*(store.append(inbox, body) for body in bodies))
    assert sorted(uids) == list(range(1, 201))
    for uid, body in zip(uids, bodies, strict=True):
        assert await store.read_message(inbox, uid) == body


async def test_flags_modseq_and_unchangedsince(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    for i in range(3):
        await store.append(inbox, b"m%d\r\n" % i)
    before = (await store.get_mailbox_by_id(inbox.account_id, inbox.id)).highest_modseq
    changed, failed = await store.store_flags(inbox, [1, 2], ["\\Seen", "$Label"], "add")
    assert [m.uid for m in changed] == [1, 2] and failed == []
    assert all(m.modseq == before + 1 for m in changed)
    changed, failed = await store.store_flags(inbox, [1, 3], ["\\Flagged"], "add", unchanged_since=before)
    assert [m.uid for m in changed] == [3] and failed == [1]
    changed, _ = await store.store_flags(inbox, [2], ["\\Draft"], "replace")
    assert changed[0].flags == {"\\Draft"}
    changed, _ = await store.store_flags(inbox, [2], ["\\Draft"], "add")
    assert changed == []  # no change, no new modseq
    ch = await store.changes_since(inbox, before)
    assert {m.uid for m in ch.changed} == {1, 2, 3} and ch.vanished == []


async def test_expunge_copy_move_and_vanished(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    arch = await store.get_mailbox(a.id, "Archive")
    assert inbox and arch
    for i in range(4):
        await store.append(inbox, b"Subject: m%d\r\n\r\nbody\r\n" % i, ["\\Seen"])
    pairs = await store.copy_messages(inbox, [2, 3], arch)
    assert pairs == [(2, 1), (3, 2)]
    assert await store.read_message(arch, 2) == await store.read_message(inbox, 3)
    mark = (await store.get_mailbox_by_id(inbox.account_id, inbox.id)).highest_modseq
    assert await store.expunge(inbox, [3, 1, 99]) == [1, 3]
    # the copy survives the original's expunge (shared body is reference-counted)
    assert await store.read_message(arch, 2) == b"Subject: m2\r\n\r\nbody\r\n"
    moved = await store.copy_messages(inbox, [4], arch, move=True)
    assert moved == [(4, 3)]
    assert [m.uid for m in await store.list_messages(inbox)] == [2]
    ch = await store.changes_since(inbox, mark)
    assert ch.vanished == [1, 3, 4]
    with pytest.raises(NotFound):
        await store.read_message(inbox, 1)


async def test_mailbox_hierarchy_rename_delete(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    await store.create_mailbox(a.id, "Work")
    await store.create_mailbox(a.id, "Work/2026")
    old = await store.get_mailbox(a.id, "Work/2026")
    with pytest.raises(AlreadyExists):
        await store.create_mailbox(a.id, "Work")
    for bad in ["", "a//b", "../x", "a/../b", "x\x00y", "/abs", "a/"]:
        with pytest.raises(InvalidName):
            await store.create_mailbox(a.id, bad)
    await store.rename_mailbox(a.id, "Work", "Jobs")
    names = {m.name for m in await store.list_mailboxes(a.id)}
    assert {"Jobs", "Jobs/2026"} <= names and "Work" not in names
    assert (await store.get_mailbox(a.id, "Jobs/2026")).uid_validity == old.uid_validity
    await store.delete_mailbox(a.id, "Jobs/2026")
    assert await store.get_mailbox(a.id, "Jobs/2026") is None
    await store.create_mailbox(a.id, "Jobs/2026")
    assert (await store.get_mailbox(a.id, "Jobs/2026")).uid_validity > old.uid_validity
    with pytest.raises(StoreError):
        await store.delete_mailbox(a.id, "INBOX")


async def test_rename_inbox_moves_messages(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    await store.append(inbox, b"one\r\n")
    await store.append(inbox, b"two\r\n")
    await store.rename_mailbox(a.id, "INBOX", "Old")
    old = await store.get_mailbox(a.id, "Old")
    assert old and [m.uid for m in await store.list_messages(old)] == [1, 2]
    assert await store.list_messages(inbox) == []
    assert (await store.get_mailbox(a.id, "INBOX")).id == inbox.id
    assert await store.append(inbox, b"three\r\n") == 3  # UIDs never reused


async def test_listeners_hear_commits(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    heard: list[int] = []
    remove = store.add_listener(heard.append)
    await store.append(inbox, b"x\r\n")
    await asyncio.sleep(0)
    assert heard == [inbox.id]
    remove()
    await store.append(inbox, b"y\r\n")
    await asyncio.sleep(0)
    assert heard == [inbox.id]


async def test_reopen_keeps_everything(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "d", StoreConfig(segment_size=1000))
    await s.add_domain("example.test")
    a = await s.add_account("a@example.test", "h")
    inbox = await s.get_mailbox(a.id, "INBOX")
    assert inbox
    bodies = [bytes([65 + i % 26]) * (300 + i) for i in range(20)]  # spans several segments
    for body in bodies:
        await s.append(inbox, body)
    await s.close()
    s2 = SQLiteStore(tmp_path / "d", StoreConfig(segment_size=1000))
    try:
        for uid, body in enumerate(bodies, start=1):
            assert await s2.read_message(inbox, uid) == body
        assert await s2.append(inbox, b"z") == 21
    finally:
        await s2.close()


async def test_compaction_reclaims_expunged_space_and_keeps_live_bytes(tmp_path: Path) -> None:
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


# --- derived data, header index, MULTIAPPEND, subscriptions, \Recent -----------

MIME = (
    b"From: Carol Q <carol@remote.test>\r\nTo: Alice <alice@example.test>, bob@example.test\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= from Carol\r\nX-Tag: Alpha\r\nX-Tag: beta\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nhello quokka\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b--\r\n"
)


async def _inbox(store: Store) -> Mailbox:
    a = await store.add_account("a@example.test", "h")
    box = await store.get_mailbox(a.id, "INBOX")
    assert box
    return box


async def test_get_derived_fields_without_body_text(store: Store) -> None:
    from mailyard.message.derived import body_structure, derive
    from mailyard.protocols.imap.response import body_bytes, envelope_bytes

    inbox = await _inbox(store)
    uid = await store.append(inbox, MIME)
    # asked for before the background indexer got to it: derived on demand
    got = await store.get_derived(inbox, [uid], ["envelope_imap", "bodystructure_imap", "body_imap"])
    d = derive(MIME)
    assert got == {uid: {"envelope_imap": envelope_bytes(d.envelope),
                         "bodystructure_imap": body_bytes(d.bodystructure),
                         "body_imap": body_bytes(body_structure(d.bodystructure))}}
    full = (await store.get_derived(inbox, [uid]))[uid]
    assert set(full) == {"envelope", "bodystructure", "parts", "messages", "date", "size", "headers"}
    assert "body_text" not in full and full["size"] == len(MIME)
    assert full["envelope"] == d.envelope and full["parts"] == {k: list(v) for k, v in d.parts.items()}
    assert full["headers"]["x-tag"] == ["Alpha", "beta"]
    assert full["headers"]["subject"] == ["Grüße from Carol"]
    assert (await store.get_derived(inbox, [uid], ["date"]))[uid] == {"date": d.date}
    assert await store.get_derived(inbox, [99], ["size"]) == {}
    with pytest.raises(ValueError):
        await store.get_derived(inbox, [uid], ["body_text"])


async def test_search_headers_and_text_from_the_indexes(store: Store) -> None:
    inbox = await _inbox(store)
    u1 = await store.append(inbox, MIME)
    u2 = await store.append(inbox, b"From: dave@remote.test\r\nSubject: plain\r\n\r\nnothing here\r\n")
    assert await store.search_headers(inbox, "SUBJECT", "GRÜSSE") == {u1}  # decoded, case-folded
    assert await store.search_headers(inbox, "subject", "plain") == {u2}
    assert await store.search_headers(inbox, "from", "remote.test") == {u1, u2}
    assert await store.search_headers(inbox, "to", "BOB@") == {u1}
    assert await store.search_headers(inbox, "x-tag", "") == {u1}  # presence
    assert await store.search_headers(inbox, "X-Tag", "bet") == {u1}  # any occurrence
    assert await store.search_headers(inbox, "cc", "") == set()
    assert await store.search_text(inbox, "QUOKKA", "body") == {u1}
    await store.expunge(inbox, [u1])
    assert await store.search_headers(inbox, "from", "remote") == {u2}


async def test_get_messages_in_uid_order(store: Store) -> None:
    inbox = await _inbox(store)
    uids = [await store.append(inbox, b"m%d\r\n" % i, ["\\Seen"] if i % 2 else []) for i in range(200)]
    got = await store.get_messages(inbox, [uids[5], uids[3], 9999, *uids[100:190]])
    assert [m.uid for m in got] == [uids[3], uids[5], *uids[100:190]]
    assert got[0].flags == frozenset({"\\Seen"}) and got[1].flags == frozenset({"\\Seen"})
    assert got[2].flags == frozenset()


async def test_append_many_is_atomic(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailyard.store.api import AppendItem

    inbox = await _inbox(store)
    uids = await store.append_many(inbox, [AppendItem(b"one\r\n", frozenset({"\\Seen"}), 1_000_000.0),
                                           AppendItem(b"two\r\n")])
    assert uids == [1, 2]
    infos = await store.list_messages(inbox)
    assert infos[0].flags == {"\\Seen"} and infos[0].internal_date == 1_000_000.0
    assert await store.read_message(inbox, 2) == b"two\r\n"
    # a failure on the second message leaves neither
    real = SQLiteStore._store_body
    calls = []

    def failing(self, c, body, refs):  # noqa: ANN001, ANN202
        calls.append(body)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(self, c, body, refs)

    monkeypatch.setattr(SQLiteStore, "_store_body", failing)
    with pytest.raises(StoreError):
        await store.append_many(inbox, [AppendItem(b"three\r\n"), AppendItem(b"four\r\n")])
    monkeypatch.setattr(SQLiteStore, "_store_body", real)
    assert [m.uid for m in await store.list_messages(inbox)] == [1, 2]


async def test_subscriptions_are_names(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    assert "INBOX" in await store.list_subscriptions(a.id)  # new mailboxes start subscribed
    await store.set_subscribed(a.id, "Not/There", True)  # RFC 9051 6.3.7: need not exist
    assert "Not/There" in await store.list_subscriptions(a.id)
    await store.create_mailbox(a.id, "Work")
    await store.set_subscribed(a.id, "Work", False)
    assert not (await store.get_mailbox(a.id, "Work")).subscribed
    await store.set_subscribed(a.id, "Work", True)
    assert (await store.get_mailbox(a.id, "Work")).subscribed
    await store.rename_mailbox(a.id, "Work", "Job")
    subs = await store.list_subscriptions(a.id)
    assert "Job" in subs and "Work" not in subs
    await store.delete_mailbox(a.id, "Job")
    assert "Job" not in await store.list_subscriptions(a.id)
    await store.set_subscribed(a.id, "Not/There", False)
    assert "Not/There" not in await store.list_subscriptions(a.id)
    with pytest.raises(InvalidName):
        await store.set_subscribed(a.id, "bad\x00name", True)


async def test_claim_recent_once(store: Store) -> None:
    inbox = await _inbox(store)
    await store.append(inbox, b"1\r\n")
    await store.append(inbox, b"2\r\n")
    assert await store.claim_recent(inbox, claim=False) == 0  # EXAMINE: nothing taken
    assert await store.claim_recent(inbox) == 0  # SELECT: 1 and 2 are \Recent here
    assert await store.claim_recent(inbox) == 2  # the next session: none
    await store.append(inbox, b"3\r\n")
    firsts = await asyncio.gather(*(store.claim_recent(inbox) for _ in range(5)))
    assert sorted(firsts) == [2, 3, 3, 3, 3]  # exactly one session gets UID 3


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
    import sqlite3

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
        assert version == "3"
    finally:
        await s2.close()


async def test_mailbox_summary(store: Store) -> None:
    inbox = await _inbox(store)
    empty = await store.mailbox_summary(inbox)
    assert list(empty.uids) == [] and empty.first_unseen is None and empty.keywords == frozenset()
    await store.append(inbox, b"1\r\n", ["\\Seen", "$Label"])
    await store.append(inbox, b"2\r\n", ["\\Flagged", "Work"])
    await store.append(inbox, b"3\r\n", ["\\Seen"])
    await store.expunge(inbox, [1])
    s = await store.mailbox_summary(inbox)
    assert list(s.uids) == [2, 3] and s.first_unseen == 2
    assert s.keywords == {"Work"} and s.mailbox.uid_next == 4
    with pytest.raises(NotFound):
        await store.mailbox_summary(Mailbox(9999, inbox.account_id, "gone", inbox.uid_validity, 1, 1))


@pytest.mark.parametrize("name", ["../x", "a/b", "x\x00y", "x\x7fy", "a\\b", "ex ample.test", ""])
def test_domain_names_cannot_carry_paths_or_controls(name: str) -> None:
    from mailyard.store.names import normalize_domain

    with pytest.raises(InvalidName):
        normalize_domain(name)
    assert normalize_domain("[IPv6:2001:db8::1]") == "[ipv6:2001:db8::1]"
    assert normalize_domain("Example.TEST.") == "example.test"


async def test_a_rolled_back_segment_rollover_loses_no_later_body(tmp_path: Path) -> None:
    """A write that rolls the blob store over to a new segment file and then
    fails is rolled back with its segment row; the bodies written next into
    that file must still be known to the index, or the next compaction pass
    deletes the file as one nobody references."""
    s = SQLiteStore(tmp_path / "r", StoreConfig(segment_size=1000))
    try:
        await s.add_domain("example.test")
        a = await s.add_account("a@example.test", "h")
        inbox = await s.get_mailbox(a.id, "INBOX")
        assert inbox
        await s.append(inbox, b"a" * 1200)  # segment 1 is full: the next body rolls over
        with pytest.raises(NotFound):  # rolls over to segment 2, then fails (no such mailbox)
            await s.deliver(b"b" * 10, [DeliveryTarget(inbox.id + 1000)])
        kept = await s.append(inbox, b"c" * 1200)  # written to segment 2
        await s.append(inbox, b"d" * 10)  # rolls over to segment 3
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


async def test_ids_are_never_reused(store: Store) -> None:
    """A freed account or mailbox id is never handed out again: sessions and
    webmail cookies hold these ids."""
    a = await store.add_account("a@example.test", "h")
    box = await store.create_mailbox(a.id, "Work")
    await store.delete_mailbox(a.id, "Work")
    again = await store.create_mailbox(a.id, "Work")
    assert again.id > box.id
    await store.remove_account("a@example.test")
    b = await store.add_account("b@example.test", "h")
    assert b.id > a.id
    assert min(m.id for m in await store.list_mailboxes(b.id)) > again.id


async def test_mailbox_references_are_checked_on_every_call(store: Store) -> None:
    """Every call on messages takes the session's reference and refuses one
    whose mailbox is gone, belongs to another account or has another
    UIDVALIDITY, before reading or writing anything."""
    from dataclasses import replace

    from mailyard.store.api import AppendItem, MailboxGone

    a = await store.add_account("a@example.test", "h")
    b = await store.add_account("b@example.test", "h")
    work = await store.create_mailbox(a.id, "Work")
    await store.append(work, b"Subject: a\r\n\r\nalice\r\n")
    bob_inbox = await store.get_mailbox(b.id, "INBOX")
    assert bob_inbox and await store.append(bob_inbox, b"Subject: b\r\n\r\nbob\r\n") == 1
    assert store.mailbox_current(work)
    foreign = replace(bob_inbox, account_id=a.id)  # alice's session naming bob's mailbox
    stale = replace(work, uid_validity=work.uid_validity - 1)
    await store.delete_mailbox(a.id, "Work")
    assert await store.get_mailbox_by_id(a.id, bob_inbox.id) is None
    for ref in (work, foreign, stale):
        assert not store.mailbox_current(ref)
        calls = [
            store.read_message(ref, 1), store.list_messages(ref), store.get_messages(ref, [1]),
            store.mailbox_status(ref), store.mailbox_summary(ref), store.changes_since(ref, 0),
            store.get_derived(ref, [1]), store.search_text(ref, "bob", "text"),
            store.search_headers(ref, "subject", "b"), store.claim_recent(ref),
            store.store_flags(ref, [1], ["\\Deleted"], "add"), store.expunge(ref, [1]),
            store.append(ref, b"x\r\n"), store.append_many(ref, [AppendItem(b"y\r\n")]),
            store.copy_messages(ref, [1], bob_inbox), store.copy_messages(bob_inbox, [1], ref),
        ]
        for call in calls:
            with pytest.raises(MailboxGone):
                await call
    infos = await store.list_messages(bob_inbox)
    assert [(m.uid, m.flags) for m in infos] == [(1, frozenset())]
    assert await store.read_message(bob_inbox, 1) == b"Subject: b\r\n\r\nbob\r\n"


async def test_credentials_current_across_store_instances(tmp_path: Path) -> None:
    """A password change or removal made through another store on the same
    directory (the CLI beside ``mailyard serve``) ends the sessions another
    store vouches for, and a deleted mailbox is seen gone there too."""
    s1 = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    s2 = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    try:
        await s1.add_domain("example.test")
        a = await s1.add_account("a@example.test", "h")
        box = await s1.create_mailbox(a.id, "Work")
        assert a.epoch == 0
        for _ in range(3):  # the answer is cached from here on
            assert s1.credentials_current(a.id, 0) and s1.mailbox_current(box)
        await s2.set_password("a@example.test", "h2")
        assert not s1.credentials_current(a.id, 0)
        assert s1.credentials_current(a.id, 1)
        assert (await s1.get_account("a@example.test")).epoch == 1
        await s2.delete_mailbox(a.id, "Work")
        assert not s1.mailbox_current(box)
        await s2.remove_account("a@example.test")
        assert not s1.credentials_current(a.id, 1)
    finally:
        await s1.close()
        await s2.close()


def _version2_schema() -> str:
    """The schema as version 2 created it: plain INTEGER PRIMARY KEY ids
    (SQLite reuses a freed max id), no account epoch."""
    import re

    from mailyard.store.schema import SCHEMA

    old = SCHEMA.replace(" PRIMARY KEY AUTOINCREMENT", " PRIMARY KEY")
    return re.sub(r",\n\s*epoch\s+INTEGER[^\n]*\n\);", "\n);", old, count=1)


async def test_version2_data_directory_gets_ids_that_are_never_reused(tmp_path: Path) -> None:
    """A store created with plain INTEGER PRIMARY KEY ids is rebuilt on open
    (ids and rows kept, AUTOINCREMENT, sqlite_sequence seeded), and ids then
    keep increasing after deletes, also across a reopen."""
    import sqlite3

    from mailyard.store.queue import QUEUE_SCHEMA

    d = tmp_path / "v2"
    d.mkdir()
    c = sqlite3.connect(d / "index.sqlite3")
    c.executescript(_version2_schema())
    c.executescript(QUEUE_SCHEMA)
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
        assert s._read.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "3"
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
