"""Mail authentication end to end, over real SMTP between mailyard instances
(multihost.py: a.test on 127.0.0.2, b.test on 127.0.0.3, DNS on loopback):
a.test DKIM-signs what its queue sends, b.test checks SPF, DKIM and DMARC on
its MX port and records them in Authentication-Results (RFC 8601), refuses
p=reject failures with 550 5.7.1 and files p=quarantine failures in Junk."""

from __future__ import annotations

import contextlib
import email
import email.policy
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailyard.config import Config
from mailyard.mailauth import keys

from .multihost import DNSServer, MultiHost
from .serve_process import MB, ServeProcess

A, B = "127.0.0.2", "127.0.0.3"

MESSAGE = (
    b"From: Alice <alice@a.test>\r\n"
    b"To: bob@b.test\r\n"
    b"Subject: authenticated\r\n"
    b"Message-ID: <auth1@a.test>\r\n"
    b"Date: Sat, 05 Dec 2026 08:00:00 +0000\r\n"
    b"\r\n"
    b"Hello from a.test, with a long line: " + b"x" * 900 + b"\r\n"
    b".a leading dot\r\n"
    b"8-bit: \xc3\xa9t\xc3\xa9\r\n"
)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[MultiHost]:
    harness = MultiHost(tmp_path)
    try:
        yield harness
    finally:
        harness.stop()


@contextlib.contextmanager
def remote_sender_and_serve(tmp_path: Path, checks: bool
                            ) -> Iterator[tuple[ServeProcess, DNSServer, keys.SigningKeys]]:
    """A real ``mailyard serve`` whose MX port checks mail (``checks``)
    against a private DNS server that publishes remote.test's DKIM keys:
    the server, the DNS server, and remote.test's signing keys."""
    dns = DNSServer()
    try:
        signing = dns.publish_dkim(tmp_path / "k", "remote.test")

        def configure(cfg: Config) -> None:
            cfg.authentication.inbound_checks = checks
            cfg.delivery.nameservers = dns.address

        serve = ServeProcess(tmp_path / "data", configure)
        try:
            yield serve, dns, signing
        finally:
            serve.stop()
    finally:
        dns.stop()


class GreetingProbe:
    """While in its ``with`` block, another client connects to the SMTP port
    of ``serve`` every 50 ms and times its greeting: the server keeps
    serving others while one message is checked."""

    def __init__(self, serve: ServeProcess) -> None:
        self.serve = serve
        self.latencies: list[float] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._probe, daemon=True)

    def _probe(self) -> None:
        while not self.done.is_set():
            start = time.perf_counter()
            with socket.create_connection((self.serve.host, self.serve.port("smtp")), timeout=10) as sock:
                line = sock.makefile("rb").readline()
                assert line.startswith(b"220"), line
                self.latencies.append(time.perf_counter() - start)
                sock.sendall(b"QUIT\r\n")
            self.done.wait(0.05)

    def __enter__(self) -> GreetingProbe:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(15)

    def __str__(self) -> str:
        worst = max(self.latencies, default=0.0) * 1000
        return f"{len(self.latencies)} probes, worst {worst:.1f} ms"


def checking(cfg: Config) -> None:
    cfg.authentication.inbound_checks = True


def submit(hosts: MultiHost, sender: str, rcpts: list[str], data: bytes) -> None:
    rs = hosts.servers[sender.rpartition("@")[2]]
    with smtplib.SMTP(rs.host, rs.config.ports.submission, timeout=10) as client:
        client.ehlo("client.a.test")
        client.starttls()
        client.ehlo("client.a.test")
        client.login(sender, hosts.passwords[sender])
        assert client.sendmail(sender, rcpts, data) == {}


def ar_fields(raw: bytes) -> list[str]:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return [" ".join(str(v).split()) for v in msg.get_all("Authentication-Results", [])]


