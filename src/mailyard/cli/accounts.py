"""``mailyard user``: accounts, their passwords and APOP secrets, quotas,
submission limits and the addresses they may send as."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ..spam.limits import MESSAGES_KEY, RECIPIENTS_KEY, account_limits
from ..store.api import KEEP, Quota, Store, StoreError
from .common import CLIError, credentials, load_config, read_password, run_with_store


def cmd_user(args: argparse.Namespace) -> None:
    if args.action in ("add", "passwd"):
        run_with_store(args, lambda store: _check_address_first(store, args.action, args.address))
        password = read_password(args, args.address)
        creds = credentials(password, apop=args.apop)

    async def run(store: Store) -> None:
        if args.action == "add":
            account = await store.add_account(args.address, **creds)
            print(f"added user {account.address}")
            if creds["apop_secret"]:
                print(f"APOP secret for {account.address}: {creds['apop_secret']}")
        elif args.action == "passwd":
            await store.set_password(args.address, **creds)
            print(f"changed the password of {args.address}")
            if creds["apop_secret"]:
                print(f"APOP secret for {args.address}: {creds['apop_secret']}")
        elif args.action == "remove":
            await _remove_user(store, args.address, args.yes)
        elif args.action == "apop-secret":
            await _apop_secret(store, args)
        elif args.action in ("allow-from", "disallow-from"):
            if args.action == "allow-from":
                grants = await store.allow_senders(args.address, args.senders)
            else:
                grants = await store.disallow_senders(args.address, args.senders)
            shown = ", ".join(grants) if grants else "(only its own addresses)"
            print(f"{args.address} may also send as: {shown}")
        elif args.action == "limits":
            await _user_limits(store, args)
        elif args.action == "quota":
            storage = getattr(args, "storage", KEEP)  # not given: left as it is
            messages = getattr(args, "messages", KEEP)
            if storage == KEEP and messages == KEEP:
                account = await store.get_account(args.address)
                if account is None:
                    raise CLIError(f"no such user: {args.address}")
                quota = await store.get_quota(account.id)
            else:
                quota = await store.set_quota(args.address, storage=storage, messages=messages)
            print(f"{args.address}: {describe_quota(quota)}")
        else:
            for account in await store.list_accounts(args.domain):
                quota = await store.get_quota(account.id)
                if quota.storage_limit is None and quota.messages_limit is None:
                    print(account.address)
                else:
                    print(f"{account.address}  {describe_quota(quota)}")

    run_with_store(args, run)


async def _remove_user(store: Store, address: str, yes: bool) -> None:
    """Delete an account, its mail, and its address from every alias and list
    (a list would otherwise keep a member whose copy goes nowhere). On a
    terminal it asks first; without one, only with ``--yes``."""
    account = await store.get_account(address)
    if account is None:
        raise CLIError(f"no account {address}")
    usage = await store.get_quota(account.id)
    what = (f"{account.address} and its {usage.messages_used} message(s) "
            f"({_human_size(usage.storage_used)})")
    if not yes:
        if not sys.stdin.isatty():
            raise CLIError(f"this would delete {what}; without a terminal to confirm on, pass --yes")
        answer = input(f"Delete {what}? This cannot be undone. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise CLIError("nothing removed")
    await store.remove_account(account.address)
    aliases, lists = await store.remove_address_everywhere(account.address)
    print(f"removed user {account.address} and its {usage.messages_used} message(s)")
    if aliases:
        print(f"removed {account.address} from the alias(es) {', '.join(aliases)}")
    if lists:
        print(f"removed {account.address} from the list(s) {', '.join(lists)}")


def _human_size(octets: int) -> str:
    """Octets for people: 1.5 MB, 320 KB (powers of 1024, as `user quota`)."""
    for unit in ("T", "G", "M", "K"):
        if octets >= _SIZE_UNITS[unit]:
            return f"{octets / _SIZE_UNITS[unit]:.1f} {unit}B"
    return f"{octets} bytes"


async def _check_address_first(store: Store, action: str, address: str) -> None:
    """Refuse `user add` for a domain not served here (or an existing
    account) and `user passwd` for no account, before asking for a password."""
    from ..store.names import normalize_address

    try:
        addr = normalize_address(address)
    except StoreError as exc:
        raise CLIError(str(exc)) from exc
    domain = addr.rpartition("@")[2]
    if action == "add":
        if not await store.is_local_domain(domain):
            raise CLIError(f"{domain} is not a local domain; add it first (mailyard domain add {domain})")
        if await store.get_account(addr) is not None:
            raise CLIError(f"account {addr} exists already")
    elif await store.get_account(addr) is None:
        raise CLIError(f"no account {addr}")


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_storage_limit(text: str) -> int | None:
    """``--storage``: octets with an optional K/M/G/T suffix (powers of 1024,
    as IMAP counts STORAGE in units of 1024 octets, RFC 9208 5.1), or
    ``none`` for no limit."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    if t == "NONE":
        return None
    unit = t[-1:] if t[-1:] in _SIZE_UNITS else ""
    number = t[: len(t) - len(unit)]
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500M, 2G, none)") from None
    if value < 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(value * _SIZE_UNITS[unit])


