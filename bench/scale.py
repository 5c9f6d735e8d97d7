"""Scale with data size: one account of N messages (a fifth in INBOX, the
rest in 50 folders) in a store of 10,000 accounts; how the everyday
operations grow from N = 10,000 to 100,000 to 1,000,000.

Each size gets its own data directory, populated through the store's own
API (store/sqlite: ``_store_body``, ``insert_targets`` and ``_save_derived``,
the code ``deliver`` and the background indexer run, in large transactions):
small distinct messages of about 1 KB (bench/corpus.py prose, addresses and
subjects), 90 % of them \\Seen, and their derived data (ENVELOPE,
BODYSTRUCTURE, header fields) computed as the indexer would, in worker
processes so building 1,000,000 takes minutes, not an hour. The full-text
index (SEARCH BODY/TEXT) is left out unless ``--text-index``: it triples
the build time, and body search is bench/index.py's business. The 9,999 other accounts
hold 0-6 messages each. With ``--scale-data DIR`` the directories are kept
and reused by later runs (the build is the slow part).

Then a real ``mailyard serve`` runs on each directory and real clients
(imaplib, poplib, smtplib) measure, median of several runs:

- IMAP LOGIN + SELECT INBOX (LOGIN includes one argon2id verification);
- ``FETCH 1:* (FLAGS)`` of INBOX;
- ``SEARCH FROM x`` and ``SEARCH SUBJECT x`` (header keys: header_fields),
  ``SEARCH UNSEEN`` (flag key); body SEARCH is not measured here (bench/index.py);
- ``LIST "" * RETURN (STATUS (MESSAGES UNSEEN))`` over the 56 mailboxes;
- POP3 USER/PASS + STAT + LIST of INBOX, the first after the server start
  (it reads every message once for exact sizes) and then warm;
- one SMTP delivery to the account (MAIL .. DATA, acknowledged once durable);
- the server's memory (PSS) after all of it.

FETCH 1:* and POP3 LIST answer one line per message, so they cannot grow
slower than INBOX; the others should not grow with the account's size
beyond the mailbox they touch.

On the shared 2-core development machine (medians of alternating runs,
1,000,000 messages, INBOX 200,000): LIST-STATUS of the 56 mailboxes 0.37 s
(1.0 s before its counts came from indexes), POP3 first login 5.5 s (12.3 s
before batched reads), SEARCH UNSEEN 0.33 s (0.53 s), LOGIN+SELECT 0.24 s,
FETCH 1:* (FLAGS) 3.1 s, SEARCH FROM 0.74 s, one SMTP delivery 0.015 s at
every size. Building the 1,000,000-message directory takes about 22 minutes.
"""

from __future__ import annotations

import asyncio
import imaplib
import multiprocessing
import os
import poplib
import random
import shutil
import signal
import smtplib
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

from .common import USERS, BenchServer, Result, progress, rss_kib

ALICE = "alice@example.test"
SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (2_000, 20_000)
ACCOUNTS = 10_000
FOLDERS = 50
RUNS = 5
BATCH = 5_000  # messages per store transaction while building
BUILT = ".scale-built"  # marker file in a finished data directory


