"""The ManageSieve engine's command budgets and parsing cost (RFC 5804 4),
byte for byte without sockets: a command made of literals is bounded as a
whole, before login and after it, and input is parsed once however it is
cut."""

from __future__ import annotations

import random
import tracemalloc
from typing import Any

import pytest

from mailyard.protocols.contract import NEED_DATA, Closed
from mailyard.protocols.managesieve.engine import BadSASLResponse, ManageSieveServer, ScriptCommand

SCRIPT_LIMIT = 256 * 1024


def _engine() -> ManageSieveServer:
    engine = ManageSieveServer(capabilities=[("IMPLEMENTATION", "test")], sasl_mechanisms=["PLAIN"],
                               tls_available=False, max_literal=SCRIPT_LIMIT)
    engine.data_to_send()
    return engine


def _logged_in() -> ManageSieveServer:
    engine = _engine()
    engine.receive_data(b'AUTHENTICATE "PLAIN" "AGFAYgBj"\r\n')
    engine.next_event()
    engine.login_ok()
    engine.data_to_send()
    return engine


def _flood(engine: ManageSieveServer, first: bytes, pieces: int) -> tuple[Any, int]:
    """Send ``first`` then literals of 200,000 octets without a line end, as
    long as the engine reads them: (its last answer, most octets it held)."""
    engine.receive_data(first)
    held = len(engine._in)  # noqa: SLF001
    event = engine.next_event()
    for _ in range(pieces):
        if isinstance(event, Closed):
            break
        assert event is NEED_DATA
        engine.receive_data(b" {200000+}\r\n" + b"A" * 200000)
        held = max(held, len(engine._in))  # noqa: SLF001
        event = engine.next_event()
    return event, held


def test_literals_before_login_are_bounded_as_one_command() -> None:
    """AUTHENTICATE followed by literals, each under the script limit and
    never a line end: the session ends at the first literal that takes the
    command past the 8 KiB budget, before its octets are kept."""
    engine = _engine()
    event, held = _flood(engine, b'AUTHENTICATE "PLAIN"', 50)  # 10 MB if read
    assert event == Closed("errors")
    assert engine.data_to_send() == b'BYE "command too large (at most 8192 octets before login)"\r\n'
    assert held <= 200012 + 32  # the one read that announced it, never more


def test_literals_after_login_are_bounded_by_the_script_limit() -> None:
    engine = _logged_in()
    event, held = _flood(engine, b'PUTSCRIPT "a"', 50)
    assert event == Closed("errors")
    assert engine.data_to_send().startswith(b'BYE "command too large (at most 270336 octets)"')
    assert held <= SCRIPT_LIMIT + 8192 + 200012
    # a whole script of the limit still fits, with its command line
    engine = _logged_in()
    script = b"keep;" + b"#" * (SCRIPT_LIMIT - 5)
    engine.receive_data(b'PUTSCRIPT "main" {%d+}\r\n%s\r\n' % (len(script), script))
    assert engine.next_event() == ScriptCommand("PUTSCRIPT", ("main", script))


class _CopyCounter(bytearray):
    """An input buffer that counts the octets copied out of it whole."""

    copied = 0

    def __bytes__(self) -> bytes:
        _CopyCounter.copied += len(self)
        return bytes(memoryview(self))


def test_input_is_parsed_once_however_it_is_cut() -> None:
    """A script sent in small reads is not parsed again from the start at
    each read: the octets the engine copies stay in proportion to the input
    (the script itself), not to the reads times the input. And parsing that
    resumes gives the answers of parsing whole: atoms, quoted strings with
    escapes, literals, bad lines, cut anywhere."""
    engine = _logged_in()
    engine._in = _CopyCounter()  # noqa: SLF001
    _CopyCounter.copied = 0
    script = b'require "fileinto";\r\n' + b'if header :is "x" "y" { keep; }\r\n' * 6000
    stream = b'PUTSCRIPT "main" {%d+}\r\n%s\r\nNOOP "t"\r\n' % (len(script), script)
    rnd = random.Random(5804)
    pos = 0
    event: Any = NEED_DATA
    while event is NEED_DATA:
        size = rnd.randint(1, 2048)
        engine.receive_data(stream[pos:pos + size])
        pos += size
        event = engine.next_event()
    assert event == ScriptCommand("PUTSCRIPT", ("main", script))
    assert _CopyCounter.copied <= 2 * len(stream)
    engine.respond(True, "putscript completed")
    if pos < len(stream):
        engine.receive_data(stream[pos:])
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send() == b'OK "putscript completed"\r\nOK (TAG "t") "done"\r\n'
    rnd = random.Random(4)
    lines = [b'NOOP "a\\"b\\\\c"\r\n', b"NOOP {3+}\r\nx\r\n\r\n", b"CAPABILITY\r\n", b"FROB x\r\n",
             b'NOOP "bad\rline"\r\n', b"NOOP\x01\r\n", b"  NOOP  \r\n", b'NOOP {2}\r\nab\r\n', b"{x}\r\n",
             b'NOOP "' + b"q" * 300 + b'"\r\n', b"NOOPNOOPNOOP\r\n"]
    for _ in range(300):
        stream = b"".join(rnd.choices(lines, k=rnd.randint(1, 12))) + b"LOGOUT\r\n"
        answers: list[tuple[Any, bytes]] = []
        for cut in (len(stream), rnd.randint(1, 7)):
            engine = _engine()
            pos = 0
            event = NEED_DATA
            while event is NEED_DATA and pos < len(stream):
                engine.receive_data(stream[pos:pos + cut])
                pos += cut
                event = engine.next_event()
            answers.append((event, engine.data_to_send()))
        assert answers[0] == answers[1], stream
        assert answers[0][0] == Closed("quit")


