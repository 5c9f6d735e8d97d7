"""``mailyard store copy``: an SQLite data directory copied into PostgreSQL
serves the same mailboxes over IMAP (UIDVALIDITY, UIDs, flags, keywords,
INTERNALDATE, MODSEQ, bodies, byte for byte), with its accounts, aliases,
lists, contacts, settings and queue; an interrupted copy resumes without
doubling anything; and the reverse copy makes an SQLite backup of it."""

from __future__ import annotations

import asyncio
import imaplib
import re
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailyard.config import Config, StoreConfig
from mailyard.store import copy as store_copy
from mailyard.store.api import Contact, NewQueueEntry, NewRecipient
from mailyard.store.postgresql import PostgreSQLStore
from mailyard.store.sqlite import SQLiteStore
from tests.conftest import HOST, USERS, RunningServer, make_test_config
from tests.pgcluster import PgCluster

ALICE = "alice@example.test"
QUEUED_AT = float(int(time.time()) - 3600)  # an hour ago, well within the queue lifetime


def _message(n: int) -> bytes:
    return (f"From: sender{n}@remote.test\r\nTo: {ALICE}\r\nSubject: message {n}\r\n"
            f"Message-ID: <copy-{n}@remote.test>\r\n\r\nbody of message {n}\r\n").encode()


def _populate(server: RunningServer) -> None:
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=30) as smtp:
        for n in range(1, 8):
            smtp.sendmail(f"sender{n}@remote.test", [ALICE], _message(n))
    imap = imaplib.IMAP4(HOST, server.port("imap"))
    imap.login(ALICE, USERS[ALICE])
    imap.create("Projects/2026")
    imap.select("INBOX")
    imap.uid("STORE", "2", "+FLAGS", r"(\Seen $Work)")
    imap.uid("STORE", "5", "+FLAGS", r"(\Flagged)")
    imap.uid("COPY", "3:4", "Projects/2026")
    imap.uid("STORE", "1", "+FLAGS", r"(\Deleted)")
    imap.expunge()  # UID 1 gone: the copy keeps the gap
    imap.unsubscribe("Junk")
    imap.logout()

    async def seed() -> None:
        store = server.store
        alice = await store.get_account(ALICE)
        assert alice is not None
        await store.add_alias("team@example.test", [ALICE, "bob@example.test"])
        await store.add_list("list@example.test")
        await store.subscribe_list("list@example.test", "bob@example.test")
        await store.add_contact(alice.id, Contact("Carol Example", ("carol@remote.test",), uid="urn:uuid:carol"))
        await store.set_settings(alice.id, {"per_page": 25})
        await store.set_quota(ALICE, storage=10_000_000)
        await store.allow_senders(ALICE, ["info@example.test"])
        await store.queue_submit(b"Subject: out\r\n\r\nqueued\r\n",
                                 NewQueueEntry(ALICE, [NewRecipient("far@remote.test")], next_attempt=4e9,
                                               created=QUEUED_AT))

    server.call(seed())


def _imap_view(port: int) -> dict[str, tuple[bytes, ...]]:
    """What a client sees of every mailbox: SELECT's UIDVALIDITY/UIDNEXT and
    every message's UID, FLAGS, INTERNALDATE, MODSEQ, size and bytes."""
    imap = imaplib.IMAP4(HOST, port)
    imap.login(ALICE, USERS[ALICE])
    view: dict[str, tuple[bytes, ...]] = {}
    _, boxes = imap.list()
    _, subscribed = imap.lsub()
    view["LSUB"] = tuple(sorted(subscribed))
    for line in boxes:
        name = line.decode().rsplit(' "/" ', 1)[1].strip('"')
        imap.select(f'"{name}"', readonly=True)
        codes = tuple(imap.response(code)[1][0] for code in ("UIDVALIDITY", "UIDNEXT"))
        _, data = imap.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE MODSEQ RFC822.SIZE BODY.PEEK[])")
        flat = tuple(part if isinstance(part, bytes) else part[0] + part[1] for part in data if part)
        view[name] = (*codes, *flat)
    imap.logout()
    return view


