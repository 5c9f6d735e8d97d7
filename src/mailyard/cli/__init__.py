"""The ``mailyard`` command: set up a data directory, administer domains, users,
aliases and lists, and run the server.

Every command takes ``--data DIR`` (default ``$MAILYARD_DATA`` or
``./mailyard-data``) and ``--config FILE`` (default ``config.toml`` in the
data directory). Errors are one line saying what is wrong and what to do.

One module per group of commands, each with its parsers: ``start`` (init,
serve, config), ``addresses`` (domain, alias, list), ``accounts`` (user),
``spam``, ``queue``, ``sieve``, ``dnsrecords`` (dkim, dns), ``tls``, ``data``
(store, backup, restore), ``import_export``; ``common`` holds what they share
and ``parser`` puts the tree together.
"""

from __future__ import annotations

import sys

from ..config import ConfigError
from ..store.api import StoreError
from .common import CLIError
from .parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run one ``mailyard`` command; the exit status: 0, 1 after an error line, 130 on Ctrl-C."""
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
