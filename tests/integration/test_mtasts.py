"""MTA-STS (RFC 8461) on outgoing mail, end to end: a.test sends to b.test
whose policy (served over HTTPS by a test policy server with a test CA's
certificate) says where its mail may go; the test DNS server publishes
``_mta-sts.b.test``. And the TLS-RPT (RFC 8460) results a.test records."""

from __future__ import annotations

import datetime
import email
import email.policy
import gzip
import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailyard.config import Config
from mailyard.delivery.tlsrpt import RESULT_TYPES
from mailyard.mailauth import records
from mailyard.store.api import NewRecipient

from .multihost import MultiHost, free_port
from .pki import CA, PolicyServer, TLSProxy

A, B, WEB = "127.0.0.2", "127.0.0.3", "127.0.0.5"
MESSAGE = (b"From: alice@a.test\r\nTo: bob@b.test\r\nSubject: sts\r\nMessage-ID: <sts1@a.test>\r\n"
           b"Date: Mon, 23 Nov 2026 08:00:00 +0000\r\n\r\nover verified TLS\r\n")


def policy(mode: str, *mx: str) -> str:
    return "version: STSv1\r\nmode: " + mode + "\r\n" + "".join(f"mx: {m}\r\n" for m in mx) + "max_age: 86400\r\n"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[MultiHost, CA, PolicyServer]]:
    hosts = MultiHost(tmp_path)
    hosts.dns.ttl = 0  # the tests change _mta-sts records: no resolver may keep them
    ca = CA(tmp_path / "pki")
    web_cert, web_key, _ = ca.issue("mta-sts.b.test", ["mta-sts.b.test"])
    web = PolicyServer(WEB, web_cert, web_key)
    hosts.dns.add("mta-sts.b.test", "A", WEB)
    try:
        yield hosts, ca, web
    finally:
        web.stop()
        hosts.stop()


def sender(hosts: MultiHost, ca: CA, web: PolicyServer) -> object:
    def configure(cfg: Config) -> None:
        cfg.mta_sts.https_port = web.port
        cfg.mta_sts.ca_file = str(ca.ca_file)
        cfg.mta_sts.fetch_timeout = 5.0
    return hosts.add("a.test", A, {"alice": "alice-pw-1"}, configure=configure)


def receiver(hosts: MultiHost, ca: CA | None) -> object:
    def configure(cfg: Config) -> None:
        if ca is not None:  # else the self-signed certificate of `init`
            cert, key, _ = ca.issue("mx.b.test", ["mx.b.test"])
            cfg.tls.cert, cfg.tls.key = str(cert), str(key)
    return hosts.add("b.test", B, {"bob": "bob-pw-1"}, configure=configure)


def enqueue(hosts: MultiHost) -> None:
    a = hosts.servers["a.test"]
    a.call(a.server.queue.enqueue(MESSAGE, "alice@a.test", [NewRecipient("bob@b.test")]))


def deferred_with(hosts: MultiHost, prefix: str) -> str:
    def seen() -> str | None:
        for entry in hosts.queue("a.test"):
            r = entry.recipients[0]
            if r.attempts >= 1 and r.last_reply and r.last_reply.startswith(prefix):
                return r.last_reply
        return None
    return hosts.wait_for(seen, what=f"a deferral {prefix}")  # type: ignore[return-value]


def tlsrpt_lines(hosts: MultiHost) -> list[dict]:
    directory = hosts.servers["a.test"].data_dir / "tlsrpt"
    out = []
    for path in sorted(directory.glob("*.jsonl")) if directory.is_dir() else []:
        out += [json.loads(line) for line in path.read_text().splitlines()]
    return out


