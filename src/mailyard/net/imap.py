"""IMAP service glue: moves bytes between a socket and the sans-I/O IMAP
layer (protocols/imap), and carries out what that layer awaits.

- `ImapConnection` is the asyncio Protocol of one connection (on the shared
  net/session_protocol.py base) and the layer's `ImapIO`: flushing with
  back-pressure, waiting for more input (AUTHENTICATE) or for a change or
  DONE (IDLE), STARTTLS, COMPRESS=DEFLATE (RFC 4978, inside TLS when both
  are on), the autologout and command-deadline timers.
- `ImapLoginService` is the layer's `ImapLogin`: the server's one login
  service (auth/service.py through net/login.py) and SASL (auth/sasl.py).
- net/imap_store.py's `StoreBackend` is the layer's `ImapBackend` over the
  store, one per logged-in session.

What a command means, which untagged responses it causes and how a FETCH
item is encoded are not here: see protocols/imap/session.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import weakref
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from .. import __version__
from ..auth import sasl
from ..protocols.contract import Closed
from ..protocols.imap.backend import (
    BackendError,
    ConnectionEnding,
    LoginRefused,
    SaslChallenge,
    Unavailable,
)
from ..protocols.imap.commands import Command
from ..protocols.imap.engine import ImapEngine
from ..protocols.imap.framing import Limits
from ..protocols.imap.handlers import HANDLERS
from ..protocols.imap.session import ImapConfig, ImapSession
from ..store.api import Account, StoreError, StoreUnavailable
from .budgets import abuse_budgets
from .imap_store import StoreBackend
from .login import Authenticator, TryLater, plaintext_allowed, too_slow
from .revocations import RevocationWatch
from .session_protocol import SessionProtocol

_T = TypeVar("_T")

if TYPE_CHECKING:
    import asyncio

    from ..services import Services
    from .listener import Listener

log = logging.getLogger("mailyard.imap")

# a check with no turn to wait for (nullcontext is reusable: one for all)
_NO_TURN: contextlib.AbstractAsyncContextManager[bool] = contextlib.nullcontext(True)


_SHUTDOWN = ("Server shutting down", "UNAVAILABLE")
# auth/sasl.py failure kinds the client caused by its syntax (BAD, not a failed login)
_MALFORMED = frozenset({"malformed", "too-long", "protocol"})


# COMPRESS=DEFLATE (RFC 4978 4): raw DEFLATE streams (RFC 1951; zlib with
# negative wbits). zlib's deflate state costs (1 << (wbits + 2)) +
# (1 << (memLevel + 9)) bytes: 256 KiB at its defaults, 32 KiB with a 4 KiB
# window and memLevel 5, which every inflater accepts (RFC 1951 3.2: a
# distance is at most 32 KiB, any shorter window is valid). The inflater
# must take the client's full 32 KiB window.
DEFLATE_WBITS = -12
DEFLATE_MEMLEVEL = 5
INFLATE_WBITS = -15
# Inflated input is handed to the engine this much at a time, and only when
# the engine has used the previous piece: a few kilobytes of DEFLATE can
# stand for gigabytes, and must meet the same line and literal limits (and
# the same pausing while a command runs) as uncompressed input.
INFLATE_CHUNK = 32 * 1024
# Further pieces inflated in one turn of the event loop before it serves the
# other clients (reading waits meanwhile): at most 64 KiB of input per turn,
# about one socket read of uncompressed input.
INFLATE_ROUNDS = 1


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class ImapLoginService:
    """`ImapLogin` for one connection: the server's login throttle and store."""

    # RFC 9051 6.2.2: the SASL mechanisms, strongest first; True: password in the clear
    sasl_mechanisms = {name: name in sasl.PLAINTEXT_MECHANISMS for name in sasl.MECHANISMS}
    __slots__ = ("_authenticator", "conn", "services")

    def __init__(self, services: Services, conn: ImapConnection) -> None:
        self.services = services
        self.conn = conn
        self._authenticator: Authenticator | None = None

    @property
    def authenticator(self) -> Authenticator:
        auth = self._authenticator
        if auth is None:
            auth = self._authenticator = Authenticator(self.services, self.conn, self.conn.listener.name)
        return auth

    def plaintext_ok(self) -> bool:
        """Passwords in the clear only over TLS, or from loopback (configurable,
        net/login.py; RFC 9051 11.1)."""
        return plaintext_allowed(self.services, self.conn)

    def backend(self, account: Account) -> StoreBackend:
        return StoreBackend(self.services.store, account, self.services.learn)

    async def login(self, user: str, password: str) -> StoreBackend | LoginRefused:
        result = await self.authenticator.password(user, password)
        if isinstance(result, TryLater):
            return LoginRefused("temporary")
        if result is None:
            return LoginRefused("denied")
        self.logged_in()
        return self.backend(result)

    def logged_in(self) -> None:
        """The login is done: nothing is left open to settle, and the
        session keeps no login machinery for its life (every idle
        connection would pay for it)."""
        self._authenticator = None

    def sasl(self, mechanism: str) -> _SaslExchange:
        return _SaslExchange(self, sasl.start(mechanism))

    def close(self) -> None:
        if self._authenticator is not None:
            self._authenticator.close()  # an AUTHENTICATE left open counts as a failure


