"""The ``mailyard`` argument parser: the options every command takes and the
commands, in the order ``mailyard --help`` lists them; each command's own
parser is built beside its code."""

from __future__ import annotations

import argparse

from .. import __version__
from . import accounts, addresses, data, dnsrecords, import_export, queue, sieve, spam, start, tls


def build_parser() -> argparse.ArgumentParser:
    """The whole ``mailyard`` parser; each command sets ``func``, the function that runs it."""
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
    for add in (
        start.add_init_parser,
        start.add_serve_parser,
        addresses.add_domain_parser,
        accounts.add_user_parser,
        spam.add_spam_parser,
        addresses.add_alias_parser,
        addresses.add_list_parser,
        queue.add_queue_parser,
        data.add_store_parser,
        dnsrecords.add_dkim_parser,
        dnsrecords.add_dns_parser,
        data.add_backup_parsers,
        tls.add_tls_parser,
        sieve.add_sieve_parser,
        start.add_config_parser,
        import_export.add_transfer_parsers,
    ):
        add(sub, common)

    from ..client.commands import add_mail_parser  # the mail client: `mailyard mail ...`

    add_mail_parser(sub)
    return parser
