"""A big INBOX and the event loop: what SELECT, the first FETCH and IDLE
cycles of one client cost the other clients of its worker.

One worker process serves an INBOX of 200,000 small messages (20,000 with
``--quick``), built through the store's ``append_many`` and derived by the
background indexer before the server starts, so no indexing runs during the
figures. A probe connection of its own sends NOOP every 5 ms throughout;
for each operation the bench reports its time, the CPU time of the worker's
main thread (the event loop, /proc/PID/task/PID/stat, 10 ms ticks) and the
probe's worst NOOP latency meanwhile (how long the loop was held):

- SELECT INBOX (RFC 9051 6.3.2: every UID, for EXISTS and the map);
- the first UID FETCH 1:* (FLAGS) after it (the session's index data);
- IDLE -> DONE -> UID FETCH <last>:* (FLAGS), as a mail client does every
  few minutes and after every change (RFC 2177): with nothing changed, and
  with another session's flag change announced during the IDLE;

and the server's PSS while the client IDLEs after all of it.

The data directory is kept between runs with MAILYARD_BENCH_IDLE_DATA=DIR.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from .common import USERS, Result, progress, rss_kib
from .scale import ScaleServer

ALICE = "alice@example.test"
SIZE = 200_000
QUICK_SIZE = 20_000
CYCLES = 10
BUILT = ".idle-built"
TICK = os.sysconf("SC_CLK_TCK")


def _message(n: int) -> bytes:
    return (f"From: Sender {n % 700} <s{n % 700}@remote.test>\r\nTo: {ALICE}\r\n"
            f"Date: {1 + n % 28} Mar 2026 {n % 24:02d}:{n % 60:02d}:00 +0100\r\n"
            f"Message-ID: <{n}@remote.test>\r\nSubject: topic {n % 997}\r\n\r\nmessage {n}\r\n").encode()


async def _populate(data: Path, size: int) -> None:
    from mailyard.config import StoreConfig
    from mailyard.store.api import AppendItem
    from mailyard.store.sqlite import SQLiteStore

    store = SQLiteStore(data, StoreConfig(fsync=False))
    try:
        account = await store.get_account(ALICE)
        assert account is not None
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        for start in range(0, size, 5_000):
            await store.append_many(box, [
                AppendItem(_message(n), frozenset() if n % 10 == 0 else frozenset({"\\Seen"}), 1.7e9 + n * 60)
                for n in range(start, min(size, start + 5_000))])
        progress(f"{size} messages appended; deriving them")
        while store._read.execute("SELECT 1 FROM bodies WHERE derived IS NULL LIMIT 1").fetchone():
            await asyncio.sleep(1)
    finally:
        await store.close()


def build(data: Path, size: int) -> None:
    marker = data / BUILT
    if marker.exists() and marker.read_text().strip() == str(size):
        progress(f"reusing {data}")
        return
    if data.exists():
        shutil.rmtree(data)
    server = ScaleServer(data)
    server.setup()
    started = time.perf_counter()
    asyncio.run(_populate(data, size))
    marker.write_text(f"{size}\n")
    progress(f"built in {time.perf_counter() - started:.0f} s")


def loop_cpu(pid: int) -> float:
    """CPU seconds of the process's main thread (the event loop)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Client:
    """A blocking IMAP connection read line by line."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=600)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.file.readline()
        self.n = 0
        self.command(f'LOGIN {ALICE} "{USERS[ALICE]}"')

    def line(self) -> bytes:
        got = self.file.readline()
        if not got:
            raise ConnectionError("the server closed the connection")
        return got

    def command(self, text: str) -> list[bytes]:
        self.n += 1
        tag = b"t%d " % self.n
        self.sock.sendall(tag + text.encode() + b"\r\n")
        lines = []
        while not (got := self.line()).startswith(tag):
            lines.append(got)
        assert got.startswith(tag + b"OK"), got
        return lines

    def close(self) -> None:
        self.sock.close()


class Probe(threading.Thread):
    """NOOP every 5 ms on a connection of its own; ``worst()`` is the
    longest wait since the last call."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.client = Client(port)
        self.stopped = False
        self.latencies: list[float] = []
        self.mark = 0

    def run(self) -> None:
        while not self.stopped:
            t = time.perf_counter()
            self.client.command("NOOP")
            self.latencies.append(time.perf_counter() - t)
            time.sleep(0.005)

    def worst(self) -> float:
        mark, self.mark = self.mark, len(self.latencies)
        return max(self.latencies[mark:], default=0.0)


