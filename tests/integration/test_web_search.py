"""Webmail search operators and list fixes over HTTP (httpx) against a
running server: every operator of web/searchquery.py answered from the
store's indexes, in:FOLDER / in:all, negation, phrases; the To column of
Sent and Drafts, the Date column's order, the Move placeholder, the unread
count in the title."""

from __future__ import annotations

import re

import pytest

from mailyard.message.compose import Attachment, compose, to_bytes

from ..conftest import RunningServer
from .test_web_http import ALICE, append, box_id, csrf, login

httpx = pytest.importorskip("httpx")

DAY = 86400
T0 = 1_704_067_200  # 2024-01-01 00:00 UTC


def subjects(page: str) -> list[str]:
    return re.findall(r'class="open">([^<]+)<', page)


def msg(subject: str, sender: str = "Carol <carol@example.test>", to: str = ALICE, cc: str | None = None,
        body: str = "hello", attach: bytes | None = None) -> bytes:
    m = compose(sender, to, cc=[cc] if cc else (), subject=subject, text=body,
                attachments=[Attachment("report.pdf", attach, "application/pdf")] if attach else ())
    return to_bytes(m)


def seed(server: RunningServer) -> None:
    items = [
        ("alpha plan", msg("alpha plan", "Anna <anna@example.test>", body="the budget table"), (), T0),
        ("bravo news", msg("bravo news", "Bob <bob@example.test>", cc="dave@example.test",
                           body="budget draft attached", attach=b"%PDF-1.4 x" * 300), ("\\Seen",), T0 + DAY),
        ("charlie", msg("charlie", "Anna <anna@example.test>", to="erin@example.test",
                        body="no money talk"), ("\\Seen", "\\Flagged"), T0 + 40 * DAY),
        ("delta big", msg("delta big", "Zed <zed@example.test>", body="x" * 600_000), ("\\Answered", "\\Seen"),
         T0 + 60 * DAY),
    ]
    for _subject, data, flags, when in items:
        async def go(data: bytes = data, flags: tuple = flags, when: int = when) -> None:
            account = await server.store.get_account(ALICE)
            box = await server.store.get_mailbox(account.id, "INBOX")
            await server.store.append(box, data, list(flags), internal_date=when)

        server.call(go())


def set_conversations(server: RunningServer, user: str, on: bool) -> None:
    async def go() -> None:
        account = await server.store.get_account(user)
        await server.store.set_settings(account.id, {"conversations": on})

    server.call(go())


def search(client: httpx.Client, box: int, q: str) -> list[str]:
    r = client.get(f"/box/{box}", params={"q": q})
    assert r.status_code == 200, r.text
    return sorted(subjects(r.text))


def test_parse_operators() -> None:
    from mailyard.web.searchquery import Term, parse, parse_size

    q = parse('from:anna -subject:"tax return" "exact words" is:unread has:attachment larger:2M in:all word')
    assert q.folder == "all" and not q.errors
    assert q.terms == [
        Term("from", "anna"), Term("subject", "tax return", True), Term("text", "exact words"),
        Term("is", "unread"), Term("has", "attachment"), Term("larger", "2M"), Term("text", "word"),
    ]
    assert parse("foo:bar").terms == [Term("text", "foo:bar")]
    assert parse("before:2024-13-01").errors and parse("is:nice").errors
    assert parse_size("500K") == 512_000 and parse_size("2M") == 2 * 1024 * 1024 and parse_size("1.5k") == 1536


