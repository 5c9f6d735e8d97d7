"""Tests for auth/throttle.py with a fake clock (plain floats)."""

from __future__ import annotations

import logging

import pytest

from mailyard.auth.throttle import Attempt, Busy, Locked, LoginThrottle, ThrottlePolicy

IP = "192.0.2.7"


def test_delay_grows_and_is_capped() -> None:
    t = LoginThrottle(ThrottlePolicy(account_max_failures=100, ip_max_failures=100))
    now = 1000.0
    delays = []
    for _ in range(8):
        delays.append(t.before_attempt(IP, "alice@example.org", now))
        t.record_failure(IP, "alice@example.org", now)
        now += 1
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 16.0, 16.0]


def test_account_lockout_and_expiry(caplog: pytest.LogCaptureFixture) -> None:
    t = LoginThrottle()
    now = 0.0
    with caplog.at_level(logging.WARNING, "mailyard.auth.throttle"):
        for i in range(10):
            # Each attempt from a different address: the account counter alone locks.
            t.record_failure(f"198.51.100.{i}", "alice@example.org", now)
            now += 1
    assert "lockout" in caplog.text
    r = t.before_attempt("203.0.113.1", "ALICE@example.org", now)
    assert isinstance(r, Locked) and r.scope == "account"
    assert r.until == 9.0 + 15 * 60
    assert r.retry_after(now) == pytest.approx(r.until - now)
    # Other accounts from a fresh address are unaffected.
    assert t.before_attempt("203.0.113.1", "bob@example.org", now) == 0.0
    # After the lockout the account starts afresh.
    assert t.before_attempt("203.0.113.1", "alice@example.org", r.until) == 0.0


def test_ip_lockout_across_accounts() -> None:
    t = LoginThrottle()
    for i in range(30):
        t.record_failure(IP, f"user{i}@example.org", float(i))
    r = t.before_attempt(IP, "someone-new@example.org", 30.0)
    assert isinstance(r, Locked) and r.scope == "ip" and r.key == IP
    assert t.before_attempt(IP, None, 29.0 + 15 * 60) == 0.0


def test_success_resets_account_not_ip() -> None:
    t = LoginThrottle(ThrottlePolicy(ip_max_failures=4))
    for i in range(3):
        t.record_failure(IP, "alice@example.org", float(i))
    assert t.before_attempt("203.0.113.9", "alice@example.org", 3.0) == 4.0
    t.record_success(IP, "alice@example.org", 3.0)
    assert t.before_attempt("203.0.113.9", "alice@example.org", 3.0) == 0.0
    # The address's failures still count towards its lockout.
    t.record_failure(IP, "bob@example.org", 4.0)
    r = t.before_attempt(IP, "carol@example.org", 4.0)
    assert isinstance(r, Locked) and r.scope == "ip"


def test_failures_forgotten_after_window() -> None:
    t = LoginThrottle(ThrottlePolicy(window=60.0))
    t.record_failure(IP, "a@x", 0.0)
    t.record_failure(IP, "a@x", 10.0)
    assert t.before_attempt(IP, "a@x", 70.0) == 2.0
    assert t.before_attempt(IP, "a@x", 70.1) == 0.0
    # Failures spread wider than the window never lock.
    t2 = LoginThrottle(ThrottlePolicy(window=60.0, account_max_failures=3))
    for i in range(10):
        t2.record_failure(f"10.0.0.{i}", "a@x", i * 61.0)
    assert t2.before_attempt("10.9.9.9", "a@x", 560.0) == 1.0  # last failure at 549


def test_loopback_not_exempt_by_default() -> None:
    t = LoginThrottle()
    t.record_failure("127.0.0.1", None, 0.0)
    assert t.before_attempt("127.0.0.1", None, 0.0) == 1.0
    t = LoginThrottle(ThrottlePolicy(exempt_loopback=True))
    t.record_failure("127.0.0.1", "a@x", 0.0)
    t.record_failure("::1", None, 0.0)
    assert t.before_attempt("127.0.0.1", None, 0.0) == 0.0
    assert t.before_attempt("127.0.0.1", "a@x", 0.0) == 1.0  # account still counted
    t = LoginThrottle(ThrottlePolicy(exempt_networks=("10.1.0.0/16",)))
    t.record_failure("10.1.2.3", None, 0.0)
    assert t.before_attempt("10.1.2.3", None, 0.0) == 0.0


