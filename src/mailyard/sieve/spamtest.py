"""This server's spam verdict as the ``spamtest`` test reads it (RFC 5235):
the verdict on one account's copy, and the levels (0..10, and 0..100 for
``:percent``) of a verdict or of a trusted X-Spam-* header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class SpamVerdict:
    """This server's spam verdict on one account's copy: the ``score``,
    the account's threshold ``required``, and whether the copy was judged
    spam (True / False; None: only the score is known)."""

    score: float
    required: float = 5.0
    spam: bool | None = None

    def levels(self) -> tuple[int, int]:
        """(spamtest 0..10, spamtest :percent 0..100): see ``spam_levels``."""
        return verdict_levels(self.spam, self.score, self.required)


_SCORE = re.compile(r"\bscore=(-?[0-9]+(?:\.[0-9]+)?)", re.IGNORECASE)
_REQUIRED = re.compile(r"\brequired=(-?[0-9]+(?:\.[0-9]+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"\s*(-?[0-9]+(?:\.[0-9]+)?)")


def spam_levels(status: str | None, score: str | None, required: float = 5.0) -> tuple[int, int]:
    """A spam verdict header as written at delivery (SpamAssassin's
    ``X-Spam-Status: Yes, score=S required=R tests=...``, or only
    ``X-Spam-Score: S``) as the values of RFC 5235's tests; ``spamtest``
    itself maps the delivery's ``SpamVerdict`` the same way, not a header.

    ``spamtest`` (RFC 5235 3.1): 0 when no verdict header is there (not
    tested); else 1 + floor(5 * S / R) kept within 1..10, so a score of 0
    or less is 1 (clear), the threshold R is 6 and twice the threshold or
    more is 10 (certainly spam); a "Yes" verdict is at least 6 and a "No"
    at most 5 whatever the numbers say.
    ``spamtest :percent`` (RFC 5235 3.2): round(50 * S / R) within 0..100,
    so the threshold is 50 % and twice it 100 %; no verdict is 0.
    R is the header's ``required=``, else ``required``."""
    verdict, s, r = _parse_verdict(status, score, required)
    return verdict_levels(verdict, s, r)


def _parse_verdict(status: str | None, score: str | None, required: float) -> tuple[bool | None, float | None, float]:
    """(Yes / No / neither, the score if any, the threshold) of the header forms ``spam_levels`` reads."""
    verdict: bool | None = None
    s: float | None = None
    r = required
    if status is not None:
        text = " ".join(status.split())
        head = text.split(",", 1)[0].strip().lower()
        verdict = True if head == "yes" else False if head == "no" else None
        m = _SCORE.search(text)
        if m:
            s = float(m.group(1))
        m = _REQUIRED.search(text)
        if m:
            r = float(m.group(1))
    if s is None and score is not None:
        m = _NUMBER.match(score)
        if m:
            s = float(m.group(1))
    return verdict, s, r


def verdict_from_header(status: str | None, score: str | None, required: float = 5.0) -> SpamVerdict | None:
    """The verdict a header written by this server records (the forms
    ``spam_levels`` reads), for a message whose header is trusted (an
    operator testing a stored copy: ``mailyard sieve test``); None: none."""
    verdict, s, r = _parse_verdict(status, score, required)
    if s is None:
        if verdict is None:
            return None
        s = 2 * r if verdict else 0.0
    return SpamVerdict(s, r, verdict)


def verdict_levels(verdict: bool | None, s: float | None, r: float) -> tuple[int, int]:
    if s is None:
        if verdict is None:
            return 0, 0
        s = 2 * r if verdict else 0.0
    ratio = s / r if r > 0 else (2.0 if s > 0 else 0.0)
    level = max(1, min(10, 1 + int(5 * ratio // 1))) if ratio > 0 else 1
    if verdict is True:
        level = max(level, 6)
    elif verdict is False:
        level = min(level, 5)
    percent = max(0, min(100, round(50 * ratio)))
    return level, percent
