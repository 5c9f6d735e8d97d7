"""The embedded store: SQLite (WAL) for the index and small bodies, segment
files for the other bodies.

``SQLiteStore`` implements store/api.py's ``Store`` as one mixin per
aggregate on a shared core:

- core.py: the connections, the group-commit writer (writer.py), the checks
  of session references, change listeners;
- schema.py: the tables, and the migration of older data directories;
- bodies.py: message bytes (small ones in the index, the others in segment
  files), reference counts, compaction;
- directory.py: domains, accounts, sender grants, aliases, lists;
- contacts.py: the address book and the addresses written to and received from;
- mailboxes.py: mailboxes, subscriptions, \\Recent, status;
- messages.py: messages, flags, UIDs, expunge, copy, changes; expunged
  messages sessions of any process still hold (holds.py);
- search.py: derived data, header and full-text search (textindex.py),
  background indexing;
- queue.py: the outbound queue.

The data directory holds ``index.sqlite3`` (with its WAL), ``blobs/`` (the
segment files), ``revocations`` (store/revocation.py) and ``holds/`` (what
the sessions of each serving process hold, holds.py).
"""

from __future__ import annotations

import sqlite3
import time

from .bodies import COMPACT_INTERVAL
from .contacts import ContactsMixin
from .core import DB_FILE
from .directory import DirectoryMixin
from .mailboxes import MailboxesMixin
from .messages import MessagesMixin
from .queue import QueueMixin
from .restore import RestoreMixin
from .search import SearchMixin

__all__ = ["DB_FILE", "SQLiteStore"]


class SQLiteStore(DirectoryMixin, MailboxesMixin, MessagesMixin, SearchMixin, QueueMixin, ContactsMixin,
                  RestoreMixin):
    """Store backend on SQLite + segment files in ``data_dir``."""

    _next_compaction = 0.0  # monotonic time of the next compaction pass

    def _background_work(self, c: sqlite3.Connection) -> bool | float:
        """Idle-time work on the writer thread: index new bodies first, then
        now and then reclaim the space of expunged ones. True: more to do now;
        a number: look again after that many seconds (indexing is waiting
        for disk space)."""
        more = self._index_some(c)
        if more is True:
            return True
        now = time.monotonic()
        if now >= self._next_compaction:
            self._next_compaction = now + COMPACT_INTERVAL
            if self.compact_step(c):
                return True
        return more
