"""Webmail: read and write mail in the browser (Starlette + Jinja2, no build step).

Pages are rendered on the server; ``static/app.js`` adds keyboard shortcuts,
select-all and live updates (server-sent events fed by ``store.add_listener``).
Every mailbox and message is addressed by the mailbox id and the UID, and every
request looks the mailbox up *for the logged-in account*: another account's id
gives the same 404 as one that does not exist. Security model: security.py.

This module builds the app: its middleware, error pages and routes, those
of the route modules (each with ``routes()``) and its own: the folder list
and actions on its messages, folder management and the live updates.
What every page needs is in pages.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..spam.learning import learn_kind
from ..store.api import Mailbox, MailboxGone, StoreError, StoreUnavailable
from . import (
    compose,
    contacts,
    conversations,
    filters,
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
from .listing import SORTS, Listing, NotReady
from .notify import routes as notify_routes
from .pages import (
    HERE,
    TEMPLATES,
    WebState,
    checked_form,
    current,
    folders,
    live_session,
    notice_url,
    own_mailbox,
    page,
    redirect,
    safe_back,
    special,
    state,
    to_int,
)
from .redirect import routes as redirect_routes
from .security import PAGE_CSP
from .transport import Transport
from .worker import DEFAULT_MEMORY, RenderPool

if TYPE_CHECKING:
    from ..services import Services

log = logging.getLogger("mailyard.web")

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


# --- actions on messages ---------------------------------------------------------
async def message_action(request: Request) -> Response:
    session = current(request)
    form = await checked_form(request, session)
    box = await own_mailbox(request, session, request.path_params["box_id"])
    store = state(request).services.store
    uids = sorted({u for u in (to_int(v) for v in form.getlist("uid")) if u is not None and u > 0})
    action = str(form.get("action") or "")
    back = safe_back(form.get("back"), f"/box/{box.id}")
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
        return _moved(request, session, box, target, moved)
    if action in ("archive", "spam"):
        # the account's special-use folders (RFC 6154 2): \Archive, \Junk
        target = await special(request, session, "\\Archive" if action == "archive" else "\\Junk")
        if target.id == box.id:
            return redirect(notice_url(back, f"Already in {target.name}."))
        moved = await store.copy_messages(box, uids, target, move=True)
        await _learn(request, session, box, target, moved)  # Spam: into Junk; Archive from Junk: out of it
        return _moved(request, session, box, target, moved)
    if action == "delete":
        if box.special_use == "\\Trash":
            removed = await store.expunge(box, uids)
            return redirect(notice_url(f"/box/{box.id}", f"{len(removed)} deleted for good."))
        trash = await special(request, session, "\\Trash")
        moved = await store.copy_messages(box, uids, trash, move=True)
        return _moved(request, session, box, trash, moved)
    raise HTTPException(400, "unknown action")


def _moved(request: Request, session: Any, box: Mailbox, target: Mailbox, moved: list[tuple[int, int]]) -> Response:
    """Back to the folder after a move, its notice with an Undo (undomove.py)."""
    token = state(request).moves.offer(session.account_id, box, target, moved)
    url = notice_url(f"/box/{box.id}", f"{len(moved)} moved to {target.name}.")
    return redirect(f"{url}&undo={token}" if token else url)


async def undo_move(request: Request) -> Response:
    """The Undo of a move's notice: the messages the move put in its target
    and still there go back to the folder they came from, with their flags
    (a move keeps them). The form names only the record's token; the record
    (undomove.py) names the folders and UIDs, and both folders are looked up
    again for the logged-in account. A token of another account, unknown or
    expired is a 404 that moves nothing. The same form posted again (a
    double click, a reload) goes where the first one went. Teaches the spam
    learner nothing (undomove.py says why)."""
    session = current(request)
    form = await checked_form(request, session)
    record = state(request).moves.find(session.account_id, form.get("token"))
    if record is None:
        raise HTTPException(404, "Nothing to undo: the action was too long ago.")
    async with record.lock:
        if record.done is None:
            target = await own_mailbox(request, session, record.target)
            store = state(request).services.store
            if await store.get_mailbox_by_id(session.account_id, record.source) is None:
                # the folder they came from was deleted since (a folder made
                # again is another folder): they stay where the action put them
                return redirect(notice_url(f"/box/{target.id}", "Not moved back: the folder they came from"
                                           " is gone."))
            source = await own_mailbox(request, session, record.source)
            # a folder deleted and made again under the same id holds other messages
            uids = list(record.uids) if target.uid_validity == record.validity else []
            back = await state(request).services.store.copy_messages(target, uids, source, move=True)
            if uids and len(back) == len(uids):
                text = "Moved back."
            elif back:
                text = f"{len(back)} of {len(uids)} moved back; the others were moved or deleted since."
            else:
                text = "Nothing moved back: the messages were moved or deleted since."
            record.done = notice_url(f"/box/{source.id}", text)
    return redirect(record.done)


async def _learn(request: Request, session: Any, source: Mailbox, target: Mailbox, moved: list[tuple[int, int]]) -> None:
    """A move into Junk (the "Spam" button is a move there) teaches the
    filter spam, out of Junk ham (net/learning.py, queued). The move is
    done already: a store out of reach now costs the lesson, not the
    answer (the user would take the move for not done)."""
    learn = state(request).services.learn
    kind = learn_kind(source.special_use, target.special_use)
    if learn is None or kind is None or not moved:
        return
    try:
        account = await state(request).services.store.get_account_by_id(session.account_id)
    except StoreError as exc:
        log.warning("web: %d message(s) moved to %s not learned as %s: %s", len(moved), target.name, kind, exc)
        return
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
    routes = [
        Route("/", home),
        Route("/health", health),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        *login.routes(),
        Route("/box/{box_id:int}", mailbox_view),
        Route("/box/{box_id:int}/action", message_action, methods=["POST"]),
        Route("/undo-move", undo_move, methods=["POST"]),
        *reading.routes(),
        *conversations.routes(),
        *pdfpreview.routes(),
        Route("/folders", folders_view),
        Route("/folders", folder_action, methods=["POST"]),
        *compose.routes(),
        Route("/events", events),
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
