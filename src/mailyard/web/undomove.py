"""Undo of the webmail's moves: Delete (into the Trash), Archive, Spam (into
Junk) and Move.

The notice after such an action carries an Undo button, a POST form with the
CSRF token like every other action (actions.py ``undo_move``), which moves those
messages back to the folder they came from. The form names one random token;
the server keeps, under it, what the action did: the account, the folder the
messages left, the folder they went to (its id and UIDVALIDITY) and the UIDs
they were given there (RFC 4315 COPYUID: a move gives new UIDs). The undo
moves back only those UIDs of that folder, once, and only for the account
that moved them. So a forged form can name nothing the action did not do: no
other folder to take messages from, no other messages, nothing of another
account.

A server-side record rather than the (source, target, UIDs) tuple signed in
the form: a record is used once (a reload or a second click cannot move
messages back again), the notice's URL carries a short token and not a list
of UIDs, and the only secret a session has (its CSRF token) is in every page
it is shown, so a signature made with it would prove nothing to the page's
own user. The webmail is served by one process (workers.py), so a record in
its memory is seen by every request of the session; a restart forgets the
records, and their Undo then says it is too late.

Bounds: a record is kept ``UNDO_FOR`` seconds, an account keeps its
``PER_ACCOUNT`` latest and the process ``MAX_RECORDS`` in all (the oldest
forgotten first), and an action that moved more than ``MAX_UIDS`` messages
offers no Undo.

Spam: an undo teaches the spam learner nothing. rspamd's controller cannot
forget what it learned, and teaching the message as ham (what a move out of
Junk does, net/learning.py) would say "not spam" and put its sender on the
allow list, which is not what an undo means. A learning job of the action
not yet done when the undo comes finds the message gone from the folder it
names and skips it; one done stays learned, and a sender a move out of Junk
put on the allow list stays there (the list cannot tell it from one the
user put there before).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..store.api import Mailbox

UNDO_FOR = 600.0  # seconds an Undo is offered after its action
# UIDs one record keeps: the uid fields one action's form can carry
# (pages.checked_form reads at most 2000 fields); an action that moved more
# (whole conversations) offers no Undo
MAX_UIDS = 2000
PER_ACCOUNT = 20  # records kept per account, the latest
MAX_RECORDS = 2000  # records kept in all
_TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")


@dataclass
class Moved:
    """What one action moved: ``uids`` in mailbox ``target`` (while its
    UIDVALIDITY is ``validity``) came from mailbox ``source``."""

    account_id: int
    source: int
    target: int
    validity: int
    uids: array
    at: float
    # where the undo led, for the same form posted again
    done: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class MoveUndos:
    """The Undo records of the moves made lately (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._records: OrderedDict[str, Moved] = OrderedDict()
        self._by_account: dict[int, deque[str]] = {}

    def offer(self, account_id: int, source: Mailbox, target: Mailbox, moved: Sequence[tuple[int, int]]) -> str:
        """Record a move of ``moved`` (old UID, new UID) pairs from mailbox
        ``source`` to ``target``; the token of its Undo, or "" when none is
        offered (nothing moved, more than ``MAX_UIDS``)."""
        if not moved or len(moved) > MAX_UIDS:
            return ""
        now = self._clock()
        self._expire(now)
        token = secrets.token_urlsafe(16)
        self._records[token] = Moved(account_id, source.id, target.id, target.uid_validity,
                                     array("I", sorted(new for _old, new in moved)), now)
        mine = self._by_account.setdefault(account_id, deque())
        mine.append(token)
        while len(mine) > PER_ACCOUNT:
            self._records.pop(mine.popleft(), None)
        while len(self._records) > MAX_RECORDS:
            self._forget(*self._records.popitem(last=False))
        return token

    def find(self, account_id: int, token: Any) -> Moved | None:
        """The record of ``token`` if the account made it and it has not
        expired (done or not), else None."""
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            return None
        self._expire(self._clock())
        record = self._records.get(token)
        if record is None or record.account_id != account_id:
            return None
        return record

    def offered(self, account_id: int, token: Any) -> str:
        """``token`` if its Undo is still to be offered to the account (a
        page showing the action's notice), else ""."""
        record = self.find(account_id, token)
        return token if record is not None and record.done is None else ""

    def _expire(self, now: float) -> None:
        while self._records:
            token, record = next(iter(self._records.items()))
            if now - record.at <= UNDO_FOR:
                break
            self._records.popitem(last=False)
            self._forget(token, record)

    def _forget(self, token: str, record: Moved) -> None:
        mine = self._by_account.get(record.account_id)
        if mine is None:
            return
        try:
            mine.remove(token)
        except ValueError:
            pass
        if not mine:
            del self._by_account[record.account_id]


__all__ = ["MAX_UIDS", "UNDO_FOR", "MoveUndos", "Moved"]
