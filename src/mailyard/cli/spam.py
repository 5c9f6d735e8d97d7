"""``mailyard spam``: each user's spam filing and the recorded reasons of a
spam decision."""

from __future__ import annotations

import argparse
from typing import Any

from ..store.api import Store
from .common import CLIError, load_config, require_data_dir, run_with_store


def cmd_spam(args: argparse.Namespace) -> None:
    """Per-user spam filing (account settings ``spam_threshold``,
    ``spam_allow``, ``spam_block``: spam/filing.py) and the decision record
    (store/spamlog.py)."""
    from ..spam import filing
    from ..store.spamlog import DecisionLog

    d = require_data_dir(args)
    cfg = load_config(args)
    if args.action == "explain":
        found = DecisionLog(d / "spam", cfg.spam.log_max_bytes).find(args.id)
        if not found:
            raise CLIError(f"no spam decision recorded for {args.id} (queue id or Message-ID)")
        for record in found:
            print(_explain(record))
        return

    async def run(store: Store) -> None:
        account = await store.get_account(args.user)
        if account is None:
            raise CLIError(f"no such user: {args.user}")
        changes: dict[str, Any] = {}
        current = filing.prefs(await store.get_settings(account.id))
        if args.action == "threshold" and args.score is not None:
            changes[filing.THRESHOLD] = args.score
        elif args.action in ("allow", "block", "unallow", "unblock"):
            key = filing.ALLOW if args.action.endswith("allow") else filing.BLOCK
            try:
                patterns = [filing.normalize_pattern(a) for a in args.addresses]
            except ValueError as exc:
                raise CLIError(str(exc)) from None
            have = list(current.allow if key == filing.ALLOW else current.block)
            if args.action.startswith("un"):
                have = [p for p in have if p not in patterns]
            else:
                have += [p for p in patterns if p not in have]
            changes[key] = have or None
        if changes:
            await store.set_settings(account.id, changes)
            current = filing.prefs(await store.get_settings(account.id))
        threshold = current.threshold if current.threshold is not None else cfg.spam.junk_threshold
        origin = "" if current.threshold is not None else " (the default, [spam] junk_threshold)"
        if args.action == "threshold":
            print(f"{account.address}: Junk at score {threshold:g}{origin}")
            return
        print(f"{account.address}")
        print(f"  junk threshold: {threshold:g}{origin}")
        print(f"  allowed senders: {', '.join(current.allow) or '(none)'}")
        print(f"  blocked senders: {', '.join(current.block) or '(none)'}")

    run_with_store(args, run)


def _explain(record: dict[str, Any]) -> str:
    """One recorded spam decision in words."""
    import datetime

    when = datetime.datetime.fromtimestamp(float(record.get("ts", 0)), datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"queue id {record.get('queue_id')}  Message-ID {record.get('message_id') or '(none)'}  {when}",
        f"  from {record.get('from') or '<>'} to {', '.join(record.get('to', []))}",
        f"  client {record.get('ip')} HELO {record.get('helo')!r}: reverse DNS {record.get('rdns')}"
        + (f" ({record['rdns_name']})" if record.get("rdns_name") else "") + f", HELO check {record.get('helo_check')}",
        f"  decision: {record.get('action')}, score {record.get('score')}"
        + (f", reply {record['reply']!r}" if record.get("reply") else ""),
    ]
    tests = record.get("tests") or {}
    lines.append("  tests: " + (", ".join(f"{n}={p:g}" for n, p in tests.items()) if tests else "(none)"))
    rspamd = record.get("rspamd")
    if rspamd:
        lines.append("  rspamd: " + (f"unavailable ({rspamd['error']})" if "error" in rspamd else
                                      f"{rspamd.get('action')}, score {rspamd.get('score')} of {rspamd.get('required')}"))
    for problem in record.get("problems") or []:
        lines.append(f"  not counted: {problem}")
    for user, f in (record.get("users") or {}).items():
        where = "Junk" if f.get("junk") else "INBOX"
        why = f" ({f['reason']})" if f.get("reason") else ""
        lines.append(f"  {user}: {where}, threshold {f.get('required')}{why}")
    return "\n".join(lines)


def add_spam_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("spam", parents=[common], help="per-user spam filing and why a message was judged spam")
    ssub = p.add_subparsers(dest="action", required=True)
    q = ssub.add_parser("threshold", parents=[common], help="show or set the score at which USER's mail goes to Junk")
    q.add_argument("user", help="the account, user@domain")
    q.add_argument("score", nargs="?", type=float, help="the new threshold (default: [spam] junk_threshold)")
    for action, text in (("allow", "never file mail from these senders in Junk"),
                         ("block", "always file mail from these senders in Junk"),
                         ("unallow", "remove senders from the allow list"),
                         ("unblock", "remove senders from the block list")):
        q = ssub.add_parser(action, parents=[common], help=text)
        q.add_argument("user", help="the account, user@domain")
        q.add_argument("addresses", nargs="+", metavar="ADDR", help="an address, or @domain (and its subdomains)")
    q = ssub.add_parser("show", parents=[common], help="USER's threshold, allow and block lists")
    q.add_argument("user", help="the account, user@domain")
    q = ssub.add_parser("explain", parents=[common], help="why a received message was accepted, filed or refused")
    q.add_argument("id", metavar="QUEUE-ID-OR-MESSAGE-ID")
    p.set_defaults(func=cmd_spam)
