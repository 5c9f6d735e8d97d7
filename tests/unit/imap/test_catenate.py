"""APPEND CATENATE (RFC 4469) over the in-memory backend, byte for byte:
TEXT literals and IMAP URLs (RFC 5092 relative form) into the user's own
mailboxes, BADURL, TOOBIG, and with MULTIAPPEND (RFC 3502)."""

from __future__ import annotations

from mailyard.protocols.imap.framing import Limits

from .helpers import MULTIPART, PLAIN, SHORT, connect, store_with_mail

# INBOX holds PLAIN (UID 1), MULTIPART (UID 2), SHORT (UID 3); UIDVALIDITY 1
HEADER_2 = MULTIPART[: MULTIPART.index(b"\r\n\r\n") + 4]
PART1_MIME = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
PART1 = b"Gr=C3=BC=C3=9Fe"


def body_of(c, uid: int) -> bytes:  # noqa: ANN001
    line = c.send(f"f{uid} UID FETCH {uid} (BODY.PEEK[])")
    start = line.index(b"}\r\n") + 3
    size = int(line[line.index(b"{") + 1 : start - 3])
    return line[start : start + size]


def test_catenate_rfc4469_5_example_shape() -> None:
    c = connect()
    sep = b"\r\n--b1\r\n"
    got = c.send(
        b'a1 APPEND Drafts (\\Seen \\Draft) CATENATE (URL "/INBOX;UIDVALIDITY=1/;UID=2/;section=HEADER" '
        b"TEXT {%d+}\r\n%s URL \"/INBOX;UIDVALIDITY=1/;UID=2/;SECTION=1.MIME\" "
        b'URL "/INBOX;UIDVALIDITY=1/;UID=2/;SECTION=1" TEXT {%d+}\r\n%s URL /INBOX/;UID=3/;PARTIAL=0.4 '
        b"TEXT {10+}\r\n\r\n--b1--\r\n)\r\n" % (len(sep) - 2, sep[2:], len(b"\r\n--b1\r\n"), b"\r\n--b1\r\n")
    )
    assert got == b"a1 OK [APPENDUID 2 1] APPEND completed\r\n"
    c.untagged("a2 SELECT Drafts")
    assert body_of(c, 1) == HEADER_2 + b"--b1\r\n" + PART1_MIME + PART1 + b"\r\n--b1\r\n" + SHORT[:4] + b"\r\n--b1--\r\n"
    c.expect("a3 FETCH 1 (FLAGS)", "* 1 FETCH (FLAGS (\\Seen \\Draft \\Recent))", "a3 OK FETCH completed")


def test_catenate_with_multiappend_rfc3502() -> None:
    c = connect()
    got = c.send(b"a1 APPEND Drafts CATENATE (URL /INBOX/;UID=1) {5+}\r\nhello CATENATE (TEXT {3+}\r\nabc)\r\n")
    assert got == b"a1 OK [APPENDUID 2 1:3] APPEND completed\r\n"
    c.untagged("a2 SELECT Drafts")
    assert [body_of(c, u) for u in (1, 2, 3)] == [PLAIN, b"hello", b"abc"]


def test_catenate_badurl_rfc4469_5() -> None:
    c = connect()
    for i, url in enumerate([
        "/INBOX/;UID=99",  # no such message
        "/INBOX;UIDVALIDITY=7/;UID=1",  # another UIDVALIDITY
        "/Nowhere/;UID=1",  # no such mailbox
        "/INBOX/;UID=2/;SECTION=9",  # no such part
        "imap://bob@localhost/INBOX/;UID=1",  # absolute URLs are not served
        "/INBOX/;UID=1;URLAUTH=anonymous:internal:1234",  # nor URLAUTH (RFC 4467)
    ]):
        c.expect(f'b{i} APPEND Drafts CATENATE (URL "{url}")', f"b{i} NO [BADURL {url}] CATENATE URL not valid")
    # MULTIAPPEND is all or nothing (RFC 3502 3): a bad URL in the second message stores neither
    c.expect(b"c1 APPEND Drafts {1+}\r\nx CATENATE (URL /INBOX/;UID=9)",
             "c1 NO [BADURL /INBOX/;UID=9] CATENATE URL not valid")
    c.expect("c2 STATUS Drafts (MESSAGES)", '* STATUS "Drafts" (MESSAGES 0)', "c2 OK STATUS completed")
    c.expect("c3 APPEND Drafts CATENATE ()", "c3 BAD Syntax error: expected atom")
    c.expect("c4 APPEND Drafts CATENATE (FILE /etc/passwd)", "c4 BAD Syntax error: CATENATE takes TEXT and URL parts")


def test_catenate_urls_reach_only_the_users_own_mailboxes() -> None:
    store = store_with_mail()
    store.deliver("bob", b"Subject: bob's secret\r\n\r\nsecret\r\n")
    c = connect(store)  # alice
    for i, url in enumerate(["/user/bob/INBOX/;UID=1", "/~bob/INBOX/;UID=1", "/../bob/INBOX/;UID=1"]):
        c.expect(f'b{i} APPEND Drafts CATENATE (URL "{url}")', f"b{i} NO [BADURL {url}] CATENATE URL not valid")
    # alice's own INBOX UID 1 is hers, not bob's
    c.expect("b9 APPEND Drafts CATENATE (URL /INBOX/;UID=1)", "b9 OK [APPENDUID 2 1] APPEND completed")
    c.untagged("s1 SELECT Drafts")
    assert body_of(c, 1) == PLAIN


def test_catenate_toobig_rfc4469_5() -> None:
    c = connect(store_with_mail(PLAIN, MULTIPART, SHORT), limits=Limits(max_append=len(PLAIN) + 10))
    c.expect("a1 APPEND Drafts CATENATE (URL /INBOX/;UID=1 URL /INBOX/;UID=3)",
             "a1 NO [TOOBIG] Message too large")
    c.expect("a2 APPEND Drafts CATENATE (URL /INBOX/;UID=1 TEXT {10+}\r\n0123456789)",
             "a2 OK [APPENDUID 2 1] APPEND completed")


def test_catenate_text_with_nul_needs_literal8() -> None:
    c = connect()
    c.expect(b"a1 APPEND Drafts CATENATE (TEXT {3+}\r\na\0b)", "a1 NO [UNKNOWN-CTE] NUL octets need a literal8")


def test_catenate_of_the_fields_of_a_big_header_lets_the_others_in() -> None:
    """A URL naming HEADER.FIELDS of a message whose header holds 200,000
    short fields (RFC 5092 section, RFC 9051 6.4.5): the header is cut and
    the fields selected with the other connections' turns in between, as
    for FETCH, and the message built holds exactly those fields."""
    fields = [b"X-A:%d\r\n" % (i % 10) if i % 2 else b"B:\r\n" for i in range(200_000)]
    c = connect(store_with_mail(b"Subject: many\r\n" + b"".join(fields) + b"\r\nbody\r\n"))
    paused = c.conv.paused
    got = c.send(b'a1 APPEND Drafts CATENATE (URL "/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20(X-A)" TEXT {4+}\r\nend.)')
    assert got == b"a1 OK [APPENDUID 2 1] APPEND completed\r\n"
    assert c.conv.paused - paused >= 20, c.conv.paused - paused
    c.untagged("a2 SELECT Drafts")
    assert body_of(c, 1) == b"".join(f for f in fields if f.startswith(b"X-A:")) + b"\r\nend."