def _cli(data: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailyard", "--data", str(data), "store", "copy", *argv],
                          capture_output=True, text=True, timeout=300)


def test_copy_sqlite_to_postgresql_serves_the_same_imap_view_and_back(pg_cluster: PgCluster, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    source = RunningServer(tmp_path / "source", make_test_config())  # stopped before the copy
    source.start()
    try:
        _populate(source)
        before = _imap_view(source.port("imap"))
    finally:
        source.stop()
    def count(name: str) -> int:
        return sum(1 for part in before[name] if b" (UID " in part)

    assert count("INBOX") == 6 and count("Projects/2026") == 2
    data = source.data_dir
    config = source.config
    dsn = pg_cluster.new_dsn()

    # interrupted after the first batch of messages, then resumed
    monkeypatch.setattr(store_copy, "BATCH_MESSAGES", 2)

    class Interrupted(Exception):
        pass

    def advance(messages: int, octets: int) -> None:
        raise Interrupted

    async def first_run() -> None:
        src, dst = SQLiteStore(data, StoreConfig(), background=False), PostgreSQLStore(dsn)
        try:
            await store_copy.copy_store(src, dst, advance=advance)
        finally:
            await src.close()
            await dst.close()

    with pytest.raises(Interrupted):
        asyncio.run(first_run())
    done = _cli(data, "--to", dsn)
    assert done.returncode == 0, done.stderr
    print(done.stdout.strip())
    assert re.search(r"^copied 6 messages \(\S+ MB\) of 3 accounts in \d+ mailboxes, 1 queue entries$",
                     done.stdout, re.M), done.stdout
    assert "already there from an earlier run: 2 messages" in done.stdout
    again = _cli(data, "--to", dsn)  # a third run finds everything there
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("copied 0 messages") and "0 queue entries" in again.stdout
    assert "already there from an earlier run: 8 messages" in again.stdout

    # served from PostgreSQL: the same view through IMAP, the rest through the store
    def on_pg(cfg: Config) -> None:
        cfg.store.backend = "postgresql"
        cfg.store.dsn = dsn

    node = RunningServer(tmp_path / "pg-node", config)
    on_pg(node.config)
    node.seed_defaults = False
    node.start()
    try:
        assert _imap_view(node.port("imap")) == before

        async def rest() -> None:
            store = node.store
            alice = await store.get_account(ALICE)
            assert alice is not None
            assert await store.get_alias("team@example.test") == [ALICE, "bob@example.test"]
            assert await store.get_list_members("list@example.test") == ["bob@example.test"]
            assert [c.uid for c in await store.list_contacts(alice.id)] == ["urn:uuid:carol"]
            assert await store.get_settings(alice.id) == {"per_page": 25}
            assert (await store.get_quota(alice.id)).storage_limit == 10_000_000
            assert await store.allowed_senders(alice.id) == ["info@example.test"]
            (entry,) = await store.queue_list()
            assert [r.address for r in entry.recipients] == ["far@remote.test"]
            assert await store.queue_body(entry.id) == b"Subject: out\r\n\r\nqueued\r\n"
            assert entry.created == QUEUED_AT  # its queue id and lifetime count from its arrival

        node.call(rest())
        # logins work with the copied password hashes
        imap = imaplib.IMAP4(HOST, node.port("imap"))
        assert imap.login(ALICE, USERS[ALICE])[0] == "OK"
        imap.logout()
    finally:
        node.stop()

    # the reverse: PostgreSQL into a new SQLite data directory (a backup)
    backup = tmp_path / "backup"
    done = _cli(backup, "--from", dsn)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("copied 8 messages")
    restored = RunningServer(backup, config)
    restored.seed_defaults = False
    restored.start()
    try:
        assert _imap_view(restored.port("imap")) == before

        async def queued() -> None:
            (entry,) = await restored.store.queue_list()
            assert entry.created == QUEUED_AT

        restored.call(queued())
    finally:
        restored.stop()
