"""web/prefs.py: settings read with their defaults, and dates in the
user's zone and format."""

from __future__ import annotations

import datetime as dt

from mailyard.web import prefs


def test_missing_or_wrong_values_read_as_the_defaults() -> None:
    assert prefs.parse({}) == prefs.Prefs()
    odd = prefs.parse({"conversations": "yes", "per_page": True, "timezone": "../../etc/passwd",
                       "date_format": "weird", "identities": [{"address": "not an address"}, "x"],
                       "remote_content_allowed": ["ok@remote.test", 5, "bad"], "spam_threshold": "7",
                       "spam_allow": "a@b.test", "send_delay": 99})
    assert odd == prefs.Prefs(remote_content_allowed=frozenset({"ok@remote.test"}))
    good = prefs.parse({"conversations": False, "per_page": 100, "timezone": "Europe/Paris", "date_format": "iso",
                        "identities": [{"name": " Alice  Smith ", "address": "alice@example.test",
                                        "signature_text": "A"}],
                        "spam_threshold": 4.5, "spam_block": ["@Bad.test"], "send_delay": 10})
    assert (good.conversations, good.per_page, good.timezone, good.date_format, good.spam_threshold,
            good.spam_block, good.send_delay) == (False, 100, "Europe/Paris", "iso", 4.5, ("@bad.test",), 10)
    assert good.identities == (prefs.Identity("Alice Smith", "alice@example.test", "A", ""),)
    assert good.identity_for("ALICE@example.test") == good.identities[0]


def test_format_when_in_the_users_zone_and_format() -> None:
    ts = dt.datetime(2026, 3, 9, 23, 30, tzinfo=dt.UTC).timestamp()
    now = ts + 60
    tokyo = prefs.Prefs(timezone="Asia/Tokyo")
    assert prefs.format_when(ts, prefs.Prefs(timezone="UTC"), now) == "23:30"
    # in Tokyo it is already the next day: "today" is judged in the user's zone
    assert prefs.format_when(ts, tokyo, now) == "08:30"
    assert prefs.format_when(ts, tokyo, ts + 86400 * 10) == "10 Mar"
    assert prefs.format_when(ts, tokyo, ts + 86400 * 400) == "2026-03-10"
    assert prefs.format_when(ts, prefs.Prefs(timezone="Asia/Tokyo", date_format="iso"), now) == "2026-03-10 08:30"
    assert prefs.format_when(ts, prefs.Prefs(timezone="UTC", date_format="dmy"), now) == "09/03/2026 23:30"
    assert prefs.format_when(ts, prefs.Prefs(timezone="UTC", date_format="mdy"), now) == "03/09/2026 11:30 PM"
