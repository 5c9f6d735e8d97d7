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
import time
from dataclasses import dataclass, field
from typing import Any

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

from ..auth.passwords import verify_password_async
from ..auth.throttle import Locked, LoginThrottle
from ..delivery.submit import SubmissionRefused, submit_message
from ..message.address import Group, is_valid_addr_spec, iter_mailboxes, parse_address_list
from ..message.compose import Attachment, compose, to_bytes
from ..message.parse import parse_message
from ..message.reading import human_size, mailboxes, readable_address, readable_addresses
from ..message.reply import build_reply, forward_attachment, forward_subject
from ..store.api import Account, Mailbox, NotFound, StoreError
from . import render
from .listing import PAGE_SIZE, SORTS, Listing, NotReady
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

log = logging.getLogger("mailyard.web")

HERE = __import__("pathlib").Path(__file__).parent
MAX_UPLOAD_FILES = 50
SPECIAL_ORDER = {"INBOX": 0, "\\Drafts": 1, "\\Sent": 2, "\\Archive": 3, "\\Junk": 4, "\\Trash": 5}


@dataclass
class WebState:
    server: Any
    sessions: Sessions = field(default_factory=Sessions)
    listing: Listing | None = None
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    throttle: LoginThrottle | None = None
    status_cache: dict[int, tuple[tuple[int, int], Any]] = field(default_factory=dict)


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["size"] = human_size
    env.filters["when"] = when
    env.filters["addrs"] = lambda items: ", ".join(readable_address(n, a) for n, a in items)
    return env


def when(ts: float | None) -> str:
    if not ts:
        return ""
    now = time.time()
    lt = time.localtime(ts)
    if now - ts < 20 * 3600 and time.localtime(now).tm_yday == lt.tm_yday:
        return time.strftime("%H:%M", lt)
    if now - ts < 300 * 86400:
        return time.strftime("%d %b", lt)
    return time.strftime("%Y-%m-%d", lt)


TEMPLATES = _env()


def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    session: Session | None = getattr(request.state, "session", None)
    html = TEMPLATES.get_template(name).render(request=request, session=session, **ctx)
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

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for k, v in self.DEFAULTS:
                    if k not in present:
                        headers.append((k, v))
                if not static and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- helpers ---------------------------------------------------------------
def state(request: Request) -> WebState:
    return request.app.state.web


def current(request: Request) -> Session:
    session = state(request).sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise HTTPException(401)
    request.state.session = session
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
        box = await state(request).server.store.get_mailbox_by_id(int(box_id))
    except (TypeError, ValueError):
        box = None
    if box is None or box.account_id != session.account_id:
        raise HTTPException(404, "no such folder")
    return box


async def special(request: Request, session: Session, use: str) -> Mailbox:
    store = state(request).server.store
    for box in await store.list_mailboxes(session.account_id):
        if box.special_use == use:
            return box
    name = use.lstrip("\\")
    box = await store.get_mailbox(session.account_id, name)
    if box is None:
        box = await store.create_mailbox(session.account_id, name, use)
    return box


async def folders(request: Request, session: Session) -> list[dict]:
    store = state(request).server.store
    boxes = await store.list_mailboxes(session.account_id)
    out = []
    cache = state(request).status_cache
    for box in boxes:
        # a mailbox's counts change only when its highest mod-sequence does
        hit = cache.get(box.id)
        if hit is not None and hit[0] == (box.uid_validity, box.highest_modseq):
            status = hit[1]
        else:
            status = await store.mailbox_status(box.id)
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
        return await state(request).server.store.read_message(box.id, uid)
    except NotFound:
        raise HTTPException(404, "no such message") from None


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def notice_url(url: str, text: str) -> str:
    from urllib.parse import quote

    return f"{url}{'&' if '?' in url else '?'}notice={quote(text)}"


def _safe_back(value: Any, fallback: str) -> str:
    # only local paths: never an open redirect
    if isinstance(value, str) and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return fallback


