"""changes_since over the SQLite store's shared log of recent changes
(store/sqlite/changelog.py): every answer is the one SQLite gives, for any
mix of writes and any mod-sequence a session may ask from; and a write's
rows are read once for all the sessions that ask, not once per session.
Also: a FETCH of a message not yet derived does not wait for a commit."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
from pathlib import Path

from mailyard.config import StoreConfig
from mailyard.store.api import Changes, Mailbox
from mailyard.store.sqlite import SQLiteStore, changelog
from mailyard.store.sqlite.messages import MESSAGE_COLS, message_row
from tests.unit.test_store import MIME


async def _store(tmp_path: Path) -> tuple[SQLiteStore, Mailbox, Mailbox]:
    s = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    await s.add_domain("example.test")
    a = await s.add_account("a@example.test", "h")
    await s.create_mailbox(a.id, "Stash")
    inbox = await s.get_mailbox(a.id, "INBOX")
    archive = await s.get_mailbox(a.id, "Stash")
    assert inbox and archive
    return s, inbox, archive


def _from_sqlite(s: SQLiteStore, box: Mailbox, modseq: int) -> Changes:
    """What changed, straight from the tables (the answer without the log)."""
    c = s._read
    top = c.execute("SELECT highest_modseq FROM mailboxes WHERE id = ?", (box.id,)).fetchone()[0]
    changed = c.execute(f"SELECT {MESSAGE_COLS} FROM messages WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
                        (box.id, modseq)).fetchall()
    gone = c.execute("SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
                     (box.id, modseq)).fetchall()
    return Changes(top, [message_row(r) for r in changed], [r[0] for r in gone])


async def test_the_log_answers_as_sqlite_does_for_every_write_and_every_question(
    tmp_path: Path, monkeypatch
) -> None:
    """A seeded random mix of APPEND, STORE (add, remove, replace; flags and
    keywords), EXPUNGE, COPY and MOVE in and out; after each write, sessions
    ask from every mod-sequence seen so far. A small log (trimmed often)
    makes the far-behind questions go to SQLite too."""
    monkeypatch.setattr(changelog, "MAX_ENTRIES", 40)
    s, inbox, archive = await _store(tmp_path)
    rng = random.Random(7162)
    try:
        for _ in range(5):
            await s.append(inbox, MIME)
        asked: list[int] = [0]
        for step in range(250):
            uids = [m.uid for m in await s.list_messages(inbox)]
            pick = rng.sample(uids, min(len(uids), rng.randint(1, 3))) if uids else []
            kind = rng.choice(["append", "store", "store", "store", "expunge", "copy", "move", "movein"])
            if kind == "append" or not pick:
                await s.append(inbox, MIME, flags=rng.choice([(), ("\\Seen",), ("$Work",)]))
            elif kind == "store":
                flags = rng.sample(["\\Seen", "\\Flagged", "\\Deleted", "$Label1", "Later"], rng.randint(1, 2))
                await s.store_flags(inbox, pick, flags, rng.choice(["add", "remove", "replace"]))
            elif kind == "expunge":
                await s.expunge(inbox, pick)
            elif kind == "copy":
                await s.copy_messages(inbox, pick, archive)
            elif kind == "move":
                await s.copy_messages(inbox, pick, archive, move=True)
            else:
                there = [m.uid for m in await s.list_messages(archive)]
                if there:
                    await s.copy_messages(archive, there[:2], inbox, move=True)
            top = (await s.changes_since(inbox, asked[-1])).highest_modseq
            asked.append(top)
            for since in sorted(set(asked[-30:] + [0, max(0, top - 1), rng.randint(0, top)])):
                assert await s.changes_since(inbox, since) == _from_sqlite(s, inbox, since), (step, since)
            for box in (inbox, archive):
                if step % 3 == 0 or box is inbox:
                    assert await s.list_messages(box) == _from_sqlite(s, box, -1).changed, step
    finally:
        await s.close()


async def test_one_write_is_read_once_for_all_the_sessions_that_ask(tmp_path: Path) -> None:
    """Twenty sessions selected at the same mod-sequence each ask after a
    STORE: the changed rows are read from SQLite once, and every session gets
    the same answer."""
    s, inbox, _ = await _store(tmp_path)
    try:
        for _ in range(3):
            await s.append(inbox, MIME)
        known = (await s.mailbox_status(inbox)).highest_modseq
        reads: list[str] = []
        s._read.set_trace_callback(lambda sql: reads.append(sql) if "FROM messages" in sql else None)
        await s.store_flags(inbox, [2], ["\\Flagged"], "add")
        answers = [await s.changes_since(inbox, known) for _ in range(20)]
        s._read.set_trace_callback(None)
        assert len(reads) == 1, reads
        assert answers[0].highest_modseq == known + 1
        assert [(m.uid, sorted(m.flags)) for m in answers[0].changed] == [(2, ["\\Flagged"])]
        assert all(a == answers[0] for a in answers)
    finally:
        await s.close()


async def test_sessions_listing_a_mailbox_share_one_read_of_it(tmp_path: Path) -> None:
    """SELECT and the first FETCH of each session list the whole mailbox:
    read from SQLite once, then brought forward by what changed."""
    s, inbox, _ = await _store(tmp_path)
    try:
        for _ in range(3):
            await s.append(inbox, MIME)
        first = await s.list_messages(inbox)
        reads: list[str] = []
        s._read.set_trace_callback(lambda sql: reads.append(sql) if "FROM messages" in sql else None)
        await s.store_flags(inbox, [1], ["\\Seen"], "add")
        await s.expunge(inbox, [2])
        await s.append(inbox, MIME, flags=["$Work"])
        lists = [await s.list_messages(inbox) for _ in range(20)]
        s._read.set_trace_callback(None)
        assert len(reads) == 1, reads  # the three writes' rows, once
        assert [(m.uid, sorted(m.flags)) for m in lists[0]] == [(1, ["\\Seen"]), (3, []), (4, ["$Work"])]
        assert lists[0][1] is first[2]  # the unchanged record is shared, not read again
        assert all(x == lists[0] for x in lists)
    finally:
        await s.close()


async def test_writes_by_another_process_are_seen(tmp_path: Path) -> None:
    """The log is current by the mailbox's highest_modseq in the database,
    not by this process's change notifications: a flag set through another
    connection (another mailyard process on the same directory) is reported."""
    s, inbox, _ = await _store(tmp_path)
    try:
        await s.append(inbox, MIME)
        known = (await s.changes_since(inbox, 0)).highest_modseq
        other = sqlite3.connect(tmp_path / "d" / "index.sqlite3", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            top = other.execute("UPDATE mailboxes SET highest_modseq = highest_modseq + 1 WHERE id = ?"
                                " RETURNING highest_modseq", (inbox.id,)).fetchone()[0]
            other.execute("UPDATE messages SET flags = '\\Answered', modseq = ? WHERE mailbox_id = ? AND uid = 1",
                          (top, inbox.id))
            other.execute("COMMIT")
        finally:
            other.close()
        ch = await s.changes_since(inbox, known)
        assert ch.highest_modseq == top
        assert [(m.uid, m.flags) for m in ch.changed] == [(1, frozenset({"\\Answered"}))]
    finally:
        await s.close()


async def test_the_logs_stay_within_their_memory_budget(tmp_path: Path, monkeypatch) -> None:
    """Logs of many mailboxes: the least recently used go once the records
    held pass the budget, and answers stay exact (a dropped log is rebuilt,
    a question from before it goes to SQLite)."""
    monkeypatch.setattr(changelog, "LOG_BUDGET", 60)
    s, inbox, _ = await _store(tmp_path)
    try:
        account = inbox.account_id
        boxes = [inbox]
        for n in range(8):
            await s.create_mailbox(account, f"Box{n}")
            box = await s.get_mailbox(account, f"Box{n}")
            assert box is not None
            boxes.append(box)
        for round_ in range(4):
            for box in boxes:
                await s.append(box, MIME)
                assert await s.list_messages(box) == _from_sqlite(s, box, -1).changed
                for since in (0, 1, round_ + 1):
                    assert await s.changes_since(box, since) == _from_sqlite(s, box, since)
                held = sum(log.cost() for log in s._changelogs.values())
                assert held == s._changelog_cost
                assert held <= 60 or len(s._changelogs) == 1
    finally:
        await s.close()


async def test_a_fetch_of_a_new_message_does_not_wait_for_the_writer(tmp_path: Path) -> None:
    """ENVELOPE of a message the indexer has not reached is derived on the
    spot and answered; saving it (a cache) goes on behind the writer's other
    work instead of holding the FETCH until its commit. The writer is held
    busy here: before, the FETCH waited for it (the wait_for below ran out)."""
    s, inbox, _ = await _store(tmp_path)
    gate = threading.Event()
    try:
        await s.append(inbox, MIME)
        started = threading.Event()

        def busy(c: sqlite3.Connection, ctx: object) -> None:
            started.set()
            gate.wait(60)

        blocker = asyncio.ensure_future(s._write(busy))
        while not started.is_set():
            await asyncio.sleep(0.01)
        derived = await asyncio.wait_for(s.get_derived(inbox, [1]), 30)
        assert derived[1]["envelope"]
        gate.set()
        await blocker
        for _ in range(500):  # the save lands once the writer is free
            if not s._read.execute("SELECT count(*) FROM bodies WHERE derived IS NULL").fetchone()[0]:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the derived data was never saved")
    finally:
        gate.set()
        await s.close()


def _list_off_the_loop(s: SQLiteStore, monkeypatch, lanes: list[str]) -> None:  # noqa: ANN001
    """Every mailbox of more than two messages counts as big here, and the
    store's reads off the event loop are recorded by lane."""
    from mailyard.store.sqlite import core

    monkeypatch.setattr(core, "LIST_INLINE", 2)
    bulk = s._bulk_read

    async def recorded(fn, lane: str = "bulk"):  # noqa: ANN001, ANN202
        lanes.append(lane)
        return await bulk(fn, lane)

    monkeypatch.setattr(s, "_bulk_read", recorded)


