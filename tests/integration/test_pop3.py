"""The POP3 server through real sockets, driven by Python's poplib.

Mail is put into INBOX through the store API (or SMTP, for the end-to-end test)
and read back over POP3; what the store holds afterwards is checked through the
store API.
"""

from __future__ import annotations

import base64
import poplib
import smtplib
import socket
import time

import pytest

from mailyard.auth.throttle import LoginThrottle, ThrottlePolicy
from mailyard.store.api import DeliveryTarget
from tests.conftest import USERS, RunningServer

ALICE = "alice@example.test"
BOB = "bob@example.test"


def message(n: int, extra: bytes = b"") -> bytes:
    return (
        b"From: Carol <carol@remote.test>\r\n"
        b"To: Alice <alice@example.test>\r\n"
        b"Subject: message %d\r\n"
        b"Message-ID: <%d@remote.test>\r\n"
        b"\r\n"
        b"Body of message %d.\r\n"
        b".a line with a leading dot\r\n"
        b".\r\n" % (n, n, n)
    ) + extra + b"last line\r\n"


@pytest.fixture
def pop3server(mailserver: RunningServer) -> RunningServer:
    """The standard test server, with a fast login throttle so failures stay quick."""
    assert mailserver.server is not None
    mailserver.server.throttle = LoginThrottle(ThrottlePolicy(base_delay=0.05, max_delay=0.2))  # type: ignore[attr-defined]
    return mailserver


def put(server: RunningServer, address: str, *messages: bytes) -> list[int]:
    """Deliver messages straight into a user's INBOX; returns their UIDs."""

    async def go() -> list[int]:
        account = await server.store.get_account(address)
        assert account is not None
        box = await server.store.get_mailbox(account.id, "INBOX")
        assert box is not None
        uids = []
        for data in messages:
            uids += await server.store.deliver(data, [DeliveryTarget(box.id)])
        return uids

    return server.call(go())


def connect(server: RunningServer) -> poplib.POP3:
    return poplib.POP3(server.host, server.port("pop3"), timeout=10)


def login(server: RunningServer, address: str = ALICE) -> poplib.POP3:
    p = connect(server)
    p.user(address)
    p.pass_(USERS[address])
    return p


def retr(p: poplib.POP3, n: int) -> bytes:
    _, lines, _ = p.retr(n)
    return b"".join(line + b"\r\n" for line in lines)


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_user_pass_stat_list_retr_bytes_exact(pop3server: RunningServer) -> None:
    msgs = [message(1), message(2, (b"x" * 98 + b"\r\n") * 50), message(3)]
    put(pop3server, ALICE, *msgs)
    p = connect(pop3server)
    welcome = p.getwelcome()
    assert welcome.startswith(b"+OK") and welcome.endswith(b"@mx.example.test>")
    assert p.user(ALICE) == b"+OK"
    assert p.pass_(USERS[ALICE]).startswith(b"+OK alice@example.test's maildrop has 3 messages")
    stored = pop3server.messages(ALICE)
    assert p.stat() == (3, sum(len(m) for m in stored))
    _, listing, _ = p.list()
    assert listing == [b"%d %d" % (i, len(m)) for i, m in enumerate(stored, 1)]
    for i, m in enumerate(stored, 1):
        assert retr(p, i) == m  # dot-stuffing undone by poplib; bytes as stored
        assert p.list(i) == b"+OK %d %d" % (i, len(m))
    assert p.quit().startswith(b"+OK mx.example.test POP3 server signing off (3 messages left)")
    assert len(pop3server.messages(ALICE)) == 3


def test_smtp_to_pop3_end_to_end(pop3server: RunningServer) -> None:
    body = message(7)
    with smtplib.SMTP(pop3server.host, pop3server.port("smtp"), timeout=10) as s:
        assert s.sendmail("carol@remote.test", [ALICE], body) == {}
    p = login(pop3server)
    got = retr(p, 1)
    assert got.endswith(body)  # after the trace headers the server prepended
    assert p.list(1) == b"+OK 1 %d" % len(got)
    p.dele(1)
    p.quit()
    assert pop3server.messages(ALICE) == []


def test_apop(pop3server: RunningServer) -> None:
    put(pop3server, ALICE, message(1))
    p = connect(pop3server)
    assert p.apop(ALICE, "apop-" + USERS[ALICE]).startswith(b"+OK")
    assert p.stat()[0] == 1
    p.quit()
    p = connect(pop3server)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
        p.apop(ALICE, USERS[ALICE])  # the login password is not the APOP secret
    p.quit()


