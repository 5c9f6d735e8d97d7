"""SORT and THREAD of a 100,000-message mailbox on a real ``mailyard serve``
(a subprocess, so its memory is its own): the other clients are served while
one runs (the work is off the event loop), and the server keeps no big
per-process cache of keys afterwards. Figures are printed; only generous
bounds are asserted (the machine is shared)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailyard.config import StoreConfig
from mailyard.store.api import AppendItem
from mailyard.store.sqlite import SQLiteStore
from tests.conftest import USERS
from tests.integration import prefill
from tests.integration.serve_process import ALICE, ServeProcess

pytestmark = pytest.mark.slow

COUNT = 100_000
MiB = 1 << 20


def _message(n: int) -> bytes:
    """Small messages: a few hundred senders and subjects, two thirds replies."""
    fields = [
        f"From: Sender {n % 700} <s{n % 700}@remote.test>",
        f"Date: {1 + n % 28} Mar 2026 {n % 24:02d}:{n % 60:02d}:00 +0100",
        f"Message-ID: <{n}@remote.test>",
        f"Subject: {'Re: ' if n % 3 else ''}topic {n % 997}",
    ]
    if n % 3:
        parent = max(0, n - 1 - n % 50)
        fields.append(f"References: <{parent // 2}@remote.test> <{parent}@remote.test>")
    return ("\r\n".join(fields) + f"\r\n\r\nmessage {n}\r\n").encode()


def _fill(data: Path) -> None:
    async def go() -> None:
        store = SQLiteStore(data, StoreConfig(fsync=False))
        try:
            account = await store.get_account(ALICE)
            assert account is not None
            box = await store.get_mailbox(account.id, "INBOX")
            assert box is not None
            for start in range(0, COUNT, 2_000):
                await store.append_many(box, [AppendItem(_message(n), (), 1.7e9 + n)
                                              for n in range(start, min(COUNT, start + 2_000))])
            # the background indexer derives them (sort keys included); poll
            deadline = time.monotonic() + 1_800
            while store._read.execute("SELECT 1 FROM bodies WHERE derived IS NULL LIMIT 1").fetchone():
                assert time.monotonic() < deadline, "indexing did not finish"
                await asyncio.sleep(0.5)
        finally:
            await store.close()

    asyncio.run(go())


def _read_until(sock: socket.socket, tag: bytes) -> bytes:
    buf = bytearray()
    while True:
        chunk = sock.recv(1 << 20)
        assert chunk, "connection closed"
        buf += chunk
        i = buf.rfind(b"\r\n" + tag + b" ")
        if (i >= 0 or buf.startswith(tag + b" ")) and buf.endswith(b"\r\n"):
            return bytes(buf)


def _login(server: ServeProcess) -> socket.socket:
    s = socket.create_connection((server.host, server.port("imap")), timeout=120)
    s.recv(4096)
    s.sendall(f'L LOGIN {ALICE} "{USERS[ALICE]}"\r\n'.encode())
    assert b"L OK" in _read_until(s, b"L")
    return s


@pytest.fixture(scope="module")
def big_server() -> Iterator[ServeProcess]:
    """The filled mailbox (``_fill``, run in the background from the start
    of the session by prefill.py) served by ``mailyard serve``."""
    server = ServeProcess(prefill.filled(__name__), lambda cfg: None, made=True)
    yield server
    server.stop()


def _probe_while(server: ServeProcess, done: threading.Event, noop: socket.socket) -> tuple[list[float], list[float]]:
    """Greeting latencies of new connections and NOOP latencies of a logged-in
    one, every 20 ms until ``done`` is set (paced, so the probes themselves
    do not take the server's time from the command measured)."""
    greetings: list[float] = []
    noops: list[float] = []
    while not done.wait(0.02):
        start = time.perf_counter()
        with socket.create_connection((server.host, server.port("imap")), timeout=10) as s:
            assert s.recv(4096).startswith(b"* OK"), "no greeting within 10 s"
        greetings.append(time.perf_counter() - start)
        start = time.perf_counter()
        noop.sendall(b"N NOOP\r\n")
        assert b"N OK" in _read_until(noop, b"N")
        noops.append(time.perf_counter() - start)
    return greetings, noops


@pytest.mark.parametrize("command", [b"THREAD REFERENCES UTF-8 ALL", b"SORT (SUBJECT DATE) UTF-8 ALL",
                                     b"THREAD ORDEREDSUBJECT UTF-8 ALL"])
def test_other_clients_served_during_big_sort_and_thread(big_server: ServeProcess, command: bytes) -> None:
    worker = _login(big_server)
    worker.sendall(b"S SELECT INBOX\r\n")
    assert f"* {COUNT} EXISTS".encode() in _read_until(worker, b"S")
    noop = _login(big_server)
    # a first run: the session loads the mailbox's index data
    worker.sendall(b"W " + command + b"\r\n")
    first = _read_until(worker, b"W")
    assert first.endswith(b"W OK " + command.split()[0] + b" completed\r\n")
    runs = []
    for _ in range(2):
        done = threading.Event()
        result: dict[str, object] = {}

        def run(done: threading.Event = done, result: dict[str, object] = result) -> None:
            start = time.perf_counter()
            worker.sendall(b"W " + command + b"\r\n")
            result["answer"] = _read_until(worker, b"W")
            result["elapsed"] = time.perf_counter() - start
            done.set()

        t = threading.Thread(target=run)
        t.start()
        greetings, noops = _probe_while(big_server, done, noop)
        t.join(300)
        assert result["answer"] == first
        runs.append((result["elapsed"], max(greetings, default=0.0), max(noops, default=0.0), len(greetings)))
    rss = big_server.rss()
    print(f"\n{command.decode()} of {COUNT:,}: " + "; ".join(
        f"{e:.2f} s, other clients: greeting max {g * 1000:.0f} ms, NOOP max {n * 1000:.0f} ms ({k} probes)"
        for e, g, n, k in runs) + f"; server RSS {rss / MiB:.0f} MiB, peak {big_server.peak() / MiB:.0f} MiB")
    assert rss < 600 * MiB
    for s in (worker, noop):
        s.close()
    assert not big_server.tracebacks()
