"""The webmail's layout in a real browser (Playwright + Debian's chromium):
a phone app at 390x844 and three panes at 1440x900, light and dark (the
system setting), no sideways scrolling on any page, keyboard shortcuts,
desktop notifications, and axe-core (WCAG 2.1 AA) on every page with no
serious or critical violation. Screenshots go to docs/screenshots/."""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
from typing import Any

import pytest

from mailyard.message.compose import Attachment, compose, to_bytes

from ..conftest import RunningServer
from ..waiting import wait_until
from .webtools import base_url, log_in, screenshot

ALICE = "alice@example.test"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def axe_api() -> Any:
    try:
        from axe_playwright_python.sync_playwright import Axe
    except ImportError:
        pytest.skip("axe-playwright-python is not installed (pip install -e '.[test]')")
    return Axe()


def check_page(page: Any, what: str) -> None:
    """No sideways scrolling, and no serious or critical axe-core violation
    of WCAG 2.1 A/AA (the message body frame is the sender's, not ours)."""
    width = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{what}: the page scrolls sideways ({width[0]} > {width[1]} px)"
    results = axe_api().run(page, options={"runOnly": {"type": "tag", "values": AXE_TAGS}, "iframes": False,
                                           "resultTypes": ["violations"]})
    bad = [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
    assert not bad, f"{what}: " + "; ".join(
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:4]}" for v in bad)


def context(browser: Any, server: RunningServer, viewport: dict, dark: bool = False, **kw: Any) -> Any:
    ctx = browser.new_context(viewport=viewport, base_url=base_url(server),
                              color_scheme="dark" if dark else "light", **kw)
    ctx.set_default_timeout(15_000)
    return ctx


def seed(server: RunningServer) -> None:
    async def go() -> None:
        account = await server.store.get_account(ALICE)
        box = await server.store.get_mailbox(account.id, "INBOX")
        msgs = [
            compose("Erin Example <erin@example.test>", ALICE, subject="Quarterly planning meeting moved to Thursday",
                    text="Hi Alice, the planning meeting moves to Thursday at ten; the agenda is unchanged. "
                         "Please bring the figures for the third quarter."),
            compose("a-very-long-address-without-any-spaces-at-all@subdomain.example.test", ALICE,
                    subject="Averyveryverylongsubjectwordthatdoesnotbreakanywhereatalljusttoseewhathappens"
                            "withthelayoutonaphone",
                    text="Averyveryverylongbodywordthatdoesnotbreakanywhere" * 4),
            compose("Frank <frank@example.test>", ALICE, subject="Photos from the trip",
                    text="Here they are.", attachments=[Attachment("trip.png", b"\x89PNG\r\n", "image/png")]),
        ]
        for i in range(6):
            msgs.append(compose(f"Sender {i} <s{i}@example.test>", ALICE, subject=f"Note number {i}",
                                text=f"This is the text of note {i}, a short message."))
        for m in msgs:
            await server.store.append(box, to_bytes(m))

    server.call(go())


