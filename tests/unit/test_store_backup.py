"""Backups of the SQLite store (store/backup.py) over a real store in a
temporary data directory: incremental generations, compaction racing with
a backup, verification of damage, whole-store and per-account restores."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from mailyard.config import StoreConfig
from mailyard.store import backup as bk
from mailyard.store import open_store
from mailyard.store.api import Store

SEGMENT = 64 * 1024  # small segments: a few messages each
ADDRESS = "alice@example.test"


class StoreThread:
    """A store on an event loop of its own thread, so a test can use it from
    inside a backup's (synchronous) progress callback."""

    def __init__(self, data: Path) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.store: Store = self.call(self._open(data))

    async def _open(self, data: Path) -> Store:
        return open_store(data, StoreConfig(fsync=False, segment_size=SEGMENT), background=False)

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.call(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)


def message(i: int, size: int = 6000) -> bytes:
    return (f"Message-ID: <m{i}@example.test>\r\nSubject: number {i}\r\n\r\n".encode()
            + (b"%05d " % i) * (size // 6) + b"\r\n")


@pytest.fixture
def live(tmp_path: Path, segment_bodies: None) -> StoreThread:
    """A store whose bodies all go to segment files (``segment_bodies``),
    served by a thread of its own, with the account ADDRESS."""
    st = StoreThread(tmp_path / "data")

    async def setup() -> None:
        await st.store.add_domain("example.test")
        await st.store.add_account(ADDRESS, "!locked")

    st.call(setup())
    yield st
    st.close()


def add(st: StoreThread, first: int, count: int, mailbox: str = "INBOX", size: int = 6000) -> None:
    async def run() -> None:
        account = await st.store.get_account(ADDRESS)
        box = await st.store.get_mailbox(account.id, mailbox)
        for i in range(first, first + count):
            flags = {"\\Seen", "$Work"} if i % 3 == 0 else set()
            await st.store.append(box, message(i, size), flags, 1_600_000_000.0 + i)

    st.call(run())


def contents(store: Store, mailbox: str = "INBOX") -> dict[int, tuple[bytes, frozenset[str], float]]:
    """UID-independent view of a mailbox: message number -> (bytes, flags, INTERNALDATE)."""

    async def run() -> dict[int, tuple[bytes, frozenset[str], float]]:
        account = await store.get_account(ADDRESS)
        box = await store.get_mailbox(account.id, mailbox)
        out = {}
        for info in await store.list_messages(box):
            data = await store.read_message(box, info.uid)
            number = int(data.split(b"<m", 1)[1].split(b"@", 1)[0])
            out[number] = (data, info.flags, info.internal_date)
        return out

    return run()


def restored_contents(generation: Path, restored: Path) -> dict[int, tuple[bytes, frozenset[str], float]]:
    """INBOX of the store restored whole from ``generation`` into ``restored``."""
    bk.restore_data(generation, restored)
    store = open_store(restored, StoreConfig(fsync=False), background=False)

    async def read() -> dict:
        try:
            return await contents(store)
        finally:
            await store.close()

    return asyncio.run(read())


def test_incremental_generation_copies_only_new_segment_bytes(live: StoreThread, tmp_path: Path) -> None:
    data, dest = tmp_path / "data", tmp_path / "backup"
    add(live, 0, 60)  # 360 kB: five or six sealed segments and the one being written
    first = bk.backup(data, dest)
    assert first.segments_linked == 0 and first.bytes_reused == 0
    add(live, 60, 30)
    second = bk.backup(data, dest)
    manifest1 = bk.read_manifest(first.path)["files"]
    manifest2 = bk.read_manifest(second.path)["files"]
    sealed = [rel for rel, e in manifest1.items()
              if rel.startswith("blobs/") and manifest2[rel]["size"] == e["size"]]
    grown = [rel for rel, e in manifest1.items()
             if rel.startswith("blobs/") and manifest2[rel]["size"] > e["size"]]
    new = [rel for rel in manifest2 if rel.startswith("blobs/") and rel not in manifest1]
    print(f"sealed {len(sealed)}, grown {len(grown)}, new {len(new)}; read {second.bytes_from_store} bytes, "
          f"reused {second.bytes_reused}")
    assert sealed and new and second.segments_linked == len(sealed)
    # the bytes read from the store: the index, plus only what was appended since
    # (a grown segment is read again from its last whole checksummed chunk)
    appended = sum(manifest2[r]["size"] for r in new) + sum(
        manifest2[r]["size"] - manifest1[r]["size"] // bk.HASH_CHUNK * bk.HASH_CHUNK for r in grown)
    assert second.bytes_from_store == manifest2[bk.DB_FILE]["size"] + appended
    for rel in sealed:  # the same file, not a copy
        assert os.stat(first.path / rel).st_ino == os.stat(second.path / rel).st_ino
    assert bk.verify(first.path).ok and bk.verify(second.path).ok


def test_compaction_during_a_backup_does_not_damage_it(live: StoreThread, tmp_path: Path) -> None:
    """A compaction commits right after the backup's snapshot began and
    deletes the segment files the snapshot references; the backup still
    holds every message of its snapshot, byte for byte."""
    data, dest = tmp_path / "data", tmp_path / "backup"
    add(live, 0, 60)
    before = live.call(contents(live.store))
    old_segments = set(int(p.stem) for p in (data / "blobs").glob("*.seg"))
    raced = []

    def race(line: str) -> None:
        if line.startswith("snapshot:") and not raced:
            async def expunge_and_compact() -> None:
                account = await live.store.get_account(ADDRESS)
                box = await live.store.get_mailbox(account.id, "INBOX")
                uids = [m.uid for m in await live.store.list_messages(box)]
                await live.store.expunge(box, uids[:-2])
                await live.store.compact()
                await live.store.compact()  # the second pass deletes the retired files

            live.call(expunge_and_compact())
            raced.append(set(int(p.stem) for p in (data / "blobs").glob("*.seg")))

    summary = bk.backup(data, dest, progress=race)
    gone = old_segments - raced[0]
    print(f"segments deleted by the compaction during the backup: {sorted(gone)}")
    assert gone, "the compaction deleted no segment: the race did not happen"
    assert summary.messages == 60
    assert bk.verify(summary.path).ok
    assert restored_contents(summary.path, tmp_path / "restored") == before


def test_verify_finds_a_damaged_segment_and_restore_refuses_it(live: StoreThread, tmp_path: Path) -> None:
    data, dest = tmp_path / "data", tmp_path / "backup"
    add(live, 0, 20)
    summary = bk.backup(data, dest)
    segment = sorted((summary.path / "blobs").glob("*.seg"))[0]
    raw = bytearray(segment.read_bytes())
    raw[100] ^= 0xFF
    segment.write_bytes(bytes(raw))
    report = bk.verify(summary.path)
    assert report.problems == [f"blobs/{segment.name}: its checksum differs from the manifest's (bytes 0-{len(raw)})"]
    with pytest.raises(bk.BackupError, match="differs from its checksum"):
        bk.restore_data(summary.path, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_restore_account_as_folder_then_merged_adds_nothing_twice(live: StoreThread, tmp_path: Path) -> None:
    data, dest = tmp_path / "data", tmp_path / "backup"
    add(live, 0, 12)
    add(live, 100, 3, "Sent")
    before, sent = live.call(contents(live.store)), live.call(contents(live.store, "Sent"))
    gen = bk.backup(data, dest).path

    async def lose_inbox() -> None:
        account = await live.store.get_account(ADDRESS)
        box = await live.store.get_mailbox(account.id, "INBOX")
        uids = [m.uid for m in await live.store.list_messages(box)]
        await live.store.expunge(box, uids[:8])

    live.call(lose_inbox())
    s = live.call(bk.restore_account(gen, live.store, ADDRESS, as_folder="Restored"))
    assert (s.messages, s.skipped) == (15, 0)
    assert live.call(contents(live.store, "Restored/INBOX")) == before
    assert live.call(contents(live.store, "Restored/Sent")) == sent
    s = live.call(bk.restore_account(gen, live.store, ADDRESS))  # merged: only the 8 lost ones come back
    assert (s.messages, s.skipped) == (8, 4 + 3)
    assert live.call(contents(live.store)) == before
    s = live.call(bk.restore_account(gen, live.store, ADDRESS))
    assert (s.messages, s.skipped) == (0, 15)


def test_restore_account_recreates_a_removed_account(live: StoreThread, tmp_path: Path) -> None:
    data, dest = tmp_path / "data", tmp_path / "backup"
    add(live, 0, 5)
    before = live.call(contents(live.store))
    gen = bk.backup(data, dest).path
    live.call(live.store.remove_account(ADDRESS))
    s = live.call(bk.restore_account(gen, live.store, ADDRESS))
    assert s.messages == 5
    account = live.call(live.store.get_account(ADDRESS))
    assert account is not None and account.password_hash == "!locked"
    assert live.call(contents(live.store)) == before


def test_an_interrupted_run_leaves_a_partial_directory_the_next_run_clears(live: StoreThread,
                                                                          tmp_path: Path) -> None:
    data, dest = tmp_path / "data", tmp_path / "backup"
    add(live, 0, 10)
    first = bk.backup(data, dest)

    def fail(line: str) -> None:
        if line.startswith("segment"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bk.backup(data, dest, progress=fail)
    assert [p.name for p in dest.glob(".partial-*")]
    assert bk.generations(dest) == [first.path] and bk.find_generation(dest) == first.path
    assert bk.verify(first.path).ok
    second = bk.backup(data, dest, keep=1)
    assert not list(dest.glob(".partial-*"))
    assert bk.generations(dest) == [second.path] and second.removed == ["0001"]


def test_chunk_digests_of_a_grown_file_equal_those_of_the_whole() -> None:
    """An extended segment keeps its old chunks' digests: the checksum it
    gets equals that of hashing the whole file again."""
    data = os.urandom(bk.HASH_CHUNK * 2 + 12345)
    whole = bk.ChunkDigest()
    whole.update(data)
    prefix = bk.ChunkDigest()
    prefix.update(data[: bk.HASH_CHUNK * 2 + 100])
    grown = bk.ChunkDigest(prefix.entry()["chunks"][:2])
    grown.update(data[bk.HASH_CHUNK * 2:])
    assert grown.entry() == whole.entry()
    assert len(whole.entry()["chunks"]) == 3 and whole.entry()["size"] == len(data)


def test_a_store_of_inline_and_segment_bodies_backs_up_and_restores_exactly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small bodies kept in the index come with its snapshot: the generation's
    segment files hold the big bodies only; verify checks both kinds, and
    the whole store and one account are restored byte for byte. A
    generation from before inline bodies (its index without body_data)
    still restores an account."""
    from mailyard.store.sqlite import bodies

    data, dest = tmp_path / "data", tmp_path / "backup"
    monkeypatch.setattr(bodies, "INLINE_MAX", -1)  # the first generation's store: every body in a segment
    live = StoreThread(data)
    try:
        live.call(live.store.add_domain("example.test"))
        live.call(live.store.add_account(ADDRESS, "!locked"))
        add(live, 0, 4)
        old_gen = bk.backup(data, dest).path
        _edit_index(old_gen, "DROP TABLE IF EXISTS body_data; UPDATE meta SET value = '9' WHERE key = 'schema_version';")
        monkeypatch.undo()
        segment_bytes = sum(p.stat().st_size for p in (data / "blobs").glob("*.seg"))
        for i in range(10, 30):  # small and big in turn
            size = 2000 if i % 2 else 40_000
            account = live.call(live.store.get_account(ADDRESS))
            box = live.call(live.store.get_mailbox(account.id, "INBOX"))
            live.call(live.store.append(box, message(i, size), {"\\Seen"} if i % 3 else set(), 1_600_000_000.0 + i))
        before = live.call(contents(live.store))
        big = sum(len(raw) for i, (raw, _, _) in before.items() if i >= 10 and len(raw) > bodies.INLINE_MAX)
        assert sum(p.stat().st_size for p in (data / "blobs").glob("*.seg")) == segment_bytes + big
        summary = bk.backup(data, dest)
        assert bk.verify(summary.path).ok
        manifest = bk.read_manifest(summary.path)["files"]
        assert sum(e["size"] for rel, e in manifest.items() if rel.startswith("blobs/")) == segment_bytes + big
        assert restored_contents(summary.path, tmp_path / "restored") == before
        s = live.call(bk.restore_account(summary.path, live.store, ADDRESS, as_folder="Restored"))
        assert s.messages == len(before)
        assert live.call(contents(live.store, "Restored/INBOX")) == before
        s = live.call(bk.restore_account(old_gen, live.store, ADDRESS, as_folder="Old"))
        assert s.messages == 4
        assert live.call(contents(live.store, "Old/INBOX")) == {i: before[i] for i in range(4)}
    finally:
        live.close()


def _edit_index(generation: Path, sql: str) -> None:
    """Run ``sql`` on a backup generation's copy of the index (read-only as made)."""
    path = generation / bk.DB_FILE
    os.chmod(path, 0o600)
    db = sqlite3.connect(path)
    db.executescript(sql)
    db.close()


def _a_generation_missing_inline_bytes(tmp_path: Path) -> Path:
    """A generation of three messages kept in the index, one of which lost
    its bytes in a way neither the manifest's checksum nor SQLite's
    integrity check sees."""
    data, dest = tmp_path / "data", tmp_path / "backup"
    live = StoreThread(data)
    try:
        live.call(live.store.add_domain("example.test"))
        live.call(live.store.add_account(ADDRESS, "!locked"))
        add(live, 0, 3, size=2000)  # kept in the index
    finally:
        live.close()
    gen = bk.backup(data, dest).path
    _edit_index(gen, "DELETE FROM body_data WHERE body_id = (SELECT min(body_id) FROM body_data);")
    manifest = bk.read_manifest(gen)
    manifest["files"][bk.DB_FILE] = bk._hash_file(gen / bk.DB_FILE)
    (gen / bk.MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    return gen


def test_verify_finds_a_body_kept_in_the_index_without_its_bytes(tmp_path: Path) -> None:
    gen = _a_generation_missing_inline_bytes(tmp_path)
    assert bk.verify(gen).problems == [f"{bk.DB_FILE}: bodies kept in the index without their bytes: 1"]


def test_restoring_an_account_whose_inline_body_lost_its_bytes_is_a_backup_error(tmp_path: Path) -> None:
    # a BackupError, which the CLI reports as such (like a segment shorter
    # than its index says), not an OSError out of the restore
    gen = _a_generation_missing_inline_bytes(tmp_path)
    target = StoreThread(tmp_path / "target")
    try:
        target.call(target.store.add_domain("example.test"))
        with pytest.raises(bk.BackupError, match=r"a message of INBOX cannot be read: .*run backup verify"):
            target.call(bk.restore_account(gen, target.store, ADDRESS))
    finally:
        target.close()
