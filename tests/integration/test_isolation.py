"""One user's session never reaches another user's mail: ids that are never
reused, session references checked against owner and UIDVALIDITY, and account
removal or a password change (by the ``mailyard`` CLI, a separate process
writing the same data directory) ending that account's sessions on every
protocol. Real server, raw sockets and real clients."""

from __future__ import annotations

import asyncio
import base64
import imaplib
import poplib
import re
import smtplib
import socket
import ssl
import subprocess
import sys
import time

import pytest

from mailyard.net import revocations
from mailyard.protocols.imap.session import ImapSession

from ..conftest import USERS, RunningServer
from ..waiting import wait_until, wait_until_async
from .test_tls_auth import ScramClient

httpx = pytest.importorskip("httpx")

ALICE, BOB = "alice@example.test", "bob@example.test"
SECRET = b"bob-only-secret-7f3a"


class RawImap:
    """A line-level IMAP client: sees BYE and the connection closing as they are."""

    def __init__(self, server: RunningServer) -> None:
        self.sock = socket.create_connection((server.host, server.port("imap")), timeout=10)
        self.n = 0
        greeting = self._read_until(lambda buf: b"\r\n" in buf)
        assert greeting.startswith(b"* OK"), greeting

    def _read_until(self, done: object, timeout: float = 10) -> bytes:
        """What arrives until ``done(buf)``, the connection closes, or
        ``timeout`` seconds pass (each recv waits at most what is left)."""
        buf = b""
        deadline = time.monotonic() + timeout
        before = self.sock.gettimeout()
        try:
            while not done(buf):  # type: ignore[operator]
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.sock.settimeout(left)
                try:
                    chunk = self.sock.recv(65536)
                except (ConnectionError, TimeoutError):
                    break
                if not chunk:
                    break
                buf += chunk
        finally:
            self.sock.settimeout(before)
        return buf

    def command(self, line: str) -> bytes:
        """Everything the server sends up to the tagged reply, or up to the
        connection closing."""
        self.n += 1
        tag = f"t{self.n}"
        try:
            self.sock.sendall(f"{tag} {line}\r\n".encode())
        except (ConnectionError, OSError):
            return b""
        pattern = re.compile(rb"(^|\r\n)" + tag.encode() + rb" (OK|NO|BAD)[^\r\n]*\r\n")
        return self._read_until(lambda buf: pattern.search(buf) is not None)

    def login(self, user: str) -> None:
        r = self.command(f'LOGIN "{user}" "{USERS[user]}"')
        assert b" OK" in r, r

    def idle(self) -> str:
        """Send IDLE and read its continuation (RFC 2177 3); the tag."""
        self.n += 1
        tag = f"t{self.n}"
        self.sock.sendall(f"{tag} IDLE\r\n".encode())
        r = self._read_until(lambda buf: b"\r\n" in buf)
        assert r.startswith(b"+ "), r
        return tag

    def closed(self) -> bool:
        """True once the server has closed the connection."""
        self.sock.settimeout(10)
        try:
            return self.sock.recv(1) == b""
        except ConnectionError:
            return True

    def close(self) -> None:
        self.sock.close()


def imap(server: RunningServer, user: str) -> imaplib.IMAP4:
    c = imaplib.IMAP4(server.host, server.port("imap"), timeout=10)
    c.login(user, USERS[user])
    return c


def cli(server: RunningServer, *args: str, stdin: str | None = None) -> None:
    """``mailyard`` as the administrator runs it beside the server: another
    process, the same data directory."""
    r = subprocess.run(
        [sys.executable, "-m", "mailyard", "--data", str(server.data_dir), *args],
        input=stdin, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr


def send(server: RunningServer, to: str, subject: str, body: bytes = SECRET) -> None:
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=10) as s:
        s.sendmail("someone@remote.test", [to], b"Subject: " + subject.encode() + b"\r\n\r\n" + body + b"\r\n")


def mailbox_state(server: RunningServer, user: str, name: str) -> list[tuple[int, frozenset[str], bytes]]:
    async def go() -> list[tuple[int, frozenset[str], bytes]]:
        account = await server.store.get_account(user)
        assert account is not None
        box = await server.store.get_mailbox(account.id, name)
        assert box is not None
        return [(m.uid, m.flags, await server.store.read_message(box, m.uid))
                for m in await server.store.list_messages(box)]

    return server.call(go())


