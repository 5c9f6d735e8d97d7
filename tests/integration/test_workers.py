"""``mailyard serve`` with ``[server] workers = 2``: a supervisor and two
worker processes over one store (mailyard/workers.py), through real
processes and sockets.

Each test finds out which worker holds each of its connections
(``ServeProcess.serving_pid``: /proc/net/tcp and /proc/PID/fd) and opens
connections until every worker holds one, so what it shows holds *across*
workers, not by luck of the kernel's choice."""

from __future__ import annotations

import contextlib
import hashlib
import os
import poplib
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailyard.auth.passwords import ARGON2_POOL_IDLE_SECONDS
from mailyard.config import Config
from mailyard.net.tls import create_self_signed
from tests.conftest import USERS
from tests.integration.serve_process import ALICE, MB, ServeProcess, free_port, init_data
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")

WORKERS = 2
TIMEOUT = 10.0  # generous: bounds a failure, not a figure


def two_workers(extra: Callable[[Config], None] | None = None) -> Callable[[Config], None]:
    def configure(cfg: Config) -> None:
        cfg.server.workers = WORKERS
        cfg.server.shutdown_grace = 5.0
        if extra is not None:
            extra(cfg)

    return configure


def start_two_workers(data: Path, extra: Callable[[Config], None] | None = None) -> ServeProcess:
    """A real ``mailyard serve`` of two workers on ``data``, once both are up."""
    proc = ServeProcess(data, two_workers(extra))
    wait_until(lambda: len(proc.worker_pids()) == WORKERS, TIMEOUT, "both workers to start")
    return proc


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    proc = start_two_workers(tmp_path / "data", getattr(request, "param", None))
    yield proc
    proc.stop()


