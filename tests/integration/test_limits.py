"""Resource limits through real sockets: slow clients, connection caps, huge
IMAP literals, oversized and pathological messages, a full disk.

Every limit is configured small so the tests are quick; none asserts a time
(the figures are in ``python -m bench limits``).
"""

from __future__ import annotations

import errno
import imaplib
import logging
import os
import poplib
import re
import select
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailyard import logs, metrics
from mailyard.config import Config
from mailyard.net import conncaps
from mailyard.protocols.contract import FLUSH_AT
from tests.conftest import USERS, RunningServer
from tests.integration.serve_process import MB, ServeProcess
from tests.waiting import wait_until

ALICE = "alice@example.test"
TRICKLE_GAP = 0.2  # seconds between the bytes a slow client sends


# --- helpers -------------------------------------------------------------------
IMPLICIT_TLS = ("smtps", "imaps", "pop3s", "https")


def _connect(server: RunningServer, service: str, source: str | None = None) -> socket.socket:
    sock = socket.create_connection(
        (server.host, server.port(service)), timeout=10, source_address=(source, 0) if source else None
    )
    if service in IMPLICIT_TLS:
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


def test_trickling_authenticate_response_is_cut_off(make_server: Callable[..., RunningServer]) -> None:
    """An AUTHENTICATE response line gets command_deadline in total, however
    the client spaces its bytes (each byte must not restart the deadline)."""
    server = make_server(_short_deadlines)
    with _connect(server, "imap") as slow:
        f = slow.makefile("rb")
        f.readline()
        slow.sendall(b"a1 AUTHENTICATE PLAIN\r\n")
        assert f.readline().startswith(b"+")
        rest = _trickle_until_answered(slow, b"A" * 200 + b"\r\n", lambda: _imap_served(server))
    assert rest.startswith(b"* BYE "), rest


def test_slow_append_gets_the_literal_deadline_not_the_command_one(
    make_server: Callable[..., RunningServer],
) -> None:
    """An APPEND whose literal takes longer than command_deadline (a slow link)
    is not cut off: the whole command has literal_deadline."""

    def configure(cfg) -> None:  # noqa: ANN001
        cfg.limits.command_deadline = 0.5
        cfg.limits.literal_deadline = 30.0

    server = make_server(configure)
    sock, say = _imap_login(server)
    with sock:
        body = b"Subject: slow\r\n\r\n" + b"s" * 3000 + b"\r\n"
        assert say(b"a APPEND INBOX {%d}\r\n" % len(body))[-1].startswith(b"+ ")
        for i in range(0, len(body), 1000):
            sock.sendall(body[i : i + 1000])
            time.sleep(0.4)  # 1.6 s in all, past the 0.5 s command deadline
        assert say(b"\r\n", b"a")[-1].startswith(b"a OK")
    assert server.messages(ALICE)[-1].endswith(body)


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
# What a client over a cap on a plain port reads before it is closed; on an
# implicit-TLS port it reads nothing (`_assert_refused`).
REFUSALS = {
    "smtp": b"421 4.7.0 ",
    "submission": b"421 4.7.0 ",
    "imap": b"* BYE ",
    "pop3": b"-ERR ",
}
GREETINGS = {"smtp": b"220 ", "imap": b"* OK ", "pop3": b"+OK "}


def _greeting(service: str) -> bytes:
    return GREETINGS[service.rstrip("s").replace("submission", "smtp")]


def _assert_refused(server: RunningServer, service: str, source: str) -> None:
    """A client over a cap is refused: on a plain port with its protocol's
    reply; on an implicit-TLS port its connection is closed before any TLS,
    so a TLS client's handshake fails and a bare connection reads nothing
    before the close."""
    if service not in IMPLICIT_TLS:
        with _connect(server, service, source) as sock:
            assert _read_until_closed(sock).startswith(REFUSALS[service])
        return
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _connect(server, service, source).close()
    with socket.create_connection((server.host, server.port(service)), timeout=10,
                                  source_address=(source, 0)) as sock:
        assert _read_until_closed(sock) == b""


def _wait_until_admitted(server: RunningServer, service: str, source: str) -> None:
    """Slots are freed when the server notices a close; retry for a while."""
    give_up = time.monotonic() + 10
    while True:
        try:
            with _connect(server, service, source) as sock:
                line = _read_line(sock)
        except (ssl.SSLError, ConnectionError) as exc:  # refused before TLS
            line = repr(exc).encode()
        if line.startswith(_greeting(service)):
            return
        assert time.monotonic() < give_up, line
        time.sleep(0.05)


def _two_per_address_three_in_total(cfg) -> None:  # noqa: ANN001
    cfg.limits.max_connections_per_ip = 2
    cfg.limits.max_connections = 3


@pytest.mark.parametrize("service", [*REFUSALS, "smtps", "imaps", "pop3s"])
def test_connection_caps_per_address_and_in_total(make_server: Callable[..., RunningServer], service: str) -> None:
    server = make_server(_two_per_address_three_in_total)
    held = []
    try:
        # per address: two from 127.0.0.1, the third is refused
        for _ in range(2):
            held.append(_connect(server, service, "127.0.0.1"))
            assert _read_line(held[-1]).startswith(_greeting(service))
        _assert_refused(server, service, "127.0.0.1")
        # in total: a third address gets the last slot, a fourth is refused
        held.append(_connect(server, service, "127.0.0.2"))
        assert _read_line(held[-1]).startswith(_greeting(service))
        _assert_refused(server, service, "127.0.0.3")
    finally:
        for sock in held:
            sock.close()
    # the slots free up when the clients leave
    _wait_until_admitted(server, service, "127.0.0.3")
    _wait_until_admitted(server, service, "127.0.0.1")


