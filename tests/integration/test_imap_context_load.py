"""Live contexts (RFC 5267 section 4) on a 20,000-message mailbox of a real
``mailyard serve`` (a subprocess, so its memory is its own): one connection
holds as many contexts as it may (and is refused one more with NOUPDATE),
another changes the flags of every message; the updates arrive, the
server's memory stays bounded and a third client is greeted meanwhile.
Figures are printed; only generous bounds are asserted (the machine is
shared)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest

from mailyard.config import StoreConfig
from mailyard.protocols.imap.contexts import MAX_CONTEXTS
from mailyard.store.api import AppendItem
from mailyard.store.sqlite import SQLiteStore
from tests.conftest import USERS
from tests.integration import prefill
from tests.integration.serve_process import ALICE, ServeProcess

pytestmark = pytest.mark.slow

COUNT = 20_000
MiB = 1 << 20


def _fill(data: Path) -> None:
    async def go() -> None:
        store = SQLiteStore(data, StoreConfig(fsync=False))
        try:
            account = await store.get_account(ALICE)
            assert account is not None
            box = await store.get_mailbox(account.id, "INBOX")
            assert box is not None
            for start in range(0, COUNT, 2_000):
                await store.append_many(box, [
                    AppendItem(f"Subject: m {n}\r\n\r\nbody {n}\r\n".encode(), (), 1.7e9 + n)
                    for n in range(start, min(COUNT, start + 2_000))])
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
    s.sendall(f'L LOGIN {ALICE} "{USERS[ALICE]}"\r\nS SELECT INBOX\r\n'.encode())
    assert f"* {COUNT} EXISTS".encode() in _read_until(s, b"S")
    return s


def test_many_contexts_on_a_big_mailbox() -> None:
    # the mailbox ``_fill`` makes, filled in the background from the start
    # of the session (prefill.py)
    server = ServeProcess(prefill.filled(__name__), lambda cfg: None, made=True)
    try:
        holder, changer = _login(server), _login(server)

        def command(i: int, update: str) -> str:
            return (f"C{i} UID SEARCH RETURN ({update}COUNT) UNSEEN" if i % 2 else
                    f"C{i} UID SORT RETURN ({update}COUNT) (REVERSE ARRIVAL) UTF-8 UNSEEN")

        # the same commands without UPDATE first: the session's index data
        # and the sort keys are loaded, so the figure below is the contexts'
        for i in range(MAX_CONTEXTS):
            holder.sendall(command(i, "").encode() + b"\r\n")
            _read_until(holder, f"C{i}".encode())
        base = server.rss()
        for i in range(MAX_CONTEXTS):
            holder.sendall(command(i, "UPDATE ").encode() + b"\r\n")
            answer = _read_until(holder, f"C{i}".encode())
            assert f'* ESEARCH (TAG "C{i}") UID COUNT {COUNT}\r\n'.encode() in answer, answer[:200]
            assert b"NOUPDATE" not in answer
        holder.sendall(b"CX UID SEARCH RETURN (UPDATE COUNT) UNSEEN\r\n")
        assert b'* NO [NOUPDATE "CX"] Too many contexts' in _read_until(holder, b"CX")
        held = server.rss()
        server.reset_peak()
        changer.sendall(b"F STORE 1:* +FLAGS.SILENT (\\Seen)\r\n")
        assert _read_until(changer, b"F").endswith(b"F OK STORE completed\r\n")
        done = threading.Event()
        result: dict[str, bytes] = {}

        def noop() -> None:
            # the update reaches the holder's view through the store's
            # notification: NOOP until every context has reported it
            deadline = time.monotonic() + 120
            got = b""
            n = 0
            while got.count(b"REMOVEFROM") < MAX_CONTEXTS and time.monotonic() < deadline:
                n += 1
                holder.sendall(f"N{n} NOOP\r\n".encode())
                got += _read_until(holder, f"N{n}".encode())
            result["got"] = got
            done.set()

        t = threading.Thread(target=noop)
        start = time.perf_counter()
        t.start()
        greetings = []
        while not done.wait(0.05):
            g0 = time.perf_counter()
            with socket.create_connection((server.host, server.port("imap")), timeout=10) as s:
                assert s.recv(4096).startswith(b"* OK"), "no greeting within 10 s"
            greetings.append(time.perf_counter() - g0)
        t.join(130)
        elapsed = time.perf_counter() - start
        got = result["got"]
        for i in range(MAX_CONTEXTS):
            want = (f'* ESEARCH (TAG "C{i}") UID REMOVEFROM (0 1:{COUNT})' if i % 2 else
                    # sort order is descending here: ranges only for ascending runs (RFC 5267 3.2)
                    f'* ESEARCH (TAG "C{i}") UID REMOVEFROM (1 {",".join(map(str, range(COUNT, 0, -1)))})')
            assert want.encode() in got, (i, got[-300:])
        peak, rss = server.peak(), server.rss()
        print(f"\n{MAX_CONTEXTS} contexts on {COUNT:,} messages: RSS {base / MiB:.0f} MiB without them, "
              f"{held / MiB:.0f} MiB holding them; a flag change of every message reported in {elapsed:.2f} s, "
              f"peak {peak / MiB:.0f} MiB, after {rss / MiB:.0f} MiB; other clients: greeting max "
              f"{max(greetings, default=0.0) * 1000:.0f} ms ({len(greetings)} probes)")
        assert held - base < 16 * MiB
        assert peak < base + 300 * MiB
        for s in (holder, changer):
            s.close()
        assert not server.tracebacks()
    finally:
        server.stop()
