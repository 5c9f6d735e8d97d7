"""Webmail answers mail with the shared reading core (message/reading.py,
message/reply.py): the reply and forward pages and the sent forward, over
HTTP (httpx) against a running server, hold the rules the terminal client
holds too (tests/integration/test_client_reading.py)."""

from __future__ import annotations

import html
import re
from email import message_from_bytes
from email.policy import default as default_policy

import pytest

from ..conftest import RunningServer
from .test_web_http import ALICE, BOB, append, box_id, csrf, login

httpx = pytest.importorskip("httpx")

CAROL = "carol@example.test"


def field(page: str, name: str) -> str:
    """The value of a compose form's input ``name`` (unescaped)."""
    found = re.search(rf'name="{name}"[^>]*?value="([^"]*)"', page)
    assert found is not None, name
    return html.unescape(found.group(1))


def body(page: str) -> str:
    found = re.search(r'<textarea id="body" name="body"[^>]*>(.*?)</textarea>', page, re.S)
    assert found is not None
    return html.unescape(found.group(1))


def ensure_mailbox(server: RunningServer, user: str, name: str) -> None:
    async def go() -> None:
        account = await server.store.get_account(user)
        if await server.store.get_mailbox(account.id, name) is None:
            await server.store.create_mailbox(account.id, name)

    server.call(go())


def test_reply_page_subject_threading_and_quote(mailserver: RunningServer) -> None:
    raw = (
        b"From: Carol <carol@example.test>\r\nTo: alice@example.test\r\nCc: bob@example.test\r\n"
        b"Subject: AW: SV: Hallo\r\nDate: Tue, 01 Oct 2024 10:00:00 +0200\r\n"
        b"Message-ID: <parent@example.test>\r\nIn-Reply-To: <root@example.test>\r\n"
        b"\r\nline one\r\n> said before\r\n-- \r\nCarol's signature\r\n"
    )
    uid = append(mailserver, ALICE, raw)
    inbox = box_id(mailserver, ALICE, "INBOX")
    client = login(mailserver)
    page = client.get(f"/compose?replyall={inbox}:{uid}").text
    # the localised reply markers go, one "Re: " comes (RFC 5322 3.6.5)
    assert field(page, "subject") == "Re: Hallo"
    # RFC 5322 3.6.4: no References in the parent, one In-Reply-To id: it starts References
    assert field(page, "in_reply_to") == "<parent@example.test>"
    assert field(page, "references") == "<root@example.test> <parent@example.test>"
    assert field(page, "to") == "Carol <carol@example.test>"
    assert field(page, "cc") == BOB  # reply-all without the user's own address
    text = body(page)
    assert "Carol wrote:" in text and "> line one\n>> said before" in text
    assert "signature" not in text  # RFC 3676 4.3: the signature is not quoted


def test_reply_to_own_sent_message_goes_to_its_recipients(mailserver: RunningServer) -> None:
    ensure_mailbox(mailserver, ALICE, "Sent")
    raw = (b"From: alice@example.test\r\nTo: Bob <bob@example.test>\r\nSubject: plan\r\n"
           b"Message-ID: <mine@example.test>\r\n\r\nthe plan\r\n")
    uid = append(mailserver, ALICE, raw, mailbox="Sent")
    sent = box_id(mailserver, ALICE, "Sent")
    client = login(mailserver)
    page = client.get(f"/compose?reply={sent}:{uid}").text
    assert field(page, "to") == "Bob <bob@example.test>"
    assert field(page, "subject") == "Re: plan"


def test_reply_to_html_only_message_quotes_readable_text(mailserver: RunningServer) -> None:
    raw = (
        "From: carol@example.test\r\nTo: alice@example.test\r\nSubject: html\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        "<html><body><p>Ein <b>schöner</b> Tag. <a href='https://example.test/x'>Link</a></p>"
        "<p>Zweiter Absatz</p></body></html>\r\n"
    ).encode()
    uid = append(mailserver, ALICE, raw)
    inbox = box_id(mailserver, ALICE, "INBOX")
    client = login(mailserver)
    text = body(client.get(f"/compose?reply={inbox}:{uid}").text)
    assert "> Ein schöner Tag. Link <https://example.test/x>\n>\n> Zweiter Absatz" in text


