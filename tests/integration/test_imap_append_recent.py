"""APPEND to the mailbox the session has selected read-write claims the new
messages' \\Recent (RFC 3501 2.3.2: recent in the first session told of
them, and the appending session tells of them in its reply) in the APPEND's
own store write: one durable commit per APPEND, not two. Another session
told of them later does not see them \\Recent; an EXAMINE session, an
IMAP4rev2 session or an APPEND to another mailbox claims nothing."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import USERS, RunningServer

ALICE = "alice@example.test"
TIMEOUT = 10.0

pytestmark = pytest.mark.both_backends


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""
        assert self.line().startswith(b"* OK")

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(self.buf)
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def cmd(self, tag: str, text: bytes, literal: bytes | None = None) -> list[bytes]:
        if literal is None:
            self.sock.sendall(tag.encode() + b" " + text + b"\r\n")
        else:
            self.sock.sendall(tag.encode() + b" " + text + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        out = []
        while True:
            line = self.line()
            out.append(line)
            if line.startswith(tag.encode() + b" "):
                return out


def _login(server: RunningServer) -> Client:
    c = Client(server.port("imap"))
    assert c.cmd("l", f"LOGIN {ALICE} {USERS[ALICE]}".encode())[-1].startswith(b"l OK")
    return c


MSG = b"From: bob@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


def test_append_claims_recent_in_its_own_write(make_server: Callable[..., RunningServer],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_server()
    store = server.store
    writes: list[Any] = []
    write = store._write

    async def counted(op: Any, *args: Any, **kw: Any) -> Any:
        writes.append(op)
        return await write(op, *args, **kw)

    monkeypatch.setattr(store, "_write", counted)
    a, b = _login(server), _login(server)
    try:
        selected = a.cmd("s", b"SELECT INBOX")
        assert selected[-1].startswith(b"s OK")
        v = next(line.split()[3].rstrip(b"]") for line in selected if b"[UIDVALIDITY" in line)
        assert b.cmd("s", b"SELECT INBOX")[-1].startswith(b"s OK")
        writes.clear()
        assert a.cmd("a1", b"APPEND INBOX", MSG) == [
            b"* 1 EXISTS", b"* 1 RECENT", b"a1 OK [APPENDUID %s 1] APPEND completed" % v]
        # (other writes may run meanwhile: the background purge of PostgreSQL)
        names = [op.__qualname__.split(".<locals>")[0].rsplit(".", 1)[-1] for op in writes]
        assert names.count("append_many") == 1 and "claim_recent" not in names, \
            f"the APPEND and its \\Recent claim took more than one store write: {names}"
        assert a.cmd("f", b"FETCH 1 (FLAGS)") == [b"* 1 FETCH (FLAGS (\\Recent))", b"f OK FETCH completed"]
        # the other session is told of it, not \Recent there
        assert b.cmd("n", b"NOOP") == [b"* 1 EXISTS", b"* 0 RECENT", b"n OK NOOP completed"]
        assert b.cmd("f", b"FETCH 1 (FLAGS)") == [b"* 1 FETCH (FLAGS ())", b"f OK FETCH completed"]
        # a MULTIAPPEND: all of it
        assert a.cmd("a2", b"APPEND INBOX (\\Seen) {%d+}\r\n" % len(MSG) + MSG + b" (\\Flagged)", MSG) == [
            b"* 3 EXISTS", b"* 3 RECENT", b"a2 OK [APPENDUID %s 2:3] APPEND completed" % v]
        assert b.cmd("n2", b"NOOP") == [b"* 3 EXISTS", b"* 0 RECENT", b"n2 OK NOOP completed"]
        assert b.cmd("f3", b"FETCH 2:3 (FLAGS)") == [
            b"* 2 FETCH (FLAGS (\\Seen))", b"* 3 FETCH (FLAGS (\\Flagged))", b"f3 OK FETCH completed"]
        # an APPEND to a mailbox this session has not selected claims nothing:
        # the first session to select it gets the \Recent
        assert a.cmd("c", b"CREATE Later")[-1].startswith(b"c OK")
        assert a.cmd("a3", b"APPEND Later", MSG)[-1].startswith(b"a3 OK")
        assert b"* 1 RECENT" in b.cmd("x", b"SELECT Later")
        # the session of an EXAMINE claims nothing either
        assert b.cmd("e", b"EXAMINE INBOX")[-1].startswith(b"e OK")
        assert b.cmd("a4", b"APPEND INBOX", MSG) == [
            b"* 4 EXISTS", b"* 1 RECENT", b"a4 OK [APPENDUID %s 4] APPEND completed" % v]
        assert a.cmd("n3", b"NOOP") == [b"* 4 EXISTS", b"* 4 RECENT", b"n3 OK NOOP completed"]
    finally:
        a.sock.close()
        b.sock.close()
