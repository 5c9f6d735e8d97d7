"""Login throttling shared by SMTP AUTH, IMAP, POP3 and webmail.

Two sets of counters, one keyed by client address and one by account name,
each counting failed logins inside a sliding-ish window:

- every failure makes the *next* attempt wait longer: 0, 1, 2, 4, 8 ... s,
  capped (`ThrottlePolicy.max_delay`); the larger of the IP and account delay
  applies;
- N failures inside the window lock the key out for a while (defaults: 10 for
  an account -> 15 min, 30 for an address -> 15 min);
- a successful login clears the account's counter (not the address's: one
  valid account must not let an attacker reset the count for its guesses
  against others).

Pure and clock-free: every call takes ``now`` (seconds, any monotonic-ish
clock). Memory is bounded: each table is an LRU of at most
``max_entries`` keys, and entries idle for longer than the window are dropped.
Loopback clients are throttled like any other unless ``exempt_loopback`` or
``exempt_networks`` says otherwise (exemption skips only the address counter;
the account counter still protects the account).

IPv6 clients are counted per /64 (``ipv6_prefix``), since one host usually
holds a whole /64 and could otherwise rotate addresses freely.

Known trade-off: an account lockout can be triggered by anyone who knows the
account name (a denial of service against that user); the lockout is
temporary and the delay makes the attack slow.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Locked", "LoginThrottle", "ThrottlePolicy"]

log = logging.getLogger("mailyard.auth.throttle")


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """Tunables, with defaults suitable for a small server (config.py may override)."""

    base_delay: float = 1.0  # delay after the first failure; doubles per failure
    max_delay: float = 16.0  # cap of the growing delay
    window: float = 15 * 60.0  # a key's failures are forgotten this long after its last one
    account_max_failures: int = 10
    account_lockout: float = 15 * 60.0
    ip_max_failures: int = 30
    ip_lockout: float = 15 * 60.0
    max_entries: int = 100_000  # per table (addresses, accounts)
    ipv6_prefix: int = 64
    exempt_loopback: bool = False
    exempt_networks: tuple[str, ...] = ()  # CIDRs whose address counter is skipped


@dataclass(frozen=True, slots=True)
class Locked:
    """Refuse the attempt without checking the password, until ``until``."""

    until: float
    scope: Literal["ip", "account"]
    key: str

    def retry_after(self, now: float) -> float:
        return max(0.0, self.until - now)


@dataclass(slots=True)
class _Entry:
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


@dataclass(slots=True)
class _Table:
    """An LRU of counters for one kind of key."""

    max_failures: int
    lockout: float
    entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)


class LoginThrottle:
    """Failure counters for addresses and accounts; one instance per server process.

    Call `before_attempt` before checking credentials: sleep the returned
    delay (asynchronously), or refuse at once if it returns `Locked`. Then call
    `record_failure` or `record_success`.
    """

    def __init__(self, policy: ThrottlePolicy | None = None) -> None:
        self.policy = policy or ThrottlePolicy()
        self._ips = _Table(self.policy.ip_max_failures, self.policy.ip_lockout)
        self._accounts = _Table(self.policy.account_max_failures, self.policy.account_lockout)
        self._exempt = [ipaddress.ip_network(n, strict=False) for n in self.policy.exempt_networks]

    # -- keys ------------------------------------------------------------------
    def ip_key(self, ip: str) -> str | None:
        """The counter key of a client address, or None if it is exempt."""
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return ip  # not an IP (e.g. a Unix socket peer): count it as given
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if self.policy.exempt_loopback and addr.is_loopback:
            return None
        if any(addr in net for net in self._exempt):
            return None
        if isinstance(addr, ipaddress.IPv6Address):
            net = ipaddress.IPv6Network((addr, self.policy.ipv6_prefix), strict=False)
            return str(net)
        return str(addr)

    @staticmethod
    def account_key(account: str) -> str:
        # Case-fold so "Alice@X" and "alice@x" share a counter; a lookup that
        # is case-sensitive in the local part must not multiply the budget.
        return account.strip().casefold()

    # -- table helpers -------------------------------------------------------------
    def _get(self, table: _Table, key: str, now: float) -> _Entry | None:
        entry = table.entries.get(key)
        if entry is None:
            return None
        if entry.locked_until and now >= entry.locked_until:
            # Lockout served: start afresh.
            del table.entries[key]
            return None
        if not entry.locked_until and now - entry.last_failure > self.policy.window:
            del table.entries[key]
            return None
        table.entries.move_to_end(key)
        return entry

    def _delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return min(self.policy.base_delay * 2 ** (failures - 1), self.policy.max_delay)

    def _prune(self, table: _Table, now: float) -> None:
        # Drop expired entries from the cold end, then enforce the size bound.
        entries = table.entries
        while entries:
            key, entry = next(iter(entries.items()))
            expired = (entry.locked_until and now >= entry.locked_until) or (
                not entry.locked_until and now - entry.last_failure > self.policy.window
            )
            if not expired:
                break
            del entries[key]
        while len(entries) > self.policy.max_entries:
            entries.popitem(last=False)

    def _fail(self, table: _Table, key: str, now: float, scope: str) -> None:
        entry = self._get(table, key, now)
        if entry is None:
            entry = table.entries[key] = _Entry()
        if entry.locked_until:
            return  # already locked: attempts were refused, nothing more to count
        entry.failures += 1
        entry.last_failure = now
        if entry.failures >= table.max_failures:
            entry.locked_until = now + table.lockout
            log.warning(
                "login lockout: %s %s after %d failures, until +%.0fs",
                scope,
                key,
                entry.failures,
                table.lockout,
            )
        self._prune(table, now)

    # -- public API ----------------------------------------------------------------
    def before_attempt(self, ip: str, account: str | None, now: float) -> float | Locked:
        """Seconds to wait before checking this login, or `Locked` to refuse it.

        ``account`` may be None when the name is not known yet (e.g. before
        the SASL exchange); call again once it is.
        """
        delay = 0.0
        ip_key = self.ip_key(ip)
        if ip_key is not None:
            entry = self._get(self._ips, ip_key, now)
            if entry is not None:
                if entry.locked_until:
                    return Locked(entry.locked_until, "ip", ip_key)
                delay = self._delay(entry.failures)
        if account is not None:
            acct_key = self.account_key(account)
            entry = self._get(self._accounts, acct_key, now)
            if entry is not None:
                if entry.locked_until:
                    return Locked(entry.locked_until, "account", acct_key)
                delay = max(delay, self._delay(entry.failures))
        return delay

    def record_failure(self, ip: str, account: str | None, now: float) -> None:
        """Count a failed login (wrong password, unknown user, bad proof)."""
        ip_key = self.ip_key(ip)
        if ip_key is not None:
            self._fail(self._ips, ip_key, now, "ip")
        if account is not None:
            self._fail(self._accounts, self.account_key(account), now, "account")

    def record_success(self, ip: str, account: str, now: float) -> None:
        """A login succeeded: clear the account's counter (the address's stays)."""
        self._accounts.entries.pop(self.account_key(account), None)

    def __len__(self) -> int:
        """Number of tracked keys (addresses + accounts), for metrics and tests."""
        return len(self._ips.entries) + len(self._accounts.entries)
