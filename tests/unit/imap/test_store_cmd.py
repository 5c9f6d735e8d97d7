"""STORE and UID STORE, byte for byte (RFC 9051 6.4.6, 2.3.2 flag rules;
RFC 7162 3.1.3 UNCHANGEDSINCE / MODIFIED)."""

from __future__ import annotations

from .helpers import connect, store_with_mail


def test_add_remove_replace_rfc9051_6_4_6() -> None:
    c = connect(select="INBOX")
    c.expect("a1 STORE 1 -FLAGS (\\Seen)", "* 1 FETCH (FLAGS (\\Recent))", "a1 OK STORE completed")
    c.expect("a2 STORE 1:2 +FLAGS (\\Deleted $Work)",
             "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)",  # RFC 9051 7.3.5: a new keyword
             "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)] Flags permitted",
             "* 1 FETCH (FLAGS (\\Deleted \\Recent $Work))",
             "* 2 FETCH (FLAGS (\\Deleted \\Recent $Work))", "a2 OK STORE completed")
    # replace; system flags in their canonical spelling
    c.expect("a3 STORE 2 FLAGS (\\flagged $x)", "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work $x)",
             "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work $x \\*)] Flags permitted",
             "* 2 FETCH (FLAGS (\\Flagged \\Recent $x))", "a3 OK STORE completed")


def test_silent_and_unchanged_messages_still_reported() -> None:
    c = connect(select="INBOX")
    c.expect("a1 STORE 1:3 +FLAGS.SILENT (\\Seen)", "a1 OK STORE completed")
    # RFC 9051 6.4.6: without .SILENT every message of the set, changed or not
    c.expect("a2 STORE 1,3 +FLAGS (\\Seen)", "* 1 FETCH (FLAGS (\\Seen \\Recent))",
             "* 3 FETCH (FLAGS (\\Seen \\Recent))", "a2 OK STORE completed")


def test_uid_store_carries_uid() -> None:
    c = connect(select="INBOX", enable="IMAP4rev2")
    c.expect("a1 UID STORE 2:3 +FLAGS (\\Answered)", "* 2 FETCH (UID 2 FLAGS (\\Answered))",
             "* 3 FETCH (UID 3 FLAGS (\\Answered))", "a1 OK UID STORE completed")
    c.expect("a2 UID STORE 7 +FLAGS (\\Answered)", "a2 OK UID STORE completed")


def test_recent_and_unknown_system_flags_are_refused_rfc9051_2_3_2() -> None:
    c = connect(select="INBOX")
    c.expect("a1 STORE 1 +FLAGS (\\Recent)", "a1 BAD flag \\Recent cannot be set")
    c.expect("a2 STORE 1 +FLAGS (\\Foo)", "a2 BAD flag \\Foo cannot be set")


def test_unchangedsince_rfc7162_3_1_3() -> None:
    c = connect(select="INBOX")
    c.untagged("a0 STORE 1:2 +FLAGS.SILENT ($x)")
    c.expect("a1 STORE 1 (UNCHANGEDSINCE 1) +FLAGS (\\Answered)", "* OK [HIGHESTMODSEQ 4] Highest",
             "a1 OK [MODIFIED 1] STORE completed")
    # MODSEQ is reported even with .SILENT once CONDSTORE is on
    c.expect("a2 UID STORE 1:3 (UNCHANGEDSINCE 3) +FLAGS.SILENT (\\Answered)", "* 3 FETCH (UID 3 MODSEQ (5))",
             "a2 OK [MODIFIED 1:2] UID STORE completed")
    c.expect("a3 STORE 3 +FLAGS (\\Draft)", "* 3 FETCH (FLAGS (\\Answered \\Draft \\Recent) MODSEQ (6))",
             "a3 OK STORE completed")


def test_store_in_another_session_is_an_unsolicited_fetch_rfc9051_7_5_2() -> None:
    store = store_with_mail()
    a = connect(store, select="INBOX", enable="IMAP4rev2")
    b = connect(store, select="INBOX", enable="IMAP4rev2")
    a.untagged("x1 STORE 3 +FLAGS.SILENT (\\Flagged)")
    b.expect("y1 NOOP", "* 3 FETCH (UID 3 FLAGS (\\Flagged))", "y1 OK NOOP completed")


def test_read_only_and_bad_sequence() -> None:
    c = connect()
    c.untagged("a0 EXAMINE INBOX")
    c.expect("a1 STORE 1 +FLAGS (\\Seen)", "a1 NO [READ-ONLY] Mailbox is read-only")
    c.expect("a2 STORE 9 +FLAGS (\\Seen)", "a2 BAD Invalid message sequence number")


def test_store_on_a_full_disk_is_no() -> None:
    store = store_with_mail()
    c = connect(store, select="INBOX")
    store.full = True
    c.expect("a1 STORE 2 +FLAGS (\\Seen)", "a1 NO the disk is full")
