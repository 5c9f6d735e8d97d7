"""Concurrent IMAP load: N clients in persistent sessions on one mailbox.

Each client logs in, selects INBOX and runs a seeded random mix of what
IMAP stress tools (imaptest and the like) run: SELECT, LIST, STATUS,
APPEND of real messages (bench/corpus.py, 0.6 KB to 350 KB), FETCH of
flags, envelopes and whole bodies, STORE of flags and keywords, and
STORE \\Deleted + EXPUNGE. The mix is the same sequence of commands for
every server (client k draws from ``Random(seed, k)``; sequence numbers are
drawn as fractions of the mailbox size that client currently knows).

It runs against mailyard (a real ``mailyard serve``) and, when installed,
against a private Dovecot (bench/dovecot.py) with the same INBOX, in the
same run, alternating, for each client count (default 10 and 50).

Figures per server and client count: commands/s over the measured phase
(all clients logged in and selected, then released at once), p50/p99
latency per command type (request sent to tagged response read), server
CPU per command (utime + stime, children included, of the server's whole
process tree from /proc: for Dovecot the master, imap, imap-login, auth,
...), the time the server's threads were ready to run but waited for a
core, per command (schedstat: on two cores shared with the clients, a
part of every latency), and protocol errors: every tagged NO or BAD, and every untagged BAD,
counted by command and response text. A correct server sends none for this
mix (a FETCH of a message another session expunged is answered with data
or nothing, not NO).

Each phase starts from a quiet server (`settle`: two quarter-seconds in a
row under 2 % of a core), the same for both servers, so one phase's leftover
work (or the initial INBOX's indexing) does not land in the next. What a
server leaves for after a phase (mailyard indexes the text of what FETCH
derived once its writer has had no write for 0.1 s) is measured after it
the same way and printed as CPU per command "after the phase". For
mailyard the sessions held by each worker process are printed too.

The clients are cheap on purpose: one asyncio process, raw sockets, one
regular expression per untagged line, literals read by length. Two cores
are shared by client and server, so the client's own CPU is printed too.

During each measured phase of the mix an independent client in its own
process (bench/imap_probe.py, INBOX selected) sends a NOOP or a STATUS every
5 ms: what one user's client sees while the others load the server. The
load clients' own figures include their waits for each other in their one
process, which a server that answers several of them at once (a group
commit) makes longer; the probe's do not.

With ``--per-kind N``, after the mix each command type runs alone for a
short phase (N commands per client, the servers alternating), and the
server CPU per command of each type is reported: where the mix's figure
comes from, type by type, against Dovecot's.

Usage: python -m bench imap-load [--clients 10 50] [--commands 300] [--per-kind 40] ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .common import USERS, BenchServer, Result, _children, cpu_count, progress

ALICE = "alice@example.test"
INITIAL = 500  # messages in INBOX before the run
KEYWORDS = ["$Label1", "$Label2", "$Junk", "$NotJunk", "Work", "Later"]

# (kind, weight): the mix
MIX = [
    ("SELECT", 4),
    ("LIST", 4),
    ("STATUS", 6),
    ("APPEND", 10),
    ("FETCH-FLAGS", 16),
    ("FETCH-ENVELOPE", 16),
    ("FETCH-BODY", 16),
    ("STORE-FLAGS", 12),
    ("STORE-KEYWORD", 10),
    ("EXPUNGE", 6),
]

_UNTAGGED = re.compile(rb"^\* (\d+) (EXISTS|EXPUNGE)\r\n$")
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


def messages() -> list[bytes]:
    """What the clients APPEND: the corpus (2-60 KB), a few small notes
    (~0.6 KB) and a few large attachments (up to ~350 KB)."""
    from .corpus import corpus

    out = corpus(120, seed=4000)
    rng = random.Random(4001)
    for n in range(8):
        out.append(
            b"From: Bob <bob@remote.test>\r\nTo: Alice <alice@example.test>\r\n"
            b"Subject: note %d\r\nMessage-ID: <note%d@remote.test>\r\n"
            b"Date: Mon, 30 Nov 2026 09:00:00 +0000\r\n\r\n" % (n, n) + b"short note line\r\n" * 25
        )
    import base64

    for n, size in enumerate((90_000, 160_000, 255_000)):
        blob = base64.encodebytes(rng.randbytes(size)).replace(b"\n", b"\r\n")
        out.append(
            b"From: Carol <carol@remote.test>\r\nTo: Alice <alice@example.test>\r\n"
            b"Subject: scans %d\r\nMessage-ID: <scan%d@remote.test>\r\n"
            b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="s%d"\r\n\r\n--s%d\r\n'
            b"Content-Type: text/plain\r\n\r\nThe scans.\r\n--s%d\r\n"
            b'Content-Type: application/pdf; name="scan.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            % (n, n, n, n, n) + blob + b"--s%d--\r\n" % n
        )
    return out


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter = field(default_factory=Counter)  # (kind, text) -> count
    commands: int = 0


class Client:
    """One persistent IMAP session with minimal parsing."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: Stats) -> None:
        self.r, self.w = reader, writer
        self.stats = stats
        self.exists = 0
        self.tag = 0

    async def command(self, kind: str, line: bytes, literal: bytes | None = None, timed: bool = True) -> bytes:
        """Send ``line`` (and a synchronizing literal), read to the tagged
        response; returns the tagged response line. Counts NO/BAD."""
        self.tag += 1
        tag = b"t%d" % self.tag
        start = time.perf_counter()
        if literal is None:
            self.w.write(tag + b" " + line + b"\r\n")
        else:
            self.w.write(tag + b" " + line + b" {%d}\r\n" % len(literal))
            while True:
                got = await self.r.readline()
                if got.startswith(b"+"):
                    break
                if not got or got.startswith(tag + b" "):
                    self._count(kind, got)
                    return got
                self._untagged(kind, got)
            self.w.write(literal + b"\r\n")
        r = self.r
        while True:
            got = await r.readline()
            if not got:
                self._count(kind, b"connection closed")
                raise ConnectionError(f"{kind}: the server closed the connection")
            if got.startswith(tag + b" "):
                break
            if got.endswith(b"}\r\n") and (m := _LITERAL.search(got)):
                await r.readexactly(int(m.group(1)))
                # the rest of the response line after the literal (maybe another literal)
                while (more := await r.readline()).endswith(b"}\r\n") and (m := _LITERAL.search(more)):
                    await r.readexactly(int(m.group(1)))
                continue
            self._untagged(kind, got)
        if timed:
            self.stats.latencies[kind].append(time.perf_counter() - start)
            self.stats.commands += 1
        self._count(kind, got[len(tag) + 1 :])
        return got

    def _untagged(self, kind: str, line: bytes) -> None:
        if line.startswith(b"* ") and line[2:3].isdigit():
            m = _UNTAGGED.match(line)
            if m:
                if m.group(2) == b"EXISTS":
                    self.exists = int(m.group(1))
                else:
                    self.exists -= 1
        elif line.startswith((b"* BAD", b"* BYE")):
            self._count(kind, line[2:])

    def _count(self, kind: str, status: bytes) -> None:
        if not status.startswith(b"OK"):
            text = re.sub(rb"\d+", b"N", status.strip())[:100].decode("ascii", "replace")
            self.stats.errors[(kind, text)] += 1


