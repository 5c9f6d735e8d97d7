"""Reading one message: its page, the sanitised body for the page's
sandboxed frame, its parts (attachments, inline images) and its raw source.

Parsing and sanitising run in the render pool (worker.py, render.py); the
body prepared with a page waits in ``WebState.bodies`` for its frame's
request. Remote content is shown only where the session allowed it for the
message or the user's list allows its sender (contacts.py).
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..message.dates import format_date
from . import contacts, render
from .pages import (
    body_key,
    current,
    folders,
    message_info,
    own_mailbox,
    page,
    read_raw,
    redirect,
    safe_back,
    state,
    too_complex,
)
from .security import DOWNLOAD_CSP, body_csp
from .worker import TooComplex


async def message_view(request: Request) -> Response:
    session = current(request)
    box = await own_mailbox(request, session, request.path_params["box_id"])
    uid = request.path_params["uid"]
    if box.special_use == "\\Drafts" and request.query_params.get("view") != "1":
        # a draft opens in the editor (?view=1 shows it as a message)
        if await message_info(request, box, uid) is None:
            raise HTTPException(404, "no such message")
        return redirect(f"/compose?draft={box.id}:{uid}")
    raw = await read_raw(request, box, uid)
    web = state(request)
    store = web.services.store
    key = f"{box.id}:{uid}"
    if request.query_params.get("remote") == "1" or contacts.remote_allowed(raw, box):
        session.remote_ok.add(key)
    allow_remote = key in session.remote_ok
    back = safe_back(request.query_params.get("back"), f"/box/{box.id}")
    try:
        view = await web.pool.run(render.show, raw, f"/box/{box.id}/msg/{uid}", allow_remote)
    except TooComplex as exc:
        return too_complex(request, box, uid, str(exc), await folders(request, session), back)
    del raw
    web.bodies.put(body_key(session, box, uid, allow_remote), view.body or "")
    blocked = view.blocked
    info = await message_info(request, box, uid)
    if not view.date and info is not None:
        # No Date field: the arrival time, as the mailbox list shows it.
        view.date = format_date(info.internal_date)
    if info is not None and "\\Seen" not in info.flags:
        await store.store_flags(box, [uid], ["\\Seen"], "add")
        info = await message_info(request, box, uid) or info
    return page(
        request, "message.html", box=box, uid=uid, view=view, info=info,
        folders=await folders(request, session), blocked=blocked, allow_remote=allow_remote,
        show_headers=request.query_params.get("headers") == "1",
        notice=request.query_params.get("notice", ""),
        back=back,
    )


async def message_body(request: Request) -> Response:
    """The sanitised HTML body (or the text body as HTML) for the sandboxed iframe."""
    session = current(request)
    box = await own_mailbox(request, session, request.path_params["box_id"])
    uid = request.path_params["uid"]
    web = state(request)
    allow_remote = f"{box.id}:{uid}" in session.remote_ok
    key = body_key(session, box, uid, allow_remote)
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
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Message body</title>"
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


def routes() -> list[Route]:
    return [
        Route("/box/{box_id:int}/msg/{uid:int}", message_view),
        Route("/box/{box_id:int}/msg/{uid:int}/body", message_body),
        Route("/box/{box_id:int}/msg/{uid:int}/raw", message_raw),
        Route("/box/{box_id:int}/msg/{uid:int}/part/{spec:str}", message_part),
    ]
