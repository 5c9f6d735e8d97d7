"""The message layer's reading core (message/reading.py): header text,
addresses, body text with charset fallback, HTML to text, attachment names
and bytes, safe file names, human sizes. Both mail clients read through it."""

from __future__ import annotations

import pytest

from mailyard.message.compose import Attachment, compose, to_bytes
from mailyard.message.parse import parse_message
from mailyard.message.reading import (
    attachment_filename,
    attachments,
    body_text,
    header_text,
    html_to_text,
    human_size,
    mailboxes,
    part_bytes,
    part_filename,
    part_text,
    readable_address,
    readable_addresses,
    safe_filename,
)


def one_part(headers: str, body: bytes) -> object:
    return parse_message(headers.encode() + b"\r\n" + body)


def test_header_text_decodes_words_and_raw_utf8() -> None:
    msg = parse_message(b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n und\r\n\tmehr\r\n"
                        b"X-Raw: caf\xc3\xa9\r\nX-Latin: caf\xe9\r\n\r\n")
    assert header_text(msg, "subject") == "Grüße und\tmehr"
    assert header_text(msg, "X-Raw") == "café"  # RFC 6532 UTF-8
    assert header_text(msg, "X-Latin") == "café"  # not UTF-8: read as Latin-1
    assert header_text(msg, "Date") == ""


def test_mailboxes_in_order_groups_flattened_names_decoded() -> None:
    msg = parse_message(b"From: J\xc3\xb6rg <j@x.test>\r\n"
                        b"To: =?utf-8?q?M=C3=BCller=2C_H?= <h@x.test>, team: a@x.test, b@x.test;\r\n"
                        b"Cc: c@x.test\r\n\r\n")
    assert [(m.display_name, m.addr_spec) for m in mailboxes(msg, "From")] == [("Jörg", "j@x.test")]
    assert [m.addr_spec for m in mailboxes(msg, "To", "Cc")] == ["h@x.test", "a@x.test", "b@x.test", "c@x.test"]
    assert mailboxes(msg, "To")[0].display_name == "Müller, H"
    assert mailboxes(msg, "Reply-To") == []


def test_readable_addresses_are_text_and_read_back() -> None:
    from mailyard.message.address import parse_address_list

    msg = parse_message(b"To: =?utf-8?q?M=C3=BCller=2C_H?= <h@x.test>, J\xc3\xb6rg <j@x.test>,\r\n"
                        b" Alice \xc3\x84. Example <a@x.test>, =?utf-8?q?a=22b?= <q@x.test>, plain@x.test\r\n\r\n")
    text = readable_addresses(mailboxes(msg, "To"))
    assert text == ('"Müller, H" <h@x.test>, Jörg <j@x.test>, Alice Ä. Example <a@x.test>, '
                    '"a\\"b" <q@x.test>, plain@x.test')
    assert [(m.display_name, m.addr_spec) for m in parse_address_list(text)] == [
        (m.display_name, m.addr_spec) for m in mailboxes(msg, "To")]
    assert readable_address("Eve\r\nX-Injected: yes", "e@x.test") == '"Eve X-Injected: yes" <e@x.test>'


def test_html_to_text_structure_links_and_quotes() -> None:
    text = html_to_text(
        "<html><head><title>t</title><style>x{}</style><script>alert(1)</script></head><body>"
        "<h1>Head</h1><p>One &amp; <i>two</i></p><p>Three<br>four</p><ul><li>a</li><li>b</li></ul>"
        "<a href='https://x.test/'>site</a> <a href='https://y.test/'>https://y.test/</a> "
        "<img alt='logo' src='x.png'><table><tr><td>c1</td><td>c2</td></tr></table>"
        "<blockquote>quoted<br>twice</blockquote><pre>  keep   spaces</pre></body></html>")
    assert text.startswith("Head\n\nOne & two\n\nThree\nfour\n")
    assert "  * a\n  * b" in text
    assert "site <https://x.test/>" in text
    assert "https://y.test/ <https://y.test/>" not in text  # the text already is the URL
    assert "[logo]" in text and "c1\tc2" in text
    assert "> quoted\n> twice" in text and "  keep   spaces" in text
    assert "alert" not in text and "x{}" not in text and "<" not in text.replace("<https", "")


def test_html_to_text_comments_and_stray_brackets() -> None:
    # Outlook's conditional comments: what non-Outlook readers see stays
    assert html_to_text("<!--[if mso]><p>mso only</p><![endif]--><!--[if !mso]><!--><p>shown</p>"
                        "<!--<![endif]--><p>end</p>") == "shown\n\nend\n"
    assert html_to_text("<p>a</p><!-- never closed <p>b</p>") == "a\n"
    assert html_to_text("<p>1 < 2 and 3 > 2</p>") == "1 < 2 and 3 > 2\n"
    assert html_to_text("<p>x</p><a<a<a") == "x\n\n<a<a<a\n"


@pytest.mark.parametrize("hostile", [
    "<p>x</p>" * 20000, "<a" * 20000, "</" * 20000, "<div>" * 20000, "<!--<" * 20000,
    "<a href=u>" * 20000 + "x", "<a href=u></a><td>" * 20000, "<blockquote>x\n" * 20000,
])
def test_html_to_text_hostile_input_still_gives_text(hostile: str) -> None:
    # Each of these took seconds to minutes with the former implementation
    # (quadratic); the time is not asserted, the result is.
    assert isinstance(html_to_text(hostile), str)


