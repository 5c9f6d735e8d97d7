"""ManageSieve (RFC 5804) on a real server: the exact bytes over a raw
socket, sievelib's client, and the ``sieve-connect`` program (Debian
package sieve-connect). A script put over ManageSieve then files mail sent
by SMTP."""

from __future__ import annotations

import base64
import logging
import smtplib
import socket
import subprocess
import time

import pytest

from mailyard.store.api import StoreUnavailable
from tests.conftest import USERS, RunningServer, require_program

ALICE = "alice@example.test"
PASSWORD = USERS[ALICE]
SIEVE_CAP = (b'"SIEVE" "fileinto mailbox envelope encoded-character imap4flags vacation vacation-seconds copy '
             b'variables relational subaddress body reject ereject comparator-i;ascii-numeric date index regex include duplicate '
             b'editheader enotify spamtest spamtestplus"\r\n')


class Raw:
    """A line-and-literal reader over a socket."""

    def __init__(self, server: RunningServer) -> None:
        self.sock = socket.create_connection((server.host, server.port("managesieve")), timeout=10)
        self.buf = b""

    def until(self, end: bytes) -> bytes:
        deadline = time.monotonic() + 10
        while end not in self.buf:
            assert time.monotonic() < deadline, self.buf
            chunk = self.sock.recv(65536)
            assert chunk, self.buf
            self.buf += chunk
        i = self.buf.index(end) + len(end)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def reply(self) -> bytes:
        """Everything up to and including the OK / NO / BYE line."""
        out = b""
        while True:
            line = self.until(b"\r\n")
            out += line
            if line.startswith((b"OK", b"NO", b"BYE")):
                return out

    def cmd(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return self.reply()


def plain(user: str, password: str) -> bytes:
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())


def test_managesieve_bytes(mailserver: RunningServer) -> None:
    c = Raw(mailserver)
    greeting = c.reply()
    assert greeting == (b'"IMPLEMENTATION" "mailyard 0.1.0"\r\n"SASL" "PLAIN SCRAM-SHA-256"\r\n' + SIEVE_CAP +
                        b'"MAXREDIRECTS" "4"\r\n"VERSION" "1.0"\r\n"STARTTLS"\r\nOK "mailyard ManageSieve ready"\r\n')
    assert c.cmd(b"LISTSCRIPTS\r\n") == b'NO "authenticate first"\r\n'
    assert c.cmd(b'AUTHENTICATE "PLAIN" "' + plain(ALICE, "wrong") + b'"\r\n') == b'NO "authentication failed"\r\n'
    assert c.cmd(b'AUTHENTICATE "PLAIN" "' + plain(ALICE, PASSWORD) + b'"\r\n') == b'OK "authenticated"\r\n'
    script = b'require "fileinto";\r\nif header :contains "subject" "report" { fileinto "INBOX"; }\r\n'
    assert c.cmd(b'PUTSCRIPT "main" {%d+}\r\n%s\r\n' % (len(script), script)) == b'OK "putscript completed"\r\n'
    bad = b"if true keep;\r\n"
    assert c.cmd(b'PUTSCRIPT "bad" {%d+}\r\n%s\r\n' % (len(bad), bad)) == \
        b"NO \"line 1, column 4: test 'true' takes no test\"\r\n"
    assert c.cmd(b'CHECKSCRIPT {%d+}\r\n%s\r\n' % (len(bad), bad)) == \
        b"NO \"line 1, column 4: test 'true' takes no test\"\r\n"
    assert c.cmd(b'CHECKSCRIPT "keep;"\r\n') == b'OK "checkscript completed"\r\n'
    assert c.cmd(b"LISTSCRIPTS\r\n") == b'"main"\r\nOK "listscripts completed"\r\n'
    assert c.cmd(b'SETACTIVE "main"\r\n') == b'OK "setactive completed"\r\n'
    assert c.cmd(b"LISTSCRIPTS\r\n") == b'"main" ACTIVE\r\nOK "listscripts completed"\r\n'
    assert c.cmd(b'GETSCRIPT "main"\r\n') == b"{%d}\r\n%s\r\nOK \"getscript completed\"\r\n" % (len(script), script)
    assert c.cmd(b'GETSCRIPT "nope"\r\n') == b"NO (NONEXISTENT) \"no script named 'nope'\"\r\n"
    assert c.cmd(b'DELETESCRIPT "main"\r\n') == b'NO (ACTIVE) "the active script cannot be deleted"\r\n'
    assert c.cmd(b'RENAMESCRIPT "main" "filters"\r\n') == b'OK "renamescript completed"\r\n'
    assert c.cmd(b"LISTSCRIPTS\r\n") == b'"filters" ACTIVE\r\nOK "listscripts completed"\r\n'
    assert c.cmd(b'HAVESPACE "x" 100\r\n') == b'OK "putscript would succeed"\r\n'
    assert c.cmd(b'HAVESPACE "x" 99999999\r\n') == b'NO (QUOTA/MAXSIZE) "scripts are limited to 262144 octets"\r\n'
    assert c.cmd(b'NOOP "t1"\r\n') == b'OK (TAG "t1") "done"\r\n'
    assert c.cmd(b"FROB\r\n") == b'NO "unknown command FROB"\r\n'
    assert c.cmd(b'SETACTIVE ""\r\n') == b'OK "setactive completed"\r\n'
    assert c.cmd(b'DELETESCRIPT "filters"\r\n') == b'OK "deletescript completed"\r\n'
    assert c.cmd(b"LOGOUT\r\n") == b'OK "logout completed"\r\n'


