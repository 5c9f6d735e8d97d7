"""The SQLite store's ``sort_keys`` (IMAP SORT/THREAD keys, RFC 5256): kept
with each body's derived data at delivery, computed from header_fields for
bodies derived before that, the same either way."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mailyard.config import StoreConfig
from mailyard.message.threadkeys import SortKeys
from mailyard.store.sqlite import SQLiteStore

MAIL = [
    b"Date: Mon, 1 Jan 2024 09:00:00 -0200\r\nFrom: Bob <bob@example.test>\r\nTo: a@example.test\r\n"
    b"Subject: Re: [team] =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <2@x>\r\nReferences: <0@x> <1@x>\r\n\r\nhi\r\n",
    b"From: carl@example.test\r\nCc: \"Dee\" <dee@example.test>, eve@example.test\r\n\r\nno subject\r\n",
]
WANT = {
    1: SortKeys(1704106800.0, "GRU\u0308\u00dfE", True, "BOB", "BOB", "A", "A@EXAMPLE.TEST", "", "2@x", ("0@x", "1@x")),
    2: SortKeys(None, "", False, "CARL", "CARL@EXAMPLE.TEST", "", "", "DEE", None, ()),
}


async def test_sort_keys_stored_and_recomputed(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s", StoreConfig(fsync=False))
    try:
        await s.add_domain("example.test")
        a = await s.add_account("a@example.test", "h")
        inbox = await s.get_mailbox(a.id, "INBOX")
        assert inbox
        for data in MAIL:
            await s.append(inbox, data)
        # before the indexer: derived on the spot
        assert await s.sort_keys(inbox, [1, 2, 3]) == WANT
        deadline = asyncio.get_running_loop().time() + 20
        while s._read.execute("SELECT count(*) FROM bodies WHERE derived IS NULL").fetchone()[0]:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        s._sort_cache.clear()
        assert await s.sort_keys(inbox, [2]) == {2: WANT[2]}
        stored = s._read.execute("SELECT count(*) FROM body_derived WHERE json_extract(meta, '$.sort') IS NOT NULL")
        assert stored.fetchone()[0] == 2
        # data derived before the keys were kept: the same keys from header_fields
        await s._write(lambda c, ctx: c.execute("UPDATE body_derived SET meta = json_remove(meta, '$.sort')"))
        s._sort_cache.clear()
        assert await s.sort_keys(inbox, [1, 2]) == WANT
        assert s._read.execute(
            "SELECT count(*) FROM body_derived WHERE json_extract(meta, '$.sort') IS NOT NULL").fetchone()[0] == 0
    finally:
        await s.close()