def test_phone_layout_every_page(browser: Any, mailserver: RunningServer) -> None:
    seed(mailserver)
    ctx = context(browser, mailserver, PHONE)
    page = ctx.new_page()
    page.goto("/login")
    check_page(page, "login (phone)")
    screenshot(page, "login-phone")
    log_in(page, ALICE)
    inbox = page.url

    # the list: rows of two lines (sender and time, then subject and snippet)
    row = page.locator("tr.msg", has_text="Quarterly planning")
    sender, subject, time_ = (row.locator(f"td.{c}").bounding_box() for c in ("from", "subject", "date"))
    assert subject["y"] >= sender["y"] + sender["height"] - 1, "subject not on a second line"
    assert abs(time_["y"] - sender["y"]) < 4, "time not on the sender's line"
    assert row.locator(".snippet").is_visible()
    assert "the planning meeting moves to Thursday" in row.locator(".snippet").inner_text()
    # the actions: one bar at the bottom of the screen, secondary ones under More
    bar = page.locator(".listpane .toolbar").bounding_box()
    assert bar["y"] + bar["height"] == pytest.approx(PHONE["height"], abs=1)
    assert bar["height"] < 60, f"the action bar takes {bar['height']} px"
    assert not page.locator("#move-button").is_visible()
    page.locator(".listpane .moretoggle").click()
    assert page.locator("#move-button").is_visible()
    page.locator(".listpane .moretoggle").click()
    page.locator(".listpane .moretoggle").blur()
    check_page(page, "inbox (phone)")
    screenshot(page, "inbox-phone")
    # the header's account menu folds away too
    assert not page.locator("#logout").is_visible()
    page.click("#account-toggle")
    assert page.locator("#logout").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#logout").is_visible()
    page.click("#navtoggle")
    check_page(page, "inbox with folders open (phone)")

    # a message opens as its own page (no reading pane at this width)
    page.goto(inbox)
    page.locator("tr.msg", has_text="Averyvery").locator("a.open").click()
    page.wait_for_url(re.compile(r"/msg/\d+"))
    check_page(page, "message with unbreakable words (phone)")
    page.goto(inbox)
    page.locator("tr.msg", has_text="Photos from the trip").locator("a.open").click()
    page.wait_for_url(re.compile(r"/msg/\d+"))
    check_page(page, "message with an attachment (phone)")
    screenshot(page, "message-phone")

    # compose: Send stays on screen however long the text
    page.goto("/compose")
    page.fill("#body", "line\n" * 200)
    page.locator("#body").press("End")
    send = page.locator("#send").bounding_box()
    assert 0 <= send["y"] and send["y"] + send["height"] <= PHONE["height"], send
    page.evaluate("window.scrollTo(0, 0)")
    send = page.locator("#send").bounding_box()
    assert send["y"] + send["height"] <= PHONE["height"], "Send is below the fold"
    check_page(page, "compose (phone)")
    screenshot(page, "compose-phone")

    page.goto("/folders")
    check_page(page, "folders (phone)")
    screenshot(page, "folders-phone")
    page.goto(inbox.rsplit("/", 1)[0] + "/999999")
    check_page(page, "error page (phone)")
    ctx.close()

    # dark: same pages, the dark palette, still readable
    ctx = context(browser, mailserver, PHONE, dark=True)
    page = ctx.new_page()
    log_in(page, ALICE)
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(22, 24, 28)", bg
    check_page(page, "inbox (phone, dark)")
    screenshot(page, "inbox-phone-dark")
    page.locator("tr.msg", has_text="Quarterly planning").locator("a.open").click()
    page.wait_for_url(re.compile(r"/msg/\d+"))
    check_page(page, "message (phone, dark)")
    page.goto("/compose")
    check_page(page, "compose (phone, dark)")
    ctx.close()


