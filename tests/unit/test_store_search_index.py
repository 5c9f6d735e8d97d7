"""Header and text search of the SQLite store through its trigram indexes
(store/sqlite/textindex.py): a search of a big mailbox reads the candidates
the indexes give, not every message of the mailbox, and finds exactly what
the case-insensitive substring rule finds (RFC 9051 6.4.4), including the
parsed forms of address fields, encoded words, case folding that changes
lengths, strings spanning words and strings shorter than a trigram. A data
directory from before the field index gets it filled in the background."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from mailyard.config import StoreConfig
from mailyard.message.address import search_value
from mailyard.store.api import DeliveryTarget, Mailbox, derive_record
from mailyard.store.sqlite import SQLiteStore, schema, textindex

from .test_store_scale import ROW_SCAN, _plans

HEADERS = [
    "From: =?utf-8?q?J=C3=BCrgen_Gro=C3=9F?= <jg@remote.test>",
    'From: "Smith, \\"JJ\\" John" <john.smith@remote.test>',
    "From: <user (comment)@ (comment) example.org>",
    "From: user@example.org (Real Name)",
    "From: Undisclosed:;",
    "From: Team: ann@remote.test, bob@remote.test;",
    "From: =?iso-8859-1?q?Ren=E9e?= <renee@remote.test>",
    "From: İstanbul Office <ist@remote.test>",
    "From: Carol <carol@remote.test>",
]
SUBJECTS = ["Budget meeting", "=?utf-8?b?R3LDvMOfZSBhdXMgWsO8cmljaA==?=", "STRASSE", "Straße", "lunch, party",
            "re: \"quoted\" words", "x", "Σίσυφος", "a" * 300]
NEEDLES = ["budget", "et mee", "GRÜSSE", "grüße", "strasse", "ss", "e", "ß", "user@example.org", "real name",
           "comment", "smith, \"jj\"", "jj", "team", "ann@", "undisclosed", "renée", "RENEE", "istanbul", "i̇stanbul",
           "İst", "σίσυφοσ", "ΣΊΣΥΦΟΣ", "\"quoted\"", "aaaa", "a" * 40, "@remote.test", "remote.test\nbob",
           "jg@remote.test", "<jg@", "office <ist", "zz", "carol <carol@remote.test>"]


def _message(rng: random.Random, n: int) -> bytes:
    lines = [rng.choice(HEADERS), f"To: Alice <alice{n % 5}@example.test>"]
    if n % 3 == 0:
        lines.append(f"To: Second <second{n}@example.test>")  # a second field of the same name
    if n % 4 == 0:
        lines.append("Cc: dave@remote.test, =?utf-8?q?Zo=C3=AB?= <zoe@remote.test>")
    if n % 5 == 0:
        lines.append("Reply-To: help@remote.test")
    lines.append(f"Subject: {rng.choice(SUBJECTS)} {n}")
    lines.append(f"X-Custom: token-{n % 7} Budget")
    return ("\r\n".join(lines) + f"\r\n\r\nbody {n} {rng.choice(SUBJECTS)}\r\n").encode()


async def _filled(path: Path, count: int) -> tuple[SQLiteStore, Mailbox, list[bytes]]:
    store = SQLiteStore(path, StoreConfig(fsync=False))
    await store.add_domain("example.test")
    account = await store.add_account("a@example.test", "h")
    box = await store.get_mailbox(account.id, "INBOX")
    assert box is not None
    rng = random.Random(9051)
    msgs = [_message(rng, n) for n in range(count)]
    for m in msgs:
        await store.deliver(m, [DeliveryTarget(box.id)])
    await store.get_derived(box, list(range(1, count + 1)))  # derive and index all now
    await store._flush_upkeep()  # the saves FETCH leaves to the writer, between its batches
    return store, box, msgs


def _truth(msgs: list[bytes], field: str, needle: str) -> set[int]:
    """The rule itself, on each message's decoded header fields."""
    key = needle.casefold()
    out = set()
    for uid, raw in enumerate(msgs, 1):
        if any(name == field and key in search_value(name, value).casefold()
               for name, value in derive_record(raw).headers):
            out.add(uid)
    return out


