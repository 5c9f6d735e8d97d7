"""DMARC (RFC 7489): does the From domain's owner vouch for this message,
and what does it ask receivers to do when not?

``evaluate`` finds the policy record (``_dmarc.FROMDOMAIN``, else
``_dmarc.ORGDOMAIN``, RFC 7489 6.6.3), checks identifier alignment (3.1:
an SPF ``pass`` for the MAIL FROM domain, or a DKIM ``pass`` for d=, relaxed
(same organisational domain) or strict (the same name) per ``aspf`` /
``adkim``), and gives the result (``pass``, ``fail``, ``none``,
``temperror``, ``permerror``) with the disposition the domain asks for:
``p=`` for the organisational domain itself, ``sp=`` for its subdomains
(6.3), sampled by ``pct=`` (6.6.4: the rest get the next weaker policy).

The organisational domain (3.2) comes from the Public Suffix List bundled
with the ``publicsuffixlist`` package: no network access at run time.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from ..message.address import canonical_domain
from .dkim import DKIMResult
from .dnscache import MAX_NAME_CHARS, DNSTempError, Resolver
from .spf import SPFResult

# A result is kept at most this long (and never past the TTL of a DNS answer
# it rests on), as SPF's (spf.RESULT_TTL).
RESULT_TTL = 60.0


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def load_public_suffixes() -> None:
    """Read the Public Suffix List now (tens of milliseconds), not at the
    first organisational-domain lookup."""
    _psl()


def organizational_domain(domain: str) -> str:
    """RFC 7489 3.2: the public suffix plus one label (the domain itself when
    it is a public suffix or shorter). Kept for names of DNS length only
    (``MAX_NAME_CHARS``): a From domain can be a hostile message's
    kilobytes."""
    return _kept_organizational_domain(domain) if len(domain) <= MAX_NAME_CHARS else _organizational(domain)


@lru_cache(maxsize=4096)
def _kept_organizational_domain(domain: str) -> str:
    return _organizational(domain)


def _organizational(domain: str) -> str:
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


@dataclass(frozen=True)
class Policy:
    p: str
    sp: str
    pct: int
    adkim: str
    aspf: str
    rua: str = ""
    fo: str = "0"  # failure reporting options (RFC 7489 6.3), echoed in aggregate reports


@dataclass(frozen=True)
class DMARCResult:
    result: str  # pass, fail, none, temperror, permerror
    from_domain: str
    policy: str  # the policy that applies: none, quarantine, reject ("none" when no record)
    disposition: str  # what to do: none, quarantine, reject (after pct=)
    reason: str = ""
    # The domain whose record applied (the From domain or its organisational
    # domain, RFC 7489 6.6.3) and that record: aggregate reports go to its rua.
    policy_domain: str = ""
    published: Policy | None = None
    spf_aligned: bool = False
    dkim_aligned: bool = False


_POLICIES = ("none", "quarantine", "reject")


@lru_cache(maxsize=1024)
def parse_record(text: str) -> Policy | None:
    """RFC 7489 6.3 / 6.4; None when it is not a valid DMARC record."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    if tags.get("v") != "DMARC1" or not text.lstrip().startswith("v"):
        return None
    p = tags.get("p", "").lower()
    if p not in _POLICIES:
        # RFC 7489 6.6.3: no valid p=, but a valid rua=: treat as p=none
        if "rua" not in tags:
            return None
        p = "none"
    sp = tags.get("sp", p).lower()
    if sp not in _POLICIES:
        sp = p
    try:
        pct = min(max(int(tags.get("pct", "100")), 0), 100)
    except ValueError:
        pct = 100
    adkim = "s" if tags.get("adkim", "r").lower() == "s" else "r"
    aspf = "s" if tags.get("aspf", "r").lower() == "s" else "r"
    fo = tags.get("fo", "0")
    if not fo or any(c not in "01ds:" for c in fo):
        fo = "0"
    return Policy(p, sp, pct, adkim, aspf, tags.get("rua", ""), fo)


def _lookup(resolver: Resolver, domain: str) -> Policy | None:
    records = [r for r in resolver.txt(f"_dmarc.{domain}") if r.lower().startswith("v=dmarc1")]
    if len(records) != 1:  # RFC 7489 6.6.3: none, or more than one: no policy
        return None
    return parse_record(records[0])


def aligned(a: str, b: str, mode: str) -> bool:
    """RFC 7489 3.1.1 / 3.1.2: strict is the same name, relaxed the same
    organisational domain. Both are compared as A-labels (RFC 8616 6: a
    From domain may be written as U-labels, while DKIM's d= is A-labels,
    RFC 8616 4, and an SMTPUTF8 MAIL FROM either)."""
    a, b = canonical_domain(a), canonical_domain(b)
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)


