"""Sessions on the PostgreSQL store against a slow or shared database.

Every protocol checks a session's credentials before each command
(``Store.credentials_current``). After a revocation anywhere (another node
changed a password) every node forgets what it knew and asks the database
again: that read must not hold the event loop, which serves every other
session of the process, and the revoked session must still be refused.

IMAP SELECT tells the store which expunges the session has seen
(``Store.hold_expunged``, RFC 2180 4.1.1); the other nodes read that in
mailbox_holds. A SELECT writes nothing there while this node's row already
covers it and nothing is held, and a message expunged through another node
still stays readable for a session that has not been told, also after the
database ended the connection that marks the node alive."""

from __future__ import annotations

import asyncio
import base64
import gc
import re
import select
import smtplib
import socket
import ssl
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

import mailyard.store.postgresql.validity as pg_validity
from mailyard.config import Config
from mailyard.net import revocations
from mailyard.net.pop3 import service_for
from mailyard.net.revocations import RevocationWatch
from mailyard.store.postgresql import PostgreSQLStore
from mailyard.web.security import SESSION_COOKIE
from tests.conftest import HOST, USERS, RunningServer, make_test_config
from tests.pgcluster import PgCluster
from tests.waiting import LoopTicks, wait_until

httpx = pytest.importorskip("httpx")

ALICE, BOB = "alice@example.test", "bob@example.test"
BOUND_WAIT = 30.0  # seconds: bounds a failure, not a figure
MESSAGE = (b"From: someone@remote.test\r\nTo: alice@example.test\r\nSubject: held\r\n"
           b"Message-ID: <held-1@remote.test>\r\n\r\nstill readable\r\n")


class Lines:
    """A line-oriented client on a raw socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; pending {self.buf!r}")
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

    def reply(self) -> bytes:
        """The last line of an SMTP reply."""
        line = self.line()
        while line[3:4] == b"-":
            line = self.line()
        return line

    def closed(self) -> bool:
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()

    def reset(self) -> None:
        """Leave with a TCP reset, as a client that crashed."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class TLSLines(Lines):
    """``Lines`` over implicit TLS (RFC 8314), the server's certificate unchecked."""

    def __init__(self, port: int) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.sock = context.wrap_socket(socket.create_connection((HOST, port), timeout=30))
        self.buf = b""


def _plain(user: str) -> str:
    return base64.b64encode(f"\0{user}\0{USERS[user]}".encode()).decode()


class Sessions:
    """One user's logged-in sessions in every protocol of a server."""

    def __init__(self, server: RunningServer, user: str) -> None:
        self.imap = Lines(server.port("imap"))
        assert self.imap.line().startswith(b"* OK")
        self.imap.send(f'i1 LOGIN {user} "{USERS[user]}"\r\ni2 SELECT INBOX\r\n'.encode())
        assert self.imap.until(b"i2 ")[-1].startswith(b"i2 OK")
        self.pop = Lines(server.port("pop3"))
        assert self.pop.line().startswith(b"+OK")
        self.pop.send(f"USER {user}\r\nPASS {USERS[user]}\r\n".encode())
        assert self.pop.line().startswith(b"+OK") and self.pop.line().startswith(b"+OK")
        self.smtp = Lines(server.port("submission"))
        assert self.smtp.reply().startswith(b"220")
        self.smtp.send(b"EHLO client.test\r\n")
        assert self.smtp.reply().startswith(b"250")
        self.smtp.send(f"AUTH PLAIN {_plain(user)}\r\n".encode())
        assert self.smtp.reply().startswith(b"235")
        self.sieve = Lines(server.port("managesieve"))
        assert self.sieve.until(b"OK")[-1].startswith(b"OK")
        self.sieve.send(f'AUTHENTICATE "PLAIN" "{_plain(user)}"\r\n'.encode())
        assert self.sieve.line().startswith(b"OK")
        self.cookie = _web_login(server, user)
        self.web_port = server.port("http")
        self.web: Lines | None = None

    def send_commands(self) -> None:
        """A command on every session at once (the answers are read later)."""
        self.imap.send(b"i3 NOOP\r\n")
        self.pop.send(b"STAT\r\n")
        self.smtp.send(b"MAIL FROM:<bob@example.test>\r\n")
        self.sieve.send(b"LISTSCRIPTS\r\n")
        self.web = Lines(self.web_port)
        self.web.send(f"GET /folders HTTP/1.1\r\nHost: {HOST}\r\nCookie: {SESSION_COOKIE}={self.cookie}\r\n"
                      "Connection: close\r\n\r\n".encode())

    def answers(self) -> dict[str, bytes]:
        assert self.web is not None
        return {"imap": self.imap.until(b"i3 ")[-1], "pop3": self.pop.line(), "smtp": self.smtp.reply(),
                "managesieve": self.sieve.until(b"OK")[-1], "web": self.web.line()}

    def close(self) -> None:
        for c in (self.imap, self.pop, self.smtp, self.sieve, self.web):
            if c is not None:
                c.close()


