"""swaks (the Swiss Army Knife for SMTP) against the real server."""

from __future__ import annotations

import subprocess

from tests.conftest import RunningServer, require_program


def swaks(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    exe = require_program("swaks", "swaks")
    return subprocess.run(
        [exe, "--server", f"{server.host}:{server.port('smtp')}", "--helo", "swaks.remote.test", *args],
        capture_output=True, text=True, timeout=60,
    )


def test_swaks_delivers_and_bytes_arrive(mailserver: RunningServer) -> None:
    body = "Line one\nLine two\n.\n..dots\nend"
    result = swaks(
        mailserver, "--from", "sender@remote.test", "--to", "alice@example.test,bob@example.test",
        "--header", "Subject: from swaks", "--body", body,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0" in result.stdout
    for user in ("alice@example.test", "bob@example.test"):
        (stored,) = mailserver.messages(user)
        assert b"Subject: from swaks\r\n" in stored
        assert b"\r\nLine one\r\nLine two\r\n.\r\n..dots\r\nend\r\n" in stored
        assert b"Received: from swaks.remote.test" in stored


def test_swaks_pipelining_and_rejected_recipient(mailserver: RunningServer) -> None:
    result = swaks(
        mailserver, "--pipeline", "--from", "sender@remote.test",
        "--to", "alice@example.test,nobody@example.test",
    )
    assert "550 5.1.1" in result.stdout
    assert "250 2.0.0" in result.stdout  # the message went to the accepted recipient
    assert len(mailserver.messages("alice@example.test")) == 1


def test_swaks_relay_attempt_refused(mailserver: RunningServer) -> None:
    result = swaks(mailserver, "--from", "spammer@remote.test", "--to", "victim@elsewhere.test")
    assert result.returncode != 0
    assert "550 5.7.1" in result.stdout
