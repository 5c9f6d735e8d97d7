"""A big mailbox over the real SQLite store and a real server: SELECT and
the first FETCH read it off the event loop, so the other sessions of the
worker are served meanwhile, and IDLE -> DONE does not read it again: the
session's index data is kept through IDLE and kept current by the changes
it announces (RFC 2177, RFC 9051 7.4.1 / 7.5.1, RFC 7162 3.2.10), in one
process and across two worker processes.

The thresholds that make a mailbox big (store/sqlite/core.py LIST_INLINE,
protocols/imap/selected.py LARGE_VIEW) are lowered here for the in-process
server (tests/conftest.py: it runs in this process, so the patches reach
it), and the read of the messages is slowed, so a read that holds the
event loop holds it for a measurable time whatever the machine. The loop's
turns are counted (LoopTicks on the server's loop), never timed.
"""

from __future__ import annotations

import asyncio
import gc
import imaplib
import json
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from mailyard.config import StoreConfig
from mailyard.net import imap_store
from mailyard.net.imap import ImapConnection
from mailyard.protocols.imap import selected
from mailyard.protocols.imap.session import ImapSession
from mailyard.store import rows
from mailyard.store.api import AppendItem
from mailyard.store.sqlite import SQLiteStore, changelog, core, mailboxes, messages
from tests.conftest import USERS, RunningServer
from tests.integration.serve_process import ServeProcess
from tests.integration.test_workers import TIMEOUT, Line, imap_login, on_each_worker, two_workers
from tests.integration.test_workers_holds import command, ok
from tests.waiting import wait_until, while_served

ALICE = "alice@example.test"
MESSAGES = 30
SLOW = 1.0  # seconds the slowed read of the mailbox takes
T = TypeVar("T")


def _message(n: int) -> bytes:
    return f"From: bob@example.test\r\nSubject: m{n}\r\nMessage-ID: <m{n}@example.test>\r\n\r\nbody {n}\r\n".encode()


async def _seed(store: SQLiteStore) -> None:
    account = await store.get_account(ALICE)
    assert account is not None
    box = await store.get_mailbox(account.id, "INBOX")
    assert box is not None
    await store.append_many(box, [AppendItem(_message(n)) for n in range(MESSAGES)])


