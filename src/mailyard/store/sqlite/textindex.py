"""The full-text index behind SEARCH BODY and SEARCH TEXT (SQLite backend).

RFC 9051 6.4.4: BODY and TEXT match messages that contain the string as a
case-insensitive substring, so the index must answer substrings, not words.
Two parts do it, small enough to stay well under the mail's own size:

* ``search_text`` keeps each body's decoded text, case-folded (header text
  and body text apart): the first ``HEAD_CHARS`` characters as they are, so
  SQLite checks most matches itself (``instr``), the rest zlib-compressed.
  It is the ground truth a match is checked against.
* ``fts_body`` / ``fts_header`` are contentless FTS5 tables with the trigram
  tokenizer and ``detail=none``: for each three-character sequence, the list of
  bodies containing it, without positions (positions made the old index three
  times the size of the mail). A body containing a string contains each of its
  trigrams, so the bodies holding all of them are a superset of the answer;
  each candidate is then checked against its text. Strings shorter than a
  trigram check every body of the mailbox.

Only the first ``INDEX_CHARS`` characters of a body's text are tokenized (the
time and space one body takes are bounded); a longer body is marked
``truncated`` and always checked against its whole stored text. Binary
attachments never get here: message/derived.py collects text parts only.

Text is folded with ``str.casefold`` on both sides, and the trigram tokenizer
runs case-sensitively on the folded text, so the index and the check agree.
"""

from __future__ import annotations

import logging
import sqlite3
import zlib
from typing import Literal

log = logging.getLogger("mailyard.store")

INDEX_CHARS = 256 * 1024  # characters of one body's text (and of its header text) the trigram index holds
HEAD_CHARS = 1024  # characters of each text kept uncompressed, checked by SQLite without Python
MAX_QUERY_TRIGRAMS = 12  # trigrams of a long search string put in the FTS5 query (the check does the rest)
_FTS = "fts5(text, content='', detail=none, columnsize=0, tokenize='trigram case_sensitive 1')"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS search_text (
    body_id     INTEGER PRIMARY KEY,        -- bodies.id
    header_head TEXT NOT NULL,              -- the case-folded header text: first HEAD_CHARS characters
    header_rest BLOB,                       -- zlib(UTF-8 of the rest), NULL if none
    body_head   TEXT NOT NULL,              -- the same for the case-folded body text
    body_rest   BLOB,
    truncated   INTEGER NOT NULL DEFAULT 0  -- text beyond INDEX_CHARS: not in the trigram index
);
CREATE INDEX IF NOT EXISTS search_text_truncated ON search_text(body_id) WHERE truncated;
CREATE VIRTUAL TABLE IF NOT EXISTS fts_body USING {_FTS};
CREATE VIRTUAL TABLE IF NOT EXISTS fts_header USING {_FTS};
"""

Where = Literal["body", "text"]


def fold(text: str) -> str:
    """The form both the index and the check see (case-insensitive, RFC 9051 6.4.4)."""
    return text.casefold()


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "replace")


def drop_former(c: sqlite3.Connection) -> bool:
    """Drop the full-text table of earlier versions (a positional trigram
    index holding a copy of the text) and mark every body for indexing again
    (the background indexer and reads refill the new tables). Returns True if
    there was one."""
    if not c.execute("SELECT 1 FROM sqlite_master WHERE name = 'fts' AND type = 'table'").fetchone():
        return False
    c.execute("BEGIN IMMEDIATE")
    try:
        c.execute("DROP TABLE fts")
        c.execute("UPDATE bodies SET derived = NULL WHERE derived IS NOT NULL")
        c.execute("COMMIT")
    except BaseException:
        if c.in_transaction:
            c.execute("ROLLBACK")
        raise
    log.info("store: full-text index rebuilt in the compact form; the background indexer refills it")
    return True


def _split(text: str) -> tuple[str, bytes | None]:
    rest = text[HEAD_CHARS:]
    return text[:HEAD_CHARS], zlib.compress(_encode(rest)) if rest else None


def _join(head: str, rest: bytes | None) -> str:
    return head + zlib.decompress(rest).decode("utf-8") if rest is not None else head


def save(c: sqlite3.Connection, body_id: int, header_text: str, body_text: str) -> None:
    """Index one body's text (replacing what it had)."""
    delete(c, body_id)
    header, body = fold(header_text), fold(body_text)
    truncated = len(header) > INDEX_CHARS or len(body) > INDEX_CHARS
    c.execute(
        "INSERT INTO search_text(body_id, header_head, header_rest, body_head, body_rest, truncated)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (body_id, *_split(header), *_split(body), int(truncated)),
    )
    c.execute("INSERT INTO fts_header(rowid, text) VALUES (?, ?)", (body_id, header[:INDEX_CHARS]))
    c.execute("INSERT INTO fts_body(rowid, text) VALUES (?, ?)", (body_id, body[:INDEX_CHARS]))


