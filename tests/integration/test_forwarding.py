"""Forwarding that survives SPF and keeps its authentication, over real SMTP
between mailyard instances (multihost.py; DNS on loopback publishes each
domain's MX, SPF and DKIM keys): an alias at a.test sends c.test's mail on
to b.test with an SRS reverse-path at a.test (mailauth/srs.py), so SPF
passes at b.test, and with an ARC set (RFC 8617) that b.test verifies;
bounces to the SRS address come back to the original sender; forged or
expired SRS addresses are refused at RCPT."""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailyard.config import Config
from mailyard.mailauth import dkim
from mailyard.mailauth.dnscache import Resolver
from mailyard.mailauth.srs import SECRET_FILE, SRS

from .multihost import MultiHost

A, B, C, D = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"

MESSAGE = (
    b"From: Carol <carol@c.test>\r\n"
    b"To: team@a.test\r\n"
    b"Subject: forwarded\r\n"
    b"Message-ID: <fwd1@c.test>\r\n"
    b"Date: Sat, 05 Dec 2026 08:00:00 +0000\r\n"
    b"\r\n"
    b"Hello through the alias.\r\n"
)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[MultiHost]:
    harness = MultiHost(tmp_path)
    try:
        yield harness
    finally:
        harness.stop()


def checking(cfg: Config) -> None:
    cfg.authentication.inbound_checks = True


def publish(hosts: MultiHost, domain: str) -> None:
    hosts.dns.publish_dkim(hosts.servers[domain].data_dir, domain, activate=True)


def submit(hosts: MultiHost, sender: str, rcpts: list[str], data: bytes) -> None:
    rs = hosts.servers[sender.rpartition("@")[2]]
    with smtplib.SMTP(rs.host, rs.config.ports.submission, timeout=10) as client:
        client.ehlo("client.c.test")
        client.starttls()
        client.ehlo("client.c.test")
        client.login(sender, hosts.passwords[sender])
        assert client.sendmail(sender, rcpts, data) == {}


def fields(raw: bytes, name: str) -> list[str]:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return [" ".join(str(v).split()) for v in msg.get_all(name, [])]


def return_path(raw: bytes) -> str:
    (value,) = fields(raw, "Return-Path")
    return value.strip("<>")


def mx_rcpt(hosts: MultiHost, domain: str, mail_from: str, rcpt: str, data: bytes | None, source: str
            ) -> tuple[int, bytes]:
    """A peer MTA on ``source`` gives ``domain``'s MX port a transaction: the
    RCPT reply, or the DATA reply when ``data`` is given and RCPT was taken."""
    rs = hosts.servers[domain]
    with smtplib.SMTP(rs.host, rs.config.ports.smtp, timeout=10, source_address=(source, 0)) as client:
        client.ehlo(f"mx.{domain}.peer")
        client.mail(mail_from)
        code, text = client.rcpt(rcpt)
        if data is None or code != 250:
            return code, text
        return client.data(data)


def three_hosts(hosts: MultiHost) -> None:
    hosts.add("c.test", C, {"carol": "carol-pw-1"})
    hosts.add("a.test", A, {"alice": "alice-pw-1"}, configure=checking)
    hosts.add("b.test", B, {"bob": "bob-pw-1"}, configure=checking)
    for domain in ("a.test", "b.test", "c.test"):
        publish(hosts, domain)
    hosts.dns.add("_dmarc.c.test", "TXT", '"v=DMARC1; p=reject"')


def test_alias_forward_has_srs_sender_passes_spf_and_arc(hosts: MultiHost) -> None:
    three_hosts(hosts)
    a = hosts.servers["a.test"]
    a.call(a.store.add_alias("team@a.test", ["bob@b.test", "alice@a.test"]))
    submit(hosts, "carol@c.test", ["team@a.test"], MESSAGE)
    (raw,) = hosts.wait_messages("bob@b.test")
    sender = return_path(raw)
    print("reverse-path at b.test:", sender)
    assert re.fullmatch(r"SRS0=[A-Za-z0-9+/]{4}=[A-Z2-7]{2}=c\.test=carol@a\.test", sender), sender
    assert SRS((a.data_dir / SECRET_FILE).read_bytes().strip()).reverse(sender) == "carol@c.test"
    (ar,) = [f for f in fields(raw, "Authentication-Results") if f.startswith("mx.b.test;")]
    print(ar)
    # SPF is checked for the SRS address, whose domain's record names a.test's address
    # (RFC 2045 5.1: "=" is a tspecial, so the value is a quoted-string)
    assert ar.startswith(f'mx.b.test; spf=pass smtp.mailfrom="{sender}"; ')
    assert "dkim=pass header.d=c.test" in ar  # the author's signature survives the alias
    # the forwarder signs too; b.test stopped at the author's passing signature
    # (all DMARC needs), so the forwarder's is verified here
    forwarder = [r for r in dkim.verify(raw, Resolver(hosts.dns.address).txt) if r.domain == "a.test"]
    assert [r.result for r in forwarder] == ["pass", "pass"]
    assert "arc=pass (i=1);" in ar
    # c.test's p=reject is met through its DKIM signature (SPF is a.test's now)
    assert ar.endswith("dmarc=pass (aligned DKIM) header.from=c.test"), ar
    (seal,) = fields(raw, "ARC-Seal")
    assert seal.startswith("i=1; cv=none; a=rsa-sha256; d=a.test; ")
    (aar,) = fields(raw, "ARC-Authentication-Results")
    assert aar.startswith("i=1; mx.a.test; spf=pass smtp.mailfrom=carol@c.test;")
    # the local copy (stored in the same commit, with the same body) keeps
    # the original reverse-path
    (local,) = hosts.wait_messages("alice@a.test")
    assert return_path(local) == "carol@c.test"
    assert raw.endswith(MESSAGE)


