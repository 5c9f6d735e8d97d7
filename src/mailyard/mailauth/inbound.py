"""The inbound checks of the MX port, together: SPF (MAIL FROM and HELO),
DKIM (until a signature of the From domain passes), ARC (the chain, RFC 8617), DMARC, and the one Authentication-Results field that
records them (RFC 8601).

``check_message`` is blocking (dkimpy, pyspf, DNS through
``dnscache.Resolver``); ``net/smtp.py`` runs it at the end of DATA in a
worker process (``pool.CheckPool``) or on ``InboundChecker``'s threads, so
the event loop keeps serving everyone else. Its answer is an
``InboundVerdict``: the field to prepend, the message with forged fields
claiming this server's authserv-id removed, and what DMARC asks for.
"""

from __future__ import annotations

import asyncio
import functools
import random
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..message.address import canonical_domain, iter_mailboxes, parse_address_list
from ..message.headers import split_fields, split_plain_fields
from ..message.parse import header_end, split_header_body
from . import arc, dkim, dmarc, spf
from .authresults import format_header, resinfo, resinfo_kept, resinfo_props, strip_ours
from .dnscache import CacheOnly, NotCached, Resolver


@dataclass
class InboundVerdict:
    message: bytes  # the message with forged Authentication-Results removed
    header: bytes  # the Authentication-Results field to prepend
    spf: spf.SPFResult
    helo: spf.SPFResult
    dkim: list[dkim.DKIMResult] = field(default_factory=list)
    dmarc: dmarc.DMARCResult | None = None
    arc: arc.ARCResult | None = None

    @property
    def disposition(self) -> str:
        """``none``, ``quarantine`` or ``reject``: what the From domain's DMARC policy asks."""
        return self.dmarc.disposition if self.dmarc is not None else "none"


# The longest text kept in a cache for a sender's stream of mail: a From
# field value (``_domains_of``), or the texts of a DKIM or DMARC result
# together (its Authentication-Results line, ``resinfo_kept``). A
# real sender's is well under this (a domain name has at most 253 octets, RFC
# 1035 2.3.4), while a hostile signature field can be folded over megabytes,
# and the cache bounds entries, not octets.
KEPT_MAX = 1024


def _domains_of(value: bytes) -> tuple[str, ...]:
    """The domains of the addresses in one From field's value (a sender's
    stream of mail repeats it: parsed once, when at most ``KEPT_MAX``
    octets; the cache bounds entries, not octets, and a hostile From can be
    folded over megabytes)."""
    return _kept_domains_of(value) if len(value) <= KEPT_MAX else _parse_domains(value)


@functools.lru_cache(maxsize=1024)
def _kept_domains_of(value: bytes) -> tuple[str, ...]:
    return _parse_domains(value)


# What may be the domain of a From address for DMARC (RFC 7489 3.2: a DNS
# name): at most 253 octets of no space, quote, bracket or other special;
# anything else the address parser returns (a value it could not read
# whole, a domain literal) names no domain a policy can be looked up for.
_DOMAIN = re.compile(r"[^\s\"<>()\[\]@,;:\\]{1,253}")


def _parse_domains(value: bytes) -> tuple[str, ...]:
    text = value.decode("utf-8", "replace")
    out = []
    for m in iter_mailboxes(parse_address_list(text)):
        local, at, domain = m.addr_spec.rpartition("@")
        if at and local and _DOMAIN.fullmatch(domain):
            out.append(domain)
    return tuple(out)


def from_domains(message: bytes, fields: list[tuple[str, bytes]] | None = None,
                 index: dict[str, list[int]] | None = None) -> list[str]:
    """The domains of the RFC5322.From addresses (RFC 7489 3.1); ``fields``:
    the message's header fields when the caller has them already, ``index``:
    their positions by lower-case name (``dkim.field_index``)."""
    if fields is None:
        fields = split_fields(split_header_body(message)[0])
    out: list[str] = []
    if index is not None:
        for i in reversed(index.get("from", ())):
            out.extend(_domains_of(fields[i][1]))
        return out
    for name, value in fields:
        if name.lower() == "from":
            out.extend(_domains_of(value))
    return out


