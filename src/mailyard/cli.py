"""The ``mailyard`` command: set up a data directory, administer domains, users,
aliases and lists, and run the server.

Every command takes ``--data DIR`` (default ``$MAILYARD_DATA`` or
``./mailyard-data``) and ``--config FILE`` (default ``config.toml`` in the
data directory). Errors are one line saying what is wrong and what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import __version__, logs
from .config import Config, ConfigError
from .spam.limits import MESSAGES_KEY, RECIPIENTS_KEY, account_limits
from .store import migrate_store, open_store, store_exists
from .store.api import KEEP, Quota, Store, StoreError

DEMO_USERS = ("alice", "bob")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


# --- helpers ------------------------------------------------------------------


def data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data or os.environ.get("MAILYARD_DATA") or "mailyard-data")


def config_path(args: argparse.Namespace) -> Path:
    return Path(args.config) if args.config else data_dir(args) / "config.toml"


def load_config(args: argparse.Namespace) -> Config:
    path = config_path(args)
    if args.config and not path.exists():
        raise CLIError(f"config file {path} does not exist")
    return Config.load(path)


def require_data_dir(args: argparse.Namespace) -> Path:
    d = data_dir(args)
    if not store_exists(d) and not (config_path(args).exists() and load_config(args).store.backend == "postgresql"):
        raise CLIError(
            f"{d} is not a mailyard data directory; create one with: mailyard --data {d} init --domain YOUR.DOMAIN"
        )
    return d


def run_with_store(args: argparse.Namespace, fn: Callable[[Store], Awaitable[Any]]) -> Any:
    d = require_data_dir(args)
    cfg = load_config(args)

    async def main() -> Any:
        store = open_store(d, cfg.store)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(main())


def read_password(args: argparse.Namespace, address: str) -> str:
    if getattr(args, "password_stdin", False):
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise CLIError("no terminal to ask for a password; pass it with --password-stdin")
        password = getpass.getpass(f"Password for {address}: ")
        if getpass.getpass("Again: ") != password:
            raise CLIError("the passwords differ; nothing changed")
    if len(password) < 8:
        raise CLIError("a password needs at least 8 characters")
    return password


def credentials(password: str, apop: bool = False) -> dict[str, Any]:
    from .auth.passwords import Credentials

    creds = Credentials.from_password(password, apop=apop)
    return {
        "password_hash": creds.password_hash,
        "apop_secret": creds.apop_secret,
        "scram_sha256": creds.scram_sha256,
    }


# --- commands -----------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> None:
    d = data_dir(args)
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CLIError(f"data directory {d} is not writable ({exc.strerror}); choose another with --data") from exc
    cfg_path = config_path(args)
    cfg = Config.load(cfg_path)
    if args.hostname:
        cfg.server.hostname = args.hostname
    elif not cfg_path.exists() and args.domain:
        cfg.server.hostname = f"mail.{args.domain}"
    if not cfg_path.exists():
        cfg_path.write_text(
            "# mailyard configuration; every option and its default is listed in the README.\n\n" + cfg.to_toml(),
            encoding="utf-8",
        )
        print(f"wrote {cfg_path}")
    _init_tls(d, cfg)
    created: list[tuple[str, str]] = []

    async def setup(store: Store) -> None:
        if args.domain and args.domain.lower() not in await store.list_domains():
            await _add_domain(store, args.domain)
            print(f"added domain {args.domain.lower()}")
        if args.domain:
            _ensure_dkim_keys(d, args.domain)
        from .mailauth import srs

        srs.load_secret(d)  # the SRS secret (mode 0600), made once
        if args.demo and args.domain:
            for user in DEMO_USERS:
                address = f"{user}@{args.domain.lower()}"
                if await store.get_account(address) is None:
                    password = secrets.token_urlsafe(9)
                    await store.add_account(address, **credentials(password, apop=True))
                    created.append((address, password))

    async def main() -> None:
        store = open_store(d, cfg.store)
        try:
            await setup(store)
        finally:
            await store.close()

    asyncio.run(main())
    if created:
        lines = [f"{address}  password: {password}" for address, password in created]
        note = d / "demo-passwords.txt"
        note.write_text("\n".join(lines) + "\n", encoding="utf-8")
        note.chmod(0o600)
        print(f"demo users (also saved in {note}):")
        for line in lines:
            print("  " + line)
    print(f"data directory {d} is ready; start the server with: mailyard --data {d} serve")


def _init_tls(d: Path, cfg: Config) -> None:
    """Create a self-signed certificate for the host name unless one is configured."""
    try:
        from .net import tls
    except ImportError:
        return
    cert, key = d / "tls" / "cert.pem", d / "tls" / "key.pem"
    if cfg.tls.cert or cert.exists():
        return
    cert.parent.mkdir(parents=True, exist_ok=True)
    tls.create_self_signed(cfg.server.hostname, cert, key)
    print(f"created a self-signed certificate for {cfg.server.hostname} in {cert.parent}")


async def _add_domain(store: Store, domain: str) -> None:
    """Add a domain and make sure mail to its postmaster lands somewhere
    (RFC 5321 4.5.1: postmaster must be accepted for every domain): an account
    with a locked password, until an admin sets one or replaces it."""
    await store.add_domain(domain)
    postmaster = f"postmaster@{domain.lower()}"
    if await store.get_account(postmaster) is None and await store.get_alias(postmaster) is None:
        await store.add_account(postmaster, "!locked")


def cmd_serve(args: argparse.Namespace) -> None:
    from .workers import serve

    d = require_data_dir(args)
    cfg = load_config(args)
    if cfg.server.log_format not in ("text", "json"):
        raise CLIError(f"[server] log_format must be \"text\" or \"json\", not {cfg.server.log_format!r}")
    logs.setup(cfg.server.log_level, cfg.server.log_format)
    if cfg.metrics.listen:
        from . import metrics

        # Before any process counts: every process of this server writes its
        # values here and the /metrics scrape sums them (mailyard/metrics.py).
        metrics.enable_multiprocess(d / "run" / "metrics")
    try:
        import uvloop  # optional speed-up (README: dependencies)

        runner: Callable[..., Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    print(f"mailyard {__version__} serving {d} as {cfg.server.hostname}", flush=True)
    try:
        status = serve(d, cfg, runner)
    except OSError as exc:
        raise CLIError(str(exc.strerror or exc)) from exc
    if status:
        raise CLIError("a worker process kept failing at start (see the log above)")


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


def _ensure_dkim_keys(d: Path, domain: str) -> None:
    """A DKIM key pair generation for ``domain`` unless it has one (mailauth/keys.py)."""
    from .mailauth import keys

    if keys.active_generation(d, domain) is None:
        gen = keys.generate(d, domain, activate=True)
        print(f"made DKIM keys for {domain.lower()} (selectors {gen}-rsa, {gen}-ed25519); "
              f"publish them: mailyard dns {domain.lower()}")


def _is_dsn(where: str) -> bool:
    return where.startswith(("postgresql://", "postgres://"))


def _open_other_store(where: str, create: bool) -> Store:
    """The store ``store copy --to/--from`` names: a PostgreSQL URI, or the
    path of a data directory whose store is SQLite."""
    from .config import StoreConfig

    if _is_dsn(where):
        from .store.postgresql import PostgreSQLStore

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
    from .store.copy import copy_store
    from .transfer.progress import Progress

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
            await _add_domain(store, args.domain)
            print(f"added domain {args.domain.lower()} (postmaster@{args.domain.lower()} receives its postmaster mail)")
            _ensure_dkim_keys(data_dir(args), args.domain)
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
    from .store.names import normalize_address

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


def _auth_resolver(cfg: Config) -> Any:
    from .mailauth.dnscache import Resolver

    return Resolver(cfg.delivery.nameservers, cfg.authentication.dns_timeout)


def cmd_dkim(args: argparse.Namespace) -> None:
    """``dkim rotate DOMAIN``, ``dkim activate DOMAIN GEN [--force]``, ``dkim list DOMAIN``."""
    from .mailauth import keys

    d = require_data_dir(args)
    domain = args.domain.lower().rstrip(".")
    if args.action == "rotate":
        gen = keys.generate(d, domain)
        loaded = keys.load(d, domain, gen)
        assert loaded is not None
        print(f"; new DKIM keys for {domain}: publish these, then run: mailyard dkim activate {domain} {gen}")
        from .mailauth.records import Record

        for rec in keys.records(loaded):
            print(Record(rec.name, "TXT", rec.text).zone_line())
    elif args.action == "activate":
        loaded = keys.load(d, domain, args.generation)
        if loaded is None:
            raise CLIError(f"{domain} has no DKIM key generation {args.generation!r} (see: mailyard dkim list {domain})")
        if not args.force:
            from .mailauth.records import Record, check

            wanted = [Record(r.name, "TXT", r.text, "v=DKIM1") for r in keys.records(loaded)]
            bad = [(status, rec) for status, rec, _found in check(_auth_resolver(load_config(args)), wanted)
                   if status != "ok"]
            if bad:
                lines = "\n".join(f"  {status}: {rec.zone_line()}" for status, rec in bad)
                raise CLIError(f"the DKIM records of {args.generation} are not visible in DNS yet:\n{lines}\n"
                               "publish them and try again (or activate anyway with --force)")
        keys.set_active(d, domain, args.generation)
        print(f"{domain} now signs with {args.generation}-rsa and {args.generation}-ed25519")
    else:
        active = keys.active_generation(d, domain)
        for gen in keys.generations(d, domain):
            print(f"{gen}{'  (active)' if gen == active else ''}")


def cmd_dns(args: argparse.Namespace) -> None:
    """``dns DOMAIN`` prints the records to publish; ``dns check DOMAIN`` compares them with DNS."""
    from .mailauth import keys
    from .mailauth.records import check, needed

    words = args.words
    if len(words) == 2 and words[0] == "check":
        checking, domain = True, words[1]
    elif len(words) == 1:
        checking, domain = False, words[0]
    else:
        raise CLIError("usage: mailyard dns DOMAIN | mailyard dns check DOMAIN")
    d = require_data_dir(args)
    cfg = load_config(args)
    records = needed(cfg, domain, keys.load(d, domain), args.address or ())
    if not checking:
        print(f"; DNS records for {domain.lower()} (zone-file syntax)")
        for rec in records:
            print(rec.zone_line())
        return
    problems = 0
    for status, rec, found in check(_auth_resolver(cfg), records):
        print(f"{status:9} {rec.zone_line()}")
        if status == "different":
            for f in found:
                print(f"          (DNS has: {f})")
        problems += status != "ok"
    if problems:
        raise CLIError(f"{problems} record(s) of {domain.lower()} missing or different")


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
    from .auth.passwords import make_apop_secret

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


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_backup(args: argparse.Namespace) -> None:
    """`mailyard backup DEST` (a new generation, while the server runs) and
    `mailyard backup verify DEST` (store/backup.py)."""
    from .store import backup as bk

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
    from .store import backup as bk

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
        store = open_store(d, cfg.store, background=False)
        try:
            return await run(store)
        finally:
            await store.close()

    s = asyncio.run(main())
    where = f" under {args.as_folder}/" if args.as_folder else ""
    print(f"restored {args.account} from {gen}{where}: {s.messages} messages ({s.bytes / 1e6:.1f} MB) in "
          f"{s.mailboxes} mailboxes, {s.skipped} already there, {s.seconds:.1f} s")


def cmd_tls(args: argparse.Namespace) -> None:
    """``tls status``: each name of the certificate in use, its issuer and expiry."""
    import datetime
    import json

    from .net.acme import STATUS_FILE, cert_info, default_names
    from .server import certificate_paths

    d = require_data_dir(args)
    cfg = load_config(args)
    cert, _key = certificate_paths(d, cfg)
    try:
        info = cert_info(cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot read the certificate {cert}: {exc}") from exc
    now = datetime.datetime.now(datetime.UTC)
    days = (info.not_after - now).days
    expires = f"{info.not_after:%Y-%m-%d %H:%M} UTC ({days} days)"
    issuer = info.issuer + (" (self-signed)" if info.self_signed else "")
    source = "acme " + cfg.tls.acme_directory if cfg.tls.acme and not cfg.tls.cert else "file"
    print(f"certificate {cert} ({source})")
    names = list(info.names)
    missing: list[str] = []
    if cfg.tls.acme and not cfg.tls.cert:
        wanted = [n.lower() for n in cfg.tls.acme_names] or default_names(
            cfg.server.hostname, run_with_store(args, lambda store: store.list_domains()))
        missing = [n for n in wanted if n not in {x.lower() for x in names}]
    width = max([len(n) for n in names + missing] + [4])
    print(f"{'NAME':<{width}}  {'ISSUER':<40}  EXPIRES")
    for name in names:
        print(f"{name:<{width}}  {issuer:<40}  {expires}")
    for name in missing:
        print(f"{name:<{width}}  {'(not covered yet)':<40}  -")
    status_file = cert.parent / STATUS_FILE
    if cfg.tls.acme and status_file.exists():
        status = json.loads(status_file.read_text())
        print(f"last ACME order {status['last_attempt']}: {status['last_error'] or 'ok'};"
              f" next check {status['next_attempt']}")


def cmd_sieve(args: argparse.Namespace) -> None:
    """``mailyard sieve``: a user's Sieve scripts (delivery/sieve.py keeps
    them under DATA/sieve), checking a script, and a dry run on a message."""
    from .delivery.sieve import ScriptProblem, ScriptStore
    from .sieve import (
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
    from .message.headers import bytes_to_text, split_fields
    from .message.parse import split_header_body

    header, _body = split_header_body(message)
    return next((bytes_to_text(v) for n, v in split_fields(header) if n.lower() == name), None)


def cmd_spam(args: argparse.Namespace) -> None:
    """Per-user spam filing (account settings ``spam_threshold``,
    ``spam_allow``, ``spam_block``: spam/filing.py) and the decision record
    (store/spamlog.py)."""
    from .spam import filing
    from .store.spamlog import DecisionLog

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


def cmd_config(args: argparse.Namespace) -> None:
    if args.action == "defaults":
        print(Config().to_toml(), end="")
    else:
        load_config(args)
        print(f"{config_path(args)}: OK")


# --- moving in and out (mailyard import / export) ------------------------------


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
    from .store.import_state import ImportState
    from .transfer import imapsource, jobs
    from .transfer.importer import ImportError_, QuotaFull
    from .transfer.progress import Progress, Summary

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
    from .transfer import export
    from .transfer.progress import Progress, Summary

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


# --- parser -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data", metavar="DIR", default=argparse.SUPPRESS,
        help="data directory (default: $MAILYARD_DATA or ./mailyard-data)",
    )
    common.add_argument(
        "--config", metavar="FILE", default=argparse.SUPPRESS,
        help="configuration file (default: config.toml in the data directory)",
    )
    parser = argparse.ArgumentParser(
        prog="mailyard", parents=[common],
        description="mailyard: a complete Internet mail system (SMTP, submission, IMAP, POP3).",
    )
    parser.add_argument("--version", action="version", version=f"mailyard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("init", parents=[common], help="create a data directory, config and certificate")
    p.add_argument("--domain", help="first mail domain to serve, e.g. example.org")
    p.add_argument("--hostname", help="this server's host name (default: mail.DOMAIN)")
    p.add_argument("--demo", action="store_true", help="also create users alice and bob with random passwords")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("serve", parents=[common], help="run the mail server until SIGTERM/SIGINT")
    p.set_defaults(func=cmd_serve)

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

    p = sub.add_parser("dkim", parents=[common], help="DKIM signing keys of a domain (RFC 6376)")
    ksub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = ksub.add_parser("rotate", parents=[common], help="make new keys (a new selector) and print their records")
    q.add_argument("domain")
    q = ksub.add_parser("activate", parents=[common], help="sign with a generation once DNS publishes its keys")
    q.add_argument("domain")
    q.add_argument("generation", help="as printed by rotate, e.g. my20261205")
    q.add_argument("--force", action="store_true", help="switch even if DNS does not show the keys yet")
    q = ksub.add_parser("list", parents=[common], help="the key generations of a domain")
    q.add_argument("domain")
    p.set_defaults(func=cmd_dkim)

    p = sub.add_parser("dns", parents=[common],
                       help="print the DNS records a domain needs (dns DOMAIN), or check them (dns check DOMAIN)")
    p.add_argument("words", nargs="+", metavar="[check] DOMAIN")
    p.add_argument("--address", action="append", help="a public address of this server, for SPF (repeatable)")
    p.set_defaults(func=cmd_dns)

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

    p = sub.add_parser("tls", parents=[common], help="the TLS certificate in use (tls status)")
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    tsub.add_parser("status", parents=[common], help="each name of the certificate, its issuer and expiry")
    p.set_defaults(func=cmd_tls)

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

    p = sub.add_parser("config", parents=[common], help="check the configuration or print the defaults")
    csub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    csub.add_parser("check", parents=[common], help="validate the configuration file")
    csub.add_parser("defaults", parents=[common], help="print every option with its default")
    p.set_defaults(func=cmd_config)

    add_transfer_parsers(sub, common)

    from .client.cli import add_mail_parser  # the mail client: `mailyard mail ...`

    add_mail_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("data", "config"):
        if not hasattr(args, name):
            setattr(args, name, None)
    try:
        args.func(args)
    except (CLIError, ConfigError, StoreError) as exc:
        print(f"mailyard: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
