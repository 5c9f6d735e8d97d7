"""Message submission (RFC 6409) on 2587 (STARTTLS) and 2465 (implicit TLS):
AUTH before MAIL, the user's own addresses only, Date / Message-ID completed,
trace with ESMTPSA. The clients are smtplib and aiosmtplib."""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
from collections.abc import Callable

import aiosmtplib
import pytest

from mailyard.policy.submission import complete_message
from tests.conftest import USERS, RunningServer

ALICE = "alice@example.test"
BOB = "bob@example.test"


def client_context(server: RunningServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.data_dir / "tls" / "cert.pem"))


def header_of(stored: bytes) -> bytes:
    return stored.split(b"\r\n\r\n", 1)[0]


def test_completed_header_keeps_the_rest_byte_identical(mailserver: RunningServer) -> None:
    sent = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: x\r\n\r\nbody\r\n.dot\r\n"
    with smtplib.SMTP_SSL(mailserver.host, mailserver.port("smtps"), context=client_context(mailserver), timeout=10) as s:
        s.login(ALICE, USERS[ALICE])
        s.sendmail(ALICE, [BOB], sent)
    (stored,) = mailserver.messages(BOB)
    header = header_of(stored)
    # The user's fields in order, the two completed ones right after them.
    m = re.search(
        rb"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: x\r\n"
        rb"Date: [^\r]+\r\nMessage-ID: <[^@>]+@mx\.example\.test>$",
        header,
    )
    assert m is not None, header
    assert stored.endswith(b"\r\n\r\nbody\r\n.dot\r\n")
    assert re.search(
        rb"Received: from [^\r]+\r\n\t\(Authenticated sender: alice@example\.test\)\r\n"
        rb"\tby mx\.example\.test \(TLSv1\.[23] [A-Z0-9_-]+\) with ESMTPSA id",
        stored,
    )


def test_existing_date_and_message_id_untouched(mailserver: RunningServer) -> None:
    sent = (
        b"Message-ID: <own@example.test>\r\nDATE: Mon, 23 Nov 2026 08:00:00 +0000\r\n"
        b"From: alice@example.test\r\n\r\nhi\r\n"
    )
    with smtplib.SMTP_SSL(mailserver.host, mailserver.port("smtps"), context=client_context(mailserver), timeout=10) as s:
        s.login(ALICE, USERS[ALICE])
        s.sendmail(ALICE, [BOB], sent)
    (stored,) = mailserver.messages(BOB)
    assert stored.endswith(sent)
    assert header_of(stored).count(b"Message-ID") == 1


def test_aiosmtplib_starttls_login_send(mailserver: RunningServer) -> None:
    async def send() -> None:
        client = aiosmtplib.SMTP(
            hostname=mailserver.host, port=mailserver.port("submission"), tls_context=client_context(mailserver),
            start_tls=True, timeout=10,
        )
        await client.connect()
        await client.login(BOB, USERS[BOB])
        errors, _ = await client.sendmail(BOB, [ALICE, BOB], b"Subject: to both\r\n\r\nhello\r\n")
        assert errors == {}
        await client.quit()

    asyncio.run(send())
    assert len(mailserver.messages(ALICE)) == 1 and len(mailserver.messages(BOB)) == 1


def test_auth_must_come_before_mail_on_both_ports(mailserver: RunningServer) -> None:
    with smtplib.SMTP(mailserver.host, mailserver.port("submission"), timeout=10) as s:
        s.starttls(context=client_context(mailserver))
        s.ehlo()
        assert s.mail(ALICE) == (530, b"5.7.0 Authentication required")
        assert s.rcpt(BOB)[0] == 503
    with smtplib.SMTP_SSL(mailserver.host, mailserver.port("smtps"), context=client_context(mailserver), timeout=10) as s:
        s.ehlo()
        assert s.mail(ALICE)[0] == 530


def test_sender_must_be_owned(make_server: Callable[..., RunningServer]) -> None:
    async def seed(store) -> None:  # noqa: ANN001
        await store.add_alias("sales@example.test", [ALICE])

    server = make_server(seed=seed)
    with smtplib.SMTP_SSL(server.host, server.port("smtps"), context=client_context(server), timeout=10) as s:
        s.login(ALICE, USERS[ALICE])
        assert s.mail("sales@example.test")[0] == 250
        s.rset()
        for foreign in (BOB, "postmaster@example.test", "alice@remote.test", "alice%remote.test@example.test"):
            code, text = s.mail(foreign)
            assert (code, text[:5]) == (553, b"5.7.1"), foreign
        with pytest.raises(smtplib.SMTPSenderRefused):
            s.sendmail(BOB, [ALICE], b"Subject: spoof\r\n\r\nx\r\n")
    assert server.messages(ALICE) == []


def test_remote_recipient_for_authenticated_user(mailserver: RunningServer) -> None:
    """Relaying is what submission is for; without an outbound queue the
    server says 451 (try later) rather than accept what it cannot deliver."""
    with smtplib.SMTP_SSL(mailserver.host, mailserver.port("smtps"), context=client_context(mailserver), timeout=10) as s:
        s.login(ALICE, USERS[ALICE])
        s.mail(ALICE)
        code, text = s.rcpt("carol@remote.test")
        if getattr(mailserver.server, "queue", None) is None:
            assert code == 451
        else:
            assert code == 250


@pytest.mark.parametrize(
    ("data", "expect_at"),
    [
        (b"Subject: a\r\n\r\nbody\r\n", b"Subject: a\r\n"),
        (b"Subject: a\n\nbody\n", b"Subject: a\n"),
        (b"\r\nbody only\r\n", b""),
        (b"Subject: header only", b"Subject: header only\r\n"),
        (b"Subject: a\r\n continued: not a field\r\n\r\nx\r\n", b"Subject: a\r\n continued: not a field\r\n"),
    ],
)
def test_complete_message_positions(data: bytes, expect_at: bytes) -> None:
    out, added = complete_message(data, "mx.example.test", ts=0)
    assert added == ["Date", "Message-ID"]
    assert out.startswith(expect_at + b"Date: ")
    assert b"\r\nMessage-ID: <" in out


def test_complete_message_recognises_fields_case_insensitively() -> None:
    data = b"date: Thu, 1 Jan 1970 00:00:00 +0000\r\nmessage-id: <x@y>\r\n\r\nbody\r\n"
    assert complete_message(data, "mx.example.test") == (data, [])
