"""spam/rates.py: sliding-window budgets per address and network."""

from __future__ import annotations

from mailyard.spam.rates import CONNECTION, MESSAGE, RateLimiter, RatePolicy, network_of


def test_networks_are_a_slash_24_and_a_slash_64() -> None:
    assert network_of("192.0.2.77") == "192.0.2.0/24"
    assert network_of("2001:db8:1:2:aaaa::5") == "2001:db8:1:2::/64"
    assert network_of("::ffff:192.0.2.9") == "192.0.2.0/24"
    assert network_of("not an address") == "not an address"


def test_ipv6_neighbours_in_one_slash_64_share_its_budget() -> None:
    rates = RateLimiter(RatePolicy(connections_per_minute=2, network_factor=2))
    now = 1000.0
    assert [rates.hit(CONNECTION, "2001:db8::1", now) for _ in range(2)] == [None, None]
    assert rates.hit(CONNECTION, "2001:db8::2", now) is None
    assert rates.hit(CONNECTION, "2001:db8::3", now) is None
    assert rates.hit(CONNECTION, "2001:db8::4", now) == (
        "too many connections from network 2001:db8::/64 (over 4 a minute)")
    assert rates.hit(CONNECTION, "2001:db8:0:1::4", now) is None  # the next /64


def test_the_window_slides() -> None:
    rates = RateLimiter(RatePolicy(messages_per_minute=4, network_factor=100))
    assert all(rates.hit(MESSAGE, "192.0.2.1", 60.0 + i) is None for i in range(4))
    assert rates.hit(MESSAGE, "192.0.2.1", 64.0) is not None
    # half a minute into the next one, half of the last minute's five still count
    assert rates.hit(MESSAGE, "192.0.2.1", 150.0) is None  # 2.5 + 1
    assert rates.hit(MESSAGE, "192.0.2.1", 150.0) is not None  # 2.5 + 2 > 4
    assert rates.hit(MESSAGE, "192.0.2.1", 175.0) is None  # 1/12 of 5 + 3
    assert rates.hit(MESSAGE, "192.0.2.1", 400.0) is None  # long after: nothing counts


def test_exempt_networks_and_a_zero_budget_are_never_counted() -> None:
    policy = RatePolicy.build(1, 0, 1, ["127.0.0.0/8", "::1"])
    rates = RateLimiter(policy)
    assert all(rates.hit(CONNECTION, "127.0.0.1", 1.0) is None for _ in range(5))
    assert all(rates.hit(CONNECTION, "::ffff:127.0.0.1", 1.0) is None for _ in range(5))
    assert all(rates.hit(MESSAGE, "192.0.2.1", 1.0) is None for _ in range(5))
    assert len(rates) == 0


def test_the_tables_stay_bounded_under_a_flood_of_addresses() -> None:
    rates = RateLimiter(RatePolicy(connections_per_minute=5), max_keys=100)
    for i in range(1000):
        rates.hit(CONNECTION, f"10.{i // 256 % 256}.{i % 256}.1", 1.0)
    assert len(rates) <= 100
