"""What the command deadline (net/listener.CommandClock) reads from the
engines: whether an incomplete command is held, and how many were completed."""

from __future__ import annotations

from mailyard.net.listener import CommandClock
from mailyard.protocols.imap.framing import Framer, Limits, Rejected
from mailyard.protocols.pop3.engine import NEED_DATA as POP3_NEED_DATA
from mailyard.protocols.pop3.engine import POP3Server
from mailyard.protocols.smtp.events import NEED_DATA
from mailyard.protocols.smtp.server import SMTPServerEngine, State


def _drain(engine: SMTPServerEngine) -> None:
    while True:
        ev = engine.next_event()
        if ev is NEED_DATA:
            return
        if getattr(ev, "needs_answer", False):
            engine.accept()


def test_clock_restarts_only_on_progress() -> None:
    clock = CommandClock()
    assert clock.remaining(0.0, False, 0, 10.0) is None
    assert clock.remaining(1.0, True, 0, 10.0) == 10.0
    assert clock.remaining(5.0, True, 0, 10.0) == 6.0  # more bytes, same command
    assert clock.remaining(12.0, True, 0, 10.0) == -1.0
    assert clock.remaining(12.0, True, 1, 10.0) == 10.0  # a command completed
    assert clock.remaining(13.0, False, 1, 10.0) is None
    assert clock.remaining(14.0, True, 1, 10.0) == 10.0  # a new one began
    assert clock.remaining(14.0, True, 1, 0.0) is None  # 0: no deadline


def test_smtp_engine_reports_partial_lines_and_data() -> None:
    engine = SMTPServerEngine()
    assert not engine.partial_input
    engine.receive_data(b"HELO a")
    _drain(engine)
    assert engine.partial_input and engine.units_completed == 0
    engine.receive_data(b"\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n")
    _drain(engine)
    assert engine.units_completed == 4
    assert engine.state is State.DATA and engine.partial_input  # from 354 to the dot
    engine.receive_data(b"Subject: x\r\n\r\nhello\r\n")
    _drain(engine)
    assert engine.units_completed == 4
    engine.receive_data(b".\r\n")
    _drain(engine)
    assert engine.units_completed == 5 and not engine.partial_input


def test_smtp_engine_counts_an_overlong_line_once_it_ends() -> None:
    engine = SMTPServerEngine()
    engine.receive_data(b"X" * 2000)
    _drain(engine)
    assert engine.partial_input and engine.units_completed == 0
    engine.receive_data(b"\r\n")
    _drain(engine)
    assert not engine.partial_input and engine.units_completed == 1


def test_pop3_engine_reports_partial_lines() -> None:
    engine = POP3Server(timestamp="<1@x>")
    engine.receive_data(b"NO")
    assert engine.next_event() is POP3_NEED_DATA
    assert engine.partial_input and engine.lines_completed == 0
    engine.receive_data(b"OP\r\n")
    while engine.next_event() is not POP3_NEED_DATA:
        pass
    assert not engine.partial_input and engine.lines_completed == 1


def test_imap_framer_reports_partial_commands_and_literals() -> None:
    framer = Framer(Limits(max_append=100))
    framer.feed(b"a NOO")
    assert framer.next() is None and framer.partial and framer.completed == 0
    framer.feed(b"P\r\nb APPEND INBOX {5+}\r\nab")
    assert framer.next() is not None and framer.completed == 1
    assert framer.next() is None and framer.partial and framer.in_literal
    framer.feed(b"cde\r\n")
    assert framer.next() is not None and framer.completed == 2 and not framer.partial


def test_imap_framer_refuses_huge_literal_without_buffering() -> None:
    framer = Framer(Limits(max_append=100))
    framer.feed(b"a APPEND INBOX {9999999999}\r\n")
    ev = framer.next()
    assert isinstance(ev, Rejected) and ev.code == "TOOBIG" and ev.status == "NO" and not ev.fatal
    assert not framer.partial and framer.completed == 1
    framer.feed(b"b APPEND INBOX {9999999999+}\r\n")
    ev = framer.next()
    assert isinstance(ev, Rejected) and ev.code == "TOOBIG" and ev.status == "BAD" and ev.fatal


def test_fd_limit_is_raised_for_the_connection_caps() -> None:
    import resource

    from mailyard.server import raise_fd_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = hard if hard != resource.RLIM_INFINITY else 1 << 20
    low = min(soft, 256, top)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        want = min(top, low + 1000)
        assert raise_fd_limit(want) == want
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == want
        assert raise_fd_limit(10) == want  # never lowered
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