# --- login / logout ----------------------------------------------------------
async def login_form(request: Request) -> Response:
    if state(request).sessions.get(request.cookies.get(SESSION_COOKIE)):
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
    if not plaintext_ok(web.server, request, ip):
        return _login_page(request, "Passwords are accepted only over HTTPS here.", username, 403)
    throttle = web.throttle
    assert throttle is not None
    verdict = throttle.before_attempt(ip, username or None, time.monotonic())
    if isinstance(verdict, Locked):
        return _login_page(request, "Too many failed logins. Try again later.", username, 429)
    if verdict:
        await asyncio.sleep(verdict)
    store = web.server.store
    account: Account | None = None
    try:
        account = await store.get_account(username) if username and "@" in username else None
    except StoreError:
        account = None
    ok = await verify_password_async(account.password_hash if account else None, password)
    if not ok or account is None:
        throttle.record_failure(ip, username or None, time.monotonic())
        log.info("web login failed for %r from %s", username, ip)
        return _login_page(request, "Wrong address or password.", username, 401)
    throttle.record_success(ip, username, time.monotonic())
    session, cookie = web.sessions.create(account.id, account.address)
    response = redirect("/")
    response.set_cookie(SESSION_COOKIE, cookie, **cookie_kwargs(request))
    response.delete_cookie(LOGIN_COOKIE, path="/")
    log.info("web login %s from %s", account.address, ip)
    return response


def plaintext_ok(server: Any, request: Request, ip: str) -> bool:
    """The same rule as the mail protocols (config [auth]): a password in the
    clear only over TLS, from loopback (e.g. a TLS-terminating proxy on this
    host), or where the administrator allows it everywhere."""
    if request.url.scheme == "https":
        return True
    cfg = getattr(server.config, "auth", None)
    if cfg is None:
        return True
    try:
        loopback = ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback
    except ValueError:
        loopback = False
    return bool(getattr(cfg, "allow_plaintext_insecure", False)
                or (getattr(cfg, "allow_plaintext_on_loopback", True) and loopback))


async def logout(request: Request) -> Response:
    session = current(request)
    await checked_form(request, session)
    state(request).sessions.drop(session)
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- folders and lists ---------------------------------------------------------
async def home(request: Request) -> Response:
    session = current(request)
    inbox = await state(request).server.store.get_mailbox(session.account_id, "INBOX")
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
    query = (qp.get("q") or "").strip()[:200]
    only = await web.server.store.search_text(box.id, query, "text") if query else None
    assert web.listing is not None
    preparing = None
    try:
        pg = await web.listing.page(box, sort, descending, _int(qp.get("after")), _int(qp.get("before")), only)
    except NotReady as progress:
        # first sort of a big folder by sender/subject: show date order meanwhile
        preparing = progress
        pg = await web.listing.page(box, "date", True, None, None, only)
    ctx = {
        "box": box, "folders": await folders(request, session), "pg": pg, "sort": sort,
        "dir": "desc" if descending else "asc", "q": query, "page_size": PAGE_SIZE,
        "notice": qp.get("notice", ""), "is_trash": box.special_use == "\\Trash",
        "preparing": preparing,
    }
    if qp.get("fragment"):
        list_html = TEMPLATES.get_template("_list.html").render(request=request, session=session, **ctx)
        nav_html = TEMPLATES.get_template("_folders.html").render(request=request, session=session, **ctx)
        return JSONResponse({"list": list_html, "folders": nav_html, "modseq": box.highest_modseq})
    return page(request, "mailbox.html", **ctx)


