"""What every webmail page needs, shared by app.py and the route modules.

The app's state (``WebState``) and the session of a request (``current``),
the templates and ``page`` that renders one, the folder list beside every
page, POST forms after their origin and CSRF checks (``checked_form``), the
account's own mailboxes and messages (404 for another account's), redirects
with a notice, and Back links that never leave the site. The route modules
(and app.py, which builds the app from them) import this one; it imports
none of them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from markupsafe import Markup, escape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..message.dates import to_timestamp
from ..message.reading import human_size, limit_size
from ..store.api import Mailbox, NotFound, Store, StoreError
from . import prefs, render
from . import sessionlog as records
from . import signatures as sig
from .listing import Listing
from .recent import RecentChanges
from .security import Session, Sessions, same_origin, token_ok
from .sendonce import SendOnce
from .undomove import MoveUndos
from .worker import RenderPool

if TYPE_CHECKING:
    from ..services import Services

log = logging.getLogger("mailyard.web")

HERE = Path(__file__).parent
MAX_UPLOAD_FILES = 50
SPECIAL_ORDER = {"INBOX": 0, "\\Drafts": 1, "\\Sent": 2, "\\Archive": 3, "\\Junk": 4, "\\Trash": 5}


class BodyCache:
    """Recently prepared message bodies, least recently used dropped first,
    at most ``max_chars`` characters in all. A message's bytes never change
    under one (mailbox id, UIDVALIDITY, UID), so an entry cannot go stale."""

    def __init__(self, max_chars: int = 8 * 1024 * 1024) -> None:
        from collections import OrderedDict

        self.max_chars = max_chars
        self._items: OrderedDict[tuple, str] = OrderedDict()
        self._chars = 0

    def get(self, key: tuple) -> str | None:
        body = self._items.get(key)
        if body is not None:
            self._items.move_to_end(key)
        return body

    def put(self, key: tuple, body: str) -> None:
        if len(body) > self.max_chars // 4 or key in self._items:
            return
        self._items[key] = body
        self._chars += len(body)
        while self._chars > self.max_chars:
            _, old = self._items.popitem(last=False)
            self._chars -= len(old)


@dataclass
class WebState:
    services: Services
    sessions: Sessions = field(default_factory=Sessions)
    listing: Listing | None = None
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    # each folder's entry in the folder list beside every page
    status_cache: FolderCache = field(default_factory=lambda: FolderCache())
    # parsing and sanitising for display run here, off the event loop (worker.py)
    pool: RenderPool = field(default_factory=RenderPool)
    # the sanitised body prepared with a read page, for its body frame's request
    bodies: BodyCache = field(default_factory=lambda: BodyCache())
    # the bound https port (0: no HTTPS listener), for the redirect of web/transport.py
    https_port: int = 0
    # flags, sizes and dates per mailbox for search operators (searchquery.py)
    info_index: Any = None
    # each folder's threads for the conversation list (conversations.py)
    conversations: Any = None
    # what changed lately, replayed when a page's event stream opens (recent.py)
    recent: RecentChanges = field(default_factory=RecentChanges)
    # the forms that sent lately: one send per form (sendonce.py)
    sends: SendOnce = field(default_factory=SendOnce)
    # the moves made lately, for the Undo of their notice (undomove.py)
    moves: MoveUndos = field(default_factory=MoveUndos)


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["size"] = human_size
    env.filters["limitsize"] = limit_size
    env.filters["when"] = when
    env.filters["addrs"] = render.draft_addresses
    env.filters["sent"] = sent_when
    # "pdf_preview_ok" is set by app.py from pdfpreview.py (which imports this module)
    return env


def when(ts: float | None) -> str:
    """A time as lists show it, in the user's zone and date format (prefs.py)."""
    return prefs.format_when(ts) if ts else ""


def sent_when(date: str) -> str:
    """A message's Date field as its page shows it: in full, in the user's
    zone and date format (prefs.py); as written when it is no date (or one
    no calendar holds). The field as written carries the sender's offset
    (RFC 5322 3.3), so the pages give it too, as the title."""
    ts = to_timestamp(date)
    if ts is None:
        return date
    try:
        return prefs.format_when(ts, full=True)
    except (ValueError, OverflowError, OSError):
        return date


