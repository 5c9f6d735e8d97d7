"""IMAP with Python's imaplib as the client (issue #4 figures): an INBOX of
10,000 messages of 2-10 KB, a fifth of them multipart with an attachment.

Figures (medians of several runs): LOGIN+SELECT, ``FETCH 1:* (FLAGS)``,
``UID FETCH 1:* (ENVELOPE)``, ``SEARCH SUBJECT x``, ``SEARCH BODY x``, 1,000
random ``FETCH n BODY.PEEK[]`` one after another; APPENDs per second (8
concurrent clients, every APPEND durable); and the server's memory (PSS) with
1,000 logged-in connections sitting in IDLE on a selected INBOX.

Dovecot 2.3 on the development machine, same client and corpus: 0.028 s,
0.052 s, 0.080 s, 0.026 s, 0.75 s, 0.17 s; 214 APPENDs/s; ~500 KB per idle
connection. The INBOX is filled through the store API before the server
starts, and the derived data (ENVELOPE etc.) is computed first, as it is
after normal delivery.
"""

from __future__ import annotations

import asyncio
import imaplib
import random
import re
import statistics
import threading
import time

from .common import USERS, BenchServer, Result, progress, rss_kib
from .pop3 import _unindexed

ALICE = "alice@example.test"
BOB = "bob@example.test"
MESSAGES = 10_000
RUNS = 5