def web_login(server: RunningServer, user: str, password: str | None = None) -> httpx.Client:
    client = httpx.Client(base_url=f"http://127.0.0.1:{server.port('http')}", follow_redirects=False, timeout=30)
    r = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', r.text).group(1)
    r = client.post("/login", data={"username": user, "password": password or USERS[user], "login_token": token})
    assert r.status_code == 303, r.text
    return client


def web_inbox(client: httpx.Client) -> httpx.Response:
    """What the session's cookie shows at the start page (it redirects to the INBOX)."""
    return client.get("/", follow_redirects=True)


# --- item 1: a deleted selected mailbox, its id handed to another user ----------------
def test_selected_mailbox_deleted_elsewhere_never_reaches_bobs_new_folder(mailserver: RunningServer) -> None:
    """Alice SELECTs a folder in three sessions and deletes it from a fourth;
    bob CREATEs a folder and fills it. Alice's first sessions' FETCH, STORE
    and EXPUNGE get BYE (RFC 2180 3.2) and bob's messages stay untouched."""
    setup = imap(mailserver, ALICE)
    assert setup.create("Work")[0] == "OK"
    assert setup.append("Work", None, None, b"Subject: alice's own\r\n\r\nalice\r\n")[0] == "OK"
    victims = []
    for _ in range(3):
        v = RawImap(mailserver)
        v.login(ALICE)
        assert b"OK [READ-WRITE]" in v.command("SELECT Work")
        victims.append(v)
    assert setup.delete("Work")[0] == "OK"
    setup.logout()
    bob = imap(mailserver, BOB)
    assert bob.create("Loot")[0] == "OK"
    for i in range(2):
        assert bob.append("Loot", None, None, b"Subject: bob %d\r\n\r\n%s\r\n" % (i, SECRET))[0] == "OK"
    bob.logout()
    before = mailbox_state(mailserver, BOB, "Loot")
    fetch, store, expunge = victims
    r = fetch.command("FETCH 1:* (FLAGS BODY[])")
    assert SECRET not in r and b"* BYE" in r, r
    r = store.command("STORE 1:* +FLAGS (\\Deleted)")
    assert SECRET not in r and b"* BYE" in r, r
    r = expunge.command("UID STORE 1:* +FLAGS.SILENT (\\Deleted)") + expunge.command("EXPUNGE")
    assert b"* BYE" in r, r
    for v in victims:
        assert v.closed()
        v.close()
    assert mailbox_state(mailserver, BOB, "Loot") == before
    assert all(not flags for _, flags, _ in before)


def test_selected_mailbox_deleted_elsewhere_never_reaches_a_new_accounts_inbox(mailserver: RunningServer) -> None:
    """The same with the admin adding an account (CLI, another process) whose
    INBOX would have taken the freed id: the old session reads nothing of it."""
    setup = imap(mailserver, ALICE)
    assert setup.create("Gone")[0] == "OK"
    victim = RawImap(mailserver)
    victim.login(ALICE)
    assert b"OK [READ-WRITE]" in victim.command("SELECT Gone")
    assert setup.delete("Gone")[0] == "OK"
    setup.logout()
    cli(mailserver, "user", "add", "carol@example.test", "--password-stdin", stdin="carol-password-3\n")
    send(mailserver, "carol@example.test", "for carol")
    carol = mailbox_state(mailserver, "carol@example.test", "INBOX")
    assert len(carol) == 1
    r = victim.command("UID FETCH 1:* (BODY[])")
    assert SECRET not in r and b"* BYE" in r, r
    assert victim.closed()
    victim.close()
    assert mailbox_state(mailserver, "carol@example.test", "INBOX") == carol


def test_deleting_the_own_selected_mailbox_ends_the_selection(mailserver: RunningServer) -> None:
    """DELETE of the mailbox this very session has selected: ``* OK [CLOSED]``
    and back to the authenticated state (RFC 9051 7.1), no BYE."""
    c = RawImap(mailserver)
    c.login(ALICE)
    assert b" OK" in c.command("CREATE Mine")
    assert b"OK [READ-WRITE]" in c.command("SELECT Mine")
    r = c.command("DELETE Mine")
    assert b"* OK [CLOSED]" in r and re.search(rb"t\d+ OK", r), r
    r = c.command("FETCH 1:* (FLAGS)")
    assert b" BAD" in r and b"BYE" not in r, r
    assert b"OK [READ-WRITE]" in c.command("SELECT INBOX")
    c.command("LOGOUT")
    c.close()


