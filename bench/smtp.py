"""SMTP acceptance throughput: 20 concurrent clients, one message per
connection, 1 KB and 100 KB messages, fsync on; a message counts once it is in
the recipient's mailbox and its ``250`` was sent. Then the same with 100 and
1,000 concurrent clients: every connection must be served (no refusal, no
error reply, no lost message: the mailbox is counted after each run).

All clients connect from 127.0.0.1, so the bench server's per-address cap
(``[limits] max_connections_per_ip``, 100 by default: a defence against one
host taking every slot) is raised to the total cap, 2,000 (bench/common.py;
each worker gets its share of both, so 1,000 clients spread unevenly over
two workers still fit).

The load generator is Postfix's ``smtp-source`` when installed (the standard
tool, and C, so it leaves the CPU to the server), else an asyncio generator.
When Postfix is installed and the bench runs as root, a private Postfix
(bench/postfix.py) gets the same runs from the same tool right after
mailyard, each figure with a row "Postfix (this run)" and the ratio of the
two. Every figure is the median of several rounds (one with ``--quick``),
mailyard's and Postfix's runs alternating: single runs on this kind of shared
machine were seen to vary by a factor of 1.5 within minutes, for both
servers alike. The two figures with 20 clients, which the targets name, take
five rounds; those with 100 and 1,000 clients, three. Each round's figure is
kept in the JSON.

Each row also gives the server's CPU per message (user + system, read
from /proc for the whole process tree: mailyard's supervisor and workers;
Postfix's master and every daemon it forks, smtpd, cleanup, qmgr,
trivial-rewrite and virtual, counted until the Maildir holds every
message). On a machine shared with other work the throughput is noisy;
CPU per message is the steadier figure.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import time

from . import postfix
from .common import BenchServer, Result, progress, smtp_client
from .imap_load import tree_cpu

SESSIONS = 20
ROUNDS = 3
TARGET_ROUNDS = 5  # the 20-client figures, which the targets name


def _smtp_source(port: int, count: int, size: int, sessions: int = SESSIONS, host: str = "127.0.0.1") -> float:
    """Run smtp-source; any line it writes to stderr (a refused connection,
    an error reply, a lost session) fails the run."""
    exe = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    start = time.perf_counter()
    out = subprocess.run(
        [exe, "-c", "-s", str(sessions), "-m", str(count), "-l", str(size), "-f", "load@remote.test",
         "-t", "alice@example.test", f"{host}:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    elapsed = time.perf_counter() - start
    if out.returncode != 0 or out.stderr.strip():
        raise RuntimeError(f"smtp-source with {sessions} sessions (exit {out.returncode}) reported:\n"
                           f"{out.stderr[:2000]}")
    return elapsed


async def _asyncio_source(port: int, count: int, size: int, sessions: int = SESSIONS,
                          host: str = "127.0.0.1") -> float:
    body = b"Subject: load\r\n\r\n" + (b"x" * 76 + b"\r\n") * max(1, size // 78)
    left = count

    async def one() -> None:
        writer, reply = await smtp_client(port, "load", host)
        writer.write(b"MAIL FROM:<load@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        for _ in range(3):
            await reply()
        writer.write(body + b".\r\nQUIT\r\n")
        assert (await reply()).startswith(b"250")
        await reply()
        writer.close()

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(sessions)))
    return time.perf_counter() - start


def _count(server: BenchServer) -> int:
    import sqlite3

    conn = sqlite3.connect(server.data / "index.sqlite3")
    try:
        return conn.execute(
            "SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
            " JOIN accounts a ON a.id = b.account_id WHERE a.address = 'alice@example.test'"
        ).fetchone()[0]
    finally:
        conn.close()


def _accept(size: int, count: int, sessions: int, use_source: bool) -> tuple[float, float]:
    """Seconds for ``count`` messages of ``size`` bytes from ``sessions``
    concurrent clients to a fresh server, and the server's CPU seconds
    meanwhile; checks every one was stored."""
    server = BenchServer(("smtp",))
    try:
        server.setup()
        server.start()
        port = server.ports["smtp"]
        cpu0 = tree_cpu(server.pid)
        if use_source:
            elapsed = _smtp_source(port, count, size, sessions)
        else:
            elapsed = asyncio.run(_asyncio_source(port, count, size, sessions))
        cpu = tree_cpu(server.pid) - cpu0
        stored = _count(server)
        if stored != count:
            raise RuntimeError(f"{count} messages sent by {sessions} clients but {stored} stored")
        if server.proc is None or server.proc.poll() is not None:
            raise RuntimeError(f"the server ended during the {sessions}-client run")
    finally:
        server.stop()
    return elapsed, cpu


def _postfix_round(peer: postfix.Postfix, count: int, size: int, sessions: int) -> tuple[float, float]:
    """(msgs/s, CPU ms per message including delivery) for one Postfix run."""
    peer_cpu0 = tree_cpu(peer.pid)
    elapsed = peer.send(count, size, sessions)
    peer.wait_delivered(count)
    cpu_ms = 1000 * (tree_cpu(peer.pid) - peer_cpu0) / count
    got = peer.delivered()
    peer.clear()
    if got != count:
        raise RuntimeError(f"Postfix: {count} messages sent, {got} delivered")
    return count / elapsed, cpu_ms


def run(quick: bool = False) -> list[Result]:
    """Each figure is the median of several runs, mailyard's and Postfix's
    alternating, so that a slow spell of a shared machine weighs on both."""
    results = []
    use_source = bool(shutil.which("smtp-source") or shutil.which("smtp-source", path="/usr/sbin"))
    tool = "smtp-source" if use_source else "asyncio generator"
    peer: postfix.Postfix | None = None
    if use_source and postfix.available():
        progress("starting a private Postfix as the peer (same client, same runs)")
        peer = postfix.Postfix()
        peer.start()
    try:
        for size, count, sessions, ref in (
            (1024, 400 if quick else 4000, SESSIONS, "Postfix 830, aiosmtpd+fsync 670; target >= 1200"),
            (100 * 1024, 200 if quick else 1500, SESSIONS, "Postfix 480, aiosmtpd+fsync 190; target >= 600"),
            (1024, 400 if quick else 4000, 100, ""),
            (100 * 1024, 200 if quick else 1500, 100, ""),
            (1024, 2000 if quick else 5000, 1000, "per-address cap raised to 2,000"),
            (100 * 1024, 1000 if quick else 2000, 1000, "per-address cap raised to 2,000"),
        ):
            rounds = 1 if quick else TARGET_ROUNDS if sessions == SESSIONS else ROUNDS
            ours: list[tuple[float, float]] = []
            theirs: list[tuple[float, float]] = []
            for rnd in range(rounds):
                progress(f"round {rnd + 1}/{rounds}: {count} messages of {size // 1024} KB, {sessions} clients ({tool})")
                elapsed, cpu = _accept(size, count, sessions, use_source)
                ours.append((count / elapsed, 1000 * cpu / count))
                progress(f"mailyard {ours[-1][0]:.0f} msgs/s, {ours[-1][1]:.2f} ms server CPU/message, "
                         f"all {count} stored")
                if peer is not None:
                    theirs.append(_postfix_round(peer, count, size, sessions))
                    progress(f"Postfix {theirs[-1][0]:.0f} msgs/s, {theirs[-1][1]:.2f} ms CPU/message incl. delivery "
                             f"(mailyard {ours[-1][0] / theirs[-1][0]:.2f}x)")
            rate, cpu_ms = statistics.median(r for r, _ in ours), statistics.median(c for _, c in ours)
            results.append(Result("smtp", f"accept {size // 1024} KB, {sessions} clients", rate, "msgs/s", ref,
                                  {"messages": count, "rounds": [r for r, _ in ours], "tool": tool,
                                   "clients": sessions, "server_cpu_ms_per_message": cpu_ms}))
            if theirs:
                peer_rate = statistics.median(r for r, _ in theirs)
                assert peer is not None
                results.append(Result("smtp", "  Postfix (this run)", peer_rate, "msgs/s",
                                      f"Postfix {postfix.version()}, 250 once queued",
                                      {"messages": count, "rounds": [r for r, _ in theirs], "clients": sessions,
                                       "server_cpu_ms_per_message": statistics.median(c for _, c in theirs)}))
                ratios = [a / b for (a, _), (b, _) in zip(ours, theirs, strict=True)]
                results.append(Result("smtp", "  mailyard / Postfix", rate / peer_rate, "x",
                                      f"medians; rounds {min(ratios):.2f}-{max(ratios):.2f}",
                                      {"rounds": ratios}))
    finally:
        if peer is not None:
            peer.stop()
    return results