@pytest.fixture
def big(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mailbox of more than 5 messages is big: listed off the event loop
    by the store, its sequence-number map and index data made through
    ImapIO.compute, its index data kept through IDLE."""
    monkeypatch.setattr(core, "LIST_INLINE", 5)
    monkeypatch.setattr(selected, "LARGE_VIEW", 5, raising=False)


def _client(server: RunningServer) -> imaplib.IMAP4:
    c = imaplib.IMAP4(server.host, server.port("imap"), timeout=60)
    c.login(ALICE, USERS[ALICE])
    return c


def _raw(server: RunningServer) -> Line:
    c = Line(server.port("imap"))
    assert c.line().startswith(b"* OK")
    ok(command(c, "l", f"LOGIN {ALICE} {USERS[ALICE]}"))
    return c


def _while_served(server: RunningServer, started: threading.Event, run: Callable[[], T],
                  other: imaplib.IMAP4) -> tuple[T, int]:
    """``run()`` (a command on one connection) in a thread; once its slowed
    read has started, a NOOP on ``other``, which must be answered before
    ``run`` ends (tests/waiting.py ``while_served``)."""
    return while_served(server, started, run, lambda: other.noop()[0] == "OK", "the NOOP waited for the command")


def test_select_of_a_big_mailbox_leaves_the_other_sessions_served(
        make_server: Callable[..., RunningServer], big: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """SELECT reads every UID of the mailbox (RFC 9051 6.3.2: EXISTS, the
    first unseen): for a big one in a thread, while the event loop keeps
    turning and another session's NOOP is answered."""
    server = make_server(seed=_seed)
    selecting, other = _client(server), _client(server)
    started = threading.Event()

    def slow_loads(text: str) -> Any:
        started.set()
        time.sleep(SLOW)
        return json.loads(text)

    monkeypatch.setattr(mailboxes, "json", SimpleNamespace(loads=slow_loads))
    (typ, data), ticks = _while_served(server, started, lambda: selecting.select("INBOX"), other)
    assert typ == "OK" and data == [str(MESSAGES).encode()]
    # SLOW / 10 ms turns if the loop never waits; none while it is held
    print(f"\nserver loop turns while the command ran: {ticks}")
    assert ticks >= 10, ticks
    selecting.logout()
    other.logout()


def test_first_fetch_of_a_big_mailbox_leaves_the_other_sessions_served(
        make_server: Callable[..., RunningServer], big: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first FETCH after SELECT loads the session's index data (every
    message's flags, size, dates): for a big mailbox in a thread, while the
    event loop keeps turning and another session's NOOP is answered."""
    server = make_server(seed=_seed)
    fetching, other = _client(server), _client(server)
    assert fetching.select("INBOX")[0] == "OK"
    started = threading.Event()
    message_row = rows.message_row

    def slow_row(row: tuple) -> Any:
        started.set()
        time.sleep(SLOW / MESSAGES)
        return message_row(row)

    monkeypatch.setattr(messages, "message_row", slow_row)
    (typ, data), ticks = _while_served(server, started, lambda: fetching.fetch("1:*", "(FLAGS)"), other)
    assert typ == "OK" and len(data) == MESSAGES
    print(f"\nserver loop turns while the command ran: {ticks}")
    assert ticks >= 10, ticks
    fetching.logout()
    other.logout()


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The store's listings of every message of a mailbox (list_messages)."""
    calls: list[int] = []
    listed = SQLiteStore.list_messages

    async def counted(self: SQLiteStore, mailbox: Any) -> Any:
        calls.append(mailbox.id)
        return await listed(self, mailbox)

    monkeypatch.setattr(SQLiteStore, "list_messages", counted)
    yield calls


def _idle(c: Line, tag: str) -> None:
    c.send(f"{tag} IDLE\r\n".encode())
    assert c.line().startswith(b"+ ")


def _done(c: Line, tag: str) -> list[bytes]:
    c.send(b"DONE\r\n")
    lines = []
    while not (line := c.line()).startswith(tag.encode() + b" "):
        lines.append(line)
    assert line.startswith(tag.encode() + b" OK"), line
    return lines


def _fetched(lines: list[bytes]) -> dict[int, tuple[int, frozenset[bytes]]]:
    """UID -> (sequence number, flags) of the FETCH responses among ``lines``."""
    out = {}
    for line in lines:
        m = re.match(rb"\* (\d+) FETCH \(UID (\d+) FLAGS \(([^)]*)\)", line)
        if m:
            out[int(m.group(2))] = (int(m.group(1)), frozenset(m.group(3).split()))
    return out


def test_idle_done_does_not_read_a_big_mailbox_again_and_reports_every_change(
        make_server: Callable[..., RunningServer], big: None, listings: list[int]) -> None:
    """A client that IDLEs, and after each DONE fetches what is new: another
    session's flag change, expunge and new mail during IDLE are announced
    at once, the FETCH after DONE shows them, and no IDLE -> DONE reads
    the mailbox's messages again."""
    server = make_server(seed=_seed)
    b = _client(server)
    b.select("INBOX")
    b.fetch("1:*", "(FLAGS)")  # b's own index data, kept (no IDLE)
    a = _raw(server)
    assert f"* {MESSAGES} EXISTS".encode() in ok(command(a, "s", "SELECT INBOX"))
    assert len(_fetched(ok(command(a, "f", "UID FETCH 1:* (FLAGS)")))) == MESSAGES
    listings.clear()

    # a flag changed by the other session
    _idle(a, "i1")
    assert b.uid("STORE", "3", "+FLAGS", "(\\Flagged)")[0] == "OK"
    assert re.match(rb"\* 3 FETCH \(UID 3 FLAGS \(.*\\Flagged", a.line())
    _done(a, "i1")
    assert b"\\Flagged" in _fetched(ok(command(a, "f1", "UID FETCH 3 (FLAGS)")))[3][1]

    # an expunge by the other session
    _idle(a, "i2")
    assert b.uid("STORE", "4", "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
    assert b.expunge()[0] == "OK"
    assert a.until(lambda x: not x.endswith(b"(\\Deleted))")) == b"* 4 EXPUNGE"
    _done(a, "i2")
    now = _fetched(ok(command(a, "f2", "UID FETCH 1:* (FLAGS)")))
    assert sorted(now) == [u for u in range(1, MESSAGES + 1) if u != 4]
    assert [now[u][0] for u in sorted(now)] == list(range(1, MESSAGES))

    # new mail
    _idle(a, "i3")
    assert b.append("INBOX", "", None, _message(99))[0] == "OK"
    assert a.line() == f"* {MESSAGES} EXISTS".encode()
    assert a.line().endswith(b" RECENT")  # (RFC 3501: a is not told of the message first)
    _done(a, "i3")
    new = _fetched(ok(command(a, "f3", f"UID FETCH {MESSAGES + 1}:* (FLAGS)")))
    assert list(new) == [MESSAGES + 1] and new[MESSAGES + 1][0] == MESSAGES

    # nothing changed
    for n in range(3):
        _idle(a, f"q{n}")
        assert _done(a, f"q{n}") == []
        assert list(_fetched(ok(command(a, f"g{n}", f"UID FETCH {MESSAGES + 1}:* (FLAGS)")))) == [MESSAGES + 1]
    assert listings == []
    b.logout()
    a.close()


def test_qresync_updates_during_idle_with_the_index_data_kept(
        make_server: Callable[..., RunningServer], big: None, listings: list[int]) -> None:
    """With QRESYNC (RFC 7162): MODSEQ on the FETCH of a flag change and
    VANISHED for an expunge during IDLE (3.2.10), and after DONE a UID
    FETCH CHANGEDSINCE ... VANISHED (3.2.6) answers from the kept index
    data as SQLite has it."""
    server = make_server(seed=_seed)
    b = _client(server)
    b.select("INBOX")
    b.fetch("1:*", "(FLAGS)")
    a = _raw(server)
    ok(command(a, "e", "ENABLE QRESYNC"))
    ok(command(a, "s", "SELECT INBOX"))
    lines = ok(command(a, "f", "UID FETCH 1:* (FLAGS MODSEQ)"))
    since = max(int(m.group(1)) for line in lines if (m := re.search(rb"MODSEQ \((\d+)\)", line)))
    listings.clear()
    _idle(a, "i")
    assert b.uid("STORE", "5", "+FLAGS", "($Later)")[0] == "OK"
    line = a.until(lambda x: b" FETCH " in x)
    m = re.match(rb"\* 5 FETCH \(UID 5 FLAGS \(([^)]*)\) MODSEQ \((\d+)\)\)", line)
    assert m and b"$Later" in m.group(1).split(), line
    flagged_at = int(m.group(2))
    assert b.uid("STORE", "6", "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
    assert b.expunge()[0] == "OK"
    assert a.until(lambda x: b"FETCH (UID 6 " not in x) == b"* VANISHED 6"
    _done(a, "i")
    lines = ok(command(a, "c", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since} VANISHED)"))
    assert lines[0] == b"* VANISHED (EARLIER) 6", lines
    changed = [x for x in lines if x.startswith(b"* ") and b" FETCH " in x]
    assert len(changed) == 1 and changed[0].startswith(b"* 5 FETCH (UID 5 "), lines
    assert f"MODSEQ ({flagged_at})".encode() in changed[0]
    assert listings == []
    b.logout()
    a.close()


class _Cache(dict):
    """An index-data cache a test can hold a weak reference to."""


def test_a_connection_gone_in_idle_frees_its_index_data_at_once(
        make_server: Callable[..., RunningServer], big: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client drops its connection while IDLE in a big mailbox, whose
    index data the session keeps through IDLE: that memory is freed as the
    connection closes, not when the cycle collector finds the session and
    its connection object (switched off here, as a big read in a thread
    does for its time)."""
    server = make_server(seed=_seed)
    refs: list[weakref.ref] = []
    index = selected._index

    def traced(*args: Any) -> tuple:
        cache, *rest = index(*args)
        cache = _Cache(cache)
        refs.append(weakref.ref(cache))
        return (cache, *rest)

    monkeypatch.setattr(selected, "_index", traced)
    closed = threading.Event()
    close = ImapSession.close

    def closing(self: ImapSession) -> None:
        close(self)
        closed.set()

    monkeypatch.setattr(ImapSession, "close", closing)
    a = _raw(server)
    ok(command(a, "s", "SELECT INBOX"))
    assert len(_fetched(ok(command(a, "f", "UID FETCH 1:* (FLAGS)")))) == MESSAGES
    _idle(a, "i")
    assert len(refs) == 1 and refs[0]() is not None  # kept through IDLE
    collecting = gc.isenabled()
    gc.disable()
    try:
        a.close()
        assert closed.wait(TIMEOUT), "the server never saw the connection close"
        assert refs[0]() is None
    finally:
        if collecting:
            gc.enable()


def _inbox(server: RunningServer) -> Any:
    """alice's INBOX, as the server's store hands it out."""
    async def get() -> Any:
        account = await server.store.get_account(ALICE)
        assert account is not None
        return await server.store.get_mailbox(account.id, "INBOX")

    return server.call(get())


def test_a_store_on_every_message_is_announced_in_slices_and_nothing_is_lost(
        make_server: Callable[..., RunningServer], big: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another client's STORE 1:* +FLAGS.SILENT (\\Seen) on a big mailbox:
    the IDLE session announces the 30 changes (RFC 2177 3, RFC 9051 7.5.2,
    MODSEQ with CONDSTORE, RFC 7162 3.2.4) in slices of ANNOUNCE_TURN
    (lowered to 7), written with a turn of the other connections between
    them. A flag change committed during the first turn is announced once,
    after them, and no change is announced twice."""
    monkeypatch.setattr(selected, "ANNOUNCE_TURN", 7, raising=False)
    server = make_server(seed=_seed)
    box = _inbox(server)
    turns: list[ImapConnection] = []
    pause = ImapConnection.pause

    async def turn(self: ImapConnection) -> None:
        turns.append(self)
        if len(turns) == 1:  # another session's change, committed meanwhile
            await server.store.store_flags(box, [2], ["\\Flagged"], "add")
        await pause(self)

    monkeypatch.setattr(ImapConnection, "pause", turn)
    a = _raw(server)
    ok(command(a, "e", "ENABLE CONDSTORE"))
    ok(command(a, "s", "SELECT INBOX"))
    b = _client(server)
    b.select("INBOX")
    _idle(a, "i")
    assert b.store("1:*", "+FLAGS.SILENT", "(\\Seen)")[0] == "OK"
    lines = [a.line() for _ in range(MESSAGES)]
    assert len(turns) == (MESSAGES - 1) // 7 and len(set(turns)) == 1  # a's, between its slices
    lines.append(a.line())  # the change made during the first turn
    assert _done(a, "i") == []  # nothing more: no change said twice
    fetched = [re.match(rb"\* (\d+) FETCH \(UID (\d+) FLAGS \(([^)]*)\) MODSEQ \((\d+)\)\)$", x) for x in lines]
    assert all(fetched), lines
    said = [(int(m[1]), int(m[2]), frozenset(m[3].split()), int(m[4])) for m in fetched if m]
    assert [(q, u) for q, u, _, _ in said[:MESSAGES]] == [(n, n) for n in range(1, MESSAGES + 1)]
    assert all(b"\\Seen" in f and b"\\Flagged" not in f for _, _, f, _ in said[:MESSAGES])
    seq, uid, flags, modseq = said[MESSAGES]
    assert (seq, uid) == (2, 2) and {b"\\Seen", b"\\Flagged"} <= flags
    assert modseq > said[1][3]
    b.logout()
    a.close()


def test_a_connection_gone_during_a_turn_stops_the_announcement(
        make_server: Callable[..., RunningServer], big: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The client of an IDLE session leaves while its sync announces a
    STORE 1:* in slices (ANNOUNCE_TURN lowered to 7): the sync stops at
    that turn, formatting no more slices for nobody, and the session lets
    go of its selected mailbox, its kept index data and its hold of
    expunged messages as the IDLE step ends."""
    monkeypatch.setattr(selected, "ANNOUNCE_TURN", 7, raising=False)
    server = make_server(seed=_seed)
    turns: list[ImapConnection] = []
    pause = ImapConnection.pause

    async def turn(self: ImapConnection) -> None:
        turns.append(self)
        if len(turns) == 1:
            self.abort()  # the connection goes during the first turn
        await pause(self)

    monkeypatch.setattr(ImapConnection, "pause", turn)
    holds: dict[int, Any] = {}
    hold = imap_store.StoreBackend.hold_expunged

    def holding(self: imap_store.StoreBackend, mailbox: Any, seen_modseq: int = 0) -> None:
        holds[id(self)] = mailbox
        hold(self, mailbox, seen_modseq)

    monkeypatch.setattr(imap_store.StoreBackend, "hold_expunged", holding)
    idle_over = _idle_ends(monkeypatch)
    a = _raw(server)
    ok(command(a, "s", "SELECT INBOX"))
    assert len(_fetched(ok(command(a, "f", "UID FETCH 1:* (FLAGS)")))) == MESSAGES
    _idle(a, "i")
    b = _client(server)
    b.select("INBOX")
    assert b.store("1:*", "+FLAGS.SILENT", "(\\Seen)")[0] == "OK"
    assert idle_over.wait(TIMEOUT), "the IDLE step never ended"
    assert len(turns) == 1  # none after the connection went
    session = turns[0].imap
    assert session.sel is None
    assert session.config.kept is not None and session.config.kept.records == 0
    assert holds[id(session.backend)] is None
    b.logout()
    assert "crashed" not in caplog.text and "failed" not in caplog.text


def test_an_expunge_of_most_messages_is_announced_in_slices_with_the_right_numbers(
        make_server: Callable[..., RunningServer], big: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another client expunges 26 of a big mailbox's 30 messages: each IDLE
    session announces them in slices of ANNOUNCE_TURN (lowered to 7) with
    a turn of the other connections between them: EXPUNGE lines in UID
    order, each numbered as the message is when the line is sent (RFC 9051
    7.5.1, RFC 3501 7.4.1: every EXPUNGE moves the later numbers down), or
    VANISHED with QRESYNC (RFC 7162 3.2.10). A flag change and a delivery
    committed during the first turn are announced after the expunges, with
    the numbers of the mailbox left, once."""
    monkeypatch.setattr(selected, "ANNOUNCE_TURN", 7, raising=False)
    server = make_server(seed=_seed)
    box = _inbox(server)
    kept_uids = [1, 5, 17, 30]
    gone = [u for u in range(1, MESSAGES + 1) if u not in kept_uids]
    turns: list[ImapConnection] = []
    counting = threading.Event()
    pause = ImapConnection.pause

    async def turn(self: ImapConnection) -> None:
        if counting.is_set():
            turns.append(self)
            if len(turns) == 1:  # other changes, committed meanwhile
                await server.store.store_flags(box, [17], ["\\Flagged"], "add")
                await server.store.append(box, _message(MESSAGES))
        await pause(self)

    monkeypatch.setattr(ImapConnection, "pause", turn)
    a = _raw(server)
    ok(command(a, "s", "SELECT INBOX"))
    q = _raw(server)
    ok(command(q, "e", "ENABLE QRESYNC"))
    ok(command(q, "s", "SELECT INBOX"))
    b = _client(server)
    b.select("INBOX")
    assert b.uid("STORE", ",".join(map(str, gone)), "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
    ok(command(a, "n", "NOOP"))  # the \Deleted flags announced
    ok(command(q, "n", "NOOP"))
    _idle(a, "i")
    _idle(q, "i")
    counting.set()
    status, numbers = b.expunge()
    assert status == "OK" and numbers == [b"2"] * 3 + [b"3"] * 11 + [b"4"] * 12
    assert len(turns) >= 3  # b's own EXPUNGE: its four slices have three turns
    # a: EXPUNGE lines, then the delivery and the flag change
    lines = _after_the_changes(a)
    expunged = [int(m[1]) for x in lines if (m := re.match(rb"\* (\d+) EXPUNGE$", x))]
    assert len(expunged) == len(gone) and lines[len(gone) - 1].endswith(b" EXPUNGE"), lines
    view = list(range(1, MESSAGES + 1))
    said = [view.pop(seq - 1) for seq in expunged]  # the client's view, line by line
    assert said == gone
    assert view == kept_uids
    assert all(x.endswith(b" RECENT") for x in lines[len(gone):]
               if x != b"* 5 EXISTS" and b"FETCH" not in x), lines
    # q: VANISHED (UIDs, no numbers), then the same changes
    lines = _after_the_changes(q)
    vanished = [x for x in lines if x.startswith(b"* VANISHED ")]
    assert len(vanished) == 4 and lines[3] == vanished[-1], lines  # 26 UIDs in slices of 7
    told = [u for x in vanished for u in _uid_set(x.split()[-1])]
    assert told == gone
    # three turns for each session, between its four slices (b's own
    # EXPUNGE too); nothing more after
    assert len(set(turns)) == 3 and len(turns) == 9
    assert _done(a, "i") == []
    assert _done(q, "i") == []
    assert ok(command(a, "c", "UID SEARCH ALL"))[0] == b"* SEARCH 1 5 17 30 31"
    b.logout()
    a.close()
    q.close()


def _after_the_changes(c: Line) -> list[bytes]:
    """What ``c`` reads until it was told of the delivery and of the flag
    change made during the first turn (each once, in either order: one
    sync may read both or each its own); they count the messages left
    (1, 5, 17, 30, then the new one)."""
    lines: list[bytes] = []
    seen = {b"* 5 EXISTS": 0, b"FETCH": 0}
    while not all(seen.values()):
        line = c.line()
        lines.append(line)
        if line == b"* 5 EXISTS":
            seen[line] += 1
            lines.append(c.line())
            assert lines[-1].endswith(b" RECENT"), lines  # RFC 3501 7.3.2
        elif b"FETCH" in line:
            assert re.match(rb"\* 3 FETCH \(UID 17 FLAGS \([^)]*\\Flagged", line), lines
            seen[b"FETCH"] += 1
    return lines


def _idle_ends(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set when a session's IDLE command has ended (its step over)."""
    idle_over = threading.Event()
    execute = ImapSession.execute

    async def executing(self: ImapSession, cmd: Any) -> None:
        try:
            await execute(self, cmd)
        finally:
            if cmd.name == "IDLE":
                idle_over.set()

    monkeypatch.setattr(ImapSession, "execute", executing)
    return idle_over


def _uid_set(text: bytes) -> list[int]:
    """The UIDs of a sequence-set like 2:4,6 (ascending)."""
    out: list[int] = []
    for part in text.decode().split(","):
        lo, _, hi = part.partition(":")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def test_a_store_on_every_message_is_read_off_the_event_loop(
        make_server: Callable[..., RunningServer], big: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The change log reads at most changelog.CATCH_UP_INLINE changed rows
    on the event loop (lowered to 5): the STORE 1:* of a big mailbox is
    read for the IDLE session on the listing lane, every change announced."""
    monkeypatch.setattr(changelog, "CATCH_UP_INLINE", 5, raising=False)
    server = make_server(seed=_seed)
    a = _raw(server)
    ok(command(a, "s", "SELECT INBOX"))
    b = _client(server)
    b.select("INBOX")
    on_loop: list[int] = []
    message_row = rows.message_row

    def traced(row: tuple) -> Any:
        if threading.current_thread().name == "mailyard-test-server":
            on_loop.append(row[1])
        return message_row(row)

    monkeypatch.setattr(messages, "message_row", traced)
    _idle(a, "i")
    assert b.store("1:*", "+FLAGS.SILENT", "(\\Seen)")[0] == "OK"
    lines = [a.line() for _ in range(MESSAGES)]
    assert _done(a, "i") == []
    said = _fetched(lines)
    assert sorted(said) == list(range(1, MESSAGES + 1)), lines
    assert all(b"\\Seen" in flags for _, flags in said.values())
    assert on_loop == []
    b.logout()
    a.close()


def test_a_closed_session_frees_its_selected_mailbox_at_once(
        make_server: Callable[..., RunningServer], big: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client leaves while IDLE in a big mailbox: the session's selected
    mailbox (its sequence-number map, its view) is freed by reference
    counting as the connection closes, with the cycle collector switched
    off, not left for the collector to find."""
    server = make_server(seed=_seed)
    refs: list[weakref.ref] = []
    closed = threading.Event()
    close = ImapSession.close

    def closing(self: ImapSession) -> None:
        if self.sel is not None:
            refs.append(weakref.ref(self.sel))
        close(self)
        closed.set()

    monkeypatch.setattr(ImapSession, "close", closing)
    idle_over = _idle_ends(monkeypatch)
    a = _raw(server)
    ok(command(a, "s", "SELECT INBOX"))
    assert len(_fetched(ok(command(a, "f", "UID FETCH 1:* (FLAGS)")))) == MESSAGES
    _idle(a, "i")
    collecting = gc.isenabled()
    gc.disable()
    try:
        a.close()
        assert closed.wait(TIMEOUT), "the server never saw the connection close"
        assert idle_over.wait(TIMEOUT), "the IDLE step never ended"
        assert len(refs) == 1
        assert refs[0]() is None
    finally:
        if collecting:
            gc.enable()


# --- two worker processes: the real thresholds, a mailbox above them --------------
BIG = 10_050  # above selected.LARGE_VIEW (checked by the test)


def _fill(data: Path) -> None:
    async def go() -> None:
        store = SQLiteStore(data, StoreConfig(fsync=False), background=False)
        try:
            account = await store.get_account(ALICE)
            assert account is not None
            box = await store.get_mailbox(account.id, "INBOX")
            assert box is not None
            for start in range(0, BIG, 5_000):
                await store.append_many(box, [AppendItem(_message(n), frozenset({"\\Seen"}))
                                              for n in range(start, min(BIG, start + 5_000))])
        finally:
            await store.close()

    asyncio.run(go())


@pytest.fixture
def two_workers_big(tmp_path: Path) -> Iterator[ServeProcess]:
    proc = ServeProcess(tmp_path / "data", two_workers(), _fill)
    wait_until(lambda: len(proc.worker_pids()) == 2, TIMEOUT, "both workers to start")
    yield proc
    proc.stop()


def test_changes_on_another_worker_reach_an_idle_session_of_a_big_mailbox(two_workers_big: ServeProcess) -> None:
    """A session on one worker has a mailbox above LARGE_VIEW selected and
    its index data loaded, and IDLEs; a session on the other worker changes
    a flag, expunges and appends. Each change is announced during IDLE,
    and after DONE the FETCHes show the mailbox as the other worker left
    it, from the index data kept through IDLE."""
    assert BIG > selected.LARGE_VIEW
    server = two_workers_big
    sessions = on_each_worker(server, lambda: imap_login(server), lambda c: c.sock, Line.close)
    (_, a), (_, b) = sorted(sessions.items())
    assert f"* {BIG} EXISTS".encode() in ok(command(a, "s", "SELECT INBOX"))
    assert len(_fetched(ok(command(a, "f", "UID FETCH 1:* (FLAGS)")))) == BIG
    ok(command(b, "s", "SELECT INBOX"))
    _idle(a, "i")
    ok(command(b, "t", "UID STORE 5 +FLAGS.SILENT (\\Flagged)"))
    line = a.line()
    assert re.match(rb"\* 5 FETCH \(UID 5 FLAGS \(.*\\Flagged", line), line
    ok(command(b, "d", "UID STORE 7 +FLAGS.SILENT (\\Deleted)"))
    ok(command(b, "x", "UID EXPUNGE 7"))
    assert a.until(lambda x: b"FETCH (UID 7 " not in x) == b"* 7 EXPUNGE"
    body = _message(BIG)
    b.send(f"p APPEND INBOX {{{len(body)}}}\r\n".encode())
    assert b.line().startswith(b"+")
    b.send(body + b"\r\n")
    assert b.until(lambda x: x.startswith(b"p ")).startswith(b"p OK")
    assert a.line() == f"* {BIG} EXISTS".encode()
    _done(a, "i")
    near = _fetched(ok(command(a, "g", "UID FETCH 5:8 (FLAGS)")))
    assert sorted(near) == [5, 6, 8]
    assert b"\\Flagged" in near[5][1] and b"\\Flagged" not in near[6][1]
    assert (near[5][0], near[6][0], near[8][0]) == (5, 6, 7)
    new = _fetched(ok(command(a, "n", f"UID FETCH {BIG + 1}:* (FLAGS)")))
    assert list(new) == [BIG + 1] and new[BIG + 1][0] == BIG
    # a change after DONE, announced at the next IDLE, then fetched
    ok(command(b, "u", "UID STORE 6 +FLAGS.SILENT (\\Answered)"))
    _idle(a, "j")
    line = a.until(lambda x: b" FETCH " in x)
    assert line.startswith(b"* 6 FETCH (UID 6 ") and b"\\Answered" in line, line
    _done(a, "j")
    assert b"\\Answered" in _fetched(ok(command(a, "h", "UID FETCH 6 (FLAGS)")))[6][1]
    for c in (a, b):
        c.close()
    assert server.alive()


def test_a_live_search_is_told_of_a_big_expunge_slice_by_slice(
        make_server: Callable[..., RunningServer], big: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session holding a live search (RFC 5267 CONTEXT=SEARCH) while
    another client expunges most of a big mailbox: each slice of EXPUNGE
    lines comes after the REMOVEFROM of its own messages (RFC 5267 4.3.4:
    before their expunge), so no step of the server handles the whole
    expunge for the context at once; the client's view and its search
    result end up as the server's."""
    monkeypatch.setattr(selected, "ANNOUNCE_TURN", 7, raising=False)
    server = make_server(seed=_seed)
    kept_uids = [1, 5, 17, 30]
    gone = [u for u in range(1, MESSAGES + 1) if u not in kept_uids]
    c = _raw(server)
    ok(command(c, "s", "SELECT INBOX"))
    ok(command(c, "u", "UID SEARCH RETURN (UPDATE) ALL"))
    b = _client(server)
    b.select("INBOX")
    assert b.uid("STORE", ",".join(map(str, gone)), "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
    ok(command(c, "n", "NOOP"))  # the \Deleted flags announced
    assert b.expunge()[0] == "OK"
    lines = ok(command(c, "m", "NOOP"))
    view = list(range(1, MESSAGES + 1))
    result = set(view)
    removals = 0
    for line in lines:
        if m := re.match(rb'\* ESEARCH \(TAG "u"\) UID REMOVEFROM \(0 ([0-9:,]+)\)$', line):
            removals += 1
            result -= set(_uid_set(m[1]))
        elif m := re.match(rb"\* (\d+) EXPUNGE$", line):
            uid = view.pop(int(m[1]) - 1)
            assert uid not in result, f"EXPUNGE of {uid} before its REMOVEFROM: {lines}"
    assert removals == 4, lines  # 26 messages in slices of 7
    assert view == kept_uids and result == set(kept_uids)
    b.logout()
    c.close()
