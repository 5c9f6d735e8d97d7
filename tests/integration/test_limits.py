"""Resource limits through real sockets: slow clients, connection caps, huge
IMAP literals, oversized and pathological messages, a full disk.

Every limit is configured small so the tests are quick; none asserts a time
(the figures are in ``python -m bench limits``).
"""

from __future__ import annotations

import imaplib
import poplib
import select
import smtplib
import socket
import ssl
import time
from collections.abc import Callable

import pytest

from tests.conftest import USERS, RunningServer

ALICE = "alice@example.test"
TRICKLE_GAP = 0.2  # seconds between the bytes a slow client sends


# --- helpers -------------------------------------------------------------------
def _connect(server: RunningServer, service: str, source: str | None = None) -> socket.socket:
    sock = socket.create_connection(
        (server.host, server.port(service)), timeout=10, source_address=(source, 0) if source else None
    )
    if service in ("smtps", "imaps", "pop3s"):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(sock)
    return sock


def _read_line(sock: socket.socket) -> bytes:
    out = bytearray()
    while not out.endswith(b"\n"):
        b = sock.recv(1)
        if not b:
            break
        out += b
    return bytes(out)


def _read_until_closed(sock: socket.socket, limit: float = 20.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(limit)
    out = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _trickle_until_answered(sock: socket.socket, payload: bytes, during: Callable[[], None]) -> bytes:
    """Send ``payload`` one byte at a time, TRICKLE_GAP apart, calling ``during``
    after the first byte; stop once the server answers. Returns the answer
    and whatever follows until the server closes."""
    sock.setblocking(True)
    for i, byte in enumerate(payload):
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        if i == 0:
            during()
        ready, _, _ = select.select([sock], [], [], TRICKLE_GAP)
        if ready:
            break
    return _read_until_closed(sock)


def _smtp_served(server: RunningServer, service: str = "smtp") -> None:
    with smtplib.SMTP(server.host, server.port(service), timeout=10) as s:
        assert s.ehlo()[0] == 250
        assert s.noop()[0] == 250


def _imap_served(server: RunningServer) -> None:
    m = imaplib.IMAP4(server.host, server.port("imap"), timeout=10)
    try:
        m.login(ALICE, USERS[ALICE])
        assert m.noop()[0] == "OK"
    finally:
        m.logout()


def _pop3_served(server: RunningServer) -> None:
    p = poplib.POP3(server.host, server.port("pop3"), timeout=10)
    try:
        p.user(ALICE)
        p.pass_(USERS[ALICE])
        assert p.stat()[0] >= 0
    finally:
        p.quit()


SERVED = {"smtp": _smtp_served, "imap": _imap_served, "pop3": _pop3_served}


def _short_deadlines(cfg) -> None:  # noqa: ANN001
    cfg.limits.command_deadline = 1.0
    cfg.limits.literal_deadline = 1.0
    cfg.smtp.timeout_data_term = 1.0


# --- slow clients ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("service", "payload", "answer"),
    [
        ("smtp", b"EHLO " + b"x" * 200 + b"\r\n", b"421 4.4.2 "),
        ("imap", b"a1 LOGIN " + b"x" * 200 + b"\r\n", b"* BYE "),
        ("pop3", b"USER " + b"x" * 200 + b"\r\n", b"-ERR "),
    ],
)
def test_trickling_command_line_is_cut_off_while_others_are_served(
    make_server: Callable[..., RunningServer], service: str, payload: bytes, answer: bytes
) -> None:
    """One byte every TRICKLE_GAP seconds restarts the idle timer (300 s here)
    each time, but the line must be complete within command_deadline."""
    server = make_server(_short_deadlines)
    served: list[bool] = []
    with _connect(server, service) as slow:
        assert _read_line(slow)  # greeting
        rest = _trickle_until_answered(slow, payload, lambda: (SERVED[service](server), served.append(True)))
    assert served == [True]
    assert rest.startswith(answer), rest
    # the server is still there for everyone else
    SERVED[service](server)


