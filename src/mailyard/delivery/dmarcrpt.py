"""DMARC aggregate reports (RFC 7489 7.2): what this server saw of each
domain's mail, told to the domain once a day.

Every message checked on the MX port whose From domain publishes a DMARC
record with ``rua=`` is one line in ``DATA/dmarc-reports/YYYY-MM-DD.jsonl``
(UTC day, delivery/dailylog.py): the client address, the From and envelope
domains, the SPF and DKIM results, the DMARC verdict and the policy that
applied. After the day ends the queue runner (dailyreports.py) folds the
lines into one report per policy domain, in the XML format of RFC 7489
Appendix C (records grouped by identical rows, with their count), and sends
it gzipped (7.2.1.1: ``application/gzip``, file
``receiver!domain!begin!end.xml.gz``) to the ``mailto:`` addresses of the
record's ``rua``, through the outbound queue (so it is DKIM-signed and
retried as any message). A destination outside the policy domain's
organisational domain receives reports only when it says so in DNS (7.1:
``DOMAIN._report._dmarc.DEST``); a ``!size`` limit on a URI is honoured (a
report larger than it is not sent there).
"""

from __future__ import annotations

import gzip
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from ..mailauth.dkim import DKIMResult
from ..mailauth.dmarc import DMARCResult, organizational_domain
from ..mailauth.spf import SPFResult
from .dailylog import DailyLog, day_bounds, day_of, report_mail
from .tlsrpt import mailto_addresses

