"""The webmail's folder list (web/pages.py ``folders``): made cold for an
account of many folders, it gives each folder's line and menu option as
escaped HTML, in the list's order, and makes the entries in slices with
turns of the event loop between them, so other requests are served while
a page finds thousands missing from the cache."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mailyard.config import StoreConfig
from mailyard.store.sqlite import SQLiteStore
from mailyard.web import pages

FOLDERS = 1_200
# the most entries made in one step of the event loop (a few ms of work)
SLICE = 500


async def test_a_cold_folder_list_of_many_folders_is_made_in_slices(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLiteStore(tmp_path / "d", StoreConfig(fsync=False))
    try:
        await store.add_domain("example.test")
        account = await store.add_account("a@example.test", "h")
        await asyncio.gather(*(store.create_mailbox(account.id, f"Projects/c{i:04d}") for i in range(FOLDERS)))
        odd = await store.create_mailbox(account.id, 'R&D/<i>"x"')
        await store.append(odd, b"Subject: s\r\n\r\nb\r\n", [])
        web = SimpleNamespace(services=SimpleNamespace(store=store), status_cache=pages.FolderCache())
        request: Any = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(web=web)))
        session: Any = SimpleNamespace(account_id=account.id)

        turns = 0

        async def ticker() -> None:  # counts the steps of the event loop
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        made_at: list[int] = []  # the loop's step at each entry made
        real = pages._folder_entry

        def entry(*args: Any) -> dict:
            made_at.append(turns)
            return real(*args)

        monkeypatch.setattr(pages, "_folder_entry", entry)
        tick = asyncio.ensure_future(ticker())
        try:
            listed = await pages.folders(request, session)
        finally:
            tick.cancel()
        assert len(made_at) == FOLDERS + 7  # every folder made, once
        most = max(made_at.count(step) for step in set(made_at))
        assert most <= SLICE, f"{most} entries made in one step of the event loop"

        names = [f["name"] for f in listed]
        assert names[:6] == ["INBOX", "Drafts", "Sent", "Archive", "Junk", "Trash"]
        assert names[6:] == sorted(names[6:], key=str.casefold) and len(names) == FOLDERS + 7
        (f,) = (f for f in listed if f["id"] == odd.id)
        assert f["nav"] == (f'<li class="depth1">\n    <a href="/box/{odd.id}" data-box="{odd.id}">\n'
                            '      <span class="fname">&lt;i&gt;&#34;x&#34;</span>\n'
                            '      <span class="count" aria-label="1 unread">1</span>\n    </a>\n  </li>\n')
        assert f["option"] == f'<option value="{odd.id}">R&amp;D/&lt;i&gt;&#34;x&#34;</option>'
        inbox = listed[0]
        assert str(pages.folder_nav([inbox], inbox["id"])) == (
            f'<li class="depth0 current">\n    <a href="/box/{inbox["id"]}" aria-current="page"'
            f' data-box="{inbox["id"]}" data-inbox="1">\n      <span class="fname">INBOX</span>\n'
            '      \n    </a>\n  </li>\n')
        made_at.clear()
        assert await pages.folders(request, session) == listed  # warm: from the cache
        assert made_at == []
    finally:
        await store.close()
