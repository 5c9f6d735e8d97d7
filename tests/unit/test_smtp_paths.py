"""Paths and MAIL/RCPT parameters: pure functions and through the engine."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailyard.protocols.smtp import MailFromReceived, RcptToReceived, ServerConfig
from mailyard.protocols.smtp.params import ParamError, parse_params, xtext_decode
from mailyard.protocols.smtp.paths import (
    PathError,
    is_valid_domain,
    parse_forward_path,
    parse_reverse_path,
    split_path,
)

from .test_smtp_engine import CFG, Session, ehlo


@pytest.mark.parametrize(
    "path, expected",
    [
        ("<>", ""),
        ("<a@b.example>", "a@b.example"),
        ("<first.last+tag@sub.example.com>", "first.last+tag@sub.example.com"),
        ("<@a.example,@b.example:user@c.example>", "user@c.example"),  # source route dropped
        ('<"john doe"@example.com>', '"john doe"@example.com'),
        ('<"a\\"b>c"@example.com>', '"a\\"b>c"@example.com'),
        ("<user@[192.0.2.1]>", "user@[192.0.2.1]"),
        ("<user@[IPv6:2001:db8::1]>", "user@[IPv6:2001:db8::1]"),
        ("<user@[x-tag:stuff]>", "user@[x-tag:stuff]"),
        ("<u@a-b--c.example>", "u@a-b--c.example"),
    ],
)
def test_valid_paths(path, expected):
    assert parse_reverse_path(path, utf8=False) == expected


@pytest.mark.parametrize(
    "path",
    [
        "<a>",
        "<@b.example>",
        "<a@>",
        "<a..b@example.com>",
        "<.a@example.com>",
        "<a@-example.com>",
        "<a@example-.com>",
        "<a@exa mple.com>",
        "<a@[300.1.1.1]>",
        "<a@[IPv6:zz::1]>",
        "<a b@example.com>",
        "<a@b@example.com>",
        "<" + "a" * 250 + "@example.com>",  # path over 256 octets
    ],
)
def test_invalid_paths(path):
    with pytest.raises(PathError) as info:
        parse_forward_path(path, utf8=False)
    assert info.value.reply.code == 501


def test_postmaster_forward_path():
    assert parse_forward_path("<Postmaster>", utf8=False) == "postmaster"
    assert parse_forward_path("<POSTMASTER>", utf8=False) == "postmaster"
    assert parse_forward_path("<postmaster@example.com>", utf8=False) == "postmaster@example.com"
    with pytest.raises(PathError):
        parse_forward_path("<>", utf8=False)


def test_utf8_paths_need_smtputf8():
    with pytest.raises(PathError) as info:
        parse_forward_path("<jöran@exämple.se>", utf8=False)
    assert (info.value.reply.code, info.value.reply.enhanced) == (553, "5.6.7")
    assert parse_forward_path("<jöran@exämple.se>", utf8=True) == "jöran@exämple.se"


def test_split_path():
    assert split_path("<a@b.example> SIZE=10  BODY=8BITMIME", sender=True) == (
        "<a@b.example>",
        "SIZE=10  BODY=8BITMIME",
    )
    assert split_path('<"x>y"@b.example>', sender=True) == ('<"x>y"@b.example>', "")
    for bad in ("a@b.example", "<a@b.example", "<a@b.example>SIZE=1", ""):
        with pytest.raises(PathError):
            split_path(bad, sender=True)


def test_is_valid_domain():
    assert is_valid_domain("mail.example.com")
    assert is_valid_domain("[192.0.2.7]")
    assert not is_valid_domain("bad_name")
    assert not is_valid_domain("[999.1.1.1]")


def test_parse_params_and_xtext():
    assert parse_params("size=5 SMTPUTF8") == {"SIZE": "5", "SMTPUTF8": None}
    assert xtext_decode("a+2Bb+3D") == "a+b="
    for bad in ("SIZE=1 size=2", "=x", "SIZE=", "-X=1"):
        with pytest.raises(ParamError):
            parse_params(bad)
    with pytest.raises(ParamError):
        xtext_decode("a+zz")


# --------------------------------------------------------- via the engine


def mail(s: Session, line: bytes) -> bytes:
    return s.feed(line + b"\r\n")


def test_mail_lenient_space_and_missing_brackets():
    s = Session()
    ehlo(s)
    assert mail(s, b"MAIL FROM: <a@example.org>") == b"250 2.1.0 Sender OK\r\n"
    s.feed(b"RSET\r\n")
    assert mail(s, b"MAIL FROM: gmbashir@kfupm.edu.sa") == (
        b"501 5.1.7 Syntax: path must be enclosed in <>\r\n"
    )
    assert mail(s, b"MAIL FRM:<a@example.org>") == b"501 5.5.2 Syntax: MAIL FROM:<address>\r\n"
    assert mail(s, b"mail from:<a@example.org>") == b"250 2.1.0 Sender OK\r\n"
    assert (
        s.feed(b"RCPT TO:a@example.org\r\n") == b"501 5.1.3 Syntax: path must be enclosed in <>\r\n"
    )
    assert s.feed(b"RCPT TO:<>\r\n") == b"501 5.1.3 Null forward-path not allowed\r\n"


def test_mail_params_parsed_into_event():
    s = Session()
    ehlo(s)
    out = mail(s, b"MAIL FROM:<a@example.org> SIZE=500 BODY=8bitmime RET=HDRS ENVID=QQ+2B1")
    assert out == b"250 2.1.0 Sender OK\r\n"
    ev = [e for e in s.events if isinstance(e, MailFromReceived)][-1]
    assert ev.size == 500 and ev.body == "8BITMIME" and ev.ret == "HDRS" and ev.envid == "QQ+1"
    assert ev.params == {"SIZE": "500", "BODY": "8bitmime", "RET": "HDRS", "ENVID": "QQ+2B1"}


def test_rcpt_dsn_params():
    s = Session()
    ehlo(s)
    mail(s, b"MAIL FROM:<a@example.org>")
    out = s.feed(b"RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.com\r\n")
    assert out == b"250 2.1.5 Recipient OK\r\n"
    ev = [e for e in s.events if isinstance(e, RcptToReceived)][-1]
    assert ev.notify == frozenset({"SUCCESS", "FAILURE"})
    assert ev.orcpt == ("rfc822", "b@example.com")
    assert (
        s.feed(b"RCPT TO:<c@example.com> NOTIFY=NEVER,DELAY\r\n")
        == b"501 5.5.4 Bad NOTIFY value\r\n"
    )
    assert (
        s.feed(b"RCPT TO:<c@example.com> ORCPT=nosemicolon\r\n") == b"501 5.5.4 Bad ORCPT value\r\n"
    )
    s.feed(b"DATA\r\nx\r\n.\r\n")
    msg = s.messages[0]
    assert msg.rcpts[0].notify == frozenset({"SUCCESS", "FAILURE"})
    assert msg.rcpt_params == [{"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;b+40example.com"}]


@pytest.mark.parametrize(
    "line, reply",
    [
        (b"MAIL FROM:<a@example.org> FOO=1", b"555 5.5.4 Unsupported parameter FOO\r\n"),
        (
            b"MAIL FROM:<a@example.org> BODY=BINARYMIME",
            b"555 5.5.4 BODY=BINARYMIME not supported\r\n",
        ),
        (b"MAIL FROM:<a@example.org> BODY=9BIT", b"501 5.5.4 Bad BODY value\r\n"),
        (b"MAIL FROM:<a@example.org> SIZE=abc", b"501 5.5.4 Bad SIZE value\r\n"),
        (b"MAIL FROM:<a@example.org> RET=ALL", b"501 5.5.4 Bad RET value\r\n"),
        (b"MAIL FROM:<a@example.org> SMTPUTF8=yes", b"501 5.5.4 SMTPUTF8 takes no value\r\n"),
        (b"MAIL FROM:<a@example.org> AUTH=<>", b"555 5.5.4 Unsupported parameter AUTH\r\n"),
        (b"MAIL FROM:<a@example.org> SIZE=1 SIZE=2", b"501 5.5.4 Duplicate parameter SIZE\r\n"),
        (b"MAIL FROM:<a@[1.2.3.999]>", b"501 5.1.7 Bad address literal\r\n"),
    ],
)
def test_mail_param_errors(line, reply):
    s = Session()
    ehlo(s)
    assert mail(s, line) == reply


def test_params_refused_after_helo():
    s = Session()
    s.feed(b"HELO c.example\r\n")
    assert mail(s, b"MAIL FROM:<a@example.org> SIZE=10") == (
        b"555 Parameters not allowed after HELO\r\n"
    )


def test_smtputf8_session():
    s = Session()
    ehlo(s)
    assert s.feed("MAIL FROM:<jöran@exämple.se>\r\n".encode()) == (
        b"553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n"
    )
    assert (
        s.feed("MAIL FROM:<jöran@exämple.se> SMTPUTF8\r\n".encode()) == b"250 2.1.0 Sender OK\r\n"
    )
    assert s.feed("RCPT TO:<用户@例子.广告>\r\n".encode()) == b"250 2.1.5 Recipient OK\r\n"
    s.feed(b"DATA\r\n")
    s.feed("Subject: héllo\r\n\r\nbody\r\n.\r\n".encode())
    msg = s.messages[0]
    assert msg.mail.smtputf8 and msg.forward_paths == ["用户@例子.广告"]


def test_smtputf8_disabled():
    s = Session(replace(CFG, smtputf8=False))
    ehlo(s)
    assert mail(s, b"MAIL FROM:<a@example.org> SMTPUTF8") == (
        b"555 5.5.4 Unsupported parameter SMTPUTF8\r\n"
    )


def test_utf8_rcpt_without_smtputf8_mail():
    s = Session()
    ehlo(s)
    mail(s, b"MAIL FROM:<a@example.org>")
    assert s.feed("RCPT TO:<jöran@example.se>\r\n".encode()) == (
        b"553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n"
    )


def test_source_route_and_literals_through_engine():
    s = Session()
    ehlo(s)
    mail(s, b"MAIL FROM:<@relay.example:a@example.org>")
    s.feed(b"RCPT TO:<@hosta.int,@jkl.org:userc@d.bar.org>\r\nRCPT TO:<u@[IPv6:::1]>\r\n")
    rcpts = [e.forward_path for e in s.events if isinstance(e, RcptToReceived)]
    assert rcpts == ["userc@d.bar.org", "u@[IPv6:::1]"]
    assert s.events[1].reverse_path == "a@example.org"


def test_size_zero_means_unlimited():
    s = Session(ServerConfig(hostname="mx.example.test", max_message_size=0))
    out = s.feed(b"EHLO c.example\r\n")
    assert b"250-SIZE 0\r\n" in out
    assert mail(s, b"MAIL FROM:<a@example.org> SIZE=999999999999") == b"250 2.1.0 Sender OK\r\n"


@pytest.mark.parametrize(
    "line, what",
    [
        (b"MAIL FROM:<a@example.org> ENVID=x+0D+0AX-Injected:+201", b"ENVID"),
        (b"MAIL FROM:<a@example.org> ENVID=x+0Ay", b"ENVID"),
        (b"MAIL FROM:<a@example.org> ENVID=x+0Dy", b"ENVID"),
        (b"MAIL FROM:<a@example.org> ENVID=x+00y", b"ENVID"),
    ],
)
def test_xtext_decoding_to_control_characters_is_refused(line, what):
    """RFC 3461 4.4: ENVID is printable US-ASCII; "+0D+0A" must not become a
    line break in the DSN fields built from it (header injection)."""
    s = Session()
    ehlo(s)
    assert mail(s, line) == b"501 5.5.4 Control characters in " + what + b"\r\n"
    assert mail(s, b"MAIL FROM:<a@example.org> ENVID=x+2By+20z") == b"250 2.1.0 Sender OK\r\n"


def test_orcpt_decoding_to_control_characters_is_refused():
    s = Session()
    ehlo(s)
    assert mail(s, b"MAIL FROM:<a@example.org>") == b"250 2.1.0 Sender OK\r\n"
    reply = s.feed(b"RCPT TO:<b@example.org> ORCPT=rfc822;b+0D+0AX-Injected:+201@example.org\r\n")
    assert reply == b"501 5.5.4 Control characters in ORCPT\r\n"
