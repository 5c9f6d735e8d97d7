"""Memory per connection through real sockets, measured by the RSS of a
``mailyard serve`` process: IMAP commands are bounded as a whole (every line
and literal) before and after login, and checked against the connection's
state before their literals are read; SMTP message data goes to a spool file
as it arrives, so an unfinished transfer holds kilobytes, not the message.

Each attack also probes that another client is still served meanwhile (the
greeting latency of a second connection is printed, not asserted).
"""

from __future__ import annotations

import asyncio
import imaplib
import os
import select
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailyard.config import Config
from tests.conftest import USERS, RunningServer, make_test_config
from tests.integration.serve_process import MB, ServeProcess
from tests.waiting import wait_until

ALICE = "alice@example.test"


def _configure(cfg: Config) -> None:
    cfg.limits.max_connections_per_ip = 200


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    proc = ServeProcess(tmp_path_factory.mktemp("memory") / "data", _configure)
    try:
        yield proc
    finally:
        proc.stop()


def _baseline(serve: ServeProcess) -> int:
    """One IMAP login (imports, argon2's buffers) and one SMTP session; once
    the server has closed both, the peak is reset and the RSS returned."""
    m = imaplib.IMAP4(serve.host, serve.port("imap"), timeout=30)
    m.login(ALICE, USERS[ALICE])
    m.logout()
    with socket.create_connection((serve.host, serve.port("smtp")), timeout=30) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"QUIT\r\n")
        f.readline()
    wait_until(lambda: serve.open_connections() == 0, what="the server to end the warm-up sessions")
    serve.reset_peak()
    return serve.rss()


def _greeting_latency(serve: ServeProcess, service: str) -> float:
    """Seconds from connecting to the greeting line of a fresh connection."""
    start = time.perf_counter()
    with socket.create_connection((serve.host, serve.port(service)), timeout=10) as sock:
        line = sock.makefile("rb").readline()
    elapsed = time.perf_counter() - start
    assert line.startswith(b"* OK" if service == "imap" else b"220"), line
    return elapsed


def _send_until_answered(sock: socket.socket, chunks: Iterator[bytes], wait: float = 10.0) -> bytes:
    """Send ``chunks`` while watching for an answer; stop sending once the
    server answered or closed. Returns all the server said until it closed
    the connection (or ``wait`` seconds of silence after the last chunk)."""
    received = bytearray()
    sock.setblocking(False)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                readable, writable, _ = select.select([sock], [sock], [], wait)
                if readable:
                    data = sock.recv(65536)
                    received += data
                    if not data or b"* BYE" in received:
                        return _drain(sock, received, wait)
                if writable:
                    try:
                        view = view[sock.send(view):]
                    except (BrokenPipeError, ConnectionResetError):
                        return _drain(sock, received, wait)
                if not readable and not writable:
                    return bytes(received)
        return _drain(sock, received, wait)
    finally:
        sock.setblocking(True)


def _drain(sock: socket.socket, received: bytearray, wait: float) -> bytes:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], deadline - time.monotonic())
        if not readable:
            break
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        received += data
    return bytes(received)


def _imap(serve: ServeProcess) -> socket.socket:
    sock = socket.create_connection((serve.host, serve.port("imap")), timeout=30)
    assert sock.recv(4096).startswith(b"* OK")
    return sock


# --- IMAP: whole-command budgets -------------------------------------------------
def test_imap_empty_literal_chain_before_login_is_cut_off(serve: ServeProcess) -> None:
    """``{0+}`` lines chained without end: each line is short, the command is
    not. Before login a command gets a few KB in all: BAD [TOOBIG], then BYE
    (RFC 7888 4: its non-synchronising literals cannot be skipped safely)."""
    baseline = _baseline(serve)
    with _imap(serve) as sock:
        line = b"{0+}\r\n" * 10_000  # 60 KB of chained empty literals

        def chain() -> Iterator[bytes]:
            yield b"a LOGIN {0+}\r\n"
            for _ in range(200):  # up to 12 MB, two million segments
                yield line

        answer = _send_until_answered(sock, chain())
    latency = _greeting_latency(serve, "imap")
    grown = serve.peak() - baseline
    print(f"\n{{0+}} chain before login: peak RSS {grown / MB:+.1f} MB; answer {answer[:80]!r}; "
          f"second client's greeting after {latency * 1000:.1f} ms")
    assert b"a BAD [TOOBIG] Command too large" in answer
    assert b"* BYE" in answer
    assert grown < 5 * MB
    assert serve.alive() and not serve.tracebacks()