def test_search_operators(mailserver: RunningServer) -> None:
    seed(mailserver)
    inbox = box_id(mailserver, ALICE, "INBOX")
    c = login(mailserver)
    assert search(c, inbox, "from:anna") == ["alpha plan", "charlie"]
    assert search(c, inbox, "-from:anna") == ["bravo news", "delta big"]
    assert search(c, inbox, "to:erin") == ["charlie"]
    assert search(c, inbox, "cc:dave") == ["bravo news"]
    assert search(c, inbox, "subject:plan") == ["alpha plan"]
    assert search(c, inbox, "budget") == ["alpha plan", "bravo news"]
    assert search(c, inbox, "budget -draft") == ["alpha plan"]
    assert search(c, inbox, '"budget table"') == ["alpha plan"]
    assert search(c, inbox, '"table budget"') == []
    assert search(c, inbox, "has:attachment") == ["bravo news"]
    assert search(c, inbox, "-has:attachment") == ["alpha plan", "charlie", "delta big"]
    assert search(c, inbox, "is:unread") == ["alpha plan"]
    assert search(c, inbox, "is:read") == ["bravo news", "charlie", "delta big"]
    assert search(c, inbox, "is:flagged") == ["charlie"]
    assert search(c, inbox, "is:answered") == ["delta big"]
    assert search(c, inbox, "after:2024-01-02") == ["bravo news", "charlie", "delta big"]
    assert search(c, inbox, "before:2024-01-02") == ["alpha plan"]
    assert search(c, inbox, "after:2024-01-02 before:2024-02-01") == ["bravo news"]
    assert search(c, inbox, "larger:500K") == ["delta big"]
    assert search(c, inbox, "smaller:2K") == ["alpha plan", "charlie"]
    # flags changed after the first search are seen by the next one
    r = c.post(f"/box/{inbox}/action", data={"csrf": csrf(c), "action": "read",
                                             "uid": re.findall(r'name="uid" value="(\d+)"',
                                                               c.get(f"/box/{inbox}?q=is:unread").text)})
    assert r.status_code == 303
    assert search(c, inbox, "is:unread") == []
    page = c.get(f"/box/{inbox}", params={"q": "is:nice budget"}).text
    assert "is:nice: use is:unread" in page and sorted(subjects(page)) == ["alpha plan", "bravo news"]


def test_search_in_other_folder_and_all(mailserver: RunningServer) -> None:
    async def mk() -> None:
        account = await mailserver.store.get_account(ALICE)
        await mailserver.store.create_mailbox(account.id, "Archive/2023")

    mailserver.call(mk())
    append(mailserver, ALICE, msg("kept budget", body="old budget"), mailbox="Archive/2023")
    append(mailserver, ALICE, msg("inbox budget", body="new budget"))
    inbox = box_id(mailserver, ALICE, "INBOX")
    archive = box_id(mailserver, ALICE, "Archive/2023")
    c = login(mailserver)
    assert search(c, inbox, "budget") == ["inbox budget"]
    r = c.get(f"/box/{inbox}", params={"q": "budget in:all"})
    assert sorted(subjects(r.text)) == ["inbox budget", "kept budget"]
    assert f'href="/box/{archive}/msg/' in r.text and "Archive/2023" in r.text
    r = c.get(f"/box/{inbox}", params={"q": "budget in:archive/2023"})
    assert subjects(r.text) == ["kept budget"]
    r = c.get(f"/box/{inbox}", params={"q": "budget in:nowhere"})
    assert "in:nowhere: no folder of that name" in r.text and subjects(r.text) == ["inbox budget"]


def test_search_help_popover_is_on_every_page(mailserver: RunningServer) -> None:
    c = login(mailserver)
    page = c.get("/", follow_redirects=True).text
    help_ = re.search(r'<details class="searchhelp" id="search-help">(.*?)</details>', page, re.S)
    assert help_ is not None
    for op in ("from:", "to:", "cc:", "subject:", "has:attachment", "is:unread", "in:all", "before:",
               "after:", "larger:", "smaller:", "-from:"):
        assert op in help_.group(1)
    assert "<script" not in help_.group(1)


