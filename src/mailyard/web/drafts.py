"""Webmail drafts and sender identity: the From a new message starts with
(the display name of the user's first identity) and the autosave endpoint
that keeps one current copy of the message being written in Drafts.

Autosave (``POST /compose/autosave``, by ``static/compose.js`` every few
seconds while the form changes; the form's "Save draft" button does the same
without JavaScript): the form becomes a message that is APPENDed to Drafts
with ``\\Draft`` and ``\\Seen`` (RFC 9051 2.3.2) and the version it replaces
is expunged, so Drafts holds one copy. The answer names the new UID, which
the page sends with its next save or with Send (which expunges it). The
files chosen in the form go with one save: the draft keeps them, and the
page lists them as its attachments (the "keep" boxes) rather than sending
them again. A save after the session ended is answered in JSON that says
so (compose.py ``ended``), and the page stops saving.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..message.reading import human_size
from . import prefs, render

if TYPE_CHECKING:
    from ..store.api import Mailbox
    from .security import Session


def identity() -> tuple[str | None, str | None]:
    """(display name, address) of the user's first identity (web/prefs.py);
    None for what it does not say (no name: From shows the address alone)."""
    identities = prefs.current().identities
    if not identities:
        return None, None
    first = identities[0]
    return first.name or None, first.address or None


def named(session: Session, address: str) -> tuple[str | None, str]:
    """``address`` with the identity's display name when the identity is
    that address (or names none: the account's own)."""
    name, id_address = identity()
    if name and address.casefold() == (id_address or session.address).casefold():
        return name, address
    return None, address


async def autosaved(request: Request, drafts: Mailbox, uid: int, full: bytes) -> Response:
    """The answer to an autosave: the new draft's UID and its attachments
    (part number, name, type, size) as the form's "keep" boxes list them."""
    from .worker import TooComplex

    web = request.app.state.web
    try:
        view = await web.pool.run(render.show, full, f"/box/{drafts.id}/msg/{uid}", False, False)
        kept = [[a.spec, a.filename, a.content_type, human_size(a.size)] for a in view.attachments]
    except TooComplex:
        kept = []
    return JSONResponse({"draft_uid": str(uid), "mailbox": drafts.id, "kept": kept})


def routes(compose_submit: Callable[[Request], Awaitable[Response]]) -> list[Route]:
    """``POST /compose/autosave``: the compose form's handler, saving (and
    answering in JSON) whatever button the form names."""

    async def autosave(request: Request) -> Response:
        request.state.autosave = True
        response = await compose_submit(request)
        if isinstance(response, JSONResponse):
            return response
        # a refusal the handler answers with a page (e.g. the quota)
        return JSONResponse({"error": "Not saved; press \u201cSave draft\u201d to see why."}, status_code=400)

    return [Route("/compose/autosave", autosave, methods=["POST"])]
