"""Expunged messages a session still holds (Store.hold_expunged, RFC 2180
4.1.1) in the SQLite store: readable while held, gone with their body
reference once every holder has seen the expunge, and after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailyard.config import StoreConfig
from mailyard.store.api import Mailbox, NotFound
from mailyard.store.sqlite import SQLiteStore
from tests.waiting import wait_until_async

BODY = b"Subject: held\r\n\r\nstill here\r\n"


async def _inbox(store: SQLiteStore) -> Mailbox:
    await store.add_domain("example.test")
    a = await store.add_account("a@example.test", "h")
    box = await store.get_mailbox(a.id, "INBOX")
    assert box
    return box


def _held(store: SQLiteStore) -> int:
    return store._q("SELECT count(*) FROM messages WHERE mailbox_id < 0")[0][0]


def _bodies(store: SQLiteStore) -> int:
    return store._q("SELECT count(*) FROM bodies")[0][0]


async def test_expunged_message_is_kept_while_a_session_holds_it(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    try:
        inbox = await _inbox(s)
        uid = await s.append(inbox, BODY)
        other = await s.append(inbox, BODY + b"2\r\n")
        first, second = object(), object()
        s.hold_expunged(first, inbox, inbox.highest_modseq)
        s.hold_expunged(second, inbox, inbox.highest_modseq)
        await s.expunge(inbox, [uid])
        # gone from the mailbox, readable for its holders
        assert [m.uid for m in await s.list_messages(inbox)] == [other]
        with pytest.raises(NotFound):
            await s.read_message(inbox, uid)
        assert await s.read_message(inbox, uid, expunged=True) == BODY
        assert [m.uid for m in await s.get_messages(inbox, [uid], expunged=True)] == [uid]
        assert uid in await s.get_derived(inbox, [uid], ("size",), expunged=True)
        assert (await s.mailbox_status(inbox)).messages == 1
        seen = (await s.changes_since(inbox, 0)).highest_modseq
        s.hold_expunged(first, inbox, seen)  # one holder announced it: still kept
        assert _held(s) == 1
        s.hold_expunged(second, None)  # the other deselected: nobody needs it now
        await wait_until_async(lambda: _held(s) == 0, what="the held row to go")
        assert _bodies(s) == 1  # its body reference was released
        with pytest.raises(NotFound):
            await s.read_message(inbox, uid, expunged=True)
        # nobody holds the mailbox: an expunge deletes at once
        s.hold_expunged(first, None)
        await s.expunge(inbox, [other])
        assert _held(s) == 0 and _bodies(s) == 0
    finally:
        await s.close()


async def test_a_restart_drops_what_sessions_of_the_last_run_held(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    inbox = await _inbox(s)
    uid = await s.append(inbox, BODY)
    s.hold_expunged(object(), inbox, 0)
    await s.expunge(inbox, [uid])
    assert _held(s) == 1 and _bodies(s) == 1
    await s.close()
    s = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    try:
        assert _held(s) == 0 and _bodies(s) == 0
        with pytest.raises(NotFound):
            await s.read_message(inbox, uid, expunged=True)
    finally:
        await s.close()


async def test_deleting_the_mailbox_drops_what_was_held(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    try:
        await s.add_domain("example.test")
        a = await s.add_account("a@example.test", "h")
        box = await s.create_mailbox(a.id, "Work")
        uid = await s.append(box, BODY)
        s.hold_expunged(object(), box, 0)
        await s.expunge(box, [uid])
        assert _held(s) == 1
        await s.delete_mailbox(a.id, "Work")
        assert _held(s) == 0 and _bodies(s) == 0
    finally:
        await s.close()


async def test_the_expunging_holder_needs_nothing_kept(tmp_path: Path) -> None:
    """The session that expunges announces it at once: if it is the only
    holder the row goes in the same write; another holder keeps it."""
    s = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    try:
        inbox = await _inbox(s)
        uids = [await s.append(inbox, BODY + str(n).encode()) for n in range(3)]
        me, other = object(), object()
        s.hold_expunged(me, inbox, 0)
        await s.expunge(inbox, [uids[0]], holder=me)
        assert _held(s) == 0 and _bodies(s) == 2
        s.hold_expunged(other, inbox, 0)
        drafts = await s.get_mailbox(inbox.account_id, "Drafts") or await s.create_mailbox(inbox.account_id, "Drafts")
        await s.copy_messages(inbox, [uids[1]], drafts, move=True, holder=me)
        assert _held(s) == 1  # other has not seen the move yet
        assert await s.read_message(inbox, uids[1], expunged=True) == BODY + b"1"
    finally:
        await s.close()


async def test_usage_drops_at_the_expunge_and_stays_right_when_held_rows_go(tmp_path: Path) -> None:
    """RFC 9208: an expunged message stops counting at once, held or not."""
    s = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    try:
        inbox = await _inbox(s)
        uids = [await s.append(inbox, BODY + str(n).encode()) for n in range(2)]
        q = await s.get_quota(inbox.account_id)
        assert (q.storage_used, q.messages_used) == (2 * len(BODY) + 2, 2)
        holder = object()
        s.hold_expunged(holder, inbox, 0)
        await s.expunge(inbox, [uids[0]])
        q = await s.get_quota(inbox.account_id)
        assert (q.storage_used, q.messages_used) == (len(BODY) + 1, 1) and _held(s) == 1
        s.hold_expunged(holder, None)
        await wait_until_async(lambda: _held(s) == 0, what="the held row to go")
        q = await s.get_quota(inbox.account_id)
        assert (q.storage_used, q.messages_used) == (len(BODY) + 1, 1)
        s.hold_expunged(holder, inbox, 0)
        await s.expunge(inbox, [uids[1]])
    finally:
        await s.close()
    s = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    try:
        assert _held(s) == 0
        q = await s.get_quota(inbox.account_id)
        assert (q.storage_used, q.messages_used) == (0, 0)
    finally:
        await s.close()
