"""Webmail writing in a real browser (Playwright + Debian's chromium):
autosave, attachments by drag and drop with upload progress and kept when
the form is refused, the reply page's focus, undo send."""

from __future__ import annotations

import time
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any

from ..conftest import RunningServer
from .webtools import log_in, new_page, screenshot

ALICE, BOB = "alice@example.test", "bob@example.test"

# Records the upload progress of every XMLHttpRequest in sessionStorage, which
# outlives the page the upload leaves for.
RECORD_PROGRESS = """
(() => {
  const send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.send = function (body) {
    this.upload.addEventListener("progress", (e) => {
      const seen = JSON.parse(sessionStorage.getItem("progress") || "[]");
      seen.push([e.loaded, e.total]);
      sessionStorage.setItem("progress", JSON.stringify(seen));
    });
    return send.call(this, body);
  };
})();
"""


def wait_for(condition: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def drop_files(page: Any, files: list[tuple[str, str, str]]) -> None:
    """Drop ``(name, type, text)`` files on the compose form, as a drag from the desktop does."""
    # compose.js wires the drop zone when it runs (a deferred script): a drop
    # before the page's load event would find no listener
    page.wait_for_load_state("load")
    page.evaluate(
        """(files) => {
          const dt = new DataTransfer();
          for (const [name, type, text] of files) { dt.items.add(new File([text], name, {type})); }
          const zone = document.getElementById("drop-zone");
          for (const kind of ["dragenter", "dragover", "drop"]) {
            zone.dispatchEvent(new DragEvent(kind, {dataTransfer: dt, bubbles: true, cancelable: true}));
          }
        }""",
        files,
    )


def test_autosave_keeps_one_current_draft(browser: Any, mailserver: RunningServer) -> None:
    page = new_page(browser, mailserver)
    log_in(page, ALICE)
    page.click("#compose-link")
    page.fill("#to", BOB)
    page.fill("#subject", "Saved as I type")
    page.fill("#body", "first words")
    page.wait_for_selector("#compose-status:has-text('Draft saved at')", timeout=30_000)
    (first,) = wait_for(lambda: mailserver.messages(ALICE, "Drafts"), "the first autosave")
    assert b"first words" in first
    uid = page.input_value("input[name=draft_uid]")
    page.fill("#body", "first words, then more")
    wait_for(lambda: page.input_value("input[name=draft_uid]") != uid, "the second autosave")
    (second,) = mailserver.messages(ALICE, "Drafts")  # the old version is gone
    assert b"then more" in second
    page.click("#send")
    page.wait_for_selector("text=Message sent.")
    assert mailserver.messages(ALICE, "Drafts") == []
    page.context.close()


def test_drag_and_drop_with_progress_and_kept_when_refused(browser: Any, mailserver: RunningServer) -> None:
    page = new_page(browser, mailserver)
    page.add_init_script(RECORD_PROGRESS)
    log_in(page, ALICE)
    page.click("#compose-link")
    page.fill("#to", "nobody@example.test")  # refused at send: no such recipient
    page.fill("#subject", "Dropped files")
    page.fill("#body", "see the files")
    drop_files(page, [("one.txt", "text/plain", "first file\n"), ("two.csv", "text/csv", "a,b\n1,2\n")])
    assert page.locator("#chosen-files").inner_text() == "To attach: one.txt, two.csv"
    screenshot(page, "compose-drop")
    page.click("#send")
    page.wait_for_selector("#compose-errors")
    assert "no such recipient" in page.locator("#compose-errors").inner_text()
    progress = page.evaluate("JSON.parse(sessionStorage.getItem('progress') || '[]')")
    assert progress and progress[-1][0] == progress[-1][1] > 0, progress  # the upload went with progress
    # the files were kept server-side (in a draft) and are listed again
    kept = page.locator("input[name=keep]")
    assert kept.count() == 2
    assert "one.txt" in page.locator("#kept-attachments").inner_text()
    page.fill("#to", BOB)
    page.click("#send")
    page.wait_for_selector("text=Message sent.")
    (got,) = mailserver.messages(BOB)
    msg = message_from_bytes(got, policy=default_policy)
    assert sorted(a.get_filename() for a in msg.iter_attachments()) == ["one.txt", "two.csv"]
    assert mailserver.messages(ALICE, "Drafts") == []
    page.context.close()


def test_reply_puts_the_cursor_in_the_body_above_the_quote(browser: Any, mailserver: RunningServer) -> None:
    from mailyard.message.compose import compose, to_bytes

    async def seed() -> None:
        account = await mailserver.store.get_account(ALICE)
        box = await mailserver.store.get_mailbox(account.id, "INBOX")
        await mailserver.store.append(box, to_bytes(compose(BOB, ALICE, subject="Question", text="Are you in?")))

    mailserver.call(seed())
    page = new_page(browser, mailserver)
    log_in(page, ALICE)
    page.locator("tr.msg", has_text="Question").locator("a.open").click()
    page.click("#reply")
    page.wait_for_selector("#compose-title:has-text('Reply')")
    assert page.title().startswith("Reply")
    assert page.evaluate("document.activeElement.id") == "body"
    assert page.evaluate("document.activeElement.selectionStart") == 0
    page.keyboard.type("Yes, I am.")
    assert page.input_value("#body").startswith("Yes, I am.\n\nOn ")
    page.context.close()


def test_undo_send_in_the_browser(browser: Any, mailserver: RunningServer) -> None:
    async def delay() -> None:
        account = await mailserver.store.get_account(ALICE)
        await mailserver.store.set_settings(account.id, {"send_delay": 30})

    mailserver.call(delay())
    for width, height, name in ((1440, 900, "undo-send"), (390, 844, "undo-send-phone")):
        page = new_page(browser, mailserver, width, height)
        log_in(page, ALICE)
        page.click("#compose-link")
        page.fill("#to", BOB)
        page.fill("#subject", f"Second thoughts {width}")
        page.fill("#body", "I take it back")
        page.click("#send")
        page.wait_for_selector("#undo")
        assert "Your message goes in" in page.locator("#pending-status").inner_text()
        screenshot(page, name)
        page.click("#undo")
        page.wait_for_selector("text=Sending undone")
        assert page.input_value("#body").strip() == "I take it back"
        assert page.input_value("#subject") == f"Second thoughts {width}"
        assert mailserver.messages(BOB) == []
        page.context.close()
    assert len(mailserver.messages(ALICE, "Drafts")) == 2
