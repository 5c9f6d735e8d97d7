"""Folder management (``/folders``): the page listing the account's
folders, and creating, renaming and deleting them; INBOX and the
special-use folders (RFC 6154) are neither renamed nor deleted."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..store.api import StoreError
from .pages import checked_form, current, folders, notice_url, own_mailbox, page, redirect, state


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


def routes() -> list[Route]:
    return [
        Route("/folders", folders_view),
        Route("/folders", folder_action, methods=["POST"]),
    ]
