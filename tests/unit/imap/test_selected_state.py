"""The selected mailbox under other sessions' changes: \\Recent shares
(RFC 3501 2.3.2), new keywords in FLAGS (RFC 9051 7.3.5), CONDSTORE enabled
while selected (RFC 7162 3.1), FETCH of messages expunged elsewhere (RFC 2180 4.1)."""

from __future__ import annotations

from mailyard.protocols.imap.memory import MemoryBackend

from .helpers import MULTIPART, SHORT, USER, connect, store_with_mail


def test_recent_claim_stops_at_what_the_session_announced_rfc3501_2_3_2() -> None:
    store = store_with_mail()
    a = connect(store, select="INBOX")  # takes 1:3
    b = connect(store, select="INBOX")
    backend = a.session.backend
    assert isinstance(backend, MemoryBackend)
    real = backend.changes_since
    delivered: list[int] = []

    async def racing_changes_since(mailbox, modseq):  # noqa: ANN001, ANN202
        changes = await real(mailbox, modseq)
        if not delivered:
            # a delivery commits after a's look at the mailbox and before its claim
            delivered.append(store.deliver(USER, SHORT))
        return changes

    backend.changes_since = racing_changes_since  # type: ignore[method-assign]
    store.deliver(USER, SHORT)  # UID 4
    a.expect("a1 NOOP", "* 4 EXISTS", "* 4 RECENT", "a1 OK NOOP completed")
    # UID 5 was not announced to a: it stays \Recent for the next session told of it
    b.expect("b1 NOOP", "* 5 EXISTS", "* 1 RECENT", "b1 OK NOOP completed")
    b.expect("b2 FETCH 4:5 (FLAGS)", "* 4 FETCH (FLAGS ())", "* 5 FETCH (FLAGS (\\Recent))", "b2 OK FETCH completed")
    a.expect("a2 NOOP", "* 5 EXISTS", "* 4 RECENT", "a2 OK NOOP completed")
    a.expect("a3 FETCH 4:5 (FLAGS)", "* 4 FETCH (FLAGS (\\Recent))", "* 5 FETCH (FLAGS ())", "a3 OK FETCH completed")
    c = connect(store)
    c.expect("c1 STATUS INBOX (RECENT)", "* STATUS \"INBOX\" (RECENT 0)", "c1 OK STATUS completed")


def test_condstore_enabled_while_selected_reports_highestmodseq_rfc7162_3_1() -> None:
    store = store_with_mail()
    c = connect(store, select="INBOX")
    c.untagged("a1 STORE 2 +FLAGS.SILENT (\\Flagged)")  # modseq 4
    # the first CONDSTORE enabling command while selected: OK [HIGHESTMODSEQ], once
    c.expect("a2 FETCH 1 (MODSEQ)", "* OK [HIGHESTMODSEQ 4] Highest", "* 1 FETCH (MODSEQ (1))",
             "a2 OK FETCH completed")
    c.expect("a3 FETCH 2 (MODSEQ)", "* 2 FETCH (MODSEQ (4))", "a3 OK FETCH completed")
    # the connection stays CONDSTORE-aware: a later SELECT reports HIGHESTMODSEQ
    assert b"* OK [HIGHESTMODSEQ 4] Highest" in c.untagged("a4 SELECT INBOX")
    for command in ("SEARCH MODSEQ 1", "STORE 1 (UNCHANGEDSINCE 9) +FLAGS.SILENT (\\Answered)",
                    "FETCH 1 (FLAGS) (CHANGEDSINCE 1)", "STATUS INBOX (HIGHESTMODSEQ)"):
        other = connect(store, select="INBOX")
        lines = other.untagged("b1 " + command)
        assert lines[0].startswith(b"* OK [HIGHESTMODSEQ "), (command, lines)
        assert b"* OK [HIGHESTMODSEQ" not in b"".join(other.untagged("b2 " + command)), command


def test_esearch_min_max_modseq_is_that_of_the_message_rfc7162_3_1_5() -> None:
    c = connect(select="INBOX")
    c.untagged("a1 STORE 2 +FLAGS.SILENT (\\Flagged)")  # 2 gets modseq 4; 1 and 3 keep 1 and 3
    c.untagged("a2 FETCH 1 (MODSEQ)")
    c.expect("a3 SEARCH RETURN (MIN) MODSEQ 1", '* ESEARCH (TAG "a3") MIN 1 MODSEQ 1', "a3 OK SEARCH completed")
    c.expect("a4 SEARCH RETURN (MAX) MODSEQ 1", '* ESEARCH (TAG "a4") MAX 3 MODSEQ 3', "a4 OK SEARCH completed")
    c.expect("a5 UID SEARCH RETURN (MIN MAX) 1:3 MODSEQ 1", '* ESEARCH (TAG "a5") UID MIN 1 MAX 3 MODSEQ 3',
             "a5 OK UID SEARCH completed")
    # ALL and COUNT: the highest of every hit
    c.expect("a6 SEARCH RETURN (MAX COUNT) MODSEQ 1", '* ESEARCH (TAG "a6") MAX 3 COUNT 3 MODSEQ 4',
             "a6 OK SEARCH completed")
    c.expect("a7 SEARCH RETURN (ALL) MODSEQ 1", '* ESEARCH (TAG "a7") ALL 1:3 MODSEQ 4', "a7 OK SEARCH completed")


