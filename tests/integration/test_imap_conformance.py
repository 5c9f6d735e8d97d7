"""IMAP exchanges a third-party conformance suite checks, over raw sockets
against a real server (tests/conftest.py), byte for byte where the RFC fixes
the bytes: CONDSTORE and QRESYNC (RFC 7162), DELETE (RFC 9051 6.3.5), the
BODYSTRUCTURE extension data (RFC 9051 7.5.2)."""

from __future__ import annotations

import re

from tests.conftest import RunningServer
from tests.integration.test_imap import _append_raw, _login_raw


def _append(say, n: int, box: bytes = b"INBOX") -> None:
    _append_raw(say, box, b"From: a@b.test\r\nSubject: m%d\r\n\r\nbody\r\n" % n)


def test_condstore_store_reports_modseq_of_a_message_it_left_unchanged_rfc7162_3_1(
        mailserver: RunningServer) -> None:
    """Once CONDSTORE is on, every untagged FETCH carries MODSEQ (RFC 7162
    3.1), that of a STORE whose flags were already there too (3.1.3)."""
    s, say = _login_raw(mailserver)
    with s:
        _append(say, 1)
        assert say(b"a1 SELECT INBOX (CONDSTORE)", b"a1")[-1].startswith(b"a1 OK")
        assert say(b"a2 STORE 1 +FLAGS (\\Seen)", b"a2") == [
            b"* 1 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (3))\r\n", b"a2 OK STORE completed\r\n"]
        # nothing changes: the flags and the mod-sequence as they are
        assert say(b"a3 STORE 1 +FLAGS (\\Seen)", b"a3") == [
            b"* 1 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (3))\r\n", b"a3 OK STORE completed\r\n"]
        assert say(b"a4 STORE 1 (UNCHANGEDSINCE 3) FLAGS (\\Seen)", b"a4") == [
            b"* 1 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (3))\r\n", b"a4 OK STORE completed\r\n"]
        # .SILENT and nothing changed: no FETCH at all
        assert say(b"a5 STORE 1 +FLAGS.SILENT (\\Seen)", b"a5") == [b"a5 OK STORE completed\r\n"]


def test_qresync_expunge_gives_highestmodseq_in_the_tagged_ok_rfc7162_3_2_7(mailserver: RunningServer) -> None:
    """With QRESYNC enabled, EXPUNGE and UID EXPUNGE that remove a message
    give the mailbox's new HIGHESTMODSEQ in the tagged OK (RFC 7162 3.2.7,
    3.2.9: MUST), and so does MOVE (RFC 6851 4.4); one that removes nothing,
    and CLOSE (RFC 7162 3.2.8), do not."""
    s, say = _login_raw(mailserver)
    with s:
        for n in (1, 2, 3):
            _append(say, n)
        assert say(b"a1 ENABLE QRESYNC", b"a1")[-1] == b"a1 OK ENABLE completed\r\n"
        out = say(b"a2 SELECT INBOX", b"a2")
        assert b"* OK [HIGHESTMODSEQ 4] Highest\r\n" in out
        assert say(b"a3 STORE 1,3 +FLAGS.SILENT (\\Deleted)", b"a3")[-1] == b"a3 OK STORE completed\r\n"
        assert say(b"a4 UID EXPUNGE 1", b"a4") == [b"* VANISHED 1\r\n", b"a4 OK [HIGHESTMODSEQ 6] UID EXPUNGE completed\r\n"]
        assert say(b"a5 EXPUNGE", b"a5") == [b"* VANISHED 3\r\n", b"a5 OK [HIGHESTMODSEQ 7] EXPUNGE completed\r\n"]
        assert say(b"a6 EXPUNGE", b"a6") == [b"a6 OK EXPUNGE completed\r\n"]
        out = say(b"a7 STATUS INBOX (HIGHESTMODSEQ)", b"a7")
        assert out[0] == b'* STATUS "INBOX" (HIGHESTMODSEQ 7)\r\n'
        # RFC 6851 4.4: MOVE likewise
        out = say(b"a8 MOVE 1 Trash", b"a8")
        assert out[1:] == [b"* VANISHED 2\r\n", b"a8 OK [HIGHESTMODSEQ 8] MOVE completed\r\n"], out
        assert say(b"a9 CLOSE", b"a9") == [b"a9 OK CLOSE completed\r\n"]


def test_uid_fetch_vanished_earlier_leaves_out_what_the_session_still_shows_rfc7162_3_2_10(
        mailserver: RunningServer) -> None:
    """UID FETCH (CHANGEDSINCE VANISHED) of a message another session
    expunged, which this session still shows (its expunge not announced
    yet): VANISHED (EARLIER) is for messages no longer in the mailbox and is
    not decremented by the client (RFC 7162 3.2.10.1), so it must not name a
    message this session then FETCHes and announces with VANISHED (3.2.10:
    the two forms are not combined)."""
    s, say = _login_raw(mailserver)
    other, say2 = _login_raw(mailserver)
    with s, other:
        for n in (1, 2, 3):
            _append(say, n)
        assert say(b"a1 ENABLE QRESYNC", b"a1")[-1].startswith(b"a1 OK")
        assert say(b"a2 SELECT INBOX", b"a2")[-1].startswith(b"a2 OK")
        assert say2(b"b1 SELECT INBOX", b"b1")[-1].startswith(b"b1 OK")
        assert say2(b"b2 STORE 2 +FLAGS.SILENT (\\Deleted)", b"b2")[-1].startswith(b"b2 OK")
        assert say2(b"b3 EXPUNGE", b"b3")[-1].startswith(b"b3 OK")
        # a FETCH may not announce the expunge (RFC 9051 7.5.1): 2 is still shown
        out = say(b"a3 FETCH 1:* (UID)", b"a3")
        assert b"* 2 FETCH (UID 2)\r\n" in out and out[-1] == b"a3 OK FETCH completed\r\n"
        out = say(b"a4 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)", b"a4")
        assert not any(line.startswith(b"* VANISHED (EARLIER)") for line in out), out
        assert out[-2:] == [b"* VANISHED 2\r\n", b"a4 OK UID FETCH completed\r\n"]
        # announced: now it is an earlier expunge
        out = say(b"a5 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)", b"a5")
        assert out[0] == b"* VANISHED (EARLIER) 2\r\n"
        assert [re.match(rb"\* (\d+) FETCH \(UID (\d+)", line).groups() for line in out[1:-1]] == [
            (b"1", b"1"), (b"2", b"3")]


