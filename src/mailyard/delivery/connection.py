"""One outbound SMTP connection: the asyncio I/O of one SMTP client engine
(protocols/smtp/client.py), for the queue runner (queue.py).

``ClientConnection`` reads and writes for the engine, upgrades the socket
when the engine asks for STARTTLS, and judges the TLS peer (DANE) before any
mail is sent. ``_Unreachable`` carries the reply of a host that cannot be
used: raised here when the handshake fails or the peer is refused, and made
by the runner for a host it cannot connect to. ``reply_text`` is a reply as
the log, the queue and the DSN show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any

from ..protocols.smtp.client import (
    NEED_DATA,
    OutboundMessage,
    SessionClosed,
    SessionFailed,
    SessionReady,
    SMTPClientEngine,
    StartTLSNeeded,
    TransactionResult,
)
from ..protocols.smtp.replies import Reply
from .tlsrpt import classify_tls_error

# the queue runner's log: a connection's lines are the runner's
log = logging.getLogger("mailyard.queue")


def reply_text(reply: Reply) -> str:
    text = " ".join(line for line in reply.lines if line)
    return f"{reply.code} {reply.enhanced + ' ' if reply.enhanced else ''}{text}".strip()


class _Unreachable(Exception):
    def __init__(self, reply: Reply, host: str | None = None) -> None:
        super().__init__(reply_text(reply))
        self.reply = reply
        self.host = host


# Checks the peer of a new TLS session (DANE, delivery/dane.py): the SSL
# object -> None when it is accepted, else why not.
PeerCheck = Callable[[Any], str | None]


class ClientConnection:
    """asyncio I/O for one SMTPClientEngine. ``check_peer`` (when given)
    judges the peer once TLS is up; a refusal ends the session before any
    mail is sent. ``tls_failure`` then holds the RFC 8460 result type."""

    def __init__(self, engine: SMTPClientEngine, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, cap: float, tls_context: ssl.SSLContext, server_name: str,
                 check_peer: PeerCheck | None = None) -> None:
        self.engine = engine
        self.reader = reader
        self.writer = writer
        self.cap = cap
        self.tls_context = tls_context
        self.server_name = server_name
        self.check_peer = check_peer
        self.ready: SessionReady | None = None
        self.tls_failure: str | None = None

    async def _event(self) -> Any:
        engine = self.engine
        while True:
            ev = engine.next_event()
            if ev is not NEED_DATA:
                if isinstance(ev, StartTLSNeeded):
                    await self._flush()
                    try:
                        await self.writer.start_tls(self.tls_context, server_hostname=self.server_name)
                    except (OSError, ssl.SSLError) as exc:
                        log.info("STARTTLS with %s failed: %s", self.server_name, exc)
                        self.tls_failure = classify_tls_error(exc)
                        raise _Unreachable(Reply(421, "4.7.0", f"TLS handshake failed: {exc}")) from None
                    if self.check_peer is not None:
                        problem = self.check_peer(self.writer.get_extra_info("ssl_object"))
                        if problem is not None:
                            log.info("TLS peer %s refused: %s", self.server_name, problem)
                            self.tls_failure = "validation-failure"
                            raise _Unreachable(Reply(421, "4.7.5", f"DANE: {problem}"))
                    engine.tls_started()
                    continue
                return ev
            await self._flush()
            if engine.closed:
                return SessionClosed()
            try:
                async with asyncio.timeout(min(engine.timeout, self.cap)):
                    data = await self.reader.read(65536)
            except TimeoutError:
                # RFC 5321 4.5.3.2: give up on the reply; the transaction is not done.
                engine.receive_data(b"")
                continue
            except (OSError, ssl.SSLError):
                data = b""
            engine.receive_data(data)

    async def _flush(self) -> None:
        out = self.engine.data_to_send()
        if out:
            self.writer.write(out)
            with contextlib.suppress(OSError, ssl.SSLError):
                await self.writer.drain()

    async def open(self) -> SessionReady | SessionFailed:
        while True:
            ev = await self._event()
            if isinstance(ev, (SessionReady, SessionFailed)):
                if isinstance(ev, SessionReady):
                    self.ready = ev
                return ev
            if isinstance(ev, SessionClosed):
                return SessionFailed("protocol", Reply(421, "4.4.2", "Connection closed"))

    async def send(self, message: OutboundMessage) -> TransactionResult:
        self.engine.send_mail(message)
        while True:
            ev = await self._event()
            if isinstance(ev, TransactionResult):
                return ev
            if isinstance(ev, SessionClosed):
                return TransactionResult(message, tuple(Reply(421, "4.4.2", "Connection lost")
                                                        for _ in message.recipients))

    @property
    def usable(self) -> bool:
        from ..protocols.smtp.client import ClientState

        return self.engine.state is ClientState.READY

    async def close(self) -> None:
        try:
            # After a failed or refused TLS handshake there is no session to QUIT.
            if not self.engine.closed and self.tls_failure is None:
                self.engine.quit()
                await self._flush()
                with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
                    async with asyncio.timeout(5):
                        while not self.engine.closed:
                            ev = await self._event()
                            if isinstance(ev, SessionClosed):
                                break
        finally:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