FLAGS_WORK = "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)"
PERMANENT_WORK = "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)] Flags permitted"


def test_new_keyword_from_another_session_comes_with_flags_rfc9051_7_3_5() -> None:
    store = store_with_mail()
    a = connect(store, select="INBOX")
    b = connect(store, select="INBOX")
    e = connect(store)
    e.untagged("e1 EXAMINE INBOX")
    a.untagged("a1 STORE 2 +FLAGS.SILENT ($Work)")
    # FETCH before the change was announced: FLAGS first, then the keyword
    b.expect("b1 FETCH 2 (FLAGS)", FLAGS_WORK, PERMANENT_WORK, "* 2 FETCH (FLAGS ($Work))",
             "* 2 FETCH (UID 2 FLAGS ($Work))", "b1 OK FETCH completed")
    b.expect("b2 NOOP", "b2 OK NOOP completed")  # told once
    # before an unsolicited FETCH too; a read-only session still may not set any
    e.expect("e2 NOOP", FLAGS_WORK, "* OK [PERMANENTFLAGS ()] No permanent flags permitted",
             "* 2 FETCH (UID 2 FLAGS ($Work))", "e2 OK NOOP completed")


def test_new_keyword_by_append_and_copy_into_the_selected_mailbox_rfc9051_7_3_5() -> None:
    store = store_with_mail()
    store.deliver(USER, SHORT, mailbox="Drafts", flags=("$Todo",))
    a = connect(store, select="INBOX")
    a.expect("a1 APPEND INBOX ($Work) {2+}\r\nhi", "* 4 EXISTS", "* 4 RECENT", FLAGS_WORK, PERMANENT_WORK,
             "a1 OK [APPENDUID 1 4] APPEND completed")
    b = connect(store, select="Drafts")
    b.untagged("b1 COPY 1 INBOX")
    a.expect("a2 NOOP", "* 5 EXISTS", "* 5 RECENT", "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Todo $Work)",
             "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Todo $Work \\*)] Flags permitted",
             "a2 OK NOOP completed")
    a.expect("a3 FETCH 5 (FLAGS)", "* 5 FETCH (FLAGS (\\Recent $Todo))", "a3 OK FETCH completed")


def test_fetch_and_store_of_messages_expunged_elsewhere_rfc2180_4_1_1_and_4_2_1() -> None:
    store = store_with_mail()
    a = connect(store, select="INBOX")
    b = connect(store, select="INBOX")
    b.untagged("y0 FETCH 1:* (FLAGS)")  # b's index data is loaded before the expunge
    c = connect(store, select="INBOX")  # c's is not
    a.untagged("x1 STORE 2:3 +FLAGS.SILENT (\\Deleted)")
    a.expect("x2 EXPUNGE", "* 2 EXPUNGE", "* 2 EXPUNGE", "x2 OK EXPUNGE completed")
    box = store.find(USER, "INBOX")
    assert box is not None and sorted(box.held) == [2, 3]  # b and c have not announced it
    for s in (b, c):
        s.expect("y1 FETCH 3 (FLAGS BODY.PEEK[])", f"* 3 FETCH (FLAGS (\\Deleted) BODY[] {{{len(SHORT)}}}\r\n"
                 + SHORT.decode() + ")", "y1 OK FETCH completed")
        s.expect("y2 FETCH 2 (RFC822.SIZE)", f"* 2 FETCH (RFC822.SIZE {len(MULTIPART)})", "y2 OK FETCH completed")
    # RFC 2180 4.2.1: the STORE of the others happens, expunged ones keep their flags, OK
    b.expect("y3 STORE 1:3 +FLAGS (\\Answered)", "* 1 FETCH (FLAGS (\\Answered \\Seen))", "y3 OK STORE completed")
    assert sorted(box.held) == [2, 3]
    # UID FETCH serves every UID the session knows, then announces the expunges
    served = ["* 1 FETCH (UID 1 FLAGS (\\Answered \\Seen))", "* 2 FETCH (UID 2 FLAGS (\\Deleted))",
              "* 3 FETCH (UID 3 FLAGS (\\Deleted))", "* 2 EXPUNGE", "* 2 EXPUNGE"]
    b.expect("y4 UID FETCH 1:* (FLAGS)", *served, "y4 OK UID FETCH completed")
    assert sorted(box.held) == [2, 3]  # c still holds them
    # (c is also told of b's flag change, as after any command)
    c.expect("y4 UID FETCH 1:* (FLAGS)", *served, "* 1 FETCH (UID 1 FLAGS (\\Answered \\Seen))",
             "y4 OK UID FETCH completed")
    assert box.held == {}  # every holder announced it: nothing kept


