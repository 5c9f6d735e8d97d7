"""Mailbox names: validation and LIST patterns (RFC 9051 5.1, 6.3.9).

The hierarchy delimiter is "/" (store/api.py). Names that would play path
games are refused before the store sees them: empty levels (leading,
trailing or doubled "/"), "." and ".." levels, control characters, and the
LIST wildcards.
"""

from __future__ import annotations

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


class Pattern:
    """A LIST pattern (RFC 9051 6.3.9), matched in time linear in the name's
    length whatever the pattern: "*" matches anything, "%" anything but the
    delimiter.

    A backtracking regex takes time exponential in the number of wildcards
    ("*a*a*a*...Z" against a long name of a's), and any user may send the
    pattern and create the name. Here the pattern is an automaton whose
    states (how many of its tokens are matched) are the bits of an integer,
    all advanced together for each character of the name (the shift-and
    method): a few integer operations per character."""

    __slots__ = ("_accept", "_literals", "_percent", "_star", "_start", "_wild", "_fixed")

    def __init__(self, tokens: list[str]) -> None:
        # tokens: "*", "%" or one literal character each, no two wildcards in a row
        literals: dict[str, int] = {}
        star = percent = 0
        for i, tok in enumerate(tokens):
            bit = 1 << i
            if tok == "*":
                star |= bit
            elif tok == "%":
                percent |= bit
            else:
                literals[tok] = literals.get(tok, 0) | bit
        self._literals = literals
        self._star = star
        self._percent = percent
        self._wild = star | percent
        self._accept = 1 << len(tokens)
        self._fixed = len(tokens) - bin(self._wild).count("1")  # characters a match must have
        self._start = self._closed(1)

    def _closed(self, states: int) -> int:
        # a wildcard matches the empty string too: its state also stands
        # for the next one (one step suffices, wildcards never follow each other)
        return states | ((states & self._wild) << 1)

    def match(self, name: str) -> bool:
        if len(name) < self._fixed:
            return False
        states = self._start
        literals, star, percent = self._literals, self._star, self._percent
        for ch in name:
            nxt = ((states & literals.get(ch, 0)) << 1) | (states & star)
            if ch != DELIMITER:
                nxt |= states & percent
            if not nxt:
                return False
            states = self._closed(nxt)
        return bool(states & self._accept)


def compile_pattern(reference: str, pattern: str) -> Pattern:
    """The matcher of reference + pattern (RFC 9051 6.3.9). INBOX matches
    case-insensitively (RFC 9051 5.1)."""
    full = reference + pattern
    tokens: list[str] = []
    for ch in full:
        if ch in "*%" and tokens and tokens[-1] in "*%":
            # "**", "%*", "*%": one "*"; "%%": one "%" (the same names)
            tokens[-1] = "*" if "*" in (ch, tokens[-1]) else "%"
        else:
            tokens.append(ch)
    # "inbox" / "InBoX/x" in a pattern address INBOX
    if full[:5].upper() == "INBOX" and (len(full) == 5 or full[5] in (DELIMITER, "*", "%")):
        tokens[:5] = list("INBOX")
    return Pattern(tokens)


def matches(pattern: Pattern, name: str) -> bool:
    return pattern.match(name)
