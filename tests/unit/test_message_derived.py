"""derive(): ENVELOPE, BODYSTRUCTURE, part offsets and search data (RFC 9051 7.5.2, 6.4.5)."""

from __future__ import annotations

import base64
import json
import pathlib

import pytest

from mailyard.message.derived import MAX_DEPTH, MAX_PARTS, Derived, body_structure, derive
from mailyard.message.parse import parse_message

DATA = pathlib.Path(__file__).parent / "data" / "message"


def load(name: str, crlf: bool = True) -> bytes:
    raw = (DATA / name).read_bytes()
    return raw.replace(b"\n", b"\r\n") if crlf else raw


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def roundtrip(d: Derived) -> Derived:
    return Derived.from_json(json.loads(json.dumps(d.to_json())))


def leaf_bodies_by_stdlib(raw: bytes) -> dict[str, str]:
    """Part specifier -> body text of every leaf part, per the stdlib parser."""
    out: dict[str, str] = {}

    def walk(part, spec: str, is_message: bool) -> None:
        if part.is_multipart() and part.get_content_maintype() == "multipart":
            for i, sub in enumerate(part.get_payload(), 1):
                walk(sub, f"{spec}.{i}" if spec else str(i), False)
        elif part.get_content_type() == "message/rfc822" and not is_message:
            walk(part.get_payload()[0], spec, True)
        else:
            key = spec if not is_message else (f"{spec}.1" if spec else "1")
            out[key] = part.get_payload()

    walk(parse_message(raw), "", True)
    return out


def check_offsets_against_stdlib(raw: bytes) -> None:
    d = derive(raw)
    for spec, body in leaf_bodies_by_stdlib(raw).items():
        _h, b, e = d.parts[spec]
        assert raw[b:e].decode("latin-1") == body, spec


# --- RFC 9051 examples ---------------------------------------------------------

RFC9051_HEADER = """Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)
From: Terry Gray <gray@cac.washington.edu>
Subject: IMAP4rev2 WG mtg summary and minutes
To: imap@cac.washington.edu
cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>
Message-Id: <B27397-0100000@cac.washington.edu>
MIME-Version: 1.0
Content-Type: TEXT/PLAIN; CHARSET=US-ASCII

"""


def rfc9051_message() -> bytes:
    # RFC 9051 section 8: BODY[HEADER] is {342}; the body is 3028 octets, 92 lines.
    lines = ["m" * 31] * 84 + ["n" * 30] * 8
    return crlf(RFC9051_HEADER) + b"".join(line.encode() + b"\r\n" for line in lines)


def test_rfc9051_fetch_example_envelope_and_body():
    raw = rfc9051_message()
    d = roundtrip(derive(raw))
    assert d.envelope == [
        "Wed, 17 Jul 1996 02:23:25 -0700 (PDT)",
        "IMAP4rev2 WG mtg summary and minutes",
        [["Terry Gray", None, "gray", "cac.washington.edu"]],
        [["Terry Gray", None, "gray", "cac.washington.edu"]],
        [["Terry Gray", None, "gray", "cac.washington.edu"]],
        [[None, None, "imap", "cac.washington.edu"]],
        [[None, None, "minutes", "CNRI.Reston.VA.US"], ["John Klensin", None, "KLENSIN", "MIT.EDU"]],
        None,
        None,
        "<B27397-0100000@cac.washington.edu>",
    ]
    assert body_structure(d.bodystructure) == [
        "TEXT", "PLAIN", ["CHARSET", "US-ASCII"], None, None, "7BIT", 3028, 92]
    start, end = d.section_range("", "HEADER")
    assert end - start == 342
    assert raw[start:end] == crlf(RFC9051_HEADER)


