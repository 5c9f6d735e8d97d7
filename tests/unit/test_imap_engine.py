"""The sans-I/O IMAP engine, byte for byte (RFC 9051 sections 2.2, 3, 5.5, 7)."""

from __future__ import annotations

import pytest

from mailyard.protocols.contract import NEED_DATA, PAUSED, AbuseBudgets, Closed, ProtocolMisuse
from mailyard.protocols.imap import commands as c
from mailyard.protocols.imap.engine import (
    AuthResponse,
    IdleDone,
    ImapEngine,
    State,
)
from mailyard.protocols.imap.framing import Limits
from mailyard.protocols.imap.response import Atom, Mailbox


def started(**kw) -> ImapEngine:
    e = ImapEngine(**kw)
    e.greeting("IMAP4rev2 Service Ready", code="CAPABILITY IMAP4rev2 IMAP4rev1")
    assert e.data_to_send() == b"* OK [CAPABILITY IMAP4rev2 IMAP4rev1] IMAP4rev2 Service Ready\r\n"
    return e


def test_rfc9051_7_6_literal_continuation_and_bad_command() -> None:
    # RFC 9051 7.6 example, byte for byte
    e = started()
    e.receive_data(b"A001 LOGIN {11}\r\n")
    assert e.next_event() is NEED_DATA
    assert e.data_to_send() == b"+ Ready for literal data\r\n"
    e.receive_data(b"FRED FOOBAR {7}\r\n")
    assert e.next_event() is NEED_DATA
    assert e.data_to_send() == b"+ Ready for literal data\r\n"
    e.receive_data(b"fat man\r\n")
    ev = e.next_event()
    assert isinstance(ev, c.Login) and (ev.userid, ev.password) == ("FRED FOOBAR", "fat man")
    e.complete("OK", "LOGIN completed")
    assert e.data_to_send() == b"A001 OK LOGIN completed\r\n"
    assert e.state is State.AUTHENTICATED
    e.receive_data(b"A044 BLURDYBLOOP {102856}\r\n")
    assert e.next_event() is NEED_DATA
    assert e.data_to_send() == b'A044 BAD No such command as "BLURDYBLOOP"\r\n'
    # the session stays usable
    e.receive_data(b"A045 NOOP\r\n")
    assert isinstance(e.next_event(), c.Simple)


def test_huge_literal_refused_before_reading() -> None:
    e = started()
    e.receive_data(b"a1 LOGIN {10000000000}\r\n")
    assert e.next_event() is NEED_DATA
    assert e.data_to_send() == b"a1 BAD Literal too large\r\n"
    assert len(e.framer.buffer) == 0
    e.state = State.AUTHENTICATED
    e.receive_data(b"a2 APPEND INBOX {10000000000}\r\n")
    assert e.next_event() is NEED_DATA
    assert e.data_to_send() == b"a2 NO [TOOBIG] Message too large\r\n"
    # non-synchronising: the octets are on their way, so the connection ends
    e.receive_data(b"a3 APPEND INBOX {10000000000+}\r\n")
    assert e.next_event() == Closed("errors")
    assert e.data_to_send() == (
        b"a3 BAD [TOOBIG] Non-synchronizing literal too large\r\n* BYE Too much data; closing connection\r\n"
    )


def test_literal_plus_needs_no_continuation() -> None:
    e = started(limits=Limits(max_append=100))
    e.state = State.AUTHENTICATED
    e.receive_data(b"a APPEND INBOX (\\Seen) {5+}\r\nhello\r\n")
    ev = e.next_event()
    assert isinstance(ev, c.Append) and ev.messages[0].data == b"hello"
    assert e.data_to_send() == b""