def test_trickling_smtp_data_is_cut_off_and_nothing_is_delivered(make_server: Callable[..., RunningServer]) -> None:
    """RFC 5321 4.5.3.2: a whole DATA transfer gets smtp.timeout_data_term,
    however the client spaces its lines."""
    server = make_server(_short_deadlines)
    with _connect(server, "smtp") as slow:
        f = slow.makefile("rb")
        f.readline()
        slow.sendall(b"HELO slow\r\nMAIL FROM:<x@example.org>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        for _ in range(4):
            assert f.readline()[:1] in (b"2", b"3")
        lines = b"".join(b"Line %d\r\n" % i for i in range(200))
        rest = _trickle_until_answered(slow, lines, lambda: _smtp_served(server))
    assert rest.startswith(b"421 4.4.2 "), rest
    assert server.messages(ALICE) == []


def test_trickling_imap_literal_is_cut_off(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(_short_deadlines)
    with _connect(server, "imap") as slow:
        f = slow.makefile("rb")
        f.readline()
        slow.sendall(b'a1 LOGIN alice@example.test "%s"\r\n' % USERS[ALICE].encode())
        assert f.readline().startswith(b"a1 OK")
        slow.sendall(b"a2 APPEND INBOX {500}\r\n")
        assert f.readline().startswith(b"+ ")
        rest = _trickle_until_answered(slow, b"x" * 500, lambda: _imap_served(server))
    assert rest.startswith(b"* BYE "), rest
    assert server.messages(ALICE) == []


def test_prompt_commands_are_not_cut_off(make_server: Callable[..., RunningServer]) -> None:
    """The deadline bounds one command, not the session: a client that sends
    whole commands slowly (each well within the deadline) keeps its session."""
    server = make_server(_short_deadlines)
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=10) as s:
        for _ in range(4):
            assert s.noop()[0] == 250
            time.sleep(0.4)  # 1.6 s in all, past the 1 s deadline
        assert s.noop()[0] == 250


# --- connection caps -----------------------------------------------------------------
REFUSALS = {
    "smtp": b"421 4.7.0 ",
    "submission": b"421 4.7.0 ",
    "smtps": b"421 4.7.0 ",
    "imap": b"* BYE ",
    "imaps": b"* BYE ",
    "pop3": b"-ERR ",
    "pop3s": b"-ERR ",
}
GREETINGS = {"smtp": b"220 ", "imap": b"* OK ", "pop3": b"+OK "}


def _greeting(service: str) -> bytes:
    return GREETINGS[service.rstrip("s").replace("submission", "smtp")]


def _wait_until_admitted(server: RunningServer, service: str, source: str) -> None:
    """Slots are freed when the server notices a close; retry for a while."""
    give_up = time.monotonic() + 10
    while True:
        with _connect(server, service, source) as sock:
            line = _read_line(sock)
        if line.startswith(_greeting(service)):
            return
        assert time.monotonic() < give_up, line
        time.sleep(0.05)


@pytest.mark.parametrize("service", list(REFUSALS))
def test_connection_caps_per_address_and_in_total(make_server: Callable[..., RunningServer], service: str) -> None:
    def configure(cfg) -> None:  # noqa: ANN001
        cfg.limits.max_connections_per_ip = 2
        cfg.limits.max_connections = 3

    server = make_server(configure)
    held = []
    try:
        # per address: two from 127.0.0.1, the third is refused
        for _ in range(2):
            held.append(_connect(server, service, "127.0.0.1"))
            assert _read_line(held[-1]).startswith(_greeting(service))
        with _connect(server, service, "127.0.0.1") as third:
            assert _read_until_closed(third).startswith(REFUSALS[service])
        # in total: a third address gets the last slot, a fourth is refused
        held.append(_connect(server, service, "127.0.0.2"))
        assert _read_line(held[-1]).startswith(_greeting(service))
        with _connect(server, service, "127.0.0.3") as fourth:
            assert _read_until_closed(fourth).startswith(REFUSALS[service])
    finally:
        for sock in held:
            sock.close()
    # the slots free up when the clients leave
    _wait_until_admitted(server, service, "127.0.0.3")
    _wait_until_admitted(server, service, "127.0.0.1")


# --- IMAP literals ---------------------------------------------------------------------
def _imap_login(server: RunningServer) -> tuple[socket.socket, Callable[[bytes], list[bytes]]]:
    sock = _connect(server, "imap")
    f = sock.makefile("rb")
    f.readline()

    def say(data: bytes, tag: bytes | None = None) -> list[bytes]:
        sock.sendall(data)
        lines = []
        while True:
            line = f.readline()
            lines.append(line)
            if not line or line.startswith(b"+ ") or (tag and line.startswith(tag + b" ")) or line.startswith(b"* BYE"):
                return lines

    assert say(b'a LOGIN alice@example.test "%s"\r\n' % USERS[ALICE].encode(), b"a")[-1].startswith(b"a OK")
    return sock, say


def test_imap_huge_literals_refused_before_anything_is_read(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(lambda cfg: setattr(cfg.smtp, "max_message_size", 100_000))
    sock, say = _imap_login(server)
    with sock:
        # RFC 9051 7.1 / RFC 4469 / RFC 7889: a synchronising APPEND literal
        # over the limit is answered NO [TOOBIG] instead of "+"; the client
        # never sends it and the session goes on.
        assert say(b"b APPEND INBOX {9999999999}\r\n", b"b")[-1].startswith(b"b NO [TOOBIG]")
        assert say(b"c APPEND INBOX {100001}\r\n", b"c")[-1].startswith(b"c NO [TOOBIG]")
        assert say(b"d APPEND INBOX ~{9999999999}\r\n", b"d")[-1].startswith(b"d NO [TOOBIG]")
        # any other literal has the (smaller) literal limit: BAD
        assert say(b"e SELECT {9999999999}\r\n", b"e")[-1].startswith(b"e BAD ")
        assert say(b"f NOOP\r\n", b"f")[-1].startswith(b"f OK")
        # within the limit: "+" and the APPEND works
        assert say(b"g APPEND INBOX {100000}\r\n")[-1].startswith(b"+ ")
        body = b"Subject: big\r\n\r\n" + b"y" * (100_000 - 18) + b"\r\n"
        assert say(body + b"\r\n", b"g")[-1].startswith(b"g OK")
        # RFC 7888 4: the octets of an oversized non-synchronising literal
        # are on their way and cannot be skipped safely: BAD [TOOBIG], BYE.
        lines = say(b"h APPEND INBOX {9999999999+}\r\n")
        assert lines[0].startswith(b"h BAD [TOOBIG]"), lines
        assert lines[-1].startswith(b"* BYE"), lines
        assert _read_until_closed(sock) == b""
    assert len(server.messages(ALICE)) == 1
    _imap_served(server)
