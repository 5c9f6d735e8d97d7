"""OBJECTID (RFC 8474), PREVIEW (RFC 8970) and CATENATE (RFC 4469) on a real server over the
SQLite store: MAILBOXID across RENAME and never reused, EMAILID shared by
copies and searchable, THREADID by References / In-Reply-To within an account, PREVIEW from the derived data, and
computed on demand (then kept) for a body derived before previews were."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from mailyard.store.api import AppendItem
from mailyard.store.sqlite import SQLiteStore
from mailyard.store.sqlite import search as search_store
from tests.conftest import USERS, RunningServer
from tests.integration.test_imap_big_mailbox import SLOW, _client, _while_served
from tests.integration.test_imap_compress import DeflateClient

ALICE = "alice@example.test"
BOB = "bob@example.test"
MESSAGE = (
    b"From: Terry Gray <gray@cac.washington.edu>\r\nSubject: meeting\r\n"
    b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n\r\n"
    b"Hello Joe,\r\n\r\n   do you think we can meet at 3:30 tomorrow?\r\n"
)


def login(server: RunningServer, user: str = ALICE) -> DeflateClient:
    c = DeflateClient(socket.create_connection((server.host, server.port("imap")), timeout=30))
    assert c.command(b"L", f'LOGIN {user} "{USERS[user]}"'.encode())[-1].startswith(b"L OK")
    return c


def append(c: DeflateClient, mailbox: bytes, data: bytes) -> bytes:
    c.send(b"P APPEND " + mailbox + b" {%d+}\r\n" % len(data) + data + b"\r\n")
    return c.until_tagged(b"P")[-1]


def code_of(line: bytes, name: bytes) -> bytes:
    start = line.index(b"[" + name + b" (") + len(name) + 3
    return line[start : line.index(b")", start)]


def test_mailboxid_select_status_create_rename(mailserver: RunningServer) -> None:
    c = login(mailserver)
    created = c.command(b"a1", b"CREATE Projects")[-1]
    assert created.startswith(b"a1 OK [MAILBOXID (F") and created.endswith(b")] CREATE completed")
    projects = code_of(created, b"MAILBOXID")
    lines = c.command(b"a2", b"SELECT Projects")
    assert b"* OK [MAILBOXID (" + projects + b")] Ok" in lines
    assert c.command(b"a3", b"RENAME Projects Archive/2024")[-1] == b"a3 OK RENAME completed"
    assert c.command(b"a4", b"STATUS Archive/2024 (MAILBOXID)") == [
        b'* STATUS "Archive/2024" (MAILBOXID (' + projects + b"))", b"a4 OK STATUS completed"]
    # deleted and created again under the same name: a new id (ids are never reused)
    assert c.command(b"a5", b"DELETE Archive/2024")[-1] == b"a5 OK DELETE completed"
    again = code_of(c.command(b"a6", b"CREATE Archive/2024")[-1], b"MAILBOXID")
    assert again != projects
    inbox = c.command(b"a7", b"STATUS INBOX (MAILBOXID)")[0]
    assert inbox.startswith(b'* STATUS "INBOX" (MAILBOXID (F')


REPLY = (b"From: Joe <joe@example.test>\r\nSubject: Re: meeting\r\nMessage-Id: <reply-1@example.test>\r\n"
         b"In-Reply-To: <B27397-0100000@cac.washington.edu>\r\n\r\nYes.\r\n")
OTHER = b"From: Ann <ann@example.test>\r\nSubject: lunch\r\nMessage-Id: <lunch@example.test>\r\n\r\nNoon?\r\n"


def fetched_ids(c: DeflateClient, tag: bytes, name: bytes, what: bytes = b"1:*") -> list[bytes]:
    lines = c.command(tag, b"FETCH " + what + b" (" + name + b")")
    assert lines[-1] == tag + b" OK FETCH completed"
    return [code_of(x.replace(name + b" (", b"[" + name + b" ("), name) for x in lines[:-1]]


def test_emailid_threadid_search(mailserver: RunningServer) -> None:
    c = login(mailserver)
    assert append(c, b"INBOX", MESSAGE).startswith(b"P OK [APPENDUID")
    assert append(c, b"INBOX", REPLY).startswith(b"P OK")
    assert append(c, b"INBOX", OTHER).startswith(b"P OK")
    c.command(b"a1", b"SELECT INBOX")
    assert c.command(b"a2", b"COPY 1 INBOX")[-1].startswith(b"a2 OK [COPYUID")
    ids = fetched_ids(c, b"a3", b"EMAILID")
    assert ids[0] == ids[3] and len(set(ids)) == 3  # RFC 8474 5.1: the copy keeps its EMAILID
    # opaque: a letter, then 24 base32 characters; nothing that counts messages
    assert all(len(i) == 25 and i[:1] == b"M" and i[1:].isalnum() and i[1:].isupper() for i in ids)
    threads = fetched_ids(c, b"a4", b"THREADID")
    # RFC 8474 5.2: the reply (In-Reply-To) is in the first message's thread
    assert threads[0] == threads[1] == threads[3] != threads[2]
    assert all(len(t) == 25 and t[:1] == b"T" for t in threads)
    assert c.command(b"a5", b"SEARCH EMAILID " + ids[0]) == [b"* SEARCH 1 4", b"a5 OK SEARCH completed"]
    assert c.command(b"a6", b"UID SEARCH EMAILID " + ids[1]) == [b"* SEARCH 2", b"a6 OK UID SEARCH completed"]
    assert c.command(b"a7", b"SEARCH THREADID " + threads[0]) == [b"* SEARCH 1 2 4", b"a7 OK SEARCH completed"]
    assert c.command(b"a8", b"SEARCH THREADID " + ids[0]) == [b"* SEARCH", b"a8 OK SEARCH completed"]
    # another account never finds alice's messages by their ids, and its
    # copy of the reply is not put into alice's thread
    b = login(mailserver, BOB)
    assert append(b, b"INBOX", REPLY).startswith(b"P OK")
    b.command(b"b1", b"SELECT INBOX")
    assert b.command(b"b2", b"SEARCH EMAILID " + ids[0]) == [b"* SEARCH", b"b2 OK SEARCH completed"]
    assert b.command(b"b3", b"SEARCH THREADID " + threads[0]) == [b"* SEARCH", b"b3 OK SEARCH completed"]
    assert fetched_ids(b, b"b4", b"THREADID") != [threads[0]]


def test_preview_stored_and_on_demand(mailserver: RunningServer) -> None:
    c = login(mailserver)
    append(c, b"INBOX", MESSAGE)
    c.command(b"a1", b"SELECT INBOX")
    want = [b'* 1 FETCH (PREVIEW "Hello Joe, do you think we can meet at 3:30 tomorrow?")', b"a2 OK FETCH completed"]
    assert c.command(b"a2", b"FETCH 1 (PREVIEW)") == want
    store = mailserver.store

    async def forget() -> int:
        # as a body derived before previews were kept; the record FETCH
        # derived is saved between write batches: save it first
        await store._flush_upkeep()

        def op(con, ctx):  # noqa: ANN001, ANN202
            return con.execute("UPDATE body_derived SET meta = json_remove(meta, '$.preview')").rowcount
        return await store._write(op)

    assert mailserver.call(forget()) >= 1
    want[1] = b"a3 OK FETCH completed"
    assert c.command(b"a3", b"FETCH 1 (PREVIEW (LAZY))") == [want[0].replace(b"a2", b"a3"), want[1]]
    mailserver.call(store._flush_upkeep())
    kept = store._q("SELECT json_extract(meta, '$.preview') FROM body_derived")
    assert ("Hello Joe, do you think we can meet at 3:30 tomorrow?",) in kept


def test_catenate_over_the_store_and_only_own_mailboxes(mailserver: RunningServer) -> None:
    """APPEND CATENATE (RFC 4469) on the SQLite store, with a synchronising
    TEXT literal; bob's URLs never reach alice's mail."""
    c = login(mailserver)
    append(c, b"INBOX", MESSAGE)
    uidv = c.command(b"s0", b"STATUS INBOX (UIDVALIDITY)")[0].split(b"UIDVALIDITY ")[1].rstrip(b")")
    c.send(b'a1 APPEND Drafts CATENATE (URL "/INBOX;UIDVALIDITY=' + uidv + b'/;UID=1/;SECTION=HEADER" TEXT {7}\r\n')
    assert c.line() == b"+ Ready for literal data"
    c.send(b"Hi Joe\n URL /inbox/;UID=1/;SECTION=TEXT/;PARTIAL=0.5)\r\n")
    done = c.until_tagged(b"a1")[-1]
    assert done.startswith(b"a1 OK [APPENDUID ") and done.endswith(b" 1] APPEND completed")
    header = MESSAGE[: MESSAGE.index(b"\r\n\r\n") + 4]
    assert mailserver.messages(ALICE, "Drafts") == [header + b"Hi Joe\n" + b"Hello"]

    b = login(mailserver, BOB)
    for i, url in enumerate([b"/INBOX/;UID=1", b"/user/alice@example.test/INBOX/;UID=1",
                             b"imap://alice%40example.test@mx.example.test/INBOX/;UID=1"]):
        tag = b"b%d" % i
        assert b.command(tag, b'APPEND Drafts CATENATE (URL "' + url + b'")') == [
            tag + b" NO [BADURL " + url + b"] CATENATE URL not valid"]


BIG = 3_000  # more than store/sqlite/search.py SORT_INLINE: the big mailbox's read


def _threaded(n: int) -> bytes:
    """Message ``n`` of threads of three: each answers the first of its three."""
    reply = f"In-Reply-To: <t{n - n % 3}@example.test>\r\n" if n % 3 else ""
    return (f"From: bob@example.test\r\nSubject: m{n}\r\nMessage-ID: <t{n}@example.test>\r\n{reply}"
            f"\r\nbody {n}\r\n").encode()


async def _seed_big(store: SQLiteStore) -> None:
    account = await store.get_account(ALICE)
    assert account is not None
    box = await store.get_mailbox(account.id, "INBOX")
    assert box is not None
    await store.append_many(box, [AppendItem(_threaded(n)) for n in range(BIG)])


def test_emailid_threadid_search_of_a_big_mailbox_leaves_the_loop_turning(
        make_server: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch) -> None:
    """SEARCH EMAILID / THREADID (RFC 8474 6) over a mailbox of thousands of
    messages makes and compares their ids where the event loop is not held:
    another session's NOOP is answered meanwhile, and the loop keeps turning
    (LoopTicks), while the making of an id is slowed here."""
    server = make_server(seed=_seed_big)
    c = login(server)
    c.command(b"a1", b"SELECT INBOX")
    email = fetched_ids(c, b"a2", b"EMAILID", b"2500")[0]
    thread = fetched_ids(c, b"a3", b"THREADID", b"1")[0]
    # every message's thread decided and kept, the answer right
    assert c.command(b"a4", b"SEARCH THREADID " + thread) == [b"* SEARCH 1 2 3", b"a4 OK SEARCH completed"]
    started = threading.Event()
    made = search_store.opaque_id

    def slow_first(key: bytes, kind: str, number: int) -> str:
        if not started.is_set():
            started.set()
            time.sleep(SLOW)
        return made(key, kind, number)

    monkeypatch.setattr(search_store, "opaque_id", slow_first)
    other = _client(server)
    program = b"SEARCH OR EMAILID " + email + b" THREADID " + thread
    lines, ticks = _while_served(server, started, lambda: c.command(b"a5", program), other)
    assert lines == [b"* SEARCH 1 2 3 2500", b"a5 OK SEARCH completed"]
    print(f"\nserver loop turns while the SEARCH ran: {ticks}")
    assert ticks >= 10, ticks
