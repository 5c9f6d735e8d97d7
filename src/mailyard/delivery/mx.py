"""Where mail for a domain goes: MX resolution (RFC 5321 section 5.1, RFC 7505).

``resolve_mx(domain)`` returns the hosts to try, in order, each with its
addresses:

* the MX records in preference order (lowest first), shuffled among equal
  preferences so load spreads (RFC 5321 5.1: "randomize");
* no MX records at all: the domain itself is the implicit MX, if it has A or
  AAAA records (RFC 5321 5.1);
* a "null MX" (a single MX with preference 0 and the root as exchange, RFC 7505
  section 3) means the domain accepts no mail: ``NullMX`` is raised and the
  caller bounces at once (RFC 7505 4.1: 556 5.1.10);
* a name that does not exist is a permanent failure (``PermanentDNSError``), a
  server failure or time-out a temporary one (``TemporaryDNSError``).

The resolver is dnspython's, pointed at configurable name servers (address and
port), so tests can run a DNS server of their own on loopback.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from ..mailauth.dnscache import parse_nameservers  # one reader of [delivery] nameservers


class DNSError(Exception):
    pass


class TemporaryDNSError(DNSError):
    """SERVFAIL, time-out: try again later (4.4.3)."""


class PermanentDNSError(DNSError):
    """The domain does not exist or has no address at all (5.1.2)."""


class NullMX(DNSError):
    """RFC 7505: the domain explicitly accepts no mail."""


@dataclass(frozen=True)
class MXHost:
    name: str
    preference: int
    addresses: tuple[str, ...]


def make_resolver(nameservers: str = "", timeout: float = 10.0) -> dns.asyncresolver.Resolver:
    servers = parse_nameservers(nameservers)
    if servers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host for host, _ in servers]
        resolver.port = servers[0][1]  # dnspython: one port for all of them
    else:
        resolver = dns.asyncresolver.Resolver()
    resolver.cache = dns.resolver.Cache()  # answers kept for their TTL
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, 5.0)
    return resolver


def order_mx(records: Iterable[tuple[int, str]], rng: random.Random | None = None) -> list[tuple[int, str]]:
    """Preference order, random among equal preferences (RFC 5321 5.1)."""
    rng = rng or random
    items = list(records)
    rng.shuffle(items)
    return sorted(items, key=lambda item: item[0])  # sort is stable: the shuffle survives in ties


class MXResolver:
    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver

    async def _query(self, name: str, rdtype: str) -> list | None:
        """Records, [] for NOERROR/NODATA, None for NXDOMAIN."""
        try:
            answer = await self.resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return None
        except dns.resolver.NoAnswer:
            return []
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout) as exc:
            raise TemporaryDNSError(f"DNS lookup of {name} {rdtype} failed: {exc.__class__.__name__}") from exc
        return list(answer)

    async def addresses(self, name: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(name.strip("[]")))]
        except ValueError:
            pass
        out: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                records = await self._query(name, rdtype)
            except TemporaryDNSError:
                if out:
                    continue
                raise
            out.extend(r.address for r in records or [])
        return out

    async def resolve(self, domain: str) -> list[MXHost]:
        domain = domain.rstrip(".")
        if domain.startswith("[") and domain.endswith("]"):
            # RFC 5321 4.1.3 address literal: deliver straight to it.
            literal = domain[1:-1]
            if literal.lower().startswith("ipv6:"):
                literal = literal[5:]
            return [MXHost(domain, 0, (str(ipaddress.ip_address(literal)),))]
        records = await self._query(domain, "MX")
        if records is None:
            raise PermanentDNSError(f"domain {domain} does not exist")
        if len(records) == 1 and records[0].preference == 0 and records[0].exchange == dns.name.root:
            raise NullMX(f"{domain} does not accept mail (null MX, RFC 7505)")
        hosts: list[MXHost] = []
        if not records:
            # RFC 5321 5.1: no MX -> the domain is its own (implicit) MX.
            addrs = await self.addresses(domain)
            if not addrs:
                raise PermanentDNSError(f"{domain} has no MX and no address records")
            return [MXHost(domain, 0, tuple(addrs))]
        pairs = [(r.preference, r.exchange.to_text(omit_final_dot=True)) for r in records
                 if r.exchange != dns.name.root]  # RFC 7505 4.3: ignore a null MX among others
        temporary: TemporaryDNSError | None = None
        for preference, name in order_mx(pairs):
            try:
                addrs = await self.addresses(name)
            except TemporaryDNSError as exc:
                temporary = exc
                continue
            if addrs:
                hosts.append(MXHost(name, preference, tuple(addrs)))
        if not hosts:
            if temporary is not None:
                raise temporary
            raise PermanentDNSError(f"no MX host of {domain} has an address")
        return hosts
