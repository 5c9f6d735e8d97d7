"""Webmail writing: redirect, drafts in the editor, autosave, reply and
forward pages, the display name in From, undo send, attachments kept."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable
from email import message_from_bytes
from email.policy import default as default_policy
from urllib.parse import unquote

import pytest

from mailyard.message.compose import compose, to_bytes

from ..conftest import USERS, RunningServer
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


def _rich_original() -> bytes:
    msg = compose("Carol <carol@elsewhere.test>", ALICE, subject="plans", text="line one\nline two\n",
                  attachments=[("notes.txt", b"attached notes\n", "text/plain")])
    return to_bytes(msg)


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_reply_page_title_focus_and_answered(mailserver: RunningServer) -> None:
    inbox = box_id(mailserver, ALICE, "INBOX")
    uid = append(mailserver, ALICE, _rich_original())
    client = login(mailserver)
    for mode, title in (("reply", "Reply"), ("replyall", "Reply all"), ("forward", "Forward")):
        page = client.get(f"/compose?{mode}={inbox}:{uid}")
        assert page.status_code == 200
        # the INBOX's unread count comes first (the replied-to message is unread)
        assert re.search(rf"<title>(\(\d+\) )?{title} – mailyard webmail</title>", page.text)
        assert f'<h1 id="compose-title">{title}</h1>' in page.text and "New message" not in page.text
        # the cursor is in the body, which starts with the empty lines above the quote
        body = re.search(r'<textarea id="body" name="body" rows="16"( autofocus)?>\n(.*?)</textarea>',
                         page.text, re.S)
        assert body.group(1) == " autofocus", mode
        assert 'id="to" name="to" type="text" value' in page.text and "autocomplete=\"email\" autofocus" not in page.text
        if mode != "forward":
            assert body.group(2).startswith("\n\nOn ") and "&gt; line one" in body.group(2)
    new = client.get("/compose")
    assert re.search(r"<title>(\(\d+\) )?New message – mailyard webmail</title>", new.text)
    assert 'autocomplete="email" autofocus' in new.text  # a new message starts at To
    token = csrf(client)
    r = client.post("/compose", data={"csrf": token, "to": BOB, "subject": "Re: plans", "body": "ok",
                                      "mode": "reply", "reply_to": f"{inbox}:{uid}", "action": "send"})
    assert r.status_code == 303, r.text

    async def flags() -> frozenset:
        account = await mailserver.store.get_account(ALICE)
        box = await mailserver.store.get_mailbox(account.id, "INBOX")
        return (await mailserver.store.get_messages(box, [uid]))[0].flags

    assert "\\Answered" in mailserver.call(flags())


def _flags(server: RunningServer, user: str, mailbox: str, uid: int) -> frozenset:
    async def go() -> frozenset:
        account = await server.store.get_account(user)
        box = await server.store.get_mailbox(account.id, mailbox)
        return (await server.store.get_messages(box, [uid]))[0].flags

    return server.call(go())


def _form_fields(html: str) -> dict[str, str]:
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', html))
    for name in ("from", "to", "cc", "bcc", "subject"):
        m = re.search(rf'<input id="{name}" name="{name}" type="text" value="([^"]*)"', html)
        fields[name] = m.group(1) if m else ""
    m = re.search(r'<textarea id="body" name="body"[^>]*>(.*?)</textarea>', html, re.S)
    # (HTML drops the one line break right after <textarea>: the template writes one)
    assert m.group(1).startswith("\n")
    fields["body"] = m.group(1)[1:].replace("&gt;", ">").replace("&lt;", "<").replace("&#34;", '"').replace("&amp;", "&")
    return {k: v.replace("&lt;", "<").replace("&gt;", ">").replace("&#34;", '"').replace("&amp;", "&")
            for k, v in fields.items()}


def test_forward_attached_sets_forwarded_and_adds_no_sentence(mailserver: RunningServer) -> None:
    inbox = box_id(mailserver, ALICE, "INBOX")
    raw = _rich_original()
    uid = append(mailserver, ALICE, raw)
    client = login(mailserver)
    page = client.get(f"/compose?forward={inbox}:{uid}")
    fields = _form_fields(page.text)
    assert fields["body"] == "" and fields["subject"] == "Fwd: plans"
    assert 'name="forward_mode" value="attached" checked' in page.text
    r = client.post("/compose", data={**fields, "to": BOB, "action": "send"})
    assert r.status_code == 303, r.text
    (got,) = mailserver.messages(BOB)
    msg = message_from_bytes(got, policy=default_policy)
    assert msg.get_body(("plain",)).get_content().strip() == ""  # nothing of ours was added
    (att,) = list(msg.iter_attachments())
    assert att.get_content_type() == "message/rfc822" and att.get_content()["Subject"] == "plans"
    assert "$Forwarded" in _flags(mailserver, ALICE, "INBOX", uid)


def test_forward_inline_quotes_the_text_and_copies_attachments(mailserver: RunningServer) -> None:
    inbox = box_id(mailserver, ALICE, "INBOX")
    uid = append(mailserver, ALICE, _rich_original())
    client = login(mailserver)
    page = client.get(f"/compose?forward={inbox}:{uid}&how=inline")
    fields = _form_fields(page.text)
    assert 'name="forward_mode" value="inline" checked' in page.text
    assert fields["body"].startswith("\n\n---------- Forwarded message ----------\nFrom: Carol <carol@elsewhere.test>")
    assert fields["body"].endswith("Subject: plans\nTo: alice@example.test\n\nline one\nline two\n")
    fields["body"] = "see below" + fields["body"]
    r = client.post("/compose", data={**fields, "forward_mode": "inline", "to": BOB, "action": "send"})
    assert r.status_code == 303, r.text
    (got,) = mailserver.messages(BOB)
    msg = message_from_bytes(got, policy=default_policy)
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.startswith("see below\n\n---------- Forwarded message ----------") and "line two" in text
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "notes.txt" and att.get_content() == "attached notes\n"
    assert "$Forwarded" in _flags(mailserver, ALICE, "INBOX", uid)


def _set_identity(server: RunningServer, user: str, name: str) -> None:
    async def go() -> None:
        account = await server.store.get_account(user)
        await server.store.set_settings(account.id, {"identities": [{"name": name, "address": user}]})

    server.call(go())


def test_display_name_of_the_identity_in_from(mailserver: RunningServer) -> None:
    client = login(mailserver)
    token = csrf(client)
    # no identity: the address alone
    r = client.post("/compose", data={"csrf": token, "to": BOB, "subject": "one", "body": "x", "action": "send"})
    assert r.status_code == 303
    assert message_from_bytes(mailserver.messages(BOB)[-1], policy=default_policy)["From"] == ALICE
    _set_identity(mailserver, ALICE, "Alice Ärger")
    page = client.get("/compose")
    assert 'name="from" type="text" value="Alice Ärger &lt;alice@example.test&gt;"' in page.text
    # the address alone typed (or an old form): the identity's name goes with it
    for sender in ("", ALICE, "Alice Ärger <alice@example.test>"):
        r = client.post("/compose", data={"csrf": token, "from": sender, "to": BOB, "subject": "two",
                                          "body": "x", "action": "send"})
        assert r.status_code == 303
        got = mailserver.messages(BOB)[-1]
        assert b"\r\nFrom: Alice =?utf-8?q?=C3=84rger?= <alice@example.test>\r\n" in got, (sender, got[:600])
    # a name typed by the user wins
    r = client.post("/compose", data={"csrf": token, "from": "Al <alice@example.test>", "to": BOB,
                                      "subject": "three", "body": "x", "action": "send"})
    assert b"\r\nFrom: Al <alice@example.test>\r\n" in mailserver.messages(BOB)[-1]


# --- one send per form (web/sendonce.py) ------------------------------------------
SENT_ALREADY = "This message was sent already (or may have been): it was not sent again."


def test_a_compose_form_sends_once(mailserver: RunningServer) -> None:
    """The same form posted twice (a double click on Send, a reload of the
    answer) sends one message; a new form sends again."""
    client = login(mailserver)
    fields = _form_fields(client.get("/compose").text)
    assert len(fields["send_id"]) >= 16
    data = {**fields, "to": BOB, "subject": "once only", "body": "hello", "action": "send"}
    first = client.post("/compose", data=data)
    assert first.status_code == 303
    again = client.post("/compose", data=data)
    assert again.status_code == 303 and again.headers["location"] == first.headers["location"]
    assert [m for m in mailserver.messages(BOB) if b"once only" in m] != [] and len(mailserver.messages(BOB)) == 1
    other = _form_fields(client.get("/compose").text)
    assert other["send_id"] != fields["send_id"]
    r = client.post("/compose", data={**other, "to": BOB, "subject": "a second one", "body": "x", "action": "send"})
    assert r.status_code == 303 and len(mailserver.messages(BOB)) == 2
    # another user's form with the same id is another form
    bob = login(mailserver, BOB)
    r = bob.post("/compose", data={**_form_fields(bob.get("/compose").text), "send_id": fields["send_id"],
                                   "to": ALICE, "subject": "from bob", "body": "x", "action": "send"})
    assert r.status_code == 303 and len(mailserver.messages(ALICE)) == 1


def _twice_at_once(client: httpx.Client, path: str, data: dict, monkeypatch: pytest.MonkeyPatch, module: object,
                   name: str) -> tuple[list[httpx.Response], list[str]]:
    """POST ``data`` to ``path`` twice, the second while the first is in
    ``module.name`` (slowed down): a double click. Returns the answers and
    what each POST's claim of the form found (web/sendonce.py)."""
    import concurrent.futures

    from mailyard.web.sendonce import SendOnce

    real = getattr(module, name)
    entered = asyncio.Event()
    claimed: list[str] = []  # what each POST's claim of the form's id found
    real_claim = SendOnce.claim

    async def claim(self: SendOnce, account_id: int, send_id: str) -> object:
        under_way = self._sends.get((account_id, send_id))
        waits = under_way is not None and not under_way.ended.is_set()
        if waits:
            second_waits.set()
        earlier = await real_claim(self, account_id, send_id)
        claimed.append(("waited, then " if waits else "") + ("sends" if earlier is None else "has its answer"))
        return earlier

    monkeypatch.setattr(SendOnce, "claim", claim)

    second_waits = threading.Event()

    async def slow(*args: object, **kwargs: object) -> object:
        entered.set()
        # the first POST goes on once the second is waiting for it
        for _ in range(1000):
            if second_waits.is_set():
                break
            await asyncio.sleep(0.01)
        return await real(*args, **kwargs)

    monkeypatch.setattr(module, name, slow)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.post, path, data=data)
        _wait(entered.is_set, "the first POST to be under way")
        second = pool.submit(client.post, path, data=data)
        answers = [first.result(), second.result()]
    return answers, claimed