# --- item 2: sessions of a removed account ----------------------------------------------
def test_removed_account_sessions_end_everywhere_and_never_read_the_next_account(
    mailserver: RunningServer,
) -> None:
    """Bob has an IMAP session (INBOX selected), a POP3 session, a webmail
    cookie and an authenticated submission session when the admin removes him
    with the CLI and adds eve, who gets mail. Every one of bob's sessions is
    ended, none reads eve's INBOX, the cookie is refused."""
    send(mailserver, BOB, "bob's mail", b"bob's own")
    victim = RawImap(mailserver)
    victim.login(BOB)
    assert b"OK [READ-WRITE]" in victim.command("SELECT INBOX")
    pop = poplib.POP3(mailserver.host, mailserver.port("pop3"), timeout=10)
    pop.user(BOB)
    pop.pass_(USERS[BOB])
    web = web_login(mailserver, BOB)
    assert "bob&#39;s mail" in web_inbox(web).text or "bob's mail" in web_inbox(web).text
    sub = smtplib.SMTP(mailserver.host, mailserver.port("submission"), timeout=10)
    sub.starttls(context=ssl.create_default_context(cafile=str(mailserver.data_dir / "tls" / "cert.pem")))
    sub.login(BOB, USERS[BOB])

    cli(mailserver, "user", "remove", BOB, "--yes")
    cli(mailserver, "user", "add", "eve@example.test", "--password-stdin", stdin="eve-password-55\n")
    send(mailserver, "eve@example.test", "eve's mail")
    assert len(mailbox_state(mailserver, "eve@example.test", "INBOX")) == 1

    r = victim.command("FETCH 1:* (BODY[])")
    assert SECRET not in r and b"* BYE" in r, r
    assert victim.closed()
    victim.close()

    with pytest.raises(poplib.error_proto) as err:
        pop.retr(1)
    assert b"[AUTH]" in err.value.args[0] and SECRET not in err.value.args[0]
    with pytest.raises((poplib.error_proto, OSError, EOFError)):
        pop.stat()  # the server closed the session
    pop.close()

    r = web_inbox(web)
    assert str(r.url).endswith("/login") and SECRET.decode() not in r.text
    eve = mailserver.call(mailserver.store.get_account("eve@example.test"))
    top = max(b.id for b in mailserver.call(mailserver.store.list_mailboxes(eve.id)))
    for path in ("/", "/folders", "/events"):
        r = web.get(path)
        assert r.status_code in (303, 401) and SECRET.decode() not in r.text, (path, r.status_code)
    for box in range(1, top + 1):  # every mailbox id there is
        r = web.get(f"/box/{box}")
        assert r.status_code in (303, 401), (box, r.status_code)
    web.close()

    code, reply = sub.docmd("MAIL FROM:<bob@example.test>")
    assert code == 421, (code, reply)
    with pytest.raises((smtplib.SMTPServerDisconnected, OSError)):
        sub.docmd("NOOP")
    sub.close()