def test_delete_of_a_noselect_name_with_inferiors_says_haschildren_rfc9051_6_3_5(
        mailserver: RunningServer) -> None:
    """A name left \\Noselect by the DELETE of a mailbox with inferiors cannot
    be deleted (RFC 9051 6.3.5): NO [HASCHILDREN] (7.1), not NONEXISTENT;
    its inferiors stay, and once they are gone so is the name."""
    s, say = _login_raw(mailserver)
    with s:
        assert say(b"a1 CREATE a/b", b"a1")[-1].startswith(b"a1 OK")
        assert say(b"a2 DELETE a", b"a2") == [b"a2 OK DELETE completed\r\n"]
        assert say(b'a3 LIST "" "a*"', b"a3") == [
            b'* LIST (\\Noselect \\HasChildren) "/" "a"\r\n', b'* LIST (\\HasNoChildren) "/" "a/b"\r\n',
            b"a3 OK LIST completed\r\n"]
        assert say(b"a4 DELETE a", b"a4") == [b"a4 NO [HASCHILDREN] Mailbox has inferior hierarchical names\r\n"]
        assert say(b"a5 DELETE a/b", b"a5") == [b"a5 OK DELETE completed\r\n"]
        assert say(b"a6 DELETE a", b"a6") == [b"a6 NO [NONEXISTENT] Mailbox does not exist\r\n"]
        assert say(b'a7 LIST "" "a*"', b"a7") == [b"a7 OK LIST completed\r\n"]


def test_rev2_select_lists_the_mailbox_with_accurate_attributes_rfc9051_6_3_2(mailserver: RunningServer) -> None:
    """IMAP4rev2 SELECT and EXAMINE give a LIST response whose attributes
    "MUST be accurate" (RFC 9051 6.3.2): those LIST gives the mailbox, its
    children (6.3.9) and special use (RFC 6154 2) included."""
    s, say = _login_raw(mailserver)
    with s:
        assert say(b"a1 ENABLE IMAP4rev2", b"a1")[-1].startswith(b"a1 OK")
        assert say(b"a2 CREATE Sent/2026", b"a2")[-1].startswith(b"a2 OK")
        listed = say(b'a3 LIST "" "Sent"', b"a3")[0]
        assert listed == b'* LIST (\\HasChildren \\Sent) "/" "Sent"\r\n'
        out = say(b"a4 SELECT Sent", b"a4")
        assert out[-2:] == [listed, b"a4 OK [READ-WRITE] SELECT completed\r\n"]
        out = say(b"a5 EXAMINE Sent/2026", b"a5")
        assert out[-2:] == [b'* LIST (\\HasNoChildren) "/" "Sent/2026"\r\n', b"a5 OK [READ-ONLY] EXAMINE completed\r\n"]


def test_condstore_fetch_flags_come_with_modseq_rfc7162_3_1(mailserver: RunningServer) -> None:
    """Once CONDSTORE is on, FLAGS in an untagged FETCH come with MODSEQ
    (RFC 7162 3.1: "mod-sequence data in all subsequent untagged FETCH
    responses"): those a FETCH asks for, and those of the \\Seen a BODY[]
    sets (RFC 9051 6.4.5), which another client's cache must not miss."""
    s, say = _login_raw(mailserver)
    with s:
        _append(say, 1)
        assert say(b"a1 ENABLE CONDSTORE", b"a1")[-1].startswith(b"a1 OK")
        assert say(b"a2 SELECT INBOX", b"a2")[-1].startswith(b"a2 OK")
        assert say(b"a3 FETCH 1 (FLAGS)", b"a3") == [
            b"* 1 FETCH (FLAGS (\\Recent) MODSEQ (2))\r\n", b"a3 OK FETCH completed\r\n"]
        out = say(b"a4 FETCH 1 (BODY[TEXT])", b"a4")
        assert out[0] == b"* 1 FETCH (BODY[TEXT] {6}\r\n"
        assert out[1:] == [b"body\r\n", b" FLAGS (\\Seen \\Recent) MODSEQ (3))\r\n", b"a4 OK FETCH completed\r\n"]
        assert say(b"a5 UID FETCH 1 (FLAGS)", b"a5") == [
            b"* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent) MODSEQ (3))\r\n", b"a5 OK UID FETCH completed\r\n"]
        # without FLAGS, nothing is added
        assert say(b"a6 FETCH 1 (UID)", b"a6") == [b"* 1 FETCH (UID 1)\r\n", b"a6 OK FETCH completed\r\n"]
