"""Waking the sessions that wait without a command when something was revoked.

A session checks that its account and mailbox are still valid before each
command (``Store.credentials_current``, ``Store.mailbox_current``). An IMAP
session in IDLE (RFC 2177) has no command to check before: it reports new
mail, flags and live search results as they come, for as long as its client
stays silent (up to ``imap_idle_timeout``). It must stop once its password
changed or its account or mailbox was removed, whichever process or node did
that, and say ``* BYE`` (RFC 9051 7.1.5) without waiting for mail to arrive.

`RevocationWatch` is one per store and event loop (`RevocationWatch.of`),
not one per connection: while any session waits in it, it reads the store's
``revocation_version`` (a memory load) every ``POLL_SECONDS``; when the value
moved it wakes every waiting session, and each asks its checks again (from
memory, or one database read per account and mailbox after a revocation).
The value says nothing of whose account or mailbox it was (the SQLite token
and PostgreSQL's REVOKE notes carry no ids), so every waiting session is
woken; ``WAKE_SLICE`` of them per turn of the event loop, since on SQLite
their reads run on the loop: the loop serves the other connections between
the slices. On PostgreSQL a check suspends on the pool (a few connections)
instead: the sessions the watch woke (or did not take, `add`) check
``CHECKS_AT_ONCE`` at a time (`checking`), so that their reads do not queue
ahead of every delivery and FETCH of the process, nor wait on the pool past
its timeout (taken for the database down). On SQLite a check does not
suspend, and the bound never holds one back. A waiting connection costs one
entry in a set, and a loop one timer while any session waits, whatever their
number; no timer runs while none does. A store whose ``revocation_version``
is None gives no signal: its sessions never wait here (they notice at their
next command).

What holds. A session reads the value before each check of its references
and hands it to `add` when it goes on to wait, with nothing suspending
between `add` and the wait. If the value moved since that read, `add` takes
no waiter and the session checks again at once: the check may have read the
database before a revocation that came while it ran. Otherwise any later
move is seen by a poll. So a revocation that came after a session's check
wakes it within about ``POLL_SECONDS`` (plus the slices before its turn),
and a woken session reports nothing before it checks again. A change the
session reports was read after a check that passed, as for commands: a
revocation between that check and the read of the changes does not hold
back what that read returns.

A session whose check could not be answered (the store unavailable) waits
with ``checked`` False: it reports nothing, and it is woken at the next poll
to ask again, whether or not the value moved.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..store.api import Store

log = logging.getLogger("mailyard.net")

__all__ = ["CHECKS_AT_ONCE", "POLL_SECONDS", "WAKE_SLICE", "RevocationWatch", "Wakeable"]

# How often the value is read while some session waits: a revoked session
# gets its BYE within about this long.
POLL_SECONDS = 2.0
# How many waiting sessions are woken per turn of the event loop after a
# revocation: on SQLite each one's check reads the database on the loop
# (some 20-50 us), so a slice holds the loop a few milliseconds at most.
WAKE_SLICE = 256
# How many of the sessions a watch woke check their references at once. On
# PostgreSQL each check holds a pooled connection (``StoreConfig.pool_size``,
# 10 by default) for a read or two of a millisecond or so, and the pool
# serves everything else too: 64 keeps the pool busy (some 6 checks queued
# per connection), while a delivery or FETCH asking meanwhile queues behind
# at most those 64 reads, not behind one per idler, and a queued check waits
# far less than ``pool_timeout``. A fixed number rather than one derived
# from the pool: the watch knows the store only by ``revocation_version``.
CHECKS_AT_ONCE = 64


class Wakeable(Protocol):
    """A session waiting in a `RevocationWatch`."""

    def wake(self) -> None:
        """End the session's wait, so that it checks its references again.
        Called on the watch's loop, only while the session is among the
        watch's waiters; must not suspend. An extra call only costs a check."""
        ...


