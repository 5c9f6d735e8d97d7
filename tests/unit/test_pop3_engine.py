"""Byte-for-byte tests of the sans-I/O POP3 engine (protocols/pop3/engine.py).

A tiny in-memory "glue" answers the engine's events, so every exchange here is
exactly what a client on the wire would see.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.protocols.pop3.engine import (
    MAX_COMMAND_LINE,
    NEED_DATA,
    PAUSED,
    AbuseBudgets,
    APOPLogin,
    Closed,
    MaildropEntry,
    POP3Server,
    ProtocolMisuse,
    RetrieveMessage,
    SASLResponse,
    SASLStart,
    StartTLS,
    State,
    Update,
    UserPassLogin,
    pop3_message_bytes,
)

RFC_TIMESTAMP = "<1896.697170952@dbc.mtview.ca.us>"


def make_message(size: int, subject: str = "test") -> bytes:
    """A CRLF message of exactly ``size`` octets."""
    head = f"From: a@example.test\r\nSubject: {subject}\r\n\r\n".encode()
    body_len = size - len(head) - 2
    assert body_len >= 0
    return head + b"x" * body_len + b"\r\n"


class FakeGlue:
    """Answers engine events from dicts, as net/pop3.py does from the store."""

    def __init__(
        self,
        engine: POP3Server,
        messages: list[bytes],
        passwords: dict[str, str] | None = None,
        apop: dict[str, str] | None = None,
        in_use: bool = False,
    ) -> None:
        self.engine = engine
        self.messages = {uid: data for uid, data in enumerate(messages, 1)}
        self.passwords = passwords or {}
        self.apop = apop or {}
        self.in_use = in_use
        self.events: list[object] = []
        self.removed: list[int] = []
        self.closed: Closed | None = None
        self._sasl_user: str | None = None

    def entries(self) -> list[MaildropEntry]:
        return [
            MaildropEntry(uid, len(pop3_message_bytes(data)), f"uid{uid:04d}")
            for uid, data in self.messages.items()
        ]

    def login(self, ok: bool, name: str) -> None:
        if not ok:
            self.engine.reject_login("AUTH", "Authentication failed")
        elif self.in_use:
            self.engine.reject_login("IN-USE", "maildrop already locked")
        else:
            self.engine.accept_login(self.entries(), name)

    def run(self) -> None:
        while True:
            event = self.engine.next_event()
            if event is NEED_DATA:
                return
            self.events.append(event)
            if isinstance(event, UserPassLogin):
                self.login(self.passwords.get(event.username) == event.password, event.username)
            elif isinstance(event, APOPLogin):
                secret = self.apop.get(event.username)
                digest = hashlib.md5((event.timestamp + (secret or "")).encode()).hexdigest()
                self.login(secret is not None and digest == event.digest, event.username)
            elif isinstance(event, SASLStart):
                if event.initial_response is None:
                    self.engine.sasl_challenge(b"")
                else:
                    self.sasl(event.initial_response)
            elif isinstance(event, SASLResponse):
                self.sasl(event.line)
            elif isinstance(event, RetrieveMessage):
                data = self.messages.get(event.key)
                if data is None:
                    self.engine.message_unavailable()
                else:
                    self.engine.send_message(data)
            elif isinstance(event, Update):
                self.removed.extend(event.keys)
                for key in event.keys:
                    del self.messages[key]
                self.engine.update_done(True)
            elif isinstance(event, StartTLS):
                self.engine.tls_started()
            elif isinstance(event, Closed):
                self.closed = event
                return

    def sasl(self, wire: bytes) -> None:
        if wire == b"*":
            self.engine.reject_login(None, "authentication cancelled")
            return
        _, user, pw = base64.b64decode(wire).split(b"\0")
        self.login(self.passwords.get(user.decode()) == pw.decode(), user.decode())


def session(
    messages: list[bytes] | None = None, *, glue_kw: dict | None = None, **engine_kw: object
) -> tuple[POP3Server, FakeGlue]:
    engine = POP3Server(**engine_kw)  # type: ignore[arg-type]
    glue = FakeGlue(engine, messages or [], **(glue_kw or {}))
    return engine, glue


def talk(engine: POP3Server, glue: FakeGlue, data: bytes) -> bytes:
    engine.receive_data(data)
    glue.run()
    return engine.data_to_send()


def check_transcript(engine: POP3Server, glue: FakeGlue, transcript: str, bodies: dict) -> None:
    """Play a "S: / C:" transcript and compare every server byte.

    ``<name>`` lines in the transcript stand for ``bodies[name]`` (raw bytes).
    """
    expected = b""
    got = engine.data_to_send()
    for raw in transcript.strip().splitlines():
        who, _, text = raw.strip().partition(": ")
        if who == "C":
            assert got == expected, f"before {text!r}"
            got = talk(engine, glue, text.encode() + b"\r\n")
            expected = b""
        elif text in bodies:
            expected += bodies[text]
        else:
            expected += text.encode() + b"\r\n"
    assert got == expected


# --- the classic sessions -------------------------------------------------------


def test_textbook_session_byte_for_byte() -> None:
    """The lecture-notes session (Bonaventure, Computer Networking: Principles,
    Protocols and Practice, 3.2.2.2), with its "1 message left" sign-off."""
    m1, m2 = make_message(120, "one"), make_message(500, "two")
    engine, glue = session([m1, m2], glue_kw={"passwords": {"alice": "12345pass"}})
    check_transcript(
        engine,
        glue,
        """
        S: +OK POP3 server ready
        C: USER alice
        S: +OK
        C: PASS 12345pass
        S: +OK alice's maildrop has 2 messages (620 octets)
        C: STAT
        S: +OK 2 620
        C: LIST
        S: +OK 2 messages (620 octets)
        S: 1 120
        S: 2 500
        S: .
        C: RETR 1
        S: +OK 120 octets
        S: <message 1>
        S: .
        C: DELE 1
        S: +OK message 1 deleted
        C: QUIT
        S: +OK POP3 server signing off (1 message left)
        """,
        {"<message 1>": m1},
    )
    assert glue.removed == [1]
    assert isinstance(glue.closed, Closed) and glue.closed.reason == "quit"
    assert engine.state is State.CLOSED


def test_rfc1939_example_session_byte_for_byte() -> None:
    """RFC 1939 section 10, with the section 7 APOP secret "tanstaaf"."""
    m1, m2 = make_message(120, "one"), make_message(200, "two")
    engine, glue = session(
        [m1, m2],
        glue_kw={"apop": {"mrose": "tanstaaf"}},
        timestamp=RFC_TIMESTAMP,
        signoff="dewey POP3 server signing off",
    )
    check_transcript(
        engine,
        glue,
        """
        S: +OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>
        C: APOP mrose c4c9334bac560ecc979e58001b3e22fb
        S: +OK mrose's maildrop has 2 messages (320 octets)
        C: STAT
        S: +OK 2 320
        C: LIST
        S: +OK 2 messages (320 octets)
        S: 1 120
        S: 2 200
        S: .
        C: RETR 1
        S: +OK 120 octets
        S: <message 1>
        S: .
        C: DELE 1
        S: +OK message 1 deleted
        C: RETR 2
        S: +OK 200 octets
        S: <message 2>
        S: .
        C: DELE 2
        S: +OK message 2 deleted
        C: QUIT
        S: +OK dewey POP3 server signing off (maildrop empty)
        """,
        {"<message 1>": m1, "<message 2>": m2},
    )
    assert glue.removed == [1, 2]


# --- AUTHORIZATION ----------------------------------------------------------------


def logged_in(messages: list[bytes] | None = None, **kw: object) -> tuple[POP3Server, FakeGlue]:
    engine, glue = session(messages, glue_kw={"passwords": {"alice": "pw"}}, **kw)
    engine.data_to_send()
    out = talk(engine, glue, b"USER alice\r\nPASS pw\r\n")
    assert out.startswith(b"+OK\r\n+OK alice's maildrop")
    return engine, glue


def test_wrong_password_then_right() -> None:
    engine, glue = session([make_message(100)], glue_kw={"passwords": {"alice": "pw"}})
    engine.data_to_send()
    assert talk(engine, glue, b"USER alice\r\nPASS nope\r\n") == (
        b"+OK\r\n-ERR [AUTH] Authentication failed\r\n"
    )
    # An unknown user gets the very same replies.
    assert talk(engine, glue, b"USER nobody\r\nPASS nope\r\n") == (
        b"+OK\r\n-ERR [AUTH] Authentication failed\r\n"
    )
    assert engine.state is State.AUTHORIZATION
    assert talk(engine, glue, b"USER alice\r\nPASS pw\r\n") == (
        b"+OK\r\n+OK alice's maildrop has 1 message (100 octets)\r\n"
    )


def test_too_many_auth_failures_close_the_session() -> None:
    engine, glue = session(budgets=AbuseBudgets(max_auth_failures=2))
    engine.data_to_send()
    talk(engine, glue, b"USER a\r\nPASS b\r\n")
    out = talk(engine, glue, b"USER a\r\nPASS b\r\nUSER a\r\n")
    assert out == b"+OK\r\n-ERR [AUTH] Authentication failed, closing connection\r\n"
    assert glue.closed == Closed("errors")


def test_pass_needs_user_right_before() -> None:
    engine, glue = session(glue_kw={"passwords": {"alice": "pw"}})
    engine.data_to_send()
    assert talk(engine, glue, b"PASS pw\r\n") == b"-ERR USER first\r\n"
    assert talk(engine, glue, b"USER alice\r\nCAPA\r\nPASS pw\r\n").endswith(b"-ERR USER first\r\n")


def test_password_may_contain_spaces() -> None:
    engine, glue = session(glue_kw={"passwords": {"alice": "correct horse  battery"}})
    engine.data_to_send()
    out = talk(engine, glue, b"USER alice\r\nPASS correct horse  battery\r\n")
    assert out == b"+OK\r\n+OK alice's maildrop has 0 messages (0 octets)\r\n"


def test_apop_wrong_digest_and_syntax() -> None:
    engine, glue = session(glue_kw={"apop": {"mrose": "tanstaaf"}}, timestamp=RFC_TIMESTAMP)
    engine.data_to_send()
    assert talk(engine, glue, b"APOP mrose " + b"0" * 32 + b"\r\n") == (
        b"-ERR [AUTH] Authentication failed\r\n"
    )
    assert talk(engine, glue, b"APOP mrose xyz\r\n") == b"-ERR syntax: APOP name digest\r\n"
    # Upper-case hex is accepted.
    out = talk(engine, glue, b"APOP mrose C4C9334BAC560ECC979E58001B3E22FB\r\n")
    assert out == b"+OK mrose's maildrop has 0 messages (0 octets)\r\n"


def test_apop_without_timestamp_is_refused() -> None:
    engine, glue = session()
    assert engine.data_to_send() == b"+OK POP3 server ready\r\n"
    assert talk(engine, glue, b"APOP a " + b"0" * 32 + b"\r\n") == b"-ERR APOP not available\r\n"


def test_in_use() -> None:
    engine, glue = session(glue_kw={"passwords": {"alice": "pw"}, "in_use": True})
    engine.data_to_send()
    out = talk(engine, glue, b"USER alice\r\nPASS pw\r\n")
    assert out == b"+OK\r\n-ERR [IN-USE] maildrop already locked\r\n"
    assert engine.state is State.AUTHORIZATION
    assert engine.auth_failures == 0


def test_capa_in_both_states() -> None:
    engine, glue = session(glue_kw={"passwords": {"alice": "pw"}}, tls_available=True)
    engine.data_to_send()
    assert talk(engine, glue, b"CAPA\r\n") == (
        b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
        b"PIPELINING\r\nEXPIRE NEVER\r\nUSER\r\nSASL PLAIN\r\nSTLS\r\n.\r\n"
    )
    talk(engine, glue, b"USER alice\r\nPASS pw\r\n")
    assert talk(engine, glue, b"capa\r\n") == (
        b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
        b"PIPELINING\r\nEXPIRE NEVER\r\n.\r\n"
    )


def test_plaintext_auth_disabled() -> None:
    engine, glue = session(plaintext_auth=False)
    engine.data_to_send()
    assert b"USER\r\n" not in talk(engine, glue, b"CAPA\r\n")
    assert talk(engine, glue, b"USER alice\r\n").startswith(b"-ERR [AUTH] Plaintext")
    assert talk(engine, glue, b"AUTH PLAIN\r\n").startswith(b"-ERR [AUTH] Plaintext")


# --- AUTH (RFC 5034) ----------------------------------------------------------------


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_auth_plain_with_initial_response() -> None:
    engine, glue = session([make_message(50)], glue_kw={"passwords": {"alice": "pw"}})
    engine.data_to_send()
    out = talk(engine, glue, b"AUTH PLAIN " + b64(b"\0alice\0pw") + b"\r\n")
    assert out == b"+OK alice's maildrop has 1 message (50 octets)\r\n"
    assert glue.events == [SASLStart("PLAIN", b64(b"\0alice\0pw"))]


def test_auth_plain_with_challenge_and_cancel() -> None:
    engine, glue = session(glue_kw={"passwords": {"alice": "pw"}})
    engine.data_to_send()
    assert talk(engine, glue, b"auth plain\r\n") == b"+ \r\n"
    assert talk(engine, glue, b"*\r\n") == b"-ERR authentication cancelled\r\n"
    assert talk(engine, glue, b"AUTH PLAIN\r\n") == b"+ \r\n"
    assert talk(engine, glue, b64(b"\0alice\0bad") + b"\r\n") == (
        b"-ERR [AUTH] Authentication failed\r\n"
    )
    assert talk(engine, glue, b"AUTH PLAIN\r\n") == b"+ \r\n"
    assert talk(engine, glue, b64(b"\0alice\0pw") + b"\r\n") == (
        b"+OK alice's maildrop has 0 messages (0 octets)\r\n"
    )


def test_auth_listing_and_unknown_mechanism() -> None:
    engine, glue = session(sasl_mechanisms=("SCRAM-SHA-256", "PLAIN"))
    engine.data_to_send()
    assert talk(engine, glue, b"AUTH\r\n") == b"+OK\r\nSCRAM-SHA-256\r\nPLAIN\r\n.\r\n"
    assert talk(engine, glue, b"AUTH CRAM-MD5\r\n") == b"-ERR unsupported authentication mechanism\r\n"


def test_sasl_response_line_may_exceed_command_limit() -> None:
    engine, glue = session(glue_kw={"passwords": {"alice": "p" * 400}})
    engine.data_to_send()
    assert talk(engine, glue, b"AUTH PLAIN\r\n") == b"+ \r\n"
    line = b64(b"\0alice\0" + b"p" * 400)
    assert len(line) > MAX_COMMAND_LINE
    assert talk(engine, glue, line + b"\r\n").startswith(b"+OK alice's maildrop")


# --- TRANSACTION ------------------------------------------------------------------


def test_list_uidl_single_and_deleted() -> None:
    engine, glue = logged_in([make_message(100), make_message(200), make_message(300)])
    assert talk(engine, glue, b"LIST 2\r\n") == b"+OK 2 200\r\n"
    assert talk(engine, glue, b"UIDL 3\r\n") == b"+OK 3 uid0003\r\n"
    assert talk(engine, glue, b"DELE 2\r\n") == b"+OK message 2 deleted\r\n"
    assert talk(engine, glue, b"LIST\r\n") == b"+OK 2 messages (400 octets)\r\n1 100\r\n3 300\r\n.\r\n"
    assert talk(engine, glue, b"UIDL\r\n") == b"+OK\r\n1 uid0001\r\n3 uid0003\r\n.\r\n"
    assert talk(engine, glue, b"STAT\r\n") == b"+OK 2 400\r\n"
    assert talk(engine, glue, b"LIST 2\r\n") == b"-ERR message 2 already deleted\r\n"
    assert talk(engine, glue, b"RETR 2\r\n") == b"-ERR message 2 already deleted\r\n"
    assert talk(engine, glue, b"DELE 2\r\n") == b"-ERR message 2 already deleted\r\n"
    assert talk(engine, glue, b"LIST 4\r\n") == b"-ERR no such message, only 3 messages in maildrop\r\n"
    assert talk(engine, glue, b"RETR 0\r\n") == b"-ERR no such message, only 3 messages in maildrop\r\n"
    assert talk(engine, glue, b"RETR x\r\n") == b"-ERR syntax: message number expected\r\n"
    assert talk(engine, glue, b"RETR \xc2\xb2\r\n") == b"-ERR syntax: message number expected\r\n"


def test_rset_undoes_dele_and_quit_removes_nothing() -> None:
    engine, glue = logged_in([make_message(100), make_message(200)])
    talk(engine, glue, b"DELE 1\r\nDELE 2\r\n")
    assert talk(engine, glue, b"STAT\r\n") == b"+OK 0 0\r\n"
    assert talk(engine, glue, b"RSET\r\n") == b"+OK maildrop has 2 messages (300 octets)\r\n"
    assert talk(engine, glue, b"STAT\r\n") == b"+OK 2 300\r\n"
    assert talk(engine, glue, b"QUIT\r\n") == b"+OK POP3 server signing off (2 messages left)\r\n"
    assert glue.removed == []
    assert Update(()) in glue.events


def test_eof_in_transaction_removes_nothing() -> None:
    engine, glue = logged_in([make_message(100)])
    talk(engine, glue, b"DELE 1\r\n")
    engine.receive_data(b"")
    glue.run()
    assert glue.closed == Closed("eof")
    assert glue.removed == []
    assert not any(isinstance(e, Update) for e in glue.events)


def test_noop_and_wrong_state_and_unknown() -> None:
    engine, glue = session()
    engine.data_to_send()
    assert talk(engine, glue, b"NOOP\r\n") == b"-ERR command not valid in this state\r\n"
    assert talk(engine, glue, b"STAT\r\n") == b"-ERR command not valid in this state\r\n"
    assert talk(engine, glue, b"XYZZY\r\n") == b"-ERR unknown command\r\n"
    assert talk(engine, glue, b"\r\n") == b"-ERR unknown command\r\n"
    engine, glue = logged_in()
    assert talk(engine, glue, b"NOOP\r\n") == b"+OK\r\n"
    assert talk(engine, glue, b"USER bob\r\n") == b"-ERR command not valid in this state\r\n"
    assert talk(engine, glue, b"STAT now\r\n") == b"-ERR this command takes no arguments\r\n"


def test_quit_in_authorization() -> None:
    engine, glue = session()
    engine.data_to_send()
    assert talk(engine, glue, b"QUIT\r\n") == b"+OK POP3 server signing off\r\n"
    assert glue.closed == Closed("quit")


# --- message transformation ------------------------------------------------------


def test_retr_dot_stuffing_and_bare_lf() -> None:
    raw = b"Subject: dots\n\n.leading dot\n..two\nmiddle . dot\n.\nend"
    engine, glue = logged_in([raw])
    converted = pop3_message_bytes(raw)
    assert converted == (
        b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\nmiddle . dot\r\n.\r\nend\r\n"
    )
    assert talk(engine, glue, b"LIST\r\n") == b"+OK 1 message (%d octets)\r\n1 %d\r\n.\r\n" % (
        len(converted),
        len(converted),
    )
    assert talk(engine, glue, b"RETR 1\r\n") == (
        b"+OK %d octets\r\n" % len(converted)
        + b"Subject: dots\r\n\r\n..leading dot\r\n...two\r\nmiddle . dot\r\n..\r\nend\r\n.\r\n"
    )


def test_message_starting_with_dot() -> None:
    engine, glue = logged_in([b".x\r\n"])
    assert talk(engine, glue, b"RETR 1\r\n") == b"+OK 4 octets\r\n..x\r\n.\r\n"


def test_top() -> None:
    msg = b"A: 1\r\nB: 2\r\n\r\nl1\r\n.l2\r\nl3\r\n"
    engine, glue = logged_in([msg, b"Only: header\r\n"])
    assert talk(engine, glue, b"TOP 1 0\r\n") == (
        b"+OK top of message follows\r\nA: 1\r\nB: 2\r\n\r\n.\r\n"
    )
    assert talk(engine, glue, b"TOP 1 2\r\n") == (
        b"+OK top of message follows\r\nA: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\n.\r\n"
    )
    assert talk(engine, glue, b"TOP 1 99\r\n") == (
        b"+OK top of message follows\r\nA: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\nl3\r\n.\r\n"
    )
    assert talk(engine, glue, b"TOP 2 5\r\n") == b"+OK top of message follows\r\nOnly: header\r\n.\r\n"
    assert talk(engine, glue, b"TOP 1 -1\r\n") == b"-ERR syntax: TOP msg n\r\n"
    assert talk(engine, glue, b"TOP 1\r\n") == b"-ERR syntax: TOP msg n\r\n"


def test_message_unavailable() -> None:
    engine, glue = logged_in([make_message(100)])
    del glue.messages[1]
    assert talk(engine, glue, b"RETR 1\r\n") == b"-ERR message is no longer available\r\n"
    assert talk(engine, glue, b"NOOP\r\n") == b"+OK\r\n"


# --- robustness -------------------------------------------------------------------


def test_pipelining_and_split_reads() -> None:
    engine, glue = logged_in([make_message(100), make_message(200)])
    data = b"STAT\r\nLIST 1\r\nNOOP\r\nDELE 1\r\nSTAT\r\n"
    out = b""
    for i in range(len(data)):  # one byte at a time
        out += talk(engine, glue, data[i : i + 1])
    assert out == b"+OK 2 300\r\n+OK 1 100\r\n+OK\r\n+OK message 1 deleted\r\n+OK 1 200\r\n"


def test_bare_lf_commands_accepted() -> None:
    engine, glue = logged_in([make_message(100)])
    assert talk(engine, glue, b"STAT\n") == b"+OK 1 100\r\n"


def test_over_long_line_is_refused_and_session_kept() -> None:
    engine, glue = logged_in([make_message(100)])
    assert talk(engine, glue, b"NOOP " + b"x" * 300 + b"\r\nSTAT\r\n") == (
        b"-ERR line too long\r\n+OK 1 100\r\n"
    )
    # Arriving in pieces without a newline: discarded as it comes, answered once.
    out = b""
    for _ in range(100):
        out += talk(engine, glue, b"y" * 1000)
    assert out == b""
    assert len(engine._in) < MAX_COMMAND_LINE
    assert talk(engine, glue, b"yyy\r\nSTAT\r\n") == b"-ERR line too long\r\n+OK 1 100\r\n"
    # A line of exactly 255 octets with CRLF is fine.
    line = b"NOOP" + b" " * (MAX_COMMAND_LINE - 6) + b"\r\n"
    assert len(line) == MAX_COMMAND_LINE
    assert talk(engine, glue, line) == b"+OK\r\n"


def test_bad_command_budget() -> None:
    engine, glue = session(budgets=AbuseBudgets(max_bad_commands=3))
    engine.data_to_send()
    out = talk(engine, glue, b"A\r\nB\r\nC\r\nD\r\n")
    assert out == (
        b"-ERR unknown command\r\n-ERR unknown command\r\n"
        b"-ERR unknown command (too many bad commands, closing connection)\r\n"
    )
    assert glue.closed == Closed("errors")


def test_stls_discards_pipelined_bytes() -> None:
    engine, glue = session(glue_kw={"passwords": {"alice": "pw"}}, tls_available=True)
    engine.data_to_send()
    engine.receive_data(b"STLS\r\nUSER alice\r\nPASS pw\r\n")
    assert engine.next_event() == StartTLS()
    assert engine.data_to_send() == b"+OK Begin TLS negotiation\r\n"
    engine.receive_data(b"RETR 1\r\n")  # still plaintext: must be dropped too
    engine.tls_started()
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send() == b""
    assert engine.state is State.AUTHORIZATION
    out = talk(engine, glue, b"CAPA\r\nSTLS\r\n")
    assert b"STLS" not in out.split(b".\r\n")[0]
    assert out.endswith(b"-ERR command not permitted when TLS active\r\n")


def test_stls_unavailable() -> None:
    engine, glue = session()
    engine.data_to_send()
    assert talk(engine, glue, b"STLS\r\n") == b"-ERR TLS not available\r\n"


def test_glue_misuse_raises() -> None:
    engine, _ = session()
    with pytest.raises(ProtocolMisuse):
        engine.accept_login([])
    engine.receive_data(b"USER a\r\nPASS b\r\n")
    assert isinstance(engine.next_event(), UserPassLogin)
    assert engine.next_event() is PAUSED  # the login waits for its answer


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_never_raises_on_any_input(chunks: list[bytes]) -> None:
    engine, glue = session(
        [make_message(100), b".\n\n."],
        glue_kw={"passwords": {"a": "b"}, "apop": {"a": "b"}},
        timestamp=RFC_TIMESTAMP,
        tls_available=True,
    )
    for chunk in [b"USER a\r\nPASS b\r\n", *chunks]:
        engine.receive_data(chunk)
        try:
            glue.run()
        except (ValueError, UnicodeError):  # FakeGlue's own base64/split on junk SASL
            return
        out = engine.data_to_send()
        assert out == b"" or out.endswith(b"\r\n")
        if glue.closed:
            return


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_retr_round_trip(raw: bytes) -> None:
    """Whatever the stored bytes, the client gets back exactly pop3_message_bytes()
    after undoing the dot-stuffing, and LIST's size is its length."""
    engine, glue = logged_in([raw])
    out = talk(engine, glue, b"RETR 1\r\n")
    converted = pop3_message_bytes(raw)
    head, _, rest = out.partition(b"\r\n")
    assert head == b"+OK %d octets" % len(converted)
    assert rest.endswith(b".\r\n")
    body = rest[:-3]
    lines = body.split(b"\r\n")
    unstuffed = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
    assert unstuffed == converted