def test_three_failed_logins_end_the_session(mailserver: RunningServer) -> None:
    c = Raw(mailserver)
    c.reply()
    for _ in range(2):
        assert c.cmd(b'AUTHENTICATE "PLAIN" "' + plain(ALICE, "bad") + b'"\r\n') == b'NO "authentication failed"\r\n'
    assert c.cmd(b'AUTHENTICATE "PLAIN" "' + plain(ALICE, "bad") + b'"\r\n') == b'NO "authentication failed"\r\n'
    assert c.reply() == b'BYE "too many failed logins"\r\n'
    assert c.sock.recv(100) == b""  # closed


def test_oversized_literal_is_refused_unread(mailserver: RunningServer) -> None:
    c = Raw(mailserver)
    c.reply()
    c.cmd(b'AUTHENTICATE "PLAIN" "' + plain(ALICE, PASSWORD) + b'"\r\n')
    assert c.cmd(b'PUTSCRIPT "big" {999999999+}\r\n') == b'BYE "literal too large (at most 262144 octets)"\r\n'
    # the server still serves others
    other = Raw(mailserver)
    assert other.reply().endswith(b'OK "mailyard ManageSieve ready"\r\n')


def test_literals_before_login_end_the_session_at_the_budget(mailserver: RunningServer) -> None:
    """One command of literals, each under the script limit, never a line
    end: before login the whole command has 8 KiB, so the first literal past
    that is refused unread and the connection closed (RFC 5804 literals are
    non-synchronising: its octets cannot be skipped)."""
    c = Raw(mailserver)
    c.reply()
    c.sock.sendall(b'AUTHENTICATE "PLAIN" {200000+}\r\n' + b"A" * 1000)
    assert c.reply() == b'BYE "command too large (at most 8192 octets before login)"\r\n'
    c.sock.settimeout(10)
    try:
        while c.sock.recv(65536):
            pass
    except ConnectionResetError:
        pass  # closed with unread input
    other = Raw(mailserver)
    assert other.reply().endswith(b'OK "mailyard ManageSieve ready"\r\n')


