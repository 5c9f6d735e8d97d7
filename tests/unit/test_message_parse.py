"""parse_message / split_header_body and RFC 2047 / header helpers."""

from __future__ import annotations

import pathlib
import random
import re

import pytest

from mailyard.message.headers import (
    bytes_to_text,
    decode_words,
    split_fields,
    split_plain_fields,
    unfold,
)
from mailyard.message.parse import parse_message, split_header_body

DATA = pathlib.Path(__file__).parent / "data" / "message"


def test_split_header_body_exact_bytes():
    raw = b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore"
    assert split_header_body(raw) == (b"A: 1\r\nB: 2\r\n\r\n", b"body\r\n\r\nmore")
    assert split_header_body(b"A: 1\nB: 2\n\nbody\n") == (b"A: 1\nB: 2\n\n", b"body\n")
    assert split_header_body(b"A: 1\r\n") == (b"A: 1\r\n", b"")
    assert split_header_body(b"\r\nbody") == (b"\r\n", b"body")
    assert split_header_body(b"") == (b"", b"")
    # the earlier of CRLF CRLF and LF LF wins
    assert split_header_body(b"A: 1\n\nB\r\n\r\nC") == (b"A: 1\n\n", b"B\r\n\r\nC")
    for raw in (b"x", b"A: 1\r\n\r\n", b"\n\n\n", b"a\r\n\nb"):
        h, b = split_header_body(raw)
        assert h + b == raw


def test_parse_rfc5322_example():
    msg = parse_message((DATA / "rfc5322_a1_1.eml").read_bytes().replace(b"\n", b"\r\n"))
    assert msg["From"].addresses[0].username == "jdoe"
    assert msg["Subject"] == "Saying Hello"
    assert msg.get_content() == 'This is a message just to say hello.\r\nSo, "Hello".\r\n'


def test_parse_bare_lf_no_body_8bit_missing_boundary():
    msg = parse_message(b"Subject: hi\nTo: a@b.example\n\nline one\nline two\n")
    assert msg["Subject"] == "hi" and msg.get_content() == "line one\nline two\n"
    msg = parse_message(b"Subject: only header\r\n")
    assert msg["Subject"] == "only header" and msg.get_payload() == ""
    msg = parse_message(b"Subject: caf\xe9 \xc3\xa9\r\n\r\nx")
    assert "caf" in str(msg["Subject"])
    msg = parse_message(b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nbody\r\n")
    assert msg.defects
    for raw in (b"", b"\r\n", b"\x00\xff", b"::::\r\n\r\n", b"From nobody\r\n"):
        parse_message(raw)


def test_parse_nested_rfc822():
    inner = b"From: a@b.example\r\nSubject: inner\r\n\r\ninner body\r\n"
    raw = (b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
           b"Content-Type: message/rfc822\r\n\r\n" + inner + b"--b--\r\n")
    msg = parse_message(raw)
    part = msg.get_payload()[0]
    assert part.get_content()["Subject"] == "inner"


@pytest.mark.parametrize("value, expected", [
    ("=?utf-8?q?caf=C3=A9?=", "café"),
    ("=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=", "ab"),  # RFC 2047 6.2: white space between words dropped
    ("=?ISO-8859-1?Q?a?=  b", "a  b"),
    ("=?US-ASCII?Q?Keith_Moore?=", "Keith Moore"),  # RFC 2047 8 example
    ("=?ISO-8859-1?Q?Andr=E9?= Pirard", "André Pirard"),
    ("=?utf-8?b?8J+Mjw==?=", "\U0001f30f"),
    ("plain text", "plain text"),
    ("folded\r\n text", "folded text"),
])
def test_decode_words(value, expected):
    assert decode_words(value) == expected


@pytest.mark.parametrize("value", [
    "=?x-unknown?q?abc?=", "=?utf-8?b?####?=", "=?utf-8?q?=ZZ?=", "=?utf-8?b?wA==?=",
    "=?utf-8?", "=??=", "=?utf-8?x?abc?=", "=?" * 1000,
])
def test_decode_words_never_raises_and_is_valid_unicode(value):
    out = decode_words(value)
    out.encode("utf-8")  # no lone surrogates


def test_bytes_to_text_and_unfold():
    assert bytes_to_text("café".encode()) == "café"
    assert bytes_to_text(b"caf\xe9") == "café"  # latin-1 fallback
    assert unfold("a\r\n b\r\n\tc") == "a b\tc"


def test_split_fields():
    block = (b"From  : John <j@x>\r\nTo: a@b,\r\n c@d\r\nno colon line\r\n"
             b"X-8bit\xff: v\r\nSubject:\r\nEmpty:x\r\n")
    assert split_fields(block) == [("From", b"John <j@x>"), ("To", b"a@b,\r\n c@d"),
                                   ("Subject", b""), ("Empty", b"x")]


def _split_fields_reference(block: bytes) -> list[tuple[str, bytes]]:
    """``split_fields`` read line by line (RFC 5322 2.2), the plain way."""
    fields: list[tuple[str, bytes]] = []
    name: str | None = None
    chunks: list[bytes] = []
    for line in block.splitlines(keepends=True) + [b"X"]:  # a last line that ends the last field
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                chunks.append(line)
            continue
        if not line.strip():
            continue
        if name is not None:
            value = b"".join(chunks)
            value = value[:-2] if value.endswith(b"\r\n") else value[:-1] if value.endswith(b"\n") else value
            fields.append((name, value))
        colon = line.find(b":")
        head = line[:colon].rstrip(b" \t") if colon > 0 else b""
        name = head.decode("ascii") if head and re.fullmatch(rb"[\x21-\x39\x3b-\x7e]+", head) else None
        rest = line[colon + 1:]
        chunks = [rest[1:] if rest[:1] == b" " else rest]
    return fields


@pytest.mark.parametrize("seed", range(3))
def test_split_fields_agrees_with_the_line_by_line_reading(seed: int) -> None:
    """``split_fields`` (one match per field when the block is only fields,
    ``split_plain_fields``, else line by line) gives what the plain
    line-by-line reading gives, on random blocks of the octets that matter:
    line ends (CRLF, LF, bare CR), WSP, colons, empty and whitespace-only
    lines, names with SP or 8-bit octets, mbox ``From `` lines."""
    rng = random.Random(seed)
    starts = [b"From: ", b"To:", b"X-Y \t: ", b"Subject:  ", b" ", b"\t", b"From x@y 00:00", b"no colon",
              b":x", b"A\xff: ", b"B\x0b: ", b"", b"DKIM-Signature: v=1;"]
    middles = [b"a", b" ", b"\t", b":", b"\r", b"\x00", b"\xff", b"\x0b", b"b c", b";"]
    ends = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""]
    plain = 0
    for _ in range(20000):
        lines = [rng.choice(starts) + b"".join(rng.choice(middles) for _ in range(rng.randrange(3)))
                 + rng.choice(ends) for _ in range(rng.randrange(6))]
        block = b"".join(lines) + rng.choice([b"", b"\r\n", b"\n"])
        assert split_fields(block) == _split_fields_reference(block), block
        plain += split_plain_fields(block) is not None
    assert plain > 2000  # the one-match-per-field path is taken often


