"""The pieces of MTA-STS (RFC 8461), DANE (RFC 7672) and TLS-RPT (RFC 8460)
that need no network: policy and record grammar, MX patterns, certificate
matching against TLSA records, report building."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.delivery import dane, mtasts, tlsrpt
from tests.integration.pki import CA


def test_policy_grammar() -> None:
    p = mtasts.parse_policy("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
                            "max_age: 604800\r\nfuture: ignored\r\n")
    assert (p.mode, p.mx, p.max_age) == ("enforce", ("mail.example.com", "*.example.net"), 604800)
    assert mtasts.parse_policy("version: STSv1\nmode: none\nmax_age: 1\n").mode == "none"  # LF alone, no mx
    assert mtasts.parse_policy("version: STSv1\nmode: testing\nmx: a\nmax_age: 9999999999\n").max_age == 31557600
    for bad in ("mode: enforce\nmx: a\nmax_age: 1\n",  # no version
                "version: STSv1\nmode: enforce\nmx: a\nmax_age: \u0661\n",  # digits are ASCII
                "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
                "version: STSv1\nmode: enforce\nmax_age: 1\n",  # enforce without mx
                "version: STSv1\nmode: enforce\nmx: a\nmax_age: -1\n",
                "version: STSv1\nmode: enforce\nmx: a\nmax_age: 1\ngarbage\n"):
        with pytest.raises(mtasts.PolicyError):
            mtasts.parse_policy(bad)


def test_mx_patterns() -> None:
    assert mtasts.mx_matches("mail.example.com", "MAIL.example.com.")
    assert mtasts.mx_matches("*.example.net", "mx1.example.net")
    assert not mtasts.mx_matches("*.example.net", "example.net")
    assert not mtasts.mx_matches("*.example.net", "a.b.example.net")  # one label only (RFC 8461 4.1)
    assert not mtasts.mx_matches("mail.example.com", "evilmail.example.com")


def test_txt_record() -> None:
    assert mtasts.parse_txt(["v=STSv1; id=20160831085700Z;"]) == "20160831085700Z"
    assert mtasts.parse_txt(["v=spf1 -all", "v=STSv1; id=abc"]) == "abc"
    assert mtasts.parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # RFC 8461 3.1: more than one
    assert mtasts.parse_txt(["v=STSv1; id=has-dash"]) is None
    assert mtasts.parse_txt(["v=STSv1"]) is None


def test_cached_policy_survives_a_restart(tmp_path: Path) -> None:
    text = "version: STSv1\r\nmode: enforce\r\nmx: mx.b.test\r\nmax_age: 100\r\n"
    now = [1000.0]
    first = mtasts.PolicyResolver(None, None, cache_dir=tmp_path, clock=lambda: now[0])  # type: ignore[arg-type]
    first._store(mtasts.Cached("b.test", "id1", mtasts.parse_policy(text), now[0]))
    again = mtasts.PolicyResolver(None, None, cache_dir=tmp_path, clock=lambda: now[0])  # type: ignore[arg-type]
    hit = again.cached("b.test")
    assert hit is not None and hit.sts_id == "id1" and hit.policy.mx == ("mx.b.test",)
    assert hit.fresh(1099.0) and not hit.fresh(1100.0)
    assert again.cached("../etc") is None  # names that are not domains are never files


# --- DANE ----------------------------------------------------------------------------
def _spki(cert) -> bytes:  # noqa: ANN001
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def test_dane_matching(tmp_path: Path) -> None:
    ca = CA(tmp_path)
    _, _, leaf = ca.issue("mx", ["mx.b.test"])
    chain = [leaf.public_bytes(Encoding.DER), ca.cert.public_bytes(Encoding.DER)]
    ee = dane.TLSA(3, 1, 1, hashlib.sha256(_spki(leaf)).digest())
    assert dane.verify(chain, [ee], ["anything.test"]) is None  # DANE-EE: no name check (RFC 7672 3.1.1)
    ee_full = dane.TLSA(3, 0, 2, hashlib.sha512(chain[0]).digest())
    assert dane.verify(chain, [ee_full], ["x"]) is None
    ee_exact = dane.TLSA(3, 1, 0, _spki(leaf))
    assert dane.verify(chain, [ee_exact], ["x"]) is None
    ta = dane.TLSA(2, 1, 1, hashlib.sha256(_spki(ca.cert)).digest())
    assert dane.verify(chain, [ta], ["mx.b.test"]) is None
    assert "not for" in dane.verify(chain, [ta], ["other.b.test"])  # DANE-TA: the name counts
    assert dane.verify(chain[:1], [ta], ["mx.b.test"]) == "no TLSA record matches the server's certificate"
    wrong = dane.TLSA(3, 1, 1, b"\0" * 32)
    assert dane.verify(chain, [wrong], ["mx.b.test"]) == "no TLSA record matches the server's certificate"
    # a DANE-TA anchor that did not sign the leaf
    other = CA(tmp_path / "other")
    forged = [chain[0], other.cert.public_bytes(Encoding.DER)]
    ta_other = dane.TLSA(2, 0, 1, hashlib.sha256(forged[1]).digest())
    assert "does not lead" in dane.verify(forged, [ta_other], ["mx.b.test"])
    # an expired leaf under DANE-TA is refused; under DANE-EE it is not checked
    _, _, old = ca.issue("old", ["mx.b.test"], expired=True)
    old_chain = [old.public_bytes(Encoding.DER), chain[1]]
    assert "expired" in dane.verify(old_chain, [ta], ["mx.b.test"])
    assert dane.verify(old_chain, [dane.TLSA(3, 1, 1, hashlib.sha256(_spki(old)).digest())], ["x"]) is None
    assert dane.verify([], [ee], ["x"]) == "the server sent no certificate"
    assert "cannot be read" in dane.verify([b"\x30\x03junk"], [ee], ["x"])


# --- TLS-RPT -----------------------------------------------------------------------
def test_rua() -> None:
    assert tlsrpt.parse_rua(["v=TLSRPTv1; rua=mailto:a@b.test,https://r.test/x"]) == [
        "mailto:a@b.test", "https://r.test/x"]
    assert tlsrpt.parse_rua(["v=TLSRPTv1;rua=mailto:a@b.test", "v=TLSRPTv1;rua=mailto:c@b.test"]) == []
    assert tlsrpt.mailto_addresses(["mailto:a@b.test", "https://x", "mailto:bad%0d%0aRcpt@x",
                                    "mailto:c%40d@e.test", "MAILTO:f@g.test?subject=x"]) == ["a@b.test", "f@g.test"]


def test_report_counts_and_details(tmp_path: Path) -> None:
    day_start = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC).timestamp()
    clock = [day_start + 3600]
    reports = tlsrpt.TLSReports(tmp_path, clock=lambda: clock[0])
    common = {"policy_type": "sts", "policy_domain": "B.test", "policy_strings": ["version: STSv1"],
              "mx_patterns": ["*.b.test"]}
    reports.record(**common, success=True)
    reports.record(**common, success=True)
    for _ in range(2):
        reports.record(**common, success=False, result_type="certificate-expired", sending_ip="192.0.2.1",
                       receiving_mx="mx.b.test", receiving_ip="192.0.2.9")
    reports.record(policy_type="tlsa", policy_domain="c.test", policy_strings=["3 1 1 00"], success=False,
                   result_type="validation-failure")
    assert reports.days_due() == []  # the day is not over
    clock[0] += 86400
    assert reports.days_due() == ["2026-12-01"]
    built = tlsrpt.build_reports("2026-12-01", reports.lines("2026-12-01"), organization="a.test",
                                 contact="postmaster@a.test")
    assert sorted(built) == ["b.test", "c.test"]
    (item,) = built["b.test"]["policies"]
    assert item["policy"] == {"policy-type": "sts", "policy-string": ["version: STSv1"], "policy-domain": "b.test",
                              "mx-host": ["*.b.test"]}
    assert item["summary"] == {"total-successful-session-count": 2, "total-failure-session-count": 2}
    assert item["failure-details"] == [{"result-type": "certificate-expired", "sending-mta-ip": "192.0.2.1",
                                        "receiving-mx-hostname": "mx.b.test", "receiving-ip": "192.0.2.9",
                                        "failed-session-count": 2}]
    assert built["b.test"]["date-range"] == {"start-datetime": "2026-12-01T00:00:00Z",
                                             "end-datetime": "2026-12-01T23:59:59Z"}
    reports.mark_sent("2026-12-01")
    assert reports.days_due() == []


# --- hostile input: only the documented errors ---------------------------------------

LINES = st.sampled_from(["version: STSv1", "mode: enforce", "mode: testing", "mx: *.b.test", "max_age: 86400",
                         "max_age: 1e9", "mx:", ":", "version:STSv1", "\x00", "mode: none"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.lists(LINES, max_size=8).map("\r\n".join)))
def test_policy_parser_fails_only_with_policy_error(text: str) -> None:
    try:
        policy = mtasts.parse_policy(text)
    except mtasts.PolicyError:
        return
    assert policy.mode in mtasts.MODES and 0 <= policy.max_age <= mtasts.MAX_AGE_LIMIT
    assert policy.mode == "none" or policy.mx


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=4))
def test_txt_and_rua_parsers_never_raise(records: list[str]) -> None:
    sts_id = mtasts.parse_txt(records)
    assert sts_id is None or (sts_id.isalnum() and len(sts_id) <= 32)
    for address in tlsrpt.mailto_addresses(tlsrpt.parse_rua(records)):
        assert address.count("@") == 1 and "\n" not in address
