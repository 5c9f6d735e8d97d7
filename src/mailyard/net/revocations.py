"""Waking the sessions that wait without a command when something was revoked.

A session checks that its account and mailbox are still valid before each
command (``Store.credentials_current``, ``Store.mailbox_current``). An IMAP
session in IDLE (RFC 2177) has no command to check before: it reports new
mail, flags and live search results as they come, for as long as its client
stays silent (up to ``imap_idle_timeout``). It must stop once its password
changed or its account or mailbox was removed, whichever process or node did
that, and say ``* BYE`` (RFC 9051 7.1.5) without waiting for mail to arrive.

`RevocationWatch` is one per store of a process (the server's ``Services``),
not one per connection: while any session waits in it, it reads the store's
``revocation_version`` (a memory load) every ``POLL_SECONDS``; when the value
moved it wakes every waiting session, and each asks its checks again (from
memory, or one database read per account and mailbox after a revocation).
A waiting connection costs one entry in a set, and a process one timer
while any session waits, whatever their number; no timer runs while none
does.

A session checks its references right before it waits, with nothing
suspending in between (protocols/imap/session.py ``idle``); what the watch
compares with is a value read before that check (when the watch starts) or
at the last poll, so a revocation that comes after the check moves the
value it compares with, and is never missed. A value read earlier than the
check only makes a needless wake.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..services import Services

log = logging.getLogger("mailyard.net")

__all__ = ["POLL_SECONDS", "RevocationWatch", "revocation_watch"]

# How often the value is read while some session waits: a revoked session
# gets its BYE within about this long.
POLL_SECONDS = 2.0


class Wakeable(Protocol):
    def wake(self) -> None: ...


class RevocationWatch:
    """Wakes the waiting sessions of one store when its ``revocation_version`` moves."""

    __slots__ = ("_last", "_timer", "_version", "_waiters")

    def __init__(self, version: Callable[[], object]) -> None:
        self._version = version
        self._waiters: set[Wakeable] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._last: object = None

    @property
    def waiting(self) -> int:
        """How many sessions wait (tests and metrics)."""
        return len(self._waiters)

    def add(self, waiter: Wakeable) -> None:
        """``waiter`` waits (on the running event loop) and has just checked
        its references: its ``wake`` is called once something may have been
        revoked after now."""
        if self._timer is None:
            # no poll pending: the value is read now, after the waiter's check
            self._last = self._version()
            self._timer = asyncio.get_running_loop().call_later(POLL_SECONDS, self._poll)
        self._waiters.add(waiter)

    def discard(self, waiter: Wakeable) -> None:
        self._waiters.discard(waiter)

    def _poll(self) -> None:
        self._timer = None
        if not self._waiters:
            return  # nobody waits: no timer until somebody does
        value = self._version()
        if value != self._last:
            self._last = value
            for waiter in list(self._waiters):
                try:
                    waiter.wake()
                except Exception:
                    log.exception("waking a session after a revocation failed")
        self._timer = asyncio.get_running_loop().call_later(POLL_SECONDS, self._poll)


# One watch per server (its Services), held as long as the server is; the
# watch refers to the store only, so the server can still be freed.
_WATCHES: weakref.WeakKeyDictionary[Services, RevocationWatch] = weakref.WeakKeyDictionary()


def revocation_watch(services: Services) -> RevocationWatch:
    """The watch of ``services``'s store (made on first use)."""
    watch = _WATCHES.get(services)
    if watch is None:
        watch = _WATCHES[services] = RevocationWatch(services.store.revocation_version)
    return watch
