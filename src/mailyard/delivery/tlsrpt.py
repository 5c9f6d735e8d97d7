"""SMTP TLS Reporting (RFC 8460): what happened to outgoing TLS, told to
the receiving domains once a day.

Each outgoing session to a domain with a TLS policy (MTA-STS, delivery/
mtasts.py, or DANE, delivery/dane.py) is one line in
``DATA/tlsrpt/YYYY-MM-DD.jsonl`` (UTC day, delivery/dailylog.py): the
policy domain and type, success or the failure's result type (RFC 8460
4.3), the MX host and addresses.

After a day ends, ``build_reports`` folds its lines into one report per
policy domain in the JSON format of RFC 8460 4.4 (``policies``, each with
its ``summary`` counts and ``failure-details``), and the queue runner
(dailyreports.py) sends each, gzipped, as ``application/tlsrpt+gzip``
(5.3) to the ``mailto:`` addresses of the domain's ``_smtp._tls`` TXT
record (3: ``v=TLSRPTv1; rua=...``) through the outbound queue (so it is
DKIM-signed and retried as any message). ``https:`` report URIs are not
posted to. The day's file is then renamed ``.sent``.
"""

from __future__ import annotations

import datetime
import gzip
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from .dailylog import DailyLog, report_mail

log = logging.getLogger("mailyard.tlsrpt")

# RFC 8460 4.3 result types.
RESULT_TYPES = (
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired", "certificate-not-trusted",
    "validation-failure", "tlsa-invalid", "dnssec-invalid", "dane-required",
    "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
)
MEDIA_TYPE = "application/tlsrpt+gzip"


def parse_rua(records: Iterable[str]) -> list[str]:
    """The ``rua`` URIs of the ``_smtp._tls`` TXT records (RFC 8460 3):
    exactly one record starting ``v=TLSRPTv1``, ``rua`` a comma-separated
    list of URIs."""
    candidates = [r for r in records if r.startswith("v=TLSRPTv1")]
    if len(candidates) != 1:
        return []
    for item in candidates[0].split(";"):
        key, sep, value = item.strip().partition("=")
        if sep and key.strip() == "rua":
            return [u.strip() for u in value.split(",") if u.strip()]
    return []


def mailto_addresses(uris: Iterable[str]) -> list[str]:
    """The addresses of the ``mailto:`` URIs (any ``?query`` dropped)."""
    out = []
    for uri in uris:
        if uri.lower().startswith("mailto:"):
            from urllib.parse import unquote

            address = unquote(uri[7:].partition("?")[0]).strip()
            if address.count("@") == 1 and not any(c in address for c in "\r\n<>,; "):
                out.append(address)
    return out


def classify_tls_error(exc: BaseException) -> str:
    """The RFC 8460 4.3.2 result type for a failed TLS handshake."""
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        if code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
            return "certificate-host-mismatch"
        if code in (9, 10):  # not yet valid, expired
            return "certificate-expired"
        return "certificate-not-trusted"
    return "validation-failure"


class TLSReports(DailyLog):
    """Session results kept per UTC day in ``directory`` (module docstring)."""

    def record(self, *, policy_type: str, policy_domain: str, policy_strings: Iterable[str] = (),
               mx_patterns: Iterable[str] = (), success: bool, result_type: str | None = None,
               sending_ip: str | None = None, receiving_mx: str | None = None, receiving_ip: str | None = None,
               reason: str | None = None) -> None:
        """One session's outcome (a failure names its ``result_type``)."""
        line: dict[str, Any] = {
            "policy-type": policy_type, "policy-domain": policy_domain.lower(),
            "policy-string": list(policy_strings), "mx-host": list(mx_patterns), "ok": success,
        }
        if not success:
            line.update({"result-type": result_type or "validation-failure", "sending-mta-ip": sending_ip,
                         "receiving-mx-hostname": receiving_mx, "receiving-ip": receiving_ip,
                         "additional-information": (reason or "")[:300]})
        self.append(line)


def build_reports(day: str, lines: Iterable[dict[str, Any]], *, organization: str,
                  contact: str) -> dict[str, dict[str, Any]]:
    """One RFC 8460 4.4 report per policy domain from a day's ``lines``."""
    per_domain: dict[str, dict[tuple, dict[str, Any]]] = defaultdict(dict)
    for line in lines:
        domain = str(line.get("policy-domain", ""))
        key = (line.get("policy-type"), tuple(line.get("policy-string") or ()), tuple(line.get("mx-host") or ()))
        slot = per_domain[domain].setdefault(key, {"ok": 0, "failed": 0, "details": defaultdict(int)})
        if line.get("ok"):
            slot["ok"] += 1
        else:
            slot["failed"] += 1
            detail = tuple((k, line.get(k)) for k in ("result-type", "sending-mta-ip", "receiving-mx-hostname",
                                                      "receiving-ip", "additional-information"))
            slot["details"][detail] += 1
    reports = {}
    for domain, policies in sorted(per_domain.items()):
        items = []
        for (ptype, strings, mx), slot in policies.items():
            policy: dict[str, Any] = {"policy-type": ptype, "policy-string": list(strings), "policy-domain": domain}
            if mx:
                policy["mx-host"] = list(mx)
            details = []
            for detail, count in slot["details"].items():
                entry = {k: v for k, v in detail if v}
                entry["failed-session-count"] = count
                details.append(entry)
            item: dict[str, Any] = {
                "policy": policy,
                "summary": {"total-successful-session-count": slot["ok"],
                            "total-failure-session-count": slot["failed"]},
            }
            if details:
                item["failure-details"] = details
            items.append(item)
        reports[domain] = {
            "organization-name": organization,
            "date-range": {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"},
            "contact-info": contact,
            "report-id": f"{day}_{domain}_{uuid.uuid4().hex[:16]}",
            "policies": items,
        }
    return reports


def report_message(report: dict[str, Any], *, policy_domain: str, submitter: str, sender: str,
                   recipients: list[str]) -> bytes:
    """The report as mail (RFC 8460 5.3): multipart/report; report-type=tlsrpt,
    a text part and the gzipped JSON as ``application/tlsrpt+gzip``."""
    report_id = report["report-id"]
    msg = report_mail(sender=sender, recipients=recipients, policy_domain=policy_domain, submitter=submitter,
                      report_id=report_id)
    msg["TLS-Report-Domain"] = policy_domain  # RFC 8460 5.3
    msg["TLS-Report-Submitter"] = submitter
    msg.set_content(f"This is an aggregate TLS report from {submitter} for {policy_domain} (RFC 8460).\n")
    payload = gzip.compress(json.dumps(report, indent=1).encode("utf-8"), mtime=0)
    # RFC 8460 5.3: sender!policy-domain!begin-timestamp!end-timestamp!unique-id.json.gz
    begin = int(datetime.datetime.fromisoformat(report["date-range"]["start-datetime"].replace("Z", "+00:00"))
                .timestamp())
    end = int(datetime.datetime.fromisoformat(report["date-range"]["end-datetime"].replace("Z", "+00:00"))
              .timestamp())
    msg.add_attachment(payload, maintype="application", subtype="tlsrpt+gzip",
                       filename=f"{submitter}!{policy_domain}!{begin}!{end}!{report_id[-16:]}.json.gz")
    msg.set_type("multipart/report")
    msg.set_param("report-type", "tlsrpt")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
