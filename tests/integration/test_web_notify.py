"""What a new-mail notification may say (``GET /events/newest``, web/notify.py)
over HTTP: the session's own INBOX only, its newest unread message after a
given UID and how many, nothing for another site's request or without a
session."""

from __future__ import annotations

import logging
import re

import pytest

from mailyard.store.api import StoreUnavailable
from mailyard.web import recent

from ..conftest import RunningServer
from .test_web_http import ALICE, BOB, append, box_id, login, simple

httpx = pytest.importorskip("httpx")


def test_newest_unread_for_the_sessions_own_inbox_only(mailserver: RunningServer) -> None:
    first = append(mailserver, ALICE, simple("Already there"))
    alice, bob = login(mailserver), login(mailserver, BOB)
    r = alice.get("/events/newest")
    assert r.status_code == 200 and r.json() == {"uid": first, "count": 0}
    assert r.headers["cache-control"] == "no-store"
    append(mailserver, ALICE, simple("read already", "Eve <eve@example.test>"), flags=["\\Seen"])
    append(mailserver, ALICE, simple("Lunch on Friday", "Alice Cooper <cooper@example.test>"))
    last = append(mailserver, ALICE, simple("=?utf-8?q?Caf=C3=A9?= at noon", "bea@example.test"))
    assert alice.get(f"/events/newest?after={first}").json() == {
        "uid": last, "count": 2, "from": "bea@example.test", "subject": "Caf\u00e9 at noon"}
    assert alice.get(f"/events/newest?after={last - 1}").json()["count"] == 1
    assert alice.get(f"/events/newest?after={last}").json() == {"uid": last, "count": 0}
    # another account's session sees its own INBOX, never Alice's
    other = bob.get(f"/events/newest?after={first}").json()
    assert other.get("count") == 0 and "from" not in other
    # no session: no answer; another site's request: nothing
    anonymous = httpx.Client(base_url=str(alice.base_url))
    r = anonymous.get("/events/newest?after=0")
    assert r.status_code in (302, 303, 401) and "Lunch" not in r.text
    r = alice.get("/events/newest?after=0", headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403 and "Lunch" not in r.text
    # a malformed UID is the starting point, not an error
    assert alice.get("/events/newest?after=-1").json() == {"uid": last, "count": 0}


def first_events(client: httpx.Client, url: str, wanted: int, seconds: float = 5.0) -> list[str]:
    """The first ``wanted`` ``change`` events of the stream at ``url`` (fewer
    if the stream sends no more within ``seconds``)."""
    changes: list[str] = []
    with client.stream("GET", url, timeout=httpx.Timeout(30, read=seconds)) as r:
        assert r.status_code == 200
        try:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    changes.append(line[len("data: "):])
                    if len(changes) == wanted:
                        break
        except httpx.ReadTimeout:
            pass
    return changes


def test_a_change_between_render_and_stream_reaches_the_page(mailserver: RunningServer) -> None:
    """New mail that lands after a page was rendered and before its browser
    opened the event stream is announced when the stream opens; a page whose
    render time the stream no longer covers is told to refresh as well."""
    alice = login(mailserver)
    page = alice.get("/", follow_redirects=True)
    since = re.search(r'data-since="([0-9.]+)"', page.text).group(1)
    inbox = box_id(mailserver, ALICE, "INBOX")
    append(mailserver, ALICE, simple("Lunch on Friday"))  # before the stream opens
    assert first_events(alice, f"/events?since={since}", 1) == [f'{{"mailbox": {inbox}}}']
    # a later page: nothing changed since it, so nothing is replayed
    later = float(re.search(r'data-since="([0-9.]+)"', alice.get("/folders").text).group(1))
    # (past the clock margin web/recent.py allows for other workers' clocks:
    # one process here, so the page's own time is exact)
    assert first_events(alice, f"/events?since={later + recent.MARGIN}", 1, seconds=1.0) == []
    # older than anything remembered, or no render time: every folder refreshes
    replayed = first_events(alice, "/events?since=0", 100, seconds=1.0)
    assert f'{{"mailbox": {inbox}}}' in replayed and len(replayed) > 1


def test_the_event_stream_ends_cleanly_when_the_store_goes(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The store out of reach while a page's event stream is open (its
    database down, or closed as the server stops): the stream ends as a
    complete response, with a one-line log and no traceback; the browser
    opens it again after the retry delay."""
    caplog.set_level(logging.INFO, logger="mailyard")
    alice = login(mailserver)
    inbox = box_id(mailserver, ALICE, "INBOX")
    store = mailserver.store
    checks = {"left": 2}  # the session's check before the route, the stream's first
    credentials_current = store.credentials_current

    async def unavailable_later(*args: object) -> bool:
        checks["left"] -= 1
        if checks["left"] < 0:
            raise StoreUnavailable("the store is closed")
        return await credentials_current(*args)

    monkeypatch.setattr(store, "credentials_current", unavailable_later)
    lines: list[str] = []
    with alice.stream("GET", "/events", timeout=httpx.Timeout(30)) as r:
        assert r.status_code == 200
        lines.extend(r.iter_lines())  # every folder replayed, then the next check fails: the end
    assert lines[0] == "retry: 3000" and f'data: {{"mailbox": {inbox}}}' in lines
    assert checks["left"] < 0
    assert not [rec for rec in caplog.records if rec.exc_info], "a traceback was logged"
    ended = [rec.getMessage() for rec in caplog.records if rec.name == "mailyard.web"]
    assert ended == [f"web: ending the event stream of {ALICE}: the store is closed"]
