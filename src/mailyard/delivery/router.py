"""The router: the one place that decides where a recipient address goes.

A forward-path resolves to local accounts (whose INBOX gets the message) and
remote addresses (for the outbound queue), by expanding aliases and mailing
lists recursively. An address that is no account, alias or list goes to its
domain's catch-all (the alias ``@domain``), whose target ``@other`` is a
domain alias: the same local part at ``other``. An SRS address
(mailauth/srs.py) at a local domain resolves, when its hash and age are
good, to the address it was made from, like an alias; a forged or expired
one is unknown (550 5.1.1). With a recipient delimiter
(``[delivery] recipient_delimiter``, RFC 5233 subaddresses) an address
``user+tag`` that names nothing itself goes where ``user`` goes, before the
catch-all is asked. Expansion is loop-safe (an address seen once is not expanded
again) and bounded in depth and size, so a misconfigured alias loop or a huge
list cannot run away.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..mailauth.srs import SRS, SRSError, is_srs
from ..message.address import canonical_address
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
    # Reached through a catch-all: the address itself names nobody, so it
    # grants no right to send as it (policy/submission.py).
    via_catch_all: bool = False


class DirectoryCache:
    """Directory lookups (domains, accounts, aliases, lists, INBOX ids, whether
    an account has quota limits) cached for a short time, as MTAs do (every
    RCPT asks several of them).

    Changes made through this process's store are seen at once (the store's
    ``directory_version`` moves); changes made by another process (the
    ``mailyard user``/``alias`` commands) within ``ttl`` seconds.
    """

    def __init__(self, store: Store, ttl: float = 2.0, max_entries: int = 100_000) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[tuple[str, Any], tuple[float, Any]] = {}
        self._version = store.directory_version

    async def get(self, kind: str, key: Any, load: Callable[[], Awaitable[Any]]) -> Any:
        now = time.monotonic()
        if self._version != self.store.directory_version:
            self._entries.clear()
            self._version = self.store.directory_version
        hit = self._entries.get((kind, key))
        if hit is not None and hit[0] > now:
            return hit[1]
        version = self.store.directory_version
        value = await load()
        if self.store.directory_version != version:
            return value  # the directory changed while it was read: the answer may be older than the change
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[(kind, key)] = (now + self.ttl, value)
        return value

    async def is_local_domain(self, domain: str) -> bool:
        return await self.get("domain", domain, lambda: self.store.is_local_domain(domain))

    async def account(self, address: str) -> Account | None:
        return await self.get("account", address, lambda: self.store.get_account(address))

    async def alias(self, address: str) -> list[str] | None:
        return await self.get("alias", address, lambda: self.store.get_alias(address))

    async def list_members(self, address: str) -> list[str] | None:
        return await self.get("list", address, lambda: self.store.get_list_members(address))

    async def unlimited(self, account_id: int) -> bool:
        """Whether the account has neither quota limit (RFC 9208 5): a
        recipient check then has no usage to read. Limits are directory
        data, cached like the rest (a first limit set by another process
        applies at RCPT within ``ttl``; the delivery checks the quota in its
        own transaction whatever RCPT said, so no mailbox goes over it);
        usage never is cached (it moves with every delivery)."""

        async def load() -> bool:
            quota = await self.store.get_quota(account_id)
            return quota.storage_limit is None and quota.messages_limit is None

        return await self.get("unlimited", account_id, load)

    async def inbox_id(self, account_id: int) -> int | None:
        async def load() -> int | None:
            box = await self.store.get_mailbox(account_id, "INBOX")
            return box.id if box is not None else None

        return await self.get("inbox", account_id, load)


class Router:
    def __init__(self, store: Store, max_depth: int = 10, max_recipients: int = 1000,
                 srs: SRS | None = None, recipient_delimiter: str = "+",
                 delimiter_off_domains: Iterable[str] = ()) -> None:
        self.store = store
        self.srs = srs
        self.recipient_delimiter = recipient_delimiter
        # domains where "user+tag" is not "user" ([delivery] recipient_delimiter_off_domains)
        self.delimiter_off_domains = frozenset(d.strip().lower().rstrip(".") for d in delimiter_off_domains)
        self.max_depth = max_depth
        self.max_recipients = max_recipients
        self.directory = DirectoryCache(store)

    async def postmaster_address(self, domain: str | None = None) -> str:
        """RFC 5321 4.1.1.3 / 4.5.1: ``<postmaster>`` without a domain means the
        postmaster of this server, i.e. of its first local domain."""
        if domain is None:
            domains = await self.store.list_domains()
            domain = domains[0] if domains else "localhost"
        return f"postmaster@{domain}"

    async def resolve(self, address: str) -> Resolution:
        """Expand ``address`` to local accounts and remote addresses.

        The local part is compared in its least-quoted form: RFC 5321 4.1.2
        makes ``"alice"@example.test`` the mailbox ``alice@example.test``,
        while a quoted local part that is no Dot-string (``"a b"``) names
        no account here. Case is compared as before (RFC 5321 2.4 leaves it
        to this server).
        """
        if address.lower() == "postmaster":
            address = await self.postmaster_address()
        try:
            addr = normalize_address(canonical_address(address))
            domain = normalize_domain(addr.rpartition("@")[2])
        except InvalidName:
            return Resolution(address, Verdict.INVALID)
        if not await self.directory.is_local_domain(domain):
            return Resolution(addr, Verdict.REMOTE, remote=[addr])
        result = Resolution(addr, Verdict.LOCAL)
        seen: set[str] = set()
        found_any = await self._expand(addr, 0, seen, result)
        if result.verdict is Verdict.LOOP:
            return result
        if not found_any:
            result.verdict = Verdict.UNKNOWN
        return result

    async def _expand(self, addr: str, depth: int, seen: set[str], out: Resolution,
                      catch_all: bool = True) -> bool:
        """Add ``addr``'s destinations to ``out``; False if ``addr`` is a local
        address that names nothing. ``catch_all`` False: a target a catch-all
        named, which must exist itself (no catch-all for it in turn)."""
        key = canonical_address(addr).lower()
        if key in seen:
            return True  # a loop back to an address already being expanded: nothing new
        seen.add(key)
        if depth > self.max_depth or len(seen) > self.max_recipients:
            out.verdict = Verdict.LOOP
            return True
        domain = addr.rpartition("@")[2].lower()
        if not await self.directory.is_local_domain(domain):
            out.remote.append(addr)
            return True
        local = addr.rpartition("@")[0]
        if self.srs is not None and is_srs(local):
            try:
                original = self.srs.reverse(addr)
            except SRSError:
                return False
            # the bounce (or reply) goes back to the address SRS stood for
            return await self._expand(original, depth + 1, seen, out, catch_all=False)
        account = await self.directory.account(key)
        if account is not None:
            if all(a.id != account.id for a in out.accounts):
                out.accounts.append(account)
            return True
        targets = await self.directory.alias(key)
        if targets is None:
            targets = await self.directory.list_members(key)
        if targets is None and self.recipient_delimiter and domain.lower() not in self.delimiter_off_domains:
            local, _, _dom = addr.rpartition("@")
            user, sep, _tag = local.partition(self.recipient_delimiter)
            if sep and user:
                # RFC 5233: user+tag is user's (the tag is Sieve's :detail)
                return await self._expand(f"{user}@{domain}", depth, seen, out, catch_all)
        if targets is None:
            # The catch-all comes last, after accounts, aliases and lists.
            targets = await self.directory.alias("@" + domain) if catch_all else None
            if targets is None:
                return False
            local = addr.rpartition("@")[0]
            for target in targets:
                if target.startswith("@"):  # a domain alias: the same local part there
                    found = await self._expand(local + target, depth + 1, seen, out)
                else:
                    out.via_catch_all = True
                    found = await self._expand(target, depth + 1, seen, out, catch_all=False)
                if not found:
                    if target.startswith("@"):
                        return False  # no such address at the target domain: 550 here too
                    out.dead.append(target)
            return True
        for target in targets:
            if not await self._expand(target, depth + 1, seen, out):
                out.dead.append(target)
        return True
