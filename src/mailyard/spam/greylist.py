"""Greylisting decisions (off by default: ``[spam] greylisting``).

A mail server whose message is refused for now (``451 4.7.1``) tries again
later (RFC 5321 4.5.4.1); much bulk software does not. The first attempt of
a triplet (the client's network, the sender, the recipient) is refused;
a retry after ``delay`` and within ``retry_window`` passes, and the
(network, sender domain) that retried correctly then passes unasked for
``allow_for`` (so a correspondent is delayed once, not per message). Mail
whose SPF or DKIM authenticates a domain of the ``known_good`` list is
never delayed. The client's network (its /24 or /64, rates.py
``network_of``) stands for the client because big senders retry from
another host of the same pool.

This module only decides; the state (first attempts and allowed pairs)
lives in store/greylist.py, shared by the worker processes and kept across
restarts. The glue asks the store, calls `decide`, and records what the
decision says.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .rates import network_of

__all__ = ["GreylistPolicy", "Decision", "decide", "triplet", "sender_domain", "known_good"]


@dataclass(frozen=True)
class GreylistPolicy:
    delay: float = 300.0  # seconds before a retry is accepted
    retry_window: float = 2 * 86400.0  # seconds after the first attempt within which a retry counts
    allow_for: float = 35 * 86400.0  # seconds a (network, sender domain) that retried passes
    known_good: frozenset[str] = frozenset()  # sender domains passed when SPF or DKIM authenticates them


@dataclass(frozen=True)
class Decision:
    """``defer``: answer 451 4.7.1 with ``reason``. ``first``: record the
    attempt's time as the triplet's first (a new or an expired triplet).
    ``allow``: the (network, sender domain) passes from now on."""

    defer: bool
    reason: str
    first: bool = False
    allow: bool = False


def sender_domain(reverse_path: str) -> str:
    """The domain of the envelope sender; "" for the null reverse-path (bounces)."""
    return reverse_path.rpartition("@")[2].lower() if "@" in reverse_path else ""


def triplet(ip: str, reverse_path: str, recipient: str) -> tuple[str, str, str]:
    """The greylisting key: the client's network, the sender and the recipient, lower-cased."""
    return network_of(ip), reverse_path.lower(), recipient.lower()


def known_good(policy: GreylistPolicy, authenticated: Iterable[str]) -> str | None:
    """The first of the SPF/DKIM-authenticated domains that is on the known-good
    list (the domain itself or a subdomain of a listed one), or None."""
    for domain in authenticated:
        d = domain.lower().rstrip(".")
        for good in policy.known_good:
            if d == good or d.endswith("." + good):
                return d
    return None


def decide(policy: GreylistPolicy, now: float, first_seen: float | None, *, allowed: bool = False,
           good_domain: str | None = None) -> Decision:
    """What to do with one triplet: ``first_seen`` is when its first refused
    attempt was recorded (None: never), ``allowed`` whether its (network,
    sender domain) retried correctly before, ``good_domain`` a known-good
    domain the message authenticated (``known_good``)."""
    if allowed:
        return Decision(False, "sender already retried correctly")
    if good_domain is not None:
        return Decision(False, f"authenticated known-good domain {good_domain}")
    if first_seen is None:
        return Decision(True, "greylisted, please try again later", first=True)
    waited = now - first_seen
    if waited > policy.retry_window:
        return Decision(True, "greylisted (the last try was too long ago), please try again later", first=True)
    if waited < policy.delay:
        left = int(policy.delay - waited) + 1
        return Decision(True, f"greylisted, please try again in {left} second{'s' if left != 1 else ''}")
    return Decision(False, f"retried after {int(waited)} seconds", allow=True)