_SIZE = re.compile(r"^(\d+)([kmgt]?)$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
# RFC 7489 Appendix C: the result values each element allows.
_DKIM_RESULTS = {"none", "pass", "fail", "policy", "neutral", "temperror", "permerror"}
_SPF_RESULTS = {"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"}


def report_destinations(rua: str) -> list[tuple[str, int | None]]:
    """The ``mailto:`` addresses of a ``rua`` tag with their size limits
    (RFC 7489 6.4: ``mailto:a@b.example!10m``; None: no limit). Other URI
    schemes are left out."""
    out: list[tuple[str, int | None]] = []
    for uri in rua.split(","):
        uri = uri.strip()
        limit: int | None = None
        base, bang, size = uri.rpartition("!")
        if bang and (m := _SIZE.match(size)):
            uri, limit = base, int(m.group(1)) * _UNITS[m.group(2).lower()]
        out.extend((address, limit) for address in mailto_addresses([uri]))
    return out


def needs_verification(policy_domain: str, address: str) -> bool:
    """RFC 7489 7.1: a destination outside the policy domain's organisational
    domain must agree in DNS before it gets reports."""
    dest = address.rpartition("@")[2].lower()
    return organizational_domain(dest) != organizational_domain(policy_domain)


def verification_name(policy_domain: str, address: str) -> str:
    """The TXT name of RFC 7489 7.1 (``DOMAIN._report._dmarc.DEST``)."""
    return f"{policy_domain.lower()}._report._dmarc.{address.rpartition('@')[2].lower()}"


def verified(records: Iterable[str]) -> bool:
    """RFC 7489 7.1: at least one record there begins ``v=DMARC1``."""
    return any(r.strip().startswith("v=DMARC1") for r in records)


# Lines one process records for one policy domain in one day: a sender that
# publishes rua= decides how much of its mail is recorded, so the day's file
# (read whole when the report is built) is bounded.
MAX_LINES_PER_DOMAIN = 20_000


class DMARCReports(DailyLog):
    """The day's DMARC evaluations (module docstring)."""

    def __init__(self, directory: Path, clock: Callable[[], float] = time.time) -> None:
        super().__init__(directory, clock)
        self._counts: dict[tuple[str, str], int] = {}  # (day, policy domain) -> lines recorded here

    def record(self, *, ip: str, envelope_from: str, envelope_to: str, dmarc: DMARCResult,
               spf: SPFResult | None, dkim: Sequence[DKIMResult]) -> None:
        """One message's evaluation; nothing when its domain asks for no
        reports, or past MAX_LINES_PER_DOMAIN for the day."""
        policy = dmarc.published
        if policy is None or not policy.rua or not dmarc.policy_domain:
            return
        day = day_of(self.clock())
        key = (day, dmarc.policy_domain)
        if key not in self._counts:
            self._counts = {k: v for k, v in self._counts.items() if k[0] == day}  # days past are done
        if self._counts.get(key, 0) >= MAX_LINES_PER_DOMAIN:
            return
        self._counts[key] = self._counts.get(key, 0) + 1
        self.append({
            "ip": ip, "policy_domain": dmarc.policy_domain, "header_from": dmarc.from_domain,
            "envelope_from": envelope_from.rpartition("@")[2].lower(), "envelope_to": envelope_to.lower(),
            "result": dmarc.result, "disposition": dmarc.disposition, "applied": dmarc.policy,
            "dkim_aligned": dmarc.dkim_aligned, "spf_aligned": dmarc.spf_aligned,
            "dkim": [[r.domain, r.selector, r.result] for r in dkim],
            "spf": [spf.domain, "helo" if spf.identity == "helo" else "mfrom", spf.result] if spf else None,
            "policy": {"p": policy.p, "sp": policy.sp, "pct": policy.pct, "adkim": policy.adkim,
                       "aspf": policy.aspf, "fo": policy.fo, "rua": policy.rua},
        })


def _text(parent: ET.Element, tag: str, value: object) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = str(value)
    return element


def _row_key(line: dict[str, Any]) -> tuple:
    spf = line.get("spf") or ["", "mfrom", "none"]
    return (
        str(line.get("ip", "")), str(line.get("header_from", "")), str(line.get("envelope_from", "")),
        str(line.get("envelope_to", "")), str(line.get("disposition", "none")),
        bool(line.get("dkim_aligned")), bool(line.get("spf_aligned")),
        line.get("result") == "fail" and line.get("disposition") != line.get("applied"),
        tuple(tuple(str(x) for x in d) for d in line.get("dkim") or ()),
        tuple(str(x) for x in spf),
    )


def build_reports(day: str, lines: Iterable[dict[str, Any]], *, organization: str,
                  contact: str) -> dict[str, tuple[bytes, str]]:
    """One RFC 7489 Appendix C report per policy domain from a day's
    ``lines``: ``{domain: (xml, rua)}``, the rua of the newest record seen."""
    rows: dict[str, Counter[tuple]] = {}
    policies: dict[str, dict[str, Any]] = {}
    for line in lines:
        domain = str(line.get("policy_domain", "")).lower()
        policy = line.get("policy")
        if not domain or not isinstance(policy, dict):
            continue
        rows.setdefault(domain, Counter())[_row_key(line)] += 1
        policies[domain] = policy
    begin, end = day_bounds(day)
    out: dict[str, tuple[bytes, str]] = {}
    for domain in sorted(rows):
        policy = policies[domain]
        feedback = ET.Element("feedback")
        meta = ET.SubElement(feedback, "report_metadata")
        _text(meta, "org_name", organization)
        _text(meta, "email", contact)
        _text(meta, "report_id", f"{day}.{domain}.{uuid.uuid4().hex[:16]}")
        span = ET.SubElement(meta, "date_range")
        _text(span, "begin", begin)
        _text(span, "end", end)
        published = ET.SubElement(feedback, "policy_published")
        _text(published, "domain", domain)
        for tag in ("adkim", "aspf", "p", "sp", "pct", "fo"):
            _text(published, tag, policy.get(tag, ""))
        for key, count in sorted(rows[domain].items(), key=lambda item: (-item[1], item[0])):
            ip, header_from, envelope_from, envelope_to, disposition, dkim_ok, spf_ok, sampled, dkims, spf = key
            record = ET.SubElement(feedback, "record")
            row = ET.SubElement(record, "row")
            _text(row, "source_ip", ip)
            _text(row, "count", count)
            evaluated = ET.SubElement(row, "policy_evaluated")
            _text(evaluated, "disposition", disposition)
            _text(evaluated, "dkim", "pass" if dkim_ok else "fail")
            _text(evaluated, "spf", "pass" if spf_ok else "fail")
            if sampled:
                # RFC 7489 6.6.4: pct= let this message off with a weaker policy
                reason = ET.SubElement(evaluated, "reason")
                _text(reason, "type", "sampled_out")
            identifiers = ET.SubElement(record, "identifiers")
            if envelope_to:
                _text(identifiers, "envelope_to", envelope_to)
            _text(identifiers, "header_from", header_from)
            results = ET.SubElement(record, "auth_results")
            for d_domain, selector, result in dkims:
                dkim = ET.SubElement(results, "dkim")
                _text(dkim, "domain", d_domain)
                _text(dkim, "selector", selector)
                _text(dkim, "result", result if result in _DKIM_RESULTS else "neutral")
            s_domain, scope, result = spf
            spf_el = ET.SubElement(results, "spf")
            _text(spf_el, "domain", s_domain or envelope_from or header_from)
            _text(spf_el, "scope", scope)
            _text(spf_el, "result", result if result in _SPF_RESULTS else "none")
        xml = ET.tostring(feedback, encoding="utf-8", xml_declaration=True)
        out[domain] = (xml, str(policy.get("rua", "")))
    return out


def report_message(xml: bytes, *, policy_domain: str, submitter: str, sender: str,
                   recipients: Sequence[str]) -> bytes:
    """The report as mail (RFC 7489 7.2.1.1): the Subject naming the domain,
    the submitter and the report id, a short text part and the gzipped XML
    as ``application/gzip``."""
    root = ET.fromstring(xml)
    report_id = root.findtext("report_metadata/report_id") or uuid.uuid4().hex
    begin = root.findtext("report_metadata/date_range/begin")
    end = root.findtext("report_metadata/date_range/end")
    msg = report_mail(sender=sender, recipients=recipients, policy_domain=policy_domain, submitter=submitter,
                      report_id=report_id)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834 5: nothing answers it
    msg.set_content(f"This is a DMARC aggregate report from {submitter} for {policy_domain} (RFC 7489).\n")
    msg.add_attachment(gzip.compress(xml, mtime=0), maintype="application", subtype="gzip",
                       filename=f"{submitter}!{policy_domain}!{begin}!{end}.xml.gz")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