def _seq(rng: random.Random, exists: int) -> int:
    return 1 + int(rng.random() * exists)


async def _step(c: Client, rng: random.Random, kind: str, bodies: list[bytes]) -> None:
    """One step of the mix; the draws from ``rng`` do not depend on the server."""
    a, b, pick = rng.random(), rng.random(), rng.random()
    n = c.exists
    if kind in ("FETCH-FLAGS", "FETCH-ENVELOPE", "FETCH-BODY", "STORE-FLAGS", "STORE-KEYWORD", "EXPUNGE") and n == 0:
        kind = "APPEND"
    if kind == "SELECT":
        await c.command(kind, b"SELECT INBOX")
    elif kind == "LIST":
        await c.command(kind, b'LIST "" "*"')
    elif kind == "STATUS":
        box = b"INBOX" if pick < 0.5 else b"Archive"
        await c.command(kind, b"STATUS " + box + b" (MESSAGES UIDNEXT UNSEEN RECENT)")
    elif kind == "APPEND":
        flags = b"(\\Seen)" if pick < 0.5 else b"()"
        await c.command(kind, b"APPEND INBOX " + flags, bodies[int(a * len(bodies))])
    elif kind == "FETCH-FLAGS":
        lo = 1 + int(a * n)
        hi = min(n, lo + int(b * 100))
        await c.command(kind, b"FETCH %d:%d (UID FLAGS)" % (lo, hi))
    elif kind == "FETCH-ENVELOPE":
        lo = 1 + int(a * n)
        hi = min(n, lo + int(b * 20))
        await c.command(kind, b"FETCH %d:%d (UID RFC822.SIZE FLAGS INTERNALDATE ENVELOPE)" % (lo, hi))
    elif kind == "FETCH-BODY":
        item = b"BODY.PEEK[]" if pick < 0.7 else b"BODY[]"
        await c.command(kind, b"FETCH %d (%s)" % (1 + int(a * n), item))
    elif kind == "STORE-FLAGS":
        op = b"+FLAGS" if b < 0.6 else b"-FLAGS"
        flag = b"\\Seen" if pick < 0.6 else b"\\Flagged" if pick < 0.9 else b"\\Answered"
        await c.command(kind, b"STORE %d %s (%s)" % (1 + int(a * n), op, flag))
    elif kind == "STORE-KEYWORD":
        op = b"+FLAGS" if b < 0.7 else b"-FLAGS"
        kw = KEYWORDS[int(pick * len(KEYWORDS))].encode()
        await c.command(kind, b"STORE %d %s (%s)" % (1 + int(a * n), op, kw))
    elif kind == "EXPUNGE":
        await c.command("STORE-DELETED", b"STORE %d +FLAGS.SILENT (\\Deleted)" % (1 + int(a * n)))
        await c.command(kind, b"EXPUNGE")


