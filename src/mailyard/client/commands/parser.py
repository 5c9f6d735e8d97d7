"""The ``mailyard mail`` argument parser: the options every command takes and
the commands, in the order ``mailyard mail --help`` lists them; each command's
own parser is built beside its code."""

from __future__ import annotations

import argparse
import re
from typing import Any

from . import __doc__ as _PACKAGE_DOC
from . import accounts, fetch, folders, sending, viewing
from .folders import FLAG_NAMES


class _MailParser(argparse.ArgumentParser):
    """Reads ``-\\Seen`` / ``-flagged`` (a flag to remove) as an argument, not an option."""

    def _parse_optional(self, arg_string: str):  # type: ignore[no-untyped-def]
        if arg_string[:2] in ("-\\", "-$") or arg_string[1:].lower() in FLAG_NAMES:
            return None  # argparse: a positional argument
        return super()._parse_optional(arg_string)


def add_mail_parser(sub: Any) -> None:
    """Add ``mail`` and its sub-commands to the ``mailyard`` parser's sub-parsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--account", "-a", metavar="NAME", default=argparse.SUPPRESS,
                        help="account name or address (default: the default account)")
    common.add_argument("--config-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help="client configuration directory (default: $MAILYARD_CLIENT_HOME or the user config dir)")
    p = sub.add_parser(
        "mail", parents=[common], help="the mail client: send, list, read, reply, forward, folders, POP3 fetch",
        # the package docstring without its reStructuredText ``literal`` marks
        description=re.sub(r"``([^`]*)``", r"\1", _PACKAGE_DOC.split("\n\n", 1)[1]) if _PACKAGE_DOC else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    msub = p.add_subparsers(dest="mail_command", metavar="COMMAND", required=True, parser_class=_MailParser)
    for add in (
        accounts.add_account_parser,
        sending.add_send_parser,
        viewing.add_viewing_parsers,
        sending.add_answer_parsers,
        folders.add_folder_parsers,
        fetch.add_fetch_parser,
    ):
        add(msub, common)
