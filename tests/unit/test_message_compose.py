"""compose() and to_bytes(): structure, encodings, folding, header injection, Bcc."""

from __future__ import annotations

import email.policy
from email.parser import BytesParser

import pytest

from mailyard.message.compose import Attachment, compose, delivery_status_part, to_bytes
from mailyard.message.derived import derive
from mailyard.message.headers import decode_words


def reparse(data: bytes):
    return BytesParser(policy=email.policy.default).parsebytes(data)


def lines_of(data: bytes) -> list[bytes]:
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF only, no bare LF or CR
    return data.split(b"\r\n")


def test_plain_text_message_has_required_fields():
    msg = compose("John Doe <jdoe@machine.example>", "Mary Smith <mary@example.net>",
                  subject="Saying Hello", text='This is a message just to say hello.\nSo, "Hello".\n',
                  date=880127706, message_id="<1234@local.machine.example>")
    data = to_bytes(msg)
    m = reparse(data)
    assert m["From"] == "John Doe <jdoe@machine.example>"
    assert m["To"] == "Mary Smith <mary@example.net>"
    assert m["Message-ID"] == "<1234@local.machine.example>"
    assert m["Date"].datetime.timestamp() == 880127706
    assert m.get_content_type() == "text/plain"
    assert m["Content-Transfer-Encoding"] == "7bit"
    assert data.endswith(b'This is a message just to say hello.\r\nSo, "Hello".\r\n')


def test_default_date_and_message_id():
    m = compose("a@example.com", "b@example.org", text="x")
    assert m["Message-ID"].endswith("@example.com>")
    assert m["Date"]


