"""The sans-I/O SMTP client engine, byte for byte."""

from __future__ import annotations

import base64

import pytest

from mailyard.protocols.smtp.client import (
    NEED_DATA,
    OutboundMessage,
    OutboundRecipient,
    SessionClosed,
    SessionFailed,
    SessionReady,
    SMTPClientEngine,
    StartTLSNeeded,
    TransactionResult,
    dot_stuff,
    parse_reply_lines,
    xtext_encode,
)

EHLO_FULL = (
    b"250-mx.b.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
    b"250-DSN\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n"
)


def events(engine: SMTPClientEngine) -> list:
    out = []
    while True:
        ev = engine.next_event()
        if ev is NEED_DATA:
            return out
        out.append(ev)


def feed(engine: SMTPClientEngine, data: bytes) -> list:
    engine.receive_data(data)
    return events(engine)


def msg(*rcpts: str, data: bytes = b"Subject: hi\r\n\r\nhello\r\n", **kw) -> OutboundMessage:
    return OutboundMessage("alice@a.test", tuple(OutboundRecipient(r) for r in rcpts), data, **kw)


def ready(ehlo: bytes = EHLO_FULL, **kw) -> SMTPClientEngine:
    e = SMTPClientEngine("mx.a.test", **kw)
    assert feed(e, b"220 mx.b.test ESMTP\r\n") == []
    assert e.data_to_send() == b"EHLO mx.a.test\r\n"
    (ev,) = feed(e, ehlo)
    assert isinstance(ev, SessionReady)
    return e


