"""Webmail conversations: the message list grouped by thread, and reading a
whole thread on one page; and the print view of a message.

A conversation is a thread of RFC 5256's THREAD=REFERENCES (References and
In-Reply-To, then messages of the same base subject gathered; the algorithm
is message/threading.py, the one IMAP THREAD runs) over a folder *and* its
companion: the Sent folder for every other folder (so the user's replies are
part of the thread), the Inbox for Sent. The keys come from the store
(``thread_keys``, typed columns kept at delivery), so no message is read.

The threads of a folder are built once and kept per folder; they are built
again only when messages come or go in the folder or its companion (a
``MailboxView`` of each, kept current from ``changes_since``), not when flags
change. Users who prefer the flat list turn the per-user setting
``conversations`` off; Drafts, Junk and Trash are always flat, and so is any
list sorted by sender or subject, or searched.

A conversation's page shows its read messages folded and the unread ones
and the newest open, marking them read. Its toolbar's actions post the
conversation list's form (``whole=1`` and the UID the page is of, expanded
by ``whole``), so they act on the conversation's messages in this folder
and offer the same Undo; its Reply, Reply all and Forward answer the
newest message someone other than the user wrote.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ..gcpause import gc_paused
from ..message.threading import Node, ThreadMessage, references, release
from ..store.api import Mailbox, Store
from ..store.view import MailboxView
from . import prefs, render, searchquery
from .listing import Row, has_attachment, preview_text, sender_of, sorted_in_turns, subject_of
from .pages import (
    TEMPLATES,
    body_key,
    current,
    folders,
    own_mailbox,
    page,
    read_raw,
    safe_back,
    state,
)
from .worker import TooComplex

if TYPE_CHECKING:
    from starlette.requests import Request

    from ..message.threadkeys import ThreadKeys
    from .security import Session

FLAT_USES = ("\\Drafts", "\\Junk", "\\Trash")
MAX_CACHED = 16
# a conversation page shows at most this many messages (the newest)
MAX_SHOWN = 100
# messages without References/In-Reply-To links join a conversation of the
# same base subject only when sent within the same window of this many seconds
SUBJECT_WINDOW = 30 * 86400


@dataclass
class Threads:
    """The conversations of one folder and its companion."""

    # per conversation: its members (mailbox id, uid, sent date), oldest first
    members: list[list[tuple[int, int, float]]]
    of: dict[tuple[int, int], int]  # (mailbox id, uid) -> conversation index
    # the conversations with a message in the folder, by the arrival of their
    # newest message there, ascending: (arrival, that message's uid, index)
    order: list[tuple[float, int, int]] = field(default_factory=list)


@dataclass
class _Entry:
    views: dict[int, MailboxView[float]] = field(default_factory=dict)
    threads: Threads | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Conversations:
    """Per folder: its threads, rebuilt only when messages come or go."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._entries: OrderedDict[tuple[int, int], _Entry] = OrderedDict()

    async def threads(self, box: Mailbox, companion: Mailbox | None) -> Threads:
        key = (box.id, companion.id if companion is not None else 0)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            while len(self._entries) > MAX_CACHED:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        boxes = [b for b in (box, companion) if b is not None]
        async with entry.lock:
            moved = entry.threads is None
            for b in boxes:
                view = entry.views.setdefault(b.id, MailboxView(_arrival))
                if (await view.refresh(self.store, b)).moved:
                    moved = True
            if moved:
                # forgotten first: a build cancelled midway (the request gone)
                # leaves none, so the next request builds again rather than
                # keep threads without the messages the views took in
                entry.threads = None
                entry.threads = await self._build(boxes, entry.views)
            assert entry.threads is not None
            return entry.threads

    async def _build(self, boxes: list[Mailbox], views: dict[int, MailboxView[float]]) -> Threads:
        keys = [(b.id, await self.store.thread_keys(b, list(views[b.id]))) for b in boxes]
        # the threads of a big folder take a second of CPU: in a thread, as
        # IMAP THREAD does (the views stay still: their refresh waits for the
        # entry's lock, held here)
        return await asyncio.to_thread(_grouped, keys, boxes[0].id, views[boxes[0].id].entries)