def delete(c: sqlite3.Connection, body_id: int) -> None:
    """Remove a body from the index. A contentless FTS5 table forgets a row
    when told the very text it indexed, which ``search_text`` still has."""
    row = c.execute(
        "SELECT header_head, header_rest, body_head, body_rest FROM search_text WHERE body_id = ?", (body_id,)
    ).fetchone()
    if row is None:
        return
    for table, head, rest in (("fts_header", row[0], row[1]), ("fts_body", row[2], row[3])):
        text = _join(head, rest)[:INDEX_CHARS]
        c.execute(f"INSERT INTO {table}({table}, rowid, text) VALUES ('delete', ?, ?)", (body_id, text))
    c.execute("DELETE FROM search_text WHERE body_id = ?", (body_id,))


def _match_query(needle: str) -> str | None:
    """An FTS5 query: every (or a spread of) the needle's trigrams, each a
    quoted string, ANDed. None for a needle shorter than a trigram."""
    grams = list(dict.fromkeys(needle[i : i + 3] for i in range(len(needle) - 2)))
    if not grams:
        return None
    if len(grams) > MAX_QUERY_TRIGRAMS:
        step = (len(grams) - 1) / (MAX_QUERY_TRIGRAMS - 1)
        grams = [grams[round(i * step)] for i in range(MAX_QUERY_TRIGRAMS)]
    return " AND ".join('"' + g.replace('"', '""') + '"' for g in grams)


def _search_column(c: sqlite3.Connection, mailbox_id: int, needle: str, column: Literal["body", "header"]) -> set[int]:
    """SQLite finds the matches in the uncompressed heads; only for the
    other candidates with more text is the rest decompressed and checked
    (with the head's last characters, for a match across the cut)."""
    query = _match_query(needle)
    candidates = "" if query is None else (
        f" AND (m.body_id IN (SELECT rowid FROM fts_{column} WHERE fts_{column} MATCH :query)"
        " OR m.body_id IN (SELECT body_id FROM search_text WHERE truncated))"
    )
    rows = c.execute(
        f"SELECT m.uid, instr(s.{column}_head, :needle) > 0 AS hit,"
        f" CASE WHEN instr(s.{column}_head, :needle) > 0 THEN NULL ELSE s.{column}_rest END,"
        f" CASE WHEN instr(s.{column}_head, :needle) > 0 OR s.{column}_rest IS NULL THEN NULL"
        f" ELSE substr(s.{column}_head, -:overlap) END"
        f" FROM messages m JOIN search_text s ON s.body_id = m.body_id WHERE m.mailbox_id = :mailbox{candidates}",
        {"needle": needle, "query": query, "overlap": max(1, len(needle) - 1), "mailbox": mailbox_id},
    )
    want = _encode(needle)
    found: set[int] = set()
    for uid, hit, rest, tail in rows:
        if hit:
            found.add(uid)
        elif rest is not None:
            text = zlib.decompress(rest)
            if want in text or (len(needle) > 1 and want in _encode(tail) + text[: len(want)]):
                found.add(uid)
    return found


def search(c: sqlite3.Connection, mailbox_id: int, needle: str, where: Where) -> set[int]:
    """UIDs of the indexed messages of a mailbox whose body (``body``) or
    header or body (``text``) contains ``needle`` case-insensitively."""
    folded = fold(needle)
    found = _search_column(c, mailbox_id, folded, "body")
    if where == "text":
        found |= _search_column(c, mailbox_id, folded, "header")
    return found


def matches(header_text: str, body_text: str, needle: str, where: Where) -> bool:
    """``search`` for one body whose text is at hand but not indexed (the
    disk was full when it was derived)."""
    folded = fold(needle)
    if folded in fold(body_text):
        return True
    return where == "text" and folded in fold(header_text)


def index_bytes(c: sqlite3.Connection) -> int:
    """Bytes the full-text index takes in the database (SQLite's dbstat), for figures."""
    row = c.execute(
        "SELECT sum(pgsize) FROM dbstat WHERE name IN ('search_text', 'search_text_truncated')"
        " OR name LIKE 'fts_body%' OR name LIKE 'fts_header%'"
    ).fetchone()
    return int(row[0] or 0)
