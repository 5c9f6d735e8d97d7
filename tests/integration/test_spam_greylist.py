"""Greylisting on the MX port (``[spam] greylisting``) through real sockets:
a first attempt gets 451 4.7.1, a retry after the delay passes, and the
(network, sender domain) then passes at once. Off by default."""

from __future__ import annotations

import logging
import smtplib
import time
from collections.abc import Callable

import pytest

from mailyard.config import Config
from tests.conftest import RunningServer

ALICE = "alice@example.test"
BOB = "bob@example.test"
TIMEOUT = 20.0  # generous: bounds a failure, not a figure


def greylisting(cfg: Config) -> None:
    cfg.spam.trusted_networks = []
    cfg.spam.greylisting = True
    cfg.spam.greylist_delay = 1.0


def send(server: RunningServer, sender: str, rcpt: str, source: str = "127.0.0.2") -> tuple[int, bytes]:
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=10, source_address=(source, 0)) as s:
        s.ehlo("client.example.org")
        s.mail(sender)
        code, text = s.rcpt(rcpt)
        assert code == 250, text
        return s.data(f"From: {sender}\r\nTo: {rcpt}\r\nSubject: grey\r\n\r\nhello\r\n".encode())


def test_first_attempt_deferred_retry_passes(make_server: Callable[..., RunningServer],
                                             caplog: pytest.LogCaptureFixture) -> None:
    server = make_server(greylisting)
    caplog.set_level(logging.INFO)
    assert send(server, "carol@remote.test", ALICE) == (451, b"4.7.1 greylisted, please try again later")
    code, text = send(server, "carol@remote.test", ALICE)
    assert code == 451 and text.startswith(b"4.7.1 greylisted, please try again in "), text
    assert server.messages(ALICE) == []
    # retry like a mail server does until it passes (after the 1 s delay)
    deadline = time.monotonic() + TIMEOUT
    while (reply := send(server, "carol@remote.test", ALICE, "127.0.0.3"))[0] != 250:
        assert reply[0] == 451 and time.monotonic() < deadline, reply
        time.sleep(0.2)
    assert len(server.messages(ALICE)) == 1
    # the network and sender domain passed: another sender and recipient go through at once
    assert send(server, "dave@remote.test", BOB, "127.0.0.4")[0] == 250
    # another network starts over
    assert send(server, "carol@remote.test", BOB, "127.0.1.2")[0] == 451
    lines = [r.getMessage() for r in caplog.records if "reason=greylisted" in r.getMessage()]
    print("\n".join(lines))
    assert lines and "ip=127.0.0.2" in lines[0]
    # the line is the only record of a deferred message: it names its sender and recipients
    assert "from=carol@remote.test" in lines[0] and f"to={ALICE}" in lines[0] and "msgid=" in lines[0], lines[0]


def test_off_by_default_and_loopback_exempt(make_server: Callable[..., RunningServer]) -> None:
    server = make_server()
    assert send(server, "carol@remote.test", ALICE)[0] == 250

    def on(cfg: Config) -> None:
        cfg.spam.greylisting = True

    server = make_server(on)
    assert send(server, "carol@remote.test", ALICE)[0] == 250  # loopback is in trusted_networks by default
