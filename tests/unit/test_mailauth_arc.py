"""ARC (RFC 8617): chains of 1 to 3 sets made by dkimpy as independent
sealers, then checked and sealed once more by mailyard (mailauth/arc.py,
mailauth/inbound.py), and verified again by dkimpy; a broken chain gives
arc=fail and a seal with cv=fail. Keys are published on the project's DNS
test server (multihost.py ``DNSServer``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import dkim as dkimpy
import pytest

from mailyard.mailauth import arc, keys
from mailyard.mailauth.dnscache import Resolver
from mailyard.mailauth.inbound import check_message
from mailyard.mailauth.signer import Signer
from tests.integration.multihost import DNSServer

IP = "192.0.2.10"
MESSAGE = (
    b"From: Carol <carol@c.test>\r\n"
    b"To: list@one.test\r\n"
    b"Subject: through the chain\r\n"
    b"Date: Sat, 05 Dec 2026 08:00:00 +0000\r\n"
    b"Message-ID: <arc1@c.test>\r\n"
    b"\r\n"
    b"Hello along the forwarders.\r\n"
)


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    server = DNSServer()
    yield server
    server.stop()


@pytest.fixture
def resolver(dns: DNSServer) -> Resolver:
    return Resolver(dns.address, timeout=3.0)


def publish(dns: DNSServer, data_dir: Path, domain: str) -> keys.SigningKeys:
    return dns.publish_dkim(data_dir, domain, activate=True)


def dkimpy_dns(resolver: Resolver):  # noqa: ANN201 - dkimpy's dnsfunc face
    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        found = resolver.txt(name.decode().rstrip("."))
        return found[0].encode() if found else None

    return lookup


def independent_hop(message: bytes, sealer: keys.SigningKeys, cv: str) -> bytes:
    """A forwarder other than mailyard: its Authentication-Results (with the
    chain status it found) and its ARC set, made by dkimpy alone."""
    srv = f"mx.{sealer.domain}"
    ar = f"Authentication-Results: {srv}; spf=pass smtp.mailfrom=carol@c.test; arc={cv}\r\n".encode()
    with_ar = ar + message
    arc_set = dkimpy.arc_sign(with_ar, sealer.rsa_selector.encode(), sealer.domain.encode(), sealer.rsa_pem,
                              srv.encode(), include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    assert arc_set, "dkimpy sealed nothing"
    return b"".join(arc_set) + with_ar


def seal_tag(fields: bytes, tag: str) -> str:
    seal = fields.split(b"ARC-Seal:")[1].split(b"ARC-")[0]
    m = re.search(rf"(?:^|;)\s*{tag}=([^;]*)", " ".join(seal.decode().split()))
    assert m is not None
    return m.group(1).strip()


@pytest.mark.parametrize("hops", [0, 1, 2])
def test_chain_verified_and_sealed_by_mailyard(tmp_path: Path, dns: DNSServer, resolver: Resolver, hops: int) -> None:
    """``hops`` independent sealers, then mailyard: the chain it receives is
    ``none`` (no set) or ``pass``; its own set is instance hops+1 with that
    cv=, and dkimpy finds the whole chain of hops+1 sets valid."""
    message = MESSAGE
    for n in range(hops):
        sealer = publish(dns, tmp_path / f"k{n}", f"hop{n}.test")
        message = independent_hop(message, sealer, "none" if n == 0 else "pass")
    ours = publish(dns, tmp_path / "mine", "fwd.test")
    dns.add("c.test", "TXT", f'"v=spf1 ip4:{IP} -all"')
    verdict = check_message(resolver, message, authserv_id="mx.fwd.test", ip=IP, helo="mx.c.test",
                            reverse_path="carol@c.test")
    expected = "none" if hops == 0 else "pass"
    assert verdict.arc is not None and verdict.arc.result == expected
    field = b" ".join(verdict.header.split())
    assert (b"; arc=" + expected.encode() + (b" (i=%d);" % hops if hops else b";")) in field, field
    received = verdict.header + verdict.message
    signer = Signer(tmp_path / "mine", "mx.fwd.test")
    arc_set = signer.seal(received)
    assert arc_set.startswith(b"ARC-Seal: i=%d; cv=%s; a=rsa-sha256; d=fwd.test; s=%s;"
                              % (hops + 1, expected.encode(), ours.rsa_selector.encode()))
    assert b"\r\nARC-Message-Signature: i=%d; a=rsa-sha256; c=relaxed/relaxed; d=fwd.test;" % (hops + 1) in arc_set
    aar = arc_set.split(b"ARC-Authentication-Results:")[1]
    assert aar.startswith(b" i=%d; mx.fwd.test;" % (hops + 1))
    assert b"spf=pass smtp.mailfrom=carol@c.test" in aar and b"arc=" + expected.encode() in aar
    forwarded = arc_set + received
    cv, results, reason = dkimpy.arc_verify(forwarded, dnsfunc=dkimpy_dns(resolver))
    assert (cv, reason) == (dkimpy.CV_Pass, "success")
    assert len(results) == hops + 1
    # and the next hop (mailyard again) finds it passing
    assert arc.verify(forwarded, resolver.txt).result == "pass"


def test_broken_chain_fails_and_is_sealed_with_cv_fail(tmp_path: Path, dns: DNSServer, resolver: Resolver) -> None:
    """Two sets, then the body changed on the way: the newest AMS does not
    verify, so the chain fails (RFC 8617 5.2), and mailyard's set says cv=fail
    and covers only itself (RFC 8617 5.1.2)."""
    message = MESSAGE
    for n in range(2):
        message = independent_hop(message, publish(dns, tmp_path / f"k{n}", f"hop{n}.test"), "none" if n == 0 else "pass")
    broken = message.replace(b"Hello along", b"Goodbye along")
    publish(dns, tmp_path / "mine", "fwd.test")
    verdict = check_message(resolver, broken, authserv_id="mx.fwd.test", ip=IP, helo="mx.c.test",
                            reverse_path="carol@c.test")
    assert verdict.arc is not None
    assert (verdict.arc.result, verdict.arc.reason) == ("fail", "Most recent ARC-Message-Signature did not validate")
    assert b"arc=fail (Most recent ARC-Message-Signature did not validate)" in b" ".join(verdict.header.split())
    arc_set = Signer(tmp_path / "mine", "mx.fwd.test").seal(verdict.header + verdict.message)
    assert seal_tag(arc_set, "i") == "3" and seal_tag(arc_set, "cv") == "fail"
    cv, _results, _reason = dkimpy.arc_verify(arc_set + verdict.header + verdict.message,
                                              dnsfunc=dkimpy_dns(resolver))
    assert cv != dkimpy.CV_Pass


def test_unknown_key_and_forged_seal_fail(tmp_path: Path, dns: DNSServer, resolver: Resolver) -> None:
    sealer = publish(dns, tmp_path / "k", "hop0.test")
    sealed = independent_hop(MESSAGE, sealer, "none")
    dns.remove(f"{sealer.rsa_selector}._domainkey.hop0.test")
    assert arc.verify(sealed, resolver.txt).result == "fail"
    publish(dns, tmp_path / "k2", "hop0.test")  # a different key under a new selector
    # an ARC-Seal claiming cv=pass at i=1 is invalid whatever its signature (RFC 8617 5.2 step 3)
    forged = sealed.replace(b"cv=none", b"cv=pass", 1)
    assert arc.verify(forged, resolver.txt).result == "fail"


def test_no_results_of_ours_no_seal(tmp_path: Path, dns: DNSServer) -> None:
    """A message this server did not check (no Authentication-Results with
    its authserv-id, e.g. a local user's) gets no ARC set."""
    publish(dns, tmp_path, "fwd.test")
    other = b"Authentication-Results: mx.elsewhere.test; spf=pass smtp.mailfrom=carol@c.test\r\n" + MESSAGE
    assert Signer(tmp_path, "mx.fwd.test").seal(other) == b""
    assert Signer(tmp_path, "mx.fwd.test").seal(MESSAGE) == b""
