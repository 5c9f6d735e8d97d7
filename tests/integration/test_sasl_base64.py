"""SASL responses are decoded as strict base64 on every port that shares
auth/sasl.py: a response with padding it does not need (``...==`` after a
complete quantum), which a lenient decoder takes, is refused with the
protocol's error for data it cannot decode (RFC 4954 4: 501 5.5.2; RFC 9051
6.2.2: BAD; RFC 5034 4: -ERR; RFC 5804 2.1: NO), and the right response
still logs in. Raw sockets on a real server."""

from __future__ import annotations

from tests.conftest import USERS, RunningServer
from tests.integration.test_security import Wire, b64

ALICE = "alice@example.test"
TOKEN = b64(f"\0{ALICE}\0{USERS[ALICE]}")
PADDED = TOKEN + b"=="  # the same octets, with padding that is not needed


def test_smtp_auth_refuses_extra_padding(mailserver: RunningServer) -> None:
    w = Wire(mailserver.port("submission"))
    try:
        assert w.smtp().startswith(b"220 ")
        assert w.smtp("EHLO client.example.org").startswith(b"250-")
        bad = b"501 5.5.2 Cannot decode the authentication data: response is not valid base64\r\n"
        assert w.smtp(b"AUTH PLAIN " + PADDED) == bad
        assert w.smtp("AUTH PLAIN") == b"334 \r\n"
        assert w.smtp(PADDED) == bad
        # "=": an empty initial response (RFC 4954 4), which PLAIN cannot be: said so, not "base64"
        assert w.smtp("AUTH PLAIN =") == (b"501 5.5.2 Cannot decode the authentication data:"
                                          b" PLAIN message must be authzid NUL authcid NUL passwd\r\n")
        assert w.smtp(b"AUTH PLAIN " + TOKEN).startswith(b"235 ")
    finally:
        w.close()


def test_imap_authenticate_refuses_extra_padding(mailserver: RunningServer) -> None:
    w = Wire(mailserver.port("imap"))
    try:
        assert w.line().startswith(b"* OK")
        assert w.imap(b"t1 AUTHENTICATE PLAIN " + PADDED) == b"t1 BAD Malformed authentication data\r\n"
        assert w.cmd("t2 AUTHENTICATE PLAIN") == b"+ \r\n"
        assert w.imap(PADDED, b"t2") == b"t2 BAD Malformed authentication data\r\n"
        assert w.imap(b"t3 AUTHENTICATE PLAIN " + TOKEN, b"t3").startswith(b"t3 OK")
    finally:
        w.close()


def test_pop3_auth_refuses_extra_padding(mailserver: RunningServer) -> None:
    w = Wire(mailserver.port("pop3"))
    try:
        assert w.line().startswith(b"+OK")
        assert w.cmd(b"AUTH PLAIN " + PADDED) == b"-ERR invalid authentication exchange\r\n"
        assert w.cmd(b"AUTH PLAIN " + TOKEN).startswith(b"+OK")
    finally:
        w.close()


def test_managesieve_authenticate_refuses_extra_padding(mailserver: RunningServer) -> None:
    w = Wire(mailserver.port("managesieve"))
    try:
        while not w.line().startswith(b"OK"):
            pass
        assert w.cmd(b'AUTHENTICATE "PLAIN" "' + PADDED + b'"') == b'NO "cannot decode the authentication data"\r\n'
        assert w.cmd(b'AUTHENTICATE "PLAIN" "' + TOKEN + b'"') == b'OK "authenticated"\r\n'
    finally:
        w.close()
