"""Webmail reading in the browser (Playwright with Debian's chromium) at
390x844 and 1440x900: the search-operator popover opens and closes without
script of its own (a <details>), a conversation shows read messages
collapsed and the unread ones and the newest open, a collapsed one opens
with its body framed and sized; screenshots of both go to docs/screenshots/.
The keyboard shortcuts act on a whole conversation, on its page and in the
reading pane; after an Archive in the reading pane the message below opens
there and the cursor goes on from it. The forms without scripts:
tests/integration/test_web_conversations.py."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ..conftest import RunningServer
from ..integration.test_web_conversations import T0, mail, mk, put
from .test_web_layout import check_page
from .webtools import log_in, new_page, screenshot

ALICE = "alice@example.test"
VIEWPORTS = [("desktop", 1440, 900), ("phone", 390, 844)]


def seed(server: RunningServer) -> None:
    mk(server, "Sent", "\\Sent")
    put(server, mail("Trip to Lisbon", "t1@x", body="Shall we go in May?", day=1), when=T0)
    put(server, mail("Re: Trip to Lisbon", "t2@x", sender=ALICE, to="bob@example.test", refs="t1@x",
                     body="Yes, May works for me.", day=2), mailbox="Sent", when=T0 + 86400, flags=("\\Seen",))
    put(server, mail("Re: Trip to Lisbon", "t3@x", refs="t1@x t2@x", body="Booked the flights.", day=3),
        when=T0 + 2 * 86400)


@pytest.mark.parametrize(("label", "width", "height"), VIEWPORTS)
def test_search_help_popover(browser: Any, mailserver: RunningServer, label: str, width: int, height: int) -> None:
    page = new_page(browser, mailserver, width, height)
    log_in(page, ALICE)
    help_ = page.locator("#search-help")
    body = help_.locator(".searchhelp-body")
    assert not body.is_visible()
    help_.locator("summary").click()
    assert body.is_visible()
    assert "has:attachment" in body.inner_text()
    box = body.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 1  # not off screen
    screenshot(page, f"search-help-{label}")
    help_.locator("summary").click()
    assert not body.is_visible()


@pytest.mark.parametrize(("label", "width", "height"), VIEWPORTS)
def test_conversation_collapsed_and_open(browser: Any, mailserver: RunningServer, label: str, width: int,
                                         height: int) -> None:
    seed(mailserver)
    page = new_page(browser, mailserver, width, height)
    log_in(page, ALICE)
    row = page.locator("tr.msg", has_text="Trip to Lisbon")
    assert row.locator(".count").inner_text() == "3"
    row.locator("a.open").click()
    if width >= 1280:
        # three panes: the conversation opens in the reading pane beside the list
        root = page.locator("#pane")
        root.locator("details.convmsg").first.wait_for()
    else:
        page.wait_for_url(lambda url: "/conv/" in url)
        root = page.locator("main")
    messages = root.locator("details.convmsg")
    assert messages.count() == 3
    # the unread ones open (the first and the newest), the user's read reply folded
    assert [messages.nth(i).get_attribute("open") is not None for i in range(3)] == [True, False, True]
    newest = messages.nth(2).locator("iframe.body")
    # a frame is visible before its document has loaded: wait for the text, not the frame
    newest.content_frame.locator("body", has_text="Booked the flights.").wait_for()
    assert not messages.nth(1).locator("iframe.body").is_visible()
    messages.nth(1).locator("summary").click()
    mine = messages.nth(1).locator("iframe.body")
    mine.wait_for(state="visible")
    mine.content_frame.locator("body", has_text="May works").wait_for()
    page.wait_for_function(
        "() => document.querySelectorAll('details.convmsg')[1].querySelector('iframe').offsetHeight >= 120")
    assert page.evaluate("document.documentElement.scrollWidth") <= width + 1  # no sideways scrolling
    screenshot(page, f"conversation-{label}", full_page=True)


@pytest.mark.parametrize(("label", "width", "height"), [("page", 1200, 860), ("pane", 1440, 900)])
def test_shortcuts_act_on_a_conversation(browser: Any, mailserver: RunningServer, label: str, width: int,
                                         height: int) -> None:
    seed(mailserver)
    put(mailserver, mail("Other", "o1@x", day=9), when=T0 + 9 * 86400)
    panes = width >= 1280
    page = new_page(browser, mailserver, width, height)
    log_in(page, ALICE)
    inbox = page.url

    def open_conversation() -> Any:
        page.locator("tr.msg", has_text="Trip to Lisbon").locator("a.open").click()
        if panes:
            page.locator("#pane details.convmsg").first.wait_for()
            return page.locator("#pane")
        page.wait_for_url(re.compile(r"/conv/\d+"))
        return page.locator("main")

    root = open_conversation()
    assert root.locator(".actions .back").is_visible() is not panes  # no way back from the pane: the list is there
    check_page(page, f"a conversation ({label})")
    # r answers its newest message from someone else
    page.keyboard.press("r")
    page.wait_for_url(re.compile(r"/compose\?reply=\d+:\d+"))
    assert page.locator("input[name=subject]").input_value() == "Re: Trip to Lisbon"
    page.goto(inbox)
    # e archives the conversation's two messages in INBOX (not the reply in Sent), z undoes it
    open_conversation()
    page.keyboard.press("e")
    page.wait_for_selector("text=2 moved to Archive.")
    assert len(mailserver.messages(ALICE, "Archive")) == 2
    assert len(mailserver.messages(ALICE, "Sent")) == 1
    page.keyboard.press("z")
    page.wait_for_selector("text=Moved back.")
    assert len(mailserver.messages(ALICE)) == 3
    # # deletes it
    open_conversation()
    page.keyboard.press("#")
    page.wait_for_selector("text=2 moved to Trash.")
    assert len(mailserver.messages(ALICE, "Trash")) == 2
    if not panes:
        # u goes back to the list
        page.locator("tr.msg", has_text="Other").locator("a.open").click()
        page.wait_for_url(re.compile(r"/msg/\d+"))
        page.keyboard.press("u")
        page.wait_for_url(re.compile(r"/box/\d+(\?.*)?$"))
        assert page.locator("#list").count() == 1


def test_after_archive_in_the_pane_the_message_below_opens(browser: Any, mailserver: RunningServer) -> None:
    for n in range(12):
        put(mailserver, mail(f"Note {n:02d}", f"n{n}@x", day=n + 1, body=f"Body of note {n:02d}."),
            when=T0 + n * 86400)
    page = new_page(browser, mailserver, 1440, 900)
    log_in(page, ALICE)
    # the newest first: the 9th row is Note 03
    page.locator("tr.msg", has_text="Note 03").locator("a.open").click()
    page.locator("#pane-subject", has_text="Note 03").wait_for()
    page.keyboard.press("e")
    page.wait_for_selector("text=1 moved to Archive.")
    # the one below it opens in the pane, the cursor on its row
    page.locator("#pane-subject", has_text="Note 02").wait_for()
    assert page.locator("tr.msg.cursor").inner_text().count("Note 02") == 1
    assert page.locator("tr.msg.current", has_text="Note 02").count() == 1
    # and the cursor goes on from there
    page.keyboard.press("j")
    page.keyboard.press("o")
    page.locator("#pane-subject", has_text="Note 01").wait_for()
    page.frame_locator("#pane iframe.body").locator("body", has_text="Body of note 01.").wait_for()
    # the last row archived: the one above it opens
    page.keyboard.press("j")
    page.keyboard.press("o")
    page.locator("#pane-subject", has_text="Note 00").wait_for()
    page.keyboard.press("#")
    page.wait_for_selector("text=1 moved to Trash.")
    page.locator("#pane-subject", has_text="Note 01").wait_for()
