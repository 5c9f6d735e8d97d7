"""MessageMap.resolve_seqs / resolve_uids against a plain reference, for
single ranges (the fast path) and several ranges, with ``*`` and reversed
bounds (RFC 9051 4.1.1 / 6.4.9)."""

from __future__ import annotations

import random

import pytest

from mailyard.protocols.imap.commands import SequenceSet
from mailyard.protocols.imap.selected import MessageMap, SequenceError


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