def test_forward_of_8bit_message_is_attached_readable(mailserver: RunningServer) -> None:
    raw = (b"From: J\xc3\xb6rg <carol@example.test>\r\nTo: alice@example.test\r\n"
           b"Subject: caf\xc3\xa9\r\nDate: Tue, 01 Oct 2024 10:00:00 +0200\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
           b"\r\nGr\xc3\xbc\xc3\x9fe\r\n")
    uid = append(mailserver, ALICE, raw)
    inbox = box_id(mailserver, ALICE, "INBOX")
    client = login(mailserver)
    page = client.get(f"/compose?forward={inbox}:{uid}").text
    assert field(page, "subject") == "Fwd: café"
    r = client.post("/compose", data={"csrf": csrf(client), "to": BOB, "subject": field(page, "subject"),
                                      "body": "FYI", "forward": field(page, "forward"), "action": "send"})
    assert r.status_code == 303, r.text
    (received,) = mailserver.messages(BOB)
    assert b"unknown-8bit" not in received
    msg = message_from_bytes(received, policy=default_policy)
    inner = next(msg.iter_attachments()).get_content()
    assert str(inner["From"]) == "Jörg <carol@example.test>" and inner["Subject"] == "café"
    assert inner.get_content().rstrip() == "Grüße"


def test_addresses_read_as_text_on_message_and_reply_pages(mailserver: RunningServer) -> None:
    # a name in raw UTF-8 (RFC 6532) is shown and offered for editing as text,
    # not as RFC 2047 encoded words
    raw = (b"From: J\xc3\xb6rg <carol@example.test>\r\nTo: alice@example.test\r\nSubject: hi\r\n"
           b"\r\nhello\r\n")
    uid = append(mailserver, ALICE, raw)
    inbox = box_id(mailserver, ALICE, "INBOX")
    client = login(mailserver)
    r = client.get(f"/box/{inbox}/msg/{uid}")
    assert r.status_code == 200 and "Jörg" in r.text
    assert field(client.get(f"/compose?reply={inbox}:{uid}").text, "to") == "Jörg <carol@example.test>"


# An 8-bit body without a charset parameter, as swaks sends it: UTF-8 octets
# read as UTF-8, other octets as Windows-1252 (what Thunderbird and Gmail do).
UNDECLARED = [
    (b"Sch\xc3\xb6ne Gr\xc3\xbc\xc3\x9fe \xe2\x82\xac", "Schöne Grüße €"),
    (b"Sch\xf6ne Gr\xfc\xdfe \x80", "Schöne Grüße €"),
]


@pytest.mark.parametrize(("octets", "text"), UNDECLARED)
def test_8bit_body_without_charset_reads_as_text(mailserver: RunningServer, octets: bytes, text: str) -> None:
    raw = (b"From: Carol <carol@example.test>\r\nTo: alice@example.test\r\nSubject: gruss\r\n"
           b"Date: Tue, 01 Oct 2024 10:00:00 +0200\r\nMessage-ID: <g@example.test>\r\n\r\n" + octets + b"\r\n")
    uid = append(mailserver, ALICE, raw)
    inbox = box_id(mailserver, ALICE, "INBOX")
    client = login(mailserver)
    page = html.unescape(client.get(f"/box/{inbox}/msg/{uid}/body").text)
    assert text in page and "\ufffd" not in page
    reply = body(client.get(f"/compose?reply={inbox}:{uid}").text)
    assert f"> {text}" in reply


