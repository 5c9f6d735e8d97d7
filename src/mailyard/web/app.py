"""Webmail: read and write mail in the browser (Starlette + Jinja2, no build step).

Pages are rendered on the server; ``static/app.js`` adds keyboard shortcuts,
select-all and live updates (server-sent events fed by ``store.add_listener``).
Every mailbox and message is addressed by the mailbox id and the UID, and every
request looks the mailbox up *for the logged-in account*: another account's id
gives the same 404 as one that does not exist. Security model: security.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import logs, metrics
from ..auth.service import TryLater
from ..delivery.submit import SubmissionRefused, submit_message
from ..message.address import Group, is_valid_addr_spec, iter_mailboxes, parse_address_list
from ..message.dates import format_date
from ..message.reading import human_size, limit_size
from ..message.reply import forward_subject
from ..spam.learning import learn_kind
from ..store.api import Mailbox, MailboxGone, NotFound, QuotaExceeded, StoreError, StoreUnavailable
from . import contacts, conversations, prefs, render, searchquery, settings, undo, wellknown
from . import sessionlog as records
from . import signatures as sig
from .bodies import BodyLimits, route_limits
from .drafts import autosaved, named
from .drafts import routes as drafts_routes
from .listing import SORTS, Listing, NotReady
from .notify import routes as notify_routes
from .recent import RecentChanges
from .redirect import routes as redirect_routes
from .security import (
    DOWNLOAD_CSP,
    LOGIN_COOKIE,
    PAGE_CSP,
    SESSION_COOKIE,
    Session,
    Sessions,
    body_csp,
    cookie_kwargs,
    same_origin,
    token_ok,
)
from .transport import Transport
from .worker import DEFAULT_MEMORY, RenderPool, TooComplex

if TYPE_CHECKING:
    from ..config import AuthConfig
    from ..services import Services

log = logging.getLogger("mailyard.web")

HERE = __import__("pathlib").Path(__file__).parent
MAX_UPLOAD_FILES = 50
SPECIAL_ORDER = {"INBOX": 0, "\\Drafts": 1, "\\Sent": 2, "\\Archive": 3, "\\Junk": 4, "\\Trash": 5}


class BodyCache:
    """Recently prepared message bodies, least recently used dropped first,
    at most ``max_chars`` characters in all. A message's bytes never change
    under one (mailbox id, UIDVALIDITY, UID), so an entry cannot go stale."""

    def __init__(self, max_chars: int = 8 * 1024 * 1024) -> None:
        from collections import OrderedDict

        self.max_chars = max_chars
        self._items: OrderedDict[tuple, str] = OrderedDict()
        self._chars = 0

    def get(self, key: tuple) -> str | None:
        body = self._items.get(key)
        if body is not None:
            self._items.move_to_end(key)
        return body

    def put(self, key: tuple, body: str) -> None:
        if len(body) > self.max_chars // 4 or key in self._items:
            return
        self._items[key] = body
        self._chars += len(body)
        while self._chars > self.max_chars:
            _, old = self._items.popitem(last=False)
            self._chars -= len(old)


@dataclass
class WebState:
    services: Services
    sessions: Sessions = field(default_factory=Sessions)
    listing: Listing | None = None
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    status_cache: dict[int, tuple[tuple[int, int], Any]] = field(default_factory=dict)
    # parsing and sanitising for display run here, off the event loop (worker.py)
    pool: RenderPool = field(default_factory=RenderPool)
    # the sanitised body prepared with a read page, for its body frame's request
    bodies: BodyCache = field(default_factory=lambda: BodyCache())
    # the bound https port (0: no HTTPS listener), for the redirect of web/transport.py
    https_port: int = 0
    # flags, sizes and dates per mailbox for search operators (searchquery.py)
    info_index: Any = None
    # each folder's threads for the conversation list (conversations.py)
    conversations: Any = None
    # what changed lately, replayed when a page's event stream opens (recent.py)
    recent: RecentChanges = field(default_factory=RecentChanges)


def _env() -> jinja2.Environment:
    from . import pdfpreview

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["size"] = human_size
    env.filters["limitsize"] = limit_size
    env.filters["when"] = when
    env.filters["addrs"] = render.draft_addresses
    env.globals["pdf_preview_ok"] = pdfpreview.available
    return env


def when(ts: float | None) -> str:
    """A time as lists show it, in the user's zone and date format (prefs.py)."""
    return prefs.format_when(ts) if ts else ""


TEMPLATES = _env()


def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    session: Session | None = getattr(request.state, "session", None)
    if name == "compose.html" and "attachment_limit" not in ctx:
        ctx["attachment_limit"] = render.attachment_limit(state(request).services.config.smtp.max_message_size)
    if name == "compose.html":
        ctx.setdefault("signatures", sig.previews(prefs.current()))
        sender = getattr(ctx.get("draft"), "sender", "") or (session.address if session else "")
        shown = sig.address_of(sender).casefold()
        ctx.setdefault("signature_shown", next((h for a, h in ctx["signatures"] if a == shown), ""))
    since = getattr(request.state, "since", None)
    html = TEMPLATES.get_template(name).render(request=request, session=session, live_since=since, **ctx)
    return HTMLResponse(html, status_code=status)


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


