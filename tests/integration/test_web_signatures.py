"""Webmail HTML signatures over HTTP (httpx against a real server): the
sent message is multipart/alternative with the signature once in each
part, sanitised; drafts, undo send and replies keep it once. The preview's
switch with the From field is in tests/e2e/test_web_signature_browser.py."""

from __future__ import annotations

import html
import re
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy

import pytest

from ..conftest import RunningServer
from .test_web_http import ALICE, BOB, append, box_id, csrf, login, simple

httpx = pytest.importorskip("httpx")

EVIL_SIGNATURE = (
    '<p><b>Alice Example</b><br>Chief of <a href="https://example.test/">Example</a></p>'
    '<script>alert("sig")</script><img src="x" onerror="alert(1)">'
    '<img src="https://tracker.example/pixel.png" alt="pixel"><a href="javascript:alert(2)">click</a>'
    '<div style="color: red" onclick="alert(3)">Call +1 555 0100</div>'
)


def _identity(client: httpx.Client, token: str, signature_html: str, signature_text: str = "",
              address: str = ALICE, name: str = "Alice Example") -> None:
    r = client.post("/settings", data={"csrf": token, "section": "identity-add", "name": name, "address": address,
                                       "signature_text": signature_text, "signature_html": signature_html})
    assert r.status_code == 303, r.text