async def _connect(port: int, stats: Stats, host: str = "127.0.0.1") -> Client:
    r, w = await asyncio.open_connection(host, port, limit=1 << 20)
    greeting = await r.readline()
    if not greeting.startswith(b"* OK"):
        raise RuntimeError(f"no greeting: {greeting!r}")
    c = Client(r, w, stats)
    got = await c.command("LOGIN", f'LOGIN {ALICE} "{USERS[ALICE]}"'.encode(), timed=False)
    if not got.split(b" ", 2)[1:2] == [b"OK"]:
        raise RuntimeError(f"LOGIN refused: {got!r}")
    await c.command("SELECT", b"SELECT INBOX", timed=False)
    return c


def _tree(root: int) -> dict[int, str]:
    """``root`` and every process below it: pid to the fields of its
    /proc/PID/stat after the command name."""
    parents: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        pid = int(entry)
        parents[pid] = int(fields[1])
        stats[pid] = fields
    out = {}
    for pid, fields in stats.items():
        p = pid
        while p and p != root:
            p = parents.get(p, 0)
        if p == root:
            out[pid] = fields
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds (utime + stime, and cutime + cstime of reaped children)
    of ``root`` and every process below it."""
    tick = os.sysconf("SC_CLK_TCK")
    return sum(sum(int(x) for x in fields[11:15]) / tick for fields in _tree(root).values())


def tree_runqueue_wait(root: int) -> float:
    """Seconds the threads of ``root`` and every process below it spent
    runnable but waiting for a core (/proc/PID/task/TID/schedstat, second
    field): time a server's work was ready and the machine had no core for
    it, which a command's latency includes."""
    total = 0
    for pid in _tree(root):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total / 1e9


