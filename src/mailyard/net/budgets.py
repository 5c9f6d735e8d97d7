"""The engines' abuse budgets, from config (DESIGN.md: abuse budgets live in
the engines, each with a default in config).

The engines count and enforce (protocols/contract.py ``AbuseBudgets``); this
is the one place that reads the numbers from ``config.toml``:

=================  ==============================  =================================
protocol           bad commands                    failed logins on one connection
=================  ==============================  =================================
SMTP               ``smtp.max_unknown_commands``   ``auth.smtp_connection_max_failures``
                   (all errors: ``smtp.max_errors``)
IMAP               ``limits.max_bad_commands``     ``auth.imap_connection_max_failures``
POP3               ``limits.max_bad_commands``     ``auth.pop3_connection_max_failures``
=================  ==============================  =================================
"""

from __future__ import annotations

from typing import Literal

from ..config import Config
from ..protocols.contract import AbuseBudgets

__all__ = ["abuse_budgets"]


def abuse_budgets(config: Config, protocol: Literal["smtp", "imap", "pop3"]) -> AbuseBudgets:
    """The budgets one connection of ``protocol`` gets."""
    auth = config.auth
    if protocol == "smtp":
        return AbuseBudgets(
            max_bad_commands=config.smtp.max_unknown_commands,
            max_errors=config.smtp.max_errors,
            max_auth_failures=auth.smtp_connection_max_failures,
        )
    failures = auth.imap_connection_max_failures if protocol == "imap" else auth.pop3_connection_max_failures
    return AbuseBudgets(max_bad_commands=config.limits.max_bad_commands, max_auth_failures=failures)
