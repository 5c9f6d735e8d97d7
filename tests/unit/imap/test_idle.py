"""IDLE (RFC 2177): changes announced while idling, DONE, a wrong line, the
end of input; and the session's watch on the backend."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest

from mailyard.protocols.imap import selected
from mailyard.protocols.imap.backend import MailboxRecord, Unavailable
from mailyard.protocols.imap.memory import MemoryBackend
from mailyard.protocols.imap.session import ImapConfig

from .helpers import MULTIPART, SHORT, connect, store_with_mail


def test_idle_announces_changes_at_once_rfc2177_3() -> None:
    store = store_with_mail()
    a = connect(store, select="INBOX")
    b = connect(store, select="INBOX", enable="IMAP4rev2")
    a.expect("x1 IDLE", "+ idling")
    assert a.poll() == b""  # nothing new: still waiting
    store.deliver("alice", SHORT)
    assert a.poll() == b"* 4 EXISTS\r\n* 4 RECENT\r\n"
    b.untagged("y1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.untagged("y2 EXPUNGE")
    assert a.poll() == b"* 1 EXPUNGE\r\n"  # expunges go out at once in IDLE
    b.untagged("y3 STORE 1 +FLAGS.SILENT (\\Flagged)")
    assert a.poll() == b"* 1 FETCH (UID 2 FLAGS (\\Flagged \\Recent))\r\n"
    a.expect("DONE", "x1 OK IDLE terminated")
    a.expect("x2 NOOP", "x2 OK NOOP completed")


def test_pending_updates_follow_the_continuation() -> None:
    store = store_with_mail()
    a = connect(store, select="INBOX")
    store.deliver("alice", SHORT)
    a.expect("x1 IDLE", "+ idling", "* 4 EXISTS", "* 4 RECENT")
    a.expect("done", "x1 OK IDLE terminated")  # DONE is case-insensitive


def test_idle_without_a_selected_mailbox() -> None:
    store = store_with_mail()
    a = connect(store)
    a.expect("x1 IDLE", "+ idling")
    store.deliver("alice", SHORT)
    assert a.poll() == b""
    a.expect("DONE", "x1 OK IDLE terminated")


def test_anything_but_done_is_bad() -> None:
    a = connect(select="INBOX")
    a.expect("x1 IDLE", "+ idling")
    a.expect("x2 NOOP", "x1 BAD Expected DONE")
    a.expect("x3 NOOP", "x3 OK NOOP completed")


def test_end_of_input_while_idle() -> None:
    a = connect(select="INBOX")
    a.expect("x1 IDLE", "+ idling")
    assert a.conv.end_input() == b"* BYE Connection closed\r\n"
    assert a.conv.closed


def test_a_closed_session_stops_watching() -> None:
    store = store_with_mail()
    a = connect(store, select="INBOX")
    assert len(store._listeners) == 1
    a.conv.close()
    assert store._listeners == []
    store.deliver("alice", SHORT)  # no session left to tell


# --- revocations: a session in IDLE has no command to be checked before -------------------
BYE = "* BYE Account removed or password changed; log in again"


def test_a_password_change_ends_idle_before_the_next_change_is_reported() -> None:
    """New mail after alice's password changed wakes her IDLE session: it
    ends with BYE, reporting neither the mail nor the live search's ADDTO
    (RFC 5267 4.2), which would tell whether the new mail holds a string."""
    store = store_with_mail()
    a = connect(store, select="INBOX", enable="IMAP4rev2")
    a.untagged('x1 SEARCH RETURN (UPDATE) BODY "pin-4711"')
    a.expect("x2 IDLE", "+ idling")
    store.set_password("alice", "new")
    store.deliver("alice", b"Subject: code\r\n\r\nyour code is pin-4711\r\n")
    assert a.poll() == (BYE + "\r\n").encode()
    assert a.conv.closed


def test_a_revocation_ends_idle_at_any_wake() -> None:
    """A wake that reports nothing (the I/O side's, after a revocation
    anywhere) is enough: the session asks and ends, in the selected state,
    in the authenticated state, and for a removed account; bob's session,
    woken too, goes on and reports his mail."""
    store = store_with_mail()
    selected = connect(store, select="INBOX")
    authenticated = connect(store)
    bob = connect(store, user="bob", select="INBOX")
    for c in (selected, authenticated, bob):
        c.expect("x1 IDLE", "+ idling")
    store.set_password("alice", "new")
    assert selected.poll() == authenticated.poll() == (BYE + "\r\n").encode()
    assert selected.conv.closed and authenticated.conv.closed
    assert bob.poll() == b""
    store.deliver("bob", SHORT)
    assert bob.poll() == b"* 1 EXISTS\r\n* 1 RECENT\r\n"
    store.remove_account("bob")
    assert bob.poll() == (BYE + "\r\n").encode()
    assert bob.conv.closed


def test_the_revocation_mark_is_read_before_each_check() -> None:
    """The mark the session hands to its wait is the one read before its
    check: a revocation while the check ran (here bob's password changes
    inside alice's check) moves the value past it, and the I/O side ends
    that wait at once (net/revocations.py)."""
    store = store_with_mail()
    a = connect(store, select="INBOX")
    backend = a.session.backend
    check = backend.account_current

    async def revoked_meanwhile() -> bool:
        answer = await check()
        store.set_password("bob", "changed")  # after the check read what it answers
        return answer

    backend.account_current = revoked_meanwhile
    before = store.revocations
    a.expect("x1 IDLE", "+ idling")
    # two checks, each with a revocation inside: IDLE's own (execute) and
    # the loop's, whose mark is the value between the two
    assert store.revocations == before + 2
    assert a.conv.idle_waits == [(before + 1, True)]


def _idling_while_the_store_is_down() -> tuple[Any, Any, Any]:
    """(alice's client idling on INBOX, its backend, the backend's
    real check): the check now raises Unavailable (a database restarting)
    and a message has come meanwhile."""
    store = store_with_mail()
    a = connect(store, select="INBOX")
    a.expect("x1 IDLE", "+ idling")
    backend = a.session.backend
    check = backend.account_current

    async def down() -> bool:
        raise Unavailable("store down")

    backend.account_current = down
    store.deliver("alice", SHORT)
    return a, backend, check


def test_idle_reports_nothing_and_goes_on_while_its_check_cannot_be_answered() -> None:
    """The store cannot answer the check at a wake (a database restarting):
    IDLE goes on, reporting neither an error nor the mail it could not
    check, and asks to be woken again; once the store answers, the mail is
    reported and DONE ends IDLE with OK."""
    a, backend, check = _idling_while_the_store_is_down()
    assert a.poll() == b""
    assert a.conv.idle_waits[-1][1] is False  # unchecked: woken at the I/O side's next poll
    assert not a.conv.closed
    backend.account_current = check
    assert a.poll() == b"* 4 EXISTS\r\n* 4 RECENT\r\n"
    a.expect("DONE", "x1 OK IDLE terminated")
    a.expect("x2 NOOP", "x2 OK NOOP completed")


def test_done_while_the_check_cannot_be_answered_ends_idle_with_no_update() -> None:
    """DONE comes while the store cannot answer: the tagged OK, without the
    mail that came meanwhile (nothing is reported unchecked), and no BAD;
    the next command, once the store answers, reports it."""
    a, backend, check = _idling_while_the_store_is_down()
    a.expect("DONE", "x1 OK IDLE terminated")
    backend.account_current = check
    a.expect("x2 NOOP", "* 4 EXISTS", "* 4 RECENT", "x2 OK NOOP completed")


# --- a big mailbox's index data is kept across IDLE ------------------------------------
# (selected.LARGE_VIEW lowered: every mailbox of more than 2 messages is big)


def _big_mailboxes(monkeypatch: pytest.MonkeyPatch) -> list[MemoryBackend]:
    """Make 3 messages a big mailbox; the listings the backends are asked
    for (each a read of every message), by the session's backend."""
    monkeypatch.setattr(selected, "LARGE_VIEW", 2, raising=False)
    listings: list[MemoryBackend] = []
    listed = MemoryBackend.list_messages

    async def counted(self: MemoryBackend, mailbox: MailboxRecord) -> list:
        listings.append(self)
        return await listed(self, mailbox)

    monkeypatch.setattr(MemoryBackend, "list_messages", counted)
    return listings


def test_idle_done_does_not_list_a_big_mailbox_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that IDLEs and then FETCHes what is new (RFC 2177; every
    few minutes, and after every change) has its index data read once."""
    listings = _big_mailboxes(monkeypatch)
    a = connect(store_with_mail(), select="INBOX")
    assert a.untagged("x1 UID FETCH 1:* (FLAGS)")[0] == b"* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent))"
    for n in range(3):
        a.expect(f"i{n} IDLE", "+ idling")
        a.expect("DONE", f"i{n} OK IDLE terminated")
        a.expect(f"f{n} UID FETCH 3:* (FLAGS)", "* 3 FETCH (UID 3 FLAGS (\\Recent))",
                 f"f{n} OK UID FETCH completed")
    assert listings == [a.session.backend]


def test_changes_during_idle_reach_the_kept_index_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another session's flags, new mail and expunge during IDLE are
    announced at once (RFC 2177 3, RFC 9051 7.4.1, 7.5.1), and the FETCH
    after DONE answers from the index data as they left it, not read again."""
    listings = _big_mailboxes(monkeypatch)
    store = store_with_mail()
    a = connect(store, select="INBOX")
    b = connect(store, select="INBOX", enable="IMAP4rev2")
    a.untagged("x1 FETCH 1:* (FLAGS)")
    a.expect("x2 IDLE", "+ idling")
    b.untagged("y1 STORE 2 +FLAGS.SILENT (\\Flagged)")
    assert a.poll() == b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent))\r\n"
    store.deliver("alice", SHORT)
    assert a.poll() == b"* 4 EXISTS\r\n* 4 RECENT\r\n"
    b.untagged("y2 STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.untagged("y3 EXPUNGE")
    assert a.poll() == b"* 1 EXPUNGE\r\n"
    a.expect("DONE", "x2 OK IDLE terminated")
    a.expect("x3 FETCH 1:* (UID FLAGS RFC822.SIZE)",
             f"* 1 FETCH (UID 2 FLAGS (\\Flagged \\Recent) RFC822.SIZE {len(MULTIPART)})",
             f"* 2 FETCH (UID 3 FLAGS (\\Recent) RFC822.SIZE {len(SHORT)})",
             f"* 3 FETCH (UID 4 FLAGS (\\Recent) RFC822.SIZE {len(SHORT)})",
             "x3 OK FETCH completed")
    b.untagged("y4 STORE 2 -FLAGS.SILENT (\\Flagged)")  # after DONE, before a's next command
    a.expect("x4 UID FETCH 3 (FLAGS)", "* 2 FETCH (UID 3 FLAGS (\\Recent))", "x4 OK UID FETCH completed")
    assert listings.count(a.session.backend) == 1


def test_qresync_changes_during_idle_reach_the_kept_index_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """With QRESYNC: VANISHED and MODSEQ during IDLE (RFC 7162 3.2.10,
    3.1.4), and after DONE a CHANGEDSINCE FETCH (3.1.4.1, VANISHED 3.2.6)
    sees the changes in the index data kept through IDLE."""
    listings = _big_mailboxes(monkeypatch)
    store = store_with_mail()
    a = connect(store, enable="QRESYNC", select="INBOX")
    b = connect(store, select="INBOX", enable="IMAP4rev2")
    modseqs = a.untagged("x1 UID FETCH 1:* (MODSEQ)")
    since = max(int(line.split(b"MODSEQ (")[1].split(b")")[0]) for line in modseqs)
    a.expect("x2 IDLE", "+ idling")
    b.untagged("y1 STORE 2 +FLAGS.SILENT ($Work)")
    got = a.poll()
    assert got.startswith(b"* FLAGS (") and b"* 2 FETCH (UID 2 FLAGS (\\Recent $Work) MODSEQ (" in got, got
    b.untagged("y2 STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.untagged("y3 EXPUNGE")
    assert a.poll() == b"* VANISHED 1\r\n"
    a.expect("DONE", "x2 OK IDLE terminated")
    lines = a.untagged(f"x3 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since} VANISHED)")
    assert lines[0] == b"* VANISHED (EARLIER) 1", lines
    assert len(lines) == 2 and lines[1].startswith(b"* 1 FETCH (UID 2 FLAGS (\\Recent $Work) MODSEQ ("), lines
    assert listings.count(a.session.backend) == 1


def test_a_big_mailbox_is_mapped_and_indexed_through_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    """SELECT's sequence-number map and the first FETCH's index data of a
    big mailbox are made through ImapIO.compute (a worker thread in the
    server), not on the event loop."""
    _big_mailboxes(monkeypatch)
    a = connect(store_with_mail())
    a.untagged("x1 SELECT INBOX")
    assert a.conv.computed == 1
    a.untagged("x2 FETCH 1:* (FLAGS)")
    assert a.conv.computed == 2


def test_a_change_notified_while_select_reads_is_announced(monkeypatch: pytest.MonkeyPatch) -> None:
    """A delivery committed after SELECT's snapshot was read, and notified
    before the mailbox was selected (the read of a big mailbox waits for a
    thread), is announced by the next command (RFC 9051 7.4.1)."""
    store = store_with_mail()
    summary = MemoryBackend.mailbox_summary

    async def racing(self: MemoryBackend, mailbox: MailboxRecord) -> object:
        out = await summary(self, mailbox)
        store.deliver("alice", SHORT)  # committed and notified while SELECT is under way
        return out

    monkeypatch.setattr(MemoryBackend, "mailbox_summary", racing)
    a = connect(store)
    assert b"* 3 EXISTS" in a.send("x1 SELECT INBOX")
    monkeypatch.setattr(MemoryBackend, "mailbox_summary", summary)
    a.expect("x2 NOOP", "* 4 EXISTS", "* 4 RECENT", "x2 OK NOOP completed")


class _Cache(dict):
    """An index-data cache a test can hold a weak reference to."""


def _weak_caches(monkeypatch: pytest.MonkeyPatch) -> list[weakref.ref]:
    """Weak references to the index-data caches the sessions build."""
    refs: list[weakref.ref] = []
    index = selected._index

    def traced(*args: object) -> tuple:
        cache, *rest = index(*args)  # type: ignore[arg-type]
        cache = _Cache(cache)
        refs.append(weakref.ref(cache))
        return (cache, *rest)

    monkeypatch.setattr(selected, "_index", traced)
    return refs


def test_a_session_closed_in_idle_lets_go_of_its_kept_index_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection of a session IDLE in a big mailbox is gone: the index
    data kept for it goes with it, without waiting for the cycle collector
    (which would find the session and its I/O object much later)."""
    _big_mailboxes(monkeypatch)
    refs = _weak_caches(monkeypatch)
    a = connect(store_with_mail(), select="INBOX")
    a.untagged("x1 FETCH 1:* (FLAGS)")
    a.expect("x2 IDLE", "+ idling")
    assert len(refs) == 1 and refs[0]() is not None  # kept through IDLE
    collecting = gc.isenabled()
    gc.disable()
    try:
        a.conv.close()
        assert refs[0]() is None
    finally:
        if collecting:
            gc.enable()


def test_the_caches_kept_through_idle_share_one_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sessions of a server keep their big caches through IDLE within
    one budget of records (selected.IDLE_KEPT_RECORDS): beyond it the cache
    of the session that began IDLE longest ago goes, and is read again by
    its first command after DONE. A session out of IDLE, or gone, no
    longer counts."""
    listings = _big_mailboxes(monkeypatch)
    monkeypatch.setattr(selected, "IDLE_KEPT_RECORDS", 7)  # two caches of 3 records
    kept = selected.KeptCaches()
    store = store_with_mail()
    a, b, c = (connect(store, select="INBOX", config=ImapConfig(kept=kept)) for _ in range(3))
    for n, s in enumerate((a, b, c)):
        s.untagged(f"f{n} FETCH 1:* (FLAGS)")
        s.expect(f"i{n} IDLE", "+ idling")
    assert kept.records == 6 and len(kept) == 2  # a's went for c's
    assert a.session.sel.infos_cache is None and b.session.sel.infos_cache is not None
    for n, s in enumerate((a, b)):
        s.expect("DONE", f"i{n} OK IDLE terminated")
        s.expect(f"g{n} UID FETCH 3 (RFC822.SIZE)", f"* 3 FETCH (UID 3 RFC822.SIZE {len(SHORT)})",
                 f"g{n} OK UID FETCH completed")
    assert len(kept) == 1 and kept.records == 3  # c's, in IDLE
    assert listings.count(a.session.backend) == 2  # read again after DONE
    assert listings.count(b.session.backend) == 1
    c.conv.close()
    assert len(kept) == 0 and kept.records == 0


def test_the_budget_of_kept_caches_counts_what_arrives_during_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache kept through IDLE grows by every message that arrives
    meanwhile (the syncs keep it current): the budget counts the records
    the caches hold, and once they are over it the cache of the session
    that began IDLE longest ago goes, as when a new one is kept."""
    _big_mailboxes(monkeypatch)
    monkeypatch.setattr(selected, "IDLE_KEPT_RECORDS", 7)  # two caches of 3 records
    kept = selected.KeptCaches()
    store = store_with_mail()
    a, b = (connect(store, select="INBOX", config=ImapConfig(kept=kept)) for _ in range(2))
    for n, s in enumerate((a, b)):
        s.untagged(f"f{n} FETCH 1:* (FLAGS)")
        s.expect(f"i{n} IDLE", "+ idling")
    assert kept.records == 6 and len(kept) == 2
    store.deliver("alice", SHORT)
    assert a.poll().startswith(b"* 4 EXISTS") and b.poll().startswith(b"* 4 EXISTS")
    assert a.session.sel.infos_cache is None  # the oldest IDLE's went
    assert len(b.session.sel.infos_cache) == 4
    assert len(kept) == 1 and kept.records == 4
    a.expect("DONE", "i0 OK IDLE terminated")
    a.expect("g0 UID FETCH 4 (RFC822.SIZE)", f"* 4 FETCH (UID 4 RFC822.SIZE {len(SHORT)})",
             "g0 OK UID FETCH completed")
    assert len(kept) == 1 and kept.records == 4
    b.expect("DONE", "i1 OK IDLE terminated")
    assert len(kept) == 0 and kept.records == 0


def test_the_sync_answering_done_leaves_the_other_kept_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    """A message that arrives while a session IDLEs is announced by the sync
    that answers its DONE (RFC 2177 3): that session's cache is leaving the
    budget, so its growth there does not drop the cache of another session
    still in IDLE."""
    listings = _big_mailboxes(monkeypatch)
    monkeypatch.setattr(selected, "IDLE_KEPT_RECORDS", 6)  # two caches of 3 records
    kept = selected.KeptCaches()
    store = store_with_mail()
    a, b = (connect(store, select="INBOX", config=ImapConfig(kept=kept)) for _ in range(2))
    for n, s in enumerate((a, b)):
        s.untagged(f"f{n} FETCH 1:* (FLAGS)")
    b.expect("i1 IDLE", "+ idling")  # the older IDLE
    a.expect("i0 IDLE", "+ idling")
    assert kept.records == 6 and len(kept) == 2
    store.deliver("alice", SHORT)  # a hears of it only when DONE comes
    assert a.send("DONE").startswith(b"* 4 EXISTS")
    assert len(a.session.sel.infos_cache) == 4  # a's cache, current, serves its commands
    assert b.session.sel.infos_cache is not None  # b's is kept
    assert len(kept) == 1 and kept.records == 3
    assert b.poll().startswith(b"* 4 EXISTS")
    b.expect("DONE", "i1 OK IDLE terminated")
    b.expect("g1 UID FETCH 4 (RFC822.SIZE)", f"* 4 FETCH (UID 4 RFC822.SIZE {len(SHORT)})",
             "g1 OK UID FETCH completed")
    assert listings.count(b.session.backend) == 1  # not read again
    assert len(kept) == 0 and kept.records == 0
