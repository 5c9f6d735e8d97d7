"""Webmail over plain HTTP (httpx): login, sessions, CSRF, access control,
pagination, downloads, security headers. The browser tests are in tests/e2e/."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default as default_policy

import pytest

from mailyard.message.compose import Attachment, compose, to_bytes

from ..conftest import USERS, RunningServer
from ..waiting import wait_until

httpx = pytest.importorskip("httpx")

ALICE, BOB = "alice@example.test", "bob@example.test"


def login(server: RunningServer, user: str = ALICE, password: str | None = None) -> httpx.Client:
    client = httpx.Client(base_url=f"http://127.0.0.1:{server.port('http')}", follow_redirects=False, timeout=30)
    r = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', r.text).group(1)
    r = client.post("/login", data={"username": user, "password": password or USERS[user], "login_token": token})
    assert r.status_code == 303, r.text
    return client


def csrf(client: httpx.Client) -> str:
    r = client.get("/", follow_redirects=True)
    return re.search(r'data-csrf="([^"]+)"', r.text).group(1)


def box_id(server: RunningServer, user: str, name: str) -> int:
    async def go() -> int:
        account = await server.store.get_account(user)
        box = await server.store.get_mailbox(account.id, name)
        return box.id

    return server.call(go())


def append(server: RunningServer, user: str, data: bytes, mailbox: str = "INBOX", flags=()) -> int:
    async def go() -> int:
        account = await server.store.get_account(user)
        box = await server.store.get_mailbox(account.id, mailbox)
        return await server.store.append(box, data, flags)

    return server.call(go())


def simple(subject: str, sender: str = "Carol <carol@example.test>", body: str = "hello") -> bytes:
    return to_bytes(compose(sender, ALICE, subject=subject, text=body))


@pytest.fixture
def web(mailserver: RunningServer) -> Iterator[RunningServer]:
    yield mailserver


def test_login_wrong_password_and_logout(web: RunningServer) -> None:
    client = httpx.Client(base_url=f"http://127.0.0.1:{web.port('http')}", follow_redirects=False)
    assert client.get("/").headers["location"] == "/login"
    r = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', r.text).group(1)
    r = client.post("/login", data={"username": ALICE, "password": "nope", "login_token": token})
    assert r.status_code == 401 and "Wrong address or password" in r.text
    # login without the login-form token (login CSRF) is refused
    r = client.post("/login", data={"username": ALICE, "password": USERS[ALICE]})
    assert r.status_code == 403
    client = login(web)
    cookie = client.cookies.jar
    set_cookie = [c for c in cookie if c.name == "mailyard_session"][0]
    assert set_cookie.has_nonstandard_attr("HttpOnly")
    r = client.get("/", follow_redirects=True)
    assert r.status_code == 200 and "INBOX" in r.text
    token = csrf(client)
    r = client.post("/logout", data={"csrf": token})
    assert r.status_code == 303
    assert client.get("/").headers["location"] == "/login"


def test_session_cookie_attributes(web: RunningServer) -> None:
    client = httpx.Client(base_url=f"http://127.0.0.1:{web.port('http')}", follow_redirects=False)
    r = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', r.text).group(1)
    r = client.post("/login", data={"username": ALICE, "password": USERS[ALICE], "login_token": token})
    header = [v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("mailyard_session=")][0]
    assert "HttpOnly" in header and "SameSite=strict" in header.replace("Strict", "strict")


def test_login_failures_are_throttled(web: RunningServer) -> None:
    """The second failure waits the delay the first one earned (base_delay,
    auth/throttle.py), read from the login service's sleep hook, not the clock."""
    assert web.server is not None
    service = web.server.login
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    service.sleep = record
    client = httpx.Client(base_url=f"http://127.0.0.1:{web.port('http')}", follow_redirects=False, timeout=60)
    for _ in range(2):
        r = client.get("/login")
        token = re.search(r'name="login_token" value="([^"]+)"', r.text).group(1)
        r = client.post("/login", data={"username": ALICE, "password": "wrong", "login_token": token})
        assert r.status_code == 401
    assert waits == [service.throttle.policy.base_delay] == [1.0]


def test_security_headers(web: RunningServer) -> None:
    client = login(web)
    r = client.get("/", follow_redirects=True)
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp.split("style-src")[0]
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"


