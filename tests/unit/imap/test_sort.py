"""SORT, UID SORT, SORT=DISPLAY and ESORT, byte for byte (RFC 5256 sections
2-4, RFC 5957, RFC 5267 section 3), and the base-subject and collation rules
they rest on (RFC 5256 2.1, RFC 5051)."""

from __future__ import annotations

import pytest

from mailyard.message.threadkeys import (
    base_subject,
    casemap,
    first_address,
    message_id,
    parent_ids,
    sent_date,
)
from mailyard.protocols.imap.memory import MemoryStore

from .helpers import PASSWORD, USER, connect

T0 = 1_700_000_000.0  # 14-Nov-2023 22:13:20 +0000


def _msg(*fields: str) -> bytes:
    return ("".join(f + "\r\n" for f in fields) + "\r\nbody\r\n").encode("utf-8")


# Five messages; sizes grow with the field text, internal dates are T0+n.
MAIL = [
    # 1: sent 10:00 UTC, a reply
    (_msg("Date: Mon, 1 Jan 2024 10:00:00 +0000", 'From: "Zed Zulu" <zed@example.test>',
          "To: amy@example.test", "Subject: Re: hello"), T0 + 5),
    # 2: sent 09:00 -0200 = 11:00 UTC; a list tag before the subject
    (_msg("Date: Mon, 1 Jan 2024 09:00:00 -0200", "From: Bob Brown <bob@example.test>",
          "Cc: carl@example.test", "To: Yann <yann@example.test>", "Subject: [list] Hello"), T0 + 1),
    # 3: no Date (sorts by its INTERNALDATE), RFC 2047 subject and display name
    (_msg("From: alice@example.test", "To: =?utf-8?q?=C3=89mile?= <emile@example.test>",
          "Subject: =?utf-8?q?=C3=A9t=C3=A9?="), T0 + 2),
    # 4: an unparseable Date (INTERNALDATE again), a forward of a forward
    (_msg("Date: someday", "From: Carl <carl@example.test>", "Cc: bob@example.test",
          "Subject: Fwd: [fwd: HELLO (fwd)]"), T0 + 3),
    # 5: no Subject, no From: both sort as the empty string
    (_msg("To: zoe@example.test"), T0 + 4),
]


def _store() -> MemoryStore:
    store = MemoryStore()
    store.add_account(USER, PASSWORD)
    for data, when in MAIL:
        store.deliver(USER, data, internal_date=when)
    return store


@pytest.mark.parametrize(("subject", "base", "refwd"), [
    ("Re: hello", "hello", True),
    ("RE:   Re:  hello  ", "hello", True),
    ("Re:Re:x", "x", True),
    ("fw: x", "x", True),
    ("FWD : x", "x", True),
    ("Re [2]: x", "x", True),
    ("[list] Hello", "Hello", False),
    ("[list] Re: Hello", "Hello", True),
    ("Re: [list] Hello", "Hello", True),
    ("[a][b] c", "c", False),
    ("[blob]", "[blob]", False),  # step 4: a blob stays when nothing would be left
    ("Fwd: [fwd: hello (fwd)]", "hello", True),
    ("hello (fwd) (FWD)", "hello", True),
    ("[fwd: [fwd: deep]]", "deep", True),
    ("a \t  b\r\n c", "a b c", False),
    ("Ref: x", "Ref: x", False),
    ("Re:", "", True),
    ("", "", False),
    (None, "", False),
])
def test_base_subject_rfc5256_2_1(subject: str | None, base: str, refwd: bool) -> None:
    assert base_subject(subject) == (base, refwd)


def test_casemap_and_keys_rfc5051() -> None:
    assert casemap("été") == casemap("ÉTÉ") == "E\u0301TE\u0301"
    assert casemap("hello") == casemap("HeLLo") == "HELLO"
    # simple titlecase mappings only: "ß" has none (its full one is "Ss"); NFKD
    # then splits the ligature
    assert casemap("Straße") == "STRAßE" and casemap("\ufb01ne") == "fiNE"
    assert first_address('"Zed Zulu" <zed@example.test>, amy@example.test') == ("zed", "Zed Zulu")
    assert first_address("team: bob@example.test, carl@example.test;") == ("bob", "bob@example.test")
    assert first_address(None) == ("", "")
    assert sent_date("Mon, 1 Jan 2024 09:00:00 -0200", 5.0) == 1704106800.0
    assert sent_date("someday", 5.0) == 5.0
    assert message_id(" <a (c) @b> ") == "a@b"
    assert message_id("<no-at-sign>") is None
    assert parent_ids("<x> <a@b>\r\n <c@d>", "<e@f>") == ["a@b", "c@d"]
    assert parent_ids("", "<junk> <e@f> <g@h>") == ["e@f"]


