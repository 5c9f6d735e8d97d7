"""Logging in to and out of the webmail.

A password is checked by the mail protocols' login service
(auth/service.py: the same budget, delays and lockouts) and only where the
``[auth]`` rule lets a password travel in the clear (``plaintext_ok``, also
asked by the settings page's password change). The login form carries a
token of its own cookie; a login makes the session (security.py) and its
record (sessionlog.py). The session-ended page of a compose form
(compose.py) logs in through the same steps.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth.service import TryLater
from . import sessionlog as records
from .pages import checked_form, current, live_session, page, redirect, state
from .security import LOGIN_COOKIE, SESSION_COOKIE, cookie_kwargs, token_ok

if TYPE_CHECKING:
    from ..config import AuthConfig
    from ..store.api import Account
    from .security import Session


async def login_form(request: Request) -> Response:
    if live_session(request) is not None:
        return redirect("/")
    return _login_page(request)


def _login_page(request: Request, error: str = "", username: str = "", status: int = 200) -> Response:
    token = login_token()
    response = page(request, "login.html", status=status, error=error, username=username, login_token=token)
    set_login_cookie(request, response, token)
    return response


def login_token() -> str:
    """A new token for a login form; ``set_login_cookie`` gives the browser
    its cookie (a double submit: login CSRF, security.py)."""
    import secrets

    return secrets.token_urlsafe(24)


def set_login_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, **cookie_kwargs(request))


def login_token_ok(request: Request, form: Any) -> bool:
    """Whether ``form`` carries the token of the login cookie."""
    given = form.get("login_token")
    return token_ok(request.cookies.get(LOGIN_COOKIE, ""), given if isinstance(given, str) else None)


@dataclass(frozen=True)
class Refused:
    """A login refused: the words for the user, the HTTP status and, over a
    limit, the seconds to wait (Retry-After)."""

    error: str
    status: int
    retry_after: int | None = None


async def password_login(request: Request, form: Any) -> Account | Refused:
    """The account whose address and password ``form`` gives, checked by
    the mail protocols' login service under its rules; or why not."""
    web = state(request)
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    ip = request.client.host if request.client else "unknown"
    if not plaintext_ok(web.services.config.auth, request, ip):
        return Refused("Passwords are accepted only over HTTPS here.", 403)
    # The mail protocols' login service (auth/service.py): the same budget,
    # delays and lockouts. Names without "@" are checked too, so they cost
    # the same work as any other unknown name.
    result = await web.services.login.password(ip, username, password, "web", request.url.scheme == "https")
    if isinstance(result, TryLater):
        # Over a limit: nothing was checked, so this page is the same for a
        # right and a wrong password, a known and an unknown name.
        minutes = max(1, math.ceil(result.retry_after / 60))
        return Refused(f"Too many attempts, try again in {minutes} minute{'s' if minutes > 1 else ''}.", 429,
                       max(1, math.ceil(result.retry_after)))
    if result is None:
        return Refused("Wrong address or password.", 401)
    return result


async def open_session(request: Request, response: Response, account: Account) -> Session:
    """Log ``account`` in: a new session and its record, its cookie set on
    ``response`` and the login form's cookie dropped."""
    web = state(request)
    ip = request.client.host if request.client else "unknown"
    session, cookie = web.sessions.create(account.id, account.address, account.epoch, ip,
                                          request.headers.get("user-agent", ""))
    await records.record(web.services.store, session)
    response.set_cookie(SESSION_COOKIE, cookie, **cookie_kwargs(request))
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return session


async def login(request: Request) -> Response:
    form = await checked_form(request)
    if not login_token_ok(request, form):
        raise HTTPException(403, "login form expired; reload the page")
    result = await password_login(request, form)
    if isinstance(result, Refused):
        response = _login_page(request, result.error, str(form.get("username") or "").strip(), result.status)
        if result.retry_after is not None:
            response.headers["Retry-After"] = str(result.retry_after)
        return response
    response = redirect("/")
    await open_session(request, response, result)
    return response


def plaintext_ok(cfg: AuthConfig, request: Request, ip: str) -> bool:
    """The same rule as the mail protocols (config [auth]): a password in the
    clear only over TLS, from loopback (e.g. a TLS-terminating proxy on this
    host), or where the administrator allows it everywhere."""
    if request.url.scheme == "https":
        return True
    try:
        loopback = ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback
    except ValueError:
        loopback = False
    return cfg.allow_plaintext_insecure or (cfg.allow_plaintext_on_loopback and loopback)


async def logout(request: Request) -> Response:
    session = current(request)
    await checked_form(request, session)
    state(request).sessions.drop(session)
    await records.end(state(request).services.store, session)
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def routes() -> list[Route]:
    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
