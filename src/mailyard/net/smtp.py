"""SMTP glue: feeds socket bytes to the sans-I/O engine and carries out what it
asks — recipient checks through the router, durable delivery through the MDA.

The engine (protocols/smtp/server.py) decides every reply's syntax and the
session's state; this module decides only what needs the outside world:
whether a recipient exists, whether relaying is allowed, and whether the
message is safely stored before ``250`` is sent (DESIGN.md "Durability").
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ..delivery.local import deliver_local
from ..delivery.router import Resolution, Verdict
from ..message.trace import received_header
from ..policy.relay import rcpt_reply
from ..protocols.smtp.events import (
    NEED_DATA,
    ConnectionClosed,
    ExpnReceived,
    HeloReceived,
    MailFromReceived,
    MessageReceived,
    RcptToReceived,
    VrfyReceived,
)
from ..protocols.smtp.replies import Reply
from ..protocols.smtp.server import ServerConfig, SMTPServerEngine, State
from ..store.api import StorageFull
from .listener import Listener
from .session_protocol import SessionProtocol

if TYPE_CHECKING:
    from ..server import MailServer

log = logging.getLogger("mailyard.smtp")

# Queue IDs: unique per process (random prefix) and cheap (a counter).
_QUEUE_PREFIX = os.urandom(4).hex()
_queue_counter = itertools.count(1)


def engine_config(server: MailServer) -> ServerConfig:
    cfg = server.config.smtp
    return ServerConfig(
        hostname=server.config.server.hostname,
        max_message_size=cfg.max_message_size,
        max_recipients=cfg.max_recipients,
        max_command_line=cfg.max_command_line,
        max_text_line=cfg.max_text_line,
        vrfy_enabled=cfg.vrfy,
        expn_enabled=cfg.expn,
        max_unknown_commands=cfg.max_unknown_commands,
    )


class SMTPSession(SessionProtocol):
    """One SMTP connection on the MX port, as an asyncio.Protocol.

    HELO/EHLO, MAIL and everything the engine answers itself are handled
    inside ``data_received``; RCPT (router lookup), end of DATA (durable
    delivery) and VRFY/EXPN run as I/O steps while reading is paused.
    """

    protocol_name = "ESMTP"

    def __init__(self, server: MailServer, listener: Listener) -> None:
        super().__init__(listener)
        self.server = server
        self.engine = SMTPServerEngine(server.smtp_engine_config)
        self.helo = ""
        self.resolutions: dict[str, Resolution] = {}
        self._timeouts = server.config.smtp

    # --- SessionProtocol hooks ----------------------------------------------
    def start(self) -> None:
        self.set_timeout(self._timeouts.timeout_command)
        self.write(self.engine.greeting())

    def received(self, data: bytes) -> None:
        self.engine.receive_data(data)

    def goodbye(self) -> bytes:
        return self.engine.shutdown_reply()

    def refusal(self, reason: str) -> bytes:
        # RFC 5321 3.1: a server may refuse a connection with a 421 greeting.
        return f"421 4.7.0 {reason}, try again later\r\n".encode()

    def on_timeout(self) -> bytes:
        # RFC 5321 4.5.3.2: the server may close after its timeout, with 421.
        return b"421 4.4.2 " + self._host() + b" Timeout, closing connection\r\n"

    def pump(self) -> Coroutine[Any, Any, None] | None:
        engine = self.engine
        try:
            while True:
                event = engine.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, ConnectionClosed):
                    self.write(engine.data_to_send())
                    self.close()
                    return None
                if isinstance(event, HeloReceived):
                    self.helo = event.name
                    engine.accept()
                elif isinstance(event, MailFromReceived):
                    self.resolutions.clear()
                    engine.accept()
                elif getattr(event, "needs_answer", False):
                    return self.step(event)
                else:
                    log.debug("smtp %s: %s", self.peer_ip, event)
        finally:
            self.write(engine.data_to_send())
        self.set_timeout(
            self._timeouts.timeout_data_block if engine.state is State.DATA else self._timeouts.timeout_command
        )
        return None

    async def step(self, event: object) -> None:
        """Answer one event that needs the outside world, then flush."""
        try:
            await self.handle(event)
        finally:
            self.write(self.engine.data_to_send())

    def _host(self) -> bytes:
        return self.server.config.server.hostname.encode("ascii", "replace")

    async def handle(self, event: object) -> None:
        engine = self.engine
        if isinstance(event, HeloReceived):
            self.helo = event.name
            engine.accept()
        elif isinstance(event, MailFromReceived):
            self.resolutions.clear()
            engine.accept()
        elif isinstance(event, RcptToReceived):
            resolution = await self.server.router.resolve(event.forward_path)
            reply = rcpt_reply(resolution, relay_allowed=False)
            if reply.is_positive:
                self.resolutions[event.forward_path] = resolution
            engine.respond(reply)
        elif isinstance(event, MessageReceived):
            engine.respond(await self.deliver(event))
            self.resolutions.clear()
        elif isinstance(event, VrfyReceived):
            engine.respond(await self.verify(event.argument, expand=False))
        elif isinstance(event, ExpnReceived):
            engine.respond(await self.verify(event.argument, expand=True))
        else:
            engine.respond(Reply(502, "5.5.1", "Command not implemented"))

    async def deliver(self, event: MessageReceived) -> Reply:
        accounts = []
        for path in event.forward_paths:
            resolution = self.resolutions.get(path)
            if resolution is not None:
                accounts.extend(resolution.accounts)
        queue_id = f"{_QUEUE_PREFIX}{next(_queue_counter):08x}"
        trace = received_header(
            helo=self.helo,
            ip=self.peer_ip,
            by=self.server.config.server.hostname,
            protocol=self.protocol_name + ("S" if self.tls else ""),
            id=queue_id,
            for_addr=event.forward_paths[0] if len(event.forward_paths) == 1 else None,
        )
        try:
            if accounts:
                await deliver_local(
                    self.server.store, trace + event.data, event.reverse_path, accounts,
                    inbox_id=self.server.router.directory.inbox_id,
                )
        except StorageFull:
            log.error("delivery %s refused: storage full", queue_id)
            return Reply(452, "4.3.1", "Insufficient system storage, try again later")
        except Exception:
            log.exception("delivery %s failed", queue_id)
            return Reply(451, "4.3.0", "Local error in processing, try again later")
        log.info(
            "delivered %s from=<%s> to=%s size=%d client=%s",
            queue_id, event.reverse_path, ",".join(f"<{p}>" for p in event.forward_paths),
            len(event.data), self.peer_ip,
        )
        return Reply(250, "2.0.0", f"OK queued as {queue_id}")

    async def verify(self, argument: str, expand: bool) -> Reply:
        """VRFY / EXPN for local users, aliases and lists (RFC 5321 3.5)."""
        address = argument.strip().strip("<>")
        resolution = await self.server.router.resolve(address)
        if resolution.verdict is not Verdict.LOCAL:
            return Reply(550, "5.1.1", f"{address}: no such user here")
        if not expand:
            if len(resolution.accounts) == 1 and not resolution.remote:
                return Reply(250, "2.1.5", f"<{resolution.accounts[0].address}>")
            return Reply(553, "5.1.4", f"{address} is ambiguous; try EXPN")
        members = [f"<{a.address}>" for a in resolution.accounts] + [f"<{r}>" for r in resolution.remote]
        if not members:
            return Reply(550, "5.1.1", f"{address} has no members")
        return Reply(250, "2.1.5", members)


def smtp_protocol(server: MailServer, listener: Listener) -> SMTPSession:
    return SMTPSession(server, listener)