def test_part_text_charsets_and_fallbacks() -> None:
    latin = one_part("Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n",
                     b"Gr\xfc\xdfe\r\n")
    assert part_text(latin) == "Grüße\r\n"
    qp = one_part("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n",
                  b"Gr=C3=BC=C3=9Fe\r\n")
    assert part_text(qp) == "Grüße\r\n"
    # undeclared or unknown charsets: UTF-8 when the octets are UTF-8, else Windows-1252
    assert part_text(one_part("Content-Type: text/plain\r\n", b"caf\xc3\xa9")) == "café"
    assert part_text(one_part("Content-Type: text/plain\r\n", b"caf\xe9 \x80")) == "café €"
    assert part_text(one_part("Content-Type: text/plain; charset=x-no-such\r\n", b"caf\xc3\xa9")) == "café"
    # codecs that are no mail charsets (punycode decodes in quadratic time) are not used
    assert part_text(one_part("Content-Type: text/plain; charset=punycode\r\n", b"abc-")) == "abc-"
    # broken octets in a declared charset become U+FFFD
    assert part_text(one_part("Content-Type: text/plain; charset=utf-8\r\n", b"a\xffb")) == "a\ufffdb"


def test_body_text_prefers_plain_renders_html_only() -> None:
    both = parse_message(to_bytes(compose("a@x.test", "b@x.test", text="plain text", html="<p>html</p>")))
    assert body_text(both) == ("plain text\n", "plain")
    html_only = compose("a@x.test", "b@x.test", text="x")
    html_only.set_content("<p>only <b>html</b></p>", subtype="html")
    assert body_text(parse_message(to_bytes(html_only))) == ("only html\n", "html")
    image = parse_message(b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBO\r\n")
    assert body_text(image) == ("", "none")


RAW_NAMES = (
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
    b"--b\r\nContent-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename*0*=iso-8859-1''Gr%FC; filename*1=sse.pdf\r\n\r\nx\r\n"
    b"--b\r\nContent-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename=\"=?UTF-8?B?R3LDvMOfZS5wZGY=?=\"\r\n\r\nx\r\n"
    b"--b\r\nContent-Type: application/pdf; name=\"old.pdf\"\r\n\r\nx\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment\r\n\r\nx\r\n"
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner one\r\n\r\ninner body\r\n"
    b"--b--\r\n"
)


def test_part_filename_rfc2183_rfc2231_rfc2047() -> None:
    parts = list(parse_message(RAW_NAMES).iter_parts())
    assert [part_filename(p) for p in parts] == [None, "Grüsse.pdf", "Grüße.pdf", "old.pdf", None, None]
    assert attachment_filename(parts[4], "part-5") == "part-5"
    assert attachment_filename(parts[5], "part-6") == "inner one.eml"
    assert part_bytes(parts[5]).replace(b"\r\n", b"\n") == b"Subject: inner one\n\ninner body"


def test_attachments_names_and_sizes() -> None:
    m = parse_message(to_bytes(compose(
        "a@x.test", "b@x.test", subject="s", text="plain text",
        attachments=[Attachment("../../etc/passwd", b"\x00\x01"), Attachment("r.txt", "hi", "text/plain")])))
    assert [(a.filename, a.size) for a in attachments(m)] == [("../../etc/passwd", 2), ("r.txt", 3)]
    assert [a.filename for a in attachments(parse_message(RAW_NAMES))] == [
        "Grüsse.pdf", "Grüße.pdf", "old.pdf", "part-4", "inner one.eml"]


@pytest.mark.parametrize(("name", "expected"), [
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\x\\evil.exe", "evil.exe"),
    ("a\r\nb\x00.txt", "ab.txt"),
    ("invoice\u202efdp.exe", "invoicefdp.exe"),  # a bidi override disguises the extension
    (".bashrc", "bashrc"),
    ("name. ", "name"),
    ("...", "attachment"),
    ("", "attachment"),
    (None, "attachment"),
])
def test_safe_filename(name: str | None, expected: str) -> None:
    assert safe_filename(name) == expected


def test_safe_filename_bounds_octets() -> None:
    assert len(safe_filename("ä" * 300).encode()) <= 200
    assert safe_filename("", "part-2") == "part-2"


@pytest.mark.parametrize(("n", "expected"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KB"), (1536, "1.5 KB"), (15 * 1024, "15 KB"),
    (3 * 1024 * 1024 + 400_000, "3.4 MB"), (5 * 1024**3, "5.0 GB"),
])
def test_human_size(n: int, expected: str) -> None:
    assert human_size(n) == expected


def test_report_parts_get_readable_names() -> None:
    """RFC 3464 / RFC 6522 report parts carry no file name: the reading core
    names them for people (webmail and the terminal client alike)."""
    from mailyard.message.parse import parse_message
    from mailyard.message.reading import attachments

    raw = (b"From: MAILER-DAEMON@example.test\r\nTo: a@example.test\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
           b"--b\r\nContent-Type: text/plain\r\n\r\nIt failed.\r\n"
           b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.test\r\n\r\n"
           b"Final-Recipient: rfc822; x@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
           b"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: lost\r\n\r\n--b--\r\n")
    names = [a.filename for a in attachments(parse_message(raw))]
    assert names == ["Delivery report.txt", "Returned headers.txt"]