# --- item 3: a password change ends the sessions -----------------------------------------
def test_password_change_ends_imap_pop3_and_webmail_sessions(mailserver: RunningServer) -> None:
    """``mailyard user passwd`` (another process) ends alice's sessions: the
    intruder's IMAP session gets BYE, its POP3 session -ERR [AUTH], its cookie
    is refused; the new password logs in."""
    send(mailserver, ALICE, "alice's mail", b"alice-private")
    intruder = RawImap(mailserver)
    intruder.login(ALICE)
    assert b"OK [READ-WRITE]" in intruder.command("SELECT INBOX")
    idle_one = RawImap(mailserver)  # authenticated, nothing selected
    idle_one.login(ALICE)
    pop = poplib.POP3(mailserver.host, mailserver.port("pop3"), timeout=10)
    pop.user(ALICE)
    pop.pass_(USERS[ALICE])
    web = web_login(mailserver, ALICE)
    assert web_inbox(web).status_code == 200

    cli(mailserver, "user", "passwd", ALICE, "--password-stdin", stdin="a-brand-new-password-9\n")

    r = intruder.command("FETCH 1 (BODY[])")
    assert b"alice-private" not in r and b"* BYE" in r, r
    assert b"* BYE" in idle_one.command("LIST \"\" *")
    for c in (intruder, idle_one):
        assert c.closed()
        c.close()
    with pytest.raises(poplib.error_proto) as err:
        pop.stat()
    assert b"[AUTH]" in err.value.args[0]
    pop.close()
    r = web_inbox(web)
    assert str(r.url).endswith("/login") and "alice-private" not in r.text
    web.close()

    # the old password no longer logs in, the new one does, and its sessions work
    old = imaplib.IMAP4(mailserver.host, mailserver.port("imap"), timeout=10)
    with pytest.raises(imaplib.IMAP4.error):
        old.login(ALICE, USERS[ALICE])
    old.logout()
    fresh = imaplib.IMAP4(mailserver.host, mailserver.port("imap"), timeout=10)
    fresh.login(ALICE, "a-brand-new-password-9")
    assert fresh.select("INBOX")[0] == "OK"
    typ, data = fresh.fetch("1", "(BODY[])")
    assert typ == "OK" and b"alice-private" in data[0][1]
    fresh.logout()
    web = web_login(mailserver, ALICE, "a-brand-new-password-9")
    assert "alice" in web_inbox(web).text
    web.close()



# --- item 4: a SASL exchange logs in to the account it proved, as it is at its end ----------
def scram_started(server: RunningServer, user: str) -> tuple[RawImap, ScramClient, bytes]:
    """An IMAP ``AUTHENTICATE SCRAM-SHA-256`` with ``user``'s password, left
    after the server-first message (the server has handed the keys of the
    account as it was then)."""
    c = RawImap(server)
    scram = ScramClient(user, USERS[user])
    c.sock.sendall(b"a1 AUTHENTICATE SCRAM-SHA-256\r\n")
    assert c._read_until(lambda buf: b"\r\n" in buf).startswith(b"+")
    c.sock.sendall(base64.b64encode(scram.first()) + b"\r\n")
    r = c._read_until(lambda buf: b"\r\n" in buf)
    assert r.startswith(b"+ "), r
    return c, scram, base64.b64decode(r[2:].strip())


def scram_finished(c: RawImap, scram: ScramClient, server_first: bytes) -> bytes:
    """The tagged answer to the client-final message (made from the password
    the exchange started with)."""
    c.sock.sendall(base64.b64encode(scram.final(server_first)) + b"\r\n")
    r = c._read_until(lambda buf: re.search(rb"(^|\r\n)(a1 |\+ )", buf) is not None)
    if r.startswith(b"+ "):  # the server-final message: an empty response ends the exchange
        c.sock.sendall(b"\r\n")
        r += c._read_until(lambda buf: b"a1 " in buf)
    return r


def test_scram_exchange_across_a_password_change_is_refused(mailserver: RunningServer) -> None:
    """A SCRAM exchange started with the old password (RFC 5802 5: the keys
    are handed at the server-first message) whose proof arrives after the
    password changed does not log in: what it proved no longer opens the
    account."""
    send(mailserver, ALICE, "after", b"alice-private-after")
    c, scram, server_first = scram_started(mailserver, ALICE)
    cli(mailserver, "user", "passwd", ALICE, "--password-stdin", stdin="a-brand-new-password-9\n")
    r = scram_finished(c, scram, server_first)
    assert b"a1 NO" in r and b"a1 OK" not in r, r
    assert b"alice-private-after" not in c.command("SELECT INBOX") + c.command("FETCH 1:* (BODY[])")
    c.close()
    fresh = imaplib.IMAP4(mailserver.host, mailserver.port("imap"), timeout=10)
    fresh.authenticate("SCRAM-SHA-256", ScramClient(ALICE, "a-brand-new-password-9"))  # the new one does
    fresh.logout()


