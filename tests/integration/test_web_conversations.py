"""Webmail conversations and reading over HTTP (httpx) against a running
server: threads by References/In-Reply-To and by subject (RFC 5256
REFERENCES, message/threading.py) across the folder and Sent, the per-user
switch to the flat list, the conversation page (read messages collapsed,
the unread ones and the newest open, its actions on the whole conversation
with their Undo, its Reply answering someone else); attached messages shown inline, previews, sizes, cid: images,
report part names, the print view."""

from __future__ import annotations

import html
import re

import pytest

from mailyard.message.compose import Attachment, compose, to_bytes

from ..conftest import RunningServer
from .test_web_http import ALICE, append, box_id, login
from .test_web_search import set_conversations

httpx = pytest.importorskip("httpx")

T0 = 1_704_067_200


def mk(server: RunningServer, name: str, use: str | None) -> int:
    async def go() -> int:
        account = await server.store.get_account(ALICE)
        box = await server.store.get_mailbox(account.id, name)
        if box is None:
            box = await server.store.create_mailbox(account.id, name, use)
        return box.id

    return server.call(go())


def put(server: RunningServer, raw: bytes, mailbox: str = "INBOX", when: int = T0, flags=()) -> int:
    async def go() -> int:
        account = await server.store.get_account(ALICE)
        box = await server.store.get_mailbox(account.id, mailbox)
        return await server.store.append(box, raw, list(flags), internal_date=when)

    return server.call(go())


def mail(subject: str, mid: str, sender: str = "Bob <bob@example.test>", to: str = ALICE,
         refs: str = "", day: int = 1, body: str = "text") -> bytes:
    head = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\n"
            f"Date: {day:02d} Jan 2024 10:00:00 +0000\r\n")
    if refs:
        head += f"In-Reply-To: <{refs.split()[-1]}>\r\nReferences: " + " ".join(f"<{r}>" for r in refs.split()) + "\r\n"
    return (head + f"\r\n{body}\r\n").encode()


def rows(page: str) -> list[tuple[str, str]]:
    """(link, subject) of each list row."""
    return re.findall(r'<a href="([^"]+)" class="open">([^<]+)</a>', page)


def test_conversation_list_groups_threads_across_sent(mailserver: RunningServer) -> None:
    mk(mailserver, "Sent", "\\Sent")
    inbox = box_id(mailserver, ALICE, "INBOX")
    put(mailserver, mail("Lunch?", "a1@x", day=1), when=T0)
    put(mailserver, mail("Re: Lunch?", "a3@x", refs="a1@x a2@x", day=3), when=T0 + 3 * 86400)
    # the user's reply, in Sent
    put(mailserver, mail("Re: Lunch?", "a2@x", sender=ALICE, to="bob@example.test", refs="a1@x", day=2),
        mailbox="Sent", when=T0 + 2 * 86400, flags=("\\Seen",))
    # same subject, no references: joined by subject (RFC 5256 REFERENCES step 5)
    put(mailserver, mail("Lunch?", "a4@x", day=4), when=T0 + 4 * 86400, flags=("\\Seen",))
    put(mailserver, mail("Other", "b1@x", day=5), when=T0 + 5 * 86400)
    c = login(mailserver)
    page = c.get(f"/box/{inbox}").text
    found = rows(page)
    assert [s for _l, s in found] == ["Other", "Lunch?"]
    assert found[0][0].startswith(f"/box/{inbox}/msg/")  # alone: the message itself
    conv_link = found[1][0]
    assert re.fullmatch(rf"/box/{inbox}/conv/\d+", conv_link)
    assert '<span class="count" title="4 messages">4</span>' in page
    assert "1–2 of 2 conversations" in page
    # the conversation: every message, oldest first; the unread ones open, and the newest
    conv = c.get(conv_link).text
    details = re.findall(r'<details class="convmsg[^"]*" id="m-(\d+)-(\d+)"( open)?>', conv)
    assert len(details) == 4
    assert [d[2] for d in details] == [" open", "", " open", " open"]
    sent = box_id(mailserver, ALICE, "Sent")
    assert [int(d[0]) for d in details] == [inbox, sent, inbox, inbox]
    assert '<span class="folder">Sent</span>' in conv
    assert len(re.findall(r'<iframe class="body fit"', conv)) == 4
    # reading it marked its messages read
    assert "unread" not in re.search(r'<tr class="msg([^"]*)"[^>]*>\s*<td class="sel"><input[^>]*>\s*</td>\s*'
                                     r'<td class="flag">[^\n]*\n\s*<td class="from"[^>]*>[^<]*</td>\s*'
                                     r'<td class="subject"><a href="/box/\d+/conv/',
                                     c.get(f"/box/{inbox}").text).group(1)
    # a message of the thread's body is served to its frame
    first_uid = details[0][1]
    assert "text" in c.get(f"/box/{inbox}/msg/{first_uid}/body").text


