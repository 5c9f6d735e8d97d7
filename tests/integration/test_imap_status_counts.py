"""STATUS (RFC 9051 6.3.11, RFC 3501 6.3.10 RECENT) answers from counts the
store keeps per mailbox: RECENT without listing the mailbox's messages, and,
on SQLite, counts read once per state of the mailbox (its uid_next,
highest_modseq and recent_uid) however many sessions ask between its
changes, and read again after each change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import RunningServer
from tests.integration.test_imap_append_recent import MSG, _login

pytestmark = pytest.mark.both_backends

ITEMS = b"(MESSAGES UIDNEXT UNSEEN DELETED RECENT)"


def test_status_counts_follow_every_change(make_server: Callable[..., RunningServer],
                                           monkeypatch: pytest.MonkeyPatch, store_backend: str) -> None:
    server = make_server()
    store = server.store
    listed: list[Any] = []
    list_messages = store.list_messages

    async def counted(*args: Any, **kw: Any) -> Any:
        listed.append(args)
        return await list_messages(*args, **kw)

    monkeypatch.setattr(store, "list_messages", counted)
    reads: list[str] = []
    if store_backend == "sqlite":
        store._read.set_trace_callback(reads.append)
    a, b = _login(server), _login(server)
    try:
        def status(n: int) -> bytes:
            listed.clear()
            out = b.cmd(f"t{n}", b"STATUS INBOX " + ITEMS)
            assert out[-1] == f"t{n} OK STATUS completed".encode(), out
            assert not listed, "STATUS RECENT listed the mailbox's messages"
            return out[0]

        assert status(1) == b'* STATUS "INBOX" (MESSAGES 0 UIDNEXT 1 UNSEEN 0 DELETED 0 RECENT 0)'
        for n in range(3):
            assert a.cmd(f"a{n}", b"APPEND INBOX", MSG)[-1].startswith(f"a{n} OK".encode())
        assert status(2) == b'* STATUS "INBOX" (MESSAGES 3 UIDNEXT 4 UNSEEN 3 DELETED 0 RECENT 3)'
        reads.clear()
        assert status(3) == b'* STATUS "INBOX" (MESSAGES 3 UIDNEXT 4 UNSEEN 3 DELETED 0 RECENT 3)'
        if store_backend == "sqlite":
            counts = [s for s in reads if "count(" in s]
            assert not counts, f"STATUS of an unchanged mailbox counted again: {counts}"
        # a SELECT claims \Recent: the counts change with it
        assert b"* 3 RECENT" in a.cmd("s", b"SELECT INBOX")
        assert status(4) == b'* STATUS "INBOX" (MESSAGES 3 UIDNEXT 4 UNSEEN 3 DELETED 0 RECENT 0)'
        assert a.cmd("f", b"STORE 1 +FLAGS.SILENT (\\Seen)")[-1].startswith(b"f OK")
        assert status(5) == b'* STATUS "INBOX" (MESSAGES 3 UIDNEXT 4 UNSEEN 2 DELETED 0 RECENT 0)'
        assert a.cmd("d", b"STORE 2 +FLAGS.SILENT (\\Deleted)")[-1].startswith(b"d OK")
        assert status(6) == b'* STATUS "INBOX" (MESSAGES 3 UIDNEXT 4 UNSEEN 2 DELETED 1 RECENT 0)'
        assert a.cmd("e", b"EXPUNGE")[-1].startswith(b"e OK")
        assert status(7) == b'* STATUS "INBOX" (MESSAGES 2 UIDNEXT 4 UNSEEN 1 DELETED 0 RECENT 0)'
        assert a.cmd("c", b"CLOSE")[-1].startswith(b"c OK")
        assert b.cmd("a9", b"APPEND INBOX", MSG)[-1].startswith(b"a9 OK")
        assert status(8) == b'* STATUS "INBOX" (MESSAGES 3 UIDNEXT 5 UNSEEN 2 DELETED 0 RECENT 1)'
    finally:
        a.sock.close()
        b.sock.close()
