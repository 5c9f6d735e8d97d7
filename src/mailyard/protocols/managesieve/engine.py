"""ManageSieve (RFC 5804), the server side, sans-I/O under the contract of
protocols/contract.py.

The engine reads commands (atoms, quoted strings and literals ``{N+}`` /
``{N}``, RFC 5804 4), answers what needs nothing from outside (CAPABILITY,
NOOP, LOGOUT, bad commands) and hands the rest to the glue as events:
``Authenticate`` / ``SASLResponse`` / ``BadSASLResponse`` (the login
service), ``StartTLS``, and
``ScriptCommand`` for PUTSCRIPT, CHECKSCRIPT, GETSCRIPT, LISTSCRIPTS,
SETACTIVE, DELETESCRIPT, RENAMESCRIPT and HAVESPACE (the scripts). The glue
answers with ``respond`` (OK / NO with a response code, RFC 5804 1.3),
``sasl_challenge``, ``login_ok`` / ``login_failed`` or ``tls_started``.

Limits: a command line (without its literals' octets) of at most
``max_line`` octets, a literal of at most ``max_literal``, and the whole
command, its line and literal octets together, at most ``command_budget``:
``max_command_unauthenticated`` before login, a script with its command line
after it. A literal over either limit ends the session with BYE before its
octets are read: RFC 5804 literals are non-synchronising, so its octets
follow at once and cannot be told from the next command. A bad command (a
syntax error, a line over ``max_line``) is skipped to the CRLF that ends it,
the octets of literals announced on the way skipped by their count, never
read as commands, and answered NO; it is held to the same budget and limits
as a good one. Input is parsed once: more input resumes where parsing
stopped, and the answers do not depend on how the input is cut. Bad commands
count against ``max_bad_commands``.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..contract import FLUSH, FLUSH_AT, NEED_DATA, PAUSED, Closed, ProtocolMisuse

__all__ = ["Authenticate", "BadSASLResponse", "ManageSieveServer", "SASLResponse", "ScriptCommand", "StartTLS",
           "quote"]

# RFC 5804 4: literal-c2s = "{" number-str ["+"] "}" CRLF; number-str is
# 1*DIGIT, leading zeros allowed (the size is read without them).
_LITERAL = re.compile(rb"\{([0-9]+)(\+?)\}\r\n")
# A literal announced at the end of a line being skipped (up to its CRLF).
_LITERAL_AT_END = re.compile(rb"\{([0-9]+)\+?\}\Z")
# What may still become a literal header at the end of a line being skipped.
_HEADER_START = re.compile(rb"\{[0-9]*\+?\}?\r?\Z")


def _literal_size(digits: bytes) -> int:
    """A literal's announced size; one of more than ten digits (without its
    leading zeros) is over every limit, and is not converted."""
    digits = digits.lstrip(b"0") or b"0"
    return int(digits) if len(digits) <= 10 else 1 << 40

SCRIPT_COMMANDS = {
    # name -> number of string arguments (HAVESPACE: a string and a number)
    "PUTSCRIPT": 2, "CHECKSCRIPT": 1, "GETSCRIPT": 1, "LISTSCRIPTS": 0, "SETACTIVE": 1,
    "DELETESCRIPT": 1, "RENAMESCRIPT": 2, "HAVESPACE": 2,
}


@dataclass(frozen=True, slots=True)
class Authenticate:
    """AUTHENTICATE mechanism [initial-response] (RFC 5804 2.1); the
    response is the base64 wire token, as auth/sasl.py takes it."""

    mechanism: str
    initial_response: bytes | None
    needs_answer = True


@dataclass(frozen=True, slots=True)
class SASLResponse:
    data: bytes  # base64 wire token
    needs_answer = True


@dataclass(frozen=True, slots=True)
class BadSASLResponse:
    """The client answered a challenge with something other than one string
    (RFC 5804 2.1): the exchange ends, a malformed message. The glue settles
    it (the login service counts it, and drops the mechanism) and answers it
    as any end of the exchange, with ``login_failed``."""

    needs_answer = True


@dataclass(frozen=True, slots=True)
class StartTLS:
    needs_answer = True


@dataclass(frozen=True, slots=True)
class ScriptCommand:
    name: str  # upper case, one of SCRIPT_COMMANDS
    args: tuple[Any, ...]  # str (names), bytes (script text) or int (HAVESPACE size)
    needs_answer = True


def quote(text: str) -> bytes:
    """A string as RFC 5804 4 writes it: quoted, or a literal when it holds
    CR, LF or is long."""
    data = text.encode("utf-8")
    if b"\r" in data or b"\n" in data or b"\0" in data or len(data) > 1024:
        return b"{%d}\r\n" % len(data) + data
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class _Bad(Exception):
    pass


class _TooBig(Exception):
    pass


_SPACES = re.compile(rb" *")
_ATOM_CHARS = re.compile(rb"[A-Za-z0-9_.-]*")
# Up to the closing quote. Possessive (``*+``): the alternatives never
# overlap, so there is nothing to backtrack into, and a plain ``*`` of a group
# makes the regex engine keep state per octet matched (about 140 octets each).
_QUOTED_CHARS = re.compile(rb'(?:[^"\\\r\n]|\\[\s\S])*+')
_UNESCAPE = re.compile(rb"\\([\s\S])")

# What holding one token of a command costs besides its octets (a bytes
# object and its list slot): a chain of empty literals is not free.
TOKEN_COST = 64


class _Command:
    """The command being read, from the start of the input buffer: where
    parsing stopped, so that more input resumes there and each octet is
    looked at once (a partial atom or quoted string from where its scan
    stopped, a literal's octets by their count)."""

    __slots__ = ("literal_end", "literal_octets", "pos", "scan", "tokens")

    def __init__(self) -> None:
        self.tokens: list[Any] = []  # ("atom", str) or ("string", bytes)
        self.pos = 0  # octets of the command parsed into tokens
        self.scan = 0  # a partial atom or quoted string is scanned up to here
        self.literal_end = -1  # the end of the literal being read, or -1
        self.literal_octets = 0  # octets inside literals

    def charged(self, octets: int) -> int:
        """The command's cost once it holds ``octets`` octets."""
        return octets + TOKEN_COST * len(self.tokens)

    def parse(self, buf: bytearray, max_line: int, max_literal: int, budget: int) -> int | None:
        """Go on with the command at the start of ``buf``: the octets it
        takes once complete (``tokens`` then hold it), or None when more
        input is needed. Raises _Bad for a command that can be skipped to
        its line end, _TooBig for one whose octets cannot be skipped.

        Line octets (outside literals) are limited to ``max_line``; the whole
        command, line and literal octets and ``TOKEN_COST`` per token, to
        ``budget``, checked before a literal's octets are read."""
        n = len(buf)
        pos = self.pos
        try:
            while True:
                if self.literal_end >= 0:
                    if n < self.literal_end:
                        return None
                    self.tokens.append(("string", bytes(buf[pos:self.literal_end])))
                    pos, self.literal_end = self.literal_end, -1
                pos = _SPACES.match(buf, pos, self._stop(n, max_line, budget)).end()  # type: ignore[union-attr]
                if pos - self.literal_octets > max_line:
                    raise _Bad("line too long")
                if self.charged(pos) > budget:
                    raise _TooBig("command too large")
                if pos >= n:
                    return None
                c = buf[pos]
                if c == 0x0D:
                    if pos + 1 >= n:
                        return None
                    if buf[pos + 1] == 0x0A:
                        return pos + 2
                    raise _Bad("unexpected character")
                if c == 0x22:  # quoted string
                    # never scanned past what the limits allow: a string that
                    # has not ended there is refused, whatever else was read
                    stop = self._stop(n, max_line, budget)
                    end = _QUOTED_CHARS.match(buf, max(pos + 1, self.scan), stop).end()  # type: ignore[union-attr]
                    if end >= stop or (buf[end] == 0x5C and end + 1 >= stop):
                        self.scan = end  # the closing quote has not come yet
                        self._partial(stop, max_line, budget)
                        return None
                    # the checks input cut inside the string would have made
                    self._partial(end, max_line, budget)
                    if buf[end] != 0x22:
                        raise _Bad("CR or LF in a quoted string")
                    self.tokens.append(("string", _UNESCAPE.sub(rb"\1", bytes(buf[pos + 1:end]))))
                    pos, self.scan = end + 1, 0
                    continue
                if c == 0x7B:  # literal
                    m = _LITERAL.match(buf, pos)
                    if m is None:
                        if _HEADER_START.match(buf, pos) is None:
                            raise _Bad("bad literal")
                        if n - self.literal_octets > max_line:
                            raise _Bad("line too long")
                        return None  # a header cut by the read
                    size = _literal_size(m.group(1))
                    if size > max_literal:
                        raise _TooBig(f"literal too large (at most {max_literal} octets)")
                    if self.charged(m.end() + size + TOKEN_COST) > budget:
                        raise _TooBig("command too large")
                    pos = m.end()
                    self.literal_octets += size
                    self.literal_end = pos + size
                    continue
                stop = self._stop(n, max_line, budget)
                end = _ATOM_CHARS.match(buf, max(pos, self.scan), stop).end()  # type: ignore[union-attr]
                if end == pos:
                    raise _Bad("unexpected character")
                if end >= stop:
                    self.scan = end  # the atom may go on
                    self._partial(stop, max_line, budget)
                    return None
                self._partial(end, max_line, budget)
                self.tokens.append(("atom", buf[pos:end].decode("ascii")))
                pos, self.scan = end, 0
        finally:
            self.pos = pos

    def _stop(self, n: int, max_line: int, budget: int) -> int:
        """Where a scan of the token being read stops: the end of the input,
        or one octet past the last the limits allow (``_partial`` refuses a
        token that reaches it). So a read of any size costs a scan of at
        most the budget, and the answer does not depend on the read."""
        allowed = min(max_line + self.literal_octets, budget - TOKEN_COST * len(self.tokens))
        return min(n, max(allowed, 0) + 1)

    def _partial(self, n: int, max_line: int, budget: int) -> None:
        """A token runs up to ``n`` (the end of the input, or where its scan
        stopped): its octets count already. Checked in both cases, so that
        the answer does not depend on where the input was cut."""
        if n - self.literal_octets > max_line:
            raise _Bad("line too long")
        if self.charged(n) > budget:
            raise _TooBig("command too large")


class ManageSieveServer:
    def __init__(self, *, capabilities: list[tuple[str, str | None]], sasl_mechanisms: list[str],
                 tls_available: bool, max_line: int = 8192, max_literal: int = 1 << 20,
                 max_command_unauthenticated: int = 8192, max_bad_commands: int = 20) -> None:
        self.capabilities = capabilities  # besides SASL and STARTTLS, which follow the state
        self.sasl_mechanisms = sasl_mechanisms
        self.tls_available = tls_available
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_command_unauthenticated = max_command_unauthenticated
        self.max_bad_commands = max_bad_commands
        self._cmd = _Command()
        # a bad command being skipped: its cost so far (octets from its start
        # and TOKEN_COST per token parsed), the octets of a literal still to
        # drop, the reason its NO gives
        self._skipped: int | None = None
        self._skip_literal = 0
        self._skip_reason = ""
        self._bad_answer = False  # a skipped line was the answer to a SASL challenge
        self.bad_commands = 0
        self.authenticated = False
        self.lines_completed = 0
        self._in = bytearray()
        self._out = bytearray()
        self._events: deque[Any] = deque()
        self._waiting: Any = None
        self._closed: Closed | None = None
        self._sasl = False
        self._eof = False
        self._write_capabilities()
        self._out += b'OK "mailyard ManageSieve ready"\r\n'

    # --- the contract -----------------------------------------------------------
    @property
    def partial_input(self) -> bool:
        return bool(self._in) or self._skipped is not None

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif self._closed is None:
            self._in += data

    @property
    def pending(self) -> int:
        """Octets queued for the client (what ``data_to_send`` returns)."""
        return len(self._out)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Any:
        if self._closed is not None:
            return self._closed
        if self._waiting is not None:
            return PAUSED
        while True:
            if len(self._out) > FLUSH_AT:
                # the replies to commands answered here (CAPABILITY...) go
                # out before the next command is taken (protocols/contract.py)
                return FLUSH
            if self._skipped is not None and not self._skip_line():
                return self._closed if self._closed is not None else self._eof_or_need()
            if self._bad_answer:
                self._bad_answer = False
                self._waiting = BadSASLResponse()
                return self._waiting
            try:
                used = self._cmd.parse(self._in, self.max_line, self.max_literal, self.command_budget)
            except _TooBig as exc:
                self._close("errors", b"BYE " + quote(self._too_big(str(exc))) + b"\r\n")
                return self._closed
            except _Bad as exc:
                # Skip the rest of the command from where parsing stopped:
                # what comes before (a literal's octets among it) was read
                # as what it is, and is not looked at again.
                cmd, self._cmd = self._cmd, _Command()
                del self._in[:cmd.pos]
                self._skipped, self._skip_literal, self._skip_reason = cmd.charged(cmd.pos), 0, str(exc)
                continue
            if used is None:
                return self._eof_or_need()
            tokens = self._cmd.tokens
            self._cmd = _Command()
            del self._in[:used]
            self.lines_completed += 1
            event = self._command(tokens)
            if self._closed is not None:
                return self._closed
            if event is not None:
                self._waiting = event
                return event

    @property
    def command_budget(self) -> int:
        """Octets one whole command may take (``TOKEN_COST`` per token
        included): a few KB before login (an AUTHENTICATE with its initial
        response, a SASL answer), a script of ``max_literal`` with its
        command line after it."""
        if not self.authenticated:
            return self.max_command_unauthenticated
        return self.max_literal + self.max_line

    def _too_big(self, text: str) -> str:
        if text == "command too large":
            when = "" if self.authenticated else " before login"
            return f"command too large (at most {self.command_budget} octets{when})"
        return text

    def _skip_line(self) -> bool:
        """Drop input up to the CRLF that ends a bad command, then answer NO;
        False while it has not come, or when the session ended. A literal
        announced at a line end (RFC 5804 4) is part of the command: its
        octets are dropped by their count, never read as commands. The
        command is held to the limits of a good one, counted from its start:
        past ``command_budget``, or announcing a literal over
        ``max_literal``, it ends the session with the BYE parsing it would
        have given, whatever the reads."""
        assert self._skipped is not None
        budget = self.command_budget
        while True:
            if self._skip_literal:
                drop = min(self._skip_literal, len(self._in))
                del self._in[:drop]
                self._skip_literal -= drop
                if self._skip_literal:
                    return False
            end = self._in.find(b"\r\n")
            if end < 0:
                held = len(self._in) - (1 if self._in.endswith(b"\r") else 0)
                if self._skipped + held > budget:
                    return self._too_big_skipped("command too large")
                # keep a tail that may be a literal header cut by the read
                brace = self._in.rfind(b"{")
                if brace >= 0 and _HEADER_START.match(self._in, brace):
                    drop = brace
                else:
                    drop = len(self._in) - (1 if self._in.endswith(b"\r") else 0)
                del self._in[:drop]
                self._skipped += drop
                return False
            if self._skipped + end > budget:
                return self._too_big_skipped("command too large")
            m = _LITERAL_AT_END.search(self._in, 0, end)
            size = -1 if m is None else _literal_size(m.group(1))  # read before the buffer changes
            del self._in[:end + 2]
            self._skipped += end + 2
            if size < 0:
                self._skipped = None
                if self._sasl:
                    # the answer to a challenge, and not a string (an
                    # unquoted base64 text, say: RFC 5804 2.1): the exchange
                    # ends, and the glue settles and answers it
                    self._sasl, self._bad_answer = False, True
                    return True
                return not self._bad(self._skip_reason)
            if size > self.max_literal:
                return self._too_big_skipped(f"literal too large (at most {self.max_literal} octets)")
            if self._skipped + size > budget:
                return self._too_big_skipped("command too large")
            self._skipped += size
            self._skip_literal = size

    def _too_big_skipped(self, text: str) -> bool:
        self._close("errors", b"BYE " + quote(self._too_big(text)) + b"\r\n")
        return False

    def _eof_or_need(self) -> Any:
        if self._eof:
            self._closed = Closed("eof")
            return self._closed
        return NEED_DATA

    def _close(self, reason: str, last: bytes = b"") -> None:
        self._out += last
        self._closed = Closed(reason)

    def _bad(self, text: str) -> bool:
        self.bad_commands += 1
        if self.bad_commands > self.max_bad_commands:
            self._close("errors", b'BYE "too many bad commands"\r\n')
            return True
        self._out += b"NO " + quote(text) + b"\r\n"
        return False

    # --- commands ---------------------------------------------------------------
    def _write_capabilities(self) -> None:
        out = self._out
        for name, value in self.capabilities[:1]:
            out += quote(name) + (b" " + quote(value) if value is not None else b"") + b"\r\n"
        out += b'"SASL" ' + quote(" ".join(self.sasl_mechanisms) if not self.authenticated else "") + b"\r\n"
        for name, value in self.capabilities[1:]:
            out += quote(name) + (b" " + quote(value) if value is not None else b"") + b"\r\n"
        if self.tls_available and not self.authenticated:
            out += b'"STARTTLS"\r\n'

    def _command(self, tokens: list[Any]) -> Any:
        if self._sasl:
            # RFC 5804 2.1: the client's answer is a string; "*" cancels
            self._sasl = False
            if len(tokens) != 1 or tokens[0][0] != "string":
                return BadSASLResponse()
            return SASLResponse(tokens[0][1])
        if not tokens or tokens[0][0] != "atom":
            self._bad("expected a command")
            return None
        name = tokens[0][1].upper()
        args = tokens[1:]
        if name == "CAPABILITY" and not args:
            self._write_capabilities()
            self._out += b'OK "capability completed"\r\n'
            return None
        if name == "NOOP" and len(args) <= 1:
            if args and args[0][0] == "string":
                # RFC 5804 2.14: the tag comes back in a TAG response code
                self._out += b"OK (TAG " + quote(args[0][1].decode("utf-8", "replace")) + b') "done"\r\n'
            else:
                self._out += b'OK "done"\r\n'
            return None
        if name == "LOGOUT" and not args:
            self._close("quit", b'OK "logout completed"\r\n')
            return None
        if name == "STARTTLS" and not args:
            if not self.tls_available or self.authenticated:
                self._bad("STARTTLS is not available")
                return None
            self._out += b'OK "begin TLS negotiation now"\r\n'
            return StartTLS()
        if name == "AUTHENTICATE":
            if self.authenticated:
                self._bad("already authenticated")
                return None
            if not 1 <= len(args) <= 2 or any(a[0] != "string" for a in args):
                self._bad("syntax: AUTHENTICATE \"mechanism\" [\"initial response\"]")
                return None
            mech = args[0][1].decode("ascii", "replace").upper()
            if mech not in self.sasl_mechanisms:
                self._out += b'NO "unsupported SASL mechanism"\r\n'
                return None
            return Authenticate(mech, args[1][1] if len(args) == 2 else None)
        if name == "UNAUTHENTICATE" and not args:
            if not self.authenticated:
                self._bad("not authenticated")
                return None
            self.authenticated = False  # RFC 5804 2.15 (glue forgets the account)
            self._out += b'OK "unauthenticated"\r\n'
            return ScriptCommand("UNAUTHENTICATE", ())
        if name in SCRIPT_COMMANDS:
            if not self.authenticated:
                self._bad("authenticate first")
                return None
            want = SCRIPT_COMMANDS[name]
            if len(args) != want:
                self._bad(f"{name} takes {want} argument(s)")
                return None
            values: list[Any] = []
            for i, (kind, value) in enumerate(args):
                if name == "HAVESPACE" and i == 1:
                    if kind != "atom" or not value.isdigit():
                        self._bad("HAVESPACE needs a size")
                        return None
                    values.append(int(value))
                    continue
                if kind != "string":
                    self._bad(f"{name} takes strings")
                    return None
                script_arg = (name == "PUTSCRIPT" and i == 1) or name == "CHECKSCRIPT"
                if script_arg:
                    values.append(value)
                else:
                    try:
                        values.append(value.decode("utf-8"))
                    except UnicodeDecodeError:
                        self._bad("a script name must be UTF-8")
                        return None
            return ScriptCommand(name, tuple(values))
        self._bad(f"unknown command {name}")
        return None

    # --- answers ----------------------------------------------------------------
    def _answer(self, *kinds: type) -> Any:
        if not isinstance(self._waiting, kinds):
            raise ProtocolMisuse(f"no {' or '.join(k.__name__ for k in kinds)} is waiting")
        event, self._waiting = self._waiting, None
        return event

    def respond(self, ok: bool, text: str, code: str | None = None, data: bytes = b"") -> None:
        """Answer a ScriptCommand: ``data`` (lines already formatted) first,
        then ``OK`` or ``NO`` with an optional response code (RFC 5804 1.3)."""
        event = self._answer(ScriptCommand)
        if event.name == "UNAUTHENTICATE":
            return
        self._out += data
        self._out += (b"OK " if ok else b"NO ") + (f"({code}) ".encode() if code else b"") + quote(text) + b"\r\n"

    def sasl_challenge(self, challenge: bytes) -> None:
        """Send a server challenge (the base64 string) and wait for the client's."""
        event = self._answer(Authenticate, SASLResponse)
        self._waiting = None
        del event
        self._sasl = True
        self._out += quote(challenge.decode("ascii")) + b"\r\n"

    def login_ok(self) -> None:
        self._answer(Authenticate, SASLResponse)
        self.authenticated = True
        self._out += b'OK "authenticated"\r\n'

    def login_failed(self, text: str, code: str | None = None, *, close: bool = False) -> None:
        """Refuse the login; ``close``: and end the session (too many failures)."""
        self._answer(Authenticate, SASLResponse, BadSASLResponse)
        self._refuse_login(text, code, close)

    @property
    def awaiting_sasl_response(self) -> bool:
        """True while an AUTHENTICATE exchange waits for the client's next
        string (a challenge was sent and no event waits for an answer)."""
        return self._sasl and self._waiting is None and self._closed is None

    def end_sasl(self, text: str, code: str | None = None, *, close: bool = False) -> None:
        """End the AUTHENTICATE exchange the client has not answered with
        ``NO`` (RFC 5804 2.1), as `login_failed` does: the glue's exchange
        deadline passed. Raises ``ProtocolMisuse`` unless
        `awaiting_sasl_response`."""
        if not self.awaiting_sasl_response:
            raise ProtocolMisuse("no AUTHENTICATE exchange waits for the client")
        self._sasl = False
        self._refuse_login(text, code, close)

    def _refuse_login(self, text: str, code: str | None, close: bool) -> None:
        self._out += b"NO " + (f"({code}) ".encode() if code else b"") + quote(text) + b"\r\n"
        if close:
            self._close("errors", b'BYE "too many failed logins"\r\n')

    def tls_started(self) -> None:
        """TLS is up: forget what came in the clear (RFC 5804 2.2) and send
        the capabilities again."""
        self._answer(StartTLS)
        self._in.clear()
        self._cmd = _Command()
        self._skipped = None
        self._skip_literal = 0
        self.tls_available = False
        self._write_capabilities()
        self._out += b'OK "TLS negotiation successful"\r\n'
