"""The clocks of one session, kept apart from the pump (net/session_protocol.py).

Three timers bound what a client can hold without doing its part:

- the idle timeout: silence for longer than it (RFC 5321 4.5.3.2, RFC 1939
  section 3, RFC 9051 5.4) ends the session with the protocol's timeout
  reply. The time is noted on each read; the check comes when the timeout
  would end, and re-arms for the remainder when there was activity since,
  so a busy connection re-arms nothing per packet. The checks of all the
  sessions of an event loop are kept in buckets of ``IDLE_GRANULARITY``
  seconds run by one timer (`IdleSweep`), not a timer per session: an
  asyncio timer held about 0.6 KB per connection (its handle, libuv's
  timer, the bound method), a bucket entry a few dozen bytes; a timeout is
  noticed at most ``IDLE_GRANULARITY`` late, never early.
- the command deadline (listener.CommandClock): an incomplete command, SMTP
  message or IMAP literal must be complete within its deadline however the
  client spaces its bytes (slowloris). It does not apply while the client is
  not taking our output: commands it sent then wait behind our replies (an
  engine's ``FLUSH``), and the stall timer governs; the unit's clock starts
  again once the client reads.
- the stall timer: a client that stops reading our output for the idle
  timeout is cut, so it cannot hold its slot and our buffers.

The session supplies what the timers need to know and do (``TimedSession``);
none of them runs while a step of the session's own is in progress.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import weakref
from typing import Protocol

from .listener import CommandClock

log = logging.getLogger("mailyard.net")

__all__ = ["IdleSweep", "SessionTimers", "TimedSession"]

IDLE_GRANULARITY = 0.25  # seconds: how late an idle timeout may be noticed, at most
# The latest check a bucket may hold, in loop time (monotonic seconds, about
# the time since boot): an idle timeout of ``inf`` (TOML allows it: "never")
# is checked then, that is never.
_NEVER = 1e12


class TimedSession(Protocol):
    """What a session tells its timers, and what it does when one expires."""

    closed: bool
    busy: bool  # a step of the server's own is running: the client waits for us
    reading_wanted: bool  # ... unless that step waits for the client (IMAP IDLE)
    writing_paused: bool  # the client is not taking our output (the stall timer runs)

    def input_state(self) -> tuple[bool, int, float]: ...
    def idle_expired(self) -> None: ...
    def deadline_passed(self) -> None: ...
    def output_stalled(self) -> None: ...


class IdleSweep:
    """The idle-timeout checks of the sessions of one event loop, in buckets
    of ``IDLE_GRANULARITY`` seconds; one timer, for the earliest bucket."""

    __slots__ = ("__weakref__", "_buckets", "_due", "_keys", "_loop", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)
        self._buckets: dict[int, set[SessionTimers]] = {}
        self._keys: list[int] = []  # heap of the buckets' keys
        self._timer: asyncio.TimerHandle | None = None
        self._due: int | None = None  # the bucket the timer is set for

    @staticmethod
    def of(loop: asyncio.AbstractEventLoop) -> IdleSweep:
        """The sweep of ``loop`` (made on first use)."""
        sweep = _SWEEPS.get(id(loop))
        if sweep is None or sweep._loop() is not loop:  # (a dead loop's id may be reused)
            sweep = _SWEEPS[id(loop)] = IdleSweep(loop)
        return sweep

    def add(self, timers: SessionTimers, at: float) -> int:
        """Check ``timers`` (its ``_idle_fired``) at ``at`` or up to
        ``IDLE_GRANULARITY`` after it; returns the bucket's key."""
        if not at < _NEVER:  # (also NaN)
            at = _NEVER
        key = math.ceil(at / IDLE_GRANULARITY)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = set()
            heapq.heappush(self._keys, key)
            if self._due is None or key < self._due:
                self._arm(key)
        bucket.add(timers)
        return key

    def discard(self, timers: SessionTimers, key: int) -> None:
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.discard(timers)  # (an empty bucket goes when its time comes)

    def _arm(self, key: int) -> None:
        loop = self._loop()
        if loop is None or loop.is_closed():
            return
        if self._timer is not None:
            self._timer.cancel()
        self._due = key
        self._timer = loop.call_at(key * IDLE_GRANULARITY, self._fire)

    def _fire(self) -> None:
        self._timer = self._due = None
        loop = self._loop()
        if loop is None:
            return
        now = loop.time()
        keys = self._keys
        while keys and keys[0] * IDLE_GRANULARITY <= now:
            for timers in list(self._buckets.pop(heapq.heappop(keys), ())):
                timers._idle_key = None
                try:
                    timers._idle_fired()
                except Exception:
                    log.exception("idle timeout check failed")
        if keys:
            self._arm(keys[0])


