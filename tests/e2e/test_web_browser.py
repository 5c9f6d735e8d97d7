"""Webmail in a real browser (Playwright + Debian's chromium): receive over SMTP,
read, reply with an attachment that the recipient reads over IMAP, move,
delete, folders, drafts, live updates, phone width, keyboard. The login page's
screenshot goes to docs/screenshots/ (the others: test_web_layout.py)."""

from __future__ import annotations

import imaplib
import re
import smtplib
import struct
import zlib
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any

from mailyard.message.compose import Attachment, compose, to_bytes

from ..conftest import USERS, RunningServer
from .webtools import log_in, new_page, screenshot

ALICE, BOB = "alice@example.test", "bob@example.test"


def png(width: int = 2, height: int = 2) -> bytes:
    """A small valid PNG (red pixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def send_smtp(server: RunningServer, sender: str, rcpt: str, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.port("smtp")) as s:
        s.sendmail(sender, [rcpt], data)


def append(server: RunningServer, user: str, data: bytes, mailbox: str = "INBOX") -> int:
    async def go() -> int:
        account = await server.store.get_account(user)
        box = await server.store.get_mailbox(account.id, mailbox)
        return await server.store.append(box, data)

    return server.call(go())


def flags_of(server: RunningServer, user: str, mailbox: str) -> list[frozenset[str]]:
    async def go() -> list[frozenset[str]]:
        account = await server.store.get_account(user)
        box = await server.store.get_mailbox(account.id, mailbox)
        return [m.flags for m in await server.store.list_messages(box)]

    return server.call(go())


def imap_fetch_all(server: RunningServer, user: str) -> list[Any]:
    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"))
    try:
        imap.login(user, USERS[user])
        imap.select("INBOX")
        _typ, data = imap.uid("SEARCH", None, "ALL")
        out = []
        for uid in data[0].split():
            _typ, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            out.append(message_from_bytes(fetched[0][1], policy=default_policy))
        return out
    finally:
        imap.logout()


def test_receive_read_reply_with_attachment(browser: Any, mailserver: RunningServer) -> None:
    image = png()
    original = compose(
        "Bob Builder <bob@example.test>", ALICE, subject="Lunch on Friday?",
        text="Shall we have lunch on Friday?",
        html='<p>Shall we have <b>lunch</b> on Friday?</p><p><img id="inline" src="cid:logo@example.test">'
             '<img id="remote" src="https://tracker.example.net/pixel.gif"></p>'
             '<p><a id="link" href="https://example.org/menu">menu</a></p>',
        attachments=[Attachment("logo.png", image, "image/png", inline=True, content_id="logo@example.test")],
    )
    send_smtp(mailserver, BOB, ALICE, to_bytes(original))

    page = new_page(browser, mailserver)
    page.goto("/login")
    screenshot(page, "login")
    log_in(page, ALICE)
    row = page.locator("tr.msg", has_text="Lunch on Friday?")
    assert "unread" in (row.get_attribute("class") or "")
    assert page.locator("#folder-list a", has_text="INBOX").locator(".count").inner_text() == "1"

    row.locator("a.open").click()
    page.wait_for_url(re.compile(r"/msg/\d+"))
    frame = page.frame_locator("#body-frame")
    frame.locator("body", has_text="lunch").wait_for()  # the frame's document, not its first about:blank
    assert page.locator("#remote-notice").is_visible()
    body_frame = next(f for f in page.frames if f.url.endswith("/body"))
    body_frame.wait_for_load_state()
    # the cid: image is shown, the remote one is not even requested
    assert body_frame.evaluate("document.images[0].naturalWidth") == 2
    assert body_frame.evaluate("document.images[1].getAttribute('src')") is None
    link = body_frame.locator("a").first
    assert link.get_attribute("target") == "_blank"
    assert set((link.get_attribute("rel") or "").split()) >= {"noopener", "noreferrer"}
    page.click("#toggle-headers")
    assert "Message-ID" in page.locator("#full-headers").inner_text()

    page.click("#reply")
    page.wait_for_url(re.compile(r"/compose\?reply="))
    assert BOB in page.input_value("#to")
    assert page.input_value("#subject") == "Re: Lunch on Friday?"
    assert "> Shall we have lunch on Friday?" in page.input_value("#body")
    page.fill("#body", "Yes, Friday works. Plan attached.\n\n" + page.input_value("#body"))
    plan = "Plan: 12:30 at the café\n".encode()
    page.set_input_files("#attachment", files=[
        {"name": "plan.txt", "mimeType": "text/plain", "buffer": plan},
        {"name": "map.png", "mimeType": "image/png", "buffer": image},
    ])
    page.click("#send")
    page.wait_for_selector("text=Message sent.")

    # Bob reads the reply over IMAP, attachments intact.
    (reply,) = imap_fetch_all(mailserver, BOB)
    assert reply["Subject"] == "Re: Lunch on Friday?"
    assert reply["In-Reply-To"] == original["Message-ID"]
    assert reply["From"] == ALICE
    attachments = {a.get_filename(): a.get_payload(decode=True) for a in reply.iter_attachments()}
    assert attachments["plan.txt"] == plan
    assert attachments["map.png"] == image
    assert "Friday works" in reply.get_body(("plain",)).get_content()
    # a copy in Sent; the original is marked answered
    assert len(mailserver.messages(ALICE, "Sent")) == 1
    assert "\\Answered" in flags_of(mailserver, ALICE, "INBOX")[0]
    page.context.close()


def test_move_delete_empty_trash_and_folders(browser: Any, mailserver: RunningServer) -> None:
    for subject in ("Move me", "Delete me", "Flag me"):
        append(mailserver, ALICE, to_bytes(compose("carol@example.test", ALICE, subject=subject, text="x")))
    page = new_page(browser, mailserver)
    log_in(page, ALICE)

    page.locator("tr.msg", has_text="Move me").locator("input[name=uid]").check()
    page.select_option("#move-target", label="Archive")
    page.click("#move-button")
    page.wait_for_selector("text=1 moved to Archive.")
    assert len(mailserver.messages(ALICE, "Archive")) == 1

    page.locator("tr.msg", has_text="Delete me").locator("input[name=uid]").check()
    page.click("#delete-button")
    page.wait_for_selector("text=1 moved to Trash.")
    assert len(mailserver.messages(ALICE, "Trash")) == 1
    assert len(mailserver.messages(ALICE)) == 1

    page.locator("tr.msg", has_text="Flag me").locator("a.open").click()
    page.click("#flag")
    page.wait_for_selector("#unflag")
    assert "\\Flagged" in flags_of(mailserver, ALICE, "INBOX")[0]
    page.click("#mark-unread")
    page.wait_for_selector("tr.msg.unread")
    assert "\\Seen" not in flags_of(mailserver, ALICE, "INBOX")[0]

    page.locator("#folder-list a", has_text="Trash").click()
    page.click("#empty-trash")
    page.wait_for_selector("text=Trash emptied (1 messages).")
    assert mailserver.messages(ALICE, "Trash") == []

    page.goto("/folders")
    page.fill("#new-folder", "Projects")
    page.click("#create-folder")
    page.wait_for_selector("text=Folder Projects created.")
    row = page.locator("tr[data-folder='Projects']")
    row.locator("input[name=name]").fill("Projects 2026")
    row.locator("button[value=rename]").click()
    page.wait_for_selector("text=Folder Projects renamed to Projects 2026.")
    page.locator("tr[data-folder='Projects 2026'] button[value=delete]").click()
    page.wait_for_selector("text=Folder Projects 2026 deleted.")
    # special folders cannot be deleted
    assert page.locator("tr[data-folder='Trash'] button[value=delete]").count() == 0
    page.context.close()


def test_drafts_are_saved_and_resumed(browser: Any, mailserver: RunningServer) -> None:
    page = new_page(browser, mailserver)
    log_in(page, ALICE)
    page.click("#compose-link")
    page.fill("#to", "Bob <bob@example.test>")
    page.fill("#subject", "Half-written")
    page.fill("#body", "First thoughts")
    page.set_input_files("#attachment", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                                  "buffer": b"draft notes\n"}])
    page.click("#save-draft")
    page.wait_for_selector("text=Draft saved.")
    assert flags_of(mailserver, ALICE, "Drafts") == [frozenset({"\\Draft", "\\Seen"})]
    # saving again replaces the draft rather than adding a second one
    page.fill("#body", "Second thoughts")
    page.click("#save-draft")
    page.wait_for_selector("text=Draft saved.")
    assert len(mailserver.messages(ALICE, "Drafts")) == 1

    page.locator("#folder-list a", has_text="Drafts").click()
    # a draft opens in the editor
    page.locator("tr.msg", has_text="Half-written").locator("a.open").click()
    page.wait_for_selector("#compose-title:has-text('Draft')")
    assert page.input_value("#body").strip() == "Second thoughts"
    assert page.input_value("#subject") == "Half-written"
    assert page.locator("input[name=keep]").count() == 1
    page.fill("#body", "Final text")
    page.click("#send")
    page.wait_for_selector("text=Message sent.")
    assert mailserver.messages(ALICE, "Drafts") == []
    (msg,) = imap_fetch_all(mailserver, BOB)
    assert msg["Subject"] == "Half-written"
    assert "Final text" in msg.get_body(("plain",)).get_content()
    assert [a.get_filename() for a in msg.iter_attachments()] == ["notes.txt"]
    page.context.close()


def test_forward_and_reply_all(browser: Any, mailserver: RunningServer) -> None:
    original = compose("carol@example.test", [ALICE, BOB], cc=["postmaster@example.test"],
                       subject="Team news", text="news body")
    append(mailserver, ALICE, to_bytes(original))
    page = new_page(browser, mailserver)
    log_in(page, ALICE)
    page.locator("tr.msg", has_text="Team news").locator("a.open").click()
    page.click("#replyall")
    assert "carol@example.test" in page.input_value("#to")
    cc = page.input_value("#cc")
    assert BOB in cc and "postmaster@example.test" in cc and ALICE not in cc
    page.go_back()
    page.click("#forward")
    assert page.input_value("#subject") == "Fwd: Team news"
    page.fill("#to", BOB)
    page.click("#send")
    page.wait_for_selector("text=Message sent.")
    (fwd,) = imap_fetch_all(mailserver, BOB)
    (attached,) = list(fwd.iter_attachments())
    assert attached.get_content_type() == "message/rfc822"
    assert attached.get_content()["Subject"] == "Team news"
    page.context.close()


def test_live_updates_without_reload(browser: Any, mailserver: RunningServer) -> None:
    page = new_page(browser, mailserver)
    log_in(page, ALICE)
    page.evaluate("window.__sameDocument = 1")
    send_smtp(mailserver, "carol@example.test", ALICE,
              to_bytes(compose("carol@example.test", ALICE, subject="Arrived live", text="x")))
    page.wait_for_selector("tr.msg:has-text('Arrived live')", timeout=15_000)
    assert page.locator("#folder-list a", has_text="INBOX").locator(".count").inner_text() == "1"
    # a flag set by another client (IMAP) shows up too
    imap = imaplib.IMAP4("127.0.0.1", mailserver.port("imap"))
    imap.login(ALICE, USERS[ALICE])
    imap.select("INBOX")
    imap.uid("STORE", "1", "+FLAGS", "(\\Flagged \\Seen)")
    imap.logout()
    page.wait_for_selector("tr.msg.flagged:has-text('Arrived live')", timeout=15_000)
    page.wait_for_selector("tr.msg:not(.unread):has-text('Arrived live')")
    assert page.evaluate("window.__sameDocument") == 1  # no full reload happened
    page.context.close()


def test_phone_width_and_keyboard(browser: Any, mailserver: RunningServer) -> None:
    for i in range(3):
        append(mailserver, ALICE, to_bytes(compose("Dana <dana@example.test>", ALICE,
                                                   subject=f"Note {i}", text=f"note {i}")))
    page = new_page(browser, mailserver, width=390, height=844)
    log_in(page, ALICE)
    assert page.locator("#navtoggle").is_visible()
    assert not page.locator("#nav").is_visible()
    page.click("#navtoggle")
    assert page.locator("#nav").is_visible()
    # no horizontal scrolling at phone width
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    # keyboard: j moves to the first message, Enter opens it
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/msg/\d+"))
    assert page.locator("#subject").inner_text().startswith("Note 2")
    page.keyboard.press("u")
    page.wait_for_url(re.compile(r"/box/\d+$"))
    page.context.close()


def test_logout_ends_the_session(browser: Any, mailserver: RunningServer) -> None:
    page = new_page(browser, mailserver)
    log_in(page, ALICE)
    url = page.url
    page.click("#logout")
    page.wait_for_url(re.compile(r"/login$"))
    page.goto(url)
    assert page.url.endswith("/login")
    page.fill("#username", ALICE)
    page.fill("#password", "wrong")
    page.click("#login-submit")
    assert "Wrong address or password" in page.locator("#login-error").inner_text()
    page.context.close()


def test_attachment_over_the_limit_is_refused_before_the_upload(browser: Any, make_server: Any) -> None:
    """app.js checks the chosen files against the form's limit: the browser
    does not submit, and says the sizes."""

    def small(cfg: Any) -> None:
        cfg.smtp.max_message_size = 1024 * 1024  # attachments: at most 701.5 KB

    server = make_server(configure=small)
    page = new_page(browser, server)
    log_in(page, ALICE)
    page.click("#compose-link")
    assert "(at most 701.5 KB in all)" in page.inner_text("#attachment-limit")
    page.fill("#to", BOB)
    page.fill("#subject", "too big")
    page.set_input_files("#attachment", files=[{"name": "big.bin", "mimeType": "application/octet-stream",
                                                  "buffer": b"\x00" * (800 * 1024)}])
    message = page.eval_on_selector("#attachment", "el => el.validationMessage")
    assert "The chosen files are 800 KB in all; at most 701.5 KB fit" in message, message
    page.click("#send")
    assert page.eval_on_selector("#attachment", "el => el.validity.valid") is False
    assert server.messages(BOB) == [] and "/compose" in page.url
    # a smaller file clears the check and the message goes
    page.set_input_files("#attachment", files=[{"name": "small.bin", "mimeType": "application/octet-stream",
                                                  "buffer": b"\x00" * 1024}])
    page.click("#send")
    page.wait_for_selector("text=Message sent.")
    assert len(server.messages(BOB)) == 1
    page.context.close()
