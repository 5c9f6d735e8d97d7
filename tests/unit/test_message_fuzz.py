"""Property tests: parsing and deriving never raise, offsets stay inside the message."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailyard.message.address import parse_address_list
from mailyard.message.dates import parse_date
from mailyard.message.derived import Derived, derive
from mailyard.message.headers import decode_words
from mailyard.message.parse import parse_message

# Fragments that steer random bytes towards the interesting paths.
FRAGMENTS = st.sampled_from([
    b"\r\n", b"\n", b"\r\n\r\n", b"--b", b"--b--", b"--c", b": ", b"=?utf-8?q?", b"?=",
    b'Content-Type: multipart/mixed; boundary="b"\r\n',
    b'Content-Type: multipart/alternative; boundary=c\r\n',
    b"Content-Type: message/rfc822\r\n", b"Content-Type: text/html; charset=koi8-r\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"From: A <a@b.c>, g: x@y;\r\n", b"To: \"q\\\"\" <@r:u@[1.2.3.4]>\r\n", b"Date: 1 Jan 70 ",
    b"\xff\xfe", b"\x00", b" \t",
])
MESSAGES = st.lists(st.one_of(FRAGMENTS, st.binary(max_size=20)), max_size=40).map(b"".join)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(MESSAGES)
def test_derive_never_raises_and_offsets_are_sane(raw):
    d = derive(raw)
    for spec, (h, b, e) in d.parts.items():
        assert 0 <= h <= b <= e <= len(raw), spec
    for h, b, e in d.messages.values():
        assert 0 <= h <= b <= e <= len(raw)
    data = json.dumps(d.to_json(), ensure_ascii=False).encode("utf-8")  # valid Unicode throughout
    assert Derived.from_json(json.loads(data)).parts == d.parts


@SETTINGS
@given(MESSAGES)
def test_parse_message_never_raises(raw):
    msg = parse_message(raw)
    msg.defects  # noqa: B018


@SETTINGS
@given(st.text(max_size=80))
def test_text_helpers_never_raise(value):
    parse_address_list(value)
    parse_address_list(value, decode=False)
    parse_date(value)
    decode_words(value).encode("utf-8")
