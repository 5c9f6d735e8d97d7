"""The webmail's conversations cache (web/conversations.py): a rebuild that
does not finish leaves nothing stale behind."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from mailyard.config import StoreConfig
from mailyard.store.api import Mailbox
from mailyard.store.sqlite import SQLiteStore
from mailyard.web import conversations


def _mail(n: int) -> bytes:
    return f"From: x@example.test\r\nSubject: s{n}\r\nMessage-ID: <m{n}@example.test>\r\n\r\nb\r\n".encode()


async def test_a_cancelled_rebuild_is_done_again_by_the_next_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request cancelled while the threads are rebuilt for a new message
    (its client gone, the server stopping) leaves no threads behind that
    lack the message: the next request builds them again."""
    store = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    try:
        await store.add_domain("example.test")
        account = await store.add_account("a@example.test", "h")
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        for n in range(3):
            await store.append(box, _mail(n), [])
        cache = conversations.Conversations(store)

        async def inbox() -> Mailbox:  # as each request reads it
            now = await store.get_mailbox(account.id, "INBOX")
            assert now is not None
            return now

        await cache.threads(await inbox(), None)
        new = await store.append(box, _mail(99), [])
        real = conversations._grouped
        building = threading.Event()

        def slow_grouped(*args: object) -> object:
            building.set()
            time.sleep(0.3)
            return real(*args)

        monkeypatch.setattr(conversations, "_grouped", slow_grouped)
        request = asyncio.ensure_future(cache.threads(await inbox(), None))
        assert await asyncio.to_thread(building.wait, 30)  # the rebuild is under way
        request.cancel()
        await asyncio.gather(request, return_exceptions=True)
        monkeypatch.setattr(conversations, "_grouped", real)
        threads = await cache.threads(await inbox(), None)
        uid = new if isinstance(new, int) else new.uid
        assert (box.id, uid) in threads.of
    finally:
        await store.close()