TEMPLATES = _env()


def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    session: Session | None = getattr(request.state, "session", None)
    if name == "compose.html" and "attachment_limit" not in ctx:
        ctx["attachment_limit"] = render.attachment_limit(state(request).services.config.smtp.max_message_size)
    if name == "compose.html":
        ctx.setdefault("signatures", sig.previews(prefs.current()))
        sender = getattr(ctx.get("draft"), "sender", "") or (session.address if session else "")
        shown = sig.address_of(sender).casefold()
        ctx.setdefault("signature_shown", next((h for a, h in ctx["signatures"] if a == shown), ""))
    since = getattr(request.state, "since", None)
    html = TEMPLATES.get_template(name).render(request=request, session=session, live_since=since, **ctx)
    return HTMLResponse(html, status_code=status)


def state(request: Request) -> WebState:
    return request.app.state.web


def live_session(request: Request) -> Session | None:
    """The request's session, if it is still good: not expired, its record
    current, and its account neither removed nor given a new password since
    the login (by any process: ``mailyard user remove`` / ``user passwd``
    write the same store). ``sessionlog.SessionRecords`` checked all that
    for this request (waiting for the database if need be) and passed the
    session on; a request it did not check has none here. What the store
    knows in memory is looked at again (a revocation heard since), and a
    session this process ended meanwhile is gone."""
    web = state(request)
    session = records.checked_session(request.scope)
    if session is None or not web.sessions.holds(session):
        return None
    if web.services.store.credentials_known(session.account_id, session.epoch) is False:
        log.info("web: ending session of %s: account removed or password changed", session.address)
        web.sessions.drop(session)
        return None
    return session


def current(request: Request) -> Session:
    session = live_session(request)
    if session is None:
        raise HTTPException(401)
    request.state.session = session
    if not hasattr(request.state, "since"):
        request.state.since = time.time()  # where the page's live updates start
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
        box = await state(request).services.store.get_mailbox_by_id(session.account_id, int(box_id))
    except (TypeError, ValueError):
        box = None
    if box is None or box.account_id != session.account_id:
        raise HTTPException(404, "no such folder")
    return box


async def special(request: Request, session: Session, use: str) -> Mailbox:
    """The session's mailbox of special ``use`` (``special_mailbox``)."""
    return await special_mailbox(state(request).services.store, session.account_id, use)


async def special_mailbox(store: Store, account_id: int, use: str) -> Mailbox:
    """The account's mailbox of special ``use`` (RFC 6154, e.g. "\\Sent"):
    the one marked so, else the one of that name, else a new one."""
    for box in await store.list_mailboxes(account_id):
        if box.special_use == use:
            return box
    name = use.lstrip("\\")
    box = await store.get_mailbox(account_id, name)
    if box is None:
        box = await store.create_mailbox(account_id, name, use)
    return box


async def sent_before(request: Request, session: Session, location: str | None, title: str,
                      detail: str) -> Response:
    """The answer to a form posted again (web/sendonce.py): where the first
    POST's answer led, or, when that was a page of its own, ``detail``."""
    if location is not None:
        return redirect(location)
    return page(request, "sent.html", title=title, folders=await folders_if_any(request, session), detail=detail)


async def folders_if_any(request: Request, session: Session) -> list[dict]:
    """``folders``, or none while the store cannot say (a page that must
    be shown all the same: what came of a send)."""
    try:
        return await folders(request, session)
    except StoreError:
        return []