async def _user_limits(store: Store, args: argparse.Namespace) -> None:
    """``user limits``: show or set an account's submission limits (spam/limits.py),
    kept in its settings; ``default`` removes the account's own value."""
    account = await store.get_account(args.address)
    if account is None:
        raise CLIError(f"no such user: {args.address}")
    changes: dict[str, Any] = {}
    for option, key in (("messages_per_hour", MESSAGES_KEY), ("recipients_per_day", RECIPIENTS_KEY)):
        value = getattr(args, option, KEEP)
        if value != KEEP:
            changes[key] = value  # None: back to the server's default
    settings = await store.set_settings(account.id, changes) if changes else await store.get_settings(account.id)
    spam = load_config(args).spam
    per_hour, per_day = account_limits(settings, spam.messages_per_hour, spam.recipients_per_day)

    def show(value: int, key: str, unit: str) -> str:
        text = f"{value} {unit}" if value else f"no limit on {unit}"
        return text + ("" if key in settings else " (server default)")

    print(f"{account.address}: {show(per_hour, MESSAGES_KEY, 'messages per hour')}, "
          f"{show(per_day, RECIPIENTS_KEY, 'recipients per day')}")


def _count_or(word: str, what: str) -> Callable[[str], int | None]:
    """An argparse type: a count of at least 0, or ``word`` (any case) for
    None; a refusal names ``what`` was expected."""
    def parse(text: str) -> int | None:
        if text.strip().lower() == word:
            return None
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}")
        return value
    return parse


#: ``--messages-per-hour`` / ``--recipients-per-day``: a count (0: no limit),
#: or ``default`` for the server's ``[spam]`` value.
parse_send_limit = _count_or("default", "a count (a number, or 'default')")
#: ``--messages``: a message count, or ``none`` for no limit.
parse_count_limit = _count_or("none", "a number of messages")


