"""MTA-STS (RFC 8461): other domains' policies for the mail we send them.

A domain that publishes ``_mta-sts.DOMAIN`` TXT ``v=STSv1; id=...`` (RFC
8461 3.1) serves a policy at ``https://mta-sts.DOMAIN/.well-known/mta-sts.txt``
(3.2): a mode (``enforce``, ``testing`` or ``none``), the ``mx`` patterns its
mail exchangers match, and a ``max_age`` in seconds. ``PolicyResolver.lookup``
finds the policy that holds for a domain now:

* the TXT record is read on each lookup (the resolver caches it for its TTL);
  a cached policy whose id equals the record's and whose max_age has not
  passed is used as it is (3.3: no fetch while the id is unchanged);
* otherwise the policy is fetched over HTTPS with a verified certificate
  for ``mta-sts.DOMAIN``, no redirects (3.3: "MUST NOT be followed"), no
  HTTP caching, a size cap and a time limit; a fetch that fails keeps a
  cached policy that has not expired (5.1), and without one the domain is
  treated as having no policy (5.1: "as though the domain has not
  implemented MTA-STS");
* a domain without a TXT record keeps its cached policy until max_age
  passes (3.3, 10.2: the cache is what defeats a stripped TXT record).

Policies are cached in memory and in ``DATA/mta-sts/DOMAIN.json`` so a
restart does not forget them. The delivery side (delivery/queue.py) applies
the policy: in ``enforce`` mode only MX hosts matching a pattern, each over
STARTTLS with a certificate valid for the MX name (RFC 8461 4.1, 4.2); in
``testing`` mode delivery goes on and the failures are only reported
(TLS-RPT, delivery/tlsrpt.py).

The HTTPS fetch resolves ``mta-sts.DOMAIN`` with the delivery resolver (so
``[delivery] nameservers`` applies to it as to MX lookups) and connects to
the address with the name in SNI and in the certificate check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.resolver

from ..fsutil import write_atomic

log = logging.getLogger("mailyard.mtasts")

MODES = ("enforce", "testing", "none")
# RFC 8461 3.2: max_age is at most 31557600 (one year).
MAX_AGE_LIMIT = 31557600
WELL_KNOWN = "/.well-known/mta-sts.txt"
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")  # RFC 8461 3.1: sts-id = 1*32(ALPHA / DIGIT)


class PolicyError(ValueError):
    """A policy file that does not follow RFC 8461 3.2."""


class FetchError(Exception):
    """The policy could not be fetched. ``result_type`` is the TLS-RPT
    result type (RFC 8460 4.3.2.2) the failure is reported as."""

    def __init__(self, message: str, result_type: str = "sts-policy-fetch-error") -> None:
        super().__init__(message)
        self.result_type = result_type


@dataclass(frozen=True)
class Policy:
    """One parsed policy (RFC 8461 3.2)."""

    mode: str
    mx: tuple[str, ...]
    max_age: int
    text: str = ""

    def matches(self, host: str) -> bool:
        """Whether MX host ``host`` matches one of the ``mx`` patterns (4.1)."""
        return any(mx_matches(pattern, host) for pattern in self.mx)

    def lines(self) -> list[str]:
        """The policy as TLS-RPT's ``policy-string`` (RFC 8460 4.4): its lines."""
        return [line.strip() for line in self.text.splitlines() if line.strip()]


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: a pattern is a name, or ``*.`` then a name where the
    ``*`` stands for exactly one label (the leftmost)."""
    pattern = pattern.lower().rstrip(".")
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:]
    return host == pattern


def parse_txt(records: list[str]) -> str | None:
    """The ``id`` of the ``_mta-sts`` TXT records, or None when there is no
    single valid STSv1 record (RFC 8461 3.1: records not starting with
    ``v=STSv1`` are ignored; more than one is as if none)."""
    candidates = [r for r in records if r.startswith("v=STSv1")]
    if len(candidates) != 1:
        return None
    fields = {}
    for item in candidates[0].split(";"):
        key, sep, value = item.strip().partition("=")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    sts_id = fields.get("id", "")
    return sts_id if fields.get("v") == "STSv1" and _ID.match(sts_id) else None


def parse_policy(text: str) -> Policy:
    """RFC 8461 3.2: ``key: value`` lines (CRLF or LF); ``version: STSv1``,
    ``mode``, ``max_age`` and (unless mode is none) at least one ``mx``.
    Unknown keys are ignored (3.2: "for future extensibility")."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise PolicyError(f"policy line without a colon: {line[:80]!r}")
        key, value = key.strip(), value.strip()
        if key == "mx":
            mx.append(value)
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise PolicyError("policy version is not STSv1")
    mode = fields.get("mode", "")
    if mode not in MODES:
        raise PolicyError(f"policy mode {mode!r} is not enforce, testing or none")
    age = fields.get("max_age", "")
    if not re.fullmatch(r"[0-9]{1,10}", age):  # RFC 8461 3.2: max-age-value = 1*10(DIGIT)
        raise PolicyError(f"policy max_age {age!r} is not a number of seconds")
    if mode != "none" and not mx:
        raise PolicyError("policy has no mx line")
    return Policy(mode, tuple(mx), min(int(age), MAX_AGE_LIMIT), text)