def test_submitted_mail_arrives_with_dkim_spf_dmarc_pass(hosts: MultiHost) -> None:
    a = hosts.add("a.test", A, {"alice": "alice-pw-1"})
    hosts.add("b.test", B, {"bob": "bob-pw-1"}, configure=checking)
    signing = hosts.dns.publish_dkim(a.data_dir, "a.test")
    hosts.dns.add("_dmarc.a.test", "TXT", '"v=DMARC1; p=reject"')
    hosts.dns.add("mx.a.test", "TXT", f'"v=spf1 ip4:{A} -all"')
    forged = b"Authentication-Results: mx.b.test; dkim=pass; dmarc=pass\r\n"
    submit(hosts, "alice@a.test", ["bob@b.test"], forged + MESSAGE)
    (raw,) = hosts.wait_messages("bob@b.test")
    fields = ar_fields(raw)
    assert len(fields) == 1, fields  # the forged field naming mx.b.test is gone
    (ar,) = fields
    print(ar)
    assert ar.startswith("mx.b.test; spf=pass smtp.mailfrom=alice@a.test; spf=pass smtp.helo=mx.a.test; ")
    # RFC 6376 6.1: the rsa-sha256 signature of the From domain passed, all
    # DMARC needs; the Ed25519 one was not verified, and is not reported
    assert f"dkim=pass header.d=a.test header.s={signing.generation}-rsa header.a=rsa-sha256" in ar
    assert "ed25519" not in ar
    assert ar.endswith("dmarc=pass (aligned SPF and DKIM) header.from=a.test")
    assert raw.endswith(MESSAGE), "the body arrives byte for byte (8-bit, long line, dot)"
    sigs = email.message_from_bytes(raw, policy=email.policy.compat32).get_all("DKIM-Signature")
    assert len(sigs) == 2  # signed once, at enqueue


def mx_send(hosts: MultiHost, helo: str, mail_from: str, data: bytes, source: str = A) -> tuple[int, bytes]:
    """A peer MTA on ``source`` sends ``data`` to b.test's MX port."""
    b = hosts.servers["b.test"]
    return send_to(b.host, b.config.ports.smtp, helo, mail_from, "bob@b.test", data, source=(source, 0))


def send_to(host: str, port: int, helo: str, mail_from: str, rcpt: str, data: bytes, timeout: float = 10,
            source: tuple[str, int] | None = None) -> tuple[int, bytes]:
    """One message over SMTP, as a peer MTA sends it; the reply to its data."""
    with smtplib.SMTP(host, port, timeout=timeout, source_address=source) as client:
        client.ehlo(helo)
        client.mail(mail_from)
        client.rcpt(rcpt)
        code, text = client.data(data)
        return code, text


def test_dmarc_reject_gets_550_and_quarantine_goes_to_junk(hosts: MultiHost) -> None:
    b = hosts.add("b.test", B, {"bob": "bob-pw-1"}, configure=checking)
    hosts.dns.add("evil.test", "TXT", f'"v=spf1 ip4:{A} -all"')
    hosts.dns.add("_dmarc.bank.test", "TXT", '"v=DMARC1; p=reject"')
    hosts.dns.add("_dmarc.shop.test", "TXT", '"v=DMARC1; p=quarantine"')
    spoof = MESSAGE.replace(b"alice@a.test", b"security@bank.test")
    code, text = mx_send(hosts, "mx.evil.test", "x@evil.test", spoof)
    assert (code, text) == (550, b"5.7.1 Message rejected by the DMARC policy of the sender's domain")
    assert b.messages("bob@b.test") == []
    code, _ = mx_send(hosts, "mx.evil.test", "x@evil.test", MESSAGE.replace(b"alice@a.test", b"deals@shop.test"))
    assert code == 250
    (raw,) = hosts.wait_for(lambda: hosts.imap_messages("bob@b.test", "Junk"), what="a message in Junk")
    assert "dmarc=fail (neither SPF nor DKIM aligned; p=quarantine dis=quarantine) header.from=shop.test" in (
        ar_fields(raw)[0])
    assert hosts.imap_messages("bob@b.test") == []  # not in the INBOX
    boxes = b.call(b.store.list_mailboxes(b.call(b.store.get_account("bob@b.test")).id))
    assert [(m.name, m.special_use) for m in boxes if m.name == "Junk"] == [("Junk", "\\Junk")]


