"""Expunged messages held across the processes of one data directory
(store/sqlite/holds.py, ``SQLiteStore.share_holds``, RFC 2180 4.1.1).

Two store objects over one directory stand for two worker processes: each
board's lock is an flock() on its own open file, which conflicts with
another open file of the same process as with another process's, and a
board whose lock fd is closed is what a killed process leaves. The real
processes are in tests/integration/test_workers_holds.py."""

from __future__ import annotations

import os
from pathlib import Path

from mailyard.config import StoreConfig
from mailyard.store.api import Mailbox
from mailyard.store.sqlite import SQLiteStore
from mailyard.store.sqlite.holds import HoldBoard
from tests.waiting import wait_until_async

BODY = b"Subject: held\r\n\r\nstill here\r\n"


def _open(path: Path, shared: bool = True) -> SQLiteStore:
    s = SQLiteStore(path, StoreConfig(fsync=False))
    if shared:
        s.share_holds()
    return s


async def _inbox(store: SQLiteStore) -> Mailbox:
    await store.add_domain("example.test")
    a = await store.add_account("a@example.test", "h")
    box = await store.get_mailbox(a.id, "INBOX")
    assert box
    return box


def _held(store: SQLiteStore) -> int:
    return store._q("SELECT count(*) FROM messages WHERE mailbox_id < 0")[0][0]


def _kill(store: SQLiteStore) -> None:
    """What a SIGKILL leaves of a process's board: its files, unlocked."""
    board = store._board
    for fd in (board._lock_fd, board._board_fd):
        assert fd is not None
        os.close(fd)
    board._lock_fd = board._board_fd = None
    board.token = None


async def test_an_expunge_in_one_process_keeps_what_a_session_of_another_holds(tmp_path: Path) -> None:
    a, b = _open(tmp_path / "d"), _open(tmp_path / "d")
    try:
        inbox = await _inbox(a)
        uid = await a.append(inbox, BODY)
        reader = object()
        b.hold_expunged(reader, inbox, 0)  # b's session selects (published before it reads)
        await a.expunge(inbox, [uid])  # no session of a holds it
        assert _held(a) == 1
        assert await b.read_message(inbox, uid, expunged=True) == BODY
        # b's session announces the expunge: the rise is published, b purges
        seen = (await b.changes_since(inbox, 0)).highest_modseq
        b.hold_expunged(reader, inbox, seen)
        await wait_until_async(lambda: _held(a) == 0, what="the held row to go")
        assert a._q("SELECT count(*) FROM bodies")[0][0] == 0  # its body reference was released
    finally:
        await a.close()
        await b.close()


async def test_an_unheld_expunge_goes_at_the_purge_after_its_commit(tmp_path: Path) -> None:
    a, b = _open(tmp_path / "d"), _open(tmp_path / "d")
    try:
        inbox = await _inbox(a)
        uid = await a.append(inbox, BODY)
        other = object()
        b.hold_expunged(other, inbox, 0)
        b.hold_expunged(other, None)  # held, then left: the board says nothing of INBOX
        await a.expunge(inbox, [uid])
        await wait_until_async(lambda: _held(a) == 0, what="the unheld row to go")
    finally:
        await a.close()
        await b.close()


async def test_a_store_opened_beside_live_holders_keeps_their_rows(tmp_path: Path) -> None:
    """A worker started again (or a command run beside the server) opens
    the store: it drops only what no live process holds."""
    a, b = _open(tmp_path / "d"), _open(tmp_path / "d")
    try:
        inbox = await _inbox(a)
        uids = [await a.append(inbox, BODY + str(n).encode()) for n in range(2)]
        b.hold_expunged(object(), inbox, 0)
        await a.expunge(inbox, uids)
        assert _held(a) == 2
        c = _open(tmp_path / "d", shared=False)
        try:
            assert _held(c) == 2
            assert await b.read_message(inbox, uids[0], expunged=True) == BODY + b"0"
        finally:
            await c.close()
        _kill(b)  # the holder's process dies with its sessions
        c = _open(tmp_path / "d", shared=False)
        try:
            assert _held(c) == 0
            assert c._q("SELECT count(*) FROM bodies")[0][0] == 0
        finally:
            await c.close()
        assert sorted(p.name for p in (tmp_path / "d" / "holds").iterdir()) == [
            f"{a._board.token}.holds", f"{a._board.token}.lock"]  # the dead board was removed
    finally:
        await a.close()
        await b.close()


async def test_only_rows_every_live_holder_announced_go(tmp_path: Path) -> None:
    a, b = _open(tmp_path / "d"), _open(tmp_path / "d")
    try:
        inbox = await _inbox(a)
        uids = [await a.append(inbox, BODY + str(n).encode()) for n in range(2)]
        reader = object()
        b.hold_expunged(reader, inbox, 0)
        await a.expunge(inbox, [uids[0]])
        seen = (await b.changes_since(inbox, 0)).highest_modseq
        await a.expunge(inbox, [uids[1]])
        b.hold_expunged(reader, inbox, seen)  # announced the first expunge only
        await wait_until_async(lambda: _held(a) == 1, what="the announced row to go")
        assert await b.read_message(inbox, uids[1], expunged=True) == BODY + b"1"
        b.hold_expunged(reader, None)
        await wait_until_async(lambda: _held(a) == 0, what="the other row to go")
    finally:
        await a.close()
        await b.close()


def test_a_board_lists_the_lowest_of_every_live_process(tmp_path: Path) -> None:
    boards = [HoldBoard(tmp_path) for _ in range(3)]
    for board in boards:
        board.join()
    boards[0].publish({1: 5, 2: 7})
    boards[1].publish({1: 3, 4: 1, 5: 1})
    boards[1].publish({1: 3})  # shorter: rewritten in place, the old tail is not read
    boards[2].publish({3: 9})
    assert boards[2].others() == {1: 3, 2: 7}
    boards[1].leave()
    assert boards[2].others() == {1: 5, 2: 7}
    for fd in (boards[0]._lock_fd, boards[0]._board_fd):
        assert fd is not None
        os.close(fd)  # its process died
    boards[0]._lock_fd = boards[0]._board_fd = None
    assert boards[2].others() == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{boards[2].token}.holds", f"{boards[2].token}.lock"]
    boards[2].leave()
