"""CAPABILITY NOOP CHECK LOGOUT ID LOGIN AUTHENTICATE ENABLE STARTTLS
UNAUTHENTICATE, byte for byte over the in-memory backend (RFC 9051 6.1-6.2,
6.3.1; RFC 2971; RFC 4959 SASL-IR; RFC 5161 ENABLE; RFC 8437)."""

from __future__ import annotations

import base64

from mailyard.protocols.contract import AbuseBudgets
from mailyard.protocols.imap.engine import State
from mailyard.protocols.imap.session import ImapConfig

from .helpers import Client, connect, store_with_mail

AFTER_LOGIN = (
    "IMAP4rev1 IMAP4rev2 LITERAL+ ENABLE IDLE ID NAMESPACE UNSELECT UIDPLUS MOVE CHILDREN LIST-EXTENDED "
    "LIST-STATUS SPECIAL-USE CREATE-SPECIAL-USE ESEARCH SEARCHRES WITHIN CONDSTORE QRESYNC BINARY MULTIAPPEND "
    "UTF8=ACCEPT STATUS=SIZE COMPRESS=DEFLATE OBJECTID PREVIEW CATENATE SORT SORT=DISPLAY ESORT THREAD=ORDEREDSUBJECT "
    "THREAD=REFERENCES CONTEXT=SEARCH CONTEXT=SORT PARTIAL QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE SAVEDATE APPENDLIMIT=52428800"
)
LOGGED_IN = f"{AFTER_LOGIN} UNAUTHENTICATE"  # RFC 8437 3: advertised once logged in


def fresh(**kw: object) -> Client:
    return connect(store_with_mail(), user=None, **kw)


def test_greeting_carries_the_capabilities() -> None:
    c = fresh()
    assert c.conv.greeting == (
        f"* OK [CAPABILITY {AFTER_LOGIN} SASL-IR AUTH=PLAIN] mailyard IMAP4rev2 server ready\r\n".encode()
    )


def test_capability_before_and_after_login() -> None:
    c = fresh()
    c.expect("a1 CAPABILITY", f"* CAPABILITY {AFTER_LOGIN} SASL-IR AUTH=PLAIN", "a1 OK CAPABILITY completed")
    c.expect("a2 LOGIN alice secret", f"a2 OK [CAPABILITY {LOGGED_IN}] Logged in")
    assert c.conv.logged_in  # the I/O side was told (longer autologout timer)
    c.expect("a3 CAPABILITY", f"* CAPABILITY {LOGGED_IN}", "a3 OK CAPABILITY completed")


def test_clear_text_refused_without_tls_rfc9051_6_2_3() -> None:
    c = fresh(plaintext=False, can_start_tls=True)
    c.expect("a1 CAPABILITY", f"* CAPABILITY {AFTER_LOGIN} STARTTLS SASL-IR LOGINDISABLED",
             "a1 OK CAPABILITY completed")
    c.expect("a2 LOGIN alice secret", "a2 NO [PRIVACYREQUIRED] Use TLS first")
    c.expect("a3 AUTHENTICATE PLAIN", "a3 NO [PRIVACYREQUIRED] Use TLS first, or SCRAM-SHA-256")
    assert c.session.engine.state is State.NOT_AUTHENTICATED


def test_login_failures_end_the_session() -> None:
    c = fresh(config=ImapConfig(budgets=AbuseBudgets(max_auth_failures=2)))
    c.expect("a1 LOGIN alice wrong", "a1 NO [AUTHENTICATIONFAILED] Invalid credentials")
    c.expect("a2 LOGIN nobody secret", "a2 NO [AUTHENTICATIONFAILED] Invalid credentials",
             "* BYE Too many failed logins")
    assert c.conv.closed
    assert c.send("a3 NOOP") == b""


def test_login_with_literals_rfc9051_7_6() -> None:
    c = fresh()
    assert c.send(b"a1 LOGIN {5}\r\n") == b"+ Ready for literal data\r\n"
    c.expect(b"alice {6+}\r\nsecret\r\n", f"a1 OK [CAPABILITY {LOGGED_IN}] Logged in")


def test_commands_outside_their_state_are_bad() -> None:
    c = fresh()
    c.expect("a1 SELECT INBOX", "a1 BAD SELECT is not valid in the not authenticated state")
    c.expect("a2 LOGIN alice secret", f"a2 OK [CAPABILITY {LOGGED_IN}] Logged in")
    c.expect("a3 LOGIN alice secret", "a3 BAD LOGIN is not valid in the authenticated state")
    c.expect("a4 FETCH 1 FLAGS", "a4 BAD FETCH is not valid in the authenticated state")