def thread_cpu(pid: int, tid: int) -> float:
    """CPU seconds of one thread (a process's main thread: for mailyard, its event loop)."""
    try:
        text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sessions_per_worker(root: int, port: int) -> list[int]:
    """How many of the established connections to ``port`` ``root`` and each
    of its children holds (mailyard's workers; Dovecot's imap processes),
    from /proc: whether the sessions are spread over the server's cores."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # ESTABLISHED, local port
                inodes.add(fields[9])
    counts = []
    for pid in [root, *_children(root)]:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        n = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
        if n:
            counts.append(n)
    return sorted(counts)


async def settle(pids: Sequence[int], window: float = 0.25, quiet: float = 0.02,
                 limit: float = 60.0) -> tuple[float, float]:
    """Wait until the servers ``pids`` (process trees) are quiet: two windows
    in a row in which they used at most ``quiet`` of a core. A measured phase
    starts from a quiet server, the same for every server; the work a server
    left for later (its background indexing) is measured after the phase
    the same way. Returns the seconds waited and the CPU seconds used."""
    started = time.perf_counter()
    first = last = sum(tree_cpu(p) for p in pids)
    calm = 0
    while calm < 2 and time.perf_counter() - started < limit:
        await asyncio.sleep(window)
        now = sum(tree_cpu(p) for p in pids)
        calm = calm + 1 if now - last <= quiet * window else 0
        last = now
    return time.perf_counter() - started, last - first


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _percentiles(values: list[float]) -> dict:
    values = sorted(values)
    return {
        "count": len(values),
        "p50_ms": 1000 * statistics.median(values),
        "p99_ms": 1000 * values[min(len(values) - 1, int(0.99 * len(values)))],
    }


async def _start_probe(host: str, port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.imap_probe", host, str(port), ALICE, USERS[ALICE],
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout is not None
    ready = await asyncio.wait_for(proc.stdout.readline(), 30)
    if ready.strip() != b"ready":
        proc.kill()
        raise RuntimeError(f"the probe client did not start: {ready!r}")
    return proc


async def _stop_probe(proc: asyncio.subprocess.Process) -> dict[str, list[float]]:
    out, _ = await asyncio.wait_for(proc.communicate(b"stop\n"), 30)
    result = json.loads(out.splitlines()[-1])
    if "error" in result:
        raise RuntimeError(f"the probe client failed: {result['error']}")
    return result


async def _run_once(port: int, pid: int, clients: int, commands: int, seed: int,
                    bodies: list[bytes], *, servers: Sequence[tuple[str, int]] = (),
                    cpu_pids: Sequence[int] = (), mix: list[tuple[str, int]] | None = None,
                    probe: bool = False) -> dict:
    """One measured phase: ``clients`` sessions run ``commands`` steps each
    of ``mix`` (default MIX, the full mix). ``servers``: (host, port) of
    several servers (nodes) sharing the mailbox, client k connecting to
    ``servers[k % n]`` (default: ``port`` on 127.0.0.1); ``cpu_pids``: more
    process trees whose CPU counts as the server's (the nodes, the database).
    ``probe``: an independent client in its own process (bench/imap_probe.py)
    sends a NOOP or STATUS every 5 ms during the phase; its latencies are
    what one user's client sees while the others load the server."""
    stats = Stats()
    sem = asyncio.Semaphore(10)
    servers = list(servers) or [("127.0.0.1", port)]
    settled_s, _ = await settle((pid, *cpu_pids))

    async def connect(k: int) -> Client:
        async with sem:
            host, p = servers[k % len(servers)]
            return await _connect(p, stats, host)

    conns = await asyncio.gather(*(connect(k) for k in range(clients)))
    kinds = [k for k, _ in mix or MIX]
    weights = [w for _, w in mix or MIX]
    go = asyncio.Event()

    async def work(k: int, c: Client) -> None:
        rng = random.Random(seed * 100_003 + k)
        plan = rng.choices(kinds, weights, k=commands)
        await go.wait()
        for kind in plan:
            await _step(c, rng, kind, bodies)

    tasks = [asyncio.ensure_future(work(k, c)) for k, c in enumerate(conns)]
    prober = await _start_probe(*servers[0]) if probe else None
    spread = sessions_per_worker(pid, port) if len(servers) == 1 else []
    # the event loops: each worker's main thread (the supervisor runs none),
    # or the one process's when it has no workers
    loops = _children(pid) or [pid]
    await asyncio.sleep(0.2)
    cpu0, me0, main0 = sum(tree_cpu(p) for p in (pid, *cpu_pids)), self_cpu(), [thread_cpu(p, p) for p in loops]
    wait0 = sum(tree_runqueue_wait(p) for p in (pid, *cpu_pids))
    start = time.perf_counter()
    go.set()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.perf_counter() - start
    cpu1, me1, main1 = sum(tree_cpu(p) for p in (pid, *cpu_pids)), self_cpu(), [thread_cpu(p, p) for p in loops]
    wait1 = sum(tree_runqueue_wait(p) for p in (pid, *cpu_pids))
    probed = await _stop_probe(prober) if prober is not None else {}
    failures = [repr(d) for d in done if isinstance(d, BaseException)]
    for c in conns:
        try:
            c.w.write(b"z LOGOUT\r\n")
            c.w.close()
        except Exception:  # noqa: BLE001, S110
            pass
    # what the phase left for later (background indexing), until the server is quiet again
    after_s, after_cpu = await settle((pid, *cpu_pids))
    every = [v for values in stats.latencies.values() for v in values]
    lat = {kind: _percentiles(values)
           for kind, values in [*sorted(stats.latencies.items()), ("all commands", every)] if values}
    return {
        "clients": clients,
        "commands": stats.commands,
        "seconds": elapsed,
        "commands_per_s": stats.commands / elapsed,
        "server_cpu_s": cpu1 - cpu0,
        "server_cpu_ms_per_command": 1000 * (cpu1 - cpu0) / max(stats.commands, 1),
        # ready to run, no core free: part of every latency on a busy machine
        "server_runqueue_wait_ms_per_command": 1000 * (wait1 - wait0) / max(stats.commands, 1),
        "sessions_per_worker": spread,
        "settled_before_s": settled_s,
        "server_cpu_after_s": after_cpu,  # deferred work, done once the phase was over
        "server_cpu_after_ms_per_command": 1000 * after_cpu / max(stats.commands, 1),
        "settled_after_s": after_s,
        # mailyard: each event loop's share of one core
        "server_event_loops_busy": [round((b - a) / elapsed, 3) for a, b in zip(main0, main1, strict=True)],
        "client_cpu_s": me1 - me0,
        "latency": lat,
        "probe": {kind: _percentiles(values) for kind, values in probed.items() if values},
        "errors": [{"command": k, "response": t, "count": n} for (k, t), n in stats.errors.most_common()],
        "client_failures": failures,
    }


