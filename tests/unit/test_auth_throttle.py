"""Tests for auth/throttle.py with a fake clock (plain floats)."""

from __future__ import annotations

import logging

import pytest

from mailyard.auth.throttle import Locked, LoginThrottle, ThrottlePolicy

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
    t = LoginThrottle()
    for i in range(3):
        t.record_failure(IP, "alice@example.org", float(i))
    assert t.before_attempt("203.0.113.9", "alice@example.org", 3.0) == 4.0
    t.record_success(IP, "alice@example.org", 3.0)
    assert t.before_attempt("203.0.113.9", "alice@example.org", 3.0) == 0.0
    assert t.before_attempt(IP, "bob@example.org", 3.0) == 4.0  # address still counted


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
    assert len(t) <= 100
    # The most recent keys are kept.
    assert t.before_attempt("10.3.231.1", "u999@x", 1.0) == 1.0


def test_expired_entries_are_pruned() -> None:
    t = LoginThrottle(ThrottlePolicy(window=10.0))
    for i in range(20):
        t.record_failure(f"10.0.0.{i}", None, 0.0)
    t.record_failure("10.0.1.1", None, 100.0)
    assert len(t) == 1


def test_locked_key_does_not_count_further() -> None:
    t = LoginThrottle(ThrottlePolicy(account_max_failures=2, account_lockout=100.0))
    t.record_failure(IP, "a@x", 0.0)
    t.record_failure(IP, "a@x", 1.0)
    t.record_failure(IP, "a@x", 50.0)  # during the lockout: does not extend it
    r = t.before_attempt("10.0.0.1", "a@x", 60.0)
    assert isinstance(r, Locked) and r.until == 101.0