async def message_view(request: Request) -> Response:
    session = current(request)
    box = await own_mailbox(request, session, request.path_params["box_id"])
    uid = request.path_params["uid"]
    raw = await read_raw(request, box, uid)
    store = state(request).server.store
    view = render.build_view(raw)
    key = f"{box.id}:{uid}"
    if request.query_params.get("remote") == "1":
        session.remote_ok.add(key)
    allow_remote = key in session.remote_ok
    blocked = False
    if view.html is not None:
        _safe, blocked = render.sanitize_html(view.html, f"/box/{box.id}/msg/{uid}", view.cids, allow_remote)
    info = await _info(request, box, uid)
    if info is not None and "\\Seen" not in info.flags:
        await store.store_flags(box.id, [uid], ["\\Seen"], "add")
        info = await _info(request, box, uid) or info
    return page(
        request, "message.html", box=box, uid=uid, view=view, info=info,
        folders=await folders(request, session), blocked=blocked, allow_remote=allow_remote,
        show_headers=request.query_params.get("headers") == "1",
        notice=request.query_params.get("notice", ""),
        back=_safe_back(request.query_params.get("back"), f"/box/{box.id}"),
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
    view = render.build_view(await read_raw(request, box, uid))
    allow_remote = f"{box.id}:{uid}" in session.remote_ok
    if view.html is not None:
        body, _ = render.sanitize_html(view.html, f"/box/{box.id}/msg/{uid}", view.cids, allow_remote)
    else:
        import html as _html

        body = f"<pre>{_html.escape(view.text or '')}</pre>"
    doc = (
        "<!doctype html><html><head><meta charset=\"utf-8\">"
        "<style>body{font:15px/1.45 system-ui,sans-serif;margin:8px;color:#111;word-wrap:break-word}"
        "pre{white-space:pre-wrap}img{max-width:100%;height:auto}</style></head><body>"
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
    view = render.build_view(await read_raw(request, box, uid))
    part = view.parts.get(request.path_params["spec"])
    if part is None:
        raise HTTPException(404, "no such part")
    data = render.part_bytes(part.part)
    ctype = part.content_type
    inline = request.query_params.get("inline") == "1" and ctype in (
        "image/png", "image/gif", "image/jpeg", "image/webp", "image/bmp")
    if ctype.startswith("text/"):
        charset = part.part.get_content_charset()
        if charset and charset.isascii() and charset.replace("-", "").replace("_", "").isalnum():
            ctype += f"; charset={charset}"
    headers = {
        "Content-Disposition": render.content_disposition("inline" if inline else "attachment",
                                                          part.filename),
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
    store = state(request).server.store
    uids = sorted({u for u in (_int(v) for v in form.getlist("uid")) if u is not None and u > 0})
    action = str(form.get("action") or "")
    back = _safe_back(form.get("back"), f"/box/{box.id}")
    if action == "empty":
        if box.special_use != "\\Trash":
            raise HTTPException(400, "only the Trash can be emptied")
        infos = await store.list_messages(box.id)
        removed = await store.expunge(box.id, [m.uid for m in infos])
        return redirect(notice_url(f"/box/{box.id}", f"Trash emptied ({len(removed)} messages)."))
    if not uids:
        return redirect(notice_url(back, "No message selected."))
    flag_ops = {
        "read": ("\\Seen", "add"), "unread": ("\\Seen", "remove"),
        "flag": ("\\Flagged", "add"), "unflag": ("\\Flagged", "remove"),
    }
    if action in flag_ops:
        flag, mode = flag_ops[action]
        await store.store_flags(box.id, uids, [flag], mode)  # type: ignore[arg-type]
        if action == "unread" and back.startswith(f"/box/{box.id}/msg/"):
            back = f"/box/{box.id}"  # reading it again would mark it read
        return redirect(back)
    if action == "move":
        target = await own_mailbox(request, session, form.get("target"))
        if target.id == box.id:
            return redirect(back)
        moved = await store.copy_messages(box.id, uids, target.id, move=True)
        return redirect(notice_url(f"/box/{box.id}", f"{len(moved)} moved to {target.name}."))
    if action == "delete":
        if box.special_use == "\\Trash":
            removed = await store.expunge(box.id, uids)
            return redirect(notice_url(f"/box/{box.id}", f"{len(removed)} deleted for good."))
        trash = await special(request, session, "\\Trash")
        moved = await store.copy_messages(box.id, uids, trash.id, move=True)
        return redirect(notice_url(f"/box/{box.id}", f"{len(moved)} moved to Trash."))
    raise HTTPException(400, "unknown action")


# --- folder management -----------------------------------------------------------
async def folders_view(request: Request) -> Response:
    session = current(request)
    return page(request, "folders.html", folders=await folders(request, session),
                notice=request.query_params.get("notice", ""), error="")


async def folder_action(request: Request) -> Response:
    session = current(request)
    form = await checked_form(request, session)
    store = state(request).server.store
    action = str(form.get("action") or "")
    try:
        if action == "create":
            name = str(form.get("name") or "").strip()
            parent = str(form.get("parent") or "")
            if parent:
                name = f"{(await own_mailbox(request, session, parent)).name}/{name}"
            await store.create_mailbox(session.account_id, name)
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


async def compose_view(request: Request) -> Response:
    session = current(request)
    qp = request.query_params
    draft = Draft(to=qp.get("to", "")[:2000])
    for mode in ("reply", "replyall", "forward", "draft"):
        ref = qp.get(mode)
        if not ref:
            continue
        box_id, _, uid_s = ref.partition(":")
        box = await own_mailbox(request, session, box_id)
        uid = _int(uid_s)
        if uid is None:
            raise HTTPException(404)
        raw = await read_raw(request, box, uid)
        view = render.build_view(raw)
        if mode in ("reply", "replyall"):
            # HTML to text is pure Python: in a thread, so a big message does not hold the event loop
            reply = await asyncio.to_thread(build_reply, parse_message(raw), {session.address}, mode == "replyall")
            draft.to = readable_addresses(reply.to)
            draft.cc = readable_addresses(reply.cc)
            draft.subject = reply.subject
            draft.body = f"\n\n{reply.quoted}"
            draft.in_reply_to = reply.in_reply_to or ""
            draft.references = " ".join(reply.references)
            draft.reply_to = f"{box.id}:{uid}"
        elif mode == "forward":
            draft.subject = forward_subject(view.subject)
            draft.body = "\n\n(The forwarded message is attached.)\n"
            draft.forward = f"{box.id}:{uid}"
        else:  # resume a draft
            draft.to = ", ".join(readable_address(n, a) for n, a in view.to)
            draft.cc = ", ".join(readable_address(n, a) for n, a in view.cc)
            msg = parse_message(raw)
            draft.bcc = readable_addresses(mailboxes(msg, "Bcc"))
            draft.subject = view.subject
            draft.body = view.text or ""
            draft.in_reply_to = render._raw_header(msg, "in-reply-to").strip()
            draft.references = " ".join(render._raw_header(msg, "references").split())
            draft.draft_uid = str(uid)
            draft.kept = [(p.spec, p.filename, p.content_type, len(render.part_bytes(p.part)))
                          for p in view.attachments]
    return page(request, "compose.html", draft=draft, folders=await folders(request, session), errors=[],
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
    store = web.server.store
    action = str(form.get("action") or "send")
    draft = Draft(**{k: str(form.get(k) or "") for k in (
        "to", "cc", "bcc", "subject", "body", "in_reply_to", "references", "draft_uid", "forward",
        "reply_to")})
    errors: list[str] = []
    to = parse_recipients(draft.to, "To", errors)
    cc = parse_recipients(draft.cc, "Cc", errors)
    bcc = parse_recipients(draft.bcc, "Bcc", errors)
    if action == "send" and not (to or cc or bcc) and not errors:
        errors.append("Add at least one recipient.")
    attachments: list[Any] = []
    total = 0
    limit = web.server.config.smtp.max_message_size
    for upload in form.getlist("attachment"):
        if isinstance(upload, UploadFile) and upload.filename:
            data = await upload.read()
            total += len(data)
            name = render.safe_filename(upload.filename)
            ctype = (upload.content_type or "").split(";")[0].strip().lower()
            if "/" not in ctype or any(c in ctype for c in "\r\n\"") or ctype == "application/x-unknown":
                ctype = None  # compose() guesses from the name
            attachments.append(Attachment(name, data, ctype))
    drafts = await special(request, session, "\\Drafts")
    old_draft = _int(draft.draft_uid)
    if old_draft is not None:
        try:
            old_raw = await store.read_message(drafts.id, old_draft)
        except NotFound:
            old_raw = None
        if old_raw is not None:
            old_view = render.build_view(old_raw)
            keep = set(form.getlist("keep"))
            for p in old_view.attachments:
                if p.spec in keep:
                    if p.content_type == "message/rfc822":
                        payload = p.part.get_payload()
                        attachments.append(payload[0] if isinstance(payload, list) else p.part)
                    else:
                        data = render.part_bytes(p.part)
                        total += len(data)
                        attachments.append(Attachment(p.filename, data, p.content_type))
    if draft.forward:
        box_id, _, uid_s = draft.forward.partition(":")
        fbox = await own_mailbox(request, session, box_id)
        fuid = _int(uid_s)
        if fuid is None:
            raise HTTPException(404)
        fraw = await read_raw(request, fbox, fuid)
        total += len(fraw)
        attachments.append(forward_attachment(fraw))
    if total > limit:
        errors.append(f"The attachments are too large (at most {human_size(limit)} in all).")
    msg = None
    if not errors:
        try:
            msg = compose(
                (None, session.address), to, cc=cc, bcc=bcc, subject=draft.subject,
                text=draft.body.replace("\r\n", "\n"), attachments=attachments,
                in_reply_to=draft.in_reply_to or None,
                references=[r for r in draft.references.split() if r.startswith("<")],
                extra_headers=[("User-Agent", "mailyard webmail")],
            )
        except ValueError as exc:
            errors.append(str(exc))
    if errors or msg is None:
        if draft.forward:
            draft.body = draft.body  # keep
        return page(request, "compose.html", status=400, draft=draft,
                    folders=await folders(request, session), errors=errors)
    full = to_bytes(msg)
    if action == "save":
        uid = await store.append(drafts.id, full, ["\\Draft", "\\Seen"])
        if old_draft is not None:
            await store.expunge(drafts.id, [old_draft])
        draft.draft_uid = str(uid)
        return redirect(notice_url(f"/compose?draft={drafts.id}:{uid}", "Draft saved."))
    wire = to_bytes(msg, strip_bcc=True)
    recipients = [a for _, a in to + cc + bcc]
    account = await store.get_account_by_id(session.account_id)
    if account is None:
        raise HTTPException(401)
    try:
        await submit_message(web.server, account, wire, recipients,
                             client_ip=request.client.host if request.client else "127.0.0.1",
                             protocol="HTTP", helo="webmail")
    except SubmissionRefused as exc:
        return page(request, "compose.html", status=400, draft=draft,
                    folders=await folders(request, session), errors=[f"Not sent: {exc}"])
    sent = await special(request, session, "\\Sent")
    await store.append(sent.id, full, ["\\Seen"])
    if old_draft is not None:
        await store.expunge(drafts.id, [old_draft])
    if draft.reply_to:
        box_id, _, uid_s = draft.reply_to.partition(":")
        with _suppress():
            rbox = await own_mailbox(request, session, box_id)
            if _int(uid_s):
                await store.store_flags(rbox.id, [int(uid_s)], ["\\Answered"], "add")
    inbox = await store.get_mailbox(session.account_id, "INBOX")
    return redirect(notice_url(f"/box/{inbox.id if inbox else sent.id}", "Message sent."))


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
    store = web.server.store
    mine = {b.id for b in await store.list_mailboxes(session.account_id)}
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1000)

    def on_change(mailbox_id: int) -> None:
        if mailbox_id in mine or mailbox_id not in known:
            with _ignore_full():
                queue.put_nowait(mailbox_id)

    known: set[int] = set(mine)
    remove = store.add_listener(on_change)

    async def stream() -> Any:
        closer = asyncio.ensure_future(web.closing.wait())
        waiter: asyncio.Future | None = None
        try:
            yield "retry: 3000\n\n"
            while not web.closing.is_set():
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
    session = state(request).sessions.get(request.cookies.get(SESSION_COOKIE))
    request.state.session = session
    return page(request, "error.html", status=exc.status_code, status_code=exc.status_code,
                detail=exc.detail or "", folders=[])


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


def create_app(server: Any) -> Starlette:
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
        Route("/folders", folders_view),
        Route("/folders", folder_action, methods=["POST"]),
        Route("/compose", compose_view, methods=["GET"]),
        Route("/compose", compose_submit, methods=["POST"]),
        Route("/events", events),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={HTTPException: http_error},
    )
    throttle = getattr(server, "throttle", None)
    if not isinstance(throttle, LoginThrottle):
        # until the server has one shared throttle (issue #5): one for the web
        throttle = LoginThrottle()
    app.state.web = WebState(server, throttle=throttle, listing=Listing(server.store))
    return app


__all__ = ["create_app"]
