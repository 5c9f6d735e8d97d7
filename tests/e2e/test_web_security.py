"""Webmail security in a real browser: XSS vectors in HTML bodies, headers
(subject, display names) and attachment names never execute; a cross-origin
page cannot make a logged-in user's browser change anything (CSRF)."""

from __future__ import annotations

import base64
import http.server
import threading
from typing import Any

import pytest

from mailyard.web.render import sanitize_html

from ..conftest import RunningServer
from ..waiting import wait_until
from .webtools import base_url, log_in, new_page

ALICE = "alice@example.test"
JS = "parent.__xss=1"

# HTML body vectors; each sets window.__xss of the page (or of the frame) if it runs.
HTML_VECTORS = [
    f"<script>{JS}</script>",
    f"<img src=x onerror=\"{JS}\">",
    f"<img/src=x/onerror={JS}>",
    f"<svg onload=\"{JS}\"></svg>",
    f"<svg><script>{JS}</script></svg>",
    f"<body onload=\"{JS}\">",
    f"<iframe src=\"javascript:{JS}\"></iframe>",
    f"<iframe srcdoc=\"<script>{JS}</script>\"></iframe>",
    f"<a href=\"javascript:{JS}\">link 1</a>",
    f"<a href=\"JaVaScRiPt:{JS}\">link 2</a>",
    f"<a href=\"&#106;avascript:{JS}\">link 3</a>",
    f"<a href=\"java&#x09;script:{JS}\">link 4</a>",
    f"<form action=\"javascript:{JS}\"><input type=submit value=go></form>",
    f"<input autofocus onfocus=\"{JS}\">",
    f"<details open ontoggle=\"{JS}\"><summary>x</summary></details>",
    f"<video><source onerror=\"{JS}\"></video>",
    f"<audio src=x onerror=\"{JS}\"></audio>",
    f"<object data=\"javascript:{JS}\"></object>",
    f"<embed src=\"javascript:{JS}\">",
    f"<math><mtext><table><mglyph><style><img src=x onerror=\"{JS}\">",
    f"<noscript><p title=\"</noscript><img src=x onerror={JS}>\">",
    f"<style>@import 'javascript:{JS}';</style><p>styled</p>",
    f"<div style=\"background:url(javascript:{JS})\">bg</div>",
    f"<div style=\"width: expression({JS})\">expr</div>",
    f"<meta http-equiv=\"refresh\" content=\"0;url=javascript:{JS}\">",
    f"<base href=\"javascript:{JS}//\"><a href=\"x\">rel</a>",
    f"<link rel=stylesheet href=\"javascript:{JS}\">",
    f"<table background=\"javascript:{JS}\"><tr><td>t</td></tr></table>",
    f"<scr<script>ipt>{JS}</script>",
    f"<marquee onstart=\"{JS}\">m</marquee>",
    f"\"><script>{JS}</script>",
    f"<template><script>{JS}</script></template>",
    f"<a href=\"data:text/html,<script>{JS}</script>\">data link</a>",
    f"<img src=\"data:image/svg+xml,<svg xmlns='http://www.w3.org/2000/svg' onload='{JS}'/>\">",
    f"<svg><a xlink:href=\"javascript:{JS}\"><text x=0 y=20>svg link</text></a></svg>",
    f"<!--<img src=\"--><img src=x onerror={JS}//\">",
    f"<select><style></select><img src=x onerror={JS}></style>",
    f"<xmp><img src=x onerror={JS}></xmp>",
    f"<div onmouseover=\"{JS}\" style=\"width:100%;height:200px\">hover</div>",
    f"<img src=\"x` `<script>{JS}</script>\"` `>",
    f"<a href=\"vbscript:{JS}\">vb</a>",
    f"<button formaction=\"javascript:{JS}\">b</button>",
]

HEADER_JS = "top.__xss=1"


def _b64word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


