"""``mailyard sieve``: an account's Sieve scripts, checking a script, and a
dry run of one on a message."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..store.api import Store
from .common import CLIError, load_config, require_data_dir, run_with_store


def cmd_sieve(args: argparse.Namespace) -> None:
    """``mailyard sieve``: a user's Sieve scripts (delivery/sieve.py keeps
    them under DATA/sieve), checking a script, and a dry run on a message."""
    from ..delivery.sieve import ScriptProblem, ScriptStore
    from ..sieve import (
        Envelope,
        Limits,
        SieveError,
        SieveRuntimeError,
        compile_script,
        run,
        verdict_from_header,
    )

    def read_text(path: str | None) -> str:
        try:
            return sys.stdin.read() if path in (None, "-") else Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"cannot read {path}: {exc}") from exc

    if args.action == "check":
        try:
            script = compile_script(read_text(args.file))
        except SieveError as exc:
            raise CLIError(f"{args.file}: {exc}") from exc
        print(f"{args.file}: OK ({script.rules} commands and tests; requires "
              f"{', '.join(sorted(script.require)) or 'nothing'})")
        return
    d = require_data_dir(args)
    cfg = load_config(args)
    scripts = ScriptStore(d / "sieve")

    async def find(store: Store) -> Any:
        account = await store.get_account(args.address)
        if account is None:
            raise CLIError(f"no account {args.address}")
        return account

    account = run_with_store(args, find)
    try:
        if args.action == "list":
            for name, active in scripts.list(account.id):
                print(f"{name}{'  (active)' if active else ''}")
        elif args.action == "put":
            try:
                scripts.put(account.id, args.name, read_text(args.file))
            except SieveError as exc:
                raise CLIError(f"script {args.name!r} not stored: {exc}") from exc
            if args.activate:
                scripts.activate(account.id, args.name)
            print(f"stored {args.name!r} for {account.address}{' (active)' if args.activate else ''}")
        elif args.action == "get":
            sys.stdout.write(scripts.get(account.id, args.name))
        elif args.action == "activate":
            scripts.activate(account.id, args.name)
            print(f"{args.name!r} is the active script of {account.address}")
        elif args.action == "deactivate":
            scripts.activate(account.id, None)
            print(f"no script is active for {account.address}")
        elif args.action == "delete":
            scripts.delete(account.id, args.name)
            print(f"deleted {args.name!r}")
        elif args.action == "test":
            if args.script:
                text = read_text(args.script)
            else:
                name = scripts.active_name(account.id)
                if name is None:
                    raise CLIError(f"{account.address} has no active script (give one with --script)")
                text = scripts.get(account.id, name)
            try:
                script = compile_script(text)
            except SieveError as exc:
                raise CLIError(str(exc)) from exc
            try:
                message = sys.stdin.buffer.read() if args.message == "-" else Path(args.message).read_bytes()
            except OSError as exc:
                raise CLIError(f"cannot read {args.message}: {exc}") from exc
            # the file is the operator's (a stored copy): its X-Spam-* verdict
            # stands for this server's, which spamtest reads (RFC 5235)
            spam = verdict_from_header(_first_field(message, "x-spam-status"), _first_field(message, "x-spam-score"),
                                       cfg.spam.junk_threshold)
            envelope = Envelope(args.sender if args.sender is not None else "", args.rcpt or account.address, spam)
            limits = Limits(separator=cfg.delivery.recipient_delimiter)
            try:
                result = run(script, message, envelope, limits)
            except SieveRuntimeError as exc:
                print(f"error: {exc}: the message would be kept in INBOX")
                return
            for line in result.describe():
                print(line)
    except ScriptProblem as exc:
        raise CLIError(str(exc)) from exc


def _first_field(message: bytes, name: str) -> str | None:
    """The first value of the header field ``name`` of ``message``, unfolded; None if absent."""
    from ..message.headers import bytes_to_text, split_fields
    from ..message.parse import split_header_body

    header, _body = split_header_body(message)
    return next((bytes_to_text(v) for n, v in split_fields(header) if n.lower() == name), None)


def add_sieve_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("sieve", parents=[common], help="Sieve filters of an account (RFC 5228): scripts, checks, "
                       "dry runs")
    ssub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = ssub.add_parser("list", parents=[common], help="the account's scripts, the active one marked")
    q.add_argument("address")
    q = ssub.add_parser("put", parents=[common], help="check and store a script (from FILE or standard input)")
    q.add_argument("address")
    q.add_argument("name")
    q.add_argument("file", nargs="?", help="the script file; - or none: standard input")
    q.add_argument("--activate", action="store_true", help="make it the active script too")
    for action, text in (("get", "print a script"), ("activate", "make a script the one run at delivery"),
                         ("delete", "delete a script (not the active one)")):
        q = ssub.add_parser(action, parents=[common], help=text)
        q.add_argument("address")
        q.add_argument("name")
    q = ssub.add_parser("deactivate", parents=[common], help="run no script at delivery")
    q.add_argument("address")
    q = ssub.add_parser("check", parents=[common], help="compile a script file and report the first error")
    q.add_argument("file", help="the script file; - for standard input")
    q = ssub.add_parser("test", parents=[common],
                        help="run the active script (or --script) on a message file and print the actions, "
                        "delivering nothing")
    q.add_argument("address")
    q.add_argument("message", help="the message file (RFC 5322); - for standard input")
    q.add_argument("--script", help="a script file instead of the active script")
    q.add_argument("--from", dest="sender", help="the envelope sender (default: the null sender)")
    q.add_argument("--to", dest="rcpt", help="the envelope recipient (default: the account's address)")
    p.set_defaults(func=cmd_sieve)
