"""The mail client's read side, run against two servers: mailyard and Dovecot.

The same tests (list, search, read with HTML and attachments, flags, folders,
move, delete, POP3 fetch in both modes) run through the CLI as a subprocess
against our server and against Dovecot (Debian dovecot-imapd, dovecot-pop3d),
started here on 127.0.0.1 with free ports and a generated configuration. That
the client passes against Dovecot shows it speaks IMAP and POP3, not just
"what mailyard happens to do". Messages are put in place with IMAP APPEND by
imaplib, so both servers start from the same bytes.
"""

from __future__ import annotations

import imaplib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailyard.message.compose import Attachment, compose, to_bytes
from tests.conftest import USERS, require_program
from tests.integration.test_client import MailCLI, parse
from tests.ports import free_port as _free_port

USER = "alice@example.test"
PASSWORD = USERS[USER]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
HTML = ("<html><head><style>p {color: red}</style></head><body><h2>Quartalsbericht</h2>"
        "<p>Umsatz <b>gestiegen</b>, siehe <a href='https://example.test/q3'>Details</a>.</p>"
        "<ul><li>eins</li><li>zwei</li></ul></body></html>")


@dataclass
class Backend:
    name: str
    mail: MailCLI
    imap_port: int
    pop3_port: int

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        c = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=10)
        try:
            c.login(USER, PASSWORD)
            typ, data = c.append(folder, None, None, raw)
            assert typ == "OK", data
        finally:
            c.logout()

    def count(self, folder: str = "INBOX") -> int:
        c = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=10)
        try:
            c.login(USER, PASSWORD)
            typ, data = c.select('"' + folder + '"', readonly=True)  # imaplib does not quote
            assert typ == "OK", data
            return int(data[0])
        finally:
            c.logout()


DOVECOT_CONF = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {login_user}
first_valid_uid = 1
mail_uid = {uid}
mail_gid = {gid}
mail_location = maildir:{base}/mail/%n
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/home/%n
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""


