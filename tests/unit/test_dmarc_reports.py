"""DMARC aggregate reports (delivery/dmarcrpt.py, RFC 7489 7.2 and
Appendix C): rua parsing with size limits, the external destination rule
(7.1), rows grouped with counts, sampled-out failures, the report mail."""

from __future__ import annotations

import email
import email.policy
import gzip
import random
import xml.etree.ElementTree as ET
from pathlib import Path

from mailyard.delivery.dailylog import day_bounds, day_of
from mailyard.delivery.dmarcrpt import (
    DMARCReports,
    build_reports,
    needs_verification,
    report_destinations,
    report_message,
    verification_name,
    verified,
)
from mailyard.mailauth.dkim import DKIMResult
from mailyard.mailauth.dmarc import evaluate
from mailyard.mailauth.dnscache import Answer, Resolver
from mailyard.mailauth.spf import SPFResult

NOON = 1796472000.0  # 2026-12-05 12:00 UTC


class FakeDNS(Resolver):
    def __init__(self, txt: dict[str, str]) -> None:
        super().__init__()
        self.records = txt

    def query(self, name: str, rdtype: str) -> Answer:
        value = self.records.get(name.rstrip(".").lower()) if rdtype == "TXT" else None
        return Answer((value,) if value else (), nxdomain=value is None)


def test_rua_addresses_and_size_limits_rfc7489_6_4() -> None:
    assert report_destinations("mailto:a@x.test, mailto:b@y.test!10m,https://r.test/x, mailto:c@z.test!500") == [
        ("a@x.test", None), ("b@y.test", 10 * 1024 * 1024), ("c@z.test", 500)]
    assert report_destinations("") == []


def test_external_destinations_must_confirm_rfc7489_7_1() -> None:
    assert not needs_verification("mail.example.test", "dmarc@example.test")
    assert needs_verification("example.test", "reports@vendor.test")
    assert verification_name("Example.test", "reports@Vendor.test") == "example.test._report._dmarc.vendor.test"
    assert verified(["v=DMARC1"]) and not verified(["v=spf1 -all"]) and not verified([])


def _record(reports: DMARCReports, ip: str, from_domain: str, spf_result: str, dkim_result: str,
            rng: random.Random | None = None) -> None:
    dns = FakeDNS({"_dmarc.example.test": "v=DMARC1; p=reject; pct=50; rua=mailto:d@example.test; fo=1"})
    spf = SPFResult(spf_result, "mailfrom", "example.test", "a@example.test")
    dkim = [DKIMResult(dkim_result, "example.test", "sel", "rsa-sha256")]
    result = evaluate(dns, [from_domain], spf, dkim, rng=rng)
    reports.record(ip=ip, envelope_from="a@example.test", envelope_to="dest.test", dmarc=result, spf=spf, dkim=dkim)


def test_rows_are_grouped_with_counts_and_sampling_is_reported(tmp_path: Path) -> None:
    reports = DMARCReports(tmp_path, clock=lambda: NOON)
    for _ in range(3):
        _record(reports, "192.0.2.1", "example.test", "pass", "pass")
    # a failure let off by pct=50 (RFC 7489 6.6.4): reported as sampled_out
    seed = next(n for n in range(100) if random.Random(n).randrange(100) >= 50)
    _record(reports, "198.51.100.7", "example.test", "fail", "fail", rng=random.Random(seed))
    _record(reports, "198.51.100.8", "other.test", "fail", "fail")  # no record there: not reported
    assert reports.days_due() == []  # the day has not ended
    lines = reports.lines(day_of(NOON))
    assert len(lines) == 4
    built = build_reports(day_of(NOON), lines, organization="receiver.test", contact="postmaster@receiver.test")
    assert set(built) == {"example.test"}
    xml, rua = built["example.test"]
    assert rua == "mailto:d@example.test"
    root = ET.fromstring(xml)
    assert root.findtext("report_metadata/org_name") == "receiver.test"
    begin, end = day_bounds(day_of(NOON))
    assert (root.findtext("report_metadata/date_range/begin"), root.findtext("report_metadata/date_range/end")) == (
        str(begin), str(end))
    assert [root.findtext(f"policy_published/{t}") for t in ("domain", "p", "sp", "pct", "fo")] == [
        "example.test", "reject", "reject", "50", "1"]
    records = root.findall("record")
    assert [(r.findtext("row/source_ip"), r.findtext("row/count")) for r in records] == [
        ("192.0.2.1", "3"), ("198.51.100.7", "1")]
    failed = records[1]
    assert failed.findtext("row/policy_evaluated/disposition") == "quarantine"
    assert failed.findtext("row/policy_evaluated/reason/type") == "sampled_out"
    assert records[0].find("row/policy_evaluated/reason") is None


def test_report_mail_rfc7489_7_2_1_1(tmp_path: Path) -> None:
    reports = DMARCReports(tmp_path, clock=lambda: NOON)
    _record(reports, "192.0.2.1", "example.test", "pass", "pass")
    xml, _ = build_reports(day_of(NOON), reports.lines(day_of(NOON)), organization="r.test",
                           contact="postmaster@r.test")["example.test"]
    raw = report_message(xml, policy_domain="example.test", submitter="mx.r.test", sender="dmarc-noreply@r.test",
                         recipients=["d@example.test"])
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    report_id = ET.fromstring(xml).findtext("report_metadata/report_id")
    assert msg["Subject"] == f"Report Domain: example.test Submitter: mx.r.test Report-ID: <{report_id}>"
    assert msg["Auto-Submitted"] == "auto-generated"
    (part,) = [p for p in msg.iter_attachments() if p.get_content_type() == "application/gzip"]
    begin, end = day_bounds(day_of(NOON))
    assert part.get_filename() == f"mx.r.test!example.test!{begin}!{end}.xml.gz"
    assert gzip.decompress(part.get_content()) == xml
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


def test_days_due_and_marking_sent(tmp_path: Path) -> None:
    now = [NOON]
    reports = DMARCReports(tmp_path, clock=lambda: now[0])
    _record(reports, "192.0.2.1", "example.test", "pass", "pass")
    now[0] += 86400
    assert reports.days_due() == [day_of(NOON)]
    reports.mark_sent(day_of(NOON))
    assert reports.days_due() == []
    # a line cut short by a crash is skipped
    path = tmp_path / f"{day_of(now[0])}.jsonl"
    path.write_text('{"ip": "1.2.3.4", "policy_domain": "exa')
    assert reports.lines(day_of(now[0])) == []


def test_a_domains_lines_per_day_are_bounded(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import mailyard.delivery.dmarcrpt as dmarcrpt

    monkeypatch.setattr(dmarcrpt, "MAX_LINES_PER_DOMAIN", 3)
    reports = DMARCReports(tmp_path, clock=lambda: NOON)
    for i in range(5):
        _record(reports, f"192.0.2.{i}", "example.test", "pass", "pass")
    assert len(reports.lines(day_of(NOON))) == 3
