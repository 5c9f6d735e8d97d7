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
board itself, pairs of signed 64-bit numbers (mailbox id, mod-sequence),
replaced with a rename so a reader sees one whole version. No fsync: the
boards describe live processes, which a crash of the machine ends anyway.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from array import array
from pathlib import Path

LOCK = ".lock"
BOARD = ".holds"


class HoldBoard:
    """This process's board of holds and a view of the other processes'."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.token: str | None = None  # set while this process publishes
        self._lock_fd: int | None = None

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
        self.token = token

    def publish(self, lowest: dict[int, int]) -> None:
        """Replace this process's board: mailbox id -> lowest announced mod-sequence."""
        if self.token is None:
            return
        numbers = array("q")
        for mailbox_id, modseq in lowest.items():
            numbers.extend((mailbox_id, modseq))
        tmp = self.dir / (self.token + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, numbers.tobytes())
        finally:
            os.close(fd)
        os.replace(tmp, self.dir / (self.token + BOARD))

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
            try:
                data = Path(entry.path).read_bytes()
            except FileNotFoundError:  # it left meanwhile
                continue
            numbers = array("q")
            numbers.frombytes(data[: len(data) // 16 * 16])
            for i in range(0, len(numbers), 2):
                mailbox_id, modseq = numbers[i], numbers[i + 1]
                if modseq < lowest.get(mailbox_id, modseq + 1):
                    lowest[mailbox_id] = modseq
        return lowest

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
        for suffix in (BOARD, ".tmp", LOCK):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.dir / (token + suffix))

    def leave(self) -> None:
        """Stop publishing (the store closes): nothing of this process is held."""
        if self.token is None:
            return
        token, self.token = self.token, None
        self._remove(token)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