def test_ipv6_counted_per_64_and_mapped_v4() -> None:
    t = LoginThrottle()
    t.record_failure("2001:db8:1:2::1", None, 0.0)
    t.record_failure("2001:db8:1:2:ffff::9", None, 0.0)
    assert t.before_attempt("2001:db8:1:2::abcd", None, 0.0) == 2.0
    assert t.before_attempt("2001:db8:1:3::1", None, 0.0) == 0.0
    t.record_failure("::ffff:192.0.2.1", None, 0.0)
    assert t.before_attempt("192.0.2.1", None, 0.0) == 1.0
    assert t.ip_key("fe80::1%eth0") == "fe80::/64"
    assert t.ip_key("not-an-ip") == "not-an-ip"


def test_memory_is_bounded() -> None:
    t = LoginThrottle(ThrottlePolicy(max_entries=50))
    for i in range(1000):
        t.record_failure(f"10.{i // 256}.{i % 256}.1", f"u{i}@x", float(i) * 0.001)
    assert len(t) <= 150  # three tables of at most 50
    # The most recent keys are kept.
    assert t.before_attempt("10.3.231.1", "u999@x", 1.0) == 1.0


def test_expired_entries_are_pruned() -> None:
    t = LoginThrottle(ThrottlePolicy(window=10.0))
    for i in range(20):
        t.record_failure(f"10.0.0.{i}", None, 0.0)
    t.record_failure("10.0.1.1", None, 100.0)
    assert len(t) == 2  # the address and its (address, no name) pair


def test_locked_key_does_not_count_further() -> None:
    t = LoginThrottle(ThrottlePolicy(account_max_failures=2, account_lockout=100.0))
    t.record_failure(IP, "a@x", 0.0)
    t.record_failure(IP, "a@x", 1.0)
    t.record_failure(IP, "a@x", 50.0)  # during the lockout: does not extend it
    r = t.before_attempt("10.0.0.1", "a@x", 60.0)
    assert isinstance(r, Locked) and r.until == 101.0


# --- reserve, then verify ---------------------------------------------------------


def test_a_burst_gets_the_budget_of_a_sequence() -> None:
    """Attempts in flight count as failures: of 380 reserved at once, 10 are
    granted and the others must wait for them; once the 10 fail, the name is
    locked for everyone waiting."""
    t = LoginThrottle()
    verdicts = [t.reserve(IP, "alice@example.org", 0.0) for _ in range(380)]
    granted = [v for v in verdicts if isinstance(v, Attempt)]
    assert len(granted) == 10
    # The delay follows counted failures, not attempts in flight.
    assert [a.delay for a in granted] == [0.0] * 10
    assert all(isinstance(v, Busy) and v.scope == "account" for v in verdicts[10:])
    for a in granted[:9]:
        t.fail(a, 1.0)
    assert isinstance(t.reserve(IP, "alice@example.org", 1.0), Busy)  # one still in flight
    t.fail(granted[9], 1.0)
    r = t.reserve(IP, "alice@example.org", 2.0)
    assert isinstance(r, Locked) and r.scope == "account" and r.until == 1.0 + 15 * 60


def test_a_burst_of_correct_logins_is_served_in_turn() -> None:
    """Twenty parallel logins of one account with the right password (a mail
    client's connections): ten at a time, each success making room."""
    t = LoginThrottle()
    waiting = 20
    served = 0
    while waiting:
        batch = []
        while waiting and isinstance(v := t.reserve(IP, "alice@example.org", 0.0), Attempt):
            batch.append(v)
            waiting -= 1
        assert batch and all(a.delay == 0.0 for a in batch)
        for a in batch:
            t.succeed(a, 0.0)
            served += 1
    assert served == 20 and len(t) == 0


def test_address_budget_is_reserved_too() -> None:
    t = LoginThrottle()
    verdicts = [t.reserve(IP, f"user{i}@example.org", 0.0) for i in range(100)]
    assert sum(isinstance(v, Attempt) for v in verdicts) == 30
    assert all(isinstance(v, Busy) and v.scope == "ip" for v in verdicts[30:])
    # Another address is not affected.
    assert not isinstance(t.reserve("198.51.100.1", "user99@example.org", 0.0), Locked)


def test_success_releases_the_reservation() -> None:
    t = LoginThrottle(ThrottlePolicy(account_max_failures=2))
    a = t.reserve(IP, "a@x", 0.0)
    b = t.reserve(IP, "a@x", 0.0)
    assert isinstance(a, type(b)) and not isinstance(a, Locked)
    assert isinstance(t.reserve(IP, "a@x", 0.0), Busy)  # both in flight
    t.succeed(a, 0.0)
    t.succeed(a, 0.0)  # settling twice changes nothing
    c = t.reserve(IP, "a@x", 0.0)
    assert not isinstance(c, Locked)
    t.fail(b, 1.0)
    t.fail(c, 1.0)
    assert isinstance(t.before_attempt(IP, "a@x", 1.0), Locked)