def test_auth_plain_and_capa(pop3server: RunningServer) -> None:
    p = connect(pop3server)
    caps = p.capa()
    for cap in ("TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING", "SASL"):
        assert cap in caps
    assert "PLAIN" in caps["SASL"]
    token = base64.b64encode(b"\0" + ALICE.encode() + b"\0" + USERS[ALICE].encode()).decode()
    assert p._shortcmd("AUTH PLAIN " + token).startswith(b"+OK")
    assert p.stat() == (0, 0)
    p.quit()


def test_auth_scram_sha256(pop3server: RunningServer) -> None:
    """A full RFC 5802 exchange over POP3 AUTH (RFC 5034), client side by hand."""
    import hashlib
    import hmac
    import secrets

    p = connect(pop3server)
    cnonce = secrets.token_hex(12)
    first_bare = f"n={ALICE},r={cnonce}"
    resp = p._shortcmd("AUTH SCRAM-SHA-256 " + base64.b64encode(b"n,," + first_bare.encode()).decode())
    assert resp.startswith(b"+ ")
    server_first = base64.b64decode(resp[2:]).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", USERS[ALICE].encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    final = f"{without_proof},p={base64.b64encode(proof).decode()}"
    resp = p._shortcmd(base64.b64encode(final.encode()).decode())
    assert resp.startswith(b"+ ")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    expected_v = base64.b64encode(hmac.digest(server_key, auth_message, "sha256"))
    assert base64.b64decode(resp[2:]) == b"v=" + expected_v
    assert p._shortcmd("").startswith(b"+OK")
    p.quit()


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_top_and_uidl_stable_and_never_reused(pop3server: RunningServer) -> None:
    put(pop3server, ALICE, message(1), message(2))
    p = login(pop3server)
    _, top, _ = p.top(1, 1)
    assert top[-2:] == [b"", b"Body of message 1."]
    assert top[0] == b"From: Carol <carol@remote.test>"
    _, top0, _ = p.top(2, 0)
    assert top0[-1] == b"" and b"Subject: message 2" in top0
    _, uidl1, _ = p.uidl()
    assert p.uidl(2) == b"+OK " + uidl1[1]
    p.dele(2)
    p.quit()
    put(pop3server, ALICE, message(3))
    p = login(pop3server)
    _, uidl2, _ = p.uidl()
    p.quit()
    ids1 = [line.split()[1] for line in uidl1]
    ids2 = [line.split()[1] for line in uidl2]
    assert ids2[0] == ids1[0]  # message 1 keeps its id
    assert ids2[1] not in ids1  # the new message never gets the deleted one's id
    assert len(set(ids2)) == 2


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_rset_undoes_dele(pop3server: RunningServer) -> None:
    put(pop3server, ALICE, message(1), message(2))
    p = login(pop3server)
    p.dele(1)
    p.dele(2)
    assert p.stat() == (0, 0)
    with pytest.raises(poplib.error_proto, match="already deleted"):
        p.retr(1)
    assert p.rset().startswith(b"+OK")
    assert p.stat()[0] == 2
    p.dele(2)
    assert p.quit().endswith(b"(1 message left)")
    remaining = pop3server.messages(ALICE)
    assert len(remaining) == 1 and b"Subject: message 1" in remaining[0]


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_maildrop_locked_against_second_session(pop3server: RunningServer) -> None:
    put(pop3server, ALICE, message(1))
    first = login(pop3server)
    second = connect(pop3server)
    second.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
        second.pass_(USERS[ALICE])
    # Another user is not affected.
    other = login(pop3server, BOB)
    other.quit()
    first.quit()
    second.user(ALICE)
    assert second.pass_(USERS[ALICE]).startswith(b"+OK")
    second.quit()


