"""Outbound delivery parts: MX ordering and lookup, DSN building, back-off
(the queue's store operations are in the store contract, tests/unit/test_store.py)."""

from __future__ import annotations

import email
import email.feedparser
import email.policy
import random

import pytest

from mailyard.config import DeliveryConfig
from mailyard.delivery.bounce import (
    ReportedRecipient,
    build_dsn,
    make_dsn,
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
from mailyard.store.api import (
    QueueEntry,
    QueueRecipient,
)
from tests.integration.multihost import DNSServer

BODY = b"From: a@a.test\r\nTo: b@b.test\r\nSubject: s\r\n\r\nbody\r\n"


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


def _many_parts(count: int) -> bytes:
    head = (b"From: a@a.test\r\nTo: b@b.test\r\nSubject: many\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"p\"\r\n\r\n")
    return head + b"--p\r\nContent-Type: text/plain\r\n\r\nx\r\n" * count + b"--p--\r\n"


def _full_dsn(original: bytes) -> bytes:
    rcpt = QueueRecipient(1, "x@b.test", "b.test", None, None)
    entry = QueueEntry(7, "alice@a.test", None, "FULL", False, False, len(original), 1_700_000_000.0, False)
    return build_dsn(reporting_mta="h", entry=entry, original=original,
                     reported=[ReportedRecipient(rcpt, "failed", "5.2.2", "552 5.2.2 Mailbox full")],
                     postmaster_domain="a.test")


def test_dsn_ret_full_attaches_the_original_without_parsing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """RET=FULL (RFC 3461 4.3) returns the original as the bytes it is, in a
    message/rfc822 part (RFC 6522 3): the email parser never sees it, so a
    message of 50,000 MIME parts costs what its size costs."""
    original = _many_parts(50_000)

    def no_parsing(self: object, data: object) -> None:
        raise AssertionError("the original was parsed")

    with monkeypatch.context() as patched:
        patched.setattr(email.feedparser.FeedParser, "feed", no_parsing)
        raw = _full_dsn(original)
    head, found, tail = raw.partition(original)
    assert found, "the original is in the DSN byte for byte"
    part_header = head[head.rindex(b"\r\n--"):]
    assert b"Content-Type: message/rfc822\r\n" in part_header
    assert b"Content-Transfer-Encoding: 7bit\r\n" in part_header
    delimiter = part_header[2:part_header.index(b"\r\n", 2)]
    assert tail == b"\r\n" + delimiter + b"--\r\n" and delimiter not in original
    assert raw.isascii() and max(map(len, raw.split(b"\r\n"))) <= 998

    small = _full_dsn(BODY)
    msg = email.message_from_bytes(small, policy=email.policy.default)
    human, status, returned = msg.iter_parts()
    assert returned.get_content_type() == "message/rfc822"
    assert returned.get_payload(0).as_bytes(policy=email.policy.SMTP) == BODY
    assert "original message are attached" in " ".join(human.get_content().split())


@pytest.mark.parametrize("original", [
    "From: a@a.test\r\nSubject: s\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n\r\nh\u00e9llo\r\n".encode(),
    "From: a@a.test\r\nSubject: s\r\n\r\nh\u00e9llo, no charset\r\n".encode(),
    "From: a@a.test\r\nSubject: \u00e9t\u00e9\r\n\r\nhello\r\n".encode(),
    b"From: a@a.test\r\nSubject: s\r\n\r\n" + b"x" * 999 + b"\r\n",
], ids=["8bit-text", "8bit-no-charset", "utf8-header", "long-line"])
def test_dsn_ret_full_of_what_7bit_cannot_carry_returns_the_header(original: bytes) -> None:
    """A DSN is sent without 8BITMIME (RFC 6152) and its lines are at most
    998 octets (RFC 5322 2.1.1): an original that does not fit is returned
    as its header section (text/rfc822-headers, RFC 6522), and the text says so."""
    raw = _full_dsn(original)
    assert raw.isascii() and max(map(len, raw.split(b"\r\n"))) <= 998
    human, _status, returned = email.message_from_bytes(raw, policy=email.policy.default).iter_parts()
    assert returned.get_content_type() == "text/rfc822-headers"
    assert returned.get_content().replace("\r\n", "\n").startswith("From: a@a.test\nSubject: ")
    assert "header of the original message are attached" in " ".join(human.get_content().split())


def test_dsn_ret_full_gives_bare_line_ends_as_crlf() -> None:
    """RFC 5322 2.3: the returned message's lines end in CRLF, like the DSN's."""
    raw = _full_dsn(b"From: a@a.test\nSubject: s\n\nline one\rline two\n")
    assert b"\r\n\r\nFrom: a@a.test\r\nSubject: s\r\n\r\nline one\r\nline two\r\n\r\n--" in raw


async def test_make_dsn_builds_a_large_one_too() -> None:
    """``make_dsn`` (in a thread above INLINE_ORIGINAL) gives the same DSN."""
    original = _many_parts(20_000)
    rcpt = QueueRecipient(1, "x@b.test", "b.test", None, None)
    entry = QueueEntry(7, "alice@a.test", None, "FULL", False, False, len(original), 1_700_000_000.0, False)
    raw = await make_dsn(reporting_mta="h", entry=entry, original=original,
                         reported=[ReportedRecipient(rcpt, "failed", "5.1.1", None)], postmaster_domain="a.test")
    assert original in raw and b"Content-Type: message/rfc822" in raw


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


def test_dsn_text_wraps_at_word_boundaries() -> None:
    """The human-readable part breaks lines between words only, at most 72
    characters, also around a long remote reply and the retry date."""
    diagnostic = ("550 5.7.1 Service unavailable; client host [192.0.2.1] blocked using "
                  "zen.spamhaus.example; see https://www.spamhaus.example/query/ip/192.0.2.1 for details")
    rcpts = [QueueRecipient(1, "someone.with.a.long.name@b.test", "b.test", None, None)]
    for action, status, until in (("failed", "5.7.1", None), ("delayed", "4.4.1", 1_700_500_000.0)):
        raw = build_dsn(reporting_mta="mx.a.test", entry=_entry(), original=BODY,
                        reported=[ReportedRecipient(rcpts[0], action, status, diagnostic)],
                        postmaster_domain="a.test", retry_until=until)
        human = next(email.message_from_bytes(raw, policy=email.policy.default).iter_parts()).get_content()
        lines = human.replace("\r\n", "\n").split("\n")
        assert all(len(line) <= 72 or " " not in line.strip() for line in lines), lines
        words = " ".join(human.split())
        if action == "failed":
            assert ("Your message could not be delivered to one or more recipients. This is a permanent "
                    "error; the following address(es) failed:") in words
        else:
            assert "It will be retried until " in words and "; you do not need to send it again." in words
        assert f"<someone.with.a.long.name@b.test>: {diagnostic}" in words
        # the URL is one word, never cut
        assert any("https://www.spamhaus.example/query/ip/192.0.2.1" in line.split() for line in lines)
