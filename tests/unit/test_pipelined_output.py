"""Replies held for pipelined commands are bounded in every engine
(protocols/contract.py ``FLUSH``): a client may send a read's worth of small
commands with big answers (POP3 CAPA: 6 octets in, about 140 out); an engine
whose queued replies passed ``FLUSH_AT`` takes no further command until the
glue wrote them, so a client that does not read cannot make us queue the
answers to everything it sent.

Each engine here is driven the way net/session_protocol.py drives it, by a
client that reads everything: the output taken at each pause is what the
server would hold at once for a client that does not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mailyard.protocols.contract import FLUSH, FLUSH_AT, NEED_DATA
from mailyard.protocols.imap.engine import ImapEngine
from mailyard.protocols.managesieve.engine import ManageSieveServer
from mailyard.protocols.pop3.engine import POP3Server
from mailyard.protocols.smtp.events import HeloReceived
from mailyard.protocols.smtp.server import SMTPServerEngine

READ = 256 * 1024  # one read of the session layer (asyncio's and uvloop's)
ONE_REPLY = 4096  # more than any one reply below


def _pop3() -> POP3Server:
    return POP3Server(timestamp="<1.2@example.test>")


def _managesieve() -> ManageSieveServer:
    return ManageSieveServer(capabilities=[("IMPLEMENTATION", "test"), ("SIEVE", "fileinto " * 30)],
                             sasl_mechanisms=["PLAIN", "SCRAM-SHA-256"], tls_available=True)


def _smtp() -> SMTPServerEngine:
    return SMTPServerEngine()


def _imap() -> ImapEngine:
    return ImapEngine()


def _answer_smtp(engine: Any, event: Any) -> None:
    assert isinstance(event, HeloReceived)
    engine.respond()


def _answer_imap(engine: Any, event: Any) -> None:
    engine.raw(b"* CAPABILITY IMAP4rev1 IMAP4rev2" + b" X-PADDING" * 20 + b"\r\n")
    engine.complete("OK", "CAPABILITY completed")


CASES: dict[str, tuple[Callable[[], Any], bytes, bytes, Callable[[Any, Any], None] | None]] = {
    # name: (engine, a command, what ends each of its replies, how the glue answers its event)
    "pop3 CAPA": (_pop3, b"CAPA\r\n", b"\r\n.\r\n", None),
    "managesieve CAPABILITY": (_managesieve, b"CAPABILITY\r\n", b'OK "capability completed"\r\n', None),
    "smtp HELP": (_smtp, b"HELP\r\n", b"End of HELP info\r\n", None),
    "smtp EHLO": (_smtp, b"EHLO client.example\r\n", b"250 HELP\r\n", _answer_smtp),
    "imap CAPABILITY": (_imap, b"a CAPABILITY\r\n", b"a OK CAPABILITY completed\r\n", _answer_imap),
}


@pytest.mark.parametrize("case", list(CASES))
def test_replies_to_a_read_of_pipelined_commands_are_taken_in_bounded_pieces(case: str) -> None:
    make, command, reply_end, answer = CASES[case]
    engine = make()
    engine.data_to_send()  # the greeting
    count = READ // len(command)
    engine.receive_data(command * count)
    pieces: list[int] = []
    replies = 0
    tail = b""
    while True:
        event = engine.next_event()
        if event is FLUSH or event is NEED_DATA:
            out = engine.data_to_send()
            pieces.append(len(out))
            data = tail + out
            replies += data.count(reply_end)
            tail = data[-(len(reply_end) - 1):]
            if event is NEED_DATA:
                break
            continue
        assert answer is not None, event
        answer(engine, event)
    # every command answered, in order, none twice
    assert replies == count
    # ... and never more than FLUSH_AT and one reply held at once
    assert max(pieces) <= FLUSH_AT + ONE_REPLY, pieces[:5]
    assert len(pieces) > 2


@pytest.mark.parametrize("case", [name for name in CASES if not name.startswith("imap")])
def test_pending_counts_what_data_to_send_returns(case: str) -> None:
    make, command, _, answer = CASES[case]
    engine = make()
    assert engine.pending == len(engine.data_to_send())
    engine.receive_data(command * 3)
    while (event := engine.next_event()) is not NEED_DATA:
        assert answer is not None
        answer(engine, event)
    pending = engine.pending
    assert pending > 0
    assert len(engine.data_to_send()) == pending
    assert engine.pending == 0
