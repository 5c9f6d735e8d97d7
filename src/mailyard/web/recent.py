"""Which mailboxes changed lately: the catch-up for a page's live updates.

A page is rendered, then the browser opens its event stream (``/events``);
a change committed between the two would reach no listener and the page
would stay stale until the next change. The page carries the time its
request started (``data-since``) and the stream first replays what changed
since then. A change reported twice costs one extra refresh of the page;
one not reported leaves the page wrong, so every doubt is a change.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

# How long, and how many, changes are kept. A page whose stream opens later
# than this after its render (or after a reconnect) is told that everything
# may have changed.
KEEP_SECONDS = 120.0
KEEP_MAX = 10_000
# Clocks of the nodes that render a page and serve its stream may differ
# slightly (several workers, or several nodes on one database).
MARGIN = 1.0


class RecentChanges:
    """The mailbox ids changed in the last ``KEEP_SECONDS``, with their times;
    fed by ``Store.add_listener`` (on the event loop, so no locking)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._changes: deque[tuple[float, int]] = deque()
        # every change after this time is in the log
        self._complete_from = clock()

    def record(self, mailbox_id: int) -> None:
        """Store listener: ``mailbox_id`` changed now."""
        now = self._clock()
        changes = self._changes
        changes.append((now, mailbox_id))
        while changes and (len(changes) > KEEP_MAX or changes[0][0] < now - KEEP_SECONDS):
            self._complete_from = max(self._complete_from, changes.popleft()[0])

    def since(self, when: float) -> set[int] | None:
        """The mailboxes changed at or after ``when`` (less the margin), or
        None when the log does not reach back that far (anything may have)."""
        start = when - MARGIN
        if start <= self._complete_from:
            return None
        changed: set[int] = set()
        for at, box in reversed(self._changes):
            if at < start:
                break
            changed.add(box)
        return changed
