"""CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE LIST LSUB STATUS, byte for byte
(RFC 9051 6.3.4-6.3.11; LIST-EXTENDED RFC 5258; LIST-STATUS RFC 5819;
SPECIAL-USE RFC 6154; modified UTF-7 RFC 3501 5.1.3)."""

from __future__ import annotations

from .helpers import connect, store_with_mail

SPECIAL = [
    '* LIST (\\HasNoChildren \\Archive) "/" "Archive"',
    '* LIST (\\HasNoChildren \\Drafts) "/" "Drafts"',
    '* LIST (\\HasNoChildren \\Junk) "/" "Junk"',
    '* LIST (\\HasNoChildren \\Sent) "/" "Sent"',
    '* LIST (\\HasNoChildren \\Trash) "/" "Trash"',
]


def test_list_all_and_the_root_rfc9051_6_3_9() -> None:
    c = connect()
    c.expect('a1 LIST "" *', '* LIST (\\HasNoChildren) "/" "INBOX"', *SPECIAL, "a1 OK LIST completed")
    c.expect('a2 LIST "" ""', '* LIST (\\Noselect) "/" ""', "a2 OK LIST completed")
    c.expect('a3 LIST "" S%', '* LIST (\\HasNoChildren \\Sent) "/" "Sent"', "a3 OK LIST completed")
    c.expect('a4 LIST "" nothing', "a4 OK LIST completed")


def test_create_with_parents_and_list_hierarchy_rfc9051_6_3_4() -> None:
    c = connect()
    c.expect("a1 CREATE a/b/c", "a1 OK [MAILBOXID (F15)] CREATE completed")  # RFC 8474 4.1
    c.expect('a2 LIST "" a*', '* LIST (\\HasChildren) "/" "a"', '* LIST (\\HasChildren) "/" "a/b"',
             '* LIST (\\HasNoChildren) "/" "a/b/c"', "a2 OK LIST completed")
    c.expect('a3 LIST "" a/%', '* LIST (\\HasChildren) "/" "a/b"', "a3 OK LIST completed")
    c.expect("a4 DELETE a/b", "a4 OK DELETE completed")
    # a level without a mailbox of its own (RFC 9051 6.3.9; rev1 form)
    c.expect('a5 LIST "" a/*', '* LIST (\\Noselect \\HasChildren) "/" "a/b"',
             '* LIST (\\HasNoChildren) "/" "a/b/c"', "a5 OK LIST completed")
    c.expect("a6 CREATE trailing/", "a6 OK [MAILBOXID (F16)] CREATE completed")  # RFC 9051 6.3.4: intent to hold inferiors
    c.expect('a7 LIST "" trailing', '* LIST (\\HasNoChildren) "/" "trailing"', "a7 OK LIST completed")


def test_create_refusals() -> None:
    c = connect()
    c.expect("a1 CREATE Sent", "a1 NO [ALREADYEXISTS] Mailbox already exists")
    c.expect("a2 CREATE bad//name", "a2 NO [CANNOT] empty, '.' or '..' level or stray spaces in mailbox name")
    c.expect("a3 CREATE X (USE (\\Bogus))", "a3 NO [USEATTR] Unsupported special-use attribute")  # RFC 6154 5.3


def test_create_special_use_rfc6154_5_2() -> None:
    c = connect()
    c.expect("a1 CREATE Stuff (USE (\\Drafts))", "a1 OK [MAILBOXID (F13)] CREATE completed")
    c.expect('a2 LIST (SPECIAL-USE) "" St*', '* LIST (\\HasNoChildren \\Drafts) "/" "Stuff"', "a2 OK LIST completed")


def test_delete_rfc9051_6_3_5() -> None:
    c = connect()
    c.expect("a1 DELETE INBOX", "a1 NO [CANNOT] INBOX cannot be deleted")
    c.expect("a2 DELETE nope", "a2 NO [NONEXISTENT] Mailbox does not exist")
    c.expect("a3 DELETE Junk", "a3 OK DELETE completed")
    c.expect('a4 LIST "" Junk', "a4 OK LIST completed")


