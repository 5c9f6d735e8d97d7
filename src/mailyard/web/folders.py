"""Folder management (``/folders``): the page listing the account's
folders, and creating, renaming and deleting them; INBOX and the
special-use folders (RFC 6154) are neither renamed nor deleted.

The page shows ``FOLDERS_PAGE`` folders at a time (``?start=``), those
whose name holds ``?q=`` when given, so that an account of thousands
(``[limits] max_mailboxes``) renders one page of rows, not one per folder;
an account of fewer than a page sees them all, with neither pager nor
filter. A new folder and a renamed one get the superiors they lack, as an
IMAP CREATE or RENAME does (RFC 9051 6.3.4, 6.3.6)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..store.api import StoreError
from .pages import (
    checked_form,
    current,
    folders,
    notice_url,
    own_mailbox,
    page,
    redirect,
    safe_back,
    state,
    to_int,
)

# folders per page of /folders: each is a table row with its own form
FOLDERS_PAGE = 200


def folders_url(start: int, q: str) -> str:
    """The folder page showing ``start`` onwards of the folders matching ``q``."""
    params = [(k, v) for k, v in (("start", str(start) if start else ""), ("q", q)) if v]
    return f"/folders?{urlencode(params)}" if params else "/folders"


async def _page(request: Request, session: Any, start: int, q: str, *, status: int = 200, notice: str = "",
                error: str = "") -> Response:
    """The folder page: the sidebar's folder list (its cached entries,
    ``pages.folders``) and, as rows, one page of those matching ``q``."""
    every = await folders(request, session)
    wanted = q.strip().casefold()
    # entry["order"][1] is the name casefolded, made once per entry
    matching = [f for f in every if wanted in f["order"][1]] if wanted else every
    total = len(matching)
    start = max(0, min(start, (total - 1) // FOLDERS_PAGE * FOLDERS_PAGE if total else 0))
    rows = matching[start:start + FOLDERS_PAGE]
    paged = len(every) > FOLDERS_PAGE or bool(q)
    return page(request, "folders.html", status=status, folders=every, rows=rows, paged=paged,
                parents=rows if len(every) > FOLDERS_PAGE else every, q=q, start=start, total=total,
                prev_url=folders_url(max(0, start - FOLDERS_PAGE), q) if start else "",
                next_url=folders_url(start + FOLDERS_PAGE, q) if start + FOLDERS_PAGE < total else "",
                back=folders_url(start, q), notice=notice, error=error)


def _query(request: Request) -> tuple[int, str]:
    q = request.query_params.get("q", "")[:200]
    return max(0, to_int(request.query_params.get("start")) or 0), q


async def folders_view(request: Request) -> Response:
    session = current(request)
    start, q = _query(request)
    return await _page(request, session, start, q, notice=request.query_params.get("notice", ""))


async def folder_action(request: Request) -> Response:
    session = current(request)
    form = await checked_form(request, session)
    store = state(request).services.store
    action = str(form.get("action") or "")
    # the page the form was on, its start and filter: where the answer leads
    back = safe_back(form.get("back"), "/folders")
    if not back.startswith("/folders"):
        back = "/folders"
    try:
        if action == "create":
            name = str(form.get("name") or "").strip()
            parent = str(form.get("parent") or "")
            if parent:
                name = f"{(await own_mailbox(request, session, parent)).name}/{name}"
            # subscribed, so IMAP clients that show only subscribed folders see it
            await store.create_mailbox(session.account_id, name, subscribe=True, superiors=True)
            return redirect(notice_url(back, f"Folder {name} created."))
        box = await own_mailbox(request, session, form.get("box"))
        if box.name == "INBOX" or box.special_use:
            raise StoreError(f"{box.name} is a special folder and cannot be renamed or deleted")
        if action == "rename":
            new = str(form.get("name") or "").strip()
            await store.rename_mailbox(session.account_id, box.name, new, superiors=True)
            return redirect(notice_url(back, f"Folder {box.name} renamed to {new}."))
        if action == "delete":
            await store.delete_mailbox(session.account_id, box.name)
            return redirect(notice_url(back, f"Folder {box.name} deleted."))
    except StoreError as exc:
        query = parse_qs(urlsplit(back).query)
        start = to_int(query.get("start", ["0"])[0]) or 0
        return await _page(request, session, max(0, start), query.get("q", [""])[0][:200], status=400,
                           error=str(exc))
    raise HTTPException(400, "unknown action")


def routes() -> list[Route]:
    return [
        Route("/folders", folders_view),
        Route("/folders", folder_action, methods=["POST"]),
    ]