def _web_login(server: RunningServer, user: str) -> str:
    """Log in to the webmail; the session cookie."""
    with httpx.Client(base_url=f"http://{HOST}:{server.port('http')}", follow_redirects=False, timeout=30) as web:
        token = re.search(r'name="login_token" value="([^"]+)"', web.get("/login").text).group(1)
        r = web.post("/login", data={"username": user, "password": USERS[user], "login_token": token})
        assert r.status_code == 303, r.text
        return web.cookies[SESSION_COOKIE]


def _change_password_elsewhere(dsn: str, user: str, server: RunningServer) -> None:
    """Another node changes ``user``'s password; ``server`` hears of it and
    forgets every account's credentials."""
    async def change() -> None:
        other = PostgreSQLStore(dsn)
        try:
            await other.set_password(user, "$argon2id$not-the-old-one")
        finally:
            await other.close()

    asyncio.run(change())
    wait_until(lambda: not server.store._epochs, what="the revocation heard by the server's store")


def _on(dsn: str) -> Callable[[Config], None]:
    def configure(cfg: Config) -> None:
        cfg.store.backend = "postgresql"
        cfg.store.dsn = dsn

    return configure


def _waiting_for_lock(admin: psycopg.Connection, table: str) -> int:
    """Sessions of the database waiting for a lock, in a statement on ``table``.
    ``admin`` may be inside the transaction that holds the lock: PostgreSQL
    keeps the first look at pg_stat_activity for the rest of a transaction,
    so each count takes a new one."""
    admin.execute("SELECT pg_stat_clear_snapshot()")
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND wait_event_type = 'Lock' AND query ILIKE %s", (f"%FROM {table}%",)).fetchone()
    return int(row[0]) if row else 0