def test_message_without_date_shows_and_quotes_the_arrival_time(mailserver: RunningServer) -> None:
    raw = (b"From: Carol <carol@example.test>\r\nTo: alice@example.test\r\nSubject: undated\r\n"
           b"Message-ID: <nodate@example.test>\r\n\r\nno date here\r\n")
    uid = append(mailserver, ALICE, raw)
    inbox = box_id(mailserver, ALICE, "INBOX")
    client = login(mailserver)
    page = html.unescape(client.get(f"/box/{inbox}/msg/{uid}").text)
    year = str(__import__("datetime").date.today().year)
    date_row = re.search(r"Date</(?:th|dt)>\s*<(?:td|dd)[^>]*>([^<]*)<", page)
    assert date_row is not None and year in date_row.group(1), page[:3000]
    reply = body(client.get(f"/compose?reply={inbox}:{uid}").text)
    assert "On , " not in reply and re.search(rf"On \w{{3}}, \d\d \w{{3}} {year} \d\d:\d\d, Carol wrote:", reply), reply


def test_message_and_conversation_pages_show_dates_in_the_persons_zone_and_format(
        mailserver: RunningServer) -> None:
    """The Date field in the zone and date format of the settings (web/prefs.py),
    as the list shows its dates; the field as written (the sender's offset)
    in the title."""
    def mail(mid: str, date: str, refs: str = "") -> bytes:
        head = (f"From: Carol <{CAROL}>\r\nTo: {ALICE}\r\nSubject: zones\r\nMessage-ID: <{mid}>\r\n"
                f"Date: {date}\r\n")
        if refs:
            head += f"In-Reply-To: <{refs}>\r\nReferences: <{refs}>\r\n"
        return (head + "\r\nhello\r\n").encode()

    first = append(mailserver, ALICE, mail("z1@example.test", "Sat, 05 Dec 2026 22:41:49 +0000"))
    append(mailserver, ALICE, mail("z2@example.test", "Sun, 06 Dec 2026 09:15:00 -0500", "z1@example.test"))
    inbox = box_id(mailserver, ALICE, "INBOX")
    client = login(mailserver)

    def date_of(page: str) -> tuple[str, str]:
        found = re.search(r'<dt>Date</dt><dd title="([^"]*)">([^<]*)<', page)
        assert found is not None, page[:3000]
        return html.unescape(found.group(1)), found.group(2)

    def set_prefs(**values: object) -> None:
        async def go() -> None:
            account = await mailserver.store.get_account(ALICE)
            await mailserver.store.set_settings(account.id, values)

        mailserver.call(go())

    set_prefs(timezone="Asia/Tokyo", date_format="iso")
    page = client.get(f"/box/{inbox}/msg/{first}").text
    assert date_of(page) == ("Sat, 05 Dec 2026 22:41:49 +0000", "2026-12-06 07:41")
    conv = client.get(f"/box/{inbox}/conv/{first}").text
    times = re.findall(r'<time title="([^"]*)">([^<]*)</time>', conv)
    assert times == [("Sat, 05 Dec 2026 22:41:49 +0000", "2026-12-06 07:41"),
                     ("Sun, 06 Dec 2026 09:15:00 -0500", "2026-12-06 23:15")], times

    set_prefs(timezone="America/New_York", date_format="mdy")
    assert date_of(client.get(f"/box/{inbox}/msg/{first}").text)[1] == "12/05/2026 5:41 PM"
    # the list's own format ("auto": a time, a day or a date) says it all on a page
    set_prefs(timezone="Europe/Berlin", date_format="auto")
    assert date_of(client.get(f"/box/{inbox}/msg/{first}").text)[1] == "Sat 05 Dec 2026 23:41"
    # a Date no calendar can read is shown as written
    odd = append(mailserver, ALICE, mail("z3@example.test", "sometime next week"))
    assert date_of(client.get(f"/box/{inbox}/msg/{odd}").text) == ("sometime next week", "sometime next week")