def test_rfc9051_bodystructure_multipart_example():
    # RFC 9051 7.5.2 example: ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)
    # ("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff")
    # "<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED"
    text1 = "".join(("a" * 48 if i < 21 else "b" * 49) + "\r\n" for i in range(23))
    b64 = base64.b64encode(bytes(range(256)) * 12 + bytes(3306 - 256 * 12)).decode()
    cuts, pos = [], 0
    for i in range(73):
        n = 60 if i < 66 else 64
        cuts.append(b64[pos : pos + n])
        pos += n
    assert pos == len(b64)
    text2 = "".join(c + "\r\n" for c in cuts)
    raw = (
        "From: a@example.com\r\nMIME-Version: 1.0\r\n"
        'Content-Type: MULTIPART/MIXED; BOUNDARY="x"\r\n\r\n'
        "--x\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n" + text1 +
        "\r\n--x\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff\r\n"
        "Content-ID: <960723163407.20117h@cac.washington.edu>\r\n"
        "Content-Description: Compiler diff\r\nContent-Transfer-Encoding: BASE64\r\n\r\n"
        + text2 + "\r\n--x--\r\n"
    ).encode()
    d = derive(raw)
    assert body_structure(d.bodystructure) == [
        ["TEXT", "PLAIN", ["CHARSET", "US-ASCII"], None, None, "7BIT", 1152, 23],
        ["TEXT", "PLAIN", ["CHARSET", "US-ASCII", "NAME", "cc.diff"],
         "<960723163407.20117h@cac.washington.edu>", "Compiler diff", "BASE64", 4554, 73],
        "MIXED",
    ]
    # Extensible form: multipart extension data follows the subtype.
    assert d.bodystructure[2:] == ["MIXED", ["BOUNDARY", "x"], None, None, None]
    assert d.bodystructure[0][8:] == [None, None, None, None]
    assert raw[d.parts["2"][1] : d.parts["2"][2]] == text2.encode()
    check_offsets_against_stdlib(raw)


def nested_example() -> tuple[bytes, dict[str, bytes]]:
    """The part layout of RFC 9051 6.4.5's example, with known bodies."""
    bodies: dict[str, bytes] = {}

    def leaf(spec: str, ctype: str, extra: str = "") -> str:
        body = f"body of part {spec}\r\nsecond line"
        bodies[spec] = body.encode()
        return f"Content-Type: {ctype}\r\n{extra}\r\n{body}"

    def multipart(boundary: str, parts: list[str], subtype: str = "mixed") -> tuple[str, str]:
        head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n'
        body = "preamble\r\n"
        for p in parts:
            body += f"--{boundary}\r\n{p}\r\n"
        body += f"--{boundary}--\r\nepilogue\r\n"
        return head, body

    def message(spec: str, subject: str, boundary: str, parts: list[str]) -> str:
        head, body = multipart(boundary, parts)
        inner = f"From: x@example.com\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n{head}\r\n{body}"
        bodies[spec] = inner.encode()
        return f"Content-Type: message/rfc822\r\n\r\n{inner}"

    p3 = message("3", "inner three", "b3", [
        leaf("3.1", "text/plain"),
        leaf("3.2", "application/octet-stream", "Content-Transfer-Encoding: base64\r\n"),
    ])
    h422, b422 = multipart("b422", [leaf("4.2.2.1", "text/plain"),
                                    leaf("4.2.2.2", "text/richtext")], "alternative")
    p42 = message("4.2", "inner four two", "b42", [leaf("4.2.1", "text/plain"), h422 + "\r\n" + b422])
    h4, b4 = multipart("b4", [leaf("4.1", "image/gif"), p42])
    top_h, top_b = multipart("b1", [
        leaf("1", "text/plain"),
        leaf("2", "application/octet-stream"),
        p3,
        h4 + "\r\n" + b4,
    ])
    raw = f"From: top@example.com\r\nSubject: top\r\nMIME-Version: 1.0\r\n{top_h}\r\n{top_b}".encode()
    return raw, bodies


