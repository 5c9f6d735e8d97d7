"""The HTML signature preview of the compose page in a real browser
(Playwright + Debian's chromium): it shows the From identity's sanitised
signature under the text and follows the From field as it changes, at
phone and desktop sizes. Screenshots go to docs/screenshots/compose-signature-*.png."""

from __future__ import annotations

from typing import Any

import pytest

from ..conftest import RunningServer
from ..waiting import wait_until
from .webtools import log_in, new_page, screenshot

ALICE, ALIAS = "alice@example.test", "alice.smith@example.test"


def identities(server: RunningServer) -> None:
    async def go() -> None:
        await server.store.add_alias(ALIAS, [ALICE])
        account = await server.store.get_account(ALICE)
        await server.store.set_settings(account.id, {"identities": [
            {"name": "Alice", "address": ALICE, "signature_text": "",
             "signature_html": '<b>Alice at home</b><img src="x" onerror="window.__ran = 1">'},
            {"name": "Alice Smith", "address": ALIAS, "signature_text": "",
             "signature_html": "<p><i>Alice Smith</i>, Example Inc.</p><script>window.__ran = 2</script>"},
            {"name": "Plain", "address": "plain@example.test", "signature_text": "plain only"},
        ]})

    server.call(go())


@pytest.mark.parametrize(("label", "width", "height"), [("390", 390, 844), ("1440", 1440, 900)])
def test_signature_preview_follows_the_from_field(browser: Any, mailserver: RunningServer, label: str,
                                                  width: int, height: int) -> None:
    identities(mailserver)
    page = new_page(browser, mailserver, width, height)
    log_in(page, ALICE)
    page.goto("/compose")
    preview = page.locator("#signature-preview")
    assert preview.is_visible() and preview.locator("b").inner_text() == "Alice at home"
    page.fill("#from", f"Alice Smith <{ALIAS}>")
    wait_until(lambda: "Example Inc." in preview.inner_text(), what="the alias's signature")
    assert "Alice at home" not in preview.inner_text() and preview.locator("i").inner_text() == "Alice Smith"
    screenshot(page, f"compose-signature-{label}")
    page.fill("#from", "plain@example.test")
    wait_until(lambda: not preview.is_visible(), what="no HTML signature for this identity")
    page.fill("#from", ALICE.upper())
    wait_until(lambda: preview.is_visible() and "Alice at home" in preview.inner_text(), what="the first again")
    # nothing of the stored HTML ran
    assert page.evaluate("window.__ran === undefined")
    box = preview.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 1
    page.context.close()
