"""Where the webmail leads back to, over HTTP without JavaScript: after an
action on a list (Archive, Mark read, ...), its Undo, or Back from a message
opened in it, the person is on the list they left: the same folder, search
and page (pages.py ``list_back``, carried as ``?back=`` by the list's links
and as a ``back`` field by its forms; actions.py). Back links that would
leave the site are tests/integration/test_web_abuse.py's."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from ..conftest import RunningServer
from .test_web_http import ALICE, append, box_id, csrf, login, simple

httpx = pytest.importorskip("httpx")


def settings(server: RunningServer, **values: object) -> None:
    async def go() -> None:
        account = await server.store.get_account(ALICE)
        await server.store.set_settings(account.id, values)

    server.call(go())


def field(page: str, form_id: str, name: str) -> str:
    """The value of the hidden field ``name`` in the form ``form_id`` of ``page``."""
    form = re.search(rf'<form [^>]*id="{form_id}".*?</form>', page, re.S)
    assert form is not None, page[:2000]
    return html.unescape(re.search(rf'name="{name}" value="([^"]*)"', form.group(0)).group(1))


def links(page: str) -> dict[str, str]:
    """The list's rows: subject -> the link that opens it."""
    return {s: html.unescape(h) for h, s in re.findall(r'<a href="([^"]+)" class="open">([^<]+)<', page)}


def undo(client: httpx.Client, location: str) -> dict[str, str]:
    """The fields of the Undo form on the page ``location`` leads to."""
    page = client.get(location).text
    form = re.search(r'<form method="post" action="/undo-move".*?</form>', page, re.S)
    assert form is not None, page[:2000]
    return {k: html.unescape(v) for k, v in re.findall(r'name="(\w+)" value="([^"]*)"', form.group(0))}


def seed(server: RunningServer) -> dict[str, int]:
    return {s: append(server, ALICE, simple(s)) for s in
            ("lunch on friday", "budget review", "lunch menu", "team news")}


def test_actions_and_undo_on_a_search_come_back_to_it(mailserver: RunningServer) -> None:
    uids = seed(mailserver)
    inbox = box_id(mailserver, ALICE, "INBOX")
    client = login(mailserver)
    token = csrf(client)
    searched = f"/box/{inbox}?q=lunch"
    page = client.get(searched).text
    assert sorted(links(page)) == ["lunch menu", "lunch on friday"]
    back = field(page, "list-form", "back")
    assert back == searched

    # Archive: the search again, with the notice and its Undo
    r = client.post(f"/box/{inbox}/action", data={"uid": uids["lunch on friday"], "action": "archive",
                                                  "csrf": token, "back": back})
    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith(f"{searched}&notice=1%20moved%20to%20Archive.&undo="), location
    page = client.get(location).text
    assert "search “lunch”" in page and sorted(links(page)) == ["lunch menu"]
    # its Undo: back to the search as well
    fields = undo(client, location)
    assert fields["back"] == searched
    r = client.post("/undo-move", data=fields)
    assert r.headers["location"] == f"{searched}&notice=Moved%20back."
    assert sorted(links(client.get(r.headers["location"]).text)) == ["lunch menu", "lunch on friday"]

    # Mark read: the search as it was
    r = client.post(f"/box/{inbox}/action", data={"uid": uids["lunch menu"], "action": "read",
                                                  "csrf": token, "back": back})
    assert r.headers["location"] == searched

    # a result opened: its Back is the search, and so is where its actions lead
    opened = links(client.get(searched).text)["lunch menu"]
    assert opened == f"/box/{inbox}/msg/{uids['lunch menu']}?back={quote(searched, safe='/')}"
    page = client.get(opened).text
    assert re.search(rf'href="{re.escape(html.escape(searched))}" id="back"', page), page[:3000]
    form_back = html.unescape(re.search(r'name="back" value="([^"]*)"', page).group(1))
    assert form_back == opened
    r = client.post(f"/box/{inbox}/action", data={"uid": uids["lunch menu"], "action": "flag", "csrf": token,
                                                  "back": form_back})
    assert r.headers["location"] == opened  # a flag keeps the message on screen
    r = client.post(f"/box/{inbox}/action", data={"uid": uids["lunch menu"], "action": "unread",
                                                  "csrf": token, "back": form_back})
    assert r.headers["location"] == searched
    r = client.post(f"/box/{inbox}/action", data={"uid": uids["lunch menu"], "action": "delete",
                                                  "csrf": token, "back": form_back})
    assert r.headers["location"].startswith(f"{searched}&notice=1%20moved%20to%20Trash.&undo=")

    # a message page whose own Back would leave the site falls back to the folder
    r = client.post(f"/box/{inbox}/action", data={
        "uid": uids["team news"], "action": "archive", "csrf": token,
        "back": f"/box/{inbox}/msg/{uids['team news']}?back=//evil.example/"})
    assert urlsplit(r.headers["location"]).path == f"/box/{inbox}"
    assert "back" not in parse_qs(urlsplit(r.headers["location"]).query)


