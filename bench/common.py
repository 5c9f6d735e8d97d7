"""What every benchmark shares: a real ``mailyard serve`` in a subprocess on
free loopback ports with a fresh data directory, progress lines, and results."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

USERS = {"alice@example.test": "alice-password-1", "bob@example.test": "bob-password-2"}


@dataclass
class Result:
    bench: str
    name: str
    value: float
    unit: str
    reference: str = ""  # what the issue compares it with
    detail: dict = field(default_factory=dict)


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def smtp_client(port: int, helo: str, host: str = "127.0.0.1"
                      ) -> tuple[asyncio.StreamWriter, Callable[[], Awaitable[bytes]]]:
    """A bench client's SMTP connection, greeted and past EHLO: its writer,
    and ``reply()``, which reads one reply (the last line of a multi-line one)."""
    reader, writer = await asyncio.open_connection(host, port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                return line

    await reply()
    writer.write(b"EHLO " + helo.encode() + b"\r\n")
    await reply()
    return writer, reply


class BenchServer:
    """``mailyard serve`` on fresh free ports; ``ports[name]`` gives each."""

    def __init__(self, services: tuple[str, ...] = ("smtp",), fsync: bool = True) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="mailyard-bench-")
        self.data = Path(self.tmp.name) / "data"
        self.ports = {name: free_port() for name in services}
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None

    def mailyard(self, *args: str, stdin: str | None = None) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "mailyard", "--data", str(self.data), *args],
            input=stdin, capture_output=True, text=True, check=True,
        )
        return out.stdout

    def setup(self) -> None:
        self.mailyard("init", "--domain", "example.test")
        for address, password in USERS.items():
            self.mailyard("user", "add", address, "--password-stdin", stdin=password + "\n")
        self.configure()

    def configure(self) -> None:
        """Point config.toml at this server's ports and settings."""
        cfg = self.data / "config.toml"
        text = cfg.read_text()
        for name in ("smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "http", "https", "managesieve"):
            text = re.sub(rf"^{name} = \d+$", f"{name} = {self.ports.get(name, 0)}", text, flags=re.M)
        text = re.sub(r"^fsync = \w+$", f"fsync = {'true' if self.fsync else 'false'}", text, flags=re.M)
        text = re.sub(r'^log_level = ".*"$', 'log_level = "warning"', text, flags=re.M)
        # The peers (Postfix, Dovecot) check no SPF/DKIM/DMARC: neither does
        # the server measured against them (`python -m bench mailauth` measures
        # the checks' cost), and no bench asks the outside DNS.
        text = re.sub(r"^inbound_checks = \w+$", "inbound_checks = false", text, flags=re.M)
        # The spam checks ask DNS too (rDNS, HELO, blocklists): `python -m bench spam` measures them.
        text = re.sub(r"^checks = \w+$", "checks = false", text, flags=re.M)
        # Every bench client connects from 127.0.0.1: the per-address cap
        # (an abuse defence, [limits] max_connections_per_ip, shared out
        # among the workers) would refuse the memory bench's 1,000 IDLE
        # clients, so the bench allows as many from one address as in all.
        text = re.sub(r"^max_connections_per_ip = \d+$", "max_connections_per_ip = 2000", text, flags=re.M)
        # MAILYARD_BENCH_WORKERS: [server] workers for the run (default: the config's default)
        workers = os.environ.get("MAILYARD_BENCH_WORKERS")
        if workers:
            text = re.sub(r"^workers = \d+$", f"workers = {int(workers)}", text, flags=re.M)
        cfg.write_text(text)

    def set(self, **values: str) -> None:
        """Set keys of config.toml (the ``key = ...`` line of each, in
        whatever section) to the TOML values given."""
        cfg = self.data / "config.toml"
        text = cfg.read_text()
        for key, value in values.items():
            text = re.sub(rf"^{key} = .*$", lambda _m, line=f"{key} = {value}": line, text, flags=re.M)
        cfg.write_text(text)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailyard", "--data", str(self.data), "serve"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if b"mailyard is running" in line:
                break
        else:
            raise RuntimeError("mailyard serve did not start")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.tmp.cleanup()

    def __enter__(self) -> BenchServer:
        self.setup()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rss_kib(pid: int) -> int:
    """Proportional set size in KiB of a process and its children (the
    workers of a multi-process server; falls back to RSS)."""
    return _own_kib(pid) + sum(_own_kib(child) for child in _children(pid))


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _own_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        m = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
        if m:
            return int(m.group(1))
    except OSError:
        pass
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def timed(fn, *args, **kwargs) -> tuple[float, object]:  # noqa: ANN001
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def cpu_count() -> int:
    return os.cpu_count() or 1