def test_enforce_policy_with_mismatching_mx_defers_until_the_mx_matches(world) -> None:  # noqa: ANN001
    hosts, ca, web = world
    web.policies["mta-sts.b.test"] = policy("enforce", "mx.elsewhere.test")
    hosts.dns.add("_mta-sts.b.test", "TXT", '"v=STSv1; id=20261201a"')
    sender(hosts, ca, web)
    b = receiver(hosts, ca)
    enqueue(hosts)
    reply = deferred_with(hosts, "451 4.7.5")
    assert "mx.b.test does not match the MTA-STS policy of b.test" in reply
    assert b.server.stats["smtp_sessions"] == 0, "no connection to the MX outside the policy"
    assert ("mta-sts.b.test", "/.well-known/mta-sts.txt") in web.requests
    assert b.messages("bob@b.test") == []
    # The domain moves its policy to the real MX and announces a new id.
    web.policies["mta-sts.b.test"] = policy("enforce", "*.b.test")
    hosts.dns.remove("_mta-sts.b.test")
    hosts.dns.add("_mta-sts.b.test", "TXT", '"v=STSv1; id=20261201b"')
    (raw,) = hosts.wait_messages("bob@b.test")
    assert raw.endswith(b"over verified TLS\r\n")
    hosts.wait_for(lambda: not hosts.queue("a.test"), what="a.test's queue to empty")
    lines = tlsrpt_lines(hosts)
    assert any(not x["ok"] and x["result-type"] == "validation-failure"
               and x["receiving-mx-hostname"] == "mx.b.test" for x in lines)
    assert any(x["ok"] and x["policy-type"] == "sts" and x["mx-host"] == ["*.b.test"] for x in lines)
    # the policy is kept in the data directory under its id
    kept = json.loads((hosts.servers["a.test"].data_dir / "mta-sts" / "b.test.json").read_text())
    assert kept["id"] == "20261201b" and "mx: *.b.test" in kept["policy"]


def test_enforce_policy_refuses_an_untrusted_certificate(world) -> None:  # noqa: ANN001
    hosts, ca, web = world
    web.policies["mta-sts.b.test"] = policy("enforce", "mx.b.test")
    hosts.dns.add("_mta-sts.b.test", "TXT", '"v=STSv1; id=1"')
    sender(hosts, ca, web)
    b = receiver(hosts, None)  # a self-signed certificate: not valid under the policy
    enqueue(hosts)
    reply = deferred_with(hosts, "421 4.7.0")
    assert "certificate" in reply.lower()
    assert b.messages("bob@b.test") == []
    lines = tlsrpt_lines(hosts)
    assert any(not x["ok"] and x["result-type"] == "certificate-not-trusted" for x in lines), lines


def test_testing_policy_delivers_and_reports(world) -> None:  # noqa: ANN001
    hosts, ca, web = world
    web.policies["mta-sts.b.test"] = policy("testing", "mx.elsewhere.test")
    hosts.dns.add("_mta-sts.b.test", "TXT", '"v=STSv1; id=1"')
    sender(hosts, ca, web)
    receiver(hosts, None)
    enqueue(hosts)
    hosts.wait_messages("bob@b.test")
    lines = tlsrpt_lines(hosts)
    assert any(not x["ok"] and x["result-type"] == "validation-failure" for x in lines), lines


def test_unfetchable_policy_is_no_policy(world) -> None:  # noqa: ANN001
    hosts, ca, web = world
    web.content_type = "text/html"  # RFC 8461 3.2: must be text/plain
    web.policies["mta-sts.b.test"] = policy("enforce", "mx.elsewhere.test")
    hosts.dns.add("_mta-sts.b.test", "TXT", '"v=STSv1; id=1"')
    sender(hosts, ca, web)
    receiver(hosts, None)
    enqueue(hosts)
    hosts.wait_messages("bob@b.test")  # RFC 8461 5.1: as though the domain had no policy
    lines = tlsrpt_lines(hosts)
    assert any(x["result-type"] == "sts-policy-invalid" for x in lines if not x["ok"]), lines