def test_credential_checks_wait_for_a_slow_database_off_the_event_loop(
        make_server: Callable[..., RunningServer], pg_cluster: PgCluster) -> None:
    """Another node changes alice's password: this node forgets every
    account's credentials. While the database keeps its accounts table
    locked, bob's next command in every protocol waits for it, and the
    server's event loop goes on turning meanwhile; once it answers, bob's
    commands succeed and every session of alice is refused."""
    dsn = pg_cluster.new_dsn()
    server = make_server(configure=_on(dsn))
    bob, alice = Sessions(server, BOB), Sessions(server, ALICE)
    _change_password_elsewhere(dsn, ALICE, server)
    ticks = LoopTicks()
    with psycopg.connect(dsn) as admin:
        admin.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")  # the database is slow to answer
        server.call(ticks.__aenter__())
        try:
            bob.send_commands()
            wait_until(lambda: _waiting_for_lock(admin, "accounts") > 0,
                       what="a credentials check waiting for the database")
            before = ticks.count
            time.sleep(0.3)  # the database stays slow a while
            during = ticks.count - before
        finally:
            admin.rollback()
        answers = bob.answers()
        server.call(ticks.__aexit__(None, None, None))
    print(f"server event loop turns while the database was slow for 0.3 s: {during}")
    assert during >= 10, f"the event loop stood still while a credentials check waited ({during} turns in 0.3 s)"
    assert answers["imap"].startswith(b"i3 OK"), answers
    assert answers["pop3"].startswith(b"+OK"), answers
    assert answers["smtp"].startswith(b"250"), answers
    assert answers["managesieve"].startswith(b"OK"), answers
    assert answers["web"].startswith(b"HTTP/1.1 200"), answers

    # alice's sessions, each at its next command, on this node
    alice.send_commands()
    answers = {}
    answers["imap"] = b"\r\n".join(alice.imap.until(b"* BYE"))
    answers["pop3"] = alice.pop.line()
    answers["smtp"] = alice.smtp.reply()
    answers["managesieve"] = alice.sieve.line()
    assert alice.web is not None
    answers["web"] = alice.web.line()
    assert b"password changed" in answers["imap"], answers
    assert answers["pop3"].startswith(b"-ERR [AUTH]"), answers
    assert answers["smtp"].startswith(b"421 4.7.0"), answers
    assert answers["managesieve"].startswith(b"NO"), answers
    assert re.match(rb"HTTP/1.1 (303|401)", answers["web"]), answers
    for c in (alice.imap, alice.pop, alice.smtp):
        assert c.closed()
    bob.close()
    alice.close()


def test_waiting_for_lock_sees_sessions_that_wait_after_its_first_look(pg_cluster: PgCluster) -> None:
    """The tests above poll, from the transaction that holds a lock, for a
    statement that waits for it: a statement that begins waiting after the
    first poll is seen."""
    dsn = pg_cluster.new_dsn()
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE slow_table (x int)")
    with psycopg.connect(dsn) as admin, psycopg.connect(dsn, autocommit=True) as other:
        admin.execute("LOCK TABLE slow_table IN ACCESS EXCLUSIVE MODE")
        assert _waiting_for_lock(admin, "slow_table") == 0
        reader = threading.Thread(target=lambda: other.execute("SELECT count(*) FROM slow_table"))
        reader.start()
        try:
            wait_until(lambda: _waiting_for_lock(admin, "slow_table") > 0, what="the reader seen waiting")
        finally:
            admin.rollback()
            reader.join(30)


def test_idle_sessions_end_when_another_node_changes_the_password(
        make_server: Callable[..., RunningServer], pg_cluster: PgCluster) -> None:
    """Another node, which shares no file with this one, changes alice's
    password: this node hears it as a note from the database only. Alice's
    session in IDLE gets BYE without a command and without new mail; bob's,
    woken too, goes on and reports his mail."""
    dsn = pg_cluster.new_dsn()
    server = make_server(configure=_on(dsn))
    idlers = {}
    for user in (ALICE, BOB):
        c = Lines(server.port("imap"))
        assert c.line().startswith(b"* OK")
        c.send(f'i1 LOGIN {user} "{USERS[user]}"\r\ni2 SELECT INBOX\r\ni3 IDLE\r\n'.encode())
        assert c.until(b"+ ")[-1].startswith(b"+ idling")
        idlers[user] = c
    _change_password_elsewhere(dsn, ALICE, server)
    alice, bob = idlers[ALICE], idlers[BOB]
    alice.sock.settimeout(30)  # the BYE comes within seconds: this bounds a failure only
    assert alice.line() == b"* BYE Account removed or password changed; log in again"
    assert alice.closed()
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=30) as smtp:
        smtp.sendmail("someone@remote.test", [BOB], b"Subject: for bob\r\n\r\nbob's news\r\n")
    assert bob.line() == b"* 1 EXISTS"
    bob.send(b"DONE\r\n")
    assert bob.until(b"i3 ")[-1] == b"i3 OK IDLE terminated"
    alice.close()
    bob.close()


def _idle(server: RunningServer, user: str) -> Lines:
    c = Lines(server.port("imap"))
    assert c.line().startswith(b"* OK")
    c.send(f'i1 LOGIN {user} "{USERS[user]}"\r\ni2 SELECT INBOX\r\ni3 IDLE\r\n'.encode())
    assert c.until(b"+ ")[-1].startswith(b"+ idling")
    return c


