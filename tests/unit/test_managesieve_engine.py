"""The ManageSieve engine's command budgets and parsing cost (RFC 5804 4),
byte for byte without sockets: a command made of literals is bounded as a
whole, before login and after it, and input is parsed once however it is
cut."""

from __future__ import annotations

import random
from typing import Any

from mailyard.protocols.contract import NEED_DATA, Closed
from mailyard.protocols.managesieve.engine import ManageSieveServer, ScriptCommand

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
