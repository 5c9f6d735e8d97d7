"""Desktop notifications of new mail in a real browser (Playwright +
Debian's chromium) with the permission granted: they name the sender and
subject of the newest message, "and N more" with several, through the
live-update channel (/events, then /events/newest)."""

from __future__ import annotations

from typing import Any

from mailyard.message.compose import compose, to_bytes
from mailyard.store.api import AppendItem

from ..conftest import RunningServer
from ..waiting import wait_until
from .webtools import base_url, log_in

ALICE = "alice@example.test"

# Notification granted (context.grant_permissions) and turned on in this
# browser; the constructor records what would be shown.
CAPTURE = """
window.__notes = [];
window.localStorage.setItem("mailyard.notify", "1");
(function () {
  var Real = window.Notification;
  function Capture(title, options) { window.__notes.push([title, options && options.body]); }
  Capture.permission = Real ? Real.permission : "granted";
  Capture.requestPermission = function () { return Promise.resolve(Capture.permission); };
  window.Notification = Capture;
})();
"""


def deliver(server: RunningServer, *messages: tuple[str, str]) -> None:
    """Messages into Alice's INBOX in one commit (one live update)."""
    async def go() -> None:
        account = await server.store.get_account(ALICE)
        box = await server.store.get_mailbox(account.id, "INBOX")
        await server.store.append_many(box, [AppendItem(to_bytes(compose(sender, ALICE, subject=subject, text="x")))
                                             for sender, subject in messages])

    server.call(go())


def test_notification_names_sender_and_subject(browser: Any, mailserver: RunningServer) -> None:
    deliver(mailserver, ("Old <old@example.test>", "Already there"))
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=base_url(mailserver))
    ctx.set_default_timeout(15_000)
    ctx.grant_permissions(["notifications"])
    ctx.add_init_script(CAPTURE)
    page = ctx.new_page()
    with page.expect_response(lambda r: "/events/newest" in r.url):  # where "new" starts
        log_in(page, ALICE)
    assert page.locator("#notify-toggle").inner_text() == "Notifications on"
    with page.expect_response(lambda r: "/events/newest" in r.url):
        page.goto("/folders")  # any page: notifications follow INBOX
    deliver(mailserver, ("Alice Cooper <cooper@example.test>", "Lunch on Friday"))
    wait_until(lambda: page.evaluate("window.__notes.length") == 1, timeout=15, what="a notification")
    assert page.evaluate("window.__notes[0]") == ["mailyard: new mail", "Alice Cooper: Lunch on Friday"]
    deliver(mailserver, ("Bea <bea@example.test>", "First"), ("Cy <cy@example.test>", "Second"),
            ("Di <di@example.test>", "Minutes of the meeting"))
    wait_until(lambda: page.evaluate("window.__notes.length") == 2, timeout=15, what="a second notification")
    assert page.evaluate("window.__notes[1]") == ["mailyard: new mail", "Di: Minutes of the meeting\nand 2 more"]
    ctx.close()


def test_live_updates_come_back_after_the_server_refused_the_stream(browser: Any, mailserver: RunningServer) -> None:
    """A stream the browser gave up on (the server answered 503 while its
    store was out of reach) is opened again once the server answers, and
    new mail then shows in the open folder without a reload."""
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=base_url(mailserver))
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    log_in(page, ALICE)
    refused: list[str] = []

    def unavailable(route: Any) -> None:
        refused.append(route.request.url)
        route.fulfill(status=503, body="the mail store is unavailable")

    page.route("**/events*", unavailable)
    page.reload()
    # (route handlers run while Playwright has control: wait through it)
    wait_until(lambda: page.wait_for_timeout(100) or len(refused) >= 2, timeout=15,
               what="the stream refused, then asked again")
    page.unroute("**/events*")
    with page.expect_request(lambda r: "/events" in r.url and "newest" not in r.url, timeout=30_000):
        pass
    deliver(mailserver, ("Alice Cooper <cooper@example.test>", "Back online"))
    wait_until(lambda: "Back online" in page.locator("#list").inner_text(), timeout=30, what="the new message listed")
    ctx.close()