def measure(port: int, pid: int, cycles: int, idle_kib: list[int]) -> dict[str, list[tuple[float, float, float]]]:
    """(seconds, loop CPU seconds, probe's worst NOOP seconds) of each run,
    by operation; ``idle_kib`` gets the server's PSS while the client IDLEs."""
    probe = Probe(port)
    probe.start()
    out: dict[str, list[tuple[float, float, float]]] = {}

    def timed(name: str, fn) -> object:  # noqa: ANN001
        time.sleep(0.05)
        probe.worst()
        cpu, t = loop_cpu(pid), time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - t
        time.sleep(0.02)  # the probe's NOOP sent during the operation comes back
        out.setdefault(name, []).append((elapsed, loop_cpu(pid) - cpu, probe.worst()))
        return result

    a, b = Client(port), Client(port)
    try:
        b.command("SELECT INBOX")
        for _ in range(3):
            lines = timed("SELECT INBOX", lambda: a.command("SELECT INBOX"))
        top = int(re.search(rb"UIDNEXT (\d+)", b"".join(lines)).group(1)) - 1  # type: ignore[union-attr]
        timed("first UID FETCH 1:* (FLAGS)", lambda: a.command("UID FETCH 1:* (FLAGS)"))

        def cycle(change: bool) -> None:
            a.sock.sendall(b"i IDLE\r\n")
            assert a.line().startswith(b"+ ")
            if change:
                b.command(f"UID STORE {top} {'+' if flip[0] else '-'}FLAGS.SILENT (\\Flagged)")
                flip[0] = not flip[0]
                assert b" FETCH " in a.line()
            a.sock.sendall(b"DONE\r\n")
            while not a.line().startswith(b"i OK"):
                pass
            a.command(f"UID FETCH {top}:* (FLAGS)")

        flip = [True]
        for _ in range(cycles):
            timed("IDLE, DONE, UID FETCH <last>:* (FLAGS)", lambda: cycle(False))
        for _ in range(cycles):
            timed("the same with a flag changed during IDLE", lambda: cycle(True))
        # what the server holds while the client idles (its index data kept, or not)
        a.sock.sendall(b"i IDLE\r\n")
        assert a.line().startswith(b"+ ")
        time.sleep(0.5)
        idle_kib[0] = rss_kib(pid)
        a.sock.sendall(b"DONE\r\n")
        while not a.line().startswith(b"i OK"):
            pass
    finally:
        probe.stopped = True
        probe.join(10)
        for c in (a, b, probe.client):
            c.close()
    return out


def run(quick: bool = False) -> list[Result]:
    size = QUICK_SIZE if quick else SIZE
    kept = os.environ.get("MAILYARD_BENCH_IDLE_DATA")
    tmp = None if kept else tempfile.TemporaryDirectory(prefix="mailyard-bench-idle-")
    data = Path(kept) / str(size) if kept else Path(tmp.name) / "data"  # type: ignore[union-attr]
    try:
        build(data, size)
        server = ScaleServer(data)
        server.configure()
        server.set(workers="1")
        server.start()
        try:
            idle_kib = [0]
            table = measure(server.ports["imap"], server.pid, CYCLES if not quick else 3, idle_kib)
        finally:
            server.stop()
    finally:
        if tmp is not None:
            tmp.cleanup()
    results = []
    for name, runs in table.items():
        for i, label in enumerate(("time", "loop CPU", "worst NOOP of another client")):
            values = [r[i] for r in runs]
            results.append(Result("idle", f"{name}: {label} @{size:,}", statistics.median(values), "s",
                                  f"max {max(values):.3f} over {len(values)}", {"all": values}))
    results.append(Result("idle", f"server PSS while the client IDLEs @{size:,}", idle_kib[0] / 1024, "MiB"))
    return results
