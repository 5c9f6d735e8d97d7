"""Webmail layout over plain HTTP: the archive and spam actions behind the
e and ! shortcuts (the same CSRF-checked form as every other action), the
preview snippet of the list's rows, and the unread count in the page title.
The browser side is tests/e2e/test_web_layout.py."""

from __future__ import annotations

import re

import pytest

from mailyard.message.compose import compose, to_bytes

from ..conftest import RunningServer
from .test_web_http import ALICE, BOB, append, box_id, csrf, login

httpx = pytest.importorskip("httpx")


def subjects(server: RunningServer, user: str, mailbox: str) -> list[str]:
    return [re.search(rb"Subject: (.*)\r\n", m).group(1).decode() for m in server.messages(user, mailbox)]


def message(subject: str, text: str = "hello") -> bytes:
    return to_bytes(compose("Carol <carol@example.test>", ALICE, subject=subject, text=text))


def test_archive_and_spam_move_to_the_special_folders(mailserver: RunningServer) -> None:
    keep = append(mailserver, ALICE, message("Keep me"))
    old = append(mailserver, ALICE, message("Old news"))
    junk = append(mailserver, ALICE, message("Buy now"))
    client = login(mailserver)
    token = csrf(client)
    inbox, archive = box_id(mailserver, ALICE, "INBOX"), box_id(mailserver, ALICE, "Archive")

    r = client.post(f"/box/{inbox}/action", data={"uid": old, "action": "archive", "csrf": token})
    assert r.status_code == 303
    # the notice's Undo: web/undomove.py, tests/integration/test_web_undomove.py
    assert re.fullmatch(rf"/box/{inbox}\?notice=1%20moved%20to%20Archive\.&undo=[\w-]{{22}}", r.headers["location"])
    r = client.post(f"/box/{inbox}/action", data={"uid": junk, "action": "spam", "csrf": token,
                                                  "back": f"/box/{inbox}/msg/{junk}"})
    assert re.fullmatch(rf"/box/{inbox}\?notice=1%20moved%20to%20Junk\.&undo=[\w-]{{22}}", r.headers["location"])
    assert subjects(mailserver, ALICE, "INBOX") == ["Keep me"]
    assert subjects(mailserver, ALICE, "Archive") == ["Old news"]
    assert subjects(mailserver, ALICE, "Junk") == ["Buy now"]

    # archiving what is in the Archive already moves nothing
    r = client.post(f"/box/{archive}/action", data={"uid": 1, "action": "archive", "csrf": token})
    assert r.headers["location"] == f"/box/{archive}?notice=Already%20in%20Archive."
    assert subjects(mailserver, ALICE, "Archive") == ["Old news"]

    # without the CSRF token, or on another account's folder: refused
    r = client.post(f"/box/{inbox}/action", data={"uid": keep, "action": "archive"})
    assert r.status_code == 403
    bob_uid = append(mailserver, BOB, message("Bob's"))
    bob_inbox = box_id(mailserver, BOB, "INBOX")
    r = client.post(f"/box/{bob_inbox}/action", data={"uid": bob_uid, "action": "spam", "csrf": token})
    assert r.status_code == 404
    assert subjects(mailserver, ALICE, "INBOX") == ["Keep me"]
    assert len(mailserver.messages(BOB, "INBOX")) == 1 and mailserver.messages(BOB, "Junk") == []


def test_a_missing_special_folder_is_created(mailserver: RunningServer) -> None:
    async def drop_junk() -> None:
        account = await mailserver.store.get_account(ALICE)
        await mailserver.store.delete_mailbox(account.id, "Junk")

    mailserver.call(drop_junk())
    uid = append(mailserver, ALICE, message("Spam again"))
    client = login(mailserver)
    r = client.post(f"/box/{box_id(mailserver, ALICE, 'INBOX')}/action",
                    data={"uid": uid, "action": "spam", "csrf": csrf(client)})
    assert r.status_code == 303 and "notice=1%20moved%20to%20Junk.&" in r.headers["location"]
    assert subjects(mailserver, ALICE, "Junk") == ["Spam again"]


def test_rows_show_a_preview_snippet_and_the_title_the_unread_count(mailserver: RunningServer) -> None:
    append(mailserver, ALICE, message("Lunch", "Shall we   have lunch\non Friday? <b>really</b>"))
    append(mailserver, ALICE, message("Long", "word " * 200))
    append(mailserver, ALICE, message("Read one"), flags=["\\Seen"])
    client = login(mailserver)
    html = client.get("/", follow_redirects=True).text
    # the first text of the body, white space folded, escaped
    assert '<span class="snippet"> – Shall we have lunch on Friday? &lt;b&gt;really&lt;/b&gt;</span>' in html
    long_snippet = re.search(r'<span class="snippet"> – (word[^<]*)</span>', html).group(1)
    assert 100 < len(long_snippet) <= 200
    assert "<title>(2) INBOX – mailyard webmail</title>" in html
    # every page with the folder list counts INBOX's unread messages
    assert "<title>(2) Folders – mailyard webmail</title>" in client.get("/folders").text


def test_controls_that_need_the_script_are_hidden_without_it(mailserver: RunningServer) -> None:
    """Select all and dropping files need static/app.js and compose.js: the
    page as served hides them (``hidden``, which the scripts take away), so
    that without scripts nothing is offered that does nothing."""
    append(mailserver, ALICE, message("Hello"))
    client = login(mailserver)
    page = client.get("/", follow_redirects=True).text
    select_all = re.search(r'<label class="selall"([^>]*)><input type="checkbox" id="select-all">', page)
    assert select_all is not None and "hidden" in select_all.group(1).split(), page[:3000]
    compose = client.get("/compose").text
    hint = re.search(r"<span([^>]*)>or drop them here</span>", compose)
    assert hint is not None and "hidden" in hint.group(1).split(), compose
    # the file field itself works without scripts
    assert re.search(r'<input id="attachment" name="attachment" type="file"(?![^>]*hidden)', compose)