def test_csrf_is_required_on_every_post(web: RunningServer) -> None:
    uid = append(web, ALICE, simple("keep me"))
    inbox = box_id(web, ALICE, "INBOX")
    client = login(web)
    token = csrf(client)
    # no token, a wrong token, a right token from another origin: all refused
    for data, headers in (
        ({"uid": uid, "action": "delete"}, {}),
        ({"uid": uid, "action": "delete", "csrf": "x" * 43}, {}),
        ({"uid": uid, "action": "delete", "csrf": token}, {"Origin": "http://evil.test"}),
        ({"uid": uid, "action": "delete", "csrf": token}, {"Referer": "http://evil.test/page"}),
        ({"uid": uid, "action": "delete", "csrf": token}, {"Origin": "null"}),
    ):
        r = client.post(f"/box/{inbox}/action", data=data, headers=headers)
        assert r.status_code == 403, (data, headers)
    for path in ("/folders", "/compose", "/logout"):
        assert client.post(path, data={"action": "create", "name": "X"}).status_code == 403
    assert len(web.messages(ALICE)) == 1
    r = client.post(f"/box/{inbox}/action", data={"uid": uid, "action": "delete", "csrf": token})
    assert r.status_code == 303
    assert web.messages(ALICE) == []


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_no_access_to_another_users_messages(web: RunningServer) -> None:
    bob_uid = append(web, BOB, simple("bob's secret", body="secret text of bob"), flags=[])
    bob_inbox = box_id(web, BOB, "INBOX")
    alice_uid = append(web, ALICE, simple("alice's own"))
    alice_inbox = box_id(web, ALICE, "INBOX")
    client = login(web)
    token = csrf(client)
    for path in (
        f"/box/{bob_inbox}", f"/box/{bob_inbox}/msg/{bob_uid}", f"/box/{bob_inbox}/msg/{bob_uid}/body",
        f"/box/{bob_inbox}/msg/{bob_uid}/raw", f"/box/{bob_inbox}/msg/{bob_uid}/part/1",
        f"/compose?reply={bob_inbox}:{bob_uid}", f"/compose?forward={bob_inbox}:{bob_uid}",
        f"/compose?draft={bob_inbox}:{bob_uid}", f"/box/{bob_inbox}?fragment=1",
        f"/box/{alice_inbox}/msg/{bob_uid + 5}", "/box/999999",
    ):
        r = client.get(path)
        assert r.status_code == 404, path
        assert "secret" not in r.text
    for data in (
        {"uid": bob_uid, "action": "delete"},
        {"uid": bob_uid, "action": "read"},
    ):
        r = client.post(f"/box/{bob_inbox}/action", data={**data, "csrf": token})
        assert r.status_code == 404
    # moving one's own message into another user's mailbox
    r = client.post(f"/box/{alice_inbox}/action",
                    data={"uid": alice_uid, "action": "move", "target": bob_inbox, "csrf": token})
    assert r.status_code == 404
    # forwarding another user's message as an attachment
    r = client.post("/compose", data={"csrf": token, "to": ALICE, "subject": "x", "body": "",
                                      "forward": f"{bob_inbox}:{bob_uid}", "action": "send"},
                    files={"attachment": ("", b"")})
    assert r.status_code == 404
    # folder operations on another user's folder
    r = client.post("/folders", data={"csrf": token, "action": "delete", "box": bob_inbox})
    assert r.status_code == 404
    assert len(web.messages(BOB)) == 1 and len(web.messages(ALICE)) == 1
    bob_box = web.call(web.store.get_mailbox(web.call(web.store.get_account(BOB)).id, "INBOX"))
    flags = web.call(web.store.list_messages(bob_box))[0].flags
    assert "\\Seen" not in flags


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_pagination_by_key_and_sorting(web: RunningServer) -> None:
    async def seed() -> None:
        account = await web.store.get_account(ALICE)
        box = await web.store.get_mailbox(account.id, "INBOX")
        for i in range(130):
            data = simple(f"subject {i:03d}", sender=f"Sender {(i * 7) % 130:03d} <s{i}@example.test>")
            await web.store.append(box, data, internal_date=1_700_000_000 + i)

    web.call(seed())
    inbox = box_id(web, ALICE, "INBOX")
    client = login(web)

    def walk(url: str) -> list[str]:
        seen: list[str] = []
        while url:
            r = client.get(url)
            assert r.status_code == 200
            seen += re.findall(r'class="open">([^<]+)<', r.text)
            m = re.search(r'href="([^"]+)" rel="next"', r.text)
            url = m.group(1).replace("&amp;", "&") if m else ""
        return seen

    by_date = walk(f"/box/{inbox}")
    assert by_date == [f"subject {i:03d}" for i in reversed(range(130))]
    by_subject = walk(f"/box/{inbox}?sort=subject&dir=asc")
    assert by_subject == sorted(by_subject) and len(set(by_subject)) == 130
    senders = walk(f"/box/{inbox}?sort=from&dir=asc")
    assert len(senders) == 130
    # previous page from the second one
    r = client.get(f"/box/{inbox}")
    nxt = re.search(r'href="([^"]+)" rel="next"', r.text).group(1).replace("&amp;", "&")
    r2 = client.get(nxt)
    prev = re.search(r'href="([^"]+)" rel="prev"', r2.text).group(1).replace("&amp;", "&")
    assert re.findall(r'class="open">([^<]+)<', client.get(prev).text) == by_date[:50]
    # search uses the full-text index; a quoted phrase is one term (bare
    # words each match anywhere: "Sender 042" is another message's sender)
    r = client.get(f"/box/{inbox}?q=%22subject+042%22")
    assert re.findall(r'class="open">([^<]+)<', r.text) == ["subject 042"]


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_attachment_download_name_and_type(web: RunningServer) -> None:
    msg = compose("Carol <carol@example.test>", ALICE, subject="files", text="see files",
                  attachments=[Attachment("Grüße & \"quotes\".pdf", b"%PDF-1.4 data", "application/pdf")])
    uid = append(web, ALICE, to_bytes(msg))
    inbox = box_id(web, ALICE, "INBOX")
    client = login(web)
    page = client.get(f"/box/{inbox}/msg/{uid}").text
    spec = re.search(r'data-spec="([^"]+)"', page).group(1)
    r = client.get(f"/box/{inbox}/msg/{uid}/part/{spec}")
    assert r.status_code == 200 and r.content == b"%PDF-1.4 data"
    assert r.headers["content-type"] == "application/pdf"
    cd = r.headers["content-disposition"]
    assert cd.startswith("attachment;")
    assert "filename*=UTF-8''Gr%C3%BC%C3%9Fe%20%26%20%22quotes%22.pdf" in cd
    assert "sandbox" in r.headers["content-security-policy"]
    raw = client.get(f"/box/{inbox}/msg/{uid}/raw")
    assert raw.headers["content-type"].startswith("text/plain") and "Subject: files" in raw.text


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_send_from_webmail_uses_submission_path(web: RunningServer) -> None:
    client = login(web)
    token = csrf(client)
    r = client.post("/compose", data={"csrf": token, "to": "Bob <bob@example.test>", "cc": "",
                                      "bcc": "postmaster@example.test", "subject": "via web",
                                      "body": "hello bob", "action": "send"},
                    files={"attachment": ("data.bin", bytes(range(256)), "application/octet-stream")})
    assert r.status_code == 303, r.text
    (received,) = web.messages(BOB)
    msg = message_from_bytes(received, policy=default_policy)
    assert msg["From"] == ALICE and msg["Message-ID"] and msg["Date"]
    assert "Bcc" not in msg and b"postmaster" not in received.split(b"\r\n\r\n")[0].split(b"Received:")[0]
    assert received.startswith(b"Return-Path: <alice@example.test>")
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "data.bin" and att.get_content() == bytes(range(256))
    assert len(web.messages("postmaster@example.test")) == 1
    (sent,) = web.messages(ALICE, "Sent")
    assert b"Bcc: postmaster@example.test" in sent  # the sender's copy keeps its Bcc