def test_imap_append_literals_before_login_refused_before_buffering(serve: ServeProcess) -> None:
    """8 non-synchronising 25 MB APPEND literals in one command, before
    login: the state is checked at the first literal marker, before a byte
    of it is read (BAD, then BYE: the octets are already on their way)."""
    baseline = _baseline(serve)
    size = 25_000_000
    block = b"x" * MB

    def append() -> Iterator[bytes]:
        yield b"a APPEND INBOX {%d+}\r\n" % size
        for i in range(8):
            for _ in range(size // MB):
                yield block
            yield block[: size % MB] + (b" {%d+}\r\n" % size if i < 7 else b"\r\n")

    with _imap(serve) as sock:
        answer = _send_until_answered(sock, append())
    latency = _greeting_latency(serve, "imap")
    grown = serve.peak() - baseline
    print(f"\n8 x 25 MB APPEND literals before login: peak RSS {grown / MB:+.1f} MB; answer {answer!r}; "
          f"second client's greeting after {latency * 1000:.1f} ms")
    assert answer.startswith(b"a BAD APPEND is not valid in the not authenticated state\r\n* BYE"), answer
    assert grown < 10 * MB
    assert serve.alive() and not serve.tracebacks()


def test_imap_literal_chain_after_login_is_bounded_as_a_whole(serve: ServeProcess) -> None:
    """After login each literal outside APPEND may be 64 KB, but a command
    chaining 300 of them (18 MB) exceeds ``limits.imap_max_command`` (1 MB)
    and is refused as soon as it does: BAD [TOOBIG], BYE."""
    with _imap(serve) as sock:
        f = sock.makefile("rb")
        sock.sendall(b'a LOGIN alice@example.test "%s"\r\n' % USERS[ALICE].encode())
        assert f.readline().startswith(b"a OK")
        sock.sendall(b"n NOOP\r\n")  # its reply: the session is done with LOGIN
        assert f.readline().startswith(b"n OK")
        serve.reset_peak()
        baseline = serve.rss()
        literal = b"y" * 60_000

        def chain() -> Iterator[bytes]:
            yield b"b NOOP {60000+}\r\n"
            for _ in range(300):
                yield literal + b" {60000+}\r\n"
            yield literal + b"\r\n"

        answer = _send_until_answered(sock, chain())
    grown = serve.peak() - baseline
    print(f"\n300 x 60 KB literals in one command after login: peak RSS {grown / MB:+.1f} MB; answer {answer!r}")
    assert answer.startswith(b"b BAD [TOOBIG] Command too large\r\n* BYE"), answer
    assert grown < 10 * MB
    assert serve.alive() and not serve.tracebacks()


# --- IMAP: what a logged-in, selected, idling session costs --------------------------
IDLE_SESSIONS = 200


async def _idle_sessions(port: int, n: int) -> list[asyncio.StreamWriter]:
    """``n`` clients that each LOGIN (argon2id), SELECT INBOX and IDLE, as a
    mail client sits on a server; their writers (closing one ends it)."""
    # below the throttle's logins in flight per account (10): none waits a turn
    limit = asyncio.Semaphore(8)

    async def one() -> asyncio.StreamWriter:
        async with limit:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert (await reader.readline()).startswith(b"* OK")
            writer.write(b'a LOGIN %s "%s"\r\nb SELECT INBOX\r\nc IDLE\r\n'
                         % (ALICE.encode(), USERS[ALICE].encode()))
            seen = []
            while not (line := await reader.readline()).startswith(b"+ "):
                seen.append(line)
                assert line and not line.startswith((b"a NO", b"a BAD", b"b NO", b"b BAD", b"* BYE")), seen
            assert b"a OK" in b"".join(seen) and b"b OK" in b"".join(seen), seen
            return writer

    return await asyncio.gather(*(one() for _ in range(n)))


def _pss(serve: ServeProcess) -> int:
    """Proportional set size in bytes of the server process and its children
    (worker processes; shared pages count once in the sum)."""
    pids = [serve.proc.pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == serve.proc.pid:
                pids.append(int(entry.name))
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:  # ended meanwhile
            continue
        total += int(text.split("\nPss:", 1)[1].split()[0]) * 1024
    return total


def test_selected_idle_imap_sessions_cost_little_memory_by_pss(tmp_path: Path) -> None:
    """200 clients LOGIN, SELECT a non-empty INBOX and IDLE. The server's PSS
    against the same server before any login: a few KiB per session once the
    logins are over. The argon2 working buffers kept for a burst of logins
    (2 x 19 MiB, auth/passwords.py) go back once logins stop, so they are not
    charged to the idle sessions (kept, they were ~190 KiB per session here)."""
    def configure(cfg: Config) -> None:
        cfg.limits.max_connections_per_ip = IDLE_SESSIONS + 20

    serve = ServeProcess(tmp_path / "data", configure)
    try:
        with socket.create_connection((serve.host, serve.port("smtp")), timeout=30) as sock:
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(b"HELO sender\r\n")
            f.readline()
            for i in range(20):
                sock.sendall(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<%s>\r\nDATA\r\n" % ALICE.encode())
                for _ in range(3):
                    f.readline()
                sock.sendall(b"Subject: m%d\r\n\r\nbody\r\n.\r\n" % i)
                assert f.readline().startswith(b"250")
            sock.sendall(b"QUIT\r\n")
            f.readline()
            f.close()  # else it keeps the socket open
        wait_until(lambda: serve.open_connections() == 0, what="the server to end the SMTP session")
        baseline = _pss(serve)

        async def attack() -> tuple[float, float]:
            writers = await _idle_sessions(serve.port("imap"), IDLE_SESSIONS)
            try:
                per_session = 0.0

                def settled() -> bool:
                    nonlocal per_session
                    per_session = (_pss(serve) - baseline) / IDLE_SESSIONS / 1024
                    return per_session < 50

                deadline = time.monotonic() + 30
                while not settled() and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                latency = await asyncio.to_thread(_greeting_latency, serve, "imap")
                return per_session, latency
            finally:
                for writer in writers:
                    writer.write(b"DONE\r\nd LOGOUT\r\n")
                    writer.close()

        per_session, latency = asyncio.run(attack())
        print(f"\n{IDLE_SESSIONS} selected IDLE sessions: {per_session:.1f} KiB each by PSS "
              f"(server before any login {baseline / MB:.1f} MB); second client's greeting after "
              f"{latency * 1000:.1f} ms")
        assert per_session < 50
        assert serve.alive() and not serve.tracebacks()
    finally:
        serve.stop()


# --- SMTP: message data is spooled ----------------------------------------------------
def _spool_fds(serve: ServeProcess) -> int:
    """Open files of the server in its spool directory."""
    spool = str(serve.data / "spool")
    count = 0
    for fd in os.listdir(f"/proc/{serve.proc.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{serve.proc.pid}/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(spool)
    return count


def test_unfinished_smtp_data_transfers_cost_no_message_memory(serve: ServeProcess) -> None:
    """20 unauthenticated clients each send 10 MB of DATA and never the final
    dot. Held in memory that was 200 MB; spooled it is a few KB each. The
    spool files go with the connections."""
    clients, per_client = 20, 10
    baseline = _baseline(serve)
    line = b"x" * 998 + b"\r\n"
    block = line * 1024  # 1 MiB
    socks: list[socket.socket] = []
    try:
        for _ in range(clients):
            sock = socket.create_connection((serve.host, serve.port("smtp")), timeout=60)
            socks.append(sock)
            with sock.makefile("rb") as f:  # closed: it would keep the socket open
                assert f.readline().startswith(b"220")
                sock.sendall(b"HELO attacker\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
                for _ in range(4):
                    assert f.readline()[:1] in (b"2", b"3")
        for _ in range(per_client):
            for sock in socks:
                sock.sendall(block)
        # wait until the server has read (nearly) everything into the spools
        wait_until(lambda: _spool_bytes(serve) >= clients * (per_client - 1) * MB, 60,
                   what=lambda: f"the spools to fill ({_spool_bytes(serve) / MB:.0f} MB so far)")
        spooled = _spool_bytes(serve)
        smtp_latency = _greeting_latency(serve, "smtp")
        imap_latency = _greeting_latency(serve, "imap")
        grown = serve.peak() - baseline
        print(f"\n{clients} unfinished DATA transfers of {per_client} MB: peak RSS {grown / MB:+.1f} MB, "
              f"{spooled / MB:.0f} MB in spool files; second client's greeting: SMTP {smtp_latency * 1000:.1f} ms, "
              f"IMAP {imap_latency * 1000:.1f} ms")
        assert grown < 60 * MB
        assert spooled >= clients * (per_client - 1) * MB
    finally:
        for sock in socks:
            sock.close()
    wait_until(lambda: _spool_fds(serve) == 0, 20, what="the spool files to close with their connections")
    assert not any((serve.data / "spool").iterdir())
    assert serve.alive() and not serve.tracebacks()


def _spool_bytes(serve: ServeProcess) -> int:
    """Octets in the server's open spool files (nameless: found through /proc)."""
    spool = str(serve.data / "spool")
    total = 0
    for fd in os.listdir(f"/proc/{serve.proc.pid}/fd"):
        path = f"/proc/{serve.proc.pid}/fd/{fd}"
        try:
            if os.readlink(path).startswith(spool):
                total += os.stat(path).st_size
        except OSError:
            continue
    return total


# --- SMTP: a spooled message is stored exactly -----------------------------------------
def _smtp_data(server: RunningServer, payload: bytes) -> list[bytes]:
    with socket.create_connection((server.host, server.port("smtp")), timeout=30) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"EHLO big\r\n")
        while f.readline()[3:4] == b"-":
            pass
        sock.sendall(b"MAIL FROM:<big@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        replies = [f.readline() for _ in range(3)]
        sock.sendall(payload + b"NOOP\r\n")
        replies += [f.readline(), f.readline()]
    return replies


def _stuffed(message: bytes) -> bytes:
    """RFC 5321 4.5.2: a dot at the start of a line is doubled, then the terminator."""
    lines = message.split(b"\r\n")
    return b"\r\n".join(b"." + x if x.startswith(b".") else x for x in lines) + b".\r\n"


def test_spooled_message_is_stored_exactly(make_server: Callable[..., RunningServer]) -> None:
    """A 3 MB message (spooled in parts) with dot-stuffed lines in every part
    comes back byte for byte, after the trace fields the server prepends."""
    server = make_server()
    body = b"".join(
        (b".dot line %d\r\n" % i if i % 7 == 0 else b"..two dots %d\r\n" % i if i % 11 == 0 else b"z" * 900 + b"\r\n")
        for i in range(3500)
    )
    message = b"Subject: spooled\r\nFrom: big@remote.test\r\n\r\n" + body
    replies = _smtp_data(server, _stuffed(message))
    assert replies[3].startswith(b"250 "), replies
    assert replies[4].startswith(b"250 "), replies
    (stored,) = server.messages(ALICE)
    assert stored.endswith(b"\r\n" + message) or stored.endswith(message)
    assert stored[: -len(message)].startswith(b"Return-Path: <big@remote.test>\r\n")
    assert b"Received: " in stored[: -len(message)]


@pytest.mark.parametrize("where", ["first part", "last part"])
def test_spooled_message_with_bare_lf_is_refused(make_server: Callable[..., RunningServer], where: str) -> None:
    """The bare CR/LF check (SMTP smuggling) sees every spooled part: 550
    5.6.0, nothing stored, the spool dropped and the session goes on."""
    server = make_server()
    lines = [b"w" * 500 + b"\r\n"] * 6000
    lines[10 if where == "first part" else -10] = b"smuggled\n.\r\nRSET\r\n"
    message = b"Subject: bare\r\n\r\n" + b"".join(lines)
    replies = _smtp_data(server, message + b".\r\n")
    assert replies[3].startswith(b"550 5.6.0"), replies
    assert replies[4].startswith(b"250 "), replies
    assert server.messages(ALICE) == []


def test_stray_spool_files_are_removed_at_start(tmp_path: Path) -> None:
    """A file left in <data>/spool (a crash between creating and unlinking it,
    where O_TMPFILE is unavailable) is removed when the server starts."""
    data = tmp_path / "data"
    (data / "spool").mkdir(parents=True)
    stray = data / "spool" / "msg-stray"
    stray.write_bytes(b"half a message")
    server = RunningServer(data, make_test_config())
    try:
        server.start()
        assert not stray.exists()
    finally:
        server.stop()
