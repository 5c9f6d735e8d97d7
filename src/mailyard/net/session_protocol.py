"""A protocol session driven by asyncio.Protocol callbacks instead of streams.

Why: with streams every client line costs a task wake-up; here bytes go from
``data_received`` straight into the sans-I/O engine, replies that need nothing
from outside are written at once, and a coroutine runs only for a step that
needs I/O (a store lookup, a durable commit, a TLS handshake). While such a
step runs, reading is paused, so a client cannot make the engine buffer
without bound, and pipelined commands keep their order.

This is the one session skeleton of SMTP, POP3, IMAP and ManageSieve. Each
drives a sans-I/O engine under the contract of protocols/contract.py, so one
pump serves them all: ``pump`` takes events until the engine needs bytes
(``NEED_DATA``/``PAUSED``: flush what it queued) or ends (``Closed``: flush
and close), and hands every other event to ``on_event``, which answers it on
the spot or returns a coroutine: a step that needs I/O. An engine holding
``FLUSH_AT`` octets of replies says ``FLUSH`` before it takes another
command; ``pump`` writes them and stops while the transport is above its
high-water mark (``pause_writing``), so a client that pipelines commands
and reads nothing makes us hold a bounded amount, not the replies to all
it sent. One STARTTLS
upgrade (``upgrade_tls``) serves all three. The timers (idle timeout,
command deadline, a client that stops reading) live in net/timers.py,
apart from the pump.

Subclasses set ``self.engine`` and implement ``start`` (greeting),
``on_event`` and ``goodbye`` (the protocol's shutdown reply); optionally
``waiting_for_input`` and ``ended``.

A subclass with ``eager_steps = True`` (POP3) has each step started right
away inside ``data_received``: a step that finishes without waiting (a RETR
whose bytes the store reads synchronously) costs no task, no pause of
reading and no extra trip through the event loop; only a step that does
wait (a password check, a commit) goes on in a task (`_Resume`). Such steps
must not need a current task before their first wait (asyncio.timeout does).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from .. import logs, metrics
from ..protocols.contract import FLUSH, NEED_DATA, PAUSED, Closed
from .conncaps import log_refusal
from .listener import Listener
from .timers import SessionTimers
from .tls import log_tls_failure

log = logging.getLogger("mailyard.net")

# Seconds a closed connection may take to deliver its last output.
CLOSE_GRACE = 10.0
# Seconds a client has for its TLS handshake after STARTTLS or STLS (as on an
# implicit-TLS port, net/accept.py HANDSHAKE_TIMEOUT).
STARTTLS_TIMEOUT = 30.0
# A step that wrote more than this and has more to write waits for the client
# (`drain`), so a client that pipelines big fetches cannot make us hold them all.
WRITE_HIGH_WATER = 256 * 1024


class _Resume:
    """Carries on, inside a task, a coroutine that was started by hand and is
    now suspended on ``waiting`` (what its first ``send`` yielded)."""

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        self.coro = coro
        self.waiting = waiting

    def __await__(self) -> Generator[Any, Any, None]:
        coro, waiting = self.coro, self.waiting
        while True:
            try:
                yield waiting  # the task waits on it as if the coroutine had yielded it
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # e.g. CancelledError thrown in by the task
                try:
                    waiting = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting = coro.send(None)
                except StopIteration:
                    return


def _stalled(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class SessionProtocol(asyncio.Protocol):
    eager_steps = False  # see the module docstring
    engine: Any  # the protocol's sans-I/O engine (protocols/contract.py)
    protocol_label = "session"  # for logs: "smtp", "pop3", "imap"

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer_ip = ""
        self.peer_port = 0
        self.tls = False
        self.closed = False
        self.busy = False  # an I/O step is running; input waits
        self.reading_wanted = False  # ... unless the step itself waits for input (IMAP IDLE)
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._admitted = False
        self._writable: asyncio.Future[None] | None = None
        self.writing_paused = False  # the transport's buffer is above its high-water mark
        limits = listener.limits
        self.timers = SessionTimers(self.loop, self, limits.idle_timeout, limits.idle_timeout)

    @property
    def is_loopback(self) -> bool:
        ip = self.peer_ip
        return ip.startswith("127.") or ip in ("::1", "::ffff:127.0.0.1")

    # --- hooks for subclasses ---------------------------------------------
    def start(self) -> None:
        """Called once the connection is admitted: write the greeting."""

    def received(self, data: bytes) -> None:
        """Feed bytes (b"" for end of stream) to the engine."""

    def pump(self) -> Coroutine[Any, Any, None] | None:
        """Take the engine's events until it needs bytes or a step needs I/O.

        ``NEED_DATA`` / ``PAUSED``: write what the engine queued, then
        ``waiting_for_input``. ``FLUSH``: write what it queued, and go on
        unless that filled the transport past its high-water mark (the
        client is not reading: ``resume_writing`` goes on once it does).
        ``Closed``: write the last replies, ``ended``, close. Any other
        event goes to ``on_event``; a coroutine it returns is the step that
        runs next (reading waits meanwhile)."""
        engine = self.engine
        while True:
            event = engine.next_event()
            if event is FLUSH:
                self.write(engine.data_to_send())
                if self.writing_paused or self.closed:
                    return None
                continue
            if event is NEED_DATA or event is PAUSED:
                self.write(engine.data_to_send())
                self.waiting_for_input()
                return None
            if isinstance(event, Closed):
                self.write(engine.data_to_send())
                self.ended(event)
                self.close()
                return None
            step = self.on_event(event)
            if step is not None:
                return step

    def on_event(self, event: Any) -> Coroutine[Any, Any, None] | None:
        """Answer an engine event now (return None), or return the step that
        answers it with I/O (a store call, a password check, TLS)."""
        return None

    def waiting_for_input(self) -> None:
        """The engine has consumed all input; called after its replies were
        written (e.g. to choose the idle timeout for the state it is in)."""

    def ended(self, event: Closed) -> None:
        """The engine ended the session (before the connection closes)."""

    def goodbye(self) -> bytes:
        """The reply sent when the server shuts down (SMTP 421, IMAP BYE, ...)."""
        return b""

    def refusal(self, reason: str) -> bytes:
        """The reply sent when the connection limits refuse a client."""
        return b""

    def on_timeout(self) -> bytes:
        """The reply sent when the client was silent for too long."""
        return b""

    def input_state(self) -> tuple[bool, int, float]:
        """(the engine holds an incomplete command or message, count of units
        it completed so far, seconds allowed for the incomplete one); see
        listener.CommandClock. The default: no deadline."""
        return False, 0, 0.0

    def on_deadline(self) -> bytes:
        """The reply sent when a command or message took too long to arrive."""
        return self.on_timeout()

    def end_sasl(self) -> bool:
        """End the SASL exchange that waits for the client's response, which
        the deadline ended, with the protocol's reply to the failure the
        login session hands over (``LoginSession.expiry``, queued in the
        engine); False if no such exchange waits. See `sasl_expired`."""
        return False

    def sasl_expired(self) -> None:
        """The SASL exchange deadline passed while the client was to answer
        a challenge (auth/service.py ``LoginSession.sasl``; the attempt is
        settled already): send the protocol's failure reply now
        (`end_sasl`), and the connection goes on as after any failed AUTH.
        While a step runs (the client's line came as the timer ran), the
        step takes the failure from the login session; while the client is
        not taking our output, `resume_writing` sends the reply once it
        does (or the next step of the exchange, or its cancel, takes it)."""
        if self.busy or self.closed or self.writing_paused:
            return
        if self.end_sasl():
            self.advance()
            self.timers.check_deadline()

    # --- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        # The client's address from a PROXY protocol header (net/proxy_protocol.py), or the socket's.
        peer = getattr(self, "peer_override", None) or transport.get_extra_info("peername") or ("", 0)
        self.peer_ip, self.peer_port = peer[0], peer[1]
        self.tls = transport.get_extra_info("sslcontext") is not None
        over = self.listener.admit(self, self.peer_ip)
        if over is not None:
            log_refusal(log, self.listener.name, self.peer_ip, over)
            transport.write(self.refusal(over))
            self.closed = True
            transport.close()
            return
        self._admitted = True
        metrics.count_connection(self.listener.name)
        self.start()
        self.timers.touch()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.timers.touch()
        self.received(data)
        self.advance()
        self.timers.check_deadline()

    def eof_received(self) -> bool:
        if not self.closed:
            self.received(b"")
            self.advance()
        # Over plain TCP, keep the transport half open: we close it ourselves
        # after the last reply. Over TLS the client's close_notify has already
        # started the TLS shutdown (RFC 8446 6.1), so asyncio's SSL layer
        # closes the transport whatever we answer, and warns on True.
        return not self.tls

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.timers.cancel()
        if self._admitted:
            self.listener.release(self)
            self._admitted = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(ConnectionError("connection lost"))
        # A step in progress (e.g. a durable commit) is left to finish: what it
        # writes goes nowhere, and what it stores is complete or absent.

    def pause_writing(self) -> None:
        # The client is not taking our output: stop reading and stop running
        # its commands (`advance`), so pipelined commands cannot make us queue
        # without bound; if it takes nothing for the idle timeout, cut it
        # (a slow-read client would otherwise hold its slot and our buffers).
        self.writing_paused = True
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.timers.output_blocked()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.timers.output_flowing()
        self.timers.touch()  # the client took our output: it is not idle
        if self.transport is not None and not self.closed and (not self.busy or self.reading_wanted):
            self.transport.resume_reading()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        if not (self.busy or self.closed):
            self.advance()  # the commands that waited for the client to read
            # a SASL exchange the deadline ended meanwhile: answered now
            # (what the client sent first was taken above, and answered so)
            if not (self.busy or self.closed or self.writing_paused) and self.end_sasl():
                self.advance()
            self.timers.check_deadline()

    async def drain(self) -> None:
        """Inside a step: wait while the transport holds more than
        WRITE_HIGH_WATER bytes the client has not taken yet (flow control).
        A client that stops reading gets the idle timeout, then is cut."""
        transport = self.transport
        if transport is None or transport.get_write_buffer_size() <= WRITE_HIGH_WATER:
            return
        if self.closed:
            raise ConnectionError("connection closed")
        writable = self._writable = self.loop.create_future()
        # A timer, not asyncio.wait_for: an eager step (FETCH) may get here
        # before it runs in a task, and from Python 3.12 wait_for needs one.
        timer = self.loop.call_later(self.listener.limits.idle_timeout, _stalled, writable)
        try:
            await writable
        except TimeoutError:
            self.abort()
            raise ConnectionError("client stopped reading") from None
        finally:
            timer.cancel()
            self._writable = None

    # --- driving the engine ----------------------------------------------------
    def advance(self) -> None:
        """Let the engine run until it needs input or an I/O step."""
        while not (self.busy or self.closed or self.writing_paused):
            step: Coroutine[Any, Any, None] | _Resume | None = self.pump()
            if step is None:
                return
            if self.eager_steps:
                try:
                    waiting = step.send(None)  # type: ignore[union-attr]
                except StopIteration:
                    continue  # done without waiting: on to the next command
                except (ConnectionError, ssl.SSLError):
                    self.close()
                    return
                except Exception:
                    log.exception("%s: session with %s failed", self.listener.name, self.peer_ip)
                    self.close()
                    return
                step = _Resume(step, waiting)  # type: ignore[arg-type]
            self.begin_step(step)
            return

    def begin_step(self, step: Coroutine[Any, Any, None] | _Resume) -> None:
        """Run ``step`` as the session's one step in progress: the client's
        input waits for it (reading paused, unless ``reading_wanted``)."""
        self.busy = True
        if self.transport is not None and not self.reading_wanted:
            self.transport.pause_reading()
        self._task = self.loop.create_task(self._run_step(step))

    async def _run_step(self, step: Coroutine[Any, Any, None] | _Resume) -> None:
        try:
            await step
        except (ConnectionError, ssl.SSLError):
            self.close()
        except Exception:
            log.exception("%s: session with %s failed", self.listener.name, self.peer_ip)
            self.close()
        finally:
            self.busy = False
            self._task = None
        if self.closed:
            return
        if self._stopping:
            self.write(self.goodbye())
            self.close()
            return
        if self.transport is not None and not self.writing_paused:  # else resume_writing does it
            self.transport.resume_reading()
        self.advance()
        self.timers.check_deadline()

    def write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
            # A client that does not read keeps a closing transport (and the
            # connection slot) forever; cut it after a grace period.
            self.loop.call_later(CLOSE_GRACE, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if self._admitted and self.transport is not None:
            self.transport.abort()

    def abort(self) -> None:
        # (without a transport the connection is still in its TLS handshake:
        # the accept loop holds it, and closing the loop drops it)
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    def shutdown(self) -> None:
        """Server stop: say goodbye now, or right after the step in progress.

        A session whose ``connection_made`` has not run (an implicit-TLS
        connection counted in at accept, still in its handshake: net/accept.py)
        has no engine and no transport, so nothing to say: the accept loop
        drops its connection when it stops and gives its slot back."""
        self._stopping = True
        if self.transport is None:
            return
        if not self.busy and not self.closed:
            self.write(self.goodbye())
            self.close()

    def set_timeout(self, seconds: float) -> None:
        """Change the idle timeout (e.g. RFC 5321 4.5.3.2 values per state)."""
        self.timers.set_idle_timeout(seconds)

    # --- what the timers (net/timers.py) do when one expires ---------------------
    def idle_expired(self) -> None:
        logs.event(log, logging.INFO, "timeout", proto=self.listener.name, ip=self.peer_ip, reason="idle")
        self.write(self.on_timeout())
        self.close()

    def deadline_passed(self) -> None:
        logs.event(log, logging.INFO, "timeout", proto=self.listener.name, ip=self.peer_ip, reason="command")
        self.write(self.on_deadline())
        self.close()

    def output_stalled(self) -> None:
        if self.transport is not None:
            logs.event(log, logging.INFO, "timeout", proto=self.listener.name, ip=self.peer_ip, reason="not-reading")
            self.abort()

    async def upgrade_tls(
        self, context: ssl.SSLContext, forget: Callable[[], None] | None = None
    ) -> bool:
        """STARTTLS (SMTP, IMAP) and STLS (POP3), once the engine queued its
        go-ahead reply: write it, forget the clear-text session, handshake.

        ``forget`` drops what the engine learned and buffered in the clear,
        including commands the client pipelined after STARTTLS (RFC 3207 4.2,
        RFC 2595 3.1, RFC 9051 6.2.1: command injection, CVE-2011-0411). It
        runs before the handshake, not after: the stock asyncio loop hands
        the protocol what the client sent with its TLS Finished before this
        coroutine resumes, and that is already TLS input. An engine that
        forgets by itself when it sends the go-ahead (SMTP) passes None.

        Returns False if the handshake failed: the connection is then
        aborted, so the engine is never used in the clear again.
        """
        self.write(self.engine.data_to_send())
        if forget is not None:
            forget()
        started = self.loop.time()
        try:
            await self.start_tls(context)
        except (ssl.SSLError, OSError, ConnectionError) as exc:
            log_tls_failure(log, self.listener.name, self.peer_ip, exc, self.loop.time() - started,
                            STARTTLS_TIMEOUT)
            self.abort()
            return False
        return True

    async def start_tls(self, context: ssl.SSLContext) -> None:
        """Switch the transport to TLS (the handshake part of ``upgrade_tls``)."""
        assert self.transport is not None
        new = await self.loop.start_tls(self.transport, self, context, server_side=True,
                                        ssl_handshake_timeout=STARTTLS_TIMEOUT)
        if new is None:
            raise ConnectionError("TLS handshake failed")
        self.transport = new
        self.tls = True