def _size(octets: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if octets >= _SIZE_UNITS[unit] and octets % _SIZE_UNITS[unit] == 0:
            return f"{octets // _SIZE_UNITS[unit]}{unit}"
    for unit in ("T", "G", "M", "K"):
        if octets >= _SIZE_UNITS[unit]:
            return f"{octets / _SIZE_UNITS[unit]:.1f}{unit}"
    return str(octets)


def describe_quota(quota: Quota) -> str:
    """One line: usage of each resource against its limit."""
    storage = " (no limit)" if quota.storage_limit is None else f" of {_size(quota.storage_limit)}"
    messages = " (no limit)" if quota.messages_limit is None else f" of {quota.messages_limit}"
    return f"storage {_size(quota.storage_used)}{storage}, messages {quota.messages_used}{messages}"


async def _apop_secret(store: Store, args: argparse.Namespace) -> None:
    """`user apop-secret`: give an account a new random APOP secret (printed), show
    it, or remove it. APOP (RFC 1939 section 7) needs the secret in clear on the
    server, so it is never the login password; the password is left unchanged."""
    from ..auth.passwords import make_apop_secret

    account = await store.get_account(args.address)
    if account is None:
        raise CLIError(f"no such user: {args.address}")
    if args.show:
        print(account.apop_secret or f"{account.address} has no APOP secret (APOP is off for it)")
        return
    secret = None if args.disable else make_apop_secret()
    await store.set_password(
        account.address, account.password_hash, apop_secret=secret, scram_sha256=account.scram_sha256
    )
    if secret is None:
        print(f"removed the APOP secret of {account.address} (APOP is off for it)")
    else:
        print(f"APOP secret for {account.address}: {secret}")


def add_user_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("user", parents=[common], help="manage mail accounts")
    usub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("add", "create an account (INBOX and special folders)"), ("passwd", "set a password")):
        q = usub.add_parser(action, parents=[common], help=text)
        q.add_argument("address", help="user@domain")
        q.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
        q.add_argument(
            "--apop", action="store_true",
            help="also generate an APOP secret (POP3 APOP needs a secret kept in clear; it is printed)",
        )
    q = usub.add_parser(
        "apop-secret", parents=[common],
        help="set a new random POP3 APOP secret and print it (or --show / --disable)",
    )
    q.add_argument("address")
    mode = q.add_mutually_exclusive_group()
    mode.add_argument("--show", action="store_true", help="print the current secret")
    mode.add_argument("--disable", action="store_true", help="remove the secret: APOP off")
    q = usub.add_parser(
        "remove", parents=[common],
        help="delete an account and all its mail, and take it out of aliases and lists (asks first)",
    )
    q.add_argument("address")
    q.add_argument("--yes", action="store_true", help="do not ask (for scripts; needed without a terminal)")
    q = usub.add_parser(
        "quota", parents=[common],
        help="show or set an account's storage and message-count limits (IMAP QUOTA, SMTP 452 4.2.2)",
    )
    q.add_argument("address", help="the account, user@domain")
    q.add_argument("--storage", type=parse_storage_limit, default=argparse.SUPPRESS, metavar="SIZE",
                   help="storage limit: octets, or with K/M/G/T (powers of 1024), e.g. 2G; 'none' removes it")
    q.add_argument("--messages", type=parse_count_limit, default=argparse.SUPPRESS, metavar="N",
                   help="message-count limit, e.g. 100000; 'none' removes it")
    q = usub.add_parser(
        "limits", parents=[common],
        help="show or set what an account may submit (451 4.7.1 over it): messages per hour, recipients per day",
    )
    q.add_argument("address", help="the account, user@domain")
    q.add_argument("--messages-per-hour", type=parse_send_limit, default=argparse.SUPPRESS, metavar="N",
                   help="messages per hour (0: no limit; 'default': [spam] messages_per_hour)")
    q.add_argument("--recipients-per-day", type=parse_send_limit, default=argparse.SUPPRESS, metavar="N",
                   help="recipients per day (0: no limit; 'default': [spam] recipients_per_day)")
    q = usub.add_parser("list", parents=[common], help="list accounts")
    q.add_argument("--domain", help="only this domain")
    q = usub.add_parser(
        "allow-from", parents=[common],
        help="let an account also send as other addresses (From, Sender, MAIL FROM), e.g. a shared role address",
    )
    q.add_argument("address", help="the account, user@domain")
    q.add_argument("senders", nargs="+", metavar="FROM",
                   help="an address, or a pattern where * is any run of characters (*@example.org)")
    q = usub.add_parser(
        "disallow-from", parents=[common],
        help="withdraw addresses granted with allow-from (all of them when none is given)",
    )
    q.add_argument("address", help="the account, user@domain")
    q.add_argument("senders", nargs="*", metavar="FROM")
    p.set_defaults(func=cmd_user)
