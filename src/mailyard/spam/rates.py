"""Connection and message rates per client address and per network.

The MX port counts, per minute, the connections and the messages (MAIL
commands) of each client address and of its network (a /24 for IPv4, a
/64 for IPv6: one host's share of addresses there). A client over either
budget is refused for a while: ``421 4.7.0`` at connect, ``451 4.7.1`` at
MAIL (RFC 5321 4.2.5 and 3.8: temporary, so a legitimate server that was
merely fast tries again later).

A window is the usual two-bucket approximation of a sliding window: the
count of the current minute plus the previous minute's count weighted by
the part of it still inside the window. Two integers per key, whatever
the rate, and no hard edge a burst could straddle to get twice the budget.

With several worker processes the supervisor holds the one `RateLimiter`
and answers the workers over the login throttle's channel
(auth/throttle_shared.py); a worker whose supervisor stopped answering
counts in its own.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import SpamConfig

__all__ = ["RatePolicy", "RateLimiter", "network_of", "rate_policy_from_config", "CONNECTION", "MESSAGE"]

CONNECTION = "connection"
MESSAGE = "message"

# Keys held at most; past it, the windows that ended are dropped first.
MAX_KEYS = 50_000


@functools.lru_cache(maxsize=4096)
def network_of(ip: str) -> str:
    """The network an address belongs to for the per-network budget: its /24
    (IPv4) or /64 (IPv6); an IPv4-mapped IPv6 address counts as IPv4.
    Cached: every connection and message of a client asks."""
    addr = _client_address(ip)
    if addr is None:
        return ip
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def _networks(values: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


MAX_EXEMPT_KNOWN = 4096  # client addresses whose exemption RatePolicy remembers


@dataclass(frozen=True)
class RatePolicy:
    """Budgets per minute; 0 turns a budget off. A network gets
    ``network_factor`` times an address's budget (several hosts of one
    provider share it)."""

    connections_per_minute: int = 120
    messages_per_minute: int = 300
    network_factor: int = 4
    exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default_factory=tuple)
    window: float = 60.0

    @classmethod
    def build(cls, connections_per_minute: int, messages_per_minute: int, network_factor: int,
              exempt: Iterable[str]) -> RatePolicy:
        return cls(connections_per_minute, messages_per_minute, max(1, network_factor), _networks(exempt))

    # is_exempt's answers (every connection and message of a client asks), bounded
    _exempt_known: dict[str, bool] = field(default_factory=dict, init=False, compare=False, repr=False)

    def is_exempt(self, ip: str) -> bool:
        known = self._exempt_known
        answer = known.get(ip)
        if answer is None:
            answer = _in_networks(self.exempt, ip)
            if len(known) >= MAX_EXEMPT_KNOWN:
                known.clear()
            known[ip] = answer
        return answer

    def budget(self, kind: str) -> int:
        return self.connections_per_minute if kind == CONNECTION else self.messages_per_minute


def _in_networks(networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], ip: str) -> bool:
    """Whether ``ip`` (an IPv4-mapped IPv6 address as IPv4) is in one of ``networks``."""
    addr = _client_address(ip)
    return addr is not None and any(addr in net for net in networks)


def _client_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``ip`` parsed, an IPv4-mapped IPv6 address as the IPv4 one; None if
    it is not an IP address."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class RateLimiter:
    """Sliding-window counters of connections and messages by address and network."""

    def __init__(self, policy: RatePolicy | None = None, max_keys: int = MAX_KEYS) -> None:
        self.policy = policy or RatePolicy()
        self.max_keys = max_keys
        # key -> [start of the current bucket, previous bucket's count, current count]
        self._windows: dict[tuple[str, str], list[float]] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def _rate(self, key: tuple[str, str], now: float, add: bool) -> float:
        width = self.policy.window
        w = self._windows.get(key)
        if w is None:
            if not add:
                return 0.0
            if len(self._windows) >= self.max_keys:
                self._prune(now)
            w = self._windows[key] = [now - now % width, 0.0, 0.0]
        start = w[0]
        if now - start >= width:
            # one bucket on: the current becomes the previous; more than one: both empty
            w[1] = w[2] if now - start < 2 * width else 0.0
            w[2] = 0.0
            w[0] = start = now - now % width
        if add:
            w[2] += 1
        elapsed = (now - start) / width
        return w[1] * (1.0 - elapsed) + w[2]

    def _prune(self, now: float) -> None:
        width = self.policy.window
        stale = [k for k, w in self._windows.items() if now - w[0] >= 2 * width]
        for k in stale:
            del self._windows[k]
        if len(self._windows) >= self.max_keys:  # a flood of fresh addresses: forget the oldest half
            for k in list(self._windows)[: len(self._windows) // 2]:
                del self._windows[k]

    def hit(self, kind: str, ip: str, now: float | None = None) -> str | None:
        """Count one connection or message of ``ip``; the reason it is over
        a budget (for the reply text and the log), or None."""
        policy = self.policy
        budget = policy.budget(kind)
        if budget <= 0 or policy.is_exempt(ip):
            return None
        if now is None:
            now = time.monotonic()
        net = network_of(ip)
        own = self._rate((kind, ip), now, add=True)
        shared = self._rate((kind, net), now, add=True) if net != ip else 0.0
        what = "connections" if kind == CONNECTION else "messages"
        if own > budget:
            return f"too many {what} from {ip} (over {budget} a minute)"
        if shared > budget * policy.network_factor:
            return f"too many {what} from network {net} (over {budget * policy.network_factor} a minute)"
        return None


def rate_policy_from_config(spam: SpamConfig) -> RatePolicy:
    """The MX port's budgets from ``[spam]``."""
    return RatePolicy.build(spam.mx_connections_per_minute, spam.mx_messages_per_minute,
                            spam.mx_network_factor, spam.trusted_networks)
