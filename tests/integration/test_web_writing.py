"""Webmail writing: redirect, drafts in the editor, autosave, reply and
forward pages, the display name in From, undo send, attachments kept."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default as default_policy

import pytest

from mailyard.message.compose import compose, to_bytes

from ..conftest import RunningServer
from .test_web_http import ALICE, BOB, append, box_id, csrf, login

httpx = pytest.importorskip("httpx")


def _original(sender: str = "Carol <carol@elsewhere.test>") -> bytes:
    msg = compose(sender, ALICE, subject="the original", text="original body\n")
    return b"Return-Path: <carol@elsewhere.test>\r\nDelivered-To: alice@example.test\r\n" + to_bytes(msg)


def test_redirect_resends_unchanged_with_resent_block(mailserver: RunningServer) -> None:
    raw = _original()
    inbox = box_id(mailserver, ALICE, "INBOX")
    uid = append(mailserver, ALICE, raw)
    client = login(mailserver)
    page = client.get(f"/box/{inbox}/msg/{uid}")
    assert f'href="/box/{inbox}/msg/{uid}/redirect" id="redirect"' in page.text
    form = client.get(f"/box/{inbox}/msg/{uid}/redirect")
    assert form.status_code == 200 and 'id="redirect-to"' in form.text and "autofocus" in form.text
    token = csrf(client)
    r = client.post(f"/box/{inbox}/msg/{uid}/redirect", data={"csrf": token, "to": "Bob <bob@example.test>"})
    assert r.status_code == 303, r.text
    assert "redirected" in r.headers["location"]
    (got,) = mailserver.messages(BOB)
    # the envelope sender is the user (the delivery's Return-Path), the block on top
    assert got.startswith(b"Return-Path: <alice@example.test>\r\n")
    header = got.split(b"\r\n\r\n", 1)[0]
    fields = [line.split(b":", 1)[0] for line in header.split(b"\r\n") if line[:1] not in (b" ", b"\t")]
    resent = [f for f in fields if f.startswith(b"Resent-")]
    assert resent == [b"Resent-From", b"Resent-To", b"Resent-Date", b"Resent-Message-ID"]
    assert b"\r\nResent-From: alice@example.test\r\nResent-To: bob@example.test\r\n" in got
    # everything from the original's own header on is its bytes, less the trace
    # fields of its last delivery (Return-Path, Delivered-To)
    original = raw.split(b"Delivered-To: alice@example.test\r\n", 1)[1]
    assert got.endswith(original)
    assert got.count(b"Delivered-To: alice@example.test") == 0
    msg = message_from_bytes(got, policy=default_policy)
    assert msg["From"] == "Carol <carol@elsewhere.test>" and msg["Subject"] == "the original"
    # no copy in Sent: the message is the original, already filed
    assert not _has(mailserver, ALICE, "Sent") or mailserver.messages(ALICE, "Sent") == []


def _has(server: RunningServer, user: str, name: str) -> bool:
    async def go() -> bool:
        account = await server.store.get_account(user)
        return await server.store.get_mailbox(account.id, name) is not None

    return server.call(go())


def test_redirect_refusals(mailserver: RunningServer) -> None:
    inbox = box_id(mailserver, ALICE, "INBOX")
    uid = append(mailserver, ALICE, _original())
    client = login(mailserver)
    token = csrf(client)
    for to, words in (("", "Add at least one recipient"), ("not-an-address@", "To: "),
                      ("nobody@example.test", "no such recipient")):
        r = client.post(f"/box/{inbox}/msg/{uid}/redirect", data={"csrf": token, "to": to})
        assert r.status_code == 400 and words in r.text, (to, r.text)
    # without the CSRF token, and for another user's message: nothing sent
    r = client.post(f"/box/{inbox}/msg/{uid}/redirect", data={"to": BOB})
    assert r.status_code == 403
    bob_inbox = box_id(mailserver, BOB, "INBOX")
    bob_uid = append(mailserver, BOB, _original())
    r = client.post(f"/box/{bob_inbox}/msg/{bob_uid}/redirect", data={"csrf": token, "to": ALICE})
    assert r.status_code == 404
    assert len(mailserver.messages(BOB)) == 1 and len(mailserver.messages(ALICE)) == 1


def test_redirect_of_a_local_colleagues_message_is_refused(mailserver: RunningServer) -> None:
    """A resent block does not let the user put a local address they do not
    own in From: a made-up "original" from a colleague would otherwise be
    signed by this server's domain."""
    inbox = box_id(mailserver, ALICE, "INBOX")
    uid = append(mailserver, ALICE, _original("Bob <bob@example.test>"))
    client = login(mailserver)
    r = client.post(f"/box/{inbox}/msg/{uid}/redirect", data={"csrf": csrf(client), "to": "postmaster@example.test"})
    assert r.status_code == 400 and "From &lt;bob@example.test&gt; is not an address of alice@example.test" in r.text
    assert mailserver.messages("postmaster@example.test") == []
