"""SEARCH by flags (RFC 9051 6.4.4 SEEN/UNSEEN/FLAGGED/KEYWORD ..., rev1's
RECENT/NEW/OLD) byte for byte, and answered over the whole mailbox at once
(search.evaluate_program over the session's flags) rather than by evaluating each
message: SEARCH UNSEEN on a mailbox of 200,000 messages (bench/scale.py)."""

from __future__ import annotations

import pytest

from mailyard.protocols.imap import search as sr

from .helpers import SHORT, connect, store_with_mail


def _mailbox():  # noqa: ANN202
    """Eight messages: 1 \\Seen, 2 -, 3 \\Seen \\Flagged, 4 $Work, 5 \\Seen $work,
    6 \\Deleted, 7 \\Seen \\Answered, 8 -."""
    store = store_with_mail(*([SHORT] * 8), seen_first=False)
    c = connect(store, select="INBOX")
    for seqs, flags in (("1,3,5,7", "\\Seen"), ("3", "\\Flagged"), ("4", "$Work"), ("5", "$work"),
                        ("6", "\\Deleted"), ("7", "\\Answered")):
        c.untagged(f"s STORE {seqs} +FLAGS.SILENT ({flags})")
    return store, c


def test_flag_keys_byte_for_byte() -> None:
    _, c = _mailbox()
    c.expect("a1 SEARCH UNSEEN", "* SEARCH 2 4 6 8", "a1 OK SEARCH completed")
    c.expect("a2 SEARCH SEEN FLAGGED", "* SEARCH 3", "a2 OK SEARCH completed")
    c.expect("a3 SEARCH KEYWORD $WORK", "* SEARCH 4 5", "a3 OK SEARCH completed")
    c.expect("a4 SEARCH OR DELETED ANSWERED", "* SEARCH 6 7", "a4 OK SEARCH completed")
    c.expect("a5 UID SEARCH UNDELETED UNSEEN", "* SEARCH 2 4 8", "a5 OK UID SEARCH completed")
    c.expect("a6 SEARCH NOT KEYWORD $Work UNFLAGGED SEEN", "* SEARCH 1 7", "a6 OK SEARCH completed")
    c.expect("a7 SEARCH UNSEEN SUBJECT short", "* SEARCH 2 4 6 8", "a7 OK SEARCH completed")
    c.expect("a8 SEARCH RETURN (COUNT MIN) UNSEEN", '* ESEARCH (TAG "a8") MIN 2 COUNT 4',
             "a8 OK SEARCH completed")


def test_recent_stays_a_session_flag() -> None:
    """\\Recent is this session's (RFC 3501 2.3.2): NEW = RECENT UNSEEN."""
    _, c = _mailbox()
    c.expect("a1 SEARCH NEW", "* SEARCH 2 4 6 8", "a1 OK SEARCH completed")
    c.expect("a2 SEARCH OLD", "* SEARCH", "a2 OK SEARCH completed")
    other = connect(_mailbox()[0], select="INBOX")
    other.expect("b1 SEARCH RECENT", "* SEARCH", "b1 OK SEARCH completed")


def test_flag_keys_are_not_evaluated_message_by_message(monkeypatch: pytest.MonkeyPatch) -> None:
    _, c = _mailbox()
    calls = []
    matches = sr.matches
    monkeypatch.setattr(sr, "matches", lambda *args: calls.append(args) or matches(*args))
    c.expect("a1 SEARCH UNSEEN UNDELETED", "* SEARCH 2 4 8", "a1 OK SEARCH completed")
    c.expect("a2 SEARCH KEYWORD $work", "* SEARCH 4 5", "a2 OK SEARCH completed")
    assert calls == []
    c.expect("a3 SEARCH NEW", "* SEARCH 2 4 6 8", "a3 OK SEARCH completed")
    assert calls  # \\Recent: per message
