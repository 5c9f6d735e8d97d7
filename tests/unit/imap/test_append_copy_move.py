"""APPEND (MULTIAPPEND, APPENDUID), COPY and MOVE (COPYUID), byte for byte
(RFC 9051 6.3.12, 6.4.7-8; RFC 3502; RFC 4315 3; RFC 6851; RFC 3516 4.4)."""

from __future__ import annotations

from .helpers import connect, store_with_mail


def test_append_with_flags_and_date_rfc9051_6_3_12() -> None:
    store = store_with_mail()
    c = connect(store)
    c.expect(b'a1 APPEND INBOX (\\Seen $x) "01-Jan-2024 10:00:00 +0100" {5+}\r\nhello\r\n',
             "a1 OK [APPENDUID 1 4] APPEND completed")
    c.untagged("a2 SELECT INBOX")
    c.expect("a3 UID FETCH 4 (FLAGS INTERNALDATE RFC822.SIZE)",
             '* 4 FETCH (UID 4 FLAGS (\\Seen \\Recent $x) INTERNALDATE "01-Jan-2024 09:00:00 +0000" RFC822.SIZE 5)',
             "a3 OK UID FETCH completed")


def test_append_to_the_selected_mailbox_is_announced() -> None:
    c = connect(select="INBOX")
    c.expect(b"a1 APPEND INBOX {2+}\r\nhi\r\n", "* 4 EXISTS", "* 4 RECENT", "a1 OK [APPENDUID 1 4] APPEND completed")


def test_multiappend_is_all_or_nothing_rfc3502() -> None:
    store = store_with_mail()
    c = connect(store)
    c.expect(b"a1 APPEND Sent {2+}\r\nhi (\\Draft) {3+}\r\nyou\r\n", "a1 OK [APPENDUID 3 1:2] APPEND completed")
    c.expect(b"a2 APPEND Sent {2+}\r\nhi (\\Recent) {3+}\r\nyou\r\n", "a2 BAD flag \\Recent cannot be set")
    assert len(store.find("alice", "Sent").messages) == 2


def test_append_refusals() -> None:
    store = store_with_mail()
    c = connect(store)
    c.expect(b"a1 APPEND Nope {2+}\r\nhi\r\n", "a1 NO [TRYCREATE] Mailbox does not exist")
    c.expect(b"a2 APPEND INBOX {0+}\r\n\r\n", "a2 NO Empty message")
    # RFC 3516 4.4: NUL octets only in a literal8
    c.expect(b"a3 APPEND INBOX {3+}\r\na\x00b\r\n", "a3 NO [UNKNOWN-CTE] NUL octets need a literal8")
    c.expect(b"a4 APPEND INBOX ~{7+}\r\n\r\na\x00b\r\n\r\n", "a4 OK [APPENDUID 1 4] APPEND completed")
    # RFC 3516 4.3: a NUL no transfer encoding can hold (in a header) is refused
    c.expect(b"a5 APPEND INBOX ~{3+}\r\na\x00b\r\n", "a5 NO [UNKNOWN-CTE] NUL octets outside a part's body")
    store.full = True
    c.expect(b"a6 APPEND INBOX {2+}\r\nhi\r\n", "a6 NO [OVERQUOTA] Over quota")


NUL_PART = b"ab\x00cd"
BINARY_MESSAGE = (
    b"From: a@x.example\r\nSubject: nul\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
    b"--o\r\nContent-Type: text/plain\r\n\r\ntext\r\n"
    b"--o\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    + NUL_PART + b"\r\n--o--\r\n"
)