def _prepare_archive(port: int, host: str = "127.0.0.1") -> None:
    async def go() -> None:
        c = await _connect(port, Stats(), host)
        await c.command("CREATE", b"CREATE Archive", timed=False)
        c.w.write(b"z LOGOUT\r\n")
        c.w.close()

    asyncio.run(go())


def _fmt(name: str, r: dict) -> str:
    lat = r["latency"]
    worst = max(lat.values(), key=lambda v: v["p50_ms"]) if lat else {"p50_ms": 0}
    busy = "/".join(f"{100 * b:.0f}" for b in r.get("server_event_loops_busy", []))
    loop = f"event loops {busy}% busy, " if name == "mailyard" and busy else ""
    return (f"{name} {r['clients']} clients: {r['commands_per_s']:.0f} commands/s, "
            f"{r['server_cpu_ms_per_command']:.2f} ms server CPU/command "
            f"(+{r['server_cpu_after_ms_per_command']:.2f} ms after the phase), "
            f"{r.get('server_runqueue_wait_ms_per_command', 0):.2f} ms waiting for a core/command, {loop}"
            f"client CPU {r['client_cpu_s']:.1f} s of {r['seconds']:.1f} s, "
            f"worst p50 {worst['p50_ms']:.1f} ms, {sum(e['count'] for e in r['errors'])} protocol errors"
            + (f", sessions per process {r['sessions_per_worker']}" if name == "mailyard" else "")
            + "".join(f", probe {kind} p50 {v['p50_ms']:.2f} ms p99 {v['p99_ms']:.1f} ms"
                      for kind, v in r.get("probe", {}).items()))


