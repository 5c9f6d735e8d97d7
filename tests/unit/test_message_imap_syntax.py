"""message/imap_syntax.py writes the ENVELOPE and BODYSTRUCTURE the store
keeps with each message; the IMAP layer's writer (protocols/imap/response.py)
must produce the same bytes, in 7-bit and in UTF-8 mode."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.message.derived import body_structure, derive
from mailyard.message.imap_syntax import body_bytes, envelope_bytes, write_body, write_envelope
from mailyard.protocols.imap.response import Writer

DATA = pathlib.Path(__file__).parent / "data" / "message"


def imap_writer(method: str, value: list, utf8: bool) -> bytes:
    out = bytearray()
    getattr(Writer(utf8=utf8), method)(out, value)
    return bytes(out)


def ours(write, value: list, utf8: bool) -> bytes:  # noqa: ANN001
    out = bytearray()
    write(out, value, utf8)
    return bytes(out)


NESTED = (
    b"From: =?utf-8?q?J=C3=B6rg?= <j@example.test>\r\nTo: a@example.test, b@example.test\r\n"
    b"Subject: \xc3\xa4 \"quoted\" \\ back\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=X\r\n\r\n"
    b"--X\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
    b"--X\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: x@example.test\r\nSubject: inner\r\n\r\nbody\r\n"
    b"--X--\r\n"
)


@pytest.mark.parametrize("name", [*sorted(p.name for p in DATA.glob("*.eml")), "nested"])
@pytest.mark.parametrize("utf8", [False, True])
def test_same_bytes_as_the_imap_writer(name: str, utf8: bool) -> None:
    raw = NESTED if name == "nested" else (DATA / name).read_bytes().replace(b"\n", b"\r\n")
    d = derive(raw)
    assert ours(write_envelope, d.envelope, utf8) == imap_writer("envelope", d.envelope, utf8)
    assert ours(write_body, d.bodystructure, utf8) == imap_writer("body", d.bodystructure, utf8)
    short = body_structure(d.bodystructure)
    assert ours(write_body, short, utf8) == imap_writer("body", short, utf8)
    if not utf8:
        assert envelope_bytes(d.envelope) == imap_writer("envelope", d.envelope, False)
        assert body_bytes(d.bodystructure) == imap_writer("body", d.bodystructure, False)


texts = st.one_of(st.none(), st.integers(0, 2**32), st.text(max_size=600))
addresses = st.lists(st.lists(texts, min_size=4, max_size=4), max_size=3)


@settings(max_examples=200, deadline=None)
@given(
    st.tuples(texts, texts, addresses, addresses, addresses, addresses, addresses, addresses,
              texts, texts),
    st.booleans(),
)
def test_same_bytes_for_any_envelope(env: tuple, utf8: bool) -> None:
    value = list(env)
    assert ours(write_envelope, value, utf8) == imap_writer("envelope", value, utf8)
