"""Whatever the text, the Sieve compiler answers with a script or a
SieveError (never another exception), a compiled script runs to a Result
or a SieveRuntimeError on any message, and the ManageSieve engine answers
any bytes without raising."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
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


@settings(max_examples=300, deadline=None)
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
        assert all(line.startswith((b"OK", b"NO", b"BYE", b'"')) for line in out.split(b"\r\n") if line)
        if isinstance(event, Closed):
            break
