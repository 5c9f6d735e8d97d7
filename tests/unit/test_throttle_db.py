"""The login throttle shared through PostgreSQL (auth/throttle_db.py): two
nodes count one budget, for failures and for attempts in flight alike."""

from __future__ import annotations

import time

from mailyard.auth.throttle import Attempt, Busy, Locked, ThrottlePolicy
from mailyard.auth.throttle_db import PENDING_TTL, DatabaseThrottle
from mailyard.config import AuthConfig, StoreConfig
from mailyard.net.login import throttle_from_config
from tests.pgcluster import PgCluster
from tests.waiting import LoopTicks

POLICY = ThrottlePolicy(base_delay=0.0, max_delay=0.0, account_max_failures=10, ip_max_failures=30)


def test_failures_on_two_nodes_count_against_one_budget(pg_cluster: PgCluster) -> None:
    dsn = pg_cluster.new_dsn()
    a, b = DatabaseThrottle(dsn, POLICY), DatabaseThrottle(dsn, POLICY)
    try:
        now = time.monotonic()
        for n in range(10):  # guesses alternate between the nodes
            node = (a, b)[n % 2]
            attempt = node.reserve(f"192.0.2.{n}", "alice@example.test", now)
            assert isinstance(attempt, Attempt), n
            node.fail(attempt, now)
        for node in (a, b):  # the account is locked on both
            verdict = node.reserve("198.51.100.1", "alice@example.test", now)
            assert isinstance(verdict, Locked) and verdict.scope == "account"
        assert isinstance(a.reserve("198.51.100.1", "bob@example.test", now), Attempt)  # others are not
    finally:
        a.close()
        b.close()


def test_attempts_in_flight_on_one_node_hold_the_budget_on_another(pg_cluster: PgCluster) -> None:
    dsn = pg_cluster.new_dsn()
    a, b = DatabaseThrottle(dsn, POLICY), DatabaseThrottle(dsn, POLICY)
    try:
        now = time.monotonic()
        held = [a.reserve(f"192.0.2.{n}", "alice@example.test", now) for n in range(10)]
        assert all(isinstance(x, Attempt) for x in held)
        assert isinstance(b.reserve("192.0.2.99", "alice@example.test", now), Busy)
        a.succeed(held[0], now)  # a correct login settles one and clears the account's failures
        assert isinstance(b.reserve("192.0.2.99", "alice@example.test", now), Attempt)
        # a node that died with reservations in flight holds them only for a while
        assert isinstance(b.reserve("192.0.2.98", "alice@example.test", now + PENDING_TTL + 1), Attempt)
        assert len(a) >= 1
    finally:
        a.close()
        b.close()


def test_the_store_backend_picks_the_throttle() -> None:
    assert type(throttle_from_config(AuthConfig())).__name__ == "LoginThrottle"
    pg = throttle_from_config(AuthConfig(), StoreConfig(backend="postgresql", dsn="postgresql://db/mail"))
    assert isinstance(pg, DatabaseThrottle)


async def test_calls_from_an_event_loop_never_wait_for_the_database(pg_cluster: PgCluster) -> None:
    # A round trip may wait for another node's lock on the same keys: the
    # loop serving every session of the process goes on meanwhile, and the
    # reports it queues count before any later reservation asks.

    throttle = DatabaseThrottle(pg_cluster.new_dsn(), ThrottlePolicy(base_delay=0.0, max_delay=0.0,
                                                                      account_max_failures=2))
    run = throttle._run

    def slow(*args: object) -> object:
        time.sleep(0.1)  # the database takes its time
        return run(*args)  # type: ignore[arg-type]

    throttle._run = slow  # type: ignore[method-assign]
    try:
        async with LoopTicks() as ticks:
            now = time.monotonic()
            attempt = await throttle.reserve_async("192.0.2.1", "alice@example.test", now)
            assert isinstance(attempt, Attempt)
            started = time.monotonic()
            throttle.fail(attempt, now)
            throttle.record_failure("192.0.2.1", "alice@example.test", now)
            assert time.monotonic() - started < 0.05  # queued, not waited for
            verdict = await throttle.before_attempt_async("192.0.2.2", "alice@example.test", now)
            assert isinstance(verdict, Locked) and verdict.scope == "account"
        assert ticks.count >= 20, (
            f"the event loop stood still while the database answered ({ticks.count} ticks in 0.4 s)")
    finally:
        throttle.close()
