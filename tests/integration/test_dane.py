"""DANE (RFC 7672) on outgoing mail, end to end: the test DNS server plays a
validating resolver (the AD bit) and publishes TLSA records for b.test's MX
that match, or do not match, the certificate b.test presents."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mailyard.config import Config
from mailyard.store.api import NewRecipient

from .multihost import MultiHost
from .pki import CA

A, B = "127.0.0.2", "127.0.0.3"
MESSAGE = (b"From: alice@a.test\r\nTo: bob@b.test\r\nSubject: dane\r\nMessage-ID: <dane1@a.test>\r\n"
           b"Date: Mon, 23 Nov 2026 08:00:00 +0000\r\n\r\nover DANE\r\n")


def spki_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[MultiHost, CA, x509.Certificate]]:
    hosts = MultiHost(tmp_path)
    hosts.dns.ttl = 0
    hosts.dns.ad = True
    ca = CA(tmp_path / "pki")
    cert_file, key_file, leaf = ca.issue("mx.b.test", ["mx.b.test"])

    def sender_cfg(cfg: Config) -> None:
        cfg.delivery.dnssec = True
        cfg.mta_sts.outbound = False

    def receiver_cfg(cfg: Config) -> None:
        cfg.tls.cert, cfg.tls.key = str(cert_file), str(key_file)

    try:
        hosts.add("a.test", A, {"alice": "alice-pw-1"}, configure=sender_cfg)
        hosts.add("b.test", B, {"bob": "bob-pw-1"}, configure=receiver_cfg)
        yield hosts, ca, leaf
    finally:
        hosts.stop()


def tlsa_name(hosts: MultiHost) -> str:
    return f"_{hosts.smtp_port}._tcp.mx.b.test"


def enqueue(hosts: MultiHost) -> None:
    a = hosts.servers["a.test"]
    a.call(a.server.queue.enqueue(MESSAGE, "alice@a.test", [NewRecipient("bob@b.test")]))


def report_lines(hosts: MultiHost) -> list[dict]:
    directory = hosts.servers["a.test"].data_dir / "tlsrpt"
    return [json.loads(line) for p in sorted(directory.glob("*.jsonl")) for line in p.read_text().splitlines()]


def test_dane_ee_match_delivers(world) -> None:  # noqa: ANN001
    hosts, _ca, leaf = world
    hosts.dns.add(tlsa_name(hosts), "TLSA", f"3 1 1 {spki_sha256(leaf)}")
    enqueue(hosts)
    hosts.wait_messages("bob@b.test")
    assert any(x["ok"] and x["policy-type"] == "tlsa" for x in report_lines(hosts))


def test_dane_mismatch_defers_until_the_record_matches(world) -> None:  # noqa: ANN001
    hosts, _ca, leaf = world
    hosts.dns.add(tlsa_name(hosts), "TLSA", "3 1 1 " + "00" * 32)
    enqueue(hosts)

    def deferred() -> str | None:
        for entry in hosts.queue("a.test"):
            r = entry.recipients[0]
            if r.attempts >= 1 and r.last_reply and r.last_reply.startswith("421 4.7.5"):
                return r.last_reply
        return None

    reply = hosts.wait_for(deferred, what="a DANE deferral")
    assert "DANE" in reply and "no TLSA record matches" in reply
    assert hosts.servers["b.test"].messages("bob@b.test") == []
    failures = [x for x in report_lines(hosts) if not x["ok"]]
    assert failures and failures[0]["result-type"] == "validation-failure"
    assert failures[0]["policy-string"] == ["3 1 1 " + "00" * 32]
    hosts.dns.remove(tlsa_name(hosts))
    hosts.dns.add(tlsa_name(hosts), "TLSA", f"3 1 1 {spki_sha256(leaf)}")
    hosts.wait_messages("bob@b.test")


def test_dane_ta_matches_the_issuer(world) -> None:  # noqa: ANN001
    hosts, ca, _leaf = world
    hosts.dns.add(tlsa_name(hosts), "TLSA", f"2 0 1 {hashlib.sha256(ca.cert.public_bytes(Encoding.DER)).hexdigest()}")
    enqueue(hosts)
    hosts.wait_messages("bob@b.test")


def test_without_the_ad_bit_tlsa_records_are_ignored(world) -> None:  # noqa: ANN001
    hosts, _ca, _leaf = world
    hosts.dns.ad = False  # an insecure answer: no DANE (RFC 7672 2.2)
    hosts.dns.add(tlsa_name(hosts), "TLSA", "3 1 1 " + "00" * 32)
    enqueue(hosts)
    hosts.wait_messages("bob@b.test")
    assert (tlsa_name(hosts).lower() + ".", "TLSA") not in hosts.dns.queries