@pytest.mark.parametrize("conversations", [False, True])
def test_an_action_on_a_later_page_comes_back_to_that_page(mailserver: RunningServer, conversations: bool) -> None:
    settings(mailserver, per_page=5, conversations=conversations)
    uids = [append(mailserver, ALICE, simple(f"note {i:02}")) for i in range(12)]
    inbox = box_id(mailserver, ALICE, "INBOX")
    client = login(mailserver)
    token = csrf(client)
    first = client.get(f"/box/{inbox}").text
    # the first page, as it is, carries no Back of its own
    assert all("?back=" not in h for h in links(first).values())
    later = html.unescape(re.search(r'href="([^"]+)" rel="next"', first).group(1))
    page = client.get(later).text
    shown = links(page)
    assert len(shown) == 5 and "note 11" not in shown
    assert field(page, "list-form", "back") == later
    assert all(h.endswith(f"?back={quote(later, safe='/')}") for h in shown.values()), shown
    subject, href = sorted(shown.items())[0]
    uid = int(re.search(r"/(?:msg|conv)/(\d+)", href).group(1))
    assert uid in uids
    r = client.post(f"/box/{inbox}/action", data={"uid": uid, "action": "archive", "csrf": token,
                                                  "back": later})
    assert r.headers["location"].startswith(f"{later}&notice=1%20moved%20to%20Archive.&undo=")
    assert subject not in links(client.get(r.headers["location"]).text)
    # opened from that page, the message's Back and its Archive lead there too
    subject, href = sorted(links(client.get(later).text).items())[0]
    page = client.get(href).text
    assert re.search(rf'href="{re.escape(html.escape(later))}" id="back"', page)
    form_back = html.unescape(re.search(r'name="back" value="([^"]*)"', page).group(1))
    r = client.post(f"/box/{inbox}/action", data={"uid": re.search(r"/msg/(\d+)", href).group(1), "action": "archive",
                                                  "csrf": token, "back": form_back})
    assert r.headers["location"].startswith(f"{later}&notice=1%20moved%20to%20Archive.&undo=")


def test_a_result_of_an_all_folder_search_leads_back_to_the_results(mailserver: RunningServer) -> None:
    append(mailserver, ALICE, simple("budget kept"), mailbox="Archive")
    append(mailserver, ALICE, simple("budget new"))
    inbox = box_id(mailserver, ALICE, "INBOX")
    archive = box_id(mailserver, ALICE, "Archive")
    client = login(mailserver)
    results = client.get(f"/box/{inbox}", params={"q": "budget in:all"})
    here = f"/box/{inbox}?q=budget+in%3Aall"
    found = links(results.text)
    assert found["budget kept"] == f"/box/{archive}/msg/1?back={quote(here, safe='/')}", found
    page = client.get(found["budget kept"]).text
    back = re.search(r'<a class="button back" href="([^"]*)" id="back"[^>]*>(.*?)</a>', page)
    assert html.unescape(back.group(1)) == here
    assert "Search results" in back.group(2)
    again = client.get(html.unescape(back.group(1))).text
    assert sorted(links(again)) == ["budget kept", "budget new"]
