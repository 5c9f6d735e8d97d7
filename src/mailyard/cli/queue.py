"""``mailyard queue``: the outbound mail queue (delivery/queue.py) seen and
managed from the command line."""

from __future__ import annotations

import argparse
from typing import Any

from ..store.api import Store
from .common import CLIError, run_with_store


def cmd_queue(args: argparse.Namespace) -> None:
    """`mailyard queue list|show ID|retry [ID]|delete ID` (delivery/queue.py)."""
    import time as _time

    def when(ts: float) -> str:
        delta = ts - _time.time()
        stamp = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(ts))
        return f"{stamp} (now)" if delta <= 0 else f"{stamp} (in {int(delta)}s)"

    async def run(store: Store) -> None:
        if args.action == "list":
            entries = await store.queue_list()
            pending = sum(len(e.pending) for e in entries)
            print(f"{len(entries)} message(s) in the queue, {pending} recipient(s) pending")
            for e in entries:
                due = min((r.next_attempt for r in e.pending), default=None)
                domains = sorted({r.domain for r in e.pending})
                print(
                    f"{e.id:>8}  {e.size:>9}  <{e.reverse_path}>  {len(e.pending)} rcpt(s) at "
                    f"{', '.join(domains)}  next: {when(due) if due is not None else '-'}"
                )
        elif args.action == "show":
            e = await store.queue_entry(args.id)
            if e is None:
                raise CLIError(f"no queue entry {args.id}")
            print(f"id:           {e.id}")
            print(f"from:         <{e.reverse_path}>")
            print(f"size:         {e.size}")
            print(f"queued:       {_time.strftime('%Y-%m-%d %H:%M:%S', _time.localtime(e.created))}")
            if e.envid or e.ret:
                print(f"dsn:          ENVID={e.envid or '-'} RET={e.ret or '-'}")
            for r in e.recipients:
                extra = f"  next: {when(r.next_attempt)}" if r.state == "pending" else ""
                print(f"rcpt:         <{r.address}> {r.state}, {r.attempts} attempt(s){extra}")
                if r.last_reply:
                    print(f"              last: {r.last_reply}" + (f" ({r.last_host})" if r.last_host else ""))
            for a in e.attempts:
                stamp = _time.strftime("%H:%M:%S", _time.localtime(a.ts))
                print(f"attempt:      {stamp} {a.domain} via {a.host or '-'}: {a.outcome}")
        elif args.action == "retry":
            n = await store.queue_retry(args.id)
            print(f"{n} recipient(s) due now; a running server picks them up within its poll interval")
        elif args.action == "delete":
            await store.queue_delete(args.id)
            print(f"deleted queue entry {args.id} (no bounce sent)")

    run_with_store(args, run)


def add_queue_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("queue", parents=[common], help="inspect and manage the outbound mail queue")
    qsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    qsub.add_parser("list", parents=[common], help="queued messages with counts and next attempt times")
    q = qsub.add_parser("show", parents=[common], help="one entry: recipients, replies, attempt history")
    q.add_argument("id", type=int)
    q = qsub.add_parser("retry", parents=[common], help="make one entry (or every entry) due now")
    q.add_argument("id", type=int, nargs="?")
    q = qsub.add_parser("delete", parents=[common], help="remove an entry without delivering it")
    q.add_argument("id", type=int)
    p.set_defaults(func=cmd_queue)