def _arrival(info: Any) -> float:
    return info.internal_date


def _grouped(keys: list[tuple[int, dict[int, ThreadKeys]]], box_id: int, arrival: dict[int, float]) -> Threads:
    with gc_paused():  # a burst of small objects: the threading's cycles are released (release)
        return _group(keys, box_id, arrival)


def _group(keys: list[tuple[int, dict[int, ThreadKeys]]], box_id: int, arrival: dict[int, float]) -> Threads:
    """RFC 5256 REFERENCES threads of the messages of ``keys`` (per mailbox
    id, each message's thread keys), flattened to member lists; the
    conversations ordered by the ``arrival`` of their newest message in
    mailbox ``box_id``."""
    msgs: list[ThreadMessage] = []
    where: list[tuple[int, int]] = []
    for b_id, found_keys in keys:
        for uid, (date, subject, refwd, mid, parents) in found_keys.items():
            # ThreadMessage.uid holds the index into ``where``; the base
            # subject carries its time window, so step 5 of REFERENCES
            # gathers messages of one subject only within a window
            # ("Lunch?" next month is another conversation)
            if subject:
                subject = f"{subject}\0{int(date // SUBJECT_WINDOW)}"
            msgs.append(ThreadMessage(len(msgs) + 1, len(where), date, subject, refwd, mid, parents))
            where.append((b_id, uid))
    roots = references(msgs)
    members: list[list[tuple[int, int, float]]] = []
    of: dict[tuple[int, int], int] = {}
    for root in roots:
        found: list[tuple[int, int, float]] = []
        stack: list[Node] = [root]
        while stack:
            n = stack.pop()
            if n.msg is not None:
                b_id, uid = where[n.msg.uid]
                found.append((b_id, uid, n.msg.date))
            stack.extend(n.children)
        found.sort(key=lambda m: (m[2], m[0], m[1]))
        index = len(members)
        members.append(found)
        for b_id, uid, _d in found:
            of[(b_id, uid)] = index
    release(roots)
    latest: dict[int, tuple[float, int]] = {}
    for uid, when in arrival.items():
        c = of.get((box_id, uid))
        if c is not None:
            old = latest.get(c)
            if old is None or (when, uid) > old:
                latest[c] = (when, uid)
    order = sorted_in_turns([(w, u, c) for c, (w, u) in latest.items()])
    return Threads(members, of, order)


@dataclass
class ConvRow:
    """One line of the conversation list: the newest message of the
    conversation in this folder (``row``), how many messages it has in all,
    who wrote them, and whether any here is unread."""

    row: Row
    count: int
    senders: str
    unread: bool
    href: str


@dataclass
class ConvPage:
    rows: list[ConvRow]
    total: int
    start: int
    prev: int | None
    next: int | None


def _web(request: Request) -> Any:
    web = state(request)
    if getattr(web, "conversations", None) is None:
        web.conversations = Conversations(web.services.store)
    return web


async def companion_of(store: Store, session: Session, box: Mailbox) -> Mailbox | None:
    """The folder whose messages join this one's threads: Sent, or for Sent the Inbox."""
    boxes = await store.list_mailboxes(session.account_id)
    if box.special_use == "\\Sent":
        return next((b for b in boxes if b.name == "INBOX"), None)
    return next((b for b in boxes if b.special_use == "\\Sent" and b.id != box.id), None)


