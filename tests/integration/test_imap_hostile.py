"""IMAP against a hostile client, through a real server: over-long command
lines (RFC 9051 7.1.3: a refusal carries the tag when the tag is known) and
FETCH commands with very many items (the event loop is shared by every
connection; RFC 5530 LIMIT).

Fairness is measured by counts, never by time: the items a FETCH formats
between two turns of the server's event loop.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from mailyard.config import Config
from tests.conftest import USERS, RunningServer
from tests.integration.test_workers import Line

ALICE = "alice@example.test"
TIMEOUT = 30


def _connect(server: RunningServer, login: bool = True) -> Line:
    c = Line(server.port("imap"))
    assert c.line(TIMEOUT).startswith(b"* OK")
    if login:
        c.send(f"l LOGIN {ALICE} {USERS[ALICE]}\r\n".encode())
        assert c.until(lambda x: x.startswith(b"l "), TIMEOUT).startswith(b"l OK")
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def _rest(c: Line, tag: bytes) -> list[bytes]:
    """Every line up to and including the one tagged ``tag``."""
    lines = []
    while True:
        lines.append(c.line(TIMEOUT))
        if lines[-1].startswith(tag + b" "):
            return lines


def test_an_over_long_line_gets_one_tagged_bad(mailserver: RunningServer) -> None:
    """A 170 KB UID SEARCH line (over the 64 KiB line limit), sent in
    pieces: the refusal is tagged as soon as the limit is passed, the rest
    of the line is discarded without a second reply, and the next command
    is answered."""
    c = _connect(mailserver)
    c.send(b"s SELECT INBOX\r\n")
    assert _rest(c, b"s")[-1].startswith(b"s OK")
    line = b"T4 UID SEARCH UID " + b",".join(b"%d" % i for i in range(1, 30000))
    assert len(line) > 128 * 1024
    c.send(line[: 70 * 1024])
    # the refusal comes before the rest of the line is sent
    assert c.line(TIMEOUT) == b"T4 BAD [TOOBIG] Line too long"
    for i in range(70 * 1024, len(line), 16 * 1024):
        c.send(line[i : i + 16 * 1024])
    c.send(b"\r\nT5 NOOP\r\n")
    assert _rest(c, b"T5") == [b"T5 OK NOOP completed"]
    c.close()


def test_an_over_long_line_before_login_counts_once_toward_the_bad_commands(
        make_server: Callable[..., RunningServer]) -> None:
    """Before login a line may have 8 KiB: a 100 KB one, sent in 16 KB
    pieces, is one bad command however many pieces it comes in, so with a
    budget of two bad commands the session survives it."""

    def configure(cfg: Config) -> None:
        cfg.limits.max_bad_commands = 2

    server = make_server(configure=configure)
    c = _connect(server, login=False)
    line = b"x1 NOOP " + b"A" * 100_000
    c.send(line[: 16 * 1024])
    assert c.line(TIMEOUT) == b"x1 BAD [TOOBIG] Line too long"
    for i in range(16 * 1024, len(line), 16 * 1024):
        c.send(line[i : i + 16 * 1024])
    c.send(b"\r\nx2 NOOP\r\n")
    assert _rest(c, b"x2") == [b"x2 OK NOOP completed"]
    c.close()


def test_a_line_longer_than_a_whole_command_ends_the_session(mailserver: RunningServer) -> None:
    """The rest of a refused line is discarded up to a whole command's
    budget (1 MiB); past that, reading on costs time for nothing, and the
    session ends with BYE."""
    c = _connect(mailserver)
    first = b"b1 NOOP " + b"A" * (70 * 1024)
    c.send(first)
    assert c.line(TIMEOUT) == b"b1 BAD [TOOBIG] Line too long"
    # one octet more than the budget in all: the server reads every octet
    # sent before it closes (unread input would make its close a reset)
    rest = mailserver.config.limits.imap_max_command + 1 - len(first)
    for i in range(0, rest, 16 * 1024):
        c.send(b"A" * min(16 * 1024, rest - i))
    assert c.line(TIMEOUT) == b"* BYE Line too long; closing connection"
    with pytest.raises((EOFError, OSError)):
        c.line(TIMEOUT)
    c.close()
