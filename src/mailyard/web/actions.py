"""Actions on the messages of a folder's list (``POST /box/{id}/action``):
mark read or unread, flag or unflag, move, archive, spam, delete (to the
Trash, or for good there) and empty the Trash; and the Undo in a move's
notice (``POST /undo-move``, over the record undomove.py keeps). A move
into or out of Junk teaches the spam learner (spam/learning.py)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..spam.learning import learn_kind
from ..store.api import Mailbox, StoreError
from . import conversations
from .pages import (
    checked_form,
    current,
    notice_url,
    own_mailbox,
    redirect,
    safe_back,
    special,
    state,
    to_int,
)

log = logging.getLogger("mailyard.web")


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
        if action == "unread":
            back = _off_message(back, box)  # reading it again would mark it read
        return redirect(back)
    if action == "move":
        if not form.get("target"):
            return redirect(notice_url(back, "Choose a folder to move to."))
        target = await own_mailbox(request, session, form.get("target"))
        if target.id == box.id:
            return redirect(back)
        moved = await store.copy_messages(box, uids, target, move=True)
        await _learn(request, session, box, target, moved)
        return _moved(request, session, box, target, moved, back)
    if action in ("archive", "spam"):
        # the account's special-use folders (RFC 6154 2): \Archive, \Junk
        target = await special(request, session, "\\Archive" if action == "archive" else "\\Junk")
        if target.id == box.id:
            return redirect(notice_url(back, f"Already in {target.name}."))
        moved = await store.copy_messages(box, uids, target, move=True)
        await _learn(request, session, box, target, moved)  # Spam: into Junk; Archive from Junk: out of it
        return _moved(request, session, box, target, moved, back)
    if action == "delete":
        if box.special_use == "\\Trash":
            removed = await store.expunge(box, uids)
            return redirect(notice_url(_off_message(back, box), f"{len(removed)} deleted for good."))
        trash = await special(request, session, "\\Trash")
        moved = await store.copy_messages(box, uids, trash, move=True)
        return _moved(request, session, box, trash, moved, back)
    raise HTTPException(400, "unknown action")


def _off_message(back: str, box: Mailbox) -> str:
    """Where to go from ``back`` once its message is gone from ``box``
    (moved, deleted) or would be read again (marked unread): for a message's
    or a conversation's page, the list it came from (its own ``back``,
    pages.py ``safe_back``), else the folder; any other page is ``back``
    itself."""
    path, _, query = back.partition("?")
    if not path.startswith((f"/box/{box.id}/msg/", f"/box/{box.id}/conv/")):
        return back
    return safe_back(next(iter(parse_qs(query).get("back", [])), None), f"/box/{box.id}")


def _moved(request: Request, session: Any, box: Mailbox, target: Mailbox, moved: list[tuple[int, int]],
           back: str) -> Response:
    """Back to the list the action came from (its folder, search and page)
    after a move, its notice with an Undo (undomove.py)."""
    token = state(request).moves.offer(session.account_id, box, target, moved)
    url = notice_url(_off_message(back, box), f"{len(moved)} moved to {target.name}.")
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
            # back to the list the Undo was pressed on (its search and page)
            record.done = notice_url(safe_back(form.get("back"), f"/box/{source.id}"), text)
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


def routes() -> list[Route]:
    return [
        Route("/box/{box_id:int}/action", message_action, methods=["POST"]),
        Route("/undo-move", undo_move, methods=["POST"]),
    ]
