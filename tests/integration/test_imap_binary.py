"""Binary content over real sockets and the SQLite store: a message APPENDed
in a literal8 with NUL octets (RFC 3516 4.3) is stored with those parts in
base64, so BODY[] answers are legal strings (RFC 9051 4.3) and BINARY[]
gives the octets back; the re-encoding of a big such message does not hold
up the other clients."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from tests.conftest import USERS, RunningServer
from tests.integration.serve_process import MB, ServeProcess

ALICE = "alice@example.test"

NUL_PART = b"ab\x00cd"
BINARY_MESSAGE = (
    b"From: a@x.example\r\nSubject: nul\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
    b"--o\r\nContent-Type: text/plain\r\n\r\ntext\r\n"
    b"--o\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    + NUL_PART + b"\r\n--o--\r\n"
)


def _login(host: str, port: int) -> tuple[socket.socket, object]:
    s = socket.create_connection((host, port), timeout=60)
    f = s.makefile("rwb")
    assert f.readline().startswith(b"* OK ")
    f.write(b"a1 LOGIN " + ALICE.encode() + b" " + USERS[ALICE].encode() + b"\r\n")
    f.flush()
    while not (line := f.readline()).startswith(b"a1 "):
        pass
    assert line.startswith(b"a1 OK"), line
    return s, f


def _command(f, line: bytes, tag: bytes) -> bytes:  # noqa: ANN001
    f.write(line + b"\r\n")
    f.flush()
    out = b""
    while True:
        got = f.readline()
        assert got, out
        out += got
        if got.startswith(tag + b" "):
            return out


def test_appended_nul_part_is_stored_base64_and_binary_gives_it_back(mailserver: RunningServer) -> None:
    stored = BINARY_MESSAGE.replace(b"Transfer-Encoding: binary", b"Transfer-Encoding: base64").replace(
        NUL_PART, b"YWIAY2Q=")
    s, f = _login(mailserver.host, mailserver.port("imap"))
    with s:
        got = _command(f, b"a2 APPEND INBOX ~{%d+}\r\n%s" % (len(BINARY_MESSAGE), BINARY_MESSAGE), b"a2")
        assert got.startswith(b"a2 OK [APPENDUID "), got
        _command(f, b"a3 EXAMINE INBOX", b"a3")
        assert _command(f, b"a4 FETCH 1 (RFC822.SIZE BODY[2] BINARY[2] BINARY.SIZE[2] BODY[])", b"a4") == (
            b"* 1 FETCH (RFC822.SIZE %d BODY[2] {8}\r\nYWIAY2Q= BINARY[2] ~{5}\r\nab\x00cd BINARY.SIZE[2] 5"
            b" BODY[] {%d}\r\n%s)\r\na4 OK FETCH completed\r\n" % (len(stored), len(stored), stored))


def _many_nul_parts(n: int) -> bytes:
    part = b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    body = b"".join(part + bytes(range(256)) * 4 + b"\r\n" for _ in range(n))
    return b"From: a@x.example\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + body + b"--b--\r\n"


def test_a_big_binary_append_holds_up_no_one(tmp_path: Path) -> None:
    """APPEND of a literal8 with 5,000 parts holding NUL (~6 MB): the
    re-encoding runs off the event loop; meanwhile other connections keep
    getting their greeting. Figures: peak RSS over the baseline, the slowest
    greeting."""
    serve = ServeProcess(tmp_path / "data", lambda cfg: None)
    try:
        s, f = _login(serve.host, serve.port("imap"))
        data = _many_nul_parts(5000)
        serve.reset_peak()
        baseline = serve.rss()
        result: list[bytes] = []

        def append() -> None:
            result.append(_command(f, b"a2 APPEND INBOX ~{%d+}\r\n%s" % (len(data), data), b"a2"))

        t = threading.Thread(target=append)
        t.start()
        slowest = 0.0
        probes = 0
        while t.is_alive() or probes == 0:
            started = time.monotonic()
            with socket.create_connection((serve.host, serve.port("imap")), timeout=10) as probe:
                assert probe.makefile("rb").readline().startswith(b"* OK ")
            slowest = max(slowest, time.monotonic() - started)
            probes += 1
        t.join()
        with s:
            assert result[0].startswith(b"a2 OK [APPENDUID "), result[0][:200]
            _command(f, b"a3 EXAMINE INBOX", b"a3")
            got = _command(f, b"a4 FETCH 1 (BINARY.SIZE[5000] BODY[5000]<0.8>)", b"a4")
            assert got.startswith(b"* 1 FETCH (BINARY.SIZE[5000] 1024 BODY[5000]<0> {8}\r\nAAECAwQF)"), got
        grown = serve.peak() - baseline
        print(f"\n{len(data) / MB:.1f} MB literal8 APPEND, 5000 NUL parts: peak RSS {grown / MB:+.1f} MB over the"
              f" baseline; {probes} greetings meanwhile, the slowest {slowest * 1000:.0f} ms")
        assert grown < 200 * MB
        assert serve.alive() and not serve.tracebacks()
    finally:
        serve.stop()