def test_bounce_to_srs_address_reaches_the_original_sender(hosts: MultiHost) -> None:
    """b.test (here a peer speaking from b.test's address) bounces to the SRS
    reverse-path: a.test takes it at RCPT and sends it on to carol@c.test."""
    three_hosts(hosts)
    a = hosts.servers["a.test"]
    a.call(a.store.add_alias("team@a.test", ["bob@b.test"]))
    submit(hosts, "carol@c.test", ["team@a.test"], MESSAGE)
    (raw,) = hosts.wait_messages("bob@b.test")
    srs_address = return_path(raw)
    bounce = (b"From: MAILER-DAEMON@mx.b.test\r\nTo: " + srs_address.encode() + b"\r\n"
              b"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn1@mx.b.test>\r\n"
              b"Date: Sat, 05 Dec 2026 08:05:00 +0000\r\n\r\nThe forwarded message could not be delivered.\r\n")
    code, text = mx_rcpt(hosts, "a.test", "", srs_address, bounce, B)
    assert code == 250, text
    (dsn,) = hosts.wait_messages("carol@c.test")
    assert b"Subject: Undelivered Mail Returned to Sender" in dsn and dsn.endswith(
        b"The forwarded message could not be delivered.\r\n")
    assert return_path(dsn) == ""  # a bounce stays a bounce (RFC 5321 4.5.5)


def test_failed_forward_dsn_goes_to_the_original_sender(hosts: MultiHost) -> None:
    """The alias points at an address b.test refuses: a.test's own DSN for the
    forwarded copy is addressed to the SRS reverse-path, which a.test
    resolves back to carol@c.test."""
    three_hosts(hosts)
    a = hosts.servers["a.test"]
    a.call(a.store.add_alias("team@a.test", ["nobody@b.test"]))
    submit(hosts, "carol@c.test", ["team@a.test"], MESSAGE)
    (dsn,) = hosts.wait_messages("carol@c.test")
    assert b"Content-Type: multipart/report" in dsn and b"nobody@b.test" in dsn
    (entry,) = [e for e in hosts.queue("a.test") if e.reverse_path.startswith("SRS0=")] or [None]
    assert entry is None or entry.reverse_path.endswith("=c.test=carol@a.test")


def test_forged_and_expired_srs_addresses_are_refused(hosts: MultiHost) -> None:
    three_hosts(hosts)
    a = hosts.servers["a.test"]
    srs = SRS((a.data_dir / SECRET_FILE).read_bytes().strip())
    good = srs.forward("carol@c.test", "a.test")
    forged = "SRS0=AAAA" + good[9:] if not good.startswith("SRS0=AAAA") else "SRS0=BBBB" + good[9:]
    other_target = good.replace("=carol@", "=mallory@")
    expired = srs.forward("carol@c.test", "a.test", now=time.time() - 30 * 86400)
    for address in (forged, other_target, expired):
        code, text = mx_rcpt(hosts, "a.test", "", address, None, B)
        assert (code, text) == (550, f"5.1.1 <{address}>: no such user here".encode()), address
    assert mx_rcpt(hosts, "a.test", "", good, None, B)[0] == 250
    assert mx_rcpt(hosts, "a.test", "", good.lower(), None, B)[0] == 250  # case-insensitive hash


def test_two_forwarders_srs1_and_an_arc_chain_of_two(hosts: MultiHost) -> None:
    """c.test -> alias at a.test -> alias at b.test -> d.test: d.test sees an
    SRS1 reverse-path at b.test (pointing at a.test's SRS0), SPF passing for
    b.test and an ARC chain of two sets that passes; a bounce to the SRS1
    address goes b.test -> a.test -> carol."""
    three_hosts(hosts)
    hosts.add("d.test", D, {"dave": "dave-pw-1"}, configure=checking)
    publish(hosts, "d.test")
    a, b = hosts.servers["a.test"], hosts.servers["b.test"]
    a.call(a.store.add_alias("team@a.test", ["relay@b.test"]))
    b.call(b.store.add_alias("relay@b.test", ["dave@d.test"]))
    submit(hosts, "carol@c.test", ["team@a.test"], MESSAGE)
    (raw,) = hosts.wait_messages("dave@d.test")
    sender = return_path(raw)
    print("reverse-path at d.test:", sender)
    assert re.fullmatch(r"SRS1=[A-Za-z0-9+/]{4}=a\.test==[A-Za-z0-9+/]{4}=[A-Z2-7]{2}=c\.test=carol@b\.test",
                        sender), sender
    (ar,) = [f for f in fields(raw, "Authentication-Results") if f.startswith("mx.d.test;")]
    print(ar)
    assert f'spf=pass smtp.mailfrom="{sender}";' in ar and "arc=pass (i=2);" in ar
    seals = fields(raw, "ARC-Seal")
    assert [s.split(";")[0:2] for s in seals] == [["i=2", " cv=pass"], ["i=1", " cv=none"]]
    bounce = (b"From: MAILER-DAEMON@mx.d.test\r\nTo: " + sender.encode() + b"\r\nSubject: bounced twice over\r\n"
              b"Message-ID: <dsn2@mx.d.test>\r\nDate: Sat, 05 Dec 2026 08:05:00 +0000\r\n\r\nNo such luck.\r\n")
    code, text = mx_rcpt(hosts, "b.test", "", sender, bounce, D)
    assert code == 250, text
    (dsn,) = hosts.wait_messages("carol@c.test")
    assert b"Subject: bounced twice over" in dsn