class _SaslExchange:
    """One AUTHENTICATE exchange (auth/sasl.py) under the login throttle."""

    def __init__(self, service: ImapLoginService, mech: sasl.Mechanism) -> None:
        self.service = service
        self.mech = mech
        self.started = False

    def expiry(self) -> LoginRefused | None:
        failure = self.service.authenticator.expiry(self.mech)
        return None if failure is None else _refusal(failure)

    async def step(self, response: bytes | None) -> SaslChallenge | LoginRefused | StoreBackend:
        mech, auth = self.mech, self.service.authenticator
        if not self.started:
            self.started = True
            ev = await auth.sasl(mech, mech.begin(response))
        else:
            ev = await auth.sasl(mech, mech.step(response or b""))
        if isinstance(ev, sasl.Challenge):
            return SaslChallenge(ev.wire)
        if isinstance(ev, sasl.Success):
            account = await auth.account(ev)
            if account is None:
                return LoginRefused("denied")
            self.service.logged_in()
            return self.service.backend(account)
        return _refusal(ev)


def _refusal(failure: sasl.Failure) -> LoginRefused:
    """What ends AUTHENTICATE for a SASL failure (auth/sasl.py kinds)."""
    if too_slow(failure):
        return LoginRefused("too-slow")
    if failure.kind in ("cancelled", "temporary"):
        return LoginRefused(failure.kind)
    return LoginRefused("malformed" if failure.kind in _MALFORMED else "denied")


_SETTINGS: weakref.WeakKeyDictionary[Services, tuple[Limits, ImapConfig]] = weakref.WeakKeyDictionary()


def _settings(services: Services) -> tuple[Limits, ImapConfig]:
    """The limits and settings every IMAP session of ``services`` shares:
    made once (both are immutable), not once per connection, where they
    cost some 400 bytes of every idle connection."""
    found = _SETTINGS.get(services)
    if found is None:
        cfg = services.config
        limits = cfg.limits
        found = _SETTINGS[services] = (
            Limits(
                max_line=limits.imap_max_line,
                max_literal=limits.imap_max_literal,
                max_append=cfg.smtp.max_message_size,
                max_command=limits.imap_max_command,
                max_append_command=limits.imap_max_append_command,
                max_unauthenticated=limits.imap_max_command_unauthenticated,
            ),
            ImapConfig(
                hostname=cfg.server.hostname,
                version=__version__,
                budgets=abuse_budgets(cfg, "imap"),
                failures=(BackendError, StoreError),
                unavailable=(Unavailable, StoreUnavailable),
                unauthenticate=cfg.auth.imap_unauthenticate,
                kept=services.imap_idle_caches,
            ),
        )
    return found


