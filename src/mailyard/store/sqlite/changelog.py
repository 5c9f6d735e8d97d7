"""Recent changes of each mailbox in memory, shared by every session.

Every IMAP session on a mailbox asks, before it answers a command, what
changed since the mod-sequence it last reported (RFC 9051 7.4.1 / 7.5.1,
RFC 7162 3.2.10). Asked of SQLite, that is three queries and a new
``MessageInfo`` per changed row for every session after every write: with N
sessions on one mailbox, the work of one write grows with N. Here a write's
rows are read once, by the first session that asks after it, and appended
to the mailbox's log in mod-sequence order; every other session answers
from the log with a bisect and the records it already holds.

The same log keeps, for the mailboxes sessions list (SELECT, the first FETCH
after it, STATUS RECENT), the list of all their messages, brought forward
from the log instead of read again per session; a budget of messages over
all logs bounds the memory (least recently used logs go first).

The log is exact only from its ``base`` on: older questions (a session that
selected the mailbox before the log began, or one far behind after the log
was trimmed) go to SQLite as before. A write of more rows than the event loop
reads at once (``CATCH_UP_INLINE``) starts the log again after it: the
questions from before it are answered from the tables, off the loop.
Whether the log is current is decided by the mailbox's ``highest_modseq``
in the database, not by change notifications, so writes by another process
sharing the directory are seen too. Only the loop thread reads (SQLiteCore: reads run on the caller's
thread), so there is no locking.
"""

from __future__ import annotations

import sqlite3
from bisect import bisect_right
from collections.abc import Callable

from ..api import Changes, MessageInfo

MAX_ENTRIES = 8192  # per mailbox; the older half goes when it is full
# Entries and listed messages over all logs (about 100 bytes each: some 30 MB
# at most); the least recently used logs go beyond it.
LOG_BUDGET = 300_000
FIRST_REACH = 1024  # a new log starts at the first question if it is at most this far behind
# Changed rows a catch-up reads on the event loop (some 3 ms per 1,000, like
# core.LIST_INLINE); a write of more starts the log again after it.
CATCH_UP_INLINE = 2_000


class ChangeLog:
    """One mailbox's changes with mod-sequence above ``base``, through ``top``.

    ``entries`` holds, in mod-sequence order, a ``MessageInfo`` for a message
    that changed (its state when read) or the UID of one that was expunged.
    A message that changed again later has a later entry; the last one wins.
    """

    __slots__ = ("base", "entries", "modseqs", "snap_at", "snapshot", "top")

    def __init__(self, top: int) -> None:
        self.base = top
        self.top = top
        self.modseqs: list[int] = []
        self.entries: list[MessageInfo | int] = []
        # every message of the mailbox by UID, in UID order, as of ``snap_at``
        self.snapshot: dict[int, MessageInfo] | None = None
        self.snap_at = 0

    def cost(self) -> int:
        """Records held: log entries and listed messages (the memory budget's unit)."""
        return len(self.entries) + (len(self.snapshot) if self.snapshot is not None else 0)

    def catch_up(self, read: sqlite3.Connection, mailbox_id: int, top: int, cols: str,
                 record: Callable[[tuple], MessageInfo], most: int) -> bool:
        """Append the changes with mod-sequence in (self.top, top]; ``cols``
        selects a message row (its sixth column the mod-sequence) and
        ``record`` makes the ``MessageInfo`` of one. False, and the log as
        it was, when they are more than ``most`` rows: a write of many rows
        (a STORE 1:* of a big mailbox) is not read on the event loop, whose
        thread runs this; at most ``most + 1`` rows of each table are read.

        The caller read ``top`` from the mailbox row in the same read
        transaction (one WAL snapshot), so the rows read here are exactly the
        state at ``top``: a row changed again by a later commit cannot slip out
        of the range, and a message appended before ``top`` is never missed
        (a session told of a higher UID first could not place it any more)."""
        lo = self.top
        rows = read.execute(
            f"SELECT {cols} FROM messages WHERE mailbox_id = ? AND modseq > ? AND modseq <= ? LIMIT ?",
            (mailbox_id, lo, top, most + 1),
        ).fetchall()
        if len(rows) > most:
            return False
        gone = read.execute(
            "SELECT uid, modseq FROM expunged WHERE mailbox_id = ? AND modseq > ? AND modseq <= ? LIMIT ?",
            (mailbox_id, lo, top, most + 1 - len(rows)),
        ).fetchall()
        if len(rows) + len(gone) > most:
            return False
        new: list[tuple[int, MessageInfo | int]] = [(r[5], record(r)) for r in rows]
        new += [(modseq, uid) for uid, modseq in gone]
        new.sort(key=lambda e: e[0])
        self.modseqs += [m for m, _ in new]
        self.entries += [e for _, e in new]
        self.top = top
        if len(self.entries) > MAX_ENTRIES:
            cut = len(self.entries) // 2
            self.base = self.modseqs[cut - 1]
            del self.modseqs[:cut]
            del self.entries[:cut]
        return True

    def since(self, modseq: int) -> Changes:
        """What changed after ``modseq`` (at least ``base``), as SQLite would say."""
        latest: dict[int, MessageInfo | int] = {}
        for e in self.entries[bisect_right(self.modseqs, modseq) :]:
            latest[e if isinstance(e, int) else e.uid] = e
        changed = [e for e in latest.values() if not isinstance(e, int)]
        changed.sort(key=lambda m: m.uid)
        vanished = sorted(e for e in latest.values() if isinstance(e, int))
        return Changes(self.top, changed, vanished)

    def listed(self) -> bool:
        """Whether the log keeps the mailbox's list: ``messages`` then costs
        the changes since it was read, not a read of every message."""
        return self.snapshot is not None and self.snap_at >= self.base

    def adopt(self, listed: dict[int, MessageInfo], at: int) -> bool:
        """Keep ``listed`` (every message by UID, in UID order, as of the
        mod-sequence ``at``; read on another connection, off the event loop)
        unless the log keeps a list already or its changes no longer reach
        back to ``at``. ``messages`` brings it forward from ``at``; a list
        read past the log's top is current once the log has caught up,
        which ``messages``' callers do first in their read snapshot."""
        if self.listed() or at < self.base:
            return False
        self.snapshot = listed
        self.snap_at = at
        return True

    def messages(self, load: Callable[[], list[MessageInfo]]) -> tuple[list[MessageInfo], bool]:
        """Every message of the mailbox as of ``top``, in UID order, and
        whether ``load`` (a read of them all, in the caller's snapshot at
        ``top``) was called. The list is kept and brought forward from the
        log, so the sessions that select a mailbox share one read of it."""
        snap = self.snapshot
        if snap is None or self.snap_at < self.base:
            self.snapshot = {m.uid: m for m in load()}
            self.snap_at = self.top
            return list(self.snapshot.values()), True
        if self.snap_at < self.top:
            last = next(reversed(snap), 0)
            ordered = True
            for e in self.entries[bisect_right(self.modseqs, self.snap_at) :]:
                if isinstance(e, int):
                    snap.pop(e, None)
                else:
                    if e.uid > last:
                        last = e.uid
                    elif e.uid not in snap:
                        ordered = False  # a UID below the highest: not at the end of the dict
                    snap[e.uid] = e
            if not ordered:
                snap = self.snapshot = dict(sorted(snap.items()))
            self.snap_at = self.top
        return list(snap.values()), False