def wait_unlocked(server: RunningServer, address: str) -> poplib.POP3:
    """Log in as soon as the server has noticed the previous session is gone."""
    deadline = time.monotonic() + 10
    while True:
        p = connect(server)
        p.user(address)
        try:
            p.pass_(USERS[address])
            return p
        except poplib.error_proto as exc:
            p.close()
            if b"IN-USE" not in exc.args[0] or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_dropped_connection_deletes_nothing(pop3server: RunningServer) -> None:
    put(pop3server, ALICE, message(1), message(2))
    p = login(pop3server)
    p.dele(1)
    p.dele(2)
    p.sock.shutdown(socket.SHUT_RDWR)  # gone without QUIT
    p.close()
    p = wait_unlocked(pop3server, ALICE)
    assert p.stat()[0] == 2
    p.quit()
    assert len(pop3server.messages(ALICE)) == 2


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_quit_removes_deleted_messages(pop3server: RunningServer) -> None:
    put(pop3server, ALICE, message(1), message(2), message(3))
    p = login(pop3server)
    p.dele(1)
    p.dele(3)
    assert p.quit().endswith(b"(1 message left)")
    remaining = pop3server.messages(ALICE)
    assert len(remaining) == 1 and b"Subject: message 2" in remaining[0]


def test_wrong_password_same_reply_whether_user_exists(pop3server: RunningServer) -> None:
    replies = []
    for user in (ALICE, "nobody@example.test"):
        p = connect(pop3server)
        assert p.user(user) == b"+OK"
        with pytest.raises(poplib.error_proto) as info:
            p.pass_("wrong")
        replies.append(info.value.args[0])
        p.quit()
    assert replies[0] == replies[1] == b"-ERR [AUTH] Authentication failed"
    # The session stays usable after a failure.
    p = connect(pop3server)
    p.user(ALICE)
    with pytest.raises(poplib.error_proto):
        p.pass_("wrong again")
    p.user(ALICE)
    assert p.pass_(USERS[ALICE]).startswith(b"+OK")
    p.quit()


def test_failures_are_counted_by_the_throttle(pop3server: RunningServer) -> None:
    throttle = pop3server.server.throttle  # type: ignore[union-attr]
    p = connect(pop3server)
    for _ in range(2):
        p.user(BOB)
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            p.pass_("nope")
    # The next attempt from this address would be delayed.
    assert throttle.before_attempt("127.0.0.1", BOB, time.monotonic()) > 0
    p.quit()


def test_bare_lf_message_size_matches_retr(pop3server: RunningServer) -> None:
    """An IMAP-APPENDed message with Unix line endings: LIST counts CRLF octets."""
    raw = b"Subject: unix\n\n.dot line\nsecond\nno final newline"

    async def append() -> None:
        account = await pop3server.store.get_account(ALICE)
        assert account is not None
        box = await pop3server.store.get_mailbox(account.id, "INBOX")
        assert box is not None
        await pop3server.store.append(box, raw)

    pop3server.call(append())
    put(pop3server, ALICE, message(1))
    p = login(pop3server)
    got = retr(p, 1)
    assert got == b"Subject: unix\r\n\r\n.dot line\r\nsecond\r\nno final newline\r\n"
    assert p.list(1) == b"+OK 1 %d" % len(got)
    total = len(got) + len(retr(p, 2))
    assert p.stat() == (2, total)
    p.quit()


def test_errors_keep_session_usable(pop3server: RunningServer) -> None:
    put(pop3server, ALICE, message(1))
    p = login(pop3server)
    for bad in ("XYZZY", "RETR 99", "RETR x", "TOP 1", "USER bob", "N" * 300):
        with pytest.raises(poplib.error_proto, match="-ERR"):
            p._shortcmd(bad)
    assert p.noop() == b"+OK"
    assert p.stat()[0] == 1
    p.quit()


def test_commands_before_login_refused(pop3server: RunningServer) -> None:
    p = connect(pop3server)
    for cmd in ("STAT", "LIST", "RETR 1", "NOOP"):
        with pytest.raises(poplib.error_proto, match="not valid in this state"):
            p._shortcmd(cmd)
    p.quit()


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_listing_follows_changes_between_sessions(pop3server: RunningServer) -> None:
    """The per-process maildrop cache (net/pop3.py MaildropCache) must see new
    mail, expunges by other sessions (IMAP), and flag-only changes."""
    uids = put(pop3server, ALICE, message(1), message(2), message(3))
    p = login(pop3server)
    assert p.stat()[0] == 3
    _, first_uidl, _ = p.uidl()
    p.quit()

    async def change() -> None:
        store = pop3server.store
        account = await store.get_account(ALICE)
        assert account is not None
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        await store.expunge(box, [uids[1]])  # as an IMAP EXPUNGE would
        await store.store_flags(box, [uids[0]], ["\\Seen"], "add")
        await store.append(box, b"Subject: unix\n\nbare LF body\n")

    pop3server.call(change())
    p = login(pop3server)
    stored = pop3server.messages(ALICE)
    assert p.stat() == (3, sum(len(pop3_bytes(m)) for m in stored))
    assert retr(p, 3) == b"Subject: unix\r\n\r\nbare LF body\r\n"
    assert p.list(3) == b"+OK 3 %d" % len(b"Subject: unix\r\n\r\nbare LF body\r\n")
    _, uidl, _ = p.uidl()
    assert uidl[0].split()[1] == first_uidl[0].split()[1]
    assert uidl[1].split()[1] == first_uidl[2].split()[1]
    assert retr(p, 2) == stored[1]
    p.quit()