def test_desktop_three_panes(browser: Any, mailserver: RunningServer) -> None:
    seed(mailserver)
    ctx = context(browser, mailserver, DESKTOP)
    page = ctx.new_page()
    page.goto("/login")
    check_page(page, "login (desktop)")
    log_in(page, ALICE)
    inbox = page.url
    nav, listpane, pane = (page.locator(s).bounding_box() for s in ("#nav", ".listpane", "#pane"))
    assert nav["x"] < listpane["x"] < pane["x"], (nav, listpane, pane)
    assert page.locator("#pane .placeholder").is_visible()
    check_page(page, "inbox (desktop)")

    # a message opens in the reading pane; the list stays
    page.evaluate("window.__sameDocument = 1")
    page.locator("tr.msg", has_text="Quarterly planning").locator("a.open").click()
    page.wait_for_selector("#pane article.read")
    assert page.url == inbox
    assert page.evaluate("window.__sameDocument") == 1
    assert page.locator("#pane-subject").inner_text().startswith("Quarterly planning")
    assert page.locator("tr.msg.current", has_text="Quarterly planning").count() == 1
    assert "agenda is unchanged" in page.frame_locator("#pane iframe.body").locator("body").inner_text()
    # ids stay unique with the message in the pane
    assert page.evaluate("new Set([...document.querySelectorAll('[id]')].map(e => e.id)).size"
                         " === document.querySelectorAll('[id]').length")
    # it is read now: the live update marks the row read
    page.wait_for_selector("tr.msg:not(.unread):has-text('Quarterly planning')")
    page.locator("#pane").focus()
    check_page(page, "inbox with a message in the pane (desktop)")
    screenshot(page, "inbox")
    # the pane's own buttons work (the same forms): flag it
    page.locator("#pane").get_by_role("button", name="More actions").click()
    page.click("#pane-flag")
    page.wait_for_url(re.compile(r"/msg/\d+"))

    # the message page itself (the link without scripts, or a new tab)
    check_page(page, "message page (desktop)")
    screenshot(page, "message")
    page.goto("/compose")
    check_page(page, "compose (desktop)")
    screenshot(page, "compose")
    page.goto("/folders")
    check_page(page, "folders (desktop)")
    screenshot(page, "folders")
    ctx.close()

    ctx = context(browser, mailserver, DESKTOP, dark=True)
    page = ctx.new_page()
    log_in(page, ALICE)
    page.locator("tr.msg", has_text="Photos from the trip").locator("a.open").click()
    page.wait_for_selector("#pane article.read")
    page.wait_for_selector("tr.msg:not(.unread):has-text('Photos from the trip')")
    page.locator("#pane").focus()
    check_page(page, "inbox with the pane (desktop, dark)")
    screenshot(page, "inbox-dark")
    # a plain-text body is dark too (HTML mail keeps its white page)
    page.frame_locator("#pane iframe.body").locator("body", has_text="Here they are.").wait_for()
    frame_html = page.frame_locator("#pane iframe.body").locator("html")
    assert frame_html.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(22, 24, 28)"
    assert frame_html.evaluate("e => getComputedStyle(e.querySelector('body')).color") == "rgb(230, 232, 235)"
    page.goto("/folders")
    check_page(page, "folders (desktop, dark)")
    ctx.close()

    # without scripts the links lead to the message page; on a phone nothing is folded away
    ctx = context(browser, mailserver, PHONE, java_script_enabled=False)
    page = ctx.new_page()
    log_in(page, ALICE)
    for selector in ("#folder-list", "#logout", "#move-button"):
        assert page.locator(selector).is_visible(), selector
    assert not page.locator("#navtoggle").is_visible()
    # (page.evaluate waits for scripts forever here: the boxes tell the width)
    for selector in (".top", "#nav", ".listpane .toolbar", "table.messages"):
        box = page.locator(selector).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (selector, box)
    ctx.close()

    # without scripts the links lead to the message page
    ctx = context(browser, mailserver, DESKTOP, java_script_enabled=False)
    page = ctx.new_page()
    log_in(page, ALICE)
    page.locator("tr.msg", has_text="Note number 1").locator("a.open").click()
    page.wait_for_url(re.compile(r"/msg/\d+"))
    assert page.locator("#subject").inner_text() == "Note number 1"
    assert page.locator("#move-button").is_visible()  # nothing folded away
    ctx.close()