def test_compose_validates_addresses(web: RunningServer) -> None:
    client = login(web)
    token = csrf(client)
    for to in ("not an address", "bob@", "bob@example.test, @@", "a@b@c"):
        r = client.post("/compose", data={"csrf": token, "to": to, "subject": "x", "body": "y", "action": "send"})
        assert r.status_code == 400, to
        assert 'id="compose-errors"' in r.text
    r = client.post("/compose", data={"csrf": token, "to": "", "subject": "x", "body": "y", "action": "send"})
    assert r.status_code == 400 and "at least one recipient" in r.text
    # a sender address the user does not own is refused by the submission policy
    assert web.messages(BOB) == []


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_smtp_delivery_then_web_listing(web: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", web.port("smtp")) as s:
        s.sendmail("carol@example.test", [ALICE], simple("over smtp"))
    client = login(web)
    r = client.get("/", follow_redirects=True)
    assert "over smtp" in r.text and 'class="msg unread"' in r.text


def test_first_sort_of_a_big_folder_is_prepared_in_the_background(
    web: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mailyard.web.listing as listing

    monkeypatch.setattr(listing, "SYNC_KEY_LIMIT", 5)
    for i in range(20):
        append(web, ALICE, simple(f"topic {19 - i:02d}"))
    inbox = box_id(web, ALICE, "INBOX")
    client = login(web)
    r = client.get(f"/box/{inbox}?sort=subject&dir=asc")
    assert r.status_code == 200 and 'id="preparing"' in r.text and 'http-equiv="refresh"' in r.text

    def prepared() -> httpx.Response | None:
        page = client.get(f"/box/{inbox}?sort=subject&dir=asc")
        return None if 'id="preparing"' in page.text else page

    r = wait_until(prepared, what="the sorted listing to be prepared in the background")
    subjects = re.findall(r'class="open">([^<]+)<', r.text)
    assert subjects == [f"topic {i:02d}" for i in range(20)]


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_move_of_an_own_message_to_another_folder(web: RunningServer) -> None:
    """The list's Move action: the message leaves INBOX and is in the target, bytes intact."""
    data = simple("to be moved")
    uid = append(web, ALICE, data)
    inbox, junk = box_id(web, ALICE, "INBOX"), box_id(web, ALICE, "Junk")
    client = login(web)
    r = client.post(f"/box/{inbox}/action",
                    data={"uid": uid, "action": "move", "target": junk, "csrf": csrf(client)})
    assert r.status_code == 303
    assert web.messages(ALICE) == []
    assert web.messages(ALICE, "Junk") == [data]


def test_a_background_sort_the_store_cannot_serve_is_logged_in_one_line_and_tried_again(
    web: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The store out of reach while a big folder's sort keys are prepared in
    the background (its database down, or closed as the server stops): one
    log line, no traceback, and the next request of the folder starts again."""
    import asyncio
    import logging

    import mailyard.web.listing as listing
    from mailyard.store.api import StoreUnavailable

    caplog.set_level(logging.INFO, logger="mailyard")
    monkeypatch.setattr(listing, "SYNC_KEY_LIMIT", 5)
    for i in range(20):
        append(web, ALICE, simple(f"topic {19 - i:02d}"))
    inbox = box_id(web, ALICE, "INBOX")
    client = login(web)
    store = web.store
    get_derived = store.get_derived
    down = {"on": True}

    async def unavailable(*args: object, **kwargs: object) -> object:
        # only in the background work (a request's own reads would get a 503)
        task = asyncio.current_task()
        if down["on"] and task is not None and task.get_coro().__name__ == "_fill_keys":
            raise StoreUnavailable("the store is closed")
        return await get_derived(*args, **kwargs)

    monkeypatch.setattr(store, "get_derived", unavailable)
    r = client.get(f"/box/{inbox}?sort=subject&dir=asc")
    assert r.status_code == 200 and 'id="preparing"' in r.text
    line = "web: the sort keys of a folder were not prepared: the store is closed"
    wait_until(lambda: line in [rec.getMessage() for rec in caplog.records], what="the failure's log line")
    down["on"] = False

    def prepared() -> httpx.Response | None:
        page = client.get(f"/box/{inbox}?sort=subject&dir=asc")
        return None if 'id="preparing"' in page.text else page

    r = wait_until(prepared, what="the sorted listing to be prepared in the background")
    assert re.findall(r'class="open">([^<]+)<', r.text) == [f"topic {i:02d}" for i in range(20)]
    assert not [rec for rec in caplog.records if rec.exc_info], "a traceback was logged"


def make_folders(server: RunningServer, user: str, names: list[str]) -> None:
    async def go() -> None:
        account = await server.store.get_account(user)
        for name in names:
            await server.store.create_mailbox(account.id, name)

    server.call(go())


def folder_rows(html: str) -> list[str]:
    return re.findall(r'<tr data-folder="([^"]+)"', html)


@pytest.fixture
def many_folders(web: RunningServer, monkeypatch: pytest.MonkeyPatch) -> RunningServer:
    """An account of more folders than a page of /folders (made 5 a page):
    the six of a new account and twelve more."""
    from mailyard.web import folders as folder_pages

    monkeypatch.setattr(folder_pages, "FOLDERS_PAGE", 5, raising=False)
    make_folders(web, ALICE, [f"Box{i:02d}" for i in range(12)])
    return web


def test_folders_page_of_many_folders_is_paged_and_filtered(many_folders: RunningServer) -> None:
    """Past a page of folders /folders shows one page of rows, with its
    range and Previous / Next, and a filter by name; the parent menu of a
    new folder lists the page's folders, not all of them."""
    client = login(many_folders)
    r = client.get("/folders")
    assert r.status_code == 200
    first = folder_rows(r.text)
    assert first[0] == "INBOX" and len(first) == 5
    assert "1–5 of 18" in r.text and 'id="prev-page"' not in r.text
    assert len(re.findall(r"<option value=\"\d+\">", r.text.split('id="parent"')[1].split("</select>")[0])) == 5
    seen = list(first)
    while (m := re.search(r'href="([^"]+)" rel="next" id="next-page"', r.text)):
        r = client.get(m.group(1).replace("&amp;", "&"))
        seen += folder_rows(r.text)
    assert "16–18 of 18" in r.text and 'id="next-page"' not in r.text
    assert len(seen) == 18 and {f"Box{i:02d}" for i in range(12)} <= set(seen)
    prev = re.search(r'href="([^"]+)" rel="prev" id="prev-page"', r.text).group(1)
    assert prev == "/folders?start=10"
    assert folder_rows(client.get(prev).text) == seen[10:15]
    r = client.get("/folders", params={"q": "box1"})
    assert folder_rows(r.text) == ["Box10", "Box11"] and "1–2 of 2" in r.text
    assert 'name="q" type="search" value="box1"' in r.text
    # a start past the end shows the last page
    assert folder_rows(client.get("/folders", params={"start": "999"}).text) == seen[15:]


def test_folder_actions_from_a_page_return_to_it(many_folders: RunningServer) -> None:
    client = login(many_folders)
    token = csrf(client)
    r = client.get("/folders", params={"start": "5", "q": "box0"})
    back = re.search(r'name="back" value="([^"]+)"', r.text).group(1).replace("&amp;", "&")
    assert back == "/folders?start=5&q=box0"
    rows = folder_rows(r.text)
    assert rows == [f"Box{i:02d}" for i in range(5, 10)]
    victim = box_id(many_folders, ALICE, "Box06")
    r = client.post("/folders", data={"csrf": token, "action": "rename", "box": victim, "name": "Box06b",
                                      "back": back})
    assert r.status_code == 303 and r.headers["location"].startswith("/folders?start=5&q=box0&notice=")
    r = client.post("/folders", data={"csrf": token, "action": "delete", "box": box_id(many_folders, ALICE, "Box07"),
                                      "back": back})
    assert r.status_code == 303 and r.headers["location"].startswith("/folders?start=5&q=box0&notice=")
    r = client.post("/folders", data={"csrf": token, "action": "create", "name": "Box05a", "parent": "",
                                      "back": back})
    assert r.status_code == 303 and r.headers["location"].startswith("/folders?start=5&q=box0&notice=")
    r = client.get(r.headers["location"])
    assert "Folder Box05a created." in r.text
    assert folder_rows(r.text) == ["Box05", "Box05a", "Box06b", "Box08", "Box09"]
    # a refused action shows the same page, saying why
    r = client.post("/folders", data={"csrf": token, "action": "rename", "box": box_id(many_folders, ALICE, "Box08"),
                                      "name": "Box09", "back": back})
    assert r.status_code == 400 and 'role="alert"' in r.text
    assert folder_rows(r.text) == ["Box05", "Box05a", "Box06b", "Box08", "Box09"]
    # a Back elsewhere is not followed
    r = client.post("/folders", data={"csrf": token, "action": "create", "name": "Other", "parent": "",
                                      "back": "//evil.test/folders"})
    assert r.headers["location"].startswith("/folders?notice=")


def test_webmail_create_and_rename_make_the_missing_superiors(web: RunningServer) -> None:
    """As IMAP CREATE and RENAME do (RFC 9051 6.3.4, 6.3.6)."""
    client = login(web)
    token = csrf(client)
    r = client.post("/folders", data={"csrf": token, "action": "create", "name": "a/b", "parent": ""})
    assert r.status_code == 303, r.text
    assert box_id(web, ALICE, "a") and box_id(web, ALICE, "a/b")
    r = client.post("/folders", data={"csrf": token, "action": "rename", "box": box_id(web, ALICE, "a/b"),
                                      "name": "c/d/e"})
    assert r.status_code == 303, r.text
    assert box_id(web, ALICE, "c") and box_id(web, ALICE, "c/d") and box_id(web, ALICE, "c/d/e")
    # fewer folders than a page: all of them, with neither pager nor filter
    r = client.get("/folders")
    assert len(folder_rows(r.text)) == 10
    assert 'class="pager"' not in r.text and 'id="folder-filter"' not in r.text
