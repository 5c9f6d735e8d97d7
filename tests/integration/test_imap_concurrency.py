"""The selected mailbox under several real concurrent IMAP clients, over the
real SQLite store: \\Recent shares (RFC 3501 2.3.2), FETCH of messages
another session expunged (RFC 2180 4.1), new keywords (RFC 9051 7.3.5).

Clients are imaplib connections in threads; the server runs its own loop
(tests/conftest.py), so their commands interleave in the server for real.
"""

from __future__ import annotations

import imaplib
import re
import threading

from tests.conftest import USERS, RunningServer
from tests.waiting import wait_until

ALICE = "alice@example.test"


def message(n: int) -> bytes:
    return (f"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: m{n}\r\n"
            f"Message-ID: <m{n}@example.test>\r\n\r\nbody {n}\r\n").encode()


def client(server: RunningServer) -> imaplib.IMAP4:
    c = imaplib.IMAP4(server.host, server.port("imap"), timeout=30)
    c.login(ALICE, USERS[ALICE])
    return c


def recent_uids(c: imaplib.IMAP4) -> set[int]:
    """UIDs this session sees as \\Recent."""
    typ, data = c.uid("FETCH", "1:*", "(FLAGS)")
    assert typ == "OK", data
    out = set()
    for item in data:
        line = item if isinstance(item, bytes) else item[0]
        m = re.search(rb"UID (\d+)", line)
        if m and b"\\Recent" in line:
            out.add(int(m.group(1)))
    return out


def test_every_new_message_is_recent_in_exactly_one_session_rfc3501_2_3_2(mailserver: RunningServer) -> None:
    """Four sessions append to one mailbox at once, each announcing what it
    sees between appends; every new message ends \\Recent in exactly one of
    them, and STATUS RECENT counts what no session claimed."""
    sessions, per_session = 4, 10
    clients = [client(mailserver) for _ in range(sessions)]
    for c in clients:
        assert c.select("INBOX")[0] == "OK"
    start = threading.Barrier(sessions)
    errors: list[BaseException] = []

    def work(i: int, c: imaplib.IMAP4) -> None:
        try:
            start.wait(10)
            for n in range(per_session):
                assert c.append("INBOX", None, None, message(i * 100 + n))[0] == "OK"
                assert c.noop()[0] == "OK"
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    status = client(mailserver)
    try:
        # before the sessions look again, some new messages may be unclaimed yet
        typ, data = status.status("INBOX", "(MESSAGES RECENT)")
        assert typ == "OK", data
        unclaimed = int(re.search(rb"RECENT (\d+)", data[0]).group(1))  # type: ignore[union-attr]
        shares = []
        for c in clients:
            assert c.noop()[0] == "OK"
            shares.append(recent_uids(c))
        print(f"\\Recent per session: {[len(s) for s in shares]}, unclaimed before the last NOOP: {unclaimed}")
        total = sessions * per_session
        union = set().union(*shares)
        assert union == set(range(1, total + 1)), sorted(set(range(1, total + 1)) - union)
        assert sum(len(s) for s in shares) == total  # no message \Recent in two sessions
        typ, data = status.status("INBOX", "(RECENT)")
        assert data[0].endswith(b"(RECENT 0)"), data
    finally:
        for c in [*clients, status]:
            c.logout()


def raw_session(server: RunningServer):  # noqa: ANN201
    """A logged-in raw socket session: ``say(command, tag)`` returns the lines up to the tagged one."""
    import socket

    s = socket.create_connection((server.host, server.port("imap")), timeout=30)
    f = s.makefile("rb")
    f.readline()

    def say(line: bytes, tag: bytes) -> list[bytes]:
        s.sendall(line + b"\r\n")
        out = []
        while True:
            got = f.readline()
            assert got, out
            out.append(got)
            if got.startswith(tag + b" "):
                return out

    assert say(b"l1 LOGIN " + ALICE.encode() + b" " + USERS[ALICE].encode(), b"l1")[-1].startswith(b"l1 OK")
    return s, say


def test_keyword_set_by_another_client_is_announced_in_flags_rfc9051_7_3_5(mailserver: RunningServer) -> None:
    a = client(mailserver)
    try:
        assert a.append("INBOX", None, None, message(1))[0] == "OK"
        s, say = raw_session(mailserver)
        with s:
            say(b"b1 SELECT INBOX", b"b1")
            a.select("INBOX")
            assert a.store("1", "+FLAGS", "($Work)")[0] == "OK"
            out = say(b"b2 FETCH 1 (FLAGS)", b"b2")
            assert out[:3] == [
                b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)\r\n",
                b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)] Flags permitted\r\n",
                b"* 1 FETCH (FLAGS (\\Recent $Work))\r\n",
            ], out
            assert out[-1] == b"b2 OK FETCH completed\r\n"
    finally:
        a.logout()


def held_rows(server: RunningServer) -> int:
    """Expunged messages the store still keeps for sessions (messages.py)."""

    async def count() -> int:
        return server.store._q("SELECT count(*) FROM messages WHERE mailbox_id < 0")[0][0]

    return server.call(count())


def test_fetch_while_others_expunge_never_fails_rfc2180_4_1_1(mailserver: RunningServer) -> None:
    """Ten concurrent clients: five FETCH the whole mailbox (bodies) over and
    over while five append and expunge messages. Every FETCH ends OK with the
    data of every message it names; once every session has announced the
    expunges, the store keeps nothing for them."""
    seed = client(mailserver)
    for n in range(5):
        assert seed.append("INBOX", None, None, message(n))[0] == "OK"
    readers = [client(mailserver) for _ in range(5)]
    writers = [client(mailserver) for _ in range(5)]
    for c in [*readers, *writers]:
        assert c.select("INBOX")[0] == "OK"
    start = threading.Barrier(10)
    errors: list[BaseException] = []
    results: list[tuple[str, int]] = []  # (tagged result, messages served)
    stop = threading.Event()

    def read(c: imaplib.IMAP4) -> None:
        try:
            start.wait(10)
            while not stop.is_set():
                assert c.noop()[0] == "OK"
                typ, data = c.fetch("1:*", "(UID BODY.PEEK[])")
                results.append((typ, sum(1 for d in data if isinstance(d, tuple))))
        except BaseException as exc:
            errors.append(exc)

    def write(i: int, c: imaplib.IMAP4) -> None:
        try:
            start.wait(10)
            for n in range(8):
                typ, data = c.append("INBOX", None, None, message(1000 + i * 100 + n))
                assert typ == "OK", data
                uid = re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1).decode()  # type: ignore[union-attr]
                assert c.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
                assert c.uid("EXPUNGE", uid)[0] == "OK"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(c,)) for c in readers]
    threads += [threading.Thread(target=write, args=(i, c)) for i, c in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads[5:]:
        t.join(120)
    stop.set()
    for t in threads[:5]:
        t.join(120)
    try:
        assert not errors, errors
        failed = [r for r in results if r[0] != "OK"]
        print(f"FETCH 1:* during expunges: {len(results)} commands, {len(failed)} not OK, "
              f"{held_rows(mailserver)} expunged messages held before the sessions' last NOOP")
        assert not failed, failed[:5]
        for c in [*readers, *writers]:
            assert c.noop()[0] == "OK"
        # every holder has announced every expunge: the store keeps nothing
        wait_until(lambda: held_rows(mailserver) == 0, what="held expunged messages to go")
    finally:
        for c in [seed, *readers, *writers]:
            c.logout()
