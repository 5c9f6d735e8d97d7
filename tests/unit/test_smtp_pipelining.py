"""The MX engine refuses clients that send commands ahead of a reply where
pipelining does not allow it (RFC 2920 3.1; RFC 5321 4.3.1 without
PIPELINING): byte-exact sessions over the sans-I/O engine."""

from __future__ import annotations

from dataclasses import replace

from mailyard.protocols.smtp import NEED_DATA, PAUSED, Closed, ServerConfig, SMTPServerEngine

STRICT = ServerConfig(hostname="mx.example.test", max_message_size=10_000, strict_pipelining=True)
SYNC = b"554 5.5.1 mx.example.test SMTP synchronization error: command sent before the reply to "


def run(engine: SMTPServerEngine, data: bytes) -> tuple[bytes, Closed | None]:
    """Feed ``data`` in one piece, answer every event the usual way."""
    engine.receive_data(data)
    while True:
        ev = engine.next_event()
        if ev is NEED_DATA or ev is PAUSED:
            return engine.data_to_send(), None
        if isinstance(ev, Closed):
            return engine.data_to_send(), ev
        if ev.needs_answer:
            engine.respond()


def test_commands_after_ehlo_before_its_reply_are_refused() -> None:
    engine = SMTPServerEngine(STRICT)
    out, closed = run(engine, b"EHLO client.example.org\r\nMAIL FROM:<a@example.org>\r\n")
    # RFC 2034: no enhanced status code before the EHLO was answered
    assert out == b"554 mx.example.test SMTP synchronization error: command sent before the reply to EHLO\r\n"
    assert closed is not None and closed.reason == "out-of-sync"


def test_without_ehlo_nothing_may_be_pipelined() -> None:
    engine = SMTPServerEngine(STRICT)
    out, _ = run(engine, b"HELO client.example.org\r\n")
    assert out == b"250 mx.example.test Hello client.example.org\r\n"
    out, closed = run(engine, b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\n")
    assert out == b"554 mx.example.test SMTP synchronization error: command sent before the reply to MAIL\r\n"
    assert closed is not None and closed.reason == "out-of-sync"


def test_a_pipelined_group_after_ehlo_is_allowed_up_to_data() -> None:
    engine = SMTPServerEngine(STRICT)
    out, _ = run(engine, b"EHLO client.example.org\r\n")
    assert out.startswith(b"250-mx.example.test Hello client.example.org\r\n")
    out, closed = run(engine, b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
    assert out == b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    assert closed is None
    out, closed = run(engine, b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    assert out == b"250 2.0.0 Message accepted for delivery\r\n221 2.0.0 mx.example.test closing connection\r\n"


def test_data_followed_by_the_message_before_354_is_refused() -> None:
    engine = SMTPServerEngine(STRICT)
    run(engine, b"EHLO client.example.org\r\n")
    out, closed = run(engine, b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nSubject: x\r\n")
    assert out == b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n" + SYNC + b"DATA\r\n"
    assert closed is not None and closed.reason == "out-of-sync"


def test_pipelining_is_free_where_not_strict() -> None:
    engine = SMTPServerEngine(replace(STRICT, strict_pipelining=False))
    out, closed = run(engine, b"EHLO client.example.org\r\nMAIL FROM:<a@example.org>\r\n")
    assert out.endswith(b"250 2.1.0 Sender OK\r\n") and closed is None
