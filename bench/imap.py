"""IMAP with Python's imaplib as the client (issue #4 figures): an INBOX of
10,000 messages of 2-10 KB, a fifth of them multipart with an attachment.

Figures (medians of several runs): LOGIN+SELECT, ``FETCH 1:* (FLAGS)``,
``UID FETCH 1:* (ENVELOPE)``, ``SEARCH SUBJECT x``, ``SEARCH BODY x``, 1,000
random ``FETCH n BODY.PEEK[]`` one after another; APPENDs per second (8
concurrent clients, every APPEND durable); and the server's memory (PSS) with
1,000 logged-in connections sitting in IDLE on a selected INBOX, over the
PSS of the server before any login (what serving them costs in all), and
over the PSS after two logins (first-login costs left out); `_idle_memory`.

Dovecot 2.3 on the development machine, same client and corpus: 0.028 s,
0.052 s, 0.080 s, 0.026 s, 0.75 s, 0.17 s; 214 APPENDs/s; ~500 KB per idle
connection. The machine here is shared, so when Dovecot is installed it runs
in the same benchmark with the same corpus and password scheme (bench/
dovecot.py), the same imaplib calls alternate between the two servers, and
each figure gets a row "Dovecot (this run)" (APPEND and memory are not
compared: Dovecot forks a process per connection). The INBOX is filled through the store API before the server
starts, and the derived data (ENVELOPE etc.) is computed first, as it is
after normal delivery.

LOGIN+SELECT is also given split: LOGIN verifies an argon2id hash (~45 ms by
design, auth/passwords.py), SELECT alone is the mailbox work.

The client floor: imaplib itself is slow (it parses every response line with
regular expressions), so each FETCH figure is also measured against a replay
server that answers instantly with the very bytes mailyard sent. The
difference between a figure and its floor is what the server costs; the
floor is what no server can go below with this client on this machine at
this moment (the machine is shared, so compare figures of one run).
"""

from __future__ import annotations

import asyncio
import gc
import imaplib
import multiprocessing
import random
import re
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

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


def corpus(count: int) -> list[bytes]:
    rng = random.Random(9051)
    return [_message(rng, n) for n in range(count)]


def _fill(server: BenchServer, msgs: list[bytes]) -> None:
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
            for start in range(0, count, 500):
                await asyncio.gather(
                    *(store.deliver(m, [DeliveryTarget(box.id)]) for m in msgs[start : start + 500])
                )
            while _unindexed(server):
                await asyncio.sleep(0.2)
            await store.get_derived(box, list(range(1, count + 1)))  # derive any leftovers
        finally:
            await store.close()

    asyncio.run(go())


def _login(port: int, user: str = ALICE) -> imaplib.IMAP4:
    c = imaplib.IMAP4("127.0.0.1", port, timeout=120)
    c.login(user, USERS[user])
    return c


def _median(fn, runs: int = RUNS) -> tuple[float, list[float]]:  # noqa: ANN001
    """Median of ``runs`` measurements. Before each one (outside its timing)
    this client process collects its garbage: the 1,000 IDLE connections
    leave thousands of cycles here, and a full collection landing inside
    imaplib's parsing of one server's answer added up to 150 ms to that
    server's figure."""
    values = []
    for _ in range(runs):
        gc.collect()
        values.append(fn())
    return statistics.median(values), values


def _login_select(port: int) -> float:
    start = time.perf_counter()
    c = _login(port)
    typ, _ = c.select("INBOX")
    elapsed = time.perf_counter() - start
    assert typ == "OK"
    c.logout()
    return elapsed