@pytest.mark.parametrize(("width", "height", "panes"), [(1279, 800, False), (1280, 800, True), (1440, 900, True)])
def test_three_panes_from_1280_px(browser: Any, mailserver: RunningServer, width: int, height: int,
                                  panes: bool) -> None:
    """The reading pane appears from 1280 px wide (a common laptop width):
    folders, list and pane side by side, nothing scrolling sideways."""
    seed(mailserver)
    ctx = context(browser, mailserver, {"width": width, "height": height})
    page = ctx.new_page()
    log_in(page, ALICE)
    assert page.locator("#pane").is_visible() == panes
    if panes:
        nav, listpane, pane = (page.locator(s).bounding_box() for s in ("#nav", ".listpane", "#pane"))
        assert nav["x"] + nav["width"] <= listpane["x"] + 1 and listpane["x"] + listpane["width"] <= pane["x"] + 1
        assert pane["x"] + pane["width"] <= width + 1 and pane["width"] >= 400, pane
        page.locator("tr.msg", has_text="Quarterly planning").locator("a.open").click()
        page.wait_for_selector("#pane article.read")
        assert "agenda is unchanged" in page.frame_locator("#pane iframe.body").locator("body").inner_text()
        page.locator("#pane").focus()
        check_page(page, f"three panes at {width}x{height}")
        screenshot(page, f"inbox-{width}x{height}")
    else:
        check_page(page, f"classic layout at {width}x{height}")
    ctx.close()


def test_keyboard_shortcuts(browser: Any, mailserver: RunningServer) -> None:
    seed(mailserver)
    ctx = context(browser, mailserver, DESKTOP)
    page = ctx.new_page()
    log_in(page, ALICE)
    inbox = page.url

    # ? shows the list of shortcuts; Escape closes it
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    assert page.locator("#help").get_by_text("Mark as spam").is_visible()
    check_page(page, "help overlay")
    page.keyboard.press("Escape")
    assert not page.locator("#help").is_visible()

    # / focuses the search; letters typed there are text, not shortcuts
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("e#!c")
    assert page.input_value("#q") == "e#!c"
    assert page.url == inbox
    page.locator("#q").fill("")
    page.locator("#q").blur()

    # j/k move the cursor; o opens in the pane; r replies to it
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    assert page.locator("tr.msg.cursor").count() == 1
    first = page.locator("tr.msg").nth(0)
    assert "cursor" in first.get_attribute("class")
    subject = first.locator("a.open").inner_text()
    page.keyboard.press("o")
    page.wait_for_selector("#pane article.read")
    assert page.locator("#pane-subject").inner_text() == subject
    page.keyboard.press("a")
    page.wait_for_url(re.compile(r"/compose\?replyall="))
    page.go_back()
    page.wait_for_url(inbox)

    # e archives the cursor's message, # deletes, ! marks as spam
    def act(key: str, folder: str) -> None:
        page.keyboard.press("j")
        text = page.locator("tr.msg.cursor a.open").inner_text()
        page.keyboard.press(key)
        page.wait_for_selector(f"text=1 moved to {folder}.")
        assert text not in page.locator("#list").inner_text()
        # the Subject field as sent (a long one is folded or encoded, RFC 5322 2.2.3, RFC 2047)
        subjects = [email.message_from_bytes(m, policy=email.policy.default)["subject"]
                    for m in mailserver.messages(ALICE, folder)]
        assert text in subjects, (key, folder, text, subjects)

    # with a message in the pane, the action follows the cursor once it moved on
    page.keyboard.press("j")
    page.keyboard.press("o")
    page.wait_for_selector("#pane article.read")
    opened = page.locator("#pane-subject").inner_text()
    act("e", "Archive")
    assert opened in page.locator("#list").inner_text()
    page.keyboard.press("j")
    page.keyboard.press("o")
    page.wait_for_selector("#pane article.read")
    pane_subject = page.locator("#pane-subject").inner_text()
    page.keyboard.press("e")  # the pane's own Archive button
    page.wait_for_selector("text=1 moved to Archive.")
    assert pane_subject not in page.locator("#list").inner_text()
    act("#", "Trash")
    act("!", "Junk")

    # Enter opens the cursor's message; on the message page r replies, u goes back
    ctx.close()
    ctx = context(browser, mailserver, {"width": 1000, "height": 800})
    page = ctx.new_page()
    log_in(page, ALICE)
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/msg/\d+"))
    page.keyboard.press("r")
    page.wait_for_url(re.compile(r"/compose\?reply="))
    assert page.locator("h1").inner_text() == "Reply"
    page.go_back()
    page.wait_for_url(re.compile(r"/msg/\d+"))
    page.keyboard.press("e")
    page.wait_for_selector("text=1 moved to Archive.")
    page.keyboard.press("c")
    page.wait_for_url(re.compile(r"/compose$"))
    ctx.close()