@pytest.mark.parametrize("service", ["smtp", "imaps"])
def test_refused_connections_write_a_bounded_number_of_log_lines(
    make_server: Callable[..., RunningServer], service: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client over a cap may open connections as fast as it likes: every
    one is refused and counted in the metric, but the log gets a budget of
    lines per listener and reason, and the next line after it says how many
    were held back."""
    now = [0.0]
    monkeypatch.setattr(conncaps, "_REFUSALS", logs.EventBudget(burst=5, window=10.0, clock=lambda: now[0]))
    counted: list[tuple[str, str]] = []
    monkeypatch.setattr(metrics, "count_connection_refused", lambda service, reason: counted.append((service, reason)))
    server = make_server(_two_per_address_three_in_total)
    caplog.set_level(logging.WARNING, logger="mailyard.net")
    held = [_connect(server, service, "127.0.0.1") for _ in range(2)]
    try:
        for sock in held:
            assert _read_line(sock).startswith(_greeting(service))
        for _ in range(15):
            _assert_refused(server, service, "127.0.0.1")
        refused = 15 * (2 if service in IMPLICIT_TLS else 1)  # (on TLS ports, a TLS client and a bare connection)
        now[0] += 10.0
        _assert_refused(server, service, "127.0.0.1")
    finally:
        for sock in held:
            sock.close()
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("connection_refused ")]
    per_check = 2 if service in IMPLICIT_TLS else 1
    assert len(refusals) == 5 + per_check, refusals  # the budget, then the last check's own
    assert refusals[5].endswith(f" suppressed={refused - 5}"), refusals[5]
    assert len(counted) == refused + per_check and {s for s, _ in counted} == {service}, counted


async def _loop_turn() -> None:
    """Nothing: run on the server's loop, it returns once the callbacks
    before it (a failure being logged) have run."""


def _fail_tls(server: RunningServer, service: str) -> None:
    """One client that fails its TLS handshake with garbage: after STARTTLS
    on a plain port, or at once on an implicit-TLS one; read until the
    server closes."""
    with socket.create_connection((server.host, server.port(service)), timeout=10) as sock:
        if service == "imap":
            assert _read_line(sock).startswith(b"* OK")
            sock.sendall(b"a STARTTLS\r\n")
            assert _read_line(sock).startswith(b"a OK")
        elif service == "smtp":
            assert _read_line(sock).startswith(b"220 ")
            sock.sendall(b"EHLO client.example.test\r\n")
            while not _read_line(sock).startswith(b"250 "):
                pass
            sock.sendall(b"STARTTLS\r\n")
            assert _read_line(sock).startswith(b"220 ")
        sock.sendall(b"GET / HTTP/1.0 and other things that are not TLS\r\n\r\n")
        _read_until_closed(sock)


@pytest.mark.parametrize("service", ["smtp", "imap", "imaps"])
def test_failed_tls_handshakes_write_a_bounded_number_of_log_lines(
    make_server: Callable[..., RunningServer], service: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client may fail TLS handshakes as fast as it connects (STARTTLS and
    then garbage, or garbage to an implicit-TLS port): every failure is
    counted in the metric, the log gets a budget of lines per listener and
    reason, and the next line after it says how many were held back."""
    from mailyard.net import tls

    now = [0.0]
    monkeypatch.setattr(tls, "_TLS_FAILURES", logs.EventBudget(burst=5, window=10.0, clock=lambda: now[0]))
    counted: list[tuple[str, str]] = []
    monkeypatch.setattr(metrics, "count_tls_failure", lambda service, reason: counted.append((service, reason)))
    server = make_server()
    caplog.set_level(logging.INFO, logger="mailyard.net")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("tls_failed ")]

    for _ in range(15):
        _fail_tls(server, service)
    # (the 15th is counted, and logged or held back, before the clock moves:
    # the line comes right after the count)
    wait_until(lambda: len(counted) == 15, 20, "15 failed handshakes counted")
    server.call(_loop_turn())
    now[0] += 10.0
    _fail_tls(server, service)
    wait_until(lambda: len(counted) == 16, 20, "the last failed handshake counted")
    server.call(_loop_turn())
    logged = lines()
    assert len(logged) == 6, logged  # the budget, then the last one's own
    assert logged[5].endswith(" suppressed=10"), logged[5]
    assert all(f"proto={service} " in line and " reason=protocol " in line for line in logged), logged
    assert counted == [(service, "protocol")] * 16


def _tls_failures(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The (service, reason) of every failed TLS handshake counted from now."""
    counted: list[tuple[str, str]] = []
    monkeypatch.setattr(metrics, "count_tls_failure", lambda service, reason: counted.append((service, reason)))
    return counted


@pytest.mark.parametrize("service", ["imaps", "imap"])
def test_a_tls_handshake_that_runs_past_its_timeout_is_a_timeout(
    make_server: Callable[..., RunningServer], service: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that begins a handshake and never finishes it (on an
    implicit-TLS port, or after STARTTLS) is cut at the handshake timeout
    (asyncio and uvloop say ConnectionAbortedError): counted and logged
    with reason ``timeout``."""
    from mailyard.net import accept, session_protocol

    if service == "imaps":
        monkeypatch.setattr(accept, "HANDSHAKE_TIMEOUT", 1.0)
    else:
        monkeypatch.setattr(session_protocol, "STARTTLS_TIMEOUT", 1.0)
    counted = _tls_failures(monkeypatch)
    server = make_server()
    caplog.set_level(logging.INFO, logger="mailyard.net")
    with socket.create_connection((server.host, server.port(service)), timeout=10) as sock:
        if service == "imap":
            assert _read_line(sock).startswith(b"* OK")
            sock.sendall(b"a STARTTLS\r\n")
            assert _read_line(sock).startswith(b"a OK")
        # a 16 KiB handshake record's header and the first bytes of its ClientHello
        sock.sendall(b"\x16\x03\x01" + (16384).to_bytes(2, "big") + b"\x01" + b"\x00" * 1000)
        _read_until_closed(sock)
    wait_until(lambda: bool(counted), 10, "the failed handshake counted")
    server.call(_loop_turn())
    assert counted == [(service, "timeout")]
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("tls_failed ")]
    assert len(logged) == 1 and f"proto={service} " in logged[0] and " reason=timeout " in logged[0], logged


