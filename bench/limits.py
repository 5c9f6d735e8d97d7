"""Memory under abuse (robustness issue): the server's peak RSS while a 200 MB
SMTP DATA is streamed past the SIZE limit, and while 10,000 idle connections
are open on SMTP and on IMAP.

``mailyard serve`` runs as a subprocess (bench/common.py); its peak RSS is
VmHWM from /proc/PID/status, reset before each figure by writing 5 to
/proc/PID/clear_refs. The 10,000 connections come from 127.0.0.2 upwards, 50
per address, so the per-address cap (default 100) is respected; the total cap
is raised to 12,000 for the run, and RLIMIT_NOFILE to its hard limit (the
server inherits it). Idle IMAP connections are not logged in (greeting only).
"""

from __future__ import annotations

import re
import resource
import socket
import time
from pathlib import Path

from mailyard.config import Config

from .common import BenchServer, Result, progress

MB = 1024 * 1024
PER_ADDRESS = 50


def _status(pid: int, key: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) * 1024 if m else 0


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(want, soft)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def _big_data(port: int, megabytes: int) -> bytes:
    """One SMTP transaction sending ``megabytes`` MiB of data; returns the reply to the final dot."""
    block = (b"x" * 998 + b"\r\n") * 1024
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"EHLO bench\r\n")
        while f.readline()[3:4] == b"-":
            pass
        sock.sendall(b"MAIL FROM:<big@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        for _ in range(3):
            f.readline()
        for _ in range(megabytes):
            sock.sendall(block)
        sock.sendall(b".\r\nQUIT\r\n")
        return f.readline()


def _open_idle(port: int, count: int) -> list[socket.socket]:
    socks: list[socket.socket] = []
    for i in range(count):
        sock = socket.socket()
        sock.bind((f"127.0.{(2 + i // PER_ADDRESS) // 256}.{(2 + i // PER_ADDRESS) % 256}", 0))
        sock.settimeout(30)
        sock.connect(("127.0.0.1", port))
        greeting = sock.recv(4096)
        if not (greeting.startswith(b"220 ") or greeting.startswith(b"* OK")):
            for s in socks:
                s.close()
            sock.close()
            raise RuntimeError(f"connection {i} refused: {greeting!r}")
        socks.append(sock)
    return socks


def run(quick: bool = False) -> list[Result]:
    connections = 1_000 if quick else 10_000
    data_mb = 50 if quick else 200
    _raise_nofile(2 * connections + 1000)
    results: list[Result] = []
    server = BenchServer(services=("smtp", "imap"), fsync=False)
    try:
        server.setup()
        # the caps for this run: total above the connection count
        cfg_path = server.data / "config.toml"
        cfg = Config.load(cfg_path)
        cfg.limits.max_connections = connections + 2000
        cfg.smtp.max_message_size = 10 * MB
        cfg_path.write_text(cfg.to_toml())
        server.start()
        pid = server.pid
        time.sleep(0.5)
        baseline = _status(pid, "VmRSS")
        progress(f"server RSS at rest: {baseline / MB:.1f} MB")

        _reset_peak(pid)
        reply = _big_data(server.ports["smtp"], data_mb)
        if not reply.startswith(b"552 5.3.4"):
            raise RuntimeError(f"{data_mb} MB DATA not refused at SIZE: {reply!r}")
        peak = _status(pid, "VmHWM")
        progress(f"{data_mb} MB DATA: peak RSS {peak / MB:.1f} MB")
        results.append(Result("limits", f"peak RSS, {data_mb} MB DATA past SIZE", peak / MB, "MB",
                              f"at rest {baseline / MB:.1f} MB; SIZE 10 MB",
                              {"baseline_mb": baseline / MB, "grown_mb": (peak - baseline) / MB}))

        for service in ("smtp", "imap"):
            time.sleep(0.5)
            before = _status(pid, "VmRSS")
            _reset_peak(pid)
            started = time.perf_counter()
            socks = _open_idle(server.ports[service], connections)
            elapsed = time.perf_counter() - started
            time.sleep(1.0)
            peak = _status(pid, "VmHWM")
            per = (peak - before) / connections / 1024
            progress(f"{connections} idle {service}: peak RSS {peak / MB:.1f} MB ({per:.1f} KiB each), "
                     f"opened in {elapsed:.1f} s")
            results.append(Result("limits", f"peak RSS, {connections} idle {service} connections", peak / MB, "MB",
                                  f"{per:.1f} KiB per connection over {before / MB:.1f} MB",
                                  {"before_mb": before / MB, "kib_per_connection": per, "open_s": elapsed}))
            for sock in socks:
                sock.close()
    finally:
        server.stop()
    return results
