"""A cross-process signal that session references may have gone stale.

Sessions (IMAP, POP3, SMTP submission, webmail) hold an account id, the
account's credential epoch and the ids of mailboxes; the store answers "is
this still valid?" on every command and every store access. Those answers are
cached in each process, and the cache must be dropped whenever *any* process
sharing the data directory (``mailyard serve``, a ``mailyard user remove`` or
``user passwd`` run beside it) deletes a mailbox, removes an account or
changes a password.

The signal is eight bytes in a file of the data directory, mapped into memory
(as SQLite's own ``-shm`` file is): a writer stores a fresh random value after
its commit, a reader compares the value with the one its cache was filled
under. Reading it is a memory load, so the check costs nothing measurable per
command, unlike ``PRAGMA data_version`` or a lookup (both a few microseconds),
and unlike data_version it does not move with every delivery or flag change.
"""

from __future__ import annotations

import mmap
import os
import secrets
from pathlib import Path

_SIZE = 8


class RevocationSignal:
    """The shared token: ``value()`` to read, ``bump()`` after a revoking commit."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)  # zeros; a concurrent opener does the same
            self._map = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)
        self._view: memoryview | None = memoryview(self._map).cast("Q")

    def value(self) -> int:
        view = self._view
        return view[0] if view is not None else 0

    def bump(self) -> None:
        """Store a value no reader has cached under. A random one rather than
        a count: two processes bumping at once cannot both write the same
        number and hide the second change."""
        view = self._view
        if view is not None:
            view[0] = secrets.randbits(64)

    def close(self) -> None:
        if self._view is not None:
            self._view.release()
            self._view = None
            self._map.close()
