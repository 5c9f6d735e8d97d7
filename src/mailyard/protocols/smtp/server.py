"""Sans-I/O SMTP server engine (RFC 5321 with ESMTP extensions).

Bytes in (``receive_data``), events out (``next_event``), replies out
(``data_to_send``): the engine contract of protocols/contract.py. The engine
never touches a socket, the clock, DNS or the store; decisions that need
them (is this recipient local? is the message stored?) are events the glue
answers through one method, ``respond``.

Usage::

    engine = SMTPServerEngine(ServerConfig(hostname="mx.example.test"))
    write(engine.greeting())
    while not engine.closed:
        engine.receive_data(await read())        # b"" on EOF
        while True:
            ev = engine.next_event()
            if ev is NEED_DATA or isinstance(ev, Closed):
                break
            if ev is FLUSH:                      # FLUSH_AT octets of replies queued
                write(engine.data_to_send())     # (wait while the peer is behind)
                continue
            if isinstance(ev, RcptToReceived):
                engine.respond() if local(ev.forward_path) else engine.respond(Reply(550, "5.1.1", "No such user"))
            ...
        write(engine.data_to_send())             # pipelined replies in one write

The state machine is the table ``TRANSITIONS`` at the bottom: (state, verb)
-> the handler that reads the command, and the state the session moves to
when the command succeeds (2xx), gets an intermediate reply (334, 354) or
fails. Every known verb has a row for every command state; sequence errors
are rows too (503, RFC 5321 4.1.4 / 4.3.2). The two sub-states that read
something other than commands (mail data, SASL responses) have rows keyed
by ``END_OF_DATA`` and ``SASL_LINE``. Only the table moves the state, except
for ``CLOSED``, which every state reaches on QUIT, 421 or EOF.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..contract import (
    FLUSH,
    FLUSH_AT,
    NEED_DATA,
    PAUSED,
    AbuseBudgets,
    Closed,
    ProtocolMisuse,
    Sentinel,
)
from .data import SPILL_AT, DataReader
from .events import (
    AuthCancelled,
    AuthReceived,
    AuthResponse,
    Event,
    ExpnReceived,
    HeloReceived,
    MailFromReceived,
    MessageData,
    MessageReceived,
    ProtocolError,
    RcptToReceived,
    StartTLSReceived,
    VrfyReceived,
)
from .params import ParamError, interpret_mail_params, interpret_rcpt_params, parse_params
from .paths import PathError, parse_forward_path, parse_reverse_path, split_path
from .replies import Reply

__all__ = ["ServerConfig", "State", "SMTPServerEngine", "Transition", "TRANSITIONS", "SMTP_BUDGETS"]

# Defaults of the SMTP abuse budgets ([smtp] max_unknown_commands, max_errors,
# [auth] smtp_connection_max_failures).
SMTP_BUDGETS = AbuseBudgets(max_bad_commands=20, max_errors=50, max_auth_failures=5)


@dataclass(frozen=True)
class ServerConfig:
    """Per-listener settings; every field has a default.

    ``extensions_extra`` are extra EHLO keywords, e.g. ``("STARTTLS",
    "AUTH PLAIN LOGIN")``; the engine enables the STARTTLS and AUTH commands
    exactly when they are advertised. ``budgets``: ``max_errors`` bounds
    all error replies the engine itself gives, ``max_bad_commands``
    unrecognised or malformed commands (500/501/502/504/555); reaching
    either ends the session with ``421 4.7.0``. Rejections decided by the
    glue (550 unknown user...) do not count; policy throttles those.
    ``max_auth_failures`` bounds failed AUTH exchanges (535, 454): the last
    one allowed is answered ``421 4.7.0`` instead, and the session ends.
    """

    hostname: str = "localhost"
    max_message_size: int = 25 * 1024 * 1024  # 0 = no limit (RFC 1870 "SIZE 0")
    max_recipients: int = 100  # RFC 5321 4.5.3.1.8: at least 100
    max_command_line: int = 512  # RFC 5321 4.5.3.1.4, octets incl. CRLF (MAIL/RCPT: more, _params_room)
    max_auth_line: int = 12288  # RFC 4954 4: AUTH lines may be this long
    max_text_line: int = 1000  # RFC 5321 4.5.3.1.6, octets incl. CRLF
    vrfy_enabled: bool = False
    expn_enabled: bool = False
    budgets: AbuseBudgets = SMTP_BUDGETS
    smtputf8: bool = True
    dsn: bool = True
    greeting_text: str = "mailyard ESMTP ready"
    extensions_extra: tuple[str, ...] = ()
    require_auth_for_mail: bool = False  # submission (RFC 6409 4.3, RFC 4954 6)
    strict_line_endings: bool = True  # refuse bare CR/LF in data (see data.py)
    # Message data held in memory before it is handed out as MessageData
    # events (the glue spools it); 0: never, the whole message is held.
    spill_at: int = SPILL_AT
    # Refuse a client that sends commands ahead of a reply where pipelining
    # does not allow it (RFC 2920 3.1; RFC 5321 4.3.1 without PIPELINING):
    # 554 5.5.1 and the session ends. The MX port sets it: senders that do
    # not wait for replies are spam engines, not mail servers.
    strict_pipelining: bool = False


class State(enum.Enum):
    """Where the session is (RFC 5321 4.1.4 command order)."""

    CONNECTED = "connected"  # greeting sent, no HELO/EHLO yet
    READY = "ready"  # greeted, no mail transaction
    MAIL = "mail"  # MAIL accepted, no RCPT accepted yet
    RCPT = "rcpt"  # at least one RCPT accepted
    DATA = "data"  # reading mail data after 354
    AUTH = "auth"  # inside a SASL exchange (RFC 4954 4)
    CLOSED = "closed"


# RFC 2920 3.1: these change the session's state, so they may only end a
# pipelined group; nothing may follow them before their reply. QUIT is left
# out: what follows it is never read anyway.
_GROUP_ENDERS = frozenset({"EHLO", "HELO", "DATA", "VRFY", "EXPN", "TURN", "NOOP"})

_COMMAND_STATES = (State.CONNECTED, State.READY, State.MAIL, State.RCPT)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # HT allowed, other controls not
# RFC 5321 4.2.4: recognised but not implemented -> 502, unknown -> 500.
_NOT_IMPLEMENTED = frozenset({"SEND", "SOML", "SAML", "TURN", "ETRN", "ATRN", "BDAT"})
_HELP_TOPICS = {
    "HELO": "HELO <hostname>",
    "EHLO": "EHLO <hostname>",
    "MAIL": "MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8] [RET=FULL|HDRS] [ENVID=x]",
    "RCPT": "RCPT TO:<address> [NOTIFY=...] [ORCPT=type;address]",
    "DATA": "DATA, then the message, ended by a line with a single dot",
    "RSET": "RSET (abort the mail transaction)",
    "NOOP": "NOOP",
    "QUIT": "QUIT",
    "VRFY": "VRFY <address>",
    "EXPN": "EXPN <list>",
    "HELP": "HELP [command]",
    "AUTH": "AUTH <mechanism> [initial-response]",
    "STARTTLS": "STARTTLS",
}

# The text of a reply line: 512 octets (RFC 5321 4.5.3.1.5) less the code,
# its separator and the CRLF.
_MAX_REPLY_TEXT = 512 - 6

# What the parameters of each extension may add to a MAIL or RCPT line
# (``_params_room``): " SIZE=" and 20 digits (RFC 1870 3), " BODY=8BITMIME",
# " SMTPUTF8", and the increases RFC 3461 (DSN) and RFC 4954 3 (AUTH) name.
_SIZE_ROOM = 26
_BODY_ROOM = len(" BODY=8BITMIME")
_SMTPUTF8_ROOM = len(" SMTPUTF8")
_DSN_MAIL_ROOM = 100
_DSN_RCPT_ROOM = 500
_AUTH_MAIL_ROOM = 500

# What reading one unit of input gave: an event, True (progress made: a
# reply was written or a line discarded), None (more bytes needed).
_Step = Event | bool | None


class SMTPServerEngine:
    """One SMTP server session. See the module docstring for the loop."""

    def __init__(self, config: ServerConfig | None = None, *, tls_active: bool = False) -> None:
        self.config = config if config is not None else ServerConfig()
        self.tls_active = tls_active  # True on implicit-TLS listeners (RFC 8314)
        self.authenticated: str | None = None  # SASL identity once AUTH succeeded
        # Mechanisms recognised although not advertised now (PLAIN/LOGIN before
        # TLS): AUTH passes them to the glue, which answers 538 5.7.11 (RFC 4954 6)
        # instead of the engine's 504.
        self.auth_unadvertised: frozenset[str] = frozenset()
        self.helo_name: str | None = None
        self._extras: tuple[str, ...] = tuple(self.config.extensions_extra)
        self._state = State.CONNECTED
        self._extended = False  # EHLO session: ENHANCEDSTATUSCODES in force
        self._inbuf = bytearray()
        self._out: list[bytes] = []
        self.pending = 0  # octets queued in _out (not ``_pending``, the event waiting)
        self._events: deque[Event] = deque()
        self._pending: Event | None = None  # the event waiting for respond()
        self._pending_row: Transition | None = None  # ... and the row it came from
        self._eof = False
        self._discard_line = False  # inside an over-long command line
        self._close_reason = ""
        self._unknown_count = 0
        self._error_count = 0
        self._auth_failures = 0
        self._data: DataReader | None = None
        # Command lines and messages consumed so far; with ``partial_input``
        # this lets the glue enforce a deadline a trickle cannot extend.
        self.units_completed = 0
        self._reset_transaction()

    # ------------------------------------------------------------------ API

    @property
    def partial_input(self) -> bool:
        """True while an incomplete command line or message data is held
        (in DATA from the 354 until the final dot)."""
        return self._state is State.DATA or bool(self._inbuf) or self._discard_line

    @property
    def state(self) -> State:
        """The current ``State``."""
        return self._state

    @property
    def closed(self) -> bool:
        """True once the session ended (QUIT, 421, EOF)."""
        return self._state is State.CLOSED

    @property
    def extended(self) -> bool:
        """True once the client greeted with EHLO rather than HELO: the
        session uses the service extensions (RFC 5321 2.2.1), which the
        Received field's ``with`` clause names (ESMTP or SMTP, 4.4)."""
        return self._extended

    @property
    def extensions(self) -> list[str]:
        """The EHLO keywords this session would advertise now."""
        cfg = self.config
        keywords = [f"SIZE {cfg.max_message_size}", "8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES"]
        if cfg.smtputf8:
            keywords.append("SMTPUTF8")
        if cfg.dsn:
            keywords.append("DSN")
        if cfg.vrfy_enabled:
            keywords.append("VRFY")
        if cfg.expn_enabled:
            keywords.append("EXPN")  # RFC 5321 3.5.2: MUST be listed if supported
        for extra in self._extras:
            if extra.upper() == "STARTTLS" and self.tls_active:
                continue  # RFC 3207 4.2: not offered again after TLS
            if extra.upper().startswith("AUTH") and self.authenticated is not None:
                continue  # RFC 4954 4: one successful AUTH per session
            keywords.append(extra)
        keywords.append("HELP")
        return keywords

    def offer(self, keywords: Sequence[str], *, auth_unadvertised: Iterable[str] = ()) -> None:
        """Set what this session offers beyond the base extensions: the extra
        EHLO keywords (``STARTTLS``, ``AUTH <mechanisms>``) and the AUTH
        mechanisms recognised although not advertised now (PLAIN/LOGIN before
        TLS: AUTH hands them to the glue, which answers 538 5.7.11, RFC 4954 6,
        instead of the engine's 504). Takes effect at the next EHLO; the glue
        calls it at the start and again once TLS is up."""
        self._extras = tuple(keywords)
        self.auth_unadvertised = frozenset(m.upper() for m in auth_unadvertised)

    def greeting(self) -> bytes:
        """The 220 opening reply (RFC 5321 4.2, 3.1)."""
        return f"220 {self.config.hostname} {self.config.greeting_text}\r\n".encode()

    def shutdown_reply(self) -> bytes:
        """Unsent replies plus ``421 4.3.2`` (RFC 5321 3.8); closes the session."""
        out = self.data_to_send()
        if self._state is not State.CLOSED:
            out += Reply(421, "4.3.2", f"{self.config.hostname} Service shutting down").to_bytes(
                self._extended
            )
            self._close("shutdown")
        return out

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed (EOF)."""
        if self._state is State.CLOSED:
            return
        if not data:
            self._eof = True
        else:
            self._inbuf += data

    def data_to_send(self) -> bytes:
        """All replies produced since the last call, ready for one write."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        self.pending = 0
        return out

    def next_event(self) -> Event | Sentinel:
        """The next event, ``NEED_DATA``, ``PAUSED`` while an answer is due,
        or ``FLUSH`` when the replies queued pass ``FLUSH_AT``: the next
        command waits until they are written (protocols/contract.py)."""
        while True:
            if self._events:
                return self._events.popleft()
            if self._pending is not None:
                return PAUSED
            if self._state is State.CLOSED:
                return Closed(self._close_reason)
            if self.pending > FLUSH_AT:
                return FLUSH
            step = self._step_data() if self._state is State.DATA else self._step_command()
            if step is None:
                if self._eof:
                    # RFC 5321 4.1.1.5/4.1.1.10: a vanished peer is treated as
                    # QUIT; an unfinished transaction is dropped.
                    self._close("eof")
                    continue
                return NEED_DATA
            if step is True:
                continue
            assert isinstance(step, Event)
            if step.needs_answer:
                self._pending = step
            return step

    def respond(self, reply: Reply | None = None, *, identity: str | None = None) -> None:
        """Answer the pending event: the one way the glue answers.

        ``reply`` None: the usual positive reply (the EHLO keyword list,
        ``250 2.1.0 Sender OK``, ``220 2.0.0 Ready to start TLS``...).
        ``identity``: with a 235 to AUTH, the authenticated name.
        A 421 ends the session (RFC 5321 3.8). A 535 or 454 to AUTH counts
        against ``max_auth_failures``; the failure that uses the budget up
        is answered ``421 4.7.0`` instead, and the session ends.
        Raises ``ProtocolMisuse`` if no event waits or the code cannot
        answer it.
        """
        event = self._pending
        if event is None:
            raise ProtocolMisuse("no event is waiting for an answer")
        if reply is None:
            reply = self._usual_reply(event)
        code = reply.code
        is_auth = isinstance(event, AuthReceived | AuthResponse)
        if code == 334:
            if not is_auth:
                raise ProtocolMisuse("334 is only valid during AUTH")
        elif code < 200 or 300 <= code < 400:
            raise ProtocolMisuse(f"reply code {code} cannot answer {type(event).__name__}")
        if identity is not None and not (is_auth and code == 235):
            raise ProtocolMisuse("an identity goes only with 235 to AUTH")
        row = self._pending_row
        self._pending = None
        self._pending_row = None
        if is_auth and code in (535, 454) and not self._auth_failed():
            return
        self._write(reply)
        if code == 421:  # RFC 5321 3.8: 421 means the server closes
            self._close("rejected")
            return
        if is_auth and code == 235:
            self.authenticated = identity or ""
        _ANSWERED[type(event)](self, event, reply)
        self._move(row, code)

    def _usual_reply(self, event: Event) -> Reply:
        if isinstance(event, HeloReceived):
            greeting = f"{self.config.hostname} Hello {event.name}"
            if len(greeting.encode()) > _MAX_REPLY_TEXT:
                # RFC 5321 4.5.3.1.5: a reply line is at most 512 octets; a
                # client's over-long name is not echoed.
                greeting = f"{self.config.hostname} Hello"
            lines = [greeting]
            # RFC 5321 4.1.1.1: the EHLO reply carries keywords, no status codes.
            return Reply(250, None, [*lines, *self.extensions] if event.extended else lines)
        if isinstance(event, AuthReceived | AuthResponse):
            return _AUTH_SUCCESS
        default = _DEFAULT_ACCEPT.get(type(event))
        if default is None:
            raise ProtocolMisuse(f"{type(event).__name__} needs an explicit reply")
        return default

    # Shortcuts for tests and scripts: each builds a Reply for ``respond``.

    def accept(self, text: str | Sequence[str] | None = None) -> None:
        """``respond`` with the usual positive reply, optionally other text."""
        event = self._pending
        if event is None:
            raise ProtocolMisuse("no event is waiting for an answer")
        if text is None:
            self.respond()
            return
        if isinstance(event, HeloReceived):
            lines = [text] if isinstance(text, str) else list(text)
            self.respond(Reply(250, None, [*lines, *self.extensions] if event.extended else lines))
            return
        usual = self._usual_reply(event)
        self.respond(Reply(usual.code, usual.enhanced, text))

    def reject(self, code: int, enhanced: str | None, text: str | Sequence[str]) -> None:
        """``respond`` with a 4xx/5xx reply."""
        if code < 400:
            raise ProtocolMisuse("reject() needs a 4xx or 5xx code")
        self.respond(Reply(code, enhanced, text if isinstance(text, str) else tuple(text)))

    def auth_challenge(self, challenge: str) -> None:
        """``respond`` with ``334 challenge`` (base64 text, may be empty; RFC 4954 4)."""
        self.respond(Reply(334, None, challenge))

    def auth_success(self, identity: str) -> None:
        """``respond`` to AUTH with ``235 2.7.0`` (RFC 4954 6) for ``identity``."""
        self.respond(_AUTH_SUCCESS, identity=identity)

    @property
    def awaiting_sasl_response(self) -> bool:
        """True while a SASL exchange waits for the client's next line (a 334
        was sent and nothing of the client's waits for an answer)."""
        return self._state is State.AUTH and self._pending is None and not self._events

    def end_auth(self, reply: Reply) -> None:
        """End the SASL exchange the client has not answered with ``reply``
        (535 or 454, RFC 4954 6: the glue's exchange deadline passed), as an
        answer to its response would: counted against ``max_auth_failures``,
        and back to the state before AUTH. Raises ``ProtocolMisuse`` unless
        `awaiting_sasl_response`."""
        if not self.awaiting_sasl_response:
            raise ProtocolMisuse("no SASL exchange waits for the client")
        if reply.code not in (535, 454):
            raise ProtocolMisuse(f"reply code {reply.code} cannot end a SASL exchange")
        # what `respond` does with a failure answering the client's line
        # (AuthResponse answered: nothing to record), with no line to answer
        if self._auth_failed():
            self._write(reply)
            self._move(_SASL_ROW, reply.code)

    # ----------------------------------------------------------- internals

    def _auth_failed(self) -> bool:
        """Count a failed AUTH exchange (535 or 454) against
        ``max_auth_failures`` (RFC 4954 4 leaves the number of attempts to
        the server): False if it used the budget up, and the session ends
        with ``421 4.7.0`` instead of the failure's reply."""
        self._auth_failures += 1
        if self._auth_failures < self.config.budgets.max_auth_failures:
            return True
        self._write(Reply(421, "4.7.0", "Too many failed authentication attempts, closing connection"))
        self._close("errors")
        return False

    def _reset_transaction(self) -> None:
        """Clear reverse-path, forward-path and data buffers (RFC 5321 4.1.1.5)."""
        self._mail: MailFromReceived | None = None
        self._rcpts: list[RcptToReceived] = []
        self._rcpt_attempts = 0
        self._data = None

    def _write(self, reply: Reply) -> None:
        data = reply.to_bytes(self._extended)
        self._out.append(data)
        self.pending += len(data)

    def _close(self, reason: str) -> None:
        self._state = State.CLOSED
        self._close_reason = reason
        self._pending = None
        self._inbuf = bytearray()
        self._reset_transaction()

    def _error(self, code: int, enhanced: str, text: str, *, unknown: bool = False) -> bool:
        """Answer an error the engine detected and charge the abuse budgets."""
        self._write(Reply(code, enhanced, text))
        self._events.append(ProtocolError(code, text))
        self._error_count += 1
        if unknown:
            self._unknown_count += 1
        cfg = self.config
        budgets = cfg.budgets
        if self._error_count >= budgets.max_errors or self._unknown_count >= budgets.max_bad_commands:
            self._write(Reply(421, "4.7.0", f"{cfg.hostname} Too many errors, closing connection"))
            self._close("errors")
        return True

    def _reply_error(self, reply: Reply, *, unknown: bool) -> bool:
        return self._error(reply.code, reply.enhanced or "", reply.lines[0], unknown=unknown)

    def _run(self, row: Transition, argument: str) -> _Step:
        """Run a command's row: its handler reads the argument and either
        answers itself (a Reply) or hands out an event for the glue; the
        row then gives the next state (``_move``)."""
        assert row.handler is not None
        result = row.handler(self, argument)
        if isinstance(result, Event):
            if result.needs_answer:
                self._pending_row = row
            return result
        if isinstance(result, Reply):
            self._write(result)
            self._move(row, result.code)
        else:  # an error the engine answered (and charged) in _error
            self._move(row, 500)
        return True

    def _move(self, row: Transition | None, code: int) -> None:
        """Enter the state ``row`` names for a command answered with ``code``."""
        if row is None or self._state is State.CLOSED:
            return
        nxt = row.ok if code < 300 else row.more if code < 400 else row.failed
        if nxt is None:
            return
        if nxt is State.CLOSED:
            self._close("quit")  # only QUIT's row leads there
        else:
            self._state = nxt

    def _line_limit(self) -> int:
        cfg = self.config
        if self._state is State.AUTH:
            return max(cfg.max_auth_line, cfg.max_command_line)
        verb = bytes(self._inbuf[:5]).upper()
        if verb == b"AUTH ":
            return max(cfg.max_auth_line, cfg.max_command_line)
        if self._extended and verb in (b"MAIL ", b"RCPT "):
            return cfg.max_command_line + self._params_room(verb == b"MAIL ")
        return cfg.max_command_line

    def _params_room(self, mail: bool) -> int:
        """Octets the parameters of the extensions offered may add to a MAIL
        or RCPT line: RFC 5321 4.5.3.1.4 lets extensions raise the 512-octet
        limit, and a client may use all of it. MAIL: SIZE 26 (RFC 1870 3),
        BODY=8BITMIME and SMTPUTF8 their own length, RET and ENVID 100 (RFC
        3461), AUTH= 500 (RFC 4954 3). RCPT: NOTIFY and ORCPT 500 (RFC 3461)."""
        cfg = self.config
        if not mail:
            return _DSN_RCPT_ROOM if cfg.dsn else 0
        room = _SIZE_ROOM + _BODY_ROOM
        if cfg.smtputf8:
            room += _SMTPUTF8_ROOM
        if cfg.dsn:
            room += _DSN_MAIL_ROOM
        if self._auth_mechanisms() is not None:
            room += _AUTH_MAIL_ROOM
        return room

    def _step_command(self) -> _Step:
        buf = self._inbuf
        if self._discard_line:
            # RFC 5321 4.5.3.1.4: the over-long line is thrown away unbuffered.
            i = buf.find(b"\r\n")
            if i < 0:
                del buf[: len(buf) - 1 if buf.endswith(b"\r") else len(buf)]
                return None
            del buf[: i + 2]
            self._discard_line = False
            self.units_completed += 1
            return self._line_too_long()
        i = buf.find(b"\r\n")
        limit = self._line_limit()
        if i < 0:
            if len(buf) >= limit:
                self._discard_line = True
                return True
            return None
        self.units_completed += 1
        if i + 2 > limit:
            del buf[: i + 2]
            return self._line_too_long()
        line = bytes(buf[:i])
        del buf[: i + 2]
        if self._state is State.AUTH:
            # Latin-1 maps each byte to one character: _auth_line sees non-ASCII.
            return self._run(_SASL_ROW, line.decode("latin-1"))
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return self._error(500, "5.5.2", "Invalid UTF-8 in command", unknown=True)
        if _CONTROL.search(text):
            return self._error(500, "5.5.2", "Invalid character in command", unknown=True)
        verb, _, argument = text.partition(" ")
        verb = verb.upper()
        if buf and self.config.strict_pipelining and self._pipelined_too_early(verb):
            return self._out_of_sync(verb)
        row = TRANSITIONS.get((self._state, verb))
        if row is None:
            if verb in _NOT_IMPLEMENTED:
                return self._error(502, "5.5.1", "Command not implemented", unknown=True)
            return self._error(500, "5.5.2", "Command unrecognized", unknown=True)
        return self._run(row, argument.strip(" "))

    def _pipelined_too_early(self, verb: str) -> bool:
        """More input came before the reply to ``verb``: allowed only inside a
        pipelined group of an EHLO session (RFC 2920 3.1: PIPELINING was
        offered), and never after a command that ends a group. STARTTLS is
        left to its own rule (what follows it is dropped, RFC 3207 4.2)."""
        if verb in ("QUIT", "STARTTLS"):
            return False
        return not self._extended or verb in _GROUP_ENDERS

    def _out_of_sync(self, verb: str) -> bool:
        """Refuse a client that did not wait for a reply, and end the session."""
        text = f"{self.config.hostname} SMTP synchronization error: command sent before the reply to {verb[:16]}"
        self._write(Reply(554, "5.5.1", text))
        self._events.append(ProtocolError(554, text))
        self._close("out-of-sync")
        return True

    def _line_too_long(self) -> bool:
        if self._state is State.AUTH:
            # An over-long SASL line ends the exchange rather than leaving the
            # client stuck in the AUTH sub-state.
            self._events.append(AuthCancelled())
            self._error(500, "5.5.2", "Line too long", unknown=True)
            self._move(_SASL_ROW, 500)
            return True
        return self._error(500, "5.5.2", "Line too long", unknown=True)

    def _step_data(self) -> _Step:
        if not self._inbuf:
            return None
        assert self._data is not None
        chunk, self._inbuf = self._inbuf, bytearray()
        result = self._data.feed(chunk)
        if result is None:
            part = self._data.take()
            return None if part is None else MessageData(part)
        self.units_completed += 1
        self._inbuf = bytearray(result.rest)
        if result.error is not None or result.data is None:
            # RFC 5321 4.2.5: a failure reply after the data ends the
            # transaction just like success does.
            self._reset_transaction()
            assert result.error is not None
            self._reply_error(result.error, unknown=False)
            self._move(_DATA_ROW, result.error.code)
            return True
        mail = self._mail
        assert mail is not None
        self._pending_row = _DATA_ROW
        return MessageReceived(
            reverse_path=mail.reverse_path,
            forward_paths=[r.forward_path for r in self._rcpts],
            rcpt_params=[r.params for r in self._rcpts],
            mail_params=mail.params,
            data=result.data,
            mail=mail,
            rcpts=list(self._rcpts),
            streamed=self._data.spilled,
        )

    def _auth_line(self, line: str) -> _Step | Reply:
        """A client line inside the SASL exchange (RFC 4954 4), one character per byte."""
        if not line.isascii():
            self._events.append(AuthCancelled())
            return self._error(501, "5.5.2", "Invalid base64 data")
        text = line.strip(" ")
        if text == "*":
            self._events.append(AuthCancelled())
            return Reply(501, "5.7.0", "Authentication cancelled")
        return AuthResponse(text)

    # ------------------------------------------------------------ commands

    def _seq(self, text: str) -> bool:
        return self._error(503, "5.5.1", text)

    def _cmd_helo(self, argument: str) -> _Step | Reply:
        return self._hello(argument, extended=False)

    def _cmd_ehlo(self, argument: str) -> _Step | Reply:
        return self._hello(argument, extended=True)

    def _hello(self, argument: str, *, extended: bool) -> _Step | Reply:
        # RFC 5321 4.1.1.1: EHLO/HELO SP (Domain / address-literal). The name
        # is not judged here (clients send all sorts); policy may do so.
        if not argument or " " in argument:
            return self._error(
                501, "5.5.4", f"Syntax: {'EHLO' if extended else 'HELO'} hostname", unknown=True
            )
        return HeloReceived(argument, extended)

    def _cmd_mail(self, argument: str) -> _Step | Reply:
        cfg = self.config
        if cfg.require_auth_for_mail and self.authenticated is None:
            return self._error(530, "5.7.0", "Authentication required")  # RFC 4954 6
        if argument[:5].upper() != "FROM:":
            return self._error(501, "5.5.2", "Syntax: MAIL FROM:<address>", unknown=True)
        try:
            path, param_text = split_path(argument[5:].lstrip(" "), sender=True)
            params = parse_params(param_text)
            if params and not self._extended:
                # RFC 5321 4.1.1.2: parameters only for extensions offered by EHLO.
                raise ParamError(Reply(555, "5.5.4", "Parameters not allowed after HELO"))
            mp = interpret_mail_params(
                params,
                max_size=cfg.max_message_size,
                smtputf8_enabled=cfg.smtputf8,
                dsn_enabled=cfg.dsn,
                auth_enabled=self._auth_mechanisms() is not None,
            )
            reverse_path = parse_reverse_path(path, utf8=mp.smtputf8)
        except (PathError, ParamError) as exc:
            return self._reply_error(exc.reply, unknown=exc.reply.code != 552)
        return MailFromReceived(
            reverse_path, params, mp.size, mp.body, mp.smtputf8, mp.ret, mp.envid, mp.auth
        )

    def _cmd_rcpt(self, argument: str) -> _Step | Reply:
        if argument[:3].upper() != "TO:":
            return self._error(501, "5.5.2", "Syntax: RCPT TO:<address>", unknown=True)
        self._rcpt_attempts += 1
        if len(self._rcpts) >= self.config.max_recipients:
            # RFC 5321 4.5.3.1.10: 452, not 552; earlier recipients stay.
            return Reply(452, "4.5.3", "Too many recipients")
        assert self._mail is not None
        try:
            path, param_text = split_path(argument[3:].lstrip(" "), sender=False)
            params = parse_params(param_text)
            if params and not self._extended:
                raise ParamError(Reply(555, "5.5.4", "Parameters not allowed after HELO"))
            rp = interpret_rcpt_params(params, dsn_enabled=self.config.dsn)
            forward_path = parse_forward_path(path, utf8=self._mail.smtputf8)
        except (PathError, ParamError) as exc:
            return self._reply_error(exc.reply, unknown=True)
        return RcptToReceived(forward_path, params, rp.notify, rp.orcpt)

    def _cmd_data(self, argument: str) -> _Step | Reply:
        if argument:
            return self._error(501, "5.5.4", "Syntax: DATA (no parameters)", unknown=True)
        cfg = self.config
        self._data = DataReader(
            cfg.max_message_size, cfg.max_text_line, cfg.strict_line_endings, cfg.spill_at or 1 << 62
        )
        return _GO_AHEAD

    def _data_without_rcpt(self, argument: str) -> _Step | Reply:
        if self._rcpt_attempts:
            # RFC 2920 3.1: pipelined RCPTs all failed -> 554 to DATA.
            return self._error(554, "5.5.1", "No valid recipients")
        return self._seq("Need RCPT command")

    def _cmd_rset(self, argument: str) -> _Step | Reply:
        if argument:
            return self._error(501, "5.5.4", "Syntax: RSET (no parameters)", unknown=True)
        self._reset_transaction()
        return _OK

    def _cmd_noop(self, argument: str) -> _Step | Reply:
        # RFC 5321 4.1.1.9: a parameter string SHOULD be ignored.
        return _OK

    def _cmd_quit(self, argument: str) -> _Step | Reply:
        # RFC 5321 4.1.1.10: 221, then close (the row leads to CLOSED); any
        # open transaction is aborted.
        return Reply(221, "2.0.0", f"{self.config.hostname} closing connection")

    def _cmd_help(self, argument: str) -> _Step | Reply:
        # RFC 5321 4.1.1.8: HELP with and without an argument; reply 214.
        if not argument:
            verbs = "HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY EXPN HELP"
            if self._auth_mechanisms() is not None:
                verbs += " AUTH"
            if self._starttls_offered():
                verbs += " STARTTLS"
            return Reply(214, "2.0.0", ("mailyard SMTP server; commands:", verbs, "End of HELP info"))
        usage = _HELP_TOPICS.get(argument.upper())
        if usage is None:
            return self._error(504, "5.5.4", "HELP topic unknown", unknown=True)
        return Reply(214, "2.0.0", usage)

    def _cmd_vrfy(self, argument: str) -> _Step | Reply:
        if not argument:
            return self._error(501, "5.5.4", "Syntax: VRFY <address>", unknown=True)
        if self.config.vrfy_enabled and self._may_look_up_users():
            return VrfyReceived(argument)
        # VRFY is mandatory (RFC 5321 4.5.1) and 500/502 would be non-compliant
        # (3.5.3), so a disabled VRFY says 252: cannot verify, will try (7.3).
        # The same before AUTH on submission, where it must not reveal users.
        return _CANNOT_VRFY

    def _cmd_expn(self, argument: str) -> _Step | Reply:
        if not argument:
            return self._error(501, "5.5.4", "Syntax: EXPN <list>", unknown=True)
        if self.config.expn_enabled:
            if not self._may_look_up_users():
                return self._error(530, "5.7.0", "Authentication required")  # RFC 4954 6
            return ExpnReceived(argument)
        # EXPN is optional (RFC 5321 3.5.2) and is not advertised when off, so
        # it is "not implemented" here: 502 (3.5.3 names 502 for "not
        # verified"); 252 would claim something about a list we won't expand.
        return Reply(502, "5.5.1", "EXPN not available")

    def _may_look_up_users(self) -> bool:
        """VRFY/EXPN may answer from the directory: on the MX port when enabled;
        on submission only after AUTH, so an anonymous client learns nothing
        about which users exist (RFC 5321 7.3, RFC 6409 4.3)."""
        return not self.config.require_auth_for_mail or self.authenticated is not None

    def _auth_mechanisms(self) -> list[str] | None:
        for extra in self._extras:
            words = extra.split()
            if words and words[0].upper() == "AUTH":
                return [w.upper() for w in words[1:]]
        return None

    def _starttls_offered(self) -> bool:
        return not self.tls_active and any(e.upper() == "STARTTLS" for e in self._extras)

    def _cmd_auth(self, argument: str) -> _Step | Reply:
        mechanisms = self._auth_mechanisms()
        if mechanisms is None:
            return self._error(502, "5.5.1", "AUTH not available", unknown=True)
        if not self._extended:
            return self._seq("Send EHLO first")
        if self.authenticated is not None:
            return self._seq("Already authenticated")  # RFC 4954 4
        words = argument.split(" ")
        if not words[0] or len(words) > 2:
            return self._error(
                501, "5.5.2", "Syntax: AUTH mechanism [initial-response]", unknown=True
            )
        mechanism = words[0].upper()
        if mechanism not in mechanisms and mechanism not in self.auth_unadvertised:
            return self._error(504, "5.5.4", "Unrecognized authentication type", unknown=True)
        initial = None
        if len(words) == 2:
            initial = "" if words[1] == "=" else words[1]  # RFC 4954 4: "=" is empty
        return AuthReceived(mechanism, initial)

    def _cmd_starttls(self, argument: str) -> _Step | Reply:
        if self.tls_active and any(e.upper() == "STARTTLS" for e in self._extras):
            return self._seq("TLS already active")
        if not self._starttls_offered():
            return self._error(502, "5.5.1", "STARTTLS not available", unknown=True)
        if argument:
            return self._error(501, "5.5.4", "Syntax: STARTTLS (no parameters)", unknown=True)
        return StartTLSReceived()

    # ------------------------------------------------------- after answers
    # What an answer does besides moving the state (the table does that).

    def _answered_helo(self, event: HeloReceived, reply: Reply) -> None:
        if reply.is_positive:
            # RFC 5321 4.1.4: EHLO/HELO mid-session resets like RSET.
            self._reset_transaction()
            self.helo_name = event.name
            self._extended = event.extended

    def _answered_mail(self, event: MailFromReceived, reply: Reply) -> None:
        if reply.is_positive:
            self._mail = event

    def _answered_rcpt(self, event: RcptToReceived, reply: Reply) -> None:
        if reply.is_positive:  # 250 or 251
            self._rcpts.append(event)

    def _answered_nothing(self, event: Event, reply: Reply) -> None:
        pass

    def _answered_message(self, event: MessageReceived, reply: Reply) -> None:
        # RFC 5321 4.1.1.4: the buffers are cleared whatever the outcome.
        self._reset_transaction()

    def _answered_starttls(self, event: StartTLSReceived, reply: Reply) -> None:
        if not reply.is_positive:
            return
        # RFC 3207 4.2: forget everything learned before TLS, and drop bytes
        # the client pipelined after STARTTLS (command injection, CVE-2011-0411).
        self._inbuf = bytearray()
        self._discard_line = False
        self._reset_transaction()
        self.helo_name = None
        self._extended = False
        self.authenticated = None
        self.tls_active = True