@dataclass
class Cached:
    domain: str
    sts_id: str
    policy: Policy
    fetched: float

    @property
    def expires(self) -> float:
        return self.fetched + self.policy.max_age

    def fresh(self, now: float) -> bool:
        return now < self.expires


@dataclass(frozen=True)
class Lookup:
    """The policy that holds for a domain now (None: the domain has none,
    or the one it has is mode ``none``); ``failure`` is the TLS-RPT result
    type when a fetch failed (reported even when a cached policy stands in)."""

    policy: Policy | None
    failure: str | None = None
    detail: str = ""


Addresses = Callable[[str], Awaitable[list[str]]]


@dataclass
class PolicyResolver:
    """Finds and caches MTA-STS policies (module docstring).

    ``addresses`` resolves a name (delivery/mx.py ``MXResolver.addresses``);
    ``cache_dir`` keeps policies across restarts (None: memory only);
    ``https_port`` is where policy hosts listen (443; tests use another);
    ``cafile`` replaces the system's CAs for the policy host's certificate;
    ``timeout`` bounds a whole fetch, ``max_size`` the policy's length."""

    resolver: dns.asyncresolver.Resolver
    addresses: Addresses
    cache_dir: Path | None = None
    https_port: int = 443
    cafile: str | None = None
    timeout: float = 60.0
    max_size: int = 64 * 1024
    clock: Callable[[], float] = time.time
    # Seconds a failed fetch is not repeated for the same id (the policy
    # host is not asked again for each message meanwhile).
    retry_after: float = 300.0
    _cache: dict[str, Cached] = field(default_factory=dict)
    _failed: dict[str, tuple[str, float]] = field(default_factory=dict)

    # --- the cache ------------------------------------------------------------
    def _file(self, domain: str) -> Path | None:
        if self.cache_dir is None or not re.fullmatch(r"[a-z0-9.-]{1,253}", domain):
            return None
        return self.cache_dir / f"{domain}.json"

    def cached(self, domain: str) -> Cached | None:
        domain = domain.lower().rstrip(".")
        hit = self._cache.get(domain)
        if hit is not None:
            return hit
        path = self._file(domain)
        if path is None or not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            hit = Cached(domain, data["id"], parse_policy(data["policy"]), float(data["fetched"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("mta-sts: ignoring the unreadable cached policy of %s: %s", domain, exc)
            return None
        self._cache[domain] = hit
        return hit

    def _store(self, hit: Cached) -> None:
        """Keep ``hit`` on disk for the next start, replaced at once and
        durably; it blocks on the disk, so the event loop runs it in a thread."""
        path = self._file(hit.domain)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps({"id": hit.sts_id, "policy": hit.policy.text,
                                           "fetched": hit.fetched}).encode("utf-8"))
        except OSError as exc:
            log.warning("mta-sts: cannot keep the policy of %s on disk: %s", hit.domain, exc)

    # --- DNS and HTTPS ----------------------------------------------------------
    async def txt_id(self, domain: str) -> str | None:
        """The id of ``_mta-sts.DOMAIN``; None when absent; raises
        dns.exception.DNSException when DNS did not answer."""
        try:
            answer = await self.resolver.resolve(f"_mta-sts.{domain}", "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        texts = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        return parse_txt(texts)

    async def fetch(self, domain: str) -> Policy:
        """GET the policy of ``domain`` (RFC 8461 3.3); FetchError on any failure."""
        import httpx

        name = f"mta-sts.{domain}"
        try:
            addrs = await self.addresses(name)
        except Exception as exc:  # noqa: BLE001 - any DNS failure is a fetch failure
            raise FetchError(f"cannot resolve {name}: {exc}") from exc
        if not addrs:
            raise FetchError(f"{name} has no address")
        ctx = ssl.create_default_context(cafile=self.cafile or None)
        last: Exception | None = None
        for addr in addrs:
            host = f"[{addr}]" if ":" in addr else addr
            url = f"https://{host}:{self.https_port}{WELL_KNOWN}"
            try:
                async with httpx.AsyncClient(verify=ctx, follow_redirects=False, trust_env=False,
                                             timeout=self.timeout) as client:
                    body = await self._get(client, url, name)
                return parse_policy(body)
            except PolicyError as exc:
                raise FetchError(f"policy of {domain} is invalid: {exc}", "sts-policy-invalid") from exc
            except FetchError as exc:
                last = exc
            except httpx.ConnectError as exc:
                cause = exc.__context__ or exc.__cause__
                if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    last = FetchError(f"certificate of {name} not valid: {exc}", "sts-webpki-invalid")
                else:
                    last = FetchError(f"cannot connect to {name}: {exc}")
            except Exception as exc:  # noqa: BLE001 - whatever goes wrong, the domain has no policy from here
                last = FetchError(f"fetching the policy of {domain} failed: {exc.__class__.__name__} {exc}")
        assert last is not None
        raise last if isinstance(last, FetchError) else FetchError(str(last))

    async def _get(self, client: object, url: str, name: str) -> str:
        import asyncio

        import httpx

        assert isinstance(client, httpx.AsyncClient)
        async with asyncio.timeout(self.timeout):
            async with client.stream("GET", url, headers={"Host": name, "Cache-Control": "no-cache"},
                                     extensions={"sni_hostname": name}) as resp:
                if resp.status_code != 200:
                    # RFC 8461 3.3: only a 200 counts; redirects are not followed.
                    raise FetchError(f"policy host {name} answered HTTP {resp.status_code}")
                ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                if ctype != "text/plain":
                    raise FetchError(f"policy of {name} is {ctype or 'untyped'}, not text/plain",
                                     "sts-policy-invalid")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_size:
                        raise FetchError(f"policy of {name} is larger than {self.max_size} bytes",
                                         "sts-policy-invalid")
                    chunks.append(chunk)
        try:
            return b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FetchError(f"policy of {name} is not UTF-8", "sts-policy-invalid") from exc

    # --- the policy that holds now ------------------------------------------------
    async def lookup(self, domain: str) -> Lookup:
        """The policy for mail to ``domain`` now (module docstring)."""
        domain = domain.lower().rstrip(".")
        if domain.startswith("["):
            return Lookup(None)  # an address literal has no policy
        now = self.clock()
        hit = self.cached(domain)
        if hit is not None and not hit.fresh(now):
            hit = None
        try:
            sts_id = await self.txt_id(domain)
        except dns.exception.DNSException as exc:
            log.info("mta-sts: TXT lookup of _mta-sts.%s failed: %s", domain, exc)
            return Lookup(_active(hit))
        if sts_id is None or (hit is not None and hit.sts_id == sts_id):
            return Lookup(_active(hit))
        failed = self._failed.get(domain)
        if failed is not None and failed[0] == sts_id and now < failed[1]:
            return Lookup(_active(hit))
        try:
            policy = await self.fetch(domain)
        except FetchError as exc:
            log.info("mta-sts: %s", exc)
            self._failed[domain] = (sts_id, now + self.retry_after)
            if len(self._failed) > 10000:
                self._failed.clear()
            return Lookup(_active(hit), exc.result_type, str(exc))
        self._failed.pop(domain, None)
        log.info("mta-sts: policy of %s: mode %s, mx %s, max_age %d (id %s)", domain, policy.mode,
                 ",".join(policy.mx), policy.max_age, sts_id)
        fresh = Cached(domain, sts_id, policy, now)
        self._cache[domain] = fresh
        await asyncio.to_thread(self._store, fresh)
        return Lookup(_active(fresh))


def _active(hit: Cached | None) -> Policy | None:
    if hit is None or hit.policy.mode == "none":
        return None
    return hit.policy