@pytest.fixture
def big(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test mailbox of a few dozen messages searched as a big one is."""
    monkeypatch.setattr(textindex, "SMALL_MAILBOX", 10, raising=False)
    monkeypatch.setattr(textindex, "FEW_MESSAGES", 3, raising=False)


async def test_search_of_a_big_mailbox_reads_the_candidates_not_the_mailbox(tmp_path: Path, big: None) -> None:
    store, box, msgs = await _filled(tmp_path / "data", 40)
    try:
        for field, needle in (("from", "carol"), ("subject", "budget"), ("x-custom", "token-3"), ("to", "second3")):
            found, plans = await _plans(store, lambda f=field, n=needle: store.search_headers(box, f, n))
            assert found == _truth(msgs, field, needle) and found, (field, needle)
            scans = [f"{sql}\n  -> {plan}" for sql, plan in plans.items() if ROW_SCAN in plan]
            assert not scans, "header search reads every message row:\n" + "\n".join(scans)
        for where in ("text", "body"):
            found, plans = await _plans(store, lambda w=where: store.search_text(box, "lunch", w))  # type: ignore[misc]
            assert found
            scans = [f"{sql}\n  -> {plan}" for sql, plan in plans.items() if ROW_SCAN in plan]
            assert not scans, "text search reads every message row:\n" + "\n".join(scans)
    finally:
        await store.close()


@pytest.mark.parametrize("size", ["big", "small"])
async def test_header_search_finds_exactly_the_substrings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          size: str) -> None:
    if size == "big":
        monkeypatch.setattr(textindex, "SMALL_MAILBOX", 10, raising=False)
        monkeypatch.setattr(textindex, "FEW_MESSAGES", 3, raising=False)
    store, box, msgs = await _filled(tmp_path / "data", 60)
    try:
        checked = 0
        for field in ("from", "to", "cc", "reply-to", "subject", "x-custom", "content-type"):
            for needle in NEEDLES + [f"token-{n}" for n in range(3)]:
                got = await store.search_headers(box, field, needle)
                assert got == _truth(msgs, field, needle), (field, needle)
                within = set(range(1, 61, 3))
                part = await store.search_headers(box, field, needle, within=within)
                assert part == got & within, (field, needle, "within")
                checked += bool(got)
        assert checked > 40
        for needle in ("et mee", "lunch, p", "STRASSE", "ß", "zz", "body 1"):
            key = needle.casefold()
            recs = [derive_record(m) for m in msgs]
            want = {u for u, r in enumerate(recs, 1) if key in r.body_text.casefold() or key in r.header_text.casefold()}
            assert await store.search_text(box, needle, "text") == want, needle
            assert await store.search_text(box, needle, "text", within={1, 2, 3, 4}) == want & {1, 2, 3, 4}
    finally:
        await store.close()


async def test_expunged_bodies_leave_the_field_index(tmp_path: Path, big: None) -> None:
    store, box, msgs = await _filled(tmp_path / "data", 20)
    try:
        rows = store._q1("SELECT count(*) FROM fts_fields_content")
        assert rows is not None and rows[0] >= 20 * 3
        await store.expunge(box, list(range(1, 21)))
        assert store._q1("SELECT count(*) FROM header_fields") == (0,)
        # the full-text rows go in a transaction of their own after the expunge's
        deadline = asyncio.get_running_loop().time() + 30
        while store._q1("SELECT count(*) FROM fts_fields_content") != (0,):
            assert asyncio.get_running_loop().time() < deadline, "index rows of gone bodies were kept"
            await asyncio.sleep(0.02)
        assert store._q1("SELECT count(*) FROM search_text") == (0,)
        assert store._q1("SELECT 1 FROM meta WHERE key >= 'text_unindex' AND key < 'text_unindex;'") is None
    finally:
        await store.close()


async def test_a_directory_from_before_the_field_index_gets_it_in_the_background(
        tmp_path: Path, big: None) -> None:
    store, box, msgs = await _filled(tmp_path / "data", 30)
    # as a version-7 directory: no field index rows, no backfill mark
    await store._write(lambda c, ctx: (c.execute("DELETE FROM fts_fields"),
                                       c.execute("DELETE FROM meta WHERE key = 'fields_index_backfill'"),
                                       c.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")))
    await store.close()
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    try:
        assert store._q1("SELECT value FROM meta WHERE key = 'schema_version'") == (str(schema.SCHEMA_VERSION),)
        # found at once (the mailbox's rows are read meanwhile), and by the index once it is filled
        assert await store.search_headers(box, "from", "carol") == _truth(msgs, "from", "carol")
        deadline = asyncio.get_running_loop().time() + 30
        while store._q1("SELECT value FROM meta WHERE key = 'fields_index_backfill'") != ("done",):
            assert asyncio.get_running_loop().time() < deadline, "backfill did not finish"
            await asyncio.sleep(0.05)
        count = store._q1("SELECT count(*) FROM fts_fields_content")
        assert count is not None and count[0] >= 30 * 3
        found, plans = await _plans(store, lambda: store.search_headers(box, "from", "carol"))
        assert found == _truth(msgs, "from", "carol")
        assert not [p for p in plans.values() if ROW_SCAN in p]
    finally:
        await store.close()