def test_a_newer_conversation_only_in_sent_leaves_the_folders_list_whole(mailserver: RunningServer) -> None:
    """The folder's list is its conversations, whatever the companion
    folder holds: a newer conversation of Sent alone is not in the Inbox's."""
    mk(mailserver, "Sent", "\\Sent")
    inbox = box_id(mailserver, ALICE, "INBOX")
    put(mailserver, mail("Alpha", "a1@x", day=1), when=T0)
    put(mailserver, mail("Alpha 2", "a2@x", day=2), when=T0 + 86400)
    put(mailserver, mail("Beta", "b1@x", sender=ALICE, to="bob@example.test", day=3), mailbox="Sent",
        when=T0 + 3 * 86400, flags=("\\Seen",))
    c = login(mailserver)
    assert [s for _l, s in rows(c.get(f"/box/{inbox}").text)] == ["Alpha 2", "Alpha"]


def test_conversations_off_gives_the_flat_list(mailserver: RunningServer) -> None:
    inbox = box_id(mailserver, ALICE, "INBOX")
    put(mailserver, mail("Plan", "p1@x", day=1), when=T0)
    put(mailserver, mail("Re: Plan", "p2@x", refs="p1@x", day=2), when=T0 + 86400)
    c = login(mailserver)
    assert len(rows(c.get(f"/box/{inbox}").text)) == 1
    set_conversations(mailserver, ALICE, False)
    flat = rows(c.get(f"/box/{inbox}").text)
    assert [s for _l, s in flat] == ["Re: Plan", "Plan"]
    assert all("/msg/" in link for link, _s in flat)


def test_conversation_of_another_account_is_not_found(mailserver: RunningServer) -> None:
    inbox = box_id(mailserver, ALICE, "INBOX")
    uid = put(mailserver, mail("Mine", "m1@x"))
    put(mailserver, mail("Re: Mine", "m2@x", refs="m1@x"))
    bob = login(mailserver, "bob@example.test")
    assert bob.get(f"/box/{inbox}/conv/{uid}").status_code == 404
    assert bob.get(f"/box/{inbox}/msg/{uid}/print").status_code == 404


def forwarded_message() -> bytes:
    inner = compose("Dora <dora@example.test>", "carl@example.test", subject="Original talk",
                    text="the inner body words",
                    attachments=[Attachment("inner.txt", b"inner attachment", "text/plain")])
    outer = compose("Bob <bob@example.test>", ALICE, subject="Fwd: Original talk", text="see below",
                    attachments=[inner])
    return to_bytes(outer)


def test_forwarded_message_is_shown_inline_with_its_attachments(mailserver: RunningServer) -> None:
    uid = append(mailserver, ALICE, forwarded_message())
    inbox = box_id(mailserver, ALICE, "INBOX")
    c = login(mailserver)
    page = c.get(f"/box/{inbox}/msg/{uid}").text
    assert "Original talk.eml" in page and "shown below" in page
    # the attached message's own attachment, numbered inside it (RFC 9051 6.4.5)
    link = re.search(r'href="(/box/\d+/msg/\d+/part/2\.2)" download class="attachment" data-spec="2.2">'
                     r'<img[^>]*> inner.txt</a>\s*<span class="meta"><span class="asize">16 B</span> · text/plain · '
                     r'in “Original talk”', page)
    assert link is not None
    assert c.get(link.group(1)).content == b"inner attachment"
    body = c.get(f"/box/{inbox}/msg/{uid}/body").text
    assert "see below" in body
    section = re.search(r'<section class="forwarded" id="fwd-2".*?</section>', body, re.S)
    assert section is not None
    assert "Dora &lt;dora@example.test&gt;" in section.group(0) and "the inner body words" in section.group(0)
    assert "Original talk" in section.group(0)