class FolderCache:
    """Each folder's entry in the folder list (its counts and its HTML),
    by mailbox id, for as long as the mailbox's state and name hold: a
    mailbox's counts change only when its highest mod-sequence does. The
    least recently used entries go first past ``max_entries``, so an
    account of many folders pushes out only what nobody used lately,
    never everyone's entries at once. An entry takes about 1 KB (its two
    lines of HTML, its name, its order and state), so the 30,000 kept by
    default are some 30 MB: three accounts at the 10,000 folders of
    ``[limits] max_mailboxes``, or every folder of a thousand ordinary
    accounts; a page that finds its entries gone makes them again in slices
    (``folders``)."""

    def __init__(self, max_entries: int = 30_000) -> None:
        from collections import OrderedDict

        self.max_entries = max_entries
        self._items: OrderedDict[int, tuple[tuple, dict]] = OrderedDict()

    @staticmethod
    def key(box: Mailbox) -> tuple:
        return (box.uid_validity, box.highest_modseq, box.name, box.special_use)

    def get(self, box: Mailbox) -> dict | None:
        hit = self._items.get(box.id)
        if hit is None or hit[0] != self.key(box):
            return None
        self._items.move_to_end(box.id)
        return hit[1]

    def put(self, box: Mailbox, entry: dict) -> None:
        self._items[box.id] = (self.key(box), entry)
        self._items.move_to_end(box.id)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def _folder_entry(box: Mailbox, status: Any) -> dict:
    """A folder of the list, with the HTML of its line in the folder list
    and of its option in a folder menu made once (``folder_nav``,
    ``folder_options``), not by the template on every page. The HTML is
    joined from ``escape``d text: some 3 us a folder (``Markup.format``
    takes ten times that)."""
    entry = {"id": box.id, "name": box.name, "special": box.special_use,
             "unseen": status.unseen, "messages": status.messages}
    entry["nav"] = _nav_line(entry, current=False)
    # the list's order: INBOX, the special-use folders, then by name
    use = "INBOX" if box.name == "INBOX" else box.special_use
    entry["order"] = (SPECIAL_ORDER.get(use or "", 10), box.name.casefold())
    entry["option"] = f'<option value="{int(box.id)}">{escape(box.name)}</option>'
    return entry


def _nav_line(f: dict, current: bool) -> str:
    """One folder's line of the folder list (_folders.html): the name's
    last level, indented by its depth."""
    name = f["name"]
    box_id = int(f["id"])
    unseen = int(f["unseen"])
    mark = ' aria-current="page"' if current else ""
    inbox = ' data-inbox="1"' if name == "INBOX" else ""
    count = f'<span class="count" aria-label="{unseen} unread">{unseen}</span>' if unseen else ""
    return (f'<li class="depth{min(name.count("/"), 4)}{" current" if current else ""}">\n'
            f'    <a href="/box/{box_id}"{mark} data-box="{box_id}"{inbox}>\n'
            f'      <span class="fname">{escape(name.rsplit("/", 1)[-1])}</span>\n      {count}\n    </a>\n  </li>\n')


def folder_nav(folders: list[dict], current_id: int | None = None) -> Markup:
    """The folder list's lines (template filter): the folders' own HTML
    joined, the current folder's made again with its mark."""
    # (each line was escaped as it was made: one Markup for the whole)
    return Markup("".join(_nav_line(f, True) if f["id"] == current_id else f["nav"] for f in folders))


def folder_options(folders: list[dict], leave_out: int | None = None) -> Markup:
    """The options of a folder menu (template filter), but ``leave_out``."""
    return Markup("".join(f["option"] for f in folders if f["id"] != leave_out))


def inbox_unseen(folders: list[dict] | None) -> int:
    """INBOX's unread count for the page title (template filter)."""
    return next((f["unseen"] for f in folders or () if f["name"] == "INBOX"), 0)


TEMPLATES.filters.update(folder_nav=folder_nav, folder_options=folder_options, inbox_unseen=inbox_unseen)

# Folders whose entries ``folders`` makes between two turns of the event
# loop: a page that finds thousands missing from the cache (the first after
# a start, a parent renamed, which renames every folder below it) makes
# them in slices of a few ms, the other requests served between.
FOLDER_SLICE = 500