def check_report_schema(report: dict) -> None:
    """The fields RFC 8460 4.4 requires, with their JSON types."""
    assert set(report) >= {"organization-name", "date-range", "contact-info", "report-id", "policies"}
    assert isinstance(report["organization-name"], str) and isinstance(report["report-id"], str)
    rng = report["date-range"]
    for key in ("start-datetime", "end-datetime"):
        datetime.datetime.strptime(rng[key], "%Y-%m-%dT%H:%M:%SZ")  # RFC 3339 date-time, UTC
    assert isinstance(report["policies"], list) and report["policies"]
    for item in report["policies"]:
        policy = item["policy"]
        assert policy["policy-type"] in ("sts", "tlsa", "no-policy-found")
        assert isinstance(policy["policy-string"], list) and all(isinstance(x, str) for x in policy["policy-string"])
        assert isinstance(policy["policy-domain"], str)
        summary = item["summary"]
        assert isinstance(summary["total-successful-session-count"], int)
        assert isinstance(summary["total-failure-session-count"], int)
        for detail in item.get("failure-details", []):
            assert detail["result-type"] in RESULT_TYPES
            assert isinstance(detail["failed-session-count"], int) and detail["failed-session-count"] >= 1
            for key in ("sending-mta-ip", "receiving-ip"):
                if key in detail:
                    ipaddress.ip_address(detail[key])
        assert summary["total-failure-session-count"] == sum(d["failed-session-count"]
                                                             for d in item.get("failure-details", []))


def test_daily_tls_report_is_mailed_to_the_rua(world) -> None:  # noqa: ANN001
    hosts, ca, web = world
    web.policies["mta-sts.b.test"] = policy("testing", "mx.elsewhere.test")
    hosts.dns.add("_mta-sts.b.test", "TXT", '"v=STSv1; id=1"')
    hosts.dns.add("_smtp._tls.b.test", "TXT", '"v=TLSRPTv1; rua=mailto:tls-reports@b.test,https://r.b.test/x"')
    a = sender(hosts, ca, web)
    hosts.add("b.test", B, {"bob": "bob-pw-1", "tls-reports": "tr-pw-1"})
    enqueue(hosts)
    hosts.wait_messages("bob@b.test")
    day = tlsrpt_lines(hosts)[0]["t"]
    day = datetime.datetime.fromtimestamp(day, datetime.UTC).strftime("%Y-%m-%d")
    assert a.call(a.server.queue.send_tls_reports(day)) == 1
    (raw,) = hosts.wait_messages("tls-reports@b.test")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == "tlsrpt"
    assert msg["TLS-Report-Domain"] == "b.test" and msg["TLS-Report-Submitter"] == "mx.a.test"
    assert msg["Subject"].startswith("Report Domain: b.test Submitter: mx.a.test Report-ID: <")
    (part,) = [p for p in msg.iter_attachments() if p.get_content_type() == "application/tlsrpt+gzip"]
    assert re.fullmatch(r"mx\.a\.test!b\.test!\d+!\d+!\w+\.json\.gz", part.get_filename())
    report = json.loads(gzip.decompress(part.get_content()))
    check_report_schema(report)
    (item,) = report["policies"]
    assert item["policy"] == {"policy-type": "sts", "policy-domain": "b.test", "mx-host": ["mx.elsewhere.test"],
                              "policy-string": ["version: STSv1", "mode: testing", "mx: mx.elsewhere.test",
                                                "max_age: 86400"]}
    assert item["summary"]["total-failure-session-count"] >= 1
    assert item["failure-details"][0]["receiving-mx-hostname"] == "mx.b.test"
    # the day is done: its file is kept as .sent and not reported again
    assert (hosts.servers["a.test"].data_dir / "tlsrpt" / f"{day}.sent").exists()


