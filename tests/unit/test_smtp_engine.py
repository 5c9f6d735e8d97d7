"""SMTP server engine: byte-for-byte sessions (command in, reply out)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailyard.protocols.smtp import (
    NEED_DATA,
    PAUSED,
    AbuseBudgets,
    Closed,
    HeloReceived,
    MailFromReceived,
    MessageReceived,
    ProtocolError,
    ProtocolMisuse,
    RcptToReceived,
    Reply,
    ServerConfig,
    SMTPServerEngine,
    State,
)

CFG = ServerConfig(hostname="mx.example.test", max_message_size=10_000)

EHLO_REPLY = (
    b"250-mx.example.test Hello client.example.org\r\n"
    b"250-SIZE 10000\r\n"
    b"250-8BITMIME\r\n"
    b"250-PIPELINING\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-SMTPUTF8\r\n"
    b"250-DSN\r\n"
    b"250 HELP\r\n"
)


class Session:
    """Drives an engine like the glue does, with a pluggable policy.

    ``rcpt_policy`` maps a forward-path to a Reply (None = accept).
    Every event is recorded in ``events``; accepted messages in ``messages``.
    """

    def __init__(self, config: ServerConfig = CFG, rcpt_policy=None, message_reply=None):
        self.engine = SMTPServerEngine(config)
        self.events: list = []
        self.messages: list[MessageReceived] = []
        self.rcpt_policy = rcpt_policy or (lambda path: None)
        self.message_reply = message_reply
        self.greeting = self.engine.greeting()

    def feed(self, data: bytes) -> bytes:
        self.engine.receive_data(data)
        self.pump()
        return self.engine.data_to_send()

    def pump(self) -> None:
        while True:
            ev = self.engine.next_event()
            if ev is NEED_DATA or ev is PAUSED:
                return
            self.events.append(ev)
            if isinstance(ev, Closed):
                return
            if not ev.needs_answer:
                continue
            if isinstance(ev, RcptToReceived):
                verdict = self.rcpt_policy(ev.forward_path)
                if verdict is None:
                    self.engine.accept()
                else:
                    self.engine.respond(verdict)
            elif isinstance(ev, MessageReceived):
                self.messages.append(ev)
                if self.message_reply is None:
                    self.engine.accept()
                else:
                    self.engine.respond(self.message_reply)
            else:
                self.engine.accept()

    def errors(self) -> list[ProtocolError]:
        return [e for e in self.events if isinstance(e, ProtocolError)]


def ehlo(s: Session) -> None:
    out = s.feed(b"EHLO client.example.org\r\n")
    if s.engine.config == CFG:
        assert out == EHLO_REPLY
    else:
        assert out.startswith(b"250-mx.example.test Hello client.example.org\r\n")
        assert out.endswith(b"250 HELP\r\n")


# --------------------------------------------------------------- textbook


def test_greeting():
    assert Session().greeting == b"220 mx.example.test mailyard ESMTP ready\r\n"


def test_helo_session_textbook():
    # The classic RFC 821-style session: no extensions, no enhanced codes.
    s = Session()
    assert s.feed(b"HELO cs.rutgers.edu\r\n") == b"250 mx.example.test Hello cs.rutgers.edu\r\n"
    assert s.feed(b"MAIL FROM:<pxk@cs.rutgers.edu>\r\n") == b"250 Sender OK\r\n"
    assert s.feed(b"RCPT TO:<testuser@pk.org>\r\n") == b"250 Recipient OK\r\n"
    assert s.feed(b"DATA\r\n") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    body = (
        b"From: Paul <pxk@cs.rutgers.edu>\r\nSubject: test message\r\n\r\nHi,\r\nThis is a test\r\n"
    )
    assert s.feed(body + b".\r\n") == b"250 Message accepted for delivery\r\n"
    assert s.feed(b"QUIT\r\n") == b"221 mx.example.test closing connection\r\n"
    assert s.messages[0].data == body
    assert s.messages[0].reverse_path == "pxk@cs.rutgers.edu"
    assert s.messages[0].forward_paths == ["testuser@pk.org"]
    assert s.events[-1] == Closed("quit")
    assert s.engine.closed


def test_ehlo_session_two_recipients():
    s = Session()
    ehlo(s)
    assert s.feed(b"MAIL FROM:<alice@example.org>\r\n") == b"250 2.1.0 Sender OK\r\n"
    assert s.feed(b"RCPT TO:<bob@example.com>\r\n") == b"250 2.1.5 Recipient OK\r\n"
    assert s.feed(b"RCPT TO:<carol@example.com>\r\n") == b"250 2.1.5 Recipient OK\r\n"
    assert s.feed(b"DATA\r\n") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    assert (
        s.feed(b"Subject: hi\r\n\r\nhello\r\n.\r\n")
        == b"250 2.0.0 Message accepted for delivery\r\n"
    )
    assert s.feed(b"QUIT\r\n") == b"221 2.0.0 mx.example.test closing connection\r\n"
    (msg,) = s.messages
    assert msg.forward_paths == ["bob@example.com", "carol@example.com"]
    assert msg.data == b"Subject: hi\r\n\r\nhello\r\n"


def test_rejected_recipient():
    def policy(path):
        return Reply(550, "5.1.1", "No such user here") if path.startswith("nobody") else None

    s = Session(rcpt_policy=policy)
    ehlo(s)
    s.feed(b"MAIL FROM:<alice@example.org>\r\n")
    assert s.feed(b"RCPT TO:<nobody@example.com>\r\n") == b"550 5.1.1 No such user here\r\n"
    assert s.feed(b"RCPT TO:<bob@example.com>\r\n") == b"250 2.1.5 Recipient OK\r\n"
    s.feed(b"DATA\r\n")
    s.feed(b"x\r\n.\r\n")
    assert s.messages[0].forward_paths == ["bob@example.com"]


def test_pipelined_transaction_in_one_chunk():
    def policy(path):
        return Reply(550, "5.1.1", "No such user") if path == "bad@example.com" else None

    s = Session(rcpt_policy=policy)
    out = s.feed(
        b"EHLO client.example.org\r\n"
        b"MAIL FROM:<alice@example.org>\r\n"
        b"RCPT TO:<bob@example.com>\r\n"
        b"RCPT TO:<bad@example.com>\r\n"
        b"DATA\r\n"
    )
    assert out == EHLO_REPLY + (
        b"250 2.1.0 Sender OK\r\n"
        b"250 2.1.5 Recipient OK\r\n"
        b"550 5.1.1 No such user\r\n"
        b"354 End data with <CR><LF>.<CR><LF>\r\n"
    )
    # Body, end of data and the next pipelined transaction in one chunk.
    out = s.feed(b"one\r\n.\r\nRSET\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nQUIT\r\n")
    assert out == (
        b"250 2.0.0 Message accepted for delivery\r\n"
        b"250 2.0.0 OK\r\n"
        b"250 2.1.0 Sender OK\r\n"
        b"250 2.1.5 Recipient OK\r\n"
        b"221 2.0.0 mx.example.test closing connection\r\n"
    )


def test_pipelined_all_rcpts_rejected_data_gets_554():
    s = Session(rcpt_policy=lambda p: Reply(550, "5.1.1", "No such user"))
    ehlo(s)
    out = s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<x@example.com>\r\nDATA\r\n")
    assert out == (
        b"250 2.1.0 Sender OK\r\n550 5.1.1 No such user\r\n554 5.5.1 No valid recipients\r\n"
    )
    assert s.engine.state is State.MAIL


def test_dot_stuffing_single_dot_line():
    s = Session()
    ehlo(s)
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    # A line that is a single dot is sent as ".." (RFC 5321 4.5.2).
    s.feed(b"first\r\n..\r\n..leading dot\r\n...\r\nlast\r\n.\r\n")
    assert s.messages[0].data == b"first\r\n.\r\n.leading dot\r\n..\r\nlast\r\n"


def test_dot_at_start_of_first_line_is_unstuffed():
    s = Session()
    ehlo(s)
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    s.feed(b"..hidden\r\n.\r\n")
    assert s.messages[0].data == b".hidden\r\n"


def test_empty_message():
    s = Session()
    ehlo(s)
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    assert s.feed(b".\r\n") == b"250 2.0.0 Message accepted for delivery\r\n"
    assert s.messages[0].data == b""


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7])
def test_data_split_at_awkward_places(step):
    s = Session()
    ehlo(s)
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    wire = b"Subject: x\r\n\r\n..a\r\nb\r\n.\r\nNOOP\r\n"
    out = b""
    for i in range(0, len(wire), step):
        out += s.feed(wire[i : i + step])
    assert out == b"250 2.0.0 Message accepted for delivery\r\n250 2.0.0 OK\r\n"
    assert s.messages[0].data == b"Subject: x\r\n\r\n.a\r\nb\r\n"


def test_terminator_split_across_chunks_every_position():
    wire = b"abc\r\n.\r\n"
    for cut in range(1, len(wire)):  # b"" would mean EOF
        s = Session()
        ehlo(s)
        s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        out = s.feed(wire[:cut]) + s.feed(wire[cut:])
        assert out == b"250 2.0.0 Message accepted for delivery\r\n", cut
        assert s.messages[0].data == b"abc\r\n"


def test_bare_lf_dot_lf_does_not_end_data():
    # RFC 5321 4.1.1.4: <LF>.<LF> MUST NOT end the data (SMTP smuggling).
    s = Session()
    ehlo(s)
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    out = s.feed(b"x\n.\nMAIL FROM:<evil@example.org>\r\n")
    assert out == b""
    assert s.engine.state is State.DATA
    out = s.feed(b".\r\n")
    # Strict mode refuses the message because of the bare LFs.
    assert out == b"550 5.6.0 Message contains bare CR or LF; lines must end with CRLF\r\n"
    assert s.messages == []
    assert s.engine.state is State.READY


@pytest.mark.parametrize(
    "payload", [b"a\r\n.\nb\r\n", b"a\n.\r\nb\r\n", b"a\r.\r\nb\r\n", b"a\r\n.\rb\r\n"]
)
def test_smuggling_variants_refused(payload):
    s = Session()
    ehlo(s)
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    out = s.feed(payload + b".\r\n")
    assert out.startswith(b"550 5.6.0")
    assert s.messages == []


def test_bare_lf_accepted_when_not_strict():
    s = Session(replace(CFG, strict_line_endings=False))
    ehlo(s)
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    s.feed(b"a\nb\r\n.\r\n")
    assert s.messages[0].data == b"a\nb\r\n"


def test_message_rejected_by_glue_resets_transaction():
    s = Session(message_reply=Reply(451, "4.3.0", "Try again later"))
    ehlo(s)
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    assert s.feed(b"x\r\n.\r\n") == b"451 4.3.0 Try again later\r\n"
    assert s.engine.state is State.READY
    assert s.feed(b"RCPT TO:<b@example.com>\r\n") == b"503 5.5.1 Need MAIL command\r\n"


def test_two_messages_one_connection():
    s = Session()
    ehlo(s)
    for n in range(2):
        s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        s.feed(b"n=%d\r\n.\r\n" % n)
    assert [m.data for m in s.messages] == [b"n=0\r\n", b"n=1\r\n"]


# ------------------------------------------------------------ size limits


def test_size_param_over_limit():
    s = Session()
    ehlo(s)
    out = s.feed(b"MAIL FROM:<a@example.org> SIZE=10001\r\n")
    assert out == b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    assert s.feed(b"MAIL FROM:<a@example.org> SIZE=10000\r\n") == b"250 2.1.0 Sender OK\r\n"
    assert s.events[-1].size == 10000


def test_oversize_message_552_without_buffering():
    s = Session()
    ehlo(s)
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    line = b"x" * 98 + b"\r\n"
    out = b""
    for _ in range(500):  # 50 KB, five times the limit
        out += s.feed(line)
        assert len(s.engine._data._body) < 10_000 + 200
    assert out == b""
    out = s.feed(b".\r\nNOOP\r\n")
    assert out == b"552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 OK\r\n"
    assert s.messages == []
    assert s.engine.state is State.READY


def test_message_exactly_at_limit_accepted_dots_not_counted():
    s = Session(replace(CFG, max_message_size=10))
    ehlo(s)
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    # 10 octets after unstuffing (".abcdefg\r\n"), 11 on the wire.
    assert s.feed(b"..abcdefg\r\n.\r\n") == b"250 2.0.0 Message accepted for delivery\r\n"
    assert s.messages[0].data == b".abcdefg\r\n"


def test_long_text_line_rejected_after_terminator():
    s = Session(replace(CFG, max_message_size=0))
    ehlo(s)
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    ok_line = b"y" * 998 + b"\r\n"  # exactly 1000 with CRLF
    stuffed_ok = b"." + b"z" * 998 + b"\r\n"  # 1001 on the wire, 1000 after unstuffing
    assert s.feed(ok_line + stuffed_ok) == b""
    out = s.feed(b"a" * 5000)  # no CRLF yet: must not be buffered
    assert len(s.engine._data._body) < 10
    out += s.feed(b"\r\n.\r\n")
    assert out == b"500 5.5.2 Line too long\r\n"
    assert s.messages == []


def test_line_of_exactly_limit_ok():
    s = Session(replace(CFG, max_message_size=0))
    ehlo(s)
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    body = (b"y" * 998 + b"\r\n") * 3
    assert s.feed(body + b".\r\n") == b"250 2.0.0 Message accepted for delivery\r\n"
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    assert s.feed(b"y" * 999 + b"\r\n.\r\n") == b"500 5.5.2 Line too long\r\n"


# ---------------------------------------------------------- command lines


def test_overlong_command_line():
    s = Session()
    ehlo(s)
    out = s.feed(b"NOOP " + b"x" * 600)
    assert out == b""  # reply when the line ends, in order
    assert len(s.engine._inbuf) <= 1
    out = s.feed(b"x" * 600 + b"\r\nNOOP\r\n")
    assert out == b"500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"


def test_command_line_limit_is_512_with_crlf():
    s = Session()
    ehlo(s)
    line = b"NOOP " + b"x" * (512 - 7)
    assert len(line) + 2 == 512
    assert s.feed(line + b"\r\n") == b"250 2.0.0 OK\r\n"
    assert s.feed(line + b"x\r\n") == b"500 5.5.2 Line too long\r\n"


def test_overlong_line_cr_lf_split():
    s = Session()
    ehlo(s)
    assert s.feed(b"x" * 700 + b"\r") == b""
    assert s.feed(b"\nNOOP\r\n") == b"500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"


def test_unknown_command_and_case_insensitive_verbs():
    s = Session()
    assert s.feed(b"ehlo client.example.org\r\n") == EHLO_REPLY
    assert s.feed(b"FOO bar\r\n") == b"500 5.5.2 Command unrecognized\r\n"
    assert s.feed(b"noop\r\n") == b"250 2.0.0 OK\r\n"
    assert s.feed(b"TURN\r\n") == b"502 5.5.1 Command not implemented\r\n"


def test_nul_and_invalid_utf8_in_command():
    s = Session()
    ehlo(s)
    assert s.feed(b"NO\x00OP\r\n") == b"500 5.5.2 Invalid character in command\r\n"
    assert s.feed(b"NOOP \xff\xfe\r\n") == b"500 5.5.2 Invalid UTF-8 in command\r\n"
    assert s.feed(b"NOOP\nQUIT\r\n") == b"500 5.5.2 Invalid character in command\r\n"
    assert not s.engine.closed


def test_too_many_unknown_commands():
    s = Session(replace(CFG, budgets=AbuseBudgets(max_bad_commands=3)))
    ehlo(s)
    out = s.feed(b"A\r\nB\r\nC\r\nNOOP\r\n")
    assert out == (
        b"500 5.5.2 Command unrecognized\r\n" * 3
        + b"421 4.7.0 mx.example.test Too many errors, closing connection\r\n"
    )
    assert s.engine.closed
    assert s.events[-1] == Closed("errors")


def test_too_many_errors_budget():
    s = Session(replace(CFG, budgets=AbuseBudgets(max_errors=2)))
    out = s.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<a@b.example>\r\n")
    assert out == (
        b"503 Send HELO/EHLO first\r\n503 Need MAIL command\r\n"
        b"421 mx.example.test Too many errors, closing connection\r\n"
    )


# --------------------------------------------------------------- ordering


def test_out_of_order_commands():
    s = Session()
    assert s.feed(b"MAIL FROM:<a@example.org>\r\n") == b"503 Send HELO/EHLO first\r\n"
    assert s.feed(b"DATA\r\n") == b"503 Need MAIL command\r\n"
    ehlo(s)
    assert s.feed(b"RCPT TO:<b@example.com>\r\n") == b"503 5.5.1 Need MAIL command\r\n"
    assert s.feed(b"DATA\r\n") == b"503 5.5.1 Need MAIL command\r\n"
    s.feed(b"MAIL FROM:<a@example.org>\r\n")
    assert s.feed(b"MAIL FROM:<a@example.org>\r\n") == b"503 5.5.1 Sender already specified\r\n"
    assert s.feed(b"DATA\r\n") == b"503 5.5.1 Need RCPT command\r\n"


def test_rset_mid_transaction():
    s = Session()
    ehlo(s)
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n")
    assert s.engine.state is State.RCPT
    assert s.feed(b"RSET\r\n") == b"250 2.0.0 OK\r\n"
    assert s.engine.state is State.READY
    assert s.feed(b"DATA\r\n") == b"503 5.5.1 Need MAIL command\r\n"
    assert s.feed(b"RSET extra\r\n") == b"501 5.5.4 Syntax: RSET (no parameters)\r\n"


def test_rset_before_helo_stays_unhelloed():
    s = Session()
    assert s.feed(b"RSET\r\n") == b"250 OK\r\n"
    assert s.engine.state is State.CONNECTED


def test_ehlo_mid_transaction_resets():
    s = Session()
    ehlo(s)
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n")
    ehlo(s)
    assert s.engine.state is State.READY
    assert s.feed(b"DATA\r\n") == b"503 5.5.1 Need MAIL command\r\n"


def test_helo_needs_argument():
    s = Session()
    assert s.feed(b"HELO\r\n") == b"501 Syntax: HELO hostname\r\n"
    assert s.feed(b"EHLO\r\n") == b"501 Syntax: EHLO hostname\r\n"


def test_too_many_recipients():
    s = Session(replace(CFG, max_recipients=2))
    ehlo(s)
    s.feed(b"MAIL FROM:<a@example.org>\r\n")
    out = s.feed(
        b"RCPT TO:<b1@example.com>\r\nRCPT TO:<b2@example.com>\r\nRCPT TO:<b3@example.com>\r\n"
    )
    assert out == b"250 2.1.5 Recipient OK\r\n" * 2 + b"452 4.5.3 Too many recipients\r\n"
    s.feed(b"DATA\r\nx\r\n.\r\n")
    assert s.messages[0].forward_paths == ["b1@example.com", "b2@example.com"]


def test_quit_ends_everything():
    s = Session()
    ehlo(s)
    out = s.feed(b"MAIL FROM:<a@example.org>\r\nQUIT\r\nNOOP\r\n")
    assert out == b"250 2.1.0 Sender OK\r\n221 2.0.0 mx.example.test closing connection\r\n"
    assert s.engine.next_event() == Closed("quit")
    s.engine.receive_data(b"NOOP\r\n")
    assert s.engine.data_to_send() == b""


def test_eof_mid_data_drops_transaction():
    s = Session()
    ehlo(s)
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nhalf a mess")
    assert s.feed(b"") == b""
    assert s.events[-1] == Closed("eof")
    assert s.messages == []


def test_eof_after_pipelined_quit_processes_quit_first():
    s = Session()
    s.engine.receive_data(b"HELO x.example\r\nQUIT\r\n")
    s.engine.receive_data(b"")
    s.pump()
    assert s.engine.data_to_send().endswith(b"221 mx.example.test closing connection\r\n")
    assert s.events[-1] == Closed("quit")


def test_shutdown_reply():
    s = Session()
    ehlo(s)
    s.engine.receive_data(b"NOOP\r\n")
    s.pump()
    assert (
        s.engine.shutdown_reply()
        == b"250 2.0.0 OK\r\n421 4.3.2 mx.example.test Service shutting down\r\n"
    )
    assert s.engine.closed
    assert s.engine.next_event() == Closed("shutdown")


# -------------------------------------------------------------- VRFY etc.


def test_vrfy_and_expn_disabled():
    s = Session()
    ehlo(s)
    assert s.feed(b"VRFY bob\r\n") == (
        b"252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n"
    )
    assert s.feed(b"EXPN staff\r\n") == b"502 5.5.1 EXPN not available\r\n"
    assert s.feed(b"VRFY\r\n") == b"501 5.5.4 Syntax: VRFY <address>\r\n"


def test_vrfy_and_expn_enabled():
    s = Session(replace(CFG, vrfy_enabled=True, expn_enabled=True))
    s.engine.receive_data(b"EHLO c.example\r\nVRFY bob\r\n")
    assert isinstance(s.engine.next_event(), HeloReceived)
    s.engine.accept()
    ev = s.engine.next_event()
    assert ev.argument == "bob"
    assert s.engine.next_event() is PAUSED
    s.engine.respond(Reply(250, "2.1.5", "Bob <bob@example.com>"))
    s.engine.receive_data(b"EXPN staff\r\n")
    ev = s.engine.next_event()
    assert ev.argument == "staff"
    s.engine.respond(Reply(250, "2.1.5", ["<a@example.com>", "<b@example.com>"]))
    out = s.engine.data_to_send()
    assert b"250-EXPN\r\n" in out and b"250-VRFY\r\n" in out
    assert out.endswith(
        b"250 2.1.5 Bob <bob@example.com>\r\n"
        b"250-2.1.5 <a@example.com>\r\n250 2.1.5 <b@example.com>\r\n"
    )


def test_help():
    s = Session()
    ehlo(s)
    assert s.feed(b"HELP\r\n") == (
        b"214-2.0.0 mailyard SMTP server; commands:\r\n"
        b"214-2.0.0 HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY EXPN HELP\r\n"
        b"214 2.0.0 End of HELP info\r\n"
    )
    assert s.feed(b"HELP rset\r\n") == b"214 2.0.0 RSET (abort the mail transaction)\r\n"
    assert s.feed(b"HELP frobnicate\r\n") == b"504 5.5.4 HELP topic unknown\r\n"


def test_noop_with_argument_ignored():
    s = Session()
    assert s.feed(b"NOOP whatever\r\n") == b"250 OK\r\n"


# ------------------------------------------------------------- API misuse


def test_usage_errors():
    e = SMTPServerEngine(CFG)
    with pytest.raises(ProtocolMisuse):
        e.accept()
    e.receive_data(b"EHLO x.example\r\n")
    e.next_event()
    with pytest.raises(ProtocolMisuse):
        e.respond(Reply(334, None, ""))
    with pytest.raises(ProtocolMisuse):
        e.reject(250, None, "no")


def test_paused_until_answered_and_pipelined_order():
    e = SMTPServerEngine(CFG)
    e.receive_data(b"EHLO x.example\r\nMAIL FROM:<a@example.org>\r\nNOOP\r\n")
    assert isinstance(e.next_event(), HeloReceived)
    assert e.next_event() is PAUSED
    e.accept()
    assert isinstance(e.next_event(), MailFromReceived)
    e.reject(550, "5.7.1", "Go away")
    assert e.next_event() is NEED_DATA
    assert e.data_to_send().endswith(b"550 5.7.1 Go away\r\n250 2.0.0 OK\r\n")
    assert e.state is State.READY


def test_glue_421_closes():
    e = SMTPServerEngine(CFG)
    e.receive_data(b"EHLO x.example\r\n")
    e.next_event()
    e.reject(421, "4.7.0", "Not now")
    assert e.closed
    assert e.next_event() == Closed("rejected")


def _vrfy_session(*, require_auth: bool) -> Session:
    cfg = replace(CFG, vrfy_enabled=True, expn_enabled=True, require_auth_for_mail=require_auth)
    s = Session(cfg)
    ehlo(s)
    return s


def test_vrfy_expn_before_auth_on_submission_reveal_nothing():
    """RFC 5321 7.3 / RFC 6409 4.3: even with VRFY/EXPN enabled, an
    unauthenticated submission client gets the same answer for every name and
    the glue is never asked to look anybody up."""
    s = _vrfy_session(require_auth=True)
    assert s.feed(b"VRFY alice@example.test\r\n") == (
        b"252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n"
    )
    assert s.feed(b"EXPN staff@example.test\r\n") == b"530 5.7.0 Authentication required\r\n"
    assert not [e for e in s.events if type(e).__name__ in ("VrfyReceived", "ExpnReceived")]


def test_vrfy_enabled_on_mx_port_asks_the_glue():
    s = _vrfy_session(require_auth=False)
    s.feed(b"VRFY alice@example.test\r\n")
    assert [type(e).__name__ for e in s.events][-1] == "VrfyReceived"


# ------------------------------------------------------ the transition table


def test_every_verb_has_a_row_in_every_command_state():
    from mailyard.protocols.smtp.server import TRANSITIONS

    verbs = {verb for _, verb in TRANSITIONS if not verb.startswith("<")}
    command_states = (State.CONNECTED, State.READY, State.MAIL, State.RCPT)
    missing = [(s, v) for s in command_states for v in sorted(verbs) if (s, v) not in TRANSITIONS]
    assert not missing


def test_out_of_sequence_commands_get_503_and_keep_the_state():
    s = Session()
    assert s.feed(b"MAIL FROM:<a@example.org>\r\n") == b"503 Send HELO/EHLO first\r\n"
    assert s.engine.state is State.CONNECTED
    ehlo(s)
    assert s.feed(b"DATA\r\n") == b"503 5.5.1 Need MAIL command\r\n"
    assert s.feed(b"MAIL FROM:<a@example.org>\r\n") == b"250 2.1.0 Sender OK\r\n"
    assert s.feed(b"MAIL FROM:<b@example.org>\r\n") == b"503 5.5.1 Sender already specified\r\n"
    assert s.feed(b"STARTTLS\r\n") == b"503 5.5.1 Not permitted during a mail transaction\r\n"
    assert s.engine.state is State.MAIL
    assert s.feed(b"RSET\r\n") == b"250 2.0.0 OK\r\n"
    assert s.engine.state is State.READY


def test_glue_answers_through_respond_alone():
    # respond() with no reply is the usual positive answer (the EHLO keywords).
    e = SMTPServerEngine(CFG)
    e.receive_data(b"EHLO client.example.org\r\nMAIL FROM:<a@example.org>\r\n")
    e.next_event()
    e.respond()
    e.next_event()
    e.respond(Reply(550, "5.7.1", "Go away"))
    assert e.next_event() is NEED_DATA
    assert e.data_to_send() == EHLO_REPLY + b"550 5.7.1 Go away\r\n"
    with pytest.raises(ProtocolMisuse):
        e.respond()