def test_states_and_pipelining_in_order() -> None:
    e = started()
    e.receive_data(b"a1 SELECT INBOX\r\na2 LOGIN u p\r\na3 SELECT INBOX\r\na4 FETCH 1 FLAGS\r\na5 CLOSE\r\n")
    ev = e.next_event()  # SELECT before login: BAD, then LOGIN
    assert isinstance(ev, c.Login)
    assert e.data_to_send() == b"a1 BAD SELECT is not valid in the not authenticated state\r\n"
    assert e.next_event() is PAUSED  # busy until the result arrives
    e.complete("OK", "LOGIN completed")
    ev = e.next_event()
    assert isinstance(ev, c.Select)
    e.untagged(3, Atom("EXISTS"))
    e.untagged_status("OK", "UIDs valid", "UIDVALIDITY 3857529045")
    e.complete("OK", "SELECT completed", "READ-WRITE")
    assert e.state is State.SELECTED
    ev = e.next_event()
    assert isinstance(ev, c.Fetch)
    e.untagged(1, Atom("FETCH"), [Atom("FLAGS"), [Atom("\\Seen")], Atom("UID"), 4])
    e.complete("OK", "FETCH completed")
    ev = e.next_event()
    e.complete("OK", "CLOSE completed")
    assert e.state is State.AUTHENTICATED
    assert e.data_to_send() == (
        b"a2 OK LOGIN completed\r\n"
        b"* 3 EXISTS\r\n"
        b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
        b"a3 OK [READ-WRITE] SELECT completed\r\n"
        b"* 1 FETCH (FLAGS (\\Seen) UID 4)\r\n"
        b"a4 OK FETCH completed\r\n"
        b"a5 OK CLOSE completed\r\n"
    )


def test_failed_select_deselects() -> None:
    e = started()
    e.state = State.SELECTED
    e.receive_data(b"a SELECT nosuch\r\n")
    e.next_event()
    e.complete("NO", "Mailbox does not exist", "NONEXISTENT")
    assert e.state is State.AUTHENTICATED
    assert e.data_to_send() == b"a NO [NONEXISTENT] Mailbox does not exist\r\n"


def test_syntax_errors_are_bad_and_session_survives() -> None:
    e = started()
    e.receive_data(b"a1 LOGIN\r\n+++\r\na2 NOOP extra\r\na3 NOOP\r\n")
    ev = e.next_event()
    assert isinstance(ev, c.Simple) and ev.tag == "a3"
    assert e.data_to_send() == (
        b"a1 BAD Syntax error: expected SP\r\n"
        b"* BAD Invalid tag\r\n"
        b"a2 BAD Syntax error: unexpected text after command\r\n"
    )


def test_too_many_bad_commands_bye() -> None:
    e = started(budgets=AbuseBudgets(max_bad_commands=3))
    e.receive_data(b"a X\r\nb X\r\nc X\r\nd NOOP\r\n")
    assert e.next_event() == Closed("errors")
    assert e.data_to_send().endswith(b"* BYE Too many invalid commands\r\n")


def test_line_too_long() -> None:
    # RFC 9051 7.1.3: the tag is readable, so the refusal carries it
    e = started(limits=Limits(max_line=20))
    e.receive_data(b"a1 NOOP " + b"x" * 30)
    assert e.next_event() is NEED_DATA
    assert e.data_to_send() == b"a1 BAD [TOOBIG] Line too long\r\n"
    e.receive_data(b"yyy\r\na2 NOOP\r\n")
    ev = e.next_event()
    assert ev.tag == "a2"


def test_line_too_long_in_pieces_is_refused_once() -> None:
    """An over-long line that arrives in many reads gets one tagged BAD and
    counts once toward the bad-command budget, however many times its
    discarded part passes ``max_line``."""
    e = started(limits=Limits(max_line=20), budgets=AbuseBudgets(max_bad_commands=2))
    e.receive_data(b"a1 UID SEARCH UID ")
    for _ in range(10):
        e.receive_data(b"1,2,3,4,5,6,7,8,9,10,")
        assert e.next_event() is NEED_DATA
    e.receive_data(b"11\r\na2 NOOP\r\n")
    ev = e.next_event()
    assert isinstance(ev, c.Simple) and ev.tag == "a2"
    assert e.data_to_send() == b"a1 BAD [TOOBIG] Line too long\r\n"


