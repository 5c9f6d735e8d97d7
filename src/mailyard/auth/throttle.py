"""Login throttling shared by SMTP AUTH, IMAP, POP3 and webmail.

Three sets of counters, each an LRU of failed logins inside a window:

- per client address: only a lockout count (default 30 failures -> 15 min);
- per account: a growing delay and a lockout (default 10 failures -> 15 min);
- per (address, account) pair: a growing delay only.

Reserve, then verify: `reserve` takes one unit of every budget the attempt
touches *before* the credentials are checked, and the attempt counts as a
failure until `succeed` releases it. So attempts in flight at once are held to
the same limit as attempts one after another. While the budget left is all
held by attempts in flight, `reserve` answers `Busy`: the attempt waits for
one of them to settle and then asks again, as it would have in a sequence. A
burst of 380 parallel guesses against a budget of 10 gets 10 checks, and
every later attempt, even with the right password, finds the name locked; a
burst of correct logins (a mail client opening several connections, many
users behind one address) is served in turn. `fail` turns the reservation
into a counted failure.

Delays: every failure makes the next attempt of the same account wait longer
(0, 1, 2, 4 ... s, capped at ``max_delay``); the larger of the account's delay
and the (address, account) pair's delay applies. The address itself causes no
delay: failures against bob from a NAT address must not slow alice's correct
login from behind it. A success clears the account's counter and the pair's
(as Dovecot's auth penalty resets on success), never the address's lockout
count, so one valid account cannot be used to reset the budget for guesses
against the others.

Pure and clock-free: every call takes ``now`` (seconds, any monotonic-ish
clock). Memory is bounded: each table is an LRU of at most ``max_entries``
keys, and entries idle for longer than the window are dropped (never while an
attempt is in flight). Loopback clients are throttled like any other unless
``exempt_loopback`` or ``exempt_networks`` says otherwise (exemption skips only
the address counters; the account counter still protects the account).

IPv6 clients are counted per /64 (``ipv6_prefix``), since one host usually
holds a whole /64 and could otherwise rotate addresses freely.

Known trade-off: an account lockout can be triggered by anyone who knows the
account name (a denial of service against that user); the lockout is
temporary and the delay makes the attack slow.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from .. import logs

__all__ = ["Attempt", "Busy", "Locked", "LoginThrottle", "ThrottlePolicy"]

log = logging.getLogger("mailyard.auth.throttle")

# Longest key kept as given; longer ones (a name nobody has, sent to fill
# memory) are kept as their SHA-256.
MAX_KEY = 320


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
    max_entries: int = 100_000  # per table (addresses, accounts, pairs)
    ipv6_prefix: int = 64
    exempt_loopback: bool = False
    exempt_networks: tuple[str, ...] = ()  # CIDRs whose address counters are skipped


@dataclass(frozen=True, slots=True)
class Locked:
    """Refuse the attempt without checking the password, until ``until``.

    Either the key is locked out, or its budget is taken by failures and
    attempts in flight (``until`` is then the latest the lockout they would
    cause can end).
    """

    until: float
    scope: Literal["ip", "account"]
    key: str

    def retry_after(self, now: float) -> float:
        return max(0.0, self.until - now)


@dataclass(slots=True)
class Attempt:
    """A reserved login attempt: counted as a failure until `LoginThrottle.succeed`.

    ``delay`` is how long to wait before checking the credentials. Settle it
    exactly once, with `LoginThrottle.fail` or `LoginThrottle.succeed`.
    """

    ip_key: str | None
    account_key: str | None
    pair_key: str | None
    delay: float
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Busy:
    """The budget left is held by attempts in flight: wait until one of
    them settles (`LoginThrottle.fail` / `succeed`), then reserve again."""

    scope: Literal["ip", "account"]
    key: str


@dataclass(slots=True)
class _Entry:
    failures: int = 0
    pending: int = 0  # reserved attempts not settled yet
    last_failure: float = 0.0
    locked_until: float = 0.0


@dataclass(slots=True)
class _Table:
    """An LRU of counters for one kind of key; ``max_failures`` 0: never locks."""

    max_failures: int
    lockout: float
    entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)


class LoginThrottle:
    """Failure counters for addresses and accounts; one instance per server process.

    Call `reserve` before checking credentials: refuse at once if it returns
    `Locked`, else sleep ``Attempt.delay`` (asynchronously), check, and settle
    the attempt with `fail` or `succeed`. `before_attempt` only looks.
    """

    def __init__(self, policy: ThrottlePolicy | None = None) -> None:
        self.policy = policy or ThrottlePolicy()
        self._ips = _Table(self.policy.ip_max_failures, self.policy.ip_lockout)
        self._accounts = _Table(self.policy.account_max_failures, self.policy.account_lockout)
        self._pairs = _Table(0, 0.0)
        self._exempt = [ipaddress.ip_network(n, strict=False) for n in self.policy.exempt_networks]

    # -- keys ------------------------------------------------------------------
    def ip_key(self, ip: str) -> str | None:
        """The counter key of a client address, or None if it is exempt."""
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return _bounded(ip)  # not an IP (e.g. a Unix socket peer): count it as given
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
        """The counter key of an account name. Callers pass the name the
        store resolves (auth/service.py); folding case here as well keeps
        a caller that does not from multiplying the budget."""
        return _bounded(account.strip().casefold())

    def _keys(self, ip: str, account: str | None) -> tuple[str | None, str | None, str | None]:
        ip_key = self.ip_key(ip)
        acct_key = self.account_key(account) if account is not None else None
        pair_key = None if ip_key is None else f"{ip_key}\x00{acct_key or ''}"
        return ip_key, acct_key, pair_key

    # -- table helpers -------------------------------------------------------------
    def _expired(self, entry: _Entry, now: float) -> bool:
        if entry.pending:
            return False  # an attempt in flight keeps its budget taken
        if entry.locked_until:
            return now >= entry.locked_until
        return now - entry.last_failure > self.policy.window

    def _get(self, table: _Table, key: str, now: float) -> _Entry | None:
        entry = table.entries.get(key)
        if entry is None:
            return None
        if entry.locked_until:
            if now >= entry.locked_until:
                entry.failures, entry.locked_until = 0, 0.0  # lockout served: start afresh
        elif entry.failures and now - entry.last_failure > self.policy.window:
            entry.failures = 0  # failures forgotten
        if not (entry.failures or entry.pending or entry.locked_until):
            del table.entries[key]
            return None
        table.entries.move_to_end(key)
        return entry

    def _delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return min(self.policy.base_delay * 2 ** min(failures - 1, 64), self.policy.max_delay)

    def _prune(self, table: _Table, now: float) -> None:
        # Drop expired entries from the cold end, then enforce the size bound.
        entries = table.entries
        while entries:
            key, entry = next(iter(entries.items()))
            if not self._expired(entry, now):
                break
            del entries[key]
        while len(entries) > self.policy.max_entries:
            entries.popitem(last=False)

    def _full(self, table: _Table, entry: _Entry | None, now: float) -> float | None:
        """When this key's lockout ends, if failures used up its budget; else None."""
        if entry is None or not table.max_failures:
            return None
        if entry.locked_until:
            return entry.locked_until
        if entry.failures >= table.max_failures:
            return now + table.lockout
        return None

    @staticmethod
    def _held(table: _Table, entry: _Entry | None) -> bool:
        """Whether the budget this key has left is all taken by attempts in flight."""
        return bool(entry and table.max_failures and entry.failures + entry.pending >= table.max_failures)

    def _take(self, table: _Table, key: str | None, now: float) -> None:
        if key is None:
            return
        entry = self._get(table, key, now)
        if entry is None:
            entry = table.entries[key] = _Entry(last_failure=now)
        entry.pending += 1
        self._prune(table, now)

    def _fail(self, table: _Table, key: str | None, now: float, scope: str, reserved: bool) -> None:
        if key is None:
            return
        entry = self._get(table, key, now)
        if entry is None:
            entry = table.entries[key] = _Entry()
        if reserved and entry.pending:
            entry.pending -= 1
        if entry.locked_until:
            return  # already locked: attempts were refused, nothing more to count
        entry.failures += 1
        entry.last_failure = now
        if table.max_failures and entry.failures >= table.max_failures:
            entry.locked_until = now + table.lockout
            logs.event(log, logging.WARNING, "lockout", scope=scope, key=key[:100], failures=entry.failures,
                       seconds=round(table.lockout))
        self._prune(table, now)

    def _release(self, table: _Table, key: str | None, clear: bool, reserved: bool = True) -> None:
        if key is None:
            return
        entry = table.entries.get(key)
        if entry is None:
            return
        if reserved and entry.pending:
            entry.pending -= 1
        if clear:
            entry.failures, entry.locked_until = 0, 0.0
        if not entry.pending and not entry.failures and not entry.locked_until:
            del table.entries[key]

    # -- public API ----------------------------------------------------------------
    def before_attempt(self, ip: str, account: str | None, now: float) -> float | Locked | Busy:
        """Seconds an attempt now would wait, `Locked` if it would be refused,
        `Busy` if it would have to wait for attempts in flight.

        Only looks: use `reserve` for an attempt that is going to be checked.
        The delay follows the failures counted so far, not the attempts in
        flight, so parallel correct logins do not slow each other.
        """
        ip_key, acct_key, pair_key = self._keys(ip, account)
        ip_entry = self._get(self._ips, ip_key, now) if ip_key is not None else None
        until = self._full(self._ips, ip_entry, now)
        if until is not None:
            assert ip_key is not None
            return Locked(until, "ip", ip_key)
        delay = 0.0
        acct_entry = None
        if acct_key is not None:
            acct_entry = self._get(self._accounts, acct_key, now)
            until = self._full(self._accounts, acct_entry, now)
            if until is not None:
                return Locked(until, "account", acct_key)
            if acct_entry is not None:
                delay = self._delay(acct_entry.failures)
        if ip_key is not None and self._held(self._ips, ip_entry):
            return Busy("ip", ip_key)
        if acct_key is not None and self._held(self._accounts, acct_entry):
            return Busy("account", acct_key)
        if pair_key is not None:
            entry = self._get(self._pairs, pair_key, now)
            if entry is not None:
                delay = max(delay, self._delay(entry.failures))
        return delay

    def reserve(self, ip: str, account: str | None, now: float) -> Attempt | Locked | Busy:
        """Take one attempt from the address's and the account's budgets.

        `Locked` if either is used up by failures: refuse without checking
        the credentials. `Busy` if what is left is held by attempts in
        flight: ask again when one settles. Otherwise the attempt counts as
        a failure until `succeed`; wait ``delay`` seconds, then check.
        """
        verdict = self.before_attempt(ip, account, now)
        if isinstance(verdict, (Locked, Busy)):
            return verdict
        ip_key, acct_key, pair_key = self._keys(ip, account)
        self._take(self._ips, ip_key, now)
        self._take(self._accounts, acct_key, now)
        self._take(self._pairs, pair_key, now)
        return Attempt(ip_key, acct_key, pair_key, verdict)

    async def reserve_async(self, ip: str, account: str | None, now: float) -> Attempt | Locked | Busy:
        """`reserve` for a caller on the event loop. Here the tables are in
        memory; a throttle shared between processes (auth/throttle_shared.py)
        answers without blocking the loop while it asks."""
        return self.reserve(ip, account, now)

    async def before_attempt_async(self, ip: str, account: str | None, now: float) -> float | Locked | Busy:
        """`before_attempt` for a caller on the event loop (see `reserve_async`)."""
        return self.before_attempt(ip, account, now)

    def fail(self, attempt: Attempt, now: float) -> None:
        """The reserved attempt failed (wrong password, unknown user, bad
        proof, abandoned exchange): count it everywhere it was reserved."""
        if attempt.settled:
            return
        attempt.settled = True
        self._fail(self._ips, attempt.ip_key, now, "ip", True)
        self._fail(self._accounts, attempt.account_key, now, "account", True)
        self._fail(self._pairs, attempt.pair_key, now, "pair", True)

    def succeed(self, attempt: Attempt, now: float) -> None:
        """The reserved attempt logged in: release it, clear the account's
        counter and this address's delay for the account; the address's
        failure count stays."""
        if attempt.settled:
            return
        attempt.settled = True
        self._release(self._ips, attempt.ip_key, clear=False)
        self._release(self._accounts, attempt.account_key, clear=True)
        self._release(self._pairs, attempt.pair_key, clear=True)

    def record_failure(self, ip: str, account: str | None, now: float) -> None:
        """Count a failure that had no reservation (e.g. a SASL exchange
        cancelled before it named an account)."""
        ip_key, acct_key, pair_key = self._keys(ip, account)
        self._fail(self._ips, ip_key, now, "ip", False)
        self._fail(self._accounts, acct_key, now, "account", False)
        self._fail(self._pairs, pair_key, now, "pair", False)

    def record_success(self, ip: str, account: str, now: float) -> None:
        """A login succeeded without a reservation: clear the account's
        counter and the pair's (not the address's)."""
        _, acct_key, pair_key = self._keys(ip, account)
        self._release(self._accounts, acct_key, clear=True, reserved=False)
        self._release(self._pairs, pair_key, clear=True, reserved=False)

    def __len__(self) -> int:
        """Number of tracked keys (addresses + accounts + pairs), for metrics and tests."""
        return len(self._ips.entries) + len(self._accounts.entries) + len(self._pairs.entries)


def _bounded(key: str) -> str:
    if len(key) <= MAX_KEY:
        return key
    return "#" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
