"""Webmail accessibility in a real browser (Playwright + Debian's chromium):
where the focus goes (a refused form's errors, the compose form's first
field, a folding menu closed with Escape, the message body's frame), names
that hold the visible text, landmarks told apart, and what needs scripts
hidden without them."""

from __future__ import annotations

import re
from typing import Any

from mailyard.message.compose import compose, to_bytes

from ..conftest import USERS, RunningServer
from .test_web_browser import append
from .webtools import base_url, log_in, new_page

ALICE, BOB = "alice@example.test", "bob@example.test"

FOCUSED = "document.activeElement && document.activeElement.id"

# Buttons and links whose aria-label leaves out the text they show (WCAG
# 2.5.3 Label in Name: a speech user says what they see); the text shown is
# the element's text minus what only screen readers get (.sr, aria-hidden).
LABEL_HIDES_TEXT = """() => Array.from(document.querySelectorAll("a[aria-label], button[aria-label]"))
  .filter(el => el.getClientRects().length)
  .filter(el => {
    const copy = el.cloneNode(true);
    copy.querySelectorAll(".sr, [aria-hidden=true]").forEach(s => s.remove());
    const shown = copy.textContent.replace(/\\s+/g, " ").trim().toLowerCase();
    return /[a-z0-9]/.test(shown) && !el.getAttribute("aria-label").toLowerCase().includes(shown);
  })
  .map(el => el.outerHTML)"""

# Landmarks of one role (several search forms, several navigations) need
# names that tell them apart.
SAME_LANDMARKS = """() => {
  const seen = {}, twice = [];
  document.querySelectorAll("[role=search], nav, [role=navigation], aside, section[aria-label], section[aria-labelledby]")
    .forEach(el => {
      const role = el.getAttribute("role") || el.tagName.toLowerCase();
      const label = el.getAttribute("aria-label") || (el.getAttribute("aria-labelledby")
        && (document.getElementById(el.getAttribute("aria-labelledby")) || {}).textContent) || "";
      const key = role + "|" + label.trim();
      if (seen[key]) { twice.push(key); }
      seen[key] = true;
    });
  return twice;
}"""


def mail(server: RunningServer, subject: str, html: str | None = None) -> None:
    append(server, ALICE, to_bytes(compose("Bob Builder <bob@example.test>", ALICE, subject=subject,
                                           text="plain text", html=html)))


def open_message(page: Any, subject: str) -> None:
    page.goto(page.locator("tr.msg", has_text=subject).locator("a.open").get_attribute("href"))
    page.wait_for_url(re.compile(r"/msg/\d+"))


def test_a_refused_form_puts_the_focus_on_its_errors(browser: Any, mailserver: RunningServer) -> None:
    """A form sent back with errors takes the focus to what went wrong, so a
    keyboard or screen reader user starts there rather than at the page's top."""
    page = new_page(browser, mailserver)
    page.goto("/login")
    page.fill("#username", ALICE)
    page.fill("#password", "not the password")
    page.click("#login-submit")
    page.wait_for_selector("#login-error")
    # the address is kept: the password is the field to type again, and the error describes it
    assert page.evaluate(FOCUSED) == "password"
    assert page.get_attribute("#password", "aria-describedby") == "login-error"
    assert page.get_attribute("#username", "aria-describedby") == "login-error"
    page.fill("#password", USERS[ALICE])
    page.click("#login-submit")
    page.wait_for_url(re.compile(r"/box/\d+"))

    page.goto("/compose")
    page.fill("#to", "not an address")
    page.fill("#subject", "refused")
    page.click("#send")
    page.wait_for_selector("#compose-errors")
    assert page.evaluate(FOCUSED) == "compose-errors"

    page.goto("/settings")
    page.fill("#old-password", USERS[ALICE])
    page.fill("#new-password", "a new password 1")
    page.fill("#new-password-again", "a new password 2")
    page.click("#change-password")
    page.wait_for_selector("#settings-errors")
    assert page.evaluate(FOCUSED) == "settings-errors"

    page.goto("/folders")
    page.fill("#new-folder", "Archive")  # there already
    page.click("#create-folder")
    page.wait_for_selector("#folder-error")
    assert page.evaluate(FOCUSED) == "folder-error"

    page.goto("/filters")
    page.fill("#raw-script", 'require "fileinto";\nif header :contains "subject" "x" { fileinto }')
    page.click("#save-script")
    page.wait_for_selector("#filter-error")
    assert page.evaluate(FOCUSED) == "filter-error"


def test_compose_starts_in_the_to_field_the_user_sees(browser: Any, mailserver: RunningServer) -> None:
    """The recipients' chips (people.js) put the original field out of sight:
    the page's first focus goes to the entry shown in its place, and what is
    typed there is the recipient."""
    page = new_page(browser, mailserver)
    log_in(page, ALICE)
    page.click("#compose-link")
    page.wait_for_load_state("load")
    assert page.evaluate(FOCUSED) == "to-entry"
    page.keyboard.type(BOB)
    assert page.input_value("#to-entry") == BOB
    page.keyboard.press("Tab")
    assert page.input_value("#to") == BOB
    assert page.evaluate(FOCUSED) == "cc-entry"