def test_recent_uids_agree_with_a_plain_set_over_many_claims() -> None:
    """RecentUids (ranges, bisected) answers membership and counts as the
    set of the UIDs it was handed does: claims in order, touching ones that
    merge, an out-of-order one, over a plain list and over UidRuns views."""
    import random

    from mailyard.protocols.imap.flags import RecentUids
    from mailyard.protocols.imap.selected import UidRuns

    rng = random.Random(3501)
    recent, plain = RecentUids(), set()
    top = 0
    for _ in range(300):
        above = top + rng.choice((0, 0, 1, 3))  # touching the last claim, or after a gap
        upto = above + rng.randint(0, 4)
        recent.add(above, upto)
        plain.update(range(above + 1, upto + 1))
        top = max(top, upto)
    recent.add(5, 9)  # out of order: overlaps earlier claims
    plain.update(range(6, 10))
    assert all((uid in recent) == (uid in plain) for uid in range(top + 3))
    for _ in range(20):
        view = sorted(rng.sample(range(1, top + 3), 200))
        want = sum(1 for uid in view if uid in plain)
        assert recent.count(view) == want
        assert recent.count(UidRuns(view)) == want
    assert len(recent.ranges) < 300  # touching claims were merged


def test_fetch_of_a_message_announced_before_its_notification_arrived() -> None:
    """A commit the end-of-command sync reads before its notification reaches
    the session (another worker's datagram still in flight) puts a message in
    the view that the session's index-data cache has not loaded: a FETCH of
    it right after the EXISTS must answer with its data, not NO
    [EXPUNGEISSUED] (nothing was expunged; RFC 9051 7.4.1)."""
    store = store_with_mail()
    c = connect(store, select="INBOX")

    def silently(data: bytes) -> None:
        # committed, its notification not delivered yet
        listeners, store._listeners = store._listeners, []
        store.deliver(USER, data)
        store._listeners = listeners

    silently(SHORT)  # UID 4: the view does not know it yet
    c.expect("a1 FETCH 1 (FLAGS)", "* 1 FETCH (FLAGS (\\Seen \\Recent))", "a1 OK FETCH completed")  # the cache loads
    store.deliver(USER, SHORT)  # UID 5, notified
    backend = c.session.backend
    real = backend.changes_since
    calls = 0

    async def changes_since(mailbox, modseq):  # noqa: ANN001, ANN202
        nonlocal calls
        calls += 1
        out = await real(mailbox, modseq)
        if calls == 1:
            silently(MULTIPART)  # UID 6: after the cache's refresh, before the sync's read
        return out

    backend.changes_since = changes_since
    c.expect("a2 FETCH 1 (FLAGS)", "* 1 FETCH (FLAGS (\\Seen \\Recent))", "* 6 EXISTS", "* 6 RECENT",
             "a2 OK FETCH completed")
    backend.changes_since = real
    c.expect("a3 FETCH 6 (FLAGS)", "* 6 FETCH (FLAGS (\\Recent))", "a3 OK FETCH completed")


def test_one_read_of_the_changes_per_command() -> None:
    """After a change is notified, a FETCH (whose cache of index data needs
    the changes) and the sync at its end (which announces them) read them
    from the backend once, and so does a NOOP followed by a FETCH."""
    store = store_with_mail()
    c = connect(store, select="INBOX")
    c.untagged("a1 FETCH 1:* (FLAGS)")
    backend = c.session.backend
    real = backend.changes_since
    calls = []

    async def counting(mailbox, modseq):  # noqa: ANN001, ANN202
        calls.append(modseq)
        return await real(mailbox, modseq)

    backend.changes_since = counting
    store.deliver(USER, SHORT)
    c.expect("a2 FETCH 1 (FLAGS)", "* 1 FETCH (FLAGS (\\Seen \\Recent))", "* 4 EXISTS", "* 4 RECENT",
             "a2 OK FETCH completed")
    c.expect("a3 FETCH 4 (FLAGS)", "* 4 FETCH (FLAGS (\\Recent))", "a3 OK FETCH completed")
    assert len(calls) == 1
    store.deliver(USER, SHORT)
    c.expect("a4 NOOP", "* 5 EXISTS", "* 5 RECENT", "a4 OK NOOP completed")
    c.expect("a5 FETCH 5 (FLAGS)", "* 5 FETCH (FLAGS (\\Recent))", "a5 OK FETCH completed")
    assert len(calls) == 2


