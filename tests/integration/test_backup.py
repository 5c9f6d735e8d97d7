"""``mailyard backup`` / ``restore`` against a real ``mailyard serve``
(tests/integration/serve_process.py): a backup taken while 20 SMTP clients
deliver, backups killed with SIGKILL midway, and one account restored into
the running server, checked over IMAP."""

from __future__ import annotations

import asyncio
import hashlib
import imaplib
import signal
import smtplib
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from mailyard.config import Config, StoreConfig
from mailyard.store import backup as bk
from mailyard.store import open_store
from mailyard.store.api import RestoredMessage
from mailyard.store.keywords import MAX_KEYWORDS
from tests.conftest import USERS
from tests.integration.serve_process import ALICE, ServeProcess

SEGMENT = 256 * 1024  # small segments: many of them, sealed as the load goes
CLIENTS = 20


def mailyard(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailyard", *args], capture_output=True, text=True, **kw)


def small_segments(workers: int = 1):
    def configure(cfg: Config) -> None:
        cfg.store.segment_size = SEGMENT
        cfg.server.workers = workers

    return configure


def body(client: int, n: int, lines: int = 200) -> bytes:
    """About 4 KB (200 lines), 20 bytes a line."""
    token = f"c{client}-n{n}"
    return (f"From: <load{client}@example.net>\r\nTo: <{ALICE}>\r\nSubject: {token}\r\n"
            f"Message-ID: <{token}@example.net>\r\n\r\n").encode() + (token.encode() + b" payload\r\n") * lines


def token_of(data: bytes) -> str:
    return data.split(b"Message-ID: <", 1)[1].split(b"@", 1)[0].decode()


def read_inbox(data_dir: Path) -> dict[str, bytes]:
    """Message-ID token -> exact stored bytes of every INBOX message of alice."""

    async def run() -> dict[str, bytes]:
        store = open_store(data_dir, StoreConfig(fsync=False), background=False)
        try:
            account = await store.get_account(ALICE)
            box = await store.get_mailbox(account.id, "INBOX")
            out = {}
            for info in await store.list_messages(box):
                data = await store.read_message(box, info.uid)
                out[token_of(data)] = data
            return out
        finally:
            await store.close()

    return asyncio.run(run())


def test_backup_under_load_from_20_smtp_clients(tmp_path: Path) -> None:
    """Every message acknowledged (250 after DATA) before the backup started
    is in the restored store with exactly the bytes the live store has."""
    data, dest = tmp_path / "data", tmp_path / "backup"
    server = ServeProcess(data, small_segments(workers=2))
    acked: list[tuple[float, str, bytes]] = []  # (time of the 250, token, bytes sent)
    stop = threading.Event()
    errors: list[str] = []

    def client(c: int) -> None:
        try:
            with smtplib.SMTP(server.host, server.port("smtp"), timeout=60) as smtp:
                n = 0
                while not stop.is_set():
                    # 2 KB, and every fourth 40 KB: the small bodies are kept in
                    # the index (store/sqlite/bodies.py INLINE_MAX), the big in segments
                    msg = body(c, n, 2000 if n % 4 == 3 else 100)
                    smtp.sendmail(f"load{c}@example.net", [ALICE], msg)
                    acked.append((time.time(), f"c{c}-n{n}", msg))
                    n += 1
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"client {c}: {exc!r}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 300 and time.monotonic() < deadline and not errors:
            time.sleep(0.05)
        assert len(acked) >= 300, errors
        started = time.time()
        first = mailyard("--data", str(data), "backup", str(dest), timeout=300)
        assert first.returncode == 0, first.stderr
        during = sum(1 for a in acked if a[0] > started)
        # a second, incremental generation while the load goes on
        while len(acked) < 600 + len([a for a in acked if a[0] <= started]) and time.monotonic() < deadline + 60:
            time.sleep(0.05)
        second_started = time.time()
        second = mailyard("--data", str(data), "backup", str(dest), timeout=300)
        assert second.returncode == 0, second.stderr
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        server.stop()
    assert not errors, errors
    print(first.stdout + second.stdout)
    print(f"{len(acked)} messages acknowledged, {during} while the first backup ran")
    assert during > 0, "the load stopped while the backup ran"
    assert "unchanged (hard-linked)" in second.stdout and " 0 unchanged" not in second.stdout

    live = read_inbox(data)
    for gen, began in ((dest / "0001", started), (dest / "0002", second_started)):
        verified = mailyard("backup", "verify", str(dest), "--generation", gen.name)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        restored = tmp_path / f"restored-{gen.name}"
        r = mailyard("--data", str(restored), "restore", str(dest), "--generation", gen.name)
        assert r.returncode == 0, r.stderr
        got = read_inbox(restored)
        must = {token for ts, token, _ in acked if ts < began}
        assert must <= set(got), f"{len(must - set(got))} acknowledged messages missing from {gen.name}"
        sent = {token: msg for _, token, msg in acked}
        for token, stored in got.items():
            # the bytes are the live store's, which are the client's after the trace prefix
            assert stored == live[token], token
            assert stored.endswith(sent[token]), token
        print(f"generation {gen.name}: {len(got)} messages restored, {len(must)} acknowledged before it began")


def _hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file of a data directory but the WAL index (-shm):
    SQLite's shared memory among connections, which every reader writes
    (its read marks) and which holds no data."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith("-shm")}


def _fill(data_dir: Path, first: int, count: int, size: int) -> None:
    async def run() -> None:
        store = open_store(data_dir, StoreConfig(fsync=False, segment_size=SEGMENT), background=False)
        try:
            account = await store.get_account(ALICE)
            box = await store.get_mailbox(account.id, "INBOX")
            for n in range(first, first + count):
                await store.append(box, body(0, n) * (size // 4000), {"\\Seen"} if n % 2 else (), 1.6e9 + n)
        finally:
            await store.close()

    asyncio.run(run())


def _run_and_kill(data: Path, dest: Path, trigger: str) -> str:
    """Start a backup, SIGKILL it at ``trigger`` (a progress line's start,
    or "half": once 100 of its 240 new segments are in its partial directory)."""
    proc = subprocess.Popen([sys.executable, "-m", "mailyard", "--data", str(data), "backup", str(dest)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        if trigger == "half":
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if len(list(dest.glob(".partial-*/blobs/*.seg"))) >= 100:
                    break
                time.sleep(0.002)
        else:
            for line in proc.stderr:
                if line.startswith(trigger):
                    break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(60)
    assert proc.returncode == -signal.SIGKILL, f"the backup ended by itself before the kill at {trigger!r}"
    return trigger


def test_backup_killed_midway_leaves_store_and_previous_backup_intact(tmp_path: Path) -> None:
    """SIGKILL the backup at several points of its run: the live store's
    files are unchanged, the previous generation verifies and restores, and
    the next run completes."""
    data, dest = tmp_path / "data", tmp_path / "backup"
    assert mailyard("--data", str(data), "init", "--domain", "example.test").returncode == 0
    r = mailyard("--data", str(data), "user", "add", ALICE, "--password-stdin", input=USERS[ALICE] + "\n")
    assert r.returncode == 0, r.stderr
    _fill(data, 0, 20, 100_000)
    first = mailyard("--data", str(data), "backup", str(dest))
    assert first.returncode == 0, first.stderr
    at_first = read_inbox(data)
    _fill(data, 20, 600, 100_000)  # 60 MB more: about 240 new segments to copy
    live_files = _hash_tree(data)
    for trigger in ("snapshot:", "segment 1/", "half"):
        _run_and_kill(data, dest, trigger)
        assert _hash_tree(data) == live_files, f"the live store changed (kill at {trigger!r})"
        assert [g.name for g in bk.generations(dest)] == ["0001"]
        assert list(dest.glob(".partial-*")), "the kill left no partial directory: it came too late"
        verified = mailyard("backup", "verify", str(dest))
        assert verified.returncode == 0, verified.stdout
    restored = tmp_path / "restored-0001"
    assert mailyard("--data", str(restored), "restore", str(dest)).returncode == 0
    assert read_inbox(restored) == at_first
    # the next run clears what the killed ones left and completes
    done = mailyard("--data", str(data), "backup", str(dest))
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    assert "removing .partial-" in done.stderr
    assert not list(dest.glob(".partial-*"))
    assert [g.name for g in bk.generations(dest)] == ["0001", "0002"]
    restored = tmp_path / "restored-0002"
    assert mailyard("--data", str(restored), "restore", str(dest)).returncode == 0
    assert read_inbox(restored) == read_inbox(data)
    # and the restored directory is a working store: integrity check passes
    with sqlite3.connect(restored / "index.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def _imap(server: ServeProcess) -> imaplib.IMAP4:
    imap = imaplib.IMAP4(server.host, server.port("imap"), timeout=30)
    imap.login(ALICE, USERS[ALICE])
    return imap


def _mailbox(imap: imaplib.IMAP4, name: str) -> list[tuple[bytes, bytes, bytes]]:
    """(FLAGS, INTERNALDATE, BODY[]) of each message of ``name``, in UID order."""
    typ, _ = imap.select(f'"{name}"', readonly=True)
    assert typ == "OK", name
    typ, data = imap.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
    assert typ == "OK"
    out = []
    for item in data:
        if isinstance(item, tuple):
            meta = item[0]
            flags = meta.split(b"FLAGS (", 1)[1].split(b")", 1)[0]
            date = meta.split(b'INTERNALDATE "', 1)[1].split(b'"', 1)[0]
            out.append((b" ".join(sorted(flags.split())), date, item[1]))
    return out


def test_restore_account_into_the_running_server(tmp_path: Path) -> None:
    """Restore one account from a backup into the running server, as a new
    folder tree and merged; its IMAP clients see the messages with their
    flags, keywords and INTERNALDATE; a re-run adds nothing."""
    data, dest = tmp_path / "data", tmp_path / "backup"
    server = ServeProcess(data, small_segments(workers=2))
    try:
        imap = _imap(server)
        assert imap.create("Projects/2026")[0] == "OK"
        for n in range(6):
            flags = ("(\\Seen $Important)", "(\\Flagged)", "()")[n % 3]
            date = f'"0{n + 1}-Mar-2024 10:0{n}:00 +0100"'
            box = "INBOX" if n < 4 else "Projects/2026"
            typ, _ = imap.append(box, flags, date, body(9, n))
            assert typ == "OK"
        inbox, projects = _mailbox(imap, "INBOX"), _mailbox(imap, "Projects/2026")
        assert len(inbox) == 4 and len(projects) == 2
        r = mailyard("--data", str(data), "backup", str(dest))
        assert r.returncode == 0, r.stderr
        # the user loses mail: INBOX emptied, a folder deleted
        imap.select("INBOX")
        imap.uid("STORE", "1:*", "+FLAGS.SILENT", "(\\Deleted)")
        imap.expunge()
        imap.close()
        assert imap.delete("Projects/2026")[0] == "OK"

        r = mailyard("--data", str(data), "restore", str(dest), "--account", ALICE, "--as-folder", "Restored")
        assert r.returncode == 0, r.stderr
        print(r.stdout)
        assert _mailbox(imap, "Restored/INBOX") == inbox
        assert _mailbox(imap, "Restored/Projects/2026") == projects
        assert _mailbox(imap, "INBOX") == []

        r = mailyard("--data", str(data), "restore", str(dest), "--account", ALICE)
        assert r.returncode == 0, r.stderr
        assert _mailbox(imap, "INBOX") == inbox
        assert _mailbox(imap, "Projects/2026") == projects
        r = mailyard("--data", str(data), "restore", str(dest), "--account", ALICE)
        assert r.returncode == 0 and ": 0 messages" in r.stdout, r.stdout
        assert _mailbox(imap, "INBOX") == inbox
        imap.logout()
        assert not server.tracebacks()
    finally:
        server.stop()


def test_restore_account_leaves_out_keywords_past_the_bound(tmp_path: Path) -> None:
    """A backup whose mailbox holds keywords past today's bounds (from a
    store before them, or written by ``store copy``) is restored with every
    message, without those keywords (store/keywords.py), saying so."""
    data, dest = tmp_path / "data", tmp_path / "backup"
    assert mailyard("--data", str(data), "init", "--domain", "example.test").returncode == 0
    r = mailyard("--data", str(data), "user", "add", ALICE, "--password-stdin", input="user-password-1\n")
    assert r.returncode == 0, r.stderr
    long_ = "Thunderbird_" + "y" * 70
    words = [f"tag{i:03d}" for i in range(MAX_KEYWORDS + 4)]

    async def in_store(work: str) -> list[frozenset[str]]:
        store = open_store(data, StoreConfig(fsync=False), background=False)
        try:
            account = await store.get_account(ALICE)
            box = await store.get_mailbox(account.id, "INBOX")
            if work == "fill":
                # restore_messages writes flags as they come, as store copy does
                await store.restore_messages(box, [
                    RestoredMessage(1, body(1, 1), frozenset({"\\Seen", long_}), 1.6e9, 5, 1.6e9),
                    RestoredMessage(2, body(1, 2), frozenset({"\\Seen", *words}), 1.6e9, 6, 1.6e9)])
            elif work == "remove":
                await store.remove_account(ALICE)
            return [m.flags for m in await store.list_messages(box)] if work == "read" else []
        finally:
            await store.close()

    asyncio.run(in_store("fill"))
    r = mailyard("--data", str(data), "backup", str(dest))
    assert r.returncode == 0, r.stderr
    asyncio.run(in_store("remove"))
    r = mailyard("--data", str(data), "restore", str(dest), "--account", ALICE)
    assert r.returncode == 0, r.stderr
    assert ": 2 messages" in r.stdout and "warning: 5 keywords left out in INBOX" in r.stdout, r.stdout
    first, second = asyncio.run(in_store("read"))
    assert first == {"\\Seen"} and second == {"\\Seen", *words[:MAX_KEYWORDS]}


def test_cli_errors_say_what_to_do(tmp_path: Path) -> None:
    missing = mailyard("backup", "verify", str(tmp_path / "none"))
    assert (missing.returncode, missing.stderr) == (1, f"mailyard: error: {tmp_path / 'none'} holds no complete backup\n")
    r = mailyard("restore", str(tmp_path / "none"))
    assert r.returncode == 1 and "holds no complete backup" in r.stderr
    usage = mailyard("backup", "--help")
    assert usage.returncode == 0 and "mailyard backup verify DEST" in usage.stdout
    r = mailyard("restore", "--help")
    assert r.returncode == 0 and "--as-folder NAME" in r.stdout