async def list_page(request: Request, session: Session, box: Mailbox, query: str, sort: str) -> ConvPage | None:
    """The conversation list of ``box`` for the mailbox page, or None for the
    flat list (setting off, a folder shown flat, sorted other than by date,
    searched)."""
    web = _web(request)
    store: Store = web.services.store
    if query or sort != "date" or box.special_use in FLAT_USES:
        return None
    if not prefs.current().conversations:
        return None
    page_size = prefs.current().per_page
    qp = request.query_params
    descending = qp.get("dir", "desc") != "asc"
    companion = await companion_of(store, session, box)
    threads = await web.conversations.threads(box, companion)
    order = threads.order
    try:
        start = max(0, int(qp.get("start") or 0))
    except ValueError:
        start = 0
    if descending:
        end = max(0, len(order) - start)
        chunk = order[max(0, end - page_size) : end][::-1]
    else:
        chunk = order[start : start + page_size]
    uids = [u for _w, u, _c in chunk]
    derived = await store.get_derived(box, uids, fields=("envelope", "bodystructure", "preview")) if uids else {}
    infos = {m.uid: m for m in await store.get_messages(box, uids)} if uids else {}
    flags = await searchquery.info_index(web).rows(box)  # uid -> (flag bits, size, date), kept current
    rows: list[ConvRow] = []
    for _w, uid, c in chunk:
        info = infos.get(uid)
        if info is None:
            continue
        d = derived.get(uid, {})
        name, addr = sender_of(d)
        members = threads.members[c]
        unread = any(not flags[u][0] & searchquery.SEEN for b, u, _d in members if b == box.id and u in flags)
        row = Row(uid, info, name, addr, subject_of(d), info.internal_date, has_attachment(d.get("bodystructure")),
                  *sender_of(d, 5), preview_text(d.get("preview")))
        href = f"/box/{box.id}/conv/{uid}" if len(members) > 1 else f"/box/{box.id}/msg/{uid}"
        rows.append(ConvRow(row, len(members), "", unread, href))
    await _fill_senders(store, box, companion, threads, chunk, rows)
    prev = max(0, start - page_size) if start > 0 else None
    nxt = start + page_size if start + page_size < len(order) else None
    return ConvPage(rows, len(order), start, prev, nxt)


async def _fill_senders(store: Store, box: Mailbox, companion: Mailbox | None, threads: Threads,
                        chunk: list[tuple[float, int, int]], rows: list[ConvRow]) -> None:
    """The names of up to three writers of each conversation with more than one message."""
    wanted: dict[int, set[int]] = {}
    for _w, _u, c in chunk:
        members = threads.members[c]
        if len(members) > 1:
            for b, u, _d in members[-3:]:
                wanted.setdefault(b, set()).add(u)
    boxes = {box.id: box, **({companion.id: companion} if companion is not None else {})}
    names: dict[tuple[int, int], str] = {}
    for b, uids in wanted.items():
        if b in boxes:
            for u, d in (await store.get_derived(boxes[b], sorted(uids), fields=("envelope",))).items():
                names[(b, u)] = sender_of(d)[0]
    for conv_row, (_w, _u, c) in zip(rows, chunk, strict=False):
        members = threads.members[c]
        if len(members) > 1:
            seen = list(dict.fromkeys(n for b, u, _d in members[-3:] if (n := names.get((b, u)))))
            conv_row.senders = ", ".join(seen)


async def whole(request: Request, session: Session, box: Mailbox, uids: list[int]) -> list[int]:
    """The UIDs of every message in ``box`` of the conversations the
    conversation list's checked rows (their newest message's UIDs) stand for:
    an action on a row acts on the whole conversation in this folder."""
    web = _web(request)
    threads = await web.conversations.threads(box, await companion_of(web.services.store, session, box))
    out = set(uids)
    for uid in uids:
        c = threads.of.get((box.id, uid))
        if c is not None:
            out.update(u for b, u, _d in threads.members[c] if b == box.id)
    return sorted(out)


# --- reading a conversation --------------------------------------------------------
def _own_addresses(session: Session) -> frozenset[str]:
    """The person's addresses, casefolded: the account's and its identities'."""
    return frozenset({session.address.casefold(), *(i.address.casefold() for i in prefs.current().identities)})


