"""RFC 5322 3.3 dates: formatting and tolerant parsing of obsolete forms (4.3)."""

from __future__ import annotations

import datetime as dt
import locale

import pytest

from mailyard.message.dates import format_date, parse_date, to_timestamp

CST = dt.timezone(dt.timedelta(hours=-6))


def test_format_date_rfc5322_form():
    assert format_date(880127706, CST) == "Fri, 21 Nov 1997 09:55:06 -0600"
    assert format_date(0, dt.UTC) == "Thu, 01 Jan 1970 00:00:00 +0000"
    assert format_date(1.9, dt.UTC) == "Thu, 01 Jan 1970 00:00:01 +0000"


def test_format_date_default_is_now_with_offset():
    s = format_date()
    assert abs(to_timestamp(s) - dt.datetime.now(dt.UTC).timestamp()) < 5
    assert s[-5] in "+-"


def test_format_date_ignores_locale():
    old = locale.setlocale(locale.LC_TIME)
    try:
        for name in ("de_DE.UTF-8", "fr_FR.UTF-8"):
            try:
                locale.setlocale(locale.LC_TIME, name)
            except locale.Error:
                continue
            assert format_date(880127706, CST).startswith("Fri, 21 Nov")
    finally:
        locale.setlocale(locale.LC_TIME, old)


@pytest.mark.parametrize("text, expected", [
    # RFC 5322 A.1.1
    ("Fri, 21 Nov 1997 09:55:06 -0600", dt.datetime(1997, 11, 21, 9, 55, 6, tzinfo=CST)),
    # A.6.2: obsolete two-digit year and named zone
    ("21 Nov 97 09:55:06 GMT", dt.datetime(1997, 11, 21, 9, 55, 6, tzinfo=dt.UTC)),
    # A.5: folded, no seconds, trailing comment
    ("Thu,\r\n      13\r\n        Feb\r\n          1969\r\n      23:32\r\n"
     "               -0330 (Newfoundland Time)",
     dt.datetime(1969, 2, 13, 23, 32, tzinfo=dt.timezone(-dt.timedelta(hours=3, minutes=30)))),
    # A.6.3: comments and white space inside the time
    ("Fri, 21 Nov 1997 09(comment):   55  :  06 -0600", dt.datetime(1997, 11, 21, 9, 55, 6, tzinfo=CST)),
    ("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)",
     dt.datetime(1996, 7, 17, 2, 23, 25, tzinfo=dt.timezone(dt.timedelta(hours=-7)))),
    ("1 Jan 05 00:00:00 EST", dt.datetime(2005, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-5)))),
    ("1 Jan 105 00:00:00 +0000", dt.datetime(2005, 1, 1, tzinfo=dt.UTC)),  # 3-digit year
    ("Sat, 1 Jan 2000 00:00:00 -0000", dt.datetime(2000, 1, 1, tzinfo=dt.UTC)),
    ("Sat, 1 Jan 2000 00:00:00 Z", dt.datetime(2000, 1, 1, tzinfo=dt.UTC)),  # military
])
def test_parse_date_current_and_obsolete(text, expected):
    got = parse_date(text)
    assert got == expected
    assert got.tzinfo is not None


@pytest.mark.parametrize("text", ["", "yesterday", "32 Jan 2000 00:00:00 +0000", "Fri, 21 Nov",
                                  "((((", "1 Foo 2000 10:00:00", "\x00" * 10, "9" * 5000])
def test_parse_date_garbage_is_none(text):
    assert parse_date(text) is None
    assert to_timestamp(text) is None


def test_round_trip():
    assert to_timestamp(format_date(1234567890)) == 1234567890
