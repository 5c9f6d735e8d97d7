"""Live updates (``GET /events``): a page's stream of server-sent events
(HTML Living Standard 9.2) names each of the account's mailboxes that
changes (new mail, flags, expunge, from any client), fed by
``store.add_listener``. It first replays what changed since the page's
request began (recent.py, ``since``), and ends with the session."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..store.api import StoreUnavailable
from . import sessionlog as records
from .pages import current, state

log = logging.getLogger("mailyard.web")


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


def routes() -> list[Route]:
    return [Route("/events", events)]
