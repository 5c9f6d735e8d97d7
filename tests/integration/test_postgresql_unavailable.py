"""PostgreSQL unreachable: every protocol answers a temporary failure in its
own words (SMTP 451 4.3.0, IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP],
webmail 503), and serves again, in the same sessions and in new ones, once
the database is back, without a restart of mailyard. A webmail message held
for undo send whose time comes meanwhile waits, and goes once, after.

The test stops a cluster of its own (the session's cluster serves the other
tests meanwhile)."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from mailyard.config import Config
from tests.conftest import HOST, USERS, RunningServer
from tests.pgcluster import PgCluster, pg_bindir
from tests.waiting import wait_until

httpx = pytest.importorskip("httpx")

ALICE = "alice@example.test"
BOB = "bob@example.test"
MESSAGE = (b"From: someone@remote.test\r\nTo: alice@example.test\r\nSubject: while down\r\n"
           b"Message-ID: <down-1@remote.test>\r\n\r\nhello\r\n")


@pytest.fixture
def own_cluster(pg_cluster: PgCluster) -> Iterator[PgCluster]:
    """A cluster this test may stop (``pg_cluster``: skipped without PostgreSQL)."""
    bindir = pg_bindir()
    assert bindir is not None
    cluster = PgCluster(bindir)
    try:
        yield cluster
    finally:
        cluster.stop()


class Lines:
    """A line-oriented client on a raw socket (byte-exact replies)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed; pending {self.buf!r}"
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def until(self, prefix: bytes) -> list[bytes]:
        """Lines up to and including the first that starts with ``prefix``."""
        out = [self.line()]
        while not out[-1].startswith(prefix):
            out.append(self.line())
        return out

    def smtp(self, command: bytes) -> bytes:
        """The last line of the reply to ``command``."""
        self.send(command + b"\r\n")
        line = self.line()
        while line[3:4] == b"-":
            line = self.line()
        return line

    def close(self) -> None:
        self.sock.close()


def _web_login(server: RunningServer) -> httpx.Client:
    client = httpx.Client(base_url=f"http://127.0.0.1:{server.port('http')}", follow_redirects=False, timeout=30)
    token = re.search(r'name="login_token" value="([^"]+)"', client.get("/login").text).group(1)
    r = client.post("/login", data={"username": ALICE, "password": USERS[ALICE], "login_token": token})
    assert r.status_code == 303, r.text
    return client


def _pop3_login(server: RunningServer) -> tuple[Lines, bytes]:
    pop = Lines(server.port("pop3"))
    assert pop.line().startswith(b"+OK")
    pop.send(f"USER {ALICE}\r\n".encode())
    assert pop.line().startswith(b"+OK")
    pop.send(f"PASS {USERS[ALICE]}\r\n".encode())
    return pop, pop.line()


