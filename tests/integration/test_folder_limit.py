"""The most folders of one account (``[limits] max_mailboxes``) on every
path that makes one: IMAP CREATE and the parents a CREATE or RENAME makes
(``NO [LIMIT]``, RFC 5530 3, and the session carries on), and the
webmail's new folder (a notice saying why). The bound is checked in the
store's write, on SQLite and PostgreSQL."""

from __future__ import annotations

import imaplib
from collections.abc import Callable

import pytest

from tests.conftest import USERS, RunningServer
from tests.integration.test_web_http import csrf, login

ALICE = "alice@example.test"
# a new account has six: INBOX, Drafts, Sent, Trash, Junk, Archive
BOUND = 8

pytestmark = pytest.mark.both_backends


@pytest.fixture
def bounded(make_server: Callable[..., RunningServer]) -> RunningServer:
    def configure(cfg) -> None:  # noqa: ANN001
        cfg.limits.max_mailboxes = BOUND

    return make_server(configure=configure)


def imap(server: RunningServer) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    m.login(ALICE, USERS[ALICE])
    return m


def names(m: imaplib.IMAP4) -> set[str]:
    typ, data = m.list('""', "*")
    assert typ == "OK"
    return {line.decode().rsplit(' "/" ', 1)[1].strip('"') for line in data if line}


def test_imap_create_past_the_bound_is_no_limit_and_the_session_goes_on(bounded: RunningServer) -> None:
    m = imap(bounded)
    try:
        assert m.create("One")[0] == "OK"
        assert m.create("Two")[0] == "OK"
        typ, data = m.create("Three")
        assert typ == "NO" and data[0].startswith(b"[LIMIT]"), data
        assert b"most folders allowed (8)" in data[0]
        # a CREATE that needs a parent too is refused before it makes one
        m.delete("Two")
        typ, data = m.create("Deep/Three")
        assert typ == "NO" and data[0].startswith(b"[LIMIT]"), data
        assert m.noop()[0] == "OK"
        assert m.create("Three")[0] == "OK"  # room again after the DELETE
        assert {"One", "Three"} <= names(m) and "Two" not in names(m)
    finally:
        m.logout()


def test_imap_rename_that_makes_parents_past_the_bound_is_no_limit(bounded: RunningServer) -> None:
    m = imap(bounded)
    try:
        assert m.create("One")[0] == "OK"
        assert m.create("Two")[0] == "OK"
        # RFC 9051 6.3.6: RENAME makes the new name's missing superiors
        typ, data = m.rename("Two", "Box/Two")
        assert typ == "NO" and data[0].startswith(b"[LIMIT]"), data
        assert m.noop()[0] == "OK"
        assert "Two" in names(m) and "Box/Two" not in names(m)
        assert m.rename("Two", "Deux")[0] == "OK"  # a plain rename makes none
        # renaming INBOX makes a new mailbox for its messages (RFC 9051 6.3.6)
        typ, data = m.rename("INBOX", "Old")
        assert typ == "NO" and data[0].startswith(b"[LIMIT]"), data
    finally:
        m.logout()


def test_webmail_new_folder_past_the_bound_shows_why(bounded: RunningServer) -> None:
    client = login(bounded)
    token = csrf(client)
    for name in ("One", "Two"):
        r = client.post("/folders", data={"csrf": token, "action": "create", "name": name, "parent": ""})
        assert r.status_code == 303, r.text
    r = client.post("/folders", data={"csrf": token, "action": "create", "name": "Three", "parent": ""})
    assert r.status_code == 400
    assert 'role="alert"' in r.text and "the account has the most folders allowed (8)" in r.text
    assert bounded.call(bounded.store.get_mailbox(bounded.call(bounded.store.get_account(ALICE)).id,
                                                  "Three")) is None
