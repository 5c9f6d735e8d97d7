"""The message layer's answering core (message/reply.py): subjects, reply
recipients, threading fields (RFC 5322 3.6.4), quoting, forwarding. Both
mail clients answer through it."""

from __future__ import annotations

import pytest

from mailyard.message.compose import Attachment, compose, to_bytes
from mailyard.message.parse import parse_message
from mailyard.message.reply import (
    attribution,
    base_subject,
    build_reply,
    forward_attachment,
    forward_subject,
    inline_forward,
    quote,
    reply_recipients,
    reply_subject,
    reply_threading,
    strip_signature,
)

OWN = {"me@example.test", "Me.Alias@example.test"}


def msg(body: str = "body\r\n", **headers: str):
    raw = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items()) + "\r\n" + body
    return parse_message(raw.encode())


@pytest.mark.parametrize(("subject", "expected"), [
    ("Hello", "Re: Hello"),
    ("Re: Hello", "Re: Hello"),
    ("RE: Hello", "Re: Hello"),
    ("AW: Hallo", "Re: Hallo"),
    ("Aw: SV: Antw: Re: x", "Re: x"),
    ("Re[2]: x", "Re: x"),
    ("Re^3 : x", "Re: x"),
    ("ΑΠ: x", "Re: x"),
    ("回复：你好", "Re: 你好"),
    ("Re: Fwd: Re: x", "Re: Fwd: Re: x"),  # a forward in between stays
    ("Reminder: x", "Re: Reminder: x"),  # a word, not a marker
    ("  Re:x  ", "Re: x"),
    ("", "Re:"),
])
def test_reply_subject_one_re(subject: str, expected: str) -> None:
    assert reply_subject(subject) == expected


@pytest.mark.parametrize(("subject", "expected"), [
    ("Hello", "Fwd: Hello"),
    ("Fw: Hello", "Fw: Hello"),
    ("WG: Hallo", "WG: Hallo"),
    ("Re: Hello", "Fwd: Re: Hello"),
    ("", "Fwd:"),
])
def test_forward_subject(subject: str, expected: str) -> None:
    assert forward_subject(subject) == expected


def test_base_subject_for_sorting() -> None:
    assert base_subject("Re: AW: Fwd: WG: SV: Plan") == "Plan"
    assert base_subject("Re" + " " * 100_000 + "x") == "Re" + " " * 100_000 + "x"


def test_reply_threading_rfc5322_3_6_4() -> None:
    m = msg(Message_ID="<c@x>", References="<a@x> <b@x>", In_Reply_To="<b@x>")
    assert reply_threading(m) == ("<c@x>", ["<a@x>", "<b@x>", "<c@x>"])
    # no References, one In-Reply-To id: it starts References
    m = msg(Message_ID="<c@x>", In_Reply_To="<b@x> (the parent)")
    assert reply_threading(m) == ("<c@x>", ["<b@x>", "<c@x>"])
    # several In-Reply-To ids: none of them can be named the parent's parent
    m = msg(Message_ID="<c@x>", In_Reply_To="<a@x> <b@x>")
    assert reply_threading(m) == ("<c@x>", ["<c@x>"])
    # the parent's own id is not repeated
    m = msg(Message_ID="<c@x>", References="<a@x>\r\n <c@x>")
    assert reply_threading(m) == ("<c@x>", ["<a@x>", "<c@x>"])
    assert reply_threading(msg(Subject="no id")) == (None, [])
    assert reply_threading(msg(References="<a@x>")) == (None, ["<a@x>"])


def addrs(boxes) -> list[str]:
    return [b.addr_spec for b in boxes]


def test_reply_recipients() -> None:
    m = msg(From="Ann <ann@x.test>", To="me@example.test, Bob <bob@x.test>",
            Cc="ME <ME@example.test>, carol@x.test, me.alias@example.test, bob@x.test")
    assert (addrs(reply_recipients(m, OWN, False)[0]), reply_recipients(m, OWN, False)[1]) == (["ann@x.test"], [])
    to, cc = reply_recipients(m, OWN, reply_all=True)
    assert addrs(to) == ["ann@x.test"] and addrs(cc) == ["bob@x.test", "carol@x.test"]
    # RFC 5322 3.6.3: Reply-To replaces From
    m = msg(From="ann@x.test", Reply_To="list@x.test", To="me@example.test")
    assert addrs(reply_recipients(m, OWN, False)[0]) == ["list@x.test"]


