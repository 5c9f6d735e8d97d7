"""Webmail: read and write mail in the browser (Starlette + Jinja2, no build step).

Pages are rendered on the server; ``static/app.js`` adds keyboard shortcuts,
select-all and live updates (server-sent events fed by ``store.add_listener``).
Every mailbox and message is addressed by the mailbox id and the UID, and every
request looks the mailbox up *for the logged-in account*: another account's id
gives the same 404 as one that does not exist. Security model: security.py.

This module builds the app: its middleware, error pages and routes, those
of the route modules (each with ``routes()``: actions.py, the actions on a
folder's messages; folders.py, folder management; live.py, the live
updates; and the others) and its own: the folder list. What every page
needs is in pages.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..store.api import MailboxGone, StoreUnavailable
from . import (
    actions,
    compose,
    contacts,
    conversations,
    filters,
    live,
    login,
    pdfpreview,
    prefs,
    reading,
    searchquery,
    settings,
    undo,
    wellknown,
)
from . import sessionlog as records
from .bodies import BodyLimits, route_limits
from .drafts import routes as drafts_routes
from .folders import routes as folders_routes
from .listing import SORTS, Listing, NotReady
from .notify import routes as notify_routes
from .pages import (
    HERE,
    TEMPLATES,
    WebState,
    current,
    folders,
    live_session,
    own_mailbox,
    page,
    redirect,
    state,
    to_int,
)
from .redirect import routes as redirect_routes
from .security import PAGE_CSP
from .transport import Transport
from .worker import DEFAULT_MEMORY, RenderPool

if TYPE_CHECKING:
    from ..services import Services

# the read page offers PDF previews only where poppler-utils can draw them
TEMPLATES.globals["pdf_preview_ok"] = pdfpreview.available


class SecurityHeaders:
    """Pure ASGI middleware (it must not buffer the server-sent event stream):
    adds the security headers a response does not set itself."""

    DEFAULTS = (
        (b"content-security-policy", PAGE_CSP.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (b"x-frame-options", b"DENY"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
    )

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")
        started = False

        async def send_with_headers(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for k, v in self.DEFAULTS:
                    if k not in present:
                        headers.append((k, v))
                if not static and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except StoreUnavailable:
            # raised before the routes (the middleware reading preferences
            # and the session): answered as the routes' handler does
            if started:
                raise
            response = await store_unavailable(Request(scope), StoreUnavailable())
            await response(scope, receive, send_with_headers)


# --- folders and lists ---------------------------------------------------------
async def home(request: Request) -> Response:
    session = current(request)
    inbox = await state(request).services.store.get_mailbox(session.account_id, "INBOX")
    if inbox is None:
        raise HTTPException(404)
    return redirect(f"/box/{inbox.id}")


async def mailbox_view(request: Request) -> Response:
    session = current(request)
    box = await own_mailbox(request, session, request.path_params["box_id"])
    web = state(request)
    qp = request.query_params
    sort = qp.get("sort", "date")
    sort = sort if sort in SORTS else "date"
    descending = qp.get("dir", "desc" if sort == "date" else "asc") != "asc"
    query = (qp.get("q") or "").strip()[:500]
    only: set[int] | None = None
    search_errors: list[str] = []
    if query:
        found = await searchquery.search(request, session, box, query)
        if isinstance(found, Response):
            return found  # results from other folders: their own page
        only, search_errors = found
    assert web.listing is not None
    preparing = pg = None
    conv = await conversations.list_page(request, session, box, query, sort)
    try:
        if conv is None:
            pg = await web.listing.page(box, sort, descending, to_int(qp.get("after")), to_int(qp.get("before")),
                                        only, size=prefs.current().per_page)
    except NotReady as progress:
        # first sort of a big folder by sender/subject: show date order meanwhile
        preparing = progress
        pg = await web.listing.page(box, "date", True, None, None, only, size=prefs.current().per_page)
    ctx = {
        "box": box, "folders": await folders(request, session), "pg": pg, "sort": sort,
        "dir": "desc" if descending else "asc", "q": query, "page_size": prefs.current().per_page,
        "notice": qp.get("notice", ""), "is_trash": box.special_use == "\\Trash",
        "undo": web.moves.offered(session.account_id, qp.get("undo")) if qp.get("notice") else "",
        "preparing": preparing, "search_errors": search_errors,
        "to_column": box.special_use in ("\\Sent", "\\Drafts"),
    }
    ctx["conv"] = conv
    ctx["unseen"] = next((f["unseen"] for f in ctx["folders"] if f["id"] == box.id), 0)
    if qp.get("fragment"):
        list_html = TEMPLATES.get_template("_list.html").render(request=request, session=session, **ctx)
        nav_html = TEMPLATES.get_template("_folders.html").render(request=request, session=session, **ctx)
        return JSONResponse({"list": list_html, "folders": nav_html, "modseq": box.highest_modseq})
    return page(request, "mailbox.html", **ctx)


# --- errors ----------------------------------------------------------------------
async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 401:
        accept = request.headers.get("accept", "")
        if request.method == "GET" and "json" not in accept and "event-stream" not in accept:
            return redirect("/login")
        if "json" in accept:
            return JSONResponse({"error": "Your session has ended: log in again.", "ended": True}, status_code=401)
        if "html" in accept:
            # a form posted after the session ended: say so, with a way back in
            # (a compose form keeps its text: compose.py ``ended``)
            return page(request, "error.html", status=401, status_code=401, folders=[],
                        detail="Your session has ended: log in again.")
        return PlainTextResponse("not logged in", status_code=401)
    session = live_session(request)
    request.state.session = session
    response = page(request, "error.html", status=exc.status_code, status_code=exc.status_code,
                    detail=exc.detail or "", folders=[])
    response.headers.update(exc.headers or {})
    return response


async def store_unavailable(request: Request, exc: Exception) -> Response:
    """The store cannot be reached (its database down): RFC 9110 15.6.4 503,
    with Retry-After (10.2.3); no page around it, as that would read the store."""
    return PlainTextResponse("The mail store is unavailable, try again in a moment.\n", status_code=503,
                             headers={"Retry-After": "10"})


async def mailbox_gone(request: Request, exc: Exception) -> Response:
    """A folder deleted (by another client) while this request used it."""
    return await http_error(request, HTTPException(404, "no such folder"))


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


def create_app(services: Services) -> Starlette:
    """The webmail app of a running server (``services``: mailyard/services.py)."""
    routes = [
        Route("/", home),
        Route("/health", health),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        *login.routes(),
        Route("/box/{box_id:int}", mailbox_view),
        *actions.routes(),
        *reading.routes(),
        *conversations.routes(),
        *pdfpreview.routes(),
        *folders_routes(),
        *compose.routes(),
        *live.routes(),
        *notify_routes(),
        *redirect_routes(),
        *drafts_routes(compose.compose_submit),
        *undo.routes(),
        *wellknown.routes(current),
        *contacts.routes(),
        *settings.routes(),
        *filters.routes(),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        # SecurityHeaders outermost, so the 413 of BodyLimits carries them too
        middleware=[
            # outermost: the client's address from a trusted proxy, ACME
            # HTTP-01 answers, the HTTPS redirect and HSTS (web/transport.py)
            Middleware(Transport, services=services),
            Middleware(SecurityHeaders),
            Middleware(records.SessionRecords),
            Middleware(prefs.PrefsContext),
            Middleware(BodyLimits, limit_for=route_limits(services.config.smtp.max_message_size),
                       limits=services.config.limits,
                       signed_in=lambda scope: records.checked_session(scope) is not None),
        ],
        exception_handlers={HTTPException: http_error, MailboxGone: mailbox_gone, StoreUnavailable: store_unavailable},
    )
    # the worker's memory: what the stdlib parser and nh3 need for a message
    # of the largest size accepted, with room to spare
    pool = RenderPool(memory_limit=max(DEFAULT_MEMORY, 16 * services.config.smtp.max_message_size))
    app.state.web = WebState(services, listing=Listing(services.store), pool=pool)
    services.store.add_listener(app.state.web.recent.record)
    app.state.pdf_previews = pdfpreview.Previewer()
    return app


__all__ = ["create_app"]