def test_dmarc_policy_record_only(hosts: MultiHost) -> None:
    def record(cfg: Config) -> None:
        checking(cfg)
        cfg.authentication.dmarc_policy = "record"

    hosts.add("b.test", B, {"bob": "bob-pw-1"}, configure=record)
    hosts.dns.add("_dmarc.bank.test", "TXT", '"v=DMARC1; p=reject"')
    code, _ = mx_send(hosts, "mx.evil.test", "x@evil.test", MESSAGE.replace(b"alice@a.test", b"it@bank.test"))
    assert code == 250
    (raw,) = hosts.wait_messages("bob@b.test")
    assert "dmarc=fail (neither SPF nor DKIM aligned; p=reject dis=reject)" in ar_fields(raw)[0]


def test_dns_timeout_is_a_temperror_not_a_stuck_session(hosts: MultiHost) -> None:
    import socket

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))

    def blackhole(cfg: Config) -> None:
        checking(cfg)
        cfg.delivery.nameservers = f"127.0.0.1:{silent.getsockname()[1]}"
        cfg.authentication.dns_timeout = 1.0

    try:
        hosts.add("b.test", B, {"bob": "bob-pw-1"}, configure=blackhole)
        code, _ = mx_send(hosts, "mx.a.test", "alice@a.test", MESSAGE)
        assert code == 250
        (raw,) = hosts.wait_messages("bob@b.test")
        ar = ar_fields(raw)[0]
        assert "spf=temperror" in ar and "dmarc=temperror" in ar
    finally:
        silent.close()


def test_a_dsn_to_another_server_is_signed(hosts: MultiHost) -> None:
    """Generated mail is signed too: c.test's user writes to an alias at a.test
    that forwards to a domain with a null MX; a.test's DSN goes back to c.test
    signed with a.test's keys (its host name's domain) and passes DKIM there."""
    a = hosts.add("a.test", A, {"alice": "alice-pw-1"})
    hosts.add("c.test", "127.0.0.4", {"carol": "carol-pw-1"}, configure=checking)
    signing = hosts.dns.publish_dkim(a.data_dir, "a.test")
    hosts.dns.add("nowhere.test", "MX", "0 .")  # RFC 7505: bounces at once
    a.call(a.store.add_alias("team@a.test", ["dave@nowhere.test"]))
    note = MESSAGE.replace(b"Alice <alice@a.test>", b"carol@c.test").replace(b"bob@b.test", b"team@a.test")
    submit(hosts, "carol@c.test", ["team@a.test"], note)
    (dsn,) = hosts.wait_messages("carol@c.test")
    ar = ar_fields(dsn)[0]
    print(ar)
    assert f"dkim=pass header.d=a.test header.s={signing.generation}-rsa" in ar
    assert b"Content-Type: multipart/report" in dsn