def test_sievelib_client_then_smtp_delivery(mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from sievelib.managesieve import Client

    # sievelib checks the certificate against the default CAs: trust the server's own
    monkeypatch.setenv("SSL_CERT_FILE", str(mailserver.data_dir / "tls" / "cert.pem"))

    client = Client(mailserver.host, mailserver.port("managesieve"))
    assert client.connect(ALICE, PASSWORD, starttls=True, authmech="PLAIN")  # RFC 5804 2.2
    assert "fileinto" in client.get_sieve_capabilities()
    script = 'require ["fileinto", "mailbox"];\nif header :contains "subject" "invoice" ' \
             '{ fileinto :create "Invoices"; }\n'
    assert client.putscript("rules", script)
    assert client.setactive("rules")
    active, others = client.listscripts()
    assert active == "rules" and others == []
    assert client.getscript("rules").rstrip("\r\n") == script.rstrip("\n")
    assert not client.putscript("broken", "if {")
    assert client.havespace("more", 1000)
    client.logout()
    with smtplib.SMTP(mailserver.host, mailserver.port("smtp"), timeout=10) as s:
        s.sendmail("carol@remote.test", [ALICE],
                   b"From: carol@remote.test\r\nTo: alice@example.test\r\nSubject: invoice 7\r\n\r\npay\r\n")
    assert len(mailserver.messages(ALICE, "Invoices")) == 1


def test_sieve_connect(mailserver: RunningServer, tmp_path) -> None:
    program = require_program("sieve-connect", "sieve-connect")
    script = tmp_path / "vacation.sieve"
    script.write_text('require "vacation";\nvacation :days 2 "away";\n')
    base = [program, "--server", mailserver.host, "--port", str(mailserver.port("managesieve")),
            "--user", ALICE, "--passwordfd", "0", "--notlsverify", "--nosslverify", "--authmech", "PLAIN"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)

    r = run("--upload", "--localsieve", str(script), "--remotesieve", "away")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("--activate", "--remotesieve", "away")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("--list")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "away" in r.stdout and "<- active" in r.stdout.replace("\t", " ") or "ACTIVE" in r.stdout.upper()
    r = run("--download", "--remotesieve", "away", "--localsieve", str(tmp_path / "back.sieve"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "back.sieve").read_text() == script.read_text()


@pytest.mark.parametrize("junk", [b"\x00\xff\r\n", b'"unterminated\r\n', b"{12\r\n", b"PUTSCRIPT\r\n"])
def test_garbage_gets_no_and_the_session_goes_on(mailserver: RunningServer, junk: bytes) -> None:
    c = Raw(mailserver)
    c.reply()
    assert c.cmd(junk).startswith(b"NO ")
    assert c.cmd(b"NOOP\r\n") == b'OK "done"\r\n'


def test_store_unavailable_answers_trylater_and_the_session_goes_on(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The store out of reach (its database down, or closed as the server
    stops): a script command and a login are answered NO (TRYLATER) (RFC
    5804 1.3) with a one-line log, and the session serves again once the
    store is back."""
    caplog.set_level(logging.INFO, logger="mailyard")
    store = mailserver.store
    down = {"on": False}

    def unavailable(method):
        async def call(*args, **kwargs):
            if down["on"]:
                raise StoreUnavailable("the store is closed")
            return await method(*args, **kwargs)
        return call

    monkeypatch.setattr(store, "credentials_current", unavailable(store.credentials_current))
    monkeypatch.setattr(store, "get_account", unavailable(store.get_account))
    c = Raw(mailserver)
    c.reply()
    assert c.cmd(b'AUTHENTICATE "PLAIN" "' + plain(ALICE, PASSWORD) + b'"\r\n') == b'OK "authenticated"\r\n'
    down["on"] = True
    refused = b'NO (TRYLATER) "the mail store is unavailable, try again later"\r\n'
    assert c.cmd(b"LISTSCRIPTS\r\n") == refused
    assert c.cmd(b'PUTSCRIPT "main" "keep;"\r\n') == refused
    other = Raw(mailserver)
    other.reply()
    assert other.cmd(b'AUTHENTICATE "PLAIN" "' + plain(ALICE, PASSWORD) + b'"\r\n') == refused
    down["on"] = False
    assert c.cmd(b'PUTSCRIPT "main" "keep;"\r\n') == b'OK "putscript completed"\r\n'
    assert c.cmd(b"LISTSCRIPTS\r\n") == b'"main"\r\nOK "listscripts completed"\r\n'
    assert other.cmd(b'AUTHENTICATE "PLAIN" "' + plain(ALICE, PASSWORD) + b'"\r\n') == b'OK "authenticated"\r\n'
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert sum("refused for now" in r.getMessage() for r in caplog.records if r.name == "mailyard.managesieve") == 3


def test_logins_refused_for_now_count_against_the_connection(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A login answered NO (TRYLATER) because the store is out of reach is
    one of the connection's refused logins: after three the server says BYE,
    so one connection cannot keep trying without end."""
    store = mailserver.store

    async def get_account(*args, **kwargs):
        raise StoreUnavailable("the store is closed")

    monkeypatch.setattr(store, "get_account", get_account)
    c = Raw(mailserver)
    c.reply()
    refused = b'NO (TRYLATER) "the mail store is unavailable, try again later"\r\n'
    login = b'AUTHENTICATE "PLAIN" "' + plain(ALICE, PASSWORD) + b'"\r\n'
    assert c.cmd(login) == refused
    assert c.cmd(login) == refused
    assert c.cmd(login) == refused
    assert c.reply() == b'BYE "too many failed logins"\r\n'
    assert c.sock.recv(1) == b""  # and the connection is closed


def test_scram_with_the_store_gone_at_its_last_step_leaves_no_attempt_pending(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SCRAM exchange whose account lookup at the end finds the store out
    of reach is answered NO (TRYLATER), and its reserved login attempt is
    settled, not left pending: the throttle never forgets a pending
    attempt, and ten of them would leave the account busy for good. The
    password was right, so it is not counted as a failed login either."""
    from tests.integration.test_tls_auth import ScramClient

    store = mailserver.store
    calls = {"n": 0}
    real = store.get_account

    async def get_account(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the lookup of the exchange's last step
            raise StoreUnavailable("the store is closed")
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, "get_account", get_account)
    c = Raw(mailserver)
    c.reply()
    scram = ScramClient(ALICE, USERS[ALICE])
    c.sock.sendall(b'AUTHENTICATE "SCRAM-SHA-256" "' + base64.b64encode(scram.first()) + b'"\r\n')
    server_first = base64.b64decode(c.until(b"\r\n").strip().strip(b'"'))
    c.sock.sendall(b'"' + base64.b64encode(scram.final(server_first)) + b'"\r\n')
    server_final = c.until(b"\r\n")  # v=: the server's proof, answered with an empty response
    assert base64.b64decode(server_final.strip().strip(b'"')).startswith(b"v=")
    assert c.cmd(b'""\r\n') == b'NO (TRYLATER) "the mail store is unavailable, try again later"\r\n'
    throttle = mailserver.server.services.login.throttle
    # settled, and as right credentials (the proof was verified): no
    # failure counted against alice or the address for a store outage
    entry = throttle._accounts.entries.get(ALICE)
    assert entry is None or (entry.pending == 0 and entry.failures == 0), entry
    assert all(e.pending == 0 and e.failures == 0 for e in throttle._ips.entries.values())


def test_managesieve_over_implicit_tls(make_server) -> None:
    """[ports] managesieve_tls: TLS from the first byte (as imaps); the
    greeting offers no STARTTLS and PLAIN works though passwords need TLS
    (loopback treated as remote). Off by default."""
    from tests.integration.test_tls_auth import client_context, no_loopback_plaintext

    assert "managesieve_tls" not in make_server().server.listeners

    def configure(cfg) -> None:
        no_loopback_plaintext(cfg)
        cfg.ports.managesieve_tls = 24191

    server = make_server(configure=configure)
    raw = socket.create_connection((server.host, server.port("managesieve_tls")), timeout=10)
    c = Raw.__new__(Raw)
    c.sock, c.buf = client_context(server).wrap_socket(raw, server_hostname="localhost"), b""
    assert c.reply() == (b'"IMPLEMENTATION" "mailyard 0.1.0"\r\n"SASL" "PLAIN SCRAM-SHA-256"\r\n' + SIEVE_CAP +
                         b'"MAXREDIRECTS" "4"\r\n"VERSION" "1.0"\r\nOK "mailyard ManageSieve ready"\r\n')
    assert c.cmd(b'AUTHENTICATE "PLAIN" "' + plain(ALICE, PASSWORD) + b'"\r\n') == b'OK "authenticated"\r\n'
    assert c.cmd(b"LISTSCRIPTS\r\n") == b'OK "listscripts completed"\r\n'
    c.sock.close()
