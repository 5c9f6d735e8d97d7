"""The sans-I/O IMAP server engine (model: h11; DESIGN.md "Rules of the house").

It keeps the contract of protocols/contract.py. Bytes go in with
``receive_data`` (``b""``: end of input); ``next_event`` returns the next
thing the glue must do -- a parsed command, an AUTHENTICATE response line,
the end of an IDLE -- or ``NEED_DATA``, ``PAUSED`` (a command is with the
glue), or ``Closed(reason)`` once the session is over. The glue answers
through ``untagged``, ``continuation`` and ``complete``; everything to send
is collected for ``data_to_send``.

The abuse budgets (``AbuseBudgets``) are counted here: consecutive BAD
commands, and failed logins (a LOGIN or AUTHENTICATE completed with NO
[AUTHENTICATIONFAILED] or NO [UNAVAILABLE]); when one is used up the engine
says ``* BYE`` and closes.

Commands are handed out strictly one at a time, in the order the client sent
them (RFC 9051 5.5 allows a server to serialise pipelined commands), so a
pipelined command's responses never interleave with an earlier one's.

The connection state (RFC 9051 section 3) is a table: which states each command
is valid in, and which state a completed command leads to.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..contract import FLUSH, FLUSH_AT, NEED_DATA, PAUSED, AbuseBudgets, Closed, ProtocolMisuse
from . import commands as c
from .framing import Assembled, ContinuationNeeded, Framer, Limits, Rejected
from .parser import ParseError, TagError, parse_command, parse_tag
from .response import Writer, continuation, status_line


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


_NA, _AU, _SE = State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED
_ANY = frozenset({_NA, _AU, _SE})

# RFC 9051 6.1-6.4: the states each command is valid in.
VALID_IN: dict[str, frozenset[State]] = {
    **dict.fromkeys(["CAPABILITY", "NOOP", "LOGOUT", "ID"], _ANY),
    **dict.fromkeys(["STARTTLS", "AUTHENTICATE", "LOGIN"], frozenset({_NA})),
    # RFC 8437 6: command-auth / command-select
    "UNAUTHENTICATE": frozenset({_AU, _SE}),
    # RFC 9051 6.3.1 / RFC 5161 3.1: ENABLE only before a mailbox is selected
    "ENABLE": frozenset({_AU}),
    **dict.fromkeys(
        ["SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE",
         "LIST", "LSUB", "NAMESPACE", "STATUS", "APPEND", "IDLE", "COMPRESS",
         "GETQUOTA", "GETQUOTAROOT", "SETQUOTA"],  # RFC 9208 4.1
        frozenset({_AU, _SE}),
    ),
    **dict.fromkeys(
        ["CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "SORT", "THREAD", "FETCH", "STORE", "COPY",
         "MOVE", "CANCELUPDATE"],  # RFC 5267 section 5: command-select
        frozenset({_SE}),
    ),
}

# (command, result) -> next state. RFC 9051 6.3.2: a failed SELECT leaves no
# mailbox selected; 6.4.1/6.4.2: CLOSE and UNSELECT return to authenticated.
TRANSITIONS: dict[tuple[str, str], State] = {
    ("LOGIN", "OK"): _AU,
    ("AUTHENTICATE", "OK"): _AU,
    ("SELECT", "OK"): _SE,
    ("EXAMINE", "OK"): _SE,
    ("SELECT", "NO"): _AU,
    ("EXAMINE", "NO"): _AU,
    ("CLOSE", "OK"): _AU,
    ("UNSELECT", "OK"): _AU,
    ("UNAUTHENTICATE", "OK"): _NA,  # RFC 8437 5, transition 7
    ("LOGOUT", "OK"): State.LOGOUT,
}

__all__ = [
    "NEED_DATA", "PAUSED", "AbuseBudgets", "AuthResponse", "Closed", "IdleDone", "ImapEngine",
    "ProtocolMisuse", "State",
]

# The commands that log in, and the tagged NO codes that mean a failed login
# (RFC 9051 7.1): wrong credentials, or refused by the login throttle.
_LOGINS = frozenset({"LOGIN", "AUTHENTICATE"})
_LOGIN_FAILED = frozenset({"AUTHENTICATIONFAILED", "UNAVAILABLE"})


@dataclass
class AuthResponse:
    """A client line during AUTHENTICATE (RFC 9051 6.2.2), as sent: base64 or "*"
    (cancel); auth/sasl.py decodes it."""

    tag: str
    line: bytes


@dataclass
class IdleDone:
    """The client ended IDLE with DONE (RFC 2177 3); ``ok`` False: it sent something else."""

    tag: str
    ok: bool = True


def _reply_tag(tag: str | None) -> str:
    """The tag to answer a command the framer refused with: the client's own if
    it is a valid tag (RFC 9051 9: tag = 1*<any ASTRING-CHAR except "+">),
    otherwise "*" -- echoing an invalid tag (e.g. 8-bit bytes or "(" from an
    over-long line) would make the response itself malformed."""
    if tag is None:
        return "*"
    try:
        parse_tag(tag.encode("ascii") + b" ")
    except (TagError, UnicodeEncodeError):
        return "*"
    return tag


class _Mode(enum.Enum):
    COMMAND = 1  # reading commands
    BUSY = 2  # a command is with the glue
    AUTH = 3  # reading SASL response lines
    IDLE = 4  # waiting for DONE


class ImapEngine:
    """One server-side IMAP connection, without I/O."""

    def __init__(self, limits: Limits | None = None, budgets: AbuseBudgets | None = None) -> None:
        self.framer = Framer(limits, admissible=lambda first: self._precheck(first) is None)
        self.state = State.NOT_AUTHENTICATED
        self.writer = Writer()
        # immutable, replaced on change: most sessions enable nothing and
        # share the one empty set
        self.enabled: frozenset[str] = frozenset()
        self.current: c.Command | None = None
        self._mode = _Mode.COMMAND
        # Output as a list of pieces joined once per write: a FETCH body is
        # copied once, and no buffer is grown and shrunk per command.
        self._out: list[bytes] = []
        self.pending = 0  # octets queued in _out
        self.budgets = budgets = budgets or AbuseBudgets()
        self._bad_run = 0  # consecutive BAD commands
        self._max_bad = budgets.max_bad_commands
        self.auth_failures = 0  # failed logins on this connection
        self.input_ended = False  # the client closed its side (``receive_data(b"")``)
        self.closed = False
        self._closed: Closed | None = None

    @property
    def state(self) -> State:
        """The connection state (RFC 9051 3)."""
        return self._state

    @state.setter
    def state(self, value: State) -> None:
        self._state = value
        # the framer's command budgets: a few KB until the client logged in
        self.framer.authenticated = value in (State.AUTHENTICATED, State.SELECTED)

    # --- modes set by ENABLE (RFC 5161) ---------------------------------
    @property
    def utf8(self) -> bool:
        """Mailbox names and strings in UTF-8 (RFC 9051, RFC 6855 3)."""
        return bool(self.enabled & {"IMAP4REV2", "UTF8=ACCEPT"})

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    def forget_enabled(self) -> None:
        """UNAUTHENTICATE: every ENABLEd extension ceases to be enabled
        (RFC 8437 4.1), and names go back to modified UTF-7."""
        self.enabled = frozenset()
        self.writer.utf8 = False

    def enable(self, names: list[str]) -> None:
        """Record newly enabled extensions (the glue decides which are known)."""
        enabled = self.enabled.union(names)
        if "QRESYNC" in enabled:
            enabled |= {"CONDSTORE"}  # RFC 7162 3.2.3: QRESYNC implies CONDSTORE
        self.enabled = enabled
        self.writer.utf8 = self.utf8

    # --- input ------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client; ``b""`` means it closed its side."""
        if data:
            self.framer.feed(data)
        else:
            self.input_ended = True

    def next_event(self) -> object:
        """The next event: a Command, AuthResponse or IdleDone; or NEED_DATA,
        PAUSED (a command is with the glue), FLUSH (the responses queued
        passed FLUSH_AT: the next command waits until they are written) or
        Closed (every time, once over)."""
        while True:
            if self.closed:
                return self._closed or self._close("quit")
            if self._mode is _Mode.BUSY:
                return PAUSED
            if self._mode is _Mode.AUTH:
                return self._auth_line()
            if self._mode is _Mode.IDLE:
                return self._idle_line()
            if self.pending > FLUSH_AT:
                return FLUSH
            ev = self.framer.next()
            if ev is None:
                # the end of input ends the session once every whole command is answered
                return self._close("eof") if self.input_ended else NEED_DATA
            if isinstance(ev, ContinuationNeeded):
                problem = self._precheck(ev.first_line)
                if problem is None:
                    self._put(continuation("Ready for literal data"))
                else:
                    # RFC 9051 2.2.1: reject with BAD instead of "+" so the
                    # client never sends the literal
                    self.framer.abort()
                    self._put(problem)
                    self._count_bad()
                continue
            if isinstance(ev, Rejected):
                self._reject(ev)
                continue
            assert isinstance(ev, Assembled)
            cmd = self._parse(ev)
            if cmd is not None:
                return cmd

    def _reject(self, ev: Rejected) -> None:
        if ev.status == "BYE":
            self.bye(ev.text, ev.code, reason="errors")
            return
        problem = self._precheck(ev.first_line) if ev.first_line else None
        if problem is not None:
            self._put(problem)  # an unknown command is worse than its size
        else:
            self._put(status_line(_reply_tag(ev.tag), ev.status, ev.text, ev.code))
        if ev.fatal:
            self.bye("Too much data; closing connection", reason="errors")
        else:
            self._count_bad()

    def _precheck(self, first: bytes) -> bytes | None:
        """A BAD response if the start of a command is already wrong."""
        try:
            tag, end = parse_tag(first)
        except TagError:
            return status_line("*", "BAD", "Invalid tag")
        words = first[end + 1 :].split(b" ", 2)
        name = words[0].decode("ascii", "replace").upper()
        if name == "UID" and len(words) > 1:
            name = words[1].decode("ascii", "replace").upper()
        if name not in VALID_IN:
            return status_line(tag, "BAD", f'No such command as "{name[:40]}"')
        if self.state not in VALID_IN[name]:
            return status_line(tag, "BAD", f"{name} is not valid in the {self.state.value} state")
        return None

    def _count_bad(self) -> None:
        self._bad_run += 1
        if self._bad_run >= self._max_bad:
            self.bye("Too many invalid commands", reason="errors")

    def _parse(self, ev: Assembled) -> c.Command | None:
        try:
            cmd = parse_command(ev.segments, ev.literals, self.utf8)
        except TagError:
            self._put(status_line("*", "BAD", "Invalid tag"))
            self._count_bad()
            return None
        except ParseError as exc:
            try:
                tag, _ = parse_tag(ev.segments[0])
            except ParseError:
                tag = "*"
            text = str(exc)
            if not text.startswith("No such command"):
                text = f"Syntax error: {text}"
            self._put(status_line(tag, "BAD", text))
            self._count_bad()
            return None
        if self.state not in VALID_IN[cmd.name]:
            self._put(status_line(cmd.tag, "BAD", f"{cmd.name} is not valid in the {self.state.value} state"))
            self._count_bad()
            return None
        self._bad_run = 0
        self.current = cmd
        self._mode = _Mode.BUSY
        return cmd

    def _auth_line(self) -> object:
        line = self.framer.read_line()
        if line is None:
            return NEED_DATA
        assert self.current is not None
        tag = self.current.tag
        self._mode = _Mode.BUSY
        return AuthResponse(tag, line)

    def _idle_line(self) -> object:
        line = self.framer.read_line()
        if line is None:
            return NEED_DATA
        assert self.current is not None
        self._mode = _Mode.BUSY
        # RFC 2177 3: the client ends IDLE with "DONE" (case-insensitive)
        return IdleDone(self.current.tag, line.upper() == b"DONE")

    # --- output -------------------------------------------------------------
    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        self._out = []
        self.pending = 0
        return data

    def _put(self, data: bytes) -> None:
        self._out.append(data)
        self.pending += len(data)

    def greeting(self, text: str, code: str | None = None, preauth: bool = False) -> None:
        """``* OK`` (or ``* PREAUTH``) greeting (RFC 9051 7.1.1, 7.1.4)."""
        if preauth:
            self.state = State.AUTHENTICATED
        self._put(status_line("*", "PREAUTH" if preauth else "OK", text, code))

    def untagged(self, *parts: object) -> None:
        """Queue ``* parts...`` serialised in the connection's mode."""
        self._put(b"* " + self.writer.line(*parts))

    def untagged_status(self, status: str, text: str, code: str | None = None) -> None:
        """``* OK [code] text`` and friends (RFC 9051 7.1)."""
        self._put(status_line("*", status, text, code))

    def raw(self, data: bytes) -> None:
        """Queue bytes the glue formatted itself (must be whole response lines)."""
        self._put(data)

    def continuation(self, text: str | bytes = b"") -> None:
        """``+ text``; for AUTHENTICATE the next client line is a SASL response."""
        self._put(continuation(text))
        if self.current is not None and self.current.name == "AUTHENTICATE":
            self._mode = _Mode.AUTH

    def start_idle(self, text: str = "idling") -> None:
        """Accept IDLE: send ``+ idling`` and wait for DONE (RFC 2177 3)."""
        self._put(continuation(text))
        self._mode = _Mode.IDLE

    def complete(self, status: str, text: str, code: str | None = None) -> None:
        """Finish the current command with a tagged OK/NO/BAD and move state.

        A LOGIN or AUTHENTICATE refused with [AUTHENTICATIONFAILED] or
        [UNAVAILABLE] counts against the failed-login budget; when that is
        used up, ``* BYE`` follows and the session ends. Raises
        ProtocolMisuse if no command is in progress."""
        cmd = self.current
        if cmd is None:
            raise ProtocolMisuse(f"complete({status!r}) with no IMAP command in progress")
        self._put(status_line(cmd.tag, status, text, code))
        nxt = TRANSITIONS.get((cmd.name, status))
        if nxt is not None:
            self.state = nxt
        self.current = None
        if self.state is State.LOGOUT:
            self._close("quit")
        else:
            self._mode = _Mode.COMMAND
        if status == "BAD":
            self._count_bad()
        elif status == "NO" and code in _LOGIN_FAILED and cmd.name in _LOGINS:
            self.auth_failures += 1
            if self.auth_failures >= self.budgets.max_auth_failures:
                self.bye("Too many failed logins", reason="errors")

    def end_selection(self, text: str = "Mailbox closed") -> None:
        """Leave the selected state in the middle of a command that does not
        itself move state (DELETE of the selected mailbox). ``* OK [CLOSED]``
        marks the end of responses about that mailbox (RFC 9051 7.1, as after
        a SELECT that closes one); commands valid only in the selected state
        get BAD from here on."""
        if self.state is State.SELECTED:
            self._put(status_line("*", "OK", text, "CLOSED"))
            self.state = State.AUTHENTICATED

    def bye(self, text: str, code: str | None = None, reason: str = "shutdown") -> None:
        """``* BYE`` and close (RFC 9051 7.1.5); ``reason`` is the ``Closed``
        event's (protocols/contract.py)."""
        if not self.closed:
            self._put(status_line("*", "BYE", text, code))
        self._close(reason)
        self.state = State.LOGOUT

    def _close(self, reason: str) -> Closed:
        """End the session; the first reason given is the one reported."""
        self.closed = True
        if self._closed is None:
            self._closed = Closed(reason)
        return self._closed