async def test_a_big_mailbox_is_listed_off_the_event_loop_and_shared(tmp_path: Path, monkeypatch) -> None:
    """A big mailbox's listing and SELECT summary are read on the listing
    lane of the bulk reads (a thread); the listing is then kept by the log
    and brought forward by what changed, as a small one's is."""
    s, inbox, _ = await _store(tmp_path)
    lanes: list[str] = []
    try:
        for _ in range(5):
            await s.append(inbox, MIME)
        _list_off_the_loop(s, monkeypatch, lanes)
        summary = await s.mailbox_summary(inbox)
        assert lanes == ["list"]
        assert list(summary.uids) == [1, 2, 3, 4, 5] and summary.first_unseen == 1
        first = await s.list_messages(inbox)
        assert lanes == ["list", "list"]
        assert first == _from_sqlite(s, inbox, -1).changed
        reads: list[str] = []
        s._read.set_trace_callback(lambda sql: reads.append(sql) if "FROM messages" in sql else None)
        await s.store_flags(inbox, [1], ["\\Seen"], "add")
        await s.expunge(inbox, [2])
        await s.append(inbox, MIME, flags=["$Work"])
        lists = [await s.list_messages(inbox) for _ in range(20)]
        s._read.set_trace_callback(None)
        assert lanes == ["list", "list"]  # not read again
        assert len(reads) == 1, reads  # the three writes' rows, once
        assert lists[0] == _from_sqlite(s, inbox, -1).changed
        assert [m.uid for m in lists[0]] == [1, 3, 4, 5, 6]
        assert lists[0][1] is first[2]  # the unchanged record is shared, not read again
    finally:
        await s.close()


