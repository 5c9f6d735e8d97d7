"""CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE LIST LSUB STATUS, byte for byte
(RFC 9051 6.3.4-6.3.11; LIST-EXTENDED RFC 5258; LIST-STATUS RFC 5819;
SPECIAL-USE RFC 6154; modified UTF-7 RFC 3501 5.1.3)."""

from __future__ import annotations

from .helpers import USER, connect, store_with_mail

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


def test_names_that_are_not_modified_utf7_are_no_not_bad_rfc9051_7_1_3() -> None:
    """A valid astring that is not valid modified UTF-7 (RFC 3501 5.1.3) names
    no mailbox: NO, as for any other missing mailbox; BAD is for protocol errors."""
    c = connect()
    c.expect('a1 SELECT "&Jjo!"', "a1 NO [NONEXISTENT] Mailbox does not exist")
    c.expect('a2 EXAMINE "a&b"', "a2 NO [NONEXISTENT] Mailbox does not exist")
    c.expect('a3 STATUS "a&b" (MESSAGES)', "a3 NO [NONEXISTENT] Mailbox does not exist")
    c.expect('a4 DELETE "&Jjo!"', "a4 NO [NONEXISTENT] Mailbox does not exist")
    c.expect('a5 RENAME "a&b" x', "a5 NO [NONEXISTENT] Mailbox does not exist")
    c.expect('a6 CREATE "&Jjo!"', "a6 NO [CANNOT] mailbox name is not valid modified UTF-7")
    c.expect('a7 RENAME Sent "a&b"', "a7 NO [CANNOT] mailbox name is not valid modified UTF-7")
    c.expect('a8 SUBSCRIBE "a&b"', "a8 NO [CANNOT] mailbox name is not valid modified UTF-7")
    c.expect('a9 LIST "" "&Jjo!"', "a9 OK LIST completed")
    c.expect('b1 LIST "a&b" *', "b1 OK LIST completed")
    c.expect('b2 LSUB "" "a&b*"', "b2 OK LSUB completed")
    # RFC 9051 6.3.12 / 6.4.7: no TRYCREATE where CREATE cannot succeed
    c.expect('b6 APPEND "a&b" {2+}\r\nhi', "b6 NO [CANNOT] mailbox name is not valid modified UTF-7")
    c.expect("b7 APPEND nowhere {2+}\r\nhi", "b7 NO [TRYCREATE] Mailbox does not exist")
    c.untagged("b8 SELECT INBOX")
    c.expect('b9 COPY 1 "&Jjo!"', "b9 NO [CANNOT] mailbox name is not valid modified UTF-7")
    c.untagged("c1 UNSELECT")
    # with UTF-8 names (RFC 6855 3) "&" is just a character
    c.untagged("b3 ENABLE UTF8=ACCEPT")
    c.expect('b4 CREATE "a&b"', "b4 OK [MAILBOXID (F13)] CREATE completed")
    c.expect('b5 LIST "" "a&b"', '* LIST (\\HasNoChildren) "/" "a&b"', "b5 OK LIST completed")


def test_unknown_list_return_option_is_bad_rfc5258_3() -> None:
    c = connect()
    c.expect('a1 LIST "" * RETURN (BOGUS)', "a1 BAD Invalid LIST return options")
    c.expect('a2 LIST "" INBOX RETURN (CHILDREN SUBSCRIBED SPECIAL-USE)',
             '* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"', "a2 OK LIST completed")
    c.expect('a3 LIST (SUBSCRIBED BOGUS) "" *', "a3 BAD Invalid LIST selection options")


def test_delete_and_create_leave_subscriptions_alone_rfc9051_6_3_7() -> None:
    """Only SUBSCRIBE and UNSUBSCRIBE change subscriptions: a server "MUST
    NOT unilaterally remove" one (RFC 9051 6.3.7); a deleted subscribed
    mailbox is listed \\NonExistent (RFC 5258 3.1)."""
    c = connect()
    c.expect("a1 DELETE Junk", "a1 OK DELETE completed")
    c.expect('a2 LIST (SUBSCRIBED) "" Junk', '* LIST (\\NonExistent \\Subscribed) "/" "Junk"',
             "a2 OK LIST completed")
    c.expect('a3 LSUB "" Junk', '* LSUB () "/" "Junk"', "a3 OK LSUB completed")
    c.expect('a4 LIST "" Junk', "a4 OK LIST completed")
    c.expect("a5 CREATE Junk", "a5 OK [MAILBOXID (F13)] CREATE completed")
    c.expect('a6 LIST "" Junk RETURN (SUBSCRIBED)', '* LIST (\\HasNoChildren \\Subscribed) "/" "Junk"',
             "a6 OK LIST completed")
    c.expect("a7 CREATE Fresh", "a7 OK [MAILBOXID (F14)] CREATE completed")
    c.expect('a8 LSUB "" Fresh', "a8 OK LSUB completed")
    c.expect('a9 LIST "" Fresh RETURN (SUBSCRIBED)', '* LIST (\\HasNoChildren) "/" "Fresh"', "a9 OK LIST completed")
    c.expect("b1 UNSUBSCRIBE Junk", "b1 OK UNSUBSCRIBE completed")
    c.expect("b2 DELETE Junk", "b2 OK DELETE completed")
    c.expect('b3 LIST (SUBSCRIBED) "" Junk', "b3 OK LIST completed")


