"""Webmail sessions recorded in the store, so that the sessions list and
"log out other sessions" cover every process serving the webmail (worker
processes, nodes over one PostgreSQL store), not only the one answering.

A session itself stays in the memory of the process that made it
(security.py: its CSRF token, what remote content it allowed); the store
keeps its record (``Store.add_web_session``): a SHA-256 digest of its
secret id (so a store read gives no cookie to present), its account,
login and last-use times, address and browser. The record is the proof
that the session may go on: ``SessionRecords`` looks it up on every
request and ends a session whose record is gone (logged out from another
process) or has expired, or whose account was removed or given a new
password since the login (``Store.credentials_current``, awaited here so
that a store asking its database does not hold the event loop). Use is
written back at most once a minute, so a busy session costs one indexed
read per request and one write a minute.

``SessionRecords`` is the one place that reads the session cookie: it
hands the session it checked (or None) to the rest of the request in the
ASGI scope's state (``checked_session``), and the routes and the other
middleware take the session from there only. A second reading of the
cookie could disagree with it (a header that one parser refuses and
another accepts) and find a session that was never checked.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from starlette.requests import cookie_parser
from starlette.responses import PlainTextResponse

from ..store.api import Store, StoreError, StoreUnavailable, WebSession
from .security import IDLE_TIMEOUT, MAX_AGE, SESSION_COOKIE, Session

log = logging.getLogger("mailyard.web")

TOUCH_EVERY = 60.0  # seconds between two writes of a session's last use
KEEP_AT_MOST = 100  # sessions an account keeps; a new login ends the least recently used beyond


# the key of the ASGI scope's state under which SessionRecords leaves the checked session
CHECKED = "checked_session"


def session_cookie(scope: Any) -> str | None:
    """The session cookie's value in a request's Cookie header(s) (RFC 6265
    5.4; several, as HTTP/2 may send, are one list, RFC 9113 8.2.3), read
    leniently as Starlette's ``Request.cookies``: a malformed other cookie
    does not hide it."""
    headers = [value.decode("latin-1") for key, value in scope.get("headers", []) if key == b"cookie"]
    if not headers:
        return None
    return cookie_parser("; ".join(headers)).get(SESSION_COOKIE) or None


def checked_session(scope: Any) -> Session | None:
    """The session that ``SessionRecords`` checked for this request; None
    when there is none or when the request did not pass that check."""
    state = scope.get("state")
    return state.get(CHECKED) if isinstance(state, dict) else None


def key_of(session: Session) -> str:
    return hashlib.sha256(session.id.encode()).hexdigest()


async def record(store: Store, session: Session) -> None:
    """Record a session just made by a login."""
    now = time.time()
    session.stored_seen = now
    await store.add_web_session(WebSession(key_of(session), session.account_id, now, now, session.ip, session.agent),
                                KEEP_AT_MOST, now - IDLE_TIMEOUT)


def _live(rec: WebSession, now: float) -> bool:
    return now - rec.last_seen <= IDLE_TIMEOUT + TOUCH_EVERY and now - rec.created <= MAX_AGE


async def still_good(store: Store, session: Session) -> bool:
    """Whether the session's record is there and current; notes its use."""
    rec = await store.get_web_session(key_of(session))
    now = time.time()
    if rec is None or rec.account_id != session.account_id or not _live(rec, now):
        return False
    if now - session.stored_seen >= TOUCH_EVERY:
        session.stored_seen = now
        return await store.touch_web_session(rec.key, now)
    return True


async def listing(store: Store, session: Session) -> list[dict[str, Any]]:
    """The account's live sessions in every process, the newest first."""
    now = time.time()
    mine = key_of(session)
    return [{"id": rec.key[:8], "current": rec.key == mine, "ip": rec.ip, "agent": rec.agent,
             "since": rec.created, "seen": now if rec.key == mine else rec.last_seen}
            for rec in await store.list_web_sessions(session.account_id) if _live(rec, now)]


async def end_others(store: Store, session: Session) -> int:
    """End every other session of the account, wherever it lives; how many."""
    return await store.remove_web_sessions(session.account_id, keep=key_of(session))


async def end(store: Store, session: Session) -> None:
    await store.remove_web_sessions(session.account_id, [key_of(session)])


class SessionRecords:
    """Pure ASGI middleware: a request whose session has no current record
    in the store, or whose credentials are no longer current, is served as
    one without a session (the process forgets it). When the store cannot
    tell whether the credentials are current, the answer is 503 (RFC 9110
    15.6.4), as for any page the store cannot serve. The session that
    passed (or None) goes on in the scope's state (``checked_session``).
    It does not buffer responses (the event stream passes through)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not scope.get("path", "").startswith("/static/"):
            web = getattr(getattr(scope.get("app"), "state", None), "web", None)
            cookie = session_cookie(scope)
            session = web.sessions.get(cookie) if web is not None and cookie else None
            if session is not None:
                store = web.services.store
                try:
                    current = await store.credentials_current(session.account_id, session.epoch)
                except StoreUnavailable:
                    response = PlainTextResponse("The mail store is unavailable, try again in a moment.\n",
                                                 status_code=503, headers={"Retry-After": "10"})
                    await response(scope, receive, send)
                    return
                if not current:
                    log.info("web: ending session of %s: account removed or password changed", session.address)
                    web.sessions.drop(session)
                    session = None
            if session is not None:
                try:
                    good = await still_good(web.services.store, session)
                except StoreError:
                    good = True  # the store is down: the routes answer 503 themselves
                if not good:
                    log.info("web: ending session of %s: logged out elsewhere or expired", session.address)
                    web.sessions.drop(session)
                    session = None
            # a state dict of this request's own (the server's may be shared by requests)
            scope["state"] = {**(scope.get("state") or {}), CHECKED: session}
        await self.app(scope, receive, send)