class Line:
    """A raw client connection read line by line (IMAP, SMTP, POP3)."""

    def __init__(self, port: int, tls: bool = False) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            raw = ctx.wrap_socket(raw)
        self.sock = raw
        self.buf = b""

    def line(self, timeout: float = TIMEOUT) -> bytes:
        self.sock.settimeout(timeout)
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"connection closed; had {self.buf!r}")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def until(self, pred: Callable[[bytes], bool], timeout: float = TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            line = self.line(max(0.01, deadline - time.monotonic()))
            if pred(line):
                return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


def on_each_worker(proc: ServeProcess, open_one: Callable[[], Any], sock_of: Callable[[Any], socket.socket],
                   close: Callable[[Any], None], tries: int = 60) -> dict[int, Any]:
    """Open connections (each past its greeting) until every worker holds
    one; returns them by worker pid (the extra ones are closed).

    The extra ones stay open until then: which worker takes a connection is
    the kernel's choice, and the spreading over the workers (net/accept.py)
    sees only the connections they hold."""
    workers = set(proc.worker_pids())
    found: dict[int, Any] = {}
    extra: list[Any] = []
    try:
        for _ in range(tries):
            conn = open_one()
            pid = proc.serving_pid(sock_of(conn))
            if pid in workers and pid not in found:
                found[pid] = conn
                if len(found) == len(workers):
                    return found
            else:
                extra.append(conn)
    finally:
        for conn in extra:
            close(conn)
    raise AssertionError(f"connections never reached every worker {workers}: {list(found)}")


def imap_login(proc: ServeProcess, port_name: str = "imap") -> Line:
    c = Line(proc.port(port_name))
    assert c.line().startswith(b"* OK")
    c.send(f"a LOGIN {ALICE} {USERS[ALICE]}\r\n".encode())
    assert c.until(lambda line: line.startswith(b"a ")).startswith(b"a OK")
    return c


def imap_idle(proc: ServeProcess) -> Line:
    c = imap_login(proc)
    c.send(b"b SELECT INBOX\r\n")
    assert c.until(lambda line: line.startswith(b"b ")).startswith(b"b OK")
    c.send(b"c IDLE\r\n")
    assert c.line().startswith(b"+ ")
    return c


def smtp_open(proc: ServeProcess) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", proc.port("smtp"), timeout=TIMEOUT)
    s.ehlo()
    return s


def smtp_send(s: smtplib.SMTP, subject: str) -> None:
    s.sendmail("someone@remote.test", [ALICE], f"From: someone@remote.test\r\nSubject: {subject}\r\n\r\nhello\r\n")


def pop3_open(proc: ServeProcess) -> poplib.POP3:
    return poplib.POP3("127.0.0.1", proc.port("pop3"), timeout=TIMEOUT)


def _close_smtp(s: smtplib.SMTP) -> None:
    s.close()


def _close_pop3(p: poplib.POP3) -> None:
    p.close()


def test_delivery_through_one_worker_wakes_idle_on_every_worker(server: ServeProcess) -> None:
    idlers = on_each_worker(server, lambda: imap_idle(server), lambda c: c.sock, Line.close)
    senders = on_each_worker(server, lambda: smtp_open(server), lambda s: s.sock, _close_smtp)
    exists = 0
    figures = []
    for via, smtp in senders.items():
        exists += 1
        start = time.monotonic()
        smtp_send(smtp, f"through worker {via}")
        for pid, idle in idlers.items():
            line = idle.until(lambda line: line.endswith(b" EXISTS"))
            latency = time.monotonic() - start
            assert line == b"* %d EXISTS" % exists
            where = "same worker" if pid == via else "other worker"
            figures.append(f"{where} {latency * 1000:.1f} ms")
    print("delivery (SMTP DATA .. 250) to IDLE EXISTS:", ", ".join(figures))
    for idle in idlers.values():
        idle.send(b"DONE\r\n")
        assert idle.until(lambda line: line.startswith(b"c ")).startswith(b"c OK")
        idle.close()
    for smtp in senders.values():
        smtp.quit()


def test_pop3_maildrop_lock_holds_across_workers(server: ServeProcess) -> None:
    # RFC 1939 section 8 / RFC 2449 8.1.2: one session per maildrop, whichever worker serves it
    conns = on_each_worker(server, lambda: pop3_open(server), lambda p: p.sock, _close_pop3)
    (first_pid, first), (second_pid, second) = conns.items()
    first.user(ALICE)
    assert first.pass_(USERS[ALICE]).startswith(b"+OK")
    second.user(ALICE)
    with pytest.raises(poplib.error_proto) as refused:
        second.pass_(USERS[ALICE])
    assert refused.value.args[0].startswith(b"-ERR [IN-USE]"), refused.value.args
    first.quit()  # releases the lock
    again = on_each_worker(server, lambda: pop3_open(server), lambda p: p.sock, _close_pop3)
    other = again.pop(second_pid)
    other.user(ALICE)
    assert other.pass_(USERS[ALICE]).startswith(b"+OK")
    other.quit()
    for p in again.values():
        p.close()
    second.close()


def _strict_throttle(cfg: Config) -> None:
    cfg.auth.base_delay = 0.0
    cfg.auth.account_max_failures = 4


@pytest.mark.parametrize("server", [_strict_throttle], indirect=True)
def test_login_throttle_counts_failures_of_every_worker(server: ServeProcess) -> None:
    conns = on_each_worker(server, lambda: Line(server.port("imap")), lambda c: c.sock, Line.close)
    for c in conns.values():
        assert c.line().startswith(b"* OK")
    n = 0
    for _round in range(2):  # two wrong passwords on each worker: four in all
        for c in conns.values():
            n += 1
            c.send(f"f{n} LOGIN {ALICE} wrong-{n}\r\n".encode())
            assert c.until(lambda line, n=n: line.startswith(b"f%d " % n)).startswith(b"f%d NO" % n)
    # the account's budget (4) is spent across the workers: the right password
    # is refused on either of them
    for pid, c in conns.items():
        n += 1
        c.send(f"f{n} LOGIN {ALICE} {USERS[ALICE]}\r\n".encode())
        reply = c.until(lambda line, n=n: line.startswith(b"f%d " % n))
        assert reply.startswith(b"f%d NO [UNAVAILABLE]" % n), (pid, reply)
        c.close()


def test_sigterm_drains_every_worker_and_exits_0(server: ServeProcess) -> None:
    imaps = on_each_worker(server, lambda: imap_login(server), lambda c: c.sock, Line.close)
    smtps = on_each_worker(server, lambda: Line(server.port("smtp")), lambda c: c.sock, Line.close)
    for c in smtps.values():
        assert c.line().startswith(b"220")
    workers = server.worker_pids()
    server.proc.send_signal(signal.SIGTERM)
    for c in imaps.values():
        assert c.until(lambda line: line.startswith(b"* BYE")).startswith(b"* BYE")
    for c in smtps.values():
        assert c.line().startswith(b"421")
    assert server.proc.wait(30) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def _with_imaps(cfg: Config) -> None:
    cfg.ports.imaps = free_port()


def fingerprint(c: Line) -> str:
    assert isinstance(c.sock, ssl.SSLSocket)
    der = c.sock.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def _imaps(proc: ServeProcess, port: int) -> Line:
    c = Line(port, tls=True)
    assert c.line().startswith(b"* OK")
    return c


@pytest.mark.parametrize("server", [_with_imaps], indirect=True)
def test_sighup_reloads_the_certificate_in_every_worker(server: ServeProcess) -> None:
    cfg = Config.load(server.data / "config.toml")
    port = cfg.ports.imaps
    old = on_each_worker(server, lambda: _imaps(server, port), lambda c: c.sock, Line.close)
    old_prints = {fingerprint(c) for c in old.values()}
    assert len(old_prints) == 1
    cert, key = server.data / "tls" / "cert.pem", server.data / "tls" / "key.pem"
    create_self_signed(cfg.server.hostname, cert, key)
    server.proc.send_signal(signal.SIGHUP)

    def renewed_everywhere() -> bool:
        new = on_each_worker(server, lambda: _imaps(server, port), lambda c: c.sock, Line.close)
        prints = {pid: fingerprint(c) for pid, c in new.items()}
        for c in new.values():
            c.close()
        return all(p not in old_prints for p in prints.values())

    wait_until(renewed_everywhere, TIMEOUT, "every worker to present the new certificate")
    # sessions opened before keep working
    for c in old.values():
        c.send(b"n NOOP\r\n")
        assert c.until(lambda line: line.startswith(b"n ")).startswith(b"n OK")
        c.close()


def test_killed_worker_is_replaced_and_others_keep_serving(server: ServeProcess) -> None:
    sessions = on_each_worker(server, lambda: imap_login(server), lambda c: c.sock, Line.close)
    victim, survivor = sorted(sessions)
    os.kill(victim, signal.SIGKILL)
    start = time.monotonic()
    wait_until(lambda: len(server.worker_pids()) == WORKERS and victim not in server.worker_pids(),
               TIMEOUT, "the supervisor to start a new worker")
    print(f"worker replaced {1000 * (time.monotonic() - start):.0f} ms after its SIGKILL")
    # the other worker's session never noticed
    sessions[survivor].send(b"n NOOP\r\n")
    assert sessions[survivor].until(lambda line: line.startswith(b"n ")).startswith(b"n OK")
    # and the new worker serves
    fresh = on_each_worker(server, lambda: imap_login(server), lambda c: c.sock, Line.close)
    assert set(fresh) == set(server.worker_pids())
    for c in [*fresh.values(), *sessions.values()]:
        c.close()
    assert server.alive()


def test_idle_server_of_two_workers_stays_small(server: ServeProcess) -> None:
    # one session per worker and service, so each has touched its code paths
    for c in on_each_worker(server, lambda: imap_login(server), lambda c: c.sock, Line.close).values():
        c.close()
    for s in on_each_worker(server, lambda: smtp_open(server), lambda s: s.sock, _close_smtp).values():
        smtp_send(s, "warm-up")
        s.quit()
    wait_until(lambda: server.open_connections() == 0, TIMEOUT, "sessions to end")
    print(f"PSS just after the last session, supervisor + {WORKERS} workers: {server.pss() / MB:.1f} MB")
    # idle: no login for ARGON2_POOL_IDLE_SECONDS seconds gives the argon2
    # buffers back. About 105 MB with every service of the server on (the
    # concurrency issue's target of 100 MB is not met): the bound catches a
    # regression such as buffers that are never given back (+38 MB).
    wait_until(lambda: server.pss() < 120 * MB, TIMEOUT + ARGON2_POOL_IDLE_SECONDS,
               "the idle server to fall under 120 MB")
    print(f"idle PSS, supervisor + {WORKERS} workers: {server.pss() / MB:.1f} MB")


def _with_http(cfg: Config) -> None:
    cfg.ports.http = free_port()


@pytest.mark.parametrize("server", [_with_http], indirect=True)
def test_webmail_session_holds_over_many_requests(server: ServeProcess) -> None:
    # Webmail sessions live in one process's memory: every request of a
    # browser must reach that process, however many workers serve.
    import re

    import httpx

    port = Config.load(server.data / "config.toml").ports.http
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False, timeout=TIMEOUT) as client:
        r = client.get("/login")
        match = re.search(r'name="login_token" value="([^"]+)"', r.text)
        assert match is not None
        r = client.post("/login", data={"username": ALICE, "password": USERS[ALICE], "login_token": match.group(1)})
        assert r.status_code == 303, r.text
        for _ in range(20):  # new connections each time
            client.cookies.update(client.cookies)
            r = client.get("/", headers={"Connection": "close"})
            assert r.status_code in (200, 303) and r.headers.get("location") != "/login", r.headers