async def test_a_listing_read_while_others_write_is_kept_exact(tmp_path: Path, monkeypatch) -> None:
    """Writes land between the start of a big listing and its read in the
    thread, and between that read and its return to the event loop; with a
    small log (trimmed often) the list read is sometimes too old to keep.
    Every listing, the first and those brought forward from it, is the
    mailbox as SQLite has it."""
    monkeypatch.setattr(changelog, "MAX_ENTRIES", 4)
    s, inbox, _ = await _store(tmp_path)
    rng = random.Random(9051)
    lanes: list[str] = []
    try:
        for _ in range(4):
            await s.append(inbox, MIME)
        _list_off_the_loop(s, monkeypatch, lanes)
        bulk = s._bulk_read

        states: list[list] = []  # the mailbox after each write of a listing's span

        async def write() -> None:
            uids = [r[0] for r in s._q("SELECT uid FROM messages WHERE mailbox_id = ?", (inbox.id,))]
            kind = rng.choice(["append", "store", "expunge"]) if len(uids) > 3 else "append"
            if kind == "append":
                await s.append(inbox, MIME)
            elif kind == "store":
                await s.store_flags(inbox, rng.sample(uids, 2), [rng.choice(["\\Seen", "$A"])], "add")
            else:
                await s.expunge(inbox, [rng.choice(uids)])
            states.append(_from_sqlite(s, inbox, -1).changed)

        racing = True

        async def raced(fn, lane: str = "bulk"):  # noqa: ANN001, ANN202
            for _ in range(rng.randint(0, 3) if racing else 0):
                await write()  # before the read
            out = await bulk(fn, lane)
            for _ in range(rng.randint(0, 6) if racing else 0):
                await write()  # after it, before the log is given the list
                if rng.random() < 0.5:
                    # another session's sync moves the log on
                    log = s._changelogs.get(inbox.id)
                    await s.changes_since(inbox, log.top if log is not None else 0)
            return out

        monkeypatch.setattr(s, "_bulk_read", raced)
        for step in range(80):
            if rng.random() < 0.3:
                s._changelogs.clear()  # the log went (memory budget): the next listing reads again
                s._changelog_cost = 0
            for _ in range(rng.randint(0, 2)):
                await write()
            racing = True
            states[:] = [_from_sqlite(s, inbox, -1).changed]
            listed = await s.list_messages(inbox)
            assert listed in states, step  # the mailbox as it was at some moment of the call
            racing = False
            assert await s.list_messages(inbox) == _from_sqlite(s, inbox, -1).changed, step
        assert "list" in lanes
    finally:
        await s.close()


