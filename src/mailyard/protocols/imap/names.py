"""Mailbox names: validation and LIST patterns (RFC 9051 5.1, 6.3.9).

The hierarchy delimiter is "/" (store/api.py). Names that would play path
games are refused before the store sees them: empty levels (leading,
trailing or doubled "/"), "." and ".." levels, control characters, and the
LIST wildcards.
"""

from __future__ import annotations

import re

DELIMITER = "/"
MAX_NAME = 512

# A mailbox argument that is a valid astring but not valid modified UTF-7
# (RFC 3501 5.1.3) in a session without UTF-8 names: the parser keeps it as
# this marker followed by the raw text. No mailbox, subscription or pattern
# match can have such a name (NUL is refused below), so SELECT answers
# NO [NONEXISTENT], CREATE NO [CANNOT] and LIST matches nothing: a name is
# a matter of the mailbox set, not a protocol error (RFC 9051 7.1.3 keeps
# BAD for those).
UNDECODABLE = "\x00"


def undecodable(raw: str) -> str:
    """The name a mailbox argument that is not modified UTF-7 stands for."""
    return UNDECODABLE + raw


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a mailbox name, or None if it can."""
    if name.startswith(UNDECODABLE):
        return "mailbox name is not valid modified UTF-7"
    if not name:
        return "empty mailbox name"
    if len(name) > MAX_NAME:
        return "mailbox name too long"
    # RFC 6855 3: no controls (U+0000-U+001F, U+007F-U+009F), no line or
    # paragraph separator (U+2028, U+2029)
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or ch in "\u2028\u2029" for ch in name):
        return "control characters in mailbox name"
    if "*" in name or "%" in name:
        return "wildcards in mailbox name"
    for level in name.split(DELIMITER):
        if level in ("", ".", "..") or level != level.strip():
            return "empty, '.' or '..' level or stray spaces in mailbox name"
    return None


def parents(name: str) -> list[str]:
    """Superior names, outermost first: "a/b/c" -> ["a", "a/b"]."""
    levels = name.split(DELIMITER)
    return [DELIMITER.join(levels[:i]) for i in range(1, len(levels))]


def is_inferior(name: str, of: str) -> bool:
    return name.startswith(of + DELIMITER)


def compile_pattern(reference: str, pattern: str) -> re.Pattern[str]:
    """A regex for reference + pattern (RFC 9051 6.3.9): "*" matches anything,
    "%" anything but the delimiter. INBOX matches case-insensitively."""
    full = reference + pattern
    out = []
    for ch in full:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^" + re.escape(DELIMITER) + "]*")
        else:
            out.append(re.escape(ch))
    body = "".join(out)
    # "inbox" / "InBoX/x" in a pattern address INBOX (RFC 9051 5.1: case-insensitive)
    if full[:5].upper() == "INBOX" and (len(full) == 5 or full[5] in (DELIMITER, "*", "%")):
        body = "INBOX" + "".join(out[5:])
    return re.compile(body + r"\Z", re.DOTALL)


def matches(pattern: re.Pattern[str], name: str) -> bool:
    return pattern.match(name) is not None
