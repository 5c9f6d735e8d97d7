"""The built-in score: named tests with points, SpamAssassin style, from the
reputation signals of the sending host (``signals.Signals``). Pure: signals
and scores in, tests out.

Every test name and its default points is in ``DEFAULT_SCORES``; ``[spam]
scores`` overrides them ("NAME=SCORE"), and ``[spam] dnsbl`` names the DNS
lists, each with its own points. The defaults are set so that no single
sign of a badly run but honest server (no reverse DNS, a HELO name that does
not resolve, an SPF softfail) reaches the Junk threshold (6.0) alone; a
listed address with a forged HELO or failed authentication does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_SCORES: dict[str, float] = {
    # The client address has no PTR record.
    "RDNS_NONE": 1.5,
    # A PTR exists but none of its names resolves back to the address
    # (forward-confirmed reverse DNS fails).
    "RDNS_NOT_CONFIRMED": 1.0,
    # The HELO/EHLO argument is neither a fully qualified domain name nor an
    # address literal (RFC 5321 4.1.1.1, 2.3.5).
    "HELO_SYNTAX": 2.0,
    # The HELO name has no address record.
    "HELO_NXDOMAIN": 1.0,
    # An address literal that is not the client's address.
    "HELO_LITERAL_MISMATCH": 1.5,
    # The HELO names this server or one of its domains or addresses (forged).
    "HELO_OURS": 4.0,
    # SPF of the MAIL FROM (RFC 7208 2.6).
    "SPF_FAIL": 2.5,
    "SPF_SOFTFAIL": 1.0,
    "SPF_PERMERROR": 0.5,
    # A DKIM signature that does not verify (RFC 6376 6.1), none that does.
    "DKIM_FAIL": 1.5,
    # DMARC (RFC 7489): fail whatever the domain's policy; pass lowers the score.
    "DMARC_FAIL": 2.5,
    "DMARC_PASS": -1.0,
}


@dataclass(frozen=True)
class ListEntry:
    """One line of ``[spam] dnsbl``: a DNS list zone, the answers that
    count (networks; empty: any in 127.0.0.0/8), its points and test name."""

    zone: str
    weight: float
    codes: tuple[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address], ...]
    name: str

    def matches(self, answer: str) -> bool:
        try:
            address = ipaddress.IPv4Address(answer)
        except ValueError:
            return False
        if is_list_error(answer):
            return False
        if not self.codes:
            return address in ipaddress.IPv4Network("127.0.0.0/8")
        return any(low <= address <= high for low, high in self.codes)


# Answers in 127.255.255.0/24 are the list's own errors, not listings:
# Spamhaus answers 127.255.255.252-255 for a typo'd query, a public resolver,
# an excessive querier; other lists follow the same convention.
LIST_ERRORS = ipaddress.IPv4Network("127.255.255.0/24")


def is_list_error(answer: str) -> bool:
    try:
        return ipaddress.IPv4Address(answer) in LIST_ERRORS
    except ValueError:
        return False


def _range(code: str) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    low, _, high = code.partition("-")
    if high:
        return ipaddress.IPv4Address(low.strip()), ipaddress.IPv4Address(high.strip())
    net = ipaddress.IPv4Network(low.strip(), strict=False)
    return net.network_address, net.broadcast_address


def parse_list(item: str) -> ListEntry:
    """``"zen.spamhaus.org 4.0 127.0.0.2-127.0.0.3,127.0.0.9 SPAMHAUS_SBL"``
    (the checks of config.py ``_check_spam`` ran already)."""
    parts = item.split()
    zone = parts[0].lower().strip(".")
    weight = float(parts[1])
    codes = tuple(_range(c) for c in parts[2].split(",")) if len(parts) >= 3 else ()
    if len(parts) >= 4:
        name = parts[3]
    else:
        kind = "DNSWL" if weight < 0 else "DNSBL"
        name = kind + "_" + zone.upper().replace(".", "_").replace("-", "_")
    return ListEntry(zone, weight, codes, name)


def parse_scores(items: Iterable[str]) -> dict[str, float]:
    """The defaults with the ``NAME=SCORE`` overrides applied."""
    scores = dict(DEFAULT_SCORES)
    for item in items:
        name, _, value = item.partition("=")
        scores[name.strip().upper()] = float(value)
    return scores


@dataclass
class Tests:
    """The tests that hit, in the order found, with their points."""

    hits: list[tuple[str, float]] = field(default_factory=list)

    def add(self, name: str, points: float) -> None:
        if all(n != name for n, _ in self.hits):
            self.hits.append((name, points))

    @property
    def score(self) -> float:
        return round(sum(p for _, p in self.hits), 2)

    def names(self) -> list[str]:
        return [n for n, _ in self.hits]


def builtin_tests(
    *,
    rdns: str,
    helo: str,
    listed: Sequence[ListEntry],
    spf: str | None,
    dkim: Sequence[str],
    dmarc: str | None,
    scores: Mapping[str, float],
) -> Tests:
    """The tests that hit: ``rdns`` and ``helo`` are the states of
    ``signals.py`` ("ok" for nothing wrong), ``listed`` the DNS list entries
    the client's address is on, the rest the mail-authentication results
    (None: not checked)."""
    tests = Tests()

    def hit(name: str) -> None:
        points = scores.get(name, 0.0)
        if points:
            tests.add(name, points)

    if rdns == "none":
        hit("RDNS_NONE")
    elif rdns == "not-confirmed":
        hit("RDNS_NOT_CONFIRMED")
    state_test = {"syntax": "HELO_SYNTAX", "nxdomain": "HELO_NXDOMAIN", "literal-mismatch": "HELO_LITERAL_MISMATCH",
                  "ours": "HELO_OURS"}
    if helo in state_test:
        hit(state_test[helo])
    for entry in listed:
        tests.add(entry.name, entry.weight)
    if spf in ("fail", "softfail", "permerror"):
        hit("SPF_" + spf.upper())
    if dkim and "pass" not in dkim and "fail" in dkim:
        hit("DKIM_FAIL")
    if dmarc == "fail":
        hit("DMARC_FAIL")
    elif dmarc == "pass":
        hit("DMARC_PASS")
    return tests
