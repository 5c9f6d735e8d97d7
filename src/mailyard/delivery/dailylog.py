"""Events kept per UTC day for the daily aggregate reports (TLS-RPT, RFC
8460; DMARC, RFC 7489 7.2): one JSON object per line in
``DIRECTORY/YYYY-MM-DD.jsonl``.

Lines are appended with ``O_APPEND`` (one ``write`` each, so processes
sharing the data directory never interleave within a line) and never
fsynced: a report is a statistic, and a crash loses at most the last lines
the kernel had not written out. A line cut short by a crash is skipped when
read. Once a day's report is queued its file is renamed ``.sent``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

log = logging.getLogger("mailyard.reports")


def day_of(ts: float) -> str:
    """The UTC day of a POSIX time, ``YYYY-MM-DD``."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d")


def day_bounds(day: str) -> tuple[int, int]:
    """The first and last second of a UTC day, as POSIX times."""
    start = datetime.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=datetime.UTC)
    return int(start.timestamp()), int(start.timestamp()) + 86399


class DailyLog:
    """Lines of one kind of event per UTC day in ``directory`` (module docstring)."""

    def __init__(self, directory: Path, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.clock = clock

    def append(self, line: dict[str, Any]) -> None:
        """Add ``line`` (it gets ``t``, the time, unless it has one) to its day's file."""
        line.setdefault("t", self.clock())
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{day_of(line['t'])}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, (json.dumps(line, separators=(",", ":")) + "\n").encode())
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("reports: cannot record an event in %s: %s", self.directory, exc)

    def days_due(self) -> list[str]:
        """Days before today (UTC) whose events have not been reported."""
        today = day_of(self.clock())
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.jsonl") if p.stem < today)

    def lines(self, day: str) -> list[dict[str, Any]]:
        """The events of ``day`` (lines cut short by a crash left out)."""
        out = []
        try:
            text = (self.directory / f"{day}.jsonl").read_text(encoding="utf-8")
        except OSError:
            return []
        for raw in text.splitlines():
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            if isinstance(item, dict):
                out.append(item)
        return out

    def mark_sent(self, day: str) -> None:
        """The reports of ``day`` are queued: its file becomes ``.sent``."""
        path = self.directory / f"{day}.jsonl"
        try:
            os.replace(path, path.with_suffix(".sent"))
        except OSError as exc:
            log.warning("reports: cannot mark %s reported: %s", path, exc)


def report_mail(*, sender: str, recipients: Sequence[str], policy_domain: str, submitter: str,
                report_id: str) -> EmailMessage:
    """The head of a report message, as RFC 8460 5.3 and RFC 7489 7.2.1.1
    both shape it: ``Subject: Report Domain: D Submitter: S Report-ID: <I>``."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = f"Report Domain: {policy_domain} Submitter: {submitter} Report-ID: <{report_id}>"
    msg["Date"] = format_datetime(datetime.datetime.now(datetime.UTC))
    msg["Message-ID"] = make_msgid(domain=submitter)
    return msg
