"""SEARCH BODY/TEXT finds a message right after the APPEND or COPY that made
it, whichever worker of ``[server] workers = 2`` made it and whichever
searches, also when a FETCH derived the message and left its text for the
writer to index between its write batches (store/sqlite/search.py
``_queue_derived``): RFC 9051 6.4.4 asks for every message that holds the
string, indexed or not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.serve_process import ServeProcess
from tests.integration.test_workers import Line, imap_login, on_each_worker, start_two_workers

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")

TIMEOUT = 10.0


@pytest.fixture
def server(tmp_path: Path) -> Any:
    proc = start_two_workers(tmp_path / "data")
    yield proc
    proc.stop()


def _done(c: Line, tag: bytes) -> list[bytes]:
    """The lines up to the tagged reply, which must be OK."""
    lines = []
    while True:
        line = c.line()
        lines.append(line)
        if line.startswith(tag + b" "):
            assert line.startswith(tag + b" OK"), lines
            return lines


def _cmd(c: Line, tag: bytes, text: bytes) -> list[bytes]:
    c.send(tag + b" " + text + b"\r\n")
    return _done(c, tag)


def _append(c: Line, tag: bytes, box: bytes, word: str) -> None:
    msg = (f"From: someone@remote.test\r\nSubject: note\r\n\r\nthe {word} is here\r\n"
           + "filler line\r\n" * 50).encode()
    c.send(tag + b" APPEND " + box + b" {%d}\r\n" % len(msg))
    assert c.line().startswith(b"+ ")
    c.send(msg + b"\r\n")
    _done(c, tag)


def test_search_right_after_append_and_copy_finds_the_message_on_every_worker(server: ServeProcess) -> None:
    sessions = on_each_worker(server, lambda: imap_login(server), lambda c: c.sock, lambda c: c.close())
    a, b = sessions.values()
    try:
        _cmd(a, b"c1", b"CREATE Notes")
        for c in (a, b):
            _cmd(c, b"s1", b"SELECT INBOX")
        uid = 0
        for n, (writer, reader) in enumerate(((a, b), (b, a), (a, a), (b, b))):
            word = f"wombat{n}x"
            _append(writer, b"a%d" % n, b"INBOX", word)
            uid += 1
            # the writer's FETCH derives the message: its text is left for
            # the writer thread to index between its batches
            _cmd(writer, b"f%d" % n, b"UID FETCH %d (ENVELOPE BODYSTRUCTURE)" % uid)
            # the other session learns of the message (its view is its own, RFC 9051 7.4)
            _cmd(reader, b"n%d" % n, b"NOOP")
            for c in (writer, reader):
                found = _cmd(c, b"q%d" % n, f"UID SEARCH BODY {word}".encode())
                assert f"* SEARCH {uid}".encode() in found, (n, found)
                found = _cmd(c, b"t%d" % n, f"UID SEARCH TEXT {word.upper()}".encode())
                assert f"* SEARCH {uid}".encode() in found, (n, found)
            # COPY on the writer, SEARCH of the copy on the other session
            _cmd(writer, b"k%d" % n, b"UID COPY %d Notes" % uid)
            found = _cmd(reader, b"e%d" % n, b"STATUS Notes (MESSAGES)")
            assert b'* STATUS "Notes" (MESSAGES %d)' % (n + 1) in found, found
            _cmd(reader, b"x%d" % n, b"EXAMINE Notes")
            found = _cmd(reader, b"r%d" % n, f"UID SEARCH BODY {word}".encode())
            assert f"* SEARCH {n + 1}".encode() in found, (n, found)
            _cmd(reader, b"y%d" % n, b"SELECT INBOX")
    finally:
        for c in (a, b):
            c.close()