def test_rfc9051_part_specifiers_and_offsets():
    raw, bodies = nested_example()
    d = roundtrip(derive(raw))
    for spec, body in bodies.items():
        start, end = d.section_range(spec)
        assert raw[start:end] == body, spec
    assert set(d.parts) == {"", "1", "2", "3", "3.1", "3.2", "4", "4.1", "4.2", "4.2.1",
                            "4.2.2", "4.2.2.1", "4.2.2.2"}
    s, e = d.section_range("4.1", "MIME")
    assert raw[s:e] == b"Content-Type: image/gif\r\n\r\n"
    s, e = d.section_range("3", "HEADER")
    assert raw[s:e].startswith(b"From: x@example.com\r\nSubject: inner three\r\n")
    assert raw[s:e].endswith(b"\r\n\r\n")
    s, e = d.section_range("4.2", "TEXT")
    assert raw[s:e].startswith(b"preamble\r\n--b42\r\n") and raw[s:e].endswith(b"epilogue\r\n")
    s, e = d.section_range("", "TEXT")
    assert raw[s:e].startswith(b"preamble\r\n--b1\r\n")
    assert d.section_range("", "MIME") is None
    assert d.section_range("1", "HEADER") is None  # not a message/rfc822 part
    assert d.section_range("9") is None
    # BODYSTRUCTURE shape: MIXED with 4 children; 3 and 4.2 are MESSAGE/RFC822
    bs = d.bodystructure
    assert bs[4] == "MIXED"
    assert bs[2][:2] == ["MESSAGE", "RFC822"]
    assert bs[2][7][1] == "inner three"  # inner envelope subject
    assert bs[2][8][2] == "MIXED"  # inner body
    assert bs[2][9] == raw.count(b"\n", d.parts["3"][1], d.parts["3"][2])
    assert bs[3][1][:2] == ["MESSAGE", "RFC822"]
    assert bs[3][1][8][1][2] == "ALTERNATIVE"
    assert bs[3][1][8][1][1][:2] == ["TEXT", "RICHTEXT"]
    check_offsets_against_stdlib(raw)


# --- RFC 2046 and RFC 5322 examples --------------------------------------------


@pytest.mark.parametrize("use_crlf", [True, False])
def test_rfc2046_simple_boundary(use_crlf):
    raw = load("rfc2046_simple_boundary.eml", use_crlf)
    nl = "\r\n" if use_crlf else "\n"
    d = derive(raw)
    p1 = f"This is implicitly typed plain US-ASCII text.{nl}It does NOT end with a linebreak."
    p2 = f"This is explicitly typed plain US-ASCII text.{nl}It DOES end with a linebreak.{nl}"
    assert raw[d.parts["1"][1] : d.parts["1"][2]] == p1.encode()
    assert raw[d.parts["2"][1] : d.parts["2"][2]] == p2.encode()
    assert raw[d.parts["1"][0] : d.parts["1"][1]] == nl.encode()  # empty MIME header
    bs = d.bodystructure
    assert bs[0] == ["TEXT", "PLAIN", ["CHARSET", "US-ASCII"], None, None, "7BIT", len(p1), 1,
                     None, None, None, None]
    assert bs[1][:8] == ["TEXT", "PLAIN", ["CHARSET", "us-ascii"], None, None, "7BIT", len(p2), 2]
    assert bs[2:] == ["MIXED", ["BOUNDARY", "simple boundary"], None, None, None]
    assert "implicitly typed" in d.body_text and "epilogue" not in d.body_text
    check_offsets_against_stdlib(raw)


def test_rfc5322_groups_envelope():
    d = derive(load("rfc5322_a1_3.eml"))
    assert d.envelope[5] == [
        [None, None, "A Group", None],
        ["Ed Jones", None, "c", "a.test"],
        [None, None, "joe", "where.test"],
        ["John", None, "jdoe", "one.test"],
        [None, None, None, None],
    ]
    assert d.envelope[6] == [[None, None, "Undisclosed recipients", None], [None, None, None, None]]
    assert d.envelope[1] is None  # no Subject


