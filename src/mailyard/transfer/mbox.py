"""Reading mbox files (RFC 4155 ``application/mbox``): mboxo and mboxrd.

A message starts at a ``From `` line at the start of the file or after an
empty line (the From_ line carries the envelope sender and the date, which
becomes INTERNALDATE). mboxrd quotes every body line matching ``>*From `` with
one more ``>``; reading removes one, which is also the right reading of
mboxo's ``>From `` quoting. The metadata headers mail readers keep in mbox
files (``Status:``, ``X-Status:``, ``X-Keywords:``, ``X-UID:``, ``X-IMAP:``,
``X-IMAPbase:``) become flags and are taken out of the stored message, as
Dovecot hides them. Files with LF or CRLF line ends are read alike; the store
gets CRLF.
"""

from __future__ import annotations

import re
from calendar import timegm
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path

from .importer import to_crlf

_FROM_LINE = re.compile(rb"^From \S*\s.*\d{1,2}:\d{2}")
_QUOTED_FROM = re.compile(rb"^>+From ")
_FIELD = re.compile(rb"^[!-9;-~]+:")
_ASCTIME = re.compile(
    rb"(?P<mon>[A-Z][a-z]{2})\s+(?P<day>\d{1,2})\s+(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?"
    rb"(?:\s+[A-Za-z]{3,5})?(?:\s+[-+]?\d{4}(?=\s+\d{4}))?\s+(?P<year>\d{4})")
_MONTHS = {m: i for i, m in enumerate(
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"], 1)}
META_FIELDS = (b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imap", b"x-imapbase")


@dataclass
class MboxMessage:
    """One message of an mbox file, unquoted, metadata fields taken out."""

    data: bytes  # CRLF line ends
    flags: frozenset[str]
    internal_date: float | None
    number: int  # 1-based position in the file, for messages to the user
    warnings: list[str] = field(default_factory=list)
    not_a_message: str = ""  # why this item is not a message (it is skipped)


class NotAnMbox(Exception):
    """The file does not start with a From_ line."""


def from_line_date(line: bytes) -> float | None:
    """The date of a From_ line (asctime form, UTC as RFC 4155 asks), or None."""
    m = _ASCTIME.search(line)
    if not m or m["mon"] not in _MONTHS:
        return None
    try:
        return float(timegm((int(m["year"]), _MONTHS[m["mon"]], int(m["day"]), int(m["h"]), int(m["m"]),
                             int(m["s"] or 0), 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def _flags_of(fields: dict[bytes, bytes]) -> frozenset[str]:
    flags: set[str] = set()
    status = fields.get(b"status", b"")
    xstatus = fields.get(b"x-status", b"")
    if b"R" in status:
        flags.add("\\Seen")
    for letter, flag in ((b"A", "\\Answered"), (b"F", "\\Flagged"), (b"T", "\\Draft"), (b"D", "\\Deleted")):
        if letter in xstatus:
            flags.add(flag)
    for word in re.split(rb"[\s,]+", fields.get(b"x-keywords", b"")):
        if word:
            flags.add(word.decode("utf-8", "replace"))
    return frozenset(flags)


def _message(lines: list[bytes], from_line: bytes, number: int) -> MboxMessage:
    # The empty line before the next From_ line belongs to the mbox, not the message.
    if lines and lines[-1] in (b"\n", b"\r\n"):
        lines.pop()
    header_end = 0
    fields: dict[bytes, bytes] = {}
    keep: list[bytes] = []
    dropping = False
    current = b""
    for header_end, line in enumerate(lines):  # noqa: B007
        if line in (b"\n", b"\r\n"):
            break
        if line[:1] in (b" ", b"\t") and current:
            if dropping:
                fields[current] += b" " + line.strip()
                continue
            keep.append(line)
            continue
        name, _, value = line.partition(b":")
        current = name.strip().lower()
        dropping = current in META_FIELDS
        if dropping:
            fields[current] = value.strip()
        else:
            keep.append(line)
    else:
        header_end = len(lines)
    body = keep + lines[header_end:]
    data = to_crlf(b"".join(body))
    msg = MboxMessage(data, _flags_of(fields), from_line_date(from_line), number)
    first = lines[0] if lines else b""
    if not data.strip():
        msg.not_a_message = f"message {number} is empty"
    elif not _FIELD.match(first):
        msg.not_a_message = f"message {number} does not start with a header field ({first[:40]!r})"
    if msg.internal_date is None:
        date = _header(keep, b"date")
        try:
            msg.internal_date = parsedate_to_datetime(date.decode("ascii", "replace")).timestamp() if date else None
        except (TypeError, ValueError):
            msg.internal_date = None
        msg.warnings.append(f"message {number}: the From_ line has no date ({from_line[:60]!r}); "
                            "INTERNALDATE from the Date: field" + ("" if msg.internal_date else " (none: now)"))
    return msg


def _header(lines: list[bytes], name: bytes) -> bytes | None:
    for line in lines:
        if line in (b"\n", b"\r\n"):
            return None
        if line.lower().startswith(name + b":"):
            return line.split(b":", 1)[1].strip()
    return None


def read_mbox(path: Path) -> Iterator[MboxMessage]:
    """The messages of one mbox file, streamed (the file is not read whole).
    Raises NotAnMbox when the first non-empty line is not a From_ line."""
    with path.open("rb") as f:
        lines: list[bytes] = []
        from_line: bytes | None = None
        previous_empty = True
        number = 0
        last = b""
        for line in f:
            last = line
            if previous_empty and line.startswith(b"From ") and (_FROM_LINE.match(line) or from_line is None):
                if from_line is not None:
                    yield _message(lines, from_line, number)
                number += 1
                from_line, lines = line, []
                previous_empty = False
                continue
            if from_line is None:
                if line.strip():
                    raise NotAnMbox(f"{path}: not an mbox file (the first line is not a From_ line: {line[:40]!r})")
                continue
            previous_empty = line in (b"\n", b"\r\n")
            if _QUOTED_FROM.match(line):
                line = line[1:]  # mboxrd: one level of quoting comes off
            lines.append(line)
        if from_line is not None:
            msg = _message(lines, from_line, number)
            if not last.endswith(b"\n"):
                msg.warnings.append(f"message {number} (the last) ends in the middle of a line: "
                                    "the file looks truncated; imported as it is")
            elif not any(line in (b"\n", b"\r\n") for line in lines):
                msg.warnings.append(f"message {number} (the last) has no body: the file may be truncated; "
                                    "imported as it is")
            yield msg
