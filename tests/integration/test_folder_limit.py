"""The most folders of one account (``[limits] max_mailboxes``) on every
path that makes one: IMAP CREATE and the parents a CREATE or RENAME makes
(``NO [LIMIT]``, RFC 5530 3, and the session carries on), and the
webmail's new folder (a notice saying why); and the most subscriptions,
twice as many (SUBSCRIBE ``NO [LIMIT]``). The bound is checked in the
store's write, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import imaplib
import threading
from collections.abc import Callable
from typing import Any

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


@pytest.mark.parametrize("command", ["create", "rename"])
def test_a_refused_command_loses_no_message_another_session_put_meanwhile(
        bounded: RunningServer, command: str) -> None:
    """A CREATE or RENAME that needs two superiors where the account has
    room for one is refused having made nothing: no superior is made and
    deleted again, so nothing another session put in it meanwhile (an
    APPEND, a Sieve fileinto, a webmail move) can go with it. The store's
    calls are watched: when one of them is for a name below the superior
    while the superior exists, a second session APPENDs to it right then."""
    store = bounded.store
    parent, target = ("Deep", "Deep/Three") if command == "create" else ("A", "A/B/One")
    real_create, real_rename = store.create_mailbox, store.rename_mailbox
    reached = threading.Event()
    appended = threading.Event()
    seen: dict[str, bool] = {}

    async def meanwhile(account_id: int, name: str) -> None:
        if name.startswith(parent + "/") and not reached.is_set():
            seen["parent"] = await store.get_mailbox(account_id, parent) is not None
            reached.set()
            if seen["parent"]:
                # the other session's APPEND, while this command is under way
                await asyncio.to_thread(appended.wait, 30)

    async def create(account_id: int, name: str, *args: Any, **kw: Any) -> Any:
        await meanwhile(account_id, name)
        return await real_create(account_id, name, *args, **kw)

    async def rename(account_id: int, old: str, new: str, *args: Any, **kw: Any) -> Any:
        await meanwhile(account_id, new)
        return await real_rename(account_id, old, new, *args, **kw)

    store.create_mailbox = create  # type: ignore[method-assign]
    store.rename_mailbox = rename  # type: ignore[method-assign]
    m1, m2 = imap(bounded), imap(bounded)
    try:
        assert m1.create("One")[0] == "OK"  # 7 of 8: room for one more
        result: dict[str, Any] = {}
        run = (lambda: m1.create(target)) if command == "create" else (lambda: m1.rename("One", target))
        worker = threading.Thread(target=lambda: result.update(answer=run()))
        worker.start()
        assert reached.wait(30)
        if seen["parent"]:
            typ, data = m2.append(parent, None, None, b"Subject: kept\r\n\r\nimportant\r\n")
            assert typ == "OK", data
        appended.set()
        worker.join(30)
        typ, data = result["answer"]
        assert typ == "NO" and data[0].startswith(b"[LIMIT]"), data
        listed = names(m1)
        if seen["parent"]:
            assert parent in listed, "the message another session APPENDed went with its mailbox"
            typ, data = m2.select(parent)
            assert typ == "OK" and data == [b"1"], data
        assert parent not in listed and target not in listed  # a refusal makes nothing
        assert m1.noop()[0] == "OK" and m2.noop()[0] == "OK"
    finally:
        store.create_mailbox, store.rename_mailbox = real_create, real_rename  # type: ignore[method-assign]
        m1.logout()
        m2.logout()


def test_two_sessions_making_the_same_new_parent_both_succeed(make_server: Callable[..., RunningServer]) -> None:
    """Two CREATEs under the same new parent at once (RFC 9051 6.3.4: the
    server makes the superior): both are made, neither is answered
    ALREADYEXISTS for a child that does not exist; and a CREATE under a
    parent that exists already is fine. The store's calls are held until
    both commands have looked for the parent, so each finds it missing."""
    server = make_server()
    store = server.store
    real_create = store.create_mailbox
    calls: list[str] = []
    both = asyncio.Event()

    async def create(account_id: int, name: str, *args: Any, **kw: Any) -> Any:
        calls.append(name)
        if name == "Shared":
            if calls.count("Shared") == 2:
                both.set()
            else:
                await asyncio.wait_for(both.wait(), 10)
        return await real_create(account_id, name, *args, **kw)

    store.create_mailbox = create  # type: ignore[method-assign]
    m1, m2 = imap(server), imap(server)
    try:
        answers: dict[str, Any] = {}
        workers = [threading.Thread(target=lambda m=m, n=n: answers.update({n: m.create(n)}))
                   for m, n in ((m1, "Shared/One"), (m2, "Shared/Two"))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert answers["Shared/One"][0] == "OK", answers
        assert answers["Shared/Two"][0] == "OK", answers
        assert m1.create("Shared/Three")[0] == "OK"  # the parent exists already
        assert {"Shared", "Shared/One", "Shared/Two", "Shared/Three"} <= names(m1)
    finally:
        store.create_mailbox = real_create  # type: ignore[method-assign]
        m1.logout()
        m2.logout()


def test_imap_subscribe_past_twice_the_bound_is_no_limit(bounded: RunningServer) -> None:
    """An account subscribes to at most twice ``max_mailboxes`` names
    (RFC 9051 6.3.7: names that need not exist, and a deleted mailbox keeps
    its subscription): one more is ``NO [LIMIT]``, a name subscribed
    already is still fine, and an UNSUBSCRIBE makes room again."""
    m = imap(bounded)
    try:
        typ, data = m.lsub('""', "*")
        start = len([line for line in data if line])  # a new account's own six
        for n in range(2 * BOUND - start):
            assert m.subscribe(f"Gone/{n}")[0] == "OK"
        typ, data = m.subscribe("Gone/more")
        assert typ == "NO" and data[0].startswith(b"[LIMIT]"), data
        assert m.subscribe("Gone/0")[0] == "OK"  # subscribed already
        assert m.unsubscribe("Gone/1")[0] == "OK"
        assert m.subscribe("Gone/more")[0] == "OK"
        typ, data = m.lsub('""', "*")
        assert len([line for line in data if line]) == 2 * BOUND
    finally:
        m.logout()