# (Subject, From display name, attachment filename) triples, raw header text.
HEADER_VECTORS = [
    (f"<img src=x onerror={HEADER_JS}>", f"\"<script>{HEADER_JS}</script>\"", f"\"<img src=x onerror={HEADER_JS}>.txt\""),
    (f"\"><script>{HEADER_JS}</script>", _b64word(f"<svg onload={HEADER_JS}>"),
     f"*=utf-8''%3Cscript%3E{HEADER_JS.replace('=', '%3D')}%3C%2Fscript%3E.html"),
    (_b64word(f"<svg onload={HEADER_JS}>"), f"\"</td><img src=x onerror={HEADER_JS}>\"",
     _b64word(f"\"><img src=x onerror={HEADER_JS}>.png")),
    (f"{{{{7*7}}}} <iframe src=javascript:{HEADER_JS}>", "\"' onmouseover='top.__xss=1\"",
     "\"javascript:top.__xss=1\""),
]


def html_message(i: int, html: str) -> bytes:
    return (
        f"From: Sender <sender@example.test>\r\nTo: {ALICE}\r\nSubject: vector {i:02d}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain\r\n"
        "--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        f"<html><body><p>vector {i}</p>{html}<p>end</p></body></html>\r\n--b--\r\n"
    ).encode()


def header_message(i: int, subject: str, name: str, filename: str) -> bytes:
    param = f"filename{filename}" if filename.startswith("*=") else f"filename={filename}"
    return (
        f"From: {name} <evil{i}@example.test>\r\nTo: {name} <{ALICE}>\r\nSubject: {subject}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        f"--b\r\nContent-Type: text/plain\r\n\r\n<script>{HEADER_JS}</script> plain text body\r\n"
        f"--b\r\nContent-Type: text/html; name=x.html\r\nContent-Disposition: attachment; {param}\r\n\r\n"
        f"<script>{HEADER_JS}</script>\r\n--b--\r\n"
    ).encode()


def append_all(server: RunningServer, messages: list[bytes]) -> tuple[int, list[int]]:
    async def go() -> tuple[int, list[int]]:
        account = await server.store.get_account(ALICE)
        box = await server.store.get_mailbox(account.id, "INBOX")
        return box.id, [await server.store.append(box, m) for m in messages]

    return server.call(go())


def assert_not_executed(page: Any) -> None:
    for frame in page.frames:
        assert frame.evaluate("window.__xss === undefined"), f"script ran in {frame.url}"


def test_sanitiser_output_has_no_active_content() -> None:
    assert len(HTML_VECTORS) >= 30
    for html in HTML_VECTORS:
        safe, _ = sanitize_html(html, "/box/1/msg/1", {}, allow_remote=True)
        low = safe.lower()
        for bad in ("<script", "javascript:", "vbscript:", " on", "<iframe", "<object", "<embed",
                    "<form", "<base", "<meta", "<link", "<style", "<svg", "expression(", "formaction",
                    "data:text"):
            if bad == " on":
                import re

                assert not re.search(r"<[^>]*\son\w+\s*=", low), (html, safe)
            else:
                assert bad not in low, (html, safe)


def test_detection_works(browser: Any) -> None:
    """Control: the same payloads, unsanitised in a plain page, do set the flag."""
    page = browser.new_page()
    page.set_content(HTML_VECTORS[1] + HTML_VECTORS[3])
    page.wait_for_function("window.__xss === 1")
    page.close()


