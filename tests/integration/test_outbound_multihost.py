"""Mail between mailyard servers: a.test (127.0.0.2), b.test (127.0.0.3),
c.test (127.0.0.4), with MX records from a test DNS server (multihost.py)."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
import smtplib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailyard.config import Config
from mailyard.store.api import NewRecipient

from .multihost import MultiHost, ScriptedSMTP


@pytest.fixture
def hosts(tmp_path: Path, use_store_backend: Callable[[Config], None]) -> Iterator[MultiHost]:
    """The multi-host harness; every instance and the DNS server stopped at the end."""
    harness = MultiHost(tmp_path, store=use_store_backend)
    try:
        yield harness
    finally:
        harness.stop()


A, B, C, D = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"

MESSAGE = (
    b"From: Alice <alice@a.test>\r\n"
    b"To: bob@b.test, carol@b.test, dave@c.test\r\n"
    b"Subject: across the net\r\n"
    b"Message-ID: <m1@a.test>\r\n"
    b"Date: Mon, 23 Nov 2026 08:00:00 +0000\r\n"
    b"\r\n"
    b"Hello from a.test.\r\n"
    b".leading dot survives\r\n"
)


def submit(hosts: MultiHost, sender: str, rcpts: list[str], data: bytes, **mail_options: list[str]) -> None:
    """Alice's mail client: submission port with AUTH (RFC 6409, 4954)."""
    domain = sender.rpartition("@")[2]
    rs = hosts.servers[domain]
    with smtplib.SMTP(rs.host, rs.config.ports.submission, timeout=10) as client:
        client.ehlo("client.a.test")
        client.starttls()
        client.ehlo("client.a.test")
        client.login(sender, hosts.passwords[sender])
        refused = client.sendmail(sender, rcpts, data, **mail_options)
        assert refused == {}


