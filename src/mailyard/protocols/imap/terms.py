"""The terms of the IMAP grammar that several commands share (RFC 9051
section 9): sequence-set (with SEARCHRES "$", RFC 5182), date, date-time,
flag and flag-list. The command parser (parser.py) and the SEARCH program
parser (search_parser.py) both read them.
"""

from __future__ import annotations

import calendar
import datetime as dt

from . import commands as c
from .reader import ParseError, Reader

MONTHS = {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}


# --- sequence sets ---------------------------------------------------------
def _seq_number(r: Reader) -> int | None:
    if r.maybe(b"*"):
        return None
    return r.nz_number()


def parse_sequence_set(r: Reader) -> c.SequenceSet:
    """sequence-set (RFC 9051 9) or "$" (RFC 5182)."""
    if r.maybe(b"$"):
        return c.SequenceSet(saved=True)
    ranges: list[tuple[int | None, int | None]] = []
    while True:
        lo = _seq_number(r)
        hi = _seq_number(r) if r.maybe(b":") else lo
        ranges.append((lo, hi))
        if not r.maybe(b","):
            return c.SequenceSet(tuple(ranges))


# --- dates -----------------------------------------------------------------
def _month(r: Reader) -> int:
    """date-month: "Jan" / ... / "Dec", case-insensitive (RFC 9051 9)."""
    month = MONTHS.get(r.buf[r.pos : r.pos + 3].decode("latin-1").upper())
    if month is None:
        raise ParseError("bad month")
    r.pos += 3
    return month


def parse_date(r: Reader) -> dt.date:
    """date = date-text / DQUOTE date-text DQUOTE; date-text = d[d]-Mon-yyyy."""
    quoted = r.maybe(b'"')
    day = r.number()
    r.expect(b"-")
    month = _month(r)
    r.expect(b"-")
    start = r.pos
    year = r.number()
    if r.pos - start != 4:
        raise ParseError("bad year")
    if quoted:
        r.expect(b'"')
    try:
        return dt.date(year, month, day)
    except ValueError as exc:
        raise ParseError("bad date") from exc


def parse_date_time(r: Reader) -> float:
    """date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE."""
    r.expect(b'"')
    if r.peek() == 0x20:
        r.pos += 1
    day = r.number()
    r.expect(b"-")
    month = _month(r)
    r.expect(b"-")
    year = r.number()
    r.sp()
    raw = r.buf[r.pos : r.pos + 8]
    r.pos += 8
    try:
        hh, mm, ss = (int(x) for x in raw.split(b":"))
    except ValueError as exc:
        raise ParseError("bad time") from exc
    r.sp()
    zone = r.buf[r.pos : r.pos + 5]
    r.pos += 5
    if len(zone) != 5 or zone[:1] not in (b"+", b"-") or not zone[1:].isdigit():
        raise ParseError("bad zone")
    r.expect(b'"')
    offset = int(zone[1:3]) * 3600 + int(zone[3:5]) * 60
    if zone[:1] == b"-":
        offset = -offset
    try:
        local = dt.datetime(year, month, day, hh, mm, ss, tzinfo=dt.timezone(dt.timedelta(seconds=offset)))
    except ValueError as exc:
        raise ParseError("bad date-time") from exc
    return local.timestamp()


# --- flags -----------------------------------------------------------------
def parse_flag(r: Reader) -> str:
    """flag = "\\" atom (system flag / flag-extension) / atom (keyword)."""
    if r.maybe(b"\\"):
        return "\\" + r.atom()
    return r.atom()


def parse_flag_list(r: Reader) -> tuple[str, ...]:
    """flag-list = "(" [flag *(SP flag)] ")"."""
    r.open()
    flags: list[str] = []
    if not r.close():
        while True:
            flags.append(parse_flag(r))
            if r.close():
                break
            r.sp()
    return tuple(flags)