def test_xss_vectors_never_execute(browser: Any, mailserver: RunningServer) -> None:
    messages = [html_message(i, v) for i, v in enumerate(HTML_VECTORS)]
    messages += [header_message(i, *v) for i, v in enumerate(HEADER_VECTORS)]
    box, uids = append_all(mailserver, messages)
    assert len(HTML_VECTORS) + 3 * len(HEADER_VECTORS) >= 30
    page = new_page(browser, mailserver)
    popups: list[Any] = []
    page.context.on("page", lambda p: popups.append(p))
    log_in(page, ALICE)
    page.goto(f"/box/{box}")
    # The short waits below are not an ordering: an effect that must never
    # happen cannot be waited for, so handlers that fire late (animations,
    # timers) get a moment before the check; test_detection_works is the
    # control that a script that does run is seen.
    page.wait_for_timeout(300)
    assert_not_executed(page)
    for n, uid in enumerate(uids):
        for remote in ("", "?remote=1") if n < len(HTML_VECTORS) else ("",):
            page.goto(f"/box/{box}/msg/{uid}{remote}")
            frame = next(f for f in page.frames if "/body" in f.url)
            frame.wait_for_load_state()
            # follow every link and press every button the body offers
            for link in frame.locator("a, button, input[type=submit], summary").all():
                try:
                    link.click(timeout=300, force=True)
                except Exception:
                    pass  # not clickable: fine
            page.mouse.move(200, 500)
            page.wait_for_timeout(100)
            assert_not_executed(page)
            for popup in popups:
                try:
                    assert popup.evaluate("window.__xss === undefined")
                except AssertionError:
                    raise
                except Exception:
                    pass  # a closed or navigated-away popup
                popup.close()
            popups.clear()
        if n >= len(HTML_VECTORS):
            # the attachment links and the full headers view are shown safely too
            page.goto(f"/box/{box}/msg/{uid}?headers=1")
            page.wait_for_timeout(50)
            assert_not_executed(page)
    # attachments opened directly are downloads under a sandboxing CSP, never pages
    page.goto(f"/box/{box}?sort=subject")
    assert_not_executed(page)
    page.context.close()


class _EvilSite(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        t = self.target
        body = f"""<!doctype html><html><body>
<form id=f1 method=post action="{t}/box/BOX/action"><input name=uid value=UID><input name=action value=delete></form>
<form id=f2 method=post action="{t}/folders" target=w2><input name=action value=create><input name=name value=Pwned></form>
<iframe name=w2></iframe>
<script>
fetch("{t}/box/BOX/action", {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"Content-Type": "application/x-www-form-urlencoded"}}, body: "uid=UID&action=delete"}});
document.getElementById("f2").submit();
setTimeout(function () {{ document.getElementById("f1").submit(); }}, 300);
</script></body></html>""".replace("BOX", str(self.server.box)).replace("UID", str(self.server.uid))  # type: ignore[attr-defined]
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_csrf_from_another_origin_fails(browser: Any, mailserver: RunningServer) -> None:
    box, (uid,) = append_all(mailserver, [html_message(0, "<p>keep me</p>")])
    handler = type("Evil", (_EvilSite,), {"target": base_url(mailserver)})
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    evil.box, evil.uid = box, uid  # type: ignore[attr-defined]
    thread = threading.Thread(target=evil.serve_forever, daemon=True)
    thread.start()
    try:
        page = new_page(browser, mailserver)
        log_in(page, ALICE)
        responses: list[int] = []
        ended: list[str] = []  # POSTs answered or failed (a response the browser blocked)
        page.on("response", lambda r: responses.append(r.status) if r.request.method == "POST" else None)
        for event in ("requestfinished", "requestfailed"):
            page.on(event, lambda r: ended.append(r.url) if r.method == "POST" else None)
        page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        # The evil page's three POSTs (fetch, the form into the iframe, the
        # form submitted after 300 ms) have all been sent and ended.
        wait_until(lambda: len(ended) >= 3, 15, what=lambda: f"the three POSTs to end, ended: {ended}",
                   pause=lambda seconds: page.wait_for_timeout(seconds * 1000))
        assert responses and all(status in (401, 403) for status in responses), responses
        # nothing changed: the message is still in the INBOX, no folder was created
        assert len(mailserver.messages(ALICE)) == 1

        async def names() -> list[str]:
            account = await mailserver.store.get_account(ALICE)
            return [b.name for b in await mailserver.store.list_mailboxes(account.id)]

        assert "Pwned" not in mailserver.call(names())
        page.context.close()
    finally:
        evil.shutdown()
        evil.server_close()


@pytest.mark.parametrize("vector", HTML_VECTORS[:3])
def test_plain_text_body_is_escaped(vector: str) -> None:
    from mailyard.web.render import build_view

    view = build_view(f"Subject: t\r\n\r\n{vector}\r\n".encode())
    assert view.html is None and vector in (view.text or "")
