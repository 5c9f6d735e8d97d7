"""IDLE (RFC 2177): changes announced while idling, DONE, a wrong line, the
end of input; and the session's watch on the backend."""

from __future__ import annotations

from .helpers import SHORT, connect, store_with_mail


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
