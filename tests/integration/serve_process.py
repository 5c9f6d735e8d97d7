"""``mailyard serve`` in a subprocess, for tests that measure the server's own
memory (RSS) or need a server whose process is separate from the test's."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from mailyard.config import Config
from tests.conftest import USERS
from tests.ports import free_port

ALICE = "alice@example.test"


def init_data(data: Path) -> None:
    """A data directory as ``mailyard init`` makes it, for example.test with
    the user alice@example.test."""
    subprocess.run(
        [sys.executable, "-m", "mailyard", "--data", str(data), "init", "--domain", "example.test"],
        check=True, capture_output=True,
    )
    subprocess.run(
        [sys.executable, "-m", "mailyard", "--data", str(data), "user", "add", ALICE, "--password-stdin"],
        input=USERS[ALICE] + "\n", text=True, check=True, capture_output=True,
    )


class ServeProcess:
    """``mailyard serve`` in a subprocess (SMTP, IMAP, POP3 on free ports) so
    its memory is its own: VmHWM in /proc/PID/status is the peak RSS, and
    writing 5 to /proc/PID/clear_refs resets it (Linux 4.0+)."""

    def __init__(self, data: Path, configure: Callable[[Config], None],
                 prepare: Callable[[Path], None] | None = None, *, made: bool = False,
                 pick: tuple[str, ...] = ()) -> None:
        """``prepare``: called with the data directory once it is made,
        before the server starts (files shared with other nodes). ``made``:
        the directory was made with ``init_data`` already (prefill.py).
        ``pick``: more ports (e.g. "http") to serve on free ports picked here
        like the mail ports' (in ``ports``), whatever ``configure`` set."""
        self.data = data
        self.ports: dict[str, int] = {}
        if not made:
            init_data(data)
        cfg = Config.load(data / "config.toml")
        for name in ("smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "http", "https", "managesieve"):
            setattr(cfg.ports, name, self.ports.get(name, 0))
        cfg.store.fsync = False  # throwaway data; the figures here are memory
        # a free port of its own: processes running side by side must not collide on the default
        cfg.metrics.listen = f"127.0.0.1:{free_port()}"
        cfg.server.log_level = "warning"
        cfg.server.workers = 1  # one process: its RSS is the server's (configure may change it)
        cfg.authentication.inbound_checks = False  # no test asks the outside DNS (configure may change it)
        configure(cfg)
        if prepare is not None:
            prepare(data)
        # the ports are picked last, just before the server binds them: a
        # configure or prepare that fills a big mailbox takes long enough for
        # another process to take a port picked before it. A port taken
        # between the pick and the bind all the same (other servers on the
        # machine) is picked again, twice at most.
        picked = [name for name in ("smtp", "imap", "pop3") if getattr(cfg.ports, name) == 0] + list(pick)
        metrics = cfg.metrics.listen
        for attempt in range(3):
            for name in picked:
                setattr(cfg.ports, name, free_port())
            if attempt and cfg.metrics.listen == metrics:
                cfg.metrics.listen = metrics = f"127.0.0.1:{free_port()}"
            for name in ("smtp", "imap", "pop3", *pick):
                self.ports[name] = getattr(cfg.ports, name)
            (data / "config.toml").write_text(cfg.to_toml())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailyard", "--data", str(data), "serve"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
            assert self.proc.stdout is not None
            seen = []
            for line in self.proc.stdout:
                seen.append(line.decode(errors="replace"))
                if b"mailyard is running" in line:
                    break
            else:
                self.proc.wait()
                if attempt < 2 and "address already in use" in "".join(seen):
                    continue
                pytest.fail("server did not start:\n" + "".join(seen))
            break
        self.output: list[str] = seen  # the start-up lines too ("listening" lines)
        threading.Thread(target=self._drain, daemon=True).start()
        self.host = "127.0.0.1"

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line.decode(errors="replace"))

    def tracebacks(self) -> str:
        """The server's log lines that report a crash (none expected)."""
        return "".join(line for line in self.output if "Traceback" in line or "failed" in line)

    def port(self, name: str) -> int:
        return self.ports[name]

    def _status(self, key: str) -> int:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        assert m is not None, key
        return int(m.group(1)) * 1024

    def rss(self) -> int:
        return self._status("VmRSS")

    def peak(self) -> int:
        return self._status("VmHWM")

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def open_connections(self) -> int:
        """Connections to the server's ports that its side has not closed:
        ESTABLISHED, SYN_RECV or CLOSE_WAIT (the client closed, the server
        not yet) in /proc/net/tcp. Zero once every session has ended, so a
        test can wait for that instead of sleeping."""
        ports = set(self.ports.values())
        count = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                rows = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                fields = row.split()
                local, state = fields[1], fields[3]
                if int(local.rpartition(":")[2], 16) in ports and state in _NOT_CLOSED_BY_SERVER:
                    count += 1
        return count

    def alive(self) -> bool:
        return self.proc.poll() is None

    # --- several worker processes ([server] workers) --------------------------------
    def worker_pids(self) -> list[int]:
        """The supervisor's live children (the workers), by pid."""
        return children(self.proc.pid)

    def pss(self) -> int:
        """Proportional set size of the supervisor and its workers together
        (bytes): shared pages are counted once overall, not once per process."""
        return sum(pss(pid) for pid in [self.proc.pid, *self.worker_pids()])

    def serving_pid(self, sock: socket.socket) -> int | None:
        """The worker process holding the server side of the client's
        connection ``sock`` (found through /proc/net/tcp and /proc/PID/fd)."""
        return serving_pid(sock, [self.proc.pid, *self.worker_pids()])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# TCP states (include/net/tcp_states.h) in which the local side has not sent its FIN.
_NOT_CLOSED_BY_SERVER = {"01", "03", "08"}  # ESTABLISHED, SYN_RECV, CLOSE_WAIT


MB = 1024 * 1024


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (by the parent field of /proc/*/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def pss(pid: int) -> int:
    """Pss of one process (bytes), from /proc/PID/smaps_rollup."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    m = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    assert m is not None
    return int(m.group(1)) * 1024


def serving_pid(sock: socket.socket, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the server end of the TCP connection ``sock``."""
    client_port = sock.getsockname()[1]
    server_port = sock.getpeername()[1]
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, remote = fields[1], fields[2]
            if int(local.rpartition(":")[2], 16) == server_port and int(remote.rpartition(":")[2], 16) == client_port:
                inode = fields[9]
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    return pid
            except OSError:
                continue
    return None