def _timed(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _timed_command(c: imaplib.IMAP4, fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    typ, data = fn(c)
    elapsed = time.perf_counter() - start
    assert typ == "OK", data
    return elapsed


def _capture(port: int, commands: list[bytes]) -> list[bytes]:
    """The exact bytes mailyard answers to each command (after LOGIN and
    EXAMINE INBOX), tagged responses included."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    f = sock.makefile("rwb")
    f.readline()

    def say(tag: bytes, line: bytes) -> bytes:
        f.write(tag + b" " + line + b"\r\n")
        f.flush()
        out = bytearray()
        while True:
            got = f.readline()
            out += got
            if got.startswith(tag + b" "):
                return bytes(out)
            if got.endswith(b"}\r\n"):  # a literal follows
                n = int(got[got.rindex(b"{") + 1 : -3])
                out += f.read(n)

    say(b"c1", f"LOGIN {ALICE} {USERS[ALICE]}".encode())
    say(b"c2", b"EXAMINE INBOX")
    out = [say(b"R", cmd) for cmd in commands]
    sock.close()
    return out


def _replay_server(answers: dict[bytes, list[bytes]], ready: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Answer each command line with the captured bytes (its tag swapped in),
    in order per command; LOGIN/SELECT/LOGOUT get a plain OK."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    ready.put(srv.getsockname()[1])
    conn, _ = srv.accept()
    f = conn.makefile("rb")
    conn.sendall(b"* OK [CAPABILITY IMAP4rev1] replay\r\n")
    cursor = dict.fromkeys(answers, 0)
    for line in f:
        tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
        replies = answers.get(rest)
        if replies is None:
            conn.sendall(tag + b" OK done\r\n")
            if rest.upper().startswith(b"LOGOUT"):
                break
            continue
        data = replies[cursor[rest] % len(replies)]
        cursor[rest] += 1
        cut = data.rindex(b"\r\nR ") + 2 if b"\r\nR " in data else 0  # the tagged line
        conn.sendall(data[:cut] + tag + data[cut + 1 :])
    conn.close()


def _floors(port: int, which: list[int]) -> dict[str, tuple[float, list[float]]]:
    """The same imaplib calls against a replay of mailyard's own answers."""
    flags_cmd, env_cmd = b"FETCH 1:* (FLAGS)", b"UID FETCH 1:* (ENVELOPE)"
    peeks = [b"FETCH %d (BODY.PEEK[])" % i for i in which]
    captured = _capture(port, [flags_cmd, env_cmd, *peeks])
    answers: dict[bytes, list[bytes]] = {flags_cmd: [captured[0]], env_cmd: [captured[1]]}
    for cmd, data in zip(peeks, captured[2:], strict=True):
        answers.setdefault(cmd, []).append(data)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    proc = ctx.Process(target=_replay_server, args=(answers, ready), daemon=True)
    proc.start()
    try:
        c = imaplib.IMAP4("127.0.0.1", ready.get(timeout=60), timeout=120)
        c.login(ALICE, "x")
        c.state = "SELECTED"  # the replay server keeps no state
        out = {
            "flags": _median(lambda: _timed_command(c, lambda c: c.fetch("1:*", "(FLAGS)"))),
            "env": _median(lambda: _timed_command(c, lambda c: c.uid("FETCH", "1:*", "(ENVELOPE)"))),
        }

        def peek_all() -> float:
            start = time.perf_counter()
            for i in which:
                typ, _ = c.fetch(str(i), "(BODY.PEEK[])")
                assert typ == "OK"
            return time.perf_counter() - start

        out["rand"] = _median(peek_all, 3)
        c.logout()
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    return out


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
    # Logins of one account from one address: at most as many at once as
    # the throttle lets run in flight for an account (auth/throttle.py
    # account_max_failures, 10), so none waits for a turn (BUSY_WAIT) on a
    # loaded machine; the argon2 executor runs 2 at a time anyway.
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            await r.readline()
            w.write(f"a LOGIN {BOB} {USERS[BOB]}\r\nb SELECT INBOX\r\nc IDLE\r\n".encode())
            while not (line := await r.readline()).startswith(b"+ "):
                if not line or line.startswith((b"a NO", b"a BAD", b"b NO", b"b BAD", b"* BYE")):
                    raise RuntimeError(f"IDLE client {i} was refused: {line!r}")
            return r, w

    return await asyncio.gather(*(one(i) for i in range(n)))


def _settled_pss(pid: int, deadline: float = 15.0) -> int:
    """The server's PSS once it has finished starting: the listening
    sockets accept before the workers are up (the supervisor binds them
    first), so a read right after the port opens can catch workers halfway
    through their start. Read every half second until two reads in a row
    agree within 1 %."""
    last = rss_kib(pid)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        time.sleep(0.5)
        now = rss_kib(pid)
        if abs(now - last) <= 0.01 * last:
            return now
        last = now
    return last


def _idle_memory(server: BenchServer, n: int) -> dict[str, float]:
    """PSS (KiB, `rss_kib`) of the idle server before
    any login (``before``), after two logins at once (``warm``) and with
    ``n`` connections that each LOGIN (argon2id), SELECT INBOX and IDLE
    (``after``), and the extra PSS per connection against each baseline.

    The figure against ``before`` is the one a real deployment sees: all
    that serving the logged-in, idling clients costs, login machinery
    included. The figure against ``warm`` leaves out what any first login
    costs once (imports, lazily built state). The argon2 working buffers
    kept for a burst of logins (auth/passwords.py) are unmapped once no
    verification has ended for ARGON2_POOL_IDLE_SECONDS, so ``after`` is
    read when that time has passed since the last login; ``peak`` is the
    PSS while the last clients log in."""
    from mailyard.auth.passwords import ARGON2_POOL_IDLE_SECONDS

    settle = ARGON2_POOL_IDLE_SECONDS + 2
    before = _settled_pss(server.pid)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: _login(server.ports["imap"], BOB).logout(), range(2)))
    time.sleep(settle)
    warm = rss_kib(server.pid)
    result: dict[str, float] = {}

    async def go() -> None:
        conns = await _idle_clients(server.ports["imap"], n)
        result["peak"] = rss_kib(server.pid)
        await asyncio.sleep(settle)
        result["after"] = rss_kib(server.pid)
        for _r, w in conns:
            w.write(b"DONE\r\nd LOGOUT\r\n")
        for _r, w in conns:
            w.close()

    asyncio.run(go())
    after = result["after"]
    return {"before": before, "warm": warm, "after": after, "peak": result["peak"],
            "each": (after - before) / n, "each_warm": (after - warm) / n}


