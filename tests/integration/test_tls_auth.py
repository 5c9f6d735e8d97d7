"""TLS and authentication on every protocol, through the stdlib clients.

STARTTLS (SMTP RFC 3207, IMAP RFC 9051 6.2.1, POP3 STLS RFC 2595), implicit
TLS (RFC 8314: smtps, imaps, pop3s), SASL PLAIN / LOGIN / SCRAM-SHA-256,
the plaintext-password policy, STARTTLS command injection, wrong passwords,
and the shared login throttle's lockout and recovery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import imaplib
import logging
import poplib
import secrets
import smtplib
import socket
import ssl
import sys
import time
import warnings
from collections.abc import Callable

import pytest

from mailyard.config import Config
from tests.conftest import USERS, RunningServer

ALICE = "alice@example.test"
BOB = "bob@example.test"
HOSTNAME = "mx.example.test"


def client_context(server: RunningServer) -> ssl.SSLContext:
    """Trust exactly the server's (self-signed) certificate; TLS 1.2 minimum."""
    ctx = ssl.create_default_context(cafile=str(server.data_dir / "tls" / "cert.pem"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def no_loopback_plaintext(cfg: Config) -> None:
    """Treat the loopback test client like a remote one: passwords need TLS."""
    cfg.auth.allow_plaintext_on_loopback = False


class ScramClient:
    """The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677), as a callable for
    imaplib.authenticate (challenge bytes in, response bytes out)."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password
        self.nonce = secrets.token_hex(12)
        self.first_bare = f"n={user},r={self.nonce}"
        self.step = 0
        self.expected_v = b""

    def first(self) -> bytes:
        return b"n,," + self.first_bare.encode()

    def final(self, server_first: bytes) -> bytes:
        attrs = dict(kv.split("=", 1) for kv in server_first.decode().split(","))
        assert attrs["r"].startswith(self.nonce)
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.expected_v = b"v=" + base64.b64encode(hmac.digest(server_key, auth_message, "sha256"))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def __call__(self, challenge: bytes) -> bytes:
        self.step += 1
        if self.step == 1:
            return self.first()  # imaplib sends no initial response: "+ " first
        if self.step == 2:
            return self.final(challenge)
        assert challenge == self.expected_v  # the server proved it knows the key
        return b""


# --- SMTP ---------------------------------------------------------------------------


def submission(server: RunningServer, port: str = "submission") -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port(port), local_hostname="client.example.test", timeout=10)


def message(sender: str = ALICE, extra: bytes = b"") -> bytes:
    return (
        f"From: {sender}\r\nTo: {BOB}\r\nSubject: hi\r\n".encode() + extra + b"\r\nHello Bob.\r\n"
    )


def test_smtp_starttls_and_auth_plain_submission(mailserver: RunningServer) -> None:
    with submission(mailserver) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        s.starttls(context=client_context(mailserver))
        s.ehlo()
        assert not s.has_extn("starttls")  # RFC 3207 4.2: not offered again
        assert s.esmtp_features["auth"].split() == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
        assert s.login(ALICE, USERS[ALICE])[0] == 235
        assert s.sendmail(ALICE, [BOB], message()) == {}
    (stored,) = mailserver.messages(BOB)
    assert b"with ESMTPSA id" in stored  # RFC 3848: TLS + AUTH
    header = stored.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nDate: " in header and b"\r\nMessage-ID: <" in header  # RFC 6409 8
    assert stored.endswith(b"\r\n\r\nHello Bob.\r\n")


def test_smtp_auth_login_classic_prompts(mailserver: RunningServer) -> None:
    """AUTH LOGIN: 334 VXNlcm5hbWU6 ("Username:"), 334 UGFzc3dvcmQ6 ("Password:")."""
    with submission(mailserver) as s:
        s.ehlo()
        s.starttls(context=client_context(mailserver))
        s.ehlo()
        code, text = s.docmd("AUTH", "LOGIN")
        assert (code, text) == (334, b"VXNlcm5hbWU6")
        code, text = s.docmd(base64.b64encode(ALICE.encode()).decode())
        assert (code, text) == (334, b"UGFzc3dvcmQ6")
        code, text = s.docmd(base64.b64encode(USERS[ALICE].encode()).decode())
        assert code == 235 and text.startswith(b"2.7.0")
        # RFC 4954 4: only one successful AUTH per session
        assert s.docmd("AUTH", "PLAIN")[0] == 503


def test_smtp_auth_login_with_initial_response_and_plain_sasl_ir(mailserver: RunningServer) -> None:
    with submission(mailserver) as s:
        s.ehlo()
        s.starttls(context=client_context(mailserver))
        s.ehlo()
        code, text = s.docmd("AUTH", "LOGIN " + base64.b64encode(ALICE.encode()).decode())
        assert (code, text) == (334, b"UGFzc3dvcmQ6")
        assert s.docmd(base64.b64encode(USERS[ALICE].encode()).decode())[0] == 235
    with submission(mailserver) as s:
        s.ehlo()
        s.starttls(context=client_context(mailserver))
        s.ehlo()
        token = base64.b64encode(f"\0{BOB}\0{USERS[BOB]}".encode()).decode()
        assert s.docmd("AUTH", "PLAIN " + token)[0] == 235


def test_smtp_auth_scram_sha256_without_tls(make_server: Callable[..., RunningServer]) -> None:
    """SCRAM never sends the password, so it is offered without TLS."""
    server = make_server(no_loopback_plaintext)
    with submission(server) as s:
        s.ehlo()
        assert s.esmtp_features["auth"].split() == ["SCRAM-SHA-256"]
        scram = ScramClient(ALICE, USERS[ALICE])
        code, text = s.docmd("AUTH", "SCRAM-SHA-256 " + base64.b64encode(scram.first()).decode())
        assert code == 334
        code, text = s.docmd(base64.b64encode(scram.final(base64.b64decode(text))).decode())
        assert code == 334 and base64.b64decode(text) == scram.expected_v
        assert s.docmd("")[0] == 235
        assert s.sendmail(ALICE, [BOB], message()) == {}
    (stored,) = server.messages(BOB)
    assert b"with ESMTPA id" in stored


def test_smtp_plaintext_mechanisms_need_tls(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(no_loopback_plaintext)
    token = base64.b64encode(f"\0{ALICE}\0{USERS[ALICE]}".encode()).decode()
    with submission(server) as s:
        s.ehlo()
        assert s.docmd("AUTH", "PLAIN " + token) == (538, b"5.7.11 Encryption required for requested authentication mechanism")
        assert s.docmd("AUTH", "LOGIN")[0] == 538
        s.starttls(context=client_context(server))
        s.ehlo()
        assert "PLAIN" in s.esmtp_features["auth"]
        assert s.docmd("AUTH", "PLAIN " + token)[0] == 235


def test_smtps_implicit_tls(mailserver: RunningServer) -> None:
    with smtplib.SMTP_SSL(
        mailserver.host, mailserver.port("smtps"), local_hostname="client.example.test",
        context=client_context(mailserver), timeout=10,
    ) as s:
        s.ehlo()
        assert not s.has_extn("starttls")
        assert s.login(BOB, USERS[BOB])[0] == 235
        assert s.sendmail(BOB, [ALICE], message(BOB, b"Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n")) == {}
    (stored,) = mailserver.messages(ALICE)
    assert b"with ESMTPSA id" in stored
    assert stored.count(b"\r\nDate: ") == 1  # present already: not added again


def test_submission_requires_auth_and_own_sender(mailserver: RunningServer) -> None:
    with submission(mailserver) as s:
        s.ehlo()
        s.starttls(context=client_context(mailserver))
        s.ehlo()
        code, text = s.mail(ALICE)
        assert (code, text[:5]) == (530, b"5.7.0")  # RFC 4954 6
        s.login(ALICE, USERS[ALICE])
        code, text = s.mail(BOB)
        assert (code, text[:5]) == (553, b"5.7.1")  # not alice's address
        assert s.mail("someone@remote.test")[0] == 553
        assert s.mail("ALICE@Example.Test")[0] == 250  # case does not matter
        s.rset()
        assert s.mail("")[0] == 250  # null reverse-path (MDNs)
        s.rset()


def test_submission_alias_sender_and_remote_recipient(make_server: Callable[..., RunningServer]) -> None:
    async def seed(store) -> None:  # noqa: ANN001
        await store.add_alias("info@example.test", ["alice@example.test"])
        await store.add_alias("team@example.test", ["alice@example.test", "bob@example.test"])

    server = make_server(seed=seed)
    with submission(server) as s:
        s.ehlo()
        s.starttls(context=client_context(server))
        s.ehlo()
        s.login(ALICE, USERS[ALICE])
        assert s.mail("info@example.test")[0] == 250  # alias of alice only
        s.rset()
        assert s.mail("team@example.test")[0] == 553  # shared alias: not hers alone
        s.rset()
        assert s.mail(ALICE)[0] == 250
        code, _ = s.rcpt("carol@remote.test")
        if getattr(server.server, "queue", None) is None:
            assert code == 451  # no outbound queue yet (issue #6): try later
        else:
            assert code == 250


def test_smtp_wrong_password(mailserver: RunningServer) -> None:
    with submission(mailserver) as s:
        s.ehlo()
        s.starttls(context=client_context(mailserver))
        s.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            s.login(ALICE, "wrong")
        assert err.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("nobody@example.test", "wrong")
        assert s.mail(ALICE)[0] == 530


def test_smtp_fifth_failed_auth_closes_connection(make_server: Callable[..., RunningServer]) -> None:
    def short_delays(cfg: Config) -> None:
        # What is checked is the per-connection count ([auth]
        # smtp_connection_max_failures), not the throttle's doubling delays
        # (1+2+4+8 s by default, checked by the throttle's own tests).
        cfg.auth.base_delay = 0.01
        cfg.auth.max_delay = 0.05

    mailserver = make_server(short_delays)
    with submission(mailserver) as s:
        s.ehlo()
        s.starttls(context=client_context(mailserver))
        s.ehlo()
        bad = base64.b64encode(f"\0{ALICE}\0wrong".encode()).decode()
        for _ in range(4):
            assert s.docmd("AUTH", "PLAIN " + bad)[0] == 535
        code, text = s.docmd("AUTH", "PLAIN " + bad)
        assert (code, text[:5]) == (421, b"4.7.0")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.noop()


def test_received_names_the_tls_version(mailserver: RunningServer) -> None:
    with smtplib.SMTP_SSL(
        mailserver.host, mailserver.port("smtps"), context=client_context(mailserver), timeout=10
    ) as s:
        s.login(ALICE, USERS[ALICE])
        s.sendmail(ALICE, [BOB], message())
    (stored,) = mailserver.messages(BOB)
    received = stored[stored.index(b"Received:"):].split(b";", 1)[0]
    assert b"(TLSv1." in received and b"with ESMTPSA" in received


def test_mx_port_offers_starttls_not_auth(mailserver: RunningServer) -> None:
    with smtplib.SMTP(mailserver.host, mailserver.port("smtp"), timeout=10) as s:
        s.ehlo()
        assert s.has_extn("starttls") and not s.has_extn("auth")
        s.starttls(context=client_context(mailserver))
        s.ehlo()
        assert s.sendmail("carol@remote.test", [ALICE], message("carol@remote.test")) == {}
    (stored,) = mailserver.messages(ALICE)
    assert b"with ESMTPS id" in stored
    assert b"Message-ID" not in stored  # the MX does not complete messages


# --- STARTTLS command injection (RFC 3207 4.2, CVE-2011-0411 class) -------------------


def _recv_line(sock: socket.socket | ssl.SSLSocket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def _recv_reply(sock: socket.socket | ssl.SSLSocket) -> bytes:
    """One whole (possibly multi-line) SMTP reply."""
    out = b""
    while True:
        line = _recv_line(sock)
        out += line
        if len(line) < 4 or line[3:4] != b"-":
            return out


def test_smtp_starttls_injection_discarded(mailserver: RunningServer) -> None:
    ctx = client_context(mailserver)
    raw = socket.create_connection((mailserver.host, mailserver.port("submission")), timeout=10)
    _recv_reply(raw)
    raw.sendall(b"EHLO client.example.test\r\n")
    _recv_reply(raw)
    token = base64.b64encode(f"\0{ALICE}\0{USERS[ALICE]}".encode())
    # Everything after STARTTLS in the same segment is the attacker's.
    raw.sendall(b"STARTTLS\r\nEHLO evil\r\nAUTH PLAIN " + token + b"\r\nMAIL FROM:<" + ALICE.encode() + b">\r\n")
    assert _recv_reply(raw).startswith(b"220 ")
    tls = ctx.wrap_socket(raw, server_hostname=HOSTNAME)
    tls.sendall(b"MAIL FROM:<" + ALICE.encode() + b">\r\n")
    # Neither the EHLO nor the AUTH nor the MAIL sent in the clear took effect.
    assert _recv_reply(tls).startswith(b"503 ")
    tls.sendall(b"EHLO client.example.test\r\n")
    assert b"AUTH SCRAM-SHA-256 PLAIN LOGIN" in _recv_reply(tls)
    tls.sendall(b"MAIL FROM:<" + ALICE.encode() + b">\r\n")
    assert _recv_reply(tls).startswith(b"530 5.7.0")  # not authenticated
    tls.sendall(b"QUIT\r\n")
    _recv_reply(tls)
    tls.close()


def test_smtp_plaintext_after_starttls_reply_never_runs(mailserver: RunningServer) -> None:
    """Plaintext sent in a later segment, before the handshake: the server is not
    reading then, so it reaches the TLS layer and the handshake fails."""
    ctx = client_context(mailserver)
    raw = socket.create_connection((mailserver.host, mailserver.port("smtp")), timeout=10)
    _recv_reply(raw)
    raw.sendall(b"EHLO client.example.test\r\n")
    _recv_reply(raw)
    raw.sendall(b"STARTTLS\r\n")
    assert _recv_reply(raw).startswith(b"220 ")
    raw.sendall(b"MAIL FROM:<evil@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
    # The stimulus, not an ordering: the injected lines sit in the server's
    # socket before the ClientHello, where a server that still read
    # plaintext after its 220 would take them as commands.
    time.sleep(0.2)
    with pytest.raises((ssl.SSLError, OSError)):
        tls = ctx.wrap_socket(raw, server_hostname=HOSTNAME)
        tls.sendall(b"DATA\r\n")
        reply = _recv_reply(tls)
        assert reply.startswith(b"503 ")  # if it ever got this far: nothing was carried over
        raise ssl.SSLError("handshake unexpectedly succeeded, but the injection was discarded")
    raw.close()


def test_imap_starttls_injection_discarded(mailserver: RunningServer) -> None:
    ctx = client_context(mailserver)
    raw = socket.create_connection((mailserver.host, mailserver.port("imap")), timeout=10)
    assert b"STARTTLS" in _recv_line(raw)
    raw.sendall(f"a STARTTLS\r\nb LOGIN {ALICE} {USERS[ALICE]}\r\n".encode())
    assert _recv_line(raw).startswith(b"a OK")
    tls = ctx.wrap_socket(raw, server_hostname=HOSTNAME)
    tls.sendall(b"c SELECT INBOX\r\n")
    line = _recv_line(tls)
    assert line.startswith(b"c BAD"), line  # still not authenticated: the LOGIN vanished
    tls.sendall(b"d CAPABILITY\r\n")
    caps = _recv_line(tls)
    assert b"STARTTLS" not in caps and b"AUTH=PLAIN" in caps
    _recv_line(tls)
    tls.sendall(b"e LOGOUT\r\n")
    tls.close()


@pytest.fixture(params=["uvloop", "asyncio"])
def any_loop_server(request: pytest.FixtureRequest, make_server: Callable[..., RunningServer],
                    monkeypatch: pytest.MonkeyPatch) -> RunningServer:
    """A server on uvloop (when installed) and on the stock asyncio loop, which
    deliver data around a TLS handshake's completion in different orders."""
    if request.param == "asyncio":
        monkeypatch.setitem(sys.modules, "uvloop", None)  # RunningServer then takes asyncio's loop
    return make_server()


def _handshake_then_send(raw: socket.socket, ctx: ssl.SSLContext, command: bytes) -> bytes:
    """Finish a TLS handshake by hand and send ``command`` in the same segment
    as the client's Finished (as a TLS 1.3 client may); the server's answer."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=HOSTNAME)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            if outgoing.pending:
                raw.sendall(outgoing.read())
            data = raw.recv(65536)
            assert data
            incoming.write(data)
    tls.write(command)
    raw.sendall(outgoing.read())  # the client's Finished and the command together
    answer = b""
    while not answer.endswith(b"\r\n"):
        try:
            answer += tls.read(65536)
        except ssl.SSLWantReadError:
            data = raw.recv(65536)  # times out if the command was lost
            assert data, answer
            incoming.write(data)
    return answer


def test_imap_command_in_the_segment_that_ends_the_starttls_handshake(any_loop_server: RunningServer) -> None:
    """A command sent under TLS with the client's Finished must be answered,
    not discarded with what came before the handshake."""
    ctx = client_context(any_loop_server)
    raw = socket.create_connection((any_loop_server.host, any_loop_server.port("imap")), timeout=10)
    assert b"STARTTLS" in _recv_line(raw)
    raw.sendall(b"a STARTTLS\r\n")
    assert _recv_line(raw).startswith(b"a OK")
    assert _handshake_then_send(raw, ctx, b"b NOOP\r\n").startswith(b"b OK")
    raw.close()


def test_pop3_command_in_the_segment_that_ends_the_stls_handshake(any_loop_server: RunningServer) -> None:
    ctx = client_context(any_loop_server)
    raw = socket.create_connection((any_loop_server.host, any_loop_server.port("pop3")), timeout=10)
    _recv_line(raw)
    raw.sendall(b"STLS\r\n")
    assert _recv_line(raw).startswith(b"+OK")
    assert _handshake_then_send(raw, ctx, b"NOOP\r\n").startswith(b"-ERR")  # answered (not authenticated)
    raw.close()


def test_pop3_stls_injection_discarded(mailserver: RunningServer) -> None:
    ctx = client_context(mailserver)
    raw = socket.create_connection((mailserver.host, mailserver.port("pop3")), timeout=10)
    _recv_line(raw)
    raw.sendall(f"STLS\r\nUSER {ALICE}\r\n".encode())
    assert _recv_line(raw).startswith(b"+OK")
    tls = ctx.wrap_socket(raw, server_hostname=HOSTNAME)
    tls.sendall(f"PASS {USERS[ALICE]}\r\n".encode())
    assert _recv_line(tls).startswith(b"-ERR")  # USER was discarded
    tls.sendall(b"QUIT\r\n")
    tls.close()


# --- IMAP -------------------------------------------------------------------------------


def test_imap_starttls_login_and_logindisabled(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(no_loopback_plaintext)
    c = imaplib.IMAP4(server.host, server.port("imap"), timeout=10)
    assert "LOGINDISABLED" in c.capabilities and "STARTTLS" in c.capabilities
    assert "AUTH=PLAIN" not in c.capabilities
    typ, data = c._simple_command("LOGIN", ALICE, c._quote(USERS[ALICE]))  # what imaplib.login would send
    assert typ == "NO" and data[0].startswith(b"[PRIVACYREQUIRED]")
    c.starttls(client_context(server))
    assert "LOGINDISABLED" not in c.capabilities and "AUTH=PLAIN" in c.capabilities
    assert c.login(ALICE, USERS[ALICE])[0] == "OK"
    assert c.select("INBOX")[0] == "OK"
    c.logout()


def test_imap_privacyrequired_for_plain(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(no_loopback_plaintext)
    raw = socket.create_connection((server.host, server.port("imap")), timeout=10)
    _recv_line(raw)
    token = base64.b64encode(f"\0{ALICE}\0{USERS[ALICE]}".encode()).decode()
    raw.sendall(f"a AUTHENTICATE PLAIN {token}\r\nb LOGIN {ALICE} x\r\n".encode())
    assert _recv_line(raw).startswith(b"a NO [PRIVACYREQUIRED]")
    assert _recv_line(raw).startswith(b"b NO [PRIVACYREQUIRED]")
    raw.close()


def test_imaps_and_authenticate_mechanisms(mailserver: RunningServer) -> None:
    c = imaplib.IMAP4_SSL(mailserver.host, mailserver.port("imaps"), ssl_context=client_context(mailserver), timeout=10)
    assert "STARTTLS" not in c.capabilities and "AUTH=SCRAM-SHA-256" in c.capabilities
    assert c.authenticate("SCRAM-SHA-256", ScramClient(ALICE, USERS[ALICE]))[0] == "OK"
    assert c.select("INBOX")[0] == "OK"
    c.logout()

    answers = iter([BOB.encode(), USERS[BOB].encode()])
    c = imaplib.IMAP4_SSL(mailserver.host, mailserver.port("imaps"), ssl_context=client_context(mailserver), timeout=10)
    prompts: list[bytes] = []

    def login_mech(challenge: bytes) -> bytes:
        prompts.append(challenge)
        return next(answers)

    assert c.authenticate("LOGIN", login_mech)[0] == "OK"
    assert prompts == [b"Username:", b"Password:"]
    c.logout()


def test_imap_scram_wrong_password(mailserver: RunningServer) -> None:
    c = imaplib.IMAP4(mailserver.host, mailserver.port("imap"), timeout=10)
    c.starttls(client_context(mailserver))
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.authenticate("SCRAM-SHA-256", ScramClient(ALICE, "not-the-password"))
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.login(ALICE, "wrong")
    c.logout()


# --- POP3 -------------------------------------------------------------------------------


def test_pop3_stls_and_pop3s(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(no_loopback_plaintext)
    p = poplib.POP3(server.host, server.port("pop3"), timeout=10)
    caps = p.capa()
    assert "STLS" in caps and "USER" not in caps
    with pytest.raises(poplib.error_proto, match="AUTH"):
        p.user(ALICE)  # no passwords in the clear
    p.stls(client_context(server))
    assert "USER" in p.capa() and "STLS" not in p.capa()
    p.user(ALICE)
    p.pass_(USERS[ALICE])
    assert p.stat() == (0, 0)
    p.quit()

    p = poplib.POP3_SSL(server.host, server.port("pop3s"), context=client_context(server), timeout=10)
    assert "STLS" not in p.capa()
    p.user(BOB)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p.pass_("wrong")
    p.quit()
    p = poplib.POP3_SSL(server.host, server.port("pop3s"), context=client_context(server), timeout=10)
    p.user(BOB)
    p.pass_(USERS[BOB])
    p.quit()


# --- TLS versions and reload --------------------------------------------------------------


@pytest.mark.parametrize("port", ["smtps", "imaps", "pop3s"])
def test_tls_1_1_client_is_refused(mailserver: RunningServer, port: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client really offer TLS 1.1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with socket.create_connection((mailserver.host, mailserver.port(port)), timeout=10) as raw:
        # The server refuses: a protocol_version alert, or (uvloop) it just hangs up.
        with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|UNEXPECTED_EOF"):
            ctx.wrap_socket(raw, server_hostname=HOSTNAME)
    # and TLS 1.2 works
    ctx12 = client_context(mailserver)
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((mailserver.host, mailserver.port(port)), timeout=10) as raw:
        with ctx12.wrap_socket(raw, server_hostname=HOSTNAME) as tls:
            assert tls.version() == "TLSv1.2"


def test_certificate_reload(mailserver: RunningServer, tmp_path) -> None:  # noqa: ANN001
    """What SIGHUP does (ReloadableTLS.reload): new handshakes get the new
    certificate on implicit-TLS and STARTTLS ports; open sessions continue."""
    from mailyard.net.tls import create_self_signed

    old_pem = (mailserver.data_dir / "tls" / "cert.pem").read_text()
    p = poplib.POP3_SSL(mailserver.host, mailserver.port("pop3s"), context=client_context(mailserver), timeout=10)
    create_self_signed(HOSTNAME, mailserver.data_dir / "tls" / "cert.pem", mailserver.data_dir / "tls" / "key.pem")
    assert mailserver.server is not None and mailserver.server.tls is not None
    assert mailserver.server.tls.reload().ok
    new_ctx = client_context(mailserver)
    assert (mailserver.data_dir / "tls" / "cert.pem").read_text() != old_pem
    q = poplib.POP3_SSL(mailserver.host, mailserver.port("pop3s"), context=new_ctx, timeout=10)
    q.user(ALICE)
    q.pass_(USERS[ALICE])
    q.quit()
    with submission(mailserver) as s:
        s.ehlo()
        s.starttls(context=new_ctx)
    p.user(BOB)  # the old session is still fine
    p.pass_(USERS[BOB])
    p.quit()


# --- the shared login throttle ------------------------------------------------------------


def small_throttle(cfg: Config) -> None:
    cfg.auth.base_delay = 0.01
    cfg.auth.max_delay = 0.05
    cfg.auth.account_max_failures = 3
    cfg.auth.account_lockout = 1.5


def test_lockout_is_shared_across_protocols_and_recovers(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailyard")
    server = make_server(small_throttle)
    ctx = client_context(server)
    # Three failures: one each over SMTP, IMAP and POP3.
    with submission(server) as s:
        s.ehlo()
        s.starttls(context=ctx)
        s.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login(ALICE, "guess-1")
    c = imaplib.IMAP4_SSL(server.host, server.port("imaps"), ssl_context=ctx, timeout=10)
    with pytest.raises(imaplib.IMAP4.error):
        c.login(ALICE, "guess-2")
    c.logout()
    p = poplib.POP3_SSL(server.host, server.port("pop3s"), context=ctx, timeout=10)
    p.user(ALICE)
    with pytest.raises(poplib.error_proto):
        p.pass_("guess-3")
    p.quit()
    # Locked now: even the right password is refused, on every protocol.
    with submission(server) as s:
        s.ehlo()
        s.starttls(context=ctx)
        s.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            s.login(ALICE, USERS[ALICE])
        assert err.value.smtp_code == 454  # RFC 4954 6: temporary
    c = imaplib.IMAP4_SSL(server.host, server.port("imaps"), ssl_context=ctx, timeout=10)
    with pytest.raises(imaplib.IMAP4.error):
        c.login(ALICE, USERS[ALICE])
    c.logout()
    # Another account is not affected.
    c = imaplib.IMAP4_SSL(server.host, server.port("imaps"), ssl_context=ctx, timeout=10)
    assert c.login(BOB, USERS[BOB])[0] == "OK"
    c.logout()
    # The lockout ends.
    deadline = time.monotonic() + 30
    while True:
        c = imaplib.IMAP4_SSL(server.host, server.port("imaps"), ssl_context=ctx, timeout=10)
        try:
            c.login(ALICE, USERS[ALICE])
            break
        except imaplib.IMAP4.error:
            assert time.monotonic() < deadline, "lockout never ended"
            time.sleep(0.5)
        finally:
            c.logout()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("login_failed ") and "user=alice@example.test" in m for m in messages)
    assert any(m.startswith("login_failed ") and "reason=locked-out" in m for m in messages)
    for secret in ("guess-1", "guess-2", "guess-3", USERS[ALICE]):
        assert not any(secret in m for m in messages), "a password reached the log"
