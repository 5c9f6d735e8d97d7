"""The full-text index (store/sqlite/textindex.py) on a realistic corpus: SEARCH BODY
and TEXT find exactly the messages containing the string (RFC 9051 6.4.4),
every message the former positional trigram index found, and the index
takes less room than the mail."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest
from bench.corpus import corpus

from mailyard.config import StoreConfig
from mailyard.store.api import DeliveryTarget, Mailbox, derive_record
from mailyard.store.sqlite import SQLiteStore

CORPUS = 300


async def _store_with(path: Path, msgs: list[bytes]) -> tuple[SQLiteStore, Mailbox]:
    s = SQLiteStore(path, StoreConfig(fsync=False))
    await s.add_domain("example.test")
    account = await s.add_account("alice@example.test", "h")
    box = await s.get_mailbox(account.id, "INBOX")
    assert box is not None
    for start in range(0, len(msgs), 100):
        await asyncio.gather(*(s.deliver(m, [DeliveryTarget(box.id)]) for m in msgs[start : start + 100]))
    await s.get_derived(box, list(range(1, len(msgs) + 1)))  # derive and index all now
    return s, box


def _former_index(texts: list[tuple[str, str]]) -> sqlite3.Connection:
    """The index as it was: a positional trigram FTS5 table holding the text."""
    c = sqlite3.connect(":memory:")
    c.execute("CREATE VIRTUAL TABLE fts USING fts5(body_text, header_text, tokenize='trigram')")
    c.executemany("INSERT INTO fts(rowid, body_text, header_text) VALUES (?, ?, ?)",
                  [(uid, body, header) for uid, (header, body) in enumerate(texts, 1)])
    return c


def _former_search(c: sqlite3.Connection, text: str, where: str) -> set[int]:
    needle = text.strip()
    if len(needle) >= 3:
        phrase = '"' + needle.replace('"', '""') + '"'
        query = f"body_text : {phrase}" if where == "body" else phrase
        return {r[0] for r in c.execute("SELECT rowid FROM fts WHERE fts MATCH ?", (query,))}
    expr = "body_text" if where == "body" else "header_text || ' ' || body_text"
    return {r[0] for r in c.execute(f"SELECT rowid FROM fts WHERE instr(lower({expr}), lower(?)) > 0", (needle,))}


def _needles(rng: random.Random, texts: list[tuple[str, str]]) -> list[str]:
    out = ["the", "e", "é", "ß", "ss", "GRÜSSE", "Straße", "strasse", "ZÜRICH", "résumé", "déjà vu", "http",
           "utm_source=news&id=1", '"quoted"', "nothing-like-this-anywhere", "qq", "a b", "Subject", "remote.test",
           "Müller", "\u00e6r\u00f8", "x" * 40]
    for _ in range(150):
        header, body = rng.choice(texts)
        source = body if rng.random() < 0.8 or not header else header
        if not source:
            continue
        length = rng.choice([1, 2, 3, 4, 5, 8, 12, 20, 40])
        start = rng.randrange(max(1, len(source) - length))
        piece = source[start : start + length]
        if rng.random() < 0.4:
            piece = "".join(ch.upper() if rng.random() < 0.5 else ch for ch in piece)
        if piece.strip() and "\n" not in piece and "\r" not in piece:  # an IMAP string is one line
            out.append(piece)
    return out


async def test_search_finds_what_the_former_index_found_and_exactly_the_substrings(tmp_path: Path) -> None:
    msgs = corpus(CORPUS, seed=6)
    texts = [(r.header_text, r.body_text) for r in map(derive_record, msgs)]
    s, box = await _store_with(tmp_path / "data", msgs)
    former = _former_index(texts)
    try:
        rng = random.Random(4)
        checked = 0
        for needle in _needles(rng, texts):
            for where in ("body", "text"):
                got = await s.search_text(box, needle, where)  # type: ignore[arg-type]
                key = needle.strip().casefold()
                exact = {
                    uid for uid, (header, body) in enumerate(texts, 1)
                    if key in body.casefold() or (where == "text" and key in header.casefold())
                }
                assert got == exact, (needle, where, sorted(got ^ exact)[:10])
                before = _former_search(former, needle, where)
                assert before <= got, (needle, where, sorted(before - got)[:10])
                checked += 1
        assert checked > 200
    finally:
        await s.close()


async def test_index_takes_less_room_than_the_mail(tmp_path: Path) -> None:
    msgs = corpus(CORPUS, seed=7)
    mail = sum(len(m) for m in msgs)
    s, _box = await _store_with(tmp_path / "data", msgs)
    await s.close()
    c = sqlite3.connect(tmp_path / "data" / "index.sqlite3")
    try:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        # every table of the full-text index, whatever its layout
        index = c.execute(
            "SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'fts%' OR name LIKE 'search_text%'"
        ).fetchone()[0]
        whole = (tmp_path / "data" / "index.sqlite3").stat().st_size
        former = _former_index([(r.header_text, r.body_text) for r in map(derive_record, msgs)])
        former_bytes = former.execute("SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'fts%'").fetchone()[0]
    finally:
        c.close()
    print(f"\n{mail / 1e6:.1f} MB of mail: full-text index {index / 1e6:.1f} MB ({index / mail:.2f}x; the former "
          f"index {former_bytes / mail:.2f}x), whole index database {whole / mail:.2f}x")
    assert index < 1.0 * mail
    assert former_bytes > 1.5 * mail  # the corpus is one the former index was too big for


async def test_expunged_bodies_leave_the_index_and_long_texts_are_found_beyond_the_cut(tmp_path: Path) -> None:
    from mailyard.store.sqlite import textindex

    cut = textindex.HEAD_CHARS
    long_text = "a" * (textindex.INDEX_CHARS + 10) + " needle-at-the-end"
    across = "b" * (cut - 3) + "CROSS" + "c" * 100  # straddles the uncompressed head
    msgs = [
        b"Subject: long\r\n\r\n" + long_text.encode(),
        b"Subject: across\r\n\r\n" + across.encode(),
        b"Subject: gone\r\n\r\nunique-word-zebra\r\n",
        b"Subject: kept\r\n\r\nunique-word-zebra too\r\n",
    ]
    s, box = await _store_with(tmp_path / "data", msgs)
    try:
        assert await s.search_text(box, "NEEDLE-at-the-end", "body") == {1}
        assert await s.search_text(box, "cross", "body") == {2}
        assert await s.search_text(box, "bcrossc", "text") == {2}
        assert await s.search_text(box, "zebra", "body") == {3, 4}
        await s.expunge(box, [3])
        assert await s.search_text(box, "zebra", "body") == {4}
        assert await s.search_text(box, "subject: gone", "text") == set()
        c = s._writer._conn
        for table in ("fts_body", "fts_header"):
            c.execute(f"INSERT INTO {table}({table}) VALUES ('integrity-check')")
        # the expunged body's rows go between write batches, after the expunge
        for _ in range(500):
            if s._read.execute("SELECT count(*) FROM search_text").fetchone()[0] == 3:
                break
            await asyncio.sleep(0.02)
        assert s._read.execute("SELECT count(*) FROM search_text").fetchone()[0] == 3
    finally:
        await s.close()


async def test_a_data_directory_with_the_former_index_is_converted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    s, box = await _store_with(data, [b"Subject: old\r\n\r\nformer wombat text\r\n"])
    await s.close()
    with sqlite3.connect(data / "index.sqlite3") as c:  # as an earlier version left it
        c.execute("DROP TABLE fts_body")
        c.execute("DROP TABLE fts_header")
        c.execute("DELETE FROM search_text")
        c.execute("CREATE VIRTUAL TABLE fts USING fts5(body_text, header_text, tokenize='trigram')")
        c.execute("INSERT INTO fts(rowid, body_text, header_text) VALUES (1, 'former wombat text', 'Subject: old')")
    s = SQLiteStore(data, StoreConfig(fsync=False))
    try:
        tables = {r[0] for r in s._read.execute("SELECT name FROM sqlite_master")}
        assert "fts" not in tables and "fts_body" in tables
        assert await s.search_text(box, "WOMBAT", "body") == {1}
    finally:
        await s.close()


@pytest.mark.parametrize("needle", ["x", "xy", "xyz", "xyzw"])
async def test_matches_of_unsaved_records_agree_with_the_index(tmp_path: Path, needle: str) -> None:
    from mailyard.store.sqlite import textindex

    raw = b"Subject: A XYZW b\r\n\r\nbody XyZw\r\n"
    rec = derive_record(raw)
    s, box = await _store_with(tmp_path / "data", [raw])
    try:
        for where in ("body", "text"):
            indexed = await s.search_text(box, needle, where)  # type: ignore[arg-type]
            assert (indexed == {1}) == textindex.matches(rec.header_text, rec.body_text, needle, where)  # type: ignore[arg-type]
    finally:
        await s.close()