def test_parse_deeply_nested_mime_keeps_the_body_raw():
    """Past MAX_BOUNDARIES the stdlib parser (lines x depth) is not run."""
    from mailyard.message.parse import MAX_BOUNDARIES

    def nested(depth: int) -> bytes:
        head = b"Subject: deep\r\nMIME-Version: 1.0\r\n"
        opens = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(depth))
        closes = b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth)))
        return head + opens + b"Content-Type: text/plain\r\n\r\ninnermost\r\n" + closes

    assert parse_message(nested(MAX_BOUNDARIES)).is_multipart()
    deep = parse_message(nested(1000))
    assert deep["subject"] == "deep" and not deep.is_multipart()
    assert "innermost" in deep.get_payload()


def _stepped(raw: bytes, **bounds: int):
    from mailyard.message.parse import SteppedParse

    parse = SteppedParse(raw, **bounds)
    steps = 1
    while not parse.step():
        steps += 1
    return parse, steps


def _nested(depth: int) -> bytes:
    head = b"Subject: deep\r\nMIME-Version: 1.0\r\n"
    opens = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(depth))
    closes = b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth)))
    return head + opens + b"Content-Type: text/plain\r\n\r\ninnermost\r\n" + closes


def test_stepped_parse_gives_what_parse_message_gives():
    """Within its bounds SteppedParse is parse_message, a slice at a time."""
    samples = [p.read_bytes() for p in sorted(DATA.glob("*.eml"))]
    big_text = (b"Subject: long\r\nContent-Type: text/plain\r\n\r\n" + b"line of text\r\n" * 5000)
    samples += [big_text, _nested(5), _nested(1000), b"", b"Subject: no body", b"\r\n\r\nno header\r\n"]
    for raw in samples:
        parse, _steps = _stepped(raw)
        assert parse.message is not None and not parse.truncated
        assert parse.message.as_bytes() == parse_message(raw).as_bytes(), raw[:60]
    assert _stepped(big_text)[1] > 5  # fed in slices


def test_stepped_parse_bounds_parts_and_long_runs():
    """At most max_parts parts are built (plus a slice's worth); a part's
    lines are cut at max_run octets and the parts after it still parse."""
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(5000))
    raw = (b'Subject: many\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
           + parts + b"--b--\r\n")
    parse, _steps = _stepped(raw, max_parts=100)
    assert parse.truncated
    assert 100 < len(list(parse.message.walk())) < 600

    long_part = b"x" * 100 + b"\r\n" + b"y" * 5000 + b"\r\n" + b"z" * 3000 + b"\r\n"
    raw = (b'Subject: long\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
           b"--b\r\nContent-Type: text/plain\r\n\r\n" + long_part
           + b"--b\r\nContent-Type: text/plain\r\n\r\nafter\r\n--b--\r\n")
    parse, _steps = _stepped(raw, max_run=1000)
    first, second = list(parse.message.walk())[1:]
    content = first.get_content()
    assert content.startswith("x" * 100) and "y" * 800 in content and "z" not in content and len(content) < 1100
    assert second.get_content().strip() == "after"
