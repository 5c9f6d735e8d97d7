"""Webmail writing in a real browser (Playwright + Debian's chromium):
autosave, attachments by drag and drop with upload progress and kept when
the form is refused, the reply page's focus, undo send."""

from __future__ import annotations

import time
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any

from ..conftest import USERS, RunningServer
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


def _drafts_id(server: RunningServer) -> int:
    async def go() -> int:
        account = await server.store.get_account(ALICE)
        box = await server.store.get_mailbox(account.id, "Drafts")
        return box.id

    return server.call(go())


def test_autosave_keeps_the_chosen_files_in_the_draft(browser: Any, mailserver: RunningServer) -> None:
    """A chosen file goes with one autosave: the saved draft has it (Cancel,
    then the draft opened again, lists it), it leaves the file input for the
    draft's list, and the message sent has it once."""
    page = new_page(browser, mailserver)
    log_in(page, ALICE)
    page.click("#compose-link")
    page.fill("#to", BOB)
    page.fill("#subject", "With the plan")
    page.fill("#body", "the plan is attached")
    page.set_input_files("#attachment", files=[{"name": "plan.txt", "mimeType": "text/plain",
                                                "buffer": b"step one\nstep two\n"}])
    page.wait_for_selector("#kept-list :text('plan.txt')", timeout=30_000)
    assert "Draft saved at" in page.locator("#compose-status").inner_text()
    assert page.evaluate("document.getElementById('attachment').files.length") == 0
    (draft,) = mailserver.messages(ALICE, "Drafts")
    msg = message_from_bytes(draft, policy=default_policy)
    assert [(a.get_filename(), a.get_content()) for a in msg.iter_attachments()] == [("plan.txt", "step one\nstep two\n")]
    uid = page.input_value("input[name=draft_uid]")
    page.click("text=Cancel")
    page.wait_for_url(lambda url: "/compose" not in url)
    page.goto(f"/box/{_drafts_id(mailserver)}/msg/{uid}")
    page.wait_for_selector("#compose-title:has-text('Draft')")
    assert "plan.txt" in page.locator("#kept-attachments").inner_text()
    page.click("#send")
    page.wait_for_selector("text=Message sent.")
    (got,) = mailserver.messages(BOB)
    sent = message_from_bytes(got, policy=default_policy)
    assert [a.get_filename() for a in sent.iter_attachments()] == ["plan.txt"]
    assert mailserver.messages(ALICE, "Drafts") == []


def test_forward_inline_by_its_button_puts_the_original_in_the_text(browser: Any, mailserver: RunningServer) -> None:
    from mailyard.message.compose import compose, to_bytes

    async def seed() -> None:
        account = await mailserver.store.get_account(ALICE)
        box = await mailserver.store.get_mailbox(account.id, "INBOX")
        msg = compose("Carol <carol@elsewhere.test>", ALICE, subject="plans", text="line one\nline two\n",
                      attachments=[("notes.txt", b"attached notes\n", "text/plain")])
        await mailserver.store.append(box, to_bytes(msg))

    mailserver.call(seed())
    page = new_page(browser, mailserver)
    log_in(page, ALICE)
    page.locator("tr.msg", has_text="plans").locator("a.open").click()
    page.click("#forward")
    page.wait_for_selector("#compose-title:has-text('Forward')")
    page.fill("#to", BOB)
    page.fill("#body", "see below")
    page.check("input[name=forward_mode][value=inline]")
    body = page.input_value("#body")
    assert body.startswith("see below\n\n---------- Forwarded message ----------\nFrom: Carol <carol@elsewhere.test>")
    assert body.endswith("line one\nline two\n")
    screenshot(page, "forward-inline-chosen")
    page.check("input[name=forward_mode][value=attached]")  # taken out again, as it was
    assert page.input_value("#body") == "see below"
    page.check("input[name=forward_mode][value=inline]")
    page.fill("#body", page.input_value("#body").replace("line two", "line two (edited)"))
    page.click("#send")
    page.wait_for_selector("text=Message sent.")
    (got,) = mailserver.messages(BOB)
    msg = message_from_bytes(got, policy=default_policy)
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.startswith("see below\n\n---------- Forwarded message ----------")
    assert text.count("---------- Forwarded message ----------") == 1 and "line two (edited)" in text
    assert [a.get_filename() for a in msg.iter_attachments()] == ["notes.txt"]


