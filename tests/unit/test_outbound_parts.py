"""Outbound delivery parts: the store queue, MX ordering and lookup, DSN building, back-off."""

from __future__ import annotations

import email
import email.policy
import random
from pathlib import Path

import pytest

from mailyard.config import DeliveryConfig
from mailyard.delivery.bounce import (
    ReportedRecipient,
    build_dsn,
    should_report,
    status_of,
    wants_report,
)
from mailyard.delivery.mx import (
    MXResolver,
    NullMX,
    PermanentDNSError,
    make_resolver,
    order_mx,
    parse_nameservers,
)
from mailyard.delivery.queue import backoff
from mailyard.store.api import DeliveryTarget
from mailyard.store.queue import (
    DELIVERED,
    FAILED,
    PENDING,
    NewMessage,
    NewQueueEntry,
    NewRecipient,
    QueueEntry,
    QueueRecipient,
    RecipientOutcome,
)
from mailyard.store.sqlite import SQLiteStore
from tests.integration.multihost import DNSServer

BODY = b"From: a@a.test\r\nTo: b@b.test\r\nSubject: s\r\n\r\nbody\r\n"


@pytest.fixture
async def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "data")
    await s.add_domain("a.test")
    await s.add_account("alice@a.test", "x")
    yield s
    await s.close()


async def test_queue_submit_with_local_copies_in_one_commit(store: SQLiteStore) -> None:
    account = await store.get_account("alice@a.test")
    inbox = await store.get_mailbox(account.id, "INBOX")
    entry = NewQueueEntry("alice@a.test", [NewRecipient("b@b.test", frozenset({"FAILURE"}), ("rfc822", "b@b.test")),
                                           NewRecipient("c@c.test")], envid="E1", ret="HDRS")
    uids, queue_id = await store.queue_submit(BODY, entry, [DeliveryTarget(inbox.id, b"X: 1\r\n")])
    assert uids == [1] and queue_id is not None
    assert await store.read_message(inbox, 1) == b"X: 1\r\n" + BODY
    assert await store.queue_body(queue_id) == BODY
    e = await store.queue_entry(queue_id)
    assert e.reverse_path == "alice@a.test" and e.envid == "E1" and e.ret == "HDRS"
    assert [(r.address, r.domain) for r in e.recipients] == [("b@b.test", "b.test"), ("c@c.test", "c.test")]
    assert e.recipients[0].notify == frozenset({"FAILURE"}) and e.recipients[0].orcpt == ("rfc822", "b@b.test")
    # body shared: refs = 1 local copy + 1 queue entry
    assert store._q1("SELECT refs FROM bodies")[0] == 2


async def test_queue_update_retry_and_finish_releases_the_body(store: SQLiteStore, tmp_path: Path) -> None:
    _, qid = await store.queue_submit(BODY, NewQueueEntry("alice@a.test", [NewRecipient("b@b.test"),
                                                                            NewRecipient("c@c.test")]))
    e = await store.queue_entry(qid)
    b, c = e.recipients
    assert len(await store.queue_due(1e12)) == 1
    done = await store.queue_update(qid, [RecipientOutcome(b.id, DELIVERED, "250 ok", "mx.b.test"),
                                          RecipientOutcome(c.id, PENDING, "451 later", "mx.c.test", 1e11)],
                                    [("b.test", "mx.b.test", "250 ok")])
    assert not done
    e = await store.queue_entry(qid)
    assert [r.state for r in e.recipients] == [DELIVERED, PENDING]
    assert e.recipients[1].attempts == 1 and e.recipients[1].last_reply == "451 later"
    assert len(e.attempts) == 1
    assert await store.queue_due(1e10) == []
    assert await store.queue_next_due() == 1e11
    assert await store.queue_retry(qid) == 1
    assert len(await store.queue_due(1e10)) == 1
    # the last recipient fails; a bounce is stored in the same commit
    account = await store.get_account("alice@a.test")
    inbox = await store.get_mailbox(account.id, "INBOX")
    done = await store.queue_update(qid, [RecipientOutcome(c.id, FAILED, "550 no")],
                                    follow_up=[NewMessage(b"DSN\r\n", [DeliveryTarget(inbox.id)])])
    assert done
    assert await store.queue_list() == []
    assert await store.read_message(inbox, 1) == b"DSN\r\n"
    assert store._q1("SELECT count(*) FROM bodies WHERE refs > 0")[0] == 1  # only the DSN's


async def test_queue_survives_reopening(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "d")
    _, qid = await s.queue_submit(BODY, NewQueueEntry("x@a.test", [NewRecipient("b@b.test")]))
    await s.close()
    s = SQLiteStore(tmp_path / "d")
    try:
        (e,) = await s.queue_list()
        assert e.id == qid and await s.queue_body(qid) == BODY
        await s.queue_delete(qid)
        assert await s.queue_list() == []
    finally:
        await s.close()


def test_mx_order_is_by_preference_and_random_among_equals() -> None:
    records = [(20, "c"), (10, "a1"), (10, "a2"), (10, "a3"), (30, "d")]
    seen_first = set()
    for seed in range(50):
        ordered = order_mx(records, random.Random(seed))
        assert [p for p, _ in ordered] == [10, 10, 10, 20, 30]
        seen_first.add(ordered[0][1])
    assert seen_first == {"a1", "a2", "a3"}