def test_every_protocol_answers_a_temporary_failure_and_recovers(
        make_server: Callable[..., RunningServer], own_cluster: PgCluster) -> None:
    def configure(cfg: Config) -> None:
        cfg.store.backend = "postgresql"
        cfg.store.dsn = own_cluster.new_dsn()
        cfg.store.pool_timeout = 2.0

    server = make_server(configure=configure)
    # sessions opened while the database is up
    imap = Lines(server.port("imap"))
    assert imap.line().startswith(b"* OK")
    imap.send(f"a1 LOGIN {ALICE} {USERS[ALICE]}\r\n".encode())
    assert imap.until(b"a1 ")[-1].startswith(b"a1 OK")
    imap.send(b"a2 SELECT INBOX\r\n")
    assert imap.until(b"a2 ")[-1].startswith(b"a2 OK")
    smtp = Lines(server.port("smtp"))
    assert smtp.line().startswith(b"220")
    assert smtp.smtp(b"EHLO client.test").startswith(b"250")
    assert smtp.smtp(b"MAIL FROM:<someone@remote.test>").startswith(b"250")
    assert smtp.smtp(f"RCPT TO:<{ALICE}>".encode()).startswith(b"250")
    web = _web_login(server)
    assert web.get("/").status_code in (200, 303)

    own_cluster.pause()
    try:
        # SMTP: the message is refused for now, in the session and in a new one
        assert smtp.smtp(b"DATA").startswith(b"354")
        smtp.send(MESSAGE + b".\r\n")
        reply = smtp.line()
        print("SMTP DATA while down:", reply)
        assert reply.startswith(b"451 4.3.0 ")
        other = Lines(server.port("smtp"))
        assert other.line().startswith(b"220")
        assert other.smtp(b"EHLO client.test").startswith(b"250")
        assert other.smtp(b"MAIL FROM:<someone@remote.test>").startswith(b"250")
        reply = other.smtp(f"RCPT TO:<{ALICE}>".encode())
        print("SMTP RCPT while down:", reply)
        assert reply.startswith(b"451 4.3.0 ")
        other.close()
        # IMAP: the selected session, and a new login
        imap.send(b"a3 STATUS INBOX (MESSAGES)\r\n")
        reply = imap.until(b"a3 ")[-1]
        print("IMAP STATUS while down:", reply)
        assert reply.startswith(b"a3 NO [UNAVAILABLE] ")
        fresh = Lines(server.port("imap"))
        assert fresh.line().startswith(b"* OK")
        fresh.send(f"b1 LOGIN {ALICE} {USERS[ALICE]}\r\n".encode())
        reply = fresh.until(b"b1 ")[-1]
        print("IMAP LOGIN while down:", reply)
        assert reply.startswith(b"b1 NO [UNAVAILABLE] ")
        fresh.close()
        # POP3
        pop, reply = _pop3_login(server)
        print("POP3 PASS while down:", reply)
        assert reply.startswith(b"-ERR [SYS/TEMP] ")
        pop.close()
        # webmail
        r = web.get("/")
        print("webmail while down:", r.status_code)
        assert r.status_code == 503
        assert r.headers.get("retry-after")
    finally:
        own_cluster.resume()

    # back: the same sessions and new ones work, mailyard was not restarted
    # (the first request may come before the pool has its connections again:
    # polled, bounded)
    back = time.monotonic()
    for attempt in range(100):
        imap.send(f"r{attempt} STATUS INBOX (MESSAGES)\r\n".encode())
        if imap.until(f"r{attempt} ".encode())[-1].startswith(f"r{attempt} OK".encode()):
            break
        assert time.monotonic() - back < 30, "IMAP did not recover"
        time.sleep(0.1)
    print(f"IMAP served again {time.monotonic() - back:.2f} s after the database was back")
    assert smtp.smtp(b"RSET").startswith(b"250")
    assert smtp.smtp(b"MAIL FROM:<someone@remote.test>").startswith(b"250")
    assert smtp.smtp(f"RCPT TO:<{ALICE}>".encode()).startswith(b"250")
    assert smtp.smtp(b"DATA").startswith(b"354")
    smtp.send(MESSAGE + b".\r\n")
    assert smtp.line().startswith(b"250")
    imap.send(b"a5 NOOP\r\n")
    assert b"* 1 EXISTS" in imap.until(b"a5 ")
    pop, reply = _pop3_login(server)
    assert reply.startswith(b"+OK"), reply
    pop.send(b"QUIT\r\n")
    pop.close()
    assert web.get("/").status_code in (200, 303)
    fresh = Lines(server.port("imap"))
    assert fresh.line().startswith(b"* OK")
    fresh.send(f"b2 LOGIN {ALICE} {USERS[ALICE]}\r\n".encode())
    assert fresh.until(b"b2 ")[-1].startswith(b"b2 OK")
    fresh.close()
    imap.close()
    smtp.close()
    web.close()


def test_a_held_webmail_send_waits_out_the_outage_and_goes_once(
        make_server: Callable[..., RunningServer], own_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Undo send (web/undo.py): the database goes down just as a held
    message's time comes, while the draft is read. It is not sent and not
    given up: a warning line, no traceback, and it goes, once, when the
    database is back."""
    import mailyard.web.undo as undo

    caplog.set_level(logging.INFO, logger="mailyard")
    monkeypatch.setattr(undo, "RETRY_AFTER", 0.5, raising=False)

    def configure(cfg: Config) -> None:
        cfg.store.backend = "postgresql"
        cfg.store.dsn = own_cluster.new_dsn()
        cfg.store.pool_timeout = 2.0

    server = make_server(configure=configure)
    store = server.store

    async def delay() -> None:
        account = await store.get_account(ALICE)
        await store.set_settings(account.id, {"send_delay": 1})

    server.call(delay())
    # the outage begins when the send's timer first reads the store
    get_account_by_id = store.get_account_by_id
    paused = threading.Event()

    async def outage_first(*args: object, **kwargs: object) -> object:
        task = asyncio.current_task()
        if not paused.is_set() and task is not None and task.get_coro().__name__ == "later":
            paused.set()
            await asyncio.to_thread(own_cluster.pause)
        return await get_account_by_id(*args, **kwargs)

    monkeypatch.setattr(store, "get_account_by_id", outage_first)
    web = _web_login(server)
    token = re.search(r'name="csrf" value="([^"]+)"', web.get("/compose").text).group(1)
    r = web.post("/compose", data={"csrf": token, "to": BOB, "subject": "through the outage", "body": "hello",
                                   "action": "send"})
    assert r.status_code == 303 and r.headers["location"].startswith("/compose/pending/"), r.text
    outbox = server.data_dir / "web-outbox"
    try:
        waiting = "web: a held message is not sent yet (the mail store is unavailable, try again later)"
        wait_until(lambda: [r for r in caplog.records if r.getMessage().startswith(waiting)], timeout=30,
                   what="the held send's warning")
        assert not list(outbox.glob("*.failed"))
    finally:
        own_cluster.resume()
    got = wait_until(lambda: server.messages(BOB), timeout=30, what="the message once the database is back")
    assert len(got) == 1 and b"through the outage" in got[0]
    wait_until(lambda: not list(outbox.iterdir()), what="the record of the send to go")
    assert len(server.messages(BOB)) == 1 and server.messages(ALICE, "Drafts") == []
    accepted = [r for r in caplog.records if r.name == "mailyard.submit" and r.getMessage().startswith("accepted ")]
    assert len(accepted) == 1
    assert not [r.getMessage() for r in caplog.records if r.exc_info and r.name == "mailyard.web"]
    web.close()
