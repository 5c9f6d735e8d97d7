"""Keywords through a real IMAP server over the SQLite store: the bound on a
mailbox's keywords (store/keywords.py; RFC 5530 3 LIMIT, RFC 9051 7.1
PERMANENTFLAGS), and a STORE over more messages than one commit writes
(store/api.py FLAG_SLICE: one MODSEQ per message, RFC 7162 3.1.3)."""

from __future__ import annotations

import imaplib
import re

import pytest

from mailyard.store.keywords import MAX_KEYWORD_OCTETS, MAX_KEYWORDS
from tests.conftest import USERS, RunningServer

ALICE = "alice@example.test"
KEYWORDS = " ".join(f"k{i:03d}" for i in range(MAX_KEYWORDS))


def client(server: RunningServer) -> imaplib.IMAP4:
    c = imaplib.IMAP4(server.host, server.port("imap"), timeout=30)
    c.login(ALICE, USERS[ALICE])
    return c


def append(c: imaplib.IMAP4, n: int, box: str = "INBOX", flags: str | None = None) -> tuple[str, list]:
    msg = f"From: bob@example.test\r\nSubject: m{n}\r\nMessage-ID: <m{n}@example.test>\r\n\r\nbody {n}\r\n"
    return c.append(box, flags, None, msg.encode())


def flags_of(c: imaplib.IMAP4, seq: str) -> list[set[str]]:
    typ, data = c.fetch(seq, "(FLAGS)")
    assert typ == "OK", data
    # (\Recent aside: a session's own, RFC 3501 2.3.2; a STORE's own FETCH
    # MODSEQ responses, which imaplib keeps, aside)
    return [set(m.group(1).decode().split()) - {"\\Recent"}
            for d in data if isinstance(d, bytes) for m in [re.search(rb"FLAGS \(([^)]*)\)", d)] if m]


def permanentflags(c: imaplib.IMAP4, box: str = "INBOX") -> str:
    typ, data = c.select(box)
    assert typ == "OK", data
    codes = c.untagged_responses.get("PERMANENTFLAGS") or []
    return codes[-1].decode()


def test_store_past_the_keyword_bound_gets_no_limit_and_changes_nothing(mailserver: RunningServer) -> None:
    c = client(mailserver)
    try:
        for n in range(2):
            assert append(c, n)[0] == "OK"
        c.select("INBOX")
        typ, data = c.store("1:2", "+FLAGS.SILENT", f"(\\Seen {KEYWORDS} one-more)")
        assert typ == "NO" and b"[LIMIT]" in data[0], data
        typ, data = c.store("1", "+FLAGS.SILENT", "(" + "x" * (MAX_KEYWORD_OCTETS + 1) + ")")
        assert typ == "NO" and b"[LIMIT]" in data[0], data
        assert flags_of(c, "1:2") == [set(), set()]
        assert c.store("1", "+FLAGS.SILENT", f"({KEYWORDS})")[0] == "OK"
        typ, data = c.store("2", "+FLAGS", "(\\Flagged one-more)")
        assert typ == "NO" and b"[LIMIT]" in data[0], data
        assert flags_of(c, "2") == [set()]
        # a keyword the mailbox has is still welcome
        assert c.store("2", "+FLAGS", "(\\Flagged k100)")[0] == "OK"
        assert flags_of(c, "2") == [{"\\Flagged", "k100"}]
    finally:
        c.logout()


def test_permanentflags_lose_the_wildcard_at_the_bound_rfc9051_7_1(mailserver: RunningServer) -> None:
    c = client(mailserver)
    try:
        assert append(c, 1)[0] == "OK"
        assert "\\*" in permanentflags(c)
        assert c.store("1", "+FLAGS.SILENT", f"({KEYWORDS})")[0] == "OK"
        full = permanentflags(c)
        assert "\\*" not in full and "k255" in full and "\\Seen" in full
        assert "\\*" in permanentflags(c, "Archive")  # another mailbox has its own keywords
    finally:
        c.logout()


def test_append_with_new_keywords_past_the_bound_is_refused(mailserver: RunningServer) -> None:
    c = client(mailserver)
    try:
        assert append(c, 1, flags=f"({KEYWORDS})")[0] == "OK"
        typ, data = append(c, 2, flags="(\\Seen brand-new)")
        assert typ == "NO" and b"[LIMIT]" in data[0], data
        typ, data = append(c, 3, "Archive", flags="(" + "y" * (MAX_KEYWORD_OCTETS + 1) + ")")
        assert typ == "NO" and b"[LIMIT]" in data[0], data
        assert c.status("INBOX", "(MESSAGES)")[1][0].endswith(b"(MESSAGES 1)")
        assert c.status("Archive", "(MESSAGES)")[1][0].endswith(b"(MESSAGES 0)")
        assert append(c, 4, flags="(\\Seen k042)")[0] == "OK"
        # COPY into the full mailbox: the message goes, without the keyword that does not fit
        assert append(c, 5, "Archive", flags="(\\Flagged k001 archive-only)")[0] == "OK"
        c.select("Archive")
        assert c.copy("1", "INBOX")[0] == "OK"
        c.select("INBOX")
        assert flags_of(c, "3") == [{"\\Flagged", "k001"}]
    finally:
        c.logout()


