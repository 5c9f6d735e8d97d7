"""mailauth/: SPF, DKIM and DMARC against the project's DNS test server on
loopback (tests/integration/multihost.py ``DNSServer``), the
Authentication-Results field, the DNS cache and the key files."""

from __future__ import annotations

import base64
import binascii
import random
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailyard.mailauth import authresults, dkim, dmarc, keys, spf
from mailyard.mailauth.dnscache import DNSTempError, Resolver
from mailyard.mailauth.inbound import check_message
from mailyard.mailauth.signer import Signer
from tests.integration.multihost import DNSServer

IP = "192.0.2.10"


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    server = DNSServer()
    yield server
    server.stop()


@pytest.fixture
def resolver(dns: DNSServer) -> Resolver:
    return Resolver(dns.address, timeout=3.0)


def txt(dns: DNSServer, name: str, text: str) -> None:
    parts = [text[i:i + 255] for i in range(0, len(text), 255)]
    dns.add(name, "TXT", " ".join(f'"{p}"' for p in parts))


# --- SPF (RFC 7208) --------------------------------------------------------------------


@pytest.mark.parametrize(("record", "expected"), [
    ("v=spf1 ip4:192.0.2.0/24 -all", "pass"),
    ("v=spf1 ip4:198.51.100.1 -all", "fail"),
    ("v=spf1 ~all", "softfail"),
    ("v=spf1 ?all", "neutral"),
    (None, "none"),
    ("v=spf1 bogus:x -all", "permerror"),
    ("v=spf1 a:host.spf.test -all", "pass"),
    ("v=spf1 mx -all", "pass"),
    ("v=spf1 include:inc1.spf.test -all", "pass"),  # a chain: inc1 -> inc2 -> ip4
    ("v=spf1 include:nothing.spf.test -all", "permerror"),  # RFC 7208 5.2: include of no record
    ("v=spf1 redirect=inc2.spf.test", "pass"),
])
def test_spf_results(dns: DNSServer, resolver: Resolver, record: str | None, expected: str) -> None:
    if record is not None:
        txt(dns, "s.test", record)
    else:
        dns.add("s.test", "A", "192.0.2.99")
    dns.add("host.spf.test", "A", IP)
    dns.add("s.test", "MX", "10 mx.s.test.")
    dns.add("mx.s.test", "A", IP)
    txt(dns, "inc1.spf.test", "v=spf1 include:inc2.spf.test -all")
    txt(dns, "inc2.spf.test", "v=spf1 ip4:192.0.2.10 -all")
    dns.add("nothing.spf.test", "A", "192.0.2.1")
    result = spf.check_host(resolver, IP, "alice@s.test", "mail.s.test")
    assert (result.result, result.identity, result.domain) == (expected, "mailfrom", "s.test")


def test_spf_two_records_is_a_permerror(dns: DNSServer, resolver: Resolver) -> None:
    txt(dns, "s.test", "v=spf1 -all")
    txt(dns, "s.test", "v=spf1 +all")
    assert spf.check_host(resolver, IP, "a@s.test", "h.s.test").result == "permerror"  # RFC 7208 4.5


def test_spf_temperror_on_servfail(dns: DNSServer, resolver: Resolver) -> None:
    dns.servfail.add("s.test.")
    assert spf.check_host(resolver, IP, "a@s.test", "h.s.test").result == "temperror"  # RFC 7208 2.6.6