# --- building the data --------------------------------------------------------
def _message(rng: random.Random, n: int, to: str) -> bytes:
    from .corpus import _address, _crlf, _prose, paragraphs

    name, sender = _address(rng)
    subject = " ".join(rng.choice(paragraphs()).split()[: rng.randint(3, 8)])
    head = (
        f"Return-Path: <{sender}>\r\nFrom: {name} <{sender}>\r\nTo: <{to}>\r\n"
        f"Subject: {subject} [{n}]\r\nMessage-ID: <{n}.{rng.randrange(10**9)}@{sender.split('@')[1]}>\r\n"
        f"Date: Mon, {1 + n % 28} Nov 2026 08:{n % 60:02d}:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    return head + _crlf(_prose(rng, rng.randint(300, 1500)))


def _make(job: tuple[int, int, list[str]]) -> list[tuple[bytes, object]]:
    """Worker: messages ``start``.. (one per recipient) and their derived records."""
    from mailyard.store.api import derive_record

    seed, start, recipients = job
    rng = random.Random(seed)
    out = []
    for i, to in enumerate(recipients):
        data = _message(rng, start + i, to)
        out.append((data, derive_record(data)))
    return out


def _flags(rng: random.Random) -> frozenset[str]:
    r = rng.random()
    if r < 0.10:
        return frozenset()
    if r < 0.12:
        return frozenset({"\\Seen", "\\Flagged"})
    if r < 0.20:
        return frozenset({"\\Seen", "\\Answered"})
    return frozenset({"\\Seen"})


async def _populate(data: Path, size: int, accounts: int, text_index: bool) -> None:
    from mailyard.auth.passwords import hash_password
    from mailyard.config import StoreConfig
    from mailyard.store.api import DeliveryTarget
    from mailyard.store.sqlite import SQLiteStore, textindex
    from mailyard.store.sqlite.messages import insert_targets

    store = SQLiteStore(data, StoreConfig(fsync=False))
    try:
        # the other accounts share one password hash (argon2id takes ~30 ms each)
        shared = hash_password("scale-password")
        existing = len(await store.list_accounts())
        progress(f"adding {accounts - existing} accounts")
        for start in range(existing, accounts, 500):
            await asyncio.gather(*(store.add_account(f"user{i:05d}@example.test", shared)
                                   for i in range(start, min(start + 500, accounts))))
        account = await store.get_account(ALICE)
        assert account is not None
        inbox = await store.get_mailbox(account.id, "INBOX")
        assert inbox is not None
        folders = [await store.create_mailbox(account.id, f"Archive/{year}/{k:02d}")
                   for k, year in ((k, 2000 + k // 12) for k in range(FOLDERS))]
        # where each message goes: alice's INBOX (a fifth), her folders, then the others' INBOXes
        others = [a for a in await store.list_accounts() if a.address != ALICE]
        other_boxes = []
        rng = random.Random(size)
        for a in others:
            box = await store.get_mailbox(a.id, "INBOX")
            assert box is not None
            other_boxes += [(box.id, a.address)] * rng.randint(0, 6)
        plan: list[tuple[int, str]] = [(inbox.id, ALICE)] * (size // 5)
        rest = size - size // 5
        for k, box in enumerate(folders):
            plan += [(box.id, ALICE)] * (rest // FOLDERS + (1 if k < rest % FOLDERS else 0))
        plan += other_boxes
        total = len(plan)
        progress(f"building {total} messages ({size} in {ALICE}, {len(other_boxes)} in "
                 f"{len(others)} other accounts), {BATCH} per transaction")
        jobs = [(size * 7919 + start, start, [to for _, to in plan[start : start + BATCH]])
                for start in range(0, total, BATCH)]
        started = last = time.perf_counter()
        done = 0
        workers = max(1, min(4, os.cpu_count() or 1))
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for n, made in enumerate(pool.imap(_make, jobs)):
                start = n * BATCH
                targets = plan[start : start + BATCH]

                def op(c, ctx, made=made, targets=targets, start=start):  # noqa: ANN001, ANN202
                    saved = []
                    for i, ((body, rec), (box_id, _)) in enumerate(zip(made, targets, strict=True)):
                        body_id = store._store_body(c, body, 1)
                        when = 1.7e9 + (start + i) * 60  # a message a minute
                        insert_targets(c, ctx, body_id, len(body), [DeliveryTarget(box_id, b"", _flags(rng), when)])
                        saved.append((body_id, rec))
                    if text_index:
                        store._save_derived(c, saved)
                    else:
                        with mock.patch.object(textindex, "save", lambda *args: None):
                            store._save_derived(c, saved)

                await store._write(op)
                done += len(made)
                now = time.perf_counter()
                if now - last > 10 or done == total:
                    rate = done / (now - started)
                    progress(f"{done} of {total} messages stored and indexed, {rate:.0f} msg/s, "
                             f"{(total - done) / rate:.0f} s to go")
                    last = now
    finally:
        await store.close()


class ScaleServer(BenchServer):
    """``mailyard serve`` on a data directory that may be kept between runs."""

    def __init__(self, data: Path) -> None:
        super().__init__(services=("smtp", "imap", "pop3"), fsync=True)
        self.tmp.cleanup()
        self.data = data

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # an orderly stop
            try:
                self.proc.wait(60)
            except Exception:  # noqa: BLE001
                self.proc.kill()
        self.proc = None


def build(data: Path, size: int, accounts: int, text_index: bool = False) -> None:
    """A data directory with ``size`` messages in alice's account (kept if built before)."""
    marker = data / BUILT
    what = f"{size} {accounts} {'text' if text_index else 'headers'}"
    if marker.exists() and marker.read_text().strip() == what:
        progress(f"reusing {data}")
        return
    if data.exists():
        shutil.rmtree(data)
    server = ScaleServer(data)
    server.setup()
    started = time.perf_counter()
    asyncio.run(_populate(data, size, accounts, text_index))
    marker.write_text(what + "\n")
    progress(f"built in {time.perf_counter() - started:.0f} s; "
             f"{sum(f.stat().st_size for f in data.rglob('*') if f.is_file()) / 1e9:.2f} GB on disk")


# --- measuring ----------------------------------------------------------------
def _median(fn, runs: int = RUNS) -> tuple[float, list[float], object]:  # noqa: ANN001
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, result


def measure(server: ScaleServer) -> dict[str, tuple[float, list[float], str]]:
    """Median seconds, the runs, and a note, per operation, against a running server."""
    out: dict[str, tuple[float, list[float], str]] = {}
    password = USERS[ALICE]
    imap_port, pop_port, smtp_port = server.ports["imap"], server.ports["pop3"], server.ports["smtp"]

    def pop_list() -> int:
        p = poplib.POP3("127.0.0.1", pop_port, timeout=600)
        try:
            p.user(ALICE)
            p.pass_(password)
            p.stat()
            return len(p.list()[1])
        finally:
            p.quit()

    t, _, n = _median(pop_list, 1)
    out["POP3 first login + STAT + LIST"] = (t, [t], f"{n} messages")
    out["POP3 login + STAT + LIST"] = _median(pop_list)[:2] + (f"{n} messages",)

    def login_select() -> imaplib.IMAP4:
        c = imaplib.IMAP4("127.0.0.1", imap_port, timeout=600)
        c.login(ALICE, password)
        c.select("INBOX")
        return c

    def timed_login() -> int:
        c = login_select()
        c.logout()
        return 0

    out["IMAP LOGIN + SELECT INBOX"] = _median(timed_login)[:2] + ("",)
    c = login_select()
    try:
        t, times, r = _median(lambda: c.fetch("1:*", "(FLAGS)")[1])
        out["IMAP FETCH 1:* (FLAGS)"] = (t, times, f"{len(r)} lines")
        for label, args in (("FROM", ("FROM", '"alice"')), ("SUBJECT", ("SUBJECT", '"module"')),
                            ("UNSEEN", ("UNSEEN",))):
            t, times, r = _median(lambda args=args: c.search(None, *args)[1][0].split())
            out[f"IMAP SEARCH {label}"] = (t, times, f"{len(r)} hits")
        t, times, r = _median(lambda: c.list('""', "* RETURN (STATUS (MESSAGES UNSEEN))")[1])
        out['IMAP LIST "" * RETURN (STATUS ...)'] = (t, times, f"{len(r)} lines")
    finally:
        c.logout()

    msg = (f"From: <sender@remote.test>\r\nTo: <{ALICE}>\r\nSubject: scale\r\n\r\nhello\r\n").encode()

    def deliver() -> int:
        s = smtplib.SMTP("127.0.0.1", smtp_port, timeout=600)
        try:
            s.sendmail("sender@remote.test", [ALICE], msg)
        finally:
            s.quit()
        return 0

    out["SMTP delivery (connect .. QUIT)"] = _median(deliver)[:2] + ("",)
    return out


def run(quick: bool = False, sizes: tuple[int, ...] | None = None, data_root: str | None = None,
        accounts: int = ACCOUNTS, text_index: bool = False) -> list[Result]:
    sizes = sizes or (QUICK_SIZES if quick else SIZES)
    if quick:
        accounts = min(accounts, 1_000)
    tmp = None
    if data_root is None:
        tmp = tempfile.TemporaryDirectory(prefix="mailyard-bench-scale-")
        data_root = tmp.name
    table: dict[int, dict[str, tuple[float, list[float], str]]] = {}
    memory: dict[int, int] = {}
    try:
        for size in sizes:
            data = Path(data_root) / f"{size}"
            progress(f"size {size}: data in {data}")
            build(data, size, accounts, text_index)
            server = ScaleServer(data)
            server.configure()
            t = time.perf_counter()
            server.start()
            progress(f"size {size}: server started in {time.perf_counter() - t:.1f} s; measuring")
            try:
                table[size] = measure(server)
                memory[size] = rss_kib(server.pid)
            finally:
                server.stop()
            if tmp is not None:
                shutil.rmtree(data, ignore_errors=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    results: list[Result] = []
    names = list(next(iter(table.values())))
    for name in names:
        prev: tuple[int, float] | None = None
        for size in sizes:
            t, times, note = table[size][name]
            growth = f"x{t / prev[1]:.1f} for x{size / prev[0]:.0f} data" if prev else ""
            prev = (size, t)
            results.append(Result("scale", f"{name} @{size:,}", t, "s", " ".join(x for x in (note, growth) if x),
                                  {"size": size, "all": times}))
    for size in sizes:
        results.append(Result("scale", f"server PSS after the run @{size:,}", memory[size] / 1024, "MiB", "",
                              {"size": size}))
    return results
