"""What earlier imports (transfer/) brought in: the source key of every
imported message, kept in ``DATA/import-state.sqlite`` (beside the store's
own database, not in it, so the store's schema stays as it is; SQLite is
the store layer's business, so this file lives here).

A key is remembered per (account, source): for IMAP the source is the
server, user and folder and the key is ``UIDVALIDITY:UID``; for files the
source is the target folder and the key is the content hash (with a count
for identical copies). A batch is first written as *pending* with the
target mailbox's UIDNEXT; the store's append is atomic, so on the next run
a pending batch is settled by looking at the messages above that UIDNEXT:
those whose content hash is there were written, the rest were not. A crash
between the store's commit and this file's commit therefore duplicates
nothing.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

FILE_NAME = "import-state.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS imported (
    account TEXT NOT NULL, source TEXT NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY (account, source, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    account TEXT NOT NULL, source TEXT NOT NULL, key TEXT NOT NULL,
    mailbox_id INTEGER NOT NULL, uid_validity INTEGER NOT NULL, uid_from INTEGER NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (account, source, key)) WITHOUT ROWID;
"""


class ImportState:
    """The remembered source keys; safe to use from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> ImportState:
        return cls(data_dir / FILE_NAME)

    def close(self) -> None:
        self._db.close()

    def known(self, account: str, source: str) -> set[str]:
        """Every key imported from ``source`` into ``account``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key FROM imported WHERE account = ? AND source = ?", (account, source)).fetchall()
        return {r[0] for r in rows}

    def begin(self, account: str, source: str, mailbox_id: int, uid_validity: int, uid_from: int,
              keyed: Sequence[tuple[str, str]]) -> None:
        """Record a batch (key, content digest) about to be appended at or above UID ``uid_from``."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(account, source, key, mailbox_id, uid_validity, uid_from, digest) for key, digest in keyed])

    def commit(self, account: str, source: str, keys: Iterable[str]) -> None:
        """The batch is in the store: its keys are imported."""
        keys = list(keys)
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO imported VALUES (?, ?, ?)",
                                 [(account, source, k) for k in keys])
            self._db.executemany("DELETE FROM pending WHERE account = ? AND source = ? AND key = ?",
                                 [(account, source, k) for k in keys])

    def drop_pending(self, account: str, source: str, keys: Iterable[str]) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM pending WHERE account = ? AND source = ? AND key = ?",
                                 [(account, source, k) for k in keys])

    def pending(self, account: str) -> list[tuple[str, str, int, int, int, str]]:
        """(source, key, mailbox_id, uid_validity, uid_from, digest) of unsettled batches."""
        with self._lock:
            return self._db.execute(
                "SELECT source, key, mailbox_id, uid_validity, uid_from, digest FROM pending WHERE account = ?",
                (account,)).fetchall()