def test_authenticate_plain_with_continuation_rfc9051_6_2_2() -> None:
    c = fresh()
    c.expect("a1 AUTHENTICATE PLAIN", "+ ")
    c.expect(base64.b64encode(b"\0alice\0secret").decode(), f"a1 OK [CAPABILITY {LOGGED_IN}] Logged in")
    assert c.session.engine.state is State.AUTHENTICATED


def test_authenticate_plain_initial_response_rfc4959() -> None:
    c = fresh()
    token = base64.b64encode(b"alice\0alice\0secret").decode()
    c.expect(f"a1 AUTHENTICATE plain {token}", f"a1 OK [CAPABILITY {LOGGED_IN}] Logged in")


def test_authenticate_cancel_malformed_wrong_and_unknown() -> None:
    c = fresh()
    c.expect("a1 AUTHENTICATE PLAIN", "+ ")
    c.expect("*", "a1 BAD Authentication cancelled")  # RFC 9051 6.2.2
    c.expect("a2 AUTHENTICATE PLAIN !!!!", "a2 BAD Syntax error: expected initial response")
    c.expect("a3 AUTHENTICATE PLAIN bm90LXBsYWlu", "a3 BAD Malformed authentication data")
    wrong = base64.b64encode(b"\0alice\0wrong").decode()
    c.expect(f"a4 AUTHENTICATE PLAIN {wrong}", "a4 NO [AUTHENTICATIONFAILED] Invalid credentials")
    c.expect("a5 AUTHENTICATE X-UNKNOWN", "a5 NO [CANNOT] Unsupported authentication mechanism X-UNKNOWN")


def test_authenticate_waits_for_its_line_and_ends_with_the_input() -> None:
    c = fresh()
    c.expect("a1 AUTHENTICATE PLAIN", "+ ")
    assert c.poll() == b""  # still waiting for the client's line
    assert c.conv.end_input() == b"* BYE Connection closed\r\n"


def test_noop_check_id_namespace_logout() -> None:
    c = connect(select="INBOX")
    c.expect("a1 NOOP", "a1 OK NOOP completed")
    c.expect("a2 CHECK", "a2 OK CHECK completed")
    c.expect('a3 ID ("name" "test")', '* ID ("name" "mailyard" "version" "0")', "a3 OK ID completed")
    c.expect("a4 NAMESPACE", '* NAMESPACE (("" "/")) NIL NIL', "a4 OK NAMESPACE completed")
    c.expect("a5 LOGOUT", "* BYE mailyard IMAP server logging out", "a5 OK LOGOUT completed")
    assert c.conv.closed


def test_enable_lists_only_what_it_newly_enabled_rfc5161_3_1() -> None:
    c = connect()
    c.expect("a1 ENABLE CONDSTORE X-UNKNOWN", "* ENABLED CONDSTORE", "a1 OK ENABLE completed")
    c.expect("a2 ENABLE CONDSTORE IMAP4rev2", "* ENABLED IMAP4rev2", "a2 OK ENABLE completed")
    c.expect("a3 ENABLE QRESYNC", "* ENABLED QRESYNC", "a3 OK ENABLE completed")
    assert {"IMAP4REV2", "CONDSTORE", "QRESYNC"} <= c.session.engine.enabled
    c.untagged("a4 SELECT INBOX")
    c.expect("a5 ENABLE UTF8=ACCEPT", "a5 BAD ENABLE is not valid in the selected state")


def test_starttls_and_injection_rfc9051_6_2_1() -> None:
    c = fresh(plaintext=False, can_start_tls=True)
    # a command pipelined after STARTTLS in the clear is discarded (RFC 3207 4.2)
    c.expect("a1 STARTTLS\r\na2 LOGIN alice secret", "a1 OK Begin TLS negotiation now")
    assert c.conv.tls_started == 1 and c.conv.tls_active
    c.expect("a3 CAPABILITY", f"* CAPABILITY {AFTER_LOGIN} SASL-IR AUTH=PLAIN", "a3 OK CAPABILITY completed")
    c.expect("a4 STARTTLS", "a4 BAD TLS is already active")


def test_starttls_not_configured() -> None:
    c = fresh()
    c.expect("a1 STARTTLS", "a1 BAD STARTTLS is not available")


def test_over_a_login_limit_any_login_is_refused_for_now() -> None:
    c = fresh()
    c.conv.login.locked = True
    c.expect("a1 LOGIN alice secret", "a1 NO [UNAVAILABLE] Too many failed logins, try again later")
    token = base64.b64encode(b"\0alice\0secret").decode()
    c.expect(f"a2 AUTHENTICATE PLAIN {token}", "a2 NO [UNAVAILABLE] Too many failed logins, try again later")
    c.conv.login.locked = False
    c.expect("a3 LOGIN alice secret", f"a3 OK [CAPABILITY {LOGGED_IN}] Logged in")