def _small_engine(*, logged_in: bool) -> ManageSieveServer:
    """Small limits, so that every cut of a stream over them can be tried:
    lines of 200 octets, literals of 300, 250 octets a command before
    login (500 after)."""
    engine = ManageSieveServer(capabilities=[("IMPLEMENTATION", "test")], sasl_mechanisms=["PLAIN"],
                               tls_available=False, max_line=200, max_literal=300,
                               max_command_unauthenticated=250)
    engine.data_to_send()
    if logged_in:
        engine.receive_data(b'AUTHENTICATE "PLAIN" "AGFAYgBj"\r\n')
        engine.next_event()
        engine.login_ok()
        engine.data_to_send()
    return engine


def _session(stream: bytes, reads: list[bytes], *, logged_in: bool) -> tuple[list[Any], bytes]:
    """Feed ``stream`` in ``reads`` then end it: the events the engine
    gave (each script command answered OK) and all it wrote."""
    assert b"".join(reads) == stream
    engine = _small_engine(logged_in=logged_in)
    events: list[Any] = []
    out = b""
    for data in [*(r for r in reads if r), b""]:
        engine.receive_data(data)
        while True:
            event = engine.next_event()
            if event is NEED_DATA or isinstance(event, Closed):
                break
            events.append(event)
            engine.respond(True, "ok")
        out += engine.data_to_send()
        if isinstance(event, Closed):
            events.append(event)
            break
    return events, out


def _every_cut(stream: bytes, *, logged_in: bool) -> tuple[list[Any], bytes]:
    """The session for ``stream`` read whole, a byte at a time and cut in
    two at every offset: the same every time (asserted), returned."""
    whole = _session(stream, [stream], logged_in=logged_in)
    assert _session(stream, [stream[i:i + 1] for i in range(len(stream))], logged_in=logged_in) == whole
    for cut in range(1, len(stream)):
        assert _session(stream, [stream[:cut], stream[cut:]], logged_in=logged_in) == whole, cut
    return whole


DELETE = b'DELETESCRIPT "main"\r\n'  # 21 octets, sent as a literal's content


def test_a_bad_command_never_runs_its_literals() -> None:
    """A literal's octets are data (RFC 5804 4) even in a command found bad:
    whether the error comes after the literal, before it on the same line,
    or is a line over the limit, the literal is skipped by its count and the
    bad command answered NO once, however the input is cut."""
    streams = [
        b'PUTSCRIPT "a" {21+}\r\n' + DELETE + b" ~\r\n",  # error after the literal
        b"PUTSCRIPT ~ {21+}\r\n" + DELETE + b"\r\n",  # error before it
        b'PUTSCRIPT "a" {21}\r\n' + DELETE + b' "b" {21+}\r\n' + DELETE + b"\x01\r\n",
        b"PUTSCRIPT " + b"a" * 250 + b" {21+}\r\n" + DELETE + b"\r\n",  # line too long
        b'PUTSCRIPT "' + b"q" * 250 + b'" {0+}\r\n {21+}\r\n' + DELETE + b"\r\n",
        b'PUTSCRIPT "a\r\n',  # CR in a quoted string: the line ends there
    ]
    reasons = [b"unexpected character", b"unexpected character", b"unexpected character", b"line too long",
               b"line too long", b"CR or LF in a quoted string"]
    for stream, reason in zip(streams, reasons, strict=True):
        events, out = _every_cut(stream + b'NOOP "t"\r\n', logged_in=True)
        assert events == [Closed("eof")], stream
        assert out == b'NO "' + reason + b'"\r\nOK (TAG "t") "done"\r\n', stream