@pytest.fixture
def dovecot() -> Iterator[tuple[int, int]]:
    binary = require_program("dovecot", "dovecot-imapd dovecot-pop3d")
    # Dovecot's unprivileged processes must reach base_dir: a world-searchable
    # directory (pytest's tmp_path lives under a 0700 one).
    base = Path(tempfile.mkdtemp(prefix="mailyard-dovecot-"))
    base.chmod(0o755)
    try:
        imap_port, pop3_port = _free_port(), _free_port()
        if os.geteuid() == 0:
            # Dovecot refuses uid 0 for mail access: the mail lives as Debian's "mail" user.
            ids = dict(user="dovecot", group="dovecot", login_user="dovenull", uid="mail", gid="mail")
            for sub in ("mail", "home"):
                (base / sub).mkdir()
                shutil.chown(base / sub, "mail", "mail")
        else:
            import grp
            import pwd

            me, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
            ids = dict(user=me, group=group, login_user=me, uid=me, gid=group)
        conf = base / "dovecot.conf"
        conf.write_text(DOVECOT_CONF.format(base=base, imap_port=imap_port, pop3_port=pop3_port, **ids))
        (base / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        proc = subprocess.Popen([binary, "-F", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", imap_port), timeout=1) as s:
                        if s.recv(100).startswith(b"* OK"):
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (base / "dovecot.log").read_text() if (base / "dovecot.log").exists() else ""
                    out = proc.stdout.read().decode() if proc.poll() is not None and proc.stdout else ""
                    pytest.fail(f"dovecot did not start:\n{out}\n{log}")
                time.sleep(0.1)
            yield imap_port, pop3_port
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["mailyard", "dovecot"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "mailyard":
        server = request.getfixturevalue("mailserver")
        imap_port, pop3_port = server.port("imap"), server.port("pop3")
    else:
        imap_port, pop3_port = request.getfixturevalue("dovecot")
    mail = MailCLI(tmp_path / "client-home")
    # No submission server here: the read side does not send.
    mail.add_account("me", USER, PASSWORD, imap=imap_port, pop3=pop3_port, smtp=None)
    return Backend(request.param, mail, imap_port, pop3_port)


def _rich() -> bytes:
    msg = compose(("Carol Ünïcode", "carol@remote.test"), [("Alice", USER)], cc=["dave@remote.test"],
                  subject="Bericht über Q3", text="Hallo Alice,\nanbei der Bericht. Grüße!\n",
                  attachments=[Attachment("chart.png", PNG), Attachment("zahlen.csv", "a,b\n1,2\n", "text/csv")],
                  date="Tue, 01 Oct 2024 10:00:00 +0200")
    return to_bytes(msg)


def _html_only() -> bytes:
    msg = compose("news@remote.test", USER, subject="Newsletter", text="x", date="Wed, 02 Oct 2024 09:00:00 +0000")
    msg.set_content(HTML, subtype="html", charset="utf-8")
    return to_bytes(msg)


def _plain(n: int) -> bytes:
    return to_bytes(compose("bob@remote.test", USER, subject=f"note {n}", text=f"body {n}\n",
                            date=f"Thu, 0{3 + n} Oct 2024 08:00:00 +0000"))


def _uids(b: Backend, folder: str = "INBOX", *extra: str) -> list[int]:
    out = b.mail("ls", folder, *extra).out
    return [int(line.split()[0]) for line in out.splitlines()[1:] if line.split() and line.split()[0].isdigit()]


def test_list_search_read(backend: Backend, tmp_path: Path) -> None:
    b = backend
    b.append(_rich())
    b.append(_html_only())
    b.append(_plain(1))
    out = b.mail("ls").out
    rows = [line for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
    assert len(rows) == 3 and "note 1" in rows[0] and "Bericht über Q3" in rows[2]  # newest first
    assert "Carol Ünïcode" in rows[2] and "3 message(s), page 1 of 1" in out
    paged = b.mail("ls", "--limit", "2", "--page", "2").out
    assert "Bericht über Q3" in paged and "note 1" not in paged and "page 2 of 2" in paged
    found = b.mail("search", "--subject", "Bericht").out
    assert "Bericht über Q3" in found and "Newsletter" not in found
    found = b.mail("search", "--from", "news@remote.test").out
    assert "Newsletter" in found and "Bericht" not in found
    found = b.mail("search", "--since", "2000-01-01", "--text", "anbei").out
    assert "Bericht über Q3" in found and "note 1" not in found
    rich_uid, html_uid = _uids(b)[2], _uids(b)[1]
    save = tmp_path / "att"
    shown = b.mail("read", str(rich_uid), "--save-attachments", str(save)).out
    assert "From: Carol Ünïcode <carol@remote.test>" in shown and "Subject: Bericht über Q3" in shown
    assert "anbei der Bericht. Grüße!" in shown
    assert "chart.png (image/png, 2.0 KB)" in shown and "zahlen.csv (text/csv" in shown
    assert (save / "chart.png").read_bytes() == PNG
    assert (save / "zahlen.csv").read_bytes().replace(b"\r\n", b"\n") == b"a,b\n1,2\n"
    html = b.mail("read", str(html_uid), "--peek").out
    assert "Quartalsbericht" in html and "Umsatz gestiegen, siehe Details <https://example.test/q3>." in html
    assert "* eins" in html and "color: red" not in html and "<b>" not in html
    unseen = b.mail("ls", "--unseen").out
    assert "Newsletter" in unseen and "Bericht" not in unseen and "note 1" in unseen
    raw = b.mail("read", str(html_uid), "--raw").stdout
    assert parse(raw)["Subject"] == "Newsletter"


def test_flags_folders_move_delete(backend: Backend) -> None:
    b = backend
    for n in range(3):
        b.append(_plain(n))
    uids = _uids(b)
    assert len(uids) == 3
    res = b.mail("flag", str(uids[0]), "+\\Flagged", "+seen")
    assert "\\Flagged" in res.out and "\\Seen" in res.out
    assert b.mail("search", "--flagged").out.count("note 2") == 1
    res = b.mail("flag", str(uids[0]), "-f", "INBOX", "-flagged")
    assert "\\Flagged" not in res.out
    b.mail("folders", "create", "Archiv/Übersicht 2024")  # modified UTF-7 on the wire (RFC 3501 5.1.3)
    assert "Archiv/Übersicht 2024" in b.mail("folders").out
    b.mail("folders", "rename", "Archiv/Übersicht 2024", "Archiv/Jahr 2024")
    listing = b.mail("folders").out
    assert "Archiv/Jahr 2024" in listing and "\\Trash" in listing
    inbox = next(line for line in listing.splitlines() if line.startswith("INBOX"))
    assert inbox.split()[1:3] == ["2", "3"]  # unread, total
    b.mail("move", f"{uids[1]},{uids[2]}", "Archiv/Jahr 2024")
    assert len(_uids(b)) == 1 and b.count("Archiv/Jahr 2024") == 2
    moved = _uids(b, "Archiv/Jahr 2024")
    b.mail("delete", str(moved[0]), "--folder", "Archiv/Jahr 2024")
    assert b.count("Trash") == 1 and b.count("Archiv/Jahr 2024") == 1
    b.mail("delete", str(moved[1]), "--folder", "Archiv/Jahr 2024", "--expunge")
    assert b.count("Trash") == 1 and b.count("Archiv/Jahr 2024") == 0
    b.mail("folders", "unsubscribe", "Archiv/Jahr 2024")
    b.mail("folders", "subscribe", "Archiv/Jahr 2024")
    b.mail("folders", "delete", "Archiv/Jahr 2024")
    assert "Jahr 2024" not in b.mail("folders").out


def test_pop3_fetch_both_modes(backend: Backend, tmp_path: Path) -> None:
    b = backend
    for n in range(2):
        b.append(_plain(n))
    md = tmp_path / "Maildir"
    res = b.mail("fetch", "--pop3", "--keep", "--maildir", str(md))
    assert "fetched 2 new message(s)" in res.out, res.out + res.err
    res = b.mail("fetch", "--pop3", "--keep", "--maildir", str(md))
    assert "fetched 0 new" in res.out and b.count() == 2
    b.append(_plain(2))
    res = b.mail("fetch", "--pop3", "--maildir", str(md))
    assert "fetched 1 new" in res.out and "deleted 3 from the server" in res.out
    assert b.count() == 0
    subjects = sorted(parse(f.read_bytes())["Subject"] for f in (md / "new").iterdir())
    assert subjects == ["note 0", "note 1", "note 2"]


def test_account_test_reports_missing_submission(backend: Backend) -> None:
    res = backend.mail("account", "test", check=False)
    assert "IMAP" in res.out and "POP3" in res.out
    imap_line = next(line for line in res.out.splitlines() if line.startswith("IMAP"))
    assert "OK" in imap_line
    assert res.returncode == 1 and "submission" in res.err and "FAILED" in res.out


