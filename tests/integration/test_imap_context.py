"""CONTEXT=SEARCH / CONTEXT=SORT (RFC 5267 section 4) and UID FETCH PARTIAL
(RFC 9394 3.3) through a real server over the SQLite store, raw sockets:
one connection keeps live results while another appends, stores and
expunges; the updates arrive as ADDTO after EXISTS and REMOVEFROM before
EXPUNGE, byte for byte."""

from __future__ import annotations

import socket
import time

from tests.conftest import USERS, RunningServer
from tests.integration.test_imap import ALICE


class Raw:
    """A line-at-a-time IMAP client on a socket."""

    def __init__(self, server: RunningServer) -> None:
        self.sock = socket.create_connection((server.host, server.port("imap")), timeout=10)
        self.buf = b""
        assert self.line().startswith(b"* OK")

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            assert data, "connection closed"
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def cmd(self, text: str) -> list[bytes]:
        """Send a command; every line up to and including its tagged answer."""
        tag = text.split(" ", 1)[0].encode()
        self.sock.sendall(text.encode() + b"\r\n")
        out = []
        while True:
            line = self.line()
            out.append(line)
            if line.startswith(tag + b" "):
                return out

    def ok(self, text: str) -> list[bytes]:
        lines = self.cmd(text)
        assert lines[-1].split(b" ")[1] == b"OK", lines
        return lines[:-1]

    def append(self, data: bytes) -> None:
        self.sock.sendall(b"ap APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
        while not (line := self.line()).startswith(b"ap "):
            pass
        assert line.startswith(b"ap OK"), line

    def close(self) -> None:
        self.sock.close()


def _msg(subject: str) -> bytes:
    return f"From: bob@remote.test\r\nTo: {ALICE}\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()


def _until(c: Raw, want: bytes, n: int) -> list[bytes]:
    """NOOP until the untagged lines hold ``want`` (the other connection's
    change reaches this one's view through the store's notification)."""
    seen: list[bytes] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        n += 1
        seen += c.ok(f"n{n} NOOP")
        if any(want in x for x in seen):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"no {want!r} in {seen!r}")


def test_contexts_follow_another_connection(mailserver: RunningServer) -> None:
    a, b = Raw(mailserver), Raw(mailserver)
    try:
        for c in (a, b):
            c.ok(f'l LOGIN {ALICE} "{USERS[ALICE]}"')
        for subject in ("lunch", "plans", "Re: lunch"):
            b.append(_msg(subject))
        b.ok("s SELECT INBOX")
        a.ok("v ENABLE IMAP4rev2")  # no \Recent in its FETCH responses
        a.ok("s SELECT INBOX")
        caps = a.ok("c CAPABILITY")[0]
        for cap in (b" CONTEXT=SEARCH", b" CONTEXT=SORT", b" PARTIAL"):
            assert cap in caps
        uids = [int(x.split()[-1].rstrip(b")")) for x in a.ok("u FETCH 1:* (UID)")]
        u1, u2, u3 = uids
        assert a.ok("B01 UID SEARCH RETURN (UPDATE) UNSEEN") == [
            f'* ESEARCH (TAG "B01") UID ALL {u1}:{u3}'.encode()]
        # SUBJECT through the store's header index; sorted by base subject
        assert a.ok("C01 SORT RETURN (UPDATE COUNT) (REVERSE SUBJECT) UTF-8 SUBJECT lunch") == [
            b'* ESEARCH (TAG "C01") COUNT 2']
        # another connection appends: EXISTS, then the ADDTOs
        b.append(_msg("lunch again"))
        lines = _until(a, b"EXISTS", 0)
        assert lines == [b"* 4 EXISTS", f'* ESEARCH (TAG "B01") UID ADDTO (0 {u3 + 1})'.encode(),
                         b'* ESEARCH (TAG "C01") ADDTO (1 4)'], lines
        # a flag change elsewhere takes a message out of the UNSEEN result
        b.ok("f STORE 2 +FLAGS.SILENT (\\Seen)")
        lines = _until(a, b"REMOVEFROM", 10)
        assert lines == [f"* 2 FETCH (UID {u2} FLAGS (\\Seen))".encode(),
                         f'* ESEARCH (TAG "B01") UID REMOVEFROM (0 {u2})'.encode()], lines
        # an expunge elsewhere: REMOVEFROM (numbers as before it), then EXPUNGE
        b.ok("d STORE 1 +FLAGS.SILENT (\\Deleted)")
        b.ok("e EXPUNGE")
        lines = _until(a, b"EXPUNGE", 20)
        assert lines == [f'* ESEARCH (TAG "B01") UID REMOVEFROM (0 {u1})'.encode(),
                         b'* ESEARCH (TAG "C01") REMOVEFROM (2 1)', b"* 1 EXPUNGE"], lines
        # CANCELUPDATE: no more updates for B01; C01 goes on
        a.ok('x CANCELUPDATE "B01"')
        b.append(_msg("lunch at noon"))
        lines = _until(a, b"EXISTS", 30)
        assert lines == [b"* 4 EXISTS", b'* ESEARCH (TAG "C01") ADDTO (1 4)'], lines
        # RFC 9394 3.3: the last two of the messages the UID set names
        assert a.ok("p UID FETCH 1:* (FLAGS) (PARTIAL -1:-2)") == [
            f"* 3 FETCH (UID {u3 + 1} FLAGS ())".encode(), f"* 4 FETCH (UID {u3 + 2} FLAGS ())".encode()]
    finally:
        a.close()
        b.close()
