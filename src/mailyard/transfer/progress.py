"""Progress and the end-of-command summary of long transfers.

On a terminal a one-line bar is redrawn in place (messages, messages/s, MB/s,
ETA); otherwise a plain line is written now and then, so logs stay readable.
Both go to stderr: stdout carries only the summary a script may parse.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from ..store.keywords import MAX_KEYWORD_OCTETS, MAX_KEYWORDS, MAX_KEYWORDS_OCTETS


@dataclass
class Summary:
    """What a command did: counts, octets, time and every skip with its reason."""

    imported: int = 0
    octets: int = 0
    already: int = 0  # present from an earlier run (the source key is remembered)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count
    warnings: list[str] = field(default_factory=list)
    # folder -> the keywords its messages went in without (store/keywords.py bounds)
    keywords_left_out: dict[str, set[str]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def skip(self, reason: str, count: int = 1, detail: str = "") -> None:
        with self.lock:
            self.skipped[reason] += count
            if detail:
                self.warnings.append(detail)

    def warn(self, text: str) -> None:
        with self.lock:
            self.warnings.append(text)

    def left_out(self, folder: str, keywords: set[str]) -> None:
        """The messages of ``folder`` went in without ``keywords`` (past the bounds of store/keywords.py)."""
        if keywords:
            with self.lock:
                self.keywords_left_out.setdefault(folder, set()).update(keywords)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def lines(self, verb: str = "imported") -> list[str]:
        secs = max(self.seconds, 1e-6)
        out = [
            f"{verb} {self.imported} messages, {_mb(self.octets)} in {secs:.1f} s "
            f"({self.imported / secs:.0f} messages/s, {self.octets / secs / 1e6:.1f} MB/s)"
        ]
        if self.already:
            out.append(f"already there from an earlier run: {self.already}")
        for reason, count in sorted(self.skipped.items()):
            out.append(f"skipped {count}: {reason}")
        out += keywords_left_out_lines(self.keywords_left_out)
        return out


def keywords_left_out_lines(left_out: dict[str, set[str]]) -> list[str]:
    """The summary's lines for keywords messages went in without (an import,
    a restore), one per folder."""
    return [f"warning: {len(words)} keyword{'s' if len(words) != 1 else ''} left out in {folder} "
            f"(a folder holds at most {MAX_KEYWORDS} keywords of at most {MAX_KEYWORD_OCTETS} octets, "
            f"{MAX_KEYWORDS_OCTETS} in all): {' '.join(sorted(words)[:5])}{' ...' if len(words) > 5 else ''}"
            for folder, words in sorted(left_out.items())]


def _mb(octets: int) -> str:
    return f"{octets / 1e6:.1f} MB"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts messages and octets as they are written; thread-safe."""

    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None,
                 tty: bool | None = None, interval: float | None = None) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self.done = 0
        self.octets = 0
        self.started = time.monotonic()
        self._last = self.started
        self._lock = threading.Lock()

    def add_total(self, count: int) -> None:
        with self._lock:
            self.total = (self.total or 0) + count

    def advance(self, messages: int, octets: int = 0) -> None:
        with self._lock:
            self.done += messages
            self.octets += octets
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self._draw(now)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-6)
        rate = self.done / elapsed
        text = f"{self.label}: {self.done}"
        if self.total:
            text += f"/{self.total}"
        text += f" messages, {rate:.0f} messages/s, {self.octets / elapsed / 1e6:.1f} MB/s"
        if self.total and rate > 0:
            text += f", ETA {_clock(max(self.total - self.done, 0) / rate)}"
        return text

    def _draw(self, now: float) -> None:
        text = self.line(now)
        if self.tty:
            bar = ""
            if self.total:
                filled = int(20 * min(self.done / self.total, 1.0))
                bar = "[" + "#" * filled + " " * (20 - filled) + "] "
            self.stream.write("\r" + bar + text + "\x1b[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        with self._lock:
            if self.tty:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
