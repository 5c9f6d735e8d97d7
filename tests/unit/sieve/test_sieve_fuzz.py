"""Whatever the text, the Sieve compiler answers with a script or a
SieveError (never another exception), a compiled script runs to a Result
or a SieveRuntimeError on any message, and the ManageSieve engine answers
any bytes without raising."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailyard.protocols.contract import NEED_DATA, PAUSED, Closed
from mailyard.protocols.managesieve.engine import ManageSieveServer, ScriptCommand
from mailyard.sieve import Envelope, SieveError, SieveRuntimeError, compile_script, run

PIECES = ['require', '"fileinto"', '["variables", "imap4flags"]', 'if', 'elsif', 'else', '{', '}', '(', ')', ',',
          ';', 'header', 'address', 'allof', 'anyof', 'not', 'true', 'size', ':over', '10K', ':matches',
          ':contains', ':is', ':count', '"ge"', '"subject"', '"*a?b*"', '"${1}"', 'fileinto', 'keep', 'discard',
          'stop', 'set', '"x"', 'redirect', '"a@b.test"', 'text:\n..x\n.\n', '/* c */', '# c\n', '[', ']',
          'setflag', '"\\\\Seen"', 'string', ':comparator', '"i;octet"', '\n']
MESSAGE = b"From: a@b.test\r\nTo: c@d.test\r\nSubject: ab ab\r\n\r\nbody\r\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), max_size=40))
def test_compile_and_run_never_crash(pieces: list[str]) -> None:
    text = " ".join(pieces)
    try:
        script = compile_script(text)
    except SieveError as exc:
        assert exc.line >= 1 or "too large" in str(exc)
        return
    try:
        run(script, MESSAGE, Envelope("a@b.test", "c@d.test"))
    except SieveRuntimeError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_compile_any_text(text: str) -> None:
    try:
        compile_script(text)
    except SieveError:
        pass


_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n")


def _without_literals(out: bytes) -> bytes:
    """The server's output with each literal (RFC 5804 4: ``{n}`` CRLF and n
    octets, which may hold CRLF) replaced by an empty quoted string, so the
    response lines can be checked one by one."""
    parts, pos = [], 0
    while (m := _LITERAL.search(out, pos)) is not None:
        parts.append(out[pos:m.start()] + b'""')
        pos = m.end() + int(m.group(1))
    parts.append(out[pos:])
    return b"".join(parts)


@settings(max_examples=300, deadline=None)
@example([b"NOOP", b"{5}\r\n", b"\x00" * 5, b"\r\n"])  # a tag literal comes back as a literal
@given(st.lists(st.binary(max_size=40) | st.sampled_from(
    [b"\r\n", b'"x"', b"{3+}\r\nabc", b"{5}\r\n", b"PUTSCRIPT ", b"NOOP", b"LOGOUT", b"CAPABILITY", b" "]),
    max_size=30))
def test_managesieve_engine_answers_any_bytes(chunks: list[bytes]) -> None:
    engine = ManageSieveServer(capabilities=[("IMPLEMENTATION", "t")], sasl_mechanisms=["PLAIN"],
                               tls_available=False, max_literal=1000)
    engine.authenticated = True  # reach the script commands too
    engine.data_to_send()
    for chunk in [*chunks, b""]:
        engine.receive_data(chunk)
        while True:
            event = engine.next_event()
            if event is NEED_DATA or event is PAUSED or isinstance(event, Closed):
                break
            assert isinstance(event, ScriptCommand)
            engine.respond(True, "ok")
        out = engine.data_to_send()
        assert all(line.startswith((b"OK", b"NO", b"BYE", b'"')) for line in _without_literals(out).split(b"\r\n")
                   if line)
        if isinstance(event, Closed):
            break
