"""Recipient fields in a real browser (Playwright + Debian's chromium):
suggestions as you type, driven by the keyboard (WAI-ARIA combobox), and
recipients as removable chips, at phone and desktop sizes. Screenshots go
to docs/screenshots/compose-suggestions-*.png."""

from __future__ import annotations

from typing import Any

import pytest

from mailyard.store.api import Contact

from ..conftest import RunningServer
from .webtools import log_in, new_page, screenshot

ALICE, BOB = "alice@example.test", "bob@example.test"


def add_contacts(server: RunningServer) -> None:
    async def go() -> None:
        account = await server.store.get_account(ALICE)
        await server.store.add_contact(account.id, Contact("Carol Cook", ("carol@remote.test",)))
        await server.store.add_contact(account.id, Contact("Carl Cart", ("carl@remote.test",)))
        await server.store.add_contact(account.id, Contact("Bob Builder", (BOB,)))

    server.call(go())


def sent_headers(server: RunningServer) -> bytes:
    async def go() -> bytes:
        account = await server.store.get_account(ALICE)
        box = await server.store.get_mailbox(account.id, "Sent")
        infos = await server.store.list_messages(box)
        raw = await server.store.read_message(box, infos[-1].uid)
        return raw.split(b"\r\n\r\n", 1)[0]

    return server.call(go())


@pytest.mark.parametrize("width, height", [(390, 844), (1440, 900)])
def test_recipient_suggestions_by_keyboard_and_chips(browser: Any, mailserver: RunningServer, width: int,
                                                     height: int) -> None:
    add_contacts(mailserver)
    page = new_page(browser, mailserver, width, height)
    log_in(page, ALICE)
    page.goto("/compose")
    entry = page.locator("#to-entry")
    assert entry.get_attribute("role") == "combobox" and entry.get_attribute("aria-expanded") == "false"
    # the label now names the field one types into
    assert page.locator('label[for="to-entry"]').count() == 1
    entry.click()
    page.keyboard.type("ca")
    options = page.locator("#to-suggestions [role=option]")
    options.first.wait_for()
    assert options.all_inner_texts() == ["Carl Cart <carl@remote.test>", "Carol Cook <carol@remote.test>"]
    assert entry.get_attribute("aria-expanded") == "true"
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert options.nth(1).get_attribute("aria-selected") == "true"
    assert entry.get_attribute("aria-activedescendant") == options.nth(1).get_attribute("id")
    page.keyboard.press("ArrowUp")
    assert options.nth(0).get_attribute("aria-selected") == "true"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")  # takes Carol; the form is not sent
    chips = page.locator("#to").locator("xpath=following-sibling::div[1]").locator(".chip")
    assert chips.all_inner_texts()[0].startswith("Carol Cook <carol@remote.test>")
    assert page.input_value("#to") == "Carol Cook <carol@remote.test>"
    assert page.url.endswith("/compose")
    # Escape closes the suggestions and keeps the text
    page.keyboard.type("bo")
    options.first.wait_for()
    page.keyboard.press("Escape")
    page.locator("#to-suggestions").wait_for(state="hidden")
    assert entry.get_attribute("aria-expanded") == "false" and entry.input_value() == "bo"
    page.keyboard.press("Backspace")
    page.keyboard.press("Backspace")
    # a typed address becomes a chip at the comma
    page.keyboard.type(f"{BOB},")
    assert [t.split("\n")[0].rstrip("×").strip() for t in chips.all_inner_texts()] == [
        "Carol Cook <carol@remote.test>", BOB]
    # removable: the chip's button (by keyboard too)
    page.get_by_role("button", name="Remove Carol Cook <carol@remote.test>").focus()
    page.keyboard.press("Enter")
    assert chips.count() == 1 and page.input_value("#to") == BOB
    page.fill("#subject", "chips")
    page.fill("#body", "sent from the chips")
    page.click("#send")
    page.wait_for_selector("text=Message sent.")
    headers = sent_headers(mailserver)
    assert f"\r\nTo: {BOB}\r\n".encode() in headers and b"carol" not in headers
    page.context.close()
    # the suggestions' screenshot, at each size
    page = new_page(browser, mailserver, width, height)
    log_in(page, ALICE)
    page.goto("/compose")
    page.locator("#to-entry").click()
    page.keyboard.type("ca")
    page.locator("#to-suggestions [role=option]").first.wait_for()
    page.keyboard.press("ArrowDown")
    screenshot(page, f"compose-suggestions-{width}")


@pytest.mark.parametrize("width, height", [(390, 844), (1440, 900)])
def test_contacts_and_settings_pages_fit_the_screen(browser: Any, mailserver: RunningServer, width: int,
                                                    height: int) -> None:
    add_contacts(mailserver)
    for path, name in (("/contacts", "contacts"), ("/settings", "settings")):
        page = new_page(browser, mailserver, width, height)
        log_in(page, ALICE)
        page.goto(path)
        # no sideways scrolling
        wide = page.evaluate("[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1).map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 8)")
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"), (path, wide)
        screenshot(page, f"{name}-{width}", full_page=True)