NOTIFICATION_STUB = """
window.__asked = 0; window.__notes = [];
window.Notification = function (title, options) { window.__notes.push([title, options && options.body]); };
window.Notification.permission = "default";
window.Notification.requestPermission = function () {
  window.__asked += 1; window.Notification.permission = "granted"; return Promise.resolve("granted");
};
"""


def test_desktop_notification_for_new_mail(browser: Any, mailserver: RunningServer) -> None:
    ctx = context(browser, mailserver, DESKTOP)
    ctx.add_init_script(NOTIFICATION_STUB)
    page = ctx.new_page()
    log_in(page, ALICE)
    page.goto("/folders")  # any page: notifications follow INBOX
    assert page.evaluate("window.__asked") == 0, "permission asked without a user gesture"
    button = page.locator("#notify-toggle")
    assert button.is_visible() and button.inner_text() == "Notify me of new mail"
    with page.expect_response(lambda r: "/events/newest" in r.url):  # where "new" starts
        button.click()
    wait_until(lambda: page.evaluate("window.__asked") == 1, what="the permission request")
    wait_until(lambda: button.inner_text() == "Notifications on", what="the button to say on")
    assert button.get_attribute("aria-pressed") == "true"
    with smtplib.SMTP("127.0.0.1", mailserver.port("smtp")) as s:
        s.sendmail("carol@example.test", [ALICE], to_bytes(compose("carol@example.test", ALICE,
                                                                    subject="Ping", text="x")))
    wait_until(lambda: page.evaluate("window.__notes.length") == 1, timeout=15, what="a notification")
    title, body = page.evaluate("window.__notes[0]")
    assert title == "mailyard: new mail" and body == "carol@example.test: Ping"
    # the unread count shows in the tab title
    wait_until(lambda: page.title().startswith("(1) "), what="the unread count in the title")
    assert page.evaluate("window.__asked") == 1


CONTRAST = """sel => {
  // WCAG 2.1 contrast ratio of the text of sel's element on the first opaque
  // background under it (looked up here, in one turn: a live update of the
  // list may replace the element between two calls)
  const el = document.querySelector(sel);
  const rgba = s => s.match(/[\\d.]+/g).map(Number);
  const lum = c => {
    const [r, g, b] = c.slice(0, 3).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  let bg = null;
  for (let n = el; n && !bg; n = n.parentElement) {
    const c = rgba(getComputedStyle(n).backgroundColor);
    if (c.length < 4 || c[3] === 1) { bg = c; }
  }
  const fg = rgba(getComputedStyle(el).color);
  const [a, b] = [lum(fg), lum(bg || [255, 255, 255])];
  return [(Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05), getComputedStyle(el).color, bg && bg.join(",")];
}"""


def thread(server: RunningServer, subject: str, replies: int) -> None:
    """A conversation of ``replies`` + 1 messages in ALICE's INBOX."""
    async def go() -> None:
        account = await server.store.get_account(ALICE)
        box = await server.store.get_mailbox(account.id, "INBOX")
        for i in range(replies + 1):
            refs = "".join(f"<t{j}@example.test>" for j in range(i))
            head = (f"From: Carol <carol@example.test>\r\nTo: {ALICE}\r\nSubject: {'Re: ' if i else ''}{subject}\r\n"
                    f"Message-ID: <t{i}@example.test>\r\nDate: 0{i + 1} Jan 2024 10:00:00 +0000\r\n")
            if refs:
                head += f"In-Reply-To: <t{i - 1}@example.test>\r\nReferences: {refs}\r\n"
            await server.store.append(box, (head + "\r\nhello\r\n").encode())

    server.call(go())


