"""``mailyard init`` / ``domain add`` make DKIM keys; ``mailyard dkim rotate`` /
``activate`` switch them only once DNS shows the new records; ``mailyard dns``
prints every record a domain needs and ``mailyard dns check`` compares them
with DNS (the project's DNS test server, multihost.py)."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailyard.mailauth import keys, records

from .multihost import DNSServer


def run(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailyard", "--data", str(data), *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    server = DNSServer()
    yield server
    server.stop()


def zone_to_dns(dns: DNSServer, line: str) -> None:
    """Publish one zone-file line of ``mailyard dns`` on the test server."""
    name, _ttl, _in, rdtype, value = line.split(" ", 4)
    dns.add(name, rdtype, value)


def test_init_makes_keys_and_dns_prints_every_record(tmp_path: Path) -> None:
    data = tmp_path / "data"
    r = run(data, "init", "--domain", "a.test")
    assert r.returncode == 0, r.stderr
    gen = keys.active_generation(data, "a.test")
    assert gen is not None and f"selectors {gen}-rsa, {gen}-ed25519" in r.stdout
    for name in (f"{gen}.rsa.pem", f"{gen}.ed25519.key"):
        assert stat.S_IMODE((data / "dkim" / "a.test" / name).stat().st_mode) == 0o600
    r = run(data, "domain", "add", "b.test")
    assert r.returncode == 0 and keys.active_generation(data, "b.test") is not None
    out = run(data, "dns", "a.test").stdout.splitlines()
    # the policy the web server serves for mta-sts.a.test (web/wellknown.py), whose digest is the TXT id
    policy = "version: STSv1\r\nmode: testing\r\nmx: mail.a.test\r\nmax_age: 604800\r\n"
    assert records.served_policy("testing", "", 604800, "mail.a.test") == policy
    loaded = keys.load(data, "a.test")
    assert loaded is not None
    rsa_rec, ed_rec = keys.records(loaded)
    assert out == [
        "; DNS records for a.test (zone-file syntax)",
        "a.test. 3600 IN MX 10 mail.a.test.",
        'a.test. 3600 IN TXT "v=spf1 mx -all"',
        f"{gen}-rsa._domainkey.a.test. 3600 IN TXT {keys.txt_zone_value(rsa_rec.text)}",
        f'{gen}-ed25519._domainkey.a.test. 3600 IN TXT "{ed_rec.text}"',
        '_dmarc.a.test. 3600 IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@a.test"',
        "_submission._tcp.a.test. 3600 IN SRV 0 1 2587 mail.a.test.",
        "_submissions._tcp.a.test. 3600 IN SRV 0 1 2465 mail.a.test.",
        "_imap._tcp.a.test. 3600 IN SRV 0 1 2143 mail.a.test.",
        "_imaps._tcp.a.test. 3600 IN SRV 0 1 2993 mail.a.test.",
        "_pop3._tcp.a.test. 3600 IN SRV 0 1 2110 mail.a.test.",
        "_pop3s._tcp.a.test. 3600 IN SRV 0 1 2995 mail.a.test.",
        f'_mta-sts.a.test. 3600 IN TXT "v=STSv1; id={records.policy_id(policy)}"',
        "mta-sts.a.test. 3600 IN CNAME mail.a.test.",
        '_smtp._tls.a.test. 3600 IN TXT "v=TLSRPTv1; rua=mailto:postmaster@a.test"',
        "autoconfig.a.test. 3600 IN CNAME mail.a.test.",
        "autodiscover.a.test. 3600 IN CNAME mail.a.test.",
        "_autodiscover._tcp.a.test. 3600 IN SRV 0 1 443 mail.a.test.",
    ]
    # RFC 1035 3.3.14: a TXT string holds at most 255 octets; the RSA key takes two
    assert [len(p) for p in re.findall(r'"([^"]*)"', keys.txt_zone_value(rsa_rec.text))] == [
        255, len(rsa_rec.text) - 255]
    # the server's public address goes into SPF
    spf = [line for line in run(data, "dns", "a.test", "--address", "1.2.3.4").stdout.splitlines()
           if "spf1" in line]
    assert spf == ['a.test. 3600 IN TXT "v=spf1 mx ip4:1.2.3.4 -all"']


def test_dns_check_and_dkim_rotation(tmp_path: Path, dns: DNSServer) -> None:
    data = tmp_path / "data"
    assert run(data, "init", "--domain", "a.test").returncode == 0
    text = (data / "config.toml").read_text()
    text = text.replace('nameservers = ""', f'nameservers = "{dns.address}"')
    (data / "config.toml").write_text(text)
    lines = [line for line in run(data, "dns", "a.test").stdout.splitlines() if not line.startswith(";")]
    r = run(data, "dns", "check", "a.test")
    assert r.returncode == 1 and r.stdout.splitlines() == [f"missing   {line}" for line in lines]
    for line in lines:
        zone_to_dns(dns, line)
    dns.remove("_dmarc.a.test")
    dns.add("_dmarc.a.test", "TXT", '"v=DMARC1; p=none"')
    r = run(data, "dns", "check", "a.test")
    dmarc_line = next(line for line in lines if line.startswith("_dmarc"))
    assert r.returncode == 1, r.stdout
    assert r.stdout.splitlines() == [
        f"{'different' if line == dmarc_line else 'ok':9} {line}" for line in lines
    ][:lines.index(dmarc_line) + 1] + ["          (DNS has: v=DMARC1; p=none)"] + [
        f"ok        {line}" for line in lines[lines.index(dmarc_line) + 1:]]
    dns.remove("_dmarc.a.test")
    zone_to_dns(dns, dmarc_line)
    r = run(data, "dns", "check", "a.test")
    assert r.returncode == 0 and all(line.startswith("ok ") for line in r.stdout.splitlines())

    # rotation: a new generation signs only after activate, which checks DNS first
    old = keys.active_generation(data, "a.test")
    r = run(data, "dkim", "rotate", "a.test")
    assert r.returncode == 0, r.stderr
    new = re.search(r"mailyard dkim activate a.test (\S+)", r.stdout).group(1)  # type: ignore[union-attr]
    published = [line for line in r.stdout.splitlines() if not line.startswith(";")]
    assert [line.split()[0] for line in published] == [f"{new}-rsa._domainkey.a.test.",
                                                       f"{new}-ed25519._domainkey.a.test."]
    assert keys.active_generation(data, "a.test") == old
    r = run(data, "dkim", "activate", "a.test", new)
    assert r.returncode == 1 and "not visible in DNS yet" in r.stderr and "--force" in r.stderr
    assert keys.active_generation(data, "a.test") == old
    for line in published:
        zone_to_dns(dns, line)
    r = run(data, "dkim", "activate", "a.test", new)
    assert r.returncode == 0, r.stderr
    assert keys.active_generation(data, "a.test") == new
    assert run(data, "dkim", "list", "a.test").stdout.splitlines() == [old, f"{new}  (active)"]
    # --force switches without DNS
    newer = re.search(r"activate a.test (\S+)", run(data, "dkim", "rotate", "a.test").stdout).group(1)  # type: ignore[union-attr]
    assert run(data, "dkim", "activate", "a.test", newer, "--force").returncode == 0
    assert keys.active_generation(data, "a.test") == newer
    r = run(data, "dkim", "activate", "a.test", "nope")
    assert r.returncode == 1 and "no DKIM key generation 'nope'" in r.stderr
