"""Expunged-but-held messages across the processes sharing one data directory.

An IMAP session keeps serving FETCH of a message another session expunged
until it has told its client (RFC 2180 4.1.1); messages.py keeps such rows
under the negated mailbox id while some session holds the mailbox. With
``[server] workers`` above 1 the sessions holding a mailbox may live in any
worker, so each process publishes its holds here: per mailbox, the lowest
mod-sequence its sessions have announced expunges up to (a lower bound: a
rise may be published late, a fall is published before the session reads
the mailbox). A process that removes held rows reads every other live
process's board inside its write transaction.

``holds/<token>.lock`` is created and flock()ed by a process when it starts
publishing and stays locked for its lifetime; the kernel drops the lock when
the process dies, however it dies, so a board whose lock can be taken is a
dead process's and is ignored and removed. ``holds/<token>.holds`` is the
board itself: signed 64-bit numbers, a count then that many (mailbox id,
mod-sequence) pairs, rewritten in place under an exclusive flock() that a
reader takes shared, so a reader sees one whole version. Not replaced by a
rename nor truncated: on ext4 either makes the close or the rename wait
for the data to reach the disk (auto_da_alloc), a millisecond or more on
the event loop. No fsync: the boards describe live processes, which a
crash of the machine ends anyway.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from array import array
from itertools import chain
from pathlib import Path

LOCK = ".lock"
BOARD = ".holds"


class HoldBoard:
    """This process's board of holds and a view of the other processes'."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.token: str | None = None  # set while this process publishes
        self._lock_fd: int | None = None
        self._board_fd: int | None = None

    @property
    def joined(self) -> bool:
        return self.token is not None

    def join(self) -> None:
        """Start publishing: take this process's lock for its lifetime."""
        if self.token is not None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        token = f"{os.getpid()}-{secrets.token_hex(6)}"
        fd = os.open(self.dir / (token + LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd = fd
        self._board_fd = os.open(self.dir / (token + BOARD), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.token = token

    def publish(self, lowest: dict[int, int]) -> None:
        """Replace this process's board: mailbox id -> lowest announced mod-sequence."""
        fd = self._board_fd
        if fd is None:
            return
        numbers = array("q", [len(lowest)])
        numbers.extend(chain.from_iterable(lowest.items()))
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            os.pwrite(fd, numbers.tobytes(), 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def others(self) -> dict[int, int]:
        """Mailbox id -> the lowest mod-sequence the sessions of any other
        live process have announced expunges up to; dead processes' boards
        are removed on the way."""
        lowest: dict[int, int] = {}
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return lowest
        for entry in entries:
            if not entry.name.endswith(BOARD):
                continue
            token = entry.name[: -len(BOARD)]
            if token == self.token or not self._alive(token):
                continue
            numbers = self._read(entry.path)
            for mailbox_id, modseq in zip(numbers[1::2], numbers[2::2], strict=True):
                if modseq < lowest.get(mailbox_id, modseq + 1):
                    lowest[mailbox_id] = modseq
        return lowest

    @staticmethod
    def _read(path: str) -> array[int]:
        """A board's count and pairs, as one whole version."""
        numbers: array[int] = array("q")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # it left meanwhile
            return numbers
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            head = os.pread(fd, 8, 0)
            if len(head) == 8:
                numbers.frombytes(head)
                data = os.pread(fd, 16 * max(0, numbers[0]), 8)
                numbers.frombytes(data[: len(data) // 16 * 16])
        finally:
            os.close(fd)
        return numbers

    def _alive(self, token: str) -> bool:
        """Whether the process of ``token`` still runs (holds its lock);
        a dead one's files are removed."""
        try:
            fd = os.open(self.dir / (token + LOCK), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._remove(token)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        self._remove(token)
        return False

    def _remove(self, token: str) -> None:
        for suffix in (BOARD, LOCK):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.dir / (token + suffix))

    def leave(self) -> None:
        """Stop publishing (the store closes): nothing of this process is held."""
        if self.token is None:
            return
        token, self.token = self.token, None
        self._remove(token)
        for fd in (self._board_fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._board_fd = self._lock_fd = None
