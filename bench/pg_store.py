"""The store on PostgreSQL against SQLite: delivery and FETCH-like reads
through the Store API, on a private durable PostgreSQL cluster
(tests/pgcluster.py, fsync on) and an SQLite data directory (fsync on).

Also the two measurements behind the PostgreSQL store's design: a body as
one ``bytea`` against 1 MiB chunks, and psycopg 3 against asyncpg (when
asyncpg is importable; it is not a dependency).

    PYTHONPATH=src:. python -m bench.pg_store [--messages N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from mailyard.config import StoreConfig
from mailyard.store.api import DeliveryTarget, Store
from mailyard.store.postgresql import PostgreSQLStore
from mailyard.store.sqlite import SQLiteStore

from .pgcluster import PgCluster, pg_bindir

BODY = (b"From: a@remote.test\r\nTo: alice@example.test\r\nSubject: bench\r\n"
        b"Message-ID: <x@remote.test>\r\n\r\n" + b"lorem ipsum dolor sit amet " * 150 + b"\r\n")


async def store_figures(store: Store, n: int, concurrency: int = 16) -> dict[str, float]:
    await store.add_domain("example.test")
    alice = await store.add_account("alice@example.test", "h")
    inbox = await store.get_mailbox(alice.id, "INBOX")
    assert inbox is not None
    queue = list(range(n))

    async def deliverer() -> None:
        while queue:
            queue.pop()
            await store.deliver(BODY, [DeliveryTarget(inbox.id, b"Return-Path: <a@remote.test>\r\n")])

    t = time.perf_counter()
    await asyncio.gather(*(deliverer() for _ in range(concurrency)))
    deliver_rate = n / (time.perf_counter() - t)
    uids = [m.uid for m in await store.list_messages(inbox)]
    t = time.perf_counter()
    for uid in uids:  # FETCH n BODY[] one by one, as a client reading its mail
        await store.read_message(inbox, uid)
    read_rate = len(uids) / (time.perf_counter() - t)
    t = time.perf_counter()
    await store.get_derived(inbox, uids, ["envelope_imap", "bodystructure_imap"])  # FETCH 1:* ENVELOPE
    envelope_rate = len(uids) / (time.perf_counter() - t)
    return {"deliver/s": deliver_rate, "read_message/s": read_rate, "envelopes/s": envelope_rate}


async def bytea_figures(dsn: str) -> dict[str, float]:
    import psycopg

    big = bytes(range(256)) * (40 * 4096)  # 40 MiB of incompressible-ish bytes
    out: dict[str, float] = {}
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        await c.execute("CREATE TABLE IF NOT EXISTS b1 (id serial PRIMARY KEY, data bytea)")
        await c.execute("CREATE TABLE IF NOT EXISTS b2 (id int, n int, data bytea, PRIMARY KEY (id, n))")
        t = time.perf_counter()
        for _ in range(3):
            await c.execute("INSERT INTO b1(data) VALUES (%s)", (big,))
        for i in range(3):
            await (await c.execute("SELECT data FROM b1 WHERE id = %s", (i + 1,))).fetchone()
        out["one bytea MiB/s"] = 6 * len(big) / 2**20 / (time.perf_counter() - t)
        t = time.perf_counter()
        chunk = 2**20
        for i in range(3):
            async with c.transaction(), c.cursor() as cur:
                await cur.executemany("INSERT INTO b2 VALUES (%s, %s, %s)",
                                      [(i, k, big[k * chunk:(k + 1) * chunk]) for k in range(len(big) // chunk)])
        for i in range(3):
            rows = await (await c.execute("SELECT data FROM b2 WHERE id = %s ORDER BY n", (i,))).fetchall()
            b"".join(r[0] for r in rows)
        out["1 MiB chunks MiB/s"] = 6 * len(big) / 2**20 / (time.perf_counter() - t)
    return out


async def driver_figures(dsn: str, n: int = 2000) -> dict[str, float]:
    import psycopg

    out: dict[str, float] = {}
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        await c.execute("CREATE TABLE IF NOT EXISTS d (id serial PRIMARY KEY, data bytea)")
        t = time.perf_counter()
        for _ in range(n):
            await c.execute("INSERT INTO d(data) VALUES (%s)", (BODY,))
        for i in range(n):
            await (await c.execute("SELECT data FROM d WHERE id = %s", (i + 1,))).fetchone()
        out["psycopg round trips/s"] = 2 * n / (time.perf_counter() - t)
    try:
        import asyncpg  # type: ignore[import-not-found]
    except ImportError:
        return out
    conn = await asyncpg.connect(dsn)
    try:
        t = time.perf_counter()
        for _ in range(n):
            await conn.execute("INSERT INTO d(data) VALUES ($1)", BODY)
        for i in range(n):
            await conn.fetchrow("SELECT data FROM d WHERE id = $1", i + 1)
        out["asyncpg round trips/s"] = 2 * n / (time.perf_counter() - t)
    finally:
        await conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=500)
    args = parser.parse_args()
    bindir = pg_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL binaries not found: install Debian's postgresql")
    cluster = PgCluster(bindir, durable=True)
    try:
        async def run() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                lite = SQLiteStore(Path(tmp) / "store", StoreConfig())
                try:
                    print("sqlite    ", {k: round(v) for k, v in (await store_figures(lite, args.messages)).items()})
                finally:
                    await lite.close()
                pg = PostgreSQLStore(cluster.new_dsn(), StoreConfig())
                try:
                    print("postgresql", {k: round(v) for k, v in (await store_figures(pg, args.messages)).items()})
                finally:
                    await pg.close()
                dsn = cluster.new_dsn()
                print("bytea     ", {k: round(v) for k, v in (await bytea_figures(dsn)).items()})
                print("driver    ", {k: round(v) for k, v in (await driver_figures(dsn)).items()})

        asyncio.run(run())
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