def test_sort_keys_rfc5256_3() -> None:
    c = connect(_store(), select="INBOX")
    # ARRIVAL: INTERNALDATE
    c.expect("a1 SORT (ARRIVAL) UTF-8 ALL", "* SORT 2 3 4 5 1", "a1 OK SORT completed")
    # DATE: the sent date in UTC, else INTERNALDATE (3, 4, 5 have none usable)
    c.expect("a2 SORT (DATE) UTF-8 ALL", "* SORT 3 4 5 1 2", "a2 OK SORT completed")
    # SUBJECT: base subjects "hello", "Hello", "été", "HELLO", "" -> "" < E\u0301TE\u0301 < HELLO (x3, by number)
    c.expect("a3 SORT (SUBJECT) UTF-8 ALL", "* SORT 5 3 1 2 4", "a3 OK SORT completed")
    # FROM: addr-mailbox zed, bob, alice, carl, ""
    c.expect("a4 SORT (FROM) UTF-8 ALL", "* SORT 5 3 2 4 1", "a4 OK SORT completed")
    # TO: amy, yann, emile, "", zoe
    c.expect("a5 SORT (TO) UTF-8 ALL", "* SORT 4 1 3 2 5", "a5 OK SORT completed")
    # CC: "", carl, "", bob, "" -> missing sorts first, ties by number
    c.expect("a6 SORT (CC) UTF-8 ALL", "* SORT 1 3 5 4 2", "a6 OK SORT completed")
    c.expect("a7 SORT (SIZE) UTF-8 ALL", "* SORT 5 4 3 1 2", "a7 OK SORT completed")


def test_reverse_multiple_keys_and_search_criteria() -> None:
    c = connect(_store(), select="INBOX")
    # REVERSE applies to its key only; equal messages stay in mailbox order
    c.expect("a1 SORT (REVERSE SUBJECT) UTF-8 ALL", "* SORT 1 2 4 3 5", "a1 OK SORT completed")
    c.expect("a2 SORT (SUBJECT REVERSE DATE) UTF-8 ALL", "* SORT 5 3 2 1 4", "a2 OK SORT completed")
    c.expect("a3 SORT (SUBJECT) US-ASCII SUBJECT hello", "* SORT 1 2 4", "a3 OK SORT completed")
    c.expect("a4 UID SORT (REVERSE ARRIVAL) UTF-8 2:4", "* SORT 4 3 2", "a4 OK UID SORT completed")
    c.expect("a5 SORT (DATE) UTF-8 DELETED", "* SORT", "a5 OK SORT completed")
    c.expect("a6 sort (reverse size) utf-8 not 1", "* SORT 2 3 4 5", "a6 OK SORT completed")


def test_sort_display_rfc5957() -> None:
    c = connect(_store(), select="INBOX")
    # DISPLAYFROM: "Zed Zulu", "Bob Brown", alice@example.test, "Carl", "" (no From)
    c.expect("a1 SORT (DISPLAYFROM) UTF-8 ALL", "* SORT 5 3 2 4 1", "a1 OK SORT completed")
    # DISPLAYTO: amy@example.test, "Yann", "Émile" (decoded), "" (no To), zoe@example.test
    c.expect("a2 SORT (DISPLAYTO) UTF-8 ALL", "* SORT 4 1 3 2 5", "a2 OK SORT completed")
    c.expect("a3 SORT (REVERSE DISPLAYTO) UTF-8 ALL", "* SORT 5 2 3 1 4", "a3 OK SORT completed")


def test_esort_rfc5267_3() -> None:
    c = connect(_store(), select="INBOX")
    # MIN/MAX are the first and last in sort order; ALL keeps the sort order
    c.expect("a1 SORT RETURN (MIN MAX COUNT) (DATE) UTF-8 ALL", '* ESEARCH (TAG "a1") MIN 3 MAX 2 COUNT 5',
             "a1 OK SORT completed")
    c.expect("a2 SORT RETURN (ALL) (DATE) UTF-8 ALL", '* ESEARCH (TAG "a2") ALL 3:5,1:2', "a2 OK SORT completed")
    c.expect("a3 UID SORT RETURN () (REVERSE DATE) UTF-8 ALL", '* ESEARCH (TAG "a3") UID ALL 2,1,5,4,3',
             "a3 OK UID SORT completed")
    c.expect("a4 SORT RETURN (COUNT) (DATE) UTF-8 DELETED", '* ESEARCH (TAG "a4") COUNT 0', "a4 OK SORT completed")
    c.expect("a5 SORT RETURN (MIN) (DATE) UTF-8 DELETED", '* ESEARCH (TAG "a5")', "a5 OK SORT completed")
    # SAVE (RFC 5182): the result is kept for "$"
    c.expect("a6 SORT RETURN (SAVE MIN) (SUBJECT) UTF-8 SUBJECT hello", '* ESEARCH (TAG "a6") MIN 1',
             "a6 OK SORT completed")
    c.expect("a7 SEARCH $", "* SEARCH 1", "a7 OK SEARCH completed")