def test_attempts_in_flight_are_not_pruned() -> None:
    t = LoginThrottle(ThrottlePolicy(window=10.0, account_max_failures=1, max_entries=5))
    a = t.reserve(IP, "a@x", 0.0)
    assert not isinstance(a, Locked)
    # Much later and after other traffic, the reservation still holds the budget.
    for i in range(3):
        t.record_failure(f"10.0.0.{i}", f"u{i}@x", 500.0)
    assert isinstance(t.before_attempt("10.9.9.9", "a@x", 1000.0), Busy)
    t.fail(a, 1000.0)
    assert isinstance(t.before_attempt("10.9.9.9", "a@x", 1001.0), Locked)


def test_other_accounts_behind_an_address_are_not_slowed() -> None:
    """Nine failures for bob from one address: alice's login from there waits
    nothing, and bob's success resets bob's delay from there, while the
    address's failure count stays."""
    t = LoginThrottle()
    for i in range(9):
        a = t.reserve(IP, "bob@x", float(i))
        assert not isinstance(a, Locked)
        t.fail(a, float(i))
    assert t.before_attempt(IP, "bob@x", 10.0) == 16.0
    alice = t.reserve(IP, "alice@x", 10.0)
    assert not isinstance(alice, Locked) and alice.delay == 0.0
    t.succeed(alice, 10.0)
    bob = t.reserve(IP, "bob@x", 10.0)
    assert not isinstance(bob, Locked)
    t.succeed(bob, 10.0)
    assert t.before_attempt(IP, "bob@x", 11.0) == 0.0
    # Successes of alice and bob did not give the address its budget back:
    # 21 more failures against others lock it (9 + 21 = 30).
    for i in range(21):
        a = t.reserve(IP, f"victim{i}@x", 12.0)
        assert not isinstance(a, Locked)
        t.fail(a, 12.0)
    r = t.before_attempt(IP, "alice@x", 12.0)
    assert isinstance(r, Locked) and r.scope == "ip"


def test_failures_elsewhere_still_slow_the_account() -> None:
    """The account's own counter (every address) still sets a delay; a
    success from one address clears it, but the delay of the pair that
    failed from another address stays."""
    t = LoginThrottle()
    for _ in range(3):
        t.fail(t.reserve("198.51.100.1", "a@x", 0.0), 0.0)  # type: ignore[arg-type]
    assert t.before_attempt("203.0.113.1", "a@x", 0.0) == 4.0
    t.succeed(t.reserve("203.0.113.1", "a@x", 0.0), 0.0)  # type: ignore[arg-type]
    assert t.before_attempt("203.0.113.1", "a@x", 0.0) == 0.0
    assert t.before_attempt("198.51.100.1", "a@x", 0.0) == 4.0


def test_long_keys_are_bounded() -> None:
    t = LoginThrottle()
    t.record_failure(IP, "x" * 10_000 + "@example.org", 0.0)
    assert all(len(k) < 400 for table in (t._accounts, t._pairs) for k in table.entries)


async def test_logins_waiting_for_a_turn_are_served_in_arrival_order() -> None:
    """A burst of correct logins of one account beyond its in-flight budget:
    each release lets the attempt that has waited longest go next. In any
    other order one attempt can lose every turn until BUSY_WAIT runs out and
    gets NO [UNAVAILABLE] with the right password (1,000 IDLE clients of one
    account on a loaded machine did)."""
    import asyncio

    from mailyard.auth.service import LoginService

    service = LoginService(None, LoginThrottle(ThrottlePolicy(account_max_failures=2)))  # type: ignore[arg-type]
    held = [await service.reserve(IP, "alice@example.org", "alice", "imap") for _ in range(2)]
    assert all(isinstance(a, Attempt) for a in held)
    order: list[int] = []

    async def login(i: int) -> None:
        attempt = await service.reserve(IP, "alice@example.org", "alice", "imap")
        assert isinstance(attempt, Attempt)
        order.append(i)
        held.append(attempt)

    tasks = []
    for i in range(30):
        tasks.append(asyncio.create_task(login(i)))
        for _ in range(3):
            await asyncio.sleep(0)  # each is waiting before the next one comes
    assert len(service._waiting) == 30
    while len(order) < 30:
        served = len(order)
        service.throttle.succeed(held.pop(0), service.clock())
        service._wake()
        for _ in range(10):
            if len(order) > served:
                break
            await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == list(range(30))
