"""Pausing the cyclic garbage collector around a burst of allocations.

A read of a whole big mailbox (store/sqlite/core.py) or a SORT or THREAD
(protocols/imap/handlers/searching.py) makes hundreds of thousands of small
objects that hold no cycles; each collection they start would walk every
object of the process while holding the GIL. Such bursts run in several
threads at once, and ``gc.disable``/``gc.enable`` are process-wide: a pause
that restored "what it found" could find another's pause and leave the
collector off for the life of the process (and the cycles a closed
connection leaves would never be freed). One count for the process: the
first pause turns the collector off, the last one out turns it back on
unless it was off before the first.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_pauses = 0
_was_enabled = True


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while the block runs (see module doc)."""
    global _pauses, _was_enabled
    with _lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()