async def conversation_view(request: Request) -> Response:
    session = current(request)
    box = await own_mailbox(request, session, request.path_params["box_id"])
    uid = request.path_params["uid"]
    web = _web(request)
    store: Store = web.services.store
    companion = await companion_of(store, session, box)
    threads = await web.conversations.threads(box, companion)
    c = threads.of.get((box.id, uid))
    if c is None:
        raise HTTPException(404, "no such message")
    boxes = {box.id: box, **({companion.id: companion} if companion is not None else {})}
    members = threads.members[c][-MAX_SHOWN:]
    own = _own_addresses(session)
    shown = []
    unseen: dict[int, list[int]] = {}
    infos: dict[tuple[int, int], Any] = {}
    for b_id in boxes:
        uids = [u for b, u, _d in members if b == b_id]
        if uids:
            for m in await store.get_messages(boxes[b_id], uids):
                infos[(b_id, m.uid)] = m
    for b_id, m_uid, _d in members:
        info = infos.get((b_id, m_uid))
        if info is None:
            continue  # expunged meanwhile
        mbox = boxes[b_id]
        raw = await read_raw(request, mbox, m_uid)
        base = f"/box/{mbox.id}/msg/{m_uid}"
        allow_remote = f"{mbox.id}:{m_uid}" in session.remote_ok
        try:
            view = await web.pool.run(render.show, raw, base, allow_remote)
        except TooComplex:
            view = None
        del raw
        if view is not None:
            web.bodies.put(body_key(session, mbox, m_uid, allow_remote), view.body or "")
            view.body = None  # the frame fetches it
        unread = "\\Seen" not in info.flags
        if unread:  # shown open, so read (as a message's page marks it)
            unseen.setdefault(b_id, []).append(m_uid)
        mine = mbox.special_use == "\\Sent" or (view is not None and any(a.casefold() in own for _n, a in view.from_))
        shown.append({"box": mbox, "uid": m_uid, "view": view, "info": info, "base": base,
                      "allow_remote": allow_remote, "unread": unread, "open": unread, "mine": mine})
    if shown:
        shown[-1]["open"] = True
    for b_id, uids in unseen.items():
        await store.store_flags(boxes[b_id], uids, ["\\Seen"], "add")
    # Reply, Reply all and Forward of the toolbar answer the newest message
    # someone else wrote (the person's own last reply is no one to answer)
    answer = next((s for s in reversed(shown) if not s["mine"]), shown[-1] if shown else None)
    subject = next((s["view"].subject for s in shown if s["view"] is not None), "")
    back = safe_back(request.query_params.get("back"), f"/box/{box.id}")
    return page(request, "conversation.html", box=box, uid=uid, messages=shown, subject=subject, answer=answer,
                folders=await folders(request, session), back=back, notice=request.query_params.get("notice", ""),
                total=len(threads.members[c]))


async def print_view(request: Request) -> Response:
    """One message laid out for paper: its header fields, its body (the
    same sanitised HTML as the reading frame) and its attachment list."""
    session = current(request)
    box = await own_mailbox(request, session, request.path_params["box_id"])
    uid = request.path_params["uid"]
    raw = await read_raw(request, box, uid)
    base = f"/box/{box.id}/msg/{uid}"
    try:
        view = await state(request).pool.run(render.show, raw, base, f"{box.id}:{uid}" in session.remote_ok)
    except TooComplex as exc:
        raise HTTPException(422, f"This message is too complex to print ({exc}).") from None
    html = TEMPLATES.get_template("print.html").render(request=request, session=session, view=view, base=base)
    response = HTMLResponse(html)
    # the body is sanitised HTML: no script runs in it, its inline styles apply
    # on paper, and nothing is fetched from other sites
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
    return response


def routes() -> list[Route]:
    return [
        Route("/box/{box_id:int}/conv/{uid:int}", conversation_view),
        Route("/box/{box_id:int}/msg/{uid:int}/print", print_view),
    ]