async def folders(request: Request, session: Session) -> list[dict]:
    """The account's folders with their counts, for the list beside every
    page. Entries are kept per mailbox state (``FolderCache``): a page reads
    the mailbox list and the counts of the folders changed since, all of
    them in one store call (``Store.mailbox_statuses``, off the event loop
    for many), and makes their entries ``FOLDER_SLICE`` at a time."""
    store = state(request).services.store
    boxes = await store.list_mailboxes(session.account_id)
    cache = state(request).status_cache
    entries = [cache.get(box) for box in boxes]
    missing = [box for box, entry in zip(boxes, entries, strict=True) if entry is None]
    if missing:
        statuses = await store.mailbox_statuses(missing)
        made = {}
        for start in range(0, len(missing), FOLDER_SLICE):
            if start:
                await asyncio.sleep(0)  # the other requests' turn
            for box in missing[start:start + FOLDER_SLICE]:
                status = statuses.get(box.id)
                if status is not None:  # (deleted meanwhile: not listed)
                    made[box.id] = entry = _folder_entry(box, status)
                    cache.put(box, entry)
        entries = [entry if entry is not None else made.get(box.id) for box, entry in zip(boxes, entries, strict=True)]
    return sorted((entry for entry in entries if entry is not None), key=itemgetter("order"))


async def read_raw(request: Request, box: Mailbox, uid: int) -> bytes:
    try:
        return await state(request).services.store.read_message(box, uid)
    except NotFound:
        raise HTTPException(404, "no such message") from None


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def notice_url(url: str, text: str) -> str:
    from urllib.parse import quote

    return f"{url}{'&' if '?' in url else '?'}notice={quote(text)}"


# The pages a Back link may lead to: this app's own list, message, folder and
# compose pages. Matching the whole path against the routes (rather than
# refusing "//" or a scheme) also refuses what browsers rewrite into another
# origin: tab, CR and LF are removed and a backslash read as "/" (WHATWG URL
# parser), so "/<TAB>/host" and "/<backslash>host" both mean "//host" (CWE-601).
_BACK_PATH = re.compile(r"/(?:box/[0-9]{1,18}(?:/(?:msg|conv)/[0-9]{1,18})?|folders|compose)?")
_BACK_QUERY = re.compile(r"[A-Za-z0-9._~%&=+:@/-]*")


def safe_back(value: Any, fallback: str) -> str:
    """``value`` if it is a path of this app (with an optional plain query),
    else ``fallback``: a Back link never leaves the site."""
    if not isinstance(value, str) or len(value) > 2000:
        return fallback
    path, _, query = value.partition("?")
    if _BACK_PATH.fullmatch(path) and _BACK_QUERY.fullmatch(query):
        return value
    return fallback


# the query of a list page that says what it shows: search, order and page
_LIST_PARAMS = ("q", "sort", "dir", "after", "before", "start")


def list_back(request: Request) -> str:
    """The list page ``request`` shows, as the Back link of what it leads
    to: its messages and conversations (``?back=``), its action form and the
    Undo of a move (a ``back`` field), so that the person comes back to the
    same folder, search, order and page. The notice, the Undo and the live
    updates' ``fragment`` of this request are left out."""
    from urllib.parse import urlencode

    path = request.url.path
    params = [(k, v) for k, v in request.query_params.multi_items() if k in _LIST_PARAMS and v]
    return safe_back(f"{path}?{urlencode(params)}" if params else path, path)


TEMPLATES.globals["list_back"] = list_back


def back_arg(back: str, box_id: int) -> str:
    """``back=...`` for the links and forms of a message's or conversation's
    page opened from the list ``back``, so that what the page leads to keeps
    that list as its Back; empty when the list is the folder itself, the
    default Back."""
    from urllib.parse import quote

    return "" if back == f"/box/{box_id}" else "back=" + quote(back)


TEMPLATES.globals["back_arg"] = back_arg


def to_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def body_key(session: Session, box: Mailbox, uid: int, allow_remote: bool) -> tuple:
    return (session.account_id, box.id, box.uid_validity, uid, allow_remote)


async def message_info(request: Request, box: Mailbox, uid: int) -> Any:
    """The index row of one message, from the web's mailbox cache (kept current
    with changes_since, so this is not a scan of the mailbox)."""
    listing = state(request).listing
    assert listing is not None
    return await listing.info(box, uid)


def too_complex(request: Request, box: Mailbox, uid: int, reason: str, folder_list: list[dict],
                back: str) -> Response:
    """The page shown instead of a message that cannot be prepared for
    display within the worker's bounds: what happened and the download."""
    return page(request, "complex.html", box=box, uid=uid, reason=reason, folders=folder_list, back=back,
                notice="")
