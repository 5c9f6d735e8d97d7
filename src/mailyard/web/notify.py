"""What a desktop notification of new mail says: ``GET /events/newest``.

The page's live updates (``/events``, app.js) notice that INBOX has more
unread messages; app.js then asks this route for the sender and subject of
the newest unread message that arrived after the last one it announced
(``?after=<uid>``), and how many more arrived with it, and shows
"Sender: Subject" plus "and N more". The route answers only for the
session's own account and INBOX, only to this site's own pages (a request
a browser marks as coming from another site gets nothing: ``Sec-Fetch-Site``),
and never to a cache (``no-store``); ``after`` is checked as a number.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import pages
from .listing import sender_of, subject_of

# Unread messages looked at per request: enough for any burst of new mail
# between two updates; more only changes "and N more".
MAX_LOOKED_AT = 500


async def newest(request: Request) -> Response:
    session = pages.current(request)
    headers = {"Cache-Control": "no-store"}
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return JSONResponse({"error": "not from this site"}, status_code=403, headers=headers)
    raw = request.query_params.get("after", "")
    after = int(raw) if raw.isdigit() and len(raw) <= 10 else None
    web = pages.state(request)
    store = web.services.store
    inbox = await store.get_mailbox(session.account_id, "INBOX")
    if inbox is None or inbox.account_id != session.account_id:
        return JSONResponse({"uid": 0, "count": 0}, headers=headers)
    uids = sorted(await web.listing.arrivals(inbox))
    last = uids[-1] if uids else 0
    if after is None:
        # the page's starting point: nothing is announced of what is there
        return JSONResponse({"uid": last, "count": 0}, headers=headers)
    fresh = [u for u in uids[-MAX_LOOKED_AT:] if u > after]
    infos = await store.get_messages(inbox, fresh) if fresh else []
    unread = [i.uid for i in infos if "\\Seen" not in i.flags and "\\Deleted" not in i.flags]
    if not unread:
        return JSONResponse({"uid": last, "count": 0}, headers=headers)
    top = unread[-1]
    derived = (await store.get_derived(inbox, [top], fields=("envelope",))).get(top, {})
    name, address = sender_of(derived)
    return JSONResponse({"uid": last, "count": len(unread), "from": (name or address)[:200],
                         "subject": subject_of(derived)[:300]}, headers=headers)


def routes() -> list[Route]:
    return [Route("/events/newest", newest, methods=["GET"])]
