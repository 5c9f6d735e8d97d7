"""The mail client end to end: `mailyard mail ...` as a subprocess against a
real mailyard server on 127.0.0.1 (ephemeral ports, tests/conftest.py).

Sending goes through the server's SMTP listener for local recipients; reading
through IMAP and POP3. The read-side suite that also runs against Dovecot is
in tests/interop/test_client_dovecot.py and shares helpers from here.
"""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import USERS, RunningServer

ALICE = "alice@example.test"
BOB = "bob@example.test"
POSTMASTER = "postmaster@example.test"


class MailCLI:
    """Runs `python -m mailyard mail ...` with its own client config directory."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def __call__(self, *args: str, input: str | bytes | None = None, check: bool = True,
                 account: str | None = None, encoding: str = "utf-8") -> subprocess.CompletedProcess:
        env = dict(os.environ, MAILYARD_CLIENT_HOME=str(self.home), PYTHONIOENCODING=encoding)
        env.pop("EDITOR", None)
        cmd = [sys.executable, "-m", "mailyard", "mail", *(["--account", account] if account else []), *args]
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(cmd, input=data if data is not None else b"", capture_output=True,
                              env=env, timeout=120, check=False)
        proc.out = proc.stdout.decode("utf-8", "replace")  # type: ignore[attr-defined]
        proc.err = proc.stderr.decode("utf-8", "replace")  # type: ignore[attr-defined]
        if check and proc.returncode != 0:
            raise AssertionError(f"mail {' '.join(args)} failed ({proc.returncode}):\n{proc.out}\n{proc.err}")
        return proc

    def add_account(self, name: str, address: str, password: str, *, imap: int, pop3: int, smtp: int | None,
                    display_name: str = "", extra: tuple[str, ...] = (), imap_security: str = "none",
                    pop3_security: str = "none", smtp_security: str = "none") -> None:
        args = ["account", "add", address, "--name", name, "--host", "127.0.0.1",
                "--imap-security", imap_security, "--imap-port", str(imap),
                "--pop3-security", pop3_security, "--pop3-port", str(pop3),
                "--smtp-security", smtp_security, "--smtp-port", str(smtp or 1),
                "--password-stdin", *extra]
        if display_name:
            args += ["--display-name", display_name]
        self(*args, input=password + "\n")


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


@pytest.fixture
def mail(tmp_path: Path, mailserver: RunningServer) -> MailCLI:
    cli = MailCLI(tmp_path / "client-home")
    ports = server_ports(mailserver)
    cli.add_account("alice", ALICE, USERS[ALICE], display_name="Alice Ä. Example", **ports)
    cli.add_account("bob", BOB, USERS[BOB], display_name="Bob", **ports)
    return cli


def test_account_list_and_test(mail: MailCLI, tmp_path: Path) -> None:
    out = mail("account", "list").out
    assert "alice" in out and BOB in out
    pw = tmp_path / "client-home" / "passwords" / "alice"
    assert pw.stat().st_mode & 0o777 == 0o600
    res = mail("account", "test", account="alice")
    assert "IMAP" in res.out and "OK" in res.out, res.out


def test_account_test_says_what_failed(mail: MailCLI) -> None:
    mail("account", "add", "carol@example.test", "--name", "wrong", "--host", "127.0.0.1",
         "--imap-security", "plain", "--imap-port", mail("account", "list").out and "1",
         "--no-pop3", "--smtp-security", "plain", "--smtp-port", "1", "--password-stdin", input="x\n")
    res = mail("account", "test", account="wrong", check=False)
    assert res.returncode == 1
    assert "IMAP" in res.out and "FAILED" in res.out and "refused" in res.out, res.out


CAROL = "carol@example.test"
CAROL_PW = "carol-password-3"


async def _add_carol(store) -> None:
    from mailyard.auth.passwords import Credentials

    creds = Credentials.from_password(CAROL_PW)
    await store.add_account(CAROL, creds.password_hash, scram_sha256=creds.scram_sha256)


def _port(server: RunningServer, name: str) -> int | None:
    try:
        return server.port(name)
    except KeyError:
        return None


def server_ports(server: RunningServer) -> dict:
    """How the client reaches the test server: submission on its own port with
    STARTTLS and AUTH (RFC 6409) when the server has it, IMAP and POP3 with
    STARTTLS/STLS, trusting the server's self-signed certificate (cafile);
    plain SMTP to port 25's stand-in for local recipients otherwise."""
    submission = _port(server, "submission")
    if submission is None:
        return dict(imap=server.port("imap"), pop3=server.port("pop3"), smtp=server.port("smtp"))
    return dict(imap=server.port("imap"), pop3=server.port("pop3"), smtp=submission,
                imap_security="starttls", pop3_security="starttls", smtp_security="starttls",
                extra=("--smtp-auth", "yes", "--cafile", str(server.data_dir / "tls" / "cert.pem")))


