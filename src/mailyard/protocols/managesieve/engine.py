"""ManageSieve (RFC 5804), the server side, sans-I/O under the contract of
protocols/contract.py.

The engine reads commands (atoms, quoted strings and literals ``{N+}`` /
``{N}``, RFC 5804 4), answers what needs nothing from outside (CAPABILITY,
NOOP, LOGOUT, bad commands) and hands the rest to the glue as events:
``Authenticate`` / ``SASLResponse`` (the login service), ``StartTLS``, and
``ScriptCommand`` for PUTSCRIPT, CHECKSCRIPT, GETSCRIPT, LISTSCRIPTS,
SETACTIVE, DELETESCRIPT, RENAMESCRIPT and HAVESPACE (the scripts). The glue
answers with ``respond`` (OK / NO with a response code, RFC 5804 1.3),
``sasl_challenge``, ``login_ok`` / ``login_failed`` or ``tls_started``.

Limits: a command line (without its literals) of at most ``max_line``
octets, a literal of at most ``max_literal``; a bigger one ends the session
with BYE (its bytes are not read). Bad commands count against
``max_bad_commands``.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..contract import NEED_DATA, PAUSED, Closed, ProtocolMisuse

__all__ = ["Authenticate", "ManageSieveServer", "SASLResponse", "ScriptCommand", "StartTLS", "quote"]

_ATOM = re.compile(rb"[A-Za-z0-9_.-]+")
_LITERAL = re.compile(rb"\{([0-9]{1,10})(\+?)\}\r\n")

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


def _parse(buf: bytes, max_line: int, max_literal: int) -> tuple[list[Any], int] | None:
    """One command from the start of ``buf``: (tokens, octets used), or None
    when it is not complete. Tokens: ("atom", str), ("string", bytes)."""
    pos = 0
    tokens: list[Any] = []
    plain = 0  # octets outside literals
    n = len(buf)
    while True:
        while pos < n and buf[pos] == 0x20:
            pos += 1
            plain += 1
        if plain > max_line:
            raise _Bad("line too long")
        if pos >= n:
            return None
        c = buf[pos]
        if buf.startswith(b"\r\n", pos):
            return tokens, pos + 2
        if c == 0x0D and pos + 1 >= n:
            return None
        if c == 0x22:  # quoted string
            out = bytearray()
            p = pos + 1
            while True:
                if p >= n:
                    if p - pos > max_line:
                        raise _Bad("line too long")
                    return None
                ch = buf[p]
                if ch == 0x22:
                    break
                if ch in (0x0D, 0x0A):
                    raise _Bad("CR or LF in a quoted string")
                if ch == 0x5C:
                    if p + 1 >= n:
                        return None
                    p += 1
                    ch = buf[p]
                out.append(ch)
                p += 1
            plain += p + 1 - pos
            tokens.append(("string", bytes(out)))
            pos = p + 1
            continue
        if c == 0x7B:  # literal
            m = _LITERAL.match(buf, pos)
            if m is None:
                if b"\r\n" in buf[pos:pos + 16] or n - pos >= 16:
                    raise _Bad("bad literal")
                return None
            size = int(m.group(1))
            if size > max_literal:
                raise _TooBig(f"literal too large (at most {max_literal} octets)")
            start = m.end()
            if n < start + size:
                return None
            tokens.append(("string", buf[start:start + size]))
            pos = start + size
            continue
        m = _ATOM.match(buf, pos)
        if m is None:
            raise _Bad("unexpected character")
        tokens.append(("atom", m.group().decode("ascii")))
        plain += m.end() - pos
        pos = m.end()


class ManageSieveServer:
    def __init__(self, *, capabilities: list[tuple[str, str | None]], sasl_mechanisms: list[str],
                 tls_available: bool, max_line: int = 8192, max_literal: int = 1 << 20,
                 max_bad_commands: int = 20) -> None:
        self.capabilities = capabilities  # besides SASL and STARTTLS, which follow the state
        self.sasl_mechanisms = sasl_mechanisms
        self.tls_available = tls_available
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_bad_commands = max_bad_commands
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
        return bool(self._in)

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif self._closed is None:
            self._in += data

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
            try:
                parsed = _parse(bytes(self._in), self.max_line, self.max_literal)
            except _TooBig as exc:
                self._close("errors", b"BYE " + quote(str(exc)) + b"\r\n")
                return self._closed
            except _Bad as exc:
                # skip to the end of the line
                end = self._in.find(b"\r\n")
                if end < 0:
                    if len(self._in) > self.max_line:
                        self._close("errors", b'BYE "line too long"\r\n')
                        return self._closed
                    return self._eof_or_need()
                del self._in[:end + 2]
                if self._bad(str(exc)):
                    return self._closed
                continue
            if parsed is None:
                return self._eof_or_need()
            tokens, used = parsed
            del self._in[:used]
            self.lines_completed += 1
            event = self._command(tokens)
            if self._closed is not None:
                return self._closed
            if event is not None:
                self._waiting = event
                return event

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
                self._waiting = None
                self._out += b'NO "bad SASL response"\r\n'
                return None
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
        self._answer(Authenticate, SASLResponse)
        self._out += b"NO " + (f"({code}) ".encode() if code else b"") + quote(text) + b"\r\n"
        if close:
            self._close("errors", b'BYE "too many failed logins"\r\n')

    def tls_started(self) -> None:
        """TLS is up: forget what came in the clear (RFC 5804 2.2) and send
        the capabilities again."""
        self._answer(StartTLS)
        self._in.clear()
        self.tls_available = False
        self._write_capabilities()
        self._out += b'OK "TLS negotiation successful"\r\n'