def _watch_of(server: RunningServer) -> weakref.ref[RevocationWatch]:
    """The server's watch, held weakly: the test must not keep it alive."""
    async def the_watch() -> weakref.ref[RevocationWatch]:
        return weakref.ref(RevocationWatch.of(asyncio.get_running_loop(), server.store))

    return server.call(the_watch())


def _waiting(watch: weakref.ref[RevocationWatch]) -> int | None:
    w = watch()
    return None if w is None else w.waiting


class SlowChecks:
    """The server's credentials checks held until `release` (the database
    slow to answer); with ``hold`` set, only while fewer are held."""

    def __init__(self, server: RunningServer, hold: int | None = None) -> None:
        self.server, self.hold = server, hold
        self.checking = self.peak = self.calls = 0
        self.real = real = server.store.credentials_current

        async def slow_check(account_id: int, epoch: int) -> bool:
            self.calls += 1
            if self.hold is not None and self.checking >= self.hold:
                return await real(account_id, epoch)
            self.checking += 1
            self.peak = max(self.peak, self.checking)
            try:
                await self.answer.wait()
                return await real(account_id, epoch)
            finally:
                self.checking -= 1

        async def install() -> None:
            self.answer = asyncio.Event()
            server.store.credentials_current = slow_check  # type: ignore[method-assign]

        self.answer: asyncio.Event
        server.call(install())

    def release(self) -> None:
        async def release() -> None:
            self.answer.set()

        self.server.call(release())

    def turns(self) -> None:
        """Let the server's loop turn: a session held back by nothing would check."""
        async def turns() -> None:
            for _ in range(20):
                await asyncio.sleep(0)

        self.server.call(turns())