def test_rename_with_inferiors_and_inbox_rfc9051_6_3_6() -> None:
    store = store_with_mail()
    c = connect(store)
    c.untagged("a0 CREATE a/b")
    c.expect("a1 RENAME a Z", "a1 OK RENAME completed")
    c.expect('a2 LIST "" Z*', '* LIST (\\HasChildren) "/" "Z"', '* LIST (\\HasNoChildren) "/" "Z/b"',
             "a2 OK LIST completed")
    c.expect("a3 RENAME nope x", "a3 NO [NONEXISTENT] Mailbox does not exist")
    c.expect("a4 RENAME Z Sent", "a4 NO [ALREADYEXISTS] Target mailbox already exists")
    c.expect("a5 RENAME Z Z/y", "a5 NO [CANNOT] Cannot rename there")
    c.expect("a6 RENAME Z bad//x", "a6 NO [CANNOT] empty, '.' or '..' level or stray spaces in mailbox name")
    # INBOX: the messages move, INBOX stays and is empty
    c.expect("a7 RENAME INBOX Old", "a7 OK RENAME completed")
    c.expect("a8 STATUS Old (MESSAGES)", '* STATUS "Old" (MESSAGES 3)', "a8 OK STATUS completed")
    c.expect("a9 STATUS INBOX (MESSAGES UIDNEXT)", '* STATUS "INBOX" (MESSAGES 0 UIDNEXT 4)',
             "a9 OK STATUS completed")


def test_subscriptions_lsub_and_list_subscribed_rfc5258_3_1() -> None:
    c = connect()
    c.expect("a1 SUBSCRIBE ghost", "a1 OK SUBSCRIBE completed")
    c.expect("a2 UNSUBSCRIBE Sent", "a2 OK UNSUBSCRIBE completed")
    c.expect('a3 LSUB "" *', '* LSUB () "/" "INBOX"', '* LSUB () "/" "Archive"', '* LSUB () "/" "Drafts"',
             '* LSUB () "/" "Junk"', '* LSUB () "/" "Trash"', '* LSUB () "/" "ghost"', "a3 OK LSUB completed")
    c.expect('a4 LIST (SUBSCRIBED) "" *g*', '* LIST (\\NonExistent \\Subscribed) "/" "ghost"',
             "a4 OK LIST completed")
    c.expect('a5 LIST "" (INBOX Sent) RETURN (SUBSCRIBED)', '* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
             '* LIST (\\HasNoChildren \\Sent) "/" "Sent"', "a5 OK LIST completed")
    c.expect('a6 LSUB "" ""', '* LSUB (\\Noselect) "/" ""', "a6 OK LSUB completed")
    c.expect("a7 LIST (BOGUS) \"\" *", "a7 BAD Invalid LIST selection options")


def test_list_status_rfc5819() -> None:
    c = connect()
    c.expect('a1 LIST "" (INBOX Sent) RETURN (STATUS (MESSAGES UNSEEN))',
             '* LIST (\\HasNoChildren) "/" "INBOX"', '* STATUS "INBOX" (MESSAGES 3 UNSEEN 2)',
             '* LIST (\\HasNoChildren \\Sent) "/" "Sent"', '* STATUS "Sent" (MESSAGES 0 UNSEEN 0)',
             "a1 OK LIST completed")


def test_status_rfc9051_6_3_11() -> None:
    c = connect()
    c.expect("a1 STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE HIGHESTMODSEQ RECENT)",
             '* STATUS "INBOX" (MESSAGES 3 UIDNEXT 4 UIDVALIDITY 1 UNSEEN 2 DELETED 0 SIZE 706 '
             'HIGHESTMODSEQ 3 RECENT 3)', "a1 OK STATUS completed")
    c.untagged("a2 SELECT INBOX")  # takes \Recent
    c.expect("a3 STATUS INBOX (RECENT)", '* STATUS "INBOX" (RECENT 0)', "a3 OK STATUS completed")
    c.expect("a4 STATUS nope (MESSAGES)", "a4 NO [NONEXISTENT] Mailbox does not exist")


def test_modified_utf7_and_utf8_names_rfc3501_5_1_3() -> None:
    c = connect()
    c.expect('a1 CREATE "&AOQA9gD8-"', "a1 OK [MAILBOXID (F13)] CREATE completed")
    c.expect('a2 LIST "" &AOQA9gD8-', '* LIST (\\HasNoChildren) "/" "&AOQA9gD8-"', "a2 OK LIST completed")
    c.untagged("a3 ENABLE UTF8=ACCEPT")
    c.expect('a4 LIST "" \u00e4*', '* LIST (\\HasNoChildren) "/" "\u00e4\u00f6\u00fc"', "a4 OK LIST completed")