# --- helpers ---------------------------------------------------------------
def state(request: Request) -> WebState:
    return request.app.state.web


def live_session(request: Request) -> Session | None:
    """The request's session, if it is still good: not expired, its record
    current, and its account neither removed nor given a new password since
    the login (by any process: ``mailyard user remove`` / ``user passwd``
    write the same store). ``sessionlog.SessionRecords`` checked all that
    for this request (waiting for the database if need be) and passed the
    session on; a request it did not check has none here. What the store
    knows in memory is looked at again (a revocation heard since), and a
    session this process ended meanwhile is gone."""
    web = state(request)
    session = records.checked_session(request.scope)
    if session is None or not web.sessions.holds(session):
        return None
    if web.services.store.credentials_known(session.account_id, session.epoch) is False:
        log.info("web: ending session of %s: account removed or password changed", session.address)
        web.sessions.drop(session)
        return None
    return session


def current(request: Request) -> Session:
    session = live_session(request)
    if session is None:
        raise HTTPException(401)
    request.state.session = session
    if not hasattr(request.state, "since"):
        request.state.since = time.time()  # where the page's live updates start
    return session


async def checked_form(request: Request, session: Session | None = None) -> Any:
    """The form of a POST, after the origin and CSRF checks (403 when they fail)."""
    if not same_origin(request):
        raise HTTPException(403, "cross-origin request refused")
    form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=2000)
    if session is not None:
        given = form.get("csrf") or request.headers.get("x-csrf-token")
        if not token_ok(session.csrf, given if isinstance(given, str) else None):
            raise HTTPException(403, "missing or wrong CSRF token")
    return form


async def own_mailbox(request: Request, session: Session, box_id: Any) -> Mailbox:
    """The mailbox ``box_id`` if it belongs to the session's account, else 404."""
    try:
        box = await state(request).services.store.get_mailbox_by_id(session.account_id, int(box_id))
    except (TypeError, ValueError):
        box = None
    if box is None or box.account_id != session.account_id:
        raise HTTPException(404, "no such folder")
    return box


async def special(request: Request, session: Session, use: str) -> Mailbox:
    store = state(request).services.store
    for box in await store.list_mailboxes(session.account_id):
        if box.special_use == use:
            return box
    name = use.lstrip("\\")
    box = await store.get_mailbox(session.account_id, name)
    if box is None:
        box = await store.create_mailbox(session.account_id, name, use)
    return box


async def folders(request: Request, session: Session) -> list[dict]:
    store = state(request).services.store
    boxes = await store.list_mailboxes(session.account_id)
    out = []
    cache = state(request).status_cache
    for box in boxes:
        # a mailbox's counts change only when its highest mod-sequence does
        hit = cache.get(box.id)
        if hit is not None and hit[0] == (box.uid_validity, box.highest_modseq):
            status = hit[1]
        else:
            status = await store.mailbox_status(box)
            if len(cache) > 10_000:
                cache.clear()
            cache[box.id] = ((box.uid_validity, box.highest_modseq), status)
        out.append({
            "id": box.id, "name": box.name, "special": box.special_use,
            "unseen": status.unseen, "messages": status.messages,
            "depth": box.name.count("/"), "label": box.name.rsplit("/", 1)[-1],
        })

    def order(f: dict) -> tuple:
        key = "INBOX" if f["name"] == "INBOX" else f["special"]
        return (SPECIAL_ORDER.get(key or "", 10), f["name"].casefold())

    return sorted(out, key=order)


async def read_raw(request: Request, box: Mailbox, uid: int) -> bytes:
    try:
        return await state(request).services.store.read_message(box, uid)
    except NotFound:
        raise HTTPException(404, "no such message") from None


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def notice_url(url: str, text: str) -> str:
    from urllib.parse import quote

    return f"{url}{'&' if '?' in url else '?'}notice={quote(text)}"


# The pages a Back link may lead to: this app's own list, message, folder and
# compose pages. Matching the whole path against the routes (rather than
# refusing "//" or a scheme) also refuses what browsers rewrite into another
# origin: tab, CR and LF are removed and a backslash read as "/" (WHATWG URL
# parser), so "/<TAB>/host" and "/<backslash>host" both mean "//host" (CWE-601).
_BACK_PATH = re.compile(r"/(?:box/[0-9]{1,18}(?:/msg/[0-9]{1,18})?|folders|compose)?")
_BACK_QUERY = re.compile(r"[A-Za-z0-9._~%&=+:@/-]*")


def _safe_back(value: Any, fallback: str) -> str:
    """``value`` if it is a path of this app (with an optional plain query),
    else ``fallback``: a Back link never leaves the site."""
    if not isinstance(value, str) or len(value) > 2000:
        return fallback
    path, _, query = value.partition("?")
    if _BACK_PATH.fullmatch(path) and _BACK_QUERY.fullmatch(query):
        return value
    return fallback


