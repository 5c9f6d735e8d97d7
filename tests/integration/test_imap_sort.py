"""SORT, ESORT and THREAD through a real server over the SQLite store,
driven by imapclient (RFC 5256, RFC 5957, RFC 5267 section 3): the keys come
from the store's header fields, before the background indexer reached the
messages (derived on demand) and after."""

from __future__ import annotations

import pytest
from imapclient import IMAPClient

from tests.conftest import USERS, RunningServer
from tests.integration.test_imap import ALICE, _wait_indexed


def _mail(n: int, date: str, sender: str, subject: str, *fields: str) -> bytes:
    head = [f"Date: {date}", f"From: {sender}", "To: alice@example.test", f"Subject: {subject}",
            f"Message-ID: <{n}@remote.test>", *fields]
    return ("".join(f + "\r\n" for f in head) + f"\r\nbody {n}\r\n").encode()


MAIL = [
    _mail(1, "Mon, 1 Jan 2024 10:00:00 +0000", "Zed <zed@remote.test>", "=?utf-8?q?=C3=A9t=C3=A9?= plans"),
    _mail(2, "Mon, 1 Jan 2024 09:00:00 -0300", "amy@remote.test", "Re: [team] ÉTÉ plans",
          "References: <1@remote.test>"),
    _mail(3, "Sun, 31 Dec 2023 23:00:00 +0000", "Bob <bob@remote.test>", "lunch"),
    _mail(4, "Tue, 2 Jan 2024 08:00:00 +0000", "carl@remote.test", "Re: lunch", "In-Reply-To: <3@remote.test>"),
    _mail(5, "Tue, 2 Jan 2024 09:00:00 +0000", "Ann <dan@remote.test>", "Fwd: été plans (fwd)",
          "References: <1@remote.test> <2@remote.test>"),
]


@pytest.mark.parametrize("indexed", [False, True])
def test_imapclient_sort_and_thread(mailserver: RunningServer, indexed: bool) -> None:
    with IMAPClient(mailserver.host, port=mailserver.port("imap"), ssl=False, timeout=10) as c:
        c.login(ALICE, USERS[ALICE])
        for data in MAIL:
            c.append("INBOX", data)
        if indexed:
            _wait_indexed(mailserver)
        for cap in (b"SORT", b"SORT=DISPLAY", b"ESORT", b"THREAD=REFERENCES", b"THREAD=ORDEREDSUBJECT"):
            assert c.has_capability(cap.decode()), cap
        c.select_folder("INBOX")
        uids = c.search("ALL")
        assert c.sort("DATE") == [uids[i] for i in (2, 0, 1, 3, 4)]
        # base subjects "été plans" (x3: RFC 2047 decoded, prefixes gone) and "lunch"
        assert c.sort(["SUBJECT", "REVERSE DATE"]) == [uids[i] for i in (4, 1, 0, 3, 2)]
        assert c.sort("FROM") == [uids[i] for i in (1, 2, 3, 4, 0)]  # amy bob carl dan zed
        assert c.sort("DISPLAYFROM") == [uids[i] for i in (1, 4, 2, 3, 0)]  # amy@ Ann Bob carl@ Zed
        assert c.sort("REVERSE ARRIVAL", ["FROM", "remote.test"]) == list(reversed(uids))
        assert c.thread("REFERENCES") == ((uids[2], uids[3]), (uids[0], uids[1], uids[4]))
        assert c.thread("ORDEREDSUBJECT") == ((uids[2], uids[3]), (uids[0], (uids[1],), (uids[4],)))
        # ESORT (RFC 5267 section 3): the result in sort order as an ESEARCH
        typ, data = c._imap._simple_command("SORT", "RETURN (MIN MAX COUNT ALL) (DATE) UTF-8 ALL")
        assert typ == "OK"
        (line,) = c._imap.untagged_responses.pop("ESEARCH")
        assert line.endswith(b'") MIN 3 MAX 5 ALL 3,1:2,4:5 COUNT 5'), line
