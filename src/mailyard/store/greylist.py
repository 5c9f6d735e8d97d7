"""Greylisting state (spam/greylist.py decides): the first attempt of each
(network, sender, recipient) triplet and the (network, sender domain) pairs
that retried correctly, kept in ``DATA/greylist.sqlite`` beside the store's
database (not in it: the store's schema stays as it is; SQLite is the store
layer's business, so this file lives here).

Every worker process opens the same file (WAL mode, so readers do not wait
for a writer) and sees the others' attempts: a retry that reaches another
worker passes just the same, and a restart forgets nothing. Rows expire
(triplets after the retry window, pairs at their end), and `expire` runs
every few hundred writes, so the file stays bounded by the traffic of one
retry window.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

FILE_NAME = "greylist.sqlite"
# Writes between two sweeps of expired rows.
EXPIRE_EVERY = 256
# Rows of each table at most; past it the oldest go first (a flood of forged senders).
MAX_ROWS = 500_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS triplets (
    network TEXT NOT NULL, sender TEXT NOT NULL, rcpt TEXT NOT NULL, first REAL NOT NULL,
    PRIMARY KEY (network, sender, rcpt)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS triplets_first ON triplets (first);
CREATE TABLE IF NOT EXISTS allowed (
    network TEXT NOT NULL, domain TEXT NOT NULL, until REAL NOT NULL,
    PRIMARY KEY (network, domain)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS allowed_until ON allowed (until);
"""


class GreylistState:
    """The greylisting tables; safe to use from several threads and processes."""

    def __init__(self, path: Path, retry_window: float) -> None:
        self.path = path
        self.retry_window = retry_window
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # losing the last attempts in a crash costs one more retry
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._writes = 0

    @classmethod
    def in_data_dir(cls, data_dir: Path, retry_window: float) -> GreylistState:
        return cls(data_dir / FILE_NAME, retry_window)

    def close(self) -> None:
        self._db.close()

    def first_seen(self, network: str, sender: str, rcpt: str) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT first FROM triplets WHERE network = ? AND sender = ? AND rcpt = ?",
                                   (network, sender, rcpt)).fetchone()
        return row[0] if row else None

    def is_allowed(self, network: str, domain: str, now: float) -> bool:
        with self._lock:
            row = self._db.execute("SELECT until FROM allowed WHERE network = ? AND domain = ?",
                                   (network, domain)).fetchone()
        return row is not None and row[0] >= now

    def record_first(self, network: str, sender: str, rcpt: str, now: float) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO triplets VALUES (?, ?, ?, ?)", (network, sender, rcpt, now))
            self._wrote(now)

    def allow(self, network: str, domain: str, now: float, until: float,
              triplets: list[tuple[str, str, str]]) -> None:
        """The pair passes until ``until``; its triplets are done with."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO allowed VALUES (?, ?, ?)", (network, domain, until))
            self._db.executemany("DELETE FROM triplets WHERE network = ? AND sender = ? AND rcpt = ?", triplets)
        with self._lock:
            self._wrote(now)

    def _wrote(self, now: float) -> None:
        self._writes += 1
        if self._writes % EXPIRE_EVERY == 0:
            self._expire(now)

    def expire(self, now: float) -> None:
        with self._lock:
            self._expire(now)

    def _expire(self, now: float) -> None:
        db = self._db
        db.execute("DELETE FROM triplets WHERE first < ?", (now - self.retry_window,))
        db.execute("DELETE FROM allowed WHERE until < ?", (now,))
        for table, key, column in (("triplets", "network, sender, rcpt", "first"),
                                   ("allowed", "network, domain", "until")):
            (count,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
            if count > MAX_ROWS:
                db.execute(f"DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} ORDER BY {column}"
                           f" LIMIT ?)", (count - MAX_ROWS,))

    def __len__(self) -> int:
        with self._lock:
            return sum(self._db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("triplets", "allowed"))