def test_an_authenticate_left_open_counts_as_a_failure() -> None:
    c = fresh()
    c.expect("a1 AUTHENTICATE PLAIN", "+ ")
    assert c.conv.login.failures == 0
    c.conv.end_input()
    assert c.conv.login.failures == 1
    c = fresh()
    c.expect("a1 AUTHENTICATE PLAIN", "+ ")
    c.conv.close()  # the connection is lost mid-exchange
    assert c.conv.login.failures == 1


def test_unauthenticate_returns_to_not_authenticated_rfc8437_3() -> None:
    """RFC 8437 3: only after login (advertised then, BAD before); OK moves to
    the not-authenticated state (transition 7) with the selected mailbox
    closed without an expunge; a new LOGIN works, also as another user."""
    store = store_with_mail()
    c = connect(store, user=None)
    c.expect("a1 UNAUTHENTICATE", "a1 BAD UNAUTHENTICATE is not valid in the not authenticated state")
    c.expect("a2 LOGIN alice secret", f"a2 OK [CAPABILITY {LOGGED_IN}] Logged in")
    c.untagged("a3 SELECT INBOX")
    c.expect("a4 STORE 1 +FLAGS.SILENT (\\Deleted)", "a4 OK STORE completed")
    c.expect("a5 UNAUTHENTICATE", "a5 OK Completed, now in not authenticated state")
    assert c.session.engine.state is State.NOT_AUTHENTICATED and not c.conv.logged_in
    assert c.session.backend is None and c.session.sel is None
    c.expect("a6 SELECT INBOX", "a6 BAD SELECT is not valid in the not authenticated state")
    c.expect("a7 CAPABILITY", f"* CAPABILITY {AFTER_LOGIN} SASL-IR AUTH=PLAIN", "a7 OK CAPABILITY completed")
    c.expect("a8 LOGIN bob hunter2", f"a8 OK [CAPABILITY {LOGGED_IN}] Logged in")
    c.expect("a9 STATUS INBOX (MESSAGES)", '* STATUS "INBOX" (MESSAGES 0)', "a9 OK STATUS completed")
    c.expect("b1 UNAUTHENTICATE", "b1 OK Completed, now in not authenticated state")
    c.expect("b2 LOGIN alice secret", f"b2 OK [CAPABILITY {LOGGED_IN}] Logged in")
    # no expunge happened: the \\Deleted message is still there
    c.expect("b3 STATUS INBOX (MESSAGES DELETED)", '* STATUS "INBOX" (MESSAGES 3 DELETED 1)',
             "b3 OK STATUS completed")


def test_unauthenticate_resets_enabled_extensions_and_searchres_rfc8437_4_1() -> None:
    """RFC 8437 4.1: ENABLEd extensions (CONDSTORE, QRESYNC, UTF8=ACCEPT)
    cease; the SEARCHRES "$" is empty; the account's change notifications stop."""
    store = store_with_mail()
    c = connect(store, enable="UTF8=ACCEPT CONDSTORE")
    c.untagged('a1 CREATE "\u00e4"')
    c.untagged("a2 SELECT INBOX")
    c.untagged("a3 SEARCH RETURN (SAVE) ALL")
    assert len(store._listeners) == 1
    c.expect("a4 UNAUTHENTICATE", "a4 OK Completed, now in not authenticated state")
    assert store._listeners == [] and c.session.engine.enabled == set()
    c.untagged("a5 LOGIN alice secret")
    # modified UTF-7 again, and CONDSTORE is newly enabled
    c.expect('a6 LIST "" "&AOQ-"', '* LIST (\\HasNoChildren) "/" "&AOQ-"', "a6 OK LIST completed")
    c.expect("a7 ENABLE CONDSTORE UTF8=ACCEPT", "* ENABLED CONDSTORE UTF8=ACCEPT", "a7 OK ENABLE completed")
    c.untagged("a8 SELECT INBOX")
    c.expect("a9 FETCH $ (UID)", "a9 OK FETCH completed")  # RFC 5182: nothing saved in this session


def test_unauthenticate_can_be_turned_off_rfc8437_8() -> None:
    c = connect(store_with_mail(), user=None, config=ImapConfig(unauthenticate=False))
    c.expect("a1 LOGIN alice secret", f"a1 OK [CAPABILITY {AFTER_LOGIN}] Logged in")
    c.expect("a2 UNAUTHENTICATE", "a2 BAD UNAUTHENTICATE is not available")
    assert c.session.engine.state is State.AUTHENTICATED
