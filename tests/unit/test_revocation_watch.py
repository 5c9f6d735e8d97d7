"""The sessions waiting without a command (IMAP IDLE) of a store are woken by
one watch (net/revocations.py `RevocationWatch`) when its revocation value
moves: all of them at once, none while it stays, and no timer runs while
nobody waits."""

from __future__ import annotations

import asyncio

import pytest

from mailyard.net import revocations
from mailyard.net.revocations import RevocationWatch
from tests.waiting import wait_until_async

BOUND = 10.0  # seconds: bounds a failure, not a figure


class _Waiter:
    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


class _Version:
    """A store's ``revocation_version``, counting its reads."""

    def __init__(self) -> None:
        self.value = 0
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.value


def test_every_waiter_is_woken_once_the_value_moves_and_not_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(revocations, "POLL_SECONDS", 0.01)

    async def go() -> None:
        version = _Version()
        watch = RevocationWatch(version)
        waiters = [_Waiter() for _ in range(3)]
        for w in waiters:
            watch.add(w)
        assert version.reads == 1  # one read when the watch starts, not one per waiter
        await wait_until_async(lambda: version.reads >= 4, BOUND, "three polls")
        assert [w.woken for w in waiters] == [0, 0, 0]  # nothing moved: nobody woken
        version.value = 7
        await wait_until_async(lambda: all(w.woken for w in waiters), BOUND, "the waiters woken")
        reads = version.reads
        await wait_until_async(lambda: version.reads >= reads + 3, BOUND, "three more polls")
        assert [w.woken for w in waiters] == [1, 1, 1]  # once per move
        for w in waiters:
            watch.discard(w)
        assert watch.waiting == 0

    asyncio.run(go())


def test_no_timer_while_nobody_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The poll after the last waiter left is the last one; the next waiter
    starts it again, comparing with the value read then."""
    monkeypatch.setattr(revocations, "POLL_SECONDS", 0.01)

    async def go() -> None:
        version = _Version()
        watch = RevocationWatch(version)
        first = _Waiter()
        watch.add(first)
        watch.discard(first)
        # no timer left in the loop: no poll can come until somebody waits
        await wait_until_async(lambda: watch._timer is None, BOUND, "the timer to stop")
        reads = version.reads
        version.value = 1  # moved while nobody waited: the next waiter checked after it
        second = _Waiter()
        watch.add(second)
        await wait_until_async(lambda: version.reads >= reads + 3, BOUND, "the polls of the new waiter")
        assert second.woken == 0 and first.woken == 0
        version.value = 2
        await wait_until_async(lambda: second.woken, BOUND, "the new waiter woken")
        assert first.woken == 0
        watch.discard(second)

    asyncio.run(go())