def test_a_long_line_gets_the_same_answer_however_it_is_cut() -> None:
    """A line over ``max_line`` is skipped and answered NO whether its CRLF
    comes in the read that made it too long or later; only a command over
    the whole command budget ends the session, with the BYE a good one gets
    there."""
    long_line = b"NOOP " + b"x" * 300 + b"\r\n"
    assert _every_cut(long_line + b"NOOP\r\n", logged_in=True) == (
        [Closed("eof")], b'NO "line too long"\r\nOK "done"\r\n')
    # over the 500 octets of a command after login, literals included
    over = b"NOOP " + b"x" * 300 + b" {250+}\r\n" + b"y" * 250 + b"\r\nNOOP\r\n"
    assert _every_cut(over, logged_in=True) == (
        [Closed("errors")], b'BYE "command too large (at most 500 octets)"\r\n')
    # before login a command has 250 octets: a long line is past them
    assert _every_cut(long_line, logged_in=False) == (
        [Closed("errors")], b'BYE "command too large (at most 250 octets before login)"\r\n')
    # a literal over max_literal announced in a skipped line
    assert _every_cut(b"NOOP ~ {301+}\r\n" + b"z" * 301 + b"\r\n", logged_in=True) == (
        [Closed("errors")], b'BYE "literal too large (at most 300 octets)"\r\n')


def test_a_literal_size_with_leading_zeros_is_a_literal() -> None:
    """RFC 5804 4: a literal's size is 1*DIGIT, leading zeros allowed:
    ``{00000000021+}`` announces 21 octets, read as the literal, never as
    commands, whole or cut anywhere; and so at the end of a line skipped as
    bad."""
    from itertools import chain

    good = b'PUTSCRIPT "a" {00000000021+}\r\nDELETESCRIPT "main"\r\n\r\n'
    bad = b'PUTSCRIPT ~ {00000000000000000000021+}\r\nDELETESCRIPT "main"\r\n\r\n'
    for stream in (good, bad):
        cuts = chain([[stream]], ([stream[:i], stream[i:]] for i in range(1, len(stream))),
                     [[bytes([b]) for b in stream]])
        for pieces in cuts:
            events, out = _session(stream, pieces, logged_in=True)
            assert not any(getattr(e, "name", "") == "DELETESCRIPT" for e in events), (pieces, events)


@pytest.mark.parametrize("logged_in", [False, True])
@pytest.mark.parametrize("body", [b"Q", b"\\Q"], ids=["plain", "escapes"])
def test_an_unterminated_quoted_string_is_scanned_no_further_than_its_limits(
    logged_in: bool, body: bytes
) -> None:
    """A read of 256 KiB inside a quoted string is refused once the string
    passes what the command may hold (8 KiB before login, the line limit
    after), at the cost of scanning that much, not the read: memory here
    well under the budget's octets (a scan of the whole read took 31 MB)."""
    engine = _logged_in() if logged_in else _engine()
    start = b'PUTSCRIPT "' if logged_in else b'AUTHENTICATE "PLAIN" "'
    engine.receive_data(start + body * (256 * 1024 // len(body)))
    tracemalloc.start()
    try:
        event = engine.next_event()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 8192
    if logged_in:
        # a line too long: skipped to its end, which has not come
        assert event is NEED_DATA
        engine.receive_data(b'"\r\nNOOP\r\n')
        while (event := engine.next_event()) is not NEED_DATA:
            pass
        assert engine.data_to_send() == b'NO "line too long"\r\nOK "done"\r\n'
    else:
        assert event == Closed("errors")
        assert engine.data_to_send() == b'BYE "command too large (at most 8192 octets before login)"\r\n'


@pytest.mark.parametrize("answer", [b"notastring", b"dGVzdA==", b"*", b'"a" "b"', b'"open'])
def test_an_answer_to_a_challenge_that_is_not_a_string_is_handed_to_the_glue(answer: bytes) -> None:
    """RFC 5804 2.1: the client answers a challenge with one string. Anything
    else (an atom, unquoted base64 the tokens cannot read, two strings, an
    unclosed quote) ends the exchange, but the glue answers it
    (``login_failed``): its login service settles the exchange and drops
    the mechanism."""
    engine = _engine()
    engine.receive_data(b'AUTHENTICATE "PLAIN"\r\n')
    engine.next_event()
    engine.sasl_challenge(b"")
    assert engine.data_to_send() == b'""\r\n'
    engine.receive_data(answer + b"\r\n")
    assert isinstance(engine.next_event(), BadSASLResponse)
    assert engine.data_to_send() == b""  # nothing said before the glue's answer
    assert not engine.awaiting_sasl_response
    engine.login_failed("cannot decode the authentication data")
    assert engine.data_to_send() == b'NO "cannot decode the authentication data"\r\n'
    engine.receive_data(b"NOOP\r\n")
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send() == b'OK "done"\r\n'
