"""spam/limits.py: the accounts' submission budgets and the queue watch."""

from __future__ import annotations

from mailyard.spam.limits import QueueWatch, SendLimiter, account_limits


def test_messages_per_hour_and_refusals_are_not_counted() -> None:
    limiter = SendLimiter()
    assert [limiter.check("a@x.test", 1, 2, 0, now=10.0) for _ in range(2)] == [None, None]
    refused = "a@x.test has sent 2 messages in the last hour, the most allowed"
    assert limiter.check("a@x.test", 1, 2, 0, now=11.0) == refused
    assert limiter.check("a@x.test", 1, 2, 0, now=12.0) == refused
    assert limiter.check("b@x.test", 1, 2, 0, now=12.0) is None
    # two hours on, the budget is back
    assert limiter.check("a@x.test", 1, 2, 0, now=10.0 + 2 * 3600) is None


def test_recipients_per_day() -> None:
    limiter = SendLimiter()
    assert limiter.check("a@x.test", 3, 0, 5, now=1.0) is None
    assert limiter.check("a@x.test", 3, 0, 5, now=2.0) == "a@x.test has reached 3 recipients today of the 5 allowed"
    assert limiter.check("a@x.test", 2, 0, 5, now=3.0) is None
    assert limiter.check("a@x.test", 1, 0, 5, now=4.0) is not None


def test_account_settings_override_the_defaults() -> None:
    assert account_limits({}, 300, 2000) == (300, 2000)
    assert account_limits({"limit_messages_per_hour": 5, "limit_recipients_per_day": 0}, 300, 2000) == (5, 0)
    assert account_limits({"limit_messages_per_hour": "5", "limit_recipients_per_day": -1}, 300, 2000) == (300, 2000)
    assert account_limits({"limit_messages_per_hour": True}, 300, 2000) == (300, 2000)


def test_queue_watch_tells_each_crossing_once() -> None:
    watch = QueueWatch(10)
    assert [watch.observe(n) for n in (5, 10, 11, 50, 12)] == [None, None, "over", None, None]
    assert [watch.observe(n) for n in (6, 5, 11)] == [None, "under", "over"]
    assert QueueWatch(0).observe(10**6) is None