def test_spf_temperror_on_timeout(resolver: Resolver) -> None:
    # a name server that never answers (a bound UDP socket that nobody reads)
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        quiet = Resolver(f"127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
        assert spf.check_host(quiet, IP, "a@s.test", "h.s.test").result == "temperror"


@pytest.mark.parametrize(("voids", "expected"), [(2, "fail"), (3, "permerror")])
def test_spf_void_lookup_limit(dns: DNSServer, resolver: Resolver, voids: int, expected: str) -> None:
    # RFC 7208 4.6.4: more than two lookups that return nothing is a permerror
    mechanisms = " ".join(f"a:void{i}.spf.test" for i in range(voids))
    txt(dns, "s.test", f"v=spf1 {mechanisms} -all")
    assert spf.check_host(resolver, IP, "a@s.test", "h.s.test").result == expected


@pytest.mark.parametrize(("lookups", "expected"), [(10, "pass"), (11, "permerror")])
def test_spf_ten_lookup_limit(dns: DNSServer, resolver: Resolver, lookups: int, expected: str) -> None:
    # RFC 7208 4.6.4: at most 10 mechanisms that query DNS; the last one matches
    for i in range(lookups):
        dns.add(f"h{i}.spf.test", "A", IP if i == lookups - 1 else "198.51.100.7")
    mechanisms = " ".join(f"a:h{i}.spf.test" for i in range(lookups))
    txt(dns, "s.test", f"v=spf1 {mechanisms} -all")
    assert spf.check_host(resolver, IP, "a@s.test", "h.s.test").result == expected


def test_spf_helo_identity(dns: DNSServer, resolver: Resolver) -> None:
    txt(dns, "mail.s.test", "v=spf1 ip4:192.0.2.10 -all")
    assert spf.check_helo(resolver, IP, "mail.s.test").result == "pass"
    assert spf.check_helo(resolver, "198.51.100.1", "mail.s.test").result == "fail"
    # RFC 7208 2.4: a null reverse-path is checked as postmaster@HELO
    null = spf.check_host(resolver, IP, "", "mail.s.test")
    assert (null.result, null.identity, null.sender) == ("pass", "helo", "postmaster@mail.s.test")


# --- DKIM (RFC 6376, RFC 8463, RFC 8301) -----------------------------------------------

MESSAGE = (
    b"From: Alice <alice@a.test>\r\n"
    b"To: bob@b.test\r\n"
    b"Subject: signed\r\n"
    b"Date: Sat, 05 Dec 2026 08:00:00 +0000\r\n"
    b"Message-ID: <d1@a.test>\r\n"
    b"\r\n"
    b"Hello, signed world.\r\n"
)


@pytest.fixture
def domain_keys(tmp_path: Path, dns: DNSServer) -> keys.SigningKeys:
    return dns.publish_dkim(tmp_path, "a.test")


def by_algorithm(results: list[dkim.DKIMResult]) -> dict[str, tuple[str, str]]:
    return {r.algorithm: (r.result, r.reason) for r in results}


def test_key_files_are_private(tmp_path: Path) -> None:
    gen = keys.generate(tmp_path, "a.test")
    folder = tmp_path / "dkim" / "a.test"
    for name in (f"{gen}.rsa.pem", f"{gen}.ed25519.key"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert keys.active_generation(tmp_path, "a.test") == gen
    private = serialization.load_pem_private_key((folder / f"{gen}.rsa.pem").read_bytes(), None)
    assert private.key_size == 2048  # type: ignore[union-attr]


def test_sign_two_signatures_relaxed_oversigned_no_l(domain_keys: keys.SigningKeys) -> None:
    fields = dkim.sign(MESSAGE, domain_keys)
    sigs = [f for f in fields.split(b"DKIM-Signature:") if f]
    assert len(sigs) == 2
    ed, rsa_sig = (dkim._tags(s) for s in sigs)
    assert ed["a"] == "ed25519-sha256" and rsa_sig["a"] == "rsa-sha256"  # RFC 8463 on top
    for tags in (ed, rsa_sig):
        assert tags["c"] == "relaxed/relaxed" and tags["d"] == "a.test" and "l" not in tags
        signed = tags["h"].split(":")
        for name in ("from", "to", "subject", "date", "message-id"):
            assert signed.count(name) == 2, (name, signed)  # oversigned: once more than present
    assert ed["s"] == f"{domain_keys.generation}-ed25519" and rsa_sig["s"] == f"{domain_keys.generation}-rsa"


def test_the_signing_key_is_parsed_once(domain_keys: keys.SigningKeys, resolver: Resolver,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """dkimpy, which signs what the fast path does not (and seals ARC sets),
    reads the RSA key's PEM at every signature before OpenSSL signs; the
    reading is kept per key text, so the second message it signs with a key
    does not read it again, and its signatures still verify."""
    from dkim import crypto as dkimpy_crypto

    include = dkim._include_headers(MESSAGE.partition(b"\r\n\r\n")[0] + b"\r\n")
    dkim._sign_dkimpy(MESSAGE, domain_keys, include)

    def no_second_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the key was parsed again")

    monkeypatch.setattr(dkimpy_crypto, "asn1_parse", no_second_reading)
    signed = dkim._sign_dkimpy(MESSAGE, domain_keys, include) + MESSAGE
    monkeypatch.undo()  # the verifier reads the public key
    assert by_algorithm(dkim.verify(signed, resolver.txt)) == {
        "ed25519-sha256": ("pass", ""), "rsa-sha256": ("pass", "")}


def test_verify_good_rsa_and_ed25519(domain_keys: keys.SigningKeys, resolver: Resolver) -> None:
    signed = dkim.sign(MESSAGE, domain_keys) + MESSAGE
    assert by_algorithm(dkim.verify(signed, resolver.txt)) == {
        "ed25519-sha256": ("pass", ""), "rsa-sha256": ("pass", "")}


def test_verify_body_tampered(domain_keys: keys.SigningKeys, resolver: Resolver) -> None:
    signed = dkim.sign(MESSAGE, domain_keys) + MESSAGE.replace(b"signed world", b"forged world")
    assert by_algorithm(dkim.verify(signed, resolver.txt)) == {
        "ed25519-sha256": ("fail", "body hash did not verify"), "rsa-sha256": ("fail", "body hash did not verify")}


def test_verify_header_tampered_and_added(domain_keys: keys.SigningKeys, resolver: Resolver) -> None:
    sig = dkim.sign(MESSAGE, domain_keys)
    changed = sig + MESSAGE.replace(b"Subject: signed", b"Subject: changed")
    assert {r.result for r in dkim.verify(changed, resolver.txt)} == {"fail"}
    # oversigning: a second Subject added above the first breaks the signature too
    added = sig + b"Subject: added\r\n" + MESSAGE
    assert {r.result for r in dkim.verify(added, resolver.txt)} == {"fail"}


def test_verify_expired(domain_keys: keys.SigningKeys, resolver: Resolver) -> None:
    sig = dkim.sign(MESSAGE, domain_keys)
    past = int(time.time()) - 86400
    expired = sig.replace(b"t=", f"x={past}; t=".encode())
    results = dkim.verify(expired + MESSAGE, resolver.txt)
    assert [r.result for r in results] == ["fail", "fail"]
    assert all("expired" in r.reason for r in results)


def test_verify_missing_and_revoked_key(domain_keys: keys.SigningKeys, dns: DNSServer, resolver: Resolver) -> None:
    signed = dkim.sign(MESSAGE, domain_keys) + MESSAGE
    dns.remove(f"{domain_keys.ed25519_selector}._domainkey.a.test")  # missing
    dns.remove(f"{domain_keys.rsa_selector}._domainkey.a.test")
    txt(dns, f"{domain_keys.rsa_selector}._domainkey.a.test", "v=DKIM1; k=rsa; p=")  # RFC 6376 3.6.1: revoked
    assert by_algorithm(dkim.verify(signed, resolver.txt)) == {
        "ed25519-sha256": ("permerror", "no key for signature"), "rsa-sha256": ("fail", "key revoked")}


def test_verify_key_lookup_temperror(domain_keys: keys.SigningKeys, dns: DNSServer, resolver: Resolver) -> None:
    signed = dkim.sign(MESSAGE, domain_keys) + MESSAGE
    dns.servfail.add(f"{domain_keys.rsa_selector}._domainkey.a.test.")
    results = by_algorithm(dkim.verify(signed, resolver.txt))
    assert results["rsa-sha256"][0] == "temperror" and results["ed25519-sha256"] == ("pass", "")


def _rsa_keys(bits: int) -> keys.SigningKeys:
    if bits >= 1024:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    else:  # cryptography refuses to make keys this small; openssl still does
        if shutil.which("openssl") is None:
            pytest.skip("openssl (Debian package openssl) is needed to make a small RSA key")
        pem = subprocess.run(["openssl", "genrsa", "-traditional", str(bits)], check=True,
                             capture_output=True).stdout
    return keys.SigningKeys("a.test", f"k{bits}", pem, base64.b64encode(b"\x01" * 32))


@pytest.mark.parametrize(("bits", "expected"), [(1024, "pass"), (768, "fail")])
def test_rsa_key_size_limit(dns: DNSServer, resolver: Resolver, bits: int, expected: str) -> None:
    # RFC 8301 3.2: keys under 1024 bits MUST NOT be considered valid; 1024 is accepted
    small = _rsa_keys(bits)
    for rec in keys.records(small):
        txt(dns, rec.name, rec.text)
    results = by_algorithm(dkim.verify(dkim.sign(MESSAGE, small) + MESSAGE, resolver.txt))
    assert results["rsa-sha256"][0] == expected
    if expected == "fail":
        assert results["rsa-sha256"][1] == f"RSA key of {bits} bits is too small"


def test_signer_picks_the_from_domain_and_follows_activation(tmp_path: Path) -> None:
    first = keys.generate(tmp_path, "a.test")
    signer = Signer(tmp_path, "mx.a.test")
    signed = signer.sign(MESSAGE, "alice@a.test")
    assert f"s={first}-rsa".encode() in signed and b"d=a.test" in signed
    second = keys.generate(tmp_path, "a.test")
    assert f"s={first}-rsa".encode() in signer.sign(MESSAGE, "alice@a.test")  # rotate does not switch
    keys.set_active(tmp_path, "a.test", second)
    assert f"s={second}-rsa".encode() in signer.sign(MESSAGE, "alice@a.test")
    # mail from elsewhere (a forward) is signed with the host name's domain
    foreign = MESSAGE.replace(b"alice@a.test", b"eve@elsewhere.test")
    assert b"d=a.test" in signer.sign(foreign, "eve@elsewhere.test")
    assert Signer(tmp_path, "mx.other.test").sign(foreign, "eve@elsewhere.test") == foreign


# --- DMARC (RFC 7489) ------------------------------------------------------------------


def spf_result(result: str, domain: str) -> spf.SPFResult:
    return spf.SPFResult(result, "mailfrom", domain, f"x@{domain}")


def dkim_result(result: str, domain: str) -> dkim.DKIMResult:
    return dkim.DKIMResult(result, domain, "s", "rsa-sha256")


@pytest.mark.parametrize(("spf_r", "dkim_r", "expected"), [
    (spf_result("pass", "a.test"), [], ("pass", "aligned SPF")),
    (spf_result("pass", "bounce.a.test"), [], ("pass", "aligned SPF")),  # relaxed
    (spf_result("fail", "a.test"), [dkim_result("pass", "a.test")], ("pass", "aligned DKIM")),
    (spf_result("pass", "other.test"), [dkim_result("pass", "other.test")], ("fail", "neither SPF nor DKIM aligned")),
    (spf_result("pass", "a.test"), [dkim_result("pass", "a.test")], ("pass", "aligned SPF and DKIM")),
])
def test_dmarc_alignment(dns: DNSServer, resolver: Resolver, spf_r: spf.SPFResult,
                         dkim_r: list[dkim.DKIMResult], expected: tuple[str, str]) -> None:
    txt(dns, "_dmarc.a.test", "v=DMARC1; p=reject")
    r = dmarc.evaluate(resolver, ["a.test"], spf_r, dkim_r)
    assert (r.result, r.reason) == expected
    assert r.disposition == ("reject" if r.result == "fail" else "none")


@pytest.mark.parametrize("policy", ["none", "quarantine", "reject"])
def test_dmarc_policies(dns: DNSServer, resolver: Resolver, policy: str) -> None:
    txt(dns, "_dmarc.a.test", f"v=DMARC1; p={policy}; rua=mailto:dmarc@a.test")
    r = dmarc.evaluate(resolver, ["a.test"], spf_result("fail", "a.test"), [])
    assert (r.result, r.policy, r.disposition) == ("fail", policy, policy)


def test_dmarc_strict_alignment(dns: DNSServer, resolver: Resolver) -> None:
    txt(dns, "_dmarc.a.test", "v=DMARC1; p=reject; aspf=s; adkim=s")
    r = dmarc.evaluate(resolver, ["a.test"], spf_result("pass", "bounce.a.test"), [dkim_result("pass", "sub.a.test")])
    assert r.result == "fail"


def test_dmarc_subdomain_policy(dns: DNSServer, resolver: Resolver) -> None:
    # RFC 7489 6.6.3: no record at the From domain: the organisational domain's sp= applies
    txt(dns, "_dmarc.a.test", "v=DMARC1; p=none; sp=reject")
    sub = dmarc.evaluate(resolver, ["news.a.test"], spf_result("fail", "x.test"), [])
    assert (sub.result, sub.policy, sub.disposition) == ("fail", "reject", "reject")
    top = dmarc.evaluate(resolver, ["a.test"], spf_result("fail", "x.test"), [])
    assert (top.policy, top.disposition) == ("none", "none")
    # a record of the subdomain's own wins
    txt(dns, "_dmarc.news.a.test", "v=DMARC1; p=quarantine")
    resolver2 = Resolver(dns.address, timeout=3.0)
    assert dmarc.evaluate(resolver2, ["news.a.test"], spf_result("fail", "x.test"), []).policy == "quarantine"


def test_dmarc_of_several_from_domains_applies_the_strictest_failing_policy(dns: DNSServer,
                                                                              resolver: Resolver) -> None:
    """RFC 7489 6.6.1: each From domain is checked as the Author Domain and
    the strictest policy among the checks that fail applies; no From domain,
    or more than MAX_FROM_DOMAINS of them, is a permerror to refuse."""
    txt(dns, "_dmarc.a.test", "v=DMARC1; p=quarantine")
    txt(dns, "_dmarc.b.test", "v=DMARC1; p=reject")
    txt(dns, "_dmarc.c.test", "v=DMARC1; p=reject")
    fail = spf_result("fail", "x.test")
    r = dmarc.evaluate(resolver, ["a.test", "b.test"], fail, [])
    assert (r.result, r.from_domain, r.disposition) == ("fail", "b.test", "reject")
    # c.test passes (its own aligned signature), a.test does not: a.test's quarantine applies
    r = dmarc.evaluate(resolver, ["c.test", "a.test"], fail, [dkim_result("pass", "c.test")])
    assert (r.result, r.from_domain, r.disposition) == ("fail", "a.test", "quarantine")
    r = dmarc.evaluate(resolver, ["c.test", "b.test"], fail, [dkim_result("pass", "c.test"),
                                                              dkim_result("pass", "b.test")])
    assert (r.result, r.disposition) == ("pass", "none")
    assert dmarc.evaluate(resolver, [], fail, []).disposition == "reject"
    many = [f"d{i}.test" for i in range(dmarc.MAX_FROM_DOMAINS + 1)]
    r = dmarc.evaluate(resolver, many, fail, [])
    assert (r.result, r.disposition) == ("permerror", "reject")


def test_dmarc_of_an_internationalised_from_domain_is_checked_as_its_a_label(dns: DNSServer,
                                                                              resolver: Resolver) -> None:
    """RFC 8616 6: a From domain written in U-labels (an SMTPUTF8 message,
    RFC 6532) is the A-label domain its policy is published at and its
    signatures name in d= (RFC 8616 4): a signature of xn--bnk-qla.test
    is aligned with From: x@bänk.test, and BÄNK.test. is the same domain."""
    txt(dns, "_dmarc.xn--bnk-qla.test", "v=DMARC1; p=reject")
    fail = spf_result("fail", "x.test")
    r = dmarc.evaluate(resolver, ["bänk.test"], fail, [dkim_result("pass", "xn--bnk-qla.test")])
    assert (r.result, r.from_domain, r.disposition, r.reason) == ("pass", "xn--bnk-qla.test", "none", "aligned DKIM")
    # aligned SPF of an SMTPUTF8 MAIL FROM in U-labels, strict or relaxed
    r = dmarc.evaluate(resolver, ["BÄNK.test."], spf_result("pass", "bänk.test"), [])
    assert (r.result, r.reason) == ("pass", "aligned SPF")
    # one domain in either form, not two
    r = dmarc.evaluate(resolver, ["bänk.test", "xn--bnk-qla.test"], fail, [])
    assert (r.result, r.from_domain, r.disposition, r.reason) == (
        "fail", "xn--bnk-qla.test", "reject", "neither SPF nor DKIM aligned")


def test_dmarc_pct_samples(dns: DNSServer, resolver: Resolver) -> None:
    # RFC 7489 6.6.4: pct=0 never applies the policy; the next weaker one applies
    txt(dns, "_dmarc.a.test", "v=DMARC1; p=reject; pct=0")
    r = dmarc.evaluate(resolver, ["a.test"], spf_result("fail", "a.test"), [], rng=random.Random(1))
    assert (r.result, r.policy, r.disposition) == ("fail", "reject", "quarantine")


def test_dmarc_results_are_kept_no_longer_than_the_record_and_pct_is_drawn_per_message(
        dns: DNSServer, resolver: Resolver) -> None:
    """The resolver keeps a DMARC result (the same sender's stream of mail
    repeats it), but RFC 7489 6.6.4's pct= sampling is drawn for every
    message, and a changed record is seen once its TTL has run out."""
    txt(dns, "_dmarc.a.test", "v=DMARC1; p=reject; pct=50")
    rng, expected_rng = random.Random(7), random.Random(7)
    got = [dmarc.evaluate(resolver, ["a.test"], spf_result("fail", "a.test"), [], rng=rng)
           for _ in range(40)]
    assert [r.disposition for r in got] == [
        "reject" if expected_rng.randrange(100) < 50 else "quarantine" for _ in range(40)]
    assert {r.disposition for r in got} == {"reject", "quarantine"}
    assert {(r.result, r.policy, r.published) for r in got} == {("fail", "reject", got[0].published)}
    # every input of the verdict tells kept results apart: DKIM and SPF alignment
    assert dmarc.evaluate(resolver, ["a.test"], spf_result("fail", "a.test"), [dkim_result("pass", "a.test")]).result \
        == "pass"
    assert dmarc.evaluate(resolver, ["a.test"], spf_result("fail", "a.test"), [dkim_result("fail", "a.test")]).result \
        == "fail"
    assert dmarc.evaluate(resolver, ["a.test"], spf_result("pass", "a.test"), []).result == "pass"
    assert dmarc.evaluate(resolver, ["a.test"], spf_result("pass", "other.test"), []).result == "fail"
    dns.ttl = 0  # answers not to be cached: the record below changes
    txt(dns, "_dmarc.b.test", "v=DMARC1; p=reject")
    assert dmarc.evaluate(resolver, ["b.test"], spf_result("fail", "b.test"), []).policy == "reject"
    dns.remove("_dmarc.b.test", "TXT")
    txt(dns, "_dmarc.b.test", "v=DMARC1; p=none")
    assert dmarc.evaluate(resolver, ["b.test"], spf_result("fail", "b.test"), []).policy == "none"


def test_dmarc_none_temperror_and_organizational_domain(dns: DNSServer, resolver: Resolver) -> None:
    assert dmarc.evaluate(resolver, ["a.test"], spf_result("fail", "a.test"), []).result == "none"
    dns.servfail.add("_dmarc.t.test.")
    assert dmarc.evaluate(resolver, ["t.test"], spf_result("fail", "t.test"), []).result == "temperror"
    assert dmarc.evaluate(resolver, [], None, []).result == "permerror"
    assert dmarc.organizational_domain("mail.example.co.uk") == "example.co.uk"
    assert dmarc.organizational_domain("a.b.c.test") == "c.test"


# --- Authentication-Results (RFC 8601) and the checks together -------------------------


def test_strip_ours_keeps_other_authserv_ids() -> None:
    msg = (b"Authentication-Results: mx.b.test; dkim=pass\r\n"
           b"Authentication-Results: other.test;\r\n\tspf=pass\r\n"
           b"Authentication-Results: (comment) MX.B.TEST;\r\n\tdmarc=pass\r\n"
           b"Subject: x\r\n\r\nbody\r\n")
    assert authresults.strip_ours(msg, "mx.b.test") == (
        b"Authentication-Results: other.test;\r\n\tspf=pass\r\nSubject: x\r\n\r\nbody\r\n")


def test_check_message_writes_one_field(domain_keys: keys.SigningKeys, dns: DNSServer, resolver: Resolver) -> None:
    txt(dns, "a.test", "v=spf1 ip4:192.0.2.10 -all")
    txt(dns, "mail.a.test", "v=spf1 ip4:192.0.2.10 -all")
    txt(dns, "_dmarc.a.test", "v=DMARC1; p=reject")
    forged = b"Authentication-Results: mx.b.test; dmarc=pass\r\n"
    signed = dkim.sign(MESSAGE, domain_keys) + MESSAGE
    v = check_message(resolver, forged + signed, authserv_id="mx.b.test", ip=IP, helo="mail.a.test",
                      reverse_path="alice@a.test")
    assert v.message == signed and v.disposition == "none"
    # RFC 8601 2.2: a value with "/" (a tspecial) is a quoted-string
    rsa_b = authresults._value(dkim._tags(signed.split(b"DKIM-Signature:")[2])["b"][:8])
    gen = domain_keys.generation
    # the From domain's rsa-sha256 signature passed first: DMARC needs no
    # more, so the Ed25519 one is not verified, and not reported
    assert v.header == (
        "Authentication-Results: mx.b.test;\r\n"
        "\tspf=pass smtp.mailfrom=alice@a.test;\r\n"
        "\tspf=pass smtp.helo=mail.a.test;\r\n"
        f"\tdkim=pass header.d=a.test header.s={gen}-rsa header.a=rsa-sha256 header.b={rsa_b};\r\n"
        "\tarc=none;\r\n"
        "\tdmarc=pass (aligned SPF and DKIM) header.from=a.test\r\n"
    ).encode()
    # a forged From with neither aligned gets the reject disposition
    spoof = MESSAGE.replace(b"alice@a.test", b"ceo@a.test")
    v2 = check_message(resolver, spoof, authserv_id="mx.b.test", ip="198.51.100.66", helo="evil.test",
                       reverse_path="x@evil.test")
    assert v2.disposition == "reject"
    assert b"dkim=none" in v2.header and b"dmarc=fail" in v2.header and b"p=reject dis=reject" in v2.header


def _second_signer(tmp_path: Path, dns: DNSServer, domain: str) -> keys.SigningKeys:
    keys.generate(tmp_path / domain, domain)
    loaded = keys.load(tmp_path / domain, domain)
    assert loaded is not None
    for rec in keys.records(loaded):
        txt(dns, rec.name, rec.text)
    return loaded


def _dkim_lines(header: bytes) -> list[str]:
    return [line.strip().rstrip(";") for line in header.decode().split("\r\n") if line.strip().startswith("dkim=")]


def _b(field: bytes) -> str:
    """The header.b value of a DKIM-Signature field (RFC 6008, RFC 8601 2.2 quoting)."""
    return authresults._value(dkim._tags(field.partition(b":")[2])["b"][:8])


def _key_lookups(dns: DNSServer) -> list[str]:
    return sorted(name for name, _rdtype in dns.queries if "._domainkey." in name)


def test_dkim_stops_at_the_first_pass_of_the_from_domain(domain_keys: keys.SigningKeys, dns: DNSServer,
                                                         resolver: Resolver, tmp_path: Path) -> None:
    """RFC 6376 6.1: a Verifier may try the signatures in any order and stop
    once one verifies; DMARC (RFC 7489 3.1.1) needs one that passes with
    d= aligned to the From domain. A mailing list's signatures (c.test) on
    top of the author's two: the author's rsa-sha256 signature is tried
    first and passes, and none of the other three is verified (their keys
    are not even looked up) or reported."""
    txt(dns, "_dmarc.a.test", "v=DMARC1; p=reject")
    lister = _second_signer(tmp_path, dns, "c.test")
    author = dkim.sign(MESSAGE, domain_keys)
    listed = dkim.sign(author + MESSAGE, lister) + author + MESSAGE
    dns.queries.clear()
    v = check_message(resolver, listed, authserv_id="mx.b.test", ip="198.51.100.7", helo="list.c.test",
                      reverse_path="list@c.test")
    rsa_field = b"DKIM-Signature:" + author.split(b"DKIM-Signature:")[2]
    assert _dkim_lines(v.header) == [
        f"dkim=pass header.d=a.test header.s={domain_keys.generation}-rsa header.a=rsa-sha256 "
        f"header.b={_b(rsa_field)}"]
    assert [(r.domain, r.algorithm, r.result) for r in v.dkim] == [("a.test", "rsa-sha256", "pass")]
    assert _key_lookups(dns) == [f"{domain_keys.rsa_selector}._domainkey.a.test."]
    assert v.dmarc is not None and (v.dmarc.result, v.dmarc.dkim_aligned) == ("pass", True)
    # without a From domain to stop for, every signature is verified
    assert [r.result for r in dkim.verify(listed, resolver.txt)] == ["pass"] * 4


def test_dkim_goes_on_after_a_failure_and_reports_what_it_verified(domain_keys: keys.SigningKeys, dns: DNSServer,
                                                                   resolver: Resolver, tmp_path: Path) -> None:
    """The author's rsa-sha256 signature fails (its key is revoked): its
    Ed25519 signature is verified next and passes; both are reported, in
    the order of the fields, and the list's signatures are not."""
    txt(dns, "_dmarc.a.test", "v=DMARC1; p=reject")
    lister = _second_signer(tmp_path, dns, "c.test")
    author = dkim.sign(MESSAGE, domain_keys)
    listed = dkim.sign(author + MESSAGE, lister) + author + MESSAGE
    dns.remove(f"{domain_keys.rsa_selector}._domainkey.a.test")
    txt(dns, f"{domain_keys.rsa_selector}._domainkey.a.test", "v=DKIM1; k=rsa; p=")
    v = check_message(resolver, listed, authserv_id="mx.b.test", ip="198.51.100.7", helo="list.c.test",
                      reverse_path="list@c.test")
    ed_field, rsa_field = (b"DKIM-Signature:" + f for f in author.split(b"DKIM-Signature:")[1:])
    gen = domain_keys.generation
    assert _dkim_lines(v.header) == [
        f"dkim=pass header.d=a.test header.s={gen}-ed25519 header.a=ed25519-sha256 header.b={_b(ed_field)}",
        f"dkim=fail (key revoked) header.d=a.test header.s={gen}-rsa header.a=rsa-sha256 header.b={_b(rsa_field)}",
    ]
    assert v.dmarc is not None and v.dmarc.result == "pass"


def test_dkim_verifies_every_signature_when_none_of_the_from_domain_passes(
        domain_keys: keys.SigningKeys, dns: DNSServer, resolver: Resolver, tmp_path: Path) -> None:
    """A message whose From domain signed nothing (only a list did): every
    signature is verified and reported, and DMARC fails for the From
    domain (a list's signature is not aligned with it)."""
    txt(dns, "_dmarc.a.test", "v=DMARC1; p=reject")
    lister = _second_signer(tmp_path, dns, "c.test")
    listed = dkim.sign(MESSAGE, lister) + MESSAGE
    v = check_message(resolver, listed, authserv_id="mx.b.test", ip="198.51.100.7", helo="list.c.test",
                      reverse_path="list@c.test")
    assert [(r.domain, r.algorithm, r.result) for r in v.dkim] == [
        ("c.test", "ed25519-sha256", "pass"), ("c.test", "rsa-sha256", "pass")]
    assert len(_dkim_lines(v.header)) == 2
    assert v.dmarc is not None and (v.dmarc.result, v.dmarc.dkim_aligned) == ("fail", False)


def test_a_signature_with_a_duplicated_tag_is_not_passed(domain_keys: keys.SigningKeys,
                                                         resolver: Resolver) -> None:
    """RFC 6376 3.2: a tag-list with a tag name twice is invalid as a whole.
    The signature below is otherwise correct (made over its own field, the
    duplicate q= included): it must not pass, not on the fast path either."""
    import hashlib

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    private = serialization.load_pem_private_key(domain_keys.rsa_pem, None)
    header, body = MESSAGE.split(b"\r\n\r\n", 1)
    bh = base64.b64encode(hashlib.sha256(dkim._relaxed_body(body)).digest()).decode()
    value = (f"v=1; a=rsa-sha256; c=relaxed/relaxed; d=a.test; s={domain_keys.rsa_selector}; q=dns/txt;"
             f" q=dns/txt; t={int(time.time())}; h=from:subject; bh={bh}; b=").encode()
    fields = dict(line.split(b": ", 1) for line in header.split(b"\r\n"))
    data = (dkim._relaxed_field("From", fields[b"From"]) + b"\r\n" + dkim._relaxed_field("Subject", fields[b"Subject"])
            + b"\r\n" + dkim._relaxed_field("DKIM-Signature", value))
    signature = private.sign(data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
    signed = b"DKIM-Signature: " + value + base64.b64encode(signature) + b"\r\n" + MESSAGE
    (result,) = dkim.verify(signed, resolver.txt)
    assert result.result == "neutral" and "q" in result.reason, result
    # the same signature without the duplicate passes: the test's signing is right
    value = value.replace(b" q=dns/txt;", b"", 1)
    data = data.rpartition(b"\r\n")[0] + b"\r\n" + dkim._relaxed_field("DKIM-Signature", value)
    signature = private.sign(data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
    single = b"DKIM-Signature: " + value + base64.b64encode(signature) + b"\r\n" + MESSAGE
    assert [r.result for r in dkim.verify(single, resolver.txt)] == ["pass"]


@pytest.mark.parametrize("seed", range(4))
def test_relaxed_canonicalization_agrees_with_dkimpy(seed: int) -> None:
    """The fast path's relaxed canonicalisation (RFC 6376 3.4.2, 3.4.4), done
    with bytes methods, gives dkimpy's output on random bodies and fields
    made of the octets that matter (WSP runs, line ends, trailing empty
    lines)."""
    from dkim.canonicalization import Relaxed

    rng = random.Random(seed)
    pieces = [b" ", b"\t", b"  \t ", b"\r\n", b"\r\n\r\n", b"a", b"bc", b";", b"=", b"\r\n "]
    for _ in range(2000):
        text = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 40)))
        assert dkim._relaxed_body(text) == Relaxed.canonicalize_body(text), text
        value = text.replace(b"\r\n", b"\r\n ")  # a header value: continuation lines start with WSP
        ((name, canon),) = Relaxed.canonicalize_headers([(b"X-Test ", value)])
        assert dkim._relaxed_field("X-Test ", value) + b"\r\n" == name + b":" + canon, value


# --- the DNS cache ---------------------------------------------------------------------


def test_cache_honours_positive_and_negative_answers(dns: DNSServer, resolver: Resolver) -> None:
    txt(dns, "c.test", "hello")
    assert resolver.txt("c.test") == ["hello"]
    assert resolver.txt("nx.c.test") == []
    asked = resolver.queries
    assert resolver.txt("c.test") == ["hello"] and resolver.txt("nx.c.test") == []
    assert resolver.queries == asked  # both from the cache
    dns.servfail.add("sf.c.test.")
    with pytest.raises(DNSTempError):
        resolver.txt("sf.c.test")
    asked = resolver.queries
    with pytest.raises(DNSTempError):  # RFC 2308 7.1: the failure is remembered for a while
        resolver.txt("sf.c.test")
    assert resolver.queries == asked


def test_spf_result_is_kept_no_longer_than_the_dns_answers_it_rests_on(
        dns: DNSServer, resolver: Resolver, monkeypatch: pytest.MonkeyPatch) -> None:
    """An SPF result is kept (``Resolver.remember``), so a sender's stream of
    mail is not evaluated again for every message; but not past the TTL of
    the records it was computed from: once the record's 5 seconds are up, a
    changed record gives its new result (a clock of the test's own)."""
    from mailyard.mailauth import dnscache

    class Clock:
        now = 1000.0

        def monotonic(self) -> float:
            return self.now

    clock = Clock()
    monkeypatch.setattr(dnscache, "time", clock)
    dns.ttl = 5
    txt(dns, "ttl.test", "v=spf1 ip4:192.0.2.10 -all")
    assert spf.check_host(resolver, IP, "a@ttl.test", "mail.ttl.test").result == "pass"
    dns.remove("ttl.test")
    txt(dns, "ttl.test", "v=spf1 -all")
    asked = resolver.queries
    clock.now += 4  # within the TTL: the kept result, no question asked
    assert spf.check_host(resolver, IP, "a@ttl.test", "mail.ttl.test").result == "pass"
    assert resolver.queries == asked
    clock.now += 2  # past it: evaluated again, with the record as it is now
    assert spf.check_host(resolver, IP, "a@ttl.test", "mail.ttl.test").result == "fail"
    assert resolver.queries > asked


def test_authentication_config_section() -> None:
    from mailyard.config import Config, ConfigError

    cfg = Config()
    assert (cfg.authentication.dkim_sign, cfg.authentication.inbound_checks,
            cfg.authentication.dmarc_policy) == (True, True, "enforce")
    cfg.apply({"authentication": {"dmarc_policy": "record"}})
    assert cfg.authentication.dmarc_policy == "record"
    with pytest.raises(ConfigError, match="'authentication.dmarc_policy' must be \"enforce\" or \"record\""):
        Config().apply({"authentication": {"dmarc_policy": "quarantine-all"}})
    assert "[authentication]" in Config().to_toml()


# --- the fast path of verification agrees with dkimpy ------------------------------------

TRICKY = [
    # folded fields, tabs and runs of spaces, trailing whitespace on lines
    b"From:  Alice\t <alice@a.test> \r\nTo: bob@b.test,\r\n\t  carol@c.test\r\nSubject: a  \t folded\r\n"
    b" subject line \r\nDate: Sat, 05 Dec 2026 08:00:00 +0000\r\nMessage-ID: <t1@a.test>\r\n\r\n"
    b"line with trailing spaces   \r\n\tindented\t\tline\r\n\r\n\r\n",
    # an empty body, and a body of only blank lines
    b"From: alice@a.test\r\nSubject: empty\r\n\r\n",
    b"From: alice@a.test\r\nSubject: blank\r\n\r\n\r\n\r\n \r\n",
    # a body without a final line break, 8-bit text
    b"From: alice@a.test\r\nSubject: no eol\r\n\r\n\xc3\xa9t\xc3\xa9 sans fin",
    # two Received fields (not signed) and field names in odd case
    b"Received: from x by y; Sat, 05 Dec 2026 08:00:00 +0000\r\nReceived: from z by x; Sat, 05 Dec 2026"
    b" 07:59:00 +0000\r\nFROM: alice@a.test\r\nsubject: case\r\n\r\nbody\r\n",
]


@pytest.mark.parametrize("index", range(len(TRICKY)))
def test_fast_verification_agrees_with_dkimpy(domain_keys: keys.SigningKeys, resolver: Resolver,
                                              monkeypatch: pytest.MonkeyPatch, index: int) -> None:
    """Signatures made by dkimpy itself (an independent signer: its own
    canonicalisation, oversigned and absent fields) pass through
    the fast path, and a change dkimpy rejects is not passed by it."""
    import dkim as dkimpy

    message = TRICKY[index]
    # oversigned From and Subject, fields that are absent (signed as empty)
    headers = [b"from", b"from", b"to", b"subject", b"subject", b"date", b"message-id", b"reply-to"]
    field = dkimpy.sign(message, domain_keys.rsa_selector.encode(), b"a.test", domain_keys.rsa_pem,
                        canonicalize=(b"relaxed", b"relaxed"), include_headers=headers, linesep=b"\r\n")
    ed = dkimpy.sign(message, domain_keys.ed25519_selector.encode(), b"a.test", domain_keys.ed25519_seed_b64,
                     canonicalize=(b"relaxed", b"relaxed"), include_headers=headers, linesep=b"\r\n",
                     signature_algorithm=b"ed25519-sha256")
    signed = ed + field + message
    slow = []
    original = dkim._Verifier.__init__

    def counting(self, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        slow.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(dkim._Verifier, "__init__", counting)
    assert [r.result for r in dkim.verify(signed, resolver.txt)] == ["pass", "pass"]
    assert slow == [], "both passed on the fast path"
    # a changed body line, or a whitespace change inside a word: fails (through dkimpy, with its reason)
    changed = signed[:-4] + bytes([signed[-4] ^ 1]) + signed[-3:] if len(message.split(b"\r\n\r\n", 1)[1]) > 4 \
        else signed.replace(b"Subject: ", b"Subject: x")
    assert {r.result for r in dkim.verify(changed, resolver.txt)} == {"fail"}
    assert slow, "a failure is left to dkimpy"


def test_fast_path_leaves_simple_canonicalization_to_dkimpy(domain_keys: keys.SigningKeys,
                                                           resolver: Resolver) -> None:
    import dkim as dkimpy

    field = dkimpy.sign(MESSAGE, domain_keys.rsa_selector.encode(), b"a.test", domain_keys.rsa_pem,
                        canonicalize=(b"simple", b"simple"), linesep=b"\r\n")
    assert [r.result for r in dkim.verify(field + MESSAGE, resolver.txt)] == ["pass"]
    # simple canonicalisation: a whitespace change that relaxed would forgive fails
    assert [r.result for r in dkim.verify(field + MESSAGE.replace(b"Subject: ", b"Subject:  "), resolver.txt)] == [
        "fail"]


def test_the_public_suffix_list_is_read_when_the_checker_starts(resolver: Resolver) -> None:
    """The checks run on the event loop: the Public Suffix List (read once,
    tens of milliseconds) is loaded as the server builds its checker, not by
    the first message's DMARC evaluation."""
    from mailyard.mailauth.inbound import InboundChecker

    dmarc._psl.cache_clear()
    checker = InboundChecker(resolver, "mx.b.test")
    try:
        assert dmarc._psl.cache_info().currsize == 1
    finally:
        checker.close()


async def test_a_sender_whose_answers_are_cached_is_checked_without_a_thread(
        domain_keys: keys.SigningKeys, dns: DNSServer, resolver: Resolver) -> None:
    """InboundChecker: the first message of a sender asks DNS on the
    checker's thread; the next, its answers all cached, is checked at once on
    the event loop, with the same verdict (a cache miss deep inside pyspf or
    dkimpy is never mistaken for a temperror)."""
    from mailyard.mailauth.inbound import InboundChecker

    txt(dns, "a.test", "v=spf1 ip4:192.0.2.10 -all")
    txt(dns, "mail.a.test", "v=spf1 ip4:192.0.2.10 -all")
    txt(dns, "_dmarc.a.test", "v=DMARC1; p=reject")
    signed = dkim.sign(MESSAGE, domain_keys) + MESSAGE
    checker = InboundChecker(resolver, "mx.b.test")
    sent = []
    submit = checker._pool.submit
    checker._pool.submit = lambda *args, **kw: sent.append(args) or submit(*args, **kw)  # type: ignore[method-assign]
    try:
        first = await checker.check(signed, ip=IP, helo="mail.a.test", reverse_path="alice@a.test")
        assert len(sent) == 1
        again = await checker.check(signed, ip=IP, helo="mail.a.test", reverse_path="alice@a.test")
        assert len(sent) == 1  # no thread this time
        assert again.header == first.header and b"dmarc=pass" in again.header
        # a new sender's answers are not cached: a thread again
        await checker.check(signed, ip="198.51.100.7", helo="other.test", reverse_path="bob@other.test")
        assert len(sent) == 2
    finally:
        checker.close()


@pytest.mark.parametrize("inserted", [
    b"Wire the money to account 12345 today, the CEO\r\n",  # a line without a colon
    b"X Note: a name with a space\r\n",  # not a field name (RFC 5322 2.2: printable, no SP)
    b"\xc3\xa9crit: 8-bit name\r\n",
    b"X-Note : WSP before the colon\r\n",  # obs-optional (RFC 5322 4.5.8): no field to dkimpy or a reader
])
def test_a_header_line_that_is_not_a_field_is_not_passed(domain_keys: keys.SigningKeys, dns: DNSServer,
                                                         resolver: Resolver, inserted: bytes) -> None:
    """RFC 6376 3.4.2 / 5.4 canonicalise the header *fields*; a line in the
    header section that is no field is not one DKIM knows how to sign, and
    dkimpy refuses the message. A reader's parser (Python's email package,
    as the webmail uses) ends the header at such a line and shows it, and
    every field after it, as body text: a line added in transit to a signed
    message must not leave it with DKIM pass and an aligned DMARC pass."""
    from mailyard.message.parse import parse_message

    txt(dns, "_dmarc.a.test", "v=DMARC1; p=reject")
    signed = dkim.sign(MESSAGE, domain_keys) + MESSAGE
    forged = signed.replace(b"\r\n\r\nHello", b"\r\n" + inserted + b"\r\nHello", 1)
    shown = parse_message(forged).get_body(("plain",))
    assert shown is not None and inserted.strip()[-12:].decode() in shown.get_content()  # what a reader sees
    assert "pass" not in {r.result for r in dkim.verify(forged, resolver.txt)}
    v = check_message(resolver, forged, authserv_id="mx.b.test", ip="198.51.100.66", helo="evil.test",
                      reverse_path="x@evil.test")
    assert b"dkim=pass" not in v.header and v.disposition == "reject", v.header


def test_long_signature_texts_are_not_kept(domain_keys: keys.SigningKeys, resolver: Resolver) -> None:
    """The checks keep what repeats for a signer's stream of mail (h= plans,
    Authentication-Results lines) in caches bounded by entries, not octets:
    an h= or an a= folded over many header lines is the message's own and
    is not kept, while the result is the one a short text gives."""
    def fold(value: bytes) -> bytes:
        return b"\r\n ".join(value[i:i + 900] for i in range(0, len(value), 900))

    selector = domain_keys.rsa_selector.encode()
    verdicts = []
    for m in range(2):
        names = b":".join(b"x%d-%x" % (m, i) for i in range(2000))
        message = (b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=a.test; s=" + selector
                   + b"; h=from:" + fold(names) + b"; bh=AAAA; b=AAAA\r\n"
                   + b"DKIM-Signature: v=1; a=" + fold(b"%d" % m + b"y" * 5000)
                   + b"; c=relaxed/relaxed; d=a.test; s=" + selector + b"; h=from; bh=AAAA; b=AAAA\r\n" + MESSAGE)
        plans, lines = dkim._signed_plan.cache_info().currsize, authresults.resinfo_kept.cache_info().currsize
        verdicts.append(check_message(resolver, message, authserv_id="mx.b.test", ip=IP, helo="",
                                      reverse_path="x@a.test"))
        assert dkim._signed_plan.cache_info().currsize == plans
        if m:  # the SPF, ARC and DMARC lines are the first message's again
            assert authresults.resinfo_kept.cache_info().currsize == lines
    assert [r.result for r in verdicts[1].dkim] == ["fail", "neutral"]
    assert b"header.a=1yyyy" in verdicts[1].header


def test_a_long_from_field_is_not_kept(resolver: Resolver) -> None:
    """The From domains (RFC 7489 3.1) of a field value, the DMARC result,
    its Authentication-Results line, the organisational domain and the DNS
    answers are kept for the next message of the stream, but not for a
    value folded over megabytes (which the address parser reads no further
    than 64 KB, so it names no domain: DMARC's permerror, RFC 7489 6.6.1):
    the checks leave no memory behind for it."""
    import gc
    import tracemalloc

    words = b"\r\n ".join(b"w%07d" % i for i in range(200_000))  # about 2 MB of folded display name
    message = b"From: " + words + b" <x@a.test>\r\nTo: y@b.test\r\nSubject: s\r\n\r\nbody\r\n"
    check_message(resolver, message.replace(b"w0000000", b"warm"), authserv_id="mx.b.test", ip=IP, helo="",
                  reverse_path="x@a.test")  # the DNS answers and the other cached lines, once
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        verdict = check_message(resolver, message, authserv_id="mx.b.test", ip=IP, helo="", reverse_path="x@a.test")
        assert verdict.dmarc is not None and verdict.dmarc.result == "permerror"
        assert verdict.disposition == "reject" and b"dmarc=permerror" in verdict.header
        del verdict
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    print(f"\nkept after a 2 MB From field: {kept / 1024:.0f} KB")
    assert kept < 16 * 1024


@pytest.mark.parametrize("expensive", ["signatures", "arc", "header"])
async def test_an_expensive_check_is_never_run_on_the_event_loop(
        domain_keys: keys.SigningKeys, dns: DNSServer, resolver: Resolver, expensive: str) -> None:
    """InboundChecker: even with every DNS answer cached, a message whose
    check is not bounded (more than two DKIM signatures, an ARC set, a header
    over 16 KB: dkimpy verifies what the fast path does not pass, a
    millisecond or more each) is checked on the checker's thread, so it never
    holds up the event loop's other sessions; its verdict is the same."""
    from mailyard.mailauth.inbound import InboundChecker

    txt(dns, "a.test", "v=spf1 ip4:192.0.2.10 -all")
    txt(dns, "mail.a.test", "v=spf1 ip4:192.0.2.10 -all")
    txt(dns, "_dmarc.a.test", "v=DMARC1; p=reject")
    signed = dkim.sign(MESSAGE, domain_keys) + MESSAGE
    if expensive == "signatures":
        message = dkim.sign(signed, domain_keys) + signed  # four signatures
    elif expensive == "arc":
        message = b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=a.test; s=none; t=1; b=AAAA\r\n" + signed
    else:
        message = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"x" * 70) for i in range(240)) + signed
    checker = InboundChecker(resolver, "mx.b.test")
    sent = []
    submit = checker._pool.submit
    checker._pool.submit = lambda *args, **kw: sent.append(args) or submit(*args, **kw)  # type: ignore[method-assign]
    try:
        first = await checker.check(message, ip=IP, helo="mail.a.test", reverse_path="alice@a.test")
        assert len(sent) == 1
        # every answer it needs is cached now: still on the thread
        again = await checker.check(message, ip=IP, helo="mail.a.test", reverse_path="alice@a.test")
        assert len(sent) == 2
        assert again.header == first.header and b"dmarc=pass" in again.header
        # the bounded message next to it is checked on the loop
        await checker.check(signed, ip=IP, helo="mail.a.test", reverse_path="alice@a.test")
        assert len(sent) == 2
    finally:
        checker.close()


def _tags_reference(value: bytes) -> dict[str, str]:
    """RFC 6376 3.2 read the plain way (one partition per spec, whitespace
    split out): what ``dkim._tags`` must give, faster."""
    out: dict[str, str] = {}
    for part in value.split(b";"):
        name, sep, text = part.partition(b"=")
        name = name.strip()
        if not sep or not name.isalpha():
            continue
        key = name.decode("ascii").lower()
        if key in out:
            out[dkim._DUPLICATE] = key
        out[key] = b"".join(text.split()).decode("ascii", "replace")
    return out


def _only_fields_reference(header: bytes) -> bool:
    """``dkim._only_fields`` line by line (RFC 5322 2.2)."""
    import re

    if header.count(b"\r") != header.count(b"\r\n"):
        return False
    seen = False
    for line in header.split(b"\n"):
        if line in (b"", b"\r"):
            continue
        if line[:1] in (b" ", b"\t"):
            if not seen:
                return False
            continue
        if not re.match(rb"[\x21-\x39\x3b-\x7e]+:", line):
            return False
        seen = True
    return True


@pytest.mark.parametrize("seed", range(3))
def test_tag_list_and_header_shape_readers_agree_with_the_plain_reading(seed: int) -> None:
    """The tag-list reader (RFC 6376 3.2, duplicates flagged), its a= and d=
    reader for the order of signatures, and the check that every header line
    is a field or a continuation (RFC 5322 2.2), all on every message's
    path, give what the plain line-by-line reading gives on random inputs
    made of the octets that matter."""
    rng = random.Random(seed)
    pieces = [b" ", b"\t", b"\r\n ", b"\r\n", b"\n", b"\r", b"\x0b", b"\x0c", b";", b"=", b":", b"a", b"B", b"h",
              b"bh", b"x1", b"_", b"\xff", b"\x7f", b"From:", b"X-Y", b"d=", b"v=1", b"\x00", b"b =", b"\r\n\r\n",
              b"D", b"A =", b"; a=", b"ad"]
    for _ in range(20000):
        text = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 30)))
        tags = _tags_reference(text)
        assert dkim._tags(text) == tags, text
        # the order of signatures reads a= and d= alone, as the full reading gives them
        assert dkim._order_tags(text) == {name: tags[name] for name in ("a", "d") if name in tags}, text
        assert dkim._only_fields(text) == _only_fields_reference(text), text


