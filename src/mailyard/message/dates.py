"""RFC 5322 3.3 dates: write them, and read them however they were written.

What: ``format_date`` writes the one form RFC 5322 3.3 says to generate
(``Fri, 21 Nov 1997 09:55:06 -0600``); ``parse_date`` reads that form and
the obsolete ones of RFC 5322 4.3 (two-digit years, named zones, comments and
white space almost anywhere, missing seconds).

Why: Date and Received headers are written by the server and the client;
SEARCH SENTBEFORE/SENTON and SORT need the Date of any message ever received.
Formatting uses ``email.utils.format_datetime``, which never depends on the
process locale (day and month names are fixed English, RFC 5322 3.3).
"""

from __future__ import annotations

import calendar
import datetime as _dt
import email.utils
import re
import time
from collections.abc import Sequence
from email.utils import format_datetime, parsedate_tz

__all__ = ["format_date", "parse_date", "sent_day", "to_timestamp"]


def format_date(ts: float | None = None, tz: _dt.tzinfo | None = None) -> str:
    """RFC 5322 3.3 date-time for ``ts`` (default now) in zone ``tz``.

    ``tz`` None means the machine's local zone, as RFC 5322 3.3 expects the
    originator's local time with its offset. Seconds are truncated.
    """
    global _last_local
    if ts is None:
        ts = time.time()
    second = int(ts)
    if tz is None:
        last = _last_local
        if last[0] == second:
            return last[1]  # a busy server stamps many Received fields in one second
    when = _dt.datetime.fromtimestamp(second, tz=_dt.UTC)
    when = when.astimezone(tz) if tz is not None else when.astimezone()
    text = format_datetime(when)
    if tz is None:
        _last_local = (second, text)
    return text


_last_local: tuple[int | None, str] = (None, "")  # format_date's last local-zone answer


def _strip_comments(s: str) -> str:
    # RFC 5322 4.3 / 3.2.2: comments (which nest and may hold quoted-pairs) may
    # appear between the tokens of an obsolete date.
    out: list[str] = []
    depth = 0
    escaped = False
    for ch in s:
        if escaped:
            escaped = False
            continue
        if depth and ch == "\\":
            escaped = True
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            out.append(" ")
        elif not depth:
            out.append(ch)
    return "".join(out)


_SPACED_COLON = re.compile(r"\s*:\s*")
_MAX_DATE_CHARS = 256


def parse_date(s: str | None) -> _dt.datetime | None:
    """Parse a Date header value to an aware datetime, or None if it is not a date.

    RFC 5322 4.3 obsolete forms are accepted: two-digit years (< 50 -> 20xx,
    else 19xx) and three-digit years (+1900), US zone names (EST, PDT, ...),
    ``UT``/``GMT``; unknown zones, military single letters and ``-0000`` mean
    UTC with no zone information and are returned as UTC. Never raises.
    """
    if not s:
        return None
    s = s[:_MAX_DATE_CHARS]
    s = _strip_comments(s.replace("\r", " ").replace("\n", " "))
    s = _SPACED_COLON.sub(":", " ".join(s.split()))
    try:
        parts = parsedate_tz(s)
    except Exception:
        return None
    if parts is None:
        return None
    year, month, day, hour, minute, second = parts[:6]
    offset = parts[9]
    # parsedate_tz already maps 2-digit years per RFC 5322 4.3; 3-digit years
    # are "add 1900".
    if 100 <= year < 1000:
        year += 1900
    second = min(second, 59)  # a leap second (RFC 5322 3.3 allows 60) is clamped
    try:
        tz = _dt.timezone(_dt.timedelta(seconds=offset)) if offset else _dt.UTC
        return _dt.datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except (ValueError, OverflowError):
        return None


# The form RFC 5322 3.3 says to generate, which nearly every Date is written
# in: read without the general parser (SORT of 100,000 messages reads as
# many dates).
_PLAIN_DATE = re.compile(
    r"\s*(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),\s*)?(\d{1,2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" (\d{4}) (\d\d):(\d\d)(?::(\d\d))? ([+-])(\d\d)(\d\d)\s*\Z")
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                        "Nov", "Dec"), 1)}


def to_timestamp(s: str | None) -> float | None:
    """``parse_date`` as a UTC epoch float (what SEARCH SENTBEFORE compares)."""
    m = _PLAIN_DATE.match(s) if s else None
    if m is not None:
        day, month, year, hour, minute = int(m[1]), _MONTHS[m[2]], int(m[3]), int(m[4]), int(m[5])
        second = min(int(m[6] or 0), 59)
        if year >= 1900 and 1 <= day <= calendar.monthrange(year, month)[1] and hour < 24 and minute < 60:
            offset = (int(m[8]) * 3600 + int(m[9]) * 60) * (-1 if m[7] == "-" else 1)
            return float(calendar.timegm((year, month, day, hour, minute, second)) - offset)
    d = parse_date(s)
    if d is None:
        return None
    try:
        return d.timestamp()
    except (ValueError, OverflowError):
        return None


def sent_day(values: Sequence[str]) -> _dt.date | None:
    """The day SEARCH SENTBEFORE / SENTON / SENTSINCE compare (RFC 9051
    6.4.4, RFC 3501 6.4.4): the date part of the first Date field as written
    in it, "disregarding time and timezone"; None when there is no Date
    field or the first one cannot be read (such a message matches no SENT*
    key)."""
    for value in values:
        try:
            return email.utils.parsedate_to_datetime(value).date()
        except (TypeError, ValueError, IndexError, OverflowError):  # a year past what datetime holds
            return None
    return None