def _parts(raw: bytes) -> tuple[str, str]:
    msg = message_from_bytes(raw, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    alternative = next(p for p in msg.walk() if p.get_content_type() == "multipart/alternative")
    plain, rich = alternative.iter_parts()
    assert plain.get_content_type() == "text/plain" and rich.get_content_type() == "text/html"
    return plain.get_content().replace("\r\n", "\n"), rich.get_content().replace("\r\n", "\n")


def _textarea(page: str) -> str:
    return html.unescape(re.search(r'<textarea id="body" name="body" rows="16"[^>]*>\n(.*?)</textarea>',
                                   page, re.S).group(1))


def _check_safe(rich: str) -> None:
    low = rich.lower()
    for bad in ("<script", "alert(", "onerror", "onclick", "javascript:", "tracker.example"):
        assert bad not in low, (bad, rich)


def test_html_signature_sent_as_multipart_alternative_and_sanitised(mailserver: RunningServer) -> None:
    client = login(mailserver)
    token = csrf(client)
    _identity(client, token, EVIL_SIGNATURE)
    page = client.get("/compose").text
    # the text to edit holds no signature; the preview under it is sanitised
    assert _textarea(page) == ""
    preview = re.search(r'<div id="signature-shown">(.*?)</div></section>', page, re.S).group(1)
    assert "<b>Alice Example</b>" in preview and 'id="signature-preview"' in page
    _check_safe(preview)
    assert f'<template class="signature" data-address="{ALICE}">' in page
    r = client.post("/compose", data={"csrf": token, "from": f"Alice Example <{ALICE}>", "to": BOB,
                                      "subject": "signed", "body": "Hello Bob,\r\n<not a tag> & more\r\n\r\nsee you"})
    assert r.status_code == 303, r.text
    (received,) = mailserver.messages(BOB)
    plain, rich = _parts(received)
    # RFC 3676 4.3: the signature follows "-- "; with no plain signature,
    # the HTML one rendered as text
    assert plain == ("Hello Bob,\n<not a tag> & more\n\nsee you\n\n-- \nAlice Example\n"
                     "Chief of Example <https://example.test/>\n\n[pixel]click\nCall +1 555 0100\n")
    assert "<p>Hello Bob,<br>\n&lt;not a tag&gt; &amp; more</p>\n<p>see you</p>" in rich
    assert '<div class="signature">-- <br>' in rich and "<b>Alice Example</b>" in rich
    assert '<a href="https://example.test/"' in rich and "Call +1 555 0100" in rich
    _check_safe(rich)
    assert rich.count("Alice Example") == 1 and plain.count("-- \n") == 1
    (sent,) = mailserver.messages(ALICE, "Sent")
    assert _parts(sent)[1] == rich


def test_plain_signature_goes_in_the_text_part_beside_the_html_one(mailserver: RunningServer) -> None:
    client = login(mailserver)
    token = csrf(client)
    _identity(client, token, "<i>A. E.</i>", signature_text="Alice E.\nExample Inc.")
    r = client.post("/compose", data={"csrf": token, "from": ALICE, "to": BOB, "subject": "s", "body": "hi"})
    assert r.status_code == 303, r.text
    plain, rich = _parts(mailserver.messages(BOB)[0])
    assert plain == "hi\n\n-- \nAlice E.\nExample Inc.\n"
    assert "<p>hi</p>" in rich and "<i>A. E.</i>" in rich and "Example Inc." not in rich


def test_identity_without_html_signature_sends_plain_text(mailserver: RunningServer) -> None:
    client = login(mailserver)
    token = csrf(client)
    _identity(client, token, "", signature_text="Just text")
    page = client.get("/compose").text
    assert _textarea(page) == "\n\n-- \nJust text\n" and re.search(r'id="signature-preview"[^>]* hidden', page)
    r = client.post("/compose", data={"csrf": token, "from": ALICE, "to": BOB, "subject": "s",
                                      "body": "hi\n\n-- \nJust text\n"})
    assert r.status_code == 303, r.text
    msg = message_from_bytes(mailserver.messages(BOB)[0], policy=default_policy)
    assert msg.get_content_type() == "text/plain"


def test_draft_reply_and_undo_send_keep_one_signature(mailserver: RunningServer) -> None:
    client = login(mailserver)
    token = csrf(client)
    _identity(client, token, "<b>Sig of Alice</b>")
    drafts = box_id(mailserver, ALICE, "Drafts")
    # a saved draft carries the signature (another client shows it); opened
    # again, the text to edit is without it, and sending adds it once
    r = client.post("/compose", data={"csrf": token, "from": ALICE, "to": BOB, "subject": "draft",
                                      "body": "first version", "action": "save"})
    assert r.status_code == 303, r.text
    (saved,) = mailserver.messages(ALICE, "Drafts")
    assert _parts(saved)[0] == "first version\n\n-- \nSig of Alice\n"
    uid = int(re.search(r"draft=\d+:(\d+)", r.headers["location"]).group(1))
    page = client.get(f"/compose?draft={drafts}:{uid}").text
    assert _textarea(page) == "first version\n" and "<b>Sig of Alice</b>" in page
    r = client.post("/compose", data={"csrf": token, "from": ALICE, "to": BOB, "subject": "draft",
                                      "body": _textarea(page), "draft_uid": str(uid)})
    assert r.status_code == 303, r.text
    plain, rich = _parts(mailserver.messages(BOB)[0])
    assert plain == "first version\n\n-- \nSig of Alice\n" and rich.count("Sig of Alice") == 1

    # a reply: no signature in the text, one in the message
    inbox = box_id(mailserver, ALICE, "INBOX")
    uid = append(mailserver, ALICE, simple("question", body="what time?"))
    page = client.get(f"/compose?reply={inbox}:{uid}").text
    body = _textarea(page)
    assert "Sig of Alice" not in body and "> what time?" in body
    r = client.post("/compose", data={"csrf": token, "from": ALICE, "to": BOB, "subject": "Re: question",
                                      "body": "at ten" + body, "reply_to": f"{inbox}:{uid}"})
    assert r.status_code == 303, r.text
    plain, rich = _parts(mailserver.messages(BOB)[1])
    assert plain.count("Sig of Alice") == 1 and rich.count("Sig of Alice") == 1 and "&gt; what time?" in rich

    # undo send: the held draft has both parts; taken back, the editor's
    # text is without the signature
    account = mailserver.call(mailserver.store.get_account(ALICE))
    mailserver.call(mailserver.store.set_settings(account.id, {"send_delay": 30}))
    r = client.post("/compose", data={"csrf": token, "from": ALICE, "to": BOB, "subject": "later",
                                      "body": "held text"})
    assert r.status_code == 303 and r.headers["location"].startswith("/compose/pending/"), r.text
    (held,) = [m for m in mailserver.messages(ALICE, "Drafts") if b"held text" in m]
    assert _parts(held)[0] == "held text\n\n-- \nSig of Alice\n"
    r = client.post(f"{r.headers['location']}/undo", data={"csrf": token})
    assert r.status_code == 303 and "/compose?draft=" in r.headers["location"]
    assert _textarea(client.get(r.headers["location"]).text) == "held text\n"