def test_parse_nameservers() -> None:
    assert parse_nameservers("127.0.0.1:5353, 10.0.0.1") == [("127.0.0.1", 5353), ("10.0.0.1", 53)]
    assert parse_nameservers("[::1]:53") == [("::1", 53)]
    assert parse_nameservers("") == []


@pytest.fixture
def dns_server():
    server = DNSServer()
    yield server
    server.stop()


async def test_mx_lookup_against_a_dns_server(dns_server: DNSServer) -> None:
    d = dns_server
    d.add("b.test", "MX", "20 backup.b.test.")
    d.add("b.test", "MX", "10 mx.b.test.")
    d.add("mx.b.test", "A", "127.0.0.3")
    d.add("backup.b.test", "A", "127.0.0.4")
    d.add("backup.b.test", "AAAA", "::1")
    d.add("plain.test", "A", "127.0.0.5")
    d.add("nomail.test", "MX", "0 .")
    d.add("noaddr.test", "TXT", '"x"')
    resolver = MXResolver(make_resolver(d.address, 3.0))
    hosts = await resolver.resolve("b.test")
    assert [(h.name, h.preference, h.addresses) for h in hosts] == [
        ("mx.b.test", 10, ("127.0.0.3",)), ("backup.b.test", 20, ("127.0.0.4", "::1"))]
    (implicit,) = await resolver.resolve("plain.test")  # RFC 5321 5.1
    assert implicit.addresses == ("127.0.0.5",)
    with pytest.raises(NullMX):
        await resolver.resolve("nomail.test")
    with pytest.raises(PermanentDNSError):
        await resolver.resolve("nxdomain.test")
    with pytest.raises(PermanentDNSError):
        await resolver.resolve("noaddr.test")
    (literal,) = await resolver.resolve("[127.0.0.7]")
    assert literal.addresses == ("127.0.0.7",)


def _entry(reverse_path: str = "alice@a.test", ret: str | None = None, envid: str | None = None) -> QueueEntry:
    return QueueEntry(7, reverse_path, envid, ret, False, False, len(BODY), 1_700_000_000.0, False)


def test_dsn_structure_headers_only() -> None:
    rcpt = QueueRecipient(1, "nobody@b.test", "b.test", None, ("rfc822", "Nobody@b.test"))
    raw = build_dsn(reporting_mta="mx.a.test", entry=_entry(envid="ENV1"), original=BODY,
                    reported=[ReportedRecipient(rcpt, "failed", "5.1.1", "550 5.1.1 no such user", "mx.b.test")],
                    postmaster_domain="a.test")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@a.test>"
    assert msg["To"] == "alice@a.test" and msg["Auto-Submitted"] == "auto-replied"
    assert msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == "delivery-status"
    human, status, returned = msg.iter_parts()
    assert "nobody@b.test" in human.get_content()
    text = status.as_string()
    for field in ("Reporting-MTA: dns; mx.a.test", "Original-Envelope-Id: ENV1", "Final-Recipient: rfc822; nobody@b.test",
                  "Original-Recipient: rfc822;Nobody@b.test", "Action: failed", "Status: 5.1.1",
                  "Remote-MTA: dns; mx.b.test", "Diagnostic-Code: smtp; 550 5.1.1 no such user"):
        assert field in text, field
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Subject: s" in returned.get_content() and "body" not in returned.get_content()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_dsn_ret_full_returns_the_message() -> None:
    rcpt = QueueRecipient(1, "x@b.test", "b.test", None, None)
    raw = build_dsn(reporting_mta="h", entry=_entry(ret="FULL"), original=BODY,
                    reported=[ReportedRecipient(rcpt, "delayed", "4.4.1", None)], postmaster_domain="a.test",
                    retry_until=1_700_500_000.0)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    parts = list(msg.iter_parts())
    assert parts[2].get_content_type() == "message/rfc822"
    assert b"Will-Retry-Until:" in raw and b"Action: delayed" in raw


def test_notify_rules() -> None:
    def r(notify):  # noqa: ANN001, ANN202
        return QueueRecipient(1, "x@b.test", "b.test", notify, None)

    assert wants_report(r(None), "failed") and wants_report(r(None), "delayed")
    assert not wants_report(r(None), "relayed")
    assert not wants_report(r(frozenset({"NEVER"})), "failed")
    assert wants_report(r(frozenset({"SUCCESS"})), "relayed")
    assert not wants_report(r(frozenset({"SUCCESS"})), "failed")
    assert not should_report(_entry(reverse_path=""))  # never bounce a bounce
    assert status_of(550, "5.1.1") == "5.1.1" and status_of(550, None) == "5.0.0"
    assert status_of(451, "4.3.0", expired=True) == "4.4.7"


def test_backoff_schedule() -> None:
    cfg = DeliveryConfig()
    delays = [backoff(cfg, n) for n in range(1, 10)]
    assert delays[0] == 300 and delays[1] == 600 and delays[2] == 1200
    assert max(delays) == cfg.retry_max_interval
    assert cfg.max_lifetime == 5 * 86400 and cfg.delay_warning == 4 * 3600
