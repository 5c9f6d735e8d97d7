"""COMPRESS=DEFLATE (RFC 4978) on a real server: a socket client that
deflates its commands and inflates the responses, over plain TCP and TLS,
pipelined commands right after the OK, and a zip bomb that must meet the
same line limits as uncompressed input while the server keeps its memory and
serves others."""

from __future__ import annotations

import socket
import ssl
import threading
import time
import zlib

import pytest

from tests.conftest import USERS, RunningServer
from tests.integration.serve_process import MB, ServeProcess

ALICE = "alice@example.test"


class DeflateClient:
    """A line-oriented IMAP client that can switch to COMPRESS DEFLATE."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.deflate: zlib._Compress | None = None
        self.inflate: zlib._Decompress | None = None
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        if self.deflate is not None:
            data = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"connection closed; have {self.buf[-200:]!r}")
        self.buf += self.inflate.decompress(chunk) if self.inflate is not None else chunk

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._more()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def until_tagged(self, tag: bytes) -> list[bytes]:
        """The response lines up to and including the tagged one."""
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def command(self, tag: bytes, text: bytes) -> list[bytes]:
        self.send(tag + b" " + text + b"\r\n")
        return self.until_tagged(tag)

    def login_and_compress(self) -> list[bytes]:
        assert self.command(b"a1", f'LOGIN {ALICE} "{USERS[ALICE]}"'.encode())[-1].startswith(b"a1 OK")
        self.sock.sendall(b"a2 COMPRESS DEFLATE\r\n")
        reply = self.until_tagged(b"a2")
        assert self.buf == b""  # nothing compressed may come before the OK is read
        # RFC 4978 3: everything after the OK's CRLF is DEFLATE, both ways
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)
        return reply


def plain(server: RunningServer | ServeProcess) -> DeflateClient:
    return DeflateClient(socket.create_connection((server.host, server.port("imap")), timeout=30))


def test_compress_deflate_plain(mailserver: RunningServer) -> None:
    c = plain(mailserver)
    assert b"COMPRESS=DEFLATE" in c.greeting
    assert c.login_and_compress() == [b"a2 OK DEFLATE active"]
    # three commands in one deflated write, right after the OK (pipelined)
    c.send(b"b1 NOOP\r\nb2 SELECT INBOX\r\nb3 COMPRESS DEFLATE\r\n")
    assert c.until_tagged(b"b1") == [b"b1 OK NOOP completed"]
    assert c.until_tagged(b"b2")[-1] == b"b2 OK [READ-WRITE] SELECT completed"
    # RFC 4978 3: a second COMPRESS is refused
    assert c.until_tagged(b"b3") == [b"b3 NO [COMPRESSIONACTIVE] DEFLATE is already active"]
    # IDLE's DONE arrives deflated while the command waits for input
    c.send(b"b4 IDLE\r\n")
    assert c.line() == b"+ idling"
    c.send(b"DONE\r\n")
    assert c.until_tagged(b"b4") == [b"b4 OK IDLE terminated"]
    assert c.command(b"b4", b"LOGOUT") == [b"* BYE mailyard IMAP server logging out", b"b4 OK LOGOUT completed"]


def test_compress_big_append_and_fetch(mailserver: RunningServer) -> None:
    """A 2 MiB message APPENDed as one literal through DEFLATE (inflated in
    pieces, across literal boundaries) and FETCHed back byte for byte."""
    import random

    rnd = random.Random(4978)
    body = b"".join(b"%08x " % rnd.getrandbits(32) + (b"\r\n" if i % 8 == 7 else b"") for i in range(200_000))
    message = b"Subject: big\r\n\r\n" + body
    c = plain(mailserver)
    c.login_and_compress()
    c.send(b"b1 APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
    assert c.until_tagged(b"b1")[-1].startswith(b"b1 OK [APPENDUID")
    c.command(b"b2", b"SELECT INBOX")
    c.send(b"b3 FETCH 1 (BODY.PEEK[])\r\n")
    head = c.line()
    assert head == b"* 1 FETCH (BODY[] {%d}" % len(message)
    while len(c.buf) < len(message) + 3:
        c._more()
    assert c.buf[: len(message)] == message
    c.buf = c.buf[len(message) :]
    assert c.line() == b")"
    assert c.until_tagged(b"b3") == [b"b3 OK FETCH completed"]


def test_compress_deflate_inside_tls(mailserver: RunningServer) -> None:
    ctx = ssl.create_default_context(cafile=str(mailserver.data_dir / "tls" / "cert.pem"))
    raw = socket.create_connection((mailserver.host, mailserver.port("imaps")), timeout=30)
    c = DeflateClient(ctx.wrap_socket(raw, server_hostname="mx.example.test"))
    assert c.login_and_compress() == [b"a2 OK DEFLATE active"]
    big = c.command(b"b1", b"LIST \"\" *")
    assert big[-1] == b"b1 OK LIST completed"
    assert c.command(b"b2", b"COMPRESS DEFLATE") == [b"b2 NO [COMPRESSIONACTIVE] DEFLATE is already active"]
    c.command(b"b3", b"LOGOUT")


def test_compress_unknown_mechanism_and_state(mailserver: RunningServer) -> None:
    c = plain(mailserver)
    # RFC 4978 3: valid only once authenticated
    assert c.command(b"a0", b"COMPRESS DEFLATE") == [b"a0 BAD COMPRESS is not valid in the not authenticated state"]
    assert c.command(b"a1", f'LOGIN {ALICE} "{USERS[ALICE]}"'.encode())[-1].startswith(b"a1 OK")
    assert c.command(b"a2", b"COMPRESS LZW") == [b"a2 BAD Unknown compression mechanism"]
    # clear text pipelined after COMPRESS cannot be told from DEFLATE data: refused
    c.send(b"a3 COMPRESS DEFLATE\r\na4 NOOP\r\n")
    assert c.until_tagged(b"a3") == [b"a3 BAD Commands were sent after COMPRESS before its result"]
    assert c.until_tagged(b"a4") == [b"a4 OK NOOP completed"]


def test_compress_broken_stream_ends_session(mailserver: RunningServer) -> None:
    c = plain(mailserver)
    c.login_and_compress()
    c.sock.sendall(b"\xff" * 64)  # not DEFLATE
    assert c.line() == b"* BYE Compression error"


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    proc = ServeProcess(tmp_path_factory.mktemp("compress") / "data", lambda cfg: None)
    try:
        yield proc
    finally:
        proc.stop()


def _deflated_bomb(d: zlib._Compress, prefix: bytes, size: int, suffix: bytes) -> bytes:
    """``prefix``, ``size`` octets of "x", ``suffix``, on the client's DEFLATE stream."""
    out = [d.compress(prefix)]
    block = b"x" * MB
    for _ in range(size // MB):
        out.append(d.compress(block))
    out.append(d.compress(suffix))
    out.append(d.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(out)


def _greeting_latency(serve: ServeProcess) -> float:
    t0 = time.monotonic()
    with socket.create_connection((serve.host, serve.port("imap")), timeout=10) as s:
        assert s.recv(4096).startswith(b"* OK")
    return time.monotonic() - t0


def test_compress_bomb_meets_line_limit(serve: ServeProcess) -> None:
    """1 GiB of one line in about 1 MiB of DEFLATE: the server inflates it a
    piece at a time into the same framer as uncompressed input, so it gets
    what an uncompressed 1 GiB line gets (one tagged BAD Line too long, then
    BYE once the discarded rest passes a whole command's budget), its RSS
    stays bounded, and it greets others meanwhile."""
    c = plain(serve)
    c.login_and_compress()
    before = serve.rss()
    serve.reset_peak()
    assert c.deflate is not None
    bomb = _deflated_bomb(c.deflate, b"b1 NOOP ", 1024 * MB, b"\r\nb2 NOOP\r\n")
    print(f"bomb: {len(bomb)} octets of DEFLATE for 1 GiB")
    sender = threading.Thread(target=_send_until_closed, args=(c.sock, bomb))
    sender.start()
    latency = _greeting_latency(serve)
    lines = []
    try:
        while True:
            lines.append(c.line())
    except (EOFError, ConnectionError):
        pass
    sender.join(60)
    peak = serve.peak()
    print(f"rss before {before / MB:.1f} MiB, peak during the bomb {peak / MB:.1f} MiB, "
          f"greeting latency of another client {latency * 1000:.0f} ms")
    assert lines == [b"b1 BAD [TOOBIG] Line too long", b"* BYE Line too long; closing connection"]
    assert peak - before < 64 * MB
    assert _greeting_latency(serve) < 10


def _send_until_closed(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the server ended the session before it read everything


def test_compress_pipelined_bomb_keeps_others_served(serve: ServeProcess) -> None:
    """300,000 pipelined NOOPs in a few KiB of DEFLATE: all answered,
    in order, while another client is greeted meanwhile (the server inflates
    a socket read's worth at a time and then lets the others run) and the
    server's memory stays flat."""
    c = plain(serve)
    c.login_and_compress()
    assert c.deflate is not None and c.inflate is not None
    n = 300_000
    bomb = c.deflate.compress(b"a NOOP\r\n" * n + b"z NOOP\r\n") + c.deflate.flush(zlib.Z_SYNC_FLUSH)
    before = serve.rss()
    serve.reset_peak()
    c.sock.sendall(bomb)
    latency = _greeting_latency(serve)
    ok, done = b"a OK NOOP completed\r\n", b"z OK NOOP completed\r\n"
    answered, tail, data = 0, b"", b""
    while not data.endswith(done):
        chunk = c.sock.recv(65536)
        assert chunk, "connection closed"
        data = tail + c.inflate.decompress(chunk)
        answered += data.count(ok)
        tail = data[-(len(ok) - 1) :]  # too short to hold a whole answer: never counted twice
    peak = serve.peak()
    print(f"bomb: {len(bomb)} octets of DEFLATE for {n} NOOPs; greeting latency of another client meanwhile "
          f"{latency * 1000:.0f} ms; rss before {before / MB:.1f} MiB, peak {peak / MB:.1f} MiB")
    assert answered == n
    assert peak - before < 64 * MB
    assert latency < 10


def test_compress_idle_connection_memory(serve: ServeProcess) -> None:
    """What an idle connection with COMPRESS active costs the server."""
    n = 50

    def open_many(compress: bool) -> tuple[list[DeflateClient], int]:
        before = serve.rss()
        clients = []
        for _ in range(n):
            c = plain(serve)
            if compress:
                c.login_and_compress()
                assert c.command(b"n1", b"NOOP") == [b"n1 OK NOOP completed"]
            else:
                assert c.command(b"a1", f'LOGIN {ALICE} "{USERS[ALICE]}"'.encode())[-1].startswith(b"a1 OK")
                assert c.command(b"n1", b"NOOP") == [b"n1 OK NOOP completed"]
            clients.append(c)
        return clients, serve.rss() - before

    def close_all(clients: list[DeflateClient]) -> None:
        for c in clients:
            c.sock.close()
        deadline = time.monotonic() + 30
        while serve.open_connections() and time.monotonic() < deadline:
            time.sleep(0.05)

    warm, _ = open_many(True)  # allocator and import warm-up
    close_all(warm)
    clients, plain_cost = open_many(False)
    close_all(clients)
    clients, compressed_cost = open_many(True)
    per_conn = (compressed_cost - plain_cost) / n
    print(f"idle connection: +{plain_cost / n / 1024:.0f} KiB logged in, "
          f"+{compressed_cost / n / 1024:.0f} KiB with COMPRESS (difference {per_conn / 1024:.0f} KiB)")
    close_all(clients)
    assert compressed_cost / n < 512 * 1024

