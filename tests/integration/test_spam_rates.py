"""The MX port's abuse defences through real sockets: connection and
message rates per address and per /24 (spam/rates.py), early talkers
(RFC 5321 4.3.1) and clients that do not wait for replies (RFC 2920 3.1).

Clients come from other loopback addresses (127.0.0.2, 127.0.1.3: all of
127/8 is the loopback interface on Linux), so one test shows an address,
its /24 neighbour and another network. ``trusted_networks`` is emptied: by
default loopback is exempt."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailyard import logs, metrics
from mailyard.config import Config
from mailyard.net import smtp as smtp_glue
from tests.conftest import RunningServer
from tests.integration.serve_process import ServeProcess
from tests.waiting import wait_until

TIMEOUT = 10.0  # generous: bounds a failure, not a figure
HOST = "mx.example.test"


def limits(conns: int = 0, msgs: int = 0, factor: int = 2, greet_pause: float = 0.0) -> Callable[[Config], None]:
    def configure(cfg: Config) -> None:
        cfg.server.hostname = HOST
        cfg.spam.trusted_networks = []
        cfg.spam.mx_connections_per_minute = conns
        cfg.spam.mx_messages_per_minute = msgs
        cfg.spam.mx_network_factor = factor
        cfg.spam.greet_pause = greet_pause

    return configure


class Client:
    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT, source_address=(source, 0))
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise EOFError(f"closed; had {self.buf!r}")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def reply(self) -> bytes:
        """A whole (multi-line) reply, lines joined."""
        lines = [self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(self.line())
        return b"\n".join(lines)

    def closed(self) -> bool:
        """The server closed the connection (EOF after what it sent)."""
        self.sock.settimeout(TIMEOUT)
        try:
            return self.sock.recv(4096) == b""
        except ConnectionResetError:
            return True

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


def greet(port: int, source: str) -> bytes:
    c = Client(port, source)
    try:
        return c.line()
    finally:
        c.close()


def test_connection_rate_per_address_and_per_network(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_server(limits(conns=5, factor=2))
    port = server.port("smtp")
    caplog.set_level(logging.INFO)
    for _ in range(5):
        assert greet(port, "127.0.0.2").startswith(b"220 ")
    refused = greet(port, "127.0.0.2")
    assert refused == (b"421 4.7.0 mx.example.test too many connections from 127.0.0.2 (over 5 a minute),"
                       b" try again later")
    # the /24 counted those six: a neighbour gets the rest of the network's 10
    for _ in range(4):
        assert greet(port, "127.0.0.3").startswith(b"220 ")
    assert greet(port, "127.0.0.3") == (b"421 4.7.0 mx.example.test too many connections from network"
                                        b" 127.0.0.0/24 (over 10 a minute), try again later")
    # another /24 is not concerned
    assert greet(port, "127.0.1.3").startswith(b"220 ")
    lines = [r.getMessage() for r in caplog.records if "abuse_refused" in r.getMessage()]
    print("\n".join(lines))
    assert any("ip=127.0.0.2 reason=rate" in m and "too many connections from 127.0.0.2" in m for m in lines)
    assert any("ip=127.0.0.3 reason=rate" in m and "network 127.0.0.0/24" in m for m in lines)


def test_message_rate_refuses_mail_with_451(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(limits(msgs=3))
    c = Client(server.port("smtp"), "127.0.0.4")
    assert c.line().startswith(b"220 ")
    c.send(b"EHLO client.example.org\r\n")
    assert c.reply().startswith(b"250-")
    for _ in range(3):
        c.send(b"MAIL FROM:<a@example.org>\r\n")
        assert c.reply() == b"250 2.1.0 Sender OK"
        c.send(b"RSET\r\n")
        assert c.reply().startswith(b"250 ")
    c.send(b"MAIL FROM:<a@example.org>\r\n")
    assert c.reply() == b"451 4.7.1 too many messages from 127.0.0.4 (over 3 a minute), try again later"
    c.close()


def test_loopback_is_exempt_by_default(make_server: Callable[..., RunningServer]) -> None:
    def configure(cfg: Config) -> None:
        cfg.spam.mx_connections_per_minute = 2

    server = make_server(configure)
    for _ in range(5):
        assert greet(server.port("smtp"), "127.0.0.5").startswith(b"220 ")


def test_early_talker_is_refused(make_server: Callable[..., RunningServer],
                                 caplog: pytest.LogCaptureFixture) -> None:
    server = make_server(limits(greet_pause=1.0))
    caplog.set_level(logging.INFO)
    port = server.port("smtp")
    talker = Client(port, "127.0.0.6")
    talker.send(b"EHLO spambot\r\n")
    assert talker.line() == b"554 5.5.1 mx.example.test SMTP synchronization error: data sent before the greeting"
    assert talker.closed()
    # a client that waits gets the greeting after the pause
    polite = Client(port, "127.0.0.6")
    assert polite.line().startswith(b"220 mx.example.test")
    polite.send(b"QUIT\r\n")
    assert polite.line().startswith(b"221 ")
    assert any("reason=early-talker" in r.getMessage() for r in caplog.records)


def test_early_talkers_log_within_a_budget_and_are_all_counted(
        make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A client refused for talking early reconnects and does it again: the
    abuse_refused lines of a listener and reason stay within the log's
    budget (then a line says how many were held back), and the metric counts
    every refusal."""
    monkeypatch.setattr(smtp_glue, "_ABUSE_LINES", logs.EventBudget(burst=3, window=3600.0))
    counted: list[str] = []
    monkeypatch.setattr(metrics, "count_abuse", lambda service, reason: counted.append(reason))
    server = make_server(limits(greet_pause=1.0))
    caplog.set_level(logging.INFO)
    for _ in range(8):
        talker = Client(server.port("smtp"), "127.0.0.6")
        talker.send(b"EHLO spambot\r\n")
        assert talker.line().startswith(b"554 5.5.1 ")
        assert talker.closed()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("abuse_refused ")]
    assert len(lines) == 3 and all("reason=early-talker" in line for line in lines), lines
    assert counted == ["early-talker"] * 8


