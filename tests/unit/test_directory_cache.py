"""The directory cache of the router (delivery/router.py): an answer read
while the directory changed is not kept."""

from __future__ import annotations

import asyncio

from mailyard.delivery.router import DirectoryCache
from mailyard.store.api import Quota


class _Store:
    """The one store call the cache makes here; its answer is the limit as
    it was when the read began, handed back once ``gate`` opens."""

    def __init__(self) -> None:
        self.directory_version = 0
        self.limit: int | None = None
        self.gate: asyncio.Event | None = None

    async def get_quota(self, account_id: int) -> Quota:
        snapshot = self.limit
        if self.gate is not None:
            await self.gate.wait()
        return Quota(snapshot, None, 0, 0)


def test_an_answer_read_across_a_directory_change_is_not_kept() -> None:
    """A quota limit set while a RCPT's read of the old one is in flight (a
    PostgreSQL read suspends): that RCPT may use what it read, the next one
    reads again rather than keep "no limit" for the cache's lifetime."""

    async def run() -> tuple[bool, bool]:
        store = _Store()
        cache = DirectoryCache(store)  # type: ignore[arg-type]
        store.gate = asyncio.Event()
        first = asyncio.create_task(cache.unlimited(1))
        await asyncio.sleep(0)
        store.limit, store.directory_version = 0, store.directory_version + 1  # the change commits

        async def domain() -> bool:
            return True

        await cache.get("domain", "example.test", domain)  # another session's lookup meanwhile
        store.gate.set()
        store.gate = None
        return await first, await cache.unlimited(1)

    in_flight, after = asyncio.run(run())
    assert in_flight is True
    assert after is False
