"""Request body bounds for the HTTP port, per route, enforced before the
application reads a byte.

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
file parts are spooled to temporary files by Starlette above 1 MB each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException

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

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request is too large (at most {limit} bytes here).",
                         headers={"Connection": "close"})


def route_limits(max_message_size: int) -> Callable[[str, str], int]:
    """The per-route budget of the webmail app: the compose form may carry a
    message of up to ``max_message_size`` (smtp.max_message_size) plus its
    form overhead; login and other small forms a few KB; anything else 64 KB."""

    def limit_for(method: str, path: str) -> int:
        if method == "POST" and path == "/compose":
            return max_message_size + COMPOSE_OVERHEAD
        if method == "POST" and path == "/contacts":  # a vCard file to import (web/contacts.py)
            return 5 * 1024 * 1024 + COMPOSE_OVERHEAD
        if path in ("/login", "/logout", "/folders") or path.lower() == "/autodiscover/autodiscover.xml":
            return SMALL_FORM
        return DEFAULT_LIMIT

    return limit_for


class BodyLimits:
    """Pure ASGI middleware bounding request bodies (see the module docstring)."""

    def __init__(self, app: Any, limit_for: Callable[[str, str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("method", "GET"), scope.get("path", ""))
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value
                break
        if declared is not None:
            # RFC 9110 8.6: 1*DIGIT; h11 has already refused malformed ones,
            # this also stops a length far above the budget before any read
            if not declared.isdigit() or int(declared) > limit:
                await _refuse(send, limit)
                return
        received = 0

        async def counted_receive() -> Any:
            nonlocal received
            if received > limit:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted_receive, send)


async def _refuse(send: Any, limit: int) -> None:
    body = f"request body too large (at most {limit} bytes here)\r\n".encode()
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