def run(quick: bool = False, clients: tuple[int, ...] = (10, 50), commands: int | None = None,
        rounds: int = 1, dovecot_too: bool = True, seed: int = 9051, per_kind: int = 0) -> list[Result]:
    """The bench runner's entry (bench/__main__.py); also ``main`` below.
    ``per_kind`` > 0: after the mix, a phase of each command type alone
    (that many commands per client, servers alternating), for the server
    CPU per command of each type."""
    from . import dovecot
    from .corpus import corpus
    from .pop3 import password_hash

    per_client = commands or (60 if quick else 300)
    progress(f"building the INBOX ({INITIAL} messages) and the APPEND bodies")
    initial = corpus(INITIAL, seed=9052)
    bodies = messages()
    server = BenchServer(("imap",))
    ref: dovecot.Dovecot | None = None
    results: dict[str, list[dict]] = defaultdict(list)
    kinds: dict[tuple[str, int, str], dict] = {}
    try:
        server.setup()
        cfg = server.data / "config.toml"
        cfg.write_text(re.sub(r"^max_connections_per_ip = \d+$", "max_connections_per_ip = 5000",
                              cfg.read_text(), flags=re.M))
        from .imap import _fill

        _fill(server, initial)
        server.start()
        targets = [("mailyard", server.ports["imap"], server.pid)]
        _prepare_archive(server.ports["imap"])
        if dovecot_too and dovecot.available():
            progress("starting Dovecot with the same INBOX and password hash")
            ref = dovecot.Dovecot(("imap",), ALICE, password_hash(server, ALICE), USERS[ALICE], initial,
                                  extra="protocol imap {\n  mail_max_userip_connections = 1000\n}\n")
            ref.start()
            assert ref.proc is not None
            targets.append(("dovecot", ref.ports["imap"], ref.proc.pid))
            _prepare_archive(ref.ports["imap"])
            # Dovecot builds its index on first access: one warm-up pass
            asyncio.run(_run_once(ref.ports["imap"], ref.proc.pid, 2, 20, seed + 1, bodies))
        asyncio.run(_run_once(server.ports["imap"], server.pid, 2, 20, seed + 1, bodies))
        for rnd in range(rounds):
            for n in clients:
                for name, port, pid in targets:
                    progress(f"round {rnd + 1}/{rounds}: {name}, {n} clients x {per_client} commands")
                    r = asyncio.run(_run_once(port, pid, n, per_client, seed + rnd, bodies, probe=True))
                    results[f"{name}/{n}"].append(r)
                    progress(_fmt(name, r))
                    for e in r["errors"][:8]:
                        progress(f"   {e['count']:>5} x {e['command']}: {e['response']}")
                    for f in r["client_failures"][:3]:
                        progress(f"   client failed: {f}")
        for n in clients if per_kind else ():
            for kind, _w in MIX:
                for name, port, pid in targets:
                    r = asyncio.run(_run_once(port, pid, n, per_kind, seed, bodies, mix=[(kind, 1)]))
                    kinds[(name, n, kind)] = r
                    lat = r["latency"].get(kind, {"p50_ms": 0.0, "p99_ms": 0.0})
                    progress(f"{name} {n} clients, {kind} alone: {r['server_cpu_ms_per_command']:.2f} ms "
                             f"server CPU/command, {r['commands_per_s']:.0f} commands/s, "
                             f"p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.1f} ms, "
                             f"{sum(e['count'] for e in r['errors'])} protocol errors")
    finally:
        server.stop()
        if ref is not None:
            ref.stop()
    out: list[Result] = []
    for key, runs in results.items():
        name, n = key.split("/")
        label = "Dovecot (this run)" if name == "dovecot" else "mailyard"
        rates = [r["commands_per_s"] for r in runs]
        cpus = [r["server_cpu_ms_per_command"] for r in runs]
        detail = {"runs": runs, "commands_per_client": per_client, "initial_messages": INITIAL}
        out.append(Result("imap-load", f"{label} {n} clients commands/s", statistics.median(rates), "cmd/s",
                          f"range {min(rates):.0f}-{max(rates):.0f}", detail))
        out.append(Result("imap-load", f"  {label} {n} clients CPU/command", statistics.median(cpus), "ms",
                          f"range {min(cpus):.2f}-{max(cpus):.2f}"))
        waits = [r.get("server_runqueue_wait_ms_per_command", 0.0) for r in runs]
        out.append(Result("imap-load", f"  {label} {n} clients waiting for a core/command", statistics.median(waits),
                          "ms", "runnable server threads, no core free (schedstat)"))
        last = runs[-1]
        for kind, v in last["latency"].items():
            out.append(Result("imap-load", f"    {kind} p50 / p99", v["p50_ms"], "ms", f"p99 {v['p99_ms']:.1f} ms"))
        for kind, v in last.get("probe", {}).items():
            out.append(Result("imap-load", f"    probe {kind} (own process) p50 / p99", v["p50_ms"], "ms",
                              f"p99 {v['p99_ms']:.1f} ms, {v['count']} commands"))
        errors = sum(e["count"] for r in runs for e in r["errors"])
        out.append(Result("imap-load", f"  {label} {n} clients protocol errors", errors, "count",
                          "; ".join(f"{e['count']}x {e['command']}: {e['response']}" for e in last["errors"][:5])))
    for (name, n, kind), r in kinds.items():
        label = "Dovecot (this run)" if name == "dovecot" else "mailyard"
        out.append(Result("imap-load", f"  {label} {n} clients CPU/command, {kind} alone",
                          r["server_cpu_ms_per_command"], "ms", f"{r['commands_per_s']:.0f} cmd/s"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench imap-load", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50], help="client counts (default: 10 50)")
    parser.add_argument("--commands", type=int, default=None, help="commands per client per run (default 300)")
    parser.add_argument("--quick", action="store_true", help="60 commands per client, for a smoke run")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each (server, clients) pair, alternating")
    parser.add_argument("--seed", type=int, default=9051)
    parser.add_argument("--no-dovecot", action="store_true", help="mailyard only")
    parser.add_argument("--per-kind", type=int, default=0, metavar="N",
                        help="also run each command type alone, N commands per client (server CPU per type)")
    parser.add_argument("--output", default=str(Path(__file__).with_name("results-imap-load.json")))
    args = parser.parse_args(argv)
    results = run(quick=args.quick, clients=tuple(args.clients), commands=args.commands, rounds=args.rounds,
                  dovecot_too=not args.no_dovecot, seed=args.seed, per_kind=args.per_kind)
    width = max([len(r.name) for r in results] + [10])
    print()
    print(f"{'figure':<{width}} {'value':>10} {'unit':<6} reference")
    print("-" * (width + 40))
    for r in results:
        print(f"{r.name:<{width}} {r.value:>10.2f} {r.unit:<6} {r.reference}")
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "results": [asdict(r) for r in results],
    }
    Path(args.output).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
