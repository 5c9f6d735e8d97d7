"""message/imap_syntax.py writes ENVELOPE and BODY/BODYSTRUCTURE in IMAP
syntax (RFC 9051 9): once at delivery for the store, and for every response
through the IMAP layer's writer (protocols/imap/response.py), which hands
those values to it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.message.derived import body_structure, derive
from mailyard.message.imap_syntax import body_bytes, envelope_bytes, write_body, write_envelope
from mailyard.protocols.imap.response import Body, Envelope, Writer

NESTED = (
    b"From: =?utf-8?q?J=C3=B6rg?= <j@example.test>\r\nTo: a@example.test, b@example.test\r\n"
    b"Subject: \xc3\xa4 \"quoted\" \\ back\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=X\r\n\r\n"
    b"--X\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
    b"--X\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: x@example.test\r\nSubject: inner\r\n\r\nbody\r\n"
    b"--X--\r\n"
)
JOERG = b'(("=?utf-8?q?J=C3=B6rg?=" NIL "j" "example.test"))'  # RFC 9051 7.5.2: not decoded
X = b'((NIL NIL "x" "example.test"))'
INNER_ENVELOPE = b'(NIL "inner" ' + X + b" " + X + b" " + X + b" NIL NIL NIL NIL NIL)"


def written(write, value: list, utf8: bool) -> bytes:  # noqa: ANN001
    out = bytearray()
    write(out, value, utf8)
    return bytes(out)


def test_envelope_in_7bit_and_utf8_mode() -> None:
    env = derive(NESTED).envelope
    tail = b" " + JOERG + b" " + JOERG + b" " + JOERG + (
        b' ((NIL NIL "a" "example.test")(NIL NIL "b" "example.test")) NIL NIL NIL NIL)'
    )
    # RFC 9051 4.3: 8-bit text is a literal unless the client enabled UTF-8;
    # address lists have no SP between addresses ("(" 1*address ")")
    assert written(write_envelope, env, False) == b'(NIL {18}\r\n\xc3\xa4 "quoted" \\ back' + tail
    assert written(write_envelope, env, True) == b'(NIL "\xc3\xa4 \\"quoted\\" \\\\ back"' + tail
    assert envelope_bytes(env) == written(write_envelope, env, False)


def test_bodystructure_and_body_of_a_nested_message() -> None:
    bs = derive(NESTED).bodystructure
    # body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]; a
    # message/rfc822 part carries the envelope, body and lines of the message inside
    assert body_bytes(bs) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 5 0 NIL NIL NIL NIL)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 44 ' + INNER_ENVELOPE + b" "
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 4 0 NIL NIL NIL NIL) 3 NIL NIL NIL NIL)'
        b' "MIXED" ("BOUNDARY" "X") NIL NIL NIL)'
    )
    assert body_bytes(body_structure(bs)) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 5 0)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 44 ' + INNER_ENVELOPE + b" "
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 4 0) 3) "MIXED")'
    )


def test_the_imap_writer_writes_them_in_its_connection_mode() -> None:
    d = derive(NESTED)
    for utf8 in (False, True):
        w = Writer(utf8=utf8)
        assert w.value(Envelope(d.envelope)) == written(write_envelope, d.envelope, utf8)
        assert w.value(Body(d.bodystructure)) == written(write_body, d.bodystructure, utf8)


texts = st.one_of(st.none(), st.integers(0, 2**32), st.text(max_size=600))
addresses = st.lists(st.lists(texts, min_size=4, max_size=4), max_size=3)


@settings(max_examples=200, deadline=None)
@given(
    st.tuples(texts, texts, addresses, addresses, addresses, addresses, addresses, addresses,
              texts, texts),
    st.booleans(),
)
def test_any_envelope_is_well_formed(env: tuple, utf8: bool) -> None:
    """Every string is quoted or a literal of its exact length, an empty
    address list is NIL, and no CR or LF appears outside a literal."""
    out = written(write_envelope, list(env), utf8)
    assert out.startswith(b"(") and out.endswith(b")")
    i, depth, prev = 0, 0, b""
    while i < len(out):
        c = out[i : i + 1]
        if c == b"{":
            end = out.index(b"}\r\n", i)
            i = end + 3 + int(out[i + 1 : end])
            prev = b"literal"
            continue
        if c == b'"':
            i += 1
            while out[i : i + 1] != b'"':
                i += 2 if out[i : i + 1] == b"\\" else 1
        assert c not in (b"\r", b"\n")
        assert not (prev == b"(" and c == b")"), "an empty list: RFC 9051 9 wants NIL"
        depth += {b"(": 1, b")": -1}.get(c, 0)
        assert depth >= 0
        prev = c
        i += 1
    assert depth == 0