def test_uid_runs_without_matches_a_plain_list() -> None:
    """UidRuns.without (rebuilding only the runs between the first and the
    last expunged UID, shifting the rest) keeps the same UIDs, positions and
    maximal runs as a view built afresh from the remaining UIDs."""
    import random

    from mailyard.protocols.imap.selected import UidRuns

    rng = random.Random(2180)
    for _ in range(100):
        uids = sorted(rng.sample(range(1, 400), rng.randint(0, 150)))
        if rng.random() < 0.3:
            uids = sorted(set(uids) | set(range(50, 250)))  # long runs too
        gone = sorted(rng.sample(uids, rng.randint(0, min(len(uids), 6))))
        left = [u for u in uids if u not in set(gone)]
        got = UidRuns(uids).without(gone)
        want = UidRuns(left)
        assert list(got) == left
        assert len(got) == len(left)
        assert (list(got.starts), list(got.firsts)) == (list(want.starts), list(want.firsts))
        for i in range(len(left)):
            assert got[i] == left[i]
        for uid in range(0, 402, 7):
            assert got.index_left(uid) == sum(1 for u in left if u < uid)
        if left:
            assert got.last() == left[-1]
            got.append(left[-1] + 1)  # still extends its last run
            assert list(got) == [*left, left[-1] + 1]


def test_own_seen_change_after_a_notified_change_is_reported_once() -> None:
    """FETCH BODY[] of an unseen message after another session's change was
    notified: the sync at its end reads the changes again after the implicit
    \\Seen (the command's own write), so the flag change is reported in the
    FETCH only, never again as an unsolicited FETCH at the next command."""
    store = store_with_mail(SHORT, SHORT, seen_first=False)
    c = connect(store, select="INBOX", enable="IMAP4rev2")
    c.untagged("a1 FETCH 1:* (FLAGS)")
    store.deliver(USER, SHORT)
    c.expect("a2 FETCH 1 (BODY[] FLAGS)",
             "* 1 FETCH (BODY[] {46}\r\nFrom: bob@example.test\r\nSubject: short\r\n\r\nhi\r\n FLAGS (\\Seen))",
             "* 3 EXISTS", "a2 OK FETCH completed")
    c.expect("a3 NOOP", "a3 OK NOOP completed")


def test_silent_store_after_another_sessions_change_to_the_same_message_rfc9051_6_4_6() -> None:
    """Another session flags a message; this session then STOREs .SILENT on
    the same message. The store's record after the STORE carries both
    changes at this session's own modseq: the other session's change must
    still be announced (RFC 9051 6.4.6: with or without .SILENT, a change
    from an external source gets an untagged FETCH), also when its
    notification had not arrived before the STORE (another worker's), and
    a .SILENT STORE with no external change stays silent."""
    store = store_with_mail()
    a = connect(store, select="INBOX", enable="IMAP4rev2")
    b = connect(store, select="INBOX", enable="IMAP4rev2")
    a.untagged("a1 FETCH 1:* (FLAGS)")
    b.untagged("b1 STORE 2 +FLAGS.SILENT (\\Flagged)")
    a.expect("a2 STORE 2 +FLAGS.SILENT (\\Seen)", "* 2 FETCH (UID 2 FLAGS (\\Flagged \\Seen))",
             "a2 OK STORE completed")
    a.expect("a3 NOOP", "a3 OK NOOP completed")

    # the other session's change committed, its notification not delivered yet
    listeners, store._listeners = store._listeners, [e for e in store._listeners if e[1].__self__ is not a.session]
    b.untagged("b2 STORE 3 +FLAGS.SILENT (\\Answered)")
    store._listeners = listeners
    a.expect("a4 STORE 3 +FLAGS.SILENT (\\Seen)", "* 3 FETCH (UID 3 FLAGS (\\Answered \\Seen))",
             "a4 OK STORE completed")
    a.expect("a5 STORE 1 -FLAGS.SILENT (\\Seen)", "a5 OK STORE completed")
    a.expect("a6 UID STORE 1 +FLAGS.SILENT (\\Seen \\Deleted)", "a6 OK UID STORE completed")
    a.expect("a7 NOOP", "a7 OK NOOP completed")
    a.expect("a8 FETCH 1:3 (FLAGS)", "* 1 FETCH (FLAGS (\\Deleted \\Seen))", "* 2 FETCH (FLAGS (\\Flagged \\Seen))",
             "* 3 FETCH (FLAGS (\\Answered \\Seen))", "a8 OK FETCH completed")
