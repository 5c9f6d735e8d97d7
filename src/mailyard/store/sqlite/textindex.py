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

Header field search (SEARCH FROM/TO/CC/BCC/SUBJECT/HEADER, the webmail's
``from:`` ``subject:`` ...) checks ``header_fields.folded`` and finds its
candidates the same way:

* ``fts_fields`` is a trigram FTS5 table over the folded values of the
  fields in ``FIELD_SLOTS`` (the address fields and Subject), one row per
  body and field: rowid ``body_id * 8 + slot``. An address field's folded
  value holds the parsed addresses and names besides the field text
  (message/address.py ``search_value``), which need not be substrings of the
  header text, hence an index of its own. It keeps its text (the values are
  short), so a row can be dropped by rowid whether or not it was ever added
  (bodies derived before it existed are added by a background backfill).
* Any other field's folded value is its decoded text, a substring of the
  header text: ``fts_header`` gives the candidates.

A search drives from the candidates to the mailbox's messages (index
``messages_body``), so its cost follows the number of bodies containing
the string's trigrams, not the size of the mailbox; a small mailbox
(``SMALL_MAILBOX``) is read whole instead, which costs less than the
candidates of a string found often in the other mailboxes, and a handful
of messages (``FEW_MESSAGES``) are checked without the index at all.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import zlib
from collections.abc import Collection
from typing import Literal

log = logging.getLogger("mailyard.store")

INDEX_CHARS = 256 * 1024  # characters of one body's text (and of its header text) the trigram index holds
HEAD_CHARS = 1024  # characters of each text kept uncompressed, checked by SQLite without Python
MAX_QUERY_TRIGRAMS = 12  # trigrams of a long search string put in the FTS5 query (the check does the rest)
SMALL_MAILBOX = 2000  # fewer messages than this: a search reads the mailbox's rows instead of the candidates
FEW_MESSAGES = 50  # fewer than this: checked without the trigram index
# header fields with a row of their own in fts_fields (rowid = body_id * 8 + slot)
FIELD_SLOTS = {"from": 1, "sender": 2, "reply-to": 3, "to": 4, "cc": 5, "bcc": 6, "subject": 7}
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
CREATE VIRTUAL TABLE IF NOT EXISTS fts_fields USING fts5(text, columnsize=0, tokenize='trigram case_sensitive 1');
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
    delete_fields(c, body_id)
    _delete_text(c, body_id)


def _delete_text(c: sqlite3.Connection, body_id: int) -> None:
    row = c.execute(
        "SELECT header_head, header_rest, body_head, body_rest FROM search_text WHERE body_id = ?", (body_id,)
    ).fetchone()
    if row is None:
        return
    for table, head, rest in (("fts_header", row[0], row[1]), ("fts_body", row[2], row[3])):
        text = _join(head, rest)[:INDEX_CHARS]
        c.execute(f"INSERT INTO {table}({table}, rowid, text) VALUES ('delete', ?, ?)", (body_id, text))
    c.execute("DELETE FROM search_text WHERE body_id = ?", (body_id,))


# meta keys: one row per body gone whose index rows are still to be removed,
# ``text_unindex:<body id>`` (a row each, so listing one costs the same however
# many wait: one JSON list in one row was rewritten whole by each addition and
# each removal, quadratic in an expunge of many messages). ``text_unindex``
# alone is such a JSON list written by an earlier version.
UNINDEX_KEY = "text_unindex"
_UNINDEX_PREFIX = UNINDEX_KEY + ":"
_UNINDEX_RANGE = (UNINDEX_KEY, UNINDEX_KEY + ";")  # the keys from "text_unindex" to "text_unindex:<id>" (";" follows ":")


def defer_delete(c: sqlite3.Connection, body_id: int) -> None:
    """List a body that is gone for ``delete`` later (``delete_deferred``),
    inside the caller's transaction: rolled back with it, kept across a
    restart, seen by every process sharing the database."""
    c.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, '')", (f"{_UNINDEX_PREFIX}{body_id}",))


