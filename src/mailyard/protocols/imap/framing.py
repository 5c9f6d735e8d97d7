"""Assembling commands from the byte stream: lines and literals (RFC 9051 4.3).

A command is a line; when a line ends in a literal marker -- ``{n}``
(synchronising: the server must answer ``+`` first), ``{n+}`` (non-synchronising,
RFC 7888 LITERAL+) or ``~{n}`` (literal8, RFC 3516) -- n octets follow and then
the rest of the command on a new line. The size is checked against the limit
*before* anything is read or allocated, so ``{10000000000}`` costs nothing.

A command may chain any number of lines and literals, so one literal's limit
bounds nothing: the whole command -- every line (with its CRLF and the
bookkeeping a held segment costs) and every literal -- is charged against one
budget, a few KB before authentication, the configured totals after it. And
before the octets of a command's first literal are read, the engine is asked
whether the command may run at all in the connection's state (``admissible``):
an ``APPEND`` before login is refused before its message is buffered.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

# RFC 9051 9: literal = "{" number64 ["+"] "}" CRLF; a number's digits may
# start with zeros (read without them, ``_literal_size``).
_MARKER = re.compile(rb"(~?)\{(\d+)(\+?)\}\Z")
# What may still become a literal marker at the end of a line being discarded.
_MARKER_START = re.compile(rb"\{\d*\+?\}?\r?\Z")


def _literal_size(digits: bytes) -> int:
    """A literal's announced size; one of more than twenty digits (without
    its leading zeros) is over every limit, and is not converted."""
    digits = digits.lstrip(b"0") or b"0"
    return int(digits) if len(digits) <= 20 else 1 << 70


# What holding one line or literal of a command costs besides its octets (a
# bytes object and its list slot): a chain of empty literals is not free.
SEGMENT_COST = 64

# What ``read_line`` returns for a line over ``max_line`` (no client line holds NUL).
TOO_LONG = b"\0too-long"

# Octets of a discarded line kept to look for a literal marker at its end: the
# longest marker, ``~{`` 20 digits ``+}``, and a CR.
_TAIL_KEEP = 32

# Octets of an over-long line looked at for its tag (RFC 9051 9: the tag is
# the first word; a longer one is refused as invalid anyway).
_TAG_PEEK = 256


@dataclass
class Limits:
    """Abuse budgets (DESIGN.md): line, literal and whole-command sizes.

    A whole command is its lines (CRLF included) and literals, each charged
    ``SEGMENT_COST`` more. Before authentication every command has
    ``max_unauthenticated`` (LOGIN with a literal password, ID and a SASL-IR
    initial response fit in a few KB); after it, ``max_command`` outside
    APPEND and ``max_append_command`` for an APPEND (MULTIAPPEND: all its
    messages), which always admits one message of ``max_append``.

    A line over ``max_line`` is refused once, with its tag, and the rest of
    the command discarded up to ``max_command`` octets -- the rest of the line
    and, where the line ends in a non-synchronising literal, its octets and
    the lines after it (RFC 7888 4); a command longer still ends the
    connection.
    """

    max_line: int = 64 * 1024
    max_literal: int = 64 * 1024  # any literal outside APPEND
    max_append: int = 50 * 1024 * 1024  # one APPEND message literal
    max_command: int = 1024 * 1024  # a whole command outside APPEND
    max_append_command: int = 200 * 1024 * 1024  # a whole APPEND (MULTIAPPEND)
    max_unauthenticated: int = 8 * 1024  # a whole command before authentication

    def command_budget(self, name: str, authenticated: bool) -> int:
        """Octets a whole command named ``name`` may take."""
        if not authenticated:
            return self.max_unauthenticated
        if name == "APPEND":
            return max(self.max_append_command, self.max_append + self.max_line + 4 * SEGMENT_COST)
        return self.max_command


@dataclass
class Assembled:
    """A complete command: text segments with the literals between them."""

    segments: list[bytes]
    literals: list[bytes]


@dataclass
class Rejected:
    """A command refused by the framer before it was complete.

    ``tag`` may be None (no tag could be read). ``fatal`` means the
    connection cannot be re-synchronised and must be closed (a
    non-synchronising literal that is too large: its octets are coming).
    Status ``BYE`` ends the connection with no reply to the command (one was
    given already): a line refused as too long that runs on past
    ``Limits.max_command``.
    """

    tag: str | None
    status: str  # "BAD", "NO" or "BYE"
    code: str | None
    text: str
    fatal: bool = False
    first_line: bytes = b""


@dataclass
class ContinuationNeeded:
    """A synchronising literal was announced within limits: the engine checks the
    command so far and sends ``+`` or rejects it (``Framer.abort``)."""

    first_line: bytes


@dataclass
class _Partial:
    segments: list[bytes] = field(default_factory=list)
    literals: list[bytes] = field(default_factory=list)
    total: int = 0  # octets charged so far (lines, literals, SEGMENT_COST each)
    admitted: bool = False  # the engine found the command admissible (first literal)
    literal_left: int = 0
    literal_buf: bytearray = field(default_factory=bytearray)


def _tag_and_name(first: bytes) -> tuple[str | None, str]:
    parts = first.split(b" ", 3)
    tag = parts[0].decode("ascii", "replace") if parts and parts[0] else None
    name = parts[1].upper().decode("ascii", "replace") if len(parts) > 1 else ""
    if name == "UID" and len(parts) > 2:
        name = parts[2].upper().decode("ascii", "replace")
    return tag, name


class Framer:
    """Cuts the input stream into commands; pure, no I/O.

    ``admissible(first_line)`` (set by the engine) tells whether a command may
    run in the connection's state; it is asked before the octets of the
    command's first literal are read. ``authenticated`` selects the budgets.
    """

    def __init__(
        self, limits: Limits | None = None, admissible: Callable[[bytes], bool] | None = None
    ) -> None:
        self.limits = limits or Limits()
        self.admissible = admissible
        self.authenticated = False
        self.buffer = bytearray()
        self._cmd: _Partial | None = None
        self._skip_line = False  # discarding the rest of an over-long line
        self._skipped = 0  # octets of the refused command discarded so far
        self._skip_tail = b""  # the last octets of the line being discarded
        self._skip_literal = 0  # octets of a refused command's literal still to discard
        # Commands (and raw lines) completed or refused so far: the glue's
        # command deadline restarts only when this changes (net/listener.py).
        self.completed = 0

    @property
    def partial(self) -> bool:
        """True while an incomplete command (line or literal) is held."""
        return bool(self.buffer) or self._cmd is not None or self._skip_line or bool(self._skip_literal)

    def feed(self, data: bytes) -> None:
        if self.buffer:
            self.buffer += data
        else:
            # A fresh buffer rather than the emptied one: a buffer that once
            # held a big literal is mmap()ed by malloc, and growing and
            # shrinking it again costs an mremap() per command.
            self.buffer = bytearray(data)

    @property
    def in_literal(self) -> bool:
        return self._cmd is not None and self._cmd.literal_left > 0

    @property
    def mid_command(self) -> bool:
        return self._cmd is not None

    def abort(self) -> None:
        """Drop the command being assembled; its synchronising literal was
        refused, so the client will not send the octets (RFC 9051 2.2.1)."""
        self._cmd = None
        self.completed += 1

    @property
    def max_line(self) -> int:
        """The longest line now: before authentication no line may exceed a
        whole command's budget."""
        if self.authenticated:
            return self.limits.max_line
        return min(self.limits.max_line, self.limits.max_unauthenticated)

    def read_line(self) -> bytes | None:
        """One raw line (without CRLF), for AUTHENTICATE and IDLE; None: need more.

        A line over ``max_line`` is returned as ``b"\\0too-long"`` once, when
        its first ``max_line`` octets are in; the rest of it is discarded."""
        while True:
            idx = self.buffer.find(b"\n")
            if idx < 0:
                if self._skip_line:
                    self._discard()
                elif len(self.buffer) > self.max_line:
                    self._start_skip()
                    self.completed += 1
                    return TOO_LONG
                return None
            line = bytes(self.buffer[:idx])
            del self.buffer[: idx + 1]
            if self._skip_line:
                self._skip_line = False
                continue
            self.completed += 1
            if line.endswith(b"\r"):
                line = line[:-1]
            return TOO_LONG if len(line) > self.max_line else line

    def _start_skip(self) -> None:
        """Discard the rest of the over-long line whose start is in the buffer."""
        self._skip_line = True
        self._skipped = 0
        self._skip_tail = b""
        self._discard()

    def _discard(self) -> None:
        self._skipped += len(self.buffer)
        joined = self._skip_tail + bytes(self.buffer)
        self.buffer.clear()
        brace = joined.rfind(b"{")
        if brace >= 0 and len(joined) - brace > _TAIL_KEEP and _MARKER_START.match(joined, brace):
            # a marker whose digits run on past the usual tail (leading
            # zeros) is kept whole; the skip budget bounds it
            self._skip_tail = joined[max(0, brace - 1):]
        else:
            self._skip_tail = joined[-_TAIL_KEEP:]

    def _skip_refused_literal(self, line: bytes) -> bool:
        """Arrange to discard the literal a refused line announces; False when
        that would take the refused command past ``max_command``.

        RFC 7888 4: a non-synchronising literal's octets follow whether or not
        the command is refused, and must be read and discarded (or the
        connection closed) -- run as commands they would be the client's data
        obeyed as its orders. A synchronising literal is never sent: the
        client waits for a "+" that does not come (RFC 9051 7.5)."""
        m = _MARKER.search(line)
        if m is None or not m.group(3):
            return True
        size = _literal_size(m.group(2))
        self._skipped += size
        if self._skipped > self.limits.max_command:
            return False
        self._skip_literal = size
        self._skip_tail = b""
        if size == 0:
            self._skip_line = True  # the command goes on after its literal
        return True

    def next(self) -> Assembled | Rejected | ContinuationNeeded | None:
        """The next framing event, or None when more input is needed."""
        event = self._next()
        if isinstance(event, Assembled | Rejected):
            self.completed += 1
        return event

    def _next(self) -> Assembled | Rejected | ContinuationNeeded | None:
        while True:
            if self._skip_literal:
                take = min(self._skip_literal, len(self.buffer))
                if take == 0:
                    return None
                del self.buffer[:take]
                self._skip_literal -= take
                if self._skip_literal:
                    return None
                # the refused command goes on after its literal: discard that too
                self._skip_line = True
                continue
            cmd = self._cmd
            if cmd is not None and cmd.literal_left:
                take = min(cmd.literal_left, len(self.buffer))
                if take == 0:
                    return None
                cmd.literal_buf += self.buffer[:take]
                del self.buffer[:take]
                cmd.literal_left -= take
                if cmd.literal_left:
                    return None
                cmd.literals.append(bytes(cmd.literal_buf))
                cmd.literal_buf = bytearray()
                continue
            idx = self.buffer.find(b"\n")
            if idx < 0:
                if self._skip_line:
                    # the rest of a line already refused: no second reply
                    self._discard()
                    if self._skipped > self.limits.max_command:
                        # more than a whole command's worth of a line already
                        # refused: reading on costs time for nothing
                        self._skip_line = False
                        return Rejected(None, "BYE", None, "Line too long; closing connection", fatal=True)
                    return None
                if len(self.buffer) > self.max_line:
                    # RFC 9051 does not bound lines; we do (DESIGN.md abuse
                    # budgets). The tag is at the start of the buffer (or of
                    # the command's first line), so the refusal is tagged
                    # (RFC 9051 7.1.3: untagged BAD only when no tag is known).
                    first = self._cmd.segments[0] if self._cmd else bytes(self.buffer[:_TAG_PEEK])
                    tag = _tag_and_name(first)[0] if b" " in first else None
                    self._cmd = None
                    self._start_skip()
                    return Rejected(tag, "BAD", "TOOBIG", "Line too long")
                return None
            line = bytes(self.buffer[:idx])
            del self.buffer[: idx + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if self._skip_line:
                self._skip_line = False
                self._skipped += len(line)
                tail = self._skip_tail + line
                if not self._skip_refused_literal(tail[:-1] if tail.endswith(b"\r") else tail):
                    # the refusal was answered when the line passed max_line
                    return Rejected(None, "BYE", None, "Line too long; closing connection", fatal=True)
                continue
            if len(line) > self.max_line:
                tag = _tag_and_name(self._cmd.segments[0] if self._cmd else line)[0]
                self._cmd = None
                self._skipped = len(line)
                if not self._skip_refused_literal(line):
                    return Rejected(tag, "BAD", "TOOBIG", "Line too long", fatal=True)
                return Rejected(tag, "BAD", "TOOBIG", "Line too long")
            if cmd is None:
                if not line:
                    continue  # RFC 9051 is strict, but empty lines harm nobody
                cmd = self._cmd = _Partial()
            cmd.segments.append(line)
            cmd.total += len(line) + 2 + SEGMENT_COST
            first = cmd.segments[0]
            tag, name = _tag_and_name(first)
            budget = self.limits.command_budget(name, self.authenticated)
            m = _MARKER.search(line)
            if m is None:
                self._cmd = None
                if cmd.total > budget:
                    return Rejected(tag, "BAD", "TOOBIG", "Command too large", first_line=first)
                return Assembled(cmd.segments, cmd.literals)
            size = _literal_size(m.group(2))
            sync = not m.group(3)
            if not sync and not cmd.admitted:
                # The octets follow at once: a command that may not run in this
                # state (APPEND before login) is refused before they are read.
                if self.admissible is not None and not self.admissible(first):
                    self._cmd = None
                    return Rejected(tag, "BAD", None, "Command not valid now", fatal=True, first_line=first)
                cmd.admitted = True
            limit = self.limits.max_append if name == "APPEND" else self.limits.max_literal
            too_big = size > limit
            if too_big or cmd.total + size + SEGMENT_COST > budget:
                self._cmd = None
                if sync:
                    # RFC 9051 7.6 / 2.2.1: refuse before the client sends octets
                    if too_big and name == "APPEND":
                        return Rejected(tag, "NO", "TOOBIG", "Message too large", first_line=first)
                    if too_big:
                        return Rejected(tag, "BAD", None, "Literal too large", first_line=first)
                    return Rejected(tag, "BAD", "TOOBIG", "Command too large", first_line=first)
                # RFC 7888 4: a refused non-synchronising literal's octets arrive
                # regardless, and the server must then either read and discard
                # them or close the connection. Reading a client-chosen amount
                # costs time, and its announced size cannot be trusted to find
                # the next command, so the connection ends (BAD, then BYE).
                text = "Non-synchronizing literal too large" if too_big else "Command too large"
                return Rejected(tag, "BAD", "TOOBIG", text, fatal=True, first_line=first)
            cmd.total += size + SEGMENT_COST
            cmd.literal_left = size
            if size == 0:
                cmd.literals.append(b"")
            if sync:
                return ContinuationNeeded(first)