def test_a_large_store_is_written_in_slices_with_one_modseq_per_message(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """FETCH responses and MODSEQs of a STORE written in several commits
    (four messages a commit here): every message is reported once with the
    MODSEQ it has (RFC 7162 3.1.3), and UNCHANGEDSINCE is judged per
    message, MODIFIED naming those changed since."""
    import mailyard.store.sqlite.messages as sqlite_messages

    monkeypatch.setattr(sqlite_messages, "FLAG_SLICE", 4)
    c = client(mailserver)
    try:
        for n in range(10):
            assert append(c, n)[0] == "OK"
        assert c.enable("CONDSTORE")[0] == "OK"
        c.select("INBOX")
        typ, data = c.store("1:10", "+FLAGS", "(\\Seen $Label)")
        assert typ == "OK", data
        told = {int(m.group(1)): int(m.group(2)) for d in data if isinstance(d, bytes)
                for m in [re.match(rb"(\d+) \(.*MODSEQ \((\d+)\)", d)] if m}
        assert sorted(told) == list(range(1, 11))
        assert len(set(told.values())) == 3  # three commits
        typ, data = c.fetch("1:10", "(MODSEQ FLAGS)")
        now = {int(m.group(1)): int(m.group(2)) for d in data if isinstance(d, bytes)
               for m in [re.match(rb"(\d+) \(.*MODSEQ \((\d+)\)", d)] if m}
        assert now == told
        assert all(f == {"\\Seen", "$Label"} for f in flags_of(c, "1:10"))
        since = sorted(set(told.values()))[1]
        typ, data = c._simple_command("STORE", "1:10", f"(UNCHANGEDSINCE {since})", "+FLAGS.SILENT", "(\\Flagged)")
        assert typ == "OK" and b"[MODIFIED 9:10]" in data[-1], data
        assert [("\\Flagged" in f) for f in flags_of(c, "1:10")] == [True] * 8 + [False] * 2
    finally:
        c.logout()


def test_a_keyword_in_another_case_is_the_one_the_mailbox_has(mailserver: RunningServer) -> None:
    """RFC 9051 2.3.2: keywords compare without case (as SEARCH KEYWORD
    does): in a full mailbox holding $Work, STORE and COPY of $WORK set
    $Work, and -FLAGS ($work) takes it away."""
    c = client(mailserver)
    try:
        assert append(c, 1, flags="($Work " + " ".join(f"k{i:03d}" for i in range(1, MAX_KEYWORDS)) + ")")[0] == "OK"
        assert append(c, 2)[0] == "OK"
        assert "\\*" not in permanentflags(c)
        typ, data = c.store("2", "+FLAGS", "($WORK)")
        assert typ == "OK", data
        assert flags_of(c, "2") == [{"$Work"}]
        assert append(c, 3, "Archive", flags="($wORK \\Seen)")[0] == "OK"
        c.select("Archive")
        assert c.copy("1", "INBOX")[0] == "OK"
        c.select("INBOX")
        assert flags_of(c, "3") == [{"$Work", "\\Seen"}]
        assert c.store("2:3", "-FLAGS", "($work)")[0] == "OK"
        assert flags_of(c, "2:3") == [set(), {"\\Seen"}]
    finally:
        c.logout()


def test_a_store_failing_after_a_commit_tells_what_it_applied(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A STORE written in several commits that fails after the first: the
    FETCH responses (and MODIFIED, RFC 7162 3.1.3) of what was applied, then
    a NO saying it was applied in part."""
    import mailyard.store.sqlite.messages as sqlite_messages
    from mailyard.store.api import StoreUnavailable

    monkeypatch.setattr(sqlite_messages, "FLAG_SLICE", 4)
    store = mailserver.store
    flags_op = store._flags_op
    calls = 0

    def second_fails(*args: object, **kw: object) -> object:
        nonlocal calls
        calls += 1
        if calls != 2:
            return flags_op(*args, **kw)

        def op(*_: object) -> None:
            raise StoreUnavailable("the store went away")

        return op

    c = client(mailserver)
    try:
        for n in range(10):
            assert append(c, n)[0] == "OK"
        assert c.enable("CONDSTORE")[0] == "OK"
        c.select("INBOX")
        monkeypatch.setattr(store, "_flags_op", second_fails)
        typ, data = c.store("1:10", "+FLAGS", "(\\Flagged)")
        assert typ == "NO" and b"[UNAVAILABLE]" in data[0] and b"some of the messages only" in data[0], data
        told = sorted(int(d.split()[0]) for d in c.untagged_responses.pop("FETCH", []))
        assert told == [1, 2, 3, 4]
        typ, data = c.fetch("1", "(MODSEQ)")
        since = int(re.search(rb"MODSEQ \((\d+)\)", data[0]).group(1))
        calls = 0
        assert c.store("2", "+FLAGS.SILENT", "(\\Draft)")[0] == "OK"
        calls = 0
        typ, data = c._simple_command("STORE", "1:10", f"(UNCHANGEDSINCE {since})", "+FLAGS", "(\\Seen)")
        assert typ == "NO" and b"[MODIFIED 2]" in data[-1] and b"some of the messages only" in data[-1], data
        told = sorted(int(d.split()[0]) for d in c.untagged_responses.pop("FETCH", []))
        assert told == [1, 3, 4]
        monkeypatch.setattr(store, "_flags_op", flags_op)
        assert [("\\Flagged" in f, "\\Seen" in f) for f in flags_of(c, "1:10")] == (
            [(True, True), (True, False), (True, True), (True, True)] + [(False, False)] * 6)
    finally:
        c.logout()
