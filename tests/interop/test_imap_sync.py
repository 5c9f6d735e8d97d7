"""IMAP interoperability with the two classic two-way synchronisers, mbsync
(Debian ``isync``) and offlineimap3 (Debian ``offlineimap3``).

Each test syncs a mailbox tree to a local Maildir, makes a change on each side
(a new message and a flag on the server, a new message locally), syncs again,
and checks that both sides converge with no duplicates and no loss.
"""

from __future__ import annotations

import mailbox
import subprocess
from pathlib import Path

import pytest

from mailyard.store.api import DeliveryTarget
from tests.conftest import USERS, RunningServer, require_program

pytestmark = pytest.mark.interop

ALICE = "alice@example.test"


def message(n: int) -> bytes:
    return (
        b"From: Carol <carol@remote.test>\r\n"
        b"To: Alice <alice@example.test>\r\n"
        b"Subject: sync %d\r\n"
        b"Message-ID: <sync-%d@remote.test>\r\n"
        b"\r\n"
        b"Body %d.\r\n" % (n, n, n)
    )


def seed(server: RunningServer) -> None:
    async def go() -> None:
        account = await server.store.get_account(ALICE)
        assert account is not None
        await server.store.create_mailbox(account.id, "Work")
        await server.store.create_mailbox(account.id, "Work/Projects")
        for name, numbers in (("INBOX", (1, 2, 3)), ("Work", (4,)), ("Work/Projects", (5, 6))):
            box = await server.store.get_mailbox(account.id, name)
            assert box is not None
            for n in numbers:
                await server.store.deliver(message(n), [DeliveryTarget(box.id)])

    server.call(go())


def server_subjects(server: RunningServer, name: str) -> list[bytes]:
    out = []
    for raw in server.messages(ALICE, name):
        for line in raw.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                out.append(line[9:])
    return sorted(out)


def server_flags(server: RunningServer, name: str) -> list[frozenset[str]]:
    async def go() -> list[frozenset[str]]:
        account = await server.store.get_account(ALICE)
        assert account is not None
        box = await server.store.get_mailbox(account.id, name)
        assert box is not None
        return [m.flags for m in await server.store.list_messages(box)]

    return server.call(go())


def deliver(server: RunningServer, name: str, n: int) -> None:
    async def go() -> None:
        account = await server.store.get_account(ALICE)
        assert account is not None
        box = await server.store.get_mailbox(account.id, name)
        assert box is not None
        await server.store.deliver(message(n), [DeliveryTarget(box.id)])

    server.call(go())


def local_subjects(maildir: Path) -> list[bytes]:
    box = mailbox.Maildir(maildir, create=False)
    return sorted(m["Subject"].encode() for m in box)


def run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{cmd[0]} failed:\n{proc.stdout}\n{proc.stderr}"


def test_mbsync_two_way(mailserver: RunningServer, tmp_path: Path) -> None:
    mbsync = require_program("mbsync", "isync")
    seed(mailserver)
    local = tmp_path / "mail"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        f"""IMAPAccount test
Host {mailserver.host}
Port {mailserver.port("imap")}
User {ALICE}
Pass {USERS[ALICE]}
SSLType None
AuthMechs PLAIN

IMAPStore remote
Account test

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX Work*
Create Both
Expunge Both
SyncState *
"""
    )
    run([mbsync, "-c", str(rc), "-a"], tmp_path)
    assert local_subjects(local / "INBOX") == [b"sync 1", b"sync 2", b"sync 3"]
    assert local_subjects(local / "Work" / "Projects") == [b"sync 5", b"sync 6"]
    # a change on each side
    deliver(mailserver, "Work", 7)
    box = mailbox.Maildir(local / "INBOX", create=False)
    msg = mailbox.MaildirMessage(message(8))
    msg.set_subdir("cur")
    msg.set_flags("S")
    box.add(msg)
    run([mbsync, "-c", str(rc), "-a"], tmp_path)
    run([mbsync, "-c", str(rc), "-a"], tmp_path)  # converged: a third run changes nothing
    assert server_subjects(mailserver, "INBOX") == [b"sync 1", b"sync 2", b"sync 3", b"sync 8"]
    assert local_subjects(local / "Work") == [b"sync 4", b"sync 7"]
    assert local_subjects(local / "INBOX") == [b"sync 1", b"sync 2", b"sync 3", b"sync 8"]
    assert frozenset({"\\Seen"}) in server_flags(mailserver, "INBOX")


def test_offlineimap_two_way(mailserver: RunningServer, tmp_path: Path) -> None:
    offlineimap = require_program("offlineimap", "offlineimap3")
    seed(mailserver)
    local = tmp_path / "mail"
    rc = tmp_path / "offlineimaprc"
    rc.write_text(
        f"""[general]
accounts = test
metadata = {tmp_path}/meta
ui = basic

[Account test]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {local}
sep = /

[Repository remote]
type = IMAP
remotehost = {mailserver.host}
remoteport = {mailserver.port("imap")}
remoteuser = {ALICE}
remotepass = {USERS[ALICE]}
ssl = no
starttls = no
folderfilter = lambda f: f in ('INBOX', 'Work', 'Work/Projects')
"""
    )
    cmd = [offlineimap, "-c", str(rc), "-o", "-u", "basic"]
    run(cmd, tmp_path)
    assert local_subjects(local / "INBOX") == [b"sync 1", b"sync 2", b"sync 3"]
    assert local_subjects(local / "Work" / "Projects") == [b"sync 5", b"sync 6"]
    deliver(mailserver, "Work", 7)
    box = mailbox.Maildir(local / "INBOX", create=False)
    msg = mailbox.MaildirMessage(message(8))
    msg.set_subdir("cur")
    msg.set_flags("S")
    box.add(msg)
    run(cmd, tmp_path)
    run(cmd, tmp_path)
    assert server_subjects(mailserver, "INBOX") == [b"sync 1", b"sync 2", b"sync 3", b"sync 8"]
    assert local_subjects(local / "Work") == [b"sync 4", b"sync 7"]
    assert local_subjects(local / "INBOX") == [b"sync 1", b"sync 2", b"sync 3", b"sync 8"]
