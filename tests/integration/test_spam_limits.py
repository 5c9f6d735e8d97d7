"""Outbound abuse: per-account submission limits on SMTP submission and
webmail (delivery/submit.py, where both meet; spam/limits.py), the
``mailyard user limits`` override, and the queue-growth alert."""

from __future__ import annotations

import logging
import os
import re
import smtplib
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from mailyard import metrics
from mailyard.config import Config
from tests.conftest import USERS, RunningServer
from tests.waiting import wait_until

ALICE = "alice@example.test"
BOB = "bob@example.test"


def client_context(server: RunningServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.data_dir / "tls" / "cert.pem"))


def submission(server: RunningServer, user: str = ALICE) -> smtplib.SMTP:
    s = smtplib.SMTP(server.host, server.port("submission"), timeout=10)
    s.starttls(context=client_context(server))
    s.ehlo()
    s.login(user, USERS[user])
    return s


def cli(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "src"), str(root)]))
    return subprocess.run([sys.executable, "-m", "mailyard", "--data", str(server.data_dir), *args],
                          capture_output=True, text=True, timeout=60, env=env)


def per_hour(n: int) -> Callable[[Config], None]:
    def configure(cfg: Config) -> None:
        cfg.spam.messages_per_hour = n

    return configure


def message(i: int) -> bytes:
    return f"From: {ALICE}\r\nTo: {BOB}\r\nSubject: loop {i}\r\n\r\nagain\r\n".encode()


def test_a_looping_submitter_is_stopped_with_451(make_server: Callable[..., RunningServer],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    server = make_server(per_hour(3))
    caplog.set_level(logging.INFO)
    counter = metrics.ABUSE_REFUSALS.labels("submission", "submission-limit")
    before = counter._value.get()
    with submission(server) as s:
        for i in range(3):
            s.sendmail(ALICE, [BOB], message(i))
        with pytest.raises(smtplib.SMTPDataError) as info:
            s.sendmail(ALICE, [BOB], message(3))
    assert info.value.smtp_code == 451
    assert info.value.smtp_error == (b"4.7.1 alice@example.test has sent 3 messages in the last hour,"
                                     b" the most allowed, try again later")
    assert len(server.messages(BOB)) == 3
    lines = [r.getMessage() for r in caplog.records if "submission_limited" in r.getMessage()]
    print("\n".join(lines))
    assert len(lines) == 1 and "user=alice@example.test" in lines[0]
    assert counter._value.get() == before + 1  # mailyard_abuse_refusals
    # another account has its own budget
    with submission(server, BOB) as s:
        s.sendmail(BOB, [ALICE], f"From: {BOB}\r\nSubject: hi\r\n\r\nhi\r\n".encode())


def web_login(server: RunningServer, user: str = ALICE) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=f"http://127.0.0.1:{server.port('http')}", follow_redirects=False, timeout=30)
    r = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', r.text).group(1)
    r = client.post("/login", data={"username": user, "password": USERS[user], "login_token": token})
    assert r.status_code == 303, r.text
    page = client.get("/", follow_redirects=True)
    return client, re.search(r'data-csrf="([^"]+)"', page.text).group(1)


def test_webmail_and_submission_share_the_budget(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(per_hour(2))
    client, token = web_login(server)
    form = {"csrf": token, "to": BOB, "subject": "x", "body": "y", "action": "send"}
    assert client.post("/compose", data=form).status_code == 303
    with submission(server) as s:
        s.sendmail(ALICE, [BOB], message(1))
    r = client.post("/compose", data=form)
    assert r.status_code == 400
    assert "Not sent: alice@example.test has sent 2 messages in the last hour, the most allowed" in r.text
    assert len(server.messages(BOB)) == 2


def test_user_limits_overrides_the_defaults(make_server: Callable[..., RunningServer]) -> None:
    server = make_server()  # the defaults, as the command reads them too
    r = cli(server, "user", "limits", ALICE)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (f"{ALICE}: 300 messages per hour (server default),"
                        " 2000 recipients per day (server default)\n")
    r = cli(server, "user", "limits", ALICE, "--recipients-per-day", "3")
    assert r.stdout == f"{ALICE}: 300 messages per hour (server default), 3 recipients per day\n"
    with submission(server) as s:
        s.sendmail(ALICE, [BOB, ALICE], message(0))  # 2 of 3
        with pytest.raises(smtplib.SMTPDataError) as info:
            s.sendmail(ALICE, [BOB, ALICE], message(1))  # 4 > 3
        assert info.value.smtp_code == 451
        assert info.value.smtp_error == (b"4.7.1 alice@example.test has reached 2 recipients today of the 3"
                                         b" allowed, try again later")
        s.sendmail(ALICE, [BOB], message(2))  # 3 of 3: still allowed
    r = cli(server, "user", "limits", ALICE, "--recipients-per-day", "default", "--messages-per-hour", "0")
    assert r.stdout == f"{ALICE}: no limit on messages per hour, 2000 recipients per day (server default)\n"
    r = cli(server, "user", "limits", "nobody@example.test")
    assert r.returncode == 1 and "no such user" in r.stderr
    r = cli(server, "user", "limits", ALICE, "--messages-per-hour", "-1")
    assert r.returncode == 2


def test_a_growing_queue_is_reported_once(make_server: Callable[..., RunningServer],
                                          caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]  # nothing listens there: the queue keeps its entries

    def configure(cfg: Config) -> None:
        cfg.spam.queue_alert = 2
        cfg.delivery.relay_host = "127.0.0.1"
        cfg.delivery.relay_port = dead_port

    server = make_server(configure)
    caplog.set_level(logging.INFO)
    with submission(server) as s:
        for i in range(5):
            s.sendmail(ALICE, ["someone@remote.test"], message(i))

    def alerts() -> list[str]:
        return [r.getMessage() for r in caplog.records if "queue_alert" in r.getMessage()]

    wait_until(lambda: alerts(), 30, "the queue alert")
    print(alerts())
    assert re.fullmatch(r"queue_alert size=[345] threshold=2", alerts()[0])
    with submission(server) as s:
        s.sendmail(ALICE, ["someone@remote.test"], message(9))
    assert len(alerts()) == 1  # once per crossing, not per message