# --- login / logout ----------------------------------------------------------
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


# --- folders and lists ---------------------------------------------------------
async def home(request: Request) -> Response:
    session = current(request)
    inbox = await state(request).services.store.get_mailbox(session.account_id, "INBOX")
    if inbox is None:
        raise HTTPException(404)
    return redirect(f"/box/{inbox.id}")


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


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
            pg = await web.listing.page(box, sort, descending, _int(qp.get("after")), _int(qp.get("before")), only,
                                        size=prefs.current().per_page)
    except NotReady as progress:
        # first sort of a big folder by sender/subject: show date order meanwhile
        preparing = progress
        pg = await web.listing.page(box, "date", True, None, None, only, size=prefs.current().per_page)
    ctx = {
        "box": box, "folders": await folders(request, session), "pg": pg, "sort": sort,
        "dir": "desc" if descending else "asc", "q": query, "page_size": prefs.current().per_page,
        "notice": qp.get("notice", ""), "is_trash": box.special_use == "\\Trash",
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


def _body_key(session: Session, box: Mailbox, uid: int, allow_remote: bool) -> tuple:
    return (session.account_id, box.id, box.uid_validity, uid, allow_remote)


def too_complex(request: Request, box: Mailbox, uid: int, reason: str, folder_list: list[dict],
                back: str) -> Response:
    """The page shown instead of a message that cannot be prepared for
    display within the worker's bounds: what happened and the download."""
    return page(request, "complex.html", box=box, uid=uid, reason=reason, folders=folder_list, back=back,
                notice="")


async def message_view(request: Request) -> Response:
    session = current(request)
    box = await own_mailbox(request, session, request.path_params["box_id"])
    uid = request.path_params["uid"]
    if box.special_use == "\\Drafts" and request.query_params.get("view") != "1":
        # a draft opens in the editor (?view=1 shows it as a message)
        if await _info(request, box, uid) is None:
            raise HTTPException(404, "no such message")
        return redirect(f"/compose?draft={box.id}:{uid}")
    raw = await read_raw(request, box, uid)
    web = state(request)
    store = web.services.store
    key = f"{box.id}:{uid}"
    if request.query_params.get("remote") == "1" or contacts.remote_allowed(raw, box):
        session.remote_ok.add(key)
    allow_remote = key in session.remote_ok
    back = _safe_back(request.query_params.get("back"), f"/box/{box.id}")
    try:
        view = await web.pool.run(render.show, raw, f"/box/{box.id}/msg/{uid}", allow_remote)
    except TooComplex as exc:
        return too_complex(request, box, uid, str(exc), await folders(request, session), back)
    del raw
    web.bodies.put(_body_key(session, box, uid, allow_remote), view.body or "")
    blocked = view.blocked
    info = await _info(request, box, uid)
    if not view.date and info is not None:
        # No Date field: the arrival time, as the mailbox list shows it.
        view.date = format_date(info.internal_date)
    if info is not None and "\\Seen" not in info.flags:
        await store.store_flags(box, [uid], ["\\Seen"], "add")
        info = await _info(request, box, uid) or info
    return page(
        request, "message.html", box=box, uid=uid, view=view, info=info,
        folders=await folders(request, session), blocked=blocked, allow_remote=allow_remote,
        show_headers=request.query_params.get("headers") == "1",
        notice=request.query_params.get("notice", ""),
        back=back,
    )


async def _info(request: Request, box: Mailbox, uid: int) -> Any:
    """The index row of one message, from the web's mailbox cache (kept current
    with changes_since, so this is not a scan of the mailbox)."""
    listing = state(request).listing
    assert listing is not None
    return await listing.info(box, uid)


async def message_body(request: Request) -> Response:
    """The sanitised HTML body (or the text body as HTML) for the sandboxed iframe."""
    session = current(request)
    box = await own_mailbox(request, session, request.path_params["box_id"])
    uid = request.path_params["uid"]
    web = state(request)
    allow_remote = f"{box.id}:{uid}" in session.remote_ok
    key = _body_key(session, box, uid, allow_remote)
    body = web.bodies.get(key)
    if body is None:
        raw = await read_raw(request, box, uid)
        try:
            view = await web.pool.run(render.show, raw, f"/box/{box.id}/msg/{uid}", allow_remote)
            body = view.body or ""
            web.bodies.put(key, body)
        except TooComplex as exc:
            import html as _html

            body = (f"<p>This message is too complex to display ({_html.escape(str(exc))}).</p>"
                    f"<p><a href=\"/box/{box.id}/msg/{uid}/raw?download=1\" target=\"_blank\">"
                    "Download it</a> to open it with another program.</p>")
    doc = (
        "<!doctype html><html><head><meta charset=\"utf-8\">"
        "<style>body{font:15px/1.45 system-ui,sans-serif;margin:8px;color:#111;word-wrap:break-word}"
        "pre{white-space:pre-wrap}img{max-width:100%;height:auto}"
        # a plain-text body (one <pre>, ours) follows the dark setting; HTML
        # mail keeps the white page its sender designed for
        "@media (prefers-color-scheme:dark){html:has(body>pre:only-child){background:#16181c}"
        "html:has(body>pre:only-child) body{color:#e6e8eb}}</style></head><body>"
        f"{body}</body></html>"
    )
    response = HTMLResponse(doc)
    response.headers["Content-Security-Policy"] = body_csp(allow_remote)
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


async def message_part(request: Request) -> Response:
    session = current(request)
    box = await own_mailbox(request, session, request.path_params["box_id"])
    uid = request.path_params["uid"]
    raw = await read_raw(request, box, uid)
    try:
        found = await state(request).pool.run(render.part_content, raw, request.path_params["spec"])
    except TooComplex as exc:
        raise HTTPException(422, f"This message is too complex to open its parts ({exc}); "
                                 "download the whole message instead.") from None
    if found is None:
        raise HTTPException(404, "no such part")
    data, ctype, filename, charset = found
    # images may be shown in the page and a PDF opened in a tab of its own
    # (the read page previews it as images: pdfpreview.py); DOWNLOAD_CSP lets
    # no script run in either
    inline = request.query_params.get("inline") == "1" and (
        ctype in render.PREVIEW_IMAGES or ctype == "application/pdf")
    if ctype.startswith("text/"):
        if charset and charset.isascii() and charset.replace("-", "").replace("_", "").isalnum():
            ctype += f"; charset={charset}"
    headers = {
        "Content-Disposition": render.content_disposition("inline" if inline else "attachment", filename),
        "Content-Security-Policy": DOWNLOAD_CSP,
        "X-Frame-Options": "SAMEORIGIN",
    }
    return Response(data, media_type=ctype, headers=headers)


async def message_raw(request: Request) -> Response:
    session = current(request)
    box = await own_mailbox(request, session, request.path_params["box_id"])
    raw = await read_raw(request, box, request.path_params["uid"])
    headers = {"Content-Security-Policy": DOWNLOAD_CSP}
    if request.query_params.get("download") == "1":
        headers["Content-Disposition"] = render.content_disposition(
            "attachment", f"message-{request.path_params['uid']}.eml")
        return Response(raw, media_type="message/rfc822", headers=headers)
    return PlainTextResponse(raw.decode("utf-8", "replace"), headers=headers)


# --- actions on messages ---------------------------------------------------------
async def message_action(request: Request) -> Response:
    session = current(request)
    form = await checked_form(request, session)
    box = await own_mailbox(request, session, request.path_params["box_id"])
    store = state(request).services.store
    uids = sorted({u for u in (_int(v) for v in form.getlist("uid")) if u is not None and u > 0})
    action = str(form.get("action") or "")
    back = _safe_back(form.get("back"), f"/box/{box.id}")
    if form.get("whole") == "1":  # rows of the conversation list: their whole conversations
        uids = await conversations.whole(request, session, box, uids)
    if action == "empty":
        if box.special_use != "\\Trash":
            raise HTTPException(400, "only the Trash can be emptied")
        infos = await store.list_messages(box)
        removed = await store.expunge(box, [m.uid for m in infos])
        return redirect(notice_url(f"/box/{box.id}", f"Trash emptied ({len(removed)} messages)."))
    if not uids:
        return redirect(notice_url(back, "No message selected."))
    flag_ops = {
        "read": ("\\Seen", "add"), "unread": ("\\Seen", "remove"),
        "flag": ("\\Flagged", "add"), "unflag": ("\\Flagged", "remove"),
    }
    if action in flag_ops:
        flag, mode = flag_ops[action]
        await store.store_flags(box, uids, [flag], mode)  # type: ignore[arg-type]
        if action == "unread" and back.startswith(f"/box/{box.id}/msg/"):
            back = f"/box/{box.id}"  # reading it again would mark it read
        return redirect(back)
    if action == "move":
        if not form.get("target"):
            return redirect(notice_url(back, "Choose a folder to move to."))
        target = await own_mailbox(request, session, form.get("target"))
        if target.id == box.id:
            return redirect(back)
        moved = await store.copy_messages(box, uids, target, move=True)
        await _learn(request, session, box, target, moved)
        return redirect(notice_url(f"/box/{box.id}", f"{len(moved)} moved to {target.name}."))
    if action in ("archive", "spam"):
        # the account's special-use folders (RFC 6154 2): \Archive, \Junk
        target = await special(request, session, "\\Archive" if action == "archive" else "\\Junk")
        if target.id == box.id:
            return redirect(notice_url(back, f"Already in {target.name}."))
        moved = await store.copy_messages(box, uids, target, move=True)
        return redirect(notice_url(f"/box/{box.id}", f"{len(moved)} moved to {target.name}."))
    if action == "delete":
        if box.special_use == "\\Trash":
            removed = await store.expunge(box, uids)
            return redirect(notice_url(f"/box/{box.id}", f"{len(removed)} deleted for good."))
        trash = await special(request, session, "\\Trash")
        moved = await store.copy_messages(box, uids, trash, move=True)
        return redirect(notice_url(f"/box/{box.id}", f"{len(moved)} moved to Trash."))
    raise HTTPException(400, "unknown action")


async def _learn(request: Request, session: Any, source: Mailbox, target: Mailbox, moved: list[tuple[int, int]]) -> None:
    """A move into Junk (the "Spam" button is a move there) teaches the
    filter spam, out of Junk ham (net/learning.py, queued)."""
    learn = state(request).services.learn
    kind = learn_kind(source.special_use, target.special_use)
    if learn is None or kind is None or not moved:
        return
    account = await state(request).services.store.get_account_by_id(session.account_id)
    if account is not None:
        learn(account, target, [new for _old, new in moved], kind)


# --- folder management -----------------------------------------------------------
async def folders_view(request: Request) -> Response:
    session = current(request)
    return page(request, "folders.html", folders=await folders(request, session),
                notice=request.query_params.get("notice", ""), error="")


async def folder_action(request: Request) -> Response:
    session = current(request)
    form = await checked_form(request, session)
    store = state(request).services.store
    action = str(form.get("action") or "")
    try:
        if action == "create":
            name = str(form.get("name") or "").strip()
            parent = str(form.get("parent") or "")
            if parent:
                name = f"{(await own_mailbox(request, session, parent)).name}/{name}"
            # subscribed, so IMAP clients that show only subscribed folders see it
            await store.create_mailbox(session.account_id, name, subscribe=True)
            return redirect(notice_url("/folders", f"Folder {name} created."))
        box = await own_mailbox(request, session, form.get("box"))
        if box.name == "INBOX" or box.special_use:
            raise StoreError(f"{box.name} is a special folder and cannot be renamed or deleted")
        if action == "rename":
            new = str(form.get("name") or "").strip()
            await store.rename_mailbox(session.account_id, box.name, new)
            return redirect(notice_url("/folders", f"Folder {box.name} renamed to {new}."))
        if action == "delete":
            await store.delete_mailbox(session.account_id, box.name)
            return redirect(notice_url("/folders", f"Folder {box.name} deleted."))
    except StoreError as exc:
        return page(request, "folders.html", status=400, folders=await folders(request, session),
                    notice="", error=str(exc))
    raise HTTPException(400, "unknown action")


# --- compose ---------------------------------------------------------------------
@dataclass
class Draft:
    sender: str = ""  # the From field; empty: the account's address
    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    body: str = ""
    in_reply_to: str = ""
    references: str = ""
    draft_uid: str = ""
    forward: str = ""  # "box_id:uid" of a message to attach as message/rfc822
    reply_to: str = ""  # "box_id:uid" answered (gets \Answered when sent)
    kept: list = field(default_factory=list)  # attachments of a resumed draft
    mode: str = ""  # what the page is: "reply", "replyall", "forward", "draft" or "" (new)
    forward_mode: str = "attached"  # a forward carries the original "attached" or "inline"


async def compose_view(request: Request) -> Response:
    session = current(request)
    qp = request.query_params
    draft = Draft(to=qp.get("to", "")[:2000])
    sent_to: list[str] = []  # the addresses an answered message was sent to
    chosen = ""
    for mode in ("reply", "replyall", "forward", "draft"):
        ref = qp.get(mode)
        if not ref:
            continue
        draft.mode = mode
        box_id, _, uid_s = ref.partition(":")
        box = await own_mailbox(request, session, box_id)
        uid = _int(uid_s)
        if uid is None:
            raise HTTPException(404)
        raw = await read_raw(request, box, uid)
        chosen = mode
        if mode in ("reply", "replyall"):
            sent_to = settings.sent_to(raw)
        pool = state(request).pool
        try:
            if mode in ("reply", "replyall"):
                info = await _info(request, box, uid)
                arrived = info.internal_date if info is not None else None
                answer = await pool.run(render.reply_draft, raw, frozenset({session.address}),
                                        mode == "replyall", arrived)
            else:
                view = await pool.run(render.show, raw, f"/box/{box.id}/msg/{uid}", False, False)
                if mode == "forward" and qp.get("how") == "inline":
                    info = await _info(request, box, uid)
                    inline_text = await pool.run(render.forward_text, raw,
                                                 info.internal_date if info is not None else None)
        except TooComplex as exc:
            return too_complex(request, box, uid, str(exc), await folders(request, session), f"/box/{box.id}")
        del raw
        if mode in ("reply", "replyall"):
            draft.to, draft.cc, draft.subject = answer.to, answer.cc, answer.subject
            draft.body = f"\n\n{answer.quoted}"
            draft.in_reply_to, draft.references = answer.in_reply_to, answer.references
            draft.reply_to = f"{box.id}:{uid}"
        elif mode == "forward":
            draft.subject = forward_subject(view.subject)
            draft.forward = f"{box.id}:{uid}"
            if qp.get("how") == "inline":
                # the original's header block and text, below the cursor
                draft.forward_mode = "inline"
                draft.body = "\n\n" + inline_text
        else:  # resume a draft
            draft.sender = render.draft_addresses(view.from_)
            draft.to = render.draft_addresses(view.to)
            draft.cc = render.draft_addresses(view.cc)
            draft.bcc = render.draft_addresses(view.bcc)
            draft.subject = view.subject
            draft.body = sig.unsign_draft(prefs.current(), draft.sender, view.text or "")
            draft.in_reply_to = view.in_reply_to
            draft.references = view.references_raw
            draft.draft_uid = str(uid)
            draft.kept = [(a.spec, a.filename, a.content_type, a.size) for a in view.attachments]
    if chosen != "draft":
        settings.apply_identity(draft, prefs.current(), sent_to)
    return page(request, "compose.html", identities=prefs.current().identities, draft=draft,
                folders=await folders(request, session), errors=[],
                notice=qp.get("notice", ""))


def parse_recipients(value: str, what: str, errors: list[str]) -> list[tuple[str, str]]:
    """Addresses of a To/Cc/Bcc field; every entry must be a valid addr-spec."""
    value = value.strip()
    if not value:
        return []
    if "\r" in value or "\n" in value:
        errors.append(f"{what}: line breaks are not allowed")
        return []
    items = parse_address_list(value)
    out: list[tuple[str, str]] = []
    for item in items:
        members = item.mailboxes if isinstance(item, Group) else [item]
        for m in iter_mailboxes(members):
            if not m.domain or not is_valid_addr_spec(m.addr_spec, smtputf8=True):
                errors.append(f"{what}: {m.addr_spec!r} is not a valid address")
            else:
                out.append((m.display_name or "", m.addr_spec))
    # every '@' typed must have become an address (the parser skips junk silently)
    if value.count("@") > len(out) + len([e for e in errors if e.startswith(what)]) or not items:
        errors.append(f"{what}: cannot read the address list {value!r}")
    return out


async def compose_submit(request: Request) -> Response:
    session = current(request)
    form = await checked_form(request, session)
    web = state(request)
    store = web.services.store
    autosave = getattr(request.state, "autosave", False)
    action = "save" if autosave else str(form.get("action") or "send")
    draft = Draft(**{k: str(form.get(k) or "") for k in (
        "to", "cc", "bcc", "subject", "body", "in_reply_to", "references", "draft_uid", "forward",
        "reply_to")})
    draft.sender = str(form.get("from") or "")
    draft.mode = str(form.get("mode") or "")[:10]
    draft.forward_mode = "inline" if form.get("forward_mode") == "inline" else "attached"
    errors: list[str] = []
    # Any address may be typed; sending checks it is the user's own
    # (policy/submission.py, the same rule as the submission ports).
    author = parse_recipients(draft.sender or session.address, "From", errors)
    if len(author) > 1:
        errors.append("From: give one address.")
    to = parse_recipients(draft.to, "To", errors)
    cc = parse_recipients(draft.cc, "Cc", errors)
    bcc = parse_recipients(draft.bcc, "Bcc", errors)
    if action == "send" and not (to or cc or bcc) and not errors:
        errors.append("Add at least one recipient.")
    limit = web.services.config.smtp.max_message_size
    uploads: list[tuple[str, bytes, str | None]] = []
    for upload in form.getlist("attachment"):
        if isinstance(upload, UploadFile) and upload.filename:
            # Starlette spooled the file to disk above 1 MB; BodyLimits
            # bounded the whole form to the message size limit
            data = await upload.read()
            name = render.safe_filename(upload.filename)
            ctype = (upload.content_type or "").split(";")[0].strip().lower()
            if "/" not in ctype or any(c in ctype for c in "\r\n\"") or ctype == "application/x-unknown":
                ctype = None  # compose() guesses from the name
            uploads.append((name, data, ctype))
    drafts = await special(request, session, "\\Drafts")
    old_draft = _int(draft.draft_uid)
    old_raw: bytes | None = None
    if old_draft is not None:
        try:
            old_raw = await store.read_message(drafts, old_draft)
        except NotFound:
            old_raw = None
    forward_raw: bytes | None = None
    if draft.forward and old_raw is None:
        # (once saved, the draft carries the original: attached or copied)
        box_id, _, uid_s = draft.forward.partition(":")
        fbox = await own_mailbox(request, session, box_id)
        fuid = _int(uid_s)
        if fuid is None:
            raise HTTPException(404)
        forward_raw = await read_raw(request, fbox, fuid)
    built: tuple[bytes, bytes] | str | None = None
    sender = (author[0][0] or None, author[0][1]) if author else (None, session.address)
    if sender[0] is None:
        # the address alone: the identity's display name goes with it
        sender = named(session, sender[1])
    attach_limit = render.attachment_limit(limit)

    async def build(uploads: list[tuple[str, bytes, str | None]], old_raw: bytes | None,
                    forward_raw: bytes | None) -> tuple[bytes, bytes] | str:
        # parsing the draft or the forwarded message and encoding the
        # attachments happen in a worker process (worker.py)
        try:
            return await web.pool.run(
                render.outgoing, sender, to, cc, bcc, draft.subject, draft.body.replace("\r\n", "\n"),
                uploads, old_raw, list(form.getlist("keep")), forward_raw, draft.in_reply_to or None,
                [r for r in draft.references.split() if r.startswith("<")], attach_limit,
                too_large_attachments(attach_limit, limit), limit, draft.forward_mode == "inline",
                sig.for_sender(prefs.current(), sender[1]))
        except TooComplex as exc:
            return f"The message could not be built ({exc})."

    if not errors:
        built = await build(uploads, old_raw, forward_raw)
        if isinstance(built, str):
            errors.append(built)
    elif uploads:
        built = await build(uploads, old_raw, forward_raw)  # to keep the attachments in a draft
    if errors and autosave:
        return JSONResponse({"error": "Not saved: " + " ".join(errors)}, status_code=400)
    if errors:
        # A browser cannot refill file inputs: chosen files are kept in a draft.
        if uploads and not isinstance(built, str) and built is not None:
            errors += await _keep_as_draft(request, session, draft, drafts, old_draft, built[0])
        elif uploads:
            errors.append("The chosen files were not kept; choose them again.")
        return page(request, "compose.html", status=400, draft=draft,
                    folders=await folders(request, session), errors=errors)
    del uploads, old_raw, forward_raw
    assert built is not None and not isinstance(built, str)
    full, wire = built
    if action == "save":
        try:
            uid = await store.append(drafts, full, ["\\Draft", "\\Seen"])
        except QuotaExceeded:
            return page(request, "compose.html", status=400, draft=draft, folders=await folders(request, session),
                        errors=["Not saved: your mailbox is full (quota reached)."])
        if old_draft is not None:
            await store.expunge(drafts, [old_draft])
        draft.draft_uid = str(uid)
        if autosave:
            return await autosaved(request, drafts, uid, full)
        return redirect(notice_url(f"/compose?draft={drafts.id}:{uid}", "Draft saved."))
    recipients = [a for _, a in to + cc + bcc]
    account = await store.get_account_by_id(session.account_id)
    if account is None:
        raise HTTPException(401)
    client_ip = request.client.host if request.client else "127.0.0.1"
    delay = prefs.current().send_delay
    no_room_to_wait = False
    try:
        if delay:
            # undo send: held as a draft for ``delay`` seconds (web/undo.py);
            # with no room in Drafts to wait in, sent at once instead (and said so)
            try:
                token, _uid = await undo.hold(web.services, account, full, recipients, drafts, old_draft,
                                              {"reply_to": draft.reply_to, "forward": draft.forward}, delay,
                                              client_ip)
                return redirect(f"/compose/pending/{token}")
            except QuotaExceeded:
                no_room_to_wait = True
        await submit_message(web.services, account, wire, recipients, client_ip=client_ip,
                             protocol="HTTP", helo="webmail", service="web")
    except SubmissionRefused as exc:
        logs.event(log, logging.INFO, "message_rejected", proto="web", ip=client_ip, user=account.address,
                   reason="refused", detail=str(exc))
        metrics.count_message("web", "rejected", "refused")
        errors = [f"Not sent: {exc}"]
        if form.getlist("attachment") and any(
                isinstance(u, UploadFile) and u.filename for u in form.getlist("attachment")):
            errors += await _keep_as_draft(request, session, draft, drafts, old_draft, full)
        return page(request, "compose.html", status=400, draft=draft,
                    folders=await folders(request, session), errors=errors)
    sent = await special(request, session, "\\Sent")
    notice = "Message sent."
    try:
        await store.append(sent, full, ["\\Seen"])
    except QuotaExceeded:
        # the message is on its way; only the sender's own copy does not fit
        notice = "Message sent; no copy was kept in Sent: your mailbox is full (quota reached)."
    if no_room_to_wait:
        notice = ("Message sent at once, without the delay to undo it: your mailbox is full (quota reached)"
                  + (", and no copy was kept in Sent." if "no copy" in notice else "."))
    if old_draft is not None:
        await store.expunge(drafts, [old_draft])
    await undo.mark_original(web.services, session.account_id, {"reply_to": draft.reply_to, "forward": draft.forward})
    inbox = await store.get_mailbox(session.account_id, "INBOX")
    return redirect(notice_url(f"/box/{inbox.id if inbox else sent.id}", notice))


def too_large_attachments(attach_limit: int, max_message_size: int) -> str:
    """The refusal of attachments over the limit (``{size}``: theirs)."""
    return (f"The attachments are {{size}} in all; at most {limit_size(attach_limit)} fit: a message "
            f"may have {limit_size(max_message_size)}, and attachments grow by a third when sent.")


async def _keep_as_draft(request: Request, session: Session, draft: Draft, drafts: Mailbox,
                         old_draft: int | None, full: bytes) -> list[str]:
    """Save a refused form with its new attachments as a draft (replacing the
    one it came from) and point the form at it; the words for the user."""
    store = state(request).services.store
    try:
        uid = await store.append(drafts, full, ["\\Draft", "\\Seen"])
    except QuotaExceeded:
        return ["The chosen files were not kept (your mailbox is full); choose them again."]
    if old_draft is not None:
        await store.expunge(drafts, [old_draft])
    draft.draft_uid = str(uid)
    try:
        view = await state(request).pool.run(render.show, full, f"/box/{drafts.id}/msg/{uid}", False, False)
    except TooComplex:
        view = None
    draft.kept = [(a.spec, a.filename, a.content_type, a.size) for a in view.attachments] if view else []
    return [f"Your attachments were kept: this message is saved in {drafts.name} "
            "and they are listed under \u201cAttachments of this draft\u201d."]


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is not None and issubclass(exc[0], HTTPException | StoreError)


# --- live updates ----------------------------------------------------------------
async def events(request: Request) -> Response:
    """Server-sent events: ``change`` with the mailbox id whenever one of this
    account's mailboxes changes (new mail, flags, expunge, from any client)."""
    session = current(request)
    web = state(request)
    store = web.services.store
    mine = {b.id for b in await store.list_mailboxes(session.account_id)}
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1000)

    def on_change(mailbox_id: int) -> None:
        if mailbox_id in mine or mailbox_id not in known:
            with _ignore_full():
                queue.put_nowait(mailbox_id)

    known: set[int] = set(mine)
    remove = store.add_listener(on_change)
    # what changed between the page's render and now (recent.py)
    try:
        missed = web.recent.since(float(request.query_params.get("since", "")))
    except ValueError:
        missed = None
    for mailbox_id in sorted(mine if missed is None else missed & mine):
        with _ignore_full():
            queue.put_nowait(mailbox_id)

    async def stream() -> Any:
        closer = asyncio.ensure_future(web.closing.wait())
        waiter: asyncio.Future | None = None
        try:
            yield "retry: 3000\n\n"
            while not web.closing.is_set():
                if not await store.credentials_current(session.account_id, session.epoch) or \
                        not await records.still_good(store, session):
                    web.sessions.drop(session)
                    break
                if waiter is None:
                    waiter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({waiter, closer}, timeout=25,
                                             return_when=asyncio.FIRST_COMPLETED)
                if closer in done:
                    break
                if waiter not in done:
                    yield ": keep-alive\n\n"
                    continue
                ids = {waiter.result()}
                waiter = None
                await asyncio.sleep(0.2)  # coalesce bursts
                while not queue.empty():
                    ids.add(queue.get_nowait())
                if ids - mine:  # a mailbox we do not know: maybe a new folder of ours
                    mine.clear()
                    mine.update(b.id for b in await store.list_mailboxes(session.account_id))
                    known.update(ids)
                for mailbox_id in sorted(ids & mine):
                    yield f"event: change\ndata: {json.dumps({'mailbox': mailbox_id})}\n\n"
        except StoreUnavailable as exc:
            # The store cannot be reached (its database down, or closed as the
            # server stops): the response has begun, so no 503 can be sent;
            # the stream ends, and the browser opens it again after the retry
            # delay (HTML Living Standard 9.2, "retry").
            log.info("web: ending the event stream of %s: %s", session.address, exc)
        finally:
            remove()
            closer.cancel()
            if waiter is not None:
                waiter.cancel()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


