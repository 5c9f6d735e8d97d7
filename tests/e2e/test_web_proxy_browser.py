"""Chromium (Playwright) logs into the webmail over HTTPS through nginx.

nginx connects to mailyard from 127.0.0.2 (``proxy_bind``), the only
trusted proxy; the browser is at 127.0.0.1. The login events (and so the
login throttle, which keys on the same address) name the browser's address,
not the proxy's, and the session cookie is Secure."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from ..conftest import USERS
from ..integration.nginx import Nginx
from .webtools import (  # noqa: F401
    CHROMIUM_ARGS,
    playwright_api,
)

ALICE = "alice@example.test"


def test_browser_login_through_nginx_sees_the_browser_address(
        browser: Any, make_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def configure(cfg) -> None:  # noqa: ANN001
        cfg.http.trusted_proxies = ["127.0.0.2"]

    server = make_server(configure=configure)
    nginx = Nginx(tmp_path / "nginx", server.port("http"), source="127.0.0.2")
    caplog.set_level(logging.INFO, logger="mailyard.auth")
    context = browser.new_context(base_url=f"https://127.0.0.1:{nginx.port}", ignore_https_errors=True)
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        page.goto("/login")
        page.fill("#username", ALICE)
        page.fill("#password", "not-the-password")
        page.click("#login-submit")
        page.wait_for_selector("#login-error")
        page.fill("#username", ALICE)
        page.fill("#password", USERS[ALICE])
        page.click("#login-submit")
        page.wait_for_url(re.compile(r"/box/\d+"))
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["mailyard_session"]["secure"] is True
    finally:
        context.close()
        nginx.stop()
    failed = [str(r.msg) for r in caplog.records if str(r.msg).startswith("login_failed ")]
    logins = [str(r.msg) for r in caplog.records if str(r.msg).startswith("login ")]
    assert failed and " ip=127.0.0.1 " in failed[0], failed
    assert logins == [f"login proto=web ip=127.0.0.1 tls=yes user={ALICE}"], logins
