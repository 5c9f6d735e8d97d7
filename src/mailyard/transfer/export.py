"""Writing an account out: Maildir++ that Dovecot serves as it is, or mboxrd.

Maildir: INBOX at the root, every other folder as ``.Level1.Level2`` (levels
in IMAP's modified UTF-7, RFC 3501 5.1.3) with a ``maildirfolder`` file;
each message one file in ``cur/`` holding the stored bytes exactly, named
``<time>.M<uid>V<uidvalidity>.<host>,S=<size>:2,<flags>`` (flags D F R S T in
ASCII order, keywords as the letters of the folder's ``dovecot-keywords``),
its modification time the INTERNALDATE. ``dovecot-uidlist`` keeps the UIDs and
UIDVALIDITY, so clients that cached the folders find the same UIDs.

mbox: one mboxrd file per folder (``DEST/Lists/foo.mbox``), LF line ends,
a From_ line with the INTERNALDATE (RFC 4155), body lines matching ``>*From ``
quoted with one more ``>``, flags in ``Status:``/``X-Status:``/``X-Keywords:``.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..protocols.imap import utf7
from ..store.api import HIERARCHY_DELIMITER, Account, Mailbox, Store
from .maildir import LETTER_OF_FLAG, keywords_file
from .progress import Progress, Summary

WRITE_BATCH = 200  # files handed to the writer threads at once
WRITE_THREADS = 8
READ_CHUNK = 500  # messages read from the store at once ...
READ_CHUNK_OCTETS = 32 << 20  # ... and at most this many octets (bar one larger message)
_NEEDS_QUOTE = re.compile(rb"^>*From ", re.MULTILINE)


def maildir_path(dest: Path, name: str) -> Path:
    if name.upper() == "INBOX":
        return dest
    # A "." inside a level would split it in Maildir++: it is written as Dovecot's
    # listescape plugin writes it, backslash 2e (a backslash itself: backslash 5c).
    levels = [utf7.encode(level).replace("\\", "\\5c").replace(".", "\\2e")
              for level in name.split(HIERARCHY_DELIMITER)]
    return dest / ("." + ".".join(levels))


def mbox_path(dest: Path, name: str) -> Path:
    # no level may climb out of DEST: "." and ".." (and empty levels) become "_."/"_.."/"_"
    levels = ["_" + level if level in ("", ".", "..") else level.replace(os.sep, "_")
              for level in name.split(HIERARCHY_DELIMITER)]
    return dest.joinpath(*levels[:-1], levels[-1] + ".mbox")


async def _messages(store: Store, box: Mailbox):  # type: ignore[no-untyped-def]
    infos = await store.list_messages(box)
    i = 0
    while i < len(infos):
        part, total = [], 0
        while i < len(infos) and len(part) < READ_CHUNK and (not part or total + infos[i].size <= READ_CHUNK_OCTETS):
            part.append(infos[i])
            total += infos[i].size
            i += 1
        by_uid = {m.uid: m for m in part}
        for uid, data in await store.read_messages(box, [m.uid for m in part]):
            yield by_uid[uid], data


def _write_file(job: tuple[bytes, Path, Path, float]) -> None:
    """Maildir delivery (tmp/, then rename into cur/) with the INTERNALDATE as mtime."""
    data, tmp, final, when = job
    tmp.write_bytes(data)
    os.utime(tmp, (when, when))
    tmp.replace(final)


async def _write_files(pool: ThreadPoolExecutor, jobs: list[tuple[bytes, Path, Path, float]],
                       summary: Summary, progress: Progress | None) -> None:
    """Write files on several threads: creating a file costs a wait on the
    file system rather than CPU, so they overlap."""
    if not jobs:
        return
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(pool, _write_file, job) for job in jobs))
    octets = sum(len(job[0]) for job in jobs)
    summary.imported += len(jobs)
    summary.octets += octets
    if progress:
        progress.advance(len(jobs), octets)


async def export_maildir(store: Store, account: Account, dest: Path, summary: Summary,
                         progress: Progress | None = None) -> None:
    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        await _export_maildir(store, account, dest, summary, progress, pool)


async def _export_maildir(store: Store, account: Account, dest: Path, summary: Summary,
                          progress: Progress | None, pool: ThreadPoolExecutor) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "mailyard"
    for box in await store.list_mailboxes(account.id):
        folder = maildir_path(dest, box.name)
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        if folder != dest:
            (folder / "maildirfolder").touch()
        letters = {kw: letter for letter, kw in keywords_file(folder).items()}
        # A message's base name depends only on its UID and UIDVALIDITY, so
        # exporting again into the same DEST renames files whose flags
        # changed and writes only the messages that are new.
        existing = {n.split(":2,")[0]: n for n in os.listdir(folder / "cur")}
        uidlist: list[str] = []
        writes: list[tuple[bytes, Path, Path, float]] = []
        async for info, data in _messages(store, box):
            flag_letters = sorted(LETTER_OF_FLAG[f] for f in info.flags if f in LETTER_OF_FLAG)
            for kw in sorted(f for f in info.flags if not f.startswith("\\")):
                if kw not in letters:
                    free = [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in letters.values()]
                    if not free:
                        summary.warn(f"{box.name}: UID {info.uid}: keyword {kw!r} left out "
                                     "(a Maildir folder holds 26 keywords)")
                        continue
                    letters[kw] = free[0]
                flag_letters.append(letters[kw])
            base = f"{int(info.internal_date)}.M{info.uid}V{box.uid_validity}.{host},S={len(data)}"
            name = f"{base}:2,{''.join(sorted(flag_letters))}"
            uidlist.append(f"{info.uid} :{base}")
            if base in existing:
                if existing[base] != name:
                    os.replace(folder / "cur" / existing[base], folder / "cur" / name)
                summary.already += 1
                if progress:
                    progress.advance(1)
                continue
            writes.append((data, folder / "tmp" / base, folder / "cur" / name, info.internal_date))
            if len(writes) >= WRITE_BATCH:
                await _write_files(pool, writes, summary, progress)
                writes = []
        await _write_files(pool, writes, summary, progress)
        if letters:
            (folder / "dovecot-keywords").write_text(
                "".join(f"{ord(letter) - ord('a')} {kw}\n" for kw, letter in sorted(letters.items(),
                                                                               key=lambda kv: kv[1])),
                encoding="utf-8")
        # Dovecot's uidlist version 3: header "3 V<uidvalidity> N<uidnext>", then "<uid> :<base name>"
        (folder / "dovecot-uidlist").write_text(
            f"3 V{box.uid_validity} N{box.uid_next}\n" + "".join(line + "\n" for line in uidlist), encoding="utf-8")
    subscribed = [n for n in await store.list_subscriptions(account.id) if n.upper() != "INBOX"]
    (dest / "subscriptions").write_text("".join(n + "\n" for n in subscribed), encoding="utf-8")


def mbox_entry(data: bytes, flags: frozenset[str], internal_date: float) -> bytes:
    """One mboxrd entry: From_ line, flags as Status fields, quoted body, empty line."""
    lf = data.replace(b"\r\n", b"\n")
    head, sep, body = lf.partition(b"\n\n")
    if not sep:
        head, body = lf.rstrip(b"\n"), b""
    status = b"R" if "\\Seen" in flags else b""
    xstatus = b"".join(letter for flag, letter in (("\\Answered", b"A"), ("\\Flagged", b"F"),
                                                   ("\\Draft", b"T"), ("\\Deleted", b"D")) if flag in flags)
    keywords = b" ".join(sorted(f.encode() for f in flags if not f.startswith("\\")))
    meta = b"Status: " + status + b"O\n"
    if xstatus:
        meta += b"X-Status: " + xstatus + b"\n"
    if keywords:
        meta += b"X-Keywords: " + keywords + b"\n"
    text = head + b"\n" + meta + b"\n" + body
    text = _NEEDS_QUOTE.sub(lambda m: b">" + m.group(0), text)
    if not text.endswith(b"\n"):
        text += b"\n"
    when = time.asctime(time.gmtime(internal_date)).encode()
    return b"From MAILER-DAEMON " + when + b"\n" + text + b"\n"


async def export_mbox(store: Store, account: Account, dest: Path, summary: Summary,
                      progress: Progress | None = None) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for box in await store.list_mailboxes(account.id):
        path = mbox_path(dest, box.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            async for info, data in _messages(store, box):
                f.write(mbox_entry(data, info.flags, info.internal_date))
                summary.imported += 1
                summary.octets += len(data)
                if progress:
                    progress.advance(1, len(data))
        tmp.replace(path)