@pytest.mark.parametrize("checks", [False, True], ids=["checks-off", "checks-on"])
def test_large_signed_message_checks_memory_and_others_served(tmp_path: Path, checks: bool) -> None:
    """A 20 MB message with two DKIM signatures on the MX port of a real
    ``mailyard serve``: the checks run in a worker thread, the server's peak
    RSS stays bounded and another client's greeting still comes."""
    from mailyard.mailauth import dkim

    with remote_sender_and_serve(tmp_path, checks) as (serve, dns, signing):
        dns.add("remote.test", "TXT", '"v=spf1 ip4:127.0.0.1 -all"')
        head = (b"From: big@remote.test\r\nTo: alice@example.test\r\nSubject: big\r\n"
                b"Date: Sat, 05 Dec 2026 08:00:00 +0000\r\nMessage-ID: <big@remote.test>\r\n\r\n")
        msg = head + (b"y" * 98 + b"\r\n") * (20 * MB // 100)
        wire = dkim.sign(msg, signing) + msg
        base = serve.rss()
        serve.reset_peak()
        prober = GreetingProbe(serve)
        with prober:
            code, text = send_to(serve.host, serve.port("smtp"), "mx.remote.test", "big@remote.test",
                                 "alice@example.test", wire, timeout=60)
        assert code == 250, text
        grown = serve.peak() - base
        print(f"\n20 MB signed message, checks {'on' if checks else 'off'}: peak RSS {grown / MB:+.1f} MB; "
              f"other clients' greetings: {prober}")
        assert prober.latencies, "another client was greeted meanwhile"
        assert grown < 400 * MB
        assert serve.alive() and not serve.tracebacks()


def test_hostile_signature_fields_leave_no_memory_behind(tmp_path: Path) -> None:
    """Signature fields folded over megabytes of header lines on the MX port
    of a real ``mailyard serve``: an h= of a few hundred thousand names (for
    a key that exists, so the fast path reads it) and an a= of megabytes.
    The checks' caches bound entries, not octets: what a message brings
    must not stay behind once it is checked, and another client is still
    greeted meanwhile."""

    def fold(value: bytes) -> bytes:
        return b"\r\n ".join(value[i:i + 900] for i in range(0, len(value), 900))

    with remote_sender_and_serve(tmp_path, True) as (serve, _dns, signing):
        body = (b"From: x@remote.test\r\nTo: alice@example.test\r\nSubject: hostile\r\n"
                b"Date: Sat, 05 Dec 2026 08:00:00 +0000\r\n\r\nhello\r\n")
        prober = GreetingProbe(serve)
        base = serve.rss()
        with prober:
            for m in range(6):
                names = b":".join(b"x%d-%x" % (m, i) for i in range(300_000))  # about 3 MB, new each time
                wire = (b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=remote.test; s="
                        + signing.rsa_selector.encode() + b"; h=" + fold(names) + b"; bh=AAAA; b=AAAA\r\n"
                        + b"DKIM-Signature: v=1; a=" + fold(b"%d" % m + b"y" * 3 * MB)
                        + b"; c=relaxed/relaxed; d=remote.test; s=" + signing.rsa_selector.encode()
                        + b"; h=from; bh=AAAA; b=AAAA\r\n" + body)
                code, text = send_to(serve.host, serve.port("smtp"), "mx.remote.test", "x@remote.test",
                                     "alice@example.test", wire, timeout=120)
                assert code == 250, text
        grown = serve.rss() - base
        print(f"\n6 messages of 6 MB hostile signature fields: RSS after {grown / MB:+.1f} MB; "
              f"other clients' greetings: {prober}")
        assert prober.latencies, "another client was greeted meanwhile"
        assert grown < 200 * MB
        assert serve.alive() and not serve.tracebacks()


def test_dmarc_aggregate_report_reaches_the_domains_rua(hosts: MultiHost) -> None:
    """RFC 7489 7.2: b.test records what its MX port saw of a.test's mail and
    mails a.test's rua a gzipped XML report (Appendix C): one row per client
    address and outcome, with its count. A rua outside a.test that does not
    confirm in DNS (7.1) gets nothing."""
    import gzip
    import time
    import xml.etree.ElementTree as ET

    from mailyard.delivery.dailylog import day_of

    def reporting(cfg: Config) -> None:
        checking(cfg)
        cfg.authentication.dmarc_reports = True

    a = hosts.add("a.test", A, {"alice": "alice-pw-1", "dmarc": "dmarc-pw-1"})
    b = hosts.add("b.test", B, {"bob": "bob-pw-1"}, configure=reporting)
    signing = hosts.dns.publish_dkim(a.data_dir, "a.test")
    hosts.dns.add("_dmarc.a.test", "TXT",
                  '"v=DMARC1; p=quarantine; rua=mailto:dmarc@a.test,mailto:someone@elsewhere.test"')
    # a domain whose only rua is elsewhere, where the RFC 7489 7.1 check gets
    # SERVFAIL: its report waits for nothing, and nobody gets a report twice
    hosts.dns.add("_dmarc.c.test", "TXT", '"v=DMARC1; p=none; rua=mailto:r@broken.test"')
    hosts.dns.servfail.add("c.test._report._dmarc.broken.test.")
    hosts.dns.add("mx.a.test", "TXT", f'"v=spf1 ip4:{A} -all"')
    submit(hosts, "alice@a.test", ["bob@b.test"], MESSAGE)
    submit(hosts, "alice@a.test", ["bob@b.test"], MESSAGE.replace(b"auth1@", b"auth2@"))
    hosts.wait_messages("bob@b.test", 2)
    # a forgery from another address: fails, quarantined
    code, _ = mx_send(hosts, "mx.evil.test", "x@evil.test", MESSAGE.replace(b"auth1@", b"forged@"), source="127.0.0.4")
    assert code == 250
    code, _ = mx_send(hosts, "mx.c.test", "x@c.test", MESSAGE.replace(b"alice@a.test", b"news@c.test"))
    assert code == 250
    assert b.server.queue is not None
    sent = b.call(b.server.queue.send_dmarc_reports(day_of(time.time())))
    assert sent == 1
    (raw,) = hosts.wait_messages("dmarc@a.test")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(msg["Subject"]).startswith("Report Domain: a.test Submitter: ")
    assert msg["To"] == "dmarc@a.test"  # elsewhere.test did not confirm (RFC 7489 7.1)
    (attachment,) = [p for p in msg.iter_attachments() if p.get_content_type() == "application/gzip"]
    assert attachment.get_filename().endswith(".xml.gz") and "!a.test!" in attachment.get_filename()
    root = ET.fromstring(gzip.decompress(attachment.get_content()))
    print(ET.tostring(root).decode()[:2000])
    assert root.findtext("policy_published/domain") == "a.test"
    assert root.findtext("policy_published/p") == "quarantine"
    rows = {r.findtext("row/source_ip"): r for r in root.findall("record")}
    assert set(rows) == {A, "127.0.0.4"}
    good, bad = rows[A], rows["127.0.0.4"]
    assert good.findtext("row/count") == "2"
    assert (good.findtext("row/policy_evaluated/dkim"), good.findtext("row/policy_evaluated/spf")) == ("pass", "pass")
    assert good.findtext("row/policy_evaluated/disposition") == "none"
    assert good.find("row/policy_evaluated/reason") is None  # passed: nothing was sampled out
    assert good.findtext("identifiers/header_from") == "a.test"
    assert {d.findtext("result") for d in good.findall("auth_results/dkim")} == {"pass"}
    # the signatures evaluated: the From domain's rsa-sha256 one passed, and
    # the checks stopped there (RFC 6376 6.1), so the Ed25519 one is not listed
    assert [d.findtext("selector") for d in good.findall("auth_results/dkim")] == [f"{signing.generation}-rsa"]
    assert good.findtext("auth_results/spf/result") == "pass"
    assert bad.findtext("row/count") == "1"
    assert bad.findtext("row/policy_evaluated/disposition") == "quarantine"
    assert (bad.findtext("row/policy_evaluated/dkim"), bad.findtext("row/policy_evaluated/spf")) == ("fail", "fail")
    # the day is reported once, c.test's report not sent (its destination
    # did not confirm), and a second run finds nothing to send
    assert not (b.data_dir / "dmarc-reports" / f"{day_of(time.time())}.jsonl").exists()
    assert b.call(b.server.queue.send_dmarc_reports(day_of(time.time()))) == 0


@pytest.mark.parametrize("header", [
    b" a continuation line of no field\r\n",  # the header's first line
    b"From: security@bank.test\r\nwire the money today\r\n",  # a line that is no field
], ids=["leading-continuation", "line-without-colon"])
def test_a_malformed_header_does_not_escape_dmarc(hosts: MultiHost, header: bytes) -> None:
    """A forged From of a p=reject domain with a DKIM-Signature (any: the
    forger has no key) and a header line DKIM's parser cannot read: the
    checks still give their verdict (the signature is neutral, DMARC fails)
    and the message is refused, rather than the checks breaking and the
    message being accepted without one."""
    b = hosts.add("b.test", B, {"bob": "bob-pw-1"}, configure=checking)
    hosts.dns.add("evil.test", "TXT", f'"v=spf1 ip4:{A} -all"')
    hosts.dns.add("_dmarc.bank.test", "TXT", '"v=DMARC1; p=reject"')
    signature = (b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=bank.test; s=sel; h=from:subject;"
                 b" bh=AAAA; b=AAAA\r\n")
    fields = b"Subject: urgent\r\nTo: bob@b.test\r\n\r\nPlease pay.\r\n"
    if header.startswith(b" "):
        spoof = header + signature + b"From: security@bank.test\r\n" + fields
    else:
        spoof = signature + header + fields
    code, text = mx_send(hosts, "mx.evil.test", "x@evil.test", spoof)
    assert (code, text) == (550, b"5.7.1 Message rejected by the DMARC policy of the sender's domain")
    assert b.messages("bob@b.test") == []


def test_checks_that_break_ask_the_sender_to_retry(hosts: MultiHost, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the checks themselves fail on a message (a bug, whatever its
    cause), the MX port answers 451 4.7.0 and stores nothing: accepting the
    message without a verdict would let what broke the checks skip DMARC.
    The next message, checked normally, is accepted."""
    b = hosts.add("b.test", B, {"bob": "bob-pw-1"}, configure=checking)
    checker = b.server.services.mailauth

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a check broke")

    with monkeypatch.context() as patch:
        patch.setattr(checker, "check", broken)
        code, text = mx_send(hosts, "mx.a.test", "alice@a.test", MESSAGE)
    assert (code, text) == (451, b"4.7.0 The sender authentication checks failed; try again later")
    assert b.messages("bob@b.test") == []
    code, _ = mx_send(hosts, "mx.a.test", "alice@a.test", MESSAGE)
    assert code == 250


def untrusted(cfg: Config) -> None:
    """The checks, with the sending hosts (loopback addresses) not on
    [spam] trusted_networks: a peer MTA, not a local program."""
    checking(cfg)
    cfg.spam.trusted_networks = []


@pytest.mark.parametrize("from_field", [
    b"From: security@bank.test, friend@evil.test\r\n",  # a second address in another domain
    b"From: security@bank.test\r\nFrom: friend@evil.test\r\n",  # a second From field
    b"From: " + b"\r\n ".join([b"Bank" * 150] * 150) + b" <security@bank.test>\r\n",  # too long to read
    b"",  # no From field at all
], ids=["two-addresses", "two-fields", "unreadable", "none"])
def test_a_forger_cannot_step_around_the_authors_policy(hosts: MultiHost, from_field: bytes) -> None:
    """RFC 7489 6.6.1: each From domain is checked and the strictest failing
    policy applies, so bank.test's p=reject holds with another address
    beside its own; a message naming no From domain that can be checked
    has no policy to pass and is refused (RFC 5322 3.6.2 asks for one)."""
    b = hosts.add("b.test", B, {"bob": "bob-pw-1"}, configure=untrusted)
    hosts.dns.add("evil.test", "TXT", f'"v=spf1 ip4:{A} -all"')
    hosts.dns.add("_dmarc.evil.test", "TXT", '"v=DMARC1; p=none"')
    hosts.dns.add("_dmarc.bank.test", "TXT", '"v=DMARC1; p=reject"')
    spoof = from_field + b"To: bob@b.test\r\nSubject: urgent\r\n\r\nPlease pay.\r\n"
    code, text = mx_send(hosts, "mx.evil.test", "friend@evil.test", spoof)
    assert code == 550, text
    assert text.startswith(b"5.7.1 Message rejected")
    assert b.messages("bob@b.test") == []


def test_several_from_domains_that_all_pass_are_delivered(hosts: MultiHost) -> None:
    """Both authors' domains aligned (SPF for a.test's own, none asked of
    the other): the message is not refused for naming two."""
    hosts.add("b.test", B, {"bob": "bob-pw-1"}, configure=checking)
    hosts.dns.add("evil.test", "TXT", f'"v=spf1 ip4:{A} -all"')
    hosts.dns.add("_dmarc.evil.test", "TXT", '"v=DMARC1; p=reject"')
    message = b"From: one@evil.test, two@other.test\r\nTo: bob@b.test\r\nSubject: both\r\n\r\nHi.\r\n"
    code, _ = mx_send(hosts, "mx.evil.test", "one@evil.test", message)
    assert code == 250
    (raw,) = hosts.wait_messages("bob@b.test")
    assert "dmarc=none (no DMARC record; From names 2 domains) header.from=other.test" in ar_fields(raw)[0]


def test_an_internationalised_author_domain_passes_by_its_a_label(hosts: MultiHost) -> None:
    """RFC 8616 6 (RFC 6532 From in UTF-8): From: x@bänk.test is the domain
    xn--bnk-qla.test, whose p=reject and SPF the sender passes: delivered,
    not refused as unaligned."""
    hosts.add("b.test", B, {"bob": "bob-pw-1"}, configure=checking)
    hosts.dns.add("xn--bnk-qla.test", "TXT", f'"v=spf1 ip4:{A} -all"')
    hosts.dns.add("_dmarc.xn--bnk-qla.test", "TXT", '"v=DMARC1; p=reject"')
    message = ("From: Bänk <info@bänk.test>\r\nTo: bob@b.test\r\nSubject: ümlaut\r\n\r\nHallo.\r\n").encode()
    b = hosts.servers["b.test"]
    with smtplib.SMTP(b.host, b.config.ports.smtp, timeout=10, source_address=(A, 0)) as client:
        client.ehlo("mx.xn--bnk-qla.test")
        assert client.mail("info@xn--bnk-qla.test", ["SMTPUTF8"])[0] == 250
        assert client.rcpt("bob@b.test")[0] == 250
        code, text = client.data(message)
    assert code == 250, text
    (raw,) = hosts.wait_messages("bob@b.test")
    assert ar_fields(raw)[0].endswith("dmarc=pass (aligned SPF) header.from=xn--bnk-qla.test")


@pytest.mark.parametrize("from_field", [b"", b"From: root\r\n"], ids=["none", "unqualified"])
def test_a_local_program_without_a_from_domain_is_not_refused(hosts: MultiHost, from_field: bytes) -> None:
    """A program on [spam] trusted_networks (loopback by default) handing
    the MX port a message with no From domain (a script's bare message, an
    unqualified "root") names no author whose policy could be escaped:
    delivered, with dmarc=permerror recorded; a peer elsewhere is refused
    (test_a_forger_cannot_step_around_the_authors_policy)."""
    hosts.add("b.test", B, {"bob": "bob-pw-1"}, configure=checking)
    message = from_field + b"To: bob@b.test\r\nSubject: cron\r\n\r\ndisk 91% full\r\n"
    code, text = mx_send(hosts, "localhost", "root@localhost", message)
    assert code == 250, text
    (raw,) = hosts.wait_messages("bob@b.test")
    assert 'dmarc=permerror (no From domain) header.from=""' in ar_fields(raw)[0]
