"""POP3 interoperability with the two classic Unix retrieval programs, fetchmail and
getmail6 (Debian packages ``fetchmail`` and ``getmail6``), in both of their modes:

- keep (fetchmail ``keep``, getmail ``delete = false``): the messages stay on the
  server, and a second run fetches nothing new (both track UIDL values);
- delete (fetchmail ``nokeep``, getmail ``delete = true``): the maildrop is empty
  afterwards.

Each program delivers through a tiny shell "MDA" that writes one file per message,
so what arrived can be counted and read.
"""

from __future__ import annotations

import os
import stat
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
        b"Subject: interop %d\r\n"
        b"Message-ID: <interop-%d@remote.test>\r\n"
        b"\r\n"
        b"Line one of %d.\r\n"
        b".a dot-stuffed line\r\n"
        b"last line\r\n" % (n, n, n)
    )


def put(server: RunningServer, *numbers: int) -> None:
    async def go() -> None:
        account = await server.store.get_account(ALICE)
        assert account is not None
        box = await server.store.get_mailbox(account.id, "INBOX")
        assert box is not None
        for n in numbers:
            await server.store.deliver(message(n), [DeliveryTarget(box.id)])

    server.call(go())


class Outbox:
    """A directory plus an MDA script that stores each message it gets as a file."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "delivered"
        self.dir.mkdir()
        self.mda = root / "deliver.sh"
        self.mda.write_text(f'#!/bin/sh\ncat > "$(mktemp -p {self.dir} msg.XXXXXX)"\n')
        self.mda.chmod(0o755)

    def subjects(self) -> list[str]:
        out = []
        for path in sorted(self.dir.iterdir()):
            text = path.read_bytes().replace(b"\r\n", b"\n").decode()
            assert "\n.a dot-stuffed line\nlast line\n" in text  # dot-stuffing undone
            out += [line for line in text.splitlines() if line.startswith("Subject: ")]
        return sorted(out)


def inbox_count(server: RunningServer) -> int:
    return len(server.messages(ALICE))


def subjects(*numbers: int) -> list[str]:
    return sorted(f"Subject: interop {n}" for n in numbers)


# --- fetchmail ----------------------------------------------------------------------


def run_fetchmail(
    server: RunningServer, home: Path, outbox: Outbox, *, keep: bool, apop: bool = False
) -> int:
    fetchmail = require_program("fetchmail", "fetchmail")
    secret = "apop-" + USERS[ALICE] if apop else USERS[ALICE]
    protocol = "APOP" if apop else "POP3 auth password"
    rc = home / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        "set no syslog\n"
        f"poll {server.host} with protocol {protocol} port {server.port('pop3')} uidl:\n"
        f'  user "{ALICE}" there with password "{secret}" is "alice" here\n'
        f"  {'keep' if keep else 'nokeep'}\n"
        "  sslproto ''\n"  # no opportunistic STLS: this server has no certificate here
        f'  mda "{outbox.mda}"\n'
    )
    rc.chmod(stat.S_IRUSR | stat.S_IWUSR)  # fetchmail refuses a readable rc file
    env = {**os.environ, "HOME": str(home), "FETCHMAILHOME": str(home)}
    proc = subprocess.run(
        [fetchmail, "-f", str(rc), "--nodetach"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # fetchmail exit codes: 0 mail fetched, 1 no new mail; anything else is an error.
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return proc.returncode


def test_fetchmail_keep_mode(mailserver: RunningServer, tmp_path: Path) -> None:
    put(mailserver, 1, 2, 3)
    outbox = Outbox(tmp_path)
    assert run_fetchmail(mailserver, tmp_path, outbox, keep=True) == 0
    assert outbox.subjects() == subjects(1, 2, 3)
    assert inbox_count(mailserver) == 3
    # Second run: everything already seen (UIDL), nothing fetched.
    assert run_fetchmail(mailserver, tmp_path, outbox, keep=True) == 1
    assert outbox.subjects() == subjects(1, 2, 3)
    # A new message is the only one fetched next time.
    put(mailserver, 4)
    assert run_fetchmail(mailserver, tmp_path, outbox, keep=True) == 0
    assert outbox.subjects() == subjects(1, 2, 3, 4)
    assert inbox_count(mailserver) == 4


def test_fetchmail_delete_mode(mailserver: RunningServer, tmp_path: Path) -> None:
    put(mailserver, 1, 2, 3)
    outbox = Outbox(tmp_path)
    assert run_fetchmail(mailserver, tmp_path, outbox, keep=False) == 0
    assert outbox.subjects() == subjects(1, 2, 3)
    assert inbox_count(mailserver) == 0
    assert run_fetchmail(mailserver, tmp_path, outbox, keep=False) == 1


def test_fetchmail_apop(mailserver: RunningServer, tmp_path: Path) -> None:
    put(mailserver, 1, 2)
    outbox = Outbox(tmp_path)
    assert run_fetchmail(mailserver, tmp_path, outbox, keep=False, apop=True) == 0
    assert outbox.subjects() == subjects(1, 2)
    assert inbox_count(mailserver) == 0


# --- getmail6 --------------------------------------------------------------------------


def run_getmail(server: RunningServer, home: Path, outbox: Outbox, *, delete: bool) -> str:
    getmail = require_program("getmail", "getmail6")
    rc = home / "getmailrc"
    rc.write_text(
        "[retriever]\n"
        "type = SimplePOP3Retriever\n"
        f"server = {server.host}\n"
        f"port = {server.port('pop3')}\n"
        f"username = {ALICE}\n"
        f"password = {USERS[ALICE]}\n"
        "\n"
        "[destination]\n"
        "type = MDA_external\n"
        f"path = {outbox.mda}\n"
        # getmail refuses to run delivery commands as root unless told to (CI is root).
        "allow_root_commands = true\n"
        "\n"
        "[options]\n"
        f"delete = {'true' if delete else 'false'}\n"
        "read_all = false\n"
        "verbose = 1\n"
    )
    proc = subprocess.run(
        [getmail, "--getmaildir", str(home), "--rcfile", str(rc)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_getmail_keep_mode(mailserver: RunningServer, tmp_path: Path) -> None:
    put(mailserver, 1, 2, 3)
    outbox = Outbox(tmp_path)
    run_getmail(mailserver, tmp_path, outbox, delete=False)
    assert outbox.subjects() == subjects(1, 2, 3)
    assert inbox_count(mailserver) == 3
    out = run_getmail(mailserver, tmp_path, outbox, delete=False)
    assert "0 messages" in out
    assert outbox.subjects() == subjects(1, 2, 3)
    put(mailserver, 4)
    run_getmail(mailserver, tmp_path, outbox, delete=False)
    assert outbox.subjects() == subjects(1, 2, 3, 4)
    assert inbox_count(mailserver) == 4


def test_getmail_delete_mode(mailserver: RunningServer, tmp_path: Path) -> None:
    put(mailserver, 1, 2, 3)
    outbox = Outbox(tmp_path)
    run_getmail(mailserver, tmp_path, outbox, delete=True)
    assert outbox.subjects() == subjects(1, 2, 3)
    assert inbox_count(mailserver) == 0