def test_line_too_long_past_a_whole_command_ends_the_session() -> None:
    e = started(limits=Limits(max_line=20, max_command=100))
    e.receive_data(b"a1 NOOP " + b"x" * 30)
    assert e.next_event() is NEED_DATA
    e.receive_data(b"x" * 60)
    assert e.next_event() is NEED_DATA
    e.receive_data(b"x" * 60)
    assert e.next_event() == Closed("errors")
    assert e.data_to_send() == (
        b"a1 BAD [TOOBIG] Line too long\r\n* BYE Line too long; closing connection\r\n"
    )


def test_authenticate_exchange() -> None:
    e = started()
    e.receive_data(b"a AUTHENTICATE PLAIN\r\n")
    ev = e.next_event()
    assert isinstance(ev, c.Authenticate) and ev.initial_response is None
    e.continuation(b"")
    assert e.data_to_send() == b"+ \r\n"
    e.receive_data(b"AGZyZWQAZmF0IG1hbg==\r\n")
    ev = e.next_event()
    assert ev == AuthResponse("a", b"AGZyZWQAZmF0IG1hbg==")
    e.complete("OK", "Success")
    assert e.state is State.AUTHENTICATED


def test_idle_done() -> None:
    # RFC 2177 section 3 example shape
    e = started()
    e.state = State.SELECTED
    e.receive_data(b"A002 IDLE\r\n")
    ev = e.next_event()
    assert ev.name == "IDLE"
    e.start_idle()
    e.untagged(4, Atom("EXISTS"))
    e.receive_data(b"DONE\r\n")
    assert e.next_event() == IdleDone("A002", True)
    e.complete("OK", "IDLE terminated")
    assert e.data_to_send() == b"+ idling\r\n* 4 EXISTS\r\nA002 OK IDLE terminated\r\n"


def test_idle_line_too_long_is_answered_once() -> None:
    """A line over ``max_line`` during IDLE ends it with one BAD; the rest of
    that line is discarded, never read as a command."""
    e = started(limits=Limits(max_line=20))
    e.state = State.SELECTED
    e.receive_data(b"A002 IDLE\r\n")
    e.next_event()
    e.start_idle()
    e.receive_data(b"D" * 30)
    assert e.next_event() == IdleDone("A002", False)
    e.complete("BAD", "Expected DONE")
    e.receive_data(b"D" * 30 + b"\r\nA003 NOOP\r\n")
    ev = e.next_event()
    assert isinstance(ev, c.Simple) and ev.tag == "A003"
    assert e.data_to_send() == b"+ idling\r\nA002 BAD Expected DONE\r\n"


def test_logout() -> None:
    e = started()
    e.receive_data(b"A023 LOGOUT\r\n")
    e.next_event()
    e.bye("IMAP4rev2 Server logging out") if False else e.untagged_status("BYE", "IMAP4rev2 Server logging out")
    e.complete("OK", "LOGOUT completed")
    assert e.next_event() == Closed("quit")
    assert e.data_to_send() == b"* BYE IMAP4rev2 Server logging out\r\nA023 OK LOGOUT completed\r\n"


def test_utf8_mode_after_enable() -> None:
    e = started()
    e.state = State.AUTHENTICATED
    e.untagged(Atom("LIST"), [], "/", Mailbox("台北"))
    e.enable(["IMAP4REV2"])
    e.untagged(Atom("LIST"), [], "/", Mailbox("台北"))
    assert e.data_to_send() == b'* LIST () "/" "&U,BTFw-"\r\n' + '* LIST () "/" "台北"\r\n'.encode()
    e.receive_data("a CREATE 台北/&x\r\n".encode())
    assert e.next_event().mailbox == "台北/&x"


def test_rfc9051_6_4_3_expunge_sequence_numbers() -> None:
    # RFC 9051 6.4.3 example: messages 3, 4, 7 and 11 had \Deleted set
    from mailyard.protocols.imap.selected import MessageMap

    view = MessageMap(range(1, 13))
    assert view.expunge([3, 4, 7, 11]) == [3, 3, 5, 8]
    assert len(view) == 8