def test_scram_exchange_never_logs_in_to_the_next_account_of_the_address(mailserver: RunningServer) -> None:
    """Bob is removed and the address given to a new account while a SCRAM
    exchange with the old bob's password waits for its proof: the proof is
    refused, and the new account's mail is never read."""
    c, scram, server_first = scram_started(mailserver, BOB)
    cli(mailserver, "user", "remove", BOB, "--yes")
    cli(mailserver, "user", "add", BOB, "--password-stdin", stdin="new-bob-password-77\n")
    send(mailserver, BOB, "for the new bob", b"new-bob-secret")
    r = scram_finished(c, scram, server_first)
    assert b"a1 NO" in r and b"a1 OK" not in r, r
    assert b"new-bob-secret" not in c.command("SELECT INBOX") + c.command("FETCH 1:* (BODY[])")
    c.close()


def test_smtp_scram_exchange_across_a_password_change_is_refused(mailserver: RunningServer) -> None:
    """The same on the submission port: 535, not 235 (RFC 4954 6)."""
    scram = ScramClient(ALICE, USERS[ALICE])
    with smtplib.SMTP(mailserver.host, mailserver.port("submission"), timeout=10) as s:
        s.ehlo("client.example.test")
        code, server_first = s.docmd("AUTH SCRAM-SHA-256", base64.b64encode(scram.first()).decode())
        assert code == 334, server_first
        cli(mailserver, "user", "passwd", ALICE, "--password-stdin", stdin="a-brand-new-password-9\n")
        code, text = s.docmd(base64.b64encode(scram.final(base64.b64decode(server_first))).decode())
        if code == 334:  # the server-final message
            code, text = s.docmd("")
        assert code == 535, (code, text)
        assert s.mail(ALICE)[0] == 530  # not logged in: submission needs AUTH


# --- item 5: sessions in IDLE, which send no command to be checked before -------------
# How long a test waits for a BYE that comes within seconds: it bounds a failure only.
BYE_WAIT = 30.0


def admin_sees(server: RunningServer) -> RunningServer:
    """The CLI beside a server whose store is in PostgreSQL reads the store's
    place from the data directory's config.toml, as `mailyard init` leaves it."""
    if server.config.store.backend == "postgresql":
        (server.data_dir / "config.toml").write_text(server.config.to_toml())
    return server


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_idle_session_reports_no_mail_that_came_after_a_password_change(mailserver: RunningServer) -> None:
    """An intruder in alice's INBOX keeps a live search (RFC 5267
    CONTEXT=SEARCH) and IDLEs; the admin changes alice's password (CLI,
    another process), then mail holding the searched string arrives. The
    session ends with BYE, and reports neither EXISTS nor the ADDTO that
    would tell the intruder what the new mail holds."""
    send(mailserver, ALICE, "first", b"nothing")
    intruder = RawImap(mailserver)
    intruder.login(ALICE)
    assert b"OK [READ-WRITE]" in intruder.command("SELECT INBOX")
    r = intruder.command('SEARCH RETURN (UPDATE) BODY "pin-4711"')
    assert b"* ESEARCH" in r and b" OK" in r, r
    intruder.idle()
    cli(admin_sees(mailserver), "user", "passwd", ALICE, "--password-stdin", stdin="a-brand-new-password-9\n")
    send(mailserver, ALICE, "reset", b"your code is pin-4711")
    r = intruder._read_until(lambda buf: b"* BYE" in buf or b"ADDTO" in buf, BYE_WAIT)
    assert r.startswith(b"* BYE") and b"password changed" in r, r
    assert b"EXISTS" not in r and b"ADDTO" not in r and b"RECENT" not in r, r
    assert intruder.closed()
    intruder.close()


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
@pytest.mark.parametrize("change", ["passwd", "remove"])
def test_idle_session_ends_without_new_mail_when_its_account_is_revoked(
        mailserver: RunningServer, change: str) -> None:
    """Alice IDLEs in two sessions (INBOX selected, and nothing selected),
    bob in one; the admin changes alice's password or removes her account,
    and no mail comes. Alice's sessions get BYE within seconds, without a
    command; bob's IDLE goes on and reports his new mail."""
    alice = RawImap(mailserver)
    alice.login(ALICE)
    assert b"OK [READ-WRITE]" in alice.command("SELECT INBOX")
    alice_auth = RawImap(mailserver)
    alice_auth.login(ALICE)
    bob = RawImap(mailserver)
    bob.login(BOB)
    assert b"OK [READ-WRITE]" in bob.command("SELECT INBOX")
    for c in (alice, alice_auth):
        c.idle()
    bob_tag = bob.idle()
    if change == "passwd":
        cli(admin_sees(mailserver), "user", "passwd", ALICE, "--password-stdin", stdin="a-brand-new-password-9\n")
    else:
        cli(admin_sees(mailserver), "user", "remove", ALICE, "--yes")
    for c in (alice, alice_auth):
        r = c._read_until(lambda buf: b"\r\n" in buf, BYE_WAIT)
        assert r == b"* BYE Account removed or password changed; log in again\r\n", r
        assert c.closed()
        c.close()
    send(mailserver, BOB, "for bob", b"bob's news")
    r = bob._read_until(lambda buf: b"EXISTS" in buf or b"BYE" in buf)
    assert r.startswith(b"* 1 EXISTS"), r
    bob.sock.sendall(b"DONE\r\n")
    r = bob._read_until(lambda buf: f"{bob_tag} ".encode() in buf)
    assert f"{bob_tag} OK IDLE terminated".encode() in r and b"BYE" not in r, r
    bob.command("LOGOUT")
    bob.close()


