"""Each recipient's filing of a message the MX port accepted: INBOX or the
``\\Junk`` mailbox, by the account's settings (store ``account_settings``):

- ``spam_threshold`` (a number): the score at or over which the account's
  copy goes to Junk (default ``[spam] junk_threshold``);
- ``spam_allow``: addresses or ``@domain``s whose mail never goes to Junk
  (a message refused outright, rspamd's reject, is still refused);
- ``spam_block``: addresses or ``@domain``s whose mail always goes to Junk.

A list matches the envelope sender or a From address. Pure: settings and a
score in, a ``Filing`` (with the account's X-Spam-* fields) out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .headers import verdict_fields

THRESHOLD, ALLOW, BLOCK = "spam_threshold", "spam_allow", "spam_block"


@dataclass(frozen=True)
class Prefs:
    threshold: float | None = None
    allow: tuple[str, ...] = ()
    block: tuple[str, ...] = ()


def prefs(settings: Mapping[str, Any]) -> Prefs:
    """An account's spam preferences from its settings (bad values ignored)."""
    threshold = settings.get(THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        threshold = None

    def patterns(key: str) -> tuple[str, ...]:
        value = settings.get(key)
        if not isinstance(value, list):
            return ()
        return tuple(p.strip().lower() for p in value if isinstance(p, str) and p.strip())

    return Prefs(float(threshold) if threshold is not None else None, patterns(ALLOW), patterns(BLOCK))


def normalize_pattern(text: str) -> str:
    """``Alice@Example.COM`` -> ``alice@example.com``; ``example.com`` or
    ``@example.com`` -> ``@example.com``; ValueError for anything else."""
    p = text.strip().lower()
    if p.startswith("@"):
        domain = p[1:]
    elif "@" in p:
        local, _, domain = p.rpartition("@")
        if not local or not domain or " " in p:
            raise ValueError(f"{text!r} is not an address or @domain")
        return p
    else:
        domain = p
    if not domain or "." not in domain or " " in domain or "@" in domain:
        raise ValueError(f"{text!r} is not an address or @domain")
    return "@" + domain


def matching(senders: Iterable[str], patterns: Sequence[str]) -> str | None:
    """The first pattern matching one of ``senders`` (``@domain`` matches
    the domain and its subdomains)."""
    if not patterns:
        return None  # most accounts have no list: the senders need no reading
    for sender in senders:
        address = sender.strip().lower()
        if not address:
            continue
        domain = address.rpartition("@")[2]
        for p in patterns:
            if p.startswith("@"):
                if domain == p[1:] or domain.endswith("." + p[1:]):
                    return p
            elif p == address:
                return p
    return None


@dataclass(frozen=True)
class Filing:
    junk: bool
    required: float
    reason: str  # "score", "rspamd", "block-list <p>", "allow-list <p>", "" (inbox)
    fields: bytes  # the X-Spam-* fields of this account's copy


def file_message(score: float, tests: Sequence[str], *, spam: bool, prefs: Prefs, default_threshold: float,
                 senders: Sequence[str]) -> Filing:
    """Where one account's copy goes. ``spam``: rspamd's own action said so
    (add header, rewrite subject)."""
    required = prefs.threshold if prefs.threshold is not None else default_threshold
    blocked = matching(senders, prefs.block)
    allowed = matching(senders, prefs.allow)
    if blocked is not None:
        junk, reason = True, f"block-list {blocked}"
    elif allowed is not None:
        junk, reason = False, f"allow-list {allowed}"
    elif score >= required:
        junk, reason = True, "score"
    elif spam:
        junk, reason = True, "rspamd"
    else:
        junk, reason = False, ""
    return Filing(junk, required, reason, verdict_fields(score, required, tests, junk))
