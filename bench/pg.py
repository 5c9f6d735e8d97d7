"""The PostgreSQL store against SQLite, through real ``mailyard serve``
processes, and several nodes on one PostgreSQL database.

A private, durable PostgreSQL cluster (bench/pgcluster.py: fsync on, as in
production) serves every PostgreSQL figure; each run gets a fresh database.
The figures, each SQLite and PostgreSQL in alternating rounds (A, B, A, B,
...) of one run, since the machine is shared and absolute figures drift:

- SMTP accept, 1 KB messages from 20 clients (bench/smtp.py's client,
  Postfix's ``smtp-source`` when installed), a message counted once it is
  in the mailbox and its ``250`` was sent; server CPU per message (the
  ``mailyard serve`` process tree, plus the PostgreSQL cluster's for
  PostgreSQL) from /proc.
- The IMAP single-client figures of bench/imap.py (imaplib, one INBOX of
  2-10 KB messages) and APPENDs per second from 8 clients.
- The concurrent IMAP mix of bench/imap_load.py with 10 clients.
- 1, 2 and 3 nodes (``mailyard serve`` with ``workers = 1`` on 127.0.0.1,
  127.0.0.2, 127.0.0.3, one database): SMTP accept (the 20 clients spread
  round robin over the nodes) and the IMAP mix (10 clients, round robin).
  Two cores run the nodes, the database and the clients, so this shows
  the shape of the scaling, not what more machines would give.
- Cross-node IDLE: a session IDLEs on node A while another APPENDs through
  node B; the time from the APPEND being sent to ``* n EXISTS`` on node A
  (LISTEN/NOTIFY between the nodes), p50 and p99, with the same through
  node A itself as the reference.

    python -m bench pg [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import statistics
import threading
import time
from collections.abc import Iterator

from .common import USERS, BenchServer, Result, free_port, progress
from .imap_load import tree_cpu
from .pgcluster import PgCluster, pg_bindir

ALICE = "alice@example.test"
BACKENDS = ("sqlite", "postgresql")
NODE_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


class Server(BenchServer):
    """A ``mailyard serve`` on the SQLite store (``dsn`` None) or on the
    PostgreSQL database ``dsn``; ``seed``: add the domain and the users
    (once per database: a second node finds them there)."""

    def __init__(self, services: tuple[str, ...], dsn: str | None = None, host: str = "127.0.0.1",
                 workers: int | None = None, seed: bool = True) -> None:
        super().__init__(services)
        self.dsn = dsn
        self.host = host
        self.workers = workers
        self.seed = seed
        self.ports = {name: free_port(host) for name in services}

    def setup(self) -> None:
        self.mailyard("init", "--domain", "example.test")
        cfg = self.data / "config.toml"
        text = cfg.read_text()
        text = re.sub(r"^max_connections_per_ip = \d+$", "max_connections_per_ip = 5000", text, flags=re.M)
        text = re.sub(r'^bind = ".*"$', f'bind = "{self.host}"', text, flags=re.M)
        if self.workers is not None:
            text = re.sub(r"^workers = \d+$", f"workers = {self.workers}", text, flags=re.M)
        if self.dsn is not None:
            text = re.sub(r'^backend = ".*"$', 'backend = "postgresql"', text, flags=re.M)
            text = re.sub(r'^dsn = ".*"$', f'dsn = "{self.dsn}"', text, flags=re.M)
        cfg.write_text(text)
        if self.seed:
            if self.dsn is not None:
                self.mailyard("domain", "add", "example.test")
            for address, password in USERS.items():
                self.mailyard("user", "add", address, "--password-stdin", stdin=password + "\n")
        self.configure()
        if self.workers is not None:  # configure() may have set MAILYARD_BENCH_WORKERS's value
            cfg.write_text(re.sub(r"^workers = \d+$", f"workers = {self.workers}", cfg.read_text(), flags=re.M))

    def open_store(self, bulk: bool = False):  # noqa: ANN201
        """The server's store, opened from this process (before ``start``).
        ``bulk``: commits need not wait for the disk (a bench's fill only)."""
        from mailyard.config import StoreConfig

        if self.dsn is None:
            from mailyard.store.sqlite import SQLiteStore

            return SQLiteStore(self.data, StoreConfig(fsync=not bulk))
        from mailyard.store.postgresql import PostgreSQLStore

        dsn = self.dsn + ("?options=-c%20synchronous_commit%3Doff" if bulk else "")
        return PostgreSQLStore(dsn, StoreConfig())


def count_inbox(server: Server) -> int:
    """Messages in alice's mailboxes (from the store's own tables)."""
    sql = ("SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
           " JOIN accounts a ON a.id = b.account_id WHERE a.address = 'alice@example.test' AND m.mailbox_id > 0")
    if server.dsn is None:
        import sqlite3

        conn = sqlite3.connect(server.data / "index.sqlite3")
        try:
            return conn.execute(sql).fetchone()[0]
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(server.dsn) as conn:
        return conn.execute(sql).fetchone()[0]


def fill(server: Server, msgs: list[bytes]) -> None:
    """Deliver ``msgs`` to alice's INBOX through the store API, with its
    derived data, before the server starts."""
    from mailyard.store.api import DeliveryTarget

    async def go() -> None:
        store = server.open_store(bulk=True)
        try:
            account = await store.get_account(ALICE)
            assert account is not None
            box = await store.get_mailbox(account.id, "INBOX")
            assert box is not None
            queue = list(reversed(msgs))

            async def worker() -> None:
                while queue:
                    await store.deliver(queue.pop(), [DeliveryTarget(box.id)])

            await asyncio.gather(*(worker() for _ in range(16)))
            if server.dsn is None:
                from .pop3 import _unindexed

                while _unindexed(server):
                    await asyncio.sleep(0.2)
            await store.get_derived(box, list(range(1, len(msgs) + 1)))
        finally:
            await store.close()

    asyncio.run(go())


@contextlib.contextmanager
def backend_server(cluster: PgCluster, backend: str, services: tuple[str, ...],
                   msgs: list[bytes] | None = None, workers: int | None = None) -> Iterator[Server]:
    server = Server(services, cluster.new_dsn() if backend == "postgresql" else None, workers=workers)
    try:
        server.setup()
        if msgs:
            fill(server, msgs)
        server.start()
        yield server
    finally:
        server.stop()


def cpu_pids(server: Server, cluster: PgCluster) -> list[int]:
    return [server.pid] + ([cluster.pid()] if server.dsn is not None else [])


def cpu_of(pids: list[int]) -> float:
    return sum(tree_cpu(p) for p in pids)


def smtp_send(targets: list[tuple[str, int]], count: int, size: int, sessions: int) -> float:
    """Seconds for ``count`` messages from ``sessions`` clients spread round
    robin over ``targets`` (one load generator per target, all at once)."""
    from .smtp import _asyncio_source, _smtp_source

    use_source = bool(shutil.which("smtp-source") or shutil.which("smtp-source", path="/usr/sbin"))
    n = len(targets)
    shares = [(sessions // n + (k < sessions % n), count // n + (k < count % n)) for k in range(n)]
    errors: list[BaseException] = []

    def one(k: int) -> None:
        (host, port), (s, c) = targets[k], shares[k]
        try:
            if use_source:
                _smtp_source(port, c, size, s, host)
            else:
                asyncio.run(_asyncio_source(port, c, size, s, host))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"SMTP load failed: {errors[0]!r}") from errors[0]
    return elapsed


def smtp_accept(cluster: PgCluster, quick: bool) -> list[Result]:
    count, size, sessions = (400 if quick else 2000), 1024, 20
    rounds = 2 if quick else 3
    rates: dict[str, list[float]] = {b: [] for b in BACKENDS}
    cpus: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for rnd in range(rounds):
        for backend in BACKENDS:
            with backend_server(cluster, backend, ("smtp",)) as server:
                pids = cpu_pids(server, cluster)
                cpu0 = cpu_of(pids)
                elapsed = smtp_send([("127.0.0.1", server.ports["smtp"])], count, size, sessions)
                cpu = cpu_of(pids) - cpu0
                stored = count_inbox(server)
                if stored != count:
                    raise RuntimeError(f"{backend}: {count} messages sent, {stored} stored")
            rates[backend].append(count / elapsed)
            cpus[backend].append(1000 * cpu / count)
            progress(f"round {rnd + 1}/{rounds} SMTP accept on {backend}: {count / elapsed:.0f} msgs/s, "
                     f"{1000 * cpu / count:.2f} ms server CPU/msg, all {count} stored")
    out = []
    for backend in BACKENDS:
        out.append(Result("pg", f"SMTP accept 1 KB, 20 clients, {backend}", statistics.median(rates[backend]),
                          "msgs/s", f"range {min(rates[backend]):.0f}-{max(rates[backend]):.0f}",
                          {"all": rates[backend], "messages": count}))
        out.append(Result("pg", f"  server CPU per message, {backend}", statistics.median(cpus[backend]), "ms",
                          "mailyard" + (" + PostgreSQL" if backend == "postgresql" else ""),
                          {"all": cpus[backend]}))
    return out


def imap_single(cluster: PgCluster, quick: bool) -> list[Result]:
    from .imap import _appends, corpus, single_client_figures

    count = 1_000 if quick else 10_000
    fetches = 200 if quick else 1_000
    progress(f"IMAP single client: filling both INBOXes with {count} messages of 2-10 KB")
    msgs = corpus(count)
    import random

    rng = random.Random(3501)
    which = [rng.randint(1, count) for _ in range(fetches)]
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(backend_server(cluster, b, ("imap",), msgs)) for b in BACKENDS]
        progress("IMAP single client: the figures, alternating SQLite, PostgreSQL")
        values = single_client_figures([s.ports["imap"] for s in servers], which, runs=3 if quick else 5)
        appends: dict[str, list[float]] = {b: [] for b in BACKENDS}
        for _ in range(2 if quick else 3):
            for backend, server in zip(BACKENDS, servers, strict=True):
                appends[backend].append(_appends(server.ports["imap"], 8, 10 if quick else 40))
    labels = {"login": "LOGIN+SELECT", "select": "SELECT alone", "flags": "FETCH 1:* (FLAGS)",
              "env": "UID FETCH 1:* (ENVELOPE)", "subj": "SEARCH SUBJECT x", "body": "SEARCH BODY x",
              "rand": f"{fetches} x FETCH n BODY.PEEK[]"}
    out = []
    for name, label in labels.items():
        for k, backend in enumerate(BACKENDS):
            v = values[name][k]
            out.append(Result("pg", f"IMAP {label}, {backend}", statistics.median(v), "s",
                              f"{count} messages; range {min(v):.3f}-{max(v):.3f}", {"all": v}))
    for backend in BACKENDS:
        v = appends[backend]
        out.append(Result("pg", f"IMAP APPEND (8 clients), {backend}", statistics.median(v), "msg/s",
                          f"range {min(v):.0f}-{max(v):.0f}", {"all": v}))
    progress("IMAP single client: " + ", ".join(f"{r.name} {r.value:.3f}" for r in out))
    return out


def _mix_rows(label: str, runs: list[dict], ref: str = "") -> list[Result]:
    rates = [r["commands_per_s"] for r in runs]
    cpus = [r["server_cpu_ms_per_command"] for r in runs]
    errors = sum(e["count"] for r in runs for e in r["errors"])
    worst = max(runs[-1]["latency"].values(), key=lambda v: v["p99_ms"])
    return [
        Result("pg", f"{label} commands/s", statistics.median(rates), "cmd/s",
               f"range {min(rates):.0f}-{max(rates):.0f}{'; ' + ref if ref else ''}", {"runs": runs}),
        Result("pg", f"  {label} server CPU/command", statistics.median(cpus), "ms",
               f"range {min(cpus):.2f}-{max(cpus):.2f}; worst p99 {worst['p99_ms']:.0f} ms, "
               f"{errors} protocol errors"),
    ]


def imap_mix(cluster: PgCluster, quick: bool) -> list[Result]:
    from .corpus import corpus
    from .imap_load import INITIAL, _prepare_archive, _run_once, messages

    per_client = 60 if quick else 300
    clients = 10
    initial = corpus(INITIAL, seed=9052)
    bodies = messages()
    runs: dict[str, list[dict]] = {b: [] for b in BACKENDS}
    with contextlib.ExitStack() as stack:
        progress(f"IMAP mix: both INBOXes with {INITIAL} messages")
        servers = [stack.enter_context(backend_server(cluster, b, ("imap",), initial)) for b in BACKENDS]
        for server in servers:
            _prepare_archive(server.ports["imap"])
            asyncio.run(_run_once(server.ports["imap"], server.pid, 2, 20, 9052, bodies))
        for rnd in range(2 if quick else 3):
            for backend, server in zip(BACKENDS, servers, strict=True):
                r = asyncio.run(_run_once(server.ports["imap"], server.pid, clients, per_client, 9051 + rnd,
                                          bodies, cpu_pids=cpu_pids(server, cluster)[1:]))
                runs[backend].append(r)
                progress(f"IMAP mix on {backend}, {clients} clients: {r['commands_per_s']:.0f} commands/s, "
                         f"{r['server_cpu_ms_per_command']:.2f} ms server CPU/command, "
                         f"{sum(e['count'] for e in r['errors'])} protocol errors")
    out = []
    for backend in BACKENDS:
        out += _mix_rows(f"IMAP mix {clients} clients, {backend}", runs[backend],
                         "CPU: mailyard" + (" + PostgreSQL" if backend == "postgresql" else ""))
    return out


@contextlib.contextmanager
def nodes(cluster: PgCluster, n: int, msgs: list[bytes]) -> Iterator[list[Server]]:
    """``n`` nodes (workers = 1) on 127.0.0.1.. sharing one fresh database
    whose INBOX holds ``msgs``."""
    dsn = cluster.new_dsn()
    started: list[Server] = []
    try:
        for k in range(n):
            node = Server(("smtp", "imap"), dsn, host=NODE_HOSTS[k], workers=1, seed=k == 0)
            started.append(node)
            node.setup()
            if k == 0 and msgs:
                fill(node, msgs)
            node.start()
        yield started
    finally:
        for node in started:
            node.stop()


def node_scaling(cluster: PgCluster, quick: bool) -> list[Result]:
    from .corpus import corpus
    from .imap_load import INITIAL, _prepare_archive, _run_once, messages

    count, per_client, clients = (300 if quick else 2000), (60 if quick else 300), 10
    initial = corpus(INITIAL, seed=9052)
    bodies = messages()
    out: list[Result] = []
    base_smtp = base_mix = 0.0
    for n in (1, 2, 3):
        with nodes(cluster, n, initial) as group:
            pids = [node.pid for node in group] + [cluster.pid()]
            imap = [(node.host, node.ports["imap"]) for node in group]
            _prepare_archive(imap[0][1], imap[0][0])
            asyncio.run(_run_once(0, group[0].pid, 2, 20, 9052, bodies, servers=imap))
            r = asyncio.run(_run_once(0, group[0].pid, clients, per_client, 9051, bodies, servers=imap,
                                      cpu_pids=pids[1:]))
            progress(f"{n} node(s): IMAP mix {r['commands_per_s']:.0f} commands/s, "
                     f"{r['server_cpu_ms_per_command']:.2f} ms CPU/command (nodes + PostgreSQL), "
                     f"{sum(e['count'] for e in r['errors'])} protocol errors")
            before = count_inbox(group[0])
            cpu0 = cpu_of(pids)
            elapsed = smtp_send([(node.host, node.ports["smtp"]) for node in group], count, 1024, 20)
            cpu = cpu_of(pids) - cpu0
            stored = count_inbox(group[0]) - before
            if stored != count:
                raise RuntimeError(f"{n} nodes: {count} messages sent, {stored} stored")
            rate = count / elapsed
            progress(f"{n} node(s): SMTP accept {rate:.0f} msgs/s, {1000 * cpu / count:.2f} ms CPU/msg")
        base_smtp = base_smtp or rate
        base_mix = base_mix or r["commands_per_s"]
        out.append(Result("pg", f"{n} node(s): SMTP accept 1 KB, 20 clients", rate, "msgs/s",
                          f"x{rate / base_smtp:.2f} of 1 node; CPU {1000 * cpu / count:.2f} ms/msg (nodes + PostgreSQL)",
                          {"messages": count, "seconds": elapsed}))
        out += _mix_rows(f"{n} node(s): IMAP mix {clients} clients", [r],
                         f"x{r['commands_per_s'] / base_mix:.2f} of 1 node")
    return out


async def _idle_samples(idle_at: tuple[str, int], append_at: tuple[str, int], samples: int) -> list[float]:
    """Seconds from an APPEND sent through ``append_at`` to ``* n EXISTS``
    on a session IDLE through ``idle_at``."""
    async def login(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        r, w = await asyncio.open_connection(host, port)
        await r.readline()
        w.write(f'a LOGIN {ALICE} "{USERS[ALICE]}"\r\nb SELECT INBOX\r\n'.encode())
        while not (await r.readline()).startswith(b"b "):
            pass
        return r, w

    ir, iw = await login(*idle_at)
    ar, aw = await login(*append_at)
    msg = (b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: idle probe\r\n"
           b"Message-ID: <probe@example.test>\r\n\r\nprobe\r\n")
    out = []
    try:
        for i in range(samples):
            iw.write(b"i%d IDLE\r\n" % i)
            while not (await ir.readline()).startswith(b"+ "):
                pass
            start = time.perf_counter()
            aw.write(b"p%d APPEND INBOX {%d+}\r\n" % (i, len(msg)) + msg + b"\r\n")
            while True:
                line = await asyncio.wait_for(ir.readline(), 30)
                if line.endswith(b" EXISTS\r\n"):
                    out.append(time.perf_counter() - start)
                    break
            while not (await ar.readline()).startswith(b"p%d " % i):
                pass
            iw.write(b"DONE\r\n")
            while not (await ir.readline()).startswith(b"i%d " % i):
                pass
    finally:
        for w in (iw, aw):
            w.write(b"z LOGOUT\r\n")
            w.close()
    return out


def idle_latency(cluster: PgCluster, quick: bool) -> list[Result]:
    samples = 20 if quick else 50
    with nodes(cluster, 2, []) as group:
        a, b = ((node.host, node.ports["imap"]) for node in group)
        cross: list[float] = []
        same: list[float] = []
        for _ in range(2):  # alternating halves
            cross += asyncio.run(_idle_samples(a, b, samples // 2))
            same += asyncio.run(_idle_samples(a, a, samples // 2))
    out = []
    for label, v, ref in (("cross-node IDLE: APPEND on B to EXISTS on A", cross, "LISTEN/NOTIFY between nodes"),
                          ("  same node: APPEND on A to EXISTS on A", same, "reference")):
        v.sort()
        p99 = v[min(len(v) - 1, int(0.99 * len(v)))]
        out.append(Result("pg", f"{label} p50", 1000 * statistics.median(v), "ms",
                          f"p99 {1000 * p99:.1f} ms, {len(v)} samples; {ref}", {"all_ms": [1000 * x for x in v]}))
        progress(f"{label}: p50 {1000 * statistics.median(v):.1f} ms, p99 {1000 * p99:.1f} ms")
    return out


def run(quick: bool = False) -> list[Result]:
    bindir = pg_bindir()
    if bindir is None:
        progress("PostgreSQL binaries (initdb, pg_ctl) not found: install Debian's postgresql; skipped")
        return []
    progress(f"starting a private durable PostgreSQL cluster ({bindir})")
    cluster = PgCluster(bindir, durable=True)
    results: list[Result] = []
    try:
        for part in (smtp_accept, imap_single, imap_mix):
            results += part(cluster, quick)
        for part in (node_scaling, idle_latency):
            results += part(cluster, quick)
    finally:
        cluster.stop()
    return results
