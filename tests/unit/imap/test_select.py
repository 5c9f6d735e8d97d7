"""SELECT EXAMINE CLOSE UNSELECT EXPUNGE (UID EXPUNGE) and the untagged
updates of the selected mailbox (RFC 9051 5.2, 6.3.2-3, 6.4.1-3, 7.5.1;
RFC 3501 2.3.2 \\Recent; RFC 7162 CONDSTORE/QRESYNC; RFC 4315 2.1)."""

from __future__ import annotations

import pytest

from mailyard.protocols.imap.backend import BackendError, MailboxRecord
from mailyard.protocols.imap.memory import MemoryBackend

from .helpers import SHORT, connect, store_with_mail

FLAGS = "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)"
PERMANENT = "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted"


def test_select_rev1_rfc3501_6_3_1() -> None:
    c = connect()
    c.expect(
        "a1 SELECT INBOX",
        "* 3 EXISTS",
        "* 3 RECENT",
        FLAGS,
        PERMANENT,
        "* OK [UNSEEN 2] First unseen",
        "* OK [UIDVALIDITY 1] UIDs valid",
        "* OK [UIDNEXT 4] Predicted next UID",
        "* OK [MAILBOXID (F1)] Ok",  # RFC 8474 4.1
        "a1 OK [READ-WRITE] SELECT completed",
    )
    # \Recent went to this session; another one sees none (RFC 3501 2.3.2)
    other = connect(c.conv.store)
    assert b"* 0 RECENT" in other.untagged("b1 SELECT INBOX")


def test_examine_leaves_recent_and_is_read_only() -> None:
    store = store_with_mail()
    c = connect(store)
    c.expect(
        "a1 EXAMINE INBOX",
        "* 3 EXISTS",
        "* 3 RECENT",
        FLAGS,
        "* OK [PERMANENTFLAGS ()] No permanent flags permitted",
        "* OK [UNSEEN 2] First unseen",
        "* OK [UIDVALIDITY 1] UIDs valid",
        "* OK [UIDNEXT 4] Predicted next UID",
        "* OK [MAILBOXID (F1)] Ok",  # RFC 8474 4.1
        "a1 OK [READ-ONLY] EXAMINE completed",
    )
    c.expect("a2 STORE 1 +FLAGS (\\Flagged)", "a2 NO [READ-ONLY] Mailbox is read-only")
    c.expect("a3 EXPUNGE", "a3 NO [READ-ONLY] Mailbox is read-only")
    assert b"* 3 RECENT" in connect(store).untagged("b1 SELECT INBOX")  # EXAMINE took nothing


def test_select_rev2_closes_the_previous_and_lists_the_name_rfc9051_6_3_2() -> None:
    c = connect(enable="IMAP4rev2")
    c.untagged("a1 SELECT inbox")
    c.expect(
        "a2 SELECT Sent (CONDSTORE)",
        "* OK [CLOSED] Previous mailbox closed",
        "* 0 EXISTS",
        FLAGS,
        PERMANENT,
        "* OK [UIDVALIDITY 3] UIDs valid",
        "* OK [UIDNEXT 1] Predicted next UID",
        "* OK [MAILBOXID (F3)] Ok",
        "* OK [HIGHESTMODSEQ 0] Highest",
        '* LIST (\\HasNoChildren \\Sent) "/" "Sent"',  # accurate attributes, as LIST gives them
        "a2 OK [READ-WRITE] SELECT completed",
    )


def test_keywords_in_use_are_flags() -> None:
    store = store_with_mail()
    store.deliver("alice", SHORT, flags=("$Forwarded", "\\Seen"))
    c = connect(store)
    lines = c.untagged("a1 SELECT INBOX")
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)" in lines
    assert (b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded \\*)] Flags permitted"
            in lines)


def test_select_missing_mailbox_leaves_none_selected_rfc9051_6_3_2() -> None:
    c = connect(select="INBOX")
    c.expect("a1 SELECT Nope", "a1 NO [NONEXISTENT] Mailbox does not exist")
    c.expect("a2 NOOP", "a2 OK NOOP completed")
    c.expect("a3 FETCH 1 FLAGS", "a3 BAD FETCH is not valid in the authenticated state")


