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


# The opaque ids of the memory store's bodies 1 to 4 (message/objectids.py,
# keyed with MemoryStore.objectid_key): nothing in them counts messages.
M1, M2, M3 = "MXQILBFIJAT4NDSXWWLWCAPXO", "MCUS2FOQGXRKWATKLHOK3FXOH", "M4MFFIAYK6THKQMP7WL2DWBJP"
T1, T2, T3, T4 = ("T7GTFN3CAGPTIJMOXGI57RY4I", "TNDLKGR4PL7HNYXQ6BRWGYEUW", "TN4SAZKH2EZNVHFUXEXCAYS2Q",
                  "TY7MGTKMWXHXHBOCO4UJRFR5X")
ROOT = b"From: a@example.test\r\nSubject: plans\r\nMessage-ID: <root@example.test>\r\n\r\nroot\r\n"
REPLY = (b"From: b@example.test\r\nSubject: Re: plans\r\nMessage-ID: <reply@example.test>\r\n"
         b"In-Reply-To: <root@example.test>\r\n\r\nreply\r\n")
OTHER = b"From: c@example.test\r\nSubject: lunch\r\nMessage-ID: <other@example.test>\r\n\r\nother\r\n"
DEEP = (b"From: a@example.test\r\nSubject: Re: plans\r\nMessage-ID: <deep@example.test>\r\n"
        b"References: <root@example.test> <reply@example.test>\r\n\r\ndeep\r\n")
EARLY = (b"From: d@example.test\r\nSubject: Re: later\r\nMessage-ID: <early@example.test>\r\n"
         b"In-Reply-To: <later@example.test>\r\n\r\nearly\r\n")
LATER = b"From: d@example.test\r\nSubject: later\r\nMessage-ID: <later@example.test>\r\n\r\nlater\r\n"


def test_fetch_emailid_threadid_rfc8474_5() -> None:
    c = connect(select="INBOX")
    c.expect("a1 FETCH 1:3 (EMAILID THREADID)",
             f"* 1 FETCH (EMAILID ({M1}) THREADID ({T1}))",
             f"* 2 FETCH (EMAILID ({M2}) THREADID ({T2}))",
             f"* 3 FETCH (EMAILID ({M3}) THREADID ({T3}))",
             "a1 OK FETCH completed")
    # RFC 8474 5.1: a copy is the same content; it keeps its EMAILID
    c.untagged("a2 COPY 2 INBOX")
    c.expect("a3 UID FETCH 4 (EMAILID THREADID)", f"* 4 FETCH (UID 4 EMAILID ({M2}) THREADID ({T2}))",
             "a3 OK UID FETCH completed")


def test_threadid_follows_references_rfc8474_5_2() -> None:
    # RFC 8474 5.2: messages in one thread share its THREADID; the reply by
    # In-Reply-To and the one by References join the root's; a message that
    # came before its parent keeps a thread of its own (the server did not
    # know the parent yet), the parent gets a new one
    c = connect(store_with_mail(ROOT, REPLY, OTHER, DEEP, EARLY, LATER), select="INBOX")
    c.expect("a1 FETCH 1:6 (THREADID)",
             f"* 1 FETCH (THREADID ({T1}))",
             f"* 2 FETCH (THREADID ({T1}))",
             f"* 3 FETCH (THREADID ({T3}))",
             f"* 4 FETCH (THREADID ({T1}))",
             "* 5 FETCH (THREADID (T3ZXMISEHDQF22EB4VJKUT7OC))",
             "* 6 FETCH (THREADID (TGX7BOASNH4K52E3DGM523NPM))",
             "a1 OK FETCH completed")
    c.expect(f"a2 SEARCH THREADID {T1}", "* SEARCH 1 2 4", "a2 OK SEARCH completed")
    c.expect(f"a3 UID SEARCH THREADID {T3} NOT EMAILID {M3}", "* SEARCH", "a3 OK UID SEARCH completed")
    c.expect(f"a4 SEARCH OR THREADID {T3} EMAILID {M2}", "* SEARCH 2 3", "a4 OK SEARCH completed")


def test_search_emailid_threadid_rfc8474_6() -> None:
    c = connect(select="INBOX")
    c.untagged("a1 COPY 2 INBOX")
    c.expect(f"a2 SEARCH EMAILID {M2}", "* SEARCH 2 4", "a2 OK SEARCH completed")
    # the numbers the store counts with are not ids
    c.expect("a3 UID SEARCH EMAILID M2", "* SEARCH", "a3 OK UID SEARCH completed")
    c.expect("a4 SEARCH THREADID T1", "* SEARCH", "a4 OK SEARCH completed")
    c.expect(f"a5 SEARCH NOT EMAILID {M2}", "* SEARCH 1 3", "a5 OK SEARCH completed")
    c.expect("a6 SEARCH EMAILID", "a6 BAD Syntax error: expected SP")
    c.expect(f"a7 SEARCH THREADID {T4}", "* SEARCH", "a7 OK SEARCH completed")


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


def test_threadid_search_context_follows_new_mail_rfc8474_6_rfc5267_4() -> None:
    # a live THREADID result (RFC 5267 4.3): a new reply in the thread is
    # added, a new message of another thread is not
    store = store_with_mail(ROOT, REPLY, OTHER)
    c = connect(store, select="INBOX", enable="IMAP4rev2")
    c.expect(f"B01 UID SEARCH RETURN (UPDATE) THREADID {T1}", '* ESEARCH (TAG "B01") UID ALL 1:2',
             "B01 OK UID SEARCH completed")
    store.deliver("alice", LATER)
    store.deliver("alice", DEEP)
    c.expect("a1 NOOP", "* 5 EXISTS", '* ESEARCH (TAG "B01") UID ADDTO (0 5)', "a1 OK NOOP completed")
