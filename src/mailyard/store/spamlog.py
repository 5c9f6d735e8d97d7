"""The spam decision record: one JSON object per line in
``DATA/spam/decisions.jsonl``, appended for every verdict of the MX port,
so ``mailyard spam explain`` can answer "why was this rejected / filed in
Junk?" after the fact, whatever ``[server] log_format`` or log destination
(journald, a rotated file) the operator chose.

Bounded: past ``max_bytes`` the file is renamed ``decisions.jsonl.1``
(replacing the older one), so the record takes at most twice that. Each
append opens the file with O_APPEND and writes one line in one call, so
several server processes share it without interleaving lines, and a rename
by one of them is seen by the next append of the others.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

FILE = "decisions.jsonl"


class DecisionLog:
    def __init__(self, directory: Path, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.directory = directory
        self.path = directory / FILE
        self.max_bytes = max(max_bytes, 4096)
        self._made = False

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one decision; raises OSError (the caller logs it: the
        message is delivered whether or not its record is written)."""
        line = (json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=str) + "\n").encode()
        if not self._made:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._made = True
        try:
            if self.path.stat().st_size + len(line) > self.max_bytes:
                os.replace(self.path, self.path.with_name(FILE + ".1"))
        except FileNotFoundError:
            pass
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

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