def test_commands_ahead_of_the_ehlo_reply_are_refused(make_server: Callable[..., RunningServer],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    server = make_server(limits())
    caplog.set_level(logging.INFO)
    c = Client(server.port("smtp"), "127.0.0.7")
    assert c.line().startswith(b"220 ")
    c.send(b"EHLO spambot\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<alice@example.test>\r\n")
    assert c.line() == b"554 mx.example.test SMTP synchronization error: command sent before the reply to EHLO"
    assert c.closed()
    assert any("reason=out-of-sync" in r.getMessage() for r in caplog.records)
    # a correct pipelined group after EHLO goes through
    ok = Client(server.port("smtp"), "127.0.0.7")
    assert ok.line().startswith(b"220 ")
    ok.send(b"EHLO client.example.org\r\n")
    assert ok.reply().startswith(b"250-")
    ok.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert ok.reply() == b"250 2.1.0 Sender OK"
    assert ok.reply() == b"250 2.1.5 Recipient OK"
    assert ok.reply().startswith(b"354 ")
    ok.send(b"Subject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n")
    assert ok.reply().startswith(b"250 2.0.0")
    assert ok.reply().startswith(b"221 ")


def _until_every_worker_accepts(proc: ServeProcess, port: int) -> None:
    """Wait until each worker takes connections. A forked worker accepts
    only once it has opened the store; until then the others take every
    connection. One connection held on each shows each accepts (a worker
    holding more leaves the next one to the others: net/accept.py). They
    come from addresses of a network of their own, so no budget the test
    counts is spent."""
    workers = set(proc.worker_pids())
    held: dict[int, Client] = {}
    probes = iter(f"127.0.9.{n}" for n in range(1, 255))

    def probe() -> bool:
        c = Client(port, next(probes))
        assert c.line().startswith(b"220")
        pid = proc.serving_pid(c.sock)
        if pid in workers and pid not in held:
            held[pid] = c
        else:
            c.close()
        return set(held) == workers

    try:
        wait_until(probe, TIMEOUT, "every worker to accept connections", interval=0.05)
    finally:
        for c in held.values():
            c.close()


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_connection_rate_holds_across_workers(tmp_path: Path) -> None:
    def configure(cfg: Config) -> None:
        cfg.server.workers = 2
        cfg.server.shutdown_grace = 5.0
        limits(conns=20, factor=4)(cfg)

    proc = ServeProcess(tmp_path / "data", configure)
    try:
        wait_until(lambda: len(proc.worker_pids()) == 2, TIMEOUT, "both workers to start")
        port = proc.port("smtp")
        _until_every_worker_accepts(proc, port)
        served: set[int | None] = set()
        greetings = []
        # Each connection stays open until all are made: which worker takes
        # a connection is the kernel's choice, and the spreading over the
        # workers (net/accept.py) sees only the connections they hold.
        clients = []
        for _ in range(24):
            c = Client(port, "127.0.0.8")
            clients.append(c)
            line = c.line()
            if line.startswith(b"220"):
                served.add(proc.serving_pid(c.sock))
            greetings.append(line[:3])
        for c in clients:
            c.close()
        print(f"greetings {greetings}; the 220s came from workers {served}")
        # both workers greeted, and the budget of 20 was one for the two
        assert served == set(proc.worker_pids()), served
        assert greetings == [b"220"] * 20 + [b"421"] * 4
        # Without greet_pause, a client that talks before the greeting (while
        # its connection is counted by the supervisor) is served, as always.
        for _ in range(5):
            eager = Client(port, "127.0.2.8")
            eager.send(b"EHLO eager.example.org\r\n")
            assert eager.line().startswith(b"220 ")
            assert eager.reply().startswith(b"250-")
            eager.send(b"QUIT\r\n")
            assert eager.line().startswith(b"221 ")
            eager.close()
    finally:
        proc.stop()


def test_a_connection_burst_is_refused_cheaply_and_others_are_served(tmp_path: Path) -> None:
    """400 connections from one address as fast as they open: all past the
    budget get 421 and close; the server's memory stays flat and a client
    from another network is greeted meanwhile."""
    import threading

    proc = ServeProcess(tmp_path / "data", limits(conns=10, factor=2))
    try:
        port = proc.port("smtp")
        before = proc.rss()
        codes: list[bytes] = []
        done = threading.Event()

        def burst() -> None:
            for _ in range(400):
                try:
                    c = Client(port, "127.0.0.9")
                    codes.append(c.line()[:3])
                    c.close()
                except (OSError, EOFError):
                    codes.append(b"err")
            done.set()

        t = threading.Thread(target=burst)
        t.start()
        wait_until(lambda: len(codes) >= 100 or done.is_set(), TIMEOUT * 3, "the burst to get going")
        started = time.monotonic()
        other = Client(port, "127.0.1.9")
        greeting = other.line()
        latency = time.monotonic() - started
        other.close()
        during = proc.rss()
        t.join(120)
        print(f"burst: {codes.count(b'220')} greeted, {codes.count(b'421')} refused, {codes.count(b'err')} errors;"
              f" RSS {before / 2**20:.1f} MB before, {during / 2**20:.1f} MB during;"
              f" another network's greeting in {latency * 1000:.0f} ms")
        assert greeting.startswith(b"220 ")
        assert codes.count(b"220") == 10 and codes.count(b"421") == 390
        assert during - before < 20 * 2**20
    finally:
        proc.stop()
