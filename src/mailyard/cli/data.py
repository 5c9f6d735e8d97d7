"""The store as a whole: ``mailyard store`` (schema migrations, copying
between stores), ``backup`` and ``restore``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from ..store import migrate_store, open_store, store_exists
from ..store.api import Store, StoreError
from .common import CLIError, data_dir, load_config, require_data_dir


def _is_dsn(where: str) -> bool:
    return where.startswith(("postgresql://", "postgres://"))


def _open_other_store(where: str, create: bool) -> Store:
    """The store ``store copy --to/--from`` names: a PostgreSQL URI, or the
    path of a data directory whose store is SQLite."""
    from ..config import StoreConfig

    if _is_dsn(where):
        from ..store.postgresql import PostgreSQLStore

        return PostgreSQLStore(where, StoreConfig(backend="postgresql", dsn=where))
    path = Path(where)
    if not create and not store_exists(path):
        raise CLIError(f"{path}: no store there")
    path.mkdir(parents=True, exist_ok=True)
    return open_store(path, StoreConfig(), background=create)


def cmd_store_copy(args: argparse.Namespace) -> None:
    """``store copy --to X`` / ``--from X``: copy this data directory's store
    into X, or X into this data directory's store (store/copy.py), with
    progress on stderr and a summary on stdout."""
    from ..store.copy import copy_store
    from ..transfer.progress import Progress

    d = data_dir(args)
    cfg = load_config(args)
    other = args.to or args.source
    if cfg.store.backend == "postgresql" and _is_dsn(other) and other == cfg.store.dsn or (
            cfg.store.backend != "postgresql" and not _is_dsn(other) and Path(other).resolve() == d.resolve()):
        raise CLIError("the source and the target are the same store")
    if args.to and cfg.store.backend != "postgresql" and not store_exists(d):
        require_data_dir(args)
    if args.source:
        d.mkdir(parents=True, exist_ok=True)

    async def main() -> Any:
        here = open_store(d, cfg.store, background=bool(args.source))
        there = _open_other_store(other, create=bool(args.to))
        src, dst = (here, there) if args.to else (there, here)
        progress = Progress("copy", total=0)
        try:
            return await copy_store(src, dst, advance=progress.advance, add_total=progress.add_total)
        finally:
            progress.finish()
            await there.close()
            await here.close()

    try:
        counts = asyncio.run(main())
    except StoreError as exc:
        raise CLIError(f"store copy failed: {exc}") from exc
    print(f"copied {counts.messages} messages ({counts.octets / 1e6:.1f} MB) of {counts.accounts} accounts in "
          f"{counts.mailboxes} mailboxes, {counts.queued} queue entries")
    if counts.already:
        print(f"already there from an earlier run: {counts.already} messages")


def cmd_store(args: argparse.Namespace) -> None:
    """``store migrate``: apply pending schema migrations (every node of a
    PostgreSQL store may run it; an advisory lock makes them take turns).
    ``store copy``: see cmd_store_copy."""
    if args.action == "copy":
        cmd_store_copy(args)
        return
    d = data_dir(args)
    cfg = load_config(args)
    if cfg.store.backend != "postgresql" and not store_exists(d):
        require_data_dir(args)
    try:
        before, after = migrate_store(d, cfg.store)
    except Exception as exc:  # the database is unreachable, or refuses
        raise CLIError(f"store migration failed: {exc}") from exc
    where = cfg.store.backend
    if before == after:
        print(f"{where} store schema is at version {after}: nothing to do")
    else:
        print(f"{where} store schema migrated from version {before} to {after}")


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_backup(args: argparse.Namespace) -> None:
    """`mailyard backup DEST` (a new generation, while the server runs) and
    `mailyard backup verify DEST` (store/backup.py)."""
    from ..store import backup as bk

    words = args.words
    if words[0] == "verify":
        if len(words) != 2:
            raise CLIError("usage: mailyard backup verify DEST [--generation N]")
        report = bk.verify(bk.find_generation(Path(words[1]), args.generation), _progress)
        for problem in report.problems:
            print(f"  {problem}")
        state = "OK" if report.ok else f"{len(report.problems)} problem(s)"
        print(f"{report.generation}: {state}; {report.files} files, {report.bytes / 1e6:.1f} MB checked "
              f"in {report.seconds:.1f} s")
        if not report.ok:
            raise CLIError(f"the backup {report.generation} is damaged; restore from another generation")
        return
    if len(words) != 1:
        raise CLIError("usage: mailyard backup DEST  or  mailyard backup verify DEST")
    d = require_data_dir(args)
    s = bk.backup(d, Path(words[0]), keep=args.keep or 0, progress=_progress)
    print(f"backup {s.path}: snapshot of {s.snapshot_began_utc()} with {s.messages} messages, "
          f"{s.mailboxes} mailboxes, {s.accounts} accounts")
    print(f"  segments: {s.segments_copied} copied, {s.segments_extended} extended, "
          f"{s.segments_linked} unchanged (hard-linked); {s.files} other files")
    print(f"  {s.bytes_from_store / 1e6:.1f} MB read from the store, {s.bytes_reused / 1e6:.1f} MB reused "
          f"from the previous generation, {s.total_bytes / 1e6:.1f} MB in all, {s.seconds:.1f} s")
    if s.removed:
        print(f"  removed old generation(s) {', '.join(s.removed)} (--keep {args.keep})")


def cmd_restore(args: argparse.Namespace) -> None:
    """`mailyard restore DEST --data NEWDIR` (the whole store into a new
    data directory) or `mailyard restore DEST --account ADDRESS [--as-folder
    NAME]` (one account into the store of --data, served or not)."""
    from ..store import backup as bk

    gen = bk.find_generation(Path(args.dest), args.generation)
    if args.account is None:
        if args.as_folder:
            raise CLIError("--as-folder goes with --account")
        if not args.data:
            raise CLIError("name the new data directory: mailyard restore DEST --data NEWDIR")
        s = bk.restore_data(gen, Path(args.data), _progress)
        print(f"restored {gen} into {s.target}: {s.messages} messages in {s.mailboxes} mailboxes, "
              f"{s.files} other files, {s.bytes / 1e6:.1f} MB in {s.seconds:.1f} s")
        print(f"start it with: mailyard --data {s.target} serve")
        return
    if args.as_folder is not None and not args.as_folder.strip("/"):
        raise CLIError("--as-folder needs a folder name, e.g. Restored")

    async def run(store: Store) -> Any:
        return await bk.restore_account(gen, store, args.account, args.as_folder, _progress)

    d = require_data_dir(args)
    cfg = load_config(args)

    async def main() -> Any:
        # background off: the running server compacts and indexes
        store = open_store(d, cfg.store, background=False, max_mailboxes=cfg.limits.max_mailboxes)
        try:
            return await run(store)
        finally:
            await store.close()

    s = asyncio.run(main())
    where = f" under {args.as_folder}/" if args.as_folder else ""
    print(f"restored {args.account} from {gen}{where}: {s.messages} messages ({s.bytes / 1e6:.1f} MB) in "
          f"{s.mailboxes} mailboxes, {s.skipped} already there, {s.seconds:.1f} s")
    from ..transfer.progress import keywords_left_out_lines

    for line in keywords_left_out_lines(s.keywords_left_out):
        print(line)


def add_store_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("store", parents=[common], help="the store itself: bring its schema up to date")
    ssub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ssub.add_parser("migrate", parents=[common],
                    help="apply the store's pending schema migrations (SQLite or PostgreSQL, per [store] backend)")
    q = ssub.add_parser(
        "copy", parents=[common], help="copy this store into another one, or another one into this",
        description="Copy every domain, account, alias, list, mailbox (with its UIDs, flags and dates) and queued "
        "message from one store into another: --to postgresql://... moves an installation to PostgreSQL, --from "
        "postgresql://... into an SQLite data directory makes a backup. Resumable: run it again after an "
        "interruption and it continues; nothing is copied twice.")
    way = q.add_mutually_exclusive_group(required=True)
    way.add_argument("--to", metavar="TARGET", help="a postgresql:// URI or a data directory to copy this store into")
    way.add_argument("--from", dest="source", metavar="SOURCE",
                     help="a postgresql:// URI or a data directory to copy into this store")
    p.set_defaults(func=cmd_store)


def add_backup_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``backup`` and ``restore`` commands."""
    p = sub.add_parser(
        "backup", parents=[common],
        help="back up the data directory while the server runs (backup DEST), or check a backup "
        "(backup verify DEST)",
        usage="mailyard [--data DIR] backup DEST [--keep N]\n       mailyard backup verify DEST [--generation N]",
        description="backup DEST: write a new generation of the backup at DEST from --data, while the "
        "server runs; only what is new since the previous generation is read from the store. "
        "backup verify DEST: check every file of a generation against its checksums. "
        "Restore with: mailyard restore DEST (see mailyard restore --help).",
    )
    p.add_argument("words", nargs="+", metavar="[verify] DEST")
    p.add_argument("--keep", type=int, metavar="N", help="keep only the newest N generations (default: all)")
    p.add_argument("--generation", metavar="N", help="verify: the generation to check (default: the newest)")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser(
        "restore", parents=[common],
        help="restore a backup: the whole store into a new --data directory, or one --account into the "
        "store of --data (running or not)",
        usage="mailyard restore DEST --data NEWDIR [--generation N]\n"
        "       mailyard [--data DIR] restore DEST --account ADDRESS [--as-folder NAME] [--generation N]",
    )
    p.add_argument("dest", metavar="DEST", help="the backup directory (as given to mailyard backup)")
    p.add_argument("--account", metavar="ADDRESS", help="restore this account's mail only, into --data")
    p.add_argument("--as-folder", metavar="NAME",
                   help="with --account: put the restored folders under NAME (default: merge into the "
                   "folders of the same names; messages already there are skipped)")
    p.add_argument("--generation", metavar="N", help="the generation to restore (default: the newest)")
    p.set_defaults(func=cmd_restore)
