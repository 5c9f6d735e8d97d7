"""SMTP acceptance throughput: 20 concurrent clients, one message per
connection, 1 KB and 100 KB messages, fsync on; a message counts once it is in
the recipient's mailbox and its ``250`` was sent.

The load generator is Postfix's ``smtp-source`` when installed (the standard
tool, and C, so it leaves the CPU to the server), else an asyncio generator.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

from .common import BenchServer, Result, progress

SESSIONS = 20


def _smtp_source(port: int, count: int, size: int) -> float:
    exe = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    start = time.perf_counter()
    subprocess.run(
        [exe, "-c", "-s", str(SESSIONS), "-m", str(count), "-l", str(size), "-f", "load@remote.test",
         "-t", "alice@example.test", f"127.0.0.1:{port}"],
        check=True, stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


async def _asyncio_source(port: int, count: int, size: int) -> float:
    body = b"Subject: load\r\n\r\n" + (b"x" * 76 + b"\r\n") * max(1, size // 78)
    left = count

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def reply() -> bytes:
            while True:
                line = await reader.readline()
                if line[3:4] != b"-":
                    return line

        await reply()
        writer.write(b"EHLO load\r\n")
        await reply()
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
    await asyncio.gather(*(worker() for _ in range(SESSIONS)))
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


def run(quick: bool = False) -> list[Result]:
    results = []
    use_source = shutil.which("smtp-source") or shutil.which("smtp-source", path="/usr/sbin")
    tool = "smtp-source" if use_source else "asyncio generator"
    for size, count, ref in (
        (1024, 400 if quick else 4000, "Postfix 830, aiosmtpd+fsync 670; target >= 1200"),
        (100 * 1024, 200 if quick else 1500, "Postfix 480, aiosmtpd+fsync 190; target >= 600"),
    ):
        with BenchServer(("smtp",)) as server:
            port = server.ports["smtp"]
            progress(f"{count} messages of {size // 1024} KB, {SESSIONS} clients ({tool})")
            if use_source:
                elapsed = _smtp_source(port, count, size)
            else:
                elapsed = asyncio.run(_asyncio_source(port, count, size))
            stored = _count(server)
            if stored != count:
                raise RuntimeError(f"{count} messages sent but {stored} stored")
            rate = count / elapsed
            progress(f"{rate:.0f} msgs/s")
            results.append(Result("smtp", f"accept {size // 1024} KB, 20 clients", rate, "msgs/s", ref,
                                  {"messages": count, "seconds": elapsed, "tool": tool}))
    return results
