"""POP3 with Python's poplib as the client (issue #3 figures): an INBOX of 10,000
messages of 2-10 KB; login + STAT + LIST, and RETR of 1,000 random messages.

Dovecot 2.3 on a quiet development machine: 0.032 s and 0.165 s with the same
client. The machine here is shared, so when Dovecot is installed it runs in the
same benchmark with the same corpus and password scheme (bench/dovecot.py) and
the runs alternate between the two servers: rows "Dovecot (this run)".

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


def corpus(count: int) -> list[bytes]:
    rng = random.Random(1939)
    return [_message(rng, n) for n in range(count)]


def _fill(server: BenchServer, msgs: list[bytes]) -> int:
    """Deliver ``msgs`` into alice's INBOX; returns the total octets."""
    from mailyard.config import StoreConfig
    from mailyard.store.api import DeliveryTarget
    from mailyard.store.sqlite import SQLiteStore

    count = len(msgs)

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


def password_hash(server: BenchServer, address: str) -> str:
    """The argon2id PHC string mailyard stored for ``address`` (for Dovecot's passwd-file)."""
    from mailyard.store.sqlite import SQLiteStore

    async def go() -> str:
        store = SQLiteStore(server.data)
        try:
            account = await store.get_account(address)
            assert account is not None and account.password_hash is not None
            return account.password_hash
        finally:
            await store.close()

    return asyncio.run(go())


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


def _interleaved(fns: list, runs: int) -> list[list[float]]:  # noqa: ANN001
    """Run each of ``fns`` ``runs`` times, alternating between them."""
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for values, fn in zip(out, fns, strict=True):
            values.append(fn())
    return out


def run(quick: bool = False) -> list[Result]:
    from . import dovecot

    count = 1_000 if quick else MESSAGES
    retrieve = 200 if quick else RETRIEVE
    server = BenchServer(("pop3",))
    ref: dovecot.Dovecot | None = None
    try:
        server.setup()
        progress(f"filling INBOX with {count} messages of 2-10 KB")
        msgs = corpus(count)
        total = _fill(server, msgs)
        secret = _apop_secret(server)
        server.start()
        port = server.ports["pop3"]
        first, n = _login_stat_list(port)
        assert n == count, (n, count)
        progress(f"first login after start (reads all {count} messages once): {first:.3f} s")
        if dovecot.available():
            progress("starting Dovecot with the same corpus and password hash")
            ref = dovecot.Dovecot(("pop3",), ALICE, password_hash(server, ALICE), USERS[ALICE], msgs)
            ref.start()
            dport = ref.ports["pop3"]
            dfirst, dn = _login_stat_list(dport)
            assert dn == count, (dn, count)
            progress(f"Dovecot first login (builds its index): {dfirst:.3f} s")
            logins, dlogins = _interleaved([lambda: _login_stat_list(port)[0],
                                            lambda: _login_stat_list(dport)[0]], RUNS)
            apops = [_login_stat_list(port, secret)[0] for _ in range(RUNS)]
            retrs, dretrs = [], []
            for seed in range(RUNS):
                retrs.append(_retr_random(port, retrieve, count, seed))
                dretrs.append(_retr_random(dport, retrieve, count, seed))
        else:
            logins = [_login_stat_list(port)[0] for _ in range(RUNS)]
            apops = [_login_stat_list(port, secret)[0] for _ in range(RUNS)]
            retrs = [_retr_random(port, retrieve, count, seed) for seed in range(RUNS)]
    finally:
        server.stop()
        if ref is not None:
            ref.stop()
    login, apop, retr = statistics.median(logins), statistics.median(apops), statistics.median(retrs)
    progress(f"login+STAT+LIST {login:.3f} s (APOP {apop:.3f} s), RETR x{retrieve} {retr:.3f} s")
    detail = {"messages": count, "octets": total, "runs": RUNS}
    rows = [
        Result("pop3", "login (USER/PASS)+STAT+LIST", login, "s", "Dovecot 0.032 s (quiet machine)",
               {**detail, "all": logins}),
    ]
    if ref is not None:
        dlogin, dretr = statistics.median(dlogins), statistics.median(dretrs)
        progress(f"Dovecot: login+STAT+LIST {dlogin:.3f} s, RETR x{retrieve} {dretr:.3f} s")
        rows.append(Result("pop3", "  Dovecot (this run)", dlogin, "s", dovecot.label(ref),
                           {**detail, "all": dlogins}))
    else:
        rows.append(Result("pop3", "  Dovecot (static)", 0.032, "s", dovecot.label(None)))
    rows += [
        Result("pop3", "login (APOP)+STAT+LIST", apop, "s", "(no argon2 check)", {**detail, "all": apops}),
        Result("pop3", "first login after start", first, "s", "(one-time size scan)", detail),
        Result("pop3", f"RETR {retrieve} random", retr, "s", "Dovecot 0.165 s (quiet machine)",
               {**detail, "all": retrs}),
    ]
    if ref is not None:
        rows.append(Result("pop3", "  Dovecot (this run)", dretr, "s", dovecot.label(ref),
                           {**detail, "all": dretrs}))
    else:
        rows.append(Result("pop3", "  Dovecot (static)", 0.165, "s", dovecot.label(None)))
    return rows
