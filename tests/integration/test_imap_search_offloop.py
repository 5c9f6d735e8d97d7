"""SEARCH does not stall the other sessions of its worker, over the real
SQLite store and a real server: a text SEARCH (RFC 9051 6.4.4 BODY, a
substring test of each candidate's stored text) runs off the event loop,
and SENT* keys keep their answers when read in one call for the mailbox.

The check of a candidate's compressed text is slowed here (textindex.py
decompresses it), so the SEARCH takes a measurable time whatever the
machine; the server runs in this process (tests/conftest.py), so the
patch reaches it.
"""

from __future__ import annotations

import imaplib
import threading
import time
import zlib
from types import SimpleNamespace

import pytest

from mailyard.store.api import AppendItem
from mailyard.store.sqlite import SQLiteStore, textindex
from tests.conftest import USERS, RunningServer

ALICE = "alice@example.test"
MESSAGES = 120  # more than textindex.FEW_MESSAGES: the index is used
CHECK_DELAY = 0.01  # seconds per candidate whose text is decompressed


def _long_message(n: int) -> bytes:
    # more text than textindex.HEAD_CHARS, the word at its end: every
    # message is a candidate whose compressed rest is checked
    filler = " ".join(f"word{n}x{i}" for i in range(300))
    return (f"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: m{n}\r\n"
            f"Message-ID: <m{n}@example.test>\r\n\r\n{filler}\r\nzzsearchme\r\n").encode()


async def _seed(store: SQLiteStore) -> None:
    account = await store.get_account(ALICE)
    box = await store.get_mailbox(account.id, "INBOX")
    await store.append_many(box, [AppendItem(_long_message(n)) for n in range(MESSAGES)])


def _client(server: RunningServer) -> imaplib.IMAP4:
    c = imaplib.IMAP4(server.host, server.port("imap"), timeout=60)
    c.login(ALICE, USERS[ALICE])
    assert c.select("INBOX")[0] == "OK"
    return c


def test_text_search_leaves_the_other_sessions_served(make_server, monkeypatch: pytest.MonkeyPatch) -> None:
    """While one session's SEARCH BODY checks its candidates, another
    session's NOOP is answered: the search holds no event loop."""
    server = make_server(seed=_seed)
    searcher, other = _client(server), _client(server)
    # every body derived and indexed before the slow part starts
    assert searcher.search(None, "BODY", "zzsearchme")[1][0].split() == [str(i).encode()
                                                                          for i in range(1, MESSAGES + 1)]
    started = threading.Event()

    def slow_decompress(data: bytes) -> bytes:
        started.set()
        time.sleep(CHECK_DELAY)
        return zlib.decompress(data)

    monkeypatch.setattr(textindex, "zlib", SimpleNamespace(compress=zlib.compress, decompress=slow_decompress))
    result: list[object] = []
    finished = threading.Event()

    def search() -> None:
        try:
            result.append(searcher.search(None, "BODY", "zzsearchme"))
        except BaseException as exc:  # reported below
            result.append(exc)
        finally:
            finished.set()

    worker = threading.Thread(target=search)
    worker.start()
    assert started.wait(30), "the search never checked a candidate"
    t0 = time.monotonic()
    assert other.noop()[0] == "OK"
    noop_time = time.monotonic() - t0
    search_done_first = finished.is_set()
    worker.join(60)
    assert result and not isinstance(result[0], BaseException), result
    typ, data = result[0]  # type: ignore[misc]
    assert typ == "OK" and len(data[0].split()) == MESSAGES
    # the whole search takes MESSAGES * CHECK_DELAY (1.2 s); the NOOP came back before it ended
    assert not search_done_first, f"NOOP waited for the SEARCH ({noop_time:.2f} s)"
    assert noop_time < MESSAGES * CHECK_DELAY / 2
    searcher.logout()
    other.logout()


# Date fields around midnight and across zones: SENT* compares the day as
# written in the field, disregarding time and timezone (RFC 9051 6.4.4)
_DATES = [
    "Mon, 01 Jan 2024 23:30:00 -0500",  # 2 Jan in UTC
    "Tue, 02 Jan 2024 00:15:00 +0900",  # 1 Jan in UTC
    "Tue, 02 Jan 2024 12:00:00 +0000",
    "1 Jan 2024 00:00 +1400",
    "Wed, 03 Jan 2024 01:00:00 GMT",
    None,  # no Date field: matches no SENT* key
    "not a date at all",
    "Sun, 31 Dec 2023 23:59:59 -1200",
]


async def _seed_dates(store: SQLiteStore) -> None:
    account = await store.get_account(ALICE)
    box = await store.get_mailbox(account.id, "INBOX")
    items = []
    for n, date in enumerate(_DATES):
        head = f"Date: {date}\r\n" if date is not None else ""
        items.append(AppendItem((f"{head}From: bob@example.test\r\nSubject: d{n}\r\n\r\nbody {n}\r\n").encode()))
    await store.append_many(box, items)


@pytest.mark.parametrize("criteria, expected", [
    ("SENTON 1-Jan-2024", [1, 4]),
    ("SENTON 2-Jan-2024", [2, 3]),
    ("SENTBEFORE 2-Jan-2024", [1, 4, 8]),
    ("SENTSINCE 2-Jan-2024", [2, 3, 5]),
    ("NOT SENTON 1-Jan-2024", [2, 3, 5, 6, 7, 8]),
    ("OR SENTON 31-Dec-2023 SENTON 3-Jan-2024", [5, 8]),
    ("SENTSINCE 1-Jan-2024 SENTBEFORE 3-Jan-2024 SUBJECT d", [1, 2, 3, 4]),
])
def test_sent_keys_compare_the_date_as_written(make_server, criteria: str, expected: list[int]) -> None:
    server = make_server(seed=_seed_dates)
    c = _client(server)
    typ, data = c.search(None, criteria)
    assert typ == "OK"
    assert [int(x) for x in data[0].split()] == expected
    c.logout()


async def _seed_overflowing_date(store: SQLiteStore) -> None:
    account = await store.get_account(ALICE)
    assert account is not None
    box = await store.get_mailbox(account.id, "INBOX")
    assert box is not None
    await store.append_many(box, [
        AppendItem(b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nSubject: ok\r\n\r\nx\r\n"),
        # a year no datetime holds: the message matches no SENT* key, the others still do
        AppendItem(b"Date: Mon, 01 Jan 99999999999999999999 00:00:00 +0000\r\nSubject: bad\r\n\r\nx\r\n"),
    ])


def test_a_date_no_calendar_holds_does_not_break_sent_searches(make_server) -> None:  # noqa: ANN001
    server = make_server(seed=_seed_overflowing_date)
    c = imaplib.IMAP4(server.host, server.port("imap"), timeout=30)
    try:
        c.login(ALICE, USERS[ALICE])
        c.select("INBOX")
        assert c.search(None, "SENTON 1-Jan-2024") == ("OK", [b"1"])
        assert c.uid("SEARCH", "UID 1 SENTON 1-Jan-2024") == ("OK", [b"1"])
    finally:
        c.logout()
