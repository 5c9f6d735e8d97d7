"""The idle timeouts of all the sessions of an event loop are checked in
buckets by one timer (net/timers.py `IdleSweep`): a session silent for its
timeout is ended, never before it, at most IDLE_GRANULARITY after it."""

from __future__ import annotations

import asyncio
import gc
import math
import weakref

import pytest

from mailyard.net.timers import IDLE_GRANULARITY, SessionTimers
from tests.waiting import wait_until_async

TIMEOUT = 0.3
BOUND = 10.0  # seconds: bounds a failure, not a figure


class _Session:
    """What the timers need of a session (net/timers.py ``TimedSession``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str = "", log: list[str] | None = None) -> None:
        self.closed = False
        self.busy = False
        self.reading_wanted = False
        self.writing_paused = False
        self.name = name
        self.log = log if log is not None else []
        self.timers = SessionTimers(loop, self, TIMEOUT, TIMEOUT)
        self.expired_at: float | None = None
        self.loop = loop

    def input_state(self) -> tuple[bool, int, float]:
        return False, 0, 0.0

    def idle_expired(self) -> None:
        self.expired_at = self.loop.time()
        self.closed = True
        self.log.append(self.name)

    def deadline_passed(self) -> None:
        raise AssertionError("no deadline here")

    def output_stalled(self) -> None:
        raise AssertionError("no stall here")


def test_a_silent_session_ends_after_its_timeout_and_not_before() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        s = _Session(loop)
        s.timers.touch()
        start = s.timers.last_activity
        await wait_until_async(lambda: s.expired_at is not None, BOUND, "the idle timeout")
        assert s.expired_at is not None and s.expired_at - start >= TIMEOUT

    asyncio.run(go())


def test_activity_moves_the_end_and_a_busy_step_is_not_silence() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        s = _Session(loop)
        s.timers.touch()
        touches = []

        def again() -> None:
            s.timers.touch()
            touches.append(s.timers.last_activity)

        loop.call_later(TIMEOUT * 0.6, again)
        loop.call_later(TIMEOUT * 1.2, again)
        await wait_until_async(lambda: s.expired_at is not None, BOUND, "the idle timeout")
        assert len(touches) == 2 and s.expired_at is not None and s.expired_at - touches[-1] >= TIMEOUT
        # a step of the session's own (not waiting for the client) keeps it
        b = _Session(loop)
        b.busy = True
        b.timers.touch()
        witness = _Session(loop)
        loop.call_later(TIMEOUT * 2, witness.timers.touch)  # ends well after b's first check
        await wait_until_async(lambda: witness.expired_at is not None, BOUND, "the witness's timeout")
        assert b.expired_at is None
        b.busy = False
        await wait_until_async(lambda: b.expired_at is not None, BOUND, "the timeout once the step is over")

    asyncio.run(go())


def test_a_cancelled_session_is_never_ended() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        log: list[str] = []
        gone = _Session(loop, "gone", log)
        gone.timers.touch()
        gone.timers.cancel()
        witness = _Session(loop, "witness", log)
        witness.timers.touch()  # its check comes at or after the cancelled one's would have
        await wait_until_async(lambda: witness.expired_at is not None, BOUND, "the witness's timeout")
        assert log == ["witness"]

    asyncio.run(go())


def test_a_new_timeout_replaces_the_old_one() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        log: list[str] = []
        long = _Session(loop, "long", log)
        long.timers.touch()
        long.timers.set_idle_timeout(60.0)  # e.g. SMTP's per-state timeouts
        short = _Session(loop, "short", log)
        short.timers.touch()
        await wait_until_async(lambda: short.expired_at is not None, BOUND, "the short timeout")
        assert log == ["short"]
        long.timers.set_idle_timeout(TIMEOUT)
        await wait_until_async(lambda: long.expired_at is not None, BOUND, "the shortened timeout")

    asyncio.run(go())


def test_one_failing_check_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> list[str]:
        loop = asyncio.get_running_loop()
        log: list[str] = []
        sessions = [_Session(loop, str(n), log) for n in range(5)]

        def broken() -> None:
            raise RuntimeError("broken session")

        sessions[2].idle_expired = broken  # type: ignore[method-assign]
        for s in sessions:
            s.timers.touch()
        await wait_until_async(lambda: len(log) == 4, BOUND, "the other sessions' timeouts")
        return log

    assert sorted(asyncio.run(go())) == ["0", "1", "3", "4"]
    assert "idle timeout check failed" in caplog.text


def test_a_thousand_idle_sessions_share_one_timer() -> None:
    # An asyncio timer per connection held about 0.6 KB; the sessions of a
    # loop share buckets of IDLE_GRANULARITY seconds and one timer.
    async def go() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        before = len(loop._scheduled)  # type: ignore[attr-defined]
        sessions = [_Session(loop) for _ in range(1000)]
        for s in sessions:
            s.timers.touch()
        timers = len(loop._scheduled) - before  # type: ignore[attr-defined]
        for s in sessions:
            s.timers.cancel()
        return timers, len(sessions)

    loop = asyncio.new_event_loop()  # the standard loop: its timers can be counted
    try:
        timers, n = loop.run_until_complete(go())
    finally:
        loop.close()
    assert n == 1000 and timers <= 1 + 1 / IDLE_GRANULARITY, timers


def test_a_loop_that_ended_with_sessions_in_the_buckets_is_freed() -> None:
    # A server whose loop stops with connections still open (a test server's
    # thread, an embedding application) leaves their checks in the buckets:
    # the sweep must not keep that loop, its sessions and their buffers
    # alive for the rest of the process.
    async def go() -> weakref.ref[asyncio.AbstractEventLoop]:
        loop = asyncio.get_running_loop()
        for _ in range(3):
            _Session(loop).timers.touch()  # never cancelled: the loop ends first
        return weakref.ref(loop)

    gone = asyncio.run(go())
    gc.collect()
    assert gone() is None, "the ended loop is still held"
    # and a later loop has a sweep of its own that works
    async def again() -> None:
        s = _Session(asyncio.get_running_loop())
        s.timers.touch()
        await wait_until_async(lambda: s.expired_at is not None, BOUND, "the idle timeout on a new loop")

    asyncio.run(again())


def test_an_infinite_idle_timeout_never_ends_the_session() -> None:
    # TOML has ``inf``: the configuration accepts "never" as a timeout
    # (limits.idle_timeout, smtp.timeout_command, ...), as huge values.
    async def go() -> None:
        loop = asyncio.get_running_loop()
        never = _Session(loop, "never")
        never.timers.idle_timeout = math.inf
        never.timers.touch()
        huge = _Session(loop, "huge")
        huge.timers.touch()
        huge.timers.set_idle_timeout(1e308)
        witness = _Session(loop, "witness")
        witness.timers.touch()
        await wait_until_async(lambda: witness.expired_at is not None, BOUND, "the witness's timeout")
        never.timers.touch()  # activity re-arms nothing and raises nothing
        assert never.expired_at is None and huge.expired_at is None
        never.timers.cancel()
        huge.timers.cancel()

    asyncio.run(go())
