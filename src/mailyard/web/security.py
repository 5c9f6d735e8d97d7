"""Webmail sessions, CSRF protection and security headers.

- A session is server-side (in memory: logging out or restarting the server
  ends it for real), with a record in the store that every process lists
  and ends (sessionlog.py); the cookie holds only its random id, signed with a
  per-process key (itsdangerous), HttpOnly, SameSite=Strict, Secure over HTTPS.
  Sessions end after ``IDLE_TIMEOUT`` without use and ``MAX_AGE`` in any case.
- CSRF: every state-changing request (POST) must carry the session's random
  token (form field ``csrf`` or header ``X-CSRF-Token``, compared in constant
  time) *and*, when the browser sends one, an ``Origin`` (or ``Referer``) of
  this very site. The login form uses a double-submit token in a short-lived
  cookie of its own (login CSRF).
- Every response gets a strict Content-Security-Policy (no inline script, no
  eval, nothing from other origins), nosniff, no referrer to other sites, no framing.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from itsdangerous import BadSignature, Signer
from starlette.requests import Request

SESSION_COOKIE = "mailyard_session"
LOGIN_COOKIE = "mailyard_login"
IDLE_TIMEOUT = 8 * 3600.0
MAX_AGE = 7 * 24 * 3600.0
MAX_SESSIONS = 100_000

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def body_csp(allow_remote: bool) -> str:
    """CSP of a sanitised HTML body shown in the sandboxed iframe."""
    img = "'self' data:" + (" https: http:" if allow_remote else "")
    style_remote = " https: http:" if allow_remote else ""
    return (
        f"default-src 'none'; img-src {img}; style-src 'unsafe-inline'{style_remote}; "
        "font-src 'none'; form-action 'none'; base-uri 'none'; frame-ancestors 'self'; "
        # no allow-scripts: nothing in the body can run. allow-same-origin (safe
        # without allow-scripts) lets the frame send the session cookie for
        # its cid: images and lets the page size the frame to its content.
        "sandbox allow-same-origin allow-popups allow-popups-to-escape-sandbox"
    )


DOWNLOAD_CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox"


@dataclass
class Session:
    id: str
    account_id: int
    address: str
    csrf: str
    created: float
    last_seen: float
    remote_ok: set[str] = field(default_factory=set)
    epoch: int = 0  # the account's credential epoch at login (store.credentials_current)
    ip: str = ""  # where the login came from, and the browser's User-Agent (the sessions list)
    agent: str = ""
    stored_seen: float = 0.0  # when its last use was written to its store record (sessionlog.py)


class Sessions:
    def __init__(self) -> None:
        self._signer = Signer(secrets.token_bytes(32), salt="mailyard-session")
        self._sessions: dict[str, Session] = {}

    def create(self, account_id: int, address: str, epoch: int = 0, ip: str = "",
               agent: str = "") -> tuple[Session, str]:
        now = time.monotonic()
        if len(self._sessions) >= MAX_SESSIONS:
            self._prune(now, force=True)
        sid = secrets.token_urlsafe(32)
        session = Session(sid, account_id, address, secrets.token_urlsafe(32), now, now, epoch=epoch,
                          ip=ip, agent=agent[:200])
        self._sessions[sid] = session
        return session, self._signer.sign(sid).decode()

    def get(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        try:
            sid = self._signer.unsign(cookie).decode()
        except (BadSignature, UnicodeDecodeError):
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_seen > IDLE_TIMEOUT or now - session.created > MAX_AGE:
            self._sessions.pop(sid, None)
            return None
        session.last_seen = now
        return session

    def holds(self, session: Session) -> bool:
        """Whether ``session`` is still one of this process's (not ended)."""
        return self._sessions.get(session.id) is session

    def drop(self, session: Session) -> None:
        self._sessions.pop(session.id, None)

    def of_account(self, account_id: int) -> list[Session]:
        """The live sessions of an account in this process, newest first."""
        now = time.monotonic()
        return sorted((s for s in self._sessions.values() if s.account_id == account_id
                       and now - s.last_seen <= IDLE_TIMEOUT and now - s.created <= MAX_AGE),
                      key=lambda s: s.created, reverse=True)

    def drop_others(self, keep: Session) -> int:
        """End every session of ``keep``'s account but ``keep``; how many."""
        others = [s.id for s in self._sessions.values() if s.account_id == keep.account_id and s.id != keep.id]
        for sid in others:
            self._sessions.pop(sid, None)
        return len(others)

    def drop_account(self, account_id: int) -> None:
        for sid in [s.id for s in self._sessions.values() if s.account_id == account_id]:
            self._sessions.pop(sid, None)

    def _prune(self, now: float, force: bool = False) -> None:
        for sid, s in list(self._sessions.items()):
            if now - s.last_seen > IDLE_TIMEOUT or now - s.created > MAX_AGE:
                del self._sessions[sid]
        if force and len(self._sessions) >= MAX_SESSIONS:
            oldest = sorted(self._sessions.values(), key=lambda s: s.last_seen)[: MAX_SESSIONS // 10]
            for s in oldest:
                del self._sessions[s.id]


def same_origin(request: Request) -> bool:
    """True unless the browser says the request comes from another origin."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if not referer:
            return True  # no evidence either way; the CSRF token decides
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin == "null":
        return False
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def token_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())


def cookie_kwargs(request: Request) -> dict:
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/",
    }