def test_escape_gives_the_focus_back_to_the_menu_button(browser: Any, mailserver: RunningServer) -> None:
    """At phone width the account menu and the More actions fold away: Escape
    closes them and the focus goes back to the button that opened them,
    not to the top of the page."""
    mail(mailserver, "Anything")
    page = new_page(browser, mailserver, width=375, height=667)
    log_in(page, ALICE)
    page.focus("#account-toggle")
    page.keyboard.press("Enter")
    assert page.evaluate(FOCUSED) == "contacts-link"
    page.keyboard.press("Escape")
    assert page.get_attribute("#account-toggle", "aria-expanded") == "false"
    assert page.evaluate(FOCUSED) == "account-toggle"

    page.focus(".toolbar .moretoggle")
    page.keyboard.press("Space")
    assert page.evaluate("document.activeElement.closest('#list-more') !== null")
    page.keyboard.press("Escape")
    assert page.evaluate("document.activeElement.classList.contains('moretoggle')")
    assert not page.locator("#list-more").is_visible()


def test_the_message_frame_shows_when_it_has_the_focus(browser: Any, mailserver: RunningServer) -> None:
    """Tab reaches the message body (a frame of its own, scrolled with the
    arrow keys there): the frame is outlined like any focused control."""
    mail(mailserver, "Framed")
    page = new_page(browser, mailserver)
    log_in(page, ALICE)
    open_message(page, "Framed")
    page.frame_locator("#body-frame").locator("body", has_text="plain text").wait_for()
    page.focus("#print-view")
    page.keyboard.press("Tab")
    assert page.evaluate(FOCUSED) == "body-frame"
    outline = page.eval_on_selector("#body-frame", "f => getComputedStyle(f).outlineStyle")
    assert outline != "none"
    page.keyboard.press("Shift+Tab")
    assert page.evaluate(FOCUSED) == "print-view"
    assert page.eval_on_selector("#body-frame", "f => getComputedStyle(f).outlineStyle") == "none"
    # the frame's document has a title of its own
    body = next(f for f in page.frames if f.url.endswith("/body"))
    assert body.title() == "Message body"


def test_names_hold_the_text_shown(browser: Any, mailserver: RunningServer) -> None:
    """Controls named with aria-label keep the text they show."""
    mail(mailserver, "Named")
    page = new_page(browser, mailserver)
    log_in(page, ALICE)
    assert page.evaluate(LABEL_HIDES_TEXT) == []
    open_message(page, "Named")
    assert page.evaluate(LABEL_HIDES_TEXT) == []
    assert page.get_by_role("button", name=re.compile(r"^Add Contact ?: Bob Builder$")).count() == 1
    for path in ("/contacts", "/settings", "/compose"):
        page.goto(path)
        assert page.evaluate(LABEL_HIDES_TEXT) == [], path


def test_landmarks_of_one_kind_have_names_of_their_own(browser: Any, mailserver: RunningServer) -> None:
    """Two search forms on the contacts page (mail and contacts) are told apart by name."""
    page = new_page(browser, mailserver)
    log_in(page, ALICE)
    for path in ("/contacts", "/settings", "/compose", "/folders", "/filters"):
        page.goto(path)
        assert page.evaluate(SAME_LANDMARKS) == [], path
    assert page.locator("[role=search][aria-label=Mail]").count() == 1


def test_the_remote_content_notice_holds_its_button(browser: Any, mailserver: RunningServer) -> None:
    """The notice of blocked remote content and its "Always show" button are
    one block (a form inside a <p> would end the paragraph before it)."""
    mail(mailserver, "Pictures", html='<p>Look <img src="https://images.example.net/a.png" alt="a picture"></p>')
    page = new_page(browser, mailserver)
    log_in(page, ALICE)
    open_message(page, "Pictures")
    assert page.locator("#remote-notice #allow-remote").count() == 1
    assert page.locator("#remote-notice #always-allow-remote").count() == 1


def test_keyboard_shortcuts_button_only_with_scripts(browser: Any, mailserver: RunningServer) -> None:
    """The shortcuts are app.js's: without scripts their button is not shown."""
    context = browser.new_context(viewport={"width": 1200, "height": 860}, base_url=base_url(mailserver),
                                  java_script_enabled=False)
    page = context.new_page()
    page.goto("/login")
    page.fill("#username", ALICE)
    page.fill("#password", USERS[ALICE])
    page.click("#login-submit")
    page.wait_for_url(re.compile(r"/box/\d+"))
    assert not page.locator("#help-open").is_visible()
    scripted = new_page(browser, mailserver)
    log_in(scripted, ALICE)
    assert scripted.locator("#help-open").is_visible()
    scripted.click("#help-open")
    assert scripted.evaluate(FOCUSED) == "help-close"


def test_the_print_view_is_one_main_landmark(browser: Any, mailserver: RunningServer) -> None:
    """The print view's content is in its main landmark (a screen reader's
    way to it), like every other page."""
    mail(mailserver, "Printed")
    page = new_page(browser, mailserver)
    log_in(page, ALICE)
    open_message(page, "Printed")
    page.goto(page.get_attribute("#print-view", "href"))
    assert page.locator("main h1", has_text="Printed").count() == 1
    assert page.locator("main #print-body").count() == 1
    assert page.locator("main #print-now").count() == 1
