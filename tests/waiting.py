"""Waiting for a condition in tests: poll it with a bounded deadline.

Tests never order events with a fixed sleep (a sleep long enough on one
machine is too short on a loaded one, and a test that sleeps and then asserts
"nothing changed" passes when nothing happened at all). They wait for the
event itself: a log line, a counter, a reply, a file. ``wait_until`` polls a
predicate until it holds and fails the test with a message naming what never
happened; the deadline is generous because it only bounds a failure.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
INTERVAL = 0.02


def wait_until(
    predicate: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    what: str | Callable[[], str] = "the condition",
    *,
    interval: float = INTERVAL,
    pause: Callable[[float], object] = time.sleep,
) -> T:
    """Call ``predicate`` until it returns something true, and return that.

    Fails with ``AssertionError("... waiting for <what>")`` once ``timeout``
    seconds have passed without it. ``what`` may be a callable, evaluated
    only on failure, to report the state that was seen. ``pause`` waits
    between polls: a driver that delivers its events only while one of its
    own calls runs (Playwright's sync API) passes its own wait here.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {_describe(what)}")
        pause(interval)


async def wait_until_async(
    predicate: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    what: str | Callable[[], str] = "the condition",
    *,
    interval: float = INTERVAL,
) -> T:
    """`wait_until` for a coroutine: the event loop runs between polls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {_describe(what)}")
        await asyncio.sleep(interval)


def _describe(what: str | Callable[[], str]) -> str:
    return what() if callable(what) else what


class LoopTicks:
    """``async with LoopTicks() as ticks``: counts the turns the running
    event loop gets (one per 10 ms) while the body waits for something that
    must not hold the loop still (a slow supervisor, a slow database)."""

    def __init__(self) -> None:
        self.count = 0
        self._beat: asyncio.Future[None] | None = None

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.count += 1

    async def __aenter__(self) -> LoopTicks:
        self._beat = asyncio.ensure_future(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._beat is not None
        self._beat.cancel()


def while_served(server: Any, started: threading.Event, run: Callable[[], T], probe: Callable[[], bool],
                 waited: str) -> tuple[T, int]:
    """``run()`` (a slow request on one connection) in a thread; once its
    slowed step has ``started``, ``probe()`` (a request on another
    connection) must succeed before ``run`` ends (``waited`` says it did
    not). Returns ``run``'s result and the turns of the server's loop
    (LoopTicks) while it ran. ``server`` is a tests.conftest.RunningServer."""
    result: list[Any] = []
    done = threading.Event()

    def run_thread() -> None:
        try:
            result.append(run())
        except BaseException as exc:  # reported below
            result.append(exc)
        finally:
            done.set()

    async def watch() -> int:
        async with LoopTicks() as ticks:
            worker = threading.Thread(target=run_thread)
            worker.start()
            await asyncio.to_thread(started.wait, 30)
            assert started.is_set(), "the slowed step never started"
            assert await asyncio.to_thread(probe)
            assert not done.is_set(), waited
            await asyncio.to_thread(worker.join, 60)
        return ticks.count

    ticks = server.call(watch(), timeout=120)
    assert result and not isinstance(result[0], BaseException), result
    return result[0], ticks