def check_message(
    resolver: Resolver,
    message: bytes,
    *,
    authserv_id: str,
    ip: str,
    helo: str,
    reverse_path: str,
    rng: random.Random | None = None,
) -> InboundVerdict:
    """Run every check on ``message`` as received from ``ip`` (see module doc)."""
    # one split of the header for every check (and for strip_ours)
    header, body = split_header_body(message)
    stripped = strip_ours(message, authserv_id, (header, body))
    if stripped is not message:
        message = stripped
        header, body = split_header_body(message)
    helo_result = spf.check_helo(resolver, ip, helo)
    if reverse_path:
        mailfrom = spf.check_host(resolver, ip, reverse_path, helo)
    else:
        # RFC 7208 2.4: a null reverse-path is checked as postmaster@HELO
        mailfrom = spf.SPFResult(helo_result.result, "mailfrom", helo_result.domain, helo_result.sender,
                                 helo_result.explanation)
    # one parse of the header, and one index of its names, for every check;
    # a header of fields only (RFC 5322 2.2), the common one, is split with
    # one match per field and need not be looked at again by DKIM
    plain = split_plain_fields(header)
    fields = plain if plain is not None else split_fields(header)
    index = dkim.field_index(fields)
    authors = from_domains(message, fields, index)
    # DMARC needs one aligned passing signature: with one From domain,
    # DKIM stops at the first of its signatures that passes (dkim.verify)
    # (as A-labels, the form of d=: RFC 8616 4)
    author = canonical_domain(authors[0]) if authors else ""
    single = author if author and (len(authors) == 1 or all(canonical_domain(d) == author for d in authors)) \
        else None
    dkim_results = dkim.verify(message, resolver.txt, parsed=(fields, body), author_domain=single, index=index,
                               only_fields=plain is not None)
    arc_result = arc.verify(message, resolver.txt, fields=fields, index=index)
    dmarc_result = dmarc.evaluate(resolver, authors, mailfrom, dkim_results, rng=rng)
    # the lines other than DKIM's (whose header.b differs in every message)
    # repeat for a sender's stream of mail: made once (resinfo_kept)
    results = [
        resinfo_kept("spf", mailfrom.result, mailfrom.explanation if mailfrom.result != "pass" else "",
                     (("smtp.mailfrom", mailfrom.sender),)),
        resinfo_kept("spf", helo_result.result, "", (("smtp.helo", helo),)) if helo else None,
    ]
    lines = [r for r in results if r]
    if dkim_results:
        for r in dkim_results:
            # all but header.b repeat for a signer's stream of mail (RFC 8601 2.7.1, RFC 6008); d=, s=
            # and a= are the message's own text: only short ones are kept (KEPT_MAX)
            props = (("header.d", r.domain), ("header.s", r.selector), ("header.a", r.algorithm))
            made = resinfo_kept if len(r.domain) + len(r.selector) + len(r.algorithm) + len(r.reason) <= KEPT_MAX \
                else resinfo
            lines.append(made("dkim", r.result, r.reason, props) + resinfo_props((("header.b", r.b_prefix),)))
    else:
        lines.append(resinfo("dkim", "none"))
    # RFC 8617 4.4 / RFC 8601 2.7: the chain validation status, which the
    # seal of a forwarded copy carries on as cv= (arc.seal)
    lines.append(resinfo_kept("arc", arc_result.result, arc_result.reason))
    reason = dmarc_result.reason
    if dmarc_result.result == "fail":
        reason += f"; p={dmarc_result.policy} dis={dmarc_result.disposition}"
    made = resinfo_kept if len(dmarc_result.from_domain) + len(reason) <= KEPT_MAX else resinfo
    lines.append(made("dmarc", dmarc_result.result, reason, (("header.from", dmarc_result.from_domain),)))
    return InboundVerdict(message, format_header(authserv_id, lines), mailfrom, helo_result, dkim_results,
                          dmarc_result, arc_result)


# A message at most this large is first checked on the event loop from the
# resolver's cache alone (about 0.13 ms of CPU for 1 KB with two
# signatures; the body hash grows with the size, so larger ones always go
# to a thread).
INLINE_MAX = 64 * 1024
# ... and only when its header holds at most this many octets and this many
# DKIM-Signature fields, and no ARC set: every signature the fast path does
# not pass, and every ARC set, is verified by dkimpy (a millisecond or more
# each, over the whole message), which must not hold up the event loop.
INLINE_HEADER_MAX = 16 * 1024
INLINE_SIGNATURES = 2


def cheap_to_check(message: bytes) -> bool:
    """Whether ``message``'s check is bounded enough to run on the event
    loop (see ``INLINE_MAX``): a look at the header's field names only. A
    name counted in a folded value (never at a line start) cannot be, so the
    count errs, if at all, towards the thread."""
    if len(message) > INLINE_MAX:
        return False
    end, _body = header_end(message)
    if end > INLINE_HEADER_MAX:
        return False
    header = b"\n" + message[:end].lower()
    return header.count(b"\ndkim-signature") <= INLINE_SIGNATURES and b"\narc-" not in header


class InboundChecker:
    """The checks as the MX port runs them. A small message whose DNS
    answers are all cached (a sender seen in the last minutes) and whose
    check is bounded (``cheap_to_check``: at most two DKIM signatures, no
    ARC set) is checked on the event loop at once: a thread hop costs more
    than the check, and a check thread contends with the loop for the
    interpreter lock. Any other
    runs ``check_message`` on a small thread pool of its own, so at most
    ``workers`` messages are checked at a time (a check holds a few copies of
    the message: dkimpy's parse and its canonical body) and the event loop's
    default executor stays free."""

    def __init__(self, resolver: Resolver, authserv_id: str, workers: int = 2) -> None:
        self.resolver = resolver
        self.authserv_id = authserv_id
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mailauth")
        # the Public Suffix List (RFC 7489 3.2) is read now, as the server
        # starts, rather than by the first message's check on the event loop
        dmarc.load_public_suffixes()

    async def check(self, message: bytes, *, ip: str, helo: str, reverse_path: str) -> InboundVerdict:
        if cheap_to_check(message):
            try:
                return check_message(CacheOnly(self.resolver), message, authserv_id=self.authserv_id,  # type: ignore[arg-type]
                                     ip=ip, helo=helo, reverse_path=reverse_path)
            except NotCached:
                pass
        call = functools.partial(check_message, self.resolver, message, authserv_id=self.authserv_id, ip=ip,
                                 helo=helo, reverse_path=reverse_path)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
