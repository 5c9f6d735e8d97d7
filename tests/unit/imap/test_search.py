"""SEARCH and UID SEARCH, byte for byte (RFC 9051 6.4.4; ESEARCH RFC 4731;
SEARCHRES RFC 5182; MODSEQ RFC 7162 3.1.5; WITHIN RFC 5032)."""

from __future__ import annotations

from .helpers import connect, store_with_mail


def test_rev1_search_form() -> None:
    c = connect(select="INBOX")
    c.expect("a1 SEARCH UNSEEN", "* SEARCH 2 3", "a1 OK SEARCH completed")
    c.expect("a2 UID SEARCH SUBJECT parts", "* SEARCH 2", "a2 OK UID SEARCH completed")
    c.expect("a3 SEARCH DELETED", "* SEARCH", "a3 OK SEARCH completed")


def test_keys_from_the_indexes_and_per_message() -> None:
    c = connect(select="INBOX")
    c.expect("a1 SEARCH BODY tomorrow", "* SEARCH 1", "a1 OK SEARCH completed")
    c.expect("a2 SEARCH TEXT jorg NOT SEEN", "* SEARCH 2", "a2 OK SEARCH completed")
    c.expect("a3 SEARCH HEADER Message-Id B27397", "* SEARCH 1", "a3 OK SEARCH completed")
    c.expect("a4 SEARCH OR SEEN FROM bob", "* SEARCH 1 3", "a4 OK SEARCH completed")
    c.expect("a5 SEARCH SENTBEFORE 1-Jan-2000 LARGER 100", "* SEARCH 1", "a5 OK SEARCH completed")
    c.expect("a6 SEARCH 2:* UID 1:2", "* SEARCH 2", "a6 OK SEARCH completed")
    c.expect('a7 SEARCH SUBJECT "no such"', "* SEARCH", "a7 OK SEARCH completed")


def test_recent_and_within_rfc5032() -> None:
    store = store_with_mail()
    c = connect(store, select="INBOX")
    c.expect("a1 SEARCH RECENT YOUNGER 60", "* SEARCH 1 2 3", "a1 OK SEARCH completed")
    store.clock += 3600
    c.expect("a2 SEARCH OLDER 3000", "* SEARCH 1 2 3", "a2 OK SEARCH completed")
    c.expect("a3 SEARCH YOUNGER 3000", "* SEARCH", "a3 OK SEARCH completed")


def test_esearch_return_options_rfc4731() -> None:
    c = connect(select="INBOX")
    c.expect("a1 SEARCH RETURN (MIN MAX COUNT ALL) ALL", '* ESEARCH (TAG "a1") MIN 1 MAX 3 ALL 1:3 COUNT 3',
             "a1 OK SEARCH completed")
    c.expect("a2 SEARCH RETURN () OR SEEN FROM bob", '* ESEARCH (TAG "a2") ALL 1,3', "a2 OK SEARCH completed")
    c.expect("a3 UID SEARCH RETURN (COUNT) UID 2:*", '* ESEARCH (TAG "a3") UID COUNT 2',
             "a3 OK UID SEARCH completed")
    c.expect("a4 SEARCH RETURN (MIN ALL) DELETED", '* ESEARCH (TAG "a4")', "a4 OK SEARCH completed")


def test_rev2_answers_with_esearch_rfc9051_6_4_4() -> None:
    c = connect(select="INBOX", enable="IMAP4rev2")
    c.expect("a1 SEARCH UNSEEN", '* ESEARCH (TAG "a1") ALL 2:3', "a1 OK SEARCH completed")


def test_searchres_save_and_dollar_rfc5182() -> None:
    c = connect(select="INBOX")
    c.expect("a1 SEARCH RETURN (SAVE) UNSEEN", "a1 OK SEARCH completed")
    c.expect("a2 SEARCH $", "* SEARCH 2 3", "a2 OK SEARCH completed")
    c.expect("a3 UID SEARCH UID $ SUBJECT short", "* SEARCH 3", "a3 OK UID SEARCH completed")
    # RFC 5182 2.4: with MIN alone only the minimum is saved
    c.expect("a4 SEARCH RETURN (SAVE MIN) UNSEEN", '* ESEARCH (TAG "a4") MIN 2', "a4 OK SEARCH completed")
    c.expect("a5 SEARCH $", "* SEARCH 2", "a5 OK SEARCH completed")


def test_modseq_rfc7162_3_1_5() -> None:
    c = connect(select="INBOX")
    c.expect("a1 SEARCH MODSEQ 2", "* OK [HIGHESTMODSEQ 3] Highest", "* SEARCH 2 3 (MODSEQ 3)", "a1 OK SEARCH completed")
    c.expect("a2 SEARCH RETURN (MAX) MODSEQ 1", '* ESEARCH (TAG "a2") MAX 3 MODSEQ 3', "a2 OK SEARCH completed")
    c.expect("a3 SEARCH MODSEQ 99", "* SEARCH", "a3 OK SEARCH completed")


def test_unsupported_charset_rfc9051_6_4_4() -> None:
    c = connect(select="INBOX")
    c.expect("a1 SEARCH CHARSET KOI8-R ALL", "a1 NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset")
    c.expect("a2 SEARCH CHARSET UTF-8 SUBJECT short", "* SEARCH 3", "a2 OK SEARCH completed")


ADDRESSES = (
    b"From: <user-from (comment)@ (comment) domain.org>\r\nTo: user@domain.example (Real Name)\r\n"
    b"Cc: =?utf-8?q?J=C3=B6rg?= <joerg@d.example>\r\nBcc: Team: a@t.example, b@t.example;\r\n"
    b"Subject: addr\r\n\r\nbody\r\n"
)


def test_address_keys_match_the_parsed_addresses_rfc9051_6_4_4() -> None:
    """FROM/TO/CC/BCC match the addresses as ENVELOPE gives them
    (mailbox@host, personal name), besides the field text: comments inside
    the address do not hide it. As Dovecot."""
    c = connect(store_with_mail(ADDRESSES, b"From: other@domain.org\r\n\r\nx\r\n"), select="INBOX")
    c.expect('a1 SEARCH FROM "user-from@domain.org"', "* SEARCH 1", "a1 OK SEARCH completed")
    c.expect('a2 SEARCH TO "Real Name"', "* SEARCH 1", "a2 OK SEARCH completed")
    c.expect('a3 SEARCH CC "jörg <joerg@d"', "* SEARCH 1", "a3 OK SEARCH completed")  # the field text
    c.expect('a4 SEARCH BCC "b@t.example" FROM "domain.org"', "* SEARCH 1", "a4 OK SEARCH completed")
    c.expect('a5 SEARCH HEADER From "user-from@domain"', "* SEARCH 1", "a5 OK SEARCH completed")
    c.expect('a6 SEARCH TO "user-from@domain.org"', "* SEARCH", "a6 OK SEARCH completed")
