"""``mailyard import`` and ``mailyard export``: moving mail into accounts
from mbox files, Maildirs or an IMAP server, and out as Maildir++ or mboxrd
(the work is transfer/'s)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..store.api import Store
from .common import CLIError, require_data_dir, run_with_store


def _transfer_summary(summary: Any, verb: str, verbose: bool = False) -> None:
    for line in summary.lines(verb):
        print(line)
    shown = summary.warnings if verbose else summary.warnings[:20]
    for w in shown:
        print(f"warning: {w}", file=sys.stderr)
    if len(summary.warnings) > len(shown):
        print(f"warning: ... and {len(summary.warnings) - len(shown)} more (--verbose shows all)", file=sys.stderr)


def cmd_import(args: argparse.Namespace) -> None:
    """``mailyard import mbox|maildir|maildir-tree|imap``: see the parser's help texts."""
    from ..store.import_state import ImportState
    from ..transfer import imapsource, jobs
    from ..transfer.importer import ImportError_, QuotaFull
    from ..transfer.progress import Progress, Summary

    d = require_data_dir(args)
    summary = Summary()
    password = ""
    if args.kind == "imap":
        if not args.password_stdin:
            raise CLIError("give the source password on standard input with --password-stdin")
        password = sys.stdin.readline().rstrip("\r\n")
    if args.kind in ("mbox", "maildir", "maildir-tree"):
        for path in args.paths if args.kind == "mbox" else [args.dir]:
            if not Path(path).exists():
                raise CLIError(f"{path} does not exist")

    async def run(store: Store) -> None:
        state = ImportState.in_data_dir(d)
        progress = Progress("import")
        try:
            if args.kind == "maildir-tree":
                root = Path(args.dir)
                for entry in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
                    address = f"{entry.name}@{args.domain.lower()}"
                    mdir = jobs.maildir_of_user(entry)
                    if mdir is None:
                        summary.skip("not a Maildir (no cur/ or new/)", detail=str(entry))
                        continue
                    try:
                        importer = await jobs.open_importer(store, state, address, summary, progress)
                    except LookupError as exc:
                        summary.skip("no such account", detail=str(exc))
                        continue
                    await jobs.import_maildir(importer, mdir)
                return
            try:
                importer = await jobs.open_importer(store, state, args.to, summary, progress)
            except LookupError as exc:
                raise CLIError(str(exc)) from exc
            if args.kind == "mbox":
                await jobs.import_mbox(importer, [Path(p) for p in args.paths], args.folder)
            elif args.kind == "maildir":
                await jobs.import_maildir(importer, Path(args.dir))
            else:
                security = "tls" if args.tls else "starttls" if args.starttls else "none"
                port = args.port or (993 if args.tls else 143)
                settings = imapsource.SourceSettings(args.host, port, security, args.user, password,
                                                     verify=not args.insecure)
                await jobs.import_imap(importer, settings, args.folders or (), connections=args.connections)
        except (ImportError_, QuotaFull, imapsource.SourceError) as exc:
            raise CLIError(str(exc)) from exc
        finally:
            progress.finish()
            state.close()

    try:
        run_with_store(args, run)
    finally:
        _transfer_summary(summary, "imported", args.verbose)


def cmd_export(args: argparse.Namespace) -> None:
    """``mailyard export ADDRESS DEST --format maildir|mbox``."""
    from ..transfer import export
    from ..transfer.progress import Progress, Summary

    summary = Summary()

    async def run(store: Store) -> None:
        account = await store.get_account(args.address)
        if account is None:
            raise CLIError(f"no account {args.address}")
        progress = Progress("export")
        try:
            dest = Path(args.dest)
            if args.format == "maildir":
                await export.export_maildir(store, account, dest, summary, progress)
            else:
                await export.export_mbox(store, account, dest, summary, progress)
        except OSError as exc:
            raise CLIError(f"cannot write {args.dest}: {exc.strerror or exc}") from exc
        finally:
            progress.finish()

    run_with_store(args, run)
    _transfer_summary(summary, "exported", args.verbose)


def add_transfer_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``import`` and ``export`` commands."""
    p = sub.add_parser(
        "import", parents=[common], help="import mail from mbox files, Maildirs or an IMAP server",
        description="Import mail into existing accounts. Resumable and idempotent: a re-run imports "
        "nothing twice (the source keys are kept in DATA/import-state.sqlite). The account's quota applies.")
    isub = p.add_subparsers(dest="kind", required=True, metavar="SOURCE")
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("--verbose", action="store_true", help="print every warning, not only the first 20")
    q = isub.add_parser("mbox", parents=[common, verbose], help="mbox files (mboxo/mboxrd, LF or CRLF)")
    q.add_argument("paths", nargs="+", metavar="FILE")
    q.add_argument("--to", required=True, metavar="ADDRESS", help="the account to import into")
    q.add_argument("--folder", default="INBOX", metavar="NAME", help="target folder (default: INBOX)")
    q = isub.add_parser("maildir", parents=[common, verbose],
                        help="a Maildir with its Maildir++ folders (.Sent, .Lists.foo)")
    q.add_argument("dir", metavar="DIR")
    q.add_argument("--to", required=True, metavar="ADDRESS", help="the account to import into")
    q = isub.add_parser("maildir-tree", parents=[common, verbose],
                        help="one Maildir per user: DIR/USER/Maildir or DIR/USER into USER@DOMAIN")
    q.add_argument("dir", metavar="DIR")
    q.add_argument("--domain", required=True, help="the domain of the accounts (they must exist)")
    q = isub.add_parser("imap", parents=[common, verbose],
                        help="every folder of an account on an IMAP server, incremental on re-run")
    q.add_argument("--host", required=True)
    q.add_argument("--port", type=int, help="default 993 with --tls, else 143")
    tls = q.add_mutually_exclusive_group()
    tls.add_argument("--tls", action="store_true", help="implicit TLS (IMAPS)")
    tls.add_argument("--starttls", action="store_true", help="STARTTLS on the plain port")
    q.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
    q.add_argument("--user", required=True)
    q.add_argument("--password-stdin", action="store_true", help="read the source password from stdin")
    q.add_argument("--to", required=True, metavar="ADDRESS", help="the account to import into")
    q.add_argument("--folders", nargs="+", metavar="NAME", help="only these source folders")
    q.add_argument("--connections", type=int, default=4, help="folders read at once (default: 4)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "export", parents=[common], help="write an account's folders as Maildir++ or mboxrd",
        description="Export every folder of an account: Maildir++ (Dovecot serves it as it is) or one "
        "mboxrd file per folder.")
    p.add_argument("address")
    p.add_argument("dest", metavar="DEST")
    p.add_argument("--format", choices=("maildir", "mbox"), default="maildir")
    p.add_argument("--verbose", action="store_true", help="print every warning")
    p.set_defaults(func=cmd_export)