@pytest.mark.parametrize("seed", range(3))
def test_a_header_split_one_match_per_field_is_one_the_fast_path_may_sign(seed: int) -> None:
    """The inbound checks split the header with ``split_plain_fields`` and,
    when it succeeds, tell DKIM the header is only fields, so the fast path
    skips ``_only_fields``: every block it splits must be one that check
    accepts (a line dkimpy and a reader's parser take for no field, such as
    WSP before the colon, must leave the message to dkimpy)."""
    from mailyard.message.headers import split_plain_fields

    rng = random.Random(seed)
    pieces = [b"A", b"From", b"x", b":", b": ", b" :", b"\t:", b" ", b"\t", b"\r\n", b"\n", b"\r", b"\r\n ",
              b"\n\t", b"\r\n\r\n", b"X-Y", b"\x00", b"\xff", b"\x0b", b"=", b";"]
    split = 0
    for _ in range(20000):
        block = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 20)))
        if split_plain_fields(block) is not None:
            split += 1
            assert dkim._only_fields(block), block
    assert split > 500


def _without_b_reference(value: bytes) -> bytes:
    """RFC 6376 3.7's "b= empty" read tag-spec by tag-spec (RFC 6376 3.2)."""
    parts = value.split(b";")
    for i, part in enumerate(parts):
        name, sep, _signature = part.partition(b"=")
        if sep and name.strip() == b"b":
            parts[i] = name + b"="
    return b";".join(parts)


