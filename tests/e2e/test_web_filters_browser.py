"""The Filters and Vacation pages in a real browser (Playwright + Debian's
chromium), at desktop and phone widths: a rule added with the builder is
listed and shown as Sieve; the vacation form saves. Screenshots go to
docs/screenshots/ (filters.png, filters-phone.png, vacation.png)."""

from __future__ import annotations

from typing import Any

from ..conftest import RunningServer
from .webtools import log_in, new_page, screenshot

ALICE = "alice@example.test"


def test_filters_and_vacation_pages(browser: Any, mailserver: RunningServer) -> None:
    page = new_page(browser, mailserver, 1440, 900)
    log_in(page, ALICE)
    page.click("#filters-link")
    page.wait_for_url("**/filters")
    page.select_option("#rule-field", "subject")
    page.select_option("#rule-op", "contains")
    page.fill("#rule-value", "invoice")
    page.select_option("#rule-what", "fileinto")
    page.fill("#rule-arg", "Bills")
    page.click("#add-rule")
    page.wait_for_selector("#filter-rules li")
    assert "Move to folder" in page.inner_text("#filter-rules")
    assert 'fileinto :create "Bills";' in page.input_value("#raw-script")
    screenshot(page, "filters", full_page=True)
    page.click("#vacation-link")
    page.wait_for_url("**/vacation")
    page.check("#vacation-on")
    page.fill("#vacation-start", "2026-12-20")
    page.fill("#vacation-end", "2027-01-03")
    page.fill("#vacation-subject", "Away until January")
    page.fill("#vacation-text", "I am away and will answer after the holidays.")
    page.click("#save-vacation")
    page.wait_for_selector("p.notice")
    assert page.is_checked("#vacation-on")
    screenshot(page, "vacation")
    phone = new_page(browser, mailserver, 390, 844)
    log_in(phone, ALICE)
    phone.goto("/filters")
    phone.wait_for_selector("#filter-rules li")
    screenshot(phone, "filters-phone", full_page=True)
