"""The Undo of the webmail's Delete, Archive, Spam and Move (web/undomove.py,
actions.py ``undo_move``) over HTTP without JavaScript: the notice's form moves
exactly the moved messages back, with their flags, once; a message moved on
since is skipped; another account's or a made-up token moves nothing; an
action over the cap offers no Undo. The browser test (the ``z`` key) is in
tests/e2e/test_web_undomove_browser.py, learning in test_spam_learning.py."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from ..conftest import RunningServer
from .test_web_http import ALICE, BOB, append, box_id, csrf, login, simple

httpx = pytest.importorskip("httpx")


@pytest.fixture
def web(mailserver: RunningServer) -> RunningServer:
    return mailserver


def flags(server: RunningServer, user: str, mailbox: str) -> list[frozenset[str]]:
    async def go() -> list[frozenset[str]]:
        account = await server.store.get_account(user)
        box = await server.store.get_mailbox(account.id, mailbox)
        return [m.flags for m in await server.store.list_messages(box)]

    return server.call(go())


def undo_form(client: httpx.Client, location: str) -> str | None:
    """The token of the Undo form on the page ``location`` leads to, None without one."""
    page = client.get(location)
    assert page.status_code == 200
    form = re.search(r'<div class="notice" role="status" id="notice">.*?</div>', page.text, re.S)
    if form is None:
        assert 'id="undo-move"' not in page.text
        return None
    assert 'action="/undo-move"' in form.group(0) and 'id="undo-move"' in form.group(0)
    assert f'name="csrf" value="{csrf(client)}"' in form.group(0)
    return re.search(r'name="token" value="([^"]+)"', form.group(0)).group(1)


@pytest.mark.parametrize(("action", "folder"), [
    ("delete", "Trash"), ("archive", "Archive"), ("spam", "Junk"), ("move", "Projects"),
])
def test_undo_moves_the_messages_back_with_their_flags(web: RunningServer, action: str, folder: str) -> None:
    data = simple("oops")
    append(web, ALICE, data, flags=("\\Seen", "\\Flagged", "$label1"))
    stays = simple("stays")
    append(web, ALICE, stays)
    if folder == "Projects":
        web.call(web.store.create_mailbox(web.call(web.store.get_account(ALICE)).id, "Projects"))
    inbox = box_id(web, ALICE, "INBOX")
    client = login(web)
    token = csrf(client)
    r = client.post(f"/box/{inbox}/action", data={"uid": "1", "action": action, "csrf": token,
                                                  "target": box_id(web, ALICE, folder)})
    assert r.status_code == 303
    assert f"1 moved to {folder}." in parse_qs(urlsplit(r.headers["location"]).query)["notice"]
    assert web.messages(ALICE, folder) == [data]
    undo = undo_form(client, r.headers["location"])
    assert undo is not None

    r = client.post("/undo-move", data={"csrf": token, "token": undo})
    assert r.status_code == 303
    assert r.headers["location"] == f"/box/{inbox}?notice=Moved%20back."
    assert web.messages(ALICE, folder) == []
    assert sorted(web.messages(ALICE)) == sorted([data, stays])
    assert {"\\Seen", "\\Flagged", "$label1"} <= set(flags(web, ALICE, "INBOX")[-1])
    page = client.get(r.headers["location"])
    assert '<p class="notice" role="status">Moved back.</p>' in page.text
    # the page of the action, reloaded, offers it no more; the form posted
    # again goes where the first went and moves nothing more
    assert undo_form(client, f"/box/{inbox}?undo={undo}&notice=x") is None
    again = client.post("/undo-move", data={"csrf": token, "token": undo})
    assert again.status_code == 303 and again.headers["location"] == r.headers["location"]
    assert len(web.messages(ALICE)) == 2 and web.messages(ALICE, folder) == []


def test_a_message_moved_on_since_is_skipped(web: RunningServer) -> None:
    one, two = simple("one"), simple("two")
    for data in (one, two):
        append(web, ALICE, data)
    inbox, trash = box_id(web, ALICE, "INBOX"), box_id(web, ALICE, "Trash")
    client = login(web)
    token = csrf(client)
    r = client.post(f"/box/{inbox}/action", data={"uid": ["1", "2"], "action": "delete", "csrf": token})
    undo = undo_form(client, r.headers["location"])
    # one of them goes on from the Trash to the Archive
    client.post(f"/box/{trash}/action", data={"uid": "1", "action": "archive", "csrf": token})
    assert web.messages(ALICE, "Archive") == [one]

    r = client.post("/undo-move", data={"csrf": token, "token": undo})
    assert r.status_code == 303
    assert "1 of 2 moved back" in parse_qs(urlsplit(r.headers["location"]).query)["notice"][0]
    assert web.messages(ALICE) == [two]
    assert web.messages(ALICE, "Archive") == [one]
    assert web.messages(ALICE, "Trash") == []


def test_an_undo_after_the_folder_was_deleted_says_so(web: RunningServer) -> None:
    """The folder the messages came from is gone: they stay where the action
    put them, and the answer says why (not a bare "no such folder")."""
    data = simple("from a folder")
    account = web.call(web.store.get_account(ALICE))
    web.call(web.store.create_mailbox(account.id, "Projects"))
    append(web, ALICE, data, mailbox="Projects")
    projects, trash = box_id(web, ALICE, "Projects"), box_id(web, ALICE, "Trash")
    client = login(web)
    token = csrf(client)
    r = client.post(f"/box/{projects}/action", data={"uid": "1", "action": "delete", "csrf": token})
    undo = undo_form(client, r.headers["location"])
    web.call(web.store.delete_mailbox(account.id, "Projects"))

    r = client.post("/undo-move", data={"csrf": token, "token": undo})
    assert r.status_code == 303 and r.headers["location"].startswith(f"/box/{trash}?")
    assert parse_qs(urlsplit(r.headers["location"]).query)["notice"] == [
        "Not moved back: the folder they came from is gone."]
    assert web.messages(ALICE, "Trash") == [data]


def test_a_forged_or_another_accounts_undo_moves_nothing(web: RunningServer) -> None:
    deleted, archived = simple("deleted"), simple("kept in the archive")
    append(web, ALICE, deleted)
    kept = append(web, ALICE, archived, mailbox="Archive")
    inbox = box_id(web, ALICE, "INBOX")
    alice = login(web)
    token = csrf(alice)
    r = alice.post(f"/box/{inbox}/action", data={"uid": "1", "action": "delete", "csrf": token})
    undo = undo_form(alice, r.headers["location"])
    assert undo is not None

    bob = login(web, BOB)
    bob_token = csrf(bob)
    assert bob.post("/undo-move", data={"csrf": bob_token, "token": undo}).status_code == 404
    # Bob's own page does not offer Alice's Undo either
    assert undo_form(bob, f"/box/{box_id(web, BOB, 'INBOX')}?undo={undo}&notice=x") is None
    assert alice.post("/undo-move", data={"token": undo}).status_code == 403  # no CSRF token
    for forged in ("A" * 22, undo[:-1], "", "../1"):
        assert alice.post("/undo-move", data={"csrf": token, "token": forged}).status_code == 404
    assert web.messages(ALICE) == [] and web.messages(ALICE, "Trash") == [deleted]

    # the form's other fields name nothing: only what the action moved goes back
    r = alice.post("/undo-move", data={"csrf": token, "token": undo, "uid": str(kept),
                                       "source": box_id(web, ALICE, "Archive"), "target": inbox})
    assert r.status_code == 303
    assert web.messages(ALICE) == [deleted]
    assert web.messages(ALICE, "Archive") == [archived]


def test_an_action_over_the_cap_offers_no_undo(web: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mailyard.web.undomove.MAX_UIDS", 2)
    sent = [simple(f"m{i}") for i in range(5)]
    for data in sent:
        append(web, ALICE, data)
    inbox = box_id(web, ALICE, "INBOX")
    client = login(web)
    token = csrf(client)
    r = client.post(f"/box/{inbox}/action", data={"uid": ["1", "2", "3"], "action": "delete", "csrf": token})
    assert "undo=" not in r.headers["location"]
    assert undo_form(client, r.headers["location"]) is None
    r = client.post(f"/box/{inbox}/action", data={"uid": ["4", "5"], "action": "delete", "csrf": token})
    undo = undo_form(client, r.headers["location"])
    assert undo is not None
    client.post("/undo-move", data={"csrf": token, "token": undo})
    assert sorted(web.messages(ALICE)) == sorted(sent[3:])
