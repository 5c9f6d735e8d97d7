"""TLS and AUTH with third-party tools: swaks (--tls, --tlsc, --auth) and
``openssl s_client`` (-starttls smtp|imap|pop3, implicit TLS, TLS 1.1 refused).

The server's self-signed certificate is the trust anchor (-CAfile), and
s_client is told to fail on a verification error, so these runs also prove the
certificate the server presents is the configured one and valid for its name.
"""

from __future__ import annotations

import base64
import subprocess

import pytest

from tests.conftest import USERS, RunningServer, require_program

ALICE = "alice@example.test"
BOB = "bob@example.test"


def swaks(server: RunningServer, port: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = require_program("swaks", "swaks")
    return subprocess.run(
        [exe, "--server", f"{server.host}:{server.port(port)}", "--helo", "swaks.example.test", *args],
        capture_output=True, text=True, timeout=60,
    )


def s_client(server: RunningServer, port: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = require_program("openssl", "openssl")
    cafile = str(server.data_dir / "tls" / "cert.pem")
    return subprocess.run(
        [exe, "s_client", "-connect", f"{server.host}:{server.port(port)}", "-servername", "mx.example.test",
         "-CAfile", cafile, "-verify_return_error", "-verify_hostname", "mx.example.test",
         "-quiet", "-crlf", *args],
        input=script, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_starttls_auth_submission(mailserver: RunningServer, mechanism: str) -> None:
    result = swaks(
        mailserver, "submission", "--tls", "--auth", mechanism, "--auth-user", ALICE,
        "--auth-password", USERS[ALICE], "--from", ALICE, "--to", BOB,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " -> STARTTLS" in result.stdout  # went through STARTTLS ...
    assert "<~  235 2.7.0" in result.stdout  # ... and authenticated inside TLS
    (stored,) = mailserver.messages(BOB)
    assert b"with ESMTPSA id" in stored
    assert b"\r\nMessage-Id: " in stored or b"\r\nMessage-ID: " in stored  # swaks sends its own


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_implicit_tls_auth(mailserver: RunningServer, mechanism: str) -> None:
    result = swaks(
        mailserver, "smtps", "--tlsc", "--auth", mechanism, "--auth-user", BOB,
        "--auth-password", USERS[BOB], "--from", BOB, "--to", ALICE,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0" in result.stdout
    assert len(mailserver.messages(ALICE)) == 1


def test_swaks_wrong_password_and_no_auth(mailserver: RunningServer) -> None:
    result = swaks(
        mailserver, "submission", "--tls", "--auth", "PLAIN", "--auth-user", ALICE,
        "--auth-password", "wrong", "--from", ALICE, "--to", BOB,
    )
    assert result.returncode != 0
    assert "535 5.7.8" in result.stdout
    result = swaks(mailserver, "submission", "--tls", "--from", ALICE, "--to", BOB)
    assert result.returncode != 0
    assert "530 5.7.0" in result.stdout
    assert mailserver.messages(BOB) == []


def test_swaks_forged_sender_refused(mailserver: RunningServer) -> None:
    result = swaks(
        mailserver, "submission", "--tls", "--auth", "LOGIN", "--auth-user", ALICE,
        "--auth-password", USERS[ALICE], "--from", BOB, "--to", BOB,
    )
    assert result.returncode != 0
    assert "553 5.7.1" in result.stdout


def test_swaks_mx_port_starttls_and_no_relay(mailserver: RunningServer) -> None:
    result = swaks(mailserver, "smtp", "--tls", "--from", "carol@remote.test", "--to", ALICE)
    assert result.returncode == 0, result.stdout + result.stderr
    (stored,) = mailserver.messages(ALICE)
    assert b"with ESMTPS id" in stored
    result = swaks(mailserver, "smtp", "--tls", "--from", "carol@remote.test", "--to", "dave@remote.test")
    assert result.returncode != 0
    assert "550 5.7.1" in result.stdout


def test_openssl_starttls_smtp(mailserver: RunningServer) -> None:
    token = base64.b64encode(f"\0{ALICE}\0{USERS[ALICE]}".encode()).decode()
    script = f"EHLO openssl.example.test\nAUTH PLAIN {token}\nQUIT\n"
    result = s_client(mailserver, "submission", script, "-starttls", "smtp")
    assert result.returncode == 0, result.stderr
    assert "250-AUTH SCRAM-SHA-256 PLAIN LOGIN" in result.stdout
    assert "STARTTLS" not in result.stdout.split("250-AUTH")[0]  # not offered again after TLS
    assert "235 2.7.0 Authentication successful" in result.stdout


def test_openssl_starttls_imap(mailserver: RunningServer) -> None:
    script = f"a LOGIN {ALICE} {USERS[ALICE]}\nb SELECT INBOX\nc LOGOUT\n"
    result = s_client(mailserver, "imap", script, "-starttls", "imap")
    assert result.returncode == 0, result.stderr
    assert "a OK" in result.stdout and "b OK" in result.stdout


def test_openssl_starttls_pop3(mailserver: RunningServer) -> None:
    script = f"USER {BOB}\nPASS {USERS[BOB]}\nSTAT\nQUIT\n"
    result = s_client(mailserver, "pop3", script, "-starttls", "pop3")
    assert result.returncode == 0, result.stderr
    assert "+OK 0 0" in result.stdout


@pytest.mark.parametrize(
    ("port", "script", "expect"),
    [
        ("smtps", "EHLO openssl.example.test\nQUIT\n", "250-AUTH SCRAM-SHA-256 PLAIN LOGIN"),
        ("imaps", f"a LOGIN {ALICE} {USERS[ALICE]}\nb LOGOUT\n", "a OK"),
        ("pop3s", f"USER {ALICE}\nPASS {USERS[ALICE]}\nQUIT\n", "+OK"),
    ],
)
def test_openssl_implicit_tls(mailserver: RunningServer, port: str, script: str, expect: str) -> None:
    result = s_client(mailserver, port, script)
    assert result.returncode == 0, result.stderr
    assert expect in result.stdout


@pytest.mark.parametrize(("port", "bye"), [("smtps", "QUIT\n"), ("imaps", "a LOGOUT\n"), ("pop3s", "QUIT\n")])
def test_openssl_tls_1_1_refused(mailserver: RunningServer, port: str, bye: str) -> None:
    result = s_client(mailserver, port, bye, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert result.returncode != 0
    assert "alert protocol version" in result.stderr or "unexpected eof" in result.stderr.lower(), result.stderr
    ok = s_client(mailserver, port, bye, "-tls1_2")
    assert ok.returncode == 0, ok.stderr
