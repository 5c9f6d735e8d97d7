"""The import commands as coroutines over a store: what ``mailyard import``
runs (cli/import_export.py only parses options, opens the store and prints)."""

from __future__ import annotations

import asyncio
import imaplib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from ..store.api import HIERARCHY_DELIMITER, Store
from ..store.import_state import ImportState
from . import imapsource, maildir, mbox
from .importer import ContentKeys, Importer, Incoming, clean_flags, target_name
from .progress import Progress, Summary

FILE_BATCH = 500  # messages read ahead before they are written ...
FILE_BATCH_OCTETS = 16 << 20  # ... and at most this many octets of them (bar one larger message)
CHUNK_OCTETS = 16 << 20  # one IMAP FETCH asks for at most this much (bar one larger message)


T = TypeVar("T")


async def prefetched(items: Iterator[T], weigh: Callable[[T], int], size: int = FILE_BATCH,
                     octets: int = FILE_BATCH_OCTETS) -> AsyncIterator[list[T]]:
    """Lists of at most ``size`` items and ``octets`` (by ``weigh``) of a
    blocking iterator (file reads), the next one read in a thread while the
    caller writes the current one: reading overlaps the store's commits and
    memory stays bounded."""

    def take() -> list[T]:
        out: list[T] = []
        total = 0
        for item in items:
            out.append(item)
            total += weigh(item)
            if len(out) >= size or total >= octets:
                break
        return out

    ahead = asyncio.ensure_future(asyncio.to_thread(take))
    try:
        while True:
            batch = await ahead
            if not batch:
                return
            ahead = asyncio.ensure_future(asyncio.to_thread(take))
            yield batch
    finally:
        if not ahead.done():
            await asyncio.wait([ahead])


def _weight(msg: mbox.MboxMessage | maildir.MaildirMessage) -> int:
    return len(msg.data)


def folder_source(folder: str) -> str:
    """The source of file imports: the target folder (keys are content hashes)."""
    return f"file:{folder}"


async def import_mbox(importer: Importer, files: Sequence[Path], folder: str) -> None:
    """Every message of the mbox files into ``folder``."""
    keys = ContentKeys()
    source = folder_source(folder)
    summary = importer.summary
    for path in files:
        try:
            async for batch in prefetched(mbox.read_mbox(path), _weight):
                pending: list[Incoming] = []
                for msg in batch:
                    for w in msg.warnings:
                        summary.warn(f"{path}: {w}")
                    if msg.not_a_message:
                        summary.skip("not a message", detail=f"{path}: {msg.not_a_message}")
                        continue
                    flags = clean_flags(msg.flags, summary)
                    pending.append(Incoming(msg.data, keys.key(folder, msg.data), flags, msg.internal_date))
                await importer.add(folder, source, pending)
        except mbox.NotAnMbox as exc:
            summary.skip("not an mbox file", detail=str(exc))
        except OSError as exc:
            summary.skip("file cannot be read", detail=f"{path}: {exc.strerror or exc}")


async def import_maildir(importer: Importer, root: Path) -> None:
    """Every folder of a Maildir (Maildir++ or fs layout) into the account."""
    summary = importer.summary
    if not root.is_dir():
        summary.skip("not a directory", detail=str(root))
        return
    found = maildir.folders(root)
    if not found:
        summary.skip("not a Maildir (no cur/ or new/)", detail=str(root))
        return
    if importer.progress:
        importer.progress.add_total(sum(maildir.count(f.path) for f in found))
    keys = ContentKeys()
    for f in found:
        folder = target_name(f.parts) if f.parts else "INBOX"
        source = folder_source(folder)
        await importer.mailbox(folder)  # an empty folder is still a folder
        async for batch in prefetched(maildir.messages(f.path), _weight):
            pending: list[Incoming] = []
            for msg in batch:
                if msg.not_a_message:
                    summary.skip("not a message", detail=msg.not_a_message)
                    continue
                flags = clean_flags(msg.flags, summary)
                pending.append(Incoming(msg.data, keys.key(folder, msg.data), flags, msg.internal_date))
            await importer.add(folder, source, pending)


