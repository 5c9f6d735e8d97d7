"""The Undo records of the webmail's moves (web/undomove.py): what they keep,
for whom, and for how long; the route over HTTP is tested in
tests/integration/test_web_undomove.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mailyard.web import undomove
from mailyard.web.undomove import MoveUndos

INBOX = SimpleNamespace(id=1, uid_validity=7)
TRASH = SimpleNamespace(id=2, uid_validity=9)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_record_names_what_the_move_did_for_its_account_only() -> None:
    undos = MoveUndos()
    token = undos.offer(5, INBOX, TRASH, [(3, 40), (1, 41)])
    record = undos.find(5, token)
    assert record is not None
    assert (record.source, record.target, record.validity, list(record.uids)) == (1, 2, 9, [40, 41])
    assert undos.offered(5, token) == token
    assert undos.find(6, token) is None and undos.offered(6, token) == ""
    for forged in (None, "", "x" * 22, token + "A", 12):
        assert undos.find(5, forged) is None
    record.done = "/box/1?notice=Moved%20back."
    assert undos.offered(5, token) == ""  # done: no button, the record kept for a second POST
    assert undos.find(5, token) is record


def test_nothing_moved_or_more_than_the_cap_offers_nothing() -> None:
    undos = MoveUndos()
    assert undos.offer(5, INBOX, TRASH, []) == ""
    pairs = [(i, 100 + i) for i in range(1, undomove.MAX_UIDS + 2)]
    assert undos.offer(5, INBOX, TRASH, pairs) == ""
    assert undos.offer(5, INBOX, TRASH, pairs[:-1]) != ""


def test_records_expire_and_are_bounded_per_account_and_in_all(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    undos = MoveUndos(clock)
    old = undos.offer(5, INBOX, TRASH, [(1, 1)])
    clock.now += undomove.UNDO_FOR + 1
    assert undos.find(5, old) is None
    tokens = [undos.offer(5, INBOX, TRASH, [(1, 1)]) for _ in range(undomove.PER_ACCOUNT + 3)]
    assert [undos.find(5, t) is not None for t in tokens] == [False] * 3 + [True] * undomove.PER_ACCOUNT
    other = undos.offer(6, INBOX, TRASH, [(1, 1)])  # another account's records are its own
    assert undos.find(6, other) is not None and undos.find(5, tokens[-1]) is not None

    monkeypatch.setattr(undomove, "MAX_RECORDS", 3)
    many = [undos.offer(account, INBOX, TRASH, [(1, 1)]) for account in range(10, 15)]
    assert [undos.find(a, t) is not None for a, t in zip(range(10, 15), many, strict=True)] == [False, False, True, True, True]
    assert len(undos._records) == 3 and set(undos._by_account) == {12, 13, 14}