def test_rfc5322_sender_reply_to_defaults():
    d = derive(load("rfc5322_a1_1_sender.eml"))
    assert d.envelope[3] == [["Michael Jones", None, "mjones", "machine.example"]]
    assert d.envelope[4] == d.envelope[2]  # Reply-To defaults to From
    d = derive(load("rfc5322_a2_reply.eml"))
    assert d.envelope[4] == [["Mary Smith: Personal Account", None, "smith", "home.example"]]
    assert d.envelope[8] == "<1234@local.machine.example>"
    assert d.envelope[9] == "<3456@example.net>"


def test_rfc5322_quoted_names_and_obsolete_forms():
    d = derive(load("rfc5322_a1_2.eml"))
    assert d.envelope[6][1] == ['Giant; "Big" Box', None, "sysservices", "example.net"]
    assert d.envelope[5][2] == ["Who?", None, "one", "y.test"]
    d = derive(load("rfc5322_a6_1_obsolete_addressing.eml"))
    assert d.envelope[5] == [["Mary Smith", "@node.test", "mary", "example.net"],
                             [None, None, "jdoe", "test.example"]]
    d = derive(load("rfc5322_a5_oddities.eml"))
    assert d.envelope[2] == [["Pete", None, "pete", "silly.test"]]
    assert d.envelope[6] == [[None, None, "Hidden recipients", None], [None, None, None, None]]
    assert d.date == derive(load("rfc5322_a1_3.eml")).date - 54  # same moment, no seconds


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.eml")))
def test_every_example_derives_consistently(name):
    for use_crlf in (True, False):
        raw = load(name, use_crlf)
        d = roundtrip(derive(raw))
        assert d.envelope[2]  # every example has a From
        assert d.date is not None
        h, b, e = d.parts[""]
        assert (h, e) == (0, len(raw)) and raw[b - 1 : b] == b"\n"
        if name != "rfc5322_a6_3_obsolete_whitespace.eml":
            # The stdlib ends the header at "From  :" (WSP before the colon, the
            # obsolete form RFC 5322 4.5.3 allows); derive() follows the RFC.
            check_offsets_against_stdlib(raw)
        else:
            assert d.envelope[1] == "Saying Hello"


# --- nasty input ---------------------------------------------------------------


def test_no_body_and_empty_input():
    d = derive(b"Subject: only a header\r\n")
    assert d.parts["1"] == (0, 24, 24)
    assert d.bodystructure[:8] == ["TEXT", "PLAIN", ["CHARSET", "US-ASCII"], None, None, "7BIT", 0, 0]
    assert d.envelope[1] == "only a header"
    d = derive(b"")
    assert d.bodystructure[6] == 0 and d.envelope == [None] * 10


def test_missing_closing_boundary():
    raw = crlf('Content-Type: multipart/mixed; boundary="b"\n\n--b\n\none\n--b\n\ntwo\n')
    d = derive(raw)
    assert raw[d.parts["1"][1] : d.parts["1"][2]] == b"one"
    # Without a close delimiter the last part runs to the end, final line
    # break included (no delimiter claims it; the stdlib drops it).
    assert raw[d.parts["2"][1] : d.parts["2"][2]] == b"two\r\n"


def test_missing_inner_closing_boundary_ends_at_outer_delimiter():
    raw = crlf('Content-Type: multipart/mixed; boundary="out"\n\n--out\n'
               'Content-Type: multipart/alternative; boundary="in"\n\n--in\n\ninner\n'
               '--out\n\nsecond\n--out--\n')
    d = derive(raw)
    assert raw[d.parts["1.1"][1] : d.parts["1.1"][2]] == b"inner"
    assert raw[d.parts["2"][1] : d.parts["2"][2]] == b"second"


def test_wrong_or_missing_boundary_is_text_plain():
    for ct in ('multipart/mixed; boundary="nothere"', "multipart/mixed"):
        raw = crlf(f"Content-Type: {ct}\n\n--other\n\nbody\n--other--\n")
        d = derive(raw)
        assert d.bodystructure[:2] == ["TEXT", "PLAIN"]
        assert raw[d.parts["1"][1] : d.parts["1"][2]] == raw[raw.index(b"--other") :]
        assert parse_message(raw).defects  # the stdlib notices too


