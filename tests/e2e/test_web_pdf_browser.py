"""A PDF attachment previewed in the browser (Playwright with Debian's
chromium) at 1440x900 and 390x844: the read page's frame, sandboxed without
scripts, shows the PDF's pages as images drawn by the server
(web/pdfpreview.py); screenshots go to docs/screenshots/pdf-preview-*.png."""

from __future__ import annotations

from typing import Any

import pytest

from mailyard.message.compose import Attachment, compose, to_bytes

from ..conftest import RunningServer, require_program
from ..integration.test_web_http import ALICE, append, box_id
from ..pdfsamples import text_pdf
from .webtools import log_in, new_page, screenshot

VIEWPORTS = [(1440, 900), (390, 844)]


@pytest.mark.parametrize(("width", "height"), VIEWPORTS)
def test_pdf_preview_shows_page_images(browser: Any, mailserver: RunningServer, width: int, height: int) -> None:
    require_program("pdftoppm", "poppler-utils")
    raw = to_bytes(compose("Carol <carol@example.test>", ALICE, subject="Quarterly report",
                           text="The report is attached.",
                           attachments=[Attachment("report.pdf", text_pdf(["Quarterly report", "Page two"]),
                                                   "application/pdf")]))
    uid = append(mailserver, ALICE, raw)
    base = f"/box/{box_id(mailserver, ALICE, 'INBOX')}/msg/{uid}"
    page = new_page(browser, mailserver, width, height)
    log_in(page, ALICE)
    page.goto(base)
    frame_el = page.locator("figure.preview iframe.pdf")
    assert frame_el.get_attribute("sandbox") == "allow-same-origin"  # no allow-scripts
    frame_el.scroll_into_view_if_needed()
    frame = page.frame_locator("figure.preview iframe.pdf")
    images = frame.locator("img")
    images.first.wait_for(state="visible")
    assert images.count() == 2
    assert frame.locator("figcaption").first.inner_text() == "page 1 of 2"
    # both pages decoded: real images, as wide as the frame allows
    for n in range(2):
        images.nth(n).scroll_into_view_if_needed()
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=images.nth(n).element_handle())
        assert images.nth(n).evaluate("(img) => [img.naturalWidth, img.naturalHeight]") == [848, 1200]
    frame_box = frame_el.bounding_box()
    img_box = images.first.bounding_box()
    assert frame_box is not None and img_box is not None
    assert img_box["width"] <= frame_box["width"] and img_box["width"] > 0.5 * frame_box["width"]
    assert page.locator("figure.preview a.pdf-download").get_attribute("href") == f"{base}/part/2"
    # the frame's first page at its top; the preview with its links in the picture
    frame.locator("html").evaluate("(html) => html.ownerDocument.defaultView.scrollTo(0, 0)")
    page.evaluate("() => window.scrollTo(0, 0)")
    if width > 800:  # the reading pane scrolls: the figure at its bottom
        page.locator("figure.preview").evaluate("(f) => f.scrollIntoView({block: 'end'})")
    screenshot(page, f"pdf-preview-{width}", full_page=width <= 800)