def test_pipelined_transaction_bytes_and_per_recipient_replies() -> None:
    e = ready(starttls="never")
    e.send_mail(msg("bob@b.test", "nobody@b.test", "carol@b.test"))
    assert e.data_to_send() == (
        b"MAIL FROM:<alice@a.test> SIZE=22\r\n"
        b"RCPT TO:<bob@b.test>\r\nRCPT TO:<nobody@b.test>\r\nRCPT TO:<carol@b.test>\r\nDATA\r\n"
    )
    assert feed(e, b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n550 5.1.1 no such user\r\n250 2.1.5 OK\r\n") == []
    assert feed(e, b"354 go ahead\r\n") == []
    assert e.data_to_send() == b"Subject: hi\r\n\r\nhello\r\n.\r\n"
    assert e.timeout == 600.0  # RFC 5321 4.5.3.2.6
    (ev,) = feed(e, b"250 2.0.0 queued as X\r\n")
    assert isinstance(ev, TransactionResult)
    assert [r.code for r in ev.replies] == [250, 550, 250]
    assert ev.replies[1].enhanced == "5.1.1"
    e.quit()
    assert e.data_to_send() == b"QUIT\r\n"
    assert isinstance(feed(e, b"221 bye\r\n")[0], SessionClosed)


def test_without_pipelining_one_command_at_a_time_and_rset_when_nobody_accepted() -> None:
    e = ready(b"250-mx.b.test\r\n250 8BITMIME\r\n", starttls="never")
    e.send_mail(msg("x@b.test", "y@b.test"))
    assert e.data_to_send() == b"MAIL FROM:<alice@a.test>\r\n"
    feed(e, b"250 ok\r\n")
    assert e.data_to_send() == b"RCPT TO:<x@b.test>\r\n"
    feed(e, b"450 4.2.1 try later\r\n")
    assert e.data_to_send() == b"RCPT TO:<y@b.test>\r\n"
    (ev,) = feed(e, b"550 5.1.1 unknown\r\n")
    assert [r.code for r in ev.replies] == [450, 550]
    assert e.data_to_send() == b"RSET\r\n"
    assert feed(e, b"250 ok\r\n") == []
    e.send_mail(msg("z@b.test"))
    assert e.data_to_send() == b"MAIL FROM:<alice@a.test>\r\n"


def test_ehlo_refused_falls_back_to_helo() -> None:
    e = SMTPClientEngine("mx.a.test")
    feed(e, b"220 old.b.test\r\n")
    assert e.data_to_send() == b"EHLO mx.a.test\r\n"
    assert feed(e, b"502 Command not implemented\r\n") == []
    assert e.data_to_send() == b"HELO mx.a.test\r\n"
    (ev,) = feed(e, b"250 old.b.test\r\n")
    assert isinstance(ev, SessionReady) and ev.extensions == {}


def test_8bit_and_smtputf8_refused_locally_when_the_peer_lacks_them() -> None:
    e = ready(b"250-mx.b.test\r\n250 PIPELINING\r\n", starttls="never")
    (ev,) = (e.send_mail(msg("bob@b.test", eight_bit=True)), events(e))[1]
    assert ev.local and ev.replies[0].code == 554 and ev.replies[0].enhanced == "5.6.3"
    (ev,) = (e.send_mail(msg("bob@b.test", smtputf8=True)), events(e))[1]
    assert ev.local and ev.replies[0].enhanced == "5.6.7"
    assert e.data_to_send() == b""


def test_size_over_the_peer_limit_is_a_local_552() -> None:
    e = ready(starttls="never")
    e.send_mail(msg("bob@b.test", data=b"x" * 2000 + b"\r\n"))
    (ev,) = events(e)
    assert ev.local and ev.replies[0].code == 552


def test_dsn_parameters_and_body_8bitmime() -> None:
    e = ready(starttls="never")
    m = OutboundMessage(
        "alice@a.test",
        (OutboundRecipient("bob@b.test", frozenset({"SUCCESS", "FAILURE"}), ("rfc822", "bob+x@b.test")),),
        b"x\r\n", eight_bit=True, smtputf8=True, ret="HDRS", envid="id=1",
    )
    e.send_mail(m)
    assert e.data_to_send() == (
        b"MAIL FROM:<alice@a.test> SIZE=3 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+3D1\r\n"
        b"RCPT TO:<bob@b.test> NOTIFY=FAILURE,SUCCESS ORCPT=rfc822;bob+2Bx@b.test\r\nDATA\r\n"
    )


def test_starttls_then_ehlo_again_then_auth_plain() -> None:
    e = SMTPClientEngine("mx.a.test", starttls="require", auth=("alice", "pw"))
    feed(e, b"220 relay\r\n")
    e.data_to_send()
    assert feed(e, b"250-relay\r\n250-STARTTLS\r\n250 AUTH LOGIN\r\n") == []
    assert e.data_to_send() == b"STARTTLS\r\n"
    (ev,) = feed(e, b"220 go\r\n")
    assert isinstance(ev, StartTLSNeeded)
    e.tls_started()
    assert e.data_to_send() == b"EHLO mx.a.test\r\n"
    assert feed(e, b"250-relay\r\n250 AUTH PLAIN LOGIN\r\n") == []
    token = base64.b64encode(b"\0alice\0pw").decode()
    assert e.data_to_send() == f"AUTH PLAIN {token}\r\n".encode()
    (ev,) = feed(e, b"235 2.7.0 ok\r\n")
    assert isinstance(ev, SessionReady) and ev.tls and ev.authenticated


def test_auth_login_exchange() -> None:
    e = SMTPClientEngine("h", starttls="never", auth=("u", "p"))
    feed(e, b"220 x\r\n")
    e.data_to_send()
    feed(e, b"250-x\r\n250 AUTH=LOGIN\r\n")
    assert e.data_to_send() == b"AUTH LOGIN\r\n"
    feed(e, b"334 VXNlcm5hbWU6\r\n")
    assert e.data_to_send() == b"dQ==\r\n"
    feed(e, b"334 UGFzc3dvcmQ6\r\n")
    assert e.data_to_send() == b"cA==\r\n"
    (ev,) = feed(e, b"235 ok\r\n")
    assert isinstance(ev, SessionReady)


def test_required_starttls_missing_fails_the_session() -> None:
    e = SMTPClientEngine("h", starttls="require")
    feed(e, b"220 x\r\n")
    e.data_to_send()
    (ev,) = feed(e, b"250 x\r\n")
    assert isinstance(ev, SessionFailed) and ev.stage == "starttls"
    assert e.data_to_send() == b"QUIT\r\n"


def test_opportunistic_starttls_refused_carries_on() -> None:
    e = SMTPClientEngine("h")
    feed(e, b"220 x\r\n")
    e.data_to_send()
    feed(e, b"250-x\r\n250 STARTTLS\r\n")
    assert e.data_to_send() == b"STARTTLS\r\n"
    (ev,) = feed(e, b"454 4.7.0 TLS not available\r\n")
    assert isinstance(ev, SessionReady) and not ev.tls


@pytest.mark.parametrize("greeting", [b"421 4.3.2 busy\r\n", b"554 no service\r\n"])
def test_greeting_refusal(greeting: bytes) -> None:
    e = SMTPClientEngine("h")
    ev = feed(e, greeting)[0]
    assert isinstance(ev, SessionFailed) and ev.stage == "greeting" and ev.reply.code == int(greeting[:3])
    assert e.data_to_send() == b"QUIT\r\n"


def test_connection_lost_mid_transaction_fails_pending_recipients_temporarily() -> None:
    e = ready(starttls="never")
    e.send_mail(msg("bob@b.test"))
    e.data_to_send()
    feed(e, b"250 ok\r\n250 ok\r\n354 go\r\n")
    e.receive_data(b"")
    evs = events(e)
    result = next(ev for ev in evs if isinstance(ev, TransactionResult))
    assert result.replies[0].code == 421
    assert isinstance(evs[-1], SessionClosed)


def test_multiline_reply_and_byte_at_a_time() -> None:
    e = SMTPClientEngine("h", starttls="never")
    for b in b"220-first\r\n220 second\r\n":
        e.receive_data(bytes([b]))
    assert events(e) == []
    assert e.data_to_send() == b"EHLO h\r\n"
    for b in EHLO_FULL:
        e.receive_data(bytes([b]))
    (ev,) = events(e)
    assert ev.extensions["SIZE"] == "1000" and "PIPELINING" in ev.extensions


def test_malformed_reply_closes() -> None:
    e = SMTPClientEngine("h")
    evs = feed(e, b"hello there\r\n")
    assert isinstance(evs[0], SessionFailed) and isinstance(evs[-1], SessionClosed)


def test_helpers() -> None:
    assert dot_stuff(b".a\r\nb\r\n.\r\n") == b"..a\r\nb\r\n..\r\n.\r\n"
    assert dot_stuff(b"no newline") == b"no newline\r\n.\r\n"
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    r = parse_reply_lines([b"550-5.1.1 one", b"550 5.1.1 two"])
    assert r.enhanced == "5.1.1" and r.lines == ("one", "two")


def test_several_transactions_on_one_connection() -> None:
    e = ready(starttls="never")
    for n in range(3):
        e.send_mail(msg(f"u{n}@b.test"))
        e.data_to_send()
        feed(e, b"250 ok\r\n250 ok\r\n354 go\r\n")
        (ev,) = feed(e, b"250 ok\r\n")
        assert ev.replies[0].code == 250