_DEFAULT_ACCEPT: dict[type, Reply] = {
    MailFromReceived: Reply(250, "2.1.0", "Sender OK"),
    RcptToReceived: Reply(250, "2.1.5", "Recipient OK"),
    MessageReceived: Reply(250, "2.0.0", "Message accepted for delivery"),
    VrfyReceived: Reply(
        252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery"
    ),
    StartTLSReceived: Reply(220, "2.0.0", "Ready to start TLS"),
}

_E = SMTPServerEngine
_ANSWERED: dict[type, Callable[[SMTPServerEngine, Event, Reply], None]] = {
    HeloReceived: _E._answered_helo,
    MailFromReceived: _E._answered_mail,
    RcptToReceived: _E._answered_rcpt,
    VrfyReceived: _E._answered_nothing,
    ExpnReceived: _E._answered_nothing,
    MessageReceived: _E._answered_message,
    AuthReceived: _E._answered_nothing,
    AuthResponse: _E._answered_nothing,
    StartTLSReceived: _E._answered_starttls,
}  # type: ignore[dict-item]


def _sequence_error(text: str) -> Callable[[SMTPServerEngine, str], _Step | Reply]:
    def handler(engine: SMTPServerEngine, argument: str) -> _Step | Reply:
        return engine._seq(text)

    return handler


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of the state machine: the handler that reads the command's
    argument, and the next state when the command is answered with 2xx
    (``ok``), 334/354 (``more``) or 4xx/5xx (``failed``), by the engine or
    by the glue; None: the state stays. A handler never sets the state."""

    handler: Callable[[SMTPServerEngine, str], _Step | Reply] | None
    ok: State | None = None
    more: State | None = None
    failed: State | None = None


_C, _R, _M, _T = State.CONNECTED, State.READY, State.MAIL, State.RCPT
_NEED_HELO = Transition(_sequence_error("Send HELO/EHLO first"))
_NEED_MAIL = Transition(_sequence_error("Need MAIL command"))
_IN_TRANSACTION = Transition(_sequence_error("Not permitted during a mail transaction"))
_SENDER_GIVEN = Transition(_sequence_error("Sender already specified"))
_GO_AHEAD = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
_OK = Reply(250, "2.0.0", "OK")
_CANNOT_VRFY = Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
_AUTH_SUCCESS = Reply(235, "2.7.0", "Authentication successful")

# Keys of the two sub-states' rows: the end of mail data (after 354) and a
# client line inside a SASL exchange (after 334).
END_OF_DATA = "<end of data>"
SASL_LINE = "<SASL response>"


def _everywhere(verb: str, row: Transition) -> dict[tuple[State, str], Transition]:
    return {(state, verb): row for state in _COMMAND_STATES}


# The state machine (RFC 5321 4.1.4, 4.3.2): (state, verb) -> row.
# HELO/EHLO, RSET, NOOP, QUIT, HELP, VRFY, EXPN are valid in every state.
TRANSITIONS: dict[tuple[State, str], Transition] = {
    # RFC 5321 4.1.4: a successful HELO/EHLO (re)starts the session.
    **_everywhere("HELO", Transition(_E._cmd_helo, ok=_R)),
    **_everywhere("EHLO", Transition(_E._cmd_ehlo, ok=_R)),
    (_C, "MAIL"): _NEED_HELO,
    (_R, "MAIL"): Transition(_E._cmd_mail, ok=_M),
    (_M, "MAIL"): _SENDER_GIVEN,
    (_T, "MAIL"): _SENDER_GIVEN,
    (_C, "RCPT"): _NEED_MAIL,
    (_R, "RCPT"): _NEED_MAIL,
    (_M, "RCPT"): Transition(_E._cmd_rcpt, ok=_T),
    (_T, "RCPT"): Transition(_E._cmd_rcpt, ok=_T),
    (_C, "DATA"): _NEED_MAIL,
    (_R, "DATA"): _NEED_MAIL,
    (_M, "DATA"): Transition(_E._data_without_rcpt),
    (_T, "DATA"): Transition(_E._cmd_data, more=State.DATA),
    # RFC 5321 4.1.1.5: RSET ends a mail transaction, not the greeting.
    (_C, "RSET"): Transition(_E._cmd_rset),
    (_R, "RSET"): Transition(_E._cmd_rset),
    (_M, "RSET"): Transition(_E._cmd_rset, ok=_R),
    (_T, "RSET"): Transition(_E._cmd_rset, ok=_R),
    **_everywhere("NOOP", Transition(_E._cmd_noop)),
    **_everywhere("QUIT", Transition(_E._cmd_quit, ok=State.CLOSED)),
    **_everywhere("HELP", Transition(_E._cmd_help)),
    **_everywhere("VRFY", Transition(_E._cmd_vrfy)),
    **_everywhere("EXPN", Transition(_E._cmd_expn)),
    # RFC 4954 4: 334 opens the SASL exchange; 235 or a failure ends it.
    (_C, "AUTH"): Transition(_sequence_error("Send EHLO first")),
    (_R, "AUTH"): Transition(_E._cmd_auth, ok=_R, more=State.AUTH, failed=_R),
    (_M, "AUTH"): _IN_TRANSACTION,
    (_T, "AUTH"): _IN_TRANSACTION,
    (State.AUTH, SASL_LINE): Transition(_E._auth_line, ok=_R, more=State.AUTH, failed=_R),
    # RFC 3207 4.2: after TLS the session starts again, as if just connected.
    (_C, "STARTTLS"): Transition(_E._cmd_starttls, ok=_C),
    (_R, "STARTTLS"): Transition(_E._cmd_starttls, ok=_C),
    (_M, "STARTTLS"): _IN_TRANSACTION,
    (_T, "STARTTLS"): _IN_TRANSACTION,
    # RFC 5321 4.1.1.4: the transaction ends with the reply to the data,
    # whatever it is; the data itself is read by _step_data.
    (State.DATA, END_OF_DATA): Transition(None, ok=_R, failed=_R),
}
_SASL_ROW = TRANSITIONS[(State.AUTH, SASL_LINE)]
_DATA_ROW = TRANSITIONS[(State.DATA, END_OF_DATA)]
