"""SMTP glue: feeds socket bytes to the sans-I/O engine and carries out what it
asks — recipient checks through the router, durable delivery through the MDA.

The engine (protocols/smtp/server.py) decides every reply's syntax and the
session's state; this module decides only what needs the outside world:
whether a recipient exists, whether relaying is allowed, and whether the
message is safely stored before ``250`` is sent (DESIGN.md "Durability").
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import ssl
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .. import logs, metrics
from ..auth import sasl
from ..delivery.router import Resolution, Verdict
from ..delivery.submit import (
    RemoteUnavailable,
    SenderNotAllowed,
    SieveRejected,
    SubmissionLimited,
    Trace,
    accept_message,
    new_msgid,
    report_over_quota,
    sender_rule,
)
from ..mailauth.inbound import InboundVerdict
from ..message.trace import with_protocol
from ..policy.relay import routing_trick
from ..protocols.contract import Closed, ProtocolMisuse
from ..protocols.smtp.events import (
    AuthCancelled,
    AuthReceived,
    AuthResponse,
    Event,
    ExpnReceived,
    HeloReceived,
    MailFromReceived,
    MessageData,
    MessageReceived,
    ProtocolError,
    RcptToReceived,
    StartTLSReceived,
    VrfyReceived,
)
from ..protocols.smtp.replies import Reply
from ..protocols.smtp.server import ServerConfig, SMTPServerEngine, State
from ..sieve import SpamVerdict
from ..spam.checker import Judgement, SpamChecker
from ..spam.greylist import GreylistPolicy, decide, known_good, sender_domain, triplet
from ..spam.rates import CONNECTION, MESSAGE, network_of
from ..store.api import Account, NewRecipient, QuotaExceeded, StorageFull, StoreUnavailable
from ..store.greylist import GreylistState
from ..store.spool import SpoolFile
from .budgets import abuse_budgets
from .listener import Listener
from .login import Authenticator, owed_expiry, plaintext_allowed
from .session_protocol import SessionProtocol
from .smtp_replies import rcpt_reply, trick_reply

if TYPE_CHECKING:
    from ..config import Config
    from ..services import Services

log = logging.getLogger("mailyard.smtp")
# the "abuse_refused" lines of one listener and reason, per process (the
# metric counts every refusal)
_ABUSE_LINES = logs.EventBudget()
# The replies to a failed AUTH exchange (RFC 4954 6): credentials invalid,
# and the temporary failure, whatever the password (over a login limit
# nothing was checked, and the lockout expires; a SCRAM proof that was right
# but whose exchange ran past its deadline).
_AUTH_INVALID = Reply(535, "5.7.8", "Authentication credentials invalid")
_AUTH_TEMPORARY = Reply(454, "4.7.0", "Temporary authentication failure, try again later")
# Likewise the "rcpt_refused reason=relay" lines: a relay probe costs a client
# one RCPT, as many as it likes; the recipients metric counts every one.
_RELAY_LINES = logs.EventBudget()


# A spooled message up to this size is read back on the event loop.
_READ_INLINE = 1 << 20

# What an MX client may send while its connection is counted, before the
# greeting (``_admit``): a command line or two (RFC 5321 4.5.3.1.4: 512
# octets each); more is an early talker's, refused.
MAX_HELD = 4096

# Queue IDs: unique per process (random prefix) and cheap (a counter).


def engine_config(config: Config) -> ServerConfig:
    cfg = config.smtp
    return ServerConfig(
        hostname=config.server.hostname,
        max_message_size=cfg.max_message_size,
        max_recipients=cfg.max_recipients,
        max_command_line=cfg.max_command_line,
        max_text_line=cfg.max_text_line,
        vrfy_enabled=cfg.vrfy,
        expn_enabled=cfg.expn,
        budgets=abuse_budgets(config, "smtp"),
        # The MX port refuses clients that do not wait for replies (RFC 2920 3.1).
        strict_pipelining=True,
    )


@functools.lru_cache(maxsize=4)
def _lenient(config: ServerConfig) -> ServerConfig:
    """``config`` without the pipelining rule (for clients exempt from the abuse defences)."""
    return dataclasses.replace(config, strict_pipelining=False)


def submission_engine_config(config: Config) -> ServerConfig:
    """The submission ports (587 STARTTLS, 465 implicit TLS): AUTH before MAIL
    (RFC 6409 4.3, RFC 4954 6: 530 5.7.0)."""
    return dataclasses.replace(engine_config(config), require_auth_for_mail=True, strict_pipelining=False)


class SMTPSession(SessionProtocol):
    """One SMTP connection, as an asyncio.Protocol.

    HELO/EHLO, MAIL and everything the engine answers itself are handled
    inside ``data_received``; RCPT (router lookup), end of DATA (durable
    delivery), VRFY/EXPN, AUTH and STARTTLS run as I/O steps while reading
    is paused (so nothing the client pipelines after STARTTLS is read before
    the handshake, RFC 3207 4.2).

    ``submission`` True: the submission ports (RFC 6409): AUTH required before
    MAIL, MAIL FROM limited to the user's own addresses, remote recipients
    allowed, Date/Message-ID completed. False: the MX port, which takes mail
    for local recipients only and offers STARTTLS but not AUTH.
    """

    protocol_name = "ESMTP"
    protocol_label = "smtp"
    engine: SMTPServerEngine  # made in start(), once TLS is known

    def __init__(self, services: Services, listener: Listener, submission: bool = False) -> None:
        super().__init__(listener)
        self.services = services
        self.submission = submission
        self._engine_config: ServerConfig = services.submission_engine if submission else services.smtp_engine
        self.helo = ""
        self.resolutions: dict[str, Resolution] = {}
        self.declared_size = 0  # MAIL SIZE= of the transaction (RFC 1870), 0 when not given
        self._timeouts = services.config.smtp
        self.account: Account | None = None  # after a successful AUTH
        self._mech: sasl.Mechanism | None = None
        self._auth: Authenticator | None = None
        # The parts of a large message received so far (MessageData), on disk.
        self._spool: SpoolFile | None = None
        self._spool_error: OSError | None = None
        self._own_ips_known: list[str] | None = None  # see _own_ips
        self._greeted = True  # False while the MX port's greet_pause runs
        self._greet_timer: asyncio.TimerHandle | None = None
        self._held: bytes | None = None  # input while the MX port counts the connection (``_admit``)

    # --- SessionProtocol hooks ----------------------------------------------
    def start(self) -> None:
        self.services.stats["submission_sessions" if self.submission else "smtp_sessions"] += 1
        self.set_timeout(self._timeouts.timeout_command)
        config = self._engine_config
        if config.strict_pipelining and self._exempt():
            config = _lenient(config)  # local tools and own addresses may pipeline as they like
        # tls: implicit TLS (RFC 8314)
        self.engine = SMTPServerEngine(config, tls_active=self.tls)
        self._advertise()
        if not self.submission and not self._exempt():
            # the client's input waits until it is counted (and greeted)
            self._held = b""
            self.begin_step(self._admit())
            return
        self.write(self.engine.greeting())

    async def _admit(self) -> None:
        """Greet a client of the MX port once its connection is counted
        against the rates (the count may be the supervisor's, asked without
        blocking the loop), and after ``[spam] greet_pause``. What it sends
        meanwhile is held (``received``) and read after the greeting: the
        count alone makes no early talker; the pause does."""
        try:
            reason = await self._over_rate(CONNECTION)
        except Exception:  # noqa: BLE001 - a counter that breaks refuses nobody
            log.exception("smtp: counting the connection of %s failed", self.peer_ip)
            reason = None
        held, self._held = self._held, None
        if self.closed:
            return
        if reason is not None:
            # RFC 5321 3.1 / 3.8: a 421 greeting refuses the connection for now.
            self._abuse("rate", reason)
            self.write(b"421 4.7.0 " + self._host() + f" {reason}, try again later\r\n".encode())
            self.close()
            return
        pause = self.services.config.spam.greet_pause
        if pause > 0:
            # RFC 5321 4.3.1: the client waits for the greeting; one that
            # talks first is not a mail server (``received``).
            self._greeted = False
            if held:
                self.received(held)
                return
            self._greet_timer = self.loop.call_later(pause, self._greet)
            return
        self._greet()
        if held:
            self.engine.receive_data(held)  # read once this step ends

    def _greet(self) -> None:
        self._greet_timer = None
        if not self.closed:
            self._greeted = True
            self.write(self.engine.greeting())

    def _exempt(self) -> bool:
        """The client is one the abuse defences never apply to ([spam] trusted_networks)."""
        exempt = self.services.mx_exempt
        return exempt is not None and exempt(self.peer_ip)

    async def _over_rate(self, kind: str) -> str | None:
        """Count a connection or message of this client against the MX port's
        rates (spam/rates.py); the reason it is over, or None."""
        rates = self.services.mx_rates
        return await rates(kind, self.peer_ip) if rates is not None and self.peer_ip else None

    def _abuse(self, reason: str, detail: str, budgeted: bool = True, **message: object) -> None:
        """A counter and a line for a refusal by an abuse defence. A refusal a
        client can cause at will (its rate, talking early or out of turn: it
        reconnects and does it again) logs within the budget; one that costs
        it a whole transaction (greylisting) logs every time, as it is the
        only record of that message, named by ``message``: this attempt's
        msgid, its from and to (the sender and recipients that the
        ``accepted`` line of a later retry names too)."""
        metrics.count_abuse(self.listener.name, reason)
        fields = {"proto": self.listener.name, "ip": self.peer_ip,
                  "user": self.account.address if self.account else None, "reason": reason, "detail": detail,
                  **message}
        if budgeted:
            _ABUSE_LINES.event(log, logging.WARNING, "abuse_refused", (self.listener.name, reason), **fields)
        else:
            logs.event(log, logging.WARNING, "abuse_refused", **fields)

    def _plaintext_ok(self) -> bool:
        return plaintext_allowed(self.services, self)

    def _advertise(self) -> None:
        """EHLO keywords: STARTTLS where TLS is available and not yet on; AUTH
        on the submission ports, PLAIN/LOGIN only where passwords may be sent
        in the clear (RFC 4954 4); the others get 538 5.7.11 if tried."""
        extras: list[str] = []
        hidden: frozenset[str] = frozenset()
        if not self.tls and self.services.tls is not None:
            extras.append("STARTTLS")
        if self.submission:
            mechanisms = sasl.advertised_mechanisms(secure=self._plaintext_ok())
            extras.append("AUTH " + " ".join(mechanisms))
            hidden = frozenset(sasl.MECHANISMS) - set(mechanisms)
        self.engine.offer(extras, auth_unadvertised=hidden)

    def received(self, data: bytes) -> None:
        if self._held is not None:
            # the connection is being counted (``_admit``)
            if not data:
                self.close()  # the client left
            elif len(self._held) + len(data) > MAX_HELD:
                self._held = None
                self._early_talker()
            else:
                self._held += data
            return
        if not self._greeted and data:
            self._early_talker()
            return
        self.engine.receive_data(data)

    def _early_talker(self) -> None:
        # RFC 5321 4.3.1: bytes before the greeting.
        self._abuse("early-talker", "sent data before the greeting")
        self.write(b"554 5.5.1 " + self._host() + b" SMTP synchronization error: data sent before the greeting\r\n")
        self.close()

    def ended(self, event: Closed) -> None:
        if event.reason == "out-of-sync":
            self._abuse("out-of-sync", "command sent before the reply to the one before (RFC 2920 3.1)")

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._greet_timer is not None:
            self._greet_timer.cancel()
            self._greet_timer = None
        if self._auth is not None:
            self._auth.close()  # an AUTH exchange left open counts as a failure
        self._drop_spool()  # an unfinished transfer leaves nothing behind

    def goodbye(self) -> bytes:
        return self.engine.shutdown_reply()

    def refusal(self, reason: str) -> bytes:
        # RFC 5321 3.1: a server may refuse a connection with a 421 greeting.
        return f"421 4.7.0 {reason}, try again later\r\n".encode()

    def on_timeout(self) -> bytes:
        # RFC 5321 4.5.3.2: the server may close after its timeout, with 421.
        return b"421 4.4.2 " + self._host() + b" Timeout, closing connection\r\n"

    def input_state(self) -> tuple[bool, int, float]:
        # A command line must be complete within [limits] command_deadline and
        # a whole DATA transfer within smtp.timeout_data_term, however the
        # client spaces its bytes (RFC 5321 4.5.3.2 bounds each wait; this
        # bounds the sum, against slowloris).
        engine = self.engine
        if engine.state is State.DATA:
            deadline = self._timeouts.timeout_data_term
        else:
            deadline = self.listener.limits.command_deadline
        return engine.partial_input, engine.units_completed, deadline

    def on_event(self, event: Event) -> Coroutine[Any, Any, None] | None:
        engine = self.engine
        if isinstance(event, HeloReceived):
            self.helo = event.name
            self._prefetch_checks()
            engine.respond()
        elif isinstance(event, MailFromReceived) and self.account is None and (self.submission or self._exempt()):
            self.resolutions.clear()
            self.declared_size = event.size or 0
            engine.respond()
        elif isinstance(event, MessageData):
            self._spool_write(event.data)
        elif isinstance(event, ProtocolError) and engine.state is not State.DATA:
            self._drop_spool()  # the data was refused (552, 550 5.6.0, ...)
        elif isinstance(event, AuthCancelled):
            # The engine already answered 501; a cancel counts as a failure.
            if self._auth is not None and self._mech is not None:
                self._auth.cancelled(self._mech)
            self._mech = None
        elif event.needs_answer:
            return self.step(event)
        else:
            log.debug("smtp %s: %s", self.peer_ip, event)
        return None

    def waiting_for_input(self) -> None:
        # RFC 5321 4.5.3.2: the server's timeouts depend on what it waits for.
        timeouts = self._timeouts
        self.set_timeout(
            timeouts.timeout_data_block if self.engine.state is State.DATA else timeouts.timeout_command
        )

    async def step(self, event: Event) -> None:
        """Answer one event that needs the outside world. Its reply is
        written with those of the commands pipelined after it, once the
        engine has no complete command left (the skeleton's pump flushes
        before it waits for input; a shutdown's 421 carries it too): RFC
        2920 3.2 asks a server to send the replies to a group as a unit,
        and never to wait for input with replies unsent. MAIL, RCPT and
        DATA of a pipelined group are answered in one write, and so are
        the 250 of a message and the 221 of a QUIT sent right after it.

        A step that breaks (a bug, a library's surprise) still lets the
        replies queued before it out, then ends the session with 421 (RFC
        5321 3.8) instead of closing in silence: the client retries what
        got no 250. A connection already gone is left to the skeleton."""
        try:
            await self.handle(event)
        except (ConnectionError, ssl.SSLError):
            raise
        except Exception:
            log.exception("smtp: %s of %s failed", type(event).__name__, self.peer_ip)
            engine = self.engine
            try:
                engine.respond(Reply(421, "4.3.0", f"{self.services.config.server.hostname}"
                                     " Local error in processing, closing connection"))
                out = engine.data_to_send()
            except ProtocolMisuse:  # the event was answered before the failure
                out = engine.shutdown_reply()
            self.write(out)
            self.close()

    def _host(self) -> bytes:
        return self.services.config.server.hostname.encode("ascii", "replace")

    async def handle(self, event: Event) -> None:
        try:
            await self._handle(event)
        except StoreUnavailable:
            # the store cannot be reached (its database down): a temporary
            # failure, the client tries again (RFC 3463 4.3.0; RFC 4954 6:
            # 454 4.7.0 for an authentication that could not be checked)
            if isinstance(event, AuthReceived | AuthResponse):
                self.engine.respond(Reply(454, "4.7.0", "Temporary authentication failure"))
            else:
                self.engine.respond(Reply(451, "4.3.0", "Mail store unavailable, try again later"))

    async def _handle(self, event: Event) -> None:
        engine = self.engine
        account = self.account
        if account is not None and not await self.services.store.credentials_current(account.id, account.epoch):
            # The account was removed or its password changed since AUTH: the
            # session ends (RFC 5321 3.8: 421, and the server closes), so no
            # further message is submitted under the old credentials.
            log.info("smtp: ending session of %s: account removed or password changed", account.address)
            engine.respond(Reply(421, "4.7.0", "Account removed or password changed, closing connection"))
            return
        if isinstance(event, HeloReceived):
            self.helo = event.name
            self._prefetch_checks()
            engine.respond()
        elif isinstance(event, MailFromReceived):
            self.resolutions.clear()
            self.declared_size = event.size or 0
            verdict = None
            if self.account is not None:
                rule = await sender_rule(self.services, self.account)
                verdict = await rule.check_reverse_path(event.reverse_path)
            elif not self.submission:
                reason = await self._over_rate(MESSAGE)
                if reason is not None:
                    # RFC 5321 4.2.5 / RFC 3463 4.7.1: refused for now, a real server retries.
                    self._abuse("rate", reason)
                    engine.respond(Reply(451, "4.7.1", f"{reason}, try again later"))
                    return
            if verdict is not None:
                # RFC 6409 4.3, RFC 5321 4.2.2 553: the user may not send as this address.
                logs.event(log, logging.WARNING, "sender_refused", proto=self.listener.name, ip=self.peer_ip,
                           user=self.account.address if self.account else None, **{"from": event.reverse_path[:200]})
                engine.respond(Reply(553, "5.7.1", verdict.reason))
            else:
                engine.respond()
        elif isinstance(event, RcptToReceived):
            engine.respond(await self.rcpt(event.forward_path))
        elif isinstance(event, AuthReceived | AuthResponse):
            await self.auth(event)
        elif isinstance(event, StartTLSReceived):
            await self.starttls()
        elif isinstance(event, MessageReceived):
            engine.respond(await self.deliver(event))
            self.resolutions.clear()
        elif isinstance(event, VrfyReceived):
            engine.respond(await self.verify(event.argument, expand=False))
        elif isinstance(event, ExpnReceived):
            engine.respond(await self.verify(event.argument, expand=True))
        else:
            engine.respond(Reply(502, "5.5.1", "Command not implemented"))

    # --- recipients and relaying (policy/relay.py) ---------------------------
    async def rcpt(self, forward_path: str) -> Reply:
        if self.account is None:
            trick = routing_trick(forward_path)
            if trick is not None:
                self._rcpt_refused(forward_path, "relay", trick)
                return trick_reply(forward_path, trick)
        resolution = await self.services.router.resolve(forward_path)
        reply = rcpt_reply(resolution, relay_allowed=self.account is not None, remote_ok=self.services.queue is not None)
        if reply.is_positive and not resolution.remote and await self._no_room(resolution.accounts):
            # RFC 3463 4.2.2 (mailbox full, temporary): every account this
            # address leads to is at its quota (RFC 9208) already, or has
            # less room than the size MAIL declared (RFC 1870 6.2: 452)
            self._rcpt_refused(forward_path, "mailbox-full")
            return Reply(452, "4.2.2", "Mailbox full, try again later")
        if reply.is_positive:
            self.resolutions[forward_path] = resolution
        elif resolution.verdict is Verdict.REMOTE and self.account is None:
            self._rcpt_refused(forward_path, "relay")
        else:
            self._rcpt_refused(forward_path, resolution.verdict.name.lower().replace("_", "-"))
        return reply

    def _rcpt_refused(self, forward_path: str, reason: str, detail: str | None = None) -> None:
        metrics.count_recipient_rejected(self.listener.name, reason)
        fields = {"proto": self.listener.name, "ip": self.peer_ip,
                  "user": self.account.address if self.account else None, "to": forward_path[:200],
                  "reason": reason, "detail": detail}
        if reason == "relay":
            # worth a warning (an open-relay probe), within the budget
            _RELAY_LINES.event(log, logging.WARNING, "rcpt_refused", (self.listener.name, reason), **fields)
        else:
            logs.event(log, logging.INFO, "rcpt_refused", **fields)

    async def _no_room(self, accounts: list[Account]) -> bool:
        """Whether there are accounts and none has room for one more message
        of the declared size (at least one octet). An account without limits
        always has room; the usage of one with limits is read as it is now."""
        directory = self.services.router.directory
        for account in accounts:
            if await directory.unlimited(account.id):
                return False
            if (await self.services.store.get_quota(account.id)).fits(max(self.declared_size, 1), 1):
                return False
        return bool(accounts)

    # --- AUTH (RFC 4954) --------------------------------------------------------
    async def auth(self, event: AuthReceived | AuthResponse) -> None:
        engine = self.engine
        if self._auth is None:
            self._auth = Authenticator(self.services, self, self.listener.name)
        if isinstance(event, AuthReceived):
            name = event.mechanism
            if name in sasl.PLAINTEXT_MECHANISMS and not self._plaintext_ok():
                engine.respond(Reply(538, "5.7.11", "Encryption required for requested authentication mechanism"))
                return
            try:
                self._mech = sasl.start(name)
            except sasl.UnsupportedMechanism:
                engine.respond(Reply(504, "5.5.4", "Unrecognized authentication type"))
                return
            initial = None if event.initial_response is None else event.initial_response.encode("ascii", "replace")
            ev = self._mech.begin(initial)
        else:
            if self._mech is None:
                engine.respond(Reply(501, "5.5.2", "No authentication in progress"))
                return
            ev = self._mech.step(event.data.encode("ascii", "replace"))
        ev = await self._auth.sasl(self._mech, ev)
        if isinstance(ev, sasl.Challenge):
            engine.respond(Reply(334, None, ev.wire.decode("ascii")))
            return
        self._mech = None
        if isinstance(ev, sasl.Success):
            account = await self._auth.account(ev)
            if account is not None:
                self.account = account.without_secrets()
                engine.respond(Reply(235, "2.7.0", "Authentication successful"), identity=account.address)
                return
            ev = sasl.Failure("account vanished")
        # A 535 or 454 counts against the engine's max_auth_failures
        # ([auth] smtp_connection_max_failures), which ends the session with 421.
        engine.respond(self._auth_failure_reply(ev))

    def end_sasl(self) -> bool:
        failure = owed_expiry(self._auth, self._mech, self.engine.awaiting_sasl_response)
        if failure is None:
            return False
        self._mech = None
        # settled by the login session: 535, or 454 for a proof that was right
        self.engine.end_auth(_AUTH_TEMPORARY if failure.kind == "temporary" else _AUTH_INVALID)
        return True

    def _tls_info(self) -> str | None:
        """``TLSv1.3 TLS_AES_256_GCM_SHA384`` for the Received comment (RFC 5321 4.4 allows one)."""
        if not self.tls or self.transport is None:
            return None
        obj = self.transport.get_extra_info("ssl_object")
        if obj is None:
            return None
        cipher = obj.cipher()
        return f"{obj.version()} {cipher[0]}" if cipher else obj.version()

    def _auth_failure_reply(self, failure: sasl.Failure) -> Reply:
        if failure.kind == "cancelled":
            return Reply(501, "5.0.0", "Authentication cancelled")
        if failure.kind == "malformed":
            # the mechanism's own words for what does not parse (a fixed text
            # of auth/sasl.py, never the client's data: sasl.Failure)
            return Reply(501, "5.5.2", f"Cannot decode the authentication data: {failure.reason}")
        if failure.kind == "protocol":
            return Reply(501, "5.5.2", "Cannot decode the authentication data")
        if failure.kind == "too-long":
            return Reply(500, "5.5.6", "Authentication exchange line is too long")
        if failure.kind == "temporary":
            return _AUTH_TEMPORARY
        return _AUTH_INVALID

    # --- STARTTLS (RFC 3207) ------------------------------------------------------
    async def starttls(self) -> None:
        engine = self.engine
        tls = self.services.tls
        if tls is None:
            engine.respond(Reply(454, "4.7.0", "TLS not available due to temporary reason"))
            return
        # 220, and the engine forgets the session and drops everything
        # buffered after the command (RFC 3207 4.2) as it answers.
        engine.respond()
        if not await self.upgrade_tls(tls.context):
            return
        # RFC 3207 4.2: forget what the client told us before TLS.
        self.helo = ""
        self.resolutions.clear()
        self.account = None
        self._mech = None
        self._advertise()

    # --- DATA ---------------------------------------------------------------------
    def _spool_write(self, data: bytes) -> None:
        """Put a part of the message being received on disk (store/spool.py):
        a transfer holds kilobytes in memory, not the message."""
        if self._spool_error is not None:
            return  # the rest is read and dropped; the end of data gets 452
        try:
            if self._spool is None:
                self._spool = self.services.spool.open()
            self._spool.write(data)
        except OSError as exc:
            log.error("smtp spool write failed for %s: %s", self.peer_ip, exc)
            self._spool_error = exc
            self._drop_spool()

    def _drop_spool(self) -> None:
        spool, self._spool = self._spool, None
        if spool is not None:
            spool.close()

    async def _message_data(self, event: MessageReceived) -> bytes:
        """The whole message: the spooled parts and the last part."""
        spool, self._spool = self._spool, None
        error, self._spool_error = self._spool_error, None
        if not event.streamed:
            return event.data
        if error is not None or spool is None:
            raise StorageFull(str(error or "spool file missing"))
        try:
            if spool.size <= _READ_INLINE:
                head = spool.read_all()  # from the page cache: cheaper than a thread hop
            else:
                head = await asyncio.to_thread(spool.read_all)
        finally:
            spool.close()
        return head + event.data

    async def deliver(self, event: MessageReceived) -> Reply:
        try:
            data = await self._message_data(event)
        except (StorageFull, OSError) as exc:
            log.error("smtp spool for %s unusable: %s", self.peer_ip, exc)
            return Reply(452, "4.3.1", "Insufficient system storage, try again later")
        return await self._deliver(event, data)

    async def _deliver(self, event: MessageReceived, data: bytes) -> Reply:
        accounts = []
        remote: list[NewRecipient] = []
        forwarded: list[NewRecipient] = []  # where a local alias or list sends it on
        envelope_to: dict[int, str] = {}  # the address each account was reached by (Sieve's envelope "to")
        rcpt_events = {r.forward_path: r for r in event.rcpts}
        for path in event.forward_paths:
            resolution = self.resolutions.get(path)
            if resolution is not None:
                accounts.extend(resolution.accounts)
                for a in resolution.accounts:
                    envelope_to.setdefault(a.id, resolution.address)
                rcpt = rcpt_events.get(path)
                # RFC 3461 4.1/4.2: NOTIFY and ORCPT travel with the recipient
                onward = forwarded if resolution.verdict is Verdict.LOCAL else remote
                for addr in resolution.remote:
                    onward.append(NewRecipient(addr, rcpt.notify if rcpt else None, rcpt.orcpt if rcpt else None))
        queue_id = new_msgid()
        trace = Trace(
            # RFC 3848: SMTP after HELO, ESMTP after EHLO, + S (TLS) + A
            # (authenticated); UTF8SMTP for an SMTPUTF8 transaction (RFC 6531 4.3)
            protocol=with_protocol(esmtp=self.engine.extended, tls=self.tls, auth=self.account is not None,
                                   utf8=event.mail is not None and event.mail.smtputf8),
            helo=self.helo,
            ip=self.peer_ip,
            id=queue_id,
            for_addr=event.forward_paths[0] if len(event.forward_paths) == 1 else None,
            tls_info=self._tls_info(),
        )
        mail = event.mail
        junk = False
        verdict: InboundVerdict | None = None
        if self.account is None and not self.submission and self.services.mailauth is not None:
            verdict = await self._authenticate(event, data)
            if verdict is None:
                # The checks broke on this message: accepting it without a
                # verdict would let whatever broke them skip DMARC, so the
                # sender is asked to retry (as Postfix does when a milter fails)
                return Reply(451, "4.7.0", "The sender authentication checks failed; try again later")
            data = verdict.header + verdict.message
            enforce = self.services.config.authentication.dmarc_policy == "enforce"
            permerror = verdict.dmarc is not None and verdict.dmarc.result == "permerror"
            # A local program on [spam] trusted_networks may hand over a
            # message whose From names no domain (none, or an unqualified
            # "root"): no author domain's policy is at stake, so it is
            # recorded (dmarc=permerror), not refused.
            if enforce and verdict.disposition == "reject" and not (permerror and self._exempt()):
                # RFC 7489 6.6.3 / 7.3 (p=reject): refused after the whole message was seen
                self._report_dmarc(event, verdict)
                if permerror:
                    # RFC 7489 6.6.1: no single From domain to check (RFC 5322 3.6.2)
                    log.info("smtp %s refused: %s", queue_id, verdict.dmarc.reason)
                    return Reply(550, "5.7.1", f"Message rejected: {verdict.dmarc.reason}; the sender is checked"
                                 " by the domain of the From address (RFC 5322 3.6.2, RFC 7489 6.6.1)")
                log.info("smtp %s refused: DMARC policy of %s is reject", queue_id,
                         verdict.dmarc.from_domain if verdict.dmarc else "")
                return Reply(550, "5.7.1", "Message rejected by the DMARC policy of the sender's domain")
            junk = enforce and verdict.disposition == "quarantine"
        if self.account is None and not self.submission and self.services.greylist is not None \
                and not self._exempt():
            why = await self._greylisted(event, verdict)
            if why is not None:
                # RFC 5321 4.5.4.1: a real mail server retries; RFC 3463 4.7.1
                self._abuse("greylisted", why, budgeted=False, msgid=queue_id,
                            **{"from": event.reverse_path, "to": event.forward_paths})
                return Reply(451, "4.7.1", why)
        junk_accounts: frozenset[int] = frozenset()
        fields: dict[int, bytes] | None = None
        spam: dict[int, SpamVerdict] | None = None
        if self.account is None and not self.submission and self.services.spam is not None:
            judgement = await self._judge(self.services.spam, event, data, queue_id, accounts, verdict)
            if judgement is not None:
                # a reply line is ASCII (RFC 5321 4.5.3.1.5 bounds it too)
                text = " ".join(judgement.text.encode("ascii", "replace").decode("ascii").split())[:300]
                if judgement.action == "reject":
                    self._message_rejected(queue_id, "spam", text)
                    return Reply(550, "5.7.1", text or "Spam message rejected")
                if judgement.action == "tempfail":
                    self._message_rejected(queue_id, "spam-tempfail", text)
                    return Reply(451, "4.7.1", text or "Try again later")
                data, junk_accounts, fields = judgement.message, judgement.junk, judgement.fields
                # each account's verdict, as its X-Spam-Status says, for Sieve's spamtest (RFC 5235)
                spam = {aid: SpamVerdict(judgement.score, f.required, f.junk)
                        for aid, f in judgement.filings.items()}
        try:
            # The one acceptance path (delivery/submit.py): the submission
            # policy when a user authenticated, then one durable commit.
            accepted = await accept_message(
                self.services, data, event.reverse_path, accounts, remote,
                trace=trace, account=self.account,
                envid=mail.envid if mail else None, ret=mail.ret if mail else None,
                smtputf8=bool(mail and mail.smtputf8), junk=junk, forwarded=forwarded, envelope_to=envelope_to,
                refuse_in_protocol=True, junk_accounts=junk_accounts, fields=fields, spam=spam,
            )
        except SenderNotAllowed as exc:
            self._message_rejected(queue_id, "sender-not-allowed", exc.verdict.reason, logging.WARNING)
            # RFC 5321 4.2.2 550, RFC 3463 5.7.1: delivery not authorized.
            return Reply(550, "5.7.1", exc.verdict.reason)
        except SubmissionLimited as exc:
            # RFC 3463 4.7.1: refused for now; the limit is logged by delivery/submit.py
            return Reply(451, "4.7.1", f"{exc}, try again later")
        except SieveRejected as exc:
            # RFC 5429 2.1: ereject refuses in the protocol, with the script's reason
            text = str(exc).encode("ascii", "replace").decode("ascii")  # a reply line is ASCII
            self._message_rejected(queue_id, "sieve-ereject", text)
            return Reply(550, "5.7.1", text)
        except RemoteUnavailable:
            self._message_rejected(queue_id, "remote-unavailable")
            return Reply(451, "4.4.0", "Remote delivery is not available yet")
        except QuotaExceeded as exc:
            # every recipient's mailbox is full: nothing was stored, the
            # sender's server tries again (RFC 3463 4.2.2, RFC 5321 4.2.5)
            self._message_rejected(queue_id, "mailbox-full", str(exc))
            return Reply(452, "4.2.2", "Mailbox full, try again later")
        except StorageFull:
            self._message_rejected(queue_id, "storage-full", level=logging.ERROR)
            return Reply(452, "4.3.1", "Insufficient system storage, try again later")
        except StoreUnavailable:
            self._message_rejected(queue_id, "store-unavailable", level=logging.ERROR)
            return Reply(451, "4.3.0", "Mail store unavailable, try again later")
        except Exception:
            log.exception("delivery %s failed", queue_id)
            metrics.count_message(self.listener.name, "rejected", "error")
            return Reply(451, "4.3.0", "Local error in processing, try again later")
        # Local recipients have their copy now; remote ones are queued (the
        # queue logs "queued" with its queue_id, then "sent"/"bounced").
        logs.event(
            log, logging.INFO, "accepted", proto=self.listener.name, ip=self.peer_ip,
            user=self.account.address if self.account else None, msgid=queue_id,
            size=len(data), delivered=len(accounts) - len(accepted.over_quota), queued=len(remote) + len(forwarded),
            **{"from": event.reverse_path, "to": event.forward_paths},
        )
        metrics.count_message(self.listener.name, "accepted")
        if verdict is not None:
            self._report_dmarc(event, verdict)
        if accepted.over_quota:
            await self._report_over_quota(event, accepted.data, accepted.over_quota, queue_id)
        return Reply(250, "2.0.0", f"OK queued as {queue_id}")

    def _report_dmarc(self, event: MessageReceived, verdict: InboundVerdict) -> None:
        """Count a message whose fate is decided (accepted, or refused by its
        DMARC policy) for the daily aggregate report (delivery/dmarcrpt.py);
        attempts deferred with a 4xx are not, as their retry will be."""
        reports = self.services.dmarc_reports
        if reports is not None and verdict.dmarc is not None:
            reports.record(ip=self.peer_ip or "", envelope_from=event.reverse_path,
                           envelope_to=event.forward_paths[0].rpartition("@")[2] if event.forward_paths else "",
                           dmarc=verdict.dmarc, spf=verdict.spf, dkim=verdict.dkim)

    def _message_rejected(self, msgid: str, reason: str, detail: str | None = None,
                          level: int = logging.INFO) -> None:
        logs.event(log, level, "message_rejected", proto=self.listener.name, ip=self.peer_ip,
                   user=self.account.address if self.account else None, msgid=msgid, reason=reason, detail=detail)
        metrics.count_message(self.listener.name, "rejected", reason)

    async def _greylisted(self, event: MessageReceived, verdict: InboundVerdict | None) -> str | None:
        """The greylisting verdict on this message (spam/greylist.py over
        store/greylist.py, in a thread: the state is an SQLite file): the
        reason to refuse it for now, or None."""
        state = self.services.greylist
        assert state is not None
        spam = self.services.config.spam
        policy = GreylistPolicy(spam.greylist_delay, spam.greylist_retry_window, spam.greylist_allow_days * 86400.0,
                                frozenset(d.lower() for d in spam.greylist_known_good))
        authenticated: list[str] = []
        if verdict is not None:
            if verdict.spf.result == "pass":
                authenticated.append(verdict.spf.domain)
            authenticated.extend(r.domain for r in verdict.dkim if r.result == "pass")
        try:
            return await asyncio.to_thread(_greylist_check, state, policy, self.peer_ip, event.reverse_path,
                                           list(event.forward_paths), authenticated, time.time())
        except Exception:
            log.exception("smtp: greylisting failed for %s; the message is not delayed", self.peer_ip)
            return None

    async def _authenticate(self, event: MessageReceived, data: bytes) -> InboundVerdict | None:
        """SPF, DKIM, ARC and DMARC of a message received on the MX port
        (mailauth/inbound.py), in the checks' worker processes or threads
        (mailauth/pool.py): the libraries and their DNS lookups block. None if the checks themselves broke (the
        error is logged and the message refused for now)."""
        checker = self.services.mailauth
        assert checker is not None
        try:
            return await checker.check(data, ip=self.peer_ip or "", helo=self.helo, reverse_path=event.reverse_path)
        except Exception:
            log.exception("smtp: authentication checks failed for %s", self.peer_ip)
            return None

    def _own_ips(self) -> list[str]:
        """The server address this client connected to (the HELO check's
        "ours"): the connection's, so asked of the transport once."""
        if self._own_ips_known is None:
            if self.transport is None:
                return []
            sockname = self.transport.get_extra_info("sockname")
            self._own_ips_known = [str(sockname[0])] if sockname else []
        return self._own_ips_known

    def _prefetch_checks(self) -> None:
        """On the MX port, start the spam checks that depend only on the
        client (its address and HELO name: DNS) while it sends its message
        (spam/checker.py prefetch); its verdict is the same as without."""
        spam = self.services.spam
        if spam is not None and self.account is None and not self.submission and self.helo:
            try:
                spam.prefetch(self.peer_ip or "", self.helo, self._own_ips())
            except Exception:
                log.exception("smtp: spam checks could not start for %s", self.peer_ip)

    async def _judge(self, spam: SpamChecker, event: MessageReceived, data: bytes, queue_id: str,
                     accounts: list[Account], auth: InboundVerdict | None) -> Judgement | None:
        """The spam verdict (spam/checker.py): built-in checks and rspamd.
        None if the checker itself broke: the message is then filed as if
        clean, and the error logged (mail is not lost to a bug here)."""
        own_ips = self._own_ips()
        try:
            return await spam.judge(data, queue_id=queue_id, ip=self.peer_ip or "", helo=self.helo,
                                    reverse_path=event.reverse_path, rcpts=list(event.forward_paths),
                                    accounts=accounts, auth=auth, own_ips=own_ips)
        except Exception:
            log.exception("smtp: spam checks failed for %s", self.peer_ip)
            return None

    async def _report_over_quota(self, event: MessageReceived, data: bytes, refused: list[Account],
                                 queue_id: str) -> None:
        """The message was accepted (250) but some accounts' mailboxes were
        full: the sender gets a DSN for them (RFC 5321 4.2.5: after 250,
        failures are reported by a DSN), with each recipient's NOTIFY and
        ORCPT (RFC 3461) when the forward-path was the account itself."""
        rcpt_events = {r.forward_path: r for r in event.rcpts}
        reported: list[tuple[str, NewRecipient | None]] = []
        for account in refused:
            rcpt = None
            for path in event.forward_paths:
                resolution = self.resolutions.get(path)
                if resolution is not None and account in resolution.accounts and path in rcpt_events:
                    rcpt = rcpt_events[path]
                    break
            params = NewRecipient(account.address, rcpt.notify, rcpt.orcpt) if rcpt is not None else None
            reported.append((account.address, params))
        logs.event(log, logging.INFO, "mailbox_full", proto=self.listener.name, ip=self.peer_ip, msgid=queue_id,
                   to=[a.address for a in refused])
        mail = event.mail
        try:
            await report_over_quota(self.services, data, event.reverse_path, reported,
                                    envid=mail.envid if mail else None, ret=mail.ret if mail else None)
        except Exception:
            log.exception("delivery %s: the mailbox-full report could not be stored", queue_id)

    async def verify(self, argument: str, expand: bool) -> Reply:
        """VRFY / EXPN for local users, aliases and lists (RFC 5321 3.5)."""
        address = argument.strip().strip("<>")
        resolution = await self.services.router.resolve(address)
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


def _greylist_check(state: GreylistState, policy: GreylistPolicy, ip: str, reverse_path: str,
                    recipients: list[str], authenticated: list[str], now: float) -> str | None:
    """Decide on each recipient's triplet and record what the decisions say;
    the first reason to defer, or None when the message passes."""
    network, domain = network_of(ip), sender_domain(reverse_path)
    allowed = state.is_allowed(network, domain, now)
    good = known_good(policy, authenticated)
    deferred: str | None = None
    passed: list[tuple[str, str, str]] = []
    for rcpt in recipients:
        key = triplet(ip, reverse_path, rcpt)
        decision = decide(policy, now, None if allowed or good else state.first_seen(*key),
                          allowed=allowed, good_domain=good)
        if decision.first:
            state.record_first(*key, now)
        if decision.defer:
            deferred = deferred or decision.reason
        elif decision.allow:
            passed.append(key)
    if deferred is None and passed:
        state.allow(network, domain, now, now + policy.allow_for, passed)
    return deferred


def smtp_protocol(services: Services, listener: Listener) -> SMTPSession:
    """The MX port (25 / 2525)."""
    return SMTPSession(services, listener)


def submission_protocol(services: Services, listener: Listener) -> SMTPSession:
    """The submission ports: 587 / 2587 (STARTTLS) and 465 / 2465 (implicit TLS)."""
    return SMTPSession(services, listener, submission=True)
