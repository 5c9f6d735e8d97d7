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
    assert await store.read_message(inbox_a.id, 1) == b"Delivered-To: a@example.test\r\n" + body
    assert await store.read_message(inbox_b.id, 1) == b"Delivered-To: b@example.test\r\n" + body
    info = (await store.list_messages(inbox_b.id))[0]
    assert info.flags == {"\\Seen"} and info.size == len(body) + 30
    status = await store.mailbox_status(inbox_a.id)
    assert (status.messages, status.unseen, status.uid_next) == (1, 1, 2)


async def test_deliver_is_atomic(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    with pytest.raises(NotFound):
        await store.deliver(b"x\r\n", [DeliveryTarget(inbox.id), DeliveryTarget(999999)])
    assert await store.list_messages(inbox.id) == []
    # the failed delivery did not consume a UID visible to anyone
    assert await store.append(inbox.id, b"y\r\n") == 1


async def test_concurrent_deliveries_get_distinct_uids(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    bodies = [b"Subject: %d\r\n\r\n" % i + b"x" * 1000 for i in range(200)]
    uids = await asyncio.gather(*(store.append(inbox.id, body) for body in bodies))
    assert sorted(uids) == list(range(1, 201))
    for uid, body in zip(uids, bodies, strict=True):
        assert await store.read_message(inbox.id, uid) == body


async def test_flags_modseq_and_unchangedsince(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    for i in range(3):
        await store.append(inbox.id, b"m%d\r\n" % i)
    before = (await store.get_mailbox_by_id(inbox.id)).highest_modseq
    changed, failed = await store.store_flags(inbox.id, [1, 2], ["\\Seen", "$Label"], "add")
    assert [m.uid for m in changed] == [1, 2] and failed == []
    assert all(m.modseq == before + 1 for m in changed)
    changed, failed = await store.store_flags(inbox.id, [1, 3], ["\\Flagged"], "add", unchanged_since=before)
    assert [m.uid for m in changed] == [3] and failed == [1]
    changed, _ = await store.store_flags(inbox.id, [2], ["\\Draft"], "replace")
    assert changed[0].flags == {"\\Draft"}
    changed, _ = await store.store_flags(inbox.id, [2], ["\\Draft"], "add")
    assert changed == []  # no change, no new modseq
    ch = await store.changes_since(inbox.id, before)
    assert {m.uid for m in ch.changed} == {1, 2, 3} and ch.vanished == []


async def test_expunge_copy_move_and_vanished(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    arch = await store.get_mailbox(a.id, "Archive")
    assert inbox and arch
    for i in range(4):
        await store.append(inbox.id, b"Subject: m%d\r\n\r\nbody\r\n" % i, ["\\Seen"])
    pairs = await store.copy_messages(inbox.id, [2, 3], arch.id)
    assert pairs == [(2, 1), (3, 2)]
    assert await store.read_message(arch.id, 2) == await store.read_message(inbox.id, 3)
    mark = (await store.get_mailbox_by_id(inbox.id)).highest_modseq
    assert await store.expunge(inbox.id, [3, 1, 99]) == [1, 3]
    # the copy survives the original's expunge (shared body is reference-counted)
    assert await store.read_message(arch.id, 2) == b"Subject: m2\r\n\r\nbody\r\n"
    moved = await store.copy_messages(inbox.id, [4], arch.id, move=True)
    assert moved == [(4, 3)]
    assert [m.uid for m in await store.list_messages(inbox.id)] == [2]
    ch = await store.changes_since(inbox.id, mark)
    assert ch.vanished == [1, 3, 4]
    with pytest.raises(NotFound):
        await store.read_message(inbox.id, 1)


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
    await store.append(inbox.id, b"one\r\n")
    await store.append(inbox.id, b"two\r\n")
    await store.rename_mailbox(a.id, "INBOX", "Old")
    old = await store.get_mailbox(a.id, "Old")
    assert old and [m.uid for m in await store.list_messages(old.id)] == [1, 2]
    assert await store.list_messages(inbox.id) == []
    assert (await store.get_mailbox(a.id, "INBOX")).id == inbox.id
    assert await store.append(inbox.id, b"three\r\n") == 3  # UIDs never reused


async def test_listeners_hear_commits(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    heard: list[int] = []
    remove = store.add_listener(heard.append)
    await store.append(inbox.id, b"x\r\n")
    await asyncio.sleep(0)
    assert heard == [inbox.id]
    remove()
    await store.append(inbox.id, b"y\r\n")
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
        await s.append(inbox.id, body)
    await s.close()
    s2 = SQLiteStore(tmp_path / "d", StoreConfig(segment_size=1000))
    try:
        for uid, body in enumerate(bodies, start=1):
            assert await s2.read_message(inbox.id, uid) == body
        assert await s2.append(inbox.id, b"z") == 21
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
            bodies[await s.append(inbox.id, body)] = body
        blob_dir = tmp_path / "c" / "blobs"
        before = sum(p.stat().st_size for p in blob_dir.glob("*.seg"))
        dead = [uid for uid in bodies if uid % 4 != 0]
        await s.expunge(inbox.id, dead)
        await s.compact()
        await s.compact()  # the second pass removes the retired files
        after = sum(p.stat().st_size for p in blob_dir.glob("*.seg"))
        assert after < before * 0.6
        for uid, body in bodies.items():
            if uid % 4 == 0:
                assert await s.read_message(inbox.id, uid) == body
    finally:
        await s.close()
    s2 = SQLiteStore(tmp_path / "c", StoreConfig(segment_size=20_000))
    try:
        assert len(await s2.list_messages(inbox.id)) == 15
        assert await s2.read_message(inbox.id, 4) == bodies[4]
    finally:
        await s2.close()
