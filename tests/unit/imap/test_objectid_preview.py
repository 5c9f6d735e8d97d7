"""OBJECTID (RFC 8474) and PREVIEW (RFC 8970) over the in-memory backend,
byte for byte."""

from __future__ import annotations

from .helpers import MULTIPART, PLAIN, SHORT, connect, store_with_mail

HTML = (
    b"From: a@example.test\r\nSubject: html\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    b"<html><head><title>T</title><style>p {}</style></head><body>\r\n"
    b"<p>Hello   <b>there</b>,</p>\r\n\r\n<p>caf\xc3\xa9 &amp; more</p></body></html>\r\n"
)


def test_select_status_create_carry_mailboxid_rfc8474_4() -> None:
    c = connect()
    assert b"* OK [MAILBOXID (F1)] Ok" in c.untagged("a1 EXAMINE INBOX")
    c.expect("a2 CREATE Projects", "a2 OK [MAILBOXID (F13)] CREATE completed")
    c.expect("a3 STATUS Projects (MAILBOXID MESSAGES)",
             '* STATUS "Projects" (MAILBOXID (F13) MESSAGES 0)', "a3 OK STATUS completed")
    # RFC 8474 4.2: RENAME keeps the MAILBOXID
    c.expect("a4 RENAME Projects Archive2", "a4 OK RENAME completed")
    c.expect("a5 STATUS Archive2 (MAILBOXID)", '* STATUS "Archive2" (MAILBOXID (F13))', "a5 OK STATUS completed")
    # a new mailbox under the old name gets a new id, never the old one
    c.expect("a6 CREATE Projects", "a6 OK [MAILBOXID (F14)] CREATE completed")


def test_fetch_emailid_threadid_rfc8474_5() -> None:
    c = connect(select="INBOX")
    c.expect("a1 FETCH 1:3 (EMAILID THREADID)",
             "* 1 FETCH (EMAILID (M1) THREADID NIL)",
             "* 2 FETCH (EMAILID (M2) THREADID NIL)",
             "* 3 FETCH (EMAILID (M3) THREADID NIL)",
             "a1 OK FETCH completed")
    # RFC 8474 5.1: a copy is the same content; it keeps its EMAILID
    c.untagged("a2 COPY 2 INBOX")
    c.expect("a3 UID FETCH 4 (EMAILID)", "* 4 FETCH (UID 4 EMAILID (M2))", "a3 OK UID FETCH completed")


def test_search_emailid_threadid_rfc8474_6() -> None:
    c = connect(select="INBOX")
    c.untagged("a1 COPY 2 INBOX")
    c.expect("a2 SEARCH EMAILID M2", "* SEARCH 2 4", "a2 OK SEARCH completed")
    c.expect("a3 UID SEARCH EMAILID M99", "* SEARCH", "a3 OK UID SEARCH completed")
    c.expect("a4 SEARCH THREADID T1", "* SEARCH", "a4 OK SEARCH completed")
    c.expect("a5 SEARCH NOT EMAILID M2", "* SEARCH 1 3", "a5 OK SEARCH completed")
    c.expect("a6 SEARCH EMAILID", "a6 BAD Syntax error: expected SP")


def test_fetch_preview_rfc8970() -> None:
    c = connect(store_with_mail(PLAIN, MULTIPART, SHORT, HTML), select="INBOX")
    c.expect("a1 FETCH 1:4 (PREVIEW)",
             '* 1 FETCH (PREVIEW "Hello Joe, do you think we can meet at 3:30 tomorrow?")',
             # the first text part, its transfer encoding and charset undone
             b"* 2 FETCH (PREVIEW {7}\r\nGr\xc3\xbc\xc3\x9fe)",
             '* 3 FETCH (PREVIEW "hi")',
             # HTML as text, whitespace collapsed (RFC 8970 3)
             b"* 4 FETCH (PREVIEW {25}\r\nHello there, caf\xc3\xa9 & more)",
             "a1 OK FETCH completed")
    # RFC 8970 4: PREVIEW (LAZY) -- ours is always at hand; no \Seen is set
    c.expect("a2 FETCH 3 (PREVIEW (LAZY) FLAGS)", '* 3 FETCH (PREVIEW "hi" FLAGS (\\Recent))', "a2 OK FETCH completed")
    c.expect("a3 FETCH 3 PREVIEW (LAZY)", '* 3 FETCH (PREVIEW "hi")', "a3 OK FETCH completed")
    c.expect("a4 FETCH 3 (PREVIEW (EAGER))", "a4 BAD Syntax error: expected fetch attribute")
    c.expect("a5 FETCH 3 (PREVIEW (LAZY EAGER))", "a5 BAD Syntax error: unknown PREVIEW modifier")


def test_preview_is_at_most_256_characters_rfc8970_3() -> None:
    long = b"From: a@example.test\r\nSubject: long\r\n\r\n" + b"word \r\n\r\n " * 200
    c = connect(store_with_mail(long), select="INBOX")
    line = c.untagged("a1 FETCH 1 (PREVIEW)")[0]
    text = line[len(b'* 1 FETCH (PREVIEW "') : -2]
    assert text == b" ".join([b"word"] * 52)[:256] and len(text) == 256