def test_a_client_that_hangs_up_before_or_during_the_handshake_is_counted_not_logged(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A load balancer's or a monitor's health check of an implicit-TLS port
    connects and closes; a client may also hang up in the middle of its
    ClientHello. Both are counted (reason ``closed``) but write no line at
    INFO: only at DEBUG."""
    counted = _tls_failures(monkeypatch)
    server = make_server()
    caplog.set_level(logging.INFO, logger="mailyard.net")
    with socket.create_connection((server.host, server.port("imaps")), timeout=10):
        pass  # connect and close
    with socket.create_connection((server.host, server.port("imaps")), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01" + (16384).to_bytes(2, "big") + b"\x01" + b"\x00" * 1000)
    wait_until(lambda: len(counted) == 2, 10, "both failed handshakes counted")
    server.call(_loop_turn())
    assert counted == [("imaps", "closed")] * 2
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("tls_failed ")] == []
    caplog.set_level(logging.DEBUG, logger="mailyard.net")
    with socket.create_connection((server.host, server.port("imaps")), timeout=10):
        pass
    wait_until(lambda: len(counted) == 3, 10, "the third failed handshake counted")
    server.call(_loop_turn())
    debug = [r for r in caplog.records if r.getMessage().startswith("tls_failed ")]
    assert len(debug) == 1 and debug[0].levelno == logging.DEBUG and " reason=closed " in debug[0].getMessage()


def test_relay_refusals_write_a_bounded_number_of_log_lines(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client may probe for an open relay with as many RCPTs as it likes:
    every refusal is counted in the metric, the log gets a budget of
    "rcpt_refused reason=relay" lines per listener, and the next line after
    it says how many were held back."""
    from mailyard.net import smtp as smtp_glue

    now = [0.0]
    monkeypatch.setattr(smtp_glue, "_RELAY_LINES", logs.EventBudget(burst=5, window=10.0, clock=lambda: now[0]))
    counted: list[tuple[str, str]] = []
    monkeypatch.setattr(metrics, "count_recipient_rejected",
                        lambda service, reason: counted.append((service, reason)))
    server = make_server()
    caplog.set_level(logging.INFO, logger="mailyard.smtp")
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=10) as client:
        client.ehlo()
        assert client.mail("carol@remote.test")[0] == 250
        for i in range(15):
            assert client.rcpt(f"victim{i}@elsewhere.test")[0] == 550
        now[0] += 10.0
        assert client.rcpt("victim@elsewhere.test")[0] == 550
        assert client.rcpt("bob@example.test")[0] == 250
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rcpt_refused ")]
    assert len(lines) == 6, lines  # the budget, then the last one's own
    assert lines[5].endswith(" suppressed=10"), lines[5]
    assert all(" reason=relay" in line for line in lines), lines
    assert counted == [("smtp", "relay")] * 16


def _half_handshake(server: RunningServer, service: str, source: str) -> socket.socket:
    """A connection that begins a TLS handshake and never ends it: the header
    of a 16 KiB handshake record (RFC 8446 5.1) and the first bytes of its
    ClientHello. The server holds it until its handshake timeout."""
    sock = socket.create_connection((server.host, server.port(service)), timeout=10, source_address=(source, 0))
    try:
        sock.sendall(b"\x16\x03\x01" + (16384).to_bytes(2, "big") + b"\x01" + b"\x00" * 1000)
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed by the server already
    return sock


def _tls_served(server: RunningServer, service: str, source: str) -> socket.socket:
    """A TLS client from ``source`` that completed its handshake and was
    answered (the greeting; on https a response); left open."""
    sock = _connect(server, service, source)
    if service == "https":
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert _read_line(sock).startswith(b"HTTP/1.1 200 ")
    else:
        assert _read_line(sock).startswith(_greeting(service))
    return sock


def _wait_until_tls_served(server: RunningServer, service: str, source: str) -> None:
    """Slots are given back when the server notices a close; retry for a while."""

    def served() -> bool:
        try:
            _tls_served(server, service, source).close()
        except (ssl.SSLError, ConnectionError, AssertionError):
            return False
        return True

    wait_until(served, 20, f"{service} from {source} to be served")


def _two_per_address_four_in_total(cfg) -> None:  # noqa: ANN001
    cfg.limits.max_connections_per_ip = 2
    cfg.limits.max_connections = 4


