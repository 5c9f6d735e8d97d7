"""Spool files: where a message being received waits, on disk, until it is complete.

SMTP hands a large message's data over in parts as it arrives
(protocols/smtp/data.py); the parts go to a spool file here instead of
memory, so an unfinished transfer costs kilobytes of memory whatever its
size, and many of them cannot exhaust the server. The spool is not the
store: nothing in it is acknowledged. The complete message is stored (and
made durable) by the normal delivery path before ``250``; the spool file
is then dropped.

Spool files live in ``<data>/spool/`` (the data directory's file system, not
``/tmp``, which may be memory-backed). They are created without a name where
the system allows it (``O_TMPFILE``; otherwise created and unlinked at once),
so the kernel reclaims them when the connection ends, and even after a
``kill -9`` none is left behind; ``sweep`` removes any stray file at start.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO

# Read back in pieces of this size (a message is read once, at its end).
_READ_CHUNK = 1 << 20


class SpoolFile:
    """One message's data so far, appended in order."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.size = 0

    def write(self, data: bytes) -> None:
        """Append ``data``; OSError (e.g. ENOSPC) is the caller's to handle."""
        self._file.write(data)
        self.size += len(data)

    def read_all(self) -> bytes:
        """Everything written, in one bytes object (blocking: run it in a thread)."""
        fd = self._file.fileno()
        self._file.flush()
        out = bytearray()
        offset = 0
        while offset < self.size:
            piece = os.pread(fd, min(_READ_CHUNK, self.size - offset), offset)
            if not piece:
                raise OSError(f"spool file is shorter than written ({offset} of {self.size} octets)")
            out += piece
            offset += len(piece)
        return bytes(out)

    def close(self) -> None:
        """Drop the file (its space is freed: it has no name)."""
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed


class MessageSpool:
    """The spool directory of one data directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def sweep(self) -> int:
        """Remove files left in the spool directory; returns how many."""
        removed = 0
        for path in self.directory.iterdir():
            try:
                path.unlink()
                removed += 1
            except (IsADirectoryError, PermissionError, FileNotFoundError):
                pass
        return removed

    def open(self) -> SpoolFile:
        """A new, empty, nameless spool file (buffered writes)."""
        return SpoolFile(tempfile.TemporaryFile(dir=self.directory, prefix="msg-"))  # noqa: SIM115 - closed by SpoolFile.close