@pytest.mark.parametrize("attack", ["redirect", "oversize"])
def test_redirected_or_oversized_policy_is_not_used(world, attack: str) -> None:  # noqa: ANN001
    hosts, ca, web = world
    text = policy("enforce", "mx.elsewhere.test")
    if attack == "redirect":  # RFC 8461 3.3: redirects MUST NOT be followed
        web.policies["mta-sts.b.test"] = text
        web.redirect = f"https://mta-sts.b.test:{web.port}/.well-known/mta-sts.txt"
    else:
        web.policies["mta-sts.b.test"] = text + "x-padding: " + "p" * 70000 + "\r\n"
    hosts.dns.add("_mta-sts.b.test", "TXT", '"v=STSv1; id=1"')
    sender(hosts, ca, web)
    receiver(hosts, None)
    enqueue(hosts)
    hosts.wait_messages("bob@b.test")  # no policy in force: delivered as before
    failed = [x["result-type"] for x in tlsrpt_lines(hosts) if not x["ok"]]
    assert failed == ["sts-policy-fetch-error" if attack == "redirect" else "sts-policy-invalid"]
    assert len(web.requests) == 1, "the redirect is not followed"


def test_testing_policy_with_an_untrusted_certificate_delivers_and_reports(world) -> None:  # noqa: ANN001
    hosts, ca, web = world
    web.policies["mta-sts.b.test"] = policy("testing", "mx.b.test")
    hosts.dns.add("_mta-sts.b.test", "TXT", '"v=STSv1; id=1"')
    sender(hosts, ca, web)
    b = receiver(hosts, None)  # self-signed: fails the policy's check, RFC 8461 5.2 delivers anyway
    enqueue(hosts)
    hosts.wait_messages("bob@b.test")
    lines = tlsrpt_lines(hosts)
    assert [x["result-type"] for x in lines if not x["ok"]] == ["certificate-not-trusted"], lines
    assert b.server.stats["smtp_sessions"] == 2, "the verified attempt, then the one that delivers"


def test_mailyard_to_mailyard_under_the_receivers_own_policy(tmp_path: Path) -> None:
    """b.test serves its policy from its own web app ([mta_sts], web/wellknown.py)
    behind TLS; a.test enforces it: the MX outside b's configured mx is not
    used, and once b's policy names its MX (new id) the mail goes."""
    hosts = MultiHost(tmp_path)
    hosts.dns.ttl = 0
    ca = CA(tmp_path / "pki")
    proxy = None
    try:
        def b_config(cfg: Config) -> None:
            cert, key, _ = ca.issue("mx.b.test", ["mx.b.test"])
            cfg.tls.cert, cfg.tls.key = str(cert), str(key)
            cfg.ports.http = free_port(B)
            cfg.mta_sts.mode = "enforce"
            cfg.mta_sts.mx = "mx.elsewhere.test"

        b = hosts.add("b.test", B, {"bob": "bob-pw-1"}, configure=b_config)
        web_cert, web_key, _ = ca.issue("mta-sts.b.test", ["mta-sts.b.test"])
        proxy = TLSProxy(WEB, web_cert, web_key, (B, b.config.ports.http))
        hosts.dns.add("mta-sts.b.test", "A", WEB)

        def publish() -> None:  # what `mailyard dns b.test` says, into DNS
            hosts.dns.remove("_mta-sts.b.test")
            for rec in records.needed(b.config, "b.test", None):
                if rec.name == "_mta-sts.b.test":
                    hosts.dns.add(rec.name, "TXT", f'"{rec.value}"')

        publish()

        def a_config(cfg: Config) -> None:
            cfg.mta_sts.https_port = proxy.port
            cfg.mta_sts.ca_file = str(ca.ca_file)

        hosts.add("a.test", A, {"alice": "alice-pw-1"}, configure=a_config)
        enqueue(hosts)
        assert "does not match the MTA-STS policy" in deferred_with(hosts, "451 4.7.5")
        b.config.mta_sts.mx = "mx.b.test"  # the operator fixes the policy and publishes the new id
        publish()
        hosts.wait_messages("bob@b.test")
    finally:
        if proxy is not None:
            proxy.stop()
        hosts.stop()