@pytest.fixture
def trio(tmp_path: Path, make_server) -> tuple[MailCLI, RunningServer]:
    """alice, bob and carol on one server, each with a client account."""
    server = make_server(seed=_add_carol)
    cli = MailCLI(tmp_path / "client-home")
    ports = server_ports(server)
    cli.add_account("alice", ALICE, USERS[ALICE], display_name="Alice Ä. Example", **ports)
    cli.add_account("bob", BOB, USERS[BOB], display_name="Bob", **ports)
    cli.add_account("carol", CAROL, CAROL_PW, display_name="Carol", **ports)
    return cli, server


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
HTML = "<html><body><h1>Grüße</h1><p>Ein <b>schöner</b> Tag. <a href='https://example.test/x'>Link</a></p></body></html>"


def _send_rich(mail: MailCLI, tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4 fake pdf\n" * 20)
    (tmp_path / "bild.png").write_bytes(PNG)
    (tmp_path / "page.html").write_text(HTML, encoding="utf-8")
    res = mail("send", "--to", "Bob <bob@example.test>", "--cc", "Carol Ünïcode <carol@example.test>",
               "--bcc", POSTMASTER, "--subject", "Grüße und Anhänge",
               "--body", "Hallo Bob,\nschöne Grüße aus Köln.\n",
               "--attach", str(tmp_path / "report.pdf"), "--attach", str(tmp_path / "bild.png"),
               "--html", str(tmp_path / "page.html"), account="alice")
    assert "sent" in res.out and "saved a copy in Sent" in res.out, res.out + res.err


def _uids(mail: MailCLI, account: str, folder: str = "INBOX") -> list[int]:
    out = mail("ls", folder, account=account).out
    return [int(line.split()[0]) for line in out.splitlines()[1:] if line.split() and line.split()[0].isdigit()]


def test_send_with_attachments_and_bcc(trio, tmp_path: Path) -> None:
    mail, server = trio
    _send_rich(mail, tmp_path)
    for rcpt in (BOB, CAROL, POSTMASTER):
        (raw,) = server.messages(rcpt)
        assert b"\nBcc:" not in raw and not raw.startswith(b"Bcc:"), rcpt
        msg = parse(raw)
        assert msg["Subject"] == "Grüße und Anhänge"
        assert msg["Date"] and msg["Message-ID"]
        assert msg["From"].addresses[0].display_name == "Alice Ä. Example"
        assert raw.isascii()  # RFC 2047 headers, QP/base64 bodies: 7-bit clean
        types = [p.get_content_type() for p in msg.walk()]
        assert types[:4] == ["multipart/mixed", "multipart/alternative", "text/plain", "text/html"]
        atts = {p.get_filename(): p for p in msg.iter_attachments()}
        assert atts["bild.png"].get_content_type() == "image/png"
        assert atts["bild.png"].get_content() == PNG
        assert atts["report.pdf"].get_content_type() == "application/pdf"
        assert "schöne Grüße" in msg.get_body(("plain",)).get_content()
    (sent,) = server.messages(ALICE, "Sent")
    assert parse(sent)["Bcc"] == POSTMASTER  # the sender's copy keeps Bcc


def test_read_ls_search_as_recipient(trio, tmp_path: Path) -> None:
    mail, server = trio
    _send_rich(mail, tmp_path)
    mail("send", "--to", BOB, "--subject", "second", "--body", "plain one", account="carol")
    ls = mail("ls", "--unseen", account="bob").out
    assert "Grüße und Anhänge" in ls and "second" in ls
    lines = [x for x in ls.splitlines() if x.split() and x.split()[0].isdigit()]
    assert "second" in lines[0]  # newest first
    uid = int(lines[1].split()[0])
    found = mail("search", "--from", "alice", "--subject", "Grüße", account="bob").out
    assert "Grüße und Anhänge" in found and "second" not in found
    none = mail("search", "--text", "no-such-words-anywhere", account="bob").out
    assert "no messages" in none
    peek = mail("read", str(uid), "--peek", account="bob").out
    assert "Subject: Grüße und Anhänge" in peek
    assert "Grüße und Anhänge" in mail("ls", "--unseen", account="bob").out  # --peek left it unseen
    save = tmp_path / "saved"
    out = mail("read", str(uid), "--save-attachments", str(save), account="bob").out
    assert "From: Alice Ä. Example <alice@example.test>" in out
    assert "Cc: Carol Ünïcode <carol@example.test>" in out
    assert "schöne Grüße aus Köln." in out
    assert "bild.png (image/png, 1.0 KB)" in out and "report.pdf (application/pdf" in out
    assert (save / "bild.png").read_bytes() == PNG
    assert "Bcc" not in out
    assert "Grüße und Anhänge" not in mail("ls", "--unseen", account="bob").out  # now \Seen
    raw = mail("read", str(uid), "--raw", account="bob").stdout
    assert raw == server.messages(BOB)[0]


def test_read_html_only_message(trio, tmp_path: Path) -> None:
    mail, server = trio
    from mailyard.message.compose import compose, to_bytes

    msg = compose(ALICE, BOB, subject="html only", text="x")
    msg.set_content(HTML, subtype="html", charset="utf-8")
    import smtplib

    with smtplib.SMTP("127.0.0.1", server.port("smtp")) as s:
        s.sendmail(ALICE, [BOB], to_bytes(msg))
    (uid,) = _uids(mail, "bob")
    out = mail("read", str(uid), account="bob").out
    assert "[HTML message shown as text]" in out
    assert "Grüße" in out and "Ein schöner Tag. Link <https://example.test/x>" in out
    assert "<b>" not in out


def test_reply_all_and_reply_to(trio, tmp_path: Path) -> None:
    mail, server = trio
    _send_rich(mail, tmp_path)
    (uid,) = _uids(mail, "bob")
    res = mail("reply", str(uid), "--all", "--body", "Danke!", account="bob")
    assert "sent" in res.out
    original = parse(server.messages(BOB)[0])
    (reply_raw,) = server.messages(ALICE)
    reply = parse(reply_raw)
    assert reply["Subject"] == "Re: Grüße und Anhänge"
    assert reply["In-Reply-To"] == original["Message-ID"]
    assert reply["References"] == original["Message-ID"]
    assert [a.addr_spec for a in reply["To"].addresses] == [ALICE]
    assert [a.addr_spec for a in reply["Cc"].addresses] == [CAROL]  # not bob himself, not Bcc'd postmaster
    body = reply.get_body(("plain",)).get_content()
    assert body.startswith("Danke!") and "> Hallo Bob," in body and "Alice Ä. Example wrote:" in body
    assert len(server.messages(CAROL)) == 2
    assert len(server.messages(POSTMASTER)) == 1
    assert "A" in mail("ls", account="bob").out.splitlines()[1].split()[1]  # \Answered
    # A reply to the reply continues References (RFC 5322 3.6.4).
    (auid,) = _uids(mail, "alice")
    mail("reply", str(auid), "--body", "Bitte.", account="alice")
    second = parse(server.messages(BOB)[-1])
    assert second["Subject"] == "Re: Grüße und Anhänge"  # no "Re: Re:"
    assert second["References"].split() == [original["Message-ID"], reply["Message-ID"]]
    assert second["In-Reply-To"] == reply["Message-ID"]
    # Reply-To is honoured.
    mail("send", "--to", BOB, "--reply-to", "Lists <carol@example.test>", "--subject", "list post",
         "--body", "hi", account="alice")
    uid = max(_uids(mail, "bob"))
    mail("reply", str(uid), "--body", "to the list", account="bob")
    last = parse(server.messages(CAROL)[-1])
    assert last["Subject"] == "Re: list post" and [a.addr_spec for a in last["To"].addresses] == [CAROL]


def test_forward_attached_and_inline(trio, tmp_path: Path) -> None:
    mail, server = trio
    _send_rich(mail, tmp_path)
    (uid,) = _uids(mail, "bob")
    mail("forward", str(uid), "--to", "Carol <carol@example.test>", "--body", "FYI", account="bob")
    fwd = parse(server.messages(CAROL)[-1])
    assert fwd["Subject"] == "Fwd: Grüße und Anhänge"
    parts = list(fwd.iter_attachments())
    assert [p.get_content_type() for p in parts] == ["message/rfc822"]
    inner = parts[0].get_content()
    assert inner["Subject"] == "Grüße und Anhänge"
    assert {p.get_filename() for p in inner.iter_attachments()} == {"report.pdf", "bild.png"}
    assert fwd.get_body(("plain",)).get_content().strip() == "FYI"
    # Carol reads it: the attached message is listed.
    cuid = max(_uids(mail, "carol"))
    shown = mail("read", str(cuid), account="carol").out
    assert "Grüße und Anhänge.eml (message/rfc822" in shown
    assert "---------- attached message ----------" in shown and "schöne Grüße aus Köln." in shown
    mail("forward", str(uid), "--inline", "--to", CAROL, "--body", "see below", account="bob")
    inl = parse(server.messages(CAROL)[-1])
    text = inl.get_body(("plain",)).get_content()
    assert text.startswith("see below") and "---------- Forwarded message ----------" in text
    assert "Subject: Grüße und Anhänge" in text and "schöne Grüße aus Köln." in text
    assert {p.get_filename() for p in inl.iter_attachments()} == {"report.pdf", "bild.png"}
    assert "W" in mail("ls", account="bob").out.splitlines()[1].split()[1]  # $Forwarded


def test_folders_move_delete_flag(trio, tmp_path: Path) -> None:
    mail, server = trio
    for n in range(3):
        mail("send", "--to", BOB, "--subject", f"note {n}", "--body", f"body {n}", account="alice")
    out = mail("folders", account="bob").out
    assert "INBOX" in out and "Trash" in out and "\\Trash" in out
    inbox_line = next(line for line in out.splitlines() if line.startswith("INBOX"))
    assert inbox_line.split()[1:3] == ["3", "3"]
    mail("folders", "create", "Projekte/Ärger", account="bob")
    mail("folders", "rename", "Projekte/Ärger", "Projekte/Freude", account="bob")
    mail("folders", "unsubscribe", "Projekte/Freude", account="bob")
    mail("folders", "subscribe", "Projekte/Freude", account="bob")
    uids = _uids(mail, "bob")
    assert len(uids) == 3
    res = mail("move", str(uids[0]), "Projekte/Freude", account="bob")
    assert "moved 1" in res.out
    moved = mail("ls", "Projekte/Freude", account="bob").out
    assert "note 2" in moved
    lines = mail("folders", account="bob").out.splitlines()
    assert any(line.startswith("Projekte/Freude") and line.split()[1:4] == ["1", "1", "yes"] for line in lines), lines
    res = mail("flag", str(uids[1]), "+\\Flagged", "seen", account="bob")
    assert "\\Flagged" in res.out and "\\Seen" in res.out
    res = mail("flag", str(uids[1]), "-\\Seen", account="bob")
    assert "\\Seen" not in res.out and "\\Flagged" in res.out
    res = mail("flag", "--folder", "INBOX", str(uids[1]), "-flagged", account="bob")
    assert "\\Flagged" not in res.out
    mail("delete", str(uids[1]), account="bob")
    assert len(_uids(mail, "bob")) == 1
    trash = _uids(mail, "bob", "Trash")
    assert len(trash) == 1
    mail("delete", str(trash[0]), "--folder", "Trash", account="bob")  # from Trash: for good
    assert _uids(mail, "bob", "Trash") == []
    res = mail("delete", str(uids[2]), "--expunge", account="bob")
    assert "for good" in res.out and _uids(mail, "bob") == []
    mail("folders", "delete", "Projekte/Freude", account="bob")
    assert "Projekte/Freude" not in mail("folders", account="bob").out
    bad = mail("move", "999", "Trash", account="bob", check=False)
    assert bad.returncode == 1 and "999" in bad.err
    bad = mail("folders", "create", "INBOX", account="bob", check=False)
    assert bad.returncode == 1 and "server replied" in bad.err, bad.err


def test_pop3_fetch_keep_then_delete(trio, tmp_path: Path) -> None:
    mail, server = trio
    for n in range(3):
        mail("send", "--to", BOB, "--subject", f"pop {n}", "--body", f"body {n}", "--no-save", account="alice")
    md = tmp_path / "Maildir"
    res = mail("fetch", "--pop3", "--keep", "--maildir", str(md), account="bob")
    assert "fetched 3 new message(s)" in res.out and "left them on the server" in res.out
    assert len(list((md / "new").iterdir())) == 3
    assert len(server.messages(BOB)) == 3
    res = mail("fetch", "--pop3", "--keep", "--maildir", str(md), account="bob")
    assert "fetched 0 new" in res.out and "3 already fetched" in res.out
    mail("send", "--to", BOB, "--subject", "pop 3", "--body", "late", "--no-save", account="alice")
    res = mail("fetch", "--pop3", "--keep", "--maildir", str(md), account="bob")
    assert "fetched 1 new" in res.out
    files = sorted((md / "new").iterdir())
    assert len(files) == 4
    got = {parse(f.read_bytes())["Subject"] for f in files}
    assert got == {"pop 0", "pop 1", "pop 2", "pop 3"}
    # Download-and-delete: nothing is fetched twice, and the server is emptied.
    res = mail("fetch", "--pop3", "--maildir", str(md), account="bob")
    assert "fetched 0 new" in res.out and "deleted 4 from the server" in res.out
    assert server.messages(BOB) == [] and len(list((md / "new").iterdir())) == 4
    mail("send", "--to", BOB, "--subject", "pop 4", "--body", "x", "--no-save", account="alice")
    res = mail("fetch", "--pop3", "--maildir", str(md), account="bob")
    assert "fetched 1 new" in res.out and "deleted 1" in res.out
    assert len(list((md / "new").iterdir())) == 5 and server.messages(BOB) == []


def test_errors_name_the_server_reply(trio, tmp_path: Path) -> None:
    mail, server = trio
    mail("account", "add", BOB, "--name", "badpw", "--host", "127.0.0.1", "--imap-security", "plain",
         "--imap-port", str(server.port("imap")), "--pop3-security", "plain", "--pop3-port",
         str(server.port("pop3")), "--smtp-security", "plain", "--smtp-port", str(server.port("smtp")),
         "--password-stdin", input="wrong-password\n")
    res = mail("ls", account="badpw", check=False)
    assert res.returncode == 1 and "IMAP 127.0.0.1" in res.err and "server replied" in res.err, res.err
    # the server's words for people, not a Python bytes repr
    assert "server replied [AUTHENTICATIONFAILED]" in res.err and "b'" not in res.err, res.err
    res = mail("send", "--to", "nobody@example.test", "--body", "x", account="alice", check=False)
    assert res.returncode == 1 and "550" in res.err, res.err
    res = mail("read", "4242", account="alice", check=False)
    assert res.returncode == 1 and "no message with UID 4242" in res.err


def test_help_everywhere(mail: MailCLI) -> None:
    for cmd in (["--help"], ["account", "add", "--help"], ["send", "--help"], ["ls", "--help"],
                ["search", "--help"], ["read", "--help"], ["reply", "--help"], ["forward", "--help"],
                ["folders", "--help"], ["move", "--help"], ["delete", "--help"], ["flag", "--help"],
                ["fetch", "--help"]):
        assert "usage: mailyard mail" in mail(*cmd).out


def test_submission_tls_and_auth(trio, tmp_path: Path) -> None:
    """Implicit TLS submission (RFC 8314) with --no-tls-verify, and a clear error
    when the certificate is not trusted."""
    mail, server = trio
    smtps = _port(server, "smtps")
    if smtps is None:
        pytest.skip("this server build has no submission listeners yet (issue #5)")
    common = ("account", "add", "--host", "127.0.0.1", "--imap-port", str(server.port("imap")),
              "--imap-security", "plain", "--no-pop3", "--smtp-security", "ssl", "--smtp-port", str(smtps),
              "--password-stdin")
    mail(*common, ALICE, "--name", "tls-any", "--no-tls-verify", input=USERS[ALICE] + "\n")
    mail(*common, ALICE, "--name", "tls-strict", input=USERS[ALICE] + "\n")
    res = mail("send", "--to", BOB, "--subject", "over smtps", "--body", "x", account="tls-any")
    assert "sent" in res.out
    assert parse(server.messages(BOB)[-1])["Subject"] == "over smtps"
    res = mail("send", "--to", BOB, "--subject", "untrusted", "--body", "x", account="tls-strict", check=False)
    assert res.returncode == 1 and "certificate" in res.err and "cafile" in res.err, res.err
    res = mail("account", "test", account="tls-any")
    assert any(line.startswith("submission") and "OK" in line for line in res.out.splitlines()), res.out
    mail("account", "add", ALICE, "--name", "badpw-sub", "--host", "127.0.0.1", "--imap-port",
         str(server.port("imap")), "--imap-security", "plain", "--no-pop3", "--smtp-security", "ssl",
         "--smtp-port", str(smtps), "--no-tls-verify", "--password-stdin", input="not-the-password\n")
    res = mail("send", "--to", BOB, "--body", "x", account="badpw-sub", check=False)
    assert res.returncode == 1 and "535" in res.err, res.err


def test_read_in_the_terminal_charset(trio) -> None:
    mail, server = trio
    mail("send", "--to", BOB, "--subject", "Grüße €", "--body", "Schöne Grüße €\n", account="alice")
    (uid,) = _uids(mail, "bob")
    latin1 = mail("read", str(uid), "--peek", account="bob", encoding="latin-1").stdout.decode("latin-1")
    assert "Subject: Grüße ?" in latin1 and "Schöne Grüße ?" in latin1  # no euro sign in latin-1
    ascii_ = mail("read", str(uid), account="bob", encoding="ascii").stdout.decode("ascii")
    assert "Subject: Gr??e ?" in ascii_


def test_account_add_asks_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal `account add` asks, offering guesses from the domain."""
    import pty
    import select
    import time

    home = tmp_path / "home"
    env = dict(os.environ, MAILYARD_CLIENT_HOME=str(home))
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI on the pty
        os.execve(sys.executable, [sys.executable, "-m", "mailyard", "mail", "account", "add"], env)
    seen = b""
    transcript = b""

    def expect(text: bytes, answer: str) -> None:
        nonlocal seen, transcript
        deadline = time.monotonic() + 30
        while text not in seen:
            assert time.monotonic() < deadline, seen.decode(errors="replace")
            if select.select([fd], [], [], 0.5)[0]:
                chunk = os.read(fd, 4096)
                seen += chunk
                transcript += chunk
        seen = seen[seen.index(text) + len(text):]
        os.write(fd, answer.encode() + b"\n")

    try:
        expect(b"Email address:", "dora@example.org")
        expect(b"Your name", "Dora")
        expect(b"IMAP server ('-' for none) [imap.example.org]:", "")
        expect(b"IMAP security (implicit/starttls/none) [implicit]:", "")
        expect(b"IMAP port [993]:", "")
        expect(b"POP3 server ('-' for none) [pop.example.org]:", "-")
        expect(b"[smtp.example.org]:", "127.0.0.1")
        expect(b"[starttls]:", "ssl")  # the old word for implicit
        expect(b"port [465]:", "")
        assert b'security "ssl" is deprecated, write "implicit"' in transcript
        expect(b"Password for dora@example.org:", "dora-secret")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    text = (home / "accounts.toml").read_text()
    assert 'host = "imap.example.org"\nport = 993\nsecurity = "implicit"' in text
    assert 'host = "127.0.0.1"\nport = 465\nsecurity = "implicit"' in text
    assert (home / "passwords" / "dora@example.org").read_text() == "dora-secret"
    assert "dora-secret" not in text


def test_body_sources(trio, tmp_path: Path) -> None:
    mail, server = trio
    mail("send", "--to", BOB, "-s", "from stdin", account="alice", input="piped text\nline 2\n")
    (tmp_path / "body.txt").write_text("from a file ✓\n", encoding="utf-8")
    mail("send", "--to", BOB, "-s", "from file", "--body-file", str(tmp_path / "body.txt"), account="alice")
    (tmp_path / "only.html").write_text("<p>Only <b>HTML</b> given</p>", encoding="utf-8")
    mail("send", "--to", BOB, "-s", "html only", "--html", str(tmp_path / "only.html"), account="alice")
    stdin_msg, file_msg, html_msg = (parse(raw) for raw in server.messages(BOB))
    assert stdin_msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == "piped text\nline 2\n"
    assert file_msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == "from a file ✓\n"
    assert html_msg.get_body(("plain",)).get_content().strip() == "Only HTML given"
    assert "<b>HTML</b>" in html_msg.get_body(("html",)).get_content()
    bad = mail("send", "--to", "not an address", "--body", "x", account="alice", check=False)
    assert bad.returncode == 1 and "not an address" in bad.err
    bad = mail("send", "--body", "x", account="alice", check=False)
    assert bad.returncode == 1 and "no recipients" in bad.err