def test_idle_sessions_woken_by_a_revocation_check_a_bounded_number_at_a_time(
        make_server: Callable[..., RunningServer], pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another node changes alice's password: every IDLE session of this
    node is woken to check its references, which reads the database. The
    checks take turns, CHECKS_AT_ONCE at a time (3 here, for 12 idlers of
    bob's), rather than all queueing on the pool at once; held slow, no
    more than that many are checking. The watch's timer stops while they
    wait (nobody waits in the watch): the turns still bound a session that
    idles then and is woken by the next revocation, and all go on idling
    once answered."""
    bound, idlers = 3, 12
    monkeypatch.setattr(revocations, "CHECKS_AT_ONCE", bound)
    dsn = pg_cluster.new_dsn()
    server = make_server(configure=_on(dsn))
    sessions = [_idle(server, BOB) for _ in range(idlers)]
    watch = _watch_of(server)
    wait_until(lambda: _waiting(watch) == idlers, what="every session waiting in the watch")
    slow = SlowChecks(server)
    _change_password_elsewhere(dsn, ALICE, server)
    # every session woken and on its way to its check (waiting for a turn, or checking)
    wait_until(lambda: not _waiting(watch) and slow.checking >= bound, BOUND_WAIT,
               lambda: f"the sessions woken ({_waiting(watch)} waiting, {slow.checking} checking)")
    slow.turns()
    print(f"IDLE checks at once after a revocation, {idlers} idlers: {slow.peak}")
    assert slow.peak == bound, f"{slow.peak} sessions checked at once, the bound is {bound}"

    # nobody waits in the watch: its timer stops
    wait_until(lambda: watch() is None or watch()._timer is None, BOUND_WAIT, "the watch's timer stopped")  # type: ignore[union-attr]
    gc.collect()
    slow.hold = bound  # (the next session's commands and first check are not held)
    late = _idle(server, BOB)
    again = _watch_of(server)
    wait_until(lambda: _waiting(again) == 1, BOUND_WAIT, "the late session waiting in the watch")
    assert again() is watch(), "the watch was freed while sessions waited for its turns"
    slow.hold = None
    _change_password_elsewhere(dsn, ALICE, server)
    wait_until(lambda: _waiting(again) == 0, BOUND_WAIT, "the late session woken")
    slow.turns()
    assert slow.peak == bound, f"{slow.peak} sessions checked at once, the bound is {bound}"

    slow.release()
    wait_until(lambda: _waiting(again) == idlers + 1, BOUND_WAIT, "every session checked and waiting again")
    assert slow.peak == bound
    for c in [*sessions, late]:
        c.send(b"DONE\r\n")
        assert c.until(b"i3 ")[-1] == b"i3 OK IDLE terminated"
        c.close()


def test_idle_input_and_changes_take_no_turn_of_a_revocation(
        make_server: Callable[..., RunningServer], pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """One turn (CHECKS_AT_ONCE 1), held by a session whose check the
    database is slow to answer after a revocation. A session waiting for
    the next turn answers DONE at once. A session the watch did not take
    (the value moved since its check: `add` refused) waits for a turn
    before it checks; its mailbox changing, or DONE, ends that wait: it
    checks at once and reports, as for a command."""
    monkeypatch.setattr(revocations, "CHECKS_AT_ONCE", 1)
    dsn = pg_cluster.new_dsn()
    server = make_server(configure=_on(dsn))
    first, second = _idle(server, BOB), _idle(server, BOB)
    watch = _watch_of(server)
    wait_until(lambda: _waiting(watch) == 2, what="both sessions waiting in the watch")
    slow = SlowChecks(server, hold=1)
    _change_password_elsewhere(dsn, ALICE, server)
    wait_until(lambda: not _waiting(watch) and slow.checking == 1, BOUND_WAIT,
               lambda: f"the sessions woken ({_waiting(watch)} waiting, {slow.checking} checking)")
    slow.turns()
    assert slow.peak == 1
    # one checks (held), the other waits for the turn: DONE on both
    for c in (first, second):
        c.send(b"DONE\r\n")
    ready, _, _ = select.select([first.sock, second.sock], [], [], BOUND_WAIT)
    assert len(ready) == 1, "DONE waited for the turn of a revocation"
    answered = first if ready[0] is first.sock else second
    assert answered.until(b"i3 ")[-1] == b"i3 OK IDLE terminated"
    held = second if answered is first else first

    refused: list[bool] = []
    real_add = RevocationWatch.add

    def add(self: RevocationWatch, waiter: object, since: object, checked: bool = True) -> bool:
        if not refused:
            refused.append(True)
            return False  # as when a revocation came during the waiter's check
        return real_add(self, waiter, since, checked)  # type: ignore[arg-type]

    monkeypatch.setattr(RevocationWatch, "add", add)
    late = _idle(server, BOB)
    wait_until(lambda: refused, BOUND_WAIT, "the late session's wait refused")
    calls = slow.calls
    slow.turns()
    assert slow.calls == calls, "a session the watch did not take checked without a turn"
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=30) as smtp:
        smtp.sendmail("someone@remote.test", [BOB], b"Subject: for bob\r\n\r\nbob's news\r\n")
    late.sock.settimeout(BOUND_WAIT)
    assert late.line() == b"* 1 EXISTS"
    wait_until(lambda: _waiting(watch) == 1, BOUND_WAIT, "the late session waiting in the watch")
    late.send(b"DONE\r\n")
    assert late.until(b"i3 ")[-1] == b"i3 OK IDLE terminated"
    assert slow.checking == 1  # (the turn still held all along)

    slow.release()
    assert held.until(b"i3 ")[-1] == b"i3 OK IDLE terminated"
    for c in (first, second, late):
        c.close()


def test_a_web_session_is_checked_whatever_its_cookie_header(
        make_server: Callable[..., RunningServer], pg_cluster: PgCluster) -> None:
    """Right after another node changed alice's password, this node knows
    nothing of her credentials in memory and asks the database before the
    request goes on (web/sessionlog.py). A Cookie header that one cookie
    parser refuses and another accepts (a malformed cookie before the
    session's) must not take her session past that check: it is refused."""
    dsn = pg_cluster.new_dsn()
    server = make_server(configure=_on(dsn))
    cookie = _web_login(server, ALICE)
    odd = {"Cookie": f"a,b=1; {SESSION_COOKIE}={cookie}"}
    with httpx.Client(base_url=f"http://{HOST}:{server.port('http')}", follow_redirects=False,
                      timeout=30) as web:
        assert web.get("/folders", headers=odd).status_code == 200
        _change_password_elsewhere(dsn, ALICE, server)
        r = web.get("/folders", headers=odd)
        assert r.status_code == 303 and r.headers["location"] == "/login", r.status_code
        r = web.get("/folders", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
        assert r.status_code == 303 and r.headers["location"] == "/login", r.status_code


def test_a_pop3_client_leaving_during_a_credentials_check_leaves_its_maildrop_unlocked(
        make_server: Callable[..., RunningServer], pg_cluster: PgCluster) -> None:
    """After a revocation, a POP3 session asks the database whether its
    credentials are current before the engine answers the next command (a
    step of its own, net/pop3.py). A client that leaves with a reset while
    that check waits for a slow database (over TLS, where the server sees
    the reset while the step runs) has its maildrop lock released once the
    check ends: its next login gets the maildrop, not [IN-USE]."""
    dsn = pg_cluster.new_dsn()
    server = make_server(configure=_on(dsn))
    assert server.server is not None and server.server.services is not None
    locks = service_for(server.server.services).locked
    pop = TLSLines(server.port("pop3s"))
    assert pop.line().startswith(b"+OK")
    pop.send(f"USER {ALICE}\r\nPASS {USERS[ALICE]}\r\n".encode())
    assert pop.line().startswith(b"+OK") and pop.line().startswith(b"+OK")
    assert len(locks._held) == 1
    _change_password_elsewhere(dsn, BOB, server)  # another account's: every cache forgets
    pop3s = server.server.listeners["pop3s"]
    with psycopg.connect(dsn) as admin:
        admin.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")  # the database is slow to answer
        try:
            pop.send(b"STAT\r\n")
            wait_until(lambda: _waiting_for_lock(admin, "accounts") > 0,
                       what="the credentials check waiting for the database")
            pop.reset()
            wait_until(lambda: pop3s.active == 0, what="the server seeing the client leave")
        finally:
            admin.rollback()
    wait_until(lambda: not locks._held, what="the maildrop unlocked once the check ended")
    again = Lines(server.port("pop3"))
    assert again.line().startswith(b"+OK")
    again.send(f"USER {ALICE}\r\nPASS {USERS[ALICE]}\r\n".encode())
    assert again.line().startswith(b"+OK")
    reply = again.line()
    assert reply.startswith(b"+OK"), reply
    again.close()


class Statements:
    """Counts the statements every psycopg connection of this process sends
    (the server runs in a thread of the test's process)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[str] = []
        for cls in (psycopg.AsyncConnection, psycopg.Connection, psycopg.AsyncCursor, psycopg.Cursor):
            monkeypatch.setattr(cls, "execute", self._wrap(cls.execute))

    def _wrap(self, execute: Callable) -> Callable:
        def counted(conn: object, query: object, *args: object, **kw: object) -> object:
            self.seen.append(" ".join(str(query).split()))
            return execute(conn, query, *args, **kw)

        return counted

    def on_holds(self) -> list[str]:
        """The statements on mailbox_holds, and the writes of messages (an
        expunge keeping or a purge dropping held rows)."""
        return [q for q in self.seen
                if "mailbox_holds" in q or (re.match(r"(DELETE|UPDATE|INSERT) ", q) and " messages " in q)]


@pytest.fixture
def two_nodes(pg_cluster: PgCluster, tmp_path: Path) -> Iterator[tuple[RunningServer, RunningServer, str]]:
    dsn = pg_cluster.new_dsn()
    nodes: list[RunningServer] = []
    try:
        for n in range(2):
            cfg = make_test_config()
            _on(dsn)(cfg)
            node = RunningServer(tmp_path / f"node-{n}", cfg, seed_defaults=n == 0)
            node.start()
            nodes.append(node)
        yield nodes[0], nodes[1], dsn
    finally:
        for node in nodes:
            node.stop()
        pg_cluster.recycle(dsn)


def _count(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0


def test_select_writes_no_hold_while_nothing_is_held_and_expunges_are_still_kept(
        two_nodes: tuple[RunningServer, RunningServer, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A session of node B going between two mailboxes (SELECT, EXAMINE,
    UNSELECT) sends nothing about holds once B's row covers each mailbox;
    a message expunged through node A still stays readable for it until it
    has told its client, and then goes; after B's sessions left, the next
    expunge's copy kept for B's leftover row goes too."""
    a, b, dsn = two_nodes
    on_b = Lines(b.port("imap"))
    assert on_b.line().startswith(b"* OK")
    on_b.send(f'b1 LOGIN {ALICE} "{USERS[ALICE]}"\r\nb2 SELECT INBOX\r\nb3 SELECT Sent\r\n'.encode())
    assert on_b.until(b"b3 ")[-1].startswith(b"b3 OK")
    wait_until(lambda: not b.store._background, what="node B's background work done")

    counted = Statements(monkeypatch)
    for n in range(10):  # a client going between two mailboxes
        on_b.send(f"s{n} SELECT INBOX\r\nx{n} EXAMINE Sent\r\nu{n} UNSELECT\r\n".encode())
        assert on_b.until(f"u{n} ".encode())[-1].startswith(f"u{n} OK".encode())
    on_b.send(b"b4 SELECT INBOX\r\n")
    assert on_b.until(b"b4 ")[-1].startswith(b"b4 OK")
    wait_until(lambda: not b.store._background, what="node B's background work done")
    print(f"statements on holds during 21 SELECTs: {len(counted.on_holds())}")
    assert counted.on_holds() == [], counted.on_holds()[:6]
    monkeypatch.undo()

    # what the hold is for: a message expunged through node A stays
    # readable for node B's session until B has told its client
    with smtplib.SMTP(HOST, a.port("smtp"), timeout=30) as smtp:
        smtp.sendmail("someone@remote.test", [ALICE], MESSAGE)
    noops = iter(range(1000))

    def told_of_the_delivery() -> bool:
        # node B hears of node A's commit through the database's notification,
        # which may come after a NOOP sent at once: the client polls again
        tag = f"b5.{next(noops)} ".encode()
        on_b.send(tag + b"NOOP\r\n")
        return b"* 1 EXISTS" in on_b.until(tag)

    wait_until(told_of_the_delivery, what="node B's session told of the message delivered through node A")
    on_a = Lines(a.port("imap"))
    assert on_a.line().startswith(b"* OK")
    on_a.send(f'a1 LOGIN {ALICE} "{USERS[ALICE]}"\r\na2 SELECT INBOX\r\na3 STORE 1 +FLAGS (\\Deleted)\r\n'
              "a4 EXPUNGE\r\na5 LOGOUT\r\n".encode())
    assert b"* 1 EXPUNGE" in on_a.until(b"a5 ")
    on_a.close()
    wait_until(lambda: _count(dsn, "SELECT count(*) FROM messages WHERE mailbox_id > 0") == 0,
               what="the expunge committed")
    on_b.send(b"b6 FETCH 1 (BODY.PEEK[TEXT])\r\n")  # no EXPUNGE may come with a FETCH (RFC 9051 7.5.1)
    reply = b"\r\n".join(on_b.until(b"b6 "))
    assert b"still readable" in reply and b"b6 OK" in reply, reply
    def told_of_the_expunge() -> bool:
        tag = f"b7.{next(noops)} ".encode()
        on_b.send(tag + b"NOOP\r\n")
        return b"* 1 EXPUNGE" in on_b.until(tag)

    wait_until(told_of_the_expunge, what="node B's session told of the expunge through node A")
    wait_until(lambda: _count(dsn, "SELECT count(*) FROM messages") == 0,
               what="the held copy purged once node B told its client")

    # node B's session leaves; its row stays behind, and the next expunge
    # through node A, which keeps the message for it, makes B end the row
    # and drop the copy
    on_b.send(b"b8 LOGOUT\r\n")
    on_b.until(b"b8 ")
    on_b.close()
    with smtplib.SMTP(HOST, a.port("smtp"), timeout=30) as smtp:
        smtp.sendmail("someone@remote.test", [ALICE], MESSAGE.replace(b"held-1", b"held-2"))
    on_a = Lines(a.port("imap"))
    assert on_a.line().startswith(b"* OK")
    on_a.send(f'a1 LOGIN {ALICE} "{USERS[ALICE]}"\r\na2 SELECT INBOX\r\na3 STORE 1 +FLAGS (\\Deleted)\r\n'
              "a4 EXPUNGE\r\na5 LOGOUT\r\n".encode())
    assert b"* 1 EXPUNGE" in on_a.until(b"a5 ")
    on_a.close()
    wait_until(lambda: _count(dsn, "SELECT count(*) FROM messages") == 0,
               what="the copy kept for a node whose sessions left purged")
    assert _count(dsn, "SELECT count(*) FROM bodies") == 0


@pytest.fixture
def quick_marker_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes look at their liveness connection every 0.2 s (default 5 s)."""
    monkeypatch.setattr(pg_validity, "MARKER_CHECK", 0.2, raising=False)


def test_a_node_whose_liveness_connection_was_ended_publishes_its_holds_again(
        quick_marker_checks: None, two_nodes: tuple[RunningServer, RunningServer, str]) -> None:
    """Node B marks itself alive to the other nodes by a connection whose
    name is its own; the database may end it (a restart, an administrator)
    while B's sessions go on, and the other nodes then take B's row of
    mailbox_holds for a dead node's and drop it. B notices, opens the
    connection again and publishes its holds again: a message B's session
    was told of, expunged through node A afterwards, stays readable for it
    until it has told its client (RFC 2180 4.1.1)."""
    a, b, dsn = two_nodes
    import smtplib

    with smtplib.SMTP(HOST, a.port("smtp"), timeout=30) as smtp:
        smtp.sendmail("someone@remote.test", [ALICE], MESSAGE)
    on_b = Lines(b.port("imap"))
    assert on_b.line().startswith(b"* OK")
    on_b.send(f'b1 LOGIN {ALICE} "{USERS[ALICE]}"\r\nb2 SELECT INBOX\r\n'.encode())
    assert b"* 1 EXISTS" in on_b.until(b"b2 ")
    wait_until(lambda: not b.store._background, what="node B's background work done")
    mine = f"SELECT count(*) FROM mailbox_holds WHERE node = '{b.store.node}' AND seen_modseq IS NOT NULL"
    assert _count(dsn, mine) == 1
    # as a purge of node A does while B's connection is gone, and the connection ended
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("DELETE FROM mailbox_holds WHERE node = %s", (b.store.node,))
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                      (f"mailyard-{b.store.node}",))
    wait_until(lambda: _count(dsn, mine) == 1, what="node B's hold published again")
    on_a = Lines(a.port("imap"))
    assert on_a.line().startswith(b"* OK")
    on_a.send(f'a1 LOGIN {ALICE} "{USERS[ALICE]}"\r\na2 SELECT INBOX\r\na3 STORE 1 +FLAGS (\\Deleted)\r\n'
              "a4 EXPUNGE\r\na5 LOGOUT\r\n".encode())
    assert b"* 1 EXPUNGE" in on_a.until(b"a5 ")
    on_a.close()
    wait_until(lambda: _count(dsn, "SELECT count(*) FROM messages WHERE mailbox_id > 0") == 0,
               what="the expunge committed")
    on_b.send(b"b3 UID FETCH 1 (BODY.PEEK[TEXT])\r\n")
    reply = b"\r\n".join(on_b.until(b"b3 "))
    assert b"still readable" in reply and b"b3 OK" in reply, reply
    on_b.close()
