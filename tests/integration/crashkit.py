"""Crash-safety harness: run ``mailyard serve`` as a subprocess, drive load at
it from client threads, SIGKILL it at a random moment, restart it on the same
data directory and check the invariants of DESIGN.md "Durability" through the
real interfaces (IMAP, POP3, SMTP) and the store's files.

A test describes one write path as a ``Scenario``: the accounts and mailboxes
it needs, what it seeds, the client threads that make load (each records what
it *attempted* before sending a command and what was *acknowledged* after the
server's answer), and a ``check`` that compares what the server shows after the
restart with those records. ``Harness.run`` does the rest, every cycle:

1. start the load threads; once the load is going (``Scenario.progress``),
   SIGKILL the server after a random delay; stop the threads,
2. on odd cycles, with the server down, check the store's files as the kill
   left them: SQLite's integrity check, every body row's bytes present in its
   segment file or whole in the index, reference counts equal to the references, ``uid_next`` above
   every UID used or expunged; then let the scenario top up its test data.
   On even cycles the restarted server finds the directory untouched,
3. restart the server on the same data directory; audit: every message of
   every mailbox in play is fetched over IMAP (``EXAMINE``, ``UID FETCH
   (UID RFC822.SIZE FLAGS BODY.PEEK[])``); each must parse and its
   RFC822.SIZE must equal len(BODY[]); a UID must never name other bytes
   within one UIDVALIDITY, and UIDVALIDITY must not change; then the
   scenario's own ``check``; then a probe APPEND to every mailbox must get a
   UID above every UID ever seen there (APPENDUID). Every third cycle the
   server is killed once more right after it comes up, while it recovers.

After the last cycle the server is stopped normally and the files checked.

``MAILYARD_CRASH_CYCLES`` sets the number of kill-restart cycles per scenario
(default 2; a soak: ``MAILYARD_CRASH_CYCLES=20``). ``MAILYARD_CRASH_REPORT``
names a file that gets one JSON line per scenario (cycles, invariants checked,
operations acknowledged, duplicates in the SMTP window).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import imaplib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imapclient

from mailyard.auth.passwords import Credentials
from mailyard.config import Config
from mailyard.store import open_store
from mailyard.store.api import AppendItem
from mailyard.store.sqlite import SQLiteStore
from tests.ports import free_port

DOMAIN = "example.test"
HOST = "127.0.0.1"
CYCLES = int(os.environ.get("MAILYARD_CRASH_CYCLES", "2"))
# Once the load is going (Scenario.progress), the SIGKILL comes after a random delay in this range.
KILL_AFTER = (0.0, 0.8)

_CID = re.compile(rb"^X-Crashkit-Id: (\S+)\r?$", re.M)

# Errors a client sees when the server dies under it.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError, EOFError, imaplib.IMAP4.abort, ConnectionError, TimeoutError,
)


def message_bytes(cid: str) -> bytes:
    """The exact bytes of test message ``cid``: deterministic, so a stored copy
    can be checked byte for byte; sizes vary from 1 to about 40 KB so that
    writes of different lengths are cut by the kill. Five in six are under
    4 KB, which the SQLite store keeps in its index (store/sqlite/bodies.py
    INLINE_MAX), and most of the others go to segment files: the kill cuts
    writes of both kinds."""
    n = int(hashlib.sha256(cid.encode()).hexdigest()[:6], 16)
    lines = 4 + (n % 6 == 0) * (n % 500) + n % 40
    head = (
        f"From: load@crash.test\r\nTo: someone@{DOMAIN}\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\n"
        f"Subject: crash {cid}\r\n"
        f"Message-ID: <{cid}@crash.test>\r\nX-Crashkit-Id: {cid}\r\n\r\n"
    )
    body = "".join(f"{cid} line {i} {'x' * 60}\r\n" for i in range(lines))
    return (head + body).encode()


def crash_id(raw: bytes) -> str | None:
    """The X-Crashkit-Id of a message (its header section only: a DSN carries
    the original's header in its body)."""
    end = raw.find(b"\r\n\r\n")
    m = _CID.search(raw[: end if end >= 0 else len(raw)])
    return m.group(1).decode() if m else None


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


class InvariantError(AssertionError):
    pass


class Checks:
    """Counts every invariant evaluated (the figure the soak reports) and
    raises on the first that does not hold."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def ok(self, cond: object, name: str, detail: str = "") -> None:
        self.counts[name] += 1
        if not cond:
            raise InvariantError(f"invariant {name!r} violated: {detail}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# --- the server process -------------------------------------------------------------


class CrashServer:
    """``mailyard serve`` in a subprocess on its own data directory."""

    def __init__(self, root: Path, services: tuple[str, ...], configure: Callable[[Config], None] | None,
                 store: Callable[[Config], None] | None = None) -> None:
        """``store``: points ``[store]`` at the test's backend (conftest
        ``use_store_backend``), once: every restart keeps that store."""
        self.data = root / "data"
        self.services = services
        self.configure = configure
        self.store_config = Config().store
        if store is not None:
            probe = Config()
            store(probe)
            self.store_config = probe.store
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.generation = 0  # incremented at every start
        self.killed = threading.Event()  # set just before a SIGKILL: client errors are expected
        self.kill_times: dict[int, float] = {}  # generation -> time.monotonic() of its SIGKILL
        self.output: list[str] = []

    def write_config(self) -> None:
        cfg = Config()
        cfg.server.hostname = "mx.example.test"
        cfg.server.shutdown_grace = 1.0
        cfg.auth.base_delay = 0.0
        # small segments: the load rolls over to new segment files, and the
        # compaction pass after each start has sealed segments to rewrite.
        # One message in six goes to a segment (message_bytes: the others
        # stay in the index, a third of the bytes), so 64 KiB: about as many
        # rollovers per message as 128 KiB made when every body went there.
        cfg.store.segment_size = 64 * 1024
        cfg.store.backend = self.store_config.backend
        cfg.store.dsn = self.store_config.dsn
        cfg.server.workers = 1  # one process unless the scenario asks for more
        cfg.authentication.inbound_checks = False  # no test asks the outside DNS
        # the load submits hundreds of messages as one user within seconds:
        # the accounts' sending limits (300 an hour by default) would refuse it
        cfg.spam.messages_per_hour = 0
        cfg.spam.recipients_per_day = 0
        cfg.metrics.listen = ""
        for name in ("smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "http", "https", "managesieve"):
            setattr(cfg.ports, name, self.ports.get(name, 0))
        if self.configure is not None:
            self.configure(cfg)
        (self.data / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")

    def start(self) -> None:
        for _attempt in range(3):
            if not self.ports:
                self.ports = {name: free_port() for name in self.services}
            self.write_config()
            self.killed.clear()
            self.generation += 1  # before the server can do anything (the queue sends at once)
            proc = subprocess.Popen(
                [sys.executable, "-m", "mailyard", "--data", str(self.data), "serve"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
            assert proc.stdout is not None
            seen: list[str] = []
            for line in proc.stdout:
                seen.append(line.decode(errors="replace"))
                if b"mailyard is running" in line:
                    break
            else:
                proc.wait()
                self.output = seen
                if any("in use" in s for s in seen):
                    self.ports = {}  # a port was taken meanwhile: new ones
                    continue
                raise RuntimeError("server did not start:\n" + "".join(seen))
            # keep draining its output so the server never blocks on a full pipe,
            # into a file next to the data directory (the server's tracebacks)
            threading.Thread(target=self._drain, args=(proc.stdout, "".join(seen)), daemon=True).start()
            self.proc = proc
            return
        raise RuntimeError("server did not start:\n" + "".join(self.output))

    def _drain(self, out: Any, first: str) -> None:
        with open(self.data.parent / "serve.log", "a", encoding="utf-8", errors="replace") as log:
            log.write(f"--- generation {self.generation}\n{first}")
            for line in out:
                log.write(line.decode(errors="replace"))

    def port(self, name: str) -> int:
        return self.ports[name]

    def kill(self) -> None:
        assert self.proc is not None
        self.killed.set()
        self.kill_times[self.generation] = time.monotonic()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def worker_pids(self) -> list[int]:
        """The supervisor's workers ([server] workers > 1)."""
        assert self.proc is not None
        return children(self.proc.pid)

    def kill_worker(self, rng: random.Random) -> int:
        """SIGKILL one worker process (the supervisor lives on); returns its pid."""
        pids = self.worker_pids()
        assert len(pids) >= 2, f"expected worker processes, found {pids}"
        victim = rng.choice(pids)
        self.killed.set()
        self.kill_times[self.generation] = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        # what clients do from now on belongs to a new life of the server
        self.generation += 1
        return victim

    def wait_restarted(self, victim: int, count: int, timeout: float = 30.0) -> None:
        """Until the supervisor runs ``count`` workers again, ``victim`` not among them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.worker_pids()
            if len(pids) == count and victim not in pids:
                return
            time.sleep(0.02)
        raise AssertionError(f"worker {victim} was not replaced: workers now {self.worker_pids()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.killed.set()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


# --- what IMAP shows --------------------------------------------------------------


@dataclass
class Fetched:
    uid: int
    size: int
    flags: frozenset[str]
    raw: bytes
    cid: str | None


@dataclass
class BoxView:
    uid_validity: int
    messages: dict[int, Fetched]

    def by_cid(self) -> dict[str, list[Fetched]]:
        out: dict[str, list[Fetched]] = {}
        for m in self.messages.values():
            if m.cid is not None:
                out.setdefault(m.cid, []).append(m)
        return out


Snapshot = dict[tuple[str, str], BoxView]


@dataclass
class UIDLedger:
    """Every UID ever seen per mailbox (in FETCH, APPENDUID, COPYUID), with the
    digest of the bytes it named, under its UIDVALIDITY (RFC 9051 2.3.1.1)."""

    validity: dict[tuple[str, str], int] = field(default_factory=dict)
    names: dict[tuple[str, str], dict[int, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def max_uid(self, key: tuple[str, str]) -> int:
        return max(self.names.get(key, {0: ""}), default=0)

    def see(self, checks: Checks, key: tuple[str, str], validity: int, uid: int, dig: str) -> None:
        with self.lock:
            known = self.validity.setdefault(key, validity)
            checks.ok(known == validity, "uidvalidity-stable", f"{key}: {known} became {validity}")
            names = self.names.setdefault(key, {})
            before = names.setdefault(uid, dig)
            checks.ok(before == dig, "uid-names-one-message", f"{key} UID {uid} named other bytes")


# --- the harness --------------------------------------------------------------------


class Scenario:
    """One write path under crash. Subclasses fill in the hooks."""

    name = "scenario"
    services: tuple[str, ...] = ("imap",)
    users: tuple[str, ...] = ("alice",)
    mailboxes: tuple[str, ...] = ()  # created for every user besides INBOX

    def configure(self, cfg: Config) -> None:
        """Change the server's configuration (written before every start)."""

    async def seed(self, h: Harness, store: SQLiteStore) -> None:
        """Fill the store before the first start, and top it up with the
        server down after each kill (``h.cycle`` tells which)."""

    def workers(self, h: Harness) -> list[Callable[[], None]]:
        """The load: functions run in threads until ``h.stop`` is set."""
        return []

    def quiesce(self, h: Harness) -> None:
        """After a restart, wait until work the server does on its own (the
        queue) has settled."""

    def check(self, h: Harness, snap: Snapshot) -> None:
        """Compare what the restarted server shows with what was acknowledged,
        and bring the model in line with it for the next cycle."""

    def progress(self) -> int:
        """A count that grows as the load gets acknowledged: the kill waits for
        ``min_progress`` more in each cycle, so it always lands under load."""
        return 0

    min_progress = 5

    def report(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        """Stop what the scenario started besides the server (a fake peer)."""


class Harness:
    def __init__(self, root: Path, scenario: Scenario, store: Callable[[Config], None] | None = None) -> None:
        """``store``: the test's store backend (conftest ``use_store_backend``); SQLite without it."""
        self.scenario = scenario
        self.server = CrashServer(root, tuple(sorted(set(scenario.services) | {"imap"})), scenario.configure, store)
        self.checks = Checks()
        self.uids = UIDLedger()
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.cycle = 0
        self.cycles_done = 0
        self.early_kills = 0  # extra kills right after a restart
        self.passwords = {f"{u}@{DOMAIN}": f"{u}-crash-pw" for u in scenario.users}
        self.probe_log: list[tuple[tuple[str, str], str, int]] = []
        self.rng = random.Random()

    # --- data directory -------------------------------------------------------
    def with_store(self, fn: Callable[[SQLiteStore], Coroutine[Any, Any, Any]]) -> Any:
        """Run ``fn(store)`` on the data directory (the server must be down)."""
        assert self.server.proc is None

        async def go() -> Any:
            if self.postgresql:
                store = open_store(self.server.data, self.server.store_config, background=False)
            else:
                store = SQLiteStore(self.server.data)
            try:
                return await fn(store)
            finally:
                await store.close()

        return asyncio.run(go())

    def init(self) -> None:
        self.server.data.mkdir(parents=True, exist_ok=True)
        self.server.ports = {name: free_port() for name in self.server.services}
        self.server.write_config()

        async def setup(store: SQLiteStore) -> None:
            await store.add_domain(DOMAIN)
            for address, password in self.passwords.items():
                creds = Credentials.from_password(password)
                await store.add_account(address, creds.password_hash, scram_sha256=creds.scram_sha256)
                account = await store.get_account(address)
                assert account is not None
                if await store.get_mailbox(account.id, "INBOX") is None:
                    await store.create_mailbox(account.id, "INBOX")
                for name in self.scenario.mailboxes:
                    await store.create_mailbox(account.id, name)
            await self.scenario.seed(self, store)

        self.with_store(setup)

    async def append(self, store: SQLiteStore, user: str, box: str, cids: list[str],
                     flags: frozenset[str] = frozenset()) -> dict[str, int]:
        """Seed helper: store the test messages ``cids`` into a mailbox in one commit."""
        account = await store.get_account(f"{user}@{DOMAIN}")
        assert account is not None
        mailbox = await store.get_mailbox(account.id, box)
        assert mailbox is not None
        uids = await store.append_many(mailbox, [AppendItem(message_bytes(c), flags) for c in cids])
        return dict(zip(cids, uids, strict=True))

    # --- clients --------------------------------------------------------------
    def imap(self, user: str) -> imaplib.IMAP4:
        m = imaplib.IMAP4(HOST, self.server.port("imap"), timeout=10)
        m.login(f"{user}@{DOMAIN}", self.passwords[f"{user}@{DOMAIN}"])
        return m

    def password(self, user: str) -> str:
        return self.passwords[f"{user}@{DOMAIN}"]

    def lost(self, exc: BaseException, what: str) -> None:
        """A client error: expected once the server was killed, a failure before."""
        if not self.server.killed.is_set() and not self.stop.is_set():
            self.errors.append(f"{what}: {type(exc).__name__}: {exc}")

    def unexpected(self, what: str) -> None:
        if not self.server.killed.is_set():
            self.errors.append(what)

    # --- audit ----------------------------------------------------------------
    def boxes(self) -> tuple[str, ...]:
        """The mailboxes in play (the special-use ones ``add_account`` makes are never written)."""
        return ("INBOX", *self.scenario.mailboxes)

    def snapshot(self) -> tuple[Snapshot, dict[str, imapclient.IMAPClient]]:
        """Every message of every mailbox in play, over IMAP; and the logged-in
        connections (``probe`` uses them, then logs out)."""
        snap: Snapshot = {}
        conns: dict[str, imapclient.IMAPClient] = {}
        try:
            for user in self.scenario.users:
                c = conns[user] = imapclient.IMAPClient(HOST, self.server.port("imap"), ssl=False, timeout=30)
                c.login(f"{user}@{DOMAIN}", self.password(user))
                for name in self.boxes():
                    info = c.select_folder(name, readonly=True)
                    validity = int(info[b"UIDVALIDITY"])
                    msgs: dict[int, Fetched] = {}
                    if int(info[b"EXISTS"]):
                        data = c.fetch(c.search("ALL"), ["UID", "RFC822.SIZE", "FLAGS", "BODY.PEEK[]"])
                        for uid, item in data.items():
                            raw = item[b"BODY[]"]
                            flags = frozenset(f.decode() for f in item[b"FLAGS"]) - {"\\Recent"}
                            msgs[uid] = Fetched(uid, int(item[b"RFC822.SIZE"]), flags, raw, crash_id(raw))
                    snap[(user, name)] = BoxView(validity, msgs)
                c.unselect_folder()
        except BaseException:
            _logout(conns)
            raise
        return snap, conns

    def audit(self, snap: Snapshot) -> None:
        checks = self.checks
        for key, view in snap.items():
            for uid, m in view.messages.items():
                # no half-written message visible: it parses, its size is its length
                checks.ok(m.size == len(m.raw), "rfc822-size-is-length", f"{key} UID {uid}: {m.size} != {len(m.raw)}")
                parsed = email.message_from_bytes(m.raw, policy=email.policy.default)
                checks.ok(m.raw.endswith(b"\r\n") and parsed.get("From") is not None and not parsed.defects,
                          "message-parses", f"{key} UID {uid}: {m.raw[:200]!r}")
                if m.cid is not None and not m.cid.startswith("dsn"):
                    want = message_bytes(m.cid)
                    checks.ok(m.raw.endswith(want), "message-intact", f"{key} UID {uid} ({m.cid}) is damaged")
                self.uids.see(checks, key, view.uid_validity, uid, digest(m.raw))
        # acknowledged probes (harness APPENDs) stay, exactly once
        for key, cid, uid in self.probe_log:
            found = snap[key].by_cid().get(cid, [])
            checks.ok(len(found) == 1 and found[0].uid == uid, "appended-probe-present", f"{key} {cid}")

    def probe(self, conns: dict[str, imapclient.IMAPClient]) -> None:
        """A new APPEND to every mailbox in play gets a UID above every UID seen."""
        try:
            for user, c in conns.items():
                for box in self.boxes():
                    key = (user, box)
                    cid = f"probe-{self.server.generation}-{len(self.probe_log)}"
                    raw = message_bytes(cid)
                    highest = self.uids.max_uid(key)
                    text = c.append(box, raw)
                    validity, uid = parse_appenduid([text])
                    self.checks.ok(uid > highest, "uid-not-reused", f"{key}: new UID {uid} <= {highest} seen")
                    self.uids.see(self.checks, key, validity, uid, digest(raw))
                    self.probe_log.append((key, cid, uid))
        finally:
            _logout(conns)

    @property
    def postgresql(self) -> bool:
        return self.server.store_config.backend == "postgresql"

    def queue_size(self) -> int:
        """Entries in the outbound queue, read by another connection while the server runs."""
        if self.postgresql:
            import psycopg

            with psycopg.connect(self.server.store_config.dsn) as conn:
                row = conn.execute("SELECT count(*) FROM queue").fetchone()
        else:
            conn = sqlite3.connect(f"file:{self.server.data / 'index.sqlite3'}?mode=ro", uri=True)
            try:
                row = conn.execute("SELECT count(*) FROM queue").fetchone()
            finally:
                conn.close()
        assert row is not None
        return int(row[0])

    def check_store(self) -> None:
        """With the server down: the index and the segment files agree
        (SQLite), the rows agree (PostgreSQL)."""
        if self.postgresql:
            check_store_rows(self.server.store_config.dsn, self.checks)
        else:
            check_store_files(self.server.data, self.checks)

    # --- the run --------------------------------------------------------------
    def run(self, cycles: int = CYCLES) -> dict[str, Any]:
        self.init()
        try:
            self.server.start()
            self.scenario.quiesce(self)
            for cycle in range(cycles):
                self.cycle = cycle + 1
                self.load_and_kill()
                if self.cycle % 2:
                    # check the files as the kill left them (this process's
                    # SQLite recovers the WAL), and top the test data up
                    self.check_store()
                    self.with_store(lambda store: self.scenario.seed(self, store))
                # else: the server finds the data directory exactly as the kill left it
                self.server.start()
                if self.cycle % 3 == 0:
                    # every third cycle also kills the server while it recovers
                    # (background indexing, compaction, the queue's re-sends)
                    time.sleep(self.rng.uniform(0.0, 0.3))
                    self.server.kill()
                    self.early_kills += 1
                    self.server.start()
                self.after_start()
                self.cycles_done += 1
            self.server.stop()
            self.check_store()
        finally:
            self.stop.set()
            self.server.stop()
            self.scenario.close()
        result = {
            "scenario": self.scenario.name,
            "cycles": self.cycles_done,
            "kills_during_recovery": self.early_kills,
            "invariants_checked": self.checks.total,
            "by_invariant": dict(self.checks.counts),
            **self.scenario.report(),
        }
        path = os.environ.get("MAILYARD_CRASH_REPORT")
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(result) + "\n")
        print(f"crashkit {self.scenario.name}: {json.dumps(result)}")
        return result

    def after_start(self) -> None:
        self.scenario.quiesce(self)
        snap, conns = self.snapshot()
        try:
            self.audit(snap)
            self.scenario.check(self, snap)
        except BaseException:
            _logout(conns)
            raise
        self.probe(conns)

    def load_and_kill(self) -> None:
        self.stop.clear()
        self.errors.clear()
        threads = [threading.Thread(target=self._guard, args=(fn,), daemon=True)
                   for fn in self.scenario.workers(self)]
        start = self.scenario.progress()
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while self.scenario.progress() < start + self.scenario.min_progress and time.monotonic() < deadline:
            if self.errors:
                break
            time.sleep(0.01)
        time.sleep(self.rng.uniform(*KILL_AFTER))
        self.kill()
        self.stop.set()
        for t in threads:
            t.join(30)
            assert not t.is_alive(), "a load thread did not stop"
        assert not self.errors, f"clients failed while the server was up: {self.errors[:5]}"

    def kill(self) -> None:
        """The crash of a cycle: the whole server."""
        self.server.kill()

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported by load_and_kill
            self.errors.append(f"load thread crashed: {type(exc).__name__}: {exc}")


