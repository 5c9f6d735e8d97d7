"""Helpers for the webmail browser tests: Playwright driving Debian's chromium.

Playwright must never download a browser of its own: it is launched with
``executable_path=/usr/bin/chromium``. Without chromium (or the playwright
package) the tests are skipped locally and fail in CI (``require_program``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import USERS, RunningServer, require_program

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def playwright_api() -> Any:
    try:
        from playwright import sync_api
    except ImportError:
        message = "the playwright package is not installed (pip install -e '.[test]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return sync_api


@pytest.fixture(scope="package", name="browser")
def browser_fixture() -> Iterator[Any]:
    """One chromium for the whole tests/e2e package (tests/e2e/conftest.py
    provides it; a launch costs seconds): each test opens its own context,
    so no cookies or storage cross between tests."""
    path = require_program("chromium", "chromium")
    api = playwright_api()
    with api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def base_url(server: RunningServer) -> str:
    return f"http://127.0.0.1:{server.port('http')}"


def new_page(browser: Any, server: RunningServer, width: int = 1200, height: int = 860) -> Any:
    """A page of a new browser context; the default size shows the classic
    layout (a message opens as a page of its own; three panes start at 1280 px)."""
    context = browser.new_context(viewport={"width": width, "height": height}, base_url=base_url(server))
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.on("dialog", lambda d: d.accept())
    return page


def log_in(page: Any, user: str) -> None:
    page.goto("/login")
    page.fill("#username", user)
    page.fill("#password", USERS[user])
    page.click("#login-submit")
    page.wait_for_url(re.compile(r"/box/\d+"))


def screenshot(page: Any, name: str, full_page: bool = False) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)