def test_sort_errors() -> None:
    c = connect(_store(), select="INBOX")
    c.expect("a1 SORT (DATE) KOI8-R ALL", "a1 NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset")
    c.expect("a2 SORT (NAME) UTF-8 ALL", "a2 BAD Syntax error: unknown sort key NAME")
    c.expect("a3 SORT (DATE) ALL", "a3 BAD Syntax error: expected SP")
    c.expect("a4 SORT () UTF-8 ALL", "a4 BAD Syntax error: expected atom")
    c.expect("a5 SORT RETURN (BOGUS) (DATE) UTF-8 ALL", "a5 BAD Syntax error: unknown RETURN option BOGUS")
    c2 = connect(_store())
    c2.expect("b1 SORT (DATE) UTF-8 ALL", "b1 BAD SORT is not valid in the authenticated state")


def test_partial_rfc5267_4_4_and_rfc9394() -> None:
    c = connect(_store(), select="INBOX")
    # SEARCH: positions in ascending order; SORT: in sort order (DATE: 3 4 5 1 2)
    c.expect("a1 SEARCH RETURN (PARTIAL 2:3) ALL", '* ESEARCH (TAG "a1") PARTIAL (2:3 2:3)', "a1 OK SEARCH completed")
    c.expect("a2 SORT RETURN (PARTIAL 1:3) (DATE) UTF-8 ALL", '* ESEARCH (TAG "a2") PARTIAL (1:3 3:5)',
             "a2 OK SORT completed")
    # RFC 9394 3.1: negative ranges count from the last result; COUNT stays the total
    c.expect("a3 SORT RETURN (PARTIAL -2:-1 COUNT) (DATE) UTF-8 ALL",
             '* ESEARCH (TAG "a3") PARTIAL (-1:-2 1:2) COUNT 5', "a3 OK SORT completed")
    c.expect("a4 UID SEARCH RETURN (PARTIAL 7:9) ALL", '* ESEARCH (TAG "a4") UID PARTIAL (7:9 NIL)',
             "a4 OK UID SEARCH completed")
    c.expect("a5 SEARCH RETURN (PARTIAL 3:1 MIN) NOT 2", '* ESEARCH (TAG "a5") MIN 1 PARTIAL (1:3 1,3:4)',
             "a5 OK SEARCH completed")
    c.expect("a6 SEARCH RETURN (PARTIAL 1:2 ALL) ALL", "a6 BAD Syntax error: PARTIAL and ALL cannot be combined")
    c.expect("a7 SEARCH RETURN (PARTIAL 0:2) ALL", "a7 BAD Syntax error: a PARTIAL range counts from 1")
    # SAVE with PARTIAL keeps the part returned
    c.expect("a8 SORT RETURN (SAVE PARTIAL 1:2) (REVERSE SIZE) UTF-8 ALL", '* ESEARCH (TAG "a8") PARTIAL (1:2 2,1)',
             "a8 OK SORT completed")
    c.expect("a9 SEARCH $", "* SEARCH 1 2", "a9 OK SEARCH completed")


def test_base_subject_of_a_hostile_subject_takes_linear_time() -> None:
    """Anyone can send a 64 KiB Subject of "[] " or " (fwd)" repeated; its
    base subject is computed at delivery. Step by step with cut strings and
    regular expressions anchored at the end that took 20-50 s each; it must
    come back at all within a generous bound (a subprocess, killed after)."""
    import subprocess
    import sys

    code = (
        "from mailyard.message.threadkeys import base_subject\n"
        "assert base_subject('[] ' * 20000 + 'x') == ('x', False)\n"
        "assert base_subject(' (fwd)' * 10000) == ('', True)\n"
        "assert base_subject('[]' * 30000 + 'x') == ('x', False)\n"
        "assert base_subject('[fwd: ' * 10000 + 'x' + ']' * 10000) == ('x', True)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=10)


def test_big_thread_is_handed_to_imapio_compute() -> None:
    # more messages than COMPUTE_INLINE: threading runs through
    # ImapIO.compute (a worker thread in the server, so the other
    # connections are served meanwhile); SORT is ordered by the backend
    # (the store: SQL, off the event loop)
    from mailyard.protocols.imap.handlers.searching import COMPUTE_INLINE

    n = COMPUTE_INLINE + 1
    store = MemoryStore()
    store.add_account(USER, PASSWORD)
    for i in range(n):
        # subjects that sort backwards; every second message replies to the one before
        fields = [f"Subject: {n - i:05d}", f"Message-ID: <{i}@example.test>"]
        if i % 2:
            fields.append(f"In-Reply-To: <{i - 1}@example.test>")
        store.deliver(USER, _msg(*fields))
    c = connect(store, select="INBOX")
    small = c.conv.computed
    c.expect("a1 SORT (SUBJECT) UTF-8 ALL", "* SORT " + " ".join(str(q) for q in range(n, 0, -1)),
             "a1 OK SORT completed")
    # REFERENCES: pairs (1 2)(3 4)...; the base subjects differ, so no merging
    pairs = "".join(f"({q} {q + 1})" for q in range(1, n, 2)) + f"({n})"
    c.expect("a2 THREAD REFERENCES UTF-8 ALL", "* THREAD " + pairs, "a2 OK THREAD completed")
    assert c.conv.computed == small + 1
    # a small one stays in place
    c.expect("a3 THREAD REFERENCES UTF-8 1:3", "* THREAD (1 2)(3)", "a3 OK THREAD completed")
    assert c.conv.computed == small + 1
