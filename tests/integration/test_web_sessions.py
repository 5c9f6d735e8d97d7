"""Webmail sessions across server processes over one store (two app
instances on one data directory, as worker processes or nodes are): the
sessions list shows the sessions made through either, and "log out other
sessions" and logging out end them wherever they live (web/sessionlog.py)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from mailyard.web.security import SESSION_COOKIE

from ..conftest import USERS, RunningServer
from .test_web_http import ALICE, box_id, csrf

httpx = pytest.importorskip("httpx")


def browser(server: RunningServer, agent: str) -> httpx.Client:
    client = httpx.Client(base_url=f"http://127.0.0.1:{server.port('http')}", headers={"User-Agent": agent},
                          timeout=30)
    token = re.search(r'name="login_token" value="([^"]+)"', client.get("/login").text).group(1)
    r = client.post("/login", data={"username": ALICE, "password": USERS[ALICE], "login_token": token})
    assert r.status_code == 303, r.text
    return client


def test_sessions_of_every_process_listed_and_logged_out(make_server: Callable[..., RunningServer]) -> None:
    first = make_server()
    second = RunningServer(first.data_dir, first.config, seed_defaults=False)
    second.start()
    try:
        inbox = box_id(first, ALICE, "INBOX")
        a = browser(first, "Browser-A/1.0")
        b = browser(second, "Browser-B/2.0")
        c = browser(second, "Browser-C/3.0")
        # each process lists the sessions made through the other
        page = b.get("/settings").text
        assert "Browser-A/1.0" in page and "Browser-B/2.0" in page and "Browser-C/3.0" in page
        assert "Browser-B/2.0" in a.get("/settings").text
        # logging out through one process ends the session for the other too
        r = c.post("/logout", data={"csrf": csrf(c)})
        assert r.status_code == 303
        assert "Browser-C/3.0" not in a.get("/settings").text
        # "log out other sessions" through the second ends the one of the first
        r = b.post("/settings", data={"csrf": csrf(b), "section": "sessions"})
        assert r.status_code == 303 and "Logged%20out%201%20other%20session." in r.headers["location"]
        assert a.get(f"/box/{inbox}").headers.get("location") == "/login"
        assert a.get("/events/newest").headers.get("location") == "/login"
        assert b.get(f"/box/{inbox}").status_code == 200
        page = b.get("/settings").text
        assert "Browser-A/1.0" not in page and "Browser-B/2.0" in page
    finally:
        second.stop()


def test_a_session_logged_out_elsewhere_is_refused_whatever_its_cookie_header(
        make_server: Callable[..., RunningServer]) -> None:
    """The session cookie is read in one place, the check of its record
    before every request (web/sessionlog.py): a Cookie header that one
    parser refuses and another accepts (a malformed cookie before the
    session's) neither hides a good session nor lets an ended one through."""
    first = make_server()
    second = RunningServer(first.data_dir, first.config, seed_defaults=False)
    second.start()
    try:
        a = browser(first, "Browser-A/1.0")
        odd = {"Cookie": f"a,b=1; {SESSION_COOKIE}={a.cookies[SESSION_COOKIE]}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{first.port('http')}", timeout=30) as bare:
            assert bare.get("/folders", headers=odd).status_code == 200
            # "log out other sessions" through the second process ends it
            b = browser(second, "Browser-B/2.0")
            r = b.post("/settings", data={"csrf": csrf(b), "section": "sessions"})
            assert r.status_code == 303 and "Logged%20out%201%20other%20session." in r.headers["location"]
            r = bare.get("/folders", headers=odd)
            assert r.status_code == 303 and r.headers["location"] == "/login", r.status_code
            assert a.get("/folders").headers.get("location") == "/login"
    finally:
        second.stop()
