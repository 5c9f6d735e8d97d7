"""OBJECTID (RFC 8474), PREVIEW (RFC 8970) and CATENATE (RFC 4469) on a real server over the
SQLite store: MAILBOXID across RENAME and never reused, EMAILID shared by
copies and searchable, THREADID NIL, PREVIEW from the derived data, and
computed on demand (then kept) for a body derived before previews were."""

from __future__ import annotations

import socket

from tests.conftest import USERS, RunningServer
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


def test_emailid_threadid_search(mailserver: RunningServer) -> None:
    c = login(mailserver)
    assert append(c, b"INBOX", MESSAGE).startswith(b"P OK [APPENDUID")
    assert append(c, b"INBOX", MESSAGE.replace(b"meeting", b"other")).startswith(b"P OK")
    c.command(b"a1", b"SELECT INBOX")
    assert c.command(b"a2", b"COPY 1 INBOX")[-1].startswith(b"a2 OK [COPYUID")
    lines = c.command(b"a3", b"FETCH 1:3 (EMAILID THREADID)")
    ids = [code_of(x.replace(b"EMAILID (", b"[EMAILID ("), b"EMAILID") for x in lines[:-1]]
    assert lines[-1] == b"a3 OK FETCH completed"
    assert ids[0] == ids[2] != ids[1]  # RFC 8474 5.1: the copy keeps its EMAILID
    assert all(b"THREADID NIL" in x for x in lines[:-1])  # RFC 8474 5.2: no threads here
    assert c.command(b"a4", b"SEARCH EMAILID " + ids[0]) == [b"* SEARCH 1 3", b"a4 OK SEARCH completed"]
    assert c.command(b"a5", b"UID SEARCH EMAILID " + ids[1]) == [b"* SEARCH 2", b"a5 OK UID SEARCH completed"]
    assert c.command(b"a6", b"SEARCH THREADID " + ids[1]) == [b"* SEARCH", b"a6 OK SEARCH completed"]
    # another account never finds alice's messages by their EMAILID
    b = login(mailserver, BOB)
    b.command(b"b1", b"SELECT INBOX")
    assert b.command(b"b2", b"SEARCH EMAILID " + ids[0]) == [b"* SEARCH", b"b2 OK SEARCH completed"]


def test_preview_stored_and_on_demand(mailserver: RunningServer) -> None:
    c = login(mailserver)
    append(c, b"INBOX", MESSAGE)
    c.command(b"a1", b"SELECT INBOX")
    want = [b'* 1 FETCH (PREVIEW "Hello Joe, do you think we can meet at 3:30 tomorrow?")', b"a2 OK FETCH completed"]
    assert c.command(b"a2", b"FETCH 1 (PREVIEW)") == want
    store = mailserver.store

    async def forget() -> int:
        # as a body derived before previews were kept
        def op(con, ctx):  # noqa: ANN001, ANN202
            return con.execute("UPDATE body_derived SET meta = json_remove(meta, '$.preview')").rowcount
        return await store._write(op)

    assert mailserver.call(forget()) >= 1
    want[1] = b"a3 OK FETCH completed"
    assert c.command(b"a3", b"FETCH 1 (PREVIEW (LAZY))") == [want[0].replace(b"a2", b"a3"), want[1]]
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
