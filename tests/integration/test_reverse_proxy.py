"""Webmail behind a reverse proxy: Debian's nginx, started on loopback with
the README's configuration (TLS on the front, plain HTTP to mailyard), in
front of a server with ``[http] trusted_proxies = ["127.0.0.1"]``.

The browsers connect from other loopback addresses (127.0.0.5, ...), so the
address nginx puts in X-Forwarded-For is distinguishable from the proxy's.
Checked: the login throttle and the log events see the browser's address;
a browser cannot choose its address by sending its own X-Forwarded-For,
neither through nginx nor directly; the cookie is Secure and HSTS is sent
because the browser used HTTPS (X-Forwarded-Proto)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import USERS, RunningServer
from tests.integration.nginx import Nginx

httpx = pytest.importorskip("httpx")

ALICE = "alice@example.test"
IP_MAX_FAILURES = 3

@pytest.fixture
def proxied(make_server: Callable[..., RunningServer], tmp_path: Path) -> Iterator[tuple[RunningServer, int]]:
    def configure(cfg) -> None:  # noqa: ANN001
        cfg.http.trusted_proxies = ["127.0.0.1"]
        cfg.auth.base_delay = 0.001
        cfg.auth.max_delay = 0.002
        cfg.auth.ip_max_failures = IP_MAX_FAILURES

    server = make_server(configure=configure)
    nginx = Nginx(tmp_path / "nginx", server.port("http"))
    try:
        yield server, nginx.port
    finally:
        nginx.stop()


def browser(base: str, source: str, **headers: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source, verify=False)
    return httpx.Client(base_url=base, transport=transport, follow_redirects=False, timeout=30,
                        headers={"Host": "mail.example.test", **headers})


def try_login(client: httpx.Client, user: str, password: str) -> httpx.Response:
    token = re.search(r'name="login_token" value="([^"]+)"', client.get("/login").text).group(1)
    return client.post("/login", data={"username": user, "password": password, "login_token": token})


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [str(r.msg) for r in caplog.records if str(r.msg).startswith(name + " ")]


def test_throttle_and_logs_see_the_browser_behind_nginx(
        proxied: tuple[RunningServer, int], caplog: pytest.LogCaptureFixture) -> None:
    server, port = proxied
    caplog.set_level(logging.INFO, logger="mailyard.auth")
    front = f"https://127.0.0.1:{port}"
    # A browser at 127.0.0.5 fails logins (a different unknown name each time:
    # only the address limit is reached) until its address is locked out.
    with browser(front, "127.0.0.5") as b:
        for i in range(IP_MAX_FAILURES):
            assert try_login(b, f"nobody{i}@example.test", "wrong").status_code == 401
        r = try_login(b, ALICE, USERS[ALICE])
        assert r.status_code == 429, r.text
    failed = events(caplog, "login_failed")
    assert failed and all(" ip=127.0.0.5 " in e for e in failed), failed
    # Another browser behind the same proxy is not locked out, even when it
    # claims the locked address; its own address is what counts.
    with browser(front, "127.0.0.6", **{"X-Forwarded-For": "203.0.113.50"}) as b:
        r = try_login(b, ALICE, USERS[ALICE])
        assert r.status_code == 303, r.text
        cookie = [v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("mailyard_session=")]
        assert cookie and "Secure" in cookie[0], cookie  # the browser used HTTPS
        home = b.get("/", follow_redirects=True)
        assert home.status_code == 200 and "INBOX" in home.text
        assert home.headers.get("strict-transport-security") == "max-age=31536000"
    assert events(caplog, "login")[-1] == f"login proto=web ip=127.0.0.6 tls=yes user={ALICE}"
    with browser(front, "127.0.0.7", **{"X-Forwarded-For": "127.0.0.5"}) as b:
        assert try_login(b, ALICE, USERS[ALICE]).status_code == 303
    assert events(caplog, "login")[-1] == f"login proto=web ip=127.0.0.7 tls=yes user={ALICE}"


def test_headers_from_an_untrusted_address_are_ignored(
        proxied: tuple[RunningServer, int], caplog: pytest.LogCaptureFixture) -> None:
    server, _port = proxied
    caplog.set_level(logging.INFO, logger="mailyard.auth")
    direct = f"http://127.0.0.1:{server.port('http')}"
    # Straight to mailyard from 127.0.0.9 (not a trusted proxy): the headers
    # claim another address and HTTPS; neither is believed.
    with browser(direct, "127.0.0.9", **{"X-Forwarded-For": "198.51.100.99",
                                          "X-Forwarded-Proto": "https"}) as b:
        assert try_login(b, "nobody@example.test", "wrong").status_code == 401
        r = try_login(b, ALICE, USERS[ALICE])
        assert r.status_code == 303
        cookie = [v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("mailyard_session=")]
        assert "Secure" not in cookie[0]
        assert "strict-transport-security" not in b.get("/login").headers
    assert all(" ip=127.0.0.9 " in e for e in events(caplog, "login_failed")), events(caplog, "login_failed")
    assert events(caplog, "login")[-1] == f"login proto=web ip=127.0.0.9 tls=no user={ALICE}"