def test_boundary_with_transport_padding_and_prefix_lookalike():
    raw = crlf('Content-Type: multipart/mixed; boundary="b"\n\n--b  \n\none\n--bb\nnot a delimiter\n'
               "--b-- \t\n")
    d = derive(raw)
    assert raw[d.parts["1"][1] : d.parts["1"][2]] == b"one\r\n--bb\r\nnot a delimiter"
    check_offsets_against_stdlib(raw)


def test_encoded_words_and_8bit_headers():
    raw = (b"From: =?iso-8859-1?q?Andr=E9?= <andre@example.com>\r\n"
           b"To: \xc3\x89lodie <elodie@example.com>\r\n"
           b"Subject: =?utf-8?b?8J+Mjw==?= and caf\xe9\r\n\r\nbody\r\n")
    d = roundtrip(derive(raw))
    # ENVELOPE keeps the words encoded, as written; 8-bit: UTF-8 if valid, else latin-1.
    assert d.envelope[2] == [["=?iso-8859-1?q?Andr=E9?=", None, "andre", "example.com"]]
    assert d.envelope[5] == [["Élodie", None, "elodie", "example.com"]]
    assert d.envelope[1] == "=?utf-8?b?8J+Mjw==?= and café"
    # SEARCH data is decoded.
    assert d.headers["from"] == ["André <andre@example.com>"]
    assert d.headers["subject"] == ["\U0001f30f and café"]
    assert "Subject: \U0001f30f and café" in d.header_text


def test_body_text_decodes_transfer_encoding_charset_and_html():
    raw = crlf(
        'Content-Type: multipart/alternative; boundary="a"\n\n--a\n'
        "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n"
        "caf=E9 cr=E8me\n--a\nContent-Type: text/html; charset=utf-8\n"
        "Content-Transfer-Encoding: base64\n\n"
        + base64.b64encode("<html><style>p{}</style><p>Gr\u00fc&szlig;e <b>aus</b> K\u00f6ln</p></html>"
                           .encode()).decode()
        + "\n--a\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\niVBORw0KGgo=\n--a--\n")
    d = derive(raw)
    assert "café crème" in d.body_text
    assert "Grüße aus Köln" in d.body_text
    assert "<b>" not in d.body_text and "p{}" not in d.body_text
    assert "iVBOR" not in d.body_text


def test_disposition_language_location_and_rfc2231():
    raw = crlf('Content-Type: multipart/mixed; boundary="z"\n\n--z\n'
               "Content-Type: application/pdf; name=\"a.pdf\"\n"
               "Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf\n"
               "Content-Language: en, fr\nContent-Location: http://example.com/a.pdf\n"
               "Content-Transfer-Encoding: base64\n\nJVBERg==\n--z--\n")
    d = derive(raw)
    part = d.bodystructure[0]
    assert part[:7] == ["APPLICATION", "PDF", ["NAME", "a.pdf"], None, None, "BASE64", 8]
    assert part[7:] == [None, ["ATTACHMENT", ["FILENAME", "résumé.pdf"]], ["en", "fr"],
                        "http://example.com/a.pdf"]


def test_digest_parts_default_to_message_rfc822():
    raw = crlf('Content-Type: multipart/digest; boundary="d"\n\n--d\n\n'
               "From: a@example.com\nSubject: one\n\nfirst\n--d--\n")
    d = derive(raw)
    assert d.bodystructure[0][:2] == ["MESSAGE", "RFC822"]
    assert d.bodystructure[0][7][1] == "one"
    s, e = d.section_range("1", "TEXT")
    assert raw[s:e] == b"first"
    assert raw[slice(*d.section_range("1.1"))] == b"first"


