"""The spam decision record: one JSON object per line in
``DATA/spam/decisions.jsonl``, appended for every verdict of the MX port,
so ``mailyard spam explain`` can answer "why was this rejected / filed in
Junk?" after the fact, whatever ``[server] log_format`` or log destination
(journald, a rotated file) the operator chose.

Bounded: past ``max_bytes`` the file is renamed ``decisions.jsonl.1``
(replacing the older one), so the record takes at most twice that. The file
is open with O_APPEND and each write is whole lines in one call, so several
server processes share it without interleaving lines; every write first
looks at the path, so a rename by one of them is seen by the next write of
the others (which then open the new file).

On the MX port's accept path (``append_soon``) the lines of the verdicts
given in one turn of the event loop are written together at the start of
its next turn: one write for all of them, made before any of those
messages' delivery commits (which waits for later turns), so a record is on
disk before its message is answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

FILE = "decisions.jsonl"

log = logging.getLogger("mailyard.spam")

_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str)


class DecisionLog:
    def __init__(self, directory: Path, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.directory = directory
        self.path = directory / FILE
        self.max_bytes = max(max_bytes, 4096)
        self._made = False
        self._fd: int | None = None
        self._fd_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file _fd writes
        self._pending: list[bytes] = []

    @staticmethod
    def _line(record: Mapping[str, Any]) -> bytes:
        return (_ENCODER.encode(record) + "\n").encode()

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one decision now; raises OSError (the caller logs it: the
        message is delivered whether or not its record is written)."""
        self._write(self._line(record))

    def append_soon(self, record: Mapping[str, Any]) -> None:
        """Add one decision at the start of the event loop's next turn,
        together with the others of this turn (see the module doc); a
        failure to write is logged, never raised. Without a running loop,
        at once."""
        line = self._line(record)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            self._write_logged(line)
            return
        if not self._pending:
            loop.call_soon(self.flush)
        self._pending.append(line)

    def flush(self) -> None:
        """Write the decisions ``append_soon`` holds."""
        if self._pending:
            lines, self._pending = self._pending, []
            self._write_logged(b"".join(lines))

    def _write_logged(self, data: bytes) -> None:
        try:
            self._write(data)
        except OSError as exc:
            log.error("spam: the decision record cannot be written: %s", exc)

    def _write(self, data: bytes) -> None:
        if not self._made:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._made = True
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            current = None
        else:
            current = (st.st_dev, st.st_ino)
            if st.st_size + len(data) > self.max_bytes:
                os.replace(self.path, self.path.with_name(FILE + ".1"))
                current = None
        if self._fd is not None and current != self._fd_id:
            # renamed away (by this process or another): the next lines go to a new file
            self._close_fd()
        if self._fd is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            st = os.fstat(fd)
            self._fd, self._fd_id = fd, (st.st_dev, st.st_ino)
        os.write(self._fd, data)

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd, self._fd_id = self._fd, None, None
            os.close(fd)

    def close(self) -> None:
        """Write what is held, and close the file."""
        self.flush()
        self._close_fd()

    def records(self) -> Iterator[dict[str, Any]]:
        """Every decision kept, oldest first."""
        for path in (self.path.with_name(FILE + ".1"), self.path):
            try:
                with path.open("rb") as f:
                    for raw in f:
                        try:
                            doc = json.loads(raw)
                        except ValueError:
                            continue  # a line cut short by a crash
                        if isinstance(doc, dict):
                            yield doc
            except FileNotFoundError:
                continue

    def find(self, key: str) -> list[dict[str, Any]]:
        """The decisions about the message with queue id or Message-ID ``key``."""
        bare = key.strip().strip("<>").lower()
        return [r for r in self.records()
                if str(r.get("queue_id", "")).lower() == bare
                or str(r.get("message_id", "")).strip("<>").lower() == bare]
