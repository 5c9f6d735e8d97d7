"""``mailyard mail fetch``: new messages downloaded over POP3 (RFC 1939) into a
local Maildir, each UIDL remembered so that none is fetched twice."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import ClientError
from .common import add_command, current_account, err


def cmd_fetch(args: argparse.Namespace) -> None:
    from .. import transport
    from ..maildir import Maildir, UIDLState

    store, acct = current_account(args)
    target = Path(args.maildir or acct.maildir or store.dir / "maildir" / acct.name).expanduser()
    box = Maildir(target)
    state = UIDLState(store.state_dir() / f"{acct.name}.pop3-uidl")
    known = state.load()
    fetched = skipped = deleted = 0
    total_bytes = 0
    with transport.pop3(acct) as p:
        try:
            listing = p.uidl()[1]
            uidls = {}
            for line in listing:
                num, _sp, uidl = line.decode("utf-8", "replace").partition(" ")
                uidls[int(num)] = uidl.strip()
        except Exception as exc:  # RFC 1939 UIDL is optional
            if args.keep:
                raise ClientError(f"POP3 server has no UIDL ({exc}); --keep needs it to avoid fetching twice") from exc
            uidls = {}
            for line in p.list()[1]:
                num = int(line.split()[0])
                uidls[num] = ""
        new = [(n, u) for n, u in sorted(uidls.items()) if not u or u not in known]
        skipped = len(uidls) - len(new)
        if new:
            err(f"{len(new)} new message(s) on {acct.pop3.describe()}, {skipped} already fetched")
        for i, (num, uidl) in enumerate(new, 1):
            lines = p.retr(num)[1]
            raw = b"\r\n".join(lines) + b"\r\n"
            box.add(raw)
            if uidl:
                state.add(uidl)  # remembered as soon as the message is safely on disk
            fetched += 1
            total_bytes += len(raw)
            err(f"  [{i}/{len(new)}] {len(raw)} bytes")
            if not args.keep:
                p.dele(num)
                deleted += 1
        if not args.keep:
            # Already-fetched messages still on the server (a crash before QUIT last time).
            for num, uidl in uidls.items():
                if uidl and uidl in known:
                    p.dele(num)
                    deleted += 1
        p.quit()  # RFC 1939 6: deletions happen only now
    state.prune({u for u in uidls.values() if u} if args.keep else set())
    mode = f"deleted {deleted} from the server" if not args.keep else "left them on the server"
    print(f"fetched {fetched} new message(s) ({total_bytes} bytes) into {target}; "
          f"{skipped} already fetched; {mode}")


def add_fetch_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    q = add_command(sub, common, "fetch", "download new messages over POP3 into a local Maildir", cmd_fetch)
    q.add_argument("--pop3", action="store_true", default=True, help="use POP3 (the only method; default)")
    q.add_argument("--keep", action="store_true", help="leave the messages on the server (UIDLs remembered)")
    q.add_argument("--maildir", metavar="DIR", help="Maildir to deliver to (default: the account's)")