def deferred(c: sqlite3.Connection) -> bool:
    """Whether bodies listed by ``defer_delete`` wait for ``delete_deferred``."""
    return c.execute("SELECT 1 FROM meta WHERE key >= ? AND key < ? LIMIT 1", _UNINDEX_RANGE).fetchone() is not None


def delete_deferred(c: sqlite3.Connection, limit: int) -> int:
    """Remove from the index up to ``limit`` of the bodies ``defer_delete``
    listed, inside the caller's transaction; returns 1 if some are left, else 0."""
    legacy = c.execute("SELECT value FROM meta WHERE key = ?", (UNINDEX_KEY,)).fetchone()
    if legacy is not None:
        # an earlier version's list: one row per body from now on
        c.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (?, '')",
                      [(f"{_UNINDEX_PREFIX}{int(b)}",) for b in json.loads(legacy[0])])
        c.execute("DELETE FROM meta WHERE key = ?", (UNINDEX_KEY,))
    keys = [r[0] for r in c.execute(
        "SELECT key FROM meta WHERE key > ? AND key < ? LIMIT ?", (_UNINDEX_PREFIX, _UNINDEX_RANGE[1], limit + 1))]
    ids = [int(k[len(_UNINDEX_PREFIX):]) for k in keys[:limit]]
    _delete_fields_rows(c, ids)  # (one query of fts_fields for all: see delete_fields)
    for body_id in ids:
        _delete_text(c, body_id)
    c.executemany("DELETE FROM meta WHERE key = ?", [(k,) for k in keys[:limit]])
    return int(len(keys) > limit)


def save_fields(c: sqlite3.Connection, body_id: int, fields: list[tuple[str, str]]) -> None:
    """Index the ``FIELD_SLOTS`` fields of one body: ``fields`` are its
    (lower-case name, folded value) pairs in header order, as in
    ``header_fields``; several fields of one name are one row."""
    delete_fields(c, body_id)
    texts: dict[int, list[str]] = {}
    for name, folded in fields:
        slot = FIELD_SLOTS.get(name)
        if slot is not None:
            texts.setdefault(slot, []).append(folded)
    c.executemany("INSERT INTO fts_fields(rowid, text) VALUES (?, ?)",
                  [(body_id * 8 + slot, "\n".join(values)) for slot, values in texts.items()])


def delete_fields(c: sqlite3.Connection, body_id: int) -> None:
    """Drop a body's rows of ``fts_fields`` (none is fine).

    A DELETE from an FTS5 table first queries it, and a query makes FTS5
    write the rows it was given in this transaction into a segment of their
    own (merging segments as they pile up): done for every body of a slice
    of indexing, that was most of the indexing's time. So the table's
    content (``fts_fields_content``, an ordinary table) is asked first, and
    a body without rows, as every body being indexed the first time, costs
    no DELETE."""
    _delete_fields_rows(c, [body_id])


def _delete_fields_rows(c: sqlite3.Connection, body_ids: Collection[int]) -> None:
    rowids = [r[0] for b in body_ids for r in c.execute(
        "SELECT id FROM fts_fields_content WHERE id BETWEEN ? AND ?", (b * 8, b * 8 + 7))]
    if rowids:
        # one statement: FTS5 is queried (and flushed) once for them all
        c.execute("DELETE FROM fts_fields WHERE rowid IN (SELECT value FROM json_each(?))", (json.dumps(rowids),))


