"""The DNS records a mail domain served here needs, and a check of what DNS
publishes (``mailyard dns DOMAIN`` and ``mailyard dns check DOMAIN``).

``needed`` lists them as zone-file lines: MX (RFC 5321 5.1), SPF (RFC 7208
3: ``v=spf1 mx -all``, with the server's public addresses when known), the
DKIM keys of the active generation (RFC 6376 3.6.2, RFC 8463), DMARC (RFC
7489 6.1: ``p=quarantine`` with aggregate reports to postmaster), and the
SRV records by which mail clients find the submission, IMAP and POP3
services (RFC 6186 3, with the implicit-TLS names of RFC 8314 5.1), the
MTA-STS TXT record and policy host (RFC 8461 3), the TLS-RPT address (RFC
8460 3) and the autoconfig / autodiscover host names. ``check``
compares each with DNS: ``ok``, ``missing`` or ``different``.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from ..config import Config
from . import keys
from .dnscache import Resolver

TTL = 3600


@dataclass(frozen=True)
class Record:
    name: str  # owner name, without the final dot
    rdtype: str  # MX, TXT, SRV
    value: str  # the record's text (TXT unquoted)
    # Which existing records at ``name`` this one replaces: a TXT prefix
    # ("v=spf1"), or "" for any record of the type.
    kind: str = ""

    def zone_line(self) -> str:
        value = keys.txt_zone_value(self.value) if self.rdtype == "TXT" else self.value
        return f"{self.name}. {TTL} IN {self.rdtype} {value}"


def public_addresses(addresses: Sequence[str]) -> list[str]:
    """The addresses worth naming in SPF: neither loopback, wildcard nor private."""
    out = []
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if ip.is_global:
            out.append(str(ip))
    return out


def spf_record(addresses: Sequence[str]) -> str:
    parts = ["v=spf1", "mx"]
    for addr in public_addresses(addresses):
        parts.append(("ip6:" if ":" in addr else "ip4:") + addr)
    return " ".join(parts + ["-all"])


def policy_text(mode: str, mx: list[str], max_age: int) -> str:
    """A policy file (RFC 8461 3.2), CRLF line ends, as served by the webmail app."""
    lines = ["version: STSv1", f"mode: {mode}", *[f"mx: {m}" for m in mx], f"max_age: {max_age}"]
    return "".join(line + "\r\n" for line in lines)


def served_policy(mode: str, mx: str, max_age: int, hostname: str) -> str:
    """The policy this server serves for its domains (``[mta_sts]``: ``mx``
    comma-separated, empty for ``hostname``)."""
    patterns = [m.strip() for m in mx.split(",") if m.strip()] or [hostname.rstrip(".")]
    return policy_text(mode, patterns, max_age)


def policy_id(text: str) -> str:
    """The ``id`` of the ``_mta-sts`` TXT record for policy ``text``: a
    digest, so it changes whenever the policy does (RFC 8461 3.1)."""
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def needed(cfg: Config, domain: str, signing: keys.SigningKeys | None, addresses: Sequence[str] = ()) -> list[Record]:
    domain = domain.lower().rstrip(".")
    host = cfg.server.hostname.rstrip(".")
    addrs = list(addresses) + ([cfg.server.bind] if cfg.server.bind else [])
    out = [
        Record(domain, "MX", f"10 {host}."),
        Record(domain, "TXT", spf_record(addrs), "v=spf1"),
    ]
    if signing is not None:
        out += [Record(r.name, "TXT", r.text, "v=DKIM1") for r in keys.records(signing)]
    out.append(Record(f"_dmarc.{domain}", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}",
                      "v=DMARC1"))
    ports = cfg.ports
    for service, port in (("submission", ports.submission), ("submissions", ports.smtps), ("imap", ports.imap),
                          ("imaps", ports.imaps), ("pop3", ports.pop3), ("pop3s", ports.pop3s)):
        if port:
            out.append(Record(f"_{service}._tcp.{domain}", "SRV", f"0 1 {port} {host}."))
    sts = cfg.mta_sts
    policy = served_policy(sts.mode, sts.mx, sts.max_age, host)
    out += [
        # RFC 8461 3.1 and 3.2: the policy's id, and the web host that serves it
        Record(f"_mta-sts.{domain}", "TXT", f"v=STSv1; id={policy_id(policy)}", "v=STSv1"),
        Record(f"mta-sts.{domain}", "CNAME", f"{host}."),
        # RFC 8460 3: where other servers send their TLS reports
        Record(f"_smtp._tls.{domain}", "TXT", f"v=TLSRPTv1; rua=mailto:postmaster@{domain}", "v=TLSRPTv1"),
        # client autoconfiguration: Thunderbird's host and Outlook's (with its SRV record)
        Record(f"autoconfig.{domain}", "CNAME", f"{host}."),
        Record(f"autodiscover.{domain}", "CNAME", f"{host}."),
        Record(f"_autodiscover._tcp.{domain}", "SRV", f"0 1 443 {host}."),
    ]
    return out


def _normal(rdtype: str, text: str) -> str:
    text = text.strip()
    if rdtype == "TXT":
        return " ".join(p.strip() for p in text.split(";") if p.strip()).lower()
    return " ".join(text.lower().rstrip(".").split()).rstrip(".")


def check(resolver: Resolver, records: Sequence[Record]) -> list[tuple[str, Record, list[str]]]:
    """(status, record, what DNS has) for each record; status ``ok``,
    ``missing``, ``different`` or ``temperror`` (DNS did not answer)."""
    out = []
    for rec in records:
        try:
            found = list(resolver.query(rec.name, rec.rdtype).records)
        except Exception as exc:  # noqa: BLE001 - reported, the other records still checked
            out.append(("temperror", rec, [str(exc)]))
            continue
        if rec.kind:
            found = [f for f in found if f.lower().startswith(rec.kind.lower())]
        if any(_normal(rec.rdtype, f) == _normal(rec.rdtype, rec.value) for f in found):
            out.append(("ok", rec, found))
        else:
            out.append(("different" if found else "missing", rec, found))
    return out