def test_appended_nul_octets_are_kept_as_base64_rfc3516_4_3() -> None:
    """A string holds no NUL (RFC 9051 4.3): a part APPENDed in a literal8 with
    NUL octets is stored base64-encoded (RFC 3516 4.3 lets the server change
    the transfer encoding, losing nothing), so BODY[2] and BODY[] are legal
    strings, while BINARY[2] gives back the octets in a literal8. As Dovecot."""
    stored = BINARY_MESSAGE.replace(b"Transfer-Encoding: binary", b"Transfer-Encoding: base64").replace(
        NUL_PART, b"YWIAY2Q=")
    c = connect(store_with_mail())
    c.expect(b"a1 APPEND INBOX ~{%d}\r\n%s\r\n" % (len(BINARY_MESSAGE), BINARY_MESSAGE),
             "+ Ready for literal data", "a1 OK [APPENDUID 1 4] APPEND completed")
    c.untagged("a2 EXAMINE INBOX")
    c.expect(
        "a3 FETCH 4 (RFC822.SIZE BODY.PEEK[2] BINARY.PEEK[2] BINARY.SIZE[2] BODY.PEEK[1] BODY.PEEK[])",
        b"* 4 FETCH (RFC822.SIZE %d BODY[2] {8}\r\nYWIAY2Q= BINARY[2] ~{5}\r\nab\x00cd BINARY.SIZE[2] 5 "
        b"BODY[1] {4}\r\ntext BODY[] {%d}\r\n%s)" % (len(stored), len(stored), stored),
        "a3 OK FETCH completed",
    )


def test_nul_that_did_not_come_by_append_is_sent_as_0x80_rfc9051_4_3() -> None:
    """A NUL in a stored message (SMTP DATA may carry one) never goes out in a
    string: it is sent as 0x80, keeping the octet count."""
    c = connect(store_with_mail(BINARY_MESSAGE), select="INBOX")
    c.expect(
        "a1 FETCH 1 (BODY.PEEK[2] BODY.PEEK[2]<1.2> BINARY.PEEK[2])",
        b"* 1 FETCH (BODY[2] {5}\r\nab\x80cd BODY[2]<1> {2}\r\nb\x80 BINARY[2] ~{5}\r\nab\x00cd)",
        "a1 OK FETCH completed",
    )


def test_copy_rfc4315_copyuid() -> None:
    store = store_with_mail()
    c = connect(store, select="INBOX")
    c.expect("a1 COPY 1:2 Sent", "a1 OK [COPYUID 3 1:2 1:2] COPY completed")
    c.expect("a2 UID COPY 3 Sent", "a2 OK [COPYUID 3 3 3] UID COPY completed")
    c.expect("a3 COPY 1 Nope", "a3 NO [TRYCREATE] Destination mailbox does not exist")  # RFC 9051 6.4.7
    c.expect("a4 COPY 9 Sent", "a4 BAD Invalid message sequence number")
    c.expect("a5 UID COPY 9 Sent", "a5 OK COPY completed, nothing to do")
    assert [m.flags for _, m in store.find("alice", "Sent").messages.values()] == [
        frozenset({"\\Seen"}), frozenset(), frozenset()]
    store.full = True
    c.expect("a6 COPY 1 Sent", "a6 NO [OVERQUOTA] Over quota")


def test_move_rfc6851_4_3() -> None:
    c = connect(select="INBOX")
    # COPYUID in an untagged OK before the expunges
    c.expect("a1 UID MOVE 2:3 Trash", "* OK [COPYUID 4 2:3 1:2] Moved", "* 2 EXPUNGE", "* 2 EXPUNGE",
             "a1 OK UID MOVE completed")
    c.expect("a2 MOVE 1 Junk", "* OK [COPYUID 5 1 1] Moved", "* 1 EXPUNGE", "a2 OK MOVE completed")
    c.expect("a3 SEARCH ALL", "* SEARCH", "a3 OK SEARCH completed")


def test_move_with_qresync_is_vanished() -> None:
    c = connect(enable="QRESYNC", select="INBOX")
    c.expect("a1 MOVE 1,3 Trash", "* OK [COPYUID 4 1,3 1:2] Moved", "* VANISHED 1,3",
             "a1 OK [HIGHESTMODSEQ 4] MOVE completed")  # RFC 6851 4.4


def test_move_from_a_read_only_mailbox() -> None:
    c = connect()
    c.untagged("a0 EXAMINE INBOX")
    c.expect("a1 MOVE 1 Trash", "a1 NO [READ-ONLY] Mailbox is read-only")
    c.expect("a2 COPY 1 Trash", "a2 OK [COPYUID 4 1 1] COPY completed")