def test_send_after_the_session_ended_keeps_the_message(browser: Any, mailserver: RunningServer) -> None:
    """Log out in another tab while writing: autosave says the session ended
    (and stops), Send shows the text back with a login, and after it the
    message is in compose again and sends."""
    page = new_page(browser, mailserver)
    log_in(page, ALICE)
    page.click("#compose-link")
    page.fill("#to", BOB)
    page.fill("#subject", "Written over lunch")
    page.fill("#body", "first part")
    page.wait_for_selector("#compose-status:has-text('Draft saved at')", timeout=30_000)
    other = page.context.new_page()
    other.goto("/")
    other.evaluate("document.getElementById('logout').click()")
    other.wait_for_url(lambda url: url.endswith("/login"))
    other.close()
    page.locator("#body").press("End")
    page.locator("#body").type(", then the rest")
    page.wait_for_selector("#compose-status:has-text('your session has ended')", timeout=30_000)
    screenshot(page, "compose-session-ended")
    page.click("#send")
    page.wait_for_selector("#ended-title")
    assert page.input_value("#body") == "first part, then the rest"
    assert page.input_value("#username") == ALICE
    screenshot(page, "compose-session-ended-page")
    page.fill("#password", USERS[ALICE])
    page.click("#ended-login")
    page.wait_for_selector("#compose-title")
    assert "You are logged in again" in page.locator(".notice").inner_text()
    assert page.input_value("#body") == "first part, then the rest"
    assert page.input_value("#subject") == "Written over lunch"
    assert mailserver.messages(BOB) == []
    page.click("#send")
    page.wait_for_selector("text=Message sent.")
    (got,) = mailserver.messages(BOB)
    assert b"first part, then the rest" in got
    assert mailserver.messages(ALICE, "Drafts") == []


def _log_out_in_another_tab(page: Any) -> None:
    other = page.context.new_page()
    other.goto("/")
    other.evaluate("document.getElementById('logout').click()")
    other.wait_for_url(lambda url: url.endswith("/login"))
    other.close()


SCAN = {"name": "scan.pdf", "mimeType": "application/pdf", "buffer": b"%PDF" + b"x" * 3_000_000}


def test_send_with_large_files_after_the_session_ended_keeps_the_form(browser: Any,
                                                                      mailserver: RunningServer) -> None:
    """Send with files larger than a form without a session may carry, the
    session ended unknown to the page: the form stays, text and files, and
    its status line says what to do; logged in again in another tab, Send
    sends it, files and all."""
    page = new_page(browser, mailserver)
    # no autosave: Send is pressed before its next turn would learn the end
    page.add_init_script("window.setInterval = function () { return 0; };")
    log_in(page, ALICE)
    page.click("#compose-link")
    page.fill("#to", BOB)
    page.fill("#subject", "The scan")
    page.fill("#body", "an hour of writing")
    _log_out_in_another_tab(page)
    page.set_input_files("#attachment", files=[SCAN])
    page.click("#send")
    page.wait_for_selector("#compose-status:has-text('your session has ended')", timeout=30_000)
    said = page.locator("#compose-status").inner_text()
    assert "log in again in another tab" in said and "Send" in said
    assert page.input_value("#body") == "an hour of writing"
    assert page.evaluate("document.getElementById('attachment').files.length") == 1
    other = page.context.new_page()
    log_in(other, ALICE)
    other.close()
    page.click("#send")
    page.wait_for_selector("text=Message sent.", timeout=30_000)
    (got,) = mailserver.messages(BOB)
    msg = message_from_bytes(got, policy=default_policy)
    assert msg.get_body(("plain",)).get_content().strip() == "an hour of writing"
    assert [a.get_filename() for a in msg.iter_attachments()] == ["scan.pdf"]


def test_files_chosen_after_the_session_ended_leave_the_text_to_the_login(browser: Any,
                                                                          mailserver: RunningServer) -> None:
    """Files chosen after the session ended: autosave says the session ended
    (not an error number), and Send goes without them, its text coming
    back with a login and a word that the files are to be chosen again."""
    page = new_page(browser, mailserver)
    log_in(page, ALICE)
    page.click("#compose-link")
    page.fill("#to", BOB)
    page.fill("#subject", "Long letter")
    page.fill("#body", "an hour of writing")
    page.wait_for_selector("#compose-status:has-text('Draft saved at')", timeout=30_000)
    _log_out_in_another_tab(page)
    page.set_input_files("#attachment", files=[SCAN])
    page.wait_for_selector("#compose-status:has-text('your session has ended')", timeout=30_000)
    assert "413" not in page.locator("#compose-status").inner_text()
    page.click("#send")
    page.wait_for_selector("#ended-title")
    assert page.input_value("#body") == "an hour of writing"
    assert "The files you chose could not be kept" in page.locator("#ended-detail").inner_text()
    page.fill("#password", USERS[ALICE])
    page.click("#ended-login")
    page.wait_for_selector("#compose-title")
    assert page.input_value("#body") == "an hour of writing"
    assert mailserver.messages(BOB) == []
