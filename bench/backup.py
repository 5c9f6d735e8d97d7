"""Backup and restore (store/backup.py): a full backup, an incremental one,
verification, a whole-store restore and a one-account restore, on a store
built here.

The store is filled through the store API (MULTIAPPEND batches, fsync off)
with 1 GB of 50 kB messages over 20 accounts (``--quick``: 200 MB); the
issue asks for 5 GB, so each figure is also extrapolated linearly to 5 GB
(``detail["at_5GB_s"]``): a backup, a verify and a restore read or write
every byte once, so they scale with the store's size; an incremental backup
scales with the index plus what changed (here: 1% new mail). The page cache
is warm (the store was just written): the figures are the program's speed,
a cold disk adds its read time.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from .common import Result, progress

MESSAGE = 50_000
ACCOUNTS = 20
BATCH = 200
FIVE_GB = 5e9


def _message(i: int) -> bytes:
    head = (f"From: <sender{i % 97}@example.net>\r\nTo: <user{i % ACCOUNTS}@example.test>\r\n"
            f"Subject: message {i}\r\nMessage-ID: <{i}@bench.example>\r\n\r\n").encode()
    line = (b"%08d " % i) + b"lorem ipsum dolor sit amet consectetur adipiscing elit " * 1 + b"\r\n"
    return head + line * (MESSAGE // len(line))


async def _fill(data: Path, first: int, count: int) -> int:
    from mailyard.config import StoreConfig
    from mailyard.store import open_store
    from mailyard.store.api import AppendItem

    store = open_store(data, StoreConfig(fsync=False), background=False)
    total = 0
    try:
        if first == 0:
            await store.add_domain("example.test")
            for a in range(ACCOUNTS):
                await store.add_account(f"user{a}@example.test", "!locked")
        boxes = []
        for a in range(ACCOUNTS):
            account = await store.get_account(f"user{a}@example.test")
            assert account is not None
            boxes.append(await store.get_mailbox(account.id, "INBOX"))
        for start in range(first, first + count, BATCH * ACCOUNTS):
            for a, box in enumerate(boxes):
                items = [AppendItem(_message(i), frozenset({"\\Seen"} if i % 2 else ()), 1.6e9 + i)
                         for i in range(start + a, min(first + count, start + BATCH * ACCOUNTS), ACCOUNTS)]
                if items:
                    await store.append_many(box, items)
                    total += sum(len(x.data) for x in items)
    finally:
        await store.close()
    return total


def run(quick: bool = False) -> list[Result]:
    from mailyard.config import StoreConfig
    from mailyard.store import backup as bk
    from mailyard.store import open_store

    size = 200e6 if quick else 1e9
    messages = int(size // MESSAGE)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="mailyard-bench-backup-") as tmp:
        root = Path(tmp)
        data, dest = root / "data", root / "backup"
        progress(f"filling a store with {messages} messages of {MESSAGE // 1000} kB ({size / 1e9:.1f} GB)")
        stored = asyncio.run(_fill(data, 0, messages))

        def figure(name: str, seconds: float, octets: float, scales_with: float, **detail: object) -> None:
            at5 = seconds * FIVE_GB / scales_with
            results.append(Result("backup", name, round(seconds, 2), "s", detail={
                "store_MB": round(stored / 1e6), "MB_per_s": round(octets / 1e6 / seconds, 1) if seconds else None,
                "at_5GB_s": round(at5, 1), **detail,
            }))
            progress(f"{name}: {seconds:.2f} s ({octets / 1e6 / max(seconds, 1e-9):.0f} MB/s; 5 GB: ~{at5:.0f} s)")

        s = bk.backup(data, dest)
        figure("full backup", s.seconds, s.bytes_from_store, stored, segments=s.segments_copied)

        new = max(messages // 100, ACCOUNTS)
        added = asyncio.run(_fill(data, messages, new))
        s2 = bk.backup(data, dest)
        # an incremental run reads the index and the new bytes: at 5 GB, 1% new mail
        figure("incremental backup (1% new mail)", s2.seconds, s2.bytes_from_store, stored + added,
               read_MB=round(s2.bytes_from_store / 1e6, 1), reused_MB=round(s2.bytes_reused / 1e6, 1),
               segments_linked=s2.segments_linked, segments_copied=s2.segments_copied + s2.segments_extended)

        t = time.perf_counter()
        report = bk.verify(s2.path)
        assert report.ok, report.problems
        figure("verify", time.perf_counter() - t, report.bytes, stored + added)

        restored = root / "restored"
        r = bk.restore_data(s2.path, restored)
        figure("restore (whole store)", r.seconds, r.bytes, stored + added)

        async def one_account() -> bk.RestoreSummary:
            store = open_store(data, StoreConfig(fsync=True), background=False)
            try:
                return await bk.restore_account(s2.path, store, "user0@example.test", as_folder="Restored")
            finally:
                await store.close()

        ra = asyncio.run(one_account())
        results.append(Result("backup", "restore one account (fsync on)", round(ra.messages / ra.seconds), "msg/s",
                              detail={"messages": ra.messages, "MB": round(ra.bytes / 1e6, 1),
                                      "seconds": round(ra.seconds, 2)}))
        progress(f"restore one account: {ra.messages} messages, {ra.bytes / 1e6:.0f} MB in {ra.seconds:.1f} s")
    return results
