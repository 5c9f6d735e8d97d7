"""STATUS counts are kept per mailbox by each process (store/sqlite/mailboxes.py
``mailbox_status``) and must follow changes another process makes, which this
process hears of (if at all) only later. Two stores on one data directory
stand for two worker processes here, without change notes between them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mailyard.config import StoreConfig
from mailyard.store.api import RestoredMessage
from mailyard.store.sqlite import SQLiteStore

MSG = b"From: bob@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


@asynccontextmanager
async def _two_processes(tmp_path: Path) -> AsyncIterator[tuple[SQLiteStore, SQLiteStore, int]]:
    """Two stores on one directory (``a`` reads STATUS, ``b`` changes), and the account both see."""
    a = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    b = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False), background=False)
    try:
        await a.add_domain("example.test")
        account = await a.add_account("a@example.test", "h")
        yield a, b, account.id
    finally:
        await b.close()
        await a.close()


async def test_status_follows_flag_changes_and_expunges_of_another_process(tmp_path: Path) -> None:
    async with _two_processes(tmp_path) as (a, b, account_id):
        box = await a.get_mailbox(account_id, "INBOX")
        assert box is not None
        await b.append(box, MSG)
        await b.append(box, MSG)
        st = await a.mailbox_status(box)
        assert (st.messages, st.unseen, st.deleted) == (2, 2, 0)
        await b.store_flags(box, [1], {"\\Seen", "\\Deleted"}, "add")
        st = await a.mailbox_status(box)
        assert (st.messages, st.unseen, st.deleted) == (2, 1, 1)
        await b.expunge(box, [1])
        st = await a.mailbox_status(box)
        assert (st.messages, st.unseen, st.deleted) == (1, 1, 0)


async def test_status_follows_messages_another_process_restores(tmp_path: Path) -> None:
    # restore_mailbox sets the mailbox's final uid_next and highest_modseq
    # first; restore_messages then adds the messages without moving either
    # (nor recent_uid), so counts kept by those three alone stayed at none.
    async with _two_processes(tmp_path) as (a, b, account_id):
        box = await b.restore_mailbox(account_id, "Archive", 777, 10, 50)
        st = await a.mailbox_status(box)
        assert (st.messages, st.uid_next, st.highest_modseq) == (0, 10, 50)
        await b.restore_messages(box, [RestoredMessage(3, MSG, frozenset(), 1.0, 20, 1.0),
                                       RestoredMessage(7, MSG, frozenset({"\\Seen"}), 1.0, 30, 1.0)])
        st = await a.mailbox_status(box)
        assert (st.messages, st.unseen, st.size, st.uid_next) == (2, 1, 2 * len(MSG), 10)
