"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 section 4): live results kept
up to date with ADDTO / REMOVEFROM as this and other sessions change the
mailbox; CANCELUPDATE, NOUPDATE; and the PARTIAL UID FETCH modifier (RFC
9394 3.3). Byte for byte over the in-memory backend, two sessions."""

from __future__ import annotations

from mailyard.protocols.imap.contexts import MAX_CONTEXTS, _keep_gone

from .helpers import SHORT, connect, store_with_mail


def _pair():  # noqa: ANN202
    """Session a (IMAP4rev2: no \\Recent) keeps contexts; b changes the mailbox.
    INBOX: 1 \\Seen, 2 and 3 unseen."""
    store = store_with_mail()
    a = connect(store, select="INBOX", enable="IMAP4rev2")
    b = connect(store, select="INBOX", enable="IMAP4rev2")
    return store, a, b


def test_search_context_rfc5267_4_3() -> None:
    store, a, b = _pair()
    # 4.3: UPDATE alone answers as RETURN () would (ALL), then keeps the result live
    a.expect("B01 UID SEARCH RETURN (UPDATE) UNSEEN", '* ESEARCH (TAG "B01") UID ALL 2:3',
             "B01 OK UID SEARCH completed")
    # another session's flag change takes a message out of the result
    b.untagged("x1 STORE 2 +FLAGS.SILENT (\\Seen)")
    a.expect("a1 NOOP", "* 2 FETCH (UID 2 FLAGS (\\Seen))", '* ESEARCH (TAG "B01") UID REMOVEFROM (0 2)',
             "a1 OK NOOP completed")
    # 4.3.3: a new message that matches: ADDTO after the EXISTS
    store.deliver("alice", SHORT)
    store.deliver("alice", SHORT)
    a.expect("a2 NOOP", "* 5 EXISTS", '* ESEARCH (TAG "B01") UID ADDTO (0 4:5)', "a2 OK NOOP completed")
    # the session's own STORE counts too, with its own FETCH
    a.expect("a3 STORE 1 -FLAGS (\\Seen)", "* 1 FETCH (FLAGS ())", '* ESEARCH (TAG "B01") UID ADDTO (0 1)',
             "a3 OK STORE completed")
    # 4.3.4: an expunge elsewhere: REMOVEFROM before the EXPUNGE
    b.untagged("x2 STORE 3 +FLAGS.SILENT (\\Deleted)")
    b.untagged("x3 EXPUNGE")
    a.expect("a4 NOOP", '* ESEARCH (TAG "B01") UID REMOVEFROM (0 3)', "* 3 EXPUNGE", "a4 OK NOOP completed")
    # a change that does not alter the result sends nothing for the context
    b.untagged("x4 STORE 1 +FLAGS.SILENT (\\Flagged)")
    a.expect("a5 NOOP", "* 1 FETCH (UID 1 FLAGS (\\Flagged))", "a5 OK NOOP completed")


def test_message_number_context_and_held_expunges() -> None:
    store, a, b = _pair()
    a.expect("B01 SEARCH RETURN (UPDATE COUNT) ALL", '* ESEARCH (TAG "B01") COUNT 3', "B01 OK SEARCH completed")
    b.untagged("x1 STORE 2 +FLAGS.SILENT (\\Deleted)")
    b.untagged("x2 EXPUNGE")
    # FETCH may not announce the expunge (RFC 9051 7.5.1): the context keeps
    # the message until then, and its REMOVEFROM goes with the EXPUNGE
    a.expect("a1 FETCH 1 (FLAGS)", "* 1 FETCH (FLAGS (\\Seen))", "a1 OK FETCH completed")
    a.expect("a2 NOOP", '* ESEARCH (TAG "B01") REMOVEFROM (0 2)', "* 2 EXPUNGE", "a2 OK NOOP completed")
    # the session's own EXPUNGE: the number before the expunge, then EXPUNGE
    a.untagged("a3 STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.expect("a4 EXPUNGE", '* ESEARCH (TAG "B01") REMOVEFROM (0 1)', "* 1 EXPUNGE", "a4 OK EXPUNGE completed")
    store.deliver("alice", SHORT)
    a.expect("a5 NOOP", "* 2 EXISTS", '* ESEARCH (TAG "B01") ADDTO (0 2)', "a5 OK NOOP completed")


def test_sort_context_positions_rfc5267_4_3_3() -> None:
    store, a, b = _pair()
    # sizes: 3 SHORT (smallest), 1 PLAIN, 2 MULTIPART (largest)
    a.expect("C01 UID SORT RETURN (UPDATE) (SIZE) UTF-8 ALL", '* ESEARCH (TAG "C01") UID ALL 3,1:2',
             "C01 OK UID SORT completed")
    a.expect("C02 SORT RETURN (UPDATE MIN) (REVERSE SIZE) UTF-8 UNSEEN", '* ESEARCH (TAG "C02") MIN 2',
             "C02 OK SORT completed")
    # two SHORT messages more: the same size as 3, after it (ties in mailbox order)
    store.deliver("alice", SHORT)
    store.deliver("alice", SHORT)
    a.expect("a1 NOOP", "* 5 EXISTS", '* ESEARCH (TAG "C01") UID ADDTO (2 4:5)',
             '* ESEARCH (TAG "C02") ADDTO (3 4:5)', "a1 OK NOOP completed")
    # C02 is 2,3,4,5 now; 3 leaves it (position 2), and 1 enters it second
    b.untagged("x1 STORE 3 +FLAGS.SILENT (\\Seen)")
    b.untagged("x2 STORE 1 -FLAGS.SILENT (\\Seen)")
    a.expect("a2 NOOP", "* 1 FETCH (UID 1 FLAGS ())", "* 3 FETCH (UID 3 FLAGS (\\Seen))",
             '* ESEARCH (TAG "C02") REMOVEFROM (2 3) ADDTO (2 1)', "a2 OK NOOP completed")
    # removals of several runs: each pair numbered as the earlier ones left the list
    b.untagged("x3 STORE 3,5 +FLAGS.SILENT (\\Deleted)")
    b.untagged("x4 EXPUNGE")
    a.expect("a3 NOOP", '* ESEARCH (TAG "C01") UID REMOVEFROM (1 3 2 5)', '* ESEARCH (TAG "C02") REMOVEFROM (4 5)',
             "* 3 EXPUNGE", "* 4 EXPUNGE", "a3 OK NOOP completed")


def test_update_does_not_interact_with_partial_rfc5267_4_4() -> None:
    store, a, _b = _pair()
    # PARTIAL returns one page; the updates cover every matching message
    a.expect("A01 UID SEARCH RETURN (UPDATE PARTIAL 1:1) ALL", '* ESEARCH (TAG "A01") UID PARTIAL (1:1 1)',
             "A01 OK UID SEARCH completed")
    a.expect("A02 SEARCH RETURN (CONTEXT COUNT) ALL", '* ESEARCH (TAG "A02") COUNT 3', "A02 OK SEARCH completed")
    store.deliver("alice", SHORT)
    a.expect("a1 NOOP", "* 4 EXISTS", '* ESEARCH (TAG "A01") UID ADDTO (0 4)', "a1 OK NOOP completed")


def test_noupdate_cancelupdate_and_tag_reuse_rfc5267_4_3_1_and_4_3_5() -> None:
    store, a, _b = _pair()
    for i in range(MAX_CONTEXTS):
        a.untagged(f"B{i} SEARCH RETURN (UPDATE COUNT) ALL")
    # 4.3.1: the other return options are answered; the UPDATE is refused
    a.expect("B99 UID SEARCH RETURN (UPDATE COUNT) ALL", '* ESEARCH (TAG "B99") UID COUNT 3',
             '* NO [NOUPDATE "B99"] Too many contexts', "B99 OK UID SEARCH completed")
    # 4.3: a tag already naming a live context is BAD with UPDATE
    a.expect("B0 SORT RETURN (UPDATE) (SIZE) UTF-8 ALL",
             "B0 BAD Tag reuse: a context with this tag is being updated")
    # 4.3.5: CANCELUPDATE of several; an unknown tag is BAD and cancels none
    a.expect('B04 CANCELUPDATE "B1" "nope"', "B04 BAD No context is being updated for tag nope")
    a.expect('B05 CANCELUPDATE "B0" "B1"', "B05 OK CANCELUPDATE completed")
    a.expect('B06 CANCELUPDATE "B0"', "B06 BAD No context is being updated for tag B0")
    a.expect("B07 CANCELUPDATE", "B07 BAD Syntax error: expected SP")
    store.deliver("alice", SHORT)
    lines = a.untagged("a1 NOOP")
    assert lines[0] == b"* 4 EXISTS"
    assert [x for x in lines if b'"B0"' in x or b'"B1"' in x] == []
    assert len(lines) == 1 + MAX_CONTEXTS - 2
    # updates end when the mailbox is no longer selected (4.3)
    a.untagged("a2 SELECT INBOX")
    store.deliver("alice", SHORT)
    a.expect("a3 NOOP", "* 5 EXISTS", "a3 OK NOOP completed")
    a.expect('a4 CANCELUPDATE "B2"', "a4 BAD No context is being updated for tag B2")
    a.untagged("a5 UNSELECT")
    a.expect('a6 CANCELUPDATE "B2"', "a6 BAD CANCELUPDATE is not valid in the authenticated state")


def test_updates_during_idle() -> None:
    store, a, b = _pair()
    a.untagged("B01 UID SEARCH RETURN (UPDATE) UNSEEN")
    a.expect("x1 IDLE", "+ idling")
    store.deliver("alice", SHORT)
    assert a.poll() == b'* 4 EXISTS\r\n* ESEARCH (TAG "B01") UID ADDTO (0 4)\r\n'
    b.untagged("y1 STORE 2 +FLAGS.SILENT (\\Seen)")
    assert a.poll() == b'* 2 FETCH (UID 2 FLAGS (\\Seen))\r\n* ESEARCH (TAG "B01") UID REMOVEFROM (0 2)\r\n'
    a.expect("DONE", "x1 OK IDLE terminated")


def test_body_and_header_keys_are_answered_by_the_indexes() -> None:
    store, a, b = _pair()
    a.expect("B01 UID SEARCH RETURN (UPDATE) SUBJECT short UNSEEN", '* ESEARCH (TAG "B01") UID ALL 3',
             "B01 OK UID SEARCH completed")
    a.expect("B02 UID SEARCH RETURN (UPDATE) TEXT bob", '* ESEARCH (TAG "B02") UID ALL 3',
             "B02 OK UID SEARCH completed")
    store.deliver("alice", SHORT)
    store.deliver("alice", b"From: x@example.test\r\nSubject: other\r\n\r\nnothing\r\n")
    a.expect("a1 NOOP", "* 5 EXISTS", '* ESEARCH (TAG "B01") UID ADDTO (0 4)',
             '* ESEARCH (TAG "B02") UID ADDTO (0 4)', "a1 OK NOOP completed")
    b.untagged("x0 NOOP")
    b.untagged("x1 STORE 3:5 +FLAGS.SILENT (\\Seen)")
    a.expect("a2 NOOP", "* 3 FETCH (UID 3 FLAGS (\\Seen))", "* 4 FETCH (UID 4 FLAGS (\\Seen))",
             "* 5 FETCH (UID 5 FLAGS (\\Seen))", '* ESEARCH (TAG "B01") UID REMOVEFROM (0 3:4)',
             "a2 OK NOOP completed")


def test_keep_gone_keeps_unannounced_expunges_in_place() -> None:
    assert _keep_gone([3, 4], [4]) == [3, 4]
    assert _keep_gone([1, 9, 2], [5, 1, 2]) == [5, 1, 9, 2]
    assert _keep_gone([1, 2], [1, 2, 3]) == [1, 2, 3]


def test_uid_fetch_partial_rfc9394_3_3() -> None:
    store, a, _b = _pair()
    store.deliver("alice", SHORT)
    a.untagged("a0 NOOP")
    # the last three of the messages the UID set names, in mailbox order
    a.expect("10 UID FETCH 1:* (FLAGS) (PARTIAL -1:-3)", "* 2 FETCH (UID 2 FLAGS ())",
             "* 3 FETCH (UID 3 FLAGS ())", "* 4 FETCH (UID 4 FLAGS ())", "10 OK UID FETCH completed")
    a.expect("11 UID FETCH 2:* (FLAGS) (PARTIAL 1:2)", "* 2 FETCH (UID 2 FLAGS ())",
             "* 3 FETCH (UID 3 FLAGS ())", "11 OK UID FETCH completed")
    a.expect("12 UID FETCH 1:* (FLAGS) (PARTIAL 7:9)", "12 OK UID FETCH completed")
    # with CHANGEDSINCE: the range counts the changed messages (RFC 9394 3.4)
    a.expect("13 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 PARTIAL 1:1)",
             "* OK [HIGHESTMODSEQ 4] Highest", "* 2 FETCH (UID 2 FLAGS () MODSEQ (2))",
             "13 OK UID FETCH completed")
    a.expect("14 FETCH 1:* (FLAGS) (PARTIAL 1:2)", "14 BAD PARTIAL needs UID FETCH")
    a.expect("15 UID FETCH 1:* (FLAGS) (PARTIAL 0:2)", "15 BAD Syntax error: a PARTIAL range counts from 1")


def test_save_with_partial_rfc9394_3_2() -> None:
    store = store_with_mail()
    for _ in range(3):
        store.deliver("alice", SHORT)
    a = connect(store, select="INBOX", enable="IMAP4rev2")
    # PARTIAL alone: "$" is the part returned
    a.expect("s1 SEARCH RETURN (SAVE PARTIAL 2:3) ALL", '* ESEARCH (TAG "s1") PARTIAL (2:3 2:3)',
             "s1 OK SEARCH completed")
    a.expect("t1 SEARCH RETURN (ALL) $", '* ESEARCH (TAG "t1") ALL 2:3', "t1 OK SEARCH completed")
    # with MIN and MAX: the part together with the MIN and MAX messages
    a.expect("s2 SEARCH RETURN (SAVE MIN MAX PARTIAL 3:4) ALL", '* ESEARCH (TAG "s2") MIN 1 MAX 6 PARTIAL (3:4 3:4)',
             "s2 OK SEARCH completed")
    a.expect("t2 SEARCH RETURN (ALL) $", '* ESEARCH (TAG "t2") ALL 1,3:4,6', "t2 OK SEARCH completed")
    # with COUNT: every message found
    a.expect("s3 SEARCH RETURN (SAVE COUNT PARTIAL -1:-1) NOT 2", '* ESEARCH (TAG "s3") PARTIAL (-1:-1 6) COUNT 5',
             "s3 OK SEARCH completed")
    a.expect("t3 SEARCH RETURN (ALL) $", '* ESEARCH (TAG "t3") ALL 1,3:6', "t3 OK SEARCH completed")
    # SORT: MIN and MAX are the first and last in sort order (SIZE: 3..6 SHORT, then 1, 2)
    a.expect("s4 SORT RETURN (SAVE MAX PARTIAL 1:1) (SIZE) UTF-8 ALL", '* ESEARCH (TAG "s4") MAX 2 PARTIAL (1:1 3)',
             "s4 OK SORT completed")
    a.expect("t4 SEARCH RETURN (ALL) $", '* ESEARCH (TAG "t4") ALL 2:3', "t4 OK SEARCH completed")


def test_a_change_is_evaluated_on_the_messages_it_touched(monkeypatch) -> None:  # noqa: ANN001
    """A context is not re-run over the mailbox on each change: one flag
    change in 3,000 messages evaluates the program on that message only; a
    change of them all is evaluated through ImapIO.compute."""
    from mailyard.protocols.imap import contexts

    store = store_with_mail(*[SHORT] * 3000, seen_first=False)
    a = connect(store, select="INBOX", enable="IMAP4rev2")
    b = connect(store, select="INBOX", enable="IMAP4rev2")
    a.untagged("B01 UID SEARCH RETURN (UPDATE COUNT) UNSEEN")
    calls = []
    real = contexts.sr.matches
    monkeypatch.setattr(contexts.sr, "matches", lambda key, m, ctx: calls.append(m.uid) or real(key, m, ctx))
    b.untagged("x1 STORE 1500 +FLAGS.SILENT (\\Seen)")
    a.expect("a1 NOOP", "* 1500 FETCH (UID 1500 FLAGS (\\Seen))", '* ESEARCH (TAG "B01") UID REMOVEFROM (0 1500)',
             "a1 OK NOOP completed")
    assert set(calls) == {1500}
    # a change of every message is evaluated off the event loop (ImapIO.compute)
    before = a.conv.computed
    b.untagged("x2 STORE 1:* +FLAGS.SILENT (\\Seen)")
    lines = a.untagged("a2 NOOP")
    assert lines[-1] == b'* ESEARCH (TAG "B01") UID REMOVEFROM (0 1:1499,1501:3000)'
    assert a.conv.computed == before + 1
