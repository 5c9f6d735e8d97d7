"""QUOTA (RFC 9208), STATUS DELETED / DELETED-STORAGE / SIZE (RFC 8438) /
APPENDLIMIT (RFC 7889) and SAVEDATE (RFC 8514), byte for byte over the
in-memory backend."""

from __future__ import annotations

from tests.unit.imap.helpers import MULTIPART, PLAIN, SHORT, USER, connect, store_with_mail

SIZE = len(PLAIN) + len(MULTIPART) + len(SHORT)
KIB = -(-SIZE // 1024)


def test_no_limits_no_quota_root() -> None:
    """RFC 9208 4.1.2: a mailbox without quota roots; GETQUOTA of an unknown root is NO."""
    c = connect()
    c.expect("a1 GETQUOTAROOT INBOX", '* QUOTAROOT "INBOX"', "a1 OK GETQUOTAROOT completed")
    c.expect('a2 GETQUOTA ""', "a2 NO [NONEXISTENT] No such quota root")
    c.expect("a3 GETQUOTAROOT Nope", "a3 NO [NONEXISTENT] Mailbox does not exist")


def test_getquotaroot_and_getquota_rfc9208_examples() -> None:
    """RFC 9208 4.1.1 / 4.1.2: QUOTAROOT names the root, QUOTA lists each
    resource with a limit as (name usage limit), STORAGE in units of 1024
    octets (5.1), MESSAGE in messages (5.2)."""
    store = store_with_mail()
    store.set_quota(USER, storage=10 * 1024 * 1024, messages=1000)
    c = connect(store)
    c.expect("a1 GETQUOTAROOT INBOX", '* QUOTAROOT "INBOX" ""', f'* QUOTA "" (STORAGE {KIB} 10240 MESSAGE 3 1000)',
             "a1 OK GETQUOTAROOT completed")
    c.expect('a2 GETQUOTA ""', f'* QUOTA "" (STORAGE {KIB} 10240 MESSAGE 3 1000)', "a2 OK GETQUOTA completed")
    c.expect('a3 GETQUOTA "#user/alice"', "a3 NO [NONEXISTENT] No such quota root")
    store.set_quota(USER, messages=5)  # only MESSAGE is limited now
    c.expect("a4 GETQUOTAROOT Sent", '* QUOTAROOT "Sent" ""', '* QUOTA "" (MESSAGE 3 5)',
             "a4 OK GETQUOTAROOT completed")


def test_setquota_is_refused_and_checked_for_syntax() -> None:
    """RFC 9208 4.1.3: the server may refuse SETQUOTA; only the operator sets limits."""
    c = connect()
    c.expect('a1 SETQUOTA "" (STORAGE 512)', "a1 NO [NOPERM] Quotas are set by the server's administrator")
    c.expect('a2 SETQUOTA "" ()', "a2 NO [NOPERM] Quotas are set by the server's administrator")
    c.expect('a3 SETQUOTA "" (STORAGE)', "a3 BAD Syntax error: expected SP")
    c.expect("a4 GETQUOTA", "a4 BAD Syntax error: expected SP")


def test_over_quota_refuses_append_copy_but_not_move_or_expunge() -> None:
    """RFC 9208 5 / RFC 9051 7.1 OVERQUOTA: APPEND and COPY that would take
    the account over a limit are refused and write nothing; MOVE leaves the
    usage as it is; the mailbox stays readable and EXPUNGE frees room."""
    store = store_with_mail()
    store.set_quota(USER, messages=4)
    c = connect(store, enable="IMAP4rev2", select="INBOX")
    # MULTIAPPEND of two: all or none (RFC 3502)
    c.expect(b"a1 APPEND INBOX {2+}\r\nhi {2+}\r\nho\r\n", "a1 NO [OVERQUOTA] Over quota")
    c.expect(b"a2 APPEND INBOX {2+}\r\nhi\r\n", "* 4 EXISTS", "a2 OK [APPENDUID 1 4] APPEND completed")
    c.expect(b"a3 APPEND INBOX {2+}\r\nhi\r\n", "a3 NO [OVERQUOTA] Over quota")
    c.expect("a4 COPY 1 Sent", "a4 NO [OVERQUOTA] Over quota")
    c.expect("a5 MOVE 4 Sent", "* OK [COPYUID 3 4 1] Moved", "* 4 EXPUNGE", "a5 OK MOVE completed")
    c.expect("a6 FETCH 3 (RFC822.SIZE)", f"* 3 FETCH (RFC822.SIZE {len(SHORT)})", "a6 OK FETCH completed")
    c.expect("a7 STORE 3 +FLAGS.SILENT (\\Deleted)", "a7 OK STORE completed")
    c.expect("a8 EXPUNGE", "* 3 EXPUNGE", "a8 OK EXPUNGE completed")
    c.expect("a9 COPY 1 Sent", "a9 OK [COPYUID 3 1 2] COPY completed")
    c.expect('b1 GETQUOTA ""', '* QUOTA "" (MESSAGE 4 4)', "b1 OK GETQUOTA completed")


def test_status_deleted_deleted_storage_size_appendlimit() -> None:
    """RFC 9051 STATUS DELETED, RFC 9208 4.2 DELETED-STORAGE (units of 1024
    octets), RFC 8438 SIZE (octets; its example asks MESSAGES SIZE), RFC
    7889 APPENDLIMIT (the largest APPEND, as APPENDLIMIT=n advertises)."""
    big = b"Subject: big\r\n\r\n" + b"x" * 4000 + b"\r\n"
    store = store_with_mail(PLAIN, big, SHORT)
    c = connect(store, select="INBOX")
    c.expect("a1 STATUS INBOX (MESSAGES SIZE)", f'* STATUS "INBOX" (MESSAGES 3 SIZE {len(PLAIN) + len(big) + len(SHORT)})',
             "a1 OK STATUS completed")
    c.expect("a2 STATUS INBOX (DELETED DELETED-STORAGE)", '* STATUS "INBOX" (DELETED 0 DELETED-STORAGE 0)',
             "a2 OK STATUS completed")
    c.expect("a3 STORE 2:3 +FLAGS.SILENT (\\Deleted)", "a3 OK STORE completed")
    deleted_kib = -(-(len(big) + len(SHORT)) // 1024)
    assert deleted_kib == 4  # 4018 + 47 octets, rounded up
    c.expect("a4 STATUS INBOX (DELETED DELETED-STORAGE APPENDLIMIT)",
             '* STATUS "INBOX" (DELETED 2 DELETED-STORAGE 4 APPENDLIMIT 52428800)', "a4 OK STATUS completed")
    c.expect('a5 LIST "" (INBOX Sent) RETURN (STATUS (APPENDLIMIT DELETED-STORAGE))',
             '* LIST (\\HasNoChildren) "/" "INBOX"', '* STATUS "INBOX" (APPENDLIMIT 52428800 DELETED-STORAGE 4)',
             '* LIST (\\HasNoChildren \\Sent) "/" "Sent"', '* STATUS "Sent" (APPENDLIMIT 52428800 DELETED-STORAGE 0)',
             "a5 OK LIST completed")
    c.expect("a6 STATUS INBOX (STORAGE)", "a6 BAD Syntax error: unknown status item STORAGE")


def test_savedate_fetch_and_search_rfc8514() -> None:
    """RFC 8514 3: the save date is when the message was saved into this
    mailbox (APPEND, COPY, MOVE), not its INTERNALDATE; 4: SAVEDBEFORE /
    SAVEDON / SAVEDSINCE compare it by day, SAVEDATESUPPORTED matches all."""
    store = store_with_mail(PLAIN)  # delivered at the store clock: 14-Nov-2023 22:13:20
    c = connect(store, enable="IMAP4rev2", select="INBOX")
    c.expect(b'a1 APPEND INBOX "01-Jan-2001 00:00:00 +0000" {2+}\r\nhi\r\n', "* 2 EXISTS",
             "a1 OK [APPENDUID 1 2] APPEND completed")
    c.expect("a2 FETCH 1:2 (INTERNALDATE SAVEDATE)",
             '* 1 FETCH (INTERNALDATE "14-Nov-2023 22:13:20 +0000" SAVEDATE "14-Nov-2023 22:13:20 +0000")',
             '* 2 FETCH (INTERNALDATE "01-Jan-2001 00:00:00 +0000" SAVEDATE "14-Nov-2023 22:13:20 +0000")',
             "a2 OK FETCH completed")
    store.clock += 3 * 86400  # three days later, COPY saves anew
    c.expect("a3 COPY 2 Archive", "a3 OK [COPYUID 6 2 1] COPY completed")
    c.untagged("a4 SELECT Archive")
    c.expect("a5 FETCH 1 (SAVEDATE INTERNALDATE)",
             '* 1 FETCH (SAVEDATE "17-Nov-2023 22:13:20 +0000" INTERNALDATE "01-Jan-2001 00:00:00 +0000")',
             "a5 OK FETCH completed")
    c.expect("a6 UID FETCH 1 (SAVEDATE)", '* 1 FETCH (UID 1 SAVEDATE "17-Nov-2023 22:13:20 +0000")',
             "a6 OK UID FETCH completed")
    c.expect("a7 SEARCH SAVEDON 17-Nov-2023", '* ESEARCH (TAG "a7") ALL 1', "a7 OK SEARCH completed")
    c.expect("a8 SEARCH SAVEDBEFORE 17-Nov-2023", '* ESEARCH (TAG "a8")', "a8 OK SEARCH completed")
    c.expect("a9 SEARCH SAVEDSINCE 15-Nov-2023 BEFORE 2-Jan-2001", '* ESEARCH (TAG "a9") ALL 1', "a9 OK SEARCH completed")
    c.expect("b1 SEARCH SAVEDATESUPPORTED", '* ESEARCH (TAG "b1") ALL 1', "b1 OK SEARCH completed")
    c.untagged("b2 EXAMINE INBOX")
    c.expect("b3 SEARCH SAVEDSINCE 15-Nov-2023", '* ESEARCH (TAG "b3")', "b3 OK SEARCH completed")
    c.expect("b4 SEARCH SAVEDBEFORE 15-Nov-2023", '* ESEARCH (TAG "b4") ALL 1:2', "b4 OK SEARCH completed")
    c.expect("b5 SEARCH SAVEDON 1-Jan-2001", '* ESEARCH (TAG "b5")', "b5 OK SEARCH completed")