def pop3_bytes(data: bytes) -> bytes:
    from mailyard.protocols.pop3.engine import pop3_message_bytes

    return pop3_message_bytes(data)


def test_cli_apop_secret(tmp_path, capsys, monkeypatch) -> None:  # noqa: ANN001
    """`mailyard user apop-secret` creates, shows and removes the APOP secret
    without touching the login password."""
    import io

    from mailyard.cli import main

    data = str(tmp_path / "d")
    assert main(["--data", data, "init", "--domain", "example.test"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main(["--data", data, "user", "add", "carol@example.test", "--password-stdin"]) == 0
    capsys.readouterr()
    assert main(["--data", data, "user", "apop-secret", "carol@example.test"]) == 0
    secret = capsys.readouterr().out.split()[-1]
    assert len(secret) >= 20
    assert main(["--data", data, "user", "apop-secret", "carol@example.test", "--show"]) == 0
    assert capsys.readouterr().out.strip() == secret
    assert main(["--data", data, "user", "apop-secret", "carol@example.test", "--disable"]) == 0
    capsys.readouterr()
    assert main(["--data", data, "user", "apop-secret", "carol@example.test", "--show"]) == 0
    assert "no APOP secret" in capsys.readouterr().out
    assert main(["--data", data, "user", "apop-secret", "nobody@example.test"]) == 1


def test_stls_upgrade_and_injection_discarded(pop3server: RunningServer) -> None:
    """STLS (RFC 2595) with the server's certificate: poplib.stls() works, and
    a command pipelined in plaintext after STLS is not executed."""
    import ssl

    assert pop3server.server is not None
    cert, _key = pop3server.server.cert_paths()  # the self-signed pair made at start
    client_ctx = ssl.create_default_context(cafile=str(cert))
    put(pop3server, ALICE, message(1))

    p = connect(pop3server)
    assert "STLS" in p.capa()
    assert p.stls(client_ctx).startswith(b"+OK")
    assert "STLS" not in p.capa()
    p.user(ALICE)
    p.pass_(USERS[ALICE])
    assert p.stat()[0] == 1
    p.quit()

    # The injection attack: "STLS\r\nUSER x\r\n" in one segment; USER must vanish.
    raw = socket.create_connection((pop3server.host, pop3server.port("pop3")), timeout=10)
    raw.recv(512)
    raw.sendall(b"STLS\r\nUSER mallory@example.test\r\n")
    assert raw.recv(512) == b"+OK Begin TLS negotiation\r\n"
    tls = client_ctx.wrap_socket(raw, server_hostname="mx.example.test")
    tls.sendall(b"PASS anything\r\n")
    assert tls.recv(512) == b"-ERR USER first\r\n"
    tls.sendall(b"QUIT\r\n")
    tls.recv(512)
    tls.close()


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_imap_session_sees_pop3_deletions_after_quit(pop3server: RunningServer) -> None:
    import imaplib

    put(pop3server, ALICE, message(1), message(2))
    imap = imaplib.IMAP4(pop3server.host, pop3server.port("imap"), timeout=10)
    imap.login(ALICE, USERS[ALICE])
    assert imap.select("INBOX")[1] == [b"2"]
    p = login(pop3server)
    p.dele(1)
    imap.noop()
    assert imap.search(None, "ALL")[1] == [b"1 2"]  # not before QUIT
    p.quit()
    deadline = time.monotonic() + 10
    while True:
        imap.noop()
        if imap.search(None, "ALL")[1] == [b"1"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert imap.search(None, "ALL")[1] == [b"1"]
    _, fetched = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"message 2" in fetched[0][1]
    imap.logout()
