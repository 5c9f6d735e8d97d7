"""The print view in a browser: the message body cannot draw over the real
header block (web/static/print.css contains it)."""

from __future__ import annotations

from typing import Any

from mailyard.message.compose import compose, to_bytes

from ..conftest import RunningServer
from ..integration.test_web_http import ALICE, append, box_id
from .webtools import log_in, new_page

FAKE = ('<div style="margin-top:-400px;background-color:#fff;display:block">'
        '<table><tr><td>From</td><td>ceo@example.test</td></tr><tr><td>Subject</td><td>Wire the money</td></tr>'
        '</table>' + "<p>cover</p>" * 30 + "</div>")


def test_the_body_cannot_cover_the_header_block(browser: Any, mailserver: RunningServer) -> None:
    raw = to_bytes(compose("Mallory <mallory@remote.test>", ALICE, subject="the real subject", text="x",
                           html=FAKE))
    uid = append(mailserver, ALICE, raw)
    inbox = box_id(mailserver, ALICE, "INBOX")
    page = new_page(browser, mailserver)
    log_in(page, ALICE)
    page.goto(f"/box/{inbox}/msg/{uid}/print")
    assert page.locator("#print-body > div").count() == 1  # the body, its negative margin kept by the sanitiser
    # what the user sees at the header cells is the header itself, never the body
    for selector in ("h1", "table.hdrs th", "table.hdrs td"):
        seen = page.evaluate("""(sel) => {
            const el = document.querySelector(sel);
            const r = el.getBoundingClientRect();
            const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
            return hit && hit.closest('#print-body') ? 'body' : 'header';
        }""", selector)
        assert seen == "header", selector
    print("the header block stays on top of a body with margin-top:-400px")