class WorkerKillHarness(Harness):
    """The crash of a cycle is one worker process of a multi-process server
    ([server] workers, set by the scenario's ``configure``), SIGKILLed
    mid-load; the supervisor starts a new one and the server is never
    restarted. The audit then runs against the live server: everything a
    client saw acknowledged, by either worker, is there exactly once. The
    store's files are checked after the final, normal stop."""

    def __init__(self, root: Path, scenario: Scenario, workers: int = 2,
                 store: Callable[[Config], None] | None = None) -> None:
        super().__init__(root, scenario, store)
        self.workers = workers
        self.victims: list[int] = []

    def kill(self) -> None:
        self.victims.append(self.server.kill_worker(self.rng))

    def run(self, cycles: int = CYCLES) -> dict[str, Any]:
        self.init()
        try:
            self.server.start()
            assert len(self.server.worker_pids()) == self.workers
            self.scenario.quiesce(self)
            for cycle in range(cycles):
                self.cycle = cycle + 1
                self.load_and_kill()
                self.server.wait_restarted(self.victims[-1], self.workers)
                self.server.killed.clear()
                # the next cycle's clients name their messages anew (the
                # kill's generation may have been used by clients finishing)
                self.server.generation += 1
                self.after_start()
                self.cycles_done += 1
            self.server.stop()
            self.check_store()
        finally:
            self.stop.set()
            self.server.stop()
            self.scenario.close()
        result = {
            "scenario": self.scenario.name,
            "cycles": self.cycles_done,
            "workers_killed": len(self.victims),
            "invariants_checked": self.checks.total,
            "by_invariant": dict(self.checks.counts),
            **self.scenario.report(),
        }
        print(f"crashkit {self.scenario.name}: {json.dumps(result)}")
        return result


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (the parent field of /proc/*/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _logout(conns: dict[str, imapclient.IMAPClient]) -> None:
    for c in conns.values():
        try:
            c.logout()
        except Exception:  # noqa: BLE001 - closing anyway
            try:
                c.shutdown()
            except OSError:
                pass


def _close(m: imaplib.IMAP4) -> None:
    try:
        m.shutdown()
    except OSError:
        pass


_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")
_COPYUID = re.compile(rb"\[COPYUID (\d+) ([\d:,]+) ([\d:,]+)\]")


def parse_appenduid(data: list[Any]) -> tuple[int, int]:
    text = b" ".join(d for d in data if isinstance(d, bytes))
    m = _APPENDUID.search(text)
    if not m:
        raise InvariantError(f"APPEND OK without APPENDUID: {text!r}")
    return int(m.group(1)), int(m.group(2))


def parse_copyuid(text: bytes) -> tuple[int, list[int], list[int]]:
    m = _COPYUID.search(text)
    if not m:
        raise InvariantError(f"no COPYUID in {text!r}")
    return int(m.group(1)), _uid_set(m.group(2)), _uid_set(m.group(3))


def _uid_set(text: bytes) -> list[int]:
    out: list[int] = []
    for part in text.decode().split(","):
        lo, _, hi = part.partition(":")
        a, b = int(lo), int(hi or lo)
        out.extend(range(min(a, b), max(a, b) + 1))
    return out


def check_store_files(data: Path, checks: Checks) -> None:
    """The store's own invariants after a crash (SQLite recovers its WAL on open)."""
    conn = sqlite3.connect(data / "index.sqlite3", isolation_level=None)
    try:
        checks.ok(conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", "sqlite-integrity")
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
        checks.ok(not fk, "foreign-keys", str(fk[:5]))
        segments = {r[0] for r in conn.execute("SELECT id FROM segments")}
        sizes: dict[int, int] = {}
        for seg in segments:
            p = data / "blobs" / f"{seg:08d}.seg"
            sizes[seg] = p.stat().st_size if p.exists() else -1
        refs = Counter(r[0] for r in conn.execute("SELECT body_id FROM messages"))
        refs.update(r[0] for r in conn.execute("SELECT body_id FROM queue"))
        for body_id, seg, offset, length, count, inline in conn.execute(
            "SELECT b.id, b.segment, b.offset, b.length, b.refs, length(d.data) FROM bodies b"
            " LEFT JOIN body_data d ON d.body_id = b.id"
        ):
            if seg == 0:  # kept in the index (store/sqlite/bodies.py)
                checks.ok(inline == length, "inline-body-whole",
                          f"body {body_id}: {inline} bytes in the index, needs {length}")
            else:
                checks.ok(seg in segments, "body-segment-known", f"body {body_id} in unknown segment {seg}")
                checks.ok(sizes.get(seg, -1) >= offset + length, "body-bytes-on-disk",
                          f"body {body_id}: segment {seg} has {sizes.get(seg)} bytes, needs {offset + length}")
            used = refs.pop(body_id, 0)
            checks.ok(count == used, "body-refcount", f"body {body_id}: refs {count}, used by {used} row(s)")
        checks.ok(not refs, "no-dangling-body-reference", f"rows point at missing bodies {list(refs)[:5]}")
        orphans = conn.execute("SELECT count(*) FROM body_data d LEFT JOIN bodies b ON b.id = d.body_id"
                               " WHERE b.id IS NULL OR b.segment <> 0").fetchone()[0]
        checks.ok(orphans == 0, "inline-bytes-have-their-body", f"{orphans} body_data rows without their body")
        for box, uid_next, top, gone in conn.execute(
            "SELECT b.id, b.uid_next, (SELECT max(uid) FROM messages m WHERE m.mailbox_id = b.id),"
            " (SELECT max(uid) FROM expunged e WHERE e.mailbox_id = b.id) FROM mailboxes b"
        ):
            checks.ok(uid_next > max(top or 0, gone or 0), "uid-next-above-used", f"mailbox {box}")
    finally:
        conn.close()


def check_store_rows(dsn: str, checks: Checks) -> None:
    """The PostgreSQL store's invariants after a crash: every body's
    reference count is the number of message and queue rows naming it, no
    row names a missing body, and no mailbox's next UID is one already used."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        refs = Counter(r[0] for r in conn.execute("SELECT body_id FROM messages"))
        refs.update(r[0] for r in conn.execute("SELECT body_id FROM queue"))
        for body_id, count in conn.execute("SELECT id, refs FROM bodies"):
            used = refs.pop(body_id, 0)
            checks.ok(count == used, "body-refcount", f"body {body_id}: refs {count}, used by {used} row(s)")
        checks.ok(not refs, "no-dangling-body-reference", f"rows point at missing bodies {list(refs)[:5]}")
        for box, uid_next, top, gone in conn.execute(
            "SELECT b.id, b.uid_next, (SELECT max(uid) FROM messages m WHERE m.mailbox_id = b.id),"
            " (SELECT max(uid) FROM expunged e WHERE e.mailbox_id = b.id) FROM mailboxes b"
        ):
            checks.ok(uid_next > max(top or 0, gone or 0), "uid-next-above-used", f"mailbox {box}")
