"""The terminal client answers and saves mail with the shared reading core
(message/reading.py, message/reply.py): `mailyard mail reply` and `mail read
--save-attachments` as subprocesses against a running server hold the rules
webmail holds too (tests/integration/test_web_reading.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailyard.message.compose import Attachment, compose, to_bytes

from ..conftest import USERS, RunningServer
from .test_client import ALICE, BOB, MailCLI, _uids, parse, server_ports


def append(server: RunningServer, user: str, data: bytes) -> int:
    async def go() -> int:
        account = await server.store.get_account(user)
        box = await server.store.get_mailbox(account.id, "INBOX")
        return await server.store.append(box, data, [])

    return server.call(go())


@pytest.fixture
def bob(tmp_path: Path, mailserver: RunningServer) -> MailCLI:
    cli = MailCLI(tmp_path / "client-home")
    cli.add_account("bob", BOB, USERS[BOB], display_name="Bob", **server_ports(mailserver))
    return cli


def test_reply_subject_threading_and_quote(bob: MailCLI, mailserver: RunningServer) -> None:
    append(mailserver, BOB, (
        b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
        b"Subject: AW: SV: Hallo\r\nDate: Tue, 01 Oct 2024 10:00:00 +0200\r\n"
        b"Message-ID: <parent@example.test>\r\nIn-Reply-To: <root@example.test>\r\n"
        b"\r\nline one\r\n> said before\r\n-- \r\nAlice's signature\r\n"))
    (uid,) = _uids(bob, "bob")
    bob("reply", str(uid), "--body", "Danke.", account="bob")
    (raw,) = mailserver.messages(ALICE)
    reply = parse(raw)
    # the localised reply markers go, one "Re: " comes (RFC 5322 3.6.5)
    assert reply["Subject"] == "Re: Hallo"
    # RFC 5322 3.6.4: no References in the parent, one In-Reply-To id: it starts References
    assert reply["In-Reply-To"] == "<parent@example.test>"
    assert reply["References"].split() == ["<root@example.test>", "<parent@example.test>"]
    text = reply.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.startswith("Danke.") and "> line one\n>> said before" in text
    assert "signature" not in text


def test_saved_attachment_name_has_no_bidi_override(bob: MailCLI, mailserver: RunningServer,
                                                    tmp_path: Path) -> None:
    # U+202E turns "invoice\u202efdp.exe" into "invoiceexe.pdf" on screen
    msg = compose(ALICE, BOB, subject="invoice", text="see attached",
                  attachments=[Attachment("invoice\u202efdp.exe", b"MZ data", "application/octet-stream")])
    append(mailserver, BOB, to_bytes(msg))
    (uid,) = _uids(bob, "bob")
    out = tmp_path / "saved"
    bob("read", str(uid), "--save-attachments", str(out), account="bob")
    assert [p.name for p in out.iterdir()] == ["invoicefdp.exe"]


@pytest.mark.parametrize("octets", [b"Sch\xc3\xb6ne Gr\xc3\xbc\xc3\x9fe \xe2\x82\xac", b"Sch\xf6ne Gr\xfc\xdfe \x80"])
def test_8bit_body_without_charset_reads_as_text(bob: MailCLI, mailserver: RunningServer, octets: bytes) -> None:
    """UTF-8 octets read as UTF-8, others as Windows-1252 (Thunderbird, Gmail)."""
    append(mailserver, BOB, b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: gruss\r\n"
           b"Date: Tue, 01 Oct 2024 10:00:00 +0200\r\n\r\n" + octets + b"\r\n")
    (uid,) = _uids(bob, "bob")
    out = bob("read", str(uid), account="bob").out
    assert "Schöne Grüße €" in out and "\ufffd" not in out, out
    bob("reply", str(uid), "--body", "ok", account="bob")
    (raw,) = mailserver.messages(ALICE)
    assert "> Schöne Grüße €" in parse(raw).get_body(("plain",)).get_content()


def test_message_without_date_shows_and_quotes_the_arrival_time(bob: MailCLI, mailserver: RunningServer) -> None:
    import datetime

    append(mailserver, BOB, b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: undated\r\n"
           b"\r\nno date here\r\n")
    (uid,) = _uids(bob, "bob")
    year = str(datetime.date.today().year)
    out = bob("read", str(uid), account="bob").out
    date_line = next((line for line in out.splitlines() if line.startswith("Date:")), "")
    assert year in date_line, out
    bob("reply", str(uid), "--body", "ok", account="bob")
    (raw,) = mailserver.messages(ALICE)
    text = parse(raw).get_body(("plain",)).get_content()
    assert "On , " not in text and re.search(rf"On \w{{3}}, \d\d \w{{3}} {year} \d\d:\d\d, Alice wrote:", text), text


def test_send_over_the_size_limit_says_the_sizes(tmp_path: Path, make_server) -> None:  # noqa: ANN001
    """The EHLO SIZE limit (RFC 1870) is stated in numbers before anything is sent."""

    def small(cfg) -> None:  # noqa: ANN001
        cfg.smtp.max_message_size = 2 * 1024 * 1024

    server = make_server(configure=small)
    cli = MailCLI(tmp_path / "client-home")
    cli.add_account("alice", ALICE, USERS[ALICE], **server_ports(server))
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (12 * 1024))  # 3 MB, about 4.1 MB in base64
    res = cli("send", "--to", BOB, "--body", "x", "--attach", str(big), account="alice", check=False)
    assert res.returncode == 1, res.err
    assert "message is 4.1 MB, the server accepts at most 2 MB; nothing sent" in res.err, res.err
    assert server.messages(BOB) == []
