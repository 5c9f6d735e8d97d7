"""Request body bounds for the HTTP port: how large, per route, enforced
before the application reads a byte; how long a body may take to arrive; and
a client that leaves before its body ends.

Why: Starlette reads a form (``request.form()``) to its end before the handler
can look at it, and a urlencoded or multipart form may hold thousands of
fields of up to a megabyte each; so without a bound, an unauthenticated
``POST /login`` could make the server hold as much as the client cares to
send. This pure ASGI middleware gives every request a byte budget chosen by
method and path (``BodyLimits.limit_for``):

* a ``Content-Length`` above the budget (or not a number) is answered
  ``413 Content Too Large`` (RFC 9110 15.5.14) with ``Connection: close``
  before the body is read; the application is not called;
* a body without a length (``Transfer-Encoding: chunked``, RFC 9112 7.1) or
  one longer than it claims is counted as it streams through ``receive``; the
  read that crosses the budget raises ``BodyTooLarge`` (an ``HTTPException``
  413, so the application's error page answers it) and nothing more is read.

uvicorn stops reading the socket while the application is not asking for the
body (its flow control), so an unread body costs no memory here; multipart
file parts are spooled to temporary files by Starlette above 1 MB each,
except on the compose routes without a live session, whose forms
``text_form`` reads without keeping a byte of their files.

A body must also arrive at a floor rate (``BodyPace``, from ``[limits]``):
web/limits.py bounds the time to the end of a request head, and without a
bound here a client could send a head, then trickle its body one byte every
few seconds and hold its connection (and a slot of the connection caps)
forever. From the first time the application asks for the body, the client
has ``command_deadline`` seconds, plus one second for every
``http_body_min_rate`` bytes it has sent: a slow but steady upload (the
deadline scales with what arrives) is served, a trickle is answered
``408 Request Timeout`` (RFC 9110 15.5.9) with ``Connection: close``
(``BodyTimedOut``, an ``HTTPException`` like ``BodyTooLarge``), and the
connection and its slot go. The clock starts when the application first
asks for the body, so the time before that is not the client's; the
deadline then counts from there, the application's own time between its
reads included (the routes read a body in one go, ``request.form()`` or
``stream()``). Once the response has begun, a read only waits for the
client to leave (a streaming response): no deadline, as nothing could be
answered 408 any more.

A client that closes its connection before its body ends makes Starlette
raise ``ClientDisconnect`` wherever the body was being read; there is nobody
to answer, so it ends the request here, for every route, with one debug line
(uvicorn would log it as an error with its traceback, a line per request
anyone can cause without logging in).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from .. import logs

if TYPE_CHECKING:
    from ..config import LimitsConfig

log = logging.getLogger("mailyard.web")

KB = 1024
MB = 1024 * KB

# Forms that carry a few short fields: login (address, password, token),
# logout, folder management, actions on a page of selected messages.
SMALL_FORM = 8 * KB
DEFAULT_LIMIT = 64 * KB
# multipart/form-data carries files as they are (no base64); what a compose
# form adds to its attachments is the text, the address fields and one
# header block per part.
COMPOSE_OVERHEAD = 1 * MB


class BodyTooLarge(HTTPException):
    """The request body outgrew its route's budget while it was being read."""

    def __init__(self, limit: int, text: str | None = None) -> None:
        super().__init__(413, text or f"The request is too large (at most {limit} bytes here).",
                         headers={"Connection": "close"})


class BodyTimedOut(HTTPException):
    """The request body did not arrive at the floor rate (``BodyPace``)."""

    def __init__(self) -> None:
        super().__init__(408, "The request took too long to arrive.", headers={"Connection": "close"})


