"""The spam layer's pure parts byte for byte (scores, X-Spam-* fields,
header edits, per-user filing, rspamd's JSON, the decision record) and its
DNS signals against the project's DNS test server (multihost.py): forward-
confirmed reverse DNS, HELO names, a DNS blocklist zone with return codes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailyard.config import Config, ConfigError
from mailyard.mailauth.dnscache import Resolver
from mailyard.message.address import iter_mailboxes, parse_address_list
from mailyard.message.headers import split_fields
from mailyard.message.parse import header_end, split_header_body
from mailyard.spam import filing, headers, signals
from mailyard.spam.checker import SpamChecker, _header_fields, _header_info
from mailyard.spam.rspamd import RspamdUnavailable, parse_reply, request_headers
from mailyard.spam.score import DEFAULT_SCORES, builtin_tests, parse_list, parse_scores
from mailyard.store import spamlog
from mailyard.store.api import Account
from mailyard.store.spamlog import DecisionLog
from tests.integration.multihost import DNSServer

MSG = (b"Received: from x\r\n\tby y\r\n"
       b"X-Spam-Flag: YES\r\n"
       b"Subject: hello\r\n"
       b"x-spam-status: No, score=-100\r\n\tcontinued\r\n"
       b"X-Rspamd-Score: -50\r\n"
       b"From: a@b.test\r\n"
       b"\r\n"
       b"X-Spam-Flag: YES in the body stays\r\n")


def test_strip_fields_removes_outside_verdicts_and_keeps_the_rest_byte_for_byte() -> None:
    assert headers.strip_fields(MSG) == (
        b"Received: from x\r\n\tby y\r\nSubject: hello\r\nFrom: a@b.test\r\n\r\n"
        b"X-Spam-Flag: YES in the body stays\r\n")


def test_verdict_fields_in_spamassassin_format_folded() -> None:
    assert headers.verdict_fields(7.25, 6.0, ["HELO_SYNTAX", "RDNS_NONE"], True) == (
        b"X-Spam-Flag: YES\r\nX-Spam-Score: 7.2\r\n"
        b"X-Spam-Status: Yes, score=7.2 required=6.0 tests=HELO_SYNTAX,RDNS_NONE\r\n")
    assert headers.verdict_fields(0, 6.0, [], False) == (
        b"X-Spam-Score: 0.0\r\nX-Spam-Status: No, score=0.0 required=6.0 tests=none\r\n")
    many = headers.verdict_fields(1, 6.0, [f"TEST_NUMBER_{i}" for i in range(12)], False)
    assert all(len(line) <= 78 for line in many.split(b"\r\n"))
    assert b"\r\n\tTEST_NUMBER_" in many


def test_verdict_fields_repeated_are_each_verdicts_own() -> None:
    """The fields are kept for repeated verdicts: a kept one is returned only
    for the same texts (-0.0 and 0.0 are equal floats but read differently)."""
    for _ in range(2):
        assert headers.verdict_fields(-0.0, 6.0, [], False).startswith(b"X-Spam-Score: -0.0\r\n")
        assert headers.verdict_fields(0.0, 6.0, [], False).startswith(b"X-Spam-Score: 0.0\r\n")
        assert headers.verdict_fields(0.0, 6.0, ["A"], False).endswith(b"tests=A\r\n")
        assert headers.verdict_fields(0.0, 6.0, ("A", "B"), True).endswith(b"tests=A,B\r\n")
        assert headers.verdict_fields(6.04, 6, ["A"], True).startswith(
            b"X-Spam-Flag: YES\r\nX-Spam-Score: 6.0\r\nX-Spam-Status: Yes, score=6.0 required=6.0 tests=A\r\n")


def test_rewrite_subject_and_add_fields() -> None:
    out = headers.rewrite_subject(b"Subject: old\r\n subject\r\nFrom: a@b.test\r\n\r\nbody", "*** SPAM *** old")
    assert out == b"Subject: *** SPAM *** old\r\nFrom: a@b.test\r\n\r\nbody"
    out = headers.rewrite_subject(b"From: a@b.test\r\n\r\nbody", "caf\u00e9")
    assert out == b"Subject: =?utf-8?b?Y2Fmw6k=?=\r\nFrom: a@b.test\r\n\r\nbody"
    assert headers.add_fields(b"A: 1\r\n\r\n", [("X-Virus", "no")]) == b"X-Virus: no\r\nA: 1\r\n\r\n"


def test_builtin_scores_and_overrides() -> None:
    scores = parse_scores(["RDNS_NONE=3", "dmarc_pass=-2.5"])
    assert scores["RDNS_NONE"] == 3.0 and scores["DMARC_PASS"] == -2.5
    sbl = parse_list("zen.spamhaus.org 4.0 127.0.0.2-127.0.0.3,127.0.0.9 SPAMHAUS_SBL")
    tests = builtin_tests(rdns="none", helo="syntax", listed=[sbl], spf="softfail", dkim=["fail"], dmarc="fail",
                          scores=scores)
    assert tests.hits == [("RDNS_NONE", 3.0), ("HELO_SYNTAX", 2.0), ("SPAMHAUS_SBL", 4.0), ("SPF_SOFTFAIL", 1.0),
                          ("DKIM_FAIL", 1.5), ("DMARC_FAIL", 2.5)]
    assert tests.score == 14.0
    clean = builtin_tests(rdns="ok", helo="ok", listed=[], spf="pass", dkim=["pass", "fail"], dmarc="pass",
                          scores=DEFAULT_SCORES)
    assert clean.hits == [("DMARC_PASS", -1.0)]


def test_no_single_honest_fault_reaches_the_default_threshold() -> None:
    threshold = Config().spam.junk_threshold
    honest = ["RDNS_NONE", "RDNS_NOT_CONFIRMED", "HELO_SYNTAX", "HELO_NXDOMAIN", "SPF_SOFTFAIL", "DKIM_FAIL"]
    assert sum(DEFAULT_SCORES[n] for n in honest[:3]) < threshold  # no rDNS and a bad HELO together: still INBOX


def test_list_entries_honour_return_codes_and_list_errors() -> None:
    sbl, pbl = (parse_list(x) for x in Config().spam.dnsbl[::2])
    assert sbl.matches("127.0.0.2") and sbl.matches("127.0.0.9") and not sbl.matches("127.0.0.4")
    assert pbl.matches("127.0.0.11") and not pbl.matches("127.0.0.2")
    anything = parse_list("bl.example.test 1.5")
    assert anything.name == "DNSBL_BL_EXAMPLE_TEST" and anything.matches("127.0.0.5")
    for error in ("127.255.255.254", "127.255.255.252", "127.255.255.255"):
        assert not anything.matches(error) and not sbl.matches(error)
    assert parse_list("wl.example.test -2 127.0.10.0/24").name == "DNSWL_WL_EXAMPLE_TEST"


@pytest.mark.parametrize("item", ["zen.spamhaus.org", "zen x", "zen 1 127.0.0.300", "a b c d e"])
def test_bad_list_entries_are_config_errors(item: str) -> None:
    with pytest.raises(ConfigError, match="spam.dnsbl"):
        Config().apply({"spam": {"dnsbl": [item]}})


def test_bad_scores_and_url_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="NAME=SCORE"):
        Config().apply({"spam": {"scores": ["RDNS_NONE"]}})
    with pytest.raises(ConfigError, match="rspamd_url"):
        Config().apply({"spam": {"rspamd_url": "127.0.0.1:11333"}})
    with pytest.raises(ConfigError, match="trusted_networks"):
        Config().apply({"spam": {"trusted_networks": ["nonsense"]}})


def test_filing_threshold_allow_and_block() -> None:
    prefs = filing.prefs({"spam_threshold": 4, "spam_allow": ["friend@x.test"], "spam_block": ["@spammy.test"]})
    assert prefs == filing.Prefs(4.0, ("friend@x.test",), ("@spammy.test",))
    f = filing.file_message(4.0, ["A"], spam=False, prefs=prefs, default_threshold=6.0, senders=["a@b.test"])
    assert (f.junk, f.reason, f.required) == (True, "score", 4.0)
    assert f.fields.startswith(b"X-Spam-Flag: YES\r\n")
    f = filing.file_message(30.0, ["A"], spam=True, prefs=prefs, default_threshold=6.0,
                            senders=["", "Friend@X.test"])
    assert (f.junk, f.reason) == (False, "allow-list friend@x.test")
    f = filing.file_message(0.0, [], spam=False, prefs=prefs, default_threshold=6.0, senders=["a@mail.spammy.test"])
    assert (f.junk, f.reason) == (True, "block-list @spammy.test")
    f = filing.file_message(1.0, [], spam=True, prefs=filing.prefs({}), default_threshold=6.0, senders=["a@b.test"])
    assert (f.junk, f.reason, f.required) == (True, "rspamd", 6.0)
    assert filing.prefs({"spam_threshold": "high", "spam_allow": "x"}) == filing.Prefs()


@pytest.mark.parametrize(("text", "want"), [("Alice@Example.COM", "alice@example.com"), ("example.com", "@example.com"),
                                            ("@Example.com", "@example.com")])
def test_normalize_pattern(text: str, want: str) -> None:
    assert filing.normalize_pattern(text) == want


@pytest.mark.parametrize("text", ["", "@", "nodot", "a b@c.test", "@x@y.test"])
def test_normalize_pattern_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        filing.normalize_pattern(text)


def test_rspamd_reply_parsing() -> None:
    doc = {"action": "rewrite subject", "score": 9.5, "required_score": 15, "subject": "*** SPAM *** hi",
           "symbols": {"GTUBE": {"name": "GTUBE", "score": 0}, "R_X": {"score": 2.5}},
           "messages": {"smtp_message": "go away"},
           "milter": {"add_headers": {"X-Spamd-Bar": {"value": "+++", "order": 0}, "X-Other": ["a", {"value": "b"}]},
                      "remove_headers": {"X-Spamd-Bar": 1}}}
    r = parse_reply(doc)
    assert (r.action, r.score, r.required, r.subject, r.message) == ("rewrite subject", 9.5, 15.0, "*** SPAM *** hi",
                                                                   "go away")
    assert r.symbols == {"GTUBE": 0.0, "R_X": 2.5}
    assert r.add_headers == [("X-Spamd-Bar", "+++"), ("X-Other", "a"), ("X-Other", "b")]
    assert r.remove_headers == ["X-Spamd-Bar"]
    for bad in ({}, {"action": "explode"}, {"action": "reject", "score": "x"}, []):
        with pytest.raises(RspamdUnavailable):
            parse_reply(bad)


def test_rspamd_request_headers() -> None:
    assert request_headers(ip="192.0.2.1", helo="", mail_from="a@b.test", rcpts=["x@y.test", "z@y.test"],
                           hostname=None, queue_id="q1", user="u\r\nX: y") == [
        ("IP", "192.0.2.1"), ("Helo", "unknown"), ("From", "a@b.test"), ("Queue-Id", "q1"),
        ("Rcpt", "x@y.test"), ("Rcpt", "z@y.test"), ("User", "u  X: y")]


def test_decision_log_finds_by_queue_id_or_message_id_and_stays_bounded(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "spam", max_bytes=4096)
    for i in range(200):
        log.append({"queue_id": f"q{i}", "message_id": f"<m{i}@x.test>", "pad": "x" * 100})
    files = sorted(p.name for p in (tmp_path / "spam").iterdir())
    assert files == ["decisions.jsonl", "decisions.jsonl.1"]
    assert sum(p.stat().st_size for p in (tmp_path / "spam").iterdir()) <= 2 * 4096
    assert [r["queue_id"] for r in log.find("q199")] == ["q199"]
    assert [r["queue_id"] for r in log.find("M199@X.test")] == ["q199"]
    assert [r["queue_id"] for r in log.find("<m199@x.test>")] == ["q199"]
    assert log.find("q0") == []  # rotated away


@pytest.fixture(scope="module")
def dns() -> Iterator[DNSServer]:
    server = DNSServer()
    server.ttl = 0
    # 192.0.2.10: forward-confirmed; .11: PTR to a name without its address; .12: no PTR
    server.add("10.2.0.192.in-addr.arpa", "PTR", "mail.good.test.")
    server.add("mail.good.test", "A", "192.0.2.10")
    server.add("11.2.0.192.in-addr.arpa", "PTR", "host.other.test.")
    server.add("host.other.test", "A", "198.51.100.1")
    server.add("v6.good.test", "AAAA", "2001:db8::10")
    server.add("0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "PTR", "v6.good.test.")
    # the blocklist: .12 is on SBL and PBL, .11 gets the list's "refused" error code
    server.add("12.2.0.192.zen.test", "A", "127.0.0.2")
    server.add("12.2.0.192.zen.test", "A", "127.0.0.10")
    server.add("11.2.0.192.zen.test", "A", "127.255.255.254")
    server.servfail.add("13.2.0.192.zen.test.")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def resolver(dns: DNSServer) -> Resolver:
    return Resolver(dns.address, timeout=3.0)


def test_fcrdns(resolver: Resolver) -> None:
    assert signals.fcrdns(resolver, "192.0.2.10") == ("ok", "mail.good.test")
    assert signals.fcrdns(resolver, "192.0.2.11") == ("not-confirmed", "host.other.test")
    assert signals.fcrdns(resolver, "192.0.2.12") == ("none", None)
    assert signals.fcrdns(resolver, "2001:db8::10") == ("ok", "v6.good.test")


@pytest.mark.parametrize(("helo", "ip", "want"), [
    ("mail.good.test", "192.0.2.10", "ok"),
    ("mail.good.test.", "192.0.2.99", "ok"),  # resolves; need not be the client's own name
    ("localhost", "192.0.2.10", "syntax"),
    ("192.0.2.10", "192.0.2.10", "syntax"),  # an address without brackets (RFC 5321 4.1.3)
    ("bad_name.test", "192.0.2.10", "syntax"),
    ("[192.0.2.10]", "192.0.2.10", "ok"),
    ("[192.0.2.11]", "192.0.2.10", "literal-mismatch"),
    ("[IPv6:2001:db8::10]", "2001:db8::10", "ok"),
    ("[203.0.113.5]", "192.0.2.10", "ours"),
    ("mx.example.test", "192.0.2.10", "ours"),
    ("Example.Test", "192.0.2.10", "ours"),
    ("nothing.good.test", "192.0.2.10", "nxdomain"),
])
def test_helo_checks(resolver: Resolver, helo: str, ip: str, want: str) -> None:
    assert signals.check_helo(resolver, helo, ip, ["mx.example.test", "example.test"], ["203.0.113.5"]) == want


def test_blocklist_codes_errors_and_failures(resolver: Resolver) -> None:
    entries = [parse_list(x.replace("zen.spamhaus.org", "zen.test")) for x in Config().spam.dnsbl]
    hits, problems = signals.listed_on(resolver, "192.0.2.12", entries)
    assert [h.name for h in hits] == ["SPAMHAUS_SBL", "SPAMHAUS_PBL"] and problems == []
    assert signals.listed_on(resolver, "192.0.2.11", entries) == ([], ["zen.test: refused (127.255.255.254)"])
    assert signals.listed_on(resolver, "192.0.2.10", entries) == ([], [])
    assert signals.listed_on(resolver, "192.0.2.13", entries) == ([], ["zen.test: temperror"])
    assert signals.list_query_name("2001:db8::1", "zen.test") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.test")


def _split_fields_reading(message: bytes) -> tuple[str, list[str]]:
    """The Message-ID and From addresses as message/headers.py split_fields reads them."""
    header, _ = split_header_body(message[:256 * 1024])
    message_id, senders = "", []
    for name, value in split_fields(header):
        if name.lower() == "message-id" and not message_id:
            message_id = value.decode("utf-8", "replace").strip()[:300]
        elif name.lower() == "from":
            senders += [m.addr_spec for m in iter_mailboxes(parse_address_list(value.decode("utf-8", "replace")))]
    return message_id, senders


@pytest.mark.parametrize("message", [
    MSG,
    b"Message-ID: <a@b.test>\r\nFrom: A <a@b.test>, b@c.test\r\n\r\nFrom: body@x.test\r\n",
    b"message-id:\r\n <folded@b.test>\r\nFROM : \"Last, First\"\r\n\t<first@b.test>\r\nfrom:second@b.test\r\n\r\n",
    b"From a@b.test Sat Dec  5 08:00:00 2026\nX-From: no@x.test\nResent-From: no@x.test\nFrom:\tlf@b.test\n"
    b"Message-ID: <one@x>\nMessage-ID: <two@x>\n\nbody",
    b"Subject: bare CR\rFrom: cr@b.test\r\nMessage-ID: <cr@x>\r\n\r\n",
    b"From: =?utf-8?q?Caf=C3=A9?= <cafe@b.test>\r\nMessage-ID: <" + b"x" * 400 + b">\r\n\r\n",
    b"bad line\r\n from: cont@b.test\r\nFrom: ok@b.test",
    b"From: caf\xc3\xa9 <\xff@b.test>\r\nMessage-ID: \r\n\r\n",
    b"\r\nFrom: body@b.test\r\n",
])
def test_header_fields_read_as_split_fields_reads_them(message: bytes) -> None:
    assert _header_info(message) == _split_fields_reading(message)


_BIG = 256 * 1024
_FILL = b"X-Fill: " + b"y" * 70 + b"\r\n"


@pytest.mark.parametrize("message", [
    MSG,
    b"From: a@b.test\r\nX-Spam-Flag: YES\r\nX-Spam-Score:\r\n 9\r\nMessage-ID: <s@x>\r\n\r\nX-Spam-Flag: body\r\n",
    b"X-Rspamd-Score: 1\nFrom: lf@b.test\n\nbody",
    b"X-SPAMD-Result: x\r\nX-Spammy: kept\r\nX-RSPAMD-Bar:\r\n\t+\r\nFrom: u@b.test\r\n\r\nX-Rspamd-Score: 1\r\n",
    b"X-Spammy: kept, no field of ours\r\nSubject: x-rspamd- in a value\r\n\r\nbody",
    b"\r\nFrom: body@b.test\r\n",
    b"From: all-header@b.test\r\nX-Spam-Flag: YES\r\n",
    # a header longer than the 256 KB read, and empty lines at and around its edge
    b"From: long@b.test\r\n" + _FILL * (_BIG // len(_FILL) + 10) + b"From: past-256k@b.test\r\n\r\nbody",
    (b"From: edge@b.test\r\n" + _FILL * (_BIG // len(_FILL)))[:_BIG - 1] + b"\n\r\nbody",
    (b"From: edge@b.test\r\n" + _FILL * (_BIG // len(_FILL)))[:_BIG - 1] + b"\n\nbody",
    (b"From: edge@b.test\r\n" + _FILL * (_BIG // len(_FILL)))[:_BIG - 2] + b"\n\r\nbody",
    (b"From: edge@b.test\r\n" + _FILL * (_BIG // len(_FILL)))[:_BIG - 3] + b"\n\r\nbody",
])
def test_judge_reading_of_the_header_from_one_header_end_is_the_same(message: bytes) -> None:
    """judge finds the header's end once and hands it to strip_fields and
    _header_fields: what they give is what they give when they find it
    themselves (and the verdict's strip of OUR_PREFIXES what the general
    strip of the same prefixes gives)."""
    end, body_start = header_end(message)
    stripped = headers.strip_fields(message, end=end)
    assert stripped == headers.strip_fields(message, tuple(headers.OUR_PREFIXES))
    if stripped is not message:
        end, body_start = header_end(stripped)
    assert _header_fields(stripped, body_start) == _header_fields(stripped)


class _SettingsStore:
    """What SpamChecker asks of the store, counting settings reads."""

    directory_version = 0

    def __init__(self, version: int | None) -> None:
        self.version = version
        self.settings: dict[int, dict[str, object]] = {}
        self.reads = 0

    async def list_domains(self) -> list[str]:
        return ["example.test"]

    async def get_settings(self, account_id: int) -> dict[str, object]:
        self.reads += 1
        return dict(self.settings.get(account_id, {}))

    def settings_version(self) -> int | None:
        return self.version


async def test_spam_preferences_are_read_again_only_after_a_settings_change(tmp_path: Path) -> None:
    store = _SettingsStore(1)
    checker = SpamChecker(Config().spam, store, DecisionLog(tmp_path / "spam"), None, None,  # type: ignore[arg-type]
                          hostname="mx.example.test")
    alice = Account(1, "alice@example.test", "h")
    message = b"From: Dan <dan@other.test>\r\nMessage-ID: <m@other.test>\r\n\r\nhi\r\n"

    async def junk() -> bool:
        judged = await checker.judge(message, queue_id="q", ip="192.0.2.1", helo="mx.other.test",
                                     reverse_path="bounce@list.test", rcpts=[alice.address], accounts=[alice])
        return alice.id in judged.junk

    try:
        assert not await junk() and not await junk()
        assert store.reads == 1  # the second message reused the first one's read
        # a change (by any process) moves the version: the next message sees it,
        # a From address on the block list included
        store.settings[alice.id] = {"spam_block": ["@other.test"]}
        store.version = 2
        assert await junk() and await junk()
        assert store.reads == 2
        # a store without the signal is asked every time
        store.version = None
        store.settings[alice.id] = {}
        assert not await junk() and not await junk()
        assert store.reads == 4
    finally:
        await checker.close()


async def test_decision_log_writes_a_turns_records_together_and_follows_a_rotation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = DecisionLog(tmp_path / "spam", max_bytes=4096), DecisionLog(tmp_path / "spam", max_bytes=4096)
    writes: list[bytes] = []
    real_write = spamlog.os.write

    def counting(fd: int, data: bytes) -> int:
        if fd in (first._fd, second._fd):
            writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(spamlog.os, "write", counting)
    for i in range(3):
        first.append_soon({"queue_id": f"q{i}"})
    assert [r["queue_id"] for r in first.records()] == []  # held until the loop's next turn
    await asyncio.sleep(0)
    assert [r["queue_id"] for r in first.records()] == ["q0", "q1", "q2"]
    assert writes == [b'{"queue_id":"q0"}\n{"queue_id":"q1"}\n{"queue_id":"q2"}\n']  # one write
    # another process renames the file away: this one's next line goes to the new file
    second.append({"queue_id": "s0", "pad": "x" * 4050})
    assert (tmp_path / "spam" / "decisions.jsonl.1").exists()
    first.append({"queue_id": "q3"})
    assert [r["queue_id"] for r in DecisionLog(tmp_path / "spam").records()] == ["q0", "q1", "q2", "s0", "q3"]
    assert (tmp_path / "spam" / "decisions.jsonl.1").read_bytes().endswith(b'{"queue_id":"q2"}\n')
    assert (tmp_path / "spam" / "decisions.jsonl").read_bytes().endswith(b'"}\n{"queue_id":"q3"}\n')
    first.close()
    second.close()


async def test_a_clients_dns_checks_start_at_helo_and_run_once_for_its_messages(dns: DNSServer,
                                                                                tmp_path: Path) -> None:
    cfg = Config().spam
    cfg.trusted_networks = []
    cfg.dnsbl = [x.replace("zen.spamhaus.org", "zen.test") for x in cfg.dnsbl]
    alice = Account(1, "alice@example.test", "h")
    message = b"From: Dan <dan@other.test>\r\nMessage-ID: <m@other.test>\r\n\r\nhi\r\n"

    def checker(name: str) -> tuple[SpamChecker, Resolver]:
        resolver = Resolver(dns.address, timeout=3.0)
        return SpamChecker(cfg, _SettingsStore(1), DecisionLog(tmp_path / name), resolver, None,  # type: ignore[arg-type]
                           hostname="mx.example.test"), resolver

    async def judge(c: SpamChecker, ip: str) -> tuple[float, list[bytes]]:
        j = await c.judge(message, queue_id="q", ip=ip, helo="mail.good.test", reverse_path="dan@other.test",
                          rcpts=[alice.address], accounts=[alice], own_ips=["203.0.113.5"])
        return j.score, [f.fields for f in j.filings.values()]

    # one message of a listed client without prefetch: the verdict and the DNS questions it takes
    plain, plain_dns = checker("plain")
    await judge(plain, "192.0.2.10")  # another client first: the server's own names are known
    asked = plain_dns.queries
    want = await judge(plain, "192.0.2.12")
    questions = plain_dns.queries - asked
    assert want[0] == 8.0 and b"tests=RDNS_NONE,SPAMHAUS_SBL,\r\n\tSPAMHAUS_PBL\r\n" in want[1][0] and questions > 0
    # the same client, its checks started at its HELO and five of its messages
    # judged while they run: the same verdicts, each DNS question asked once
    early, early_dns = checker("early")
    await judge(early, "192.0.2.10")
    asked = early_dns.queries
    early.prefetch("192.0.2.12", "mail.good.test", ["203.0.113.5"])
    assert await asyncio.gather(*(judge(early, "192.0.2.12") for _ in range(5))) == [want] * 5
    assert early_dns.queries - asked == questions
    await plain.close()
    await early.close()
