"""Property tests: no byte sequence makes the SMTP server engine raise, and
everything it sends is well-formed reply lines."""

from __future__ import annotations

import re
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailyard.protocols.smtp import (
    FLUSH,
    NEED_DATA,
    PAUSED,
    AuthReceived,
    AuthResponse,
    Closed,
    ExpnReceived,
    MessageReceived,
    Reply,
    SMTPServerEngine,
    StartTLSReceived,
)

from .test_smtp_engine import CFG

REPLY_LINE = re.compile(rb"\A\d{3}[ -][^\r\n]*\Z")

FRAGMENTS = [
    b"EHLO a.example\r\n",
    b"HELO a.example\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"MAIL FROM:<a@b.example> SIZE=10 BODY=8BITMIME SMTPUTF8\r\n",
    b"RCPT TO:<c@d.example> NOTIFY=FAILURE\r\n",
    b"RCPT TO:<postmaster>\r\n",
    b"DATA\r\n",
    b".\r\n",
    b"..\r\n",
    b"\r\n.\r\n",
    b"\n.\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"HELP\r\n",
    b"VRFY x\r\n",
    b"EXPN x\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN dXNlcg==\r\n",
    b"*\r\n",
    b"STARTTLS\r\n",
    b"QUIT\r\n",
    b"\x00\xff\xfe",
    b"x" * 600,
    b"\r",
    b"\n",
]

chunks = st.lists(
    st.one_of(st.binary(max_size=64), st.sampled_from(FRAGMENTS)),
    max_size=40,
)

CONFIG = replace(
    CFG,
    max_message_size=300,
    max_text_line=80,
    extensions_extra=("STARTTLS", "AUTH PLAIN LOGIN"),
    vrfy_enabled=True,
    expn_enabled=True,
)


def run(data_chunks: list[bytes], answer_code: int) -> bytes:
    engine = SMTPServerEngine(CONFIG)
    out = engine.greeting()
    for chunk in [*data_chunks, b""]:
        engine.receive_data(chunk)
        for _ in range(10_000):
            ev = engine.next_event()
            if ev is NEED_DATA or isinstance(ev, Closed):
                break
            assert ev is not PAUSED
            if ev is FLUSH:
                out += engine.data_to_send()
                continue
            if not ev.needs_answer:
                continue
            if isinstance(ev, AuthReceived | AuthResponse) and answer_code == 250:
                engine.auth_challenge("")  # keep the SASL sub-state busy
            elif isinstance(ev, ExpnReceived):
                engine.respond(Reply(250, "2.1.5", ["<a@b.example>", "<c@d.example>"]))
            elif isinstance(ev, StartTLSReceived | MessageReceived) or answer_code == 250:
                engine.accept()
            else:
                engine.respond(Reply(answer_code, "5.0.0", "no\r\nfake 250 line"))
        out += engine.data_to_send()
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks, st.sampled_from([250, 550]))
def test_arbitrary_chunks_never_raise_and_replies_are_well_formed(data_chunks, code):
    out = run(data_chunks, code)
    assert out.endswith(b"\r\n")
    for line in out[:-2].split(b"\r\n"):
        assert REPLY_LINE.match(line), line


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=50))
def test_data_phase_chunking_does_not_change_result(body, step):
    """The same wire bytes split differently give the same replies and message."""
    prefix = b"EHLO a.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
    wire = prefix + body + b"\r\n.\r\nQUIT\r\n"

    def go(pieces):
        engine = SMTPServerEngine(replace(CONFIG, max_message_size=1500, max_text_line=200))
        got, sent = [], bytearray()
        for piece in pieces:
            engine.receive_data(piece)
            while (ev := engine.next_event()) is not NEED_DATA:
                if isinstance(ev, Closed):
                    break
                if ev is FLUSH:
                    sent += engine.data_to_send()
                    continue
                if isinstance(ev, MessageReceived):
                    got.append(ev.data)
                if ev.needs_answer:
                    engine.accept()
        return bytes(sent + engine.data_to_send()), got

    whole = go([wire])
    split = go([wire[i : i + step] for i in range(0, len(wire), step)])
    assert whole == split