@pytest.mark.parametrize("others_idle", [False, True], ids=["no-poll-running", "a-poll-during-the-check"])
def test_a_password_change_while_the_idle_check_runs_is_not_missed(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch, others_idle: bool) -> None:
    """Alice's session in IDLE checks its references, and the admin changes
    her password (CLI, another process) after that check has read them and
    before the session waits: as a database read that answered before the
    change would. With nobody else idling, the watch of revocations starts
    with that wait; with bob idling, a poll sees the change and wakes bob
    while alice's check still runs. Either way alice's session gets BYE
    within seconds, with no mail and no command."""
    monkeypatch.setattr(revocations, "POLL_SECONDS", 0.05)
    idling: set[int] = set()  # the sessions in ImapSession.idle (by id)
    checks = {ALICE: 0, BOB: 0}  # their checks, by user
    trap: list[bool] = []  # armed: the next check of alice's in IDLE changes her password
    real_idle, real_check = ImapSession.idle, ImapSession.references_current

    async def idle(self: ImapSession) -> None:
        idling.add(id(self))
        try:
            await real_idle(self)
        finally:
            idling.discard(id(self))

    async def check(self: ImapSession) -> bool:
        answer = await real_check(self)
        if id(self) not in idling or self.backend is None:
            return answer
        user = self.backend.account.address  # type: ignore[attr-defined]
        checks[user] += 1
        if user == ALICE and trap:
            trap.clear()
            seen = checks[BOB]
            await asyncio.to_thread(cli, mailserver, "user", "passwd", ALICE, "--password-stdin",
                                    stdin="a-brand-new-password-9\n")
            if others_idle:
                await wait_until_async(lambda: checks[BOB] > seen, BYE_WAIT, "bob woken by the poll that saw it")
        return answer

    monkeypatch.setattr(ImapSession, "idle", idle)
    monkeypatch.setattr(ImapSession, "references_current", check)
    bob = None
    if others_idle:
        bob = RawImap(mailserver)
        bob.login(BOB)
        assert b"OK [READ-WRITE]" in bob.command("SELECT INBOX")
        bob_tag = bob.idle()
        wait_until(lambda: checks[BOB], BYE_WAIT, "bob's session waiting")
    alice = RawImap(mailserver)
    alice.login(ALICE)
    assert b"OK [READ-WRITE]" in alice.command("SELECT INBOX")
    trap.append(True)
    alice.idle()
    r = alice._read_until(lambda buf: b"\r\n" in buf, BYE_WAIT)
    assert r == b"* BYE Account removed or password changed; log in again\r\n", r
    assert not trap  # (the change came inside the check)
    assert alice.closed()
    alice.close()
    if bob is not None:
        bob.sock.sendall(b"DONE\r\n")
        r = bob._read_until(lambda buf: f"{bob_tag} ".encode() in buf)
        assert f"{bob_tag} OK IDLE terminated".encode() in r, r
        bob.close()
