"""The Undo of a move in a real browser (web/undomove.py): the notice after
Delete carries an Undo button inside its status region, reached with Tab and
pressed with the ``z`` key the help dialog lists, no axe-core violation, no
sideways scrolling at phone width; the message is back in INBOX with its flags. The forms without scripts: tests/integration/test_web_undomove.py."""

from __future__ import annotations

import re
from typing import Any

from mailyard.message.compose import compose, to_bytes

from ..conftest import RunningServer
from .test_web_layout import check_page
from .webtools import log_in, new_page

ALICE = "alice@example.test"


def append(server: RunningServer, data: bytes, flags: tuple[str, ...] = ()) -> None:
    async def go() -> None:
        account = await server.store.get_account(ALICE)
        box = await server.store.get_mailbox(account.id, "INBOX")
        await server.store.append(box, data, flags)

    server.call(go())


def inbox_flags(server: RunningServer) -> list[frozenset[str]]:
    async def go() -> list[frozenset[str]]:
        account = await server.store.get_account(ALICE)
        box = await server.store.get_mailbox(account.id, "INBOX")
        return [m.flags for m in await server.store.list_messages(box)]

    return server.call(go())


def test_undo_of_a_delete_by_button_and_by_key(browser: Any, mailserver: RunningServer) -> None:
    data = to_bytes(compose("carol@example.test", ALICE, subject="Keep me", text="x"))
    append(mailserver, data, ("\\Flagged",))
    page = new_page(browser, mailserver)
    log_in(page, ALICE)

    # keyboard: j to the message, # deletes it, z undoes that
    page.keyboard.press("j")
    page.keyboard.press("#")
    page.wait_for_selector("text=1 moved to Trash.")
    assert mailserver.messages(ALICE) == []
    status = page.locator("[role=status]", has_text="1 moved to Trash.")
    assert status.locator("button#undo-move").inner_text() == "Undo"
    check_page(page, "the notice with its Undo")
    page.keyboard.press("z")
    page.wait_for_selector("text=Moved back.")
    assert mailserver.messages(ALICE) == [data]
    assert mailserver.messages(ALICE, "Trash") == []
    assert page.locator("#undo-move").count() == 0
    assert "\\Flagged" in inbox_flags(mailserver)[0]

    # from the message page, the button reached with Tab and pressed with Enter
    page.locator("tr.msg", has_text="Keep me").locator("a.open").click()
    page.wait_for_url(re.compile(r"/msg/\d+"))
    page.set_viewport_size({"width": 390, "height": 844})
    page.click("#delete-button")
    page.wait_for_selector("#undo-move")
    check_page(page, "the notice with its Undo at phone width")
    page.locator("a.skip").focus()
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "undo-move":
            break
    assert page.evaluate("document.activeElement.id") == "undo-move"
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Moved back.")
    assert mailserver.messages(ALICE) == [data]
    assert {"\\Seen", "\\Flagged"} <= set(inbox_flags(mailserver)[0])
    assert page.locator("#help tr", has_text="Undo").count() == 1
    page.context.close()
