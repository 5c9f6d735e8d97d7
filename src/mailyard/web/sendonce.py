"""One send per form.

A webmail form that sends mail (compose, Redirect) carries a random id. The
first POST with it sends; another POST with the same id (a double click on
Send, a reload of the answer, a browser resending the request) sends
nothing. Mail cannot be taken back, so the server keeps the promise, not
the page's script.

Such a second POST gets the first one's answer: it waits while the first
is under way (a browser shows the answer to the last click, so that one
must say what came of the message), then is sent where the first was (the
page of a held send, with its Undo; the inbox with its notice). If the
first sent nothing (a refusal: the id is given back), the second is
handled as a send of its own, and so gets the refusal itself, or sends the
form the user corrected.

A refused form with chosen files keeps them in a draft (web/compose.py),
and the same form posted again with the same contents (the double click on
a Send that is refused) keeps them in that same draft, not in a second one:
`SendOnce.keeping` gives the POSTs of one form's contents, one after the
other, the draft the first one kept.

The ids are kept in the memory of the process that serves the webmail
(only the first worker serves it: workers.py) for ``KEPT_FOR`` seconds, at
most ``MAX_KEPT`` of them, the oldest forgotten first: enough for what they
guard against, the same browser sending the same form again soon after. A
form without an id (a page served before it had one) sends as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

KEPT_FOR = 6 * 3600.0  # seconds an id that sent is remembered
MAX_KEPT = 20_000
WAIT_FOR_FIRST = 60.0  # seconds a second POST waits for the first one's outcome, at most
KEEP_DRAFT_FOR = 600.0  # seconds the draft a refused form's files went to is found again by its contents
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def new_id() -> str:
    """A fresh id for a form that sends."""
    return secrets.token_urlsafe(16)


def form_id(posted: str) -> str:
    """The id a posted form carries, or a fresh one for its next send when
    it carries none that can be one (a page served before forms had it)."""
    return posted if _usable(posted) else new_id()


def _usable(send_id: str) -> bool:
    return bool(send_id) and len(send_id) <= 64 and set(send_id) <= _ID_CHARS


@dataclass
class Earlier:
    """What came of the first POST of a form: where its answer led (None:
    a page of its own, or not known yet after ``WAIT_FOR_FIRST``)."""

    location: str | None


@dataclass
class _Send:
    at: float
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    location: str | None = None
    given_back: bool = False


@dataclass
class KeptDraft:
    """The draft (``uid`` in the account's Drafts; None: none yet) that a
    refused POST of one form, with contents ``digest``, kept its files in."""

    digest: bytes
    at: float
    uid: int | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SendOnce:
    """The sends of the forms posted lately, per account."""

    def __init__(self) -> None:
        self._sends: OrderedDict[tuple[int, str], _Send] = OrderedDict()
        self._kept: OrderedDict[tuple[int, str], KeptDraft] = OrderedDict()

    @contextlib.asynccontextmanager
    async def keeping(self, account_id: int, send_id: str, digest: bytes) -> AsyncIterator[KeptDraft]:
        """The draft an earlier refused POST of form ``send_id`` with the
        same contents (``digest``) kept its files in, held while this POST
        keeps its own: a second POST waits here for the first, then finds
        its draft (``uid``) rather than saving one more. Set ``uid`` to the
        draft this POST keeps. Other contents start afresh."""
        now = time.monotonic()
        while self._kept and now - next(iter(self._kept.values())).at > KEEP_DRAFT_FOR:
            self._kept.popitem(last=False)
        if not _usable(send_id):
            yield KeptDraft(digest, now)
            return
        key = (account_id, send_id)
        entry = self._kept.get(key)
        if entry is None:
            entry = self._kept[key] = KeptDraft(digest, now)
            while len(self._kept) > MAX_KEPT:
                self._kept.popitem(last=False)
        async with entry.lock:
            if entry.digest != digest:
                entry.digest, entry.uid = digest, None
            entry.at = now
            self._kept.move_to_end(key)
            yield entry

    async def claim(self, account_id: int, send_id: str) -> Earlier | None:
        """None: this POST of form ``send_id`` sends (and must end with
        ``went`` or ``give_back``). Else the form was posted before, and
        this is what came of it, once the first POST has ended. A missing
        or malformed id always sends."""
        if not _usable(send_id):
            return None
        key = (account_id, send_id)
        deadline = time.monotonic() + WAIT_FOR_FIRST
        while True:
            self._expire()
            earlier = self._sends.get(key)
            if earlier is None:
                self._sends[key] = _Send(time.monotonic())
                if len(self._sends) > MAX_KEPT:
                    self._forget_oldest_ended()
                return None
            if not earlier.ended.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(earlier.ended.wait(), max(0.0, deadline - time.monotonic()))
                if not earlier.ended.is_set():
                    return Earlier(None)
            if not earlier.given_back:
                return Earlier(earlier.location)
            # the first sent nothing: this one is a send of its own (the loop takes the id)

    def went(self, account_id: int, send_id: str, location: str | None = None) -> None:
        """The send of form ``send_id`` went (or may have gone); its answer
        led to ``location`` (None: a page of its own)."""
        send = self._sends.get((account_id, send_id))
        if send is not None and not send.ended.is_set():
            send.location = location
            send.ended.set()

    def give_back(self, account_id: int, send_id: str) -> None:
        """Nothing went (a refusal, or a held send undone): the same form
        may send again."""
        send = self._sends.pop((account_id, send_id), None)
        if send is not None and not send.ended.is_set():
            send.given_back = True  # (a POST waiting for it sends on its own)
            send.ended.set()

    def _forget_oldest_ended(self) -> None:
        # a send under way is kept: a second POST may be waiting for its end
        for key, send in self._sends.items():
            if send.ended.is_set():
                del self._sends[key]
                return

    def _expire(self) -> None:
        now = time.monotonic()
        while self._sends:
            _key, send = next(iter(self._sends.items()))
            if now - send.at < KEPT_FOR:
                break
            self._sends.popitem(last=False)
