"""No open relay: the classic relay-test patterns, every one refused.

The patterns are those of the well-known open-relay testers (abuse.net's
relay test, rlytest, the ORDB/MAPS checks): percent hack, bang paths, source
routes, quoted local parts with "@" or "%", double "@", IP literals of the
server itself and of others, trailing dots, case games, look-alike domains,
forged local senders and HELO names. Each is tried

- on the MX port (2525 in development) without authentication: RCPT is
  refused (5xx, or a syntax error), DATA then finds no recipient;
- on the submission port (2587) without authentication: MAIL is already
  refused (530 5.7.0, RFC 4954 6), so nothing can follow.

Afterwards no mailbox holds a message and nothing waits in an outbound queue.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable

import pytest

from mailyard.policy.relay import routing_trick
from tests.conftest import RunningServer

LOCAL = "example.test"  # the server's domain (tests/conftest.py)
REMOTE = "remote.test"  # someone else's
IP = "127.0.0.1"  # the server's own address

# (description, HELO name, MAIL FROM path, RCPT TO argument)
ATTEMPTS: list[tuple[str, str, str, str]] = [
    ("plain remote", "client.test", f"<spammer@{REMOTE}>", f"<relaytest@{REMOTE}>"),
    ("quoted remote address", "client.test", f"<spammer@{REMOTE}>", f'<"relaytest@{REMOTE}">'),
    ("quoted remote address at local", "client.test", f"<spammer@{REMOTE}>", f'<"relaytest@{REMOTE}"@{LOCAL}>'),
    ("quoted remote address at IP literal", "client.test", f"<spammer@{REMOTE}>", f'<"relaytest@{REMOTE}"@[{IP}]>'),
    ("percent hack", "client.test", f"<spammer@{REMOTE}>", f"<relaytest%{REMOTE}@{LOCAL}>"),
    ("percent hack at IP literal", "client.test", f"<spammer@{REMOTE}>", f"<relaytest%{REMOTE}@[{IP}]>"),
    ("quoted percent hack", "client.test", f"<spammer@{REMOTE}>", f'<"relaytest%{REMOTE}"@{LOCAL}>'),
    ("double percent hack", "client.test", f"<spammer@{REMOTE}>", f"<relaytest%{REMOTE}%{LOCAL}@{LOCAL}>"),
    ("percent hack without domain", "client.test", f"<spammer@{REMOTE}>", f"<relaytest%{REMOTE}>"),
    ("double at", "client.test", f"<spammer@{REMOTE}>", f"<relaytest@{REMOTE}@{LOCAL}>"),
    ("double at, IP literal", "client.test", f"<spammer@{REMOTE}>", f"<relaytest@{REMOTE}@[{IP}]>"),
    ("escaped at in quotes", "client.test", f"<spammer@{REMOTE}>", f'<"relaytest\\@{REMOTE}"@{LOCAL}>'),
    ("source route via local", "client.test", f"<spammer@{REMOTE}>", f"<@{LOCAL}:relaytest@{REMOTE}>"),
    ("source route via IP literal", "client.test", f"<spammer@{REMOTE}>", f"<@[{IP}]:relaytest@{REMOTE}>"),
    ("two-hop source route", "client.test", f"<spammer@{REMOTE}>", f"<@{LOCAL},@other.test:relaytest@{REMOTE}>"),
    ("bang path", "client.test", f"<spammer@{REMOTE}>", f"<{REMOTE}!relaytest>"),
    ("bang path at local", "client.test", f"<spammer@{REMOTE}>", f"<{REMOTE}!relaytest@{LOCAL}>"),
    ("bang path at IP literal", "client.test", f"<spammer@{REMOTE}>", f"<{REMOTE}!relaytest@[{IP}]>"),
    ("bang path with percent", "client.test", f"<spammer@{REMOTE}>", f"<{REMOTE}!relaytest%{LOCAL}@{LOCAL}>"),
    ("quoted bang path", "client.test", f"<spammer@{REMOTE}>", f'<"{REMOTE}!relaytest"@{LOCAL}>'),
    ("colon in quoted local part", "client.test", f"<spammer@{REMOTE}>", f'<"@{REMOTE}:relaytest"@{LOCAL}>'),
    ("trailing dot on remote", "client.test", f"<spammer@{REMOTE}>", f"<relaytest@{REMOTE}.>"),
    ("upper case remote", "client.test", f"<spammer@{REMOTE}>", f"<RELAYTEST@{REMOTE.upper()}>"),
    ("other IPv4 literal", "client.test", f"<spammer@{REMOTE}>", "<relaytest@[192.0.2.1]>"),
    ("IPv6 literal", "client.test", f"<spammer@{REMOTE}>", "<relaytest@[IPv6:2001:db8::1]>"),
    ("own IP literal", "client.test", f"<spammer@{REMOTE}>", f"<relaytest@[{IP}]>"),
    ("IP without brackets", "client.test", f"<spammer@{REMOTE}>", f"<relaytest@{IP}>"),
    ("localhost", "client.test", f"<spammer@{REMOTE}>", "<relaytest@localhost>"),
    ("local domain as prefix", "client.test", f"<spammer@{REMOTE}>", f"<relaytest@{LOCAL}.{REMOTE}>"),
    ("local domain as suffix", "client.test", f"<spammer@{REMOTE}>", f"<relaytest@evil{LOCAL}>"),
    ("subdomain of local", "client.test", f"<spammer@{REMOTE}>", f"<relaytest@{REMOTE}.{LOCAL}>"),
    ("IDN look-alike (A-label)", "client.test", f"<spammer@{REMOTE}>", "<relaytest@xn--exmple-cua.test>"),
    ("IDN look-alike (SMTPUTF8)", "client.test", f"<spammer@{REMOTE}> SMTPUTF8", "<relaytest@exämple.test>"),
    ("remote postmaster", "client.test", f"<spammer@{REMOTE}>", f"<postmaster@{REMOTE}>"),
    ("forged local sender", "client.test", f"<alice@{LOCAL}>", f"<relaytest@{REMOTE}>"),
    ("forged postmaster sender", "client.test", f"<postmaster@{LOCAL}>", f"<relaytest@{REMOTE}>"),
    ("null sender", "client.test", "<>", f"<relaytest@{REMOTE}>"),
    ("HELO as the server itself", "mx.example.test", f"<alice@{LOCAL}>", f"<relaytest@{REMOTE}>"),
    ("HELO as localhost", "localhost", f"<spammer@{REMOTE}>", f"<relaytest@{REMOTE}>"),
    ("HELO as own IP literal", f"[{IP}]", f"<spammer@{REMOTE}>", f"<relaytest@{REMOTE}>"),
    ("no angle brackets", "client.test", f"<spammer@{REMOTE}>", f"relaytest@{REMOTE}"),
    ("space inside brackets", "client.test", f"<spammer@{REMOTE}>", f"< relaytest@{REMOTE}>"),
]

assert len(ATTEMPTS) >= 30


@pytest.fixture(scope="module")
def relay_server(tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    from tests.conftest import RunningServer as RS
    from tests.conftest import make_test_config

    server = RS(tmp_path_factory.mktemp("relay") / "data", make_test_config())
    server.start()
    yield server  # type: ignore[misc]
    server.stop()


def _attempt(server: RunningServer, port: str, helo: str, mail_from: str, rcpt: str) -> tuple[int, int, int]:
    """(MAIL code, RCPT code, DATA code) of one relay attempt."""
    with smtplib.SMTP(server.host, server.port(port), timeout=10) as s:
        s.command_encoding = "utf-8"  # for the SMTPUTF8 case
        s.ehlo(helo)
        mail_code, _ = s.docmd("MAIL FROM:" + mail_from)
        rcpt_code, _ = s.docmd("RCPT TO:" + rcpt)
        data_code, _ = s.docmd("DATA")
        if data_code == 354:  # must never happen; finish so the result is visible
            s.docmd("Subject: relayed\r\n\r\nrelayed\r\n.")
        return mail_code, rcpt_code, data_code


@pytest.mark.parametrize(("what", "helo", "mail_from", "rcpt"), ATTEMPTS, ids=[a[0] for a in ATTEMPTS])
def test_mx_port_refuses_relay(relay_server: RunningServer, what: str, helo: str, mail_from: str, rcpt: str) -> None:
    mail_code, rcpt_code, data_code = _attempt(relay_server, "smtp", helo, mail_from, rcpt)
    assert rcpt_code >= 500 or (rcpt_code >= 400 and rcpt_code != 451), (what, rcpt_code)
    assert data_code in (503, 554), (what, data_code)


@pytest.mark.parametrize(("what", "helo", "mail_from", "rcpt"), ATTEMPTS, ids=[a[0] for a in ATTEMPTS])
def test_submission_port_without_auth_refuses(
    relay_server: RunningServer, what: str, helo: str, mail_from: str, rcpt: str
) -> None:
    mail_code, rcpt_code, data_code = _attempt(relay_server, "submission", helo, mail_from, rcpt)
    assert mail_code in (530, 501, 553, 555), (what, mail_code)  # 530 5.7.0 unless MAIL is malformed
    assert rcpt_code == 503 and data_code == 503, (what, rcpt_code, data_code)


def test_nothing_was_delivered_or_queued(relay_server: RunningServer) -> None:
    # Runs after the attempts above (same module-scoped server).
    for address in ("alice@example.test", "bob@example.test", "postmaster@example.test"):
        assert relay_server.messages(address) == [], address
    assert relay_server.call(relay_server.store.queue_list()) == []


def test_local_delivery_still_works(make_server: Callable[..., RunningServer]) -> None:
    """The control case: the MX port accepts mail for local users, incl. case
    and the domain-less <Postmaster> (RFC 5321 4.5.1)."""
    server = make_server()
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=10) as s:
        s.ehlo("client.test")
        assert s.mail(f"someone@{REMOTE}")[0] == 250
        assert s.rcpt("ALICE@EXAMPLE.TEST")[0] == 250
        assert s.docmd("RCPT TO:<Postmaster>")[0] == 250
        assert s.data(b"Subject: hi\r\n\r\nhello\r\n")[0] == 250
    assert len(server.messages("alice@example.test")) == 1
    assert len(server.messages("postmaster@example.test")) == 1


@pytest.mark.parametrize(
    ("path", "trick"),
    [
        ("user%other.test@example.test", True),
        ('"user@other.test"@example.test', True),
        ('"user\\@other.test"@example.test', True),
        ("other.test!user@example.test", True),
        ('"@a:user"@example.test', True),
        ("user@example.test", False),
        ('"john doe"@example.test', False),
        ("first.last+tag@example.test", False),
        ("postmaster", False),
    ],
)
def test_routing_trick_detection(path: str, trick: bool) -> None:
    assert (routing_trick(path) is not None) is trick
