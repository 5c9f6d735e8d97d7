"""The PostgreSQL store decodes a big mailbox's whole listings off the event
loop (store/postgresql/transaction.py ``LIST_INLINE``, the listing lane): the
message list, SELECT's summary, the changes since a mod-sequence. The
threshold is lowered here and the decoding of one row slowed, so decoding
that holds the event loop holds it for a measurable time whatever the
machine; the loop's turns are counted (LoopTicks), never timed. What the
lane returns is what the store returns in place."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailyard.config import StoreConfig
from mailyard.store.api import AppendItem, Mailbox
from mailyard.store.postgresql import PostgreSQLStore, transaction
from tests.pgcluster import PgCluster
from tests.waiting import LoopTicks

MESSAGES = 30
SLOW = 1.0  # seconds the slowed row takes
T = TypeVar("T")


def _message(n: int) -> bytes:
    return f"From: bob@example.test\r\nSubject: m{n}\r\nMessage-ID: <m{n}@example.test>\r\n\r\nbody {n}\r\n".encode()


async def _big_inbox(store: PostgreSQLStore) -> Mailbox:
    """alice's INBOX of ``MESSAGES`` messages, some seen, some with a keyword, two expunged."""
    await store.add_domain("example.test")
    alice = await store.add_account("alice@example.test", "h")
    inbox = await store.get_mailbox(alice.id, "INBOX")
    assert inbox is not None
    uids = await store.append_many(inbox, [AppendItem(_message(n), frozenset({"\\Seen"}) if n < 10 else frozenset())
                                           for n in range(MESSAGES)])
    await store.store_flags(inbox, uids[12:15], ["$Work"], "add")
    await store.expunge(inbox, uids[20:22])
    box = await store.get_mailbox(alice.id, "INBOX")
    assert box is not None
    return box


def _slowed(started: threading.Event, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, its first call taking ``SLOW`` seconds more."""
    def slow(*args: Any) -> Any:
        if not started.is_set():
            started.set()
            time.sleep(SLOW)
        return fn(*args)

    return slow


async def _off_the_loop(monkeypatch: pytest.MonkeyPatch, name: str, read: Callable[[], Awaitable[T]]) -> T:
    """``read()`` with the store's ``name`` (a decoding step) slowed: the
    event loop must keep turning while it runs."""
    started = threading.Event()
    monkeypatch.setattr(transaction, name, _slowed(started, getattr(transaction, name)))
    async with LoopTicks() as ticks:
        result = await read()
    monkeypatch.undo()
    assert started.is_set(), f"{name} was not used"
    assert ticks.count >= 20, f"the event loop stood still while the rows were decoded ({ticks.count} turns)"
    return result


@pytest.fixture
async def store(pg_cluster: PgCluster, tmp_path: Path) -> Any:
    s = PostgreSQLStore(pg_cluster.new_dsn(), StoreConfig(), data_dir=tmp_path)
    try:
        yield s
    finally:
        await s.close()


async def test_a_big_message_list_is_decoded_off_the_event_loop(store: PostgreSQLStore,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = await _big_inbox(store)
    in_place = await store.list_messages(inbox)
    assert len(in_place) == MESSAGES - 2
    monkeypatch.setattr(transaction, "LIST_INLINE", 5, raising=False)
    listed = await _off_the_loop(monkeypatch, "message_row", lambda: store.list_messages(inbox))
    assert listed == in_place


async def test_a_big_select_summary_is_decoded_off_the_event_loop(store: PostgreSQLStore,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = await _big_inbox(store)
    in_place = await store.mailbox_summary(inbox)
    assert in_place.first_unseen == in_place.uids[10]
    assert in_place.keywords == {"$Work"}
    monkeypatch.setattr(transaction, "LIST_INLINE", 5, raising=False)
    summary = await _off_the_loop(monkeypatch, "flags_set", lambda: store.mailbox_summary(inbox))
    assert summary == in_place


async def test_many_changes_are_decoded_off_the_event_loop(store: PostgreSQLStore,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = await _big_inbox(store)
    in_place = await store.changes_since(inbox, 0)
    assert len(in_place.changed) == MESSAGES - 2 and len(in_place.vanished) == 2
    monkeypatch.setattr(transaction, "LIST_INLINE", 5, raising=False)
    changes = await _off_the_loop(monkeypatch, "message_row", lambda: store.changes_since(inbox, 0))
    assert changes == in_place
    # the expunged UIDs alone past the threshold: decoded on the lane too
    monkeypatch.setattr(transaction, "LIST_INLINE", 1, raising=False)
    top = in_place.highest_modseq
    assert (await store.changes_since(inbox, top)).vanished == []
    assert (await store.changes_since(inbox, 0)).vanished == in_place.vanished


async def test_many_thread_keys_are_decoded_off_the_event_loop(store: PostgreSQLStore,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The keys of IMAP THREAD and the webmail's conversations for a whole big mailbox."""
    inbox = await _big_inbox(store)
    uids = (await store.mailbox_summary(inbox)).uids
    in_place = await store.thread_keys(inbox, uids)
    assert len(in_place) == MESSAGES - 2
    monkeypatch.setattr(transaction, "LIST_INLINE", 5, raising=False)
    # ``bool``, as transaction.py (``_thread_keys``) sees it: each row's refwd column goes through it
    monkeypatch.setattr(transaction, "bool", bool, raising=False)
    keys = await _off_the_loop(monkeypatch, "bool", lambda: store.thread_keys(inbox, uids))
    assert keys == in_place


async def test_a_listing_decoded_after_the_store_closed_is_a_store_error(
        pg_cluster: PgCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read whose rows came before the store closed but are decoded after
    it gets the store's closed error (StoreUnavailable, answered as a
    temporary failure by every protocol), not an executor's RuntimeError."""
    import asyncio

    from mailyard.store.api import StoreUnavailable

    store = PostgreSQLStore(pg_cluster.new_dsn(), StoreConfig(), data_dir=tmp_path)
    inbox = await _big_inbox(store)
    monkeypatch.setattr(transaction, "LIST_INLINE", 5)
    await store.list_messages(inbox)  # the lane exists
    gate, fetched = asyncio.Event(), asyncio.Event()
    decoded = PostgreSQLStore._decoded

    async def late(self: PostgreSQLStore, make: Any, *results: Any) -> Any:
        fetched.set()
        await gate.wait()
        return await decoded(self, make, *results)

    monkeypatch.setattr(PostgreSQLStore, "_decoded", late)
    read = asyncio.ensure_future(store.list_messages(inbox))
    await fetched.wait()  # the rows are in, not yet decoded
    await store.close()
    gate.set()
    with pytest.raises(StoreUnavailable):
        await read
