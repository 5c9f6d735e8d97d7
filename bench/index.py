"""Full-text index size: how many bytes the index takes per byte of mail.

A realistic corpus (bench/corpus.py: prose with quoted replies, text + HTML
alternatives, quoted-printable and base64 text, binary attachments,
newsletters; 2,000 messages, about 20 MB) is delivered through the store
API, the background indexer indexes it (the rate is a figure too), and
SQLite's dbstat gives the bytes of the full-text index tables
(store/sqlite/textindex.py) and of the whole index database after a checkpoint.
The same texts in the former layout (a positional trigram FTS5 table holding
a copy of the text) are measured alongside, for comparison. SEARCH BODY on
this corpus is timed through the store (median of several runs): a common
word, a rare one, and a two-character string (no trigram: every body is
checked).
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from .common import Result, progress
from .corpus import corpus

MESSAGES = 2_000


def _former_bytes(texts: list[tuple[str, str]]) -> int:
    c = sqlite3.connect(":memory:")
    c.execute("CREATE VIRTUAL TABLE fts USING fts5(body_text, header_text, tokenize='trigram')")
    c.executemany("INSERT INTO fts(rowid, body_text, header_text) VALUES (?, ?, ?)",
                  [(i, body, header) for i, (header, body) in enumerate(texts, 1)])
    return c.execute("SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'fts%'").fetchone()[0]


def run(quick: bool = False) -> list[Result]:
    from mailyard.config import StoreConfig
    from mailyard.store.api import DeliveryTarget, derive_record
    from mailyard.store.sqlite import SQLiteStore, textindex

    count = 300 if quick else MESSAGES
    progress(f"building a corpus of {count} messages")
    msgs = corpus(count)
    mail = sum(len(m) for m in msgs)
    timings: dict[str, list[float]] = {}
    hits: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="mailyard-bench-index-") as tmp:
        data = Path(tmp) / "data"

        async def go() -> float:
            store = SQLiteStore(data, StoreConfig(fsync=False))
            try:
                await store.add_domain("example.test")
                account = await store.add_account("alice@example.test", "x")
                box = await store.get_mailbox(account.id, "INBOX")
                assert box is not None
                progress(f"delivering {count} messages ({mail / 1e6:.1f} MB)")
                started = time.perf_counter()
                for start in range(0, count, 200):
                    await asyncio.gather(*(store.deliver(m, [DeliveryTarget(box.id)])
                                           for m in msgs[start : start + 200]))
                reported = time.perf_counter()
                while left := store._read.execute("SELECT count(*) FROM bodies WHERE derived IS NULL").fetchone()[0]:
                    if time.perf_counter() - reported > 2:
                        progress(f"background indexer: {count - left} of {count} indexed")
                        reported = time.perf_counter()
                    await asyncio.sleep(0.1)
                progress(f"background indexer: all {count} indexed")
                indexing = time.perf_counter() - started
                for label, needle in (("common word", "the"), ("rare word", "marshal"), ("2 characters", "qx")):
                    runs = []
                    for _ in range(5):
                        t = time.perf_counter()
                        found = await store.search_text(box, needle, "body")
                        runs.append(time.perf_counter() - t)
                    timings[label] = runs
                    hits[label] = len(found)
                return indexing
            finally:
                await store.close()

        indexing = asyncio.run(go())
        c = sqlite3.connect(data / "index.sqlite3")
        try:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            index = textindex.index_bytes(c)
        finally:
            c.close()
        whole = (data / "index.sqlite3").stat().st_size
    progress("measuring the former layout on the same texts")
    former = _former_bytes([(r.header_text, r.body_text) for r in map(derive_record, msgs)])
    progress(f"{mail / 1e6:.1f} MB of mail: full-text index {index / 1e6:.1f} MB ({index / mail:.2f}x), "
             f"former layout {former / 1e6:.1f} MB ({former / mail:.2f}x), whole index database "
             f"{whole / 1e6:.1f} MB ({whole / mail:.2f}x); indexed {count / indexing:.0f} msg/s")
    detail = {"messages": count, "mail_bytes": mail, "index_bytes": index, "former_bytes": former,
              "database_bytes": whole}
    out = [
        Result("index", "full-text index / mail bytes", index / mail, "x", "target < 1.0x", detail),
        Result("index", "  former layout (positional FTS5)", former / mail, "x", "issue: 74.7 MB / 23.6 MB = 3.2x",
               detail),
        Result("index", "whole index database / mail bytes", whole / mail, "x", "incl. ENVELOPE, header fields",
               detail),
        Result("index", "delivery + background indexing", count / indexing, "msg/s", "", detail),
    ]
    for label, runs in timings.items():
        out.append(Result("index", f"SEARCH BODY, {label} ({hits[label]} hits)", statistics.median(runs), "s",
                          f"{count} messages, store call", {"all": runs}))
    return out