def test_previews_sizes_cid_and_report_names(mailserver: RunningServer) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 200
    html = '<p>logo: <img src="cid:logo@x"></p>'
    raw = (
        "From: bob@example.test\r\nTo: alice@example.test\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        '--B\r\nContent-Type: multipart/related; boundary="R"\r\n\r\n'
        f'--R\r\nContent-Type: text/html\r\n\r\n{html}\r\n'
        '--R\r\nContent-Type: image/png; name="logo.png"\r\nContent-Disposition: inline; filename="logo.png"\r\n'
        "Content-ID: <logo@x>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + __import__("base64").b64encode(png).decode() + "\r\n--R--\r\n"
        '--B\r\nContent-Type: image/png; name="photo.png"\r\nContent-Disposition: attachment; filename="photo.png"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n" + __import__("base64").b64encode(png).decode() + "\r\n"
        '--B\r\nContent-Type: application/pdf; name="doc.pdf"\r\nContent-Disposition: attachment; filename="doc.pdf"\r\n'
        "\r\n%PDF-1.4 minimal\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.test\r\n\r\n"
        "Final-Recipient: rfc822; x@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: lost\r\n\r\n"
        "--B--\r\n"
    ).encode()
    uid = append(mailserver, ALICE, raw)
    inbox = box_id(mailserver, ALICE, "INBOX")
    c = login(mailserver)
    page = c.get(f"/box/{inbox}/msg/{uid}").text
    names = re.findall(r'<img src="/static/clip.svg" alt="" width="14" height="14"> ([^<]+)</a>', page)
    # the cid: image the HTML shows is not listed; the report parts have names
    assert names == ["photo.png", "doc.pdf", "Delivery report.txt", "Returned headers.txt"]
    assert '<span class="asize">208 B</span>' in page
    base = f"/box/{inbox}/msg/{uid}"
    assert f'<img src="{base}/part/2?inline=1" alt="photo.png" loading="lazy">' in page
    # the PDF: its first pages as images in a frame without scripts (test_web_pdfpreview.py);
    # the file itself opens in a tab of its own, sandboxed
    assert re.search(rf'<iframe class="pdf" src="{base}/part/3/preview" title="doc.pdf" sandbox="allow-same-origin"',
                     page) or '<p class="pdf-unavailable">' in page
    assert f'<a href="{base}/part/3?inline=1" target="_blank" rel="noopener">doc.pdf</a>' in page
    r = c.get(f"{base}/part/3?inline=1")
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"].startswith("inline")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "script-src" not in csp
    # a type that is not previewed stays a download even when asked inline
    assert c.get(f"{base}/part/4?inline=1").headers["content-disposition"].startswith("attachment")


def test_print_view(mailserver: RunningServer) -> None:
    uid = append(mailserver, ALICE, mail("Print me", "pr@x", body="paper words <b>"))
    inbox = box_id(mailserver, ALICE, "INBOX")
    c = login(mailserver)
    assert f'href="/box/{inbox}/msg/{uid}/print"' in c.get(f"/box/{inbox}/msg/{uid}").text
    r = c.get(f"/box/{inbox}/msg/{uid}/print")
    assert r.status_code == 200
    assert "<h1>Print me</h1>" in r.text and "paper words &lt;b&gt;" in r.text
    assert '<link rel="stylesheet" href="/static/print.css">' in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert "<script>" not in r.text


def test_subject_alone_joins_only_within_a_window(mailserver: RunningServer) -> None:
    inbox = box_id(mailserver, ALICE, "INBOX")
    put(mailserver, mail("Status", "s1@x", day=1), when=T0)
    put(mailserver, mail("Status", "s2@x", day=3), when=T0 + 2 * 86400)
    later = mail("Status", "s3@x").replace(b"01 Jan 2024", b"01 Jun 2024")
    put(mailserver, later, when=T0 + 152 * 86400)
    c = login(mailserver)
    page = c.get(f"/box/{inbox}").text
    assert [s for _l, s in rows(page)] == ["Status", "Status"]
    assert '<span class="count" title="2 messages">2</span>' in page