def _two_per_ip(cfg: Config) -> None:
    cfg.limits.max_connections_per_ip = 2


@pytest.mark.parametrize("server", [_two_per_ip], indirect=True)
def test_connection_cap_per_address_holds_for_the_whole_server(server: ServeProcess) -> None:
    # each worker enforces its share of [limits], so one address gets at most
    # the configured number of sessions from all the workers together
    conns = [Line(server.port("imap")) for _ in range(8)]
    greetings = [c.line() for c in conns]
    served = {server.serving_pid(c.sock) for c, g in zip(conns, greetings, strict=True) if g.startswith(b"* OK")}
    accepted = sum(g.startswith(b"* OK") for g in greetings)
    print(f"{accepted} of 8 connections from one address accepted, by workers {sorted(p for p in served if p)}")
    assert 1 <= accepted <= 2, greetings
    for c in conns:
        c.close()


def _half_handshake(port: int) -> socket.socket:
    """A connection that begins a TLS handshake (a 16 KiB handshake record's
    header and the first bytes of its ClientHello, RFC 8446 5.1) and never
    ends it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # (closed by the server already)
        sock.sendall(b"\x16\x03\x01" + (16384).to_bytes(2, "big") + b"\x01" + b"\x00" * 1000)
    return sock


def test_tls_handshakes_count_against_each_workers_share_of_the_caps(tmp_path: Path) -> None:
    """Half-open TLS handshakes from one address are held by the workers
    only up to the per-address cap of the whole server (each worker its
    share); the others are closed at once, before any TLS work."""
    proc = ServeProcess(tmp_path / "data", two_workers(_two_per_ip), pick=("imaps",))
    held: list[socket.socket] = []
    try:
        wait_until(lambda: len(proc.worker_pids()) == WORKERS, TIMEOUT, "both workers to start")
        held = [_half_handshake(proc.port("imaps")) for _ in range(8)]
        wait_until(lambda: proc.open_connections() <= 2, TIMEOUT,
                   lambda: f"the connections over the cap to be closed: {proc.open_connections()} open")
        # another address is served meanwhile
        other = socket.create_connection(("127.0.0.1", proc.port("imaps")), timeout=TIMEOUT,
                                         source_address=("127.0.0.2", 0))
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with ctx.wrap_socket(other) as tls:
            tls.settimeout(TIMEOUT)
            assert tls.recv(100).startswith(b"* OK")
        for sock in held:
            sock.close()
        # the half-open ones gave their slots back: their address is served again
        def served() -> bool:
            try:
                c = Line(proc.port("imaps"), tls=True)
            except (ssl.SSLError, ConnectionError):
                return False
            try:
                return c.line().startswith(b"* OK")
            except (OSError, EOFError):
                return False
            finally:
                c.close()
        wait_until(served, TIMEOUT, "a TLS client from the address to be served")
        assert not proc.tracebacks()
    finally:
        for sock in held:
            sock.close()
        proc.stop()


def test_workers_end_with_a_killed_supervisor(server: ServeProcess) -> None:
    workers = server.worker_pids()
    server.proc.kill()
    server.proc.wait(TIMEOUT)

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
                       for pid in workers)

    wait_until(gone, TIMEOUT, "the workers to end with their supervisor")


@pytest.fixture
def smarthost() -> Any:
    from tests.integration.test_crash_safety import FakePeer

    peer = FakePeer(lambda: 0)
    yield peer
    peer.close()


def test_mail_queued_through_any_worker_is_sent_at_once(tmp_path: Path, smarthost: Any) -> None:
    # Worker 0 runs the outbound queue; the other tells it of new entries over
    # the change channel. The poll interval is long, so only that note can
    # make the delivery prompt.
    def configure(cfg: Config) -> None:
        cfg.ports.submission = free_port()
        d = cfg.delivery
        d.relay_host, d.relay_port, d.relay_tls = "127.0.0.1", smarthost.server_address[1], "none"
        d.poll_interval = 600.0

    proc = ServeProcess(tmp_path / "data", two_workers(configure))
    try:
        wait_until(lambda: len(proc.worker_pids()) == WORKERS, TIMEOUT, "both workers to start")
        port = Config.load(proc.data / "config.toml").ports.submission

        def submit_open() -> smtplib.SMTP:
            s = smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT)
            s.ehlo()
            return s

        senders = on_each_worker(proc, submit_open, lambda s: s.sock, _close_smtp)
        figures = []
        for pid, s in senders.items():
            s.login(ALICE, USERS[ALICE])
            rcpt = f"r{pid}@remote.test"
            start = time.monotonic()
            s.sendmail(ALICE, [rcpt], f"From: {ALICE}\r\nTo: {rcpt}\r\nSubject: via {pid}\r\n\r\nhi\r\n")

            def arrived(rcpt: str = rcpt) -> bool:
                with smarthost.lock:
                    return any(r == rcpt for _cid, r, _g, _t, _raw in smarthost.accepted)

            wait_until(arrived, TIMEOUT, f"the message queued through worker {pid} to reach the smarthost")
            figures.append(f"{(time.monotonic() - start) * 1000:.0f} ms")
            s.quit()
        print("submission 250 .. smarthost 250, through each worker:", ", ".join(figures))
    finally:
        proc.stop()


def _small_budget(cfg: Config) -> None:
    cfg.limits.max_connections_per_ip = 1000
    cfg.auth.account_max_failures = 2  # two attempts in flight at most


@pytest.mark.parametrize("server", [_small_budget], indirect=True)
def test_a_burst_of_correct_logins_is_served_by_every_worker(server: ServeProcess) -> None:
    # More logins of one account at once than its budget: those finding the
    # budget held by attempts in flight wait for one to settle, whichever
    # worker holds it (a settle is announced to the other workers).
    import threading

    burst = 60
    replies: list[bytes] = []
    lock = threading.Lock()

    def one() -> None:
        c = Line(server.port("imap"))
        try:
            c.line()
            c.send(f"a LOGIN {ALICE} {USERS[ALICE]}\r\n".encode())
            reply = c.until(lambda line: line.startswith(b"a "), timeout=60)
        except (OSError, EOFError) as exc:
            reply = repr(exc).encode()
        finally:
            c.close()
        with lock:
            replies.append(reply)

    threads = [threading.Thread(target=one) for _ in range(burst)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    print(f"{burst} concurrent logins of one account over {WORKERS} workers: {time.monotonic() - start:.1f} s")
    refused = [r for r in replies if not r.startswith(b"a OK")]
    assert len(replies) == burst and not refused, refused[:3]


def test_clients_that_connect_together_are_spread_over_the_workers(server: ServeProcess) -> None:
    # 10 IMAP clients that start together: each worker serves about half of
    # them, not one worker all ten for the life of their sessions. (First one
    # session on each worker: both are accepting.)
    def greeted() -> Line:
        c = Line(server.port("imap"))
        assert c.line().startswith(b"* OK")
        return c

    first = on_each_worker(server, greeted, lambda c: c.sock, Line.close)
    port = server.port("imap")
    socks = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) for _ in range(10)]
    try:
        for sock in socks:
            sock.settimeout(TIMEOUT)
            assert sock.recv(4096).startswith(b"* OK")
        held = [server.serving_pid(sock) for sock in socks]
        spread = sorted(held.count(pid) for pid in server.worker_pids())
        print(f"the 10 new sessions per worker: {spread}")
        assert len(spread) == WORKERS and spread[0] >= 3, spread
    finally:
        for sock in socks:
            sock.close()
        for c in first.values():
            c.close()


def test_a_webmail_only_server_of_two_workers_stops_cleanly(tmp_path: Path) -> None:
    # every mail port off, webmail on: the workers share no accept counts,
    # and the supervisor still stops them (SIGTERM) and exits 0
    data = tmp_path / "data"
    init_data(data)
    cfg = Config.load(data / "config.toml")
    for name in ("smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "https",
                 "managesieve", "managesieve_tls"):
        setattr(cfg.ports, name, 0)
    cfg.ports.http = free_port()
    cfg.server.workers = WORKERS
    cfg.store.fsync = False
    cfg.metrics.listen = f"127.0.0.1:{free_port()}"
    cfg.authentication.inbound_checks = False
    (data / "config.toml").write_text(cfg.to_toml())
    proc = subprocess.Popen([sys.executable, "-m", "mailyard", "--data", str(data), "serve"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line.decode(errors="replace"))
            if b"mailyard is running" in line:
                break
        else:
            pytest.fail("server did not start:\n" + "".join(seen))
        proc.send_signal(signal.SIGTERM)
        out = proc.stdout.read().decode(errors="replace")
        status = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert status == 0 and "Traceback" not in out, out
