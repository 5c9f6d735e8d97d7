"""The clocks of one session, kept apart from the pump (net/session_protocol.py).

Three timers bound what a client can hold without doing its part:

- the idle timeout: silence for longer than it (RFC 5321 4.5.3.2, RFC 1939
  section 3, RFC 9051 5.4) ends the session with the protocol's timeout
  reply. One timer per connection, noting the time on each read and
  re-arming itself for the remainder when it fires early, so a busy
  connection does not re-arm a timer per packet.
- the command deadline (listener.CommandClock): an incomplete command, SMTP
  message or IMAP literal must be complete within its deadline however the
  client spaces its bytes (slowloris).
- the stall timer: a client that stops reading our output for the idle
  timeout is cut, so it cannot hold its slot and our buffers.

The session supplies what the timers need to know and do (``TimedSession``);
none of them runs while a step of the session's own is in progress.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from .listener import CommandClock

log = logging.getLogger("mailyard.net")

__all__ = ["SessionTimers", "TimedSession"]


class TimedSession(Protocol):
    """What a session tells its timers, and what it does when one expires."""

    closed: bool
    busy: bool  # a step of the server's own is running: the client waits for us
    reading_wanted: bool  # ... unless that step waits for the client (IMAP IDLE)

    def input_state(self) -> tuple[bool, int, float]: ...
    def idle_expired(self) -> None: ...
    def deadline_passed(self) -> None: ...
    def output_stalled(self) -> None: ...


class SessionTimers:
    """Idle timeout, command deadline and stall timer of one session."""

    __slots__ = (
        "_deadline_timer",
        "_deadline_unit",
        "_idle_timer",
        "_stall_timer",
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
        self._idle_timer: asyncio.TimerHandle | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._deadline_unit: tuple[float | None, int, float] | None = None  # what the timer is for
        self._stall_timer: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        """The connection is gone: stop every timer."""
        for timer in (self._idle_timer, self._deadline_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._deadline_timer = self._stall_timer = None

    # --- idle timeout --------------------------------------------------------
    def touch(self) -> None:
        """The client sent something (or the session began): restart the idle clock."""
        self.last_activity = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_later(self.idle_timeout, self._idle_fired)

    def set_idle_timeout(self, seconds: float) -> None:
        """Change the idle timeout (e.g. RFC 5321 4.5.3.2 values per state)."""
        if seconds != self.idle_timeout:
            self.idle_timeout = seconds
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
            self.touch()

    def _idle_fired(self) -> None:
        self._idle_timer = None
        session = self.session
        if session.closed:
            return
        left = self.last_activity + self.idle_timeout - self.loop.time()
        # activity since, or our own step is slow (a step waiting for the
        # client, as IDLE does, is the client's silence: RFC 9051 5.4)
        if left > 0 or (session.busy and not session.reading_wanted):
            self._idle_timer = self.loop.call_later(max(left, 1.0), self._idle_fired)
            return
        session.idle_expired()

    # --- command deadline ----------------------------------------------------
    def check_deadline(self) -> None:
        """(Re)arm the command deadline after the engine consumed input."""
        session = self.session
        if session.closed or session.busy:
            return  # a step is running: the client is waiting for us
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
        self.check_deadline()

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