def maildir_of_user(entry: Path) -> Path | None:
    """``DIR/user/Maildir`` or ``DIR/user`` itself, whichever is a Maildir."""
    for candidate in (entry / "Maildir", entry):
        if candidate.is_dir() and maildir.is_maildir(candidate):
            return candidate
    return None


async def import_imap(importer: Importer, settings: imapsource.SourceSettings,
                      only: Sequence[str] = (), connections: int = 4, chunk: int = 500) -> None:
    """Every folder of an IMAP account (or those named in ``only``), several
    folders at once over ``connections`` connections."""
    summary = importer.summary
    first = await asyncio.to_thread(imapsource.connect, settings)
    try:
        listed = await asyncio.to_thread(imapsource.list_folders, first)
    except BaseException:
        await asyncio.to_thread(_logout, first)
        raise
    wanted = [f for f in listed if not only or f.name in only or HIERARCHY_DELIMITER.join(f.parts) in only]
    for name in only:
        if not any(name in (f.name, HIERARCHY_DELIMITER.join(f.parts)) for f in listed):
            summary.skip("no such folder on the source", detail=name)
    base = f"imap://{settings.user}@{settings.host}:{settings.port}/"
    for f in wanted:  # the hierarchy first, in LIST order, so parents exist before children
        await importer.mailbox(target_name(f.parts, f.attributes))
    queue: asyncio.Queue[imapsource.SourceFolder] = asyncio.Queue()
    for f in wanted:
        if f.selectable:
            queue.put_nowait(f)

    async def worker(conn: imaplib.IMAP4 | None) -> None:
        try:
            if conn is None:
                try:
                    conn = await asyncio.to_thread(imapsource.connect, settings)
                except imapsource.SourceError as exc:
                    # a source that limits connections per user: the others read on
                    summary.warn(f"an extra connection was refused ({exc}); reading with fewer")
                    return
            while not queue.empty():
                f = queue.get_nowait()
                await _one_folder(importer, conn, f, base + f.name, chunk)
        finally:
            if conn is not None:
                await asyncio.to_thread(_logout, conn)

    n = max(1, min(connections, queue.qsize()))
    await asyncio.gather(*(worker(first if i == 0 else None) for i in range(n)))


def _logout(conn: imaplib.IMAP4) -> None:
    try:
        conn.logout()
    except (OSError, imaplib.IMAP4.error):
        pass


async def _one_folder(importer: Importer, conn: imaplib.IMAP4, f: imapsource.SourceFolder,
                      source: str, chunk: int) -> None:
    summary = importer.summary
    target = target_name(f.parts, f.attributes)
    try:
        validity, uids = await asyncio.to_thread(imapsource.examine, conn, f.name)
    except imapsource.SourceError as exc:
        summary.skip("folder cannot be opened on the source", detail=str(exc))
        return
    known = importer.known(source)
    if known and not any(k.startswith(f"{validity}:") for k in known):
        # RFC 9051 2.3.1.1: a new UIDVALIDITY means the old UIDs name nothing;
        # fetching all again would duplicate what an earlier run brought in.
        summary.skip("UIDVALIDITY changed since the last run (folder left out to avoid duplicates)",
                     detail=f"{f.name}: now {validity}")
        return
    todo = [(u, size) for u, size in uids if f"{validity}:{u}" not in known]
    summary.already += len(uids) - len(todo)
    if importer.progress:
        importer.progress.add_total(len(todo))
    for part in imapsource.chunks(todo, chunk, CHUNK_OCTETS):
        try:
            fetched = await asyncio.to_thread(imapsource.fetch, conn, validity, part)
        except (imapsource.SourceError, imaplib.IMAP4.error) as exc:
            summary.skip("source FETCH failed", count=len(part), detail=f"{f.name}: {exc}")
            continue
        missing = len(part) - len(fetched)
        if missing:
            summary.skip("expunged on the source while reading", count=missing)
        await importer.add(target, source, [
            Incoming(m.data, m.key, clean_flags(m.flags, summary), m.internal_date) for m in fetched])


async def open_importer(store: Store, state: ImportState, address: str, summary: Summary,
                        progress: Progress | None) -> Importer:
    account = await store.get_account(address)
    if account is None:
        raise LookupError(f"no account {address}; create it first with: mailyard user add {address}")
    importer = Importer(store, account, state, summary, progress)
    await importer.settle_pending()
    return importer