def test_qresync_select_rfc7162_3_2_5() -> None:
    store = store_with_mail()
    a = connect(store, select="INBOX")
    a.untagged("x1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.untagged("x2 EXPUNGE")
    a.untagged("x3 STORE 1 +FLAGS.SILENT (\\Flagged)")
    c = connect(store)
    c.expect("a0 SELECT INBOX (QRESYNC (1 2))", "a0 BAD QRESYNC is not enabled")
    c.untagged("a1 ENABLE QRESYNC")
    c.expect(
        "a2 SELECT INBOX (QRESYNC (1 3 1:10))",
        "* 2 EXISTS",
        "* 0 RECENT",
        FLAGS,
        PERMANENT,
        "* OK [UNSEEN 1] First unseen",
        "* OK [UIDVALIDITY 1] UIDs valid",
        "* OK [UIDNEXT 4] Predicted next UID",
        "* OK [MAILBOXID (F1)] Ok",  # RFC 8474 4.1
        "* OK [HIGHESTMODSEQ 6] Highest",
        "* VANISHED (EARLIER) 1",
        "* 1 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (6))",
        "a2 OK [READ-WRITE] SELECT completed",
    )


def test_close_expunges_silently_unselect_does_not_rfc9051_6_4_1() -> None:
    store = store_with_mail()
    c = connect(store, select="INBOX")
    c.untagged("a1 STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    c.expect("a2 UNSELECT", "a2 OK UNSELECT completed")
    assert len(store.find("alice", "INBOX").messages) == 3
    c.untagged("a3 SELECT INBOX")
    c.expect("a4 CLOSE", "a4 OK CLOSE completed")
    assert sorted(store.find("alice", "INBOX").messages) == [3]
    c.expect("a5 CLOSE", "a5 BAD CLOSE is not valid in the authenticated state")


def test_expunge_and_uid_expunge_rfc4315_2_1() -> None:
    c = connect(select="INBOX")
    c.untagged("a1 STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    # each EXPUNGE's number is valid when it is sent: 2, then 3 has become 2
    c.expect("a2 UID EXPUNGE 2:3", "* 2 EXPUNGE", "* 2 EXPUNGE", "a2 OK UID EXPUNGE completed")
    c.expect("a3 EXPUNGE", "* 1 EXPUNGE", "a3 OK EXPUNGE completed")
    c.expect("a4 EXPUNGE", "a4 OK EXPUNGE completed")


def test_expunge_with_qresync_is_vanished_rfc7162_3_2_10() -> None:
    c = connect(enable="QRESYNC", select="INBOX")
    c.untagged("a1 STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    c.expect("a2 EXPUNGE", "* VANISHED 1,3", "a2 OK [HIGHESTMODSEQ 5] EXPUNGE completed")  # RFC 7162 3.2.7


def test_other_sessions_changes_are_announced_rfc9051_5_2() -> None:
    store = store_with_mail()
    a = connect(store, select="INBOX")
    b = connect(store, select="INBOX", enable="CONDSTORE")
    a.untagged("x1 STORE 2 +FLAGS (\\Flagged)")
    store.deliver("alice", SHORT)
    # new message: EXISTS, and \Recent for the first session told (RFC 3501 7.3.2);
    # the flag change carries UID (RFC 9051 7.5.2) and MODSEQ (CONDSTORE)
    b.expect("y1 NOOP", "* 4 EXISTS", "* 1 RECENT", "* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (4))",
             "y1 OK NOOP completed")
    a.expect("x2 NOOP", "* 4 EXISTS", "* 3 RECENT", "x2 OK NOOP completed")
    b.expect("y2 FETCH 4 (FLAGS)", "* 4 FETCH (FLAGS (\\Recent) MODSEQ (5))", "y2 OK FETCH completed")  # RFC 7162 3.1
    a.expect("x3 FETCH 4 (FLAGS)", "* 4 FETCH (FLAGS ())", "x3 OK FETCH completed")


def test_own_changes_are_not_repeated() -> None:
    c = connect(select="INBOX", enable="CONDSTORE")
    c.expect("a1 STORE 2 +FLAGS (\\Flagged)", "* 2 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (4))",
             "a1 OK STORE completed")
    c.expect("a2 NOOP", "a2 OK NOOP completed")


def test_expunge_waits_during_fetch_store_search_rfc9051_7_5_1() -> None:
    store = store_with_mail()
    a = connect(store, select="INBOX")
    b = connect(store, select="INBOX")
    a.untagged("x1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.untagged("x2 EXPUNGE")
    b.expect("y1 FETCH 2 (UID)", "* 2 FETCH (UID 2)", "y1 OK FETCH completed")
    b.expect("y2 STORE 3 +FLAGS.SILENT (\\Seen)", "y2 OK STORE completed")
    b.expect("y3 SEARCH ALL", "* SEARCH 2 3", "y3 OK SEARCH completed")
    b.expect("y4 NOOP", "* 1 EXPUNGE", "y4 OK NOOP completed")
    b.expect("y5 SEARCH ALL", "* SEARCH 1 2", "y5 OK SEARCH completed")


def test_uid_commands_may_announce_expunges_rfc9051_7_5_1() -> None:
    store = store_with_mail()
    a = connect(store, select="INBOX")
    b = connect(store, select="INBOX")
    a.untagged("x1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.untagged("x2 EXPUNGE")
    b.expect("y1 UID FETCH 2 (FLAGS)", "* 2 FETCH (UID 2 FLAGS ())", "* 1 EXPUNGE",
             "y1 OK UID FETCH completed")


def test_mailbox_of_another_account_is_not_watched() -> None:
    store = store_with_mail()
    c = connect(store, select="INBOX")
    store.deliver("bob", SHORT)
    c.expect("a1 NOOP", "a1 OK NOOP completed")


def test_a_refused_select_keeps_the_selection() -> None:
    """A SELECT answered BAD was not run (RFC 9051 7.1.3): the mailbox stays
    selected. It used to be dropped while the state stayed "selected", and
    the next command for the selected state crashed (found by the fuzzer)."""
    c = connect(select="INBOX")
    c.expect("a1 SELECT INBOX (QRESYNC (1 1 1:9))", "a1 BAD QRESYNC is not enabled")
    c.expect("a2 UID EXPUNGE 3", "a2 OK UID EXPUNGE completed")
    c.expect("a3 FETCH 1 (UID)", "* 1 FETCH (UID 1)", "a3 OK FETCH completed")


def test_expunge_removes_only_deleted_messages_the_session_was_told_of_rfc9051_6_4_3() -> None:
    """EXPUNGE finds the \\Deleted messages among those this session has
    announced: one delivered \\Deleted meanwhile is first announced (EXISTS
    after the EXPUNGE responses), and goes at the next EXPUNGE, by then
    under the sequence number the client knows it by."""
    store = store_with_mail()
    c = connect(store, select="INBOX")
    c.untagged("a1 STORE 2 +FLAGS.SILENT (\\Deleted)")
    store.deliver("alice", SHORT, flags=("\\Deleted",))
    c.expect("a2 EXPUNGE", "* 2 EXPUNGE", "* 3 EXISTS", "* 3 RECENT", "a2 OK EXPUNGE completed")
    assert sorted(store.find("alice", "INBOX").messages) == [1, 3, 4]
    c.expect("a3 EXPUNGE", "* 3 EXPUNGE", "a3 OK EXPUNGE completed")
    c.expect("a4 FETCH 1:* (UID)", "* 1 FETCH (UID 1)", "* 2 FETCH (UID 3)", "a4 OK FETCH completed")


def test_a_select_whose_read_fails_holds_no_expunged_messages_rfc2180_4_1_1(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SELECT holds what is expunged from its snapshot on, so every message
    of the view stays readable until announced. When its read fails (NO),
    no mailbox is selected and nothing is held: a message another session
    expunges goes at once."""
    store = store_with_mail()
    b = connect(store, select="INBOX")

    async def failing(self: MemoryBackend, mailbox: MailboxRecord) -> object:
        raise BackendError("disk error")

    summary = MemoryBackend.mailbox_summary
    monkeypatch.setattr(MemoryBackend, "mailbox_summary", failing)
    a = connect(store)
    a.expect("a1 SELECT INBOX", "a1 NO disk error")
    monkeypatch.setattr(MemoryBackend, "mailbox_summary", summary)
    b.untagged("b1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.untagged("b2 EXPUNGE")
    assert a.session.backend not in store.held_by
    assert store.find("alice", "INBOX").held == {}


def test_a_qresync_select_does_not_call_a_message_of_its_view_vanished_rfc7162_3_2_5_1(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An expunge committed after SELECT's snapshot and before its QRESYNC
    read of the changes: the message is counted in EXISTS, so it is not
    reported as VANISHED (EARLIER), as if gone before this SELECT; the next
    command announces its expunge."""
    store = store_with_mail()
    b = connect(store, select="INBOX")
    summary = MemoryBackend.mailbox_summary

    async def racing(self: MemoryBackend, mailbox: MailboxRecord) -> object:
        out = await summary(self, mailbox)
        if self is not b.session.backend:
            b.untagged("b1 STORE 1 +FLAGS.SILENT (\\Deleted)")
            b.untagged("b2 EXPUNGE")
        return out

    monkeypatch.setattr(MemoryBackend, "mailbox_summary", racing)
    a = connect(store, enable="QRESYNC")
    lines = a.untagged("a1 SELECT INBOX (QRESYNC (1 1))")
    assert b"* 3 EXISTS" in lines
    assert not any(line.startswith(b"* VANISHED") for line in lines), lines
    a.expect("a2 NOOP", "* VANISHED 1", "a2 OK NOOP completed")


def test_a_connection_closed_during_select_leaves_no_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 2180 4.1.1 holds keep expunged messages for sessions that may
    still name them; a session whose connection went while SELECT read its
    snapshot names nothing, and its hold would keep the rows for good."""
    store = store_with_mail()
    summary = MemoryBackend.mailbox_summary
    holder: dict[str, object] = {}

    async def closing(self: MemoryBackend, mailbox: MailboxRecord) -> object:
        out = await summary(self, mailbox)
        holder["a"].session.close()  # type: ignore[attr-defined]  # connection_lost meanwhile
        return out

    a = connect(store)
    holder["a"] = a
    monkeypatch.setattr(MemoryBackend, "mailbox_summary", closing)
    a.untagged("a1 SELECT INBOX")
    assert a.session.backend not in store.held_by
