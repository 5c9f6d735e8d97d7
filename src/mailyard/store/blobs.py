"""Message bodies in append-only segment files under ``<data>/blobs/``.

Why segments rather than one file per message: a group commit then costs one
fdatasync for all the bodies it carries, instead of one fsync (plus a directory
fsync) per message. A body is addressed by (segment, offset, length); the index
row that points at it is committed only after the segment is synced, so a crash
can leave unreferenced bytes at a segment's end but never a visible message
whose bytes are missing (DESIGN.md "Durability"). Space of expunged bodies is
reclaimed by compaction (store/sqlite/bodies.py), which rewrites mostly-dead
sealed segments.

Small bodies are not here: they are kept in the index itself (segment
``INLINE``, store/sqlite/bodies.py), so a commit of small messages syncs the
WAL only. ``body_bytes`` reads a body in either place.

Only the store's writer thread appends, inside a write transaction; any
thread may read (os.pread). Several processes may serve one store (``[server]
workers``): SQLite's write lock then orders their appends, and each follows
the others' rollovers and file ends (``follow``) before it appends.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

from .api import StorageFull

# The segment number of a body whose bytes are in the index (the
# ``body_data`` table), not in a file: segment files are numbered from 1.
INLINE = 0

# What a reader of the SQLite index selects from ``bodies b`` for
# ``body_bytes`` (the order of its arguments after ``read``), with
# ``BODY_DATA`` joined after it: the store's readers and the backup's.
BODY_PLACE = "b.segment, b.offset, b.length, d.data"
BODY_DATA = "LEFT JOIN body_data d ON d.body_id = b.id"


def body_bytes(
    read: Callable[[int, int, int], bytes], segment: int, offset: int, length: int, data: bytes | None
) -> bytes:
    """The bytes of a body row: ``data`` (its ``body_data`` row, None for
    none) for an inline body, else ``read(segment, offset, length)`` from
    its segment file. The one place that tells the two apart, for the
    store's readers and the backup's."""
    if segment == INLINE:
        if data is None or len(data) != length:
            raise OSError(errno.EIO, f"an inline body has {None if data is None else len(data)} bytes, "
                                     f"its index says {length}")
        return data
    return read(segment, offset, length)


class SegmentFiles:
    def __init__(self, directory: Path, segment_size: int, fsync: bool) -> None:
        self.directory = directory
        self.segment_size = segment_size
        self.fsync = fsync
        directory.mkdir(parents=True, exist_ok=True)
        self._read_fds: dict[int, int] = {}
        self._lock = threading.Lock()
        self._write_segment = 0
        self._write_fd = -1
        self._write_pos = 0
        self._dirty = False
        self._left: list[int] = []  # segments rolled over from, open until their bytes are synced

    def path(self, segment: int) -> Path:
        return self.directory / f"{segment:08d}.seg"

    def existing(self) -> list[int]:
        return sorted(int(p.stem) for p in self.directory.glob("*.seg") if p.stem.isdigit())

    # --- writer side -----------------------------------------------------
    def open_for_append(self, segment: int) -> None:
        """Continue appending to ``segment`` (created if absent). A segment
        left with bytes not yet synced stays open until the next ``sync``
        (before the commit of the rows that point at them), so a failure to
        sync it fails that commit."""
        if self._write_fd >= 0:
            if self._dirty:
                self._left.append(self._write_fd)
                self._dirty = False
            else:
                os.close(self._write_fd)
        created = not self.path(segment).exists()
        self._write_fd = os.open(self.path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._write_segment = segment
        self._write_pos = os.fstat(self._write_fd).st_size
        if created and self.fsync:
            self._sync_directory()

    def follow(self, latest: int) -> None:
        """Append where every process sharing the directory appends: to
        ``latest`` (the newest segment with a committed row) if it is newer
        than this process's, at the file's real end. Called under the
        store's write lock (inside a write transaction), so no other process
        appends between this and the commit."""
        if latest > self._write_segment:
            self.open_for_append(latest)
        elif self._write_fd >= 0:
            self._write_pos = os.fstat(self._write_fd).st_size

    @property
    def current_segment(self) -> int:
        return self._write_segment

    def needs_rollover(self) -> bool:
        return self._write_pos >= self.segment_size

    def append(self, data: bytes) -> tuple[int, int]:
        """Append ``data`` to the current segment; returns (segment, offset)."""
        offset = self._write_pos
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._write_fd, view)
                view = view[written:]
        except OSError as exc:
            # Leave the segment as it was: partial bytes past _write_pos are
            # garbage nobody references, and the next append overwrites nothing
            # (O_APPEND), so truncate them away to keep offsets exact.
            os.ftruncate(self._write_fd, offset)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull("the disk is full") from exc
            raise
        self._write_pos = offset + len(data)
        self._dirty = True
        return self._write_segment, offset

    def sync(self) -> None:
        """Make every appended byte durable (called once per group commit)."""
        while self._left:
            if self.fsync:
                os.fdatasync(self._left[0])
            os.close(self._left.pop(0))
        if self._dirty and self.fsync:
            os.fdatasync(self._write_fd)
        self._dirty = False

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove(self, segment: int) -> None:
        with self._lock:
            fd = self._read_fds.pop(segment, None)
            if fd is not None:
                os.close(fd)
        try:
            os.unlink(self.path(segment))
        except FileNotFoundError:
            pass

    # --- reader side ------------------------------------------------------
    def read(self, segment: int, offset: int, length: int) -> bytes:
        fd = self._read_fds.get(segment)
        if fd is None:
            with self._lock:
                fd = self._read_fds.get(segment)
                if fd is None:
                    fd = os.open(self.path(segment), os.O_RDONLY)
                    self._read_fds[segment] = fd
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise OSError(errno.EIO, f"segment {segment} is shorter than its index says")
        return data

    def body(self, segment: int, offset: int, length: int, data: bytes | None) -> bytes:
        """The bytes of a body row, inline or in a segment (``body_bytes``)."""
        return body_bytes(self.read, segment, offset, length, data)

    def close(self) -> None:
        if self._write_fd >= 0:
            self.sync()
            os.close(self._write_fd)
            self._write_fd = -1
        with self._lock:
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()