@pytest.mark.parametrize("dark", [False, True])
def test_conversation_count_is_readable(browser: Any, mailserver: RunningServer, dark: bool) -> None:
    """The count of a conversation's messages in its row reads at WCAG AA
    (4.5:1) in light and dark, in a read row and an unread one."""
    thread(mailserver, "Project kickoff", 2)
    ctx = context(browser, mailserver, {"width": 1200, "height": 800}, dark=dark)
    page = ctx.new_page()
    log_in(page, ALICE)
    assert page.locator("tr.msg.thread .count").inner_text() == "3"
    ratio, fg, bg = page.evaluate(CONTRAST, "tr.msg.thread .count")
    assert ratio >= 4.5, f"the count {fg} on {bg}: {ratio:.2f}:1"
    page.locator("tr.msg.thread input[name=uid]").check()
    page.click("#list-more button[value=read]")
    page.wait_for_selector("tr.msg.thread:not(.unread)")
    ratio, fg, bg = page.evaluate(CONTRAST, "tr.msg.thread .count")
    assert ratio >= 4.5, f"the count {fg} on {bg} (read): {ratio:.2f}:1"
    ctx.close()


@pytest.mark.parametrize("viewport", [PHONE, {"width": 1200, "height": 860}])
def test_settings_number_fields_are_styled_and_a_line_tall(browser: Any, mailserver: RunningServer,
                                                           viewport: dict) -> None:
    """Undo send and Junk from score: bordered and rounded as every other
    field, a line tall beside a label of several lines, and as wide as a number."""
    ctx = context(browser, mailserver, viewport)
    page = ctx.new_page()
    log_in(page, ALICE)
    page.goto("/settings")
    text = page.locator("#identity-name")
    line = text.bounding_box()["height"]
    style = "e => [getComputedStyle(e).borderTopLeftRadius, getComputedStyle(e).paddingTop]"
    for field in ("#send-delay", "#spam-threshold"):
        box = page.locator(field).bounding_box()
        assert box["height"] <= line + 2, f"{field} is {box['height']} px tall, a text field {line}"
        assert box["width"] <= 160, f"{field} is {box['width']} px wide"
        assert page.locator(field).evaluate(style) == text.evaluate(style), field
    ctx.close()


def test_phone_header_takes_two_rows(browser: Any, mailserver: RunningServer) -> None:
    """At 390 px the header's buttons share one row (Folders, the name,
    Compose, Menu) and the search field the next: two rows, not three."""
    ctx = context(browser, mailserver, PHONE)
    page = ctx.new_page()
    log_in(page, ALICE)
    boxes = {s: page.locator(s).bounding_box() for s in ("#navtoggle", ".top .brand", "#compose-link",
                                                         "#account-toggle", "#q", "#search-help")}
    top = boxes["#navtoggle"]["y"] + boxes["#navtoggle"]["height"] / 2
    for s in (".top .brand", "#compose-link", "#account-toggle"):
        middle = boxes[s]["y"] + boxes[s]["height"] / 2
        assert abs(middle - top) < 6, f"{s} is not on the first row: {boxes}"
    middles = sorted(b["y"] + b["height"] / 2 for b in boxes.values())
    rows = 1 + sum(1 for a, b in zip(middles, middles[1:], strict=False) if b - a > 10)
    assert rows == 2, boxes
    assert page.locator(".top .brand").evaluate("e => e.scrollWidth <= e.clientWidth"), "the name is cut"
    # the controls that need the script show with it (without: test_web_layout_http.py)
    assert page.locator("label.selall").is_visible()
    page.goto("/compose")
    assert page.locator("#drop-hint").is_visible()
    ctx.close()