@pytest.mark.parametrize("seed", range(3))
def test_signature_value_without_b_and_strict_base64_agree_with_the_plain_reading(seed: int) -> None:
    """The fast path's deletion of the b= value (RFC 6376 3.7) gives what
    the tag-spec by tag-spec reading gives, on random values made of the
    octets that matter (FWS around names, several b=, bh=, empty values);
    and its strict base64 decoding of bh= and b= (RFC 4648 4) gives what
    ``b64decode(validate=True)`` gives wherever it accepts, and refuses only
    what that reads as no octets at all (a value that never verifies)."""
    rng = random.Random(seed)
    pieces = [b" ", b"\t", b"\r\n ", b"\r\n", b"\x0b", b";", b"=", b"a", b"b", b"B", b"bh", b"b=", b" b =",
              b"x", b"\xff", b"; b=", b"b\t="]
    for _ in range(20000):
        text = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 25)))
        assert dkim._without_b(text) == _without_b_reference(text), text
    letters = "Ab+/=9 -!"
    for _ in range(20000):
        text = "".join(rng.choice(letters) for _ in range(rng.randrange(0, 12)))
        try:
            plain: bytes | None = base64.b64decode(text, validate=True)
        except ValueError:
            plain = None
        try:
            strict: bytes | None = binascii.a2b_base64(text, strict_mode=True)
        except ValueError:
            strict = None
        assert strict == plain or (strict is None and plain == b""), text


