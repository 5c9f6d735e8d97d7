"""Many IMAP sessions on one mailbox, through real sockets on the real
SQLite store: what one session changes reaches every other, byte for byte
(RFC 9051 7.4.1 EXPUNGE, 7.3.1 EXISTS, 7.5.2 unsolicited FETCH), and the
store reads a write's rows once for all of them rather than once per
session (store/sqlite/changelog.py): the per-command cost of a write must
not grow with the number of sessions selected."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable

from tests.conftest import USERS, RunningServer

ALICE = "alice@example.test"
SESSIONS = 6


def _session(server: RunningServer) -> tuple[socket.socket, Callable[[bytes, bytes], list[bytes]]]:
    s = socket.create_connection((server.host, server.port("imap")), timeout=10)
    f = s.makefile("rwb")
    assert f.readline().startswith(b"* OK ")

    def say(line: bytes, tag: bytes) -> list[bytes]:
        f.write(line + b"\r\n")
        f.flush()
        out = []
        while True:
            got = f.readline()
            assert got, out
            out.append(got)
            if got.endswith(b"}\r\n"):
                out.append(f.read(int(got[got.rindex(b"{") + 1 : -3])))
            elif got.startswith(tag + b" "):
                return out

    assert say(b"l1 LOGIN " + ALICE.encode() + b" " + USERS[ALICE].encode(), b"l1")[-1].startswith(b"l1 OK")
    # IMAP4rev2: no \Recent (RFC 9051 dropped it), so every session gets the same bytes
    assert say(b"l2 ENABLE IMAP4rev2", b"l2")[-1] == b"l2 OK ENABLE completed\r\n"
    return s, say


def _msg(n: int) -> bytes:
    return b"From: a@remote.test\r\nSubject: m%d\r\n\r\nbody %d\r\n" % (n, n)


def test_changes_reach_every_session_and_are_read_once(mailserver: RunningServer) -> None:
    """Session A flags message 1, deletes and expunges message 2 and appends
    a message; each other session's NOOP reports exactly that. The changed
    rows are read from SQLite by one session, not by each (before the shared
    change log each session's NOOP read them: SESSIONS - 1 reads)."""
    sessions = [_session(mailserver) for _ in range(SESSIONS)]
    try:
        a = sessions[0][1]
        for n in range(3):
            msg = _msg(n)
            assert a(b"p%d APPEND INBOX {%d+}\r\n" % (n, len(msg)) + msg, b"p%d" % n)[-1].startswith(
                b"p%d OK [APPENDUID " % n)
        for _s, say in sessions:
            assert say(b"s1 SELECT INBOX", b"s1")[0] == b"* 3 EXISTS\r\n"
            # the first FETCH lists the mailbox
            assert say(b"f1 FETCH 1:3 (UID FLAGS)", b"f1") == [
                b"* 1 FETCH (UID 1 FLAGS ())\r\n", b"* 2 FETCH (UID 2 FLAGS ())\r\n",
                b"* 3 FETCH (UID 3 FLAGS ())\r\n", b"f1 OK FETCH completed\r\n"]

        reads: list[str] = []

        def count(sql: str) -> None:
            if re.search(r"FROM messages WHERE mailbox_id = \S+ AND modseq >", sql):
                reads.append(sql)

        async def trace(on: bool) -> None:
            mailserver.store._read.set_trace_callback(count if on else None)

        mailserver.call(trace(True))
        assert a(b"w1 STORE 1 +FLAGS (\\Flagged)", b"w1") == [
            b"* 1 FETCH (FLAGS (\\Flagged))\r\n", b"w1 OK STORE completed\r\n"]
        assert a(b"w2 STORE 2 +FLAGS.SILENT (\\Deleted)", b"w2") == [b"w2 OK STORE completed\r\n"]
        assert a(b"w3 EXPUNGE", b"w3") == [b"* 2 EXPUNGE\r\n", b"w3 OK EXPUNGE completed\r\n"]
        msg = _msg(9)
        out = a(b"w4 APPEND INBOX {%d+}\r\n" % len(msg) + msg, b"w4")
        assert out[:-1] == [b"* 3 EXISTS\r\n"]
        assert out[-1].startswith(b"w4 OK [APPENDUID ") and out[-1].endswith(b" 4] APPEND completed\r\n")
        for _s, say in sessions[1:]:
            assert say(b"n1 NOOP", b"n1") == [
                b"* 2 EXPUNGE\r\n",
                b"* 3 EXISTS\r\n",
                b"* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\n",
                b"n1 OK NOOP completed\r\n",
            ]
            assert say(b"f2 FETCH 1:3 (UID FLAGS)", b"f2") == [
                b"* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\n", b"* 2 FETCH (UID 3 FLAGS ())\r\n",
                b"* 3 FETCH (UID 4 FLAGS ())\r\n", b"f2 OK FETCH completed\r\n"]
        mailserver.call(trace(False))
        print(f"reads of changed rows for {SESSIONS} sessions and 4 writes: {len(reads)}")
        # each write is read by the first session that asks after it; the
        # other sessions ask the log (without it: one read per session per ask)
        assert len(reads) <= 4, reads
    finally:
        for s, _say in sessions:
            s.close()
