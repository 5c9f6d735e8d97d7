"""Connection limits for the HTTP port, as the mail listeners have them.

Why: uvicorn counts no connections per client address, and its only timer is
the keep-alive one, armed after a response: a client that connects and sends
nothing, or sends a request head one byte every few seconds, holds its
connection forever (slowloris). This subclass of uvicorn's h11 protocol adds,
from ``[limits]``:

* ``max_connections`` / ``max_connections_per_ip``: over either, a client of
  the http port gets ``503 Service Unavailable`` with ``Connection: close``
  at once (RFC 9110 15.6.4) -- the HTTP counterpart of SMTP 421 and IMAP
  BYE; one of the https port has its connection closed at its accept, with
  no reply and before any TLS (see below);
* ``command_deadline``: a request head must be complete within it, counted
  from the connection or the end of the previous response, however its bytes
  are spaced; otherwise ``408 Request Timeout`` (RFC 9110 15.5.9) and close.

On the https port a connection is counted from its accept, before its TLS
handshake (web/service.py runs the accept loop of net/accept.py there, as
the mail ports' implicit-TLS listeners do); its ``connection_made`` then
finds it counted already.

A request whose head arrived (including a long-lived SSE stream) is not
limited by this deadline; web/bodies.py bounds its body's size and the rate
it must arrive at (408 as well).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from .. import metrics
from ..net.conncaps import ConnectionCaps, log_refusal
from ..net.listener import ConnectionLimits

log = logging.getLogger("mailyard.web")


def _response(status: str, text: str) -> bytes:
    body = text.encode() + b"\r\n"
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


def limited_h11(limits: ConnectionLimits, name: str) -> type[H11Protocol]:
    """An H11Protocol class enforcing ``limits``; one per HTTP listener
    (``name``: it holds that listener's counts, net/conncaps.py as for the
    mail ports, logs and counts its refusals there too, and counts the
    connections it admits in ``mailyard_connections_total``)."""
    caps = ConnectionCaps(limits.max_connections, limits.max_connections_per_ip)

    class LimitedH11(H11Protocol):
        # the listener's counts; on https the accept loop counts a connection
        # in before its TLS handshake (web/service.py, net/accept.py)
        caps: ConnectionCaps
        _head_timer: asyncio.TimerHandle | None = None
        _waiting_since: Any = None  # the cycle that was current when the timer was armed

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            ip = self.client[0] if self.client else ""
            over = caps.admit(self, ip)
            if over is not None:
                log_refusal(log, name, ip, over)
                transport.write(_response("503 Service Unavailable", f"{over}, try again later"))
                transport.close()
                return
            metrics.count_connection(name)
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            caps.release(self)
            self._cancel_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._head_timer is not None and self.cycle is not self._waiting_since:
                self._cancel_head_timer()  # the request head is complete

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_timer()

        def _arm_head_timer(self) -> None:
            self._cancel_head_timer()
            if limits.command_deadline > 0:
                self._waiting_since = self.cycle
                self._head_timer = self.loop.call_later(limits.command_deadline, self._head_timed_out)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or self.cycle is not self._waiting_since:
                return
            self.transport.write(_response("408 Request Timeout", "request not completed in time"))
            self.transport.close()

    LimitedH11.caps = caps
    return LimitedH11
