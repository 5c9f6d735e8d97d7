"""A user's webmail preferences: the one reader of ``account_settings``
(Store.get_settings) with the defaults, the checks of each value, and the
time zone and date format every rendered date uses.

Settings are JSON values written by the settings page, the CLI or another
version of the server; a value of the wrong type or out of range is read as
the default rather than trusted. ``PrefsContext`` loads the preferences of
the request's session once per request, so a template filter (``when``)
can format dates without an argument threaded through every template.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import time
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

from ..message.address import is_valid_addr_spec
from .sessionlog import checked_session

PER_PAGE_CHOICES = (20, 50, 100, 200)
DEFAULT_PER_PAGE = 50
# date_format: how a date reads in a list, and with the time on a message's
# page (its Date field as written is the title there)
DATE_FORMATS = {
    "auto": "Today's time, else day and month, else the full date",
    "iso": "2026-03-09 14:05",
    "dmy": "09/03/2026 14:05",
    "mdy": "03/09/2026 2:05 PM",
}
DEFAULT_SPAM_THRESHOLD = 6.0
MAX_LIST = 1000  # entries of an allow, block or remote-content list
MAX_IDENTITIES = 50
MAX_SIGNATURE = 10_000

# Undo send (web/undo.py): seconds a webmail message waits before it goes
# out; 0 (the default) sends at once, as every other way of sending does.
MAX_SEND_DELAY = 30

@dataclass(frozen=True)
class Identity:
    """A name and address the user sends as, with its signature."""

    name: str
    address: str
    signature_text: str = ""
    signature_html: str = ""

    def as_setting(self) -> dict[str, str]:
        return {"name": self.name, "address": self.address, "signature_text": self.signature_text,
                "signature_html": self.signature_html}


@dataclass(frozen=True)
class Prefs:
    conversations: bool = True
    per_page: int = DEFAULT_PER_PAGE
    timezone: str = ""  # IANA name; empty: the server's zone
    date_format: str = "auto"
    identities: tuple[Identity, ...] = ()
    remote_content_allowed: frozenset[str] = frozenset()
    spam_threshold: float = DEFAULT_SPAM_THRESHOLD
    spam_allow: tuple[str, ...] = ()
    spam_block: tuple[str, ...] = ()
    send_delay: int = 0
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    def tz(self) -> _dt.tzinfo | None:
        return zone(self.timezone)

    def remote_allowed(self, sender: str) -> bool:
        """Remote content of mail from ``sender`` is shown without asking."""
        return sender.casefold() in self.remote_content_allowed

    def identity_for(self, address: str) -> Identity | None:
        folded = address.casefold()
        return next((i for i in self.identities if i.address.casefold() == folded), None)


def zone(name: str) -> _dt.tzinfo | None:
    """The IANA zone ``name``; None (the server's zone) for an empty or
    unknown name."""
    if not name or len(name) > 100 or ".." in name or name.startswith("/"):
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _addresses(value: Any) -> tuple[str, ...]:
    """A list setting of addresses or ``@domain`` entries, casefolded."""
    if not isinstance(value, list):
        return ()
    out: dict[str, None] = {}
    for item in value[:MAX_LIST]:
        if isinstance(item, str) and valid_list_entry(item):
            out[item.strip().casefold()] = None
    return tuple(out)


def valid_list_entry(item: str) -> bool:
    """An address, or ``@domain`` for all of a domain's senders."""
    item = item.strip()
    if item.startswith("@"):
        return is_valid_addr_spec("x" + item, smtputf8=True)
    return is_valid_addr_spec(item, smtputf8=True)


def _identities(value: Any) -> tuple[Identity, ...]:
    if not isinstance(value, list):
        return ()
    out = []
    for item in value[:MAX_IDENTITIES]:
        if not isinstance(item, dict):
            continue
        address = item.get("address")
        if not isinstance(address, str) or not is_valid_addr_spec(address, smtputf8=True):
            continue

        out.append(Identity(" ".join(_text(item, "name", 200).split()), address,
                            _text(item, "signature_text"), _text(item, "signature_html")))
    return tuple(out)


def _text(item: dict, key: str, limit: int = MAX_SIGNATURE) -> str:
    v = item.get(key)
    return v[:limit] if isinstance(v, str) else ""


def parse(settings: dict[str, Any]) -> Prefs:
    """The preferences of an account's settings, defaults where a value is
    missing or not of its kind."""
    s = settings

    def num(key: str, lo: float, hi: float, default: float) -> float:
        v = s.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            return default
        return v

    tzname = s.get("timezone")
    per_page = int(num("per_page", 5, 500, DEFAULT_PER_PAGE))
    date_format = s.get("date_format")
    return Prefs(
        conversations=s["conversations"] if isinstance(s.get("conversations"), bool) else True,
        per_page=per_page,
        timezone=tzname if isinstance(tzname, str) and zone(tzname) is not None else "",
        date_format=date_format if date_format in DATE_FORMATS else "auto",
        identities=_identities(s.get("identities")),
        remote_content_allowed=frozenset(_addresses(s.get("remote_content_allowed"))),
        spam_threshold=float(num("spam_threshold", 0, 100, DEFAULT_SPAM_THRESHOLD)),
        spam_allow=_addresses(s.get("spam_allow")),
        spam_block=_addresses(s.get("spam_block")),
        send_delay=int(num("send_delay", 0, MAX_SEND_DELAY, 0)),
        raw=dict(s),
    )


async def load(store: Any, account_id: int) -> Prefs:
    """The preferences of an account (one indexed read)."""
    return parse(await store.get_settings(account_id))


_DEFAULT = Prefs()
_CURRENT: contextvars.ContextVar[Prefs | None] = contextvars.ContextVar("mailyard_prefs", default=None)


def current() -> Prefs:
    """The preferences of the request being served (defaults outside one)."""
    return _CURRENT.get() or _DEFAULT


def use(prefs: Prefs) -> None:
    """Make ``prefs`` the request's preferences (after they changed)."""
    _CURRENT.set(prefs)


def format_when(ts: float, prefs: Prefs | None = None, now: float | None = None, full: bool = False) -> str:
    """A time in a list or a page, in the user's zone and format: "auto"
    gives the time for today, day and month within the year, else the date;
    ``full`` (a message's own date on its page) the day, date and time."""
    prefs = prefs or current()
    tz = prefs.tz()
    now = time.time() if now is None else now
    moment = _dt.datetime.fromtimestamp(ts, tz=_dt.UTC)
    moment = moment.astimezone(tz) if tz is not None else moment.astimezone()
    if prefs.date_format == "iso":
        return moment.strftime("%Y-%m-%d %H:%M")
    if prefs.date_format == "dmy":
        return moment.strftime("%d/%m/%Y %H:%M")
    if prefs.date_format == "mdy":
        return moment.strftime("%m/%d/%Y ") + moment.strftime("%I:%M %p").lstrip("0")
    if full:
        return moment.strftime("%a %d %b %Y %H:%M")
    today = _dt.datetime.fromtimestamp(now, tz=_dt.UTC)
    today = today.astimezone(tz) if tz is not None else today.astimezone()
    if now - ts < 20 * 3600 and today.date() == moment.date():
        return moment.strftime("%H:%M")
    if now - ts < 300 * 86400:
        return moment.strftime("%d %b")
    return moment.strftime("%Y-%m-%d")


class PrefsContext:
    """Pure ASGI middleware: loads the preferences of the request's session
    (if any) for the request (``current``). It does not buffer the response,
    so the server-sent event stream passes through it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith("/static/"):
            await self.app(scope, receive, send)
            return
        token = None
        web = getattr(getattr(scope.get("app"), "state", None), "web", None)
        session = checked_session(scope)  # SessionRecords (outside this) checked it
        if web is not None and session is not None:
            token = _CURRENT.set(await load(web.services.store, session.account_id))
        try:
            await self.app(scope, receive, send)
        finally:
            if token is not None:
                _CURRENT.reset(token)
