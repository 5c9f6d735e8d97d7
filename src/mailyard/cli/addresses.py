"""``mailyard domain``, ``alias`` and ``list``: the domains served here and
the addresses that are no account (aliases, catch-alls, mailing lists)."""

from __future__ import annotations

import argparse
from typing import Any

from ..store.api import Store
from .common import CLIError, data_dir, run_with_store
from .dnsrecords import ensure_dkim_keys


async def add_domain(store: Store, domain: str) -> None:
    """Add a domain and make sure mail to its postmaster lands somewhere
    (RFC 5321 4.5.1: postmaster must be accepted for every domain): an account
    with a locked password, until an admin sets one or replaces it."""
    await store.add_domain(domain)
    postmaster = f"postmaster@{domain.lower()}"
    if await store.get_account(postmaster) is None and await store.get_alias(postmaster) is None:
        await store.add_account(postmaster, "!locked")


def cmd_domain(args: argparse.Namespace) -> None:
    async def run(store: Store) -> None:
        if args.action == "alias":
            if args.alias_action == "add":
                await store.add_domain_alias(args.alias, args.target)
                print(f"{args.alias.lower()} -> {args.target.lower()}: mail for any address @{args.alias.lower()} "
                      f"goes to the same address @{args.target.lower()}")
            elif args.alias_action == "remove":
                await store.remove_domain_alias(args.alias)
                print(f"removed domain alias {args.alias.lower()}")
            else:
                for alias, target in (await store.list_domain_aliases()).items():
                    print(f"{alias} -> {target}")
        elif args.action == "add":
            await add_domain(store, args.domain)
            print(f"added domain {args.domain.lower()} (postmaster@{args.domain.lower()} receives its postmaster mail)")
            ensure_dkim_keys(data_dir(args), args.domain)
        elif args.action == "remove":
            postmaster = await store.get_account(f"postmaster@{args.domain}")
            if postmaster is not None and postmaster.password_hash == "!locked":
                await store.remove_account(postmaster.address)
            await store.remove_domain(args.domain)
            print(f"removed domain {args.domain.lower()}")
        else:
            aliases = await store.list_domain_aliases()
            for name in await store.list_domains():
                print(f"{name} (alias of {aliases[name]})" if name in aliases else name)

    run_with_store(args, run)


def cmd_alias(args: argparse.Namespace) -> None:
    async def run(store: Store) -> None:
        if args.action == "add":
            await store.add_alias(args.source, args.targets)
            print(f"{args.source} -> {', '.join(await store.get_alias(args.source) or [])}")
        elif args.action == "remove":
            await store.remove_alias(args.source, args.targets)
            print(f"removed {'targets of ' if args.targets else ''}alias {args.source}")
        else:
            for source, targets in (await store.list_aliases()).items():
                label = "  (catch-all)" if source.startswith("@") else ""
                print(f"{source} -> {', '.join(targets)}{label}")

    run_with_store(args, run)


def cmd_list(args: argparse.Namespace) -> None:
    async def run(store: Store) -> None:
        if args.action == "add":
            await store.add_list(args.address)
            print(f"created list {args.address}")
        elif args.action == "remove":
            await store.remove_list(args.address)
            print(f"removed list {args.address}")
        elif args.action == "subscribe":
            for member in args.members:
                await store.subscribe_list(args.address, member)
            print(f"subscribed {', '.join(args.members)} to {args.address}")
        elif args.action == "unsubscribe":
            for member in args.members:
                await store.unsubscribe_list(args.address, member)
            print(f"unsubscribed {', '.join(args.members)} from {args.address}")
        elif args.action == "members":
            members = await store.get_list_members(args.address)
            if members is None:
                raise CLIError(f"no list {args.address}")
            for member in members:
                print(member)
        else:
            for address, members in (await store.list_lists()).items():
                print(f"{address} ({len(members)} members)")

    run_with_store(args, run)


def add_domain_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("domain", parents=[common], help="manage the mail domains served here")
    dsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("add", "serve a new domain"), ("remove", "stop serving a domain")):
        q = dsub.add_parser(action, parents=[common], help=text)
        q.add_argument("domain")
    dsub.add_parser("list", parents=[common], help="list the domains (alias domains with their target)")
    q = dsub.add_parser(
        "alias", parents=[common],
        help="domain aliases: every address of ALIAS delivered as the same local part at TARGET",
    )
    dasub = q.add_subparsers(dest="alias_action", required=True, metavar="ACTION")
    r = dasub.add_parser("add", parents=[common], help="serve ALIAS as another name of the local domain TARGET")
    r.add_argument("alias", help="the alias domain, e.g. example.net")
    r.add_argument("target", help="a local domain, e.g. example.org")
    r = dasub.add_parser("remove", parents=[common], help="stop serving an alias domain")
    r.add_argument("alias")
    dasub.add_parser("list", parents=[common], help="list the domain aliases")
    p.set_defaults(func=cmd_domain)


def add_alias_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "alias", parents=[common],
        help="manage aliases (address -> one or more addresses; @domain: the domain's catch-all)",
    )
    asub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = asub.add_parser(
        "add", parents=[common],
        help="create an alias or add targets to it; source @domain is a catch-all (mail for local parts "
        "that are no user, alias or list)",
    )
    q.add_argument("source", help="user@domain, or @domain for the catch-all")
    q.add_argument("targets", nargs="+", metavar="target")
    q = asub.add_parser("remove", parents=[common], help="remove an alias, or some of its targets")
    q.add_argument("source")
    q.add_argument("targets", nargs="*", metavar="target")
    asub.add_parser("list", parents=[common], help="list aliases")
    p.set_defaults(func=cmd_alias)


def add_list_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("list", parents=[common], help="manage mailing lists")
    lsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("add", "create a list"), ("remove", "delete a list"), ("members", "show members")):
        q = lsub.add_parser(action, parents=[common], help=text)
        q.add_argument("address")
    for action, text in (("subscribe", "add members"), ("unsubscribe", "remove members")):
        q = lsub.add_parser(action, parents=[common], help=text)
        q.add_argument("address")
        q.add_argument("members", nargs="+", metavar="member")
    lsub.add_parser("list", parents=[common], help="list the lists")
    p.set_defaults(func=cmd_list)
