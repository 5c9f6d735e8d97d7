"""Outbound delivery between two ``mailyard serve`` instances: a.test on
127.0.0.2 and b.test on 127.0.0.3, found through MX records served by a
dnspython DNS server on loopback (tests/integration/multihost.py), fsync on,
opportunistic STARTTLS between them as in production.

* latency: Alice submits one message at a time on a.test's submission port
  (AUTH, one connection); the clock stops when the message is fetchable over
  IMAP at b.test (an IDLE session there announces it). Median and 99th
  percentile over 1,000 messages.
* throughput: N messages are queued at a.test while b.test is down, then
  b.test starts and ``mailyard queue retry`` releases them; messages per second
  from the first to the last arrival in bob's INBOX at b.test.
"""

from __future__ import annotations

import imaplib
import smtplib
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mailyard.config import Config

from .common import BenchServer, Result, progress

A_IP, B_IP = "127.0.0.2", "127.0.0.3"
PASSWORD = {"alice@a.test": "alice-bench-pw", "bob@b.test": "bob-bench-pw"}


class Instance(BenchServer):
    def __init__(self, domain: str, ip: str, smtp_port: int, dns_address: str) -> None:
        super().__init__(services=("imap", "submission"), fsync=True)
        self.domain, self.ip, self.smtp_port, self.dns_address = domain, ip, smtp_port, dns_address

    def setup(self) -> None:
        from tests.integration.multihost import free_port

        self.mailyard("init", "--domain", self.domain, "--hostname", f"mx.{self.domain}")
        for address, password in PASSWORD.items():
            if address.endswith("@" + self.domain):
                self.mailyard("user", "add", address, "--password-stdin", stdin=password + "\n")
        path = self.data / "config.toml"
        cfg = Config.load(path)
        cfg.server.bind = self.ip
        cfg.server.log_level = "warning"
        for name in ("smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "http", "https", "managesieve"):
            setattr(cfg.ports, name, 0)
        cfg.ports.smtp = self.smtp_port
        cfg.ports.imap = self.ports["imap"] = free_port(self.ip)
        cfg.ports.submission = self.ports["submission"] = free_port(self.ip)
        d = cfg.delivery
        d.smtp_port = self.smtp_port
        d.nameservers = self.dns_address
        d.source_address = self.ip
        d.retry_initial = 3600.0  # the throughput run releases the queue by hand
        d.poll_interval = 0.2
        cfg.limits.max_connections_per_ip = 1000
        path.write_text(cfg.to_toml())


def _imap(inst: Instance, user: str) -> imaplib.IMAP4:
    imap = imaplib.IMAP4(inst.ip, inst.ports["imap"])
    imap.login(user, PASSWORD[user])
    imap.select("INBOX")
    return imap


def _exists(imap: imaplib.IMAP4) -> int:
    typ, data = imap.status("INBOX", "(MESSAGES)")
    return int(data[0].split(b"MESSAGES ")[1].rstrip(b")"))


class Idler:
    """An IMAP IDLE session (RFC 2177) on b.test's INBOX: ``wait(n)`` returns
    as soon as the server pushes ``* n EXISTS``, without polling."""

    def __init__(self, inst: Instance, user: str) -> None:
        self.sock = socket.create_connection((inst.ip, inst.ports["imap"]))
        self.file = self.sock.makefile("rb")
        self.file.readline()
        self._command(f'a1 LOGIN "{user}" "{PASSWORD[user]}"', b"a1 ")
        lines = self._command("a2 SELECT INBOX", b"a2 ")
        self.exists = next(int(x.split()[1]) for x in lines if x.endswith(b"EXISTS\r\n"))
        self.sock.sendall(b"a3 IDLE\r\n")
        while not self.file.readline().startswith(b"+"):
            pass

    def _command(self, line: str, tag: bytes) -> list[bytes]:
        self.sock.sendall(line.encode() + b"\r\n")
        out = []
        while True:
            got = self.file.readline()
            out.append(got)
            if got.startswith(tag):
                return out

    def wait(self, count: int) -> None:
        while self.exists < count:
            line = self.file.readline()
            if not line:
                raise RuntimeError("IMAP connection closed")
            parts = line.split()
            if len(parts) == 3 and parts[2] == b"EXISTS":
                self.exists = int(parts[1])

    def close(self) -> None:
        self.sock.sendall(b"DONE\r\na4 LOGOUT\r\n")
        self.sock.close()


def _message(n: int) -> bytes:
    return (
        f"From: alice@a.test\r\nTo: bob@b.test\r\nSubject: bench {n}\r\n"
        f"Message-ID: <bench{n}.{time.time_ns()}@a.test>\r\nDate: Mon, 23 Nov 2026 08:00:00 +0000\r\n\r\n"
    ).encode() + b"x" * 76 * 12 + b"\r\n"


def run(quick: bool = False) -> list[Result]:
    from tests.integration.multihost import ADDRESSES, DNSServer, shared_port

    count = 100 if quick else 1000
    dns = DNSServer()
    port = shared_port(ADDRESSES)
    for domain, ip in (("a.test", A_IP), ("b.test", B_IP)):
        dns.add(domain, "MX", f"10 mx.{domain}.")
        dns.add(f"mx.{domain}", "A", ip)
    a = Instance("a.test", A_IP, port, dns.address)
    b = Instance("b.test", B_IP, port, dns.address)
    results: list[Result] = []
    try:
        a.setup()
        b.setup()
        a.start()
        b.start()

        # --- latency ---------------------------------------------------------------
        progress(f"latency: {count} messages, submit at a.test -> fetchable over IMAP at b.test")
        idler = Idler(b, "bob@b.test")
        seen = idler.exists
        client = smtplib.SMTP(A_IP, a.ports["submission"])
        client.login("alice@a.test", PASSWORD["alice@a.test"])
        latencies = []
        for n in range(count):
            data = _message(n)
            start = time.perf_counter()
            client.sendmail("alice@a.test", ["bob@b.test"], data)
            seen += 1
            idler.wait(seen)
            latencies.append(time.perf_counter() - start)
        client.quit()
        idler.close()
        latencies.sort()
        median = statistics.median(latencies) * 1000
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
        results.append(Result("outbound", "latency submit->IMAP median", median, "ms",
                              f"{count} messages, a.test -> b.test, fsync on, STARTTLS"))
        results.append(Result("outbound", "latency submit->IMAP p99", p99, "ms", f"{count} messages"))

        # --- throughput ----------------------------------------------------------
        progress(f"throughput: {count} messages queued at a.test while b.test is down")
        b.stop_process()
        clients = []
        for _ in range(4):
            c = smtplib.SMTP(A_IP, a.ports["submission"])
            c.login("alice@a.test", PASSWORD["alice@a.test"])
            clients.append(c)
        for n in range(count):
            clients[n % len(clients)].sendmail("alice@a.test", ["bob@b.test"], _message(n))
        for c in clients:
            c.quit()
        _wait_queue_attempted(a, count)
        b.restart()
        idler = Idler(b, "bob@b.test")
        before = idler.exists
        a.mailyard("queue", "retry")
        idler.wait(before + 1)
        start = time.perf_counter()  # first message in: the runner is going
        idler.wait(before + count)
        elapsed = time.perf_counter() - start
        idler.close()
        results.append(Result("outbound", "delivery throughput a.test->b.test", (count - 1) / elapsed, "msg/s",
                              f"{count} queued messages of 1 KB, fsync on both sides, STARTTLS"))
    finally:
        a.stop()
        b.stop()
        dns.stop()
    return results


def _wait_queue_attempted(inst: Instance, count: int) -> None:
    """Until every queued message had its first (failed) attempt, so the retry releases them all."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        out = inst.mailyard("queue", "list")
        lines = [line for line in out.splitlines()[1:] if line.strip()]
        if len(lines) >= count and all("(now)" not in line for line in lines):
            return
        time.sleep(0.5)
    raise RuntimeError("the queue did not settle")


def _stop_process(self: BenchServer) -> None:
    """Stop the server but keep its data directory (BenchServer.stop removes it)."""
    import signal

    if self.proc is not None and self.proc.poll() is None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
    self.proc = None


def _restart(self: BenchServer) -> None:
    """Start again, showing serve's output if it fails."""
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "mailyard", "--data", str(self.data), "serve"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    assert self.proc.stdout is not None
    seen = []
    for line in self.proc.stdout:
        seen.append(line)
        if b"mailyard is running" in line:
            break
    else:
        raise RuntimeError("mailyard serve did not start: " + b"".join(seen).decode(errors="replace"))
    import threading

    threading.Thread(target=self.proc.stdout.read, daemon=True).start()


Instance.stop_process = _stop_process  # type: ignore[attr-defined]
Instance.restart = _restart  # type: ignore[attr-defined]

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    for r in run(quick="--quick" in sys.argv):
        print(r)
