"""DNS for the authentication checks: dnspython pointed at the configured
name servers, with a small cache that honours positive TTLs (the answer's
TTL) and negative TTLs (RFC 2308 5: the SOA MINIMUM of an NXDOMAIN or NODATA
answer, capped by the SOA's own TTL).

The DKIM and SPF libraries (dkimpy, pyspf) are synchronous, so the checks run
in a worker thread (``inbound.py``) and this resolver is the blocking one; it
is thread-safe. A time-out or SERVFAIL raises ``DNSTempError`` after at most
``timeout`` seconds, which the checks report as ``temperror`` (RFC 7208 2.6.6,
RFC 6376 3.9): a session never waits longer than that for a DNS answer.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

# An answer without an SOA to take the negative TTL from is cached this long.
DEFAULT_NEGATIVE_TTL = 60.0
# No answer is kept longer than this, whatever its TTL says.
MAX_TTL = 3600.0
# A time-out or SERVFAIL is remembered this long (RFC 2308 7.1 allows up to
# five minutes), so a dead name server costs one wait, not one per message.
FAILURE_TTL = 30.0
# A name longer than this (in text: 255 octets, RFC 1035 2.3.4, each
# written as at most a 4-character escape) is no DNS name: dnspython refuses
# it, so it has no records; it is answered so without being kept, as a
# hostile message can name megabytes (a From domain, a DKIM d=).
MAX_NAME_CHARS = 1024


T = TypeVar("T")


class DNSTempError(Exception):
    """A temporary DNS failure: time-out, SERVFAIL, no server answered."""


@dataclass(frozen=True)
class Answer:
    """The records of one (name, type) question; empty for NXDOMAIN or NODATA."""

    records: tuple[str, ...]
    nxdomain: bool = False


def parse_nameservers(text: str) -> list[tuple[str, int]]:
    """``"127.0.0.1:5353, 10.0.0.1"`` -> [("127.0.0.1", 5353), ("10.0.0.1", 53)]."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [v6]:port
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else 53
        elif item.count(":") == 1:
            host, _, p = item.partition(":")
            port = int(p)
        else:
            host, port = item, 53
        out.append((host, port))
    return out


def _negative_ttl(response: dns.message.Message | None) -> float:
    """RFC 2308 5: min(SOA TTL, SOA MINIMUM) from the authority section."""
    if response is not None:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA:
                return float(min(rrset.ttl, rrset[0].minimum))
    return DEFAULT_NEGATIVE_TTL


