"""Who an authenticated user may send as, on every submission path (ports 587
and 465 with smtplib, webmail with httpx), and the quoted local part of RFC
5321 4.1.2 on the MX port.

One rule (policy/submission.py): the envelope sender and the From / Sender
addresses are the user's own address, a local alias leading only to them, or
an address granted with ``mailyard user allow-from``; otherwise ``550 5.7.1``
with the reason, and webmail shows the same reason.
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import USERS, RunningServer

httpx = pytest.importorskip("httpx")

ALICE = "alice@example.test"
BOB = "bob@example.test"
PORTS = ("submission", "smtps")
FOREIGN_FROM = b"550 5.7.1 From <bob@example.test> is not an address of alice@example.test"


def client_context(server: RunningServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.data_dir / "tls" / "cert.pem"))


def connect(server: RunningServer, port: str, user: str = ALICE) -> smtplib.SMTP:
    """An authenticated submission session: 587 with STARTTLS, or 465 (implicit TLS)."""
    if port == "submission":
        s = smtplib.SMTP(server.host, server.port("submission"), timeout=10)
        s.starttls(context=client_context(server))
        s.ehlo()
    else:
        s = smtplib.SMTP_SSL(server.host, server.port("smtps"), context=client_context(server), timeout=10)
    s.login(user, USERS[user])
    return s


def submit(server: RunningServer, port: str, message: bytes, *, mail_from: str = ALICE,
           rcpts: tuple[str, ...] = (BOB,), user: str = ALICE) -> bytes:
    """Send one message; the reply to the end of DATA as ``b"code text"``."""
    with connect(server, port, user) as s:
        code, text = s.docmd(f"MAIL FROM:<{mail_from}>")
        assert code == 250, (code, text)
        for rcpt in rcpts:
            code, text = s.rcpt(rcpt)
            assert code == 250, (code, text)
        code, text = s.data(message)
        return b"%d %s" % (code, text)


def message(headers: str) -> bytes:
    return (headers.replace("\n", "\r\n") + "\r\nSubject: test\r\n\r\nbody\r\n").encode()


def cli(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "src"), str(root)]))
    return subprocess.run(
        [sys.executable, "-m", "mailyard", "--data", str(server.data_dir), *args],
        capture_output=True, text=True, timeout=60, env=env,
    )


@pytest.mark.parametrize("port", PORTS)
def test_foreign_from_is_refused_with_the_reason(mailserver: RunningServer, port: str) -> None:
    reply = submit(mailserver, port, message("From: Bob <bob@example.test>\nTo: bob@example.test"))
    assert reply == FOREIGN_FROM
    assert mailserver.messages(BOB) == []


@pytest.mark.parametrize("port", PORTS)
def test_foreign_sender_is_refused(mailserver: RunningServer, port: str) -> None:
    reply = submit(mailserver, port, message("From: alice@example.test\nSender: bob@example.test"))
    assert reply == b"550 5.7.1 Sender <bob@example.test> is not an address of alice@example.test"
    assert mailserver.messages(BOB) == []


@pytest.mark.parametrize("port", PORTS)
def test_own_from_is_accepted_and_received_names_the_user(mailserver: RunningServer, port: str) -> None:
    reply = submit(mailserver, port, message("From: Alice <alice@example.test>\nSender: alice@example.test"))
    assert reply.startswith(b"250 ")
    (stored,) = mailserver.messages(BOB)
    received = stored.split(b"\r\nReceived: ", 1)[1].split(b"\r\nFrom:", 1)[0]
    # RFC 3848: ESMTPSA (TLS + AUTH); the comment names the account, as Postfix does.
    assert b"(Authenticated sender: alice@example.test)" in received
    assert re.search(rb"with ESMTPSA id", received), received


@pytest.mark.parametrize("port", PORTS)
def test_null_sender_with_foreign_from_is_refused(mailserver: RunningServer, port: str) -> None:
    reply = submit(mailserver, port, message("From: The CEO <ceo@bigcorp.test>"), mail_from="")
    assert reply == b"550 5.7.1 From <ceo@bigcorp.test> is not an address of alice@example.test"
    assert submit(mailserver, port, message("From: alice@example.test"), mail_from="").startswith(b"250 ")
    assert len(mailserver.messages(BOB)) == 1


@pytest.mark.parametrize(
    "headers",
    [
        "From: alice@example.test, ceo@bigcorp.test",  # every author is checked (RFC 5322 3.6.2)
        "From: alice@example.test\nFrom: bob@example.test",  # a second From field
        "FROM: bob@example.test",  # field names are case-insensitive
        "From : bob@example.test",  # obsolete space before the colon (RFC 5322 4.5)
        "From: alice@example.test,\n ceo@bigcorp.test",  # folded onto a continuation line
        "From: <bob@example.test",  # unreadable: refused, not skipped
        "From: alice@example.test\nResent-From: bob@example.test",
        'From: "alice@example.test" <bob@example.test>',
    ],
)
def test_every_sender_field_and_address_is_checked(mailserver: RunningServer, headers: str) -> None:
    reply = submit(mailserver, "smtps", message(headers))
    assert reply.startswith(b"550 5.7.1 "), reply
    assert mailserver.messages(BOB) == []


def test_alias_leading_only_to_the_user_is_allowed(make_server: Callable[..., RunningServer]) -> None:
    async def seed(store) -> None:  # noqa: ANN001
        await store.add_alias("me@example.test", [ALICE])
        await store.add_alias("nested@example.test", ["me@example.test"])
        await store.add_alias("sales@example.test", [ALICE, BOB])
        await store.add_alias("out@example.test", [ALICE, "alice@remote.test"])

    server = make_server(seed=seed)
    for own in ("me@example.test", "nested@example.test", '"me"@example.test'):
        reply = submit(server, "submission", message(f"From: {own}"), mail_from=own)
        assert reply.startswith(b"250 "), (own, reply)
    for shared in ("sales@example.test", "out@example.test"):
        reply = submit(server, "submission", message(f"From: {shared}"))
        assert reply == b"550 5.7.1 From <%s> is not an address of alice@example.test" % shared.encode()
        with connect(server, "smtps") as s:
            assert s.mail(shared)[0] == 553
    assert len(server.messages(BOB)) == 3


def test_allow_from_grants_a_shared_address(make_server: Callable[..., RunningServer]) -> None:
    async def seed(store) -> None:  # noqa: ANN001
        await store.add_alias("sales@example.test", [ALICE, BOB])

    server = make_server(seed=seed)
    sales = message("From: Sales <sales@example.test>")
    assert submit(server, "smtps", sales).startswith(b"550 5.7.1 ")

    r = cli(server, "user", "allow-from", ALICE, "sales@example.test", "*@partner.test")
    assert r.returncode == 0, r.stderr
    assert "*@partner.test, sales@example.test" in r.stdout
    assert submit(server, "smtps", sales, mail_from="sales@example.test").startswith(b"250 ")
    assert submit(server, "submission", message("From: x@Partner.TEST")).startswith(b"250 ")
    # the grant is alice's, not bob's
    reply = submit(server, "smtps", sales, user=BOB, mail_from=BOB, rcpts=(ALICE,))
    assert reply == b"550 5.7.1 From <sales@example.test> is not an address of bob@example.test"

    r = cli(server, "user", "disallow-from", ALICE, "sales@example.test")
    assert r.returncode == 0, r.stderr
    assert submit(server, "smtps", sales).startswith(b"550 5.7.1 ")
    assert submit(server, "smtps", message("From: y@partner.test")).startswith(b"250 ")
    assert cli(server, "user", "disallow-from", ALICE).returncode == 0
    assert submit(server, "smtps", message("From: y@partner.test")).startswith(b"550 5.7.1 ")
    r = cli(server, "user", "allow-from", "nobody@example.test", "x@example.test")
    assert r.returncode == 1 and "no account" in r.stderr
    assert len(server.messages(BOB)) == 3


# --- webmail: the same rule, the same reason ---------------------------------------
def web_login(server: RunningServer, user: str = ALICE) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=f"http://127.0.0.1:{server.port('http')}", follow_redirects=False, timeout=30)
    r = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', r.text).group(1)
    r = client.post("/login", data={"username": user, "password": USERS[user], "login_token": token})
    assert r.status_code == 303, r.text
    page = client.get("/", follow_redirects=True)
    return client, re.search(r'data-csrf="([^"]+)"', page.text).group(1)


def test_webmail_applies_the_same_rule(make_server: Callable[..., RunningServer]) -> None:
    async def seed(store) -> None:  # noqa: ANN001
        await store.add_alias("me@example.test", [ALICE])

    server = make_server(seed=seed)
    client, token = web_login(server)
    form = {"csrf": token, "to": BOB, "subject": "x", "body": "y", "action": "send"}
    r = client.post("/compose", data={**form, "from": "Bob <bob@example.test>"})
    assert r.status_code == 400
    assert 'id="compose-errors"' in r.text
    reason = FOREIGN_FROM.split(b"5.7.1 ", 1)[1].decode()
    assert reason.replace("<", "&lt;").replace(">", "&gt;") in r.text
    assert server.messages(BOB) == []

    r = client.post("/compose", data={**form, "from": "Me <me@example.test>"})
    assert r.status_code == 303, r.text
    r = client.post("/compose", data=form)  # no From given: the account's address
    assert r.status_code == 303, r.text
    first, second = server.messages(BOB)
    assert b"\r\nFrom: Me <me@example.test>\r\n" in first and b"Return-Path: <me@example.test>" in first
    assert b"(Authenticated sender: alice@example.test)" in first
    assert b"\r\nFrom: alice@example.test\r\n" in second


# --- RFC 5321 4.1.2: "alice"@example.test is alice@example.test ---------------------
def test_quoted_local_part_is_the_same_mailbox(mailserver: RunningServer) -> None:
    with smtplib.SMTP(mailserver.host, mailserver.port("smtp"), timeout=10) as s:
        s.ehlo("client.remote.test")
        assert s.docmd('MAIL FROM:<"carol"@remote.test>')[0] == 250
        code, text = s.docmd('RCPT TO:<"alice"@example.test>')
        assert code == 250, text
        code, text = s.docmd('RCPT TO:<"a b"@example.test>')
        assert code == 550, text
        code, text = s.docmd('RCPT TO:<"b\\ob"@example.test>')  # a quoted-pair: still bob
        assert code == 250, text
        code, text = s.data(b"From: carol@remote.test\r\nSubject: quoted\r\n\r\nhi\r\n")
        assert code == 250, text
    (stored,) = mailserver.messages(ALICE)
    assert b"Subject: quoted" in stored and b"Delivered-To: alice@example.test\r\n" in stored
    assert stored.startswith(b'Return-Path: <"carol"@remote.test>\r\n')  # the original, in the trace
    assert len(mailserver.messages(BOB)) == 1
    with smtplib.SMTP(mailserver.host, mailserver.port("smtp"), timeout=10) as s:
        s.ehlo("client.remote.test")
        assert s.docmd('MAIL FROM:<"a b"@remote.test>')[0] == 250
        code, text = s.docmd('RCPT TO:<"a b"@example.test>')
        assert (code, text[:5]) == (550, b"5.1.1")


def test_quoted_local_part_in_submission_mail_from(mailserver: RunningServer) -> None:
    with connect(mailserver, "submission") as s:
        assert s.docmd('MAIL FROM:<"alice"@example.test>')[0] == 250
        s.rset()
        code, text = s.docmd('MAIL FROM:<"bob"@example.test>')
        assert (code, text[:5]) == (553, b"5.7.1"), text
