"""spam/limits.py: the accounts' submission budgets and the queue watch."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from mailyard.config import Config
from mailyard.spam.limits import QueueWatch, SendLimiter, account_limits
from tests.waiting import LoopTicks


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


async def _asked_with_a_slow_supervisor(extra: dict[str, Any],
                                        ask: Callable[[Any], Awaitable[object]]) -> tuple[object, int]:
    """``ask(worker)``'s answer from a supervisor that answers only after
    0.3 s (it waits for a core), and how often the event loop ticked
    meanwhile: with several workers the counters live in the supervisor,
    and the asking worker's loop serves its other sessions while it waits."""
    from mailyard.auth.throttle import LoginThrottle, ThrottlePolicy
    from mailyard.auth.throttle_shared import SharedThrottle, ThrottleServer

    policy = ThrottlePolicy()
    supervisor = ThrottleServer(LoginThrottle(policy), extra=extra)
    sup_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    throttle = SharedThrottle(worker_end, policy)
    throttle.attach(asyncio.get_running_loop())  # as server.py does in a worker
    worker = SimpleNamespace(config=Config(), worker=SimpleNamespace(throttle=throttle))

    def slow_supervisor() -> None:
        sup_end.settimeout(5)
        time.sleep(0.3)
        assert supervisor.handle(sup_end)

    answer = threading.Thread(target=slow_supervisor)
    answer.start()
    try:
        async with LoopTicks() as ticks:
            result = await ask(worker)
    finally:
        answer.join()
        throttle.detach()
        sup_end.close()
        worker_end.close()
    return result, ticks.count


async def test_the_shared_budget_is_asked_off_the_event_loop() -> None:
    from mailyard.server import MailServer

    def ask(worker: Any) -> Awaitable[object]:
        return MailServer._send_limits(worker)("a@x.test", 1, 300, 2000)

    result, ticks = await _asked_with_a_slow_supervisor({"spam_send": SendLimiter().check}, ask)
    assert result is None
    assert ticks >= 10, f"the event loop stood still while the supervisor answered ({ticks} ticks in 0.3 s)"


async def test_the_mx_rates_are_asked_off_the_event_loop() -> None:
    # the MX port counts every connection and message of a client outside
    # trusted_networks: with several workers, against the supervisor's counter
    from mailyard.server import MailServer

    asked: list[tuple[str, str]] = []

    def counted(kind: str, ip: str) -> str:
        asked.append((kind, ip))
        return "over"

    def ask(worker: Any) -> Awaitable[object]:
        return MailServer._mx_rates(worker)("connection", "192.0.2.7")

    result, ticks = await _asked_with_a_slow_supervisor({"spam_rate": counted}, ask)
    assert (result, asked) == ("over", [("connection", "192.0.2.7")])
    assert ticks >= 10, f"the event loop stood still while the supervisor answered ({ticks} ticks in 0.3 s)"


async def test_an_account_without_limits_costs_no_round_trip() -> None:
    from mailyard.delivery.submit import _within_limits

    async def never(*args: object) -> str | None:
        raise AssertionError("asked for an account without limits")

    class Store:
        async def get_settings(self, account_id: int) -> dict[str, int]:
            return {"limit_messages_per_hour": 0, "limit_recipients_per_day": 0}

    intake = SimpleNamespace(send_limits=never, store=Store(),
                             config=SimpleNamespace(spam=SimpleNamespace(messages_per_hour=300,
                                                                         recipients_per_day=2000)))
    account = SimpleNamespace(id=1, address="a@x.test")
    await _within_limits(intake, account, 5)  # type: ignore[arg-type]