def backfill_fields(c: sqlite3.Connection, after: int, limit: int) -> int | None:
    """Index the fields of up to ``limit`` derived bodies with ids above
    ``after`` (bodies derived before ``fts_fields`` existed), inside the
    caller's transaction. Returns the last body id done, None if none was left."""
    ids = [r[0] for r in c.execute(
        "SELECT id FROM bodies WHERE id > ? AND derived IS NOT NULL ORDER BY id LIMIT ?", (after, limit))]
    if not ids:
        return None
    names = list(FIELD_SLOTS)
    rows: dict[int, list[tuple[str, str]]] = {b: [] for b in ids}
    for body_id, name, folded in c.execute(
        f"SELECT body_id, name, folded FROM header_fields WHERE body_id BETWEEN ? AND ?"
        f" AND name IN ({','.join('?' * len(names))}) ORDER BY body_id, name, n",
        (ids[0], ids[-1], *names),
    ):
        if body_id in rows:
            rows[body_id].append((name, folded))
    for body_id, fields in rows.items():
        save_fields(c, body_id, fields)
    return ids[-1]


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


def _count(c: sqlite3.Connection, mailbox_id: int) -> int:
    """The mailbox's messages, counted up to SMALL_MAILBOX."""
    row = c.execute("SELECT count(*) FROM (SELECT 1 FROM messages WHERE mailbox_id = ? LIMIT ?)",
                    (mailbox_id, SMALL_MAILBOX)).fetchone()
    return int(row[0])


def few_messages(c: sqlite3.Connection, mailbox_id: int, within: Collection[int] | None) -> bool:
    """Whether a search checks fewer than ``FEW_MESSAGES`` messages (of
    ``within`` if given), which ``_source`` does without the trigram index:
    then its cost depends neither on the size of the mailbox nor on the
    index of the other mailboxes."""
    if within is not None:
        return len(within) < FEW_MESSAGES
    row = c.execute("SELECT count(*) FROM (SELECT 1 FROM messages WHERE mailbox_id = ? LIMIT ?)",
                    (mailbox_id, FEW_MESSAGES)).fetchone()
    return int(row[0]) < FEW_MESSAGES


def _source(c: sqlite3.Connection, mailbox_id: int, within: Collection[int] | None,
            candidates: str | None) -> tuple[str, str, dict, bool]:
    """Which messages a search checks, as the FROM and WHERE of its query
    over messages ``m`` (the condition ends with AND), their parameters,
    and whether only candidates are read.

    ``within`` (UIDs): only those. ``candidates``: a query of the body ids
    an index says may match (None: every message must be checked). A few
    messages are checked without the index (they cost less than its
    lookup); a small mailbox's are read and looked up in the candidates;
    else the query drives from the candidates to their messages of this
    mailbox (``messages_body`` holds mailbox_id and uid: no message row is
    read)."""
    args: dict = {"mailbox": mailbox_id}
    if within is not None:
        args["within"] = json.dumps(sorted(within))
        if len(within) < SMALL_MAILBOX or candidates is None:
            where = "m.mailbox_id = :mailbox AND m.uid = j.value AND"
            used = candidates is not None and len(within) >= FEW_MESSAGES
            if used:
                where += f" m.body_id IN ({candidates}) AND"
            return "json_each(:within) j CROSS JOIN messages m", where, args, used
    elif candidates is None or (count := _count(c, mailbox_id)) < SMALL_MAILBOX:
        where = "m.mailbox_id = :mailbox AND"
        used = candidates is not None and count >= FEW_MESSAGES
        if used:
            where += f" m.body_id IN ({candidates}) AND"
        return "messages m", where, args, used
    return (f"({candidates}) k CROSS JOIN messages m INDEXED BY messages_body",
            "m.body_id = k.body_id AND m.mailbox_id = :mailbox AND"
            # +: a test of each candidate's uid against the set, not a seek per uid of the set
            + (" +m.uid IN (SELECT value FROM json_each(:within)) AND" if within is not None else ""), args, True)