def test_a_double_click_on_send_gets_the_answer_of_the_send(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second click comes while the first POST is sending: the browser
    shows the second answer, so it leads where the first does (the held
    send's page, with its Undo), and nothing more is sent."""
    import mailyard.web.undo as undo

    _set_delay(mailserver, ALICE, 30)
    client = login(mailserver)
    fields = _form_fields(client.get("/compose").text)
    data = {**fields, "to": BOB, "subject": "double click", "body": "hello", "action": "send"}
    (first, second), claimed = _twice_at_once(client, "/compose", data, monkeypatch, undo, "hold")
    assert claimed == ["sends", "waited, then has its answer"]
    assert first.status_code == second.status_code == 303, (first.text, second.text)
    assert first.headers["location"].startswith("/compose/pending/")
    assert second.headers["location"] == first.headers["location"]
    assert len([m for m in mailserver.messages(ALICE, "Drafts") if b"double click" in m]) == 1


def test_a_double_click_on_a_refused_send_is_refused_twice(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first POST is refused: nothing went, so the second is a send of
    its own and gets its own refusal (not "sent already")."""
    import mailyard.web.compose as compose_page

    client = login(mailserver)
    fields = _form_fields(client.get("/compose").text)
    data = {**fields, "to": "nobody-at-all@example.test", "subject": "x", "body": "x", "action": "send"}
    answers, claimed = _twice_at_once(client, "/compose", data, monkeypatch, compose_page, "submit_message")
    # the second waited for the first, then, nothing having gone, sent on its own
    assert claimed == ["sends", "waited, then sends"], claimed
    for r in answers:
        assert r.status_code == 400 and "Not sent: no such recipient" in r.text, r.text


def _attachments(raw: bytes) -> dict[str, bytes]:
    msg = message_from_bytes(raw, policy=default_policy)
    return {part.get_filename(): part.get_content() for part in msg.iter_attachments()}


@pytest.mark.parametrize("to", ["not an address", "nobody-at-all@example.test"])
def test_a_refused_form_posted_twice_keeps_its_files_in_one_draft(mailserver: RunningServer, to: str) -> None:
    """A refused form keeps its chosen files in a draft; the same form posted
    again as it was (a double click on Send, a reload of the refusal) shows
    that draft again rather than keeping a second copy. Refused by the form's
    own check, or by the submission (no such recipient)."""
    client = login(mailserver)
    data = {**_form_fields(client.get("/compose").text), "to": to, "subject": "twice refused",
            "body": "x", "action": "send"}
    answers = []
    for _ in range(2):
        r = client.post("/compose", data=data, files={"attachment": ("plan.pdf", b"%PDF-1.4 plan", "application/pdf")})
        assert r.status_code == 400 and "Your attachments were kept" in r.text, r.text
        answers.append(r.text)
    (kept,) = [m for m in mailserver.messages(ALICE, "Drafts") if b"twice refused" in m]
    assert _attachments(kept) == {"plan.pdf": b"%PDF-1.4 plan"}
    assert _form_fields(answers[0])["draft_uid"] == _form_fields(answers[1])["draft_uid"] != ""
    # from the refusal's page, another file chosen: kept with the first, in the one draft
    keep = re.findall(r'name="keep" value="([^"]+)" checked', answers[1])
    assert len(keep) == 1, answers[1]
    r = client.post("/compose", data={**_form_fields(answers[1]), "keep": keep, "action": "send"},
                    files={"attachment": ("other.pdf", b"%PDF-1.4 other", "application/pdf")})
    assert r.status_code == 400 and "Your attachments were kept" in r.text, r.text
    (kept,) = [m for m in mailserver.messages(ALICE, "Drafts") if b"twice refused" in m]
    assert _attachments(kept) == {"plan.pdf": b"%PDF-1.4 plan", "other.pdf": b"%PDF-1.4 other"}


def test_a_send_that_failed_on_a_bug_leaves_no_second_post_waiting(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The submission fails on an unexpected error (it may have gone): a
    reload of the error page gets "sent already" at once, not after a wait."""
    import mailyard.web.compose as compose_page
    from mailyard.web.sendonce import SendOnce

    async def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(compose_page, "submit_message", broken)
    found: list[bool] = []
    real_claim = SendOnce.claim

    async def claim(self: SendOnce, account_id: int, send_id: str) -> object:
        under_way = self._sends.get((account_id, send_id))
        found.append(under_way is not None and not under_way.ended.is_set())
        return await real_claim(self, account_id, send_id)

    monkeypatch.setattr(SendOnce, "claim", claim)
    client = login(mailserver)
    data = {**_form_fields(client.get("/compose").text), "to": BOB, "subject": "bug", "body": "x", "action": "send"}
    # (the server ends the connection after its error page: not one to use again)
    try:
        assert client.post("/compose", data=data, headers={"Connection": "close"}).status_code == 500
    except httpx.TransportError:
        pass
    again = client.post("/compose", data=data)
    assert again.status_code == 200 and SENT_ALREADY in again.text
    assert found == [False, False]  # the second found the first ended


def test_a_delayed_send_from_one_form_is_held_once_and_may_go_again_once_undone(mailserver: RunningServer) -> None:
    _set_delay(mailserver, ALICE, 30)
    client = login(mailserver)
    fields = _form_fields(client.get("/compose").text)
    data = {**fields, "to": BOB, "subject": "held once", "body": "hello", "action": "send"}
    first = client.post("/compose", data=data)
    assert first.status_code == 303 and first.headers["location"].startswith("/compose/pending/")
    again = client.post("/compose", data=data)  # a reload of the answer: to the same held send
    assert again.status_code == 303 and again.headers["location"] == first.headers["location"]
    assert len([m for m in mailserver.messages(ALICE, "Drafts") if b"held once" in m]) == 1
    r = client.post(first.headers["location"] + "/undo", data={"csrf": csrf(client)})
    assert r.status_code == 303 and "Sending undone" in unquote(r.headers["location"]).replace("+", " ")
    # undone, nothing went: the same form (the browser's Back) may send it again
    later = client.post("/compose", data=data)
    assert later.status_code == 303 and later.headers["location"].startswith("/compose/pending/")
    assert later.headers["location"] != first.headers["location"]


def test_a_refused_send_can_be_corrected_and_sent_from_the_same_form(mailserver: RunningServer) -> None:
    client = login(mailserver)
    fields = _form_fields(client.get("/compose").text)
    r = client.post("/compose", data={**fields, "to": "nobody-at-all@example.test", "subject": "corrected",
                                      "body": "x", "action": "send"})
    assert r.status_code == 400 and "Not sent: no such recipient" in r.text, r.text
    refused = _form_fields(r.text)
    assert refused["send_id"] == fields["send_id"]
    r = client.post("/compose", data={**refused, "to": BOB, "action": "send"})
    assert r.status_code == 303, r.text
    assert len(mailserver.messages(BOB)) == 1


def test_a_redirect_form_sends_once(mailserver: RunningServer) -> None:
    inbox = box_id(mailserver, ALICE, "INBOX")
    uid = append(mailserver, ALICE, _original())
    client = login(mailserver)
    form = client.get(f"/box/{inbox}/msg/{uid}/redirect").text
    (send_id,) = re.findall(r'name="send_id" value="([^"]+)"', form)
    data = {"csrf": csrf(client), "to": BOB, "send_id": send_id}
    first = client.post(f"/box/{inbox}/msg/{uid}/redirect", data=data)
    assert first.status_code == 303
    again = client.post(f"/box/{inbox}/msg/{uid}/redirect", data=data)
    assert again.status_code == 303 and again.headers["location"] == first.headers["location"]
    assert len(mailserver.messages(BOB)) == 1


def test_a_draft_opens_in_the_editor(mailserver: RunningServer) -> None:
    drafts_raw = to_bytes(compose(ALICE, BOB, subject="half done", text="first thoughts\n",
                                  attachments=[("plan.txt", b"the plan\n", "text/plain")]))
    client = login(mailserver)
    csrf(client)
    client.post("/compose", data={"csrf": csrf(client), "to": "", "action": "save"})  # makes Drafts
    drafts = box_id(mailserver, ALICE, "Drafts")
    uid = append(mailserver, ALICE, drafts_raw, "Drafts", ["\\Draft"])
    r = client.get(f"/box/{drafts}/msg/{uid}")
    assert r.status_code == 303 and r.headers["location"] == f"/compose?draft={drafts}:{uid}"
    page = client.get(r.headers["location"])
    fields = _form_fields(page.text)
    assert fields["to"] == BOB and fields["subject"] == "half done" and fields["body"].strip() == "first thoughts"
    assert fields["draft_uid"] == str(uid) and fields["mode"] == "draft"
    assert "<title>Draft – mailyard webmail</title>" in page.text
    assert re.search(r'name="keep" value="2" checked> plan.txt', page.text)
    # ?view=1 still shows it as a message; another user's draft is a 404
    assert client.get(f"/box/{drafts}/msg/{uid}?view=1").status_code == 200
    assert client.get(f"/box/{drafts}/msg/999").status_code == 404
    # sending it deletes the draft and keeps its attachment
    r = client.post("/compose", data={**fields, "keep": "2", "action": "send"})
    assert r.status_code == 303, r.text
    got = message_from_bytes(mailserver.messages(BOB)[-1], policy=default_policy)
    assert [a.get_filename() for a in got.iter_attachments()] == ["plan.txt"]
    assert [m for m in mailserver.messages(ALICE, "Drafts") if b"half done" in m] == []


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_autosave_replaces_the_previous_version(mailserver: RunningServer) -> None:
    client = login(mailserver)
    token = csrf(client)
    form = {"csrf": token, "to": BOB, "subject": "work in progress", "body": "v1", "draft_uid": "",
            "action": "send"}  # autosave saves whatever button the form names
    r = client.post("/compose/autosave", data=form,
                    files={"attachment": ("a.txt", b"kept across saves\n", "text/plain")})
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["kept"] == [["2", "a.txt", "text/plain", first["kept"][0][3]]]
    drafts = mailserver.messages(ALICE, "Drafts")
    assert len(drafts) == 1 and b"v1" in drafts[0] and b"a2VwdCBhY3Jvc3Mgc2F2ZXMK" in drafts[0]
    r = client.post("/compose/autosave", data={**form, "body": "v2", "draft_uid": first["draft_uid"], "keep": "2"})
    second = r.json()
    assert int(second["draft_uid"]) > int(first["draft_uid"]) and second["kept"][0][:3] == ["2", "a.txt", "text/plain"]
    (only,) = mailserver.messages(ALICE, "Drafts")  # APPEND new + expunge old: one copy
    assert b"v2" in only and b"a2VwdCBhY3Jvc3Mgc2F2ZXMK" in only
    drafts_id = box_id(mailserver, ALICE, "Drafts")
    assert "\\Draft" in _flags(mailserver, ALICE, "Drafts", int(second["draft_uid"]))
    # a form that cannot become a message is answered in JSON, nothing replaced
    r = client.post("/compose/autosave", data={**form, "to": "bad@", "draft_uid": second["draft_uid"]})
    assert r.status_code == 400 and r.json()["error"].startswith("Not saved: To: ")
    assert len(mailserver.messages(ALICE, "Drafts")) == 1
    # CSRF as on every POST
    assert client.post("/compose/autosave", data={**form, "csrf": "x"}).status_code == 403
    # sending deletes the draft
    r = client.post("/compose", data={**form, "body": "final", "draft_uid": second["draft_uid"], "keep": "2"})
    assert r.status_code == 303, r.text
    assert mailserver.messages(ALICE, "Drafts") == []
    got = message_from_bytes(mailserver.messages(BOB)[-1], policy=default_policy)
    assert [a.get_filename() for a in got.iter_attachments()] == ["a.txt"]
    assert client.get(f"/box/{drafts_id}").status_code == 200


def _set_delay(server: RunningServer, user: str, seconds: object) -> None:
    async def go() -> None:
        account = await server.store.get_account(user)
        await server.store.set_settings(account.id, {"send_delay": seconds})

    server.call(go())


def _wait(condition, what: str, timeout: float = 30.0):  # noqa: ANN001, ANN202
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_undo_send_takes_the_message_back(mailserver: RunningServer) -> None:
    _set_delay(mailserver, ALICE, 30)
    inbox = box_id(mailserver, ALICE, "INBOX")
    uid = append(mailserver, ALICE, _rich_original())
    client = login(mailserver)
    token = csrf(client)
    r = client.post("/compose", data={"csrf": token, "to": BOB, "subject": "Re: plans", "body": "oops",
                                      "reply_to": f"{inbox}:{uid}", "action": "send"})
    assert r.status_code == 303 and r.headers["location"].startswith("/compose/pending/"), r.text
    pending = r.headers["location"]
    page = client.get(pending)
    assert 'id="undo"' in page.text and "Your message goes in 30 seconds." in page.text
    # held as a draft meanwhile, nothing sent
    (held,) = mailserver.messages(ALICE, "Drafts")
    assert b"oops" in held and mailserver.messages(BOB) == []
    # another user cannot see or undo it; without CSRF nothing happens
    other = login(mailserver, BOB)
    assert other.post(f"{pending}/undo", data={"csrf": csrf(other)}).status_code == 404
    assert client.post(f"{pending}/undo", data={}).status_code == 403
    r = client.post(f"{pending}/undo", data={"csrf": token})
    assert r.status_code == 303
    drafts = box_id(mailserver, ALICE, "Drafts")
    assert r.headers["location"].startswith(f"/compose?draft={drafts}:")
    editor = client.get(r.headers["location"])
    assert "oops" in editor.text and "Sending undone" in editor.text
    # the record is gone: the timer can no longer send it
    assert list((mailserver.data_dir / "web-outbox").glob("*.json")) == []
    assert client.post(f"{pending}/undo", data={"csrf": token}).status_code == 404
    assert mailserver.messages(BOB) == [] and len(mailserver.messages(ALICE, "Drafts")) == 1
    assert "\\Answered" not in _flags(mailserver, ALICE, "INBOX", uid)


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_undo_send_delay_then_sent(mailserver: RunningServer) -> None:
    _set_delay(mailserver, ALICE, 1)
    inbox = box_id(mailserver, ALICE, "INBOX")
    uid = append(mailserver, ALICE, _rich_original())
    client = login(mailserver)
    token = csrf(client)
    r = client.post("/compose", data={"csrf": token, "to": BOB, "bcc": "postmaster@example.test",
                                      "subject": "Fwd: plans", "body": "fyi", "forward": f"{inbox}:{uid}",
                                      "action": "send"})
    assert r.headers["location"].startswith("/compose/pending/")
    (got,) = _wait(lambda: mailserver.messages(BOB), "the held message to be sent")
    assert b"Bcc" not in got.split(b"\r\n\r\n")[0]
    assert len(_wait(lambda: mailserver.messages("postmaster@example.test"), "the Bcc copy")) == 1
    _wait(lambda: mailserver.messages(ALICE, "Drafts") == [], "the draft to go")
    (sent,) = _wait(lambda: mailserver.messages(ALICE, "Sent"), "the Sent copy")
    assert b"Bcc: postmaster@example.test" in sent
    _wait(lambda: "$Forwarded" in _flags(mailserver, ALICE, "INBOX", uid), "$Forwarded")
    # too late to undo: the pending page says it went
    page = client.get(r.headers["location"], follow_redirects=True)
    assert "Message sent." in page.text
    # a recipient that does not exist is refused at once, not after the delay
    r = client.post("/compose", data={"csrf": token, "to": "nobody@example.test", "subject": "x", "body": "y",
                                      "action": "send"})
    assert r.status_code == 400 and "no such recipient: nobody@example.test" in r.text
    # a bad setting is bounded: over 30 counts as 30, nonsense as 0 (sent at once)
    _set_delay(mailserver, ALICE, "soon")
    r = client.post("/compose", data={"csrf": token, "to": BOB, "subject": "now", "body": "y", "action": "send"})
    assert r.headers["location"].startswith("/box/")


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_held_message_survives_a_restart(make_server) -> None:  # noqa: ANN001
    import json

    from ..conftest import RunningServer as Running

    first = make_server()
    _set_delay(first, ALICE, 30)
    client = login(first)
    r = client.post("/compose", data={"csrf": csrf(client), "to": BOB, "subject": "after restart",
                                      "body": "still here", "action": "send"})
    assert r.headers["location"].startswith("/compose/pending/")
    data_dir, config = first.data_dir, first.config
    first.call(first.server.stop())  # the server stops (its loop is the fixture's to close)
    first.server = None
    (record,) = list((data_dir / "web-outbox").glob("*.json"))
    # the delay ran out while the server was down
    held = json.loads(record.read_text())
    record.write_text(json.dumps({**held, "due": held["due"] - 60}))
    second = Running(data_dir, config, seed_defaults=False)
    try:
        second.start()
        (got,) = _wait(lambda: second.messages(BOB), "the held message after the restart")
        assert b"still here" in got
        _wait(lambda: second.messages(ALICE, "Drafts") == [], "the draft to go")
        # the record goes last, after the copy in Sent and the flags of the original
        _wait(lambda: list((data_dir / "web-outbox").iterdir()) == [], "the record of the send to go")
    finally:
        second.stop()


def _set_quota(server: RunningServer, user: str, storage: int | None) -> None:
    server.call(server.store.set_quota(user, storage=storage))


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_undo_send_with_a_full_mailbox_sends_at_once_and_says_so(mailserver: RunningServer) -> None:
    _set_delay(mailserver, ALICE, 30)
    _set_quota(mailserver, ALICE, 1)  # no room for the draft the delay needs
    client = login(mailserver)
    r = client.post("/compose", data={"csrf": csrf(client), "to": BOB, "subject": "full box", "body": "still goes",
                                      "action": "send"})
    assert r.status_code == 303 and r.headers["location"].startswith("/box/"), r.text
    page = client.get(r.headers["location"]).text
    assert ("Message sent at once, without the delay to undo it: your mailbox is full (quota reached), "
            "and no copy was kept in Sent.") in page
    (got,) = mailserver.messages(BOB)
    assert b"still goes" in got
    assert mailserver.messages(ALICE, "Drafts") == [] and mailserver.messages(ALICE, "Sent") == []


def test_undo_send_refused_when_due_says_not_sent(mailserver: RunningServer) -> None:
    _set_delay(mailserver, ALICE, 1)
    _set_quota(mailserver, BOB, 1)  # the recipient's mailbox is full: refused when the delay is over
    client = login(mailserver)
    r = client.post("/compose", data={"csrf": csrf(client), "to": BOB, "subject": "refused later",
                                      "body": "kept", "action": "send"})
    pending = r.headers["location"]
    assert pending.startswith("/compose/pending/")
    page = _wait(lambda: (p := client.get(pending, follow_redirects=True)).status_code == 200
                 and "goes in" not in p.text and p, "the delay to be over")
    assert "Message sent." not in page.text
    assert "Not sent: the recipient&#39;s mailbox is full" in page.text
    (held,) = mailserver.messages(ALICE, "Drafts")
    assert b"kept" in held and mailserver.messages(BOB) == []
    drafts = box_id(mailserver, ALICE, "Drafts")
    assert re.search(rf'href="/compose\?draft={drafts}:\d+"', page.text)
    # another user learns nothing from the token
    other = login(mailserver, BOB)
    assert "Not sent" not in other.get(pending, follow_redirects=True).text


# --- a held send when the store is out of reach --------------------------------
def _out_of_reach(monkeypatch: pytest.MonkeyPatch, server: RunningServer, method: str,
                  fails: Callable[[int, tuple], bool], *, error: Callable[[], Exception] | None = None,
                  after: bool = False) -> list[int]:
    """``server.store.<method>`` raises ``error()`` (by default
    StoreUnavailable: its database down) in the timers of held sends
    (web/undo.py ``schedule``) on the calls ``fails(n, args)`` picks, n
    counting those calls from 0: the test's own reads go through. With
    ``after``, the real call runs first (a write applied whose answer is
    lost). Returns the calls made, one item each."""
    from mailyard.store.api import StoreUnavailable

    real = getattr(server.store, method)
    calls: list[int] = []

    async def wrapped(*args: object, **kwargs: object) -> object:
        task = asyncio.current_task()
        if task is not None and task.get_coro().__name__ == "later":
            calls.append(len(calls))
            if fails(calls[-1], args):
                if after:
                    await real(*args, **kwargs)
                raise error() if error is not None else StoreUnavailable(
                    "the mail store is unavailable, try again later")
        return await real(*args, **kwargs)

    monkeypatch.setattr(server.store, method, wrapped)
    return calls


def _held_send(server: RunningServer, subject: str, to: str = BOB) -> str:
    """A message sent from webmail with a delay of one second: the pending page's path."""
    _set_delay(server, ALICE, 1)
    client = login(server)
    r = client.post("/compose", data={"csrf": csrf(client), "to": to, "subject": subject, "body": "the body",
                                      "action": "send"})
    assert r.status_code == 303 and r.headers["location"].startswith("/compose/pending/"), r.text
    return r.headers["location"]


def _outbox(server: RunningServer) -> list[str]:
    return sorted(p.suffix for p in (server.data_dir / "web-outbox").iterdir() if not p.name.startswith("."))


def _timers(server: RunningServer) -> dict[str, asyncio.Task]:
    """The timers of the held sends of this server, by token (web/undo.py ``_tasks``)."""
    import mailyard.web.undo as undo

    assert server.server is not None and server.server.services is not None
    services = server.server.services

    async def read() -> dict[str, asyncio.Task]:
        return dict(undo._tasks(services))

    return server.call(read())


def _accepted(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The "accepted" lines of the submissions (delivery/submit.py), one per message accepted."""
    return [r.getMessage() for r in caplog.records
            if r.name == "mailyard.submit" and r.getMessage().startswith("accepted ")]


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info and r.name == "mailyard.web"]


WAITING = "web: a held message is not sent yet (the mail store is unavailable, try again later)"


def test_a_held_send_the_store_cannot_take_before_it_is_sent_waits_and_goes_once(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Reading the draft fails: nothing is sent yet; the record waits again
    (one warning, the tries after it at INFO), and the message goes once
    the store is back."""
    import mailyard.web.undo as undo

    caplog.set_level(logging.INFO, logger="mailyard")
    monkeypatch.setattr(undo, "RETRY_AFTER", 0.2, raising=False)
    down = {"on": True}
    _out_of_reach(monkeypatch, mailserver, "read_message", lambda _n, _a: down["on"])
    pending = _held_send(mailserver, "while down")

    def waiting() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith(WAITING)]

    _wait(lambda: len(waiting()) >= 3, "three tries")
    # not sent, not failed: the record is pending (or claimed by the next try)
    assert mailserver.messages(BOB) == []
    assert _outbox(mailserver) in ([".json"], [".sending"])
    page = login(mailserver).get(pending, follow_redirects=True)
    assert "Not sent" not in page.text and "Your message goes in" in page.text
    down["on"] = False
    (got,) = _wait(lambda: mailserver.messages(BOB), "the message once the store is back")
    assert b"while down" in got
    _wait(lambda: _outbox(mailserver) == [], "the record of the send to go")
    assert len(mailserver.messages(BOB)) == 1 and len(_accepted(caplog)) == 1
    assert mailserver.messages(ALICE, "Drafts") == [] and len(mailserver.messages(ALICE, "Sent")) == 1
    # the first try a warning, the others informational, none with a traceback
    levels = [r.levelno for r in waiting()]
    assert levels[0] == logging.WARNING and set(levels[1:]) == {logging.INFO}, levels
    assert not _tracebacks(caplog)


def test_a_held_send_whose_commit_answer_is_lost_is_not_sent_again(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The store applies the submission's commit but its answer is lost
    (StoreUnavailable after the write, as a COMMIT pipelined with its
    statements can be, store/postgresql/core.py): the message may have
    gone, so it is never submitted again. One copy; the page says it may
    not have gone; the draft stays in Drafts."""
    import mailyard.web.undo as undo

    caplog.set_level(logging.INFO, logger="mailyard")
    monkeypatch.setattr(undo, "RETRY_AFTER", 0.2, raising=False)
    calls = _out_of_reach(monkeypatch, mailserver, "deliver", lambda n, _a: n == 0, after=True)
    pending = _held_send(mailserver, "commit answer lost")
    _wait(lambda: _outbox(mailserver) == [".failed"] and not _timers(mailserver) or len(calls) > 1, "the send to end")
    assert len(calls) == 1 and _outbox(mailserver) == [".failed"] and _timers(mailserver) == {}
    (got,) = mailserver.messages(BOB)
    assert b"commit answer lost" in got
    assert len(mailserver.messages(ALICE, "Drafts")) == 1 and mailserver.messages(ALICE, "Sent") == []
    page = login(mailserver).get(pending, follow_redirects=True)
    assert "It may not have gone: the mail store was out of reach while it was being sent." in page.text
    assert "Not sent:" not in page.text and "Message sent." not in page.text
    assert not [r for r in caplog.records if r.getMessage().startswith(WAITING)]
    assert not _tracebacks(caplog)


@pytest.mark.parametrize("error", [
    pytest.param(lambda: __import__("mailyard.store.api").store.api.StoreUnavailable("down"), id="store"),
    pytest.param(lambda: OSError("disk gone"), id="oserror"),
])
def test_a_held_send_that_fails_after_acceptance_is_sent_and_not_sent_again(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        error: Callable[[], Exception]) -> None:
    """Accepted, then the report of a recipient over quota cannot be stored
    (still in ``submit_message``): the message went, the page says so, and
    it is not tried again."""
    import mailyard.web.undo as undo

    caplog.set_level(logging.INFO, logger="mailyard")
    monkeypatch.setattr(undo, "RETRY_AFTER", 0.2, raising=False)
    _set_quota(mailserver, "postmaster@example.test", 1)  # left out: alice gets a report (delivery/submit.py)
    # the report to the sender (RFC 3464): stored after the message was accepted
    _out_of_reach(monkeypatch, mailserver, "deliver", lambda _n, a: b"multipart/report" in a[0], error=error)
    pending = _held_send(mailserver, "accepted then down", to=f"{BOB}, postmaster@example.test")
    _wait(lambda: _outbox(mailserver) == [] or ".failed" in _outbox(mailserver), "the record of the send to go")
    assert _outbox(mailserver) == []
    (got,) = mailserver.messages(BOB)
    assert b"accepted then down" in got
    assert len(_accepted(caplog)) == 1  # never submitted again
    assert mailserver.messages(ALICE) == []  # the report was lost, not the message
    assert mailserver.messages(ALICE, "Drafts") == [] and len(mailserver.messages(ALICE, "Sent")) == 1
    assert [r for r in caplog.records
            if r.name == "mailyard.submit" and "the mailbox-full report could not be stored" in r.getMessage()]
    assert not _tracebacks(caplog)
    page = login(mailserver).get(pending, follow_redirects=True)
    assert "Message sent." in page.text and "Not sent" not in page.text


def test_a_held_send_the_store_fails_after_it_went_is_not_sent_again(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Sent, then the draft cannot be removed: one warning line, no record
    saying it was not sent, the draft stays in Drafts beside its copy in
    Sent, and one copy only."""
    import mailyard.web.undo as undo

    caplog.set_level(logging.INFO, logger="mailyard")
    monkeypatch.setattr(undo, "RETRY_AFTER", 0.2, raising=False)
    _out_of_reach(monkeypatch, mailserver, "expunge", lambda _n, _a: True)
    pending = _held_send(mailserver, "sent then down")
    # the claim goes; a note of what was left undone stays for the page
    _wait(lambda: _outbox(mailserver) == [".sent"], "the record of the send to go")
    (got,) = mailserver.messages(BOB)
    assert b"sent then down" in got and len(_accepted(caplog)) == 1
    lines = [r for r in caplog.records if "was sent, but" in r.getMessage() and r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in lines] == [
        "web: a message of alice@example.test was sent, but its draft may still be in Drafts: "
        "the mail store is unavailable, try again later"]
    assert not _tracebacks(caplog)
    assert len(mailserver.messages(ALICE, "Drafts")) == 1 and len(mailserver.messages(ALICE, "Sent")) == 1
    page = login(mailserver).get(pending, follow_redirects=True)
    assert "Message sent; its draft may still be in Drafts: the mail store was out of reach." in page.text
    assert "Not sent" not in page.text
    # another user learns nothing from the token
    assert "its draft" not in login(mailserver, BOB).get(pending, follow_redirects=True).text


# --- sent at once, and redirected, when the store fails --------------------------
def _failing(monkeypatch: pytest.MonkeyPatch, server: RunningServer, method: str,
             fails: Callable[[tuple], bool], *, after: bool = False) -> None:
    """``server.store.<method>`` raises StoreUnavailable on the calls
    ``fails(args)`` picks; with ``after``, once the real call has run (a
    commit applied whose answer is lost)."""
    from mailyard.store.api import StoreUnavailable

    real = getattr(server.store, method)

    async def wrapped(*args: object, **kwargs: object) -> object:
        if not fails(args):
            return await real(*args, **kwargs)
        if after:
            await real(*args, **kwargs)
        raise StoreUnavailable("the mail store is unavailable, try again later")

    monkeypatch.setattr(server.store, method, wrapped)


def test_a_message_sent_at_once_the_store_cannot_file_says_it_was_sent(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """It went; its copy in Sent cannot be stored, the store out of reach:
    the answer is a page that says it was sent and what may be left undone,
    read from no store (the inbox's page could not be shown), not an error
    page that has the sender send it again; one warning line."""
    caplog.set_level(logging.INFO, logger="mailyard")
    _failing(monkeypatch, mailserver, "append", lambda args: getattr(args[0], "special_use", None) == "\\Sent")
    client = login(mailserver)
    r = client.post("/compose", data={"csrf": csrf(client), "to": BOB, "subject": "went, not filed",
                                      "body": "once", "action": "send"})
    assert r.status_code == 200, r.text
    assert "Message sent; the copy in Sent may be missing: the mail store was out of reach." in r.text
    assert "try again" not in r.text
    (got,) = mailserver.messages(BOB)
    assert b"went, not filed" in got and len(_accepted(caplog)) == 1
    assert [r.getMessage() for r in caplog.records if "was sent, but" in r.getMessage()] == [
        "web: a message of alice@example.test was sent, but the copy in Sent may be missing: "
        "the mail store is unavailable, try again later"]
    assert not _tracebacks(caplog)


def test_a_message_sent_at_once_names_each_step_left_undone(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sent from a draft, its copy refused by the quota, then the draft
    cannot be removed: the page names both."""
    client = login(mailserver)
    client.post("/compose", data={"csrf": csrf(client), "to": "", "action": "save"})  # makes Drafts
    drafts = box_id(mailserver, ALICE, "Drafts")
    draft = to_bytes(compose(ALICE, BOB, subject="from a draft", text="draft body\n"))
    uid = append(mailserver, ALICE, draft, "Drafts", ["\\Draft"])
    fields = _form_fields(client.get(f"/compose?draft={drafts}:{uid}").text)
    assert fields["draft_uid"] == str(uid)
    _set_quota(mailserver, ALICE, 1)  # no room for the copy in Sent
    _failing(monkeypatch, mailserver, "expunge", lambda _args: True)
    r = client.post("/compose", data={**fields, "action": "send"})
    assert r.status_code == 200, r.text
    assert ("Message sent; no copy was kept in Sent: your mailbox is full (quota reached); "
            "its draft may still be in Drafts: the mail store was out of reach.") in r.text
    assert len(mailserver.messages(BOB)) == 1


def test_a_held_send_the_store_cannot_hold_is_not_sent_and_says_try_again(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The draft a delayed send waits in cannot be stored: nothing went,
    so the answer is the store's "try again", not "it may have gone"."""
    _set_delay(mailserver, ALICE, 30)
    _failing(monkeypatch, mailserver, "append", lambda args: getattr(args[0], "special_use", None) == "\\Drafts")
    client = login(mailserver)
    r = client.post("/compose", data={"csrf": csrf(client), "to": BOB, "subject": "not held",
                                      "body": "never", "action": "send"})
    assert r.status_code == 503
    assert "try again" in r.text and "may have gone" not in r.text
    assert mailserver.messages(BOB) == []


def test_a_message_the_store_fails_while_it_is_sent_at_once_may_have_gone(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The submission's commit is applied but its answer lost: the form
    comes back saying the message may have gone (it did), not "try again"."""
    caplog.set_level(logging.INFO, logger="mailyard")
    _failing(monkeypatch, mailserver, "deliver", lambda _args: True, after=True)
    client = login(mailserver)
    fields = _form_fields(client.get("/compose").text)
    data = {**fields, "to": BOB, "subject": "answer lost", "body": "once", "action": "send"}
    r = client.post("/compose", data=data)
    assert r.status_code == 503
    assert ("Perhaps not sent: the mail store was out of reach while it was being sent, so it may have gone. "
            "Ask a recipient whether it came before you send it again.") in r.text
    assert 'value="answer lost"' in r.text  # the form, as it was
    (got,) = mailserver.messages(BOB)
    assert b"answer lost" in got
    assert not _tracebacks(caplog)
    # a reload of that answer sends nothing more; the form it shows may (the user's choice)
    again = client.post("/compose", data=data)
    assert again.status_code == 200 and SENT_ALREADY in again.text and "<h1>Sent already</h1>" in again.text
    assert len(mailserver.messages(BOB)) == 1
    assert _form_fields(r.text)["send_id"] != fields["send_id"]


def test_a_redirect_the_store_fails_while_it_is_sent_may_have_gone(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = box_id(mailserver, ALICE, "INBOX")
    uid = append(mailserver, ALICE, _original())
    _failing(monkeypatch, mailserver, "deliver", lambda _args: True, after=True)
    client = login(mailserver)
    r = client.post(f"/box/{inbox}/msg/{uid}/redirect", data={"csrf": csrf(client), "to": BOB})
    assert r.status_code == 503
    assert "Perhaps not sent: the mail store was out of reach while it was being sent, so it may have gone." in r.text
    assert len(mailserver.messages(BOB)) == 1


@pytest.mark.parametrize("how", ["rename fails", "record gone"])
def test_a_held_send_that_cannot_wait_again_says_not_sent(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        how: str) -> None:
    """Reading the draft fails and the record cannot be put back to wait
    (its rename fails, or the claimed record is gone): the page says not
    sent, rather than "Message sent." or a countdown that never ends."""
    import os

    import mailyard.web.undo as undo

    caplog.set_level(logging.INFO, logger="mailyard")
    monkeypatch.setattr(undo, "RETRY_AFTER", 0.2, raising=False)
    outbox = mailserver.data_dir / "web-outbox"

    def fails(_n: int, _a: tuple) -> bool:
        if how == "record gone":
            for path in outbox.glob("*.sending"):
                path.unlink()
        return True

    if how == "rename fails":
        rename = os.rename

        def refused(src: object, dst: object, *args: object, **kwargs: object) -> None:
            if str(src).endswith(".sending") and str(dst).endswith(".json"):
                raise PermissionError(13, "Permission denied", str(dst))
            rename(src, dst, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "rename", refused)
    calls = _out_of_reach(monkeypatch, mailserver, "read_message", fails)
    pending = _held_send(mailserver, "cannot wait")
    # the send ends: .failed written, the claim removed, its timer gone
    _wait(lambda: _outbox(mailserver) == [".failed"] and not _timers(mailserver) or len(calls) > 1, "the send to end")
    assert len(calls) == 1 and _outbox(mailserver) == [".failed"] and _timers(mailserver) == {}
    page = login(mailserver).get(pending, follow_redirects=True)
    assert "Not sent: the mail store was out of reach." in page.text
    assert mailserver.messages(BOB) == [] and len(mailserver.messages(ALICE, "Drafts")) == 1


def test_undo_of_a_held_send_waiting_again_takes_it_back_for_good(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Reading the draft failed and the record waits again: Undo takes it
    back, the timer of its retry is cancelled, no record comes back,
    nothing is sent."""
    import mailyard.web.undo as undo

    caplog.set_level(logging.INFO, logger="mailyard")
    monkeypatch.setattr(undo, "RETRY_AFTER", 60.0, raising=False)
    calls = _out_of_reach(monkeypatch, mailserver, "read_message", lambda _n, _a: True)
    pending = _held_send(mailserver, "undone while waiting")
    _wait(lambda: calls and _outbox(mailserver) == [".json"], "the record to wait again")
    (timer,) = _timers(mailserver).values()
    client = login(mailserver)
    r = client.post(f"{pending}/undo", data={"csrf": csrf(client)})
    assert r.status_code == 303 and "Sending%20undone" in r.headers["location"], r.headers.get("location")
    _wait(timer.done, "the timer to end")
    assert timer.cancelled() and _timers(mailserver) == {}
    assert _outbox(mailserver) == [] and len(calls) == 1
    assert mailserver.messages(BOB) == [] and len(mailserver.messages(ALICE, "Drafts")) == 1
    assert "undone while waiting" in client.get(r.headers["location"]).text


def test_a_held_send_the_server_stops_before_it_is_sent_goes_after_the_restart(
        make_server, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """The server stops while the send reads the draft (the stop cancels
    the timers before the store closes): nothing was sent, so the record
    waits (``.json``) and the next start sends it, once."""
    import threading

    from ..conftest import RunningServer as Running

    first = make_server()
    reading = threading.Event()

    async def stuck(*args: object, **kwargs: object) -> object:
        task = asyncio.current_task()
        if task is not None and task.get_coro().__name__ == "later":
            reading.set()
            await asyncio.Event().wait()  # until the stop cancels the send
        return await read_message(*args, **kwargs)

    read_message = first.store.read_message
    monkeypatch.setattr(first.store, "read_message", stuck)
    _held_send(first, "stopped while reading")
    _wait(reading.is_set, "the send to read the draft")
    data_dir, config = first.data_dir, first.config
    first.call(first.server.stop())
    first.server = None
    assert _outbox(first) == [".json"]
    second = Running(data_dir, config, seed_defaults=False)
    try:
        second.start()
        (got,) = _wait(lambda: second.messages(BOB), "the held message after the restart")
        assert b"stopped while reading" in got
        _wait(lambda: _outbox(second) == [], "the record of the send to go")
        assert len(second.messages(BOB)) == 1 and second.messages(ALICE, "Drafts") == []
    finally:
        second.stop()


def _stuck_in(monkeypatch: pytest.MonkeyPatch, server: RunningServer, method: str) -> tuple:
    """``server.store.<method>`` waits in the timers of held sends until the
    returned event is set (or the task is cancelled); the other event says
    a send got there."""
    import threading

    real = getattr(server.store, method)
    reached, release = threading.Event(), asyncio.Event()

    async def stuck(*args: object, **kwargs: object) -> object:
        task = asyncio.current_task()
        if task is not None and task.get_coro().__name__ == "later":
            reached.set()
            await release.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(server.store, method, stuck)
    return reached, release


def test_a_claim_left_by_a_stop_after_the_send_went_is_not_called_maybe_sent(mailserver: RunningServer) -> None:
    """A stop after the send went and noted what it left undone, before its
    claim was removed: at the next start the page says sent, with the note."""
    import json

    import mailyard.web.undo as undo

    assert mailserver.server is not None and mailserver.server.services is not None
    services = mailserver.server.services
    account_id = mailserver.call(mailserver.store.get_account(ALICE)).id
    token = "T" * 24
    folder = undo.outbox(services)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    (folder / f"{token}.sending").write_text(json.dumps({"account_id": account_id}))
    (folder / f"{token}.sent").write_text(json.dumps({"account_id": account_id,
                                                      "undone": "its draft may still be in Drafts"}))

    async def resume() -> int:
        return undo.resume(services)

    mailserver.call(resume())
    assert _outbox(mailserver) == [".sent"]
    page = login(mailserver).get(f"/compose/pending/{token}", follow_redirects=True)
    assert "Message sent; its draft may still be in Drafts." in page.text


def test_a_held_send_the_server_stops_while_it_is_submitted_says_it_may_not_have_gone(
        make_server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    """The server stops during ``submit_message`` (the stop cancels the
    send): it is not tried again at the next start, and the pending page
    says it may not have gone, with the draft, not "Message sent."."""
    from ..conftest import RunningServer as Running

    caplog.set_level(logging.INFO, logger="mailyard")
    first = make_server()
    reached, _release = _stuck_in(monkeypatch, first, "deliver")
    pending = _held_send(first, "stopped while submitted")
    _wait(reached.is_set, "the send to submit the message")
    (timer,) = _timers(first).values()
    data_dir, config = first.data_dir, first.config
    first.call(first.server.stop())
    first.server = None
    _wait(timer.done, "the cancelled send to end")
    assert _outbox(first) == [".sending"]
    second = Running(data_dir, config, seed_defaults=False)
    try:
        second.start()
        assert _outbox(second) == [".failed"] and _timers(second) == {}
        page = login(second).get(pending, follow_redirects=True)
        assert "It may not have gone: the server stopped while it was being sent." in page.text, page.text
        assert "The message is still in Drafts" in page.text and "Message sent." not in page.text
        drafts = box_id(second, ALICE, "Drafts")
        assert re.search(rf'href="/compose\?draft={drafts}:\d+"', page.text)
        assert second.messages(BOB) == [] and len(second.messages(ALICE, "Drafts")) == 1
    finally:
        second.stop()


def test_a_restarted_worker_leaves_the_live_sends_of_the_others_alone(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A worker process of a multi-process server that starts again runs
    ``resume`` while another sends a held message: that send's claimed
    record (locked) is left alone, and it goes once, the page saying so."""
    import mailyard.web.undo as undo

    caplog.set_level(logging.INFO, logger="mailyard")
    reached, release = _stuck_in(monkeypatch, mailserver, "deliver")
    pending = _held_send(mailserver, "sent by another worker")
    _wait(reached.is_set, "the send to submit the message")
    services = mailserver.server.services

    async def restarted_worker() -> int:
        return undo.resume(services)  # what another worker's start runs

    assert mailserver.call(restarted_worker()) == 0
    assert _outbox(mailserver) == [".sending"]
    assert not [r for r in caplog.records if "was being sent when the server stopped" in r.getMessage()]
    mailserver.loop.call_soon_threadsafe(release.set)
    (got,) = _wait(lambda: mailserver.messages(BOB), "the held message")
    assert b"sent by another worker" in got
    _wait(lambda: _outbox(mailserver) == [], "the record of the send to go")
    assert len(_accepted(caplog)) == 1
    assert "Message sent." in login(mailserver).get(pending, follow_redirects=True).text


def test_a_held_send_a_store_bug_fails_is_logged_with_its_traceback(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A store error from the submission that is not the store out of reach
    (a bug) is logged with its traceback; the page says it may not have gone."""
    from mailyard.store.api import NotFound

    caplog.set_level(logging.INFO, logger="mailyard")
    _out_of_reach(monkeypatch, mailserver, "deliver", lambda _n, _a: True, error=lambda: NotFound("no such mailbox"))
    pending = _held_send(mailserver, "store bug")
    _wait(lambda: _outbox(mailserver) == [".failed"], "the send to end")
    (line,) = [r for r in caplog.records if "may not have gone" in r.getMessage()]
    assert line.levelno == logging.ERROR and line.exc_info is not None
    assert "NotFound: no such mailbox" in caplog.text
    page = login(mailserver).get(pending, follow_redirects=True)
    assert "It may not have gone: the mail store failed while it was being sent." in page.text
    assert mailserver.messages(BOB) == [] and len(mailserver.messages(ALICE, "Drafts")) == 1


def test_a_held_send_whose_draft_is_gone_says_not_sent(mailserver: RunningServer) -> None:
    """The draft is deleted from Drafts (by another client) while the send
    waits: nothing is sent, and the page says so, not "Message sent."."""
    import mailyard.web.undo as undo

    _set_delay(mailserver, ALICE, 30)
    client = login(mailserver)
    r = client.post("/compose", data={"csrf": csrf(client), "to": BOB, "subject": "deleted meanwhile",
                                      "body": "the body", "action": "send"})
    pending = r.headers["location"]
    assert pending.startswith("/compose/pending/")
    services = mailserver.server.services

    async def delete_the_draft_then_fire() -> None:
        account = await mailserver.store.get_account(ALICE)
        drafts = await mailserver.store.get_mailbox(account.id, "Drafts")
        uids = [m.uid for m in await mailserver.store.list_messages(drafts)]
        await mailserver.store.expunge(drafts, uids)
        await undo.fire(services, pending.rsplit("/", 1)[1])  # its time has come

    mailserver.call(delete_the_draft_then_fire())
    assert _outbox(mailserver) == [".failed"]
    page = client.get(pending, follow_redirects=True)
    assert "Not sent: the draft was no longer in Drafts." in page.text, page.text
    assert "Message sent." not in page.text and 'id="pending-draft"' not in page.text
    assert "still in Drafts" not in page.text
    assert mailserver.messages(BOB) == []


def test_undo_too_late_leads_to_the_send_outcome(mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo pressed while the send works on the message does not claim it
    was sent (the send may still be refused or wait again): it leads to the
    pending page, which shows the outcome when there is one."""
    reached, release = _stuck_in(monkeypatch, mailserver, "deliver")
    pending = _held_send(mailserver, "undo too late")
    _wait(reached.is_set, "the send to submit the message")
    client = login(mailserver)
    page = client.get(pending)
    r = client.post(pending + "/undo", data={"csrf": csrf(client)})
    assert r.status_code == 303 and r.headers.get("location", "").startswith(pending), (r.status_code, r.text[:300])
    shown = client.get(r.headers["location"])
    assert "Too late to undo." in shown.text and "Message sent." not in shown.text
    assert page.status_code == 200
    mailserver.loop.call_soon_threadsafe(release.set)
    _wait(lambda: len(mailserver.messages(BOB)) == 1, "the message to arrive")
    _wait(lambda: _outbox(mailserver) == [], "the send to end")
    done = client.get(pending, follow_redirects=True)
    assert "Message sent." in done.text


def _ended_form(html: str) -> dict[str, object]:
    """The fields of the session-ended page's form (keep: a list)."""
    form = re.search(r'<form class="login ended" method="post" action="/compose/login" id="ended-form">(.*?)</form>',
                     html, re.S)
    assert form, html
    fields: dict[str, object] = {}
    keep: list[str] = []
    for name, value in re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', form.group(1)):
        value = value.replace("&lt;", "<").replace("&gt;", ">").replace("&#34;", '"').replace("&amp;", "&")
        if name == "keep":
            keep.append(value)
        else:
            fields[name] = value
    body = re.search(r'<textarea id="body" name="body" rows="10">\n(.*?)</textarea>', form.group(1), re.S)
    fields["body"] = body.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&#34;", '"').replace("&amp;", "&")
    fields["keep"] = keep
    return fields


def test_a_message_sent_after_the_session_ended_comes_back_after_a_login(mailserver: RunningServer) -> None:
    """Send after the session ended (here: Log out in another tab): nothing
    goes, the text is shown back with a login, and after it the message is
    in compose again, its draft's attachment with it, and can be sent."""
    client = login(mailserver)
    fields = _form_fields(client.get("/compose").text)
    assert fields["account"] == ALICE
    form = {**fields, "to": BOB, "subject": "after the break", "body": "v1", "action": "save"}
    saved = client.post("/compose/autosave", data=form, files={"attachment": ("a.txt", b"kept\n", "text/plain")})
    assert saved.status_code == 200, saved.text
    draft_uid = saved.json()["draft_uid"]
    client.post("/logout", data={"csrf": fields["csrf"]})  # another tab of the same browser
    text = "A long message, typed since the last autosave.\n<b>& \"quoted\"</b>\n"
    r = client.post("/compose", data={**form, "body": text, "draft_uid": draft_uid, "keep": "2", "action": "send"},
                    files={"attachment": ("new.txt", b"chosen late\n", "text/plain")})
    assert r.status_code == 401 and 'id="ended-title">Your session has ended' in r.text
    assert "Your message was not sent" in r.text and "The files you chose could not be kept" in r.text
    assert "mailyard_login=" in r.headers["set-cookie"]
    carried = _ended_form(r.text)
    assert carried["body"] == text and carried["to"] == BOB and carried["draft_uid"] == draft_uid
    assert carried["keep"] == ["2"] and "csrf" not in carried and carried["account"] == ALICE
    assert mailserver.messages(BOB) == []
    assert re.search(r'name="username" type="email" autocomplete="username" required value="alice@example.test"',
                     r.text)
    # a wrong password: the same page, the text still there, the address as typed
    wrong = client.post("/compose/login", data={**carried, "username": BOB, "password": "wrong"})
    assert wrong.status_code == 401 and "Wrong address or password." in wrong.text
    assert re.search(r'name="username" type="email" autocomplete="username" required value="bob@example.test"',
                     wrong.text)
    carried = _ended_form(wrong.text)
    assert carried["body"] == text
    r = client.post("/compose/login", data={**carried, "username": ALICE, "password": USERS[ALICE]})
    assert r.status_code == 200 and "mailyard_session=" in r.headers["set-cookie"]
    assert "You are logged in again. Here is your message, not sent yet" in r.text
    again = _form_fields(r.text)
    assert again["body"] == text and again["to"] == BOB and again["subject"] == "after the break"
    assert again["draft_uid"] == draft_uid and again["csrf"] != fields["csrf"]
    assert re.search(r'name="keep" value="2" checked> a.txt', r.text)
    assert mailserver.messages(BOB) == []
    sent = client.post("/compose", data={**again, "keep": "2", "action": "send"})
    assert sent.status_code == 303, sent.text
    (got,) = mailserver.messages(BOB)
    msg = message_from_bytes(got, policy=default_policy)
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n").startswith(text)
    assert [a.get_filename() for a in msg.iter_attachments()] == ["a.txt"]
    assert mailserver.messages(ALICE, "Drafts") == []


def test_a_compose_post_without_a_session_is_bounded_to_its_text(mailserver: RunningServer) -> None:
    """Without a live session a compose form is read only as far as its text
    (bodies.py SIGNED_OUT_COMPOSE): nobody who never logged in gets a
    message's worth of upload spooled to the server. A signed-in post of
    the same size goes through."""
    client = login(mailserver)
    fields = _form_fields(client.get("/compose").text)
    big = ("big.bin", b"x" * (3 * 1024 * 1024), "application/octet-stream")
    saved = client.post("/compose/autosave", data={**fields, "to": BOB, "body": "v1", "action": "save"},
                        files={"attachment": big})
    assert saved.status_code == 200, saved.text[:500]
    client.post("/logout", data={"csrf": fields["csrf"]})
    for path in ("/compose", "/compose/autosave", "/compose/login"):
        r = client.post(path, data={**fields, "to": BOB, "body": "typed", "action": "send"}, files={"attachment": big})
        assert r.status_code == 413, (path, r.status_code, r.text[:500])
        # (nothing to go Back to: the form's page is gone with the session)
        assert "Your session has ended" in r.text and "could not be shown back" in r.text
        assert "Go back" not in r.text and "Log in again" in r.text
    # a stranger's client, no cookie at all: the same bound
    stranger = httpx.Client(base_url=client.base_url, headers={"Origin": str(client.base_url).rstrip("/")})
    r = stranger.post("/compose", data={"to": BOB, "body": "typed"}, files={"attachment": big})
    assert r.status_code == 413
    # the text alone is still shown back
    r = client.post("/compose", data={**fields, "to": BOB, "body": "typed", "action": "send"})
    assert r.status_code == 401 and "Your session has ended" in r.text
    assert mailserver.messages(BOB) == []


def test_a_compose_form_without_a_session_is_read_for_its_text_only(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a live session a compose form's file parts are read past,
    not spooled anywhere, its text still shown back; and a form of more
    fields than a compose form has is not read, saying its text could not
    be kept."""
    import starlette.formparsers

    spooled: list[object] = []
    real = starlette.formparsers.SpooledTemporaryFile

    def counted(*args: object, **kwargs: object) -> object:
        spooled.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", counted)
    client = login(mailserver)
    fields = _form_fields(client.get("/compose").text)
    client.post("/logout", data={"csrf": fields["csrf"]})
    spooled.clear()
    small = ("scan.pdf", b"%PDF" + b"x" * 200_000, "application/pdf")
    r = client.post("/compose", data={**fields, "to": BOB, "body": "typed by hand", "action": "send"},
                    files={"attachment": small})
    assert r.status_code == 401, r.text[:300]
    assert _ended_form(r.text)["body"] == "typed by hand" and _ended_form(r.text)["to"] == BOB
    assert "The files you chose could not be kept" in r.text
    r = client.post("/compose/autosave", data={**fields, "body": "typed by hand"}, files={"attachment": small})
    assert r.status_code == 401 and r.json()["ended"] is True
    r = client.post("/compose/login", data={**fields, "body": "typed by hand"}, files={"attachment": small})
    assert r.status_code == 403 and "typed by hand" in r.text  # (no login form: "the login form expired")
    assert spooled == []
    # a form of a thousand fields: not read
    many = {**fields, "body": "typed by hand", "keep": [str(i) for i in range(1000)]}
    for path in ("/compose", "/compose/autosave", "/compose/login"):
        r = client.post(path, data=many)
        assert r.status_code == 400 and "its text could not be kept" in r.text, (path, r.status_code, r.text[:300])
    # the same fields under a live session are a form like any other
    client = login(mailserver)
    fields = _form_fields(client.get("/compose").text)
    r = client.post("/compose/autosave", data={**many, "csrf": fields["csrf"], "draft_uid": ""})
    assert r.status_code == 200, r.text[:300]


def test_autosave_after_the_session_ended_says_so_in_json(mailserver: RunningServer) -> None:
    client = login(mailserver)
    fields = _form_fields(client.get("/compose").text)
    client.post("/logout", data={"csrf": fields["csrf"]})
    r = client.post("/compose/autosave", data={**fields, "body": "typed"}, headers={"Accept": "application/json"})
    assert r.status_code == 401 and r.json()["ended"] is True
    assert "your session has ended" in r.json()["error"]
    # logged in again (another tab): the form's token is the old session's
    client = login(mailserver)
    r = client.post("/compose/autosave", data={**fields, "body": "typed"}, headers={"Accept": "application/json"})
    assert r.status_code == 403 and r.json()["ended"] is True
    assert mailserver.messages(ALICE, "Drafts") == []


def test_a_form_of_an_ended_session_goes_on_under_the_new_one(mailserver: RunningServer) -> None:
    """Logged in again in another tab: the form's CSRF token is the ended
    session's; the page offers to go on under the new one, nothing sent."""
    client = login(mailserver)
    fields = _form_fields(client.get("/compose").text)
    client.post("/logout", data={"csrf": fields["csrf"]})
    client = login(mailserver)
    new_token = csrf(client)
    r = client.post("/compose", data={**fields, "to": BOB, "body": "still here", "action": "send"})
    assert r.status_code == 403 and "You have logged in again since" in r.text
    carried = _ended_form(r.text)
    assert carried["csrf"] == new_token and carried["body"] == "still here"
    assert 'name="password"' not in r.text
    r = client.post("/compose/login", data=carried)
    assert r.status_code == 200 and _form_fields(r.text)["body"] == "still here"
    assert "set-cookie" not in r.headers
    assert mailserver.messages(BOB) == []


def test_a_carried_form_keeps_its_references_only_for_its_own_account(mailserver: RunningServer) -> None:
    """Another account logging in on the session-ended page gets the text,
    but not the references to the first one's mail (draft, forward, kept
    attachments), which would name its own; and no page elsewhere can
    carry a form through (the origin check)."""
    inbox = box_id(mailserver, ALICE, "INBOX")
    uid = append(mailserver, ALICE, _rich_original())
    client = login(mailserver)
    fields = _form_fields(client.get(f"/compose?forward={inbox}:{uid}").text)
    client.post("/logout", data={"csrf": fields["csrf"]})
    r = client.post("/compose", data={**fields, "to": BOB, "body": "for you", "draft_uid": "1", "keep": "2"})
    carried = _ended_form(r.text)
    r = client.post("/compose/login", data={**carried, "username": BOB, "password": USERS[BOB]})
    assert r.status_code == 200
    bobs = _form_fields(r.text)
    assert bobs["body"] == "for you" and bobs["account"] == BOB
    assert bobs["draft_uid"] == bobs["forward"] == bobs["reply_to"] == "" and 'name="keep"' not in r.text
    # a cross-site POST is refused before any page shows its text
    anon = httpx.Client(base_url=f"http://127.0.0.1:{mailserver.port('http')}", timeout=30)
    for path in ("/compose", "/compose/login"):
        r = anon.post(path, data={"to": BOB, "body": "planted"}, headers={"Origin": "http://evil.test"})
        assert r.status_code == 403 and "planted" not in r.text


def test_forward_inline_chosen_by_its_button_puts_the_original_text_in(mailserver: RunningServer) -> None:
    """The "inline" choice of a forward opened as "attached" puts the
    original's header block and text under the note when the page's script
    did not (no JavaScript), once, autosaved draft or not."""
    inbox = box_id(mailserver, ALICE, "INBOX")
    uid = append(mailserver, ALICE, _rich_original())
    client = login(mailserver)
    page = client.get(f"/compose?forward={inbox}:{uid}")
    # the text the page's script puts in when "inline" is chosen
    template = re.search(r'<template id="forward-inline-text">(.*?)</template>', page.text, re.S).group(1)
    assert template.startswith("---------- Forwarded message ----------\nFrom: Carol &lt;carol@elsewhere.test&gt;")
    fields = _form_fields(page.text)
    assert fields["forward_text"] == ""
    form = {**fields, "forward_mode": "inline", "to": BOB, "body": "see below"}
    saved = client.post("/compose/autosave", data=form)
    assert saved.status_code == 200, saved.text
    (draft,) = mailserver.messages(ALICE, "Drafts")
    assert b"---------- Forwarded message ----------" in draft
    r = client.post("/compose", data={**form, "draft_uid": saved.json()["draft_uid"], "keep": "2",
                                      "action": "send"})
    assert r.status_code == 303, r.text
    (got,) = mailserver.messages(BOB)
    msg = message_from_bytes(got, policy=default_policy)
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.startswith("see below\n\n---------- Forwarded message ----------\nFrom: Carol <carol@elsewhere.test>")
    assert text.count("---------- Forwarded message ----------") == 1 and "line one\nline two\n" in text
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "notes.txt"
    # the text already in the body (put there by the script, then edited): left as it is
    client.post("/compose", data={**form, "forward_text": "in-body", "body": "mine alone", "action": "send",
                                  "send_id": ""})
    got = message_from_bytes(mailserver.messages(BOB)[-1], policy=default_policy)
    assert got.get_body(("plain",)).get_content().strip() == "mine alone"


def _forward_sent(mailserver: RunningServer, client: httpx.Client, form: dict, saved: httpx.Response,
                  **changes: str) -> tuple[str, list[str]]:
    """Send ``form`` with ``changes`` after the autosave ``saved`` (its draft
    and attachments kept, as the page's script keeps them): the text Bob
    gets and the types of his attachments."""
    kept = [k[0] for k in saved.json()["kept"]]
    r = client.post("/compose", data={**form, **changes, "draft_uid": saved.json()["draft_uid"], "keep": kept,
                                      "action": "send", "send_id": ""})
    assert r.status_code == 303, r.text
    msg = message_from_bytes(mailserver.messages(BOB)[-1], policy=default_policy)
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    return text, [a.get_content_type() for a in msg.iter_attachments()]


def test_a_forward_switched_after_an_autosave_carries_the_original_as_last_chosen(
        mailserver: RunningServer) -> None:
    """A forward switched between attached and inline (the page's script
    puts the original's text in or takes it out) after an autosave carries
    the original as the last choice says: attached, the message whole and
    no copies of its attachments; inline, its text and attachments and no
    .eml; sent at once or saved once more first."""
    inbox = box_id(mailserver, ALICE, "INBOX")
    uid = append(mailserver, ALICE, _rich_original())
    client = login(mailserver)
    page = client.get(f"/compose?forward={inbox}:{uid}")
    fields = _form_fields(page.text)
    inline_text = re.search(r'<template id="forward-inline-text">(.*?)</template>', page.text, re.S).group(1)
    inline_text = inline_text.replace("&lt;", "<").replace("&gt;", ">").replace("&#34;", '"').replace("&amp;", "&")
    attached = {**fields, "to": BOB, "forward_mode": "attached", "forward_text": "", "body": "see below"}
    inline = {**attached, "forward_mode": "inline", "forward_text": "in-body",
              "body": "see below\n\n" + inline_text}
    for first, last in ((inline, attached), (attached, inline)):
        for again in (False, True):
            saved = client.post("/compose/autosave", data={**first, "send_id": ""})
            assert saved.status_code == 200, saved.text
            if again:  # the switch autosaved too before the send
                kept = [k[0] for k in saved.json()["kept"]]
                saved = client.post("/compose/autosave", data={**last, "draft_uid": saved.json()["draft_uid"],
                                                               "keep": kept, "send_id": ""})
                assert saved.status_code == 200, saved.text
            text, types = _forward_sent(mailserver, client, last, saved)
            if last is attached:
                assert text.strip() == "see below", (again, text)
                assert types == ["message/rfc822"], (again, types)
            else:
                assert text.count("---------- Forwarded message ----------") == 1, (again, text)
                assert "line one\nline two\n" in text
                assert types == ["text/plain"], (again, types)
    # what Bob's copies and Sent hold of the record: nothing
    assert all(b"Mailyard-Forward" not in m for m in mailserver.messages(BOB))
    assert all(b"Mailyard-Forward" not in m for m in mailserver.messages(ALICE, "Sent"))


def test_autosave_takes_files_as_large_as_a_message_may_carry(mailserver: RunningServer) -> None:
    """Autosave uploads the chosen files once (static/compose.js): its
    route takes a body as large as the compose form's."""
    client = login(mailserver)
    fields = _form_fields(client.get("/compose").text)
    data = bytes(range(256)) * 1024  # 256 KB
    r = client.post("/compose/autosave", data={**fields, "to": BOB, "body": "with a file"},
                    files={"attachment": ("big.bin", data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    assert [k[1] for k in r.json()["kept"]] == ["big.bin"]
    (draft,) = mailserver.messages(ALICE, "Drafts")
    assert _attachments(draft) == {"big.bin": data}


def test_a_form_posted_after_log_out_other_sessions_keeps_its_text(mailserver: RunningServer) -> None:
    """A session ended from another browser ("Log out other sessions"): the
    compose form's text comes back with a login; any other form posted by a
    browser gets a page that says the session ended, with a way to log in."""
    inbox = box_id(mailserver, ALICE, "INBOX")
    writer = login(mailserver)
    fields = _form_fields(writer.get("/compose").text)
    other = login(mailserver)
    r = other.post("/settings", data={"csrf": csrf(other), "section": "sessions"})
    assert r.status_code == 303 and "Logged%20out%201%20other%20session." in r.headers["location"]
    r = writer.post("/compose", data={**fields, "to": BOB, "body": "typed all afternoon", "action": "save"})
    assert r.status_code == 401 and "Your message was not saved" in r.text
    assert _ended_form(r.text)["body"] == "typed all afternoon"
    r = writer.post(f"/box/{inbox}/action", data={"csrf": fields["csrf"], "uid": "1", "action": "read"},
                    headers={"Accept": "text/html"})
    assert r.status_code == 401 and "Your session has ended: log in again." in r.text
    assert '<a href="/login">Log in</a>' in r.text