@pytest.mark.parametrize("seed", range(2))
def test_fast_path_agrees_with_dkimpy_on_changed_signature_fields(domain_keys: keys.SigningKeys, resolver: Resolver,
                                                                  monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Random changes to a signed message's DKIM-Signature fields and header
    lines (FWS added, tags repeated or renamed, octets changed, lines that
    are no field): the fast path passes a signature only where dkimpy alone
    (the fast path switched off) passes it too."""
    rng = random.Random(seed)
    signed = dkim.sign(MESSAGE, domain_keys) + MESSAGE
    edits = [b" ", b"\t", b"\r\n ", b";", b"; q=dns/txt;", b"; v=1;", b"H", b"X", b"\r\n", b"\r\nNot a field\r\n",
             b"=", b"\r"]
    header_len = signed.index(b"\r\n\r\n")
    passed_fast = 0
    for _ in range(150):
        at = rng.randrange(0, header_len)
        changed = signed[:at] + rng.choice(edits) + signed[at + rng.choice((0, 0, 1)):]
        fast = [r.result for r in dkim.verify(changed, resolver.txt)]
        with monkeypatch.context() as m:
            m.setattr(dkim._Fast, "passes", lambda *args: False)
            slow = [r.result for r in dkim.verify(changed, resolver.txt)]
        assert [r == "pass" for r in fast] == [r == "pass" for r in slow], changed[:header_len + 40]
        passed_fast += fast.count("pass")
    assert passed_fast > 0  # some changes (FWS between tags) keep a signature valid


@pytest.mark.parametrize("seed", range(2))
def test_the_shared_field_index_gives_what_each_check_finds_alone(domain_keys: keys.SigningKeys, resolver: Resolver,
                                                                   seed: int) -> None:
    """check_message reads the header's names once (``dkim.field_index``)
    for DKIM, ARC and the From domains. On random changes to a signed
    message (names in other cases, fields repeated, moved or dropped, ARC
    fields added), each check given the index gives what it gives when it
    walks the fields itself."""
    from mailyard.mailauth import arc
    from mailyard.mailauth.inbound import from_domains
    from mailyard.message.headers import split_fields
    from mailyard.message.parse import split_header_body

    rng = random.Random(seed)
    signed = dkim.sign(MESSAGE, domain_keys) + MESSAGE
    extra = [b"FROM: Other <x@b.test>\r\n", b"from: c@a.test, d@e.test\r\n", b"DKIM-signature: v=1; d=b.test\r\n",
             b"ARC-Seal: i=1; a=rsa-sha256; d=b.test; s=x; cv=none; b=AA==\r\n", b"arc-message-signature: i=1\r\n",
             b"Subject: again\r\n", b"X-Other: y\r\n"]
    for _ in range(60):
        header, body = split_header_body(signed)
        lines = [line + b"\r\n" for line in header.split(b"\r\n") if line]
        # keep folded lines with their field: edit whole fields only
        fields_raw: list[bytes] = []
        for line in lines:
            if line[:1] in (b" ", b"\t") and fields_raw:
                fields_raw[-1] += line
            else:
                fields_raw.append(line)
        for _edit in range(rng.randrange(0, 4)):
            choice = rng.randrange(3)
            if choice == 0:
                fields_raw.insert(rng.randrange(len(fields_raw) + 1), rng.choice(extra))
            elif choice == 1 and fields_raw:
                fields_raw.pop(rng.randrange(len(fields_raw)))
            elif fields_raw:
                at = rng.randrange(len(fields_raw))
                name, sep, rest = fields_raw[at].partition(b":")
                fields_raw[at] = name.swapcase() + sep + rest
        message = b"".join(fields_raw) + b"\r\n" + body
        head, body = split_header_body(message)
        fields = split_fields(head)
        index = dkim.field_index(fields)
        assert from_domains(message, fields, index) == from_domains(message, fields)
        authors = from_domains(message, fields)
        single = authors[0].lower() if authors and len(set(d.lower() for d in authors)) == 1 else None
        assert dkim.verify(message, resolver.txt, parsed=(fields, body), author_domain=single, index=index) == \
            dkim.verify(message, resolver.txt, parsed=(fields, body), author_domain=single)
        assert arc.verify(message, resolver.txt, fields=fields, index=index) == \
            arc.verify(message, resolver.txt, fields=fields)
