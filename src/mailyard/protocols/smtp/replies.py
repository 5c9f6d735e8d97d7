"""SMTP replies: the ``Reply`` value and its wire format.

A reply is a three-digit code, an optional RFC 3463 enhanced status code and
one or more text lines. The wire form is fixed by RFC 5321 4.2: every line
starts with the code; all lines but the last have ``-`` after the code, the
last has a space (4.2.1, multi-line replies).

Enhanced status codes are written only when the session negotiated
ENHANCEDSTATUSCODES, i.e. after EHLO (RFC 2034 section 3: "the status code
... MUST be ... in all 2xx, 4xx and 5xx responses" once advertised; HELO
sessions never saw the keyword, so they get plain replies). Intermediate
replies (334, 354) and the 220 greeting carry no enhanced code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Reply", "format_reply"]


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: ``Reply(250, "2.1.0", "Sender OK")``.

    ``lines`` may be given as one string or a sequence of strings; it is
    normalised to a tuple. Line breaks inside a text line are replaced by
    spaces so glue-supplied text can never forge an extra reply line.
    """

    code: int
    enhanced: str | None = None
    lines: tuple[str, ...] | str = ("",)

    def __post_init__(self) -> None:
        lines = self.lines
        if isinstance(lines, str):
            lines = (lines,)
        else:
            lines = tuple(lines) or ("",)
        lines = tuple(
            line.replace("\r", " ").replace("\n", " ") if ("\r" in line or "\n" in line) else line
            for line in lines
        )
        object.__setattr__(self, "lines", lines)
        if not 200 <= self.code <= 599:
            raise ValueError(f"SMTP reply code out of range: {self.code}")

    @property
    def is_positive(self) -> bool:
        """2xx: the command succeeded (RFC 5321 4.2.1)."""
        return 200 <= self.code < 300

    @property
    def is_error(self) -> bool:
        """4xx or 5xx (RFC 5321 4.2.1)."""
        return self.code >= 400

    def to_bytes(self, enhanced_codes: bool) -> bytes:
        """Render the reply; ``enhanced_codes`` says whether ENHANCEDSTATUSCODES is on."""
        lines = self.lines
        assert isinstance(lines, tuple)
        return _format_cached(self.code, self.enhanced if enhanced_codes else None, lines)


@lru_cache(maxsize=512)
def _format_cached(code: int, enhanced: str | None, lines: tuple[str, ...]) -> bytes:
    # Most replies are a handful of constants; formatting them once is cheaper.
    return format_reply(code, enhanced, lines)


def format_reply(code: int, enhanced: str | None, lines: Sequence[str]) -> bytes:
    """Format a (possibly multi-line) reply per RFC 5321 4.2.1.

    The enhanced code is only prefixed for 2xx/4xx/5xx (RFC 2034 section 3).
    Text is encoded as UTF-8: RFC 6531 lets SMTPUTF8 servers send UTF-8 text,
    and pure-ASCII text is unchanged by it.
    """
    prefix = f"{enhanced} " if enhanced and code // 100 in (2, 4, 5) else ""
    last = len(lines) - 1
    out = []
    for i, text in enumerate(lines):
        sep = " " if i == last else "-"
        out.append(f"{code}{sep}{prefix}{text}\r\n")
    return "".join(out).encode("utf-8", "replace")
