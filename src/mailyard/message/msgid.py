"""Message-ID generation (RFC 5322 3.6.4).

What: ``make_msgid(domain)`` returns ``<unique@domain>``.

Why: RFC 5322 3.6.4 asks that a msg-id be globally unique; the left part
combines the time in nanoseconds (unique per host over time) with 96 random
bits from ``secrets`` (unique across hosts and processes, and unguessable so a
Message-ID reveals nothing about the server's state or volume).
"""

from __future__ import annotations

import re
import secrets
import time

__all__ = ["make_msgid"]

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
# RFC 5322 3.6.4: id-right = dot-atom-text / no-fold-literal
_ID_RIGHT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*"
                       r"|\[[\x21-\x5a\x5e-\x7e]*\]")


def _base36(n: int) -> str:
    out = []
    while True:
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
        if not n:
            return "".join(reversed(out))


def make_msgid(domain: str) -> str:
    """A new ``<time.random@domain>`` msg-id (RFC 5322 3.6.4).

    ``domain`` should be a name the generating host owns; a non-ASCII domain is
    written as its A-label so the id stays ASCII. Raises ValueError when the
    domain cannot be an id-right.
    """
    domain = domain.strip().rstrip(".")
    if not domain.isascii():
        domain = domain.encode("idna").decode("ascii")
    if not _ID_RIGHT.fullmatch(domain):
        raise ValueError(f"not usable as the right side of a Message-ID: {domain!r}")
    left = f"{_base36(time.time_ns())}.{_base36(secrets.randbits(96))}"
    return f"<{left}@{domain}>"