def single_client_figures(ports: list[int], which: list[int], runs: int = RUNS,
                          hosts: list[str] | None = None) -> dict[str, list[list[float]]]:
    """The single-client figures (seconds) on each server of ``ports``
    holding the same INBOX: ``values[name][k]`` lists the runs on server
    ``k``. One warm-up pass on each server (Dovecot builds its index and
    cache on first access), then the measured runs alternate between the
    servers (A, B, A, B, ...), so a load from elsewhere on the shared
    machine falls on all of them alike. ``which``: the sequence numbers of
    the random ``FETCH n BODY.PEEK[]``."""
    hosts = hosts or ["127.0.0.1"] * len(ports)

    def login(k: int) -> imaplib.IMAP4:
        c = imaplib.IMAP4(hosts[k], ports[k], timeout=120)
        c.login(ALICE, USERS[ALICE])
        return c

    def login_select(k: int) -> float:
        start = time.perf_counter()
        c = login(k)
        typ, _ = c.select("INBOX")
        elapsed = time.perf_counter() - start
        assert typ == "OK"
        c.logout()
        return elapsed

    conns = [login(k) for k in range(len(ports))]
    for c in conns:
        c.select("INBOX", readonly=True)

    def random_fetches(c: imaplib.IMAP4) -> float:
        start = time.perf_counter()
        for i in which:
            typ, _ = c.fetch(str(i), "(BODY.PEEK[])")
            assert typ == "OK"
        return time.perf_counter() - start

    figures = {
        "login": login_select,
        "select": lambda k: _timed_command(conns[k], lambda c: c.select("INBOX", readonly=True)),
        "login_only": lambda k: _timed(lambda: login(k).logout()),
        "flags": lambda k: _timed_command(conns[k], lambda c: c.fetch("1:*", "(FLAGS)")),
        "env": lambda k: _timed_command(conns[k], lambda c: c.uid("FETCH", "1:*", "(ENVELOPE)")),
        "subj": lambda k: _timed_command(conns[k], lambda c: c.search(None, "SUBJECT", "foxtrot")),
        "body": lambda k: _timed_command(conns[k], lambda c: c.search(None, "BODY", "hotel")),
        "rand": lambda k: random_fetches(conns[k]),
    }
    for k in range(len(ports)):
        for name, fig in figures.items():
            try:
                fig(k)
            except Exception as exc:
                raise RuntimeError(f"warm-up {name} on server {k}") from exc
    values: dict[str, list[list[float]]] = {name: [[] for _ in ports] for name in figures}
    for name, fig in figures.items():
        for _ in range(max(1, runs * 3 // 5) if name == "rand" else runs):
            for k in range(len(ports)):
                gc.collect()  # as in _median
                values[name][k].append(fig(k))
    for c in conns:
        c.logout()
    return values


def run(quick: bool = False) -> list[Result]:
    from . import dovecot
    from .pop3 import password_hash

    count = 1_000 if quick else MESSAGES
    fetches = 200 if quick else 1_000
    idle = 100 if quick else 1_000
    server = BenchServer(("imap",))
    ref: dovecot.Dovecot | None = None
    try:
        server.setup()
        cfg = server.data / "config.toml"
        cfg.write_text(re.sub(r"^max_connections_per_ip = \d+$", "max_connections_per_ip = 5000",
                              cfg.read_text(), flags=re.M))
        progress(f"filling INBOX with {count} messages of 2-10 KB (a fifth multipart)")
        msgs = corpus(count)
        _fill(server, msgs)
        server.start()
        port = server.ports["imap"]
        mem = _idle_memory(server, idle)
        progress(f"idle server {mem['before'] / 1024:.1f} MiB before any login, {mem['warm'] / 1024:.1f} MiB "
                 f"after 2; {idle} IDLE connections {mem['after'] / 1024:.1f} MiB (peak {mem['peak'] / 1024:.1f}"
                 f" MiB during the logins): {mem['each']:.1f} KiB each against the server before any login, "
                 f"{mem['each_warm']:.1f} KiB against it after 2 logins")
        ports = [port]
        if dovecot.available():
            progress("starting Dovecot with the same corpus and password hash")
            ref = dovecot.Dovecot(("imap",), ALICE, password_hash(server, ALICE), USERS[ALICE], msgs)
            ref.start()
            ports.append(ref.ports["imap"])
        rng = random.Random(3501)
        which = [rng.randint(1, count) for _ in range(fetches)]
        values = single_client_figures(ports, which)
        med = {name: [statistics.median(v) for v in per] for name, per in values.items()}
        progress("client floor: the same imaplib calls against a replay of mailyard's answers")
        floor = _floors(port, which)
        appends = _appends(port, 8, 25 if quick else 100)
    finally:
        server.stop()
        if ref is not None:
            ref.stop()
    detail = {"messages": count, "runs": RUNS}
    progress(f"login+select {med['login'][0]:.3f} s (login {med['login_only'][0]:.3f} s, select "
             f"{med['select'][0]:.3f} s), flags {med['flags'][0]:.3f} s (floor {floor['flags'][0]:.3f}), "
             f"envelope {med['env'][0]:.3f} s (floor {floor['env'][0]:.3f}), subject {med['subj'][0]:.3f} s, "
             f"body {med['body'][0]:.3f} s, {fetches} fetches {med['rand'][0]:.3f} s "
             f"(floor {floor['rand'][0]:.3f}), {appends:.0f} APPEND/s")
    if ref is not None:
        progress("Dovecot: " + ", ".join(f"{name} {v[1]:.3f} s" for name, v in med.items()))

    def rows(name: str, label: str, static: str, *extra: Result) -> list[Result]:
        out = [Result("imap", label, med[name][0], "s", static, {**detail, "all": values[name][0]})]
        if ref is not None:
            out.append(Result("imap", "  Dovecot (this run)", med[name][1], "s", dovecot.label(ref),
                              {**detail, "all": values[name][1]}))
        elif static:
            out.append(Result("imap", "  Dovecot (static)", float(static.split()[1]), "s", dovecot.label(None)))
        return out + list(extra)

    return [
        *rows("login", "LOGIN+SELECT", "Dovecot 0.028 s"),
        *rows("login_only", "  LOGIN alone (argon2id)", ""),
        *rows("select", "  SELECT alone", ""),
        *rows("flags", "FETCH 1:* (FLAGS)", "Dovecot 0.052 s",
              Result("imap", "  client floor", floor["flags"][0], "s", "imaplib vs replayed answers",
                     {"all": floor["flags"][1]})),
        *rows("env", "UID FETCH 1:* (ENVELOPE)", "Dovecot 0.080 s",
              Result("imap", "  client floor", floor["env"][0], "s", "imaplib vs replayed answers",
                     {"all": floor["env"][1]})),
        *rows("subj", "SEARCH SUBJECT x", "Dovecot 0.026 s"),
        *rows("body", "SEARCH BODY x", "Dovecot 0.75 s; target < 0.1 s"),
        *rows("rand", f"{fetches} x FETCH n BODY.PEEK[]", "Dovecot 0.17 s",
              Result("imap", "  client floor", floor["rand"][0], "s", "imaplib vs replayed answers",
                     {"all": floor["rand"][1]})),
        Result("imap", "APPEND (8 clients, durable)", appends, "msg/s", "Dovecot 214/s; target >= 400/s", detail),
        Result("imap", "idle server PSS", mem["before"] / 1024, "MiB", "before any login; target < 100 MB", detail),
        Result("imap", f"PSS per IDLE connection ({idle})", mem["each"], "KiB",
               "LOGIN+SELECT+IDLE vs the server before any login; target <= 15 KiB", detail),
        Result("imap", "  vs the server after 2 logins", mem["each_warm"], "KiB",
               "first-login costs left out; Dovecot ~500 KiB", detail),
        Result("imap", f"  PSS with {idle} connections", mem["after"] / 1024, "MiB",
               f"during the logins {mem['peak'] / 1024:.1f} MiB (argon2 buffers kept)", detail),
    ]