def _weaker(policy: str) -> str:
    return {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")


# RFC 7489 6.6.1 checks each From domain; more than this many in one message
# are not looked up (each costs DNS queries): the message is refused.
MAX_FROM_DOMAINS = 8
_STRICTNESS = {"none": 0, "quarantine": 1, "reject": 2}


def evaluate(
    resolver: Resolver,
    from_domains: Sequence[str],
    spf: SPFResult | None,
    dkim: Sequence[DKIMResult],
    *,
    rng: random.Random | None = None,
) -> DMARCResult:
    """The DMARC result for a message whose From field names ``from_domains``.

    RFC 7489 6.6.1: when the From field names several domains, the check is
    made with each as the Author Domain, and the strictest policy among the
    checks that fail applies; a message with no From domain to check (no
    From field, or one that names no address that can be read, RFC 5322
    3.6.2 asks for one) has no policy to be checked by, and receivers
    typically reject it: ``permerror`` with the disposition ``reject``, as
    for more than ``MAX_FROM_DOMAINS`` domains. Otherwise a forger could
    escape the real author's ``p=reject`` by adding a second address, or by
    a From field too long to read.

    Each domain is taken as its A-label (RFC 8616 6): ``bücher.example``
    in a From field is ``xn--bcher-kva.example``, the name its policy is
    published at and its signatures' d= names."""
    domains = sorted({c for c in map(canonical_domain, from_domains) if c})
    if not domains:
        return DMARCResult("permerror", "", "none", "reject", "no From domain")
    if len(domains) > MAX_FROM_DOMAINS:
        return DMARCResult("permerror", domains[0], "none", "reject", f"From names {len(domains)} domains")
    results = [_one(resolver, domain, spf, dkim, rng) for domain in domains]
    if len(results) == 1:
        return results[0]
    several = f"From names {len(domains)} domains"
    failing = [r for r in results if r.result == "fail"]
    if failing:
        worst = max(failing, key=lambda r: _STRICTNESS.get(r.disposition, 0))
        return replace(worst, reason=f"{worst.reason}; {several}")
    for kind in ("temperror", "none"):
        found = next((r for r in results if r.result == kind), None)
        if found is not None:
            return replace(found, reason=f"{found.reason}; {several}")
    return replace(results[0], reason=f"{results[0].reason}; {several}")


def _one(resolver: Resolver, from_domain: str, spf: SPFResult | None, dkim: Sequence[DKIMResult],
         rng: random.Random | None) -> DMARCResult:
    """The result for one Author Domain, after the pct= sampling."""
    # the result rests only on DNS answers and on what the key names (a
    # sender's stream of mail repeats it): kept by the resolver, no longer
    # than those answers (``Resolver.remember``); the pct= sampling is not
    # part of it and is drawn anew for every message
    key = ("dmarc", from_domain, (spf.identity, spf.result, spf.domain) if spf is not None else None,
           tuple(r.domain for r in dkim if r.result == "pass"))
    if len(from_domain) <= MAX_NAME_CHARS:
        found = resolver.remember(key, RESULT_TTL, lambda: _evaluate(resolver, from_domain, spf, dkim))
    else:  # no DNS name (a hostile message's kilobytes): evaluated, not kept
        found = _evaluate(resolver, from_domain, spf, dkim)
    published = found.published
    if found.result == "fail" and found.disposition != "none" and published is not None and published.pct < 100:
        chooser = rng or random.Random()
        if chooser.randrange(100) >= published.pct:
            return replace(found, disposition=_weaker(found.disposition))  # RFC 7489 6.6.4
    return found


def _evaluate(resolver: Resolver, from_domain: str, spf: SPFResult | None, dkim: Sequence[DKIMResult]) -> DMARCResult:
    """``evaluate`` for one From domain, before the pct= sampling."""
    org = organizational_domain(from_domain)
    try:
        policy_domain = from_domain
        policy = _lookup(resolver, from_domain)
        if policy is None and org != from_domain:
            policy_domain = org
            policy = _lookup(resolver, org)
            applied = policy.sp if policy is not None else "none"
        else:
            applied = policy.p if policy is not None else "none"
    except DNSTempError as exc:
        return DMARCResult("temperror", from_domain, "none", "none", str(exc)[:120])
    if policy is None:
        return DMARCResult("none", from_domain, "none", "none", "no DMARC record")
    spf_ok = spf is not None and spf.identity == "mailfrom" and spf.result == "pass" and aligned(
        spf.domain, from_domain, policy.aspf)
    dkim_ok = any(r.result == "pass" and aligned(r.domain, from_domain, policy.adkim) for r in dkim)
    found = {"policy_domain": policy_domain, "published": policy, "spf_aligned": spf_ok, "dkim_aligned": dkim_ok}
    if spf_ok or dkim_ok:
        how = "aligned SPF and DKIM" if spf_ok and dkim_ok else ("aligned SPF" if spf_ok else "aligned DKIM")
        return DMARCResult("pass", from_domain, applied, "none", how, **found)
    return DMARCResult("fail", from_domain, applied, applied, "neither SPF nor DKIM aligned", **found)
