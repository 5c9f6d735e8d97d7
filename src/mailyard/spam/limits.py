"""What an account may submit: messages per hour and recipients per day.

A stolen password must not turn the server into a spam cannon: each
account gets a budget of messages per hour and of recipients per day
(``[spam] messages_per_hour``, ``recipients_per_day``; per account the
settings ``limit_messages_per_hour`` / ``limit_recipients_per_day`` set by
``mailyard user limits``). A message over either is refused for now
(``451 4.7.1``, RFC 3463: the user's client retries or shows the error) and
nothing of it is counted; an accepted one counts its recipients.

Windows are two-bucket sliding windows as in rates.py. With several
worker processes the supervisor holds the one `SendLimiter`, asked over
the login throttle's channel (auth/throttle_shared.py).

`QueueWatch` tells when the outbound queue grows past a threshold, once
per crossing, so a flood of outbound mail is seen in the log without a
line per message.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

__all__ = ["SendLimiter", "QueueWatch", "account_limits", "MESSAGES_KEY", "RECIPIENTS_KEY"]

# account_settings keys of the per-account overrides (store/api.py get_settings)
MESSAGES_KEY = "limit_messages_per_hour"
RECIPIENTS_KEY = "limit_recipients_per_day"

HOUR = 3600.0
DAY = 86400.0
MAX_ACCOUNTS = 100_000


def account_limits(settings: Mapping[str, Any], per_hour: int, per_day: int) -> tuple[int, int]:
    """The account's (messages per hour, recipients per day): its own
    settings where set (a non-negative integer), else the defaults given."""
    def pick(key: str, default: int) -> int:
        value = settings.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        return default
    return pick(MESSAGES_KEY, per_hour), pick(RECIPIENTS_KEY, per_day)


class _Window:
    """A two-bucket sliding window (see rates.py)."""

    __slots__ = ("width", "start", "prev", "cur")

    def __init__(self, width: float, now: float) -> None:
        self.width = width
        self.start = now - now % width
        self.prev = 0.0
        self.cur = 0.0

    def level(self, now: float) -> float:
        if now - self.start >= self.width:
            self.prev = self.cur if now - self.start < 2 * self.width else 0.0
            self.cur = 0.0
            self.start = now - now % self.width
        return self.prev * (1.0 - (now - self.start) / self.width) + self.cur


class SendLimiter:
    """Counts each account's messages and recipients against its limits."""

    def __init__(self, max_accounts: int = MAX_ACCOUNTS) -> None:
        self.max_accounts = max_accounts
        self._accounts: dict[str, tuple[_Window, _Window]] = {}

    def __len__(self) -> int:
        return len(self._accounts)

    def check(self, account: str, recipients: int, per_hour: int, per_day: int,
              now: float | None = None) -> str | None:
        """Count one message of ``account`` to ``recipients`` recipients, or
        return why it is over a limit (then nothing is counted). 0: no limit."""
        if now is None:
            now = time.time()
        windows = self._accounts.get(account)
        if windows is None:
            if len(self._accounts) >= self.max_accounts:
                self._accounts.pop(next(iter(self._accounts)))
            windows = self._accounts[account] = (_Window(HOUR, now), _Window(DAY, now))
        messages, rcpts = windows
        sent = messages.level(now)
        if per_hour and sent + 1 > per_hour:
            return f"{account} has sent {per_hour} messages in the last hour, the most allowed"
        reached = rcpts.level(now)
        if per_day and reached + recipients > per_day:
            return f"{account} has reached {int(reached)} recipients today of the {per_day} allowed"
        messages.cur += 1
        rcpts.cur += recipients
        return None


class QueueWatch:
    """Says when the queue's size crosses ``threshold`` upwards (once) and
    when it is back under half of it (so the next crossing is told again)."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.over = False

    def observe(self, size: int) -> str | None:
        """"over" on the crossing up, "under" when it went back down, else None."""
        if self.threshold <= 0:
            return None
        if not self.over and size > self.threshold:
            self.over = True
            return "over"
        if self.over and size <= self.threshold // 2:
            self.over = False
            return "under"
        return None
