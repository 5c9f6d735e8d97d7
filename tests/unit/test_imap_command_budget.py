"""Whole-command budgets of the IMAP framer and engine: every line and literal
counts, before login a command gets a few KB, and a command's state is checked
before the octets of its first non-synchronising literal are read."""

from __future__ import annotations

from mailyard.protocols.contract import NEED_DATA, Closed
from mailyard.protocols.imap import commands as c
from mailyard.protocols.imap.engine import ImapEngine, State
from mailyard.protocols.imap.framing import SEGMENT_COST, Limits


def started(**kw) -> ImapEngine:
    e = ImapEngine(**kw)
    e.greeting("ready")
    e.data_to_send()
    return e


def test_empty_literal_chain_before_login_is_refused_within_the_budget() -> None:
    e = started()
    e.receive_data(b"a LOGIN {0+}\r\n" + b"{0+}\r\n" * 10_000)
    assert e.next_event() == Closed("errors")
    assert e.data_to_send() == b"a BAD [TOOBIG] Command too large\r\n* BYE Too much data; closing connection\r\n"
    # refused after about budget / (line + SEGMENT_COST) lines, the rest never parsed
    assert len(e.framer.buffer) >= 6 * (10_000 - 8192 // (6 + 2 * SEGMENT_COST))


def test_synchronising_literal_over_the_budget_gets_no_continuation() -> None:
    e = started(limits=Limits(max_unauthenticated=1000))
    e.receive_data(b"a LOGIN {2000}\r\n")
    assert e.next_event() is NEED_DATA
    assert e.data_to_send() == b"a BAD [TOOBIG] Command too large\r\n"
    e.receive_data(b"b LOGIN {5}\r\n")  # within the budget: "+" as usual
    assert e.next_event() is NEED_DATA
    assert e.data_to_send() == b"+ Ready for literal data\r\n"


def test_append_before_login_is_refused_before_its_literal_is_read() -> None:
    e = started()
    e.receive_data(b"a APPEND INBOX {25000000+}\r\n" + b"x" * 1000)
    assert e.next_event() == Closed("errors")
    assert e.data_to_send() == (
        b"a BAD APPEND is not valid in the not authenticated state\r\n* BYE Too much data; closing connection\r\n"
    )
    assert len(e.framer.buffer) == 1000  # nothing of it was taken into a literal


def test_a_login_with_literals_fits_the_budget() -> None:
    e = started()
    e.receive_data(b"a LOGIN {18+}\r\nalice@example.test {300+}\r\n" + b"p" * 300 + b"\r\n")
    ev = e.next_event()
    assert isinstance(ev, c.Login) and ev.password == "p" * 300


def test_after_login_the_configured_totals_apply() -> None:
    e = started(limits=Limits(max_append=1000, max_command=5000, max_append_command=2500))
    e.state = State.AUTHENTICATED
    # one APPEND message of max_append always fits, whatever max_append_command says
    e.receive_data(b"a APPEND INBOX {1000+}\r\n" + b"m" * 1000 + b"\r\n")
    assert isinstance(e.next_event(), c.Append)
    e.complete("OK", "APPEND completed")
    e.data_to_send()
    # outside APPEND: a chain of literals beyond max_command
    e.receive_data(b"b NOOP {1000+}\r\n" + (b"n" * 1000 + b" {1000+}\r\n") * 10)
    assert e.next_event() == Closed("errors")
    assert e.data_to_send() == b"b BAD [TOOBIG] Command too large\r\n* BYE Too much data; closing connection\r\n"
