"""UTF8=ACCEPT (RFC 6855), section by section, byte for byte over the
in-memory backend: ENABLE only when authenticated (3), UTF-8 mailbox names
in quoted strings and invalid UTF-8 refused with BAD (3), names without
controls or U+2028/U+2029 (3), no SEARCH CHARSET after ENABLE (3), the
APPEND UTF8 data item refused without ENABLE (4),
nothing 8-bit in a quoted string to a client that did not enable it (3)."""

from __future__ import annotations

from .helpers import connect, store_with_mail

INTL = "Subject: Grüße\r\nFrom: jörg@example.test\r\n\r\nhi\r\n".encode()
BODY_8BIT = "Subject: plain\r\n\r\nGrüße\r\n".encode()


def _append(c, tag: str, data: bytes, item: str = "") -> bytes:  # noqa: ANN001
    if item == "UTF8":
        return c.send(f"{tag} APPEND INBOX UTF8 (~{{{len(data)}+}}\r\n".encode() + data + b")\r\n")
    return c.send(f"{tag} APPEND INBOX {{{len(data)}+}}\r\n".encode() + data + b"\r\n")


def test_enable_only_in_the_authenticated_state_rfc6855_3() -> None:
    c = connect(select="INBOX")
    c.expect("a1 ENABLE UTF8=ACCEPT", "a1 BAD ENABLE is not valid in the selected state")
    c.untagged("a2 UNSELECT")
    c.expect("a3 ENABLE UTF8=ACCEPT", "* ENABLED UTF8=ACCEPT", "a3 OK ENABLE completed")


def test_utf8_mailbox_names_rfc6855_3() -> None:
    c = connect()
    c.untagged("a1 ENABLE UTF8=ACCEPT")
    c.expect('a2 CREATE "Grüße/Ümlaut"', "a2 OK [MAILBOXID (F14)] CREATE completed")
    c.expect('a3 LIST "" "Grü*"', '* LIST (\\HasChildren) "/" "Grüße"', '* LIST (\\HasNoChildren) "/" "Grüße/Ümlaut"',
             "a3 OK LIST completed")
    c.expect('a4 STATUS "Grüße/Ümlaut" (MESSAGES)', '* STATUS "Grüße/Ümlaut" (MESSAGES 0)', "a4 OK STATUS completed")
    # 8-bit octets that are not UTF-8: BAD ("MUST reject, with a BAD response")
    c.expect(b'a5 CREATE "Gr\xfc\xdfe"', "a5 BAD Syntax error: invalid UTF-8")
    # no controls, line or paragraph separators in names
    c.expect('a6 CREATE "a\u2028b"', "a6 NO [CANNOT] control characters in mailbox name")
    c.expect('a7 CREATE "a\u0085b"', "a7 NO [CANNOT] control characters in mailbox name")
    # a client that did not enable UTF-8 sees the modified UTF-7 form (RFC 3501 5.1.3)
    d = connect(c.conv.store)
    d.expect('b1 LIST "" "Gr*"', '* LIST (\\HasChildren) "/" "Gr&APwA3w-e"',
             '* LIST (\\HasNoChildren) "/" "Gr&APwA3w-e/&ANw-mlaut"', "b1 OK LIST completed")


def test_no_search_charset_after_enable_rfc6855_3() -> None:
    c = connect(enable="UTF8=ACCEPT", select="INBOX")
    c.expect("a1 SEARCH CHARSET UTF-8 SUBJECT IMAP4rev2", "a1 BAD No CHARSET after ENABLE UTF8=ACCEPT")
    c.expect("a2 SEARCH SUBJECT IMAP4rev2", "* SEARCH 1", "a2 OK SEARCH completed")
    d = connect(select="INBOX")
    d.expect("b1 SEARCH CHARSET UTF-8 SUBJECT IMAP4rev2", "* SEARCH 1", "b1 OK SEARCH completed")


def test_append_utf8_data_item_rfc6855_4() -> None:
    c = connect()
    # not enabled: the UTF8 data item is refused with NO; a plain literal with
    # 8-bit header fields is kept as given (legacy mail moved in by old tools)
    assert _append(c, "a1", INTL, "UTF8") == b"a1 NO [CANNOT] The UTF8 data item needs ENABLE UTF8=ACCEPT\r\n"
    assert _append(c, "a2", INTL) == b"a2 OK [APPENDUID 1 4] APPEND completed\r\n"
    assert _append(c, "a3", BODY_8BIT) == b"a3 OK [APPENDUID 1 5] APPEND completed\r\n"
    c.untagged("a4 ENABLE UTF8=ACCEPT")
    assert _append(c, "a5", INTL, "UTF8") == b"a5 OK [APPENDUID 1 6] APPEND completed\r\n"
    # utf8-literal = "UTF8" SP "(" literal8 ")"
    assert c.send(f"a6 APPEND INBOX UTF8 ({{{len(INTL)}+}}\r\n".encode() + INTL + b")\r\n") == (
        b"a6 BAD Syntax error: UTF8 takes a literal8\r\n")
    c.untagged("a7 SELECT INBOX")
    c.expect("a8 FETCH 6 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
             "* 6 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {20}\r\nSubject: Grüße\r\n\r\n)", "a8 OK FETCH completed")


def test_no_8bit_quoted_strings_without_enable_rfc6855_3() -> None:
    store = store_with_mail()
    c = connect(store, enable="UTF8=ACCEPT")
    assert _append(c, "a1", INTL, "UTF8").startswith(b"a1 OK")
    d = connect(store, select="INBOX")
    lines = d.untagged("b1 FETCH 4 (ENVELOPE)")
    assert all(b'"Gr\xc3' not in line for line in lines), lines  # 8-bit text only in literals