def _text(rdata: object, rdtype: str) -> str:
    if rdtype in ("TXT", "SPF"):
        # RFC 7208 3.3, RFC 6376 3.6.2.2: the strings of one record are joined
        return b"".join(rdata.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
    return rdata.to_text()  # type: ignore[attr-defined]


class Resolver:
    """A caching, blocking resolver; ``nameservers`` as in ``[delivery] nameservers``
    (empty: the system's)."""

    def __init__(self, nameservers: str = "", timeout: float = 5.0, max_entries: int = 10_000) -> None:
        servers = parse_nameservers(nameservers)
        if servers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [host for host, _ in servers]
            resolver.nameserver_ports = {host: port for host, port in servers}
        else:
            resolver = dns.resolver.Resolver()
        resolver.lifetime = timeout
        resolver.timeout = min(timeout, 2.0)
        self._resolver = resolver
        self._cache: OrderedDict[tuple[str, str], tuple[float, Answer | DNSTempError]] = OrderedDict()
        self._derived: OrderedDict[Hashable, tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()  # per thread: the expiries ``remember`` collects
        self._max = max_entries
        self.queries = 0  # questions sent (not answered from the cache)

    def query(self, name: str, rdtype: str) -> Answer:
        """The records of type ``rdtype`` at ``name``; raises ``DNSTempError``."""
        key = (name.lower().rstrip("."), rdtype.upper())
        now = time.monotonic()
        if len(key[0]) > MAX_NAME_CHARS:
            self._used(now + DEFAULT_NEGATIVE_TTL)  # as long as the malformed name's answer below is kept
            return Answer(())
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                if hit[0] > now:
                    self._cache.move_to_end(key)
                    if isinstance(hit[1], DNSTempError):
                        raise hit[1]
                    self._used(hit[0])
                    return hit[1]
                del self._cache[key]
        self.queries += 1
        try:
            result = self._resolver.resolve(key[0] + ".", key[1], raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN as exc:
            responses = list(exc.responses().values())
            answer, ttl = Answer((), nxdomain=True), _negative_ttl(responses[0] if responses else None)
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            failure = DNSTempError(f"{key[0]} {key[1]}: {exc}")
            self._store(key, now + FAILURE_TTL, failure)
            raise failure from exc
        except dns.exception.DNSException as exc:  # e.g. a malformed name: no such record
            answer, ttl = Answer(()), DEFAULT_NEGATIVE_TTL
            del exc
        else:
            if result.rrset is None:
                answer, ttl = Answer(()), _negative_ttl(result.response)
            else:
                answer = Answer(tuple(_text(r, key[1]) for r in result.rrset))
                ttl = float(result.rrset.ttl)
        self._store(key, now + min(ttl, MAX_TTL), answer)
        self._used(now + min(ttl, MAX_TTL))
        return answer

    def cached(self, name: str, rdtype: str) -> Answer | None:
        """The answer ``query`` would give from the cache alone, None when it
        would have to ask (a cached failure raises ``DNSTempError``): lets a
        caller on the event loop skip the thread hop when every answer it
        needs is at hand."""
        key = (name.lower().rstrip("."), rdtype.upper())
        with self._lock:
            hit = self._cache.get(key)
        if hit is None or hit[0] <= time.monotonic():
            return None
        if isinstance(hit[1], DNSTempError):
            raise hit[1]
        self._used(hit[0])
        return hit[1]

    def _store(self, key: tuple[str, str], expires: float, value: Answer | DNSTempError) -> None:
        with self._lock:
            self._cache[key] = (expires, value)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)

    def _used(self, expires: float) -> None:
        """An answer valid until ``expires`` was used: a ``remember`` running
        on this thread keeps its result no longer than that."""
        pending = getattr(self._local, "expiries", None)
        if pending and expires < pending[-1]:
            pending[-1] = expires

    def remember(self, key: Hashable, ttl: float, compute: Callable[[], T]) -> T:
        """``compute()``, kept under ``key`` for a verdict that rests only on
        DNS answers and ``key`` (an SPF result): at most ``ttl`` seconds, and
        never past the expiry of any answer ``compute`` used from this
        resolver, so the verdict is the one a new evaluation would give as
        long as it is kept (a changed record is seen once its TTL has run
        out, as for the answer itself). A result whose ``result`` attribute
        is ``temperror`` is not kept."""
        now = time.monotonic()
        with self._lock:
            hit = self._derived.get(key)
            if hit is not None and hit[0] > now:
                self._used(hit[0])  # an enclosing verdict rests on this one's answers
                return hit[1]  # type: ignore[no-any-return]
        pending = self._local.__dict__.setdefault("expiries", [])
        pending.append(now + ttl)
        try:
            value = compute()
        finally:
            expires = pending.pop()
        self._used(expires)
        if getattr(value, "result", None) != "temperror" and expires > now:
            with self._lock:
                self._derived[key] = (expires, value)
                while len(self._derived) > self._max:
                    self._derived.popitem(last=False)
        return value

    def txt(self, name: str) -> list[str]:
        return list(self.query(name, "TXT").records)


class NotCached(BaseException):
    """A ``CacheOnly`` lookup whose answer is not in the cache.

    A BaseException, not an Exception: the checks it runs through (pyspf,
    dkimpy, our own record parsers) turn any Exception into a ``permerror``
    or ``temperror`` verdict, and a missing cache entry is no verdict at all;
    it must reach the caller, which then asks DNS for real on a thread."""


class CacheOnly:
    """A resolver's cached answers only: ``query`` raises ``NotCached``
    rather than ask. A caller on the event loop first runs its checks
    through this (a repeat sender's answers are all cached: no thread hop, no
    contention for the interpreter lock between the loop and a check
    thread), and only on a miss runs them again on a thread with the real
    resolver."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    def query(self, name: str, rdtype: str) -> Answer:
        answer = self.resolver.cached(name, rdtype)
        if answer is None:
            raise NotCached(f"{name} {rdtype}")
        return answer

    def txt(self, name: str) -> list[str]:
        return list(self.query(name, "TXT").records)

    def remember(self, key: Hashable, ttl: float, compute: Callable[[], T]) -> T:
        """As ``Resolver.remember``; ``compute`` asks through this object, so a
        miss raises ``NotCached`` and nothing is kept."""
        return self.resolver.remember(key, ttl, compute)