def test_sequence_and_uid_sets_resolve() -> None:
    from mailyard.protocols.imap.commands import SequenceSet
    from mailyard.protocols.imap.selected import MessageMap, SequenceError

    view = MessageMap([5, 7, 9, 20])
    assert view.resolve_seqs(SequenceSet(((2, None),))) == [(2, 7), (3, 9), (4, 20)]
    # RFC 9051 6.4.9: "559:*" always includes the last UID
    assert view.resolve_uids(SequenceSet(((559, None),))) == [(4, 20)]
    assert view.resolve_uids(SequenceSet(((6, 9),))) == [(2, 7), (3, 9)]
    import pytest

    with pytest.raises(SequenceError):
        view.resolve_seqs(SequenceSet(((5, 5),)))
    with pytest.raises(SequenceError):
        MessageMap().resolve_seqs(SequenceSet(((1, None),)))


def test_line_too_long_never_echoes_an_invalid_tag() -> None:
    # Found by tests/fuzz (fuzz_imap, corpus/imap/regress-invalid-tag-long-line):
    # the refusal of an over-long line repeated its first word as the tag, even
    # 8-bit bytes (as U+FFFD) or "(", giving a malformed response. RFC 9051 9:
    # tag = 1*<any ASTRING-CHAR except "+">; an invalid one is answered with "*".
    e = started(limits=Limits(max_line=100))
    e.receive_data(b"\xffa1 " + b"x" * 200 + b"\r\na(1 " + b"y" * 200 + b"\r\n")
    e.receive_data(b"a]3 " + b"z" * 200 + b"\r\na4 NOOP\r\n")
    ev = e.next_event()
    assert isinstance(ev, c.Simple) and ev.tag == "a4"
    assert e.data_to_send() == (
        b"* BAD [TOOBIG] Line too long\r\n* BAD [TOOBIG] Line too long\r\n"
        b"a]3 BAD [TOOBIG] Line too long\r\n"
    )


# --- the engine contract (protocols/contract.py) ----------------------------------


def test_end_of_input_closes_once_the_whole_commands_are_answered() -> None:
    e = started()
    e.receive_data(b"a1 NOOP\r\na2 NOO")  # one whole command, then half of one
    e.receive_data(b"")
    ev = e.next_event()
    assert isinstance(ev, c.Simple) and ev.tag == "a1"
    assert e.next_event() is PAUSED  # a1 is with the glue
    e.complete("OK", "NOOP completed")
    assert e.next_event() == Closed("eof")
    assert e.next_event() == Closed("eof")  # every time it is asked
    assert e.data_to_send() == b"a1 OK NOOP completed\r\n"


def test_logout_closes_with_quit_every_time() -> None:
    e = started()
    e.receive_data(b"a LOGOUT\r\nb NOOP\r\n")
    e.next_event()
    e.complete("OK", "LOGOUT completed")
    e.receive_data(b"")
    assert [e.next_event() for _ in range(3)] == [Closed("quit")] * 3


def test_failed_logins_are_counted_by_the_engine() -> None:
    e = started(budgets=AbuseBudgets(max_auth_failures=2))
    e.receive_data(b"a LOGIN u p\r\nb AUTHENTICATE PLAIN\r\nc LOGIN u p\r\nd LOGIN u p\r\n")
    e.next_event()
    e.complete("NO", "Invalid credentials", "AUTHENTICATIONFAILED")
    e.next_event()
    e.complete("NO", "Use TLS first", "PRIVACYREQUIRED")  # not a failed login
    e.next_event()
    e.complete("NO", "Too many failed logins, try again later", "UNAVAILABLE")
    assert e.next_event() == Closed("errors")
    assert e.data_to_send() == (
        b"a NO [AUTHENTICATIONFAILED] Invalid credentials\r\n"
        b"b NO [PRIVACYREQUIRED] Use TLS first\r\n"
        b"c NO [UNAVAILABLE] Too many failed logins, try again later\r\n"
        b"* BYE Too many failed logins\r\n"
    )


