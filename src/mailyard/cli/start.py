"""``mailyard init`` (a data directory, its configuration, certificate, first
domain and demo users), ``mailyard serve`` and ``mailyard config``."""

from __future__ import annotations

import argparse
import asyncio
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__, logs
from ..config import Config
from ..store import open_store
from ..store.api import Store
from .addresses import add_domain
from .common import CLIError, config_path, credentials, data_dir, load_config, require_data_dir
from .dnsrecords import ensure_dkim_keys

DEMO_USERS = ("alice", "bob")


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
            await add_domain(store, args.domain)
            print(f"added domain {args.domain.lower()}")
        if args.domain:
            ensure_dkim_keys(d, args.domain)
        from ..mailauth import srs

        srs.load_secret(d)  # the SRS secret (mode 0600), made once
        if args.demo and args.domain:
            for user in DEMO_USERS:
                address = f"{user}@{args.domain.lower()}"
                if await store.get_account(address) is None:
                    password = secrets.token_urlsafe(9)
                    await store.add_account(address, **credentials(password, apop=True))
                    created.append((address, password))

    async def main() -> None:
        store = open_store(d, cfg.store, max_mailboxes=cfg.limits.max_mailboxes)
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
        from ..net import tls
    except ImportError:
        return
    cert, key = d / "tls" / "cert.pem", d / "tls" / "key.pem"
    if cfg.tls.cert or cert.exists():
        return
    cert.parent.mkdir(parents=True, exist_ok=True)
    tls.create_self_signed(cfg.server.hostname, cert, key)
    print(f"created a self-signed certificate for {cfg.server.hostname} in {cert.parent}")


def cmd_serve(args: argparse.Namespace) -> None:
    from ..auth.service import SECRET_FILE, load_secret
    from ..workers import serve

    d = require_data_dir(args)
    cfg = load_config(args)
    if cfg.server.log_format not in ("text", "json"):
        raise CLIError(f"[server] log_format must be \"text\" or \"json\", not {cfg.server.log_format!r}")
    logs.setup(cfg.server.log_level, cfg.server.log_format)
    if cfg.metrics.listen:
        from .. import metrics

        # Before any process counts: every process of this server writes its
        # values here and the /metrics scrape sums them (mailyard/metrics.py).
        metrics.enable_multiprocess(d / "run" / "metrics")
    try:
        import uvloop  # optional speed-up (README: dependencies)

        runner: Callable[..., Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    # made here, once, before the workers each read it: they must show the
    # same fake SCRAM salts (auth/service.py)
    load_secret(d / SECRET_FILE)
    print(f"mailyard {__version__} serving {d} as {cfg.server.hostname}", flush=True)
    try:
        status = serve(d, cfg, runner)
    except OSError as exc:
        raise CLIError(str(exc.strerror or exc)) from exc
    if status:
        raise CLIError("a worker process kept failing at start (see the log above)")


def cmd_config(args: argparse.Namespace) -> None:
    if args.action == "defaults":
        print(Config().to_toml(), end="")
    else:
        load_config(args)
        print(f"{config_path(args)}: OK")


def add_init_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help="create a data directory, config and certificate")
    p.add_argument("--domain", help="first mail domain to serve, e.g. example.org")
    p.add_argument("--hostname", help="this server's host name (default: mail.DOMAIN)")
    p.add_argument("--demo", action="store_true", help="also create users alice and bob with random passwords")
    p.set_defaults(func=cmd_init)


def add_serve_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[common], help="run the mail server until SIGTERM/SIGINT")
    p.set_defaults(func=cmd_serve)


def add_config_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("config", parents=[common], help="check the configuration or print the defaults")
    csub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    csub.add_parser("check", parents=[common], help="validate the configuration file")
    csub.add_parser("defaults", parents=[common], help="print every option with its default")
    p.set_defaults(func=cmd_config)
