"""Reputation signals of the sending host, asked of DNS through the injected
caching resolver (mailauth/dnscache.py ``Resolver``; blocking, so the
checker runs these on a thread): forward-confirmed reverse DNS of the client
address, the HELO name, and the DNS lists the address is on.

Each function returns a state word that score.py turns into tests;
``temperror`` (a DNS time-out or SERVFAIL) never counts against the sender.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Sequence

import dns.reversename

from ..mailauth.dnscache import CacheOnly, DNSTempError, Resolver
from .score import ListEntry, is_list_error

# At most this many PTR names are followed back (RFC 8601 / SpamAssassin do the same kind of bound).
MAX_PTR_NAMES = 10

# RFC 5321 4.1.2 Domain = sub-domain *("." sub-domain); Let-dig [Ldh-str].
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def _addresses(resolver: Resolver | CacheOnly, name: str) -> set[str]:
    out: set[str] = set()
    for rdtype in ("A", "AAAA"):
        out.update(resolver.query(name, rdtype).records)
    return out


def fcrdns(resolver: Resolver | CacheOnly, ip: str) -> tuple[str, str | None]:
    """``("ok", name)`` when a PTR name of ``ip`` resolves back to it,
    ``("not-confirmed", name)``, ``("none", None)`` without PTR, or
    ``("temperror", None)``."""
    try:
        address = ipaddress.ip_address(ip)
        names = resolver.query(dns.reversename.from_address(str(address)).to_text(), "PTR").records
        if not names:
            return "none", None
        for name in names[:MAX_PTR_NAMES]:
            name = name.rstrip(".")
            if any(ipaddress.ip_address(a) == address for a in _addresses(resolver, name)):
                return "ok", name
        return "not-confirmed", names[0].rstrip(".")
    except DNSTempError:
        return "temperror", None
    except ValueError:
        return "none", None


def helo_syntax_ok(helo: str) -> bool:
    """A fully qualified domain name (two labels at least, the last not all
    digits) or an address literal (RFC 5321 4.1.3)."""
    if helo.startswith("[") and helo.endswith("]"):
        return _literal(helo) is not None
    labels = helo.rstrip(".").split(".")
    return len(labels) >= 2 and all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def _literal(helo: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    inner = helo[1:-1]
    if inner.lower().startswith("ipv6:"):
        inner = inner[5:]
    try:
        return ipaddress.ip_address(inner)
    except ValueError:
        return None


def check_helo(resolver: Resolver | CacheOnly, helo: str, ip: str, own_names: Collection[str], own_ips: Collection[str]) -> str:
    """``ok``, ``syntax``, ``ours`` (this server's name, one of its domains
    or addresses), ``literal-mismatch``, ``nxdomain`` or ``temperror``."""
    if not helo_syntax_ok(helo):
        return "syntax"
    own = {n.lower().rstrip(".") for n in own_names}
    mine = {str(ipaddress.ip_address(a)) for a in own_ips}
    if helo.startswith("["):
        literal = _literal(helo)
        if str(literal) in mine and str(literal) != ip:
            return "ours"
        return "ok" if literal == ipaddress.ip_address(ip) else "literal-mismatch"
    name = helo.lower().rstrip(".")
    if name in own:
        return "ours"
    try:
        addresses = _addresses(resolver, name)
    except DNSTempError:
        return "temperror"
    if not addresses:
        return "nxdomain"
    return "ok"


def list_query_name(ip: str, zone: str) -> str:
    """The DNS list query for ``ip``: reversed octets (RFC 5782 2.1) or
    reversed nibbles for IPv6 (RFC 5782 2.4), under ``zone``."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv4Address):
        return ".".join(reversed(str(address).split("."))) + "." + zone
    return ".".join(reversed(address.exploded.replace(":", ""))) + "." + zone


def listed_on(resolver: Resolver | CacheOnly, ip: str, entries: Sequence[ListEntry]) -> tuple[list[ListEntry], list[str]]:
    """The entries whose zone lists ``ip`` with one of their answer codes,
    and the problems met (a list's error answer, a DNS failure), in words."""
    hits: list[ListEntry] = []
    problems: list[str] = []
    answers: dict[str, tuple[str, ...] | None] = {}
    for entry in entries:
        if entry.zone not in answers:
            try:
                answers[entry.zone] = resolver.query(list_query_name(ip, entry.zone), "A").records
            except DNSTempError:
                answers[entry.zone] = None
                problems.append(f"{entry.zone}: temperror")
            else:
                errors = [a for a in answers[entry.zone] or () if is_list_error(a)]
                if errors:
                    problems.append(f"{entry.zone}: refused ({','.join(errors)})")
        found = answers[entry.zone]
        if found and any(entry.matches(a) for a in found):
            hits.append(entry)
    return hits, problems