def test_complete_without_a_command_is_a_glue_bug() -> None:
    e = started()
    with pytest.raises(ProtocolMisuse):
        e.complete("OK", "done")


def _drive(e: ImapEngine, chunks: list[bytes]) -> list[object]:
    events = []
    for chunk in chunks:
        e.receive_data(chunk)
        while (ev := e.next_event()) is not NEED_DATA:
            events.append(ev)
            if isinstance(ev, Closed):
                return events
            e.complete("OK", "done")
    return events


_REFUSED_LITERAL = b"a2 DELETE INBOX\r\na3 LOGOUT\r\n  "


@pytest.mark.parametrize("head", [b"x" * 150, b"x" * 30], ids=["whole-line-long", "line-passes-max"])
def test_rfc7888_4_refused_line_literal_plus_octets_are_discarded(head: bytes) -> None:
    """A line refused as too long that ends in ``{n+}``: the n octets the
    client sends at once are data of the refused command, never commands,
    whether the line arrives whole or in pieces (RFC 7888 4)."""
    line = b"a1 UID SEARCH TEXT " + head + b"x" * 120 + b" {30+}\r\n"
    data = line + _REFUSED_LITERAL + b" MORE {3+}\r\nabc\r\na4 NOOP\r\n"
    for chunks in [[data], *([data[:i], data[i:]] for i in range(1, len(data)))]:
        e = started(limits=Limits(max_line=100))
        events = _drive(e, chunks)
        assert [(type(ev), ev.tag) for ev in events] == [(c.Simple, "a4")], chunks
        assert e.data_to_send() == b"a1 BAD [TOOBIG] Line too long\r\na4 OK done\r\n"


def test_rfc7888_4_refused_line_literal_past_a_whole_command_ends_the_session() -> None:
    e = started(limits=Limits(max_line=100, max_command=1000))
    e.receive_data(b"a1 UID SEARCH TEXT " + b"x" * 150 + b" {5000+}\r\n" + b"a2 DELETE INBOX\r\n")
    assert e.next_event() == Closed("errors")
    assert e.data_to_send() == (
        b"a1 BAD [TOOBIG] Line too long\r\n* BYE Too much data; closing connection\r\n"
    )
    e = started(limits=Limits(max_line=100, max_command=1000))
    e.receive_data(b"a1 UID SEARCH TEXT " + b"x" * 150)
    assert e.next_event() is NEED_DATA
    e.receive_data(b" {5000+}\r\na2 DELETE INBOX\r\n")
    assert e.next_event() == Closed("errors")
    assert e.data_to_send() == (
        b"a1 BAD [TOOBIG] Line too long\r\n* BYE Line too long; closing connection\r\n"
    )



def test_a_literal_size_with_leading_zeros_is_a_literal() -> None:
    """RFC 9051 9: a literal's size is a number, leading zeros allowed. A
    size of more digits than the usual marker (``{000...030+}``) is still a
    literal: in a refused over-long line its 30 octets are discarded, never
    run as commands, whole or cut anywhere; in a command that fits, it is
    read as the literal it is."""
    size = b"0" * 60 + b"30"
    line = b"a1 UID SEARCH TEXT " + b"x" * 150 + b" {" + size + b"+}\r\n"
    data = line + _REFUSED_LITERAL + b"\r\na4 NOOP\r\n"
    for chunks in [[data], *([data[:i], data[i:]] for i in range(1, len(data)))]:
        e = started(limits=Limits(max_line=200))
        events = _drive(e, chunks)
        assert [(type(ev), ev.tag) for ev in events] == [(c.Simple, "a4")], chunks
    e = started()
    events = _drive(e, [b"a5 LOGIN {" + b"0" * 40 + b"5+}\r\nalice secret\r\n"])
    assert [(type(ev), ev.tag) for ev in events] == [(c.Login, "a5")], events
    assert events[0].userid == "alice"
