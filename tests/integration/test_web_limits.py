"""Webmail states the real attachment limit (attachments grow by a third in
base64), checks it before the upload (the form's file input carries it for
app.js) and on the server, and keeps chosen files in a draft when a form is
refused (a browser cannot refill a file input). httpx against a real server."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from email import message_from_bytes
from email.policy import default as default_policy

import pytest

from tests.conftest import RunningServer

from .test_web_http import ALICE, BOB, csrf, login

httpx = pytest.importorskip("httpx")

MAX = 1024 * 1024  # smtp.max_message_size for these tests
# (MAX - 64 KiB of room for header and text) * 57 / 78: base64 lines of 76 + CRLF
LIMIT = (MAX - 64 * 1024) * 57 // 78


@pytest.fixture
def web(make_server: Callable[..., RunningServer]) -> RunningServer:
    def small(cfg) -> None:  # noqa: ANN001
        cfg.smtp.max_message_size = MAX

    return make_server(configure=small)


def text(r: httpx.Response) -> str:
    return html.unescape(r.text)


def test_compose_form_states_the_attachment_limit(web: RunningServer) -> None:
    page = text(login(web).get("/compose"))
    assert "(at most 701.5 KB in all)" in page, LIMIT
    assert f'data-max-bytes="{LIMIT}"' in page


def test_attachments_over_the_limit_are_refused_with_the_sizes(web: RunningServer) -> None:
    client = login(web)
    # under the message size, over what fits once encoded
    data = bytes(range(256)) * (800 * 4)  # 800 KB
    r = client.post("/compose", data={"csrf": csrf(client), "to": BOB, "subject": "big", "body": "x",
                                      "action": "send"},
                    files={"attachment": ("big.bin", data, "application/octet-stream")})
    assert r.status_code == 400
    page = text(r)
    assert ("The attachments are 800 KB in all; at most 701.5 KB fit: a message may have 1 MB, "
            "and attachments grow by a third when sent.") in page, page
    assert "The chosen files were not kept; choose them again." in page
    assert web.messages(BOB) == []
    # just under the limit goes
    r = client.post("/compose", data={"csrf": csrf(client), "to": BOB, "subject": "fits", "body": "x",
                                      "action": "send"},
                    files={"attachment": ("fits.bin", b"\x00" * (LIMIT - 10), "application/octet-stream")})
    assert r.status_code == 303, text(r)
    assert len(web.messages(BOB)) == 1


def test_refused_form_keeps_the_chosen_files_in_a_draft(web: RunningServer) -> None:
    client = login(web)
    r = client.post("/compose", data={"csrf": csrf(client), "to": "not an address", "subject": "keep me",
                                      "body": "the text", "action": "send"},
                    files={"attachment": ("report.pdf", b"%PDF-1.4 data", "application/pdf")})
    assert r.status_code == 400
    page = text(r)
    assert "Your attachments were kept: this message is saved in Drafts" in page, page
    assert re.search(r'name="keep" value="[^"]+" checked> report.pdf', page), page
    uid = re.search(r'name="draft_uid"[^>]*value="(\d+)"', page) or re.search(r'value="(\d+)"[^>]*name="draft_uid"', page)
    assert uid is not None
    (draft,) = web.messages(ALICE, "Drafts")
    msg = message_from_bytes(draft, policy=default_policy)
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "report.pdf" and att.get_content() == b"%PDF-1.4 data"
    # sending the corrected form with the kept attachment works and removes the draft
    spec = re.search(r'name="keep" value="([^"]+)"', page).group(1)
    r = client.post("/compose", data={"csrf": csrf(client), "to": BOB, "subject": "keep me", "body": "the text",
                                      "draft_uid": uid.group(1), "keep": spec, "action": "send"})
    assert r.status_code == 303, text(r)
    (received,) = web.messages(BOB)
    (att,) = list(message_from_bytes(received, policy=default_policy).iter_attachments())
    assert att.get_filename() == "report.pdf"
    assert web.messages(ALICE, "Drafts") == []