def test_actions_on_a_conversation_row_act_on_the_whole_conversation(mailserver: RunningServer) -> None:
    from .test_web_http import csrf

    inbox = box_id(mailserver, ALICE, "INBOX")
    first = put(mailserver, mail("Plan", "q1@x", day=1), when=T0)
    second = put(mailserver, mail("Re: Plan", "q2@x", refs="q1@x", day=2), when=T0 + 86400)
    put(mailserver, mail("Other", "q3@x", day=3), when=T0 + 2 * 86400)
    c = login(mailserver)
    page = c.get(f"/box/{inbox}").text
    assert '<input type="hidden" name="whole" value="1">' in page
    newest = re.search(r'<input type="checkbox" name="uid" value="(\d+)" aria-label="Select message Re: Plan"', page)
    r = c.post(f"/box/{inbox}/action", data={"csrf": csrf(c), "action": "flag", "uid": newest.group(1),
                                             "whole": "1"})
    assert r.status_code == 303

    async def flagged() -> list[int]:
        account = await mailserver.store.get_account(ALICE)
        box = await mailserver.store.get_mailbox(account.id, "INBOX")
        return sorted(m.uid for m in await mailserver.store.list_messages(box) if "\\Flagged" in m.flags)

    assert newest.group(1) == str(second)
    assert mailserver.call(flagged()) == [first, second]  # not "Other"


def conversation_form(page: str) -> dict[str, str]:
    """The hidden fields of a conversation page's action form (its toolbar)."""
    form = re.search(r'<form method="post" action="/box/\d+/action" class="inline msgform">(.*?)</form>', page, re.S)
    assert form is not None, "no action form on the conversation page"
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form.group(1)))


def seed_thread(server: RunningServer) -> tuple[int, list[int], int]:
    """A thread of three in INBOX with the user's reply in Sent, and another
    message: the INBOX id, the thread's INBOX UIDs, the other one's UID."""
    mk(server, "Sent", "\\Sent")
    uids = [put(server, mail("Trip", "w1@x", day=1), when=T0, flags=("\\Seen",)),
            put(server, mail("Re: Trip", "w2@x", refs="w1@x", day=2), when=T0 + 86400),
            put(server, mail("Re: Trip", "w3@x", refs="w1@x w2@x", day=3), when=T0 + 2 * 86400)]
    put(server, mail("Re: Trip", "w4@x", sender=ALICE, to="bob@example.test", refs="w1@x w2@x w3@x", day=4),
        mailbox="Sent", when=T0 + 3 * 86400, flags=("\\Seen",))
    other = put(server, mail("Other", "w5@x", day=5), when=T0 + 4 * 86400)
    return box_id(server, ALICE, "INBOX"), uids, other


def inbox_uids(server: RunningServer, name: str = "INBOX") -> list[int]:
    async def go() -> list[int]:
        account = await server.store.get_account(ALICE)
        box = await server.store.get_mailbox(account.id, name)
        return [m.uid for m in await server.store.list_messages(box)]

    return server.call(go())


@pytest.mark.parametrize(("action", "folder"), [
    ("archive", "Archive"), ("delete", "Trash"), ("spam", "Junk"), ("move", "Projects"),
])
def test_conversation_page_actions_move_its_messages_in_the_folder_with_undo(
        mailserver: RunningServer, action: str, folder: str) -> None:
    from .test_web_undomove import undo_form

    inbox, uids, other = seed_thread(mailserver)
    if folder == "Projects":
        mk(mailserver, "Projects", None)
    c = login(mailserver)
    page = c.get(f"/box/{inbox}/conv/{uids[-1]}").text
    # plain buttons of one form: no script needed
    assert f'<button type="submit" name="action" value="{action}"' in page
    fields = conversation_form(page)
    assert fields["whole"] == "1" and fields["uid"] == str(uids[-1])
    r = c.post(f"/box/{inbox}/action", data={**fields, "action": action, "target": box_id(mailserver, ALICE, folder)})
    assert r.status_code == 303
    assert r.headers["location"].startswith(f"/box/{inbox}?notice=3%20moved%20to%20{folder}.")
    assert inbox_uids(mailserver) == [other]
    assert len(inbox_uids(mailserver, folder)) == 3
    assert len(inbox_uids(mailserver, "Sent")) == 1  # the reply in Sent stays: this folder's messages only
    token = undo_form(c, r.headers["location"])
    assert token is not None
    r = c.post("/undo-move", data={"csrf": fields["csrf"], "token": token})
    assert r.headers["location"] == f"/box/{inbox}?notice=Moved%20back."
    assert len(inbox_uids(mailserver)) == 4
    assert inbox_uids(mailserver, folder) == []