def test_lsub_percent_stops_at_an_unsubscribed_parent_rfc3501_6_3_9() -> None:
    c = connect()
    c.expect("a1 CREATE x/a/b", "a1 OK [MAILBOXID (F15)] CREATE completed")
    c.expect("a2 SUBSCRIBE x/a/b", "a2 OK SUBSCRIBE completed")
    c.expect('a3 LSUB "" x/%', '* LSUB (\\Noselect) "/" "x/a"', "a3 OK LSUB completed")
    c.expect('a4 LSUB "" x/a/%', '* LSUB () "/" "x/a/b"', "a4 OK LSUB completed")
    c.expect('a5 LSUB "" x*', '* LSUB () "/" "x/a/b"', "a5 OK LSUB completed")
    c.expect("a6 SUBSCRIBE x", "a6 OK SUBSCRIBE completed")
    c.expect('a7 LSUB "" x%', '* LSUB () "/" "x"', "a7 OK LSUB completed")


def test_list_subscribed_recursivematch_childinfo_rfc5258_3_5() -> None:
    c = connect()
    c.untagged("a1 CREATE x/a/b")
    c.untagged("a2 SUBSCRIBE x/a/b")
    c.expect('a3 LIST (SUBSCRIBED RECURSIVEMATCH) "" x/%',
             '* LIST (\\HasChildren) "/" "x/a" ("CHILDINFO" ("SUBSCRIBED"))', "a3 OK LIST completed")
    c.expect('a4 LIST (SUBSCRIBED) "" x/%', "a4 OK LIST completed")
    # "*" returns the subscribed name itself: its parents need no CHILDINFO
    c.expect('a5 LIST (SUBSCRIBED RECURSIVEMATCH) "" x*',
             '* LIST (\\HasNoChildren \\Subscribed) "/" "x/a/b"', "a5 OK LIST completed")
    # a subscribed parent of a subscribed name gets CHILDINFO either way (RFC 5258 5 example 8 A1)
    c.untagged("a6 SUBSCRIBE x")
    c.expect('a7 LIST (SUBSCRIBED RECURSIVEMATCH) "" x',
             '* LIST (\\HasChildren \\Subscribed) "/" "x" ("CHILDINFO" ("SUBSCRIBED"))', "a7 OK LIST completed")
    c.expect('a8 LIST (SUBSCRIBED RECURSIVEMATCH) "" x*',
             '* LIST (\\HasChildren \\Subscribed) "/" "x" ("CHILDINFO" ("SUBSCRIBED"))',
             '* LIST (\\HasNoChildren \\Subscribed) "/" "x/a/b"', "a8 OK LIST completed")


def test_recursivematch_rfc5258_example_9() -> None:
    """RFC 5258 5 example 9 (D03), with this server's attributes (CHILDREN
    always) and order; "baz2" and "qux2" left out as 3.5 asks (redundant)."""
    store = store_with_mail()
    for name in ("foo2", "foo2/bar1", "foo2/bar2", "baz2", "baz2/bar2", "baz2/bar22", "baz2/bar222", "eps2",
                 "eps2/mamba", "qux2/bar2"):
        store.create(USER, name)
    store.subscriptions[USER] = {"foo2/bar1", "foo2/bar2", "baz2/bar2", "baz2/bar22", "baz2/bar222", "eps2",
                                 "eps2/mamba", "qux2/bar2"}
    c = connect(store)
    c.expect('D03 LIST (RECURSIVEMATCH SUBSCRIBED) "" "*2"',
             '* LIST (\\HasNoChildren \\Subscribed) "/" "baz2/bar2"',
             '* LIST (\\HasNoChildren \\Subscribed) "/" "baz2/bar22"',
             '* LIST (\\HasNoChildren \\Subscribed) "/" "baz2/bar222"',
             '* LIST (\\HasChildren \\Subscribed) "/" "eps2" ("CHILDINFO" ("SUBSCRIBED"))',
             '* LIST (\\HasChildren) "/" "foo2" ("CHILDINFO" ("SUBSCRIBED"))',
             '* LIST (\\HasNoChildren \\Subscribed) "/" "foo2/bar2"',
             '* LIST (\\HasNoChildren \\Subscribed) "/" "qux2/bar2"',
             "D03 OK LIST completed")
