"""The local side of ``fetch --pop3``: a Maildir and the remembered UIDLs.

Maildir delivery follows the maildir(5) protocol: write the message into
``tmp/`` under a unique name, fsync it, then rename it into ``new/``, so a
reader never sees a half-written message and a crash leaves at most a stray
file in ``tmp/``. Messages are stored with LF line ends, as mail readers
expect of Maildir files.

The UIDL state file holds one UIDL (RFC 1939 7) per line. A UIDL is appended
and fsynced right after its message is in ``new/`` and before the client
sends DELE, so a crash at any point can neither lose a message nor fetch it
twice.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

from ..fsutil import write_atomic

_counter = itertools.count()


class Maildir:
    def __init__(self, path: Path) -> None:
        self.path = path
        for sub in ("tmp", "new", "cur"):
            (path / sub).mkdir(parents=True, exist_ok=True, mode=0o700)

    def add(self, raw: bytes) -> Path:
        data = raw.replace(b"\r\n", b"\n")
        host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        now = time.time()
        name = f"{int(now)}.M{int(now * 1e6) % 1000000}P{os.getpid()}Q{next(_counter)}.{host},S={len(data)}"
        tmp = self.path / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        final = self.path / "new" / name
        os.rename(tmp, final)
        _fsync_dir(self.path / "new")
        return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class UIDLState:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> set[str]:
        try:
            return {line.strip() for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()}
        except FileNotFoundError:
            return set()

    def add(self, uidl: str) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(uidl + "\n")
            f.flush()
            os.fsync(f.fileno())

    def prune(self, keep: set[str]) -> None:
        """Forget UIDLs no longer needed: in delete mode all of them once the
        server has committed the deletions; in keep mode those gone from the server."""
        remembered = self.load()
        kept = sorted(remembered & keep)
        write_atomic(self.path, "".join(u + "\n" for u in kept).encode("utf-8"))
