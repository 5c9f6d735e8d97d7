"""The Sieve lexer (RFC 5228 8.1): the script's text into tokens that know
their line and column.

Line ends may be CRLF (as the RFC writes them) or a bare LF (as scripts are
edited on Unix); both end comments and ``text:`` lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SieveError

# Token kinds
IDENT = "identifier"
TAG = "tag"
NUMBER = "number"
STRING = "string"
PUNCT = "punct"
EOF = "end of script"

_QUANTIFIER = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"([0-9]+)([KkMmGg]?)")
_SPACE = re.compile(r"[ \t\r\n]+")
# RFC 5228 8.1: "text:" *(SP / HTAB) (hash-comment / CRLF)
_TEXT_START = re.compile(r"text:[ \t]*(#[^\n]*)?\r?\n")
MAX_NUMBER = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    value: str | int
    line: int
    column: int


def tokenize(text: str) -> list[Token]:
    """Every token of ``text``, ending with an EOF token; SieveError names
    the place of the first thing that is no token."""
    tokens: list[Token] = []
    pos = 0
    line = 1
    line_start = 0
    n = len(text)

    def col(p: int) -> int:
        return p - line_start + 1

    while pos < n:
        ch = text[pos]
        m = _SPACE.match(text, pos)
        if m:
            chunk = m.group()
            if "\n" in chunk:
                line += chunk.count("\n")
                line_start = pos + chunk.rindex("\n") + 1
            pos = m.end()
            continue
        if ch == "#":  # hash-comment to the end of the line
            end = text.find("\n", pos)
            pos = n if end < 0 else end
            continue
        if text.startswith("/*", pos):  # bracket-comment, no nesting
            end = text.find("*/", pos + 2)
            if end < 0:
                raise SieveError("unterminated comment", line, col(pos))
            chunk = text[pos:end]
            if "\n" in chunk:
                line += chunk.count("\n")
                line_start = pos + chunk.rindex("\n") + 1
            pos = end + 2
            continue
        start_line, start_col = line, col(pos)
        if ch == '"':
            out: list[str] = []
            p = pos + 1
            while True:
                if p >= n:
                    raise SieveError("unterminated string", start_line, start_col)
                c = text[p]
                if c == '"':
                    break
                if c == "\\" and p + 1 < n:
                    # RFC 5228 2.4.2: \" and \\ are the escapes; a backslash
                    # before any other character is dropped
                    p += 1
                    c = text[p]
                if c == "\n":
                    line += 1
                    line_start = p + 1
                out.append(c)
                p += 1
            tokens.append(Token(STRING, "".join(out).replace("\r\n", "\n").replace("\n", "\r\n"),
                                start_line, start_col))
            pos = p + 1
            continue
        m = _TEXT_START.match(text, pos)
        if m:
            p = m.end()
            line += 1
            line_start = p
            lines: list[str] = []
            while True:
                if p >= n:
                    raise SieveError("unterminated text: block (a line with a single '.' ends it)",
                                     start_line, start_col)
                end = text.find("\n", p)
                raw = text[p:] if end < 0 else text[p:end]
                raw = raw.removesuffix("\r")
                p = n if end < 0 else end + 1
                line += 1
                line_start = p
                if raw == ".":
                    break
                if raw.startswith(".."):  # RFC 5228 2.4.2: dot-stuffing
                    raw = raw[1:]
                lines.append(raw + "\r\n")
            tokens.append(Token(STRING, "".join(lines), start_line, start_col))
            pos = p
            continue
        if ch == ":":
            m = _IDENT.match(text, pos + 1)
            if not m:
                raise SieveError("':' must start a tag such as :is", start_line, start_col)
            tokens.append(Token(TAG, ":" + m.group().lower(), start_line, start_col))
            pos = m.end()
            continue
        if "0" <= ch <= "9":
            m = _NUMBER.match(text, pos)
            assert m
            value = int(m.group(1)) * _QUANTIFIER.get(m.group(2).upper(), 1) if m.group(2) else int(m.group(1))
            if value > MAX_NUMBER:
                raise SieveError("number too large", start_line, start_col)
            tokens.append(Token(NUMBER, value, start_line, start_col))
            pos = m.end()
            continue
        m = _IDENT.match(text, pos)
        if m:
            tokens.append(Token(IDENT, m.group().lower(), start_line, start_col))
            pos = m.end()
            continue
        if ch in "[](),;{}":
            tokens.append(Token(PUNCT, ch, start_line, start_col))
            pos += 1
            continue
        raise SieveError(f"unexpected character {ch!r}", start_line, start_col)
    tokens.append(Token(EOF, "", line, col(pos)))
    return tokens
