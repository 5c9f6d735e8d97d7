"""The sessions waiting without a command (IMAP IDLE) of a store are woken by
one watch per event loop (net/revocations.py `RevocationWatch`) when the
store's revocation value moves: all of them, a slice per turn of the loop,
none while it stays; a session whose check came before a move is not taken
at all (it checks again); no timer runs while nobody waits."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from mailyard.net import revocations
from mailyard.net.revocations import WAKE_SLICE, RevocationWatch
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


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(revocations, "POLL_SECONDS", 0.01)


def _watch() -> tuple[RevocationWatch, _Version]:
    version = _Version()
    return RevocationWatch(asyncio.get_running_loop(), version), version


def test_every_waiter_is_woken_once_the_value_moves_and_not_before() -> None:
    async def go() -> None:
        watch, version = _watch()
        waiters = [_Waiter() for _ in range(3)]
        for w in waiters:
            assert watch.add(w, 0)
        await wait_until_async(lambda: version.reads >= 6, BOUND, "three polls")
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


def test_a_revocation_between_the_check_and_the_wait_is_not_missed_with_no_poll_running() -> None:
    """Nobody waits (no timer): the session read the value, checked its
    references, and another process revoked something before the session
    waits. The watch does not take the moved value for where it starts
    from: the session is not added, and checks again."""
    async def go() -> None:
        watch, version = _watch()
        since = version()  # the session, before its check
        version.value = 1  # the revocation, after the check read the database
        session = _Waiter()
        assert not watch.add(session, since)
        assert watch.waiting == 0 and watch._timer is None
        assert watch.add(session, version())  # its next check came after: it waits
        watch.discard(session)

    asyncio.run(go())


def test_a_revocation_a_poll_saw_during_the_check_is_not_missed() -> None:
    """Another session waits (the timer runs). The session's check
    suspends (a database read); meanwhile a revocation comes and a poll
    records it and wakes the other session. The session, whose check read
    what was true before, is not added: it checks again."""
    async def go() -> None:
        watch, version = _watch()
        other = _Waiter()
        assert watch.add(other, version())
        since = version()  # the session, before its check
        version.value = 1  # the revocation, while the check reads
        await wait_until_async(lambda: other.woken, BOUND, "the poll that saw the move")
        session = _Waiter()
        assert not watch.add(session, since)
        assert watch.add(session, version())
        version.value = 2
        await wait_until_async(lambda: session.woken, BOUND, "the session woken by the next move")
        watch.discard(other)
        watch.discard(session)

    asyncio.run(go())


def test_no_timer_while_nobody_waits() -> None:
    """The poll after the last waiter left is the last one; the next waiter
    starts it again, from the value it read before its check."""
    async def go() -> None:
        watch, version = _watch()
        first = _Waiter()
        watch.add(first, 0)
        watch.discard(first)
        # no timer left in the loop: no poll can come until somebody waits
        await wait_until_async(lambda: watch._timer is None, BOUND, "the timer to stop")
        reads = version.reads
        version.value = 1  # moved while nobody waited, before the next waiter's check
        second = _Waiter()
        assert watch.add(second, 1)
        await wait_until_async(lambda: version.reads >= reads + 3, BOUND, "the polls of the new waiter")
        assert second.woken == 0 and first.woken == 0
        version.value = 2
        await wait_until_async(lambda: second.woken, BOUND, "the new waiter woken")
        assert first.woken == 0
        watch.discard(second)

    asyncio.run(go())


def test_a_waiter_whose_check_was_not_answered_is_woken_at_the_next_poll() -> None:
    """The store was unavailable for the session's check: it waits unchecked
    and is woken at the next poll though nothing moved, once; the others
    are not."""
    async def go() -> None:
        watch, version = _watch()
        checked, unchecked = _Waiter(), _Waiter()
        assert watch.add(checked, 0)
        assert watch.add(unchecked, 0, checked=False)
        await wait_until_async(lambda: unchecked.woken, BOUND, "the unchecked waiter woken")
        reads = version.reads
        await wait_until_async(lambda: version.reads >= reads + 3, BOUND, "three more polls")
        assert unchecked.woken == 1 and checked.woken == 0
        watch.discard(checked)
        watch.discard(unchecked)

    asyncio.run(go())


def test_many_waiters_are_woken_a_slice_per_loop_turn() -> None:
    """Each woken session checks (on SQLite, a database read on the loop):
    they are woken WAKE_SLICE per turn of the loop, so the loop serves the
    other connections between the slices. A waiter that stopped waiting
    before its slice came is not woken."""
    n = WAKE_SLICE * 4 + 10

    async def go() -> None:
        loop = asyncio.get_running_loop()
        turn = 0

        def tick() -> None:
            nonlocal turn
            turn += 1
            loop.call_soon(tick)

        woken_at: dict[int, int] = {}
        gone: list[object] = []

        class Counted:
            def wake(self) -> None:
                woken_at[turn] = woken_at.get(turn, 0) + 1
                if not gone:  # the first one woken: one still to be woken stops waiting
                    gone.append(watch._to_wake[0])
                    watch.discard(gone[0])  # type: ignore[arg-type]

        watch, version = _watch()
        waiters = [Counted() for _ in range(n)]
        for w in waiters:
            assert watch.add(w, 0)
        loop.call_soon(tick)
        version.value = 1
        await wait_until_async(lambda: sum(woken_at.values()) >= n - 1 and not watch._to_wake, BOUND,
                               "the last slice")
        assert sum(woken_at.values()) == n - 1  # everyone but the one gone
        assert max(woken_at.values()) <= WAKE_SLICE, woken_at
        assert len(woken_at) >= 5, woken_at  # over five turns of the loop
        for w in waiters:
            watch.discard(w)

    asyncio.run(go())


def test_a_waiter_the_watch_woke_is_told_so_when_discarded() -> None:
    """A session learns from `discard` whether the watch woke it (it then
    takes a turn at `checking`); one that left on its own (input, a change
    of its mailbox) is not held back. Who takes a turn, through the server:
    tests/integration/test_postgresql_sessions.py."""
    async def go() -> None:
        watch, version = _watch()
        woken, left = _Waiter(), _Waiter()
        assert watch.add(woken, 0) and watch.add(left, 0)
        assert watch.discard(left) is False
        version.value = 1
        await wait_until_async(lambda: woken.woken, BOUND, "the waiter woken")
        assert watch.discard(woken) is True
        assert watch.discard(woken) is False  # (told once)

    asyncio.run(go())


class _Store:
    def __init__(self) -> None:
        self.version = 0

    def revocation_version(self) -> int:
        return self.version


def test_one_watch_per_loop_and_store_and_an_ended_loop_is_freed() -> None:
    """A watch's timer belongs to its loop: each loop has its own watch of
    a store. A loop that ended with sessions waiting is not kept alive by
    its watch, and a later loop gets a watch that works."""
    store, other_store = _Store(), _Store()

    async def go() -> weakref.ref[asyncio.AbstractEventLoop]:
        loop = asyncio.get_running_loop()
        watch = RevocationWatch.of(loop, store)
        assert RevocationWatch.of(loop, store) is watch
        assert RevocationWatch.of(loop, other_store) is not watch

        class Held(_Waiter):
            def __init__(self) -> None:
                super().__init__()
                self.loop = loop  # a connection holds its loop

        assert watch.add(Held(), 0)  # never discarded: the loop ends first
        return weakref.ref(loop)

    gone = asyncio.run(go())
    gc.collect()
    assert gone() is None, "the ended loop is still held"

    async def again() -> None:
        watch = RevocationWatch.of(asyncio.get_running_loop(), store)
        w = _Waiter()
        assert watch.add(w, 0)
        store.version = 1
        await wait_until_async(lambda: w.woken, BOUND, "a waiter woken on a new loop")
        watch.discard(w)

    asyncio.run(again())