@dataclass(frozen=True)
class BodyPace:
    """How long a request body may take: ``grace`` seconds from the first
    wait for it, plus one second for every ``min_rate`` bytes received.
    Either at 0: no bound."""

    grace: float
    min_rate: float

    @classmethod
    def of(cls, limits: LimitsConfig) -> BodyPace:
        """The pace of ``[limits]``: ``command_deadline`` and ``http_body_min_rate``."""
        return cls(limits.command_deadline, limits.http_body_min_rate)

    def deadline(self, started: float, received: int) -> float | None:
        """When the next bytes are due, for a body whose first wait began at
        ``started`` and of which ``received`` bytes arrived; None: no bound."""
        if self.grace <= 0 or self.min_rate <= 0:
            return None
        return started + self.grace + received / self.min_rate


# The compose routes posted without a live session (it ended while the
# person wrote: web/compose.py ``ended``): the text and the address fields
# of a message, which the answer shows back. Its files cannot be carried
# past a login (a browser does not refill a file input), and a client that
# never logged in must not get a message's worth of upload spooled to disk,
# nor a form of thousands of fields parsed: such a body may have 2 MB
# (``SIGNED_OUT_COMPOSE``, here), and ``text_form`` reads it: at most
# ``SIGNED_OUT_FIELDS`` fields, each at most 1 MB (Starlette's part size),
# its file parts read past, not a byte of them kept.
SIGNED_OUT_COMPOSE = 2 * MB
SIGNED_OUT_FIELDS = 100  # the compose form's 19 fields, and a "keep" box per attachment of its draft
SIGNED_OUT_TOO_LARGE = (
    "Your session has ended, and this form is larger than can be taken without one (at most "
    "{limit} bytes; its files made it larger): it was not sent or saved, and its text could not "
    "be shown back to you. Log in again to go on; what you last saved with \u201cSave draft\u201d "
    "is in Drafts.")
COMPOSE_PATHS = frozenset({"/compose", "/compose/autosave", "/compose/login"})