class RevocationWatch:
    """Wakes the waiting sessions of one store on one event loop when the
    store's ``revocation_version`` moves."""

    __slots__ = ("__weakref__", "_last", "_loop", "_recheck", "_timer", "_to_wake", "_version", "_waiters",
                 "_woken", "checking")

    def __init__(self, loop: asyncio.AbstractEventLoop, version: Callable[[], object]) -> None:
        self._loop = weakref.ref(loop)
        self._version = version
        self._waiters: set[Wakeable] = set()
        # waiters whose check could not be answered: woken at the next poll
        self._recheck: set[Wakeable] = set()
        # the waiters a wake has not reached yet, WAKE_SLICE per loop turn
        self._to_wake: list[Wakeable] = []
        # the waiters woken by this watch, until they are discarded
        self._woken: set[Wakeable] = set()
        # held by a session that this watch woke (or did not take) while it
        # checks its references: CHECKS_AT_ONCE of them at a time. A session
        # holds the watch itself while it waits for or holds a turn: a watch
        # freed meanwhile would give way to one with every turn free.
        self.checking = asyncio.Semaphore(CHECKS_AT_ONCE)
        self._timer: asyncio.TimerHandle | None = None
        self._last: object = None  # the value at the last poll (or at the timer's start)

    @staticmethod
    def of(loop: asyncio.AbstractEventLoop, store: Store) -> RevocationWatch:
        """The watch of ``store``'s sessions on ``loop`` (made on first use).
        Only for a store whose ``revocation_version`` is not None."""
        key = (id(loop), id(store))
        watch = _WATCHES.get(key)
        # (a dead loop's id may be reused; the store's may not while its
        # watch lives: the watch holds it through ``_version``)
        if watch is None or watch._loop() is not loop:
            watch = _WATCHES[key] = RevocationWatch(loop, store.revocation_version)
        return watch

    @property
    def waiting(self) -> int:
        """How many sessions wait (tests and metrics)."""
        return len(self._waiters)

    def add(self, waiter: Wakeable, since: object, checked: bool = True) -> bool:
        """``waiter`` is about to wait, on this watch's loop, without
        suspending before it does; ``since`` is the value the waiter read
        (``revocation_version``) before it last checked its references.

        False, and nothing is added, when the value moved since: that check
        may have read what was true before a revocation, and the waiter
        must check again rather than wait, holding `checking`. Otherwise
        True: ``waiter.wake`` is called once the value moves, or at the next
        poll whatever the value when ``checked`` is False (the check could
        not be answered), until the waiter is discarded."""
        value = self._version()
        if value != since:
            return False
        if self._timer is None:
            # (with a timer running, a ``_last`` older than ``value`` only
            # makes the next poll wake this waiter needlessly)
            self._last = value
            self._arm()
        self._waiters.add(waiter)
        if not checked:
            self._recheck.add(waiter)
        return True

    def discard(self, waiter: Wakeable) -> bool:
        """``waiter`` waits no more (its wait ended, woken or not): it is not
        woken from here until it is added again. True when this watch woke
        it: it then checks its references holding `checking`."""
        self._waiters.discard(waiter)
        self._recheck.discard(waiter)
        if waiter in self._woken:
            self._woken.discard(waiter)
            return True
        return False

    def _arm(self) -> None:
        loop = self._loop()
        if loop is not None and not loop.is_closed():
            self._timer = loop.call_later(POLL_SECONDS, self._poll)

    def _poll(self) -> None:
        self._timer = None
        if not self._waiters:
            return  # nobody waits: no timer until somebody does
        value = self._version()
        if value != self._last:
            self._last = value
            self._recheck.clear()
            self._wake(list(self._waiters))
        elif self._recheck:
            recheck = list(self._recheck)
            self._recheck.clear()
            self._wake(recheck)
        self._arm()

    def _wake(self, waiters: list[Wakeable]) -> None:
        busy = bool(self._to_wake)
        self._to_wake.extend(waiters)
        if not busy:
            self._wake_slice()

    def _wake_slice(self) -> None:
        """Wake the next ``WAKE_SLICE`` waiters; the rest at the next turn
        of the loop, once it has served what is ready (the woken sessions'
        checks among it)."""
        to_wake = self._to_wake
        batch = to_wake[-WAKE_SLICE:]
        del to_wake[-WAKE_SLICE:]
        waiters = self._waiters
        for waiter in batch:
            if waiter in waiters:  # (one that stopped waiting since is not woken)
                self._woken.add(waiter)
                try:
                    waiter.wake()
                except Exception:
                    log.exception("waking a session after a revocation failed")
        if to_wake:
            loop = self._loop()
            if loop is not None and not loop.is_closed():
                loop.call_soon(self._wake_slice)
            else:
                to_wake.clear()


# The watches by the ids of their loop and store, held weakly: a watch lives
# while a session waits in it (its wait holds it), or while its timer or a
# slice of a wake is scheduled in its loop. Not keyed on the loop itself: a
# watch's waiters hold the loop, which would then never be freed.
_WATCHES: weakref.WeakValueDictionary[tuple[int, int], RevocationWatch] = weakref.WeakValueDictionary()
