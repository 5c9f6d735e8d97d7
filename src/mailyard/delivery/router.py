"""The router: the one place that decides where a recipient address goes.

A forward-path resolves to local accounts (whose INBOX gets the message) and
remote addresses (for the outbound queue), by expanding aliases and mailing
lists recursively. Expansion is loop-safe (an address seen once is not expanded
again) and bounded in depth and size, so a misconfigured alias loop or a huge
list cannot run away.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..store.api import Account, InvalidName, Store
from ..store.names import normalize_address, normalize_domain


class Verdict(enum.Enum):
    LOCAL = "local"  # resolves to at least one local account (or is an existing empty list)
    REMOTE = "remote"  # a domain this server is not the destination for
    UNKNOWN = "unknown"  # a local domain, but no such user, alias or list (550 5.1.1)
    LOOP = "loop"  # expansion exceeded the configured depth or size (a loop or a runaway list)
    INVALID = "invalid"  # not a usable address


@dataclass
class Resolution:
    """Where one forward-path goes."""

    address: str
    verdict: Verdict
    accounts: list[Account] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)
    # Local addresses an alias or list named that do not exist (reported, not delivered).
    dead: list[str] = field(default_factory=list)


class Router:
    def __init__(self, store: Store, max_depth: int = 10, max_recipients: int = 1000) -> None:
        self.store = store
        self.max_depth = max_depth
        self.max_recipients = max_recipients

    async def postmaster_address(self, domain: str | None = None) -> str:
        """RFC 5321 4.1.1.3 / 4.5.1: ``<postmaster>`` without a domain means the
        postmaster of this server, i.e. of its first local domain."""
        if domain is None:
            domains = await self.store.list_domains()
            domain = domains[0] if domains else "localhost"
        return f"postmaster@{domain}"

    async def resolve(self, address: str) -> Resolution:
        """Expand ``address`` to local accounts and remote addresses."""
        if address.lower() == "postmaster":
            address = await self.postmaster_address()
        try:
            addr = normalize_address(address)
            domain = normalize_domain(addr.rpartition("@")[2])
        except InvalidName:
            return Resolution(address, Verdict.INVALID)
        if not await self.store.is_local_domain(domain):
            return Resolution(addr, Verdict.REMOTE, remote=[addr])
        result = Resolution(addr, Verdict.LOCAL)
        seen: set[str] = set()
        found_any = await self._expand(addr, 0, seen, result)
        if result.verdict is Verdict.LOOP:
            return result
        if not found_any:
            result.verdict = Verdict.UNKNOWN
        return result

    async def _expand(self, addr: str, depth: int, seen: set[str], out: Resolution) -> bool:
        """Add ``addr``'s destinations to ``out``; False if ``addr`` is a local
        address that names nothing."""
        key = addr.lower()
        if key in seen:
            return True  # a loop back to an address already being expanded: nothing new
        seen.add(key)
        if depth > self.max_depth or len(seen) > self.max_recipients:
            out.verdict = Verdict.LOOP
            return True
        domain = addr.rpartition("@")[2]
        if not await self.store.is_local_domain(domain):
            out.remote.append(addr)
            return True
        account = await self.store.get_account(addr)
        if account is not None:
            if all(a.id != account.id for a in out.accounts):
                out.accounts.append(account)
            return True
        targets = await self.store.get_alias(addr)
        if targets is None:
            targets = await self.store.get_list_members(addr)
        if targets is None:
            return False
        for target in targets:
            if not await self._expand(target, depth + 1, seen, out):
                out.dead.append(target)
        return True
