"""A mailbox's defined keywords in the SQLite store (store/keywords.py):
read and extended inside the writes that set flags."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from ..api import NotFound
from ..keywords import admitted, defined_text, fitted, keywords_of, parse_defined

# The distinct flag combinations of a mailbox, seeking from one to the next
# in the messages_flags index (a few entries however many messages share them).
DISTINCT_FLAGS = (
    "WITH RECURSIVE f(flags) AS ("
    " SELECT min(flags) FROM messages WHERE mailbox_id = ?1"
    " UNION ALL"
    " SELECT (SELECT min(flags) FROM messages WHERE mailbox_id = ?2 AND flags > f.flags) FROM f"
    " WHERE f.flags IS NOT NULL)"
    " SELECT flags FROM f WHERE flags IS NOT NULL"
)


def keywords_in_use(c: sqlite3.Connection, mailbox_id: int) -> frozenset[str]:
    """The keywords some message of the mailbox has."""
    return frozenset(f for (flags,) in c.execute(DISTINCT_FLAGS, (mailbox_id, mailbox_id))
                     for f in flags.split() if not f.startswith("\\"))


def defined_keywords(c: sqlite3.Connection, mailbox_id: int) -> tuple[frozenset[str], bool]:
    """(the mailbox's defined keywords, whether they are saved): NULL, in a
    directory from before schema version 11 or a restored mailbox, stands
    for the keywords in use, read once."""
    row = c.execute("SELECT keywords FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
    if row is None:
        raise NotFound("no such mailbox")
    if row[0] is None:
        return keywords_in_use(c, mailbox_id), False
    return parse_defined(row[0]), True


def _save(c: sqlite3.Connection, mailbox_id: int, defined: frozenset[str]) -> None:
    c.execute("UPDATE mailboxes SET keywords = ? WHERE id = ?", (defined_text(defined), mailbox_id))


def admit_keywords(c: sqlite3.Connection, mailbox_id: int, flags: Iterable[str]) -> None:
    """Define the keywords of ``flags`` in the mailbox, in the caller's
    write; KeywordLimit past its bounds (the caller has written nothing yet)."""
    if not keywords_of(flags):
        return
    defined, saved = defined_keywords(c, mailbox_id)
    new = admitted(defined, flags)
    if new is not None or not saved:
        _save(c, mailbox_id, new if new is not None else defined)


def fit_keywords(c: sqlite3.Connection, mailbox_id: int, flags: frozenset[str]) -> frozenset[str]:
    """``flags`` without the keywords the mailbox has no room for; the others
    are defined in it (a copied or delivered message)."""
    if not keywords_of(flags):
        return flags
    defined, saved = defined_keywords(c, mailbox_id)
    kept, new = fitted(defined, flags)
    if new is not None or not saved:
        _save(c, mailbox_id, new if new is not None else defined)
    return kept
