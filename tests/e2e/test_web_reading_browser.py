"""Webmail reading in the browser (Playwright with Debian's chromium) at
390x844 and 1440x900: the search-operator popover opens and closes without
script of its own (a <details>), a conversation shows older messages
collapsed and the newest open, a collapsed one opens with its body framed
and sized; screenshots of both go to docs/screenshots/."""

from __future__ import annotations

from typing import Any

import pytest

from ..conftest import RunningServer
from ..integration.test_web_conversations import T0, mail, mk, put
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
    assert [messages.nth(i).get_attribute("open") is not None for i in range(3)] == [False, False, True]
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