def test_deep_nesting_is_capped():
    depth = 1000
    head = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'
                   for i in range(depth))
    raw = (head + "Content-Type: text/plain\r\n\r\nleaf\r\n"
           + "".join(f"--b{i}--\r\n" for i in reversed(range(depth)))).encode()
    d = derive(raw)
    assert len(d.parts) <= MAX_DEPTH + 2
    node, levels = d.bodystructure, 0
    while isinstance(node[0], list):
        node, levels = node[0], levels + 1
    assert levels == MAX_DEPTH
    assert node[:2] == ["APPLICATION", "OCTET-STREAM"]
    json.dumps(d.to_json())
    parse_message(raw)  # the stdlib path must survive it too


def test_many_header_lines_and_huge_line():
    raw = b"".join(b"X-H%d: v\r\n" % i for i in range(100_000)) + b"Subject: s\r\n\r\nbody\r\n"
    d = derive(raw)
    assert d.envelope[1] == "s"
    assert sum(len(v) for v in d.headers.values()) == 10_000
    raw = b"Subject: " + b"x" * 10_000_000 + b"\r\nTo: " + b"a@b.c " * 1_000_000 + b"\r\n\r\n" \
        + b"y" * 10_000_000
    d = derive(raw)
    assert d.bodystructure[6] == 10_000_000
    assert len(d.envelope[1]) == 10_000_000


def test_part_count_is_capped():
    raw = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + b"--b\r\n\r\nx\r\n" * (MAX_PARTS + 50)
    d = derive(raw)
    assert len(d.parts) <= MAX_PARTS + 2


def test_message_rfc822_with_base64_is_opaque():
    raw = crlf('Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: message/rfc822\n'
               "Content-Transfer-Encoding: base64\n\nRnJvbTogYUBiLmMKCmhp\n--b--\n")
    d = derive(raw)
    assert d.bodystructure[0][:2] == ["APPLICATION", "OCTET-STREAM"]
    assert "1.1" not in d.parts


def test_envelope_keeps_addresses_next_to_a_group_with_empty_phrase():
    # Found by tests/fuzz (fuzz_message, corpus/message/regress-empty-group-phrase):
    # the address parser raised, derive() fell back to an all-NIL ENVELOPE and a
    # one-part BODYSTRUCTURE. RFC 9051 7.5.2: a group is a start marker (host
    # NIL, mailbox = phrase) and an end marker (all NIL).
    raw = crlf("From: a@b.c\nCc: :x@y.z;, v@w.example\nSubject: s\n"
               'Content-Type: multipart/mixed; boundary="q"\n\n--q\n\none\n--q--\n')
    d = derive(raw)
    assert d.envelope[2] == [[None, None, "a", "b.c"]]
    assert d.envelope[6] == [[None, None, "", None], [None, None, "x", "y.z"],
                             [None, None, None, None], [None, None, "v", "w.example"]]
    assert d.bodystructure[-5] == "MIXED"


def test_rfc2231_parameter_the_stdlib_cannot_decode():
    # Found by tests/fuzz (fuzz_message, corpus/message/regress-rfc2231-mixed-sections):
    # email.utils.decode_params raises TypeError for "charset*0=a; charset*=b";
    # derive() then dropped the whole structure for the one-part fallback.
    from mailyard.message.derived import derive_unguarded

    raw = crlf('Subject: s\nContent-Type: multipart/mixed; boundary="q"\n\n--q\n'
               "Content-Type: text/plain; charset*0=a; charset*=b\n\nhello\n--q\n\ntwo\n--q--\n")
    d = derive_unguarded(raw)
    assert [bs[:2] for bs in d.bodystructure[:2]] == [["TEXT", "PLAIN"], ["TEXT", "PLAIN"]]
    assert "hello" in d.body_text and set(d.parts) >= {"1", "2"}
    # a boundary that cannot be read: the body is text, as for a missing boundary
    d = derive_unguarded(crlf("Content-Type: multipart/mixed; boundary*0=a; boundary*=b\n\n--a\n\nx\n"))
    assert d.bodystructure[:2] == ["TEXT", "PLAIN"]
