"""Token reader over one assembled command (RFC 9051 section 4 data formats).

The framer (framing.py) hands over a command as text *segments* and the
*literals* between them: segment i ends with a literal marker ``{n}``,
``{n+}`` or ``~{n}`` whose octets are literals[i]. The reader walks the
segments, and where a string is expected at a marker it returns the literal.
Every failure raises ParseError, which the engine turns into a tagged BAD.
"""

from __future__ import annotations

import re

# RFC 9051 9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards /
#   quoted-specials / resp-specials
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0x00, 0x20)) | {0x7F}
_ATOM_CHARS = bytes(c for c in range(0x01, 0x80) if c not in _ATOM_SPECIALS)
# 8-bit octets are accepted unquoted in astrings as UTF-8 (RFC 6855 3 lets
# UTF8=ACCEPT clients send them; being liberal here harms nobody).
_UTF8_OCTETS = bytes(range(0x80, 0x100))
_ASTRING_CHARS = _ATOM_CHARS + b"]" + _UTF8_OCTETS
_LIST_CHARS = _ATOM_CHARS + b"]%*" + _UTF8_OCTETS

_LITERAL_AT_END = re.compile(rb"~?\{(\d+)\+?\}\Z")  # leading zeros allowed (RFC 9051 9 number)


class ParseError(Exception):
    """Syntax error in a command; the text goes into the BAD response."""


class Reader:
    """Cursor over the segments and literals of one command."""

    def __init__(self, segments: list[bytes], literals: list[bytes]) -> None:
        if len(literals) != len(segments) - 1:
            raise ValueError("one literal between each pair of segments")
        self.segments = segments
        self.literals = literals
        self.index = 0
        self.buf = segments[0]
        self.pos = 0

    # --- low level -------------------------------------------------------
    def at_end(self) -> bool:
        return self.index == len(self.segments) - 1 and self.pos >= len(self.buf)

    def peek(self) -> int | None:
        """The next octet, or None at the end of a segment."""
        return self.buf[self.pos] if self.pos < len(self.buf) else None

    def peek_upper(self, n: int) -> bytes:
        return self.buf[self.pos : self.pos + n].upper()

    def expect(self, token: bytes) -> None:
        if self.buf[self.pos : self.pos + len(token)].upper() != token.upper():
            raise ParseError(f"expected {token.decode()!r}")
        self.pos += len(token)

    def maybe(self, token: bytes) -> bool:
        if self.buf[self.pos : self.pos + len(token)].upper() == token.upper():
            self.pos += len(token)
            return True
        return False

    def sp(self) -> None:
        # RFC 9051 9 note 2: exactly one SP, never other whitespace.
        if self.peek() != 0x20:
            raise ParseError("expected SP")
        self.pos += 1

    def end(self) -> None:
        if not self.at_end():
            raise ParseError("unexpected text after command")

    def _take(self, allowed: bytes) -> bytes:
        start = self.pos
        buf = self.buf
        n = len(buf)
        while self.pos < n and buf[self.pos] in allowed:
            self.pos += 1
        return buf[start : self.pos]

    # --- data formats ----------------------------------------------------
    def atom(self) -> str:
        text = self._take(_ATOM_CHARS)
        if not text:
            raise ParseError("expected atom")
        return text.decode("ascii")

    def number(self) -> int:
        """number = 1*DIGIT, up to 63 bits (RFC 9051 4.2, number64)."""
        start = self.pos
        while self.pos < len(self.buf) and 0x30 <= self.buf[self.pos] <= 0x39:
            self.pos += 1
        if self.pos == start or self.pos - start > 19:
            raise ParseError("expected number")
        value = int(self.buf[start : self.pos])
        if value >= 1 << 63:
            raise ParseError("number too large")
        return value

    def nz_number(self) -> int:
        value = self.number()
        if value == 0:
            raise ParseError("expected non-zero number")
        if value > 0xFFFFFFFF:
            raise ParseError("number out of range")
        return value

    def _literal(self) -> bytes:
        m = _LITERAL_AT_END.match(self.buf, self.pos)
        if m is None or self.index >= len(self.literals):
            raise ParseError("bad literal")
        data = self.literals[self.index]
        self.index += 1
        self.buf = self.segments[self.index]
        self.pos = 0
        return data

    def at_literal8(self) -> bool:
        return self.buf[self.pos : self.pos + 2] == b"~{"

    def literal_any(self) -> tuple[bytes, bool]:
        """A literal or literal8; returns (octets, is_literal8)."""
        is8 = self.at_literal8()
        if self.peek() != 0x7B and not is8:
            raise ParseError("expected literal")
        return self._literal(), is8

    def _quoted(self) -> bytes:
        self.pos += 1  # DQUOTE
        out = bytearray()
        buf = self.buf
        while True:
            if self.pos >= len(buf):
                raise ParseError("unterminated quoted string")
            c = buf[self.pos]
            self.pos += 1
            if c == 0x22:
                return bytes(out)
            if c == 0x5C:
                if self.pos >= len(buf) or buf[self.pos] not in b'"\\':
                    raise ParseError("bad escape in quoted string")
                c = buf[self.pos]
                self.pos += 1
            elif c in (0x00, 0x0D, 0x0A):
                raise ParseError("bad character in quoted string")
            out.append(c)

    def string_bytes(self) -> bytes:
        c = self.peek()
        if c == 0x22:
            return self._quoted()
        if c == 0x7B:
            data = self._literal()
            if b"\0" in data:
                raise ParseError("NUL in literal")
            return data
        raise ParseError("expected string")

    def astring_bytes(self) -> bytes:
        c = self.peek()
        if c in (0x22, 0x7B):
            return self.string_bytes()
        text = self._take(_ASTRING_CHARS)
        if not text:
            raise ParseError("expected astring")
        return text

    def list_mailbox_bytes(self) -> bytes:
        """list-mailbox = 1*list-char / string (wildcards allowed unquoted)."""
        c = self.peek()
        if c in (0x22, 0x7B):
            return self.string_bytes()
        text = self._take(_LIST_CHARS)
        if not text:
            raise ParseError("expected mailbox pattern")
        return text

    @staticmethod
    def text(data: bytes) -> str:
        """Decode UTF-8 (RFC 9051 allows UTF-8 in strings); invalid -> BAD."""
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError("invalid UTF-8") from exc

    def string(self) -> str:
        return self.text(self.string_bytes())

    def astring(self) -> str:
        return self.text(self.astring_bytes())

    def nstring(self) -> str | None:
        if self.peek_upper(3) == b"NIL" and self._nil_follows():
            self.pos += 3
            return None
        return self.string()

    def _nil_follows(self) -> bool:
        nxt = self.buf[self.pos + 3 : self.pos + 4]
        return not nxt or nxt in (b" ", b")")

    def open(self) -> None:
        if self.peek() != 0x28:
            raise ParseError("expected (")
        self.pos += 1

    def close(self) -> bool:
        """Consume ")" if present."""
        if self.peek() == 0x29:
            self.pos += 1
            return True
        return False