class _ignore_full:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is asyncio.QueueFull


# --- errors ----------------------------------------------------------------------
async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 401:
        accept = request.headers.get("accept", "")
        if request.method == "GET" and "json" not in accept and "event-stream" not in accept:
            return redirect("/login")
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
    from . import filters as filter_pages  # its routes use this module's helpers
    from . import pdfpreview

    routes = [
        Route("/", home),
        Route("/health", health),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/box/{box_id:int}", mailbox_view),
        Route("/box/{box_id:int}/action", message_action, methods=["POST"]),
        Route("/box/{box_id:int}/msg/{uid:int}", message_view),
        Route("/box/{box_id:int}/msg/{uid:int}/body", message_body),
        Route("/box/{box_id:int}/msg/{uid:int}/raw", message_raw),
        Route("/box/{box_id:int}/msg/{uid:int}/part/{spec:str}", message_part),
        *conversations.routes(),
        *pdfpreview.routes(),
        Route("/folders", folders_view),
        Route("/folders", folder_action, methods=["POST"]),
        Route("/compose", compose_view, methods=["GET"]),
        Route("/compose", compose_submit, methods=["POST"]),
        Route("/events", events),
        *notify_routes(),
        *redirect_routes(),
        *drafts_routes(compose_submit),
        *undo.routes(),
        *wellknown.routes(current),
        *contacts.routes(),
        *settings.routes(),
        *filter_pages.routes(),
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
                       limits=services.config.limits),
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