def test_alternative_and_mixed_structure_and_encodings():
    msg = compose(("Renée Ünïcode", "renee@example.com"), ["bob@example.org"],
                  subject="Grüße", text="Hello wörld\n", html="<p>Hello w\u00f6rld</p>",
                  attachments=[Attachment("a.pdf", b"%PDF-1.4\x00\xff"),
                               ("notes.txt", "some text", "text/plain")])
    data = to_bytes(msg)
    assert all(byte < 128 for byte in data)  # 7-bit clean: relays without 8BITMIME
    m = reparse(data)
    assert m.get_content_type() == "multipart/mixed"
    alt, pdf, txt = m.get_payload()
    assert alt.get_content_type() == "multipart/alternative"
    plain, html = alt.get_payload()
    assert plain.get_content().replace("\r\n", "\n") == "Hello wörld\n"
    assert plain["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert html.get_content_type() == "text/html"
    assert pdf.get_content() == b"%PDF-1.4\x00\xff"
    assert pdf["Content-Transfer-Encoding"] == "base64"
    assert pdf.get_filename() == "a.pdf"
    assert txt.get_content().strip() == "some text"
    assert "MIME-Version" not in pdf
    assert m["Subject"] == "Grüße" and b"=?utf-8?" in data
    assert decode_words(reparse(data).get("From", "")).startswith("Renée")
    bs = derive(data).bodystructure
    assert bs[0][-5] == "ALTERNATIVE" and bs[1][:2] == ["APPLICATION", "PDF"]


def test_forwarded_message_and_report():
    inner = compose("a@example.com", "b@example.org", subject="orig", text="original\n")
    part = delivery_status_part([("Reporting-MTA", "dns; mx.example.com")],
                                [[("Final-Recipient", "rfc822; b@example.org"), ("Action", "failed"),
                                  ("Status", "5.1.1")]])
    msg = compose("MAILER-DAEMON@example.com", "a@example.com", subject="Undelivered",
                  text="Your message could not be delivered.\n", attachments=[part, inner],
                  multipart_subtype="report", multipart_params={"report-type": "delivery-status"})
    m = reparse(to_bytes(msg))
    assert m.get_content_type() == "multipart/report"
    assert m.get_param("report-type") == "delivery-status"
    kinds = [p.get_content_type() for p in m.get_payload()]
    assert kinds == ["text/plain", "message/delivery-status", "message/rfc822"]
    data = to_bytes(msg)
    assert b"\r\n\r\nFinal-Recipient: rfc822; b@example.org\r\nAction: failed\r\n" in data
    d = derive(data)
    assert d.bodystructure[2][7][1] == "orig"  # ENVELOPE of the attached message


def test_reply_fields_rfc5322_a2():
    msg = compose("John Doe <jdoe@machine.example>", '"Mary Smith: Personal Account" <smith@home.example>',
                  subject="Re: Saying Hello", text="This is a reply to your reply.\n",
                  in_reply_to="<3456@example.net>",
                  references=["<1234@local.machine.example>", "3456@example.net"])
    m = reparse(to_bytes(msg))
    assert m["In-Reply-To"] == "<3456@example.net>"
    assert m["References"] == "<1234@local.machine.example> <3456@example.net>"
    assert m["To"].addresses[0].display_name == "Mary Smith: Personal Account"


def test_groups_and_bcc_stripping():
    msg = compose("a@example.com", "undisclosed-recipients:;", bcc=["hidden@example.org"], text="x")
    full = to_bytes(msg)
    stripped = to_bytes(msg, strip_bcc=True)
    assert b"\r\nBcc: hidden@example.org\r\n" in full
    assert b"Bcc" not in stripped and b"hidden" not in stripped
    assert b"To: undisclosed-recipients:;\r\n" in stripped
    assert stripped == full.replace(b"Bcc: hidden@example.org\r\n", b"")


@pytest.mark.parametrize("kwargs", [
    {"subject": "hi\r\nBcc: victim@example.com"},
    {"subject": "hi\nX: y"},
    {"to": ["a@example.com\r\nX: y"]},
    {"to": [("Name\r\nX: y", "a@example.com")]},
    {"in_reply_to": "<a@b>\r\nX: y"},
    {"message_id": "<a@b>\nX: y"},
    {"references": ["<a@b>\rX: y"]},
    {"extra_headers": [("X-Ok", "v\r\nX-Injected: 1")]},
    {"extra_headers": [("X-Bad Name", "v")]},
    {"extra_headers": [("Content-Type", "text/html")]},
    {"attachments": [Attachment("a\r\nb.txt", b"x")]},
])
def test_header_injection_is_refused(kwargs):
    args = {"to": ["b@example.org"], "text": "x"} | kwargs
    with pytest.raises(ValueError):
        compose("a@example.com", **args)


def test_folding_prefers_78_never_exceeds_998():
    msg = compose("a@example.com", [f"x{i}.{'q' * 60}@example.com" for i in range(30)],
                  subject="Grüße " + "x" * 100 + " " + "y" * 1200, text="t\n" + "w " * 2000,
                  references=[f"<{i}.{'r' * 70}@example.com>" for i in range(40)],
                  extra_headers=[("X-Long", "z" * 3000), ("X-Words", "w " * 2000)])
    data = to_bytes(msg)
    lines = lines_of(data)
    assert max(len(line) for line in lines) <= 78
    m = reparse(data)
    assert m["X-Long"] == "z" * 3000
    assert len(m["To"].addresses) == 30
    assert m["Subject"].endswith("y" * 1200)


def test_invalid_addresses_rejected():
    with pytest.raises(ValueError):
        compose("a@example.com", ["no-domain"], text="x")
    with pytest.raises(ValueError):
        compose("a@example.com", [("x", "a@b", "c")], text="x")


ENCODED_CRLF_SUBJECTS = [
    # long: the stdlib re-folds it, decoding the encoded word (CVE-2024-6923)
    b"=?utf-8?q?a_long_subject_line_that_needs_folding_when_written_again_by_the_stdlib=0D=0A"
    b"X-Injected:_yes?= and some more words after it",
    # 8-bit under cte_type=7bit: re-folded too
    "café =?utf-8?q?x=0D=0AX-Injected:_yes?=".encode(),
    b"short =?utf-8?q?x=0AX-Injected:_yes?=",
]


@pytest.mark.parametrize("subject", ENCODED_CRLF_SUBJECTS)
def test_forwarded_message_header_cannot_split_into_two_fields(subject: bytes) -> None:
    from email import message_from_bytes
    from email.policy import default

    from mailyard.message.parse import parse_message

    raw = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: " + subject + b"\r\n\r\nbody\r\n"
    original = parse_message(raw)
    out = to_bytes(compose("b@example.test", "c@example.test", subject="Fwd", text="see",
                           attachments=[original]))
    names = [k.lower() for part in message_from_bytes(out, policy=default).walk() for k in part.keys()]
    assert "x-injected" not in names
    assert not any(line.startswith(b"X-Injected") for line in out.split(b"\r\n"))
    # the attached message as its own download (web/client part_bytes) too
    again = original.as_bytes()
    assert not any(line.startswith(b"X-Injected") for line in again.splitlines())


def test_signed_bodies_put_the_signature_once_in_each_part() -> None:
    from mailyard.message.compose import signed_bodies, unsigned

    plain, html = signed_bodies("Hi <you> & co\r\n\r\nhttps://example.test/x\n\n", "", "<b>Alice</b><br>Example")
    assert plain == "Hi <you> & co\n\nhttps://example.test/x\n\n-- \nAlice\nExample\n"
    assert "<p>Hi &lt;you&gt; &amp; co</p>\n<p>https://example.test/x</p>" in html  # no link made
    assert html.count('<div class="signature">-- <br>\n<b>Alice</b><br>Example</div>') == 1
    raw = to_bytes(compose("a@example.test", "b@example.test", text=plain, html=html))
    assert b"Content-Type: multipart/alternative" in raw and b"\r\n-- \r\nAlice\r\n" in raw
    # a plain signature, when given, is the text part's; taken off again once
    plain, _ = signed_bodies("text", "Alice E.\r\n", "<b>x</b>")
    assert plain == "text\n\n-- \nAlice E.\n"
    assert unsigned(plain, "Alice E.") == "text\n"
    assert unsigned("text\n\n-- \nsomeone else\n", "Alice E.") == "text\n\n-- \nsomeone else\n"
    assert unsigned("-- \nAlice E.\n", "Alice E.") == "\n"
