"""store/view.py ``MailboxView`` over a real store (each backend of
tests/unit/test_store.py): what it shows after
deliveries, flag changes and expunges (also by another store instance on the
same data, as a second process would), and when it reads everything again."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mailyard.config import StoreConfig
from mailyard.store.api import DeliveryTarget, Mailbox, MailboxGone, MessageInfo, Store
from mailyard.store.view import MailboxView, ViewUpdate
from tests.unit.test_store import Backend
from tests.unit.test_store import backend as backend  # noqa: F401  (the parametrised fixture)


def _open(backend: Backend) -> Store:
    return backend.open(StoreConfig(segment_size=4096))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:  # noqa: F811
    s = _open(backend)
    await s.add_domain("example.test")
    yield s
    await s.close()


@pytest.fixture
async def other(backend: Backend, store: Store) -> AsyncIterator[Store]:  # noqa: F811
    """A second store instance on the same data: another session's process."""
    s = _open(backend)
    yield s
    await s.close()



async def _inbox(store: Store) -> Mailbox:
    a = await store.add_account("a@example.test", "h")
    box = await store.get_mailbox(a.id, "INBOX")
    assert box
    return box


async def _fresh(store: Store, box: Mailbox) -> Mailbox:
    """The mailbox as a caller reads it before refreshing (current highest_modseq)."""
    now = await store.get_mailbox_by_id(box.account_id, box.id)
    assert now
    return now


def _msg(i: int) -> bytes:
    return b"Subject: m%d\r\n\r\n%s\r\n" % (i, b"x" * i)


def _size(info: MessageInfo) -> int:
    return info.size


async def test_first_refresh_loads_then_nothing_to_read(store: Store) -> None:
    box = await _inbox(store)
    for i in range(3):
        await store.append(box, _msg(i))
    view: MailboxView[int] = MailboxView(_size)
    assert (await view.refresh(store, await _fresh(store, box))) == ViewUpdate(reloaded=True)
    assert list(view) == [1, 2, 3]
    assert list(view.entries.values()) == [len(_msg(i)) for i in range(3)]
    # unchanged mod-sequence: nothing moved and nothing is read
    calls: list[str] = []
    spy = _Spy(store, calls)
    update = await view.refresh(spy, await _fresh(store, box))  # type: ignore[arg-type]
    assert not update.moved and calls == []


async def test_uids_only_view_loads_from_the_summary(store: Store) -> None:
    box = await _inbox(store)
    await store.append(box, _msg(1))
    await store.append(box, _msg(2))
    calls: list[str] = []
    view: MailboxView[None] = MailboxView()
    await view.refresh(_Spy(store, calls), await _fresh(store, box))  # type: ignore[arg-type]
    assert calls == ["mailbox_summary"]
    assert view.entries == {1: None, 2: None}
    assert view.modseq == (await _fresh(store, box)).highest_modseq


async def test_deliveries_are_added_in_uid_order(store: Store, other: Store) -> None:
    box = await _inbox(store)
    await store.append(box, _msg(1))
    view: MailboxView[int] = MailboxView(_size)
    await view.refresh(store, await _fresh(store, box))
    await other.deliver(_msg(2), [DeliveryTarget(box.id)])
    await other.deliver(_msg(3), [DeliveryTarget(box.id)])
    update = await view.refresh(store, await _fresh(store, box))
    assert update == ViewUpdate(added=[2, 3])
    assert list(view.entries.items()) == [(1, len(_msg(1))), (2, len(_msg(2))), (3, len(_msg(3)))]


async def test_flag_changes_move_nothing_and_keep_reader_values(store: Store) -> None:
    box = await _inbox(store)
    await store.append(box, _msg(1))
    await store.append(box, _msg(2))
    view: MailboxView[int] = MailboxView(_size)
    await view.refresh(store, await _fresh(store, box))
    view.entries[2] = 999  # a reader's own value (POP3: the exact POP3 size)
    await store.store_flags(box, [1, 2], ["\\Seen"], "add")
    before = view.modseq
    update = await view.refresh(store, await _fresh(store, box))
    assert not update.moved
    assert view.modseq > before  # the flag change is consumed, not read again
    assert view.entries == {1: len(_msg(1)), 2: 999}


async def test_expunge_by_another_session(store: Store, other: Store) -> None:
    box = await _inbox(store)
    for i in range(4):
        await store.append(box, _msg(i))
    view: MailboxView[int] = MailboxView(_size)
    await view.refresh(store, await _fresh(store, box))
    theirs = await other.get_mailbox_by_id(box.account_id, box.id)
    assert theirs
    assert await other.expunge(theirs, [1, 3]) == [1, 3]
    await other.deliver(_msg(9), [DeliveryTarget(box.id)])
    update = await view.refresh(store, await _fresh(store, box))
    assert update == ViewUpdate(added=[5], removed=[1, 3])
    assert list(view) == [2, 4, 5]
    assert [m.uid for m in await store.list_messages(box)] == list(view)


async def test_a_stale_reference_does_not_move_the_view_backwards(store: Store) -> None:
    box = await _inbox(store)
    await store.append(box, _msg(1))
    view: MailboxView[int] = MailboxView(_size)
    await view.refresh(store, await _fresh(store, box))
    await store.append(box, _msg(2))
    await view.refresh(store, await _fresh(store, box))
    # an old Mailbox (lower highest_modseq) only re-reads; the view keeps its state
    update = await view.refresh(store, box)
    assert not update.moved and list(view) == [1, 2]


async def test_deleted_mailbox_raises_and_forgets(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    work = await store.create_mailbox(a.id, "Work")
    await store.append(work, _msg(1))
    view: MailboxView[None] = MailboxView()
    await view.refresh(store, await _fresh(store, work))
    await store.append(work, _msg(2))
    moved = await _fresh(store, work)
    await store.delete_mailbox(a.id, "Work")
    with pytest.raises(MailboxGone):
        await view.refresh(store, moved)
    assert len(view) == 0 and view.uid_validity is None
    # a new mailbox of that name has another id and UIDVALIDITY: read anew
    again = await store.create_mailbox(a.id, "Work")
    await store.append(again, _msg(3))
    assert (await view.refresh(store, await _fresh(store, again))).reloaded
    assert list(view) == [1] and view.uid_validity == again.uid_validity


async def test_another_uidvalidity_reloads(store: Store) -> None:
    """A reference with another UIDVALIDITY never gets the old UIDs applied to
    it: the view reads the list again (here the store refuses the stale one)."""
    from dataclasses import replace

    box = await _inbox(store)
    await store.append(box, _msg(1))
    view: MailboxView[int] = MailboxView(_size)
    await view.refresh(store, await _fresh(store, box))
    stale = replace(await _fresh(store, box), uid_validity=box.uid_validity + 1)
    with pytest.raises(MailboxGone):
        await view.refresh(store, stale)
    assert len(view) == 0
    assert (await view.refresh(store, await _fresh(store, box))).reloaded
    assert list(view) == [1]


class _Spy:
    """Passes calls through to a store and records their names."""

    def __init__(self, store: Store, calls: list[str]) -> None:
        self._store, self._calls = store, calls

    def __getattr__(self, name: str) -> object:
        self._calls.append(name)
        return getattr(self._store, name)