def parsed(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_alice_to_bob_carol_and_dave_over_three_servers(hosts: MultiHost) -> None:
    hosts.add("a.test", A, {"alice": "alice-pw-1"})
    b = hosts.add("b.test", B, {"bob": "bob-pw-1", "carol": "carol-pw-1"})
    hosts.add("c.test", C, {"dave": "dave-pw-1"})
    submit(hosts, "alice@a.test", ["bob@b.test", "carol@b.test", "dave@c.test"], MESSAGE)
    for user in ("bob@b.test", "carol@b.test", "dave@c.test"):
        (raw,) = hosts.wait_messages(user)
        assert raw.endswith(MESSAGE), "the body arrives byte for byte"
        msg = parsed(raw)
        received = msg.get_all("Received")
        assert len(received) == 2, received  # submission at a.test, then the MX hop
        hop, submission = received
        assert "by mx.a.test" in submission and "ESMTPSA" in submission
        assert "from mx.a.test" in hop and "[127.0.0.2]" in hop and f"by mx.{user.split('@')[1]}" in hop
        assert msg["Return-Path"] == "<alice@a.test>"
    # bob and carol share one transaction on one connection to b.test
    assert b.server.stats["smtp_sessions"] == 1
    hosts.wait_for(lambda: not hosts.queue("a.test"), what="a.test's queue to empty")


def test_connection_reuse_several_messages_one_connection(hosts: MultiHost) -> None:

    def one_connection(cfg) -> None:  # noqa: ANN001
        cfg.delivery.max_connections_per_domain = 1

    a = hosts.add("a.test", A, {"alice": "alice-pw-1"}, configure=one_connection)
    b = hosts.add("b.test", B, {"bob": "bob-pw-1"})
    # Queue five messages while the runner is held back, then let it go at once.
    queue = a.server.queue

    async def put_all() -> None:
        await queue.stop()
        for n in range(5):
            body = MESSAGE.replace(b"<m1@a.test>", f"<reuse{n}@a.test>".encode())
            await queue.enqueue(body, "alice@a.test", [NewRecipient("bob@b.test")])
        await queue.start()

    a.call(put_all())
    hosts.wait_messages("bob@b.test", 5)
    assert b.server.stats["smtp_sessions"] == 1, "five messages over one connection"
    assert queue.stats["connections"] == 1 and queue.stats["transactions"] == 5


def test_mx_preference_and_failover(hosts: MultiHost) -> None:
    hosts.add("a.test", A, {"alice": "alice-pw-1"})
    # b.test: primary MX (preference 5) on 127.0.0.6 where nothing listens; backup is the real server.
    b = hosts.add("b.test", B, {"bob": "bob-pw-1"}, mx=False)
    hosts.dns.add("b.test", "MX", "5 primary.b.test.")
    hosts.dns.add("primary.b.test", "A", "127.0.0.6")
    hosts.dns.add("b.test", "MX", "20 backup.b.test.")
    hosts.dns.add("backup.b.test", "A", B)
    submit(hosts, "alice@a.test", ["bob@b.test"], MESSAGE)
    (raw,) = hosts.wait_messages("bob@b.test")
    assert b.server.stats["smtp_sessions"] == 1
    names = [q[0] for q in hosts.dns.queries]
    assert names.index("primary.b.test.") < names.index("backup.b.test."), "preference order"


def test_no_mx_falls_back_to_a_record(hosts: MultiHost) -> None:
    hosts.add("a.test", A, {"alice": "alice-pw-1"})
    hosts.add("b.test", B, {"bob": "bob-pw-1"}, mx=False)
    hosts.dns.add("b.test", "A", B)  # RFC 5321 5.1: the implicit MX
    submit(hosts, "alice@a.test", ["bob@b.test"], MESSAGE)
    hosts.wait_messages("bob@b.test")


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_temporary_failure_then_success(hosts: MultiHost) -> None:
    a = hosts.add("a.test", A, {"alice": "alice-pw-1"})
    # b.test is down at first: connection refused -> 4xx -> retried with back-off.
    hosts.add("b.test", B, {"bob": "bob-pw-1"}, start=False)
    submit(hosts, "alice@a.test", ["bob@b.test"], MESSAGE)
    entry = hosts.wait_for(lambda: [e for e in hosts.queue("a.test") if e.recipients[0].attempts >= 1],
                           what="a first failed attempt")[0]
    assert entry.recipients[0].last_reply.startswith("421 4.4.1")
    hosts.restart("b.test")
    hosts.wait_messages("bob@b.test")
    hosts.wait_for(lambda: not hosts.queue("a.test"), what="the queue to empty")
    assert a.server.queue.stats["deferred"] >= 1 and a.server.queue.stats["delivered"] == 1


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_5xx_bounce_arrives_in_alices_inbox_as_dsn(hosts: MultiHost) -> None:
    hosts.add("a.test", A, {"alice": "alice-pw-1"})
    hosts.add("b.test", B, {"bob": "bob-pw-1"})
    submit(hosts, "alice@a.test", ["bob@b.test", "nobody@b.test"], MESSAGE)
    hosts.wait_messages("bob@b.test")
    (dsn_raw,) = hosts.wait_messages("alice@a.test")
    dsn = parsed(dsn_raw)
    assert dsn["Return-Path"] == "<>"
    assert dsn["From"].addresses[0].username == "MAILER-DAEMON"
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = list(dsn.iter_parts())
    assert parts[1].get_content_type() == "message/delivery-status"
    status = parts[1].as_string()
    assert "Final-Recipient: rfc822; nobody@b.test" in status
    assert "Action: failed" in status and "Status: 5.1.1" in status
    assert "Remote-MTA: dns; mx.b.test" in status
    assert "bob@b.test" not in status, "only the failed recipient is reported"
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert "Subject: across the net" in parts[2].get_content()
    hosts.wait_for(lambda: not hosts.queue("a.test"), what="the queue to empty")


def test_ret_full_and_envid_and_notify_never(hosts: MultiHost) -> None:
    hosts.add("a.test", A, {"alice": "alice-pw-1"})
    hosts.add("b.test", B, {"bob": "bob-pw-1"})
    rs = hosts.servers["a.test"]
    with smtplib.SMTP(rs.host, rs.config.ports.submission, timeout=10) as client:
        client.ehlo("client")
        client.login("alice@a.test", "alice-pw-1")
        client.mail("alice@a.test", ["RET=FULL", "ENVID=env+2B1"])
        assert client.rcpt("nobody@b.test", ["NOTIFY=FAILURE", "ORCPT=rfc822;nobody@b.test"])[0] == 250
        assert client.rcpt("ghost@b.test", ["NOTIFY=NEVER"])[0] == 250
        assert client.data(MESSAGE)[0] == 250
    (dsn_raw,) = hosts.wait_messages("alice@a.test")
    dsn = parsed(dsn_raw)
    parts = list(dsn.iter_parts())
    status = parts[1].as_string()
    assert "Original-Envelope-Id: env+1" in status
    assert "Original-Recipient: rfc822;nobody@b.test" in status
    assert "ghost@b.test" not in status, "NOTIFY=NEVER"
    assert parts[2].get_content_type() == "message/rfc822", "RET=FULL returns the whole message"
    assert b"Hello from a.test." in dsn_raw
    hosts.wait_for(lambda: not hosts.queue("a.test"), what="the queue to empty")


def test_null_mx_bounces_at_once(hosts: MultiHost) -> None:
    a = hosts.add("a.test", A, {"alice": "alice-pw-1"})
    hosts.dns.add("nomail.test", "MX", "0 .")
    submit(hosts, "alice@a.test", ["someone@nomail.test"], MESSAGE)
    (dsn_raw,) = hosts.wait_messages("alice@a.test")
    assert b"Status: 5.1.10" in dsn_raw and b"null MX" in dsn_raw
    assert a.server.queue.stats["connections"] == 0


def test_expiry_bounce_with_a_short_schedule(hosts: MultiHost) -> None:

    def short(cfg) -> None:  # noqa: ANN001
        cfg.delivery.retry_initial = 0.2
        cfg.delivery.max_lifetime = 1.5

    hosts.add("a.test", A, {"alice": "alice-pw-1"}, configure=short)
    hosts.dns.add("down.test", "MX", "10 mx.down.test.")
    hosts.dns.add("mx.down.test", "A", "127.0.0.6")  # nothing listens there
    submit(hosts, "alice@a.test", ["x@down.test"], MESSAGE)
    (dsn_raw,) = hosts.wait_messages("alice@a.test")
    assert b"Action: failed" in dsn_raw and b"Status: 4.4.7" in dsn_raw
    assert not hosts.queue("a.test")


def test_delay_warning_once_then_delivery(hosts: MultiHost) -> None:

    def warn_fast(cfg) -> None:  # noqa: ANN001
        cfg.delivery.delay_warning = 0.01

    hosts.add("a.test", A, {"alice": "alice-pw-1"}, configure=warn_fast)
    hosts.add("b.test", B, {"bob": "bob-pw-1"}, start=False)
    submit(hosts, "alice@a.test", ["bob@b.test"], MESSAGE)
    (warning,) = hosts.wait_messages("alice@a.test")
    assert b"Action: delayed" in warning and b"Will-Retry-Until:" in warning
    hosts.restart("b.test")
    hosts.wait_messages("bob@b.test")
    hosts.wait_for(lambda: not hosts.queue("a.test"), what="the queue to empty")
    assert len(hosts.servers["a.test"].messages("alice@a.test")) == 1, "one warning only"


def test_bounce_of_a_bounce_is_never_sent(hosts: MultiHost) -> None:
    a = hosts.add("a.test", A, {"alice": "alice-pw-1"})
    hosts.add("b.test", B, {"bob": "bob-pw-1"})
    a.call(a.server.queue.enqueue(MESSAGE, "", ["nobody@b.test"]))
    hosts.wait_for(lambda: a.server.queue.stats["failed"] == 1, what="the failure")
    hosts.wait_for(lambda: not hosts.queue("a.test"), what="the queue to empty")
    assert a.messages("alice@a.test") == [] and a.messages("postmaster@a.test") == []


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_queue_survives_a_restart(hosts: MultiHost) -> None:
    a = hosts.add("a.test", A, {"alice": "alice-pw-1"})
    hosts.add("b.test", B, {"bob": "bob-pw-1"}, start=False)
    submit(hosts, "alice@a.test", ["bob@b.test"], MESSAGE)
    hosts.wait_for(lambda: [e for e in hosts.queue("a.test") if e.recipients[0].attempts >= 1],
                   what="a first failed attempt")
    a.stop()
    hosts.restart("b.test")
    hosts.restart("a.test")
    (raw,) = hosts.wait_messages("bob@b.test")
    assert raw.endswith(MESSAGE)


def test_smtputf8_message_to_a_peer_without_smtputf8_bounces(hosts: MultiHost) -> None:
    a = hosts.add("a.test", A, {"alice": "alice-pw-1"})
    b = hosts.add("b.test", B, {"bob": "bob-pw-1"})
    # SMTPUTF8 needed but b.test does not offer it -> 5.6.7 bounce (RFC 6531 3.2: no downgrade).
    assert b.server.services is not None
    b.server.services = dataclasses.replace(
        b.server.services, smtp_engine=dataclasses.replace(b.server.services.smtp_engine, smtputf8=False)
    )
    a.call(a.server.queue.enqueue(MESSAGE, "alice@a.test", ["bob@b.test"], smtputf8=True))
    (dsn_raw,) = hosts.wait_messages("alice@a.test")
    assert b"Status: 5.6.7" in dsn_raw


def test_4xx_at_end_of_data_then_success(hosts: MultiHost) -> None:
    a = hosts.add("a.test", A, {"alice": "alice-pw-1"})
    peer = hosts.add_scripted("b.test", B, data_replies=["451 4.3.0 Temporary local problem"])
    submit(hosts, "alice@a.test", ["bob@b.test"], MESSAGE)
    hosts.wait_for(lambda: len(peer.transactions) >= 2, what="the retry")
    assert [t["reply"][:3] for t in peer.transactions] == ["451", "250"]
    assert peer.transactions[1]["data"].endswith(MESSAGE)
    hosts.wait_for(lambda: not hosts.queue("a.test"), what="the queue to empty")
    assert a.server.queue.stats["deferred"] == 1 and a.server.queue.stats["delivered"] == 1
    assert a.messages("alice@a.test") == [], "no bounce for a delivered message"


def test_smarthost_with_auth(hosts: MultiHost) -> None:
    relay = ScriptedSMTP("127.0.0.6", hosts.smtp_port, auth=("relayuser", "relay-secret"))
    hosts.scripted.append(relay)

    def smarthost(cfg) -> None:  # noqa: ANN001
        cfg.delivery.relay_host = "127.0.0.6"
        cfg.delivery.relay_port = hosts.smtp_port
        cfg.delivery.relay_tls = "none"  # the scripted relay has no TLS; real set-ups use starttls/implicit
        cfg.delivery.relay_username = "relayuser"
        cfg.delivery.relay_password = "relay-secret"

    hosts.add("a.test", A, {"alice": "alice-pw-1"}, configure=smarthost)
    submit(hosts, "alice@a.test", ["bob@b.test", "dave@c.test"], MESSAGE)
    hosts.wait_for(lambda: len(relay.transactions) >= 1 and not hosts.queue("a.test"), what="the relay")
    rcpts = sorted(r for t in relay.transactions for r in t["rcpts"])
    assert rcpts == ["RCPT TO:<bob@b.test>", "RCPT TO:<dave@c.test>"]
    assert relay.auth_seen and relay.auth_seen[0].startswith("AUTH PLAIN ")
    assert relay.connections == 1, "one connection carries both domains' transactions"


def test_alias_on_the_mx_port_forwards_off_site_in_one_commit(hosts: MultiHost) -> None:
    hosts.add("a.test", A, {"alice": "alice-pw-1"})
    b = hosts.add("b.test", B, {"bob": "bob-pw-1"})
    hosts.add("c.test", C, {"dave": "dave-pw-1"})
    b.call(b.store.add_alias("team@b.test", ["bob@b.test", "dave@c.test"]))
    submit(hosts, "alice@a.test", ["team@b.test"], MESSAGE)
    (raw_bob,) = hosts.wait_messages("bob@b.test")
    (raw_dave,) = hosts.wait_messages("dave@c.test")
    assert raw_dave.endswith(MESSAGE)
    received = parsed(raw_dave).get_all("Received")
    assert len(received) == 3, "submission at a.test, a.test -> b.test, b.test -> c.test"
    assert "by mx.c.test" in received[0] and "by mx.b.test" in received[1] and "by mx.a.test" in received[2]
    # the forwarded copy's reverse-path is SRS-rewritten at b.test (mailauth/srs.py)
    assert re.fullmatch(r"<SRS0=[A-Za-z0-9+/]{4}=[A-Z2-7]{2}=a\.test=alice@b\.test>", parsed(raw_dave)["Return-Path"])
    assert parsed(raw_bob)["Return-Path"] == "<alice@a.test>"
    hosts.wait_for(lambda: not hosts.queue("b.test"), what="b.test's queue to empty")


def test_notify_success_to_a_peer_without_dsn_gives_a_relayed_report(hosts: MultiHost) -> None:
    hosts.add("a.test", A, {"alice": "alice-pw-1"})
    peer = hosts.add_scripted("b.test", B)  # no DSN keyword in its EHLO
    rs = hosts.servers["a.test"]
    with smtplib.SMTP(rs.host, rs.config.ports.submission, timeout=10) as client:
        client.login("alice@a.test", "alice-pw-1")
        client.mail("alice@a.test")
        assert client.rcpt("bob@b.test", ["NOTIFY=SUCCESS,FAILURE"])[0] == 250
        assert client.data(MESSAGE)[0] == 250
    (report,) = hosts.wait_messages("alice@a.test")
    assert b"Action: relayed" in report and b"Final-Recipient: rfc822; bob@b.test" in report
    assert len(peer.transactions) == 1 and "NOTIFY" not in peer.transactions[0]["rcpts"][0]
