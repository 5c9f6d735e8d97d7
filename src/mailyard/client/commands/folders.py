"""``mailyard mail folders``, ``move``, ``delete`` and ``flag``: the folders
of an IMAP account and the messages' place and flags in them."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from ..config import ClientError
from .common import (
    add_command,
    add_folder_option,
    current_account,
    open_folder,
    parse_ids,
    terminal,
)


def cmd_folders(args: argparse.Namespace) -> None:
    from .. import transport

    _s, acct = current_account(args)
    with transport.imap(acct) as c:
        action = args.action or "list"
        if action == "list":
            out = terminal()
            subscribed = {n for _f, _d, n in c.list_sub_folders()}
            rows = []
            for flags, _delim, name in sorted(c.list_folders(), key=lambda x: (x[2] != "INBOX", x[2].lower())):
                special = " ".join(f.decode() for f in flags if f.lower() in
                                   (b"\\sent", b"\\trash", b"\\drafts", b"\\junk", b"\\archive", b"\\all", b"\\flagged"))
                if b"\\noselect" in {f.lower() for f in flags} or b"\\nonexistent" in {f.lower() for f in flags}:
                    rows.append((name, "-", "-", special, name in subscribed))
                    continue
                st = c.folder_status(name, [b"MESSAGES", b"UNSEEN"])
                rows.append((name, str(st.get(b"UNSEEN", 0)), str(st.get(b"MESSAGES", 0)), special, name in subscribed))
            w = max([6, *(len(r[0]) for r in rows)])
            print(f"{'FOLDER':<{w}}  {'UNREAD':>6}  {'TOTAL':>6}  SUB  SPECIAL-USE", file=out)
            for name, unseen, total, special, sub in rows:
                print(f"{name:<{w}}  {unseen:>6}  {total:>6}  {'yes' if sub else 'no':<3}  {special}", file=out)
            print(f"{len(rows)} folder(s)", file=out)
        elif action == "create":
            c.create_folder(args.name)
            if not args.no_subscribe:
                c.subscribe_folder(args.name)
            print(f"created folder {args.name}")
        elif action == "rename":
            c.rename_folder(args.name, args.new_name)
            print(f"renamed folder {args.name} to {args.new_name}")
        elif action == "delete":
            c.delete_folder(args.name)
            # RFC 9051 6.3.7: the server keeps the subscription of a deleted
            # mailbox, so a client that deletes one ends its subscription too
            with contextlib.suppress(transport.IMAPClientError):
                c.unsubscribe_folder(args.name)
            print(f"deleted folder {args.name} and the messages in it")
        elif action == "subscribe":
            c.subscribe_folder(args.name)
            print(f"subscribed to {args.name}")
        elif action == "unsubscribe":
            c.unsubscribe_folder(args.name)
            print(f"unsubscribed from {args.name}")


def _move(c: Any, uids: list[int], target: str) -> None:
    """MOVE (RFC 6851) when offered, else COPY + \\Deleted + UID EXPUNGE (RFC 4315)
    or, without UIDPLUS, nothing expunged (the user sees them marked deleted)."""
    if c.has_capability("MOVE"):
        c.move(uids, target)
        return
    c.copy(uids, target)
    c.add_flags(uids, [b"\\Deleted"])
    if c.has_capability("UIDPLUS"):
        c.uid_expunge(uids)


def _existing(c: Any, uids: list[int]) -> list[int]:
    found = set(c.search(["UID", ",".join(map(str, uids))]))
    missing = [u for u in uids if u not in found]
    if missing:
        raise ClientError(f"no message with UID {', '.join(map(str, missing))} in this folder")
    return uids


def cmd_move(args: argparse.Namespace) -> None:
    from .. import transport

    _s, acct = current_account(args)
    uids = parse_ids(args.id)
    with transport.imap(acct) as c:
        if args.target not in {n for _f, _d, n in c.list_folders()}:
            raise ClientError(f"no folder {args.target}; create it with: mailyard mail folders create {args.target}")
        open_folder(c, args.folder, readonly=False)
        _move(c, _existing(c, uids), args.target)
    print(f"moved {len(uids)} message(s) from {args.folder} to {args.target}")


def cmd_delete(args: argparse.Namespace) -> None:
    from .. import transport

    _s, acct = current_account(args)
    uids = parse_ids(args.id)
    with transport.imap(acct) as c:
        trash = transport.special_folder(c, b"\\Trash", acct.trash_folder, "Trash")
        open_folder(c, args.folder, readonly=False)
        _existing(c, uids)
        if args.expunge or args.folder == trash:
            c.add_flags(uids, [b"\\Deleted"])
            if c.has_capability("UIDPLUS"):
                c.uid_expunge(uids)  # RFC 4315: only these, not others marked \Deleted
            else:
                c.expunge()
            print(f"deleted {len(uids)} message(s) from {args.folder} for good")
        else:
            _move(c, uids, trash)
            print(f"moved {len(uids)} message(s) to {trash} (use --expunge to delete for good)")


FLAG_NAMES = {"seen": "\\Seen", "flagged": "\\Flagged", "answered": "\\Answered",
               "deleted": "\\Deleted", "draft": "\\Draft", "forwarded": "$Forwarded"}


def _flag_name(value: str) -> bytes:
    name = value.strip()
    if name.lower() in FLAG_NAMES:
        name = FLAG_NAMES[name.lower()]
    elif name.startswith("\\") and name[1:].lower() in FLAG_NAMES:
        name = FLAG_NAMES[name[1:].lower()]
    if not name or any(ch in name for ch in " ()]{%*\"") or not name.isascii():
        raise ClientError(f"not a flag: {value!r}")
    return name.encode("ascii")


def cmd_flag(args: argparse.Namespace) -> None:
    from .. import transport

    _s, acct = current_account(args)
    uids = parse_ids(args.id)
    add: list[bytes] = []
    remove: list[bytes] = []
    for op in args.flags:
        if op.startswith("+"):
            add.append(_flag_name(op[1:]))
        elif op.startswith("-"):
            remove.append(_flag_name(op[1:]))
        else:
            add.append(_flag_name(op))
    if not add and not remove:
        raise ClientError("which flags? e.g. mailyard mail flag 12 +flagged -seen")
    with transport.imap(acct) as c:
        open_folder(c, args.folder, readonly=False)
        _existing(c, uids)
        if add:
            c.add_flags(uids, add)
        if remove:
            c.remove_flags(uids, remove)
        result = c.get_flags(uids)
    for uid in uids:
        flags = " ".join(f.decode() if isinstance(f, bytes) else str(f) for f in result.get(uid, ()))
        print(f"{uid}: {flags or '(no flags)'}")


def add_folder_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    q = add_command(sub, common, "folders", "list folders with unread counts; create, rename, delete, (un)subscribe", cmd_folders)
    fsub = q.add_subparsers(dest="action", metavar="ACTION")
    fsub.add_parser("list", parents=[common], help="list folders (default)")
    f = fsub.add_parser("create", parents=[common], help="create a folder (and subscribe to it)")
    f.add_argument("name")
    f.add_argument("--no-subscribe", action="store_true", help="do not subscribe")
    f = fsub.add_parser("rename", parents=[common], help="rename a folder")
    f.add_argument("name")
    f.add_argument("new_name")
    for action, text in (("delete", "delete a folder and its messages"), ("subscribe", "subscribe to a folder"),
                         ("unsubscribe", "unsubscribe from a folder")):
        f = fsub.add_parser(action, parents=[common], help=text)
        f.add_argument("name")

    q = add_command(sub, common, "move", "move message(s) to another folder", cmd_move)
    q.add_argument("id", help="UID(s): 12, 12,14 or 12-15")
    q.add_argument("target", metavar="FOLDER", help="destination folder")
    add_folder_option(q)

    q = add_command(sub, common, "delete", "move message(s) to Trash (or --expunge for good)", cmd_delete)
    q.add_argument("id", help="UID(s): 12, 12,14 or 12-15")
    add_folder_option(q)
    q.add_argument("--expunge", action="store_true", help="delete for good instead of moving to Trash")

    q = add_command(sub, common, "flag", "add (+) or remove (-) flags, e.g. flag 12 +\\\\Flagged", cmd_flag,
            epilog="Flags: \\Seen \\Flagged \\Answered \\Deleted \\Draft or a keyword; the short names "
                   "seen, flagged, answered, deleted, draft, forwarded also work "
                   "(e.g. flag 12 +flagged -seen).")
    q.add_argument("id", help="UID(s): 12, 12,14 or 12-15")
    q.add_argument("flags", nargs="+", metavar="[+|-]FLAG", help="+FLAG adds, -FLAG removes, FLAG adds")
    add_folder_option(q)