# The sweeps by id of their loop, held weakly: a sweep lives while its
# sessions (``SessionTimers._sweep``) or its armed timer (in the loop) hold
# it. Not a WeakKeyDictionary on the loop: its values are held strongly, and
# a sweep's buckets hold sessions that hold the loop, so a loop that ended
# with sessions in the buckets would never be freed, nor anything it holds.
_SWEEPS: weakref.WeakValueDictionary[int, IdleSweep] = weakref.WeakValueDictionary()


class SessionTimers:
    """Idle timeout, command deadline and stall timer of one session."""

    __slots__ = (
        "_deadline_timer",
        "_deadline_unit",
        "_idle_key",
        "_stall_timer",
        "_sweep",
        "clock",
        "idle_timeout",
        "last_activity",
        "loop",
        "session",
        "stall_timeout",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, session: TimedSession, idle_timeout: float, stall_timeout: float
    ) -> None:
        self.loop = loop
        self.session = session
        self.idle_timeout = idle_timeout
        self.stall_timeout = stall_timeout
        self.last_activity = 0.0
        self.clock = CommandClock()
        self._sweep = IdleSweep.of(loop)
        self._idle_key: int | None = None  # the sweep's bucket holding this session's idle check
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._deadline_unit: tuple[float | None, int, float] | None = None  # what the timer is for
        self._stall_timer: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        """The connection is gone: stop every timer."""
        if self._idle_key is not None:
            self._sweep.discard(self, self._idle_key)
            self._idle_key = None
        for timer in (self._deadline_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        self._deadline_timer = self._stall_timer = None

    # --- idle timeout --------------------------------------------------------
    def touch(self) -> None:
        """The client sent something, took our output, or the session began:
        restart the idle clock."""
        self.last_activity = now = self.loop.time()
        if self._idle_key is None:
            self._idle_key = self._sweep.add(self, now + self.idle_timeout)

    def set_idle_timeout(self, seconds: float) -> None:
        """Change the idle timeout (e.g. RFC 5321 4.5.3.2 values per state)."""
        if seconds != self.idle_timeout:
            self.idle_timeout = seconds
            if self._idle_key is not None:
                self._sweep.discard(self, self._idle_key)
                self._idle_key = None
            self.touch()

    def _idle_fired(self) -> None:
        """The sweep's check, at or just after the timeout's end."""
        session = self.session
        if session.closed:
            return
        left = self.last_activity + self.idle_timeout - self.loop.time()
        # activity since, or our own step is slow (a step waiting for the
        # client, as IDLE does, is the client's silence: RFC 9051 5.4)
        if left > 0 or (session.busy and not session.reading_wanted):
            self._idle_key = self._sweep.add(self, self.loop.time() + max(left, 1.0))
            return
        session.idle_expired()

    # --- command deadline ----------------------------------------------------
    def check_deadline(self) -> None:
        """(Re)arm the command deadline after the engine consumed input."""
        session = self.session
        if session.closed or session.busy:
            return  # a step is running: the client is waiting for us
        if session.writing_paused:
            # the client is not taking our output, and its commands wait for
            # it: the stall timer governs, and resume_writing checks again
            # with the unit's clock started afresh
            if self._deadline_timer is not None:
                self._deadline_timer.cancel()
                self._deadline_timer = None
            self.clock.started = None
            return
        partial, progress, deadline = session.input_state()
        now = self.loop.time()
        left = self.clock.remaining(now, partial, progress, deadline)
        at = now + left if left is not None else None
        timer = self._deadline_timer
        if timer is not None:
            if left is not None and left > 0 and self._deadline_unit == (self.clock.started, progress, deadline):
                return  # same unit, same deadline: keep the timer (the hot path of DATA)
            timer.cancel()
            self._deadline_timer = None
        if at is None:
            return
        if at <= now:
            session.deadline_passed()
            return
        self._deadline_unit = (self.clock.started, progress, deadline)
        self._deadline_timer = self.loop.call_at(at, self._deadline_fired)

    def _deadline_fired(self) -> None:
        self._deadline_timer = None
        if self.session.closed or self.session.busy:
            return  # the session checks again when its step ends
        self.check_deadline()  # (while writing is paused, this stops the deadline)

    # --- a client that does not read ----------------------------------------
    def output_blocked(self) -> None:
        """The transport stopped taking our output: start the stall timer."""
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.stall_timeout, self._stall_fired)

    def output_flowing(self) -> None:
        """The client reads again."""
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _stall_fired(self) -> None:
        self._stall_timer = None
        self.session.output_stalled()