class _TextOnlyParser(MultiPartParser):
    """multipart/form-data (RFC 7578) whose file parts are read past: not a
    byte of them kept (nothing spooled); ``files`` counts those that named
    a file (an empty file input sends a part with an empty name)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.files = 0
        self._skipping = False

    def on_headers_finished(self) -> None:
        _disposition, options = parse_options_header(self._current_part.content_disposition)
        self._skipping = b"filename" in options
        if self._skipping:
            self.files += bool(options[b"filename"])
            return
        super().on_headers_finished()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._skipping:
            super().on_part_data(data, start, end)

    def on_part_end(self) -> None:
        if not self._skipping:
            super().on_part_end()


async def text_form(request: Request, max_fields: int = SIGNED_OUT_FIELDS) -> tuple[FormData, int]:
    """The text fields of a form (urlencoded or multipart), at most
    ``max_fields`` of them, and how many files it carried, which are not
    kept: what a compose form posted without a live session is read as.
    More fields than that: 400, saying the text could not be kept."""
    ctype, _params = parse_options_header(request.headers.get("content-type"))
    try:
        async with contextlib.aclosing(request.stream()) as stream:
            if ctype == b"multipart/form-data":
                parser = _TextOnlyParser(request.headers, stream, max_files=0, max_fields=max_fields)
                return await parser.parse(), parser.files
            if ctype == b"application/x-www-form-urlencoded":
                return await FormParser(request.headers, stream, max_fields=max_fields).parse(), 0
    except MultiPartException as exc:
        raise HTTPException(400, f"This form could not be read ({exc.message}); its text could not be "
                                 "kept.") from None
    return FormData(), 0


def route_limits(max_message_size: int) -> Callable[[str, str, bool], int]:
    """The per-route budget of the webmail app: the compose form (sent,
    autosaved, or carried through a login again) may carry a message of up
    to ``max_message_size`` (smtp.max_message_size) plus its form overhead,
    and without a live session (``signed_in`` False) ``SIGNED_OUT_COMPOSE``,
    which ``text_form`` then reads for its text; login and other small forms
    a few KB; anything else 64 KB."""

    def limit_for(method: str, path: str, signed_in: bool = True) -> int:
        if method == "POST" and path in COMPOSE_PATHS:
            # a message with its files; autosave uploads the chosen files
            # once (web/drafts.py); the session-ended page carries the text
            # (2 MB: text fields, and file parts read past, text_form)
            return max_message_size + COMPOSE_OVERHEAD if signed_in else SIGNED_OUT_COMPOSE
        if method == "POST" and path == "/contacts":  # a vCard file to import (web/contacts.py)
            return 5 * 1024 * 1024 + COMPOSE_OVERHEAD
        if path in ("/login", "/logout", "/folders") or path.lower() == "/autodiscover/autodiscover.xml":
            return SMALL_FORM
        return DEFAULT_LIMIT

    return limit_for


class BodyLimits:
    """Pure ASGI middleware bounding request bodies (see the module docstring);
    ``limits`` gives the body's pace (none without it); ``signed_in`` says
    whether a request's scope carries a live session (sessionlog.py checked
    it before this middleware runs), which the budget of a route may
    depend on."""

    def __init__(self, app: Any, limit_for: Callable[[str, str, bool], int], limits: LimitsConfig | None = None,
                 signed_in: Callable[[Any], bool] | None = None) -> None:
        self.app = app
        self.limit_for = limit_for
        self.pace = BodyPace.of(limits) if limits is not None else BodyPace(0, 0)
        self.signed_in = signed_in or (lambda _scope: True)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope.get("method", "GET"), scope.get("path", "")
        signed_in = self.signed_in(scope)
        limit = self.limit_for(method, path, signed_in)
        text = None
        if not signed_in and method == "POST" and path in COMPOSE_PATHS:
            text = SIGNED_OUT_TOO_LARGE.format(limit=limit)
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value
                break
        if declared is not None:
            # RFC 9110 8.6: 1*DIGIT; h11 has already refused malformed ones,
            # this also stops a length far above the budget before any read
            if not declared.isdigit() or int(declared) > limit:
                await _refuse(send, limit, text)
                return
        received = 0
        complete = False  # the body has ended: later reads only wait for a disconnect (SSE)
        answering = False  # the response has begun: a read then only waits for a disconnect
        started: float | None = None
        timed_out = False
        pace = self.pace

        async def counted_receive() -> Any:
            nonlocal received, complete, started, timed_out
            if received > limit:
                raise BodyTooLarge(limit, text)
            if timed_out:
                raise BodyTimedOut()
            if complete or answering:
                # (a streaming response listens for the client leaving: no
                # deadline on that, and nothing could be answered 408 now)
                return await receive()
            loop = asyncio.get_running_loop()
            if started is None:
                started = loop.time()
            try:
                async with asyncio.timeout_at(pace.deadline(started, received)):
                    message = await receive()
            except TimeoutError:
                if answering:  # the response began while this read waited
                    return await receive()
                timed_out = True
                logs.event(log, logging.INFO, "timeout", proto=scope.get("scheme"), ip=_client(scope),
                           reason="request-body", size=received)
                raise BodyTimedOut() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, text)
                complete = not message.get("more_body", False)
            return message

        async def noted_send(message: Any) -> None:
            nonlocal answering
            if message["type"] == "http.response.start":
                answering = True
            await send(message)

        try:
            await self.app(scope, counted_receive, noted_send)
        except ClientDisconnect:
            logs.event(log, logging.DEBUG, "client_gone", proto=scope.get("scheme"), ip=_client(scope),
                       reason="request-body", size=received)


def _client(scope: Any) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


async def _refuse(send: Any, limit: int, text: str | None = None) -> None:
    body = ((text or f"request body too large (at most {limit} bytes here)") + "\r\n").encode()
    await send({
        "type": "http.response.start",
        "status": 413,
        "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    })
    await send({"type": "http.response.body", "body": body})
