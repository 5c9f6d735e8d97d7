"""SPF (RFC 7208): is the client allowed to send for the MAIL FROM domain,
and for its HELO name?

The evaluator is pyspf (module ``spf``), which implements the whole of RFC
7208 4 and 5 (macros, include/redirect, the limits of 4.6.4: at most 10
mechanisms and modifiers that query DNS, at most 2 void lookups, each
beyond that a ``permerror``). Its DNS goes through ``dnscache.Resolver``
(the configured name servers, cached) by overriding the one method through
which pyspf asks DNS, ``query.dns``; a temporary DNS failure is a
``temperror`` (RFC 7208 2.6.6).
"""

from __future__ import annotations

from dataclasses import dataclass

import spf as pyspf

from .dnscache import DNSTempError, Resolver

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")

# A result is a function of (client address, sender, HELO) and of DNS; the
# resolver keeps it at most this long, and never past the TTL of a DNS
# answer it rests on (``Resolver.remember``), so a sender's stream of mail
# is evaluated about once a minute rather than once a message.
RESULT_TTL = 60.0


@dataclass(frozen=True)
class SPFResult:
    result: str  # one of RESULTS (RFC 7208 2.6)
    identity: str  # "mailfrom" or "helo" (RFC 7208 2.3, 2.4)
    domain: str  # the domain checked
    sender: str  # the address checked (postmaster@HELO for a null reverse-path)
    explanation: str = ""


class _Query(pyspf.query):
    """pyspf's query, asking DNS through our resolver."""

    def __init__(self, resolver: Resolver, ip: str, sender: str, helo: str) -> None:
        super().__init__(i=ip, s=sender, h=helo, receiver="mailyard")
        self._resolver = resolver

    def dns(self, name, qtype, cnames=None, ignore_void=False):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201
        if not name:
            raise pyspf.PermError("empty domain name")
        name = str(name).rstrip(".").lower()
        if not all(0 < len(label) < 64 for label in name.split(".")):
            return []  # not a valid DNS name: nothing there
        try:
            answer = self._resolver.query(name, qtype)
        except DNSTempError as exc:
            raise pyspf.TempError(f"DNS {exc}") from exc
        result: list = []
        for text in answer.records:
            if qtype in ("TXT", "SPF"):
                result.append([text.encode("utf-8")])
            elif qtype == "MX":
                pref, _, exchange = text.partition(" ")
                result.append((int(pref), exchange.rstrip(".")))
            elif qtype == "PTR":
                result.append(text.rstrip("."))
            else:
                result.append(text)
        if not result and not ignore_void:
            # RFC 7208 4.6.4: at most two lookups that find nothing
            self.void_lookups += 1
            if self.void_lookups > pyspf.MAX_VOID_LOOKUPS:
                raise pyspf.PermError(f"Void lookup limit of {pyspf.MAX_VOID_LOOKUPS} exceeded")
        return result


def check_host(resolver: Resolver, ip: str, reverse_path: str, helo: str) -> SPFResult:
    """The SPF result for the MAIL FROM identity (RFC 7208 2.4), or for the
    HELO identity when the reverse-path is null (RFC 7208 2.4: then
    ``postmaster@HELO`` is checked)."""
    if reverse_path:
        identity, sender = "mailfrom", reverse_path
    else:
        identity, sender = "helo", f"postmaster@{helo}"
    domain = sender.rpartition("@")[2].lower()
    if not domain or not helo and identity == "helo":
        return SPFResult("none", identity, domain, sender, "no domain to check")
    return resolver.remember(("spf", ip, sender.lower(), helo.lower()), RESULT_TTL,
                             lambda: _evaluate(resolver, ip, sender, helo, identity, domain))


def _evaluate(resolver: Resolver, ip: str, sender: str, helo: str, identity: str, domain: str) -> SPFResult:
    query = _Query(resolver, ip, sender if identity == "mailfrom" else "", helo)
    try:
        result, _code, explanation = query.check()
    except Exception as exc:  # noqa: BLE001 - pyspf raising is a permerror of the record
        return SPFResult("permerror", identity, domain, sender, str(exc)[:200])
    result = {"error": "temperror", "unknown": "permerror", "ambiguous": "permerror"}.get(result, result)
    return SPFResult(result, identity, domain, sender, str(explanation)[:200])


def check_helo(resolver: Resolver, ip: str, helo: str) -> SPFResult:
    """The SPF result of the HELO identity (RFC 7208 2.3)."""
    sender = f"postmaster@{helo}"
    if not helo or "." not in helo or helo.startswith("["):
        return SPFResult("none", "helo", helo, sender, "HELO is not a domain name")
    return resolver.remember(("spf-helo", ip, "", helo.lower()), RESULT_TTL,
                             lambda: _evaluate(resolver, ip, sender, helo, "helo", helo.lower()))
