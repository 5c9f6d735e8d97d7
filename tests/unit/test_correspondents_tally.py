"""The address book's counts of delivered and sent mail are coalesced: the
messages delivered while one count is being written are written together,
and every message is counted exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter

from mailyard.delivery.local import note_received, note_sent


class _SlowStore:
    """Records ``note_correspondents`` calls; each waits until released, as a
    busy store writer would."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[tuple[str, str]], bool]] = []
        self.release = asyncio.Event()

    async def note_correspondents(self, account_id: int, people: list[tuple[str, str]], sent: bool) -> None:
        self.calls.append((account_id, list(people), sent))
        await self.release.wait()


def _message(sender: str) -> bytes:
    return f"From: Someone <{sender}>\r\nCc: x@y.test\r\nSubject: s\r\n\r\nbody\r\n".encode()


async def test_messages_delivered_during_a_write_are_counted_in_one_more_write() -> None:
    store = _SlowStore()
    note_received(store, _message("first@remote.test"), [1])  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert len(store.calls) == 1  # a lone message is written at once
    for n in range(20):
        note_received(store, _message(f"s{n % 3}@remote.test"), [1, 2])  # type: ignore[arg-type]
    note_sent(store, 1, [("Ann", "ann@remote.test"), ("", "ANN@remote.test")])  # type: ignore[arg-type]
    store.release.set()
    for _ in range(100):
        await asyncio.sleep(0)
    # the 21 deliveries and the submission: 1 write, then one per account and direction
    assert len(store.calls) == 1 + 3
    received = {account: Counter(a for _, a in people) for account, people, sent in store.calls if not sent}
    assert received[2] == Counter({"s0@remote.test": 7, "s1@remote.test": 7, "s2@remote.test": 6})
    every_received = Counter(a for account, people, sent in store.calls if not sent and account == 1 for _, a in people)
    assert every_received == Counter({"first@remote.test": 1, "s0@remote.test": 7, "s1@remote.test": 7,
                                      "s2@remote.test": 6})
    # one message naming an address twice counts it once, with the name it was given
    assert [people for _, people, sent in store.calls if sent] == [[("Ann", "ann@remote.test")]]


async def test_a_store_done_with_is_not_kept_alive_by_its_counts() -> None:
    # The coalesced counts are kept per store in a weak mapping; the tally
    # held its store strongly, so the mapping's value kept its own key alive
    # and every store that ever counted a message stayed in memory for good.
    import gc
    import weakref

    store = _SlowStore()
    store.release.set()
    note_sent(store, 1, [("Ann", "ann@remote.test")])  # type: ignore[arg-type]
    for _ in range(100):
        await asyncio.sleep(0)
    assert len(store.calls) == 1
    ref = weakref.ref(store)
    del store
    gc.collect()
    assert ref() is None, "the store is still referenced after its counts were written"