@pytest.mark.parametrize("service", ["imaps", "pop3s", "https"])
def test_tls_handshakes_count_against_the_connection_caps(
    make_server: Callable[..., RunningServer], service: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection counts from its accept, not from the end of its TLS
    handshake: clients that begin handshakes and never end them hold no
    more than the caps, and a connection over a cap is closed at once,
    before any TLS work (each such client would otherwise hold a socket and
    about 100 KB of TLS buffers until the handshake timeout). Each refusal
    is counted once, and only the session that got through its handshake
    as admitted."""
    refused: list[str] = []
    admitted: list[str] = []
    monkeypatch.setattr(metrics, "count_connection_refused", lambda service, reason: refused.append(service))
    monkeypatch.setattr(metrics, "count_connection", admitted.append)
    server = make_server(_two_per_address_four_in_total)
    caplog.set_level(logging.WARNING, logger="mailyard.net")
    held: list[socket.socket] = []
    try:
        # per address: two half-open handshakes from 127.0.0.1 are held, the next ones closed at once
        held += [_half_handshake(server, service, "127.0.0.1") for _ in range(2)]
        for _ in range(3):
            with _half_handshake(server, service, "127.0.0.1") as over:
                assert _read_until_closed(over) == b""
        # another address is served meanwhile: a half-open handshake, then a whole TLS session
        held.append(_half_handshake(server, service, "127.0.0.2"))
        held.append(_tls_served(server, service, "127.0.0.3"))
        # in total: the four slots are taken, a fifth address is closed at once, with or without TLS
        with _half_handshake(server, service, "127.0.0.4") as over:
            assert _read_until_closed(over) == b""
        _assert_refused(server, service, "127.0.0.5")  # (a TLS client, then a bare connection)
        refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("connection_refused ")]
        assert len(refusals) == 6, refusals  # one line per refused connection
        assert all(f"proto={service} " in line for line in refusals), refusals
        assert refused == [service] * 6, refused
        assert admitted == [service], admitted
    finally:
        for sock in held:
            sock.close()
    # the half-open handshakes give their slots back when their clients leave
    _wait_until_tls_served(server, service, "127.0.0.1")
    _wait_until_tls_served(server, service, "127.0.0.4")


GOODBYES = {"smtps": b"421 ", "imaps": b"* BYE [UNAVAILABLE] ", "pop3s": b"-ERR [SYS/TEMP] "}


def test_the_server_stops_with_tls_handshakes_in_progress(make_server: Callable[..., RunningServer]) -> None:
    """A server stop while clients are in their TLS handshake on every
    implicit-TLS port (each counted in at its accept, its session not
    started: no engine, nothing to say goodbye with) ends the stop whole:
    those clients are closed without a word, the greeted TLS sessions beside
    them get their protocol's goodbye, and the store is closed."""
    services = ("smtps", "imaps", "pop3s", "managesieve_tls", "https")
    server = make_server(lambda cfg: setattr(cfg.ports, "managesieve_tls", 24191))
    running = server.server
    assert running is not None

    def counted(service: str) -> int:
        listener: Any = running.listeners[service]
        return listener._acceptor.caps.active if service == "https" else listener.active

    greeted = {service: _connect(server, service, "127.0.0.1") for service in GOODBYES}
    clients = [_half_handshake(server, service, "127.0.0.1") for service in services]
    try:
        for service, sock in greeted.items():
            assert _read_line(sock).startswith(_greeting(service))
        wait_until(lambda: all(counted(service) == 1 + (service in greeted) for service in services), 10,
                   lambda: f"each connection to be counted: {[counted(service) for service in services]}")
        server.call(running.stop())
        for service, sock in zip(services, clients, strict=True):
            assert _read_until_closed(sock) == b"", service
        for service, sock in greeted.items():
            assert _read_until_closed(sock).startswith(GOODBYES[service]), service
        assert running._store is None
    finally:
        server.server = None  # (stopped, or broken: not stopped again)
        for sock in [*clients, *greeted.values()]:
            sock.close()


def test_a_session_that_fails_at_stop_keeps_no_one_from_the_stop(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    """A session whose goodbye raises (a bug) at a server stop is logged and
    cut: the session beside it still gets its goodbye, and the stop goes on
    to close the store; so does it past a listener whose stop raises."""
    server = make_server()
    running = server.server
    assert running is not None
    caplog.set_level(logging.ERROR, logger="mailyard")
    failing = _connect(server, "smtp")
    assert _read_line(failing).startswith(b"220 ")
    other = _connect(server, "smtp")
    try:
        assert _read_line(other).startswith(b"220 ")
        listener = running.listeners["smtp"]
        wait_until(lambda: listener.active == 2, 10, "both sessions counted")
        first: Any = listener.caps.connections()[0]  # (the first admitted: ``failing``)

        def goodbye() -> bytes:
            raise RuntimeError("a goodbye that fails")

        first.goodbye = goodbye

        async def broken_stop(grace: float) -> None:
            raise RuntimeError("a listener's stop that fails")

        pop3 = running.listeners["pop3"]
        pop3.stop = broken_stop  # type: ignore[method-assign]
        server.call(running.stop())
        assert running._store is None
        assert _read_until_closed(other).startswith(b"421 ")
        assert _read_until_closed(failing) == b""  # (cut at the end of the grace)
        logged = [r.getMessage() for r in caplog.records if r.exc_info]
        assert any("failed to say goodbye" in line for line in logged), logged
        assert any(line.startswith("pop3: the listener's stop failed") for line in logged), logged
        server.call(type(pop3).stop(pop3, 0))  # (its port, left open by the broken stop)
    finally:
        server.server = None  # (stopped, or broken: not stopped again)
        for sock in (failing, other):
            sock.close()


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




def _configure_big(cfg: Config) -> None:
    cfg.smtp.max_message_size = 12 * MB
    cfg.smtp.max_text_line = 11 * MB  # lets the 10 MB single line through
    cfg.limits.imap_max_line = 64 * 1024


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    proc = ServeProcess(tmp_path_factory.mktemp("limits") / "data", _configure_big)
    try:
        yield proc
    finally:
        proc.stop()


def _warm_up(serve: ServeProcess) -> int:
    """One session of each protocol (imports, argon2, caches); once the
    server has ended them, the baseline RSS."""
    _smtp_served(serve)  # type: ignore[arg-type]
    _imap_served(serve)  # type: ignore[arg-type]
    _pop3_served(serve)  # type: ignore[arg-type]
    wait_until(lambda: serve.open_connections() == 0, what="the server to end the warm-up sessions")
    serve.reset_peak()
    return serve.rss()


def test_200mb_data_is_streamed_and_refused_at_the_size_limit(serve: ServeProcess) -> None:
    """RFC 1870 / RFC 5321 4.5.3.1.7: past SIZE the data is read and dropped
    (not buffered) up to the final dot, then 552 5.3.4; the session goes on."""
    baseline = _warm_up(serve)
    line = b"x" * 998 + b"\r\n"
    block = line * 1024  # 1 MiB
    with socket.create_connection((serve.host, serve.port("smtp")), timeout=60) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"EHLO big\r\n")
        while f.readline()[3:4] == b"-":
            pass
        sock.sendall(b"MAIL FROM:<big@example.org>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        for _ in range(3):
            assert f.readline()[:1] in (b"2", b"3")
        for _ in range(200):
            sock.sendall(block)
        sock.sendall(b".\r\nNOOP\r\n")
        assert f.readline().startswith(b"552 5.3.4 ")
        assert f.readline().startswith(b"250 ")
    grown = serve.peak() - baseline
    print(f"\n200 MB DATA: peak RSS {serve.peak() / MB:.1f} MB, {grown / MB:+.1f} MB over the baseline")
    assert grown < 100 * MB
    assert serve.alive() and not serve.tracebacks()


def test_gigabyte_literals_cost_no_memory(serve: ServeProcess) -> None:
    """Announced sizes are checked before anything is read or allocated."""
    _warm_up(serve)
    m = imaplib.IMAP4(serve.host, serve.port("imap"), timeout=30)
    try:
        m.login(ALICE, USERS[ALICE])  # argon2 (~19 MB) before the measurement
        assert m.noop()[0] == "OK"  # its reply: the session is done with LOGIN
        serve.reset_peak()
        baseline = serve.rss()
        for _ in range(20):
            with socket.create_connection((serve.host, serve.port("imap")), timeout=30) as sock:
                f = sock.makefile("rb")
                f.readline()
                sock.sendall(b"a LOGIN {9999999999+}\r\n" + b"x" * 65536)
                assert f.readline().startswith(b"a BAD [TOOBIG]")
                assert f.readline().startswith(b"* BYE")
            try:
                typ, _ = m._simple_command("APPEND", "INBOX", "{9999999999}")  # type: ignore[attr-defined]
            except imaplib.IMAP4.error as exc:
                assert "TOOBIG" in str(exc)
            else:
                assert typ == "NO"
    finally:
        m.logout()
    grown = serve.peak() - baseline
    print(f"\n20 x two 9,999,999,999-octet literals: peak RSS {grown / MB:+.1f} MB over the baseline")
    assert grown < 10 * MB
    assert serve.alive() and not serve.tracebacks()


def _nested_mime(depth: int) -> bytes:
    out = [b"From: deep@example.org\r\nTo: alice@example.test\r\nSubject: nested %d\r\nMIME-Version: 1.0\r\n" % depth]
    for i in range(depth):
        out.append(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
    out.append(b"Content-Type: text/plain\r\n\r\ninnermost\r\n")
    for i in reversed(range(depth)):
        out.append(b"--b%d--\r\n" % i)
    return b"".join(out)


def _many_headers(n: int) -> bytes:
    return (
        b"From: many@example.org\r\nTo: alice@example.test\r\nSubject: headers %d\r\n" % n
        + b"".join(b"X-Filler-%d: value %d\r\n" % (i, i) for i in range(n))
        + b"\r\nbody\r\n"
    )


def _long_line(size: int) -> bytes:
    return b"From: long@example.org\r\nTo: alice@example.test\r\nSubject: long line\r\n\r\n" + b"a" * size + b"\r\n"


PATHOLOGICAL = {
    "nested-1000": (_nested_mime, 1000),
    "headers-100000": (_many_headers, 100_000),
    "line-10MB": (_long_line, 10 * MB),
}


@pytest.mark.parametrize("kind", list(PATHOLOGICAL))
def test_pathological_message_delivered_fetched_and_retrieved(
    serve: ServeProcess, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delivered over SMTP, then IMAP FETCH (ENVELOPE, BODYSTRUCTURE, deep
    sections, HEADER.FIELDS) and POP3 TOP/RETR: answers come, the server
    stays up, and its memory stays bounded."""
    make, n = PATHOLOGICAL[kind]
    message = make(n)
    baseline = _warm_up(serve)
    with smtplib.SMTP(serve.host, serve.port("smtp"), timeout=60) as s:
        s.sendmail("sender@example.org", [ALICE], message)
    m = imaplib.IMAP4(serve.host, serve.port("imap"), timeout=60)
    try:
        m._mode_utf8 = False
        m.login(ALICE, USERS[ALICE])
        m.select("INBOX")
        typ, data = m.uid("SEARCH", "HEADER", "Subject", {"nested-1000": "nested", "headers-100000": "headers",
                                                          "line-10MB": "long"}[kind])
        assert typ == "OK"
        uid = data[0].split()[-1]
        typ, data = m.uid("FETCH", uid, "(ENVELOPE BODYSTRUCTURE RFC822.SIZE)")
        assert typ == "OK" and b"ENVELOPE" in data[0][0] if isinstance(data[0], tuple) else b"ENVELOPE" in data[0]
        deep = ".".join(["1"] * (n if kind == "nested-1000" else 1))
        typ, data = m.uid("FETCH", uid, f"(BODY.PEEK[{deep}] BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK", data
        if kind == "nested-1000":
            # derived.MAX_DEPTH: below 100 levels the rest is one opaque
            # APPLICATION/OCTET-STREAM part, so BODYSTRUCTURE stays bounded
            typ, data = m.uid("FETCH", uid, "(BODYSTRUCTURE)")
            assert b'"APPLICATION" "OCTET-STREAM"' in data[0]
            typ, data = m.uid("FETCH", uid, f"(BODY.PEEK[{'.'.join(['1'] * 100)}])")
            assert typ == "OK" and b"innermost" in data[0][1]
        typ, data = m.uid("FETCH", uid, "(BODY.PEEK[])")
        assert typ == "OK"
        assert message in b"".join(part[1] for part in data if isinstance(part, tuple))
    finally:
        m.logout()
    monkeypatch.setattr(poplib, "_MAXLINE", 11 * MB)  # poplib's own line limit is 2 KiB
    p = poplib.POP3(serve.host, serve.port("pop3"), timeout=60)
    try:
        p.user(ALICE)
        p.pass_(USERS[ALICE])
        count = p.stat()[0]
        assert p.top(count, 0)[0].startswith(b"+OK")
        resp, lines, _ = p.retr(count)
        assert resp.startswith(b"+OK") and lines
    finally:
        p.quit()
    grown = serve.peak() - baseline
    print(f"\n{kind}: {len(message) / MB:.1f} MB message, peak RSS {grown / MB:+.1f} MB over the baseline")
    assert serve.alive() and not serve.tracebacks(), serve.tracebacks()
    assert grown < 200 * MB


# --- a full disk ----------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs mounted on a temporary directory (root only), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    """Write until the file system says ENOSPC, in ever smaller pieces."""
    with path.open("wb", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            while True:
                try:
                    f.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break


def _append(m: imaplib.IMAP4, body: bytes) -> tuple[str, list]:
    try:
        return m.append("INBOX", None, None, body)
    except imaplib.IMAP4.error as exc:
        return "NO", [str(exc).encode()]


def test_full_disk_refuses_cleanly_and_keeps_the_store_intact(small_disk: Path) -> None:
    """ENOSPC / SQLITE_FULL: SMTP 452 4.3.1 (RFC 3463 4.3.1), IMAP NO
    [OVERQUOTA] (RFC 9051 7.1) or [SERVERBUG]; the server keeps serving, and
    once there is space again everything acknowledged before is intact, new
    mail works and SQLite's integrity check passes."""
    from tests.conftest import make_test_config

    data = small_disk / "data"
    server = RunningServer(data, make_test_config())
    try:
        server.start()
        sent = [b"Subject: before %d\r\n\r\n" % i + b"kept %d\r\n" % i * 2000 for i in range(3)]
        with smtplib.SMTP(server.host, server.port("smtp"), timeout=30) as s:
            for body in sent:
                s.sendmail("x@example.org", [ALICE], body)
        m = imaplib.IMAP4(server.host, server.port("imap"), timeout=30)
        m.login(ALICE, USERS[ALICE])
        appended = b"Subject: appended before\r\n\r\n" + b"appended\r\n" * 2000
        assert _append(m, appended)[0] == "OK"

        _fill(small_disk / "filler")
        big = b"Subject: no room\r\n\r\n" + b"no room for this\r\n" * 20_000
        with smtplib.SMTP(server.host, server.port("smtp"), timeout=30) as s:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                s.sendmail("x@example.org", [ALICE], big)
            assert refused.value.smtp_code == 452
            assert refused.value.smtp_error.startswith(b"4.3.1 ")
            assert s.noop()[0] == 250  # the session goes on
        typ, detail = _append(m, big)
        assert typ == "NO" and (b"[OVERQUOTA]" in detail[0] or b"[SERVERBUG]" in detail[0]), detail
        assert m.noop()[0] == "OK"
        assert m.select("INBOX")[0] == "OK"  # claims \Recent: a write
        typ, data_ = m.fetch("1:*", "(BODY.PEEK[TEXT])")
        assert typ == "OK", data_
        p = poplib.POP3(server.host, server.port("pop3"), timeout=30)
        p.user(ALICE)
        p.pass_(USERS[ALICE])
        assert p.retr(1)[0].startswith(b"+OK")
        assert p.quit().startswith(b"+OK")

        (small_disk / "filler").unlink()
        after = b"Subject: after\r\n\r\nthere is room again\r\n"
        with smtplib.SMTP(server.host, server.port("smtp"), timeout=30) as s:
            s.sendmail("x@example.org", [ALICE], after)
        assert _append(m, b"Subject: appended after\r\n\r\nok\r\n")[0] == "OK"
        m.logout()

        stored = server.messages(ALICE)
        bodies = [raw.split(b"\r\n\r\n", 1)[1] for raw in stored]
        expected = [b.split(b"\r\n\r\n", 1)[1] for b in [*sent, appended, after]] + [b"ok\r\n"]
        assert sorted(bodies) == sorted(expected)
    finally:
        server.stop()
    # the store survives a restart, and SQLite finds nothing wrong
    with sqlite3.connect(data / "index.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    again = RunningServer(data, make_test_config(), seed_defaults=False)
    try:
        again.start()
        assert len(again.messages(ALICE)) == 6
    finally:
        again.stop()


def _unindexed(data: Path) -> int:
    with sqlite3.connect(f"file:{data / 'index.sqlite3'}?mode=ro", uri=True) as db:
        return db.execute("SELECT count(*) FROM bodies WHERE derived IS NULL").fetchone()[0]


def _searches(m: imaplib.IMAP4) -> dict[str, list[int]]:
    out = {}
    for key in ('BODY "wombat-2"', 'TEXT "WOMBAT-3"', 'SUBJECT "marsupial 1"', 'BODY "tail-of-0"',
                'TEXT "marsupial"', 'BODY "kept"'):
        typ, data = m.search(None, key)
        assert typ == "OK", (key, data)
        out[key] = sorted(int(n) for n in data[0].split())
    return out


def test_reads_work_on_a_full_disk_and_indexing_resumes_after(small_disk: Path) -> None:
    """Index data is a cache: with the disk full, messages whose ENVELOPE,
    header fields and full-text index were never saved are still fetched
    (FETCH BODY[HEADER.FIELDS ...], webmail's listing), searched (SEARCH
    BODY/TEXT/SUBJECT answer OK with every match, RFC 9051 6.4.4) and
    retrieved (POP3 RETR). The indexer leaves [store] index_min_free for mail
    and, once there is room again, indexes them; the answers stay the same."""
    import httpx

    from tests.conftest import make_test_config

    config = make_test_config()
    config.store.index_min_free = 6 * MB
    data = small_disk / "data"
    server = RunningServer(data, config)
    try:
        server.start()
        with smtplib.SMTP(server.host, server.port("smtp"), timeout=30) as s:
            for i in range(3):
                s.sendmail("x@example.org", [ALICE], b"Subject: before %d\r\n\r\nkept %d\r\n" % (i, i))
        deadline = time.monotonic() + 30
        while _unindexed(data):
            assert time.monotonic() < deadline, "the indexer did not index the first messages"
            time.sleep(0.05)
        m = imaplib.IMAP4(server.host, server.port("imap"), timeout=30)
        m.login(ALICE, USERS[ALICE])
        web = httpx.Client(base_url=f"http://127.0.0.1:{server.port('http')}", timeout=30)
        token = re.search(r'name="login_token" value="([^"]+)"', web.get("/login").text).group(1)
        assert web.post("/login", data={"username": ALICE, "password": USERS[ALICE],
                                        "login_token": token}).status_code == 303

        # Room for a little mail, less than the indexer leaves free: these
        # messages are stored, their index data is not (the former indexer
        # ran and failed here, its index being three times their size).
        _fill(small_disk / "filler")
        size = (small_disk / "filler").stat().st_size
        os.truncate(small_disk / "filler", max(0, size - 5 * MB))
        new = []
        with smtplib.SMTP(server.host, server.port("smtp"), timeout=30) as s:
            for i in range(4):
                lines = {0: 1000, 1: 3500, 2: 1000, 3: 25_000}[i]  # 3: 2 MB of text
                text = (b"marsupial prose line %d " % i + b"x" * 60 + b"\r\n") * lines
                body = (b"Subject: marsupial %d\r\nContent-Type: text/plain\r\n\r\nhead wombat-%d\r\n"
                        % (i, i) + text + b"tail-of-%d\r\n" % i)
                s.sendmail("x@example.org", [ALICE], body)
                new.append(body)
        _fill(small_disk / "filler-2")  # and now the disk is full
        assert _unindexed(data) >= 1

        assert m.select("INBOX")[0] == "OK"
        typ, fetched = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK", fetched
        subjects = b"".join(part[1] for part in fetched if isinstance(part, tuple))
        for i in range(4):
            assert b"Subject: marsupial %d" % i in subjects
        typ, envelopes = m.fetch("4:7", "(ENVELOPE)")
        assert typ == "OK" and b"marsupial 3" in b" ".join(
            p if isinstance(p, bytes) else p[0] for p in envelopes), envelopes
        expected = {'BODY "wombat-2"': [6], 'TEXT "WOMBAT-3"': [7], 'SUBJECT "marsupial 1"': [5],
                    'BODY "tail-of-0"': [4], 'TEXT "marsupial"': [4, 5, 6, 7], 'BODY "kept"': [1, 2, 3]}
        assert _searches(m) == expected
        p = poplib.POP3(server.host, server.port("pop3"), timeout=30)
        p.user(ALICE)
        p.pass_(USERS[ALICE])
        resp, lines, _octets = p.retr(7)
        assert resp.startswith(b"+OK") and b"tail-of-3" in lines[-1]
        assert p.quit().startswith(b"+OK")
        listing = web.get("/", follow_redirects=True)
        assert listing.status_code == 200, listing.text
        for i in range(4):
            assert f"marsupial {i}" in listing.text

        # Without the reserve, reads try to save what they derived and the
        # disk-full failure (SQLite rolls the transaction back) is absorbed.
        server.store.config.index_min_free = 0
        typ, fetched = m.fetch("7", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"marsupial 3" in fetched[0][1], fetched
        assert _searches(m) == expected
        assert _unindexed(data) >= 1

        (small_disk / "filler").unlink()
        (small_disk / "filler-2").unlink()
        deadline = time.monotonic() + 60
        while _unindexed(data):
            assert time.monotonic() < deadline, "indexing did not resume"
            time.sleep(0.1)
        assert _searches(m) == expected
        m.logout()
        web.close()
    finally:
        server.stop()
    with sqlite3.connect(data / "index.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("SELECT count(*) FROM search_text").fetchone()[0] == 7


# --- many idle connections (the 10,000-connection figure is in bench/limits.py) --------------
@pytest.mark.parametrize("service", ["smtp", "imap"])
def test_hundreds_of_idle_connections_are_held_and_others_still_served(
    make_server: Callable[..., RunningServer], service: str
) -> None:
    server = make_server()
    held: list[socket.socket] = []
    try:
        for i in range(300):  # 100 per address: exactly the default per-address cap
            sock = _connect(server, service, f"127.0.0.{2 + i // 100}")
            held.append(sock)
            assert _read_line(sock).startswith(_greeting(service))
        with _connect(server, service, "127.0.0.2") as over:
            assert _read_until_closed(over).startswith(REFUSALS[service])
        SERVED[service](server)
        assert server.server is not None
        assert server.server.listeners[service].active in (300, 301)  # 301: the served one not yet reaped
    finally:
        for sock in held:
            sock.close()


# --- clients that do not read ------------------------------------------------------------------
@pytest.mark.parametrize("service", ["imap", "pop3"])
def test_client_that_stops_reading_loses_its_session_and_slot(
    make_server: Callable[..., RunningServer], service: str
) -> None:
    """A slow-read client (asks for megabytes, reads nothing) would hold a
    session and its output buffers forever; the idle timeout applies to our
    writes too, then the connection is cut and its slot freed."""
    server = make_server(lambda cfg: setattr(cfg.limits, "idle_timeout", 1.0))
    body = b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 1024
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=30) as s:
        s.sendmail("x@example.org", [ALICE], body)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((server.host, server.port(service)))
    with sock:
        f = sock.makefile("rb")
        f.readline()
        if service == "imap":
            sock.sendall(b'a LOGIN alice@example.test "%s"\r\n' % USERS[ALICE].encode())
            assert f.readline().startswith(b"a OK")
            sock.sendall(b"b SELECT INBOX\r\n" + b"".join(b"f%d FETCH 1 BODY[]\r\n" % i for i in range(40)))
        else:
            sock.sendall(b"USER alice@example.test\r\n")
            f.readline()
            sock.sendall(b"PASS %s\r\n" % USERS[ALICE].encode())
            assert f.readline().startswith(b"+OK")
            sock.sendall(b"RETR 1\r\n" * 40)
        give_up = time.monotonic() + 30
        assert server.server is not None
        listener = server.server.listeners[service]
        while listener.active:
            assert time.monotonic() < give_up, "the session was not ended"
            time.sleep(0.1)
    SERVED[service](server)


# Commands answered without a login, a few octets in and far more out, and
# what ends each answer.
PIPELINED = {
    "pop3": (b"CAPA\r\n", b"\r\n.\r\n"),
    "managesieve": (b"CAPABILITY\r\n", b'OK "capability completed"\r\n'),
    "smtp": (b"HELP\r\n", b"End of HELP info\r\n"),
    "imap": (b"a CAPABILITY\r\n", b"a OK CAPABILITY completed\r\n"),
}
# Octets of pipelined commands a test sends: with answers 10-25 times their
# size, far more output than FLUSH_AT and a transport's high-water mark.
PIPELINED_INPUT = 48 * 1024
# Seconds the client may take to read all the answers: bounds a failure.
READ_ALL_WITHIN = 60.0


class _Unread:
    """A client of ``service`` that pipelines PIPELINED_INPUT octets of
    commands and reads nothing, watched through the server's session."""

    def __init__(self, server: RunningServer, service: str) -> None:
        self.server = server
        self.command, self.reply_end = PIPELINED[service]
        self.payload = self.command * (PIPELINED_INPUT // len(self.command))
        self.sent = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect((server.host, server.port(service)))
        assert server.server is not None
        self.listener = server.server.listeners[service]
        self.port = self.sock.getsockname()[1]
        wait_until(lambda: server.call(self._small_send_buffer()), what="the session")
        self.sock.setblocking(False)

    def _session(self) -> Any:
        for session in self.listener.caps.connections():
            if session.peer_port == self.port and session.transport is not None:
                return session
        return None

    async def _small_send_buffer(self) -> bool:
        """The kernel's send buffer of the server's socket made small, so
        that what the server holds is in its transport, where it is counted."""
        session = self._session()
        if session is None:
            return False
        session.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return True

    async def output_state(self) -> tuple[bool, int, int] | None:
        """(writing paused, octets the transport holds, its high-water mark),
        None once the session is gone."""
        session = self._session()
        if session is None or session.closed:
            return None
        transport = session.transport
        return session.writing_paused, transport.get_write_buffer_size(), transport.get_write_buffer_limits()[1]

    def send_until_paused(self) -> tuple[bool, int, int]:
        """Send the commands until the server stops writing to us."""

        def step() -> tuple[bool, int, int] | None:
            if self.sent < len(self.payload):
                try:
                    self.sent += self.sock.send(self.payload[self.sent:])
                except BlockingIOError:
                    pass
            state = self.server.call(self.output_state())
            return state if state is not None and state[0] else None

        return wait_until(step, what="the server to stop writing to a client that does not read")

    def read_all(self) -> None:
        """Read now: every command sent is answered, within READ_ALL_WITHIN."""
        sock = self.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * 1024)
        sock.settimeout(10)
        expected = self.sent // len(self.command)
        replies, tail, got = 0, b"", 0
        end = time.monotonic() + READ_ALL_WITHIN
        while replies < expected:
            assert time.monotonic() < end, (
                f"{replies} of {expected} replies ({got} octets) read in {READ_ALL_WITHIN} s"
            )
            chunk = sock.recv(65536)
            assert chunk, f"closed after {replies} of {expected} replies: {(tail + chunk)[-200:]!r}"
            got += len(chunk)
            data = tail + chunk
            replies += data.count(self.reply_end)
            tail = data[-(len(self.reply_end) - 1):]
        assert replies == expected


@pytest.mark.parametrize("service", list(PIPELINED))
def test_pipelined_commands_of_a_client_that_does_not_read_hold_little_output(
    make_server: Callable[..., RunningServer], service: str
) -> None:
    """A client sends a read's worth of small commands with big answers
    (POP3 CAPA: 6 octets in, 140 out) and reads nothing: the server answers
    until the transport is full, then takes no more commands, so what it
    holds for the client is the transport's high-water mark and one batch
    of replies (protocols/contract.py FLUSH_AT), not the answers to all it
    sent. Once the client reads, every command is answered."""
    client = _Unread(make_server(), service)
    with client.sock:
        _, held, high_water = client.send_until_paused()
        assert held <= high_water + FLUSH_AT + 4096, (held, high_water)
        client.read_all()


@pytest.mark.parametrize("service", ["pop3", "managesieve", "smtp"])
def test_commands_waiting_behind_unread_output_get_no_command_deadline(
    make_server: Callable[..., RunningServer], service: str
) -> None:
    """Complete commands that wait while the client does not take our
    output are not an incomplete command: the stall timer (the idle
    timeout) governs such a client, not the command deadline, so a client
    that reads its answers later than the deadline gets them all."""
    deadline = 0.5
    server = make_server(lambda cfg: setattr(cfg.limits, "command_deadline", deadline))
    client = _Unread(server, service)
    with client.sock:
        client.send_until_paused()
        time.sleep(deadline * 4)  # the deadline would have passed
        assert server.call(client.output_state()) is not None, "the session was ended"
        client.read_all()


# --- the HTTP port ---------------------------------------------------------------------------
def _http_served(server: RunningServer) -> None:
    with socket.create_connection((server.host, server.port("http")), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 200 ")


def test_http_connection_caps(make_server: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch,
                              caplog: pytest.LogCaptureFixture) -> None:
    """The HTTP port's caps: 503 over them, logged and counted like the mail
    ports' refusals; the connections admitted are counted too."""
    counted: list[tuple[str, str]] = []
    admitted: list[str] = []
    monkeypatch.setattr(metrics, "count_connection_refused", lambda service, reason: counted.append((service, reason)))
    monkeypatch.setattr(metrics, "count_connection", admitted.append)
    caplog.set_level(logging.WARNING, logger="mailyard")
    server = make_server(_two_per_address_three_in_total)
    held = []
    try:
        for source in ("127.0.0.1", "127.0.0.1", "127.0.0.2"):
            held.append(_connect(server, "http", source))
        # nothing to read from an admitted HTTP connection: wait until the server counted them
        assert server.server is not None
        state = server.server.listeners["http"]._uvicorn.server_state  # type: ignore[attr-defined]
        give_up = time.monotonic() + 10
        while len(state.connections) < 3:
            assert time.monotonic() < give_up
            time.sleep(0.02)
        for source in ("127.0.0.1", "127.0.0.3"):  # per address, then in total
            with _connect(server, "http", source) as over:
                assert _read_until_closed(over).startswith(b"HTTP/1.1 503 "), source
    finally:
        for sock in held:
            sock.close()
    assert [service for service, _ in counted] == ["http", "http"], counted
    assert admitted == ["http"] * 3, admitted
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("connection_refused ")]
    assert len(refusals) == 2 and all("proto=http " in line for line in refusals), refusals
    give_up = time.monotonic() + 10
    while True:
        try:
            _http_served(server)
            break
        except AssertionError:
            assert time.monotonic() < give_up
            time.sleep(0.05)


def test_http_trickling_request_head_is_cut_off(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(_short_deadlines)
    with _connect(server, "http") as silent, _connect(server, "http") as slow:
        head = b"GET /health HTTP/1.1\r\nHost: localhost\r\n" + b"X-Slow: " + b"s" * 200 + b"\r\n\r\n"
        rest = _trickle_until_answered(slow, head, lambda: _http_served(server))
        assert rest.startswith(b"HTTP/1.1 408 "), rest
        # a connection that never sends anything is closed too
        assert _read_until_closed(silent).startswith(b"HTTP/1.1 408 ")
    _http_served(server)


def _http_state(server: RunningServer):  # noqa: ANN202 - uvicorn's ServerState
    assert server.server is not None
    return server.server.listeners["http"]._uvicorn.server_state  # type: ignore[attr-defined]


def _login_post(length: int, close: bool = False) -> bytes:
    return (b"POST /login HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + (b"Connection: close\r\n" if close else b"")
            + b"Content-Length: %d\r\n\r\n" % length)


def test_http_trickling_request_body_is_cut_off_while_a_steady_upload_is_served(
    make_server: Callable[..., RunningServer],
) -> None:
    """A request body gets command_deadline plus one second per
    http_body_min_rate bytes received: a body trickled a byte at a time is
    answered 408 and closed (its slot freed), while an upload at a steady
    rate above the floor goes on past command_deadline and is served."""

    def configure(cfg) -> None:  # noqa: ANN001
        _short_deadlines(cfg)
        cfg.limits.http_body_min_rate = 1000

    server = make_server(configure)
    steady_answer: list[bytes] = []

    def steady_upload() -> None:
        body = b"username=x&password=y&login_token=z&pad=" + b"p" * 5960
        with _connect(server, "http") as sock:
            sock.sendall(_login_post(len(body), close=True))
            for i in range(0, len(body), 1000):  # 6 KB over 1.5 s: past the 1 s deadline, above 1 KB/s
                sock.sendall(body[i : i + 1000])
                time.sleep(0.3)
            steady_answer.append(_read_until_closed(sock))

    with _connect(server, "http") as slow:
        slow.sendall(_login_post(4000))
        rest = _trickle_until_answered(slow, b"u" * 50, steady_upload)
    assert rest.startswith(b"HTTP/1.1 408 "), rest
    assert b"\r\nconnection: close\r\n" in rest.lower()
    # the login form's token is wrong, but the body was read to its end and answered
    assert steady_answer[0].startswith(b"HTTP/1.1 403 "), steady_answer
    state = _http_state(server)
    wait_until(lambda: not state.connections, what=lambda: f"{len(state.connections)} connections still open")
    _http_served(server)


def test_http_client_leaving_mid_body_logs_no_error(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    """A client that closes its connection in the middle of a request body
    (a browser leaving the page, or anyone without logging in) ends the
    request with one debug line, never an error with a traceback."""
    caplog.set_level(logging.DEBUG, logger="mailyard.web")
    server = make_server()
    state = _http_state(server)
    caplog.clear()  # what starting the server said
    with _connect(server, "http") as sock:
        sock.sendall(_login_post(100) + b"username=ab")
        wait_until(lambda: state.tasks, what="the request to reach the application")
    wait_until(lambda: not state.tasks and not state.connections, what="the request to end")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [r for r in caplog.records if "client_gone" in r.getMessage()], caplog.text
    _http_served(server)


def test_http_body_deadline_does_not_cut_a_response_already_streaming(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    """A streaming response (the live updates) listens for the client
    leaving by reading the request: past the body deadline that read is not
    cut, since nothing can be answered 408 once the 200 has gone, and no
    error is logged."""
    from tests.integration.test_web_http import login

    server = make_server(lambda cfg: setattr(cfg.limits, "command_deadline", 1.0))
    client = login(server)
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    caplog.set_level(logging.INFO)
    with _connect(server, "http") as sock:
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n"
                     b"Cookie: " + cookie.encode() + b"\r\nContent-Length: 10\r\n\r\n")
        out = b""
        while b"retry:" not in out:
            chunk = sock.recv(65536)
            assert chunk, out
            out += chunk
        assert out.startswith(b"HTTP/1.1 200 ")
        time.sleep(2.5)  # past the body's deadline (1 s, and the 10 bytes that never come)
        sock.setblocking(False)
        try:
            assert sock.recv(65536) != b"", "the stream was ended"
        except BlockingIOError:
            pass  # still open, nothing new
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