def _message(rng: random.Random, n: int) -> bytes:
    size = rng.randint(2048, 10240)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    head = (
        f"From: Sender {n} <sender{n}@remote.test>\r\nTo: Alice <{ALICE}>\r\n"
        f"Subject: bench message {n} {rng.choice(words)}\r\nMessage-ID: <{n}@remote.test>\r\n"
        "Date: Mon, 23 Nov 2026 08:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    ).encode()
    text = b"".join(
        b" ".join(rng.choice(words).encode() for _ in range(12)) + b"\r\n" for _ in range(size // 80)
    )
    if n % 5:
        return head + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + text[: size - len(head)]
    half = text[: size // 3]
    attachment = bytes(rng.getrandbits(8) for _ in range(size // 3))
    import base64

    b64 = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    return head + (
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n'
        b"Content-Type: text/plain\r\n\r\n%s\r\n--b%d\r\n"
        b'Content-Type: application/octet-stream; name="a.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n%s--b%d--\r\n" % (n, n, half, n, b64, n)
    )


def _fill(server: BenchServer, count: int) -> None:
    from mailyard.config import StoreConfig
    from mailyard.store.api import DeliveryTarget
    from mailyard.store.sqlite import SQLiteStore

    rng = random.Random(9051)
    msgs = [_message(rng, n) for n in range(count)]

    async def go() -> None:
        store = SQLiteStore(server.data, StoreConfig(fsync=False))
        try:
            account = await store.get_account(ALICE)
            assert account is not None
            box = await store.get_mailbox(account.id, "INBOX")
            assert box is not None
            for start in range(0, count, 500):
                await asyncio.gather(
                    *(store.deliver(m, [DeliveryTarget(box.id)]) for m in msgs[start : start + 500])
                )
            while _unindexed(server):
                await asyncio.sleep(0.2)
            await store.get_derived(box.id, list(range(1, count + 1)))  # derive any leftovers
        finally:
            await store.close()

    asyncio.run(go())


def _login(port: int, user: str = ALICE) -> imaplib.IMAP4:
    c = imaplib.IMAP4("127.0.0.1", port, timeout=120)
    c.login(user, USERS[user])
    return c


def _median(fn, runs: int = RUNS) -> tuple[float, list[float]]:  # noqa: ANN001
    values = [fn() for _ in range(runs)]
    return statistics.median(values), values


def _login_select(port: int) -> float:
    start = time.perf_counter()
    c = _login(port)
    typ, _ = c.select("INBOX")
    elapsed = time.perf_counter() - start
    assert typ == "OK"
    c.logout()
    return elapsed


def _timed_command(c: imaplib.IMAP4, fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    typ, data = fn(c)
    elapsed = time.perf_counter() - start
    assert typ == "OK", data
    return elapsed


def _appends(port: int, clients: int, per_client: int) -> float:
    msg = _message(random.Random(1), 7)
    barrier = threading.Barrier(clients + 1)
    conns = [_login(port, BOB) for _ in range(clients)]

    def work(c: imaplib.IMAP4) -> None:
        barrier.wait()
        for _ in range(per_client):
            typ, _ = c.append("INBOX", None, None, msg)
            assert typ == "OK"

    threads = [threading.Thread(target=work, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for c in conns:
        c.logout()
    return clients * per_client / elapsed


async def _idle_clients(port: int, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            await r.readline()
            w.write(f"a LOGIN {BOB} {USERS[BOB]}\r\nb SELECT INBOX\r\nc IDLE\r\n".encode())
            while not (await r.readline()).startswith(b"+ "):
                pass
            return r, w

    return await asyncio.gather(*(one(i) for i in range(n)))


def _idle_memory(server: BenchServer, n: int) -> tuple[float, float]:
    """(PSS of the idle server KiB, extra PSS per IDLE connection KiB)."""
    time.sleep(1)
    before = rss_kib(server.pid)
    result: dict[str, float] = {}

    async def go() -> None:
        conns = await _idle_clients(server.ports["imap"], n)
        await asyncio.sleep(2)
        result["after"] = rss_kib(server.pid)
        for _r, w in conns:
            w.write(b"DONE\r\nd LOGOUT\r\n")
        for _r, w in conns:
            w.close()

    asyncio.run(go())
    return before, (result["after"] - before) / n


def run(quick: bool = False) -> list[Result]:
    count = 1_000 if quick else MESSAGES
    fetches = 200 if quick else 1_000
    idle = 100 if quick else 1_000
    server = BenchServer(("imap",))
    try:
        server.setup()
        cfg = server.data / "config.toml"
        cfg.write_text(re.sub(r"^max_connections_per_ip = \d+$", "max_connections_per_ip = 5000",
                              cfg.read_text(), flags=re.M))
        progress(f"filling INBOX with {count} messages of 2-10 KB (a fifth multipart)")
        _fill(server, count)
        server.start()
        port = server.ports["imap"]
        idle_base, idle_each = _idle_memory(server, idle)
        progress(f"idle server {idle_base / 1024:.1f} MiB, {idle_each:.1f} KiB per IDLE connection")
        login, logins = _median(lambda: _login_select(port))
        c = _login(port)
        c.select("INBOX", readonly=True)
        flags, flags_all = _median(lambda: _timed_command(c, lambda c: c.fetch("1:*", "(FLAGS)")))
        env, env_all = _median(lambda: _timed_command(c, lambda c: c.uid("FETCH", "1:*", "(ENVELOPE)")))
        subj, subj_all = _median(lambda: _timed_command(c, lambda c: c.search(None, "SUBJECT", "foxtrot")))
        body, body_all = _median(lambda: _timed_command(c, lambda c: c.search(None, "BODY", "hotel")))
        rng = random.Random(3501)

        def random_fetches() -> float:
            which = [rng.randint(1, count) for _ in range(fetches)]
            start = time.perf_counter()
            for i in which:
                typ, _ = c.fetch(str(i), "(BODY.PEEK[])")
                assert typ == "OK"
            return time.perf_counter() - start

        rand, rand_all = _median(random_fetches, 3)
        c.logout()
        appends = _appends(port, 8, 25 if quick else 100)
    finally:
        server.stop()
    detail = {"messages": count, "runs": RUNS}
    progress(f"login+select {login:.3f} s, flags {flags:.3f} s, envelope {env:.3f} s, "
             f"subject {subj:.3f} s, body {body:.3f} s, {fetches} fetches {rand:.3f} s, {appends:.0f} APPEND/s")
    return [
        Result("imap", "LOGIN+SELECT", login, "s", "Dovecot 0.028 s", {**detail, "all": logins}),
        Result("imap", "FETCH 1:* (FLAGS)", flags, "s", "Dovecot 0.052 s", {**detail, "all": flags_all}),
        Result("imap", "UID FETCH 1:* (ENVELOPE)", env, "s", "Dovecot 0.080 s", {**detail, "all": env_all}),
        Result("imap", "SEARCH SUBJECT x", subj, "s", "Dovecot 0.026 s", {**detail, "all": subj_all}),
        Result("imap", "SEARCH BODY x", body, "s", "Dovecot 0.75 s; target < 0.1 s", {**detail, "all": body_all}),
        Result("imap", f"{fetches} x FETCH n BODY.PEEK[]", rand, "s", "Dovecot 0.17 s", {**detail, "all": rand_all}),
        Result("imap", "APPEND (8 clients, durable)", appends, "msg/s", "Dovecot 214/s; target >= 400/s", detail),
        Result("imap", "idle server PSS", idle_base / 1024, "MiB", "", detail),
        Result("imap", f"PSS per IDLE connection ({idle})", idle_each, "KiB",
               "Dovecot ~500 KiB; target < 50 MB per 1,000", detail),
    ]