class ImapConnection(SessionProtocol):
    """One IMAP connection: bytes in and out, timers, and the IMAP session.

    An asyncio.Protocol (net/session_protocol.py, like SMTP and POP3): bytes
    go from ``data_received`` into the engine, and each command is a step
    started at once (``eager_steps``). A FETCH whose data the store reads
    without waiting finishes inside ``data_received``, so a command costs one
    read and one write on the socket and no task switch. A step that waits
    (a commit, a password check) goes on in a task while input waits; IDLE
    and AUTHENTICATE read their further lines with `wait_input`.
    """

    eager_steps = True
    protocol_label = "imap"

    def __init__(self, services: Services, listener: Listener) -> None:
        super().__init__(listener)
        self.services = services
        limits = services.config.limits
        self.imap = ImapSession(self, ImapLoginService(services, self), HANDLERS, *_settings(services))
        self.idle_timeout = limits.imap_idle_timeout
        self._waiter: asyncio.Future[None] | None = None  # a step waiting for input (IDLE, AUTHENTICATE)
        # the revocation watch whose word ended the last IDLE wait: the next
        # check takes its turn there (idle_check)
        self._paced: RevocationWatch | None = None
        self._deflate: Any = None  # zlib compressobj once COMPRESS DEFLATE is active
        self._inflate: Any = None  # zlib decompressobj, likewise
        self._inflate_tail = b""  # DEFLATE input not yet inflated (the engine has enough)
        self._inflate_more = False  # the inflater stopped at INFLATE_CHUNK: it may hold more output
        self._inflate_later = False  # the rest of the inflated input waits for the next loop turn
        self._inflate_rounds = 0  # pieces inflated by pump since the event loop last ran

    @property
    def engine(self) -> ImapEngine:  # type: ignore[override]
        """The engine of the IMAP session (replaced by STARTTLS)."""
        return self.imap.engine

    # --- SessionProtocol hooks ----------------------------------------------
    def start(self) -> None:
        self.imap.greeting()
        self.write(self.imap.engine.data_to_send())

    def received(self, data: bytes) -> None:
        self._inflate_rounds = 0  # a new turn of the event loop
        if self._inflate is not None and data:
            self._inflate_tail += data
            if self._inflate_more:
                # earlier input is still being inflated (pump, or a step's
                # wait_input, takes it in turn): this queues behind it
                self.wake()
                return
            data = self._inflate_some()
            if not data:
                return  # a DEFLATE block not complete yet (or the session ended)
        self.imap.engine.receive_data(data)  # b"": the engine ends the session (or a waiting IDLE does)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pump(self) -> Coroutine[Any, Any, None] | None:
        while True:
            step = super().pump()
            if step is not None or not self._inflate_more or self.closed or self.writing_paused:
                return step
            if self._inflate_rounds >= INFLATE_ROUNDS:
                self._defer_inflate()
                return None
            self._inflate_rounds += 1
            # the engine used what it had: inflate the next piece of the client's input
            data = self._inflate_some()
            if data:
                self.imap.engine.receive_data(data)

    def _defer_inflate(self) -> None:
        """Let the other connections run before more of this client's
        inflated input: a few octets of DEFLATE can hold a million commands."""
        if self.transport is not None:
            self.transport.pause_reading()
        if not self._inflate_later:
            self._inflate_later = True
            self.loop.call_soon(self._inflate_resume)

    def _inflate_resume(self) -> None:
        self._inflate_later = False
        self._inflate_rounds = 0
        if self.closed or self.busy or self.writing_paused:
            return  # the end of the step, or resume_writing, goes on with it
        self.advance()
        self.timers.check_deadline()
        if not (self._inflate_later or self.busy or self.closed or self.writing_paused) and self.transport is not None:
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        deflate = self._deflate
        if deflate is not None and data and not self.closed:
            # RFC 4978 4: a sync flush after each burst of responses, so the
            # client can inflate all of it now and is never left waiting
            data = deflate.compress(data) + deflate.flush(zlib.Z_SYNC_FLUSH)
        super().write(data)

    def _inflate_some(self) -> bytes:
        """At most INFLATE_CHUNK octets of the client's inflated input; b""
        if none is ready. A corrupt stream, or one the client ended, ends the
        session with BYE."""
        inflate = self._inflate
        try:
            data = inflate.decompress(self._inflate_tail, INFLATE_CHUNK)
        except zlib.error:
            data = None
        if data is None or inflate.eof:
            self._inflate_tail, self._inflate_more = b"", False
            log.info("imap: %s sent a broken DEFLATE stream", self.peer_ip)
            self.write(self._bye("Compression error"))
            self.close()
            return b""
        self._inflate_tail = inflate.unconsumed_tail
        # at the limit, the rest may be in the tail or already inside zlib
        self._inflate_more = len(data) == INFLATE_CHUNK
        return data

    def on_event(self, event: Command) -> Coroutine[Any, Any, None]:  # type: ignore[override]
        return self.imap.execute(event)  # every command is a step (eager: most finish at once)

    def waiting_for_input(self) -> None:
        if self.imap.engine.framer.mid_command:
            self._quick_ack()

    def ended(self, event: Closed) -> None:
        log.debug("imap: session with %s ended: %s", self.peer_ip, event.reason)

    def _bye(self, text: str, code: str | None = None) -> bytes:
        engine = self.imap.engine
        engine.bye(text, code)
        return engine.data_to_send()

    def goodbye(self) -> bytes:
        return self._bye(*_SHUTDOWN)

    def refusal(self, reason: str) -> bytes:
        # Over the connection limits: RFC 9051 7.1.5 allows BYE as the greeting.
        return f"* BYE {reason}\r\n".encode()

    def on_timeout(self) -> bytes:
        return self._bye("Autologout; idle for too long")

    def input_state(self) -> tuple[bool, int, float]:
        # A command line (or a command with its literals, e.g. APPEND) must be
        # complete within the command (literal) deadline, however slowly its
        # bytes trickle in (listener.CommandClock).
        framer = self.imap.engine.framer
        limits = self.listener.limits
        deadline = limits.literal_deadline if framer.mid_command else limits.command_deadline
        return framer.partial, framer.completed, deadline

    def on_deadline(self) -> bytes:
        return self._bye("Command not completed in time")

    def shutdown(self) -> None:
        waiter = self._waiter
        if self.busy and waiter is not None and not waiter.done():
            self._stopping = True
            waiter.set_exception(ConnectionEnding(*_SHUTDOWN))  # IDLE / AUTHENTICATE: BYE now
            return
        super().shutdown()

    def sasl_expired(self) -> None:
        # AUTHENTICATE is a step that waits for the client's line (wait_input):
        # woken, it finds the exchange expired and answers NO itself
        self.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.imap.close()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # the wait sees `closed` and reports the end of input

    def _quick_ack(self) -> None:
        """ACK the rest of a command at once. A client that writes a literal and
        its closing CRLF in two send() calls (Python's imaplib does) has the
        CRLF held back by Nagle's algorithm until the literal is ACKed, and a
        delayed ACK costs 40 ms per APPEND. TCP_QUICKACK is reset by the
        kernel, hence set again before each read that is mid-command."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        quickack = getattr(socket, "TCP_QUICKACK", None)
        if sock is not None and quickack is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
            except OSError:
                pass

    # --- ImapIO -------------------------------------------------------------------
    @property
    def input_over(self) -> bool:
        """No more input will come: the client closed its side, or the connection is gone."""
        return self.closed or self.imap.engine.input_ended

    @property
    def tls_active(self) -> bool:
        return self.tls

    @property
    def can_start_tls(self) -> bool:
        return self.services.tls is not None

    def now(self) -> float:
        return time.time()

    async def compute(self, fn: Callable[[], _T]) -> _T:
        # a worker thread: the event loop keeps serving the other
        # connections (the GIL is handed over every few milliseconds)
        return await asyncio.to_thread(fn)

    def authenticated(self) -> None:
        # RFC 9051 5.4: the autologout timer is at least 30 minutes once
        # authenticated; the listener's shorter idle timeout applies before.
        self.set_timeout(self.idle_timeout)

    def unauthenticated(self) -> None:
        # UNAUTHENTICATE (RFC 8437): the listener's shorter idle timeout again
        self.set_timeout(self.listener.limits.idle_timeout)

    async def flush(self) -> None:
        """Write what the engine has queued; wait while the client is behind."""
        data = self.imap.engine.data_to_send()
        if data:
            self.write(data)
            await self.drain()

    async def pause(self) -> None:
        await asyncio.sleep(0)  # the loop runs the callbacks ready meanwhile: other sessions' input

    async def begin_tls(self) -> None:
        tls = self.services.tls
        assert tls is not None
        # The IMAP layer has written its OK and forgotten the clear-text session.
        if not await self.upgrade_tls(tls.context):
            raise ConnectionError("TLS handshake failed")

    @property
    def compression_active(self) -> bool:
        return self._deflate is not None

    def begin_compress(self) -> None:
        # RFC 4978 3: the tagged OK went out uncompressed (flushed by the
        # layer); everything after it, both ways, is DEFLATE.
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, DEFLATE_WBITS, DEFLATE_MEMLEVEL)
        self._inflate = zlib.decompressobj(INFLATE_WBITS)

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_input(self, timeout: float | None) -> None:
        """Wait, with reading resumed, until bytes (or the end of input) reach
        the engine or `wake` is called. Raises TimeoutError after ``timeout``
        seconds (None: the session's idle timer ends the wait, by closing
        the connection), ConnectionEnding when the server stops."""
        if self.input_over:
            return
        if self._stopping:  # the stop came while this step was busy elsewhere
            raise ConnectionEnding(*_SHUTDOWN)
        if self._inflate_more:
            # input that arrived compressed and is not inflated yet: no need to wait
            data = self._inflate_some()
            if data:
                self.imap.engine.receive_data(data)
            return
        fut = self.loop.create_future()
        self._waiter = fut
        timer = self.loop.call_later(timeout, _expire, fut) if timeout is not None else None
        self.reading_wanted = True
        if self.transport is not None:
            self.transport.resume_reading()
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None
            self.reading_wanted = False
            if self.transport is not None and not self.closed:
                self.transport.pause_reading()

    async def more_input(self) -> bool:
        """Wait for more of a command's input (an AUTHENTICATE response line)
        under the command deadline; False at the end of input. A partial line
        keeps the deadline it started with (listener.CommandClock): bytes
        trickled in do not restart it."""
        partial, progress, deadline = self.input_state()
        left = self.timers.clock.remaining(self.loop.time(), partial, progress, deadline)
        if left is None:
            left = self.listener.limits.command_deadline
        if left <= 0:
            raise ConnectionEnding("Command not completed in time")
        try:
            await self.wait_input(left)
        except TimeoutError:
            raise ConnectionEnding("Command not completed in time") from None
        return not self.input_over

    def revocation_mark(self) -> object:
        return self.services.store.revocation_version()

    def idle_check(self, paced: bool = True) -> contextlib.AbstractAsyncContextManager[bool]:
        """After a wait the revocation watch ended (or did not begin), a
        turn among the sessions it woke: CHECKS_AT_ONCE of them read the
        database at a time (net/revocations.py). ``paced`` False (the check
        answers DONE), or after another wake (input, a change of the
        mailbox), nothing to wait for: commands take no turn either."""
        watch, self._paced = self._paced, None
        if watch is None or not paced:
            return _NO_TURN
        return self._turn(watch)

    @contextlib.asynccontextmanager
    async def _turn(self, watch: RevocationWatch) -> AsyncIterator[bool]:
        """Hold a turn at ``watch.checking`` while the session checks: True.
        False, with no turn held, when input, a wake or the end of the
        connection came first (the session sees to it, then checks with no
        turn to wait for), or once the connection is over.

        This frame holds ``watch`` until the turn ends: the watches are kept
        weakly (net/revocations.py), and one freed while sessions wait for
        or hold its turns would be replaced by one with every turn free."""
        checking = watch.checking
        if checking.locked():
            turn = self.loop.create_task(checking.acquire())
            # (a turn given ends the wait; a cancelled one must not end a later wait)
            turn.add_done_callback(lambda t: t.cancelled() or self.wake())
            raised = True
            try:
                await self.wait_input(None)  # also ends at the turn, by `wake`
                raised = False
            finally:
                held = turn.done() and not turn.cancelled()
                if not turn.done():
                    turn.cancel()  # (a turn given meanwhile goes to the next in line)
                elif held and raised:
                    checking.release()  # (the session ends here: ConnectionEnding)
            if not held:
                yield False
                return
        else:
            await checking.acquire()  # (free: does not suspend)
        try:
            yield not self.input_over
        finally:
            checking.release()

    async def wait_idle(self, since: object, checked: bool = True) -> bool:
        """IDLE: wait for input, a change, or a revocation anywhere after
        ``since`` (net/revocations.py; the session then checks its account
        and mailbox, `idle_check`); False at the end of input."""
        if self.input_over:
            return False
        # RFC 9051 5.4: the autologout timer counts the client's silence
        # (its last byte, net/timers.py), not our reports.
        # The session's idle timer (net/timers.py) ends a silence that runs
        # too long with the BYE below: no timer of its own per IDLE wait.
        if self.timers.last_activity + self.idle_timeout - self.loop.time() <= 0:
            raise ConnectionEnding("Autologout; idle for too long")
        if since is None:  # the store gives no revocation signal
            await self.wait_input(None)
            return True
        watch = RevocationWatch.of(self.loop, self.services.store)
        if not watch.add(self, since, checked):
            self._paced = watch
            return True  # revoked since the session's check, maybe: it checks again
        try:
            await self.wait_input(None)
        finally:
            if watch.discard(self):
                self._paced = watch
        return True


def imap_protocol(services: Services, listener: Listener) -> ImapConnection:
    """The IMAP ports: 143 / 2143 (STARTTLS) and 993 / 2993 (implicit TLS, RFC 8314)."""
    return ImapConnection(services, listener)
