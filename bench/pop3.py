"""POP3 with Python's poplib as the client (issue #3 figures): an INBOX of 10,000
messages of 2-10 KB; login + STAT + LIST, and RETR of 1,000 random messages.

Dovecot 2.3 on the development machine: 0.032 s and 0.165 s with the same client.

The INBOX is filled through the store API before ``mailyard serve`` starts
(SMTP throughput is bench/smtp.py's business). The server is then a real
subprocess on a free port, so the figures include everything a client sees.
Figures are medians of several runs. The first login after a server start also
reads every message once (net/pop3.py SizeIndex, exact CRLF sizes); it is
reported on its own line. USER/PASS includes one argon2id verification (by
design ~28 ms, auth/passwords.py); the APOP line shows the same work without it.
"""

from __future__ import annotations

import asyncio
import poplib
import random
import statistics
import time

from .common import USERS, BenchServer, Result, progress

ALICE = "alice@example.test"
MESSAGES = 10_000
RETRIEVE = 1_000
RUNS = 5


def _message(rng: random.Random, n: int) -> bytes:
    size = rng.randint(2048, 10240)
    head = (
        f"Return-Path: <sender{n}@remote.test>\r\n"
        f"Received: from client.remote.test ([192.0.2.{n % 250}]) by mx.example.test\r\n"
        f"From: Sender {n} <sender{n}@remote.test>\r\nTo: Alice <{ALICE}>\r\n"
        f"Subject: bench message {n}\r\nMessage-ID: <{n}@remote.test>\r\n"
        "Date: Mon, 23 Nov 2026 08:00:00 +0000\r\n\r\n"
    ).encode()
    lines = []
    length = len(head)
    i = 0
    while length < size - 2:
        # Now and then a line starting with "." so dot-stuffing is exercised.
        line = (b"." if i % 40 == 39 else b"") + (b"%06d " % i) + b"x" * 70 + b"\r\n"
        lines.append(line)
        length += len(line)
        i += 1
    return head + b"".join(lines)


def _fill(server: BenchServer, count: int) -> int:
    """Deliver ``count`` messages into alice's INBOX; returns the total octets."""
    from mailyard.config import StoreConfig
    from mailyard.store.api import DeliveryTarget
    from mailyard.store.sqlite import SQLiteStore

    rng = random.Random(1939)
    msgs = [_message(rng, n) for n in range(count)]

    async def go() -> None:
        store = SQLiteStore(server.data, StoreConfig(fsync=False))
        try:
            account = await store.get_account(ALICE)
            assert account is not None
            box = await store.get_mailbox(account.id, "INBOX")
            assert box is not None
            for start in range(0, count, 500):  # concurrent writes share a commit
                await asyncio.gather(
                    *(store.deliver(m, [DeliveryTarget(box.id)]) for m in msgs[start : start + 500])
                )
            # Let the store's background indexer (derived data for IMAP) finish
            # here, so it does not compete with the server for the CPU while we
            # measure: a steady-state server, as after normal SMTP delivery.
            while _unindexed(server):
                await asyncio.sleep(0.2)
        finally:
            await store.close()

    asyncio.run(go())
    return sum(len(m) for m in msgs)


def _unindexed(server: BenchServer) -> int:
    import sqlite3

    conn = sqlite3.connect(server.data / "index.sqlite3")
    try:
        return conn.execute("SELECT count(*) FROM bodies WHERE derived IS NULL").fetchone()[0]
    finally:
        conn.close()


def _apop_secret(server: BenchServer) -> str:
    from mailyard.auth.passwords import make_apop_secret
    from mailyard.store.sqlite import SQLiteStore

    secret = make_apop_secret()

    async def go() -> None:
        store = SQLiteStore(server.data)
        try:
            account = await store.get_account(ALICE)
            assert account is not None
            await store.set_password(ALICE, account.password_hash, secret, account.scram_sha256)
        finally:
            await store.close()

    asyncio.run(go())
    return secret


def _login_stat_list(port: int, apop: str | None = None) -> tuple[float, int]:
    start = time.perf_counter()
    p = poplib.POP3("127.0.0.1", port, timeout=60)
    if apop is None:
        p.user(ALICE)
        p.pass_(USERS[ALICE])
    else:
        p.apop(ALICE, apop)
    count, _ = p.stat()
    _, listing, _ = p.list()
    elapsed = time.perf_counter() - start
    p.quit()
    assert count == len(listing)
    return elapsed, count


def _retr_random(port: int, n: int, count: int, seed: int) -> float:
    rng = random.Random(seed)
    which = [rng.randint(1, count) for _ in range(n)]
    p = poplib.POP3("127.0.0.1", port, timeout=60)
    p.user(ALICE)
    p.pass_(USERS[ALICE])
    start = time.perf_counter()
    for i in which:
        p.retr(i)
    elapsed = time.perf_counter() - start
    p.quit()
    return elapsed


def run(quick: bool = False) -> list[Result]:
    count = 1_000 if quick else MESSAGES
    retrieve = 200 if quick else RETRIEVE
    server = BenchServer(("pop3",))
    try:
        server.setup()
        progress(f"filling INBOX with {count} messages of 2-10 KB")
        total = _fill(server, count)
        secret = _apop_secret(server)
        server.start()
        port = server.ports["pop3"]
        first, n = _login_stat_list(port)
        assert n == count, (n, count)
        progress(f"first login after start (reads all {count} messages once): {first:.3f} s")
        logins = [_login_stat_list(port)[0] for _ in range(RUNS)]
        apops = [_login_stat_list(port, secret)[0] for _ in range(RUNS)]
        retrs = [_retr_random(port, retrieve, count, seed) for seed in range(RUNS)]
    finally:
        server.stop()
    login, apop, retr = statistics.median(logins), statistics.median(apops), statistics.median(retrs)
    progress(f"login+STAT+LIST {login:.3f} s (APOP {apop:.3f} s), RETR x{retrieve} {retr:.3f} s")
    detail = {"messages": count, "octets": total, "runs": RUNS}
    return [
        Result("pop3", "login (USER/PASS)+STAT+LIST", login, "s", "Dovecot 0.032 s",
               {**detail, "all": logins}),
        Result("pop3", "login (APOP)+STAT+LIST", apop, "s", "(no argon2 check)", {**detail, "all": apops}),
        Result("pop3", "first login after start", first, "s", "(one-time size scan)", detail),
        Result("pop3", f"RETR {retrieve} random", retr, "s", "Dovecot 0.165 s", {**detail, "all": retrs}),
    ]
