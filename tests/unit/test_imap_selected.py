"""MessageMap.resolve_seqs / resolve_uids against a plain reference, for
single ranges (the fast path) and several ranges, with ``*`` and reversed
bounds (RFC 9051 4.1.1 / 6.4.9)."""

from __future__ import annotations

import random

import pytest

from mailyard.protocols.imap.commands import SequenceSet
from mailyard.protocols.imap.selected import MessageMap, SequenceError, UidRuns


def _reference_seqs(uids: list[int], ranges: tuple) -> list[tuple[int, int]]:
    n = len(uids)
    seqs = set()
    for lo, hi in ranges:
        a, b = n if lo is None else lo, n if hi is None else hi
        seqs.update(range(min(a, b), max(a, b) + 1))
    return [(q, uids[q - 1]) for q in sorted(seqs)]


def _reference_uids(uids: list[int], ranges: tuple) -> list[tuple[int, int]]:
    top = uids[-1] if uids else 0
    wanted = set()
    for lo, hi in ranges:
        a, b = top if lo is None else lo, top if hi is None else hi
        wanted.update(u for u in uids if min(a, b) <= u <= max(a, b))
    return [(i + 1, u) for i, u in enumerate(uids) if u in wanted]


@pytest.mark.parametrize("seed", range(5))
def test_resolve_matches_reference(seed: int) -> None:
    rng = random.Random(seed)
    uids = sorted(rng.sample(range(1, 400), 120))
    view = MessageMap(uids)

    def bound(limit: int) -> int | None:
        return None if rng.random() < 0.15 else rng.randint(1, limit)

    for _ in range(200):
        ranges = tuple((bound(120), bound(120)) for _ in range(rng.choice([1, 1, 2, 3])))
        assert view.resolve_seqs(SequenceSet(ranges)) == _reference_seqs(uids, ranges)
        uid_ranges = tuple((bound(450), bound(450)) for _ in range(rng.choice([1, 1, 2, 3])))
        assert view.resolve_uids(SequenceSet(uid_ranges)) == _reference_uids(uids, uid_ranges)


def test_out_of_range_and_empty() -> None:
    view = MessageMap([3, 9])
    with pytest.raises(SequenceError):
        view.resolve_seqs(SequenceSet(((1, 3),)))
    assert view.resolve_seqs(SequenceSet(((2, None),))) == [(2, 9)]
    assert view.resolve_uids(SequenceSet(((10, 20),))) == []
    assert MessageMap().resolve_uids(SequenceSet(((1, None),))) == []


def _reference_expunge(uids: list[int], gone: list[int]) -> list[int]:
    """The EXPUNGE sequence numbers one at a time, ascending, each valid when sent."""
    out = []
    for uid in sorted(set(gone)):
        if uid in uids:
            seq = uids.index(uid) + 1
            del uids[seq - 1]
            out.append(seq)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_view_follows_appends_and_expunges_like_a_list(seed: int) -> None:
    """Runs of consecutive UIDs with gaps, grown by EXISTS and shrunk by
    EXPUNGE: every lookup answers as a plain list of UIDs does."""
    rng = random.Random(seed)
    uids: list[int] = []
    uid = 0
    for _ in range(rng.randint(0, 300)):
        uid += 1 if rng.random() < 0.8 else rng.randint(2, 9)
        uids.append(uid)
    view = MessageMap(uids)
    for _ in range(60):
        if rng.random() < 0.5 and uids:
            gone = rng.sample(uids, rng.randint(1, min(len(uids), 25))) + [uid + 50]
            assert view.expunge(gone) == _reference_expunge(uids, gone)
        else:
            new = [uid + k + (rng.random() < 0.3) for k in range(1, rng.randint(1, 12))]
            if new:
                uid = max(new)
            view.append(new)
            uids.extend(sorted(set(new)))
        assert list(view.uids) == uids and len(view) == len(uids)
        assert view.max_uid == (uids[-1] if uids else 0)
        assert [view.uid_of(q) for q in range(1, len(uids) + 1)] == uids
        for probe in range(0, (uids[-1] if uids else 0) + 3):
            assert view.seq_of(probe) == (uids.index(probe) + 1 if probe in uids else None)
        if uids:
            lo, hi = sorted(rng.randint(0, len(uids)) for _ in range(2))
            assert list(view.uids[lo:hi]) == uids[lo:hi]
            assert view.uids[-1] == uids[-1]
            ranges = ((rng.randint(1, len(uids)), None), (1, rng.randint(1, len(uids))))
            assert view.resolve_seqs(SequenceSet(ranges)) == _reference_seqs(uids, ranges)
            uid_ranges = ((rng.randint(1, uid + 5), rng.randint(1, uid + 5)),)
            assert view.resolve_uids(SequenceSet(uid_ranges)) == _reference_uids(uids, uid_ranges)


def test_view_of_a_large_mailbox_holds_bytes_not_bytes_per_message() -> None:
    """A session's map of a 100,000-message mailbox delivered in order (one
    run of UIDs, two holes from expunges) is a few hundred bytes: every
    logged-in session holds one while it has the mailbox selected."""
    import tracemalloc

    uids = [u for u in range(1, 100_003) if u not in (500, 70_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        view = MessageMap(uids)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(view) == 100_000 and view.uid_of(100_000) == 100_002
    print(f"\nview of 100,000 UIDs: {held} bytes")
    assert held < 4096


def test_expunge_works_run_by_run_not_uid_by_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every session rebuilds its map after each expunge it announces (with
    50 sessions on a mailbox, 50 rebuilds per EXPUNGE): the rebuild goes run
    by run, never walking the UIDs one by one, so it costs the same in a
    mailbox of 200,000 messages as in one of 20. The map after it is the
    one a fresh map of the remaining UIDs would be (same runs)."""
    from mailyard.protocols.imap.selected import UidRuns

    uids = [u for u in range(1, 200_000) if u % 50_000]  # four runs
    view = MessageMap(uids)

    def walked(self: UidRuns) -> None:
        raise AssertionError("the expunge walked every UID of the map")

    monkeypatch.setattr(UidRuns, "__iter__", walked)
    assert view.expunge([3, 7, 60_000, 199_999, 250_000]) == [3, 6, 59_997, 199_993]
    monkeypatch.undo()
    remaining = [u for u in uids if u not in (3, 7, 60_000, 199_999)]
    fresh = UidRuns(remaining)
    assert list(view.uids.starts) == list(fresh.starts) and list(view.uids.firsts) == list(fresh.firsts)
    assert len(view) == len(remaining) and view.uid_of(len(remaining)) == 199_998


def test_uid_runs_built_in_one_pass_equal_runs_built_one_uid_at_a_time() -> None:
    # a SELECT builds the whole mailbox's runs at once (UidRuns(uids), extend)
    for seed in range(500):
        rng = random.Random(seed)
        uids = sorted(rng.sample(range(1, 300), rng.randint(0, 100)))
        split = rng.randint(0, len(uids))
        one_by_one = UidRuns()
        for uid in uids:
            one_by_one.append(uid)
        at_once = UidRuns(uids[:split])
        at_once.extend(uids[split:])
        assert list(at_once) == uids and len(at_once) == len(uids)
        assert (list(at_once.starts), list(at_once.firsts)) == (list(one_by_one.starts), list(one_by_one.firsts))