def _search_column(c: sqlite3.Connection, mailbox_id: int, needle: str, column: Literal["body", "header"],
                   within: Collection[int] | None) -> set[int]:
    """SQLite finds the matches in the uncompressed heads; only for the
    other candidates with more text is the rest decompressed and checked
    (with the head's last characters, for a match across the cut)."""
    query = _match_query(needle)
    candidates = None if query is None else (
        f"SELECT rowid AS body_id FROM fts_{column} WHERE fts_{column} MATCH :query"
        " UNION SELECT body_id FROM search_text WHERE truncated")
    source, where, args, _indexed = _source(c, mailbox_id, within, candidates)
    # hit: the head holds the needle; else only a text with more than its
    # head (rest) can, and is checked here
    rows = c.execute(
        f"SELECT m.uid, instr(s.{column}_head, :needle) > 0 AS hit, s.{column}_rest,"
        f" substr(s.{column}_head, -:overlap) FROM {source} CROSS JOIN search_text s"
        f" WHERE {where} s.body_id = m.body_id AND (hit OR s.{column}_rest IS NOT NULL)",
        {**args, "needle": needle, "query": query, "overlap": max(1, len(needle) - 1)},
    )
    want = _encode(needle)
    found: set[int] = set()
    for uid, hit, rest, tail in rows:
        if hit:
            found.add(uid)
        else:
            text = zlib.decompress(rest)
            if want in text or (len(needle) > 1 and want in _encode(tail) + text[: len(want)]):
                found.add(uid)
    return found


def search_fields(c: sqlite3.Connection, mailbox_id: int, name: str, needle: str, fields_indexed: bool,
                  within: Collection[int] | None = None) -> set[int]:
    """UIDs of the indexed messages of a mailbox (of ``within`` if given)
    with a field ``name`` (lower case) whose folded value contains
    ``needle`` (folded). ``fields_indexed``: every derived body has its
    ``fts_fields`` rows."""
    query = _match_query(needle)
    slot = FIELD_SLOTS.get(name)
    check = ("EXISTS (SELECT 1 FROM header_fields h WHERE h.body_id = m.body_id AND h.name = :name"
             " AND instr(h.folded, :needle) > 0)")
    exact = False
    if query is None or (slot is not None and not fields_indexed):
        candidates = None
    elif slot is not None:
        # fts_fields keeps positions: the needle's trigrams one after the
        # other (a phrase) are exactly its occurrences in the value, no check
        # needed; but one field's several values are joined by newlines, so a
        # needle holding one is checked against each value
        exact = "\n" not in needle
        candidates = ("SELECT rowid >> 3 AS body_id FROM fts_fields WHERE fts_fields MATCH"
                      f" {':phrase' if exact else ':query'} AND rowid & 7 = :slot")
    else:
        candidates = ("SELECT rowid AS body_id FROM fts_header WHERE fts_header MATCH :query"
                      " UNION SELECT body_id FROM search_text WHERE truncated")
    source, where, args, indexed = _source(c, mailbox_id, within, candidates)
    rows = c.execute(
        f"SELECT m.uid FROM {source} WHERE {where} {'1' if exact and indexed else check}",
        {**args, "name": name, "needle": needle, "query": query, "slot": slot,
         "phrase": '"' + needle.replace('"', '""') + '"'},
    )
    return {r[0] for r in rows}


def search(c: sqlite3.Connection, mailbox_id: int, needle: str, where: Where,
           within: Collection[int] | None = None) -> set[int]:
    """UIDs of the indexed messages of a mailbox (of ``within`` if given)
    whose body (``body``) or header or body (``text``) contains ``needle``
    case-insensitively."""
    folded = fold(needle)
    found = _search_column(c, mailbox_id, folded, "body", within)
    if where == "text":
        rest = None if within is None else [u for u in within if u not in found]
        found |= _search_column(c, mailbox_id, folded, "header", rest)
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
        " OR name LIKE 'fts_body%' OR name LIKE 'fts_header%' OR name LIKE 'fts_fields%'"
    ).fetchone()
    return int(row[0] or 0)
