"""A mailbox's defined keywords in the SQLite store (store/keywords.py):
read and extended inside the writes that set flags."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from ..api import NotFound
from ..keywords import admitted, defined_text, fitted_all, keywords_of, parse_defined, spelled

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


def save_keywords(c: sqlite3.Connection, mailbox_id: int, defined: frozenset[str]) -> None:
    c.execute("UPDATE mailboxes SET keywords = ? WHERE id = ?", (defined_text(defined), mailbox_id))


def define_keywords(c: sqlite3.Connection, mailbox_id: int, defined: frozenset[str], saved: bool,
                    flags: Iterable[str]) -> None:
    """Define the keywords of ``flags`` (``spelled`` against ``defined``, as
    ``defined_keywords`` read them in this write); KeywordLimit past the
    bounds (the caller has written nothing yet)."""
    new = admitted(defined, flags)
    if new is not None or not saved:
        save_keywords(c, mailbox_id, new if new is not None else defined)


def admit_keywords(c: sqlite3.Connection, mailbox_id: int,
                   flag_sets: Sequence[frozenset[str]]) -> list[frozenset[str]]:
    """``flag_sets`` as the mailbox keeps flags (``spelled``), their keywords
    defined in it, in the caller's write; KeywordLimit past its bounds (the
    caller has written nothing yet)."""
    if not any(keywords_of(flags) for flags in flag_sets):
        return list(flag_sets)
    defined, saved = defined_keywords(c, mailbox_id)
    out, _ = spelled(defined, flag_sets)
    define_keywords(c, mailbox_id, defined, saved, {f for flags in out for f in flags})
    return out


def fit_keywords(c: sqlite3.Connection, mailbox_id: int,
                 flag_sets: Sequence[frozenset[str]]) -> tuple[list[frozenset[str]], set[str]]:
    """(``flag_sets`` as the mailbox keeps flags without the keywords it has
    no room for, the words left out); the others are defined in it (copied,
    delivered, imported or restored messages: store/keywords.py ``fitted_all``)."""
    if not any(keywords_of(flags) for flags in flag_sets):
        return list(flag_sets), set()
    defined, saved = defined_keywords(c, mailbox_id)
    out, new, left = fitted_all(defined, flag_sets)
    if new is not None or not saved:
        save_keywords(c, mailbox_id, new if new is not None else defined)
    return out, left
