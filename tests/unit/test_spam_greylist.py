"""spam/greylist.py decisions and store/greylist.py state, together as the
SMTP glue uses them (net/smtp.py ``_greylist_check``)."""

from __future__ import annotations

from pathlib import Path

from mailyard.net.smtp import _greylist_check
from mailyard.spam.greylist import GreylistPolicy, decide, known_good, triplet
from mailyard.store.greylist import GreylistState

POLICY = GreylistPolicy(delay=60, retry_window=3600, allow_for=86400, known_good=frozenset({"bank.example"}))


def test_decisions() -> None:
    first = decide(POLICY, 100.0, None)
    assert (first.defer, first.first, first.reason) == (True, True, "greylisted, please try again later")
    early = decide(POLICY, 130.0, 100.0)
    assert (early.defer, early.first, early.reason) == (True, False, "greylisted, please try again in 31 seconds")
    last = decide(POLICY, 159.5, 100.0)
    assert last.reason == "greylisted, please try again in 1 second"
    ok = decide(POLICY, 161.0, 100.0)
    assert (ok.defer, ok.allow) == (False, True)
    late = decide(POLICY, 100.0 + 3601, 100.0)
    assert (late.defer, late.first) == (True, True)
    assert decide(POLICY, 100.0, None, allowed=True).defer is False
    assert decide(POLICY, 100.0, None, good_domain="bank.example").defer is False


def test_known_good_domains_and_their_subdomains() -> None:
    assert known_good(POLICY, ["mail.bank.example"]) == "mail.bank.example"
    assert known_good(POLICY, ["evilbank.example", "bank.example.evil"]) is None


def test_triplets_use_the_network() -> None:
    assert triplet("192.0.2.7", "A@Example.org", "Bob@x.test") == ("192.0.2.0/24", "a@example.org", "bob@x.test")


def test_a_retry_passes_and_the_pair_is_allowed(tmp_path: Path) -> None:
    state = GreylistState(tmp_path / "g.sqlite", POLICY.retry_window)
    args = ("192.0.2.7", "a@example.org")
    assert _greylist_check(state, POLICY, *args, ["bob@x.test"], [], 100.0) == "greylisted, please try again later"
    # another worker process opening the same file sees the attempt
    other = GreylistState(tmp_path / "g.sqlite", POLICY.retry_window)
    assert other.first_seen(*triplet(*args, "bob@x.test")) == 100.0
    assert _greylist_check(other, POLICY, *args, ["bob@x.test"], [], 120.0) == (
        "greylisted, please try again in 41 seconds")
    # the retry comes from another host of the same /24
    assert _greylist_check(state, POLICY, "192.0.2.8", "a@example.org", ["bob@x.test"], [], 170.0) is None
    # the pair passes now, for any recipient and sender of the domain
    assert _greylist_check(state, POLICY, "192.0.2.9", "c@example.org", ["new@x.test"], [], 171.0) is None
    assert state.first_seen(*triplet(*args, "bob@x.test")) is None
    # but not from elsewhere
    assert _greylist_check(state, POLICY, "198.51.100.1", "a@example.org", ["bob@x.test"], [], 172.0) is not None
    # an authenticated known-good domain passes at once
    assert _greylist_check(state, POLICY, "203.0.113.5", "x@bank.example", ["bob@x.test"], ["bank.example"],
                           173.0) is None
    state.close()
    other.close()


def test_expired_rows_go(tmp_path: Path) -> None:
    state = GreylistState(tmp_path / "g.sqlite", POLICY.retry_window)
    _greylist_check(state, POLICY, "192.0.2.7", "a@example.org", ["b@x.test"], [], 100.0)
    _greylist_check(state, POLICY, "192.0.2.7", "a@example.org", ["b@x.test"], [], 200.0)  # allowed until 86600
    _greylist_check(state, POLICY, "198.51.100.1", "a@example.org", ["b@x.test"], [], 300.0)
    assert len(state) == 2
    state.expire(300.0 + 3601)
    assert len(state) == 1
    state.expire(86601.0)
    assert len(state) == 0
    state.close()