def test_conversation_page_mark_unread_and_a_move_without_a_folder(mailserver: RunningServer) -> None:
    from .test_web_undomove import flags

    inbox, uids, _other = seed_thread(mailserver)
    c = login(mailserver)
    page = c.get(f"/box/{inbox}/conv/{uids[-1]}").text
    fields = conversation_form(page)
    assert all("\\Seen" in f for f in flags(mailserver, ALICE, "INBOX")[:3])
    r = c.post(f"/box/{inbox}/action", data={**fields, "action": "unread"})
    # the list: the conversation page again would mark them read
    assert r.headers["location"] == f"/box/{inbox}"
    assert [("\\Seen" in f) for f in flags(mailserver, ALICE, "INBOX")] == [False, False, False, False]
    r = c.post(f"/box/{inbox}/action", data={**fields, "action": "move", "target": ""})
    assert r.headers["location"].startswith(f"/box/{inbox}/conv/{uids[-1]}?notice=")
    assert "Choose a folder to move to." in c.get(r.headers["location"]).text
    assert len(inbox_uids(mailserver)) == 4


def test_conversation_page_opens_the_unread_and_answers_someone_else(mailserver: RunningServer) -> None:
    """Every unread message is open, with the newest (here the user's own
    reply in Sent); opening marks them read. Reply, Reply all and Forward
    answer the newest message someone else wrote, not the user's reply."""
    from .test_web_undomove import flags

    inbox, uids, _other = seed_thread(mailserver)
    sent = box_id(mailserver, ALICE, "Sent")
    c = login(mailserver)
    page = c.get(f"/box/{inbox}/conv/{uids[-1]}").text
    details = re.findall(r'<details class="convmsg[^"]*" id="m-(\d+)-(\d+)"( open)?>', page)
    assert [(int(b), int(u), o) for b, u, o in details] == [
        (inbox, uids[0], ""), (inbox, uids[1], " open"), (inbox, uids[2], " open"),
        (sent, inbox_uids(mailserver, "Sent")[0], " open")]
    assert all("\\Seen" in f for f in flags(mailserver, ALICE, "INBOX")[:3])
    for key, mode in (("r", "reply"), ("a", "replyall"), ("f", "forward")):
        assert re.search(rf'<a class="button" href="/compose\?{mode}={inbox}:{uids[2]}" id="{mode}" data-key="{key}">',
                         page), mode
    for key in ("u", "e", "#", "!"):
        assert f'data-key="{key}"' in page


def test_a_conversation_opened_from_a_search_leads_back_to_it(mailserver: RunningServer) -> None:
    """Back, and an action of the conversation's page, return to the search
    the conversation was opened from (pages.py ``list_back``)."""
    from urllib.parse import quote

    inbox, uids, _other = seed_thread(mailserver)
    c = login(mailserver)
    searched = f"/box/{inbox}?q=Trip"
    page = c.get(f"/box/{inbox}/conv/{uids[-1]}?back={quote(searched, safe='')}").text
    assert re.search(rf'<a class="button back" href="{re.escape(html.escape(searched))}"[^>]*>.*Search results</a>',
                     page), page[:3000]
    fields = conversation_form(page)
    assert html.unescape(fields["back"]) == f"/box/{inbox}/conv/{uids[-1]}?back={quote(searched)}"
    r = c.post(f"/box/{inbox}/action", data={**fields, "back": html.unescape(fields["back"]), "action": "archive"})
    assert r.status_code == 303
    assert r.headers["location"].startswith(f"{searched}&notice=3%20moved%20to%20Archive."), r.headers["location"]
