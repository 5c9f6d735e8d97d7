"""What the commands share: where the data directory and configuration are,
opening the store for one command, asking for a password, and the one error
the command prints as a line."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..config import Config
from ..store import open_store, store_exists
from ..store.api import Store


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


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
        store = open_store(d, cfg.store, max_mailboxes=cfg.limits.max_mailboxes)
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
    from ..auth.passwords import Credentials

    creds = Credentials.from_password(password, apop=apop)
    return {
        "password_hash": creds.password_hash,
        "apop_secret": creds.apop_secret,
        "scram_sha256": creds.scram_sha256,
    }
