"""Logging in to and out of the webmail.

A password is checked by the mail protocols' login service
(auth/service.py: the same budget, delays and lockouts) and only where the
``[auth]`` rule lets a password travel in the clear (``plaintext_ok``, also
asked by the settings page's password change). The login form carries a
token of its own cookie; a login makes the session (security.py) and its
record (sessionlog.py).
"""

from __future__ import annotations

import ipaddress
import math
from typing import TYPE_CHECKING

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


async def login_form(request: Request) -> Response:
    if live_session(request) is not None:
        return redirect("/")
    return _login_page(request)


def _login_page(request: Request, error: str = "", username: str = "", status: int = 200) -> Response:
    import secrets

    token = secrets.token_urlsafe(24)
    response = page(request, "login.html", status=status, error=error, username=username, login_token=token)
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, **cookie_kwargs(request))
    return response


async def login(request: Request) -> Response:
    web = state(request)
    form = await checked_form(request)
    if not token_ok(request.cookies.get(LOGIN_COOKIE, ""), form.get("login_token")):
        raise HTTPException(403, "login form expired; reload the page")
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    ip = request.client.host if request.client else "unknown"
    if not plaintext_ok(web.services.config.auth, request, ip):
        return _login_page(request, "Passwords are accepted only over HTTPS here.", username, 403)
    login_service = web.services.login
    # The mail protocols' login service (auth/service.py): the same budget,
    # delays and lockouts. Names without "@" are checked too, so they cost
    # the same work as any other unknown name.
    result = await login_service.password(ip, username, password, "web", request.url.scheme == "https")
    if isinstance(result, TryLater):
        # Over a limit: nothing was checked, so this page is the same for a
        # right and a wrong password, a known and an unknown name.
        minutes = max(1, math.ceil(result.retry_after / 60))
        response = _login_page(
            request, f"Too many attempts, try again in {minutes} minute{'s' if minutes > 1 else ''}.",
            username, 429,
        )
        response.headers["Retry-After"] = str(max(1, math.ceil(result.retry_after)))
        return response
    if result is None:
        return _login_page(request, "Wrong address or password.", username, 401)
    account = result
    session, cookie = web.sessions.create(account.id, account.address, account.epoch, ip,
                                          request.headers.get("user-agent", ""))
    await records.record(web.services.store, session)
    response = redirect("/")
    response.set_cookie(SESSION_COOKIE, cookie, **cookie_kwargs(request))
    response.delete_cookie(LOGIN_COOKIE, path="/")
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
