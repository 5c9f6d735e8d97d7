"""One submission is accepted whole or not at all: a message for a local
user, a remote recipient and an alias that forwards to another domain is
one commit (the local copy, the sender's queue entry and the alias's own
entry, with its own reverse-path). A failure anywhere before it leaves
nothing behind, so the client's retry after the temporary error delivers
each copy once (RFC 5321 4.1.1.4: the server takes responsibility only
with its 250)."""

from __future__ import annotations

import logging
import smtplib
import ssl
from typing import Any

import pytest

from mailyard.store.api import StoreUnavailable
from mailyard.store.sqlite import SQLiteStore
from tests.conftest import USERS, RunningServer

ALICE = "alice@example.test"
BOB = "bob@example.test"
MESSAGE = (b"From: alice@example.test\r\nTo: bob@example.test, carol@remote.test, team@example.test\r\n"
           b"Subject: to three\r\nMessage-ID: <whole@example.test>\r\n\r\nhello\r\n")


@pytest.fixture
def server(make_server) -> RunningServer:
    async def seed(store: SQLiteStore) -> None:
        await store.add_alias("team@example.test", ["far@elsewhere.test"])

    return make_server(seed=seed)


def send(server: RunningServer) -> None:
    context = ssl.create_default_context(cafile=str(server.data_dir / "tls" / "cert.pem"))
    with smtplib.SMTP_SSL(server.host, server.port("smtps"), context=context, timeout=10) as s:
        s.login(ALICE, USERS[ALICE])
        s.sendmail(ALICE, [BOB, "carol@remote.test", "team@example.test"], MESSAGE)


def queued(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The queue's "queued" lines (the runner may deliver or bounce the
    entries at once: the store's queue is no record of what was queued)."""
    return [r.getMessage() for r in caplog.records
            if r.name == "mailyard.queue" and r.getMessage().startswith("queued ")]


def test_a_failure_before_the_forwarded_entry_leaves_nothing_and_the_retry_delivers_once(
        server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mailyard")
    queue = server.server.queue
    assert queue is not None
    forwarding_sender = queue.forwarding_sender
    calls = 0

    async def failing_once(reverse_path: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreUnavailable("the mail store is unavailable, try again later")
        return await forwarding_sender(reverse_path)

    queue.forwarding_sender = failing_once  # type: ignore[method-assign]
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(server)
    assert refused.value.smtp_code == 451, refused.value
    assert calls == 1
    # nothing was taken: no copy for bob, nothing queued
    assert server.messages(BOB) == []
    assert queued(caplog) == []

    send(server)  # the client's retry
    (copy,) = server.messages(BOB)
    assert b"Message-ID: <whole@example.test>" in copy
    lines = queued(caplog)
    assert len(lines) == 2, lines
    (named,) = [line for line in lines if "carol@remote.test" in line]
    (forwarded,) = [line for line in lines if "far@elsewhere.test" in line]
    assert named != forwarded
    assert "from=alice@example.test" in named and "from=alice@example.test" in forwarded