def test_sent_and_drafts_list_a_to_column(mailserver: RunningServer) -> None:
    async def mk() -> None:
        account = await mailserver.store.get_account(ALICE)
        for name, use in (("Sent", "\\Sent"), ("Drafts", "\\Drafts")):
            if await mailserver.store.get_mailbox(account.id, name) is None:
                await mailserver.store.create_mailbox(account.id, name, use)

    mailserver.call(mk())
    data = msg("to zoe", ALICE, to="Zoe Zed <zoe@example.test>")
    append(mailserver, ALICE, data, mailbox="Sent")
    append(mailserver, ALICE, data, mailbox="Drafts")
    append(mailserver, ALICE, data)
    c = login(mailserver)
    for conversations in (True, False):
        set_conversations(mailserver, ALICE, conversations)
        for name in ("Sent", "Drafts"):
            page = c.get(f"/box/{box_id(mailserver, ALICE, name)}").text
            if conversations and name == "Sent":
                assert re.search(r'<th scope="col" class="from">To<', page)
            else:  # the flat list sorts by it
                assert re.search(r'<th scope="col" class="from"><a href="[^"]*sort=to[^"]*">To<', page)
            assert '<td class="from to" title="zoe@example.test">Zoe Zed</td>' in page
    page = c.get(f"/box/{box_id(mailserver, ALICE, 'INBOX')}").text
    assert ">From<" in page and '<td class="from" title="alice@example.test">' in page


def test_date_column_shows_and_sorts_by_arrival(mailserver: RunningServer) -> None:
    # appended in one order, arrived (INTERNALDATE, e.g. an import) in another:
    # the list sorts by the date it shows
    for subject, when in (("newest", T0 + 3 * DAY), ("oldest", T0), ("middle", T0 + DAY)):
        async def go(subject: str = subject, when: int = when) -> None:
            account = await mailserver.store.get_account(ALICE)
            box = await mailserver.store.get_mailbox(account.id, "INBOX")
            await mailserver.store.append(box, msg(subject), [], internal_date=when)

        mailserver.call(go())
    inbox = box_id(mailserver, ALICE, "INBOX")
    c = login(mailserver)
    page = c.get(f"/box/{inbox}").text
    assert subjects(page) == ["newest", "middle", "oldest"]
    assert re.findall(r'<time title="Received">([^<]+)</time>', page) == ["2024-01-04", "2024-01-02", "2024-01-01"]
    assert subjects(c.get(f"/box/{inbox}?sort=date&dir=asc").text) == ["oldest", "middle", "newest"]


def test_move_menu_has_a_placeholder_and_needs_a_choice(mailserver: RunningServer) -> None:
    uid = append(mailserver, ALICE, msg("stay"))
    inbox = box_id(mailserver, ALICE, "INBOX")
    c = login(mailserver)
    for url in (f"/box/{inbox}", f"/box/{inbox}/msg/{uid}"):
        page = c.get(url).text
        select = re.search(r'<select name="target" id="move-target">\s*<option([^>]*)>([^<]*)</option>', page)
        assert select is not None and select.group(2) == "Move to…" and 'value=""' in select.group(1)
    r = c.post(f"/box/{inbox}/action", data={"csrf": csrf(c), "action": "move", "uid": str(uid), "target": ""})
    assert r.status_code == 303 and "Choose%20a%20folder" in r.headers["location"]
    assert subjects(c.get(f"/box/{inbox}").text) == ["stay"]


def test_unread_count_in_the_tab_title(mailserver: RunningServer) -> None:
    for i in range(3):
        append(mailserver, ALICE, msg(f"new {i}"))
    append(mailserver, ALICE, msg("old"), flags=("\\Seen",))
    inbox = box_id(mailserver, ALICE, "INBOX")
    c = login(mailserver)
    assert "<title>(3) INBOX – mailyard webmail</title>" in c.get(f"/box/{inbox}").text
    # every page counts the INBOX's unread messages, not only the INBOX's own
    assert "<title>(3) New message – mailyard webmail</title>" in c.get("/compose").text