def test_reply_to_own_message_goes_to_its_recipients() -> None:
    m = msg(From="me@example.test", To="bob@x.test, carol@x.test", Cc="dave@x.test")
    assert addrs(reply_recipients(m, OWN, False)[0]) == ["bob@x.test", "carol@x.test"]
    to, cc = reply_recipients(m, OWN, True)
    assert addrs(to) == ["bob@x.test", "carol@x.test", "dave@x.test"] and cc == []
    # a note to oneself answers oneself
    m = msg(From="me@example.test", To="me@example.test")
    assert addrs(reply_recipients(m, OWN, False)[0]) == ["me@example.test"]


def test_quote_and_signature() -> None:
    assert quote("a\n\n> b\n") == "> a\n>\n>> b\n"
    assert strip_signature("text\n-- \nsig\n") == "text\n"
    assert strip_signature("text\n--\nnot a separator\n") == "text\n--\nnot a separator\n"


def test_attribution() -> None:
    m = msg(From="Ann Example <ann@x.test>", Date="Tue, 01 Oct 2024 10:00:00 +0200")
    assert attribution(m) == "On Tue, 01 Oct 2024 10:00, Ann Example wrote:"
    assert attribution(msg(From="ann@x.test")) == "ann@x.test wrote:"
    assert attribution(msg(Date="not a date")) == "On not a date, someone wrote:"


def test_build_reply() -> None:
    m = msg("line\r\n> older\r\n-- \r\nsig\r\n", From="=?utf-8?q?J=C3=B6rg?= <j@x.test>", To="me@example.test",
            Cc="bob@x.test", Subject="AW: Plan", Message_ID="<p@x>", References="<r@x>")
    reply = build_reply(m, OWN, reply_all=True)
    assert addrs(reply.to) == ["j@x.test"] and addrs(reply.cc) == ["bob@x.test"]
    assert reply.subject == "Re: Plan"
    assert (reply.in_reply_to, reply.references) == ("<p@x>", ["<r@x>", "<p@x>"])
    assert reply.quoted == "Jörg wrote:\n> line\n>> older\n"


def test_inline_forward_copies_text_and_attachments() -> None:
    orig = parse_message(to_bytes(compose(
        "Ann <ann@x.test>", "me@example.test", subject="Files", text="see files\n",
        attachments=[Attachment("a.txt", "one\r\ntwo\r\n", "text/plain"), Attachment("b.bin", b"\x00")])))
    text, copies = inline_forward(orig, "FYI\n")
    assert text.startswith("FYI\n\n---------- Forwarded message ----------\nFrom: Ann <ann@x.test>\n")
    assert "Subject: Files\n" in text and text.endswith("\n\nsee files\n")
    assert [(a.filename, a.data, a.content_type) for a in copies] == [
        ("a.txt", b"one\ntwo\n", "text/plain"), ("b.bin", b"\x00", "application/octet-stream")]


def test_forward_attachment_of_8bit_message_keeps_it_readable() -> None:
    orig = (b"From: J\xc3\xb6rg <a@b.test>\r\nTo: d@e.test\r\nSubject: caf\xc3\xa9\r\n"
            b"Received: from x by y; Tue, 01 Oct 2024 10:00:00 +0200\r\n"
            b"Received: from w by x; Tue, 01 Oct 2024 09:59:00 +0200\r\n"
            b"Date: Tue, 01 Oct 2024 10:00:00 +0200\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n")
    out = to_bytes(compose("x@y.test", "q@r.test", text="FYI", attachments=[forward_attachment(orig)]))
    assert out.isascii() and b"unknown-8bit" not in out
    inner = next(parse_message(out).iter_attachments()).get_content()
    assert str(inner["From"]) == "Jörg <a@b.test>" and inner["Subject"] == "café"
    assert [k for k, _v in inner.items()][:4] == ["From", "To", "Subject", "Received"]
    assert inner.get_content().rstrip() == "Grüße"
