"""AUTH (RFC 4954) sub-state and STARTTLS (RFC 3207) hooks of the server engine."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailyard.protocols.contract import Closed, ProtocolMisuse
from mailyard.protocols.smtp import (
    NEED_DATA,
    PAUSED,
    AuthCancelled,
    AuthReceived,
    AuthResponse,
    HeloReceived,
    MailFromReceived,
    Reply,
    SMTPServerEngine,
    StartTLSReceived,
    State,
)

from .test_smtp_engine import CFG

SUBMISSION = replace(
    CFG,
    extensions_extra=("STARTTLS", "AUTH PLAIN LOGIN"),
    require_auth_for_mail=True,
)


def ehlo(engine: SMTPServerEngine) -> bytes:
    engine.receive_data(b"EHLO client.example.org\r\n")
    ev = engine.next_event()
    assert isinstance(ev, HeloReceived)
    engine.accept()
    assert engine.next_event() is NEED_DATA
    return engine.data_to_send()


def test_extra_keywords_advertised():
    e = SMTPServerEngine(SUBMISSION)
    out = ehlo(e)
    assert out.endswith(b"250-DSN\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 HELP\r\n")


def test_auth_login_classic_exchange():
    e = SMTPServerEngine(SUBMISSION)
    ehlo(e)
    e.receive_data(b"auth login\r\n")
    ev = e.next_event()
    assert ev == AuthReceived("LOGIN", None)
    e.auth_challenge("VXNlcm5hbWU6")
    assert e.state is State.AUTH
    e.receive_data(b"Z21iYXNoaXI=\r\n")
    assert e.next_event() == AuthResponse("Z21iYXNoaXI=")
    e.auth_challenge("UGFzc3dvcmQ6")
    e.receive_data(b"c3dlMzQ0MDMx\r\n")
    assert e.next_event() == AuthResponse("c3dlMzQ0MDMx")
    e.auth_success("gmbashir")
    e.receive_data(b"MAIL FROM:<gmbashir@example.test>\r\n")
    assert isinstance(e.next_event(), MailFromReceived)
    e.accept()
    assert e.data_to_send() == (
        b"334 VXNlcm5hbWU6\r\n"
        b"334 UGFzc3dvcmQ6\r\n"
        b"235 2.7.0 Authentication successful\r\n"
        b"250 2.1.0 Sender OK\r\n"
    )
    assert e.authenticated == "gmbashir"
    # RFC 4954 4: AUTH is not offered or allowed again.
    e.receive_data(b"RSET\r\nAUTH PLAIN\r\n")
    assert e.next_event().code == 503
    assert e.data_to_send() == b"250 2.0.0 OK\r\n503 5.5.1 Already authenticated\r\n"


def test_auth_plain_initial_response_and_failure():
    e = SMTPServerEngine(SUBMISSION)
    ehlo(e)
    e.receive_data(b"AUTH PLAIN AGFsaWNlAHdyb25n\r\nAUTH PLAIN =\r\n")
    assert e.next_event() == AuthReceived("PLAIN", "AGFsaWNlAHdyb25n")
    assert e.next_event() is PAUSED
    e.reject(535, "5.7.8", "Authentication credentials invalid")
    assert e.next_event() == AuthReceived("PLAIN", "")
    e.reject(535, "5.7.8", "Authentication credentials invalid")
    assert e.data_to_send() == b"535 5.7.8 Authentication credentials invalid\r\n" * 2
    assert e.authenticated is None
    e.receive_data(b"MAIL FROM:<a@example.test>\r\n")
    e.next_event()
    assert e.data_to_send() == b"530 5.7.0 Authentication required\r\n"


def test_auth_cancel_with_star():
    e = SMTPServerEngine(SUBMISSION)
    ehlo(e)
    e.receive_data(b"AUTH LOGIN\r\n")
    e.next_event()
    e.auth_challenge("VXNlcm5hbWU6")
    e.receive_data(b"*\r\nNOOP\r\n")
    assert e.next_event() == AuthCancelled()
    assert e.next_event() is NEED_DATA
    assert e.data_to_send() == (
        b"334 VXNlcm5hbWU6\r\n501 5.7.0 Authentication cancelled\r\n250 2.0.0 OK\r\n"
    )
    assert e.state is State.READY


def test_auth_errors():
    e = SMTPServerEngine(SUBMISSION)
    e.receive_data(b"AUTH PLAIN\r\n")  # before EHLO
    e.next_event()
    assert e.data_to_send() == b"503 Send EHLO first\r\n"
    ehlo(e)
    e.receive_data(b"AUTH CRAM-MD5\r\nAUTH\r\nAUTH PLAIN a b\r\n")
    while e.next_event() is not NEED_DATA:
        pass
    assert e.data_to_send() == (
        b"504 5.5.4 Unrecognized authentication type\r\n"
        b"501 5.5.2 Syntax: AUTH mechanism [initial-response]\r\n"
        b"501 5.5.2 Syntax: AUTH mechanism [initial-response]\r\n"
    )
    plain = SMTPServerEngine(CFG)  # AUTH not advertised
    ehlo(plain)
    plain.receive_data(b"AUTH PLAIN\r\n")
    plain.next_event()
    assert plain.data_to_send() == b"502 5.5.1 AUTH not available\r\n"


def test_auth_long_response_line_allowed():
    e = SMTPServerEngine(SUBMISSION)
    ehlo(e)
    token = "A" * 4000  # longer than 512, within RFC 4954's 12288
    e.receive_data(f"AUTH PLAIN {token}\r\n".encode())
    assert e.next_event() == AuthReceived("PLAIN", token)


def test_auth_not_during_transaction():
    e = SMTPServerEngine(replace(SUBMISSION, require_auth_for_mail=False))
    ehlo(e)
    e.receive_data(b"MAIL FROM:<a@example.test>\r\n")
    e.next_event()
    e.accept()
    e.receive_data(b"AUTH PLAIN\r\n")
    e.next_event()
    assert e.data_to_send().endswith(b"503 5.5.1 Not permitted during a mail transaction\r\n")


def test_starttls_discards_pipelined_bytes():
    e = SMTPServerEngine(SUBMISSION)
    ehlo(e)
    # Command injection (CVE-2011-0411): commands pipelined after STARTTLS
    # in the plaintext phase must not be executed after the handshake.
    e.receive_data(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<x@example.test>\r\n")
    assert e.next_event() == StartTLSReceived()
    e.accept()
    assert e.data_to_send() == b"220 2.0.0 Ready to start TLS\r\n"
    assert e.next_event() is NEED_DATA
    assert e.state is State.CONNECTED and e.tls_active
    # Fresh session: EHLO needed again, STARTTLS no longer offered.
    e.receive_data(b"MAIL FROM:<a@example.test>\r\n")
    e.next_event()
    assert e.data_to_send() == b"503 Send HELO/EHLO first\r\n"
    out = ehlo(e)
    assert b"STARTTLS" not in out and b"AUTH PLAIN LOGIN" in out
    e.receive_data(b"STARTTLS\r\n")
    e.next_event()
    assert e.data_to_send() == b"503 5.5.1 TLS already active\r\n"


def test_starttls_forgets_authentication_and_helo():
    e = SMTPServerEngine(replace(SUBMISSION, require_auth_for_mail=False))
    ehlo(e)
    e.receive_data(b"STARTTLS\r\n")
    e.next_event()
    e.accept()
    assert e.helo_name is None and e.authenticated is None


def test_starttls_rejected_by_glue_and_syntax():
    e = SMTPServerEngine(SUBMISSION)
    ehlo(e)
    e.receive_data(b"STARTTLS now\r\nSTARTTLS\r\n")
    assert e.next_event().code == 501
    assert isinstance(e.next_event(), StartTLSReceived)
    e.respond(Reply(454, "4.7.0", "TLS not available due to temporary reason"))
    assert e.data_to_send() == (
        b"501 5.5.4 Syntax: STARTTLS (no parameters)\r\n"
        b"454 4.7.0 TLS not available due to temporary reason\r\n"
    )
    assert not e.tls_active and e.state is State.READY


def test_starttls_not_offered():
    e = SMTPServerEngine(CFG)
    ehlo(e)
    e.receive_data(b"STARTTLS\r\n")
    e.next_event()
    assert e.data_to_send() == b"502 5.5.1 STARTTLS not available\r\n"


def test_implicit_tls_engine_does_not_offer_starttls():
    e = SMTPServerEngine(SUBMISSION, tls_active=True)
    assert b"STARTTLS" not in ehlo(e)


def test_offer_per_session():
    e = SMTPServerEngine(CFG)
    e.offer(["AUTH PLAIN"])
    assert ehlo(e).endswith(b"250-AUTH PLAIN\r\n250 HELP\r\n")
    e.receive_data(b"AUTH PLAIN =\r\n")
    assert e.next_event() == AuthReceived("PLAIN", "")


def test_overlong_sasl_line_ends_exchange():
    e = SMTPServerEngine(SUBMISSION)
    ehlo(e)
    e.receive_data(b"AUTH LOGIN\r\n")
    e.next_event()
    e.auth_challenge("VXNlcm5hbWU6")
    e.receive_data(b"A" * 13000 + b"\r\nNOOP\r\n")
    assert e.next_event() == AuthCancelled()
    assert e.next_event().code == 500
    assert e.next_event() is NEED_DATA
    assert e.data_to_send() == (b"334 VXNlcm5hbWU6\r\n500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n")
    assert e.state is State.READY


def test_failed_auth_budget_closes_with_421():
    # The engine counts 535/454 answers to AUTH; the one that uses the
    # budget up is answered 421 4.7.0 and the session ends (RFC 4954 4).
    from mailyard.protocols.contract import AbuseBudgets, Closed

    e = SMTPServerEngine(replace(SUBMISSION, budgets=AbuseBudgets(max_auth_failures=2)))
    ehlo(e)
    e.receive_data(b"AUTH PLAIN AGFAYgBj\r\n")
    e.next_event()
    e.respond(Reply(535, "5.7.8", "Authentication credentials invalid"))
    e.receive_data(b"AUTH PLAIN AGFAYgBj\r\n")
    e.next_event()
    e.respond(Reply(535, "5.7.8", "Authentication credentials invalid"))
    assert e.data_to_send() == (
        b"535 5.7.8 Authentication credentials invalid\r\n"
        b"421 4.7.0 Too many failed authentication attempts, closing connection\r\n"
    )
    assert e.next_event() == Closed("errors")


def test_end_auth_answers_an_exchange_the_client_left_unanswered():
    """The glue's SASL exchange deadline: ``end_auth`` ends the AUTH sub-state
    with 535 as an answer to a response would, counted against the failed-AUTH
    budget (the last one 421), and only while the exchange waits for the
    client."""
    e = SMTPServerEngine(replace(SUBMISSION, budgets=replace(SUBMISSION.budgets, max_auth_failures=2)))
    ehlo(e)
    assert not e.awaiting_sasl_response
    with pytest.raises(ProtocolMisuse):
        e.end_auth(Reply(535, "5.7.8", "Authentication credentials invalid"))
    for last in (False, True):
        e.receive_data(b"AUTH LOGIN\r\n")
        assert e.next_event() == AuthReceived("LOGIN", None)
        assert not e.awaiting_sasl_response  # AUTH waits for the glue's answer
        e.auth_challenge("VXNlcm5hbWU6")
        assert e.next_event() is NEED_DATA
        assert e.awaiting_sasl_response
        with pytest.raises(ProtocolMisuse):
            e.end_auth(Reply(250, "2.0.0", "OK"))
        e.end_auth(Reply(535, "5.7.8", "Authentication credentials invalid"))
        assert not e.awaiting_sasl_response
        if not last:
            assert e.data_to_send() == b"334 VXNlcm5hbWU6\r\n535 5.7.8 Authentication credentials invalid\r\n"
            assert e.state is not State.AUTH
    assert e.next_event() == Closed("errors")
    assert e.data_to_send() == (
        b"334 VXNlcm5hbWU6\r\n421 4.7.0 Too many failed authentication attempts, closing connection\r\n"
    )
