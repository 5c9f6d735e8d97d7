"""Expunged-but-held messages across the worker processes of one ``mailyard
serve`` (``[server] workers = 2``): a session on one worker keeps serving
FETCH of a message a session on the other worker expunged until it has
announced the expunge (RFC 2180 4.1.1: no NO [EXPUNGEISSUED]); the held
rows go once every holder of every live process announced it, or its
process died (store/sqlite/holds.py).

Each test puts one IMAP session on each worker (test_workers.py
``on_each_worker``) and reads the store's index directly to see the held
rows (under the negated mailbox id)."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import USERS
from tests.integration.serve_process import ServeProcess
from tests.integration.test_workers import (
    TIMEOUT,
    WORKERS,
    Line,
    imap_login,
    on_each_worker,
    start_two_workers,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")

BODY = b"Subject: held across workers\r\n\r\nstill readable\r\n"


@pytest.fixture
def server(tmp_path: Path) -> Any:
    proc = start_two_workers(tmp_path / "data")
    yield proc
    proc.stop()


def held_rows(proc: ServeProcess) -> int:
    """Expunged messages the store keeps for a session (negated mailbox id)."""
    with sqlite3.connect(f"file:{proc.data / 'index.sqlite3'}?mode=ro", uri=True, timeout=TIMEOUT) as db:
        return db.execute("SELECT count(*) FROM messages WHERE mailbox_id < 0").fetchone()[0]


def command(c: Line, tag: str, text: str) -> list[bytes]:
    """Send one command; every line up to and with its tagged answer."""
    c.send(f"{tag} {text}\r\n".encode())
    lines = []
    while True:
        line = c.line()
        lines.append(line)
        m = re.search(rb"\{(\d+)\}$", line)
        if m:  # a literal: its bytes, then the rest of the line
            size = int(m.group(1))
            while len(c.buf) < size:
                c.sock.settimeout(TIMEOUT)
                data = c.sock.recv(65536)
                if not data:
                    raise EOFError("connection closed in a literal")
                c.buf += data
            lines.append(c.buf[:size])
            c.buf = c.buf[size:]
        elif line.startswith(tag.encode() + b" "):
            return lines


def ok(lines: list[bytes]) -> list[bytes]:
    assert lines[-1].split(b" ", 2)[1] == b"OK", lines
    return lines


def expunged_elsewhere(proc: ServeProcess) -> tuple[int, Line, int, Line]:
    """A session on each worker, INBOX selected in both with one message;
    the first worker's session expunges it. Returns (expunging worker pid,
    its session, holding worker pid, its session)."""
    sessions = on_each_worker(proc, lambda: imap_login(proc), lambda c: c.sock, Line.close)
    (pid_a, a), (pid_b, b) = sorted(sessions.items())
    a.send(f"p APPEND INBOX {{{len(BODY)}}}\r\n".encode())
    assert a.line().startswith(b"+")
    a.send(BODY + b"\r\n")
    assert a.until(lambda line: line.startswith(b"p ")).startswith(b"p OK")
    assert b"* 1 EXISTS" in ok(command(b, "s", "SELECT INBOX"))
    ok(command(a, "s", "SELECT INBOX"))
    ok(command(a, "d", "STORE 1 +FLAGS.SILENT (\\Deleted)"))
    assert b"* 1 EXPUNGE" in ok(command(a, "e", "EXPUNGE"))
    return pid_a, a, pid_b, b


def fetch_still_served(b: Line) -> None:
    """RFC 2180 4.1.1: the holder's FETCH of the expunged message answers
    OK with its data; the expunge is not announced during a FETCH."""
    lines = ok(command(b, "f", "FETCH 1 (BODY[])"))
    assert BODY in lines, lines
    assert not any(line.endswith(b"EXPUNGE") for line in lines)


def test_fetch_on_one_worker_of_a_message_the_other_worker_expunged(server: ServeProcess) -> None:
    _pid_a, a, _pid_b, b = expunged_elsewhere(server)
    fetch_still_served(b)
    assert held_rows(server) == 1  # kept for the session on the other worker until it announces
    # the holder announces the expunge: nobody needs the row any more
    assert b"* 1 EXPUNGE" in ok(command(b, "n", "NOOP"))
    start = time.monotonic()
    wait_until(lambda: held_rows(server) == 0, TIMEOUT, "the held row to be purged")
    print(f"held row purged {1000 * (time.monotonic() - start):.0f} ms after the last holder's NOOP")
    for c in (a, b):
        c.close()
    assert server.alive()


def test_restarted_worker_keeps_what_the_other_holds_and_a_killed_holders_rows_go(server: ServeProcess) -> None:
    pid_a, a, pid_b, b = expunged_elsewhere(server)
    # the expunging worker dies; the worker started in its place opens the
    # store, which must not drop the row the other worker's session holds
    os.kill(pid_a, signal.SIGKILL)
    wait_until(lambda: len(server.worker_pids()) == WORKERS and pid_a not in server.worker_pids(),
               TIMEOUT, "the supervisor to start a new worker")
    fresh = on_each_worker(server, lambda: imap_login(server), lambda c: c.sock, Line.close)  # its store is open
    assert held_rows(server) == 1
    fetch_still_served(b)
    # now the holder's worker dies: its sessions' holds die with it
    os.kill(pid_b, signal.SIGKILL)
    wait_until(lambda: len(server.worker_pids()) == WORKERS and pid_b not in server.worker_pids(),
               TIMEOUT, "the supervisor to start a new worker")
    wait_until(lambda: held_rows(server) == 0, TIMEOUT, "the killed holder's rows to be purged")
    for c in (a, b, *fresh.values()):
        c.close()
    assert server.alive()


def test_a_command_beside_a_single_process_server_leaves_its_sessions_their_messages(tmp_path: Path) -> None:
    """``mailyard user add`` opens the store while a one-process server runs:
    the held rows of the server's sessions are not an earlier run's."""
    proc = ServeProcess(tmp_path / "data", lambda cfg: None)
    try:
        a, b = imap_login(proc), imap_login(proc)
        a.send(f"p APPEND INBOX {{{len(BODY)}}}\r\n".encode())
        assert a.line().startswith(b"+")
        a.send(BODY + b"\r\n")
        assert a.until(lambda line: line.startswith(b"p ")).startswith(b"p OK")
        assert b"* 1 EXISTS" in ok(command(b, "s", "SELECT INBOX"))
        ok(command(a, "s", "SELECT INBOX"))
        ok(command(a, "d", "STORE 1 +FLAGS.SILENT (\\Deleted)"))
        assert b"* 1 EXPUNGE" in ok(command(a, "e", "EXPUNGE"))
        assert held_rows(proc) == 1
        subprocess.run(
            [sys.executable, "-m", "mailyard", "--data", str(proc.data), "user", "add", "bob@example.test",
             "--password-stdin"],
            input=USERS["bob@example.test"] + "\n", text=True, check=True, capture_output=True, timeout=60,
        )
        fetch_still_served(b)
        assert b"* 1 EXPUNGE" in ok(command(b, "n", "NOOP"))
        wait_until(lambda: held_rows(proc) == 0, TIMEOUT, "the held row to be purged")
        for c in (a, b):
            c.close()
    finally:
        proc.stop()