async def test_a_question_from_before_the_log_of_a_big_mailbox_is_answered_off_the_loop(
        tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A session far behind (or QRESYNC, CHANGEDSINCE from long ago) asks
    from before the log: every message may have changed since, so a big
    mailbox's answer is read on the listing lane, and it is SQLite's."""
    monkeypatch.setattr(changelog, "MAX_ENTRIES", 4)
    s, inbox, _ = await _store(tmp_path)
    lanes: list[str] = []
    try:
        for _ in range(5):
            await s.append(inbox, MIME)
        await s.changes_since(inbox, 5)  # the log begins
        for uid in (1, 2, 3, 4, 5, 1):
            await s.store_flags(inbox, [uid], ["\\Seen"], "replace" if uid != 1 else "add")
            await s.changes_since(inbox, 0)
        await s.expunge(inbox, [2])
        _list_off_the_loop(s, monkeypatch, lanes)
        log = s._changelogs[inbox.id]
        assert log.base > 1
        for since in (0, 1, log.base - 1):
            assert await s.changes_since(inbox, since) == _from_sqlite(s, inbox, since), since
        assert lanes == ["list"] * 3
        assert await s.changes_since(inbox, log.base) == _from_sqlite(s, inbox, log.base)
        assert lanes == ["list"] * 3  # (from the log)
    finally:
        await s.close()


async def test_a_write_of_many_rows_is_read_off_the_loop_once_for_the_sessions(
        tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A STORE 1:* of a big mailbox changes more rows than the log reads on
    the event loop (CATCH_UP_INLINE): the log starts again after it, and the
    sessions asking from before it share one read on the listing lane, whose
    answer is SQLite's. The next small write is answered by the log again."""
    from mailyard.store.sqlite import messages

    monkeypatch.setattr(changelog, "CATCH_UP_INLINE", 5, raising=False)
    s, inbox, _ = await _store(tmp_path)
    lanes: list[str] = []
    on_loop: list[int] = []
    loop_thread = threading.get_ident()
    row = messages.message_row

    def traced(r: tuple) -> object:
        if threading.get_ident() == loop_thread:
            on_loop.append(r[1])
        return row(r)

    try:
        for _ in range(20):
            await s.append(inbox, MIME)
        known = (await s.mailbox_status(inbox)).highest_modseq
        await s.changes_since(inbox, known)  # the log begins
        _list_off_the_loop(s, monkeypatch, lanes)
        monkeypatch.setattr(messages, "message_row", traced)
        await s.store_flags(inbox, list(range(1, 21)), ["\\Seen"], "add")
        answers = await asyncio.gather(*(s.changes_since(inbox, known) for _ in range(10)))
        assert on_loop == []
        assert lanes == ["list"]  # one read for the ten sessions
        expected = _from_sqlite(s, inbox, known)
        assert len(expected.changed) == 20
        assert all(a == expected for a in answers)
        top = answers[0].highest_modseq
        await s.store_flags(inbox, [3], ["\\Flagged"], "add")
        assert await s.changes_since(inbox, top) == _from_sqlite(s, inbox, top)
        assert lanes == ["list"] and on_loop == [3]  # from the log
    finally:
        await s.close()


async def _after_a_big_store(tmp_path: Path, monkeypatch, lanes: list[str]) -> tuple[SQLiteStore, Mailbox, int]:  # noqa: ANN001
    """A store whose INBOX of 20 messages was just changed by a STORE of
    every message, more rows than the log reads on the loop
    (CATCH_UP_INLINE lowered to 5); the mod-sequence from before it."""
    monkeypatch.setattr(changelog, "CATCH_UP_INLINE", 5, raising=False)
    s, inbox, _ = await _store(tmp_path)
    for _ in range(20):
        await s.append(inbox, MIME)
    known = (await s.mailbox_status(inbox)).highest_modseq
    await s.changes_since(inbox, known)  # the log begins
    _list_off_the_loop(s, monkeypatch, lanes)
    await s.store_flags(inbox, list(range(1, 21)), ["\\Seen"], "add")
    return s, inbox, known


async def test_sessions_join_a_read_of_many_changes_that_holds_what_they_saw(
        tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """Deliveries (small commits) go on while the sessions of a mailbox ask
    for a big write's changes: a session joins the read under way when its
    snapshot holds the mailbox as the session saw it, or the next read while
    that has not started, instead of a read of every change per commit.
    Each answer holds every change up to what its session saw."""
    from mailyard.store.sqlite import messages

    lanes: list[str] = []
    s, inbox, known = await _after_a_big_store(tmp_path, monkeypatch, lanes)
    gate, reading = threading.Event(), threading.Event()
    row = messages.message_row

    def held(r: tuple) -> object:
        if threading.current_thread().name.startswith("mailyard-store-list"):
            reading.set()  # the first read's snapshot is taken: it waits here
            gate.wait(10)
        return row(r)

    monkeypatch.setattr(messages, "message_row", held)
    try:
        first = asyncio.ensure_future(s.changes_since(inbox, known))
        assert await asyncio.to_thread(reading.wait, 10)
        top = (await s.mailbox_status(inbox)).highest_modseq
        same = asyncio.ensure_future(s.changes_since(inbox, known))  # joins the first read
        await asyncio.sleep(0)  # (it asks now, before the next commit)
        await s.store_flags(inbox, [1], ["\\Flagged"], "add")
        after = asyncio.ensure_future(s.changes_since(inbox, known))  # a second read, queued
        await asyncio.sleep(0)  # (it asks now, before the next commit)
        await s.store_flags(inbox, [2], ["\\Flagged"], "add")
        later = asyncio.ensure_future(s.changes_since(inbox, known))  # joins the second, not started
        await asyncio.sleep(0)
        gate.set()
        answers = await asyncio.gather(first, same, after, later)
        assert lanes == ["list", "list"]  # two reads for four sessions and three tops
        assert answers[0] == answers[1] and answers[0].highest_modseq == top
        assert all("\\Flagged" not in m.flags for m in answers[0].changed)
        expected = _from_sqlite(s, inbox, known)
        assert answers[2] == answers[3] == expected
        assert [m.uid for m in expected.changed if "\\Flagged" in m.flags] == [1, 2]
        assert s._change_reads == {}
    finally:
        gate.set()
        await s.close()



async def _waiting_for_a_shared_read(s: SQLiteStore, sessions: int) -> None:
    """Until ``sessions`` askers wait for one shared read of changes."""
    while sum(r.waiters for reads in s._change_reads.values() for r in reads) < sessions:
        await asyncio.sleep(0)


async def test_a_read_of_many_changes_stops_when_every_asker_has_gone(
        tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """The sessions waiting for a shared read of many changes go (their
    clients left): while one still waits the read goes on and answers it;
    once the last has gone the read is stopped (a read not started is not
    made at all), so the listing lane does not spend it on nobody."""
    from mailyard.store.sqlite import messages
    from mailyard.store.sqlite.core import LIST_LANE

    lanes: list[str] = []
    s, inbox, known = await _after_a_big_store(tmp_path, monkeypatch, lanes)
    made: list[int] = []
    read = messages._read_changes

    def counted(*args: object) -> Changes:
        made.append(1)
        return read(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(messages, "_read_changes", counted)
    gate = threading.Event()
    try:
        # the listing lane busy with another read: the shared one waits
        busy = asyncio.ensure_future(s._bulk_read(lambda _conn: gate.wait(10), LIST_LANE))
        one, two = (asyncio.ensure_future(s.changes_since(inbox, known)) for _ in range(2))
        await _waiting_for_a_shared_read(s, 2)
        one.cancel()
        await asyncio.sleep(0)
        gate.set()
        assert await two == _from_sqlite(s, inbox, known)  # the other still answered
        assert one.cancelled() and made == [1]
        gate.clear()
        busy = asyncio.ensure_future(s._bulk_read(lambda _conn: gate.wait(10), LIST_LANE))
        askers = [asyncio.ensure_future(s.changes_since(inbox, known)) for _ in range(3)]
        await _waiting_for_a_shared_read(s, 3)
        for asker in askers:
            asker.cancel()
        await asyncio.gather(*askers, return_exceptions=True)
        assert s._change_reads == {}
        gate.set()
        await busy
        await s._bulk_read(lambda _conn: None, LIST_LANE)  # after the stopped read, in turn
        assert made == [1]  # not made for nobody
    finally:
        gate.set()
        await s.close()
