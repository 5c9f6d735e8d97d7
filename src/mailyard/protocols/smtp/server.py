"""Sans-I/O SMTP server engine (RFC 5321 with ESMTP extensions).

Bytes in (``receive_data``), events out (``next_event``), replies out
(``data_to_send``). The engine never touches a socket, the clock, DNS or
the store; decisions that need them (is this recipient local? is the
message stored?) are events the glue answers with ``respond``/``accept``.

Usage::

    engine = SMTPServerEngine(ServerConfig(hostname="mx.example.test"))
    write(engine.greeting())
    while not engine.closed:
        engine.receive_data(await read())        # b"" on EOF
        while True:
            ev = engine.next_event()
            if ev is NEED_DATA or isinstance(ev, ConnectionClosed):
                break
            if isinstance(ev, RcptToReceived):
                engine.accept() if local(ev.forward_path) else engine.reject(550, "5.1.1", "No such user")
            ...
        write(engine.data_to_send())             # pipelined replies in one write

The command state machine is the table ``COMMAND_TABLE`` at the bottom:
(verb, state) -> handler. Every known verb has an entry for every command
state; sequence errors are handlers too (503, RFC 5321 4.1.4 / 4.3.2).
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .data import SPILL_AT, DataReader
from .events import (
    NEED_DATA,
    PAUSED,
    AuthCancelled,
    AuthReceived,
    AuthResponse,
    ConnectionClosed,
    Event,
    ExpnReceived,
    HeloReceived,
    MailFromReceived,
    MessageData,
    MessageReceived,
    ProtocolError,
    RcptToReceived,
    Sentinel,
    StartTLSReceived,
    VrfyReceived,
)
from .params import ParamError, interpret_mail_params, interpret_rcpt_params, parse_params
from .paths import PathError, parse_forward_path, parse_reverse_path, split_path
from .replies import Reply

__all__ = ["ServerConfig", "State", "SMTPServerEngine", "SMTPUsageError", "COMMAND_TABLE"]


@dataclass(frozen=True)
class ServerConfig:
    """Per-listener settings; every field has a default.

    ``extensions_extra`` are extra EHLO keywords, e.g. ``("STARTTLS",
    "AUTH PLAIN LOGIN")``; the engine enables the STARTTLS and AUTH commands
    exactly when they are advertised. ``max_errors`` bounds all error
    replies the engine itself gives; ``max_unknown_commands`` bounds
    unrecognised or malformed commands (500/501/502/504/555). Reaching
    either ends the session with ``421 4.7.0``. Rejections decided by the
    glue (550 unknown user...) do not count; policy throttles those.
    """

    hostname: str = "localhost"
    max_message_size: int = 25 * 1024 * 1024  # 0 = no limit (RFC 1870 "SIZE 0")
    max_recipients: int = 100  # RFC 5321 4.5.3.1.8: at least 100
    max_command_line: int = 512  # RFC 5321 4.5.3.1.4, octets incl. CRLF
    max_auth_line: int = 12288  # RFC 4954 4: AUTH lines may be this long
    max_text_line: int = 1000  # RFC 5321 4.5.3.1.6, octets incl. CRLF
    vrfy_enabled: bool = False
    expn_enabled: bool = False
    max_unknown_commands: int = 20
    max_errors: int = 50
    smtputf8: bool = True
    dsn: bool = True
    greeting_text: str = "mailyard ESMTP ready"
    extensions_extra: tuple[str, ...] = ()
    require_auth_for_mail: bool = False  # submission (RFC 6409 4.3, RFC 4954 6)
    strict_line_endings: bool = True  # refuse bare CR/LF in data (see data.py)
    # Message data held in memory before it is handed out as MessageData
    # events (the glue spools it); 0: never, the whole message is held.
    spill_at: int = SPILL_AT


class State(enum.Enum):
    """Where the session is (RFC 5321 4.1.4 command order)."""

    CONNECTED = "connected"  # greeting sent, no HELO/EHLO yet
    READY = "ready"  # greeted, no mail transaction
    MAIL = "mail"  # MAIL accepted, no RCPT accepted yet
    RCPT = "rcpt"  # at least one RCPT accepted
    DATA = "data"  # reading mail data after 354
    AUTH = "auth"  # inside a SASL exchange (RFC 4954 4)
    CLOSED = "closed"


class SMTPUsageError(RuntimeError):
    """The glue called the engine wrongly (e.g. respond() with nothing pending).

    Never raised for anything the peer sends.
    """


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

_Step = Event | bool | None  # an event, True = progress made, None = need bytes


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
        self._auth_identity = ""
        self.helo_name: str | None = None
        self._extras: tuple[str, ...] = tuple(self.config.extensions_extra)
        self._state = State.CONNECTED
        self._extended = False  # EHLO session: ENHANCEDSTATUSCODES in force
        self._inbuf = bytearray()
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self._pending: Event | None = None
        self._eof = False
        self._discard_line = False  # inside an over-long command line
        self._close_reason = ""
        self._unknown_count = 0
        self._error_count = 0
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

    def set_extensions_extra(self, keywords: Sequence[str]) -> None:
        """Replace the extra EHLO keywords for this session (e.g. offer AUTH
        only once TLS is up). Takes effect at the next EHLO."""
        self._extras = tuple(keywords)

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
        return out

    def next_event(self) -> Event | Sentinel:
        """The next event, ``NEED_DATA``, or ``PAUSED`` while an answer is due."""
        while True:
            if self._events:
                return self._events.popleft()
            if self._pending is not None:
                return PAUSED
            if self._state is State.CLOSED:
                return ConnectionClosed(self._close_reason)
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

    def respond(self, reply: Reply) -> None:
        """Answer the pending event with ``reply``."""
        event = self._pending
        if event is None:
            raise SMTPUsageError("no event is waiting for an answer")
        code = reply.code
        if code == 334:
            if not isinstance(event, AuthReceived | AuthResponse):
                raise SMTPUsageError("334 is only valid during AUTH")
        elif code < 200 or 300 <= code < 400:
            raise SMTPUsageError(f"reply code {code} cannot answer {type(event).__name__}")
        self._pending = None
        self._write(reply)
        if code == 421:  # RFC 5321 3.8: 421 means the server closes
            self._close("rejected")
            return
        _ANSWERED[type(event)](self, event, reply)

    def accept(self, text: str | Sequence[str] | None = None) -> None:
        """Answer the pending event positively with the usual reply."""
        event = self._pending
        if event is None:
            raise SMTPUsageError("no event is waiting for an answer")
        if isinstance(event, HeloReceived):
            if text is None:
                text = f"{self.config.hostname} Hello {event.name}"
            if isinstance(text, str):
                text = [text]
            lines = [*text, *self.extensions] if event.extended else list(text)
            # RFC 5321 4.1.1.1: the EHLO reply carries keywords, no status codes.
            self.respond(Reply(250, None, lines))
            return
        if isinstance(event, AuthReceived | AuthResponse):
            self.auth_success("")
            return
        default = _DEFAULT_ACCEPT.get(type(event))
        if default is None:
            raise SMTPUsageError(f"{type(event).__name__} needs an explicit respond()")
        self.respond(
            Reply(default.code, default.enhanced, text if text is not None else default.lines)
        )

    def reject(self, code: int, enhanced: str | None, text: str | Sequence[str]) -> None:
        """Answer the pending event with a 4xx/5xx reply."""
        if code < 400:
            raise SMTPUsageError("reject() needs a 4xx or 5xx code")
        self.respond(Reply(code, enhanced, text if isinstance(text, str) else tuple(text)))

    def auth_challenge(self, challenge: str) -> None:
        """Send ``334 challenge`` (base64 text, may be empty; RFC 4954 4)."""
        self.respond(Reply(334, None, challenge))

    def auth_success(self, identity: str) -> None:
        """Finish AUTH successfully: ``235 2.7.0`` (RFC 4954 6)."""
        if not isinstance(self._pending, AuthReceived | AuthResponse):
            raise SMTPUsageError("auth_success() needs a pending AUTH event")
        self._auth_identity = identity
        self.respond(Reply(235, "2.7.0", "Authentication successful"))

    # ----------------------------------------------------------- internals

    def _reset_transaction(self) -> None:
        """Clear reverse-path, forward-path and data buffers (RFC 5321 4.1.1.5)."""
        self._mail: MailFromReceived | None = None
        self._rcpts: list[RcptToReceived] = []
        self._rcpt_attempts = 0
        self._data = None

    def _write(self, reply: Reply) -> None:
        self._out.append(reply.to_bytes(self._extended))

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
        if self._error_count >= cfg.max_errors or self._unknown_count >= cfg.max_unknown_commands:
            self._write(Reply(421, "4.7.0", f"{cfg.hostname} Too many errors, closing connection"))
            self._close("errors")
        return True

    def _reply_error(self, reply: Reply, *, unknown: bool) -> bool:
        return self._error(reply.code, reply.enhanced or "", reply.lines[0], unknown=unknown)

    def _line_limit(self) -> int:
        if self._state is State.AUTH or self._inbuf[:5].upper() == b"AUTH ":
            return max(self.config.max_auth_line, self.config.max_command_line)
        return self.config.max_command_line

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
            return self._auth_line(line)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return self._error(500, "5.5.2", "Invalid UTF-8 in command", unknown=True)
        if _CONTROL.search(text):
            return self._error(500, "5.5.2", "Invalid character in command", unknown=True)
        verb, _, argument = text.partition(" ")
        verb = verb.upper()
        row = COMMAND_TABLE.get(verb)
        if row is None:
            if verb in _NOT_IMPLEMENTED:
                return self._error(502, "5.5.1", "Command not implemented", unknown=True)
            return self._error(500, "5.5.2", "Command unrecognized", unknown=True)
        return row[self._state](self, argument.strip(" "))

    def _line_too_long(self) -> bool:
        if self._state is State.AUTH:
            # An over-long SASL line ends the exchange rather than leaving the
            # client stuck in the AUTH sub-state.
            self._state = State.READY
            self._events.append(AuthCancelled())
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
            self._state = State.READY
            assert result.error is not None
            return self._reply_error(result.error, unknown=False)
        mail = self._mail
        assert mail is not None
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

    def _auth_line(self, line: bytes) -> _Step:
        """A client line inside the SASL exchange (RFC 4954 4)."""
        text = line.decode("ascii", "replace").strip(" ")
        if text == "*":
            self._state = State.READY
            self._write(Reply(501, "5.7.0", "Authentication cancelled"))
            self._events.append(AuthCancelled())
            return True
        if not line.isascii():
            self._state = State.READY
            self._events.append(AuthCancelled())
            return self._error(501, "5.5.2", "Invalid base64 data")
        return AuthResponse(text)

    # ------------------------------------------------------------ commands

    def _seq(self, text: str) -> bool:
        return self._error(503, "5.5.1", text)

    def _cmd_helo(self, argument: str) -> _Step:
        return self._hello(argument, extended=False)

    def _cmd_ehlo(self, argument: str) -> _Step:
        return self._hello(argument, extended=True)

    def _hello(self, argument: str, *, extended: bool) -> _Step:
        # RFC 5321 4.1.1.1: EHLO/HELO SP (Domain / address-literal). The name
        # is not judged here (clients send all sorts); policy may do so.
        if not argument or " " in argument:
            return self._error(
                501, "5.5.4", f"Syntax: {'EHLO' if extended else 'HELO'} hostname", unknown=True
            )
        return HeloReceived(argument, extended)

    def _cmd_mail(self, argument: str) -> _Step:
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

    def _cmd_rcpt(self, argument: str) -> _Step:
        if argument[:3].upper() != "TO:":
            return self._error(501, "5.5.2", "Syntax: RCPT TO:<address>", unknown=True)
        self._rcpt_attempts += 1
        if len(self._rcpts) >= self.config.max_recipients:
            # RFC 5321 4.5.3.1.10: 452, not 552; earlier recipients stay.
            self._write(Reply(452, "4.5.3", "Too many recipients"))
            return True
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

    def _cmd_data(self, argument: str) -> _Step:
        if argument:
            return self._error(501, "5.5.4", "Syntax: DATA (no parameters)", unknown=True)
        cfg = self.config
        self._data = DataReader(
            cfg.max_message_size, cfg.max_text_line, cfg.strict_line_endings, cfg.spill_at or 1 << 62
        )
        self._state = State.DATA
        self._write(Reply(354, None, "End data with <CR><LF>.<CR><LF>"))
        return True

    def _data_without_rcpt(self, argument: str) -> _Step:
        if self._rcpt_attempts:
            # RFC 2920 3.1: pipelined RCPTs all failed -> 554 to DATA.
            return self._error(554, "5.5.1", "No valid recipients")
        return self._seq("Need RCPT command")

    def _cmd_rset(self, argument: str) -> _Step:
        if argument:
            return self._error(501, "5.5.4", "Syntax: RSET (no parameters)", unknown=True)
        self._reset_transaction()
        if self._state in (State.MAIL, State.RCPT):
            self._state = State.READY
        self._write(Reply(250, "2.0.0", "OK"))
        return True

    def _cmd_noop(self, argument: str) -> _Step:
        # RFC 5321 4.1.1.9: a parameter string SHOULD be ignored.
        self._write(Reply(250, "2.0.0", "OK"))
        return True

    def _cmd_quit(self, argument: str) -> _Step:
        # RFC 5321 4.1.1.10: 221, then close; any open transaction is aborted.
        self._write(Reply(221, "2.0.0", f"{self.config.hostname} closing connection"))
        self._close("quit")
        return True

    def _cmd_help(self, argument: str) -> _Step:
        # RFC 5321 4.1.1.8: HELP with and without an argument; reply 214.
        if not argument:
            verbs = "HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY EXPN HELP"
            if self._auth_mechanisms() is not None:
                verbs += " AUTH"
            if self._starttls_offered():
                verbs += " STARTTLS"
            self._write(
                Reply(214, "2.0.0", ("mailyard SMTP server; commands:", verbs, "End of HELP info"))
            )
            return True
        usage = _HELP_TOPICS.get(argument.upper())
        if usage is None:
            return self._error(504, "5.5.4", "HELP topic unknown", unknown=True)
        self._write(Reply(214, "2.0.0", usage))
        return True

    def _cmd_vrfy(self, argument: str) -> _Step:
        if not argument:
            return self._error(501, "5.5.4", "Syntax: VRFY <address>", unknown=True)
        if self.config.vrfy_enabled and self._may_look_up_users():
            return VrfyReceived(argument)
        # VRFY is mandatory (RFC 5321 4.5.1) and 500/502 would be non-compliant
        # (3.5.3), so a disabled VRFY says 252: cannot verify, will try (7.3).
        # The same before AUTH on submission, where it must not reveal users.
        self._write(
            Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
        )
        return True

    def _cmd_expn(self, argument: str) -> _Step:
        if not argument:
            return self._error(501, "5.5.4", "Syntax: EXPN <list>", unknown=True)
        if self.config.expn_enabled:
            if not self._may_look_up_users():
                return self._error(530, "5.7.0", "Authentication required")  # RFC 4954 6
            return ExpnReceived(argument)
        # EXPN is optional (RFC 5321 3.5.2) and is not advertised when off, so
        # it is "not implemented" here: 502 (3.5.3 names 502 for "not
        # verified"); 252 would claim something about a list we won't expand.
        self._write(Reply(502, "5.5.1", "EXPN not available"))
        return True

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

    def _cmd_auth(self, argument: str) -> _Step:
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

    def _cmd_starttls(self, argument: str) -> _Step:
        if self.tls_active and any(e.upper() == "STARTTLS" for e in self._extras):
            return self._seq("TLS already active")
        if not self._starttls_offered():
            return self._error(502, "5.5.1", "STARTTLS not available", unknown=True)
        if argument:
            return self._error(501, "5.5.4", "Syntax: STARTTLS (no parameters)", unknown=True)
        return StartTLSReceived()

    # ------------------------------------------------------- after answers

    def _answered_helo(self, event: HeloReceived, reply: Reply) -> None:
        if reply.is_positive:
            # RFC 5321 4.1.4: EHLO/HELO mid-session resets like RSET.
            self._reset_transaction()
            self.helo_name = event.name
            self._extended = event.extended
            self._state = State.READY

    def _answered_mail(self, event: MailFromReceived, reply: Reply) -> None:
        if reply.is_positive:
            self._mail = event
            self._state = State.MAIL

    def _answered_rcpt(self, event: RcptToReceived, reply: Reply) -> None:
        if reply.is_positive:  # 250 or 251
            self._rcpts.append(event)
            self._state = State.RCPT

    def _answered_nothing(self, event: Event, reply: Reply) -> None:
        pass

    def _answered_message(self, event: MessageReceived, reply: Reply) -> None:
        # RFC 5321 4.1.1.4: the buffers are cleared whatever the outcome.
        self._reset_transaction()
        self._state = State.READY

    def _answered_auth(self, event: Event, reply: Reply) -> None:
        if reply.code == 334:
            self._state = State.AUTH
            return
        self._state = State.READY
        if reply.is_positive:
            self.authenticated = self._auth_identity

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
        self._state = State.CONNECTED


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
    AuthReceived: _E._answered_auth,
    AuthResponse: _E._answered_auth,
    StartTLSReceived: _E._answered_starttls,
}  # type: ignore[dict-item]


def _sequence_error(text: str) -> Callable[[SMTPServerEngine, str], _Step]:
    def handler(engine: SMTPServerEngine, argument: str) -> _Step:
        return engine._seq(text)

    return handler


def _everywhere(handler: Callable[[SMTPServerEngine, str], _Step]) -> dict[State, Callable]:
    return dict.fromkeys(_COMMAND_STATES, handler)


_C, _R, _M, _T = State.CONNECTED, State.READY, State.MAIL, State.RCPT
_NEED_HELO = _sequence_error("Send HELO/EHLO first")
_NEED_MAIL = _sequence_error("Need MAIL command")
_IN_TRANSACTION = _sequence_error("Not permitted during a mail transaction")

# The state machine: verb -> {state -> handler} (RFC 5321 4.1.4, 4.3.2).
# HELO/EHLO, RSET, NOOP, QUIT, HELP, VRFY, EXPN are valid in every state.
COMMAND_TABLE: dict[str, dict[State, Callable[[SMTPServerEngine, str], _Step]]] = {
    "HELO": _everywhere(_E._cmd_helo),
    "EHLO": _everywhere(_E._cmd_ehlo),
    "MAIL": {
        _C: _NEED_HELO,
        _R: _E._cmd_mail,
        _M: _sequence_error("Sender already specified"),
        _T: _sequence_error("Sender already specified"),
    },
    "RCPT": {_C: _NEED_MAIL, _R: _NEED_MAIL, _M: _E._cmd_rcpt, _T: _E._cmd_rcpt},
    "DATA": {_C: _NEED_MAIL, _R: _NEED_MAIL, _M: _E._data_without_rcpt, _T: _E._cmd_data},
    "RSET": _everywhere(_E._cmd_rset),
    "NOOP": _everywhere(_E._cmd_noop),
    "QUIT": _everywhere(_E._cmd_quit),
    "HELP": _everywhere(_E._cmd_help),
    "VRFY": _everywhere(_E._cmd_vrfy),
    "EXPN": _everywhere(_E._cmd_expn),
    "AUTH": {
        _C: _sequence_error("Send EHLO first"),
        _R: _E._cmd_auth,
        _M: _IN_TRANSACTION,
        _T: _IN_TRANSACTION,
    },
    "STARTTLS": {
        _C: _E._cmd_starttls,
        _R: _E._cmd_starttls,
        _M: _IN_TRANSACTION,
        _T: _IN_TRANSACTION,
    },
}
