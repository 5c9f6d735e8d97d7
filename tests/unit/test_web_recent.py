"""What the live-update catch-up remembers (web/recent.py): changes since a
time, and "anything may have changed" when the log does not reach back."""

from __future__ import annotations

from mailyard.web import recent
from mailyard.web.recent import RecentChanges


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_changes_since_a_time_with_the_margin() -> None:
    clock = Clock()
    log = RecentChanges(clock)
    clock.now += 10
    log.record(1)
    clock.now += 5
    log.record(2)
    log.record(2)
    assert log.since(clock.now - 1) == {2}
    assert log.since(1005.5 + recent.MARGIN) == {1, 2}
    assert log.since(clock.now + recent.MARGIN + 1) == set()
    # before the log started: unknown
    assert log.since(1000.0) is None


def test_a_trimmed_log_answers_unknown_for_what_it_dropped() -> None:
    clock = Clock()
    log = RecentChanges(clock)
    clock.now += 2
    for box in range(recent.KEEP_MAX + 5):
        log.record(box)
    assert log.since(clock.now - 0.5) is None  # the oldest five were dropped at this time
    clock.now += recent.KEEP_SECONDS + 10
    log.record(7)
    assert log.since(clock.now - 0.5) == {7}
    assert log.since(1002.0 + recent.MARGIN) is None  # when the first five were dropped
    assert log.since(1002.1 + recent.MARGIN) == {7}
