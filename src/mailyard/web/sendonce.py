"""One send per form.

A webmail form that sends mail (compose, Redirect) carries a random id. The
first POST with it sends; another POST with the same id (a double click on
Send, a reload of the answer, a browser resending the request) is answered
"sent already" and sends nothing. Mail cannot be taken back, so the server
keeps the promise, not the page's script.

The ids taken are kept in the memory of the process that serves the webmail
(one worker serves it: web/security.py) for ``KEPT_FOR`` seconds, at most
``MAX_KEPT`` of them, the oldest forgotten first: enough for what they
guard against, the same browser sending the same form again soon after.
An id is given back when nothing went (the send was refused, so the user
corrects the form and sends it again); a form without an id (a page served
before it had one) sends as before.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict

KEPT_FOR = 6 * 3600.0  # seconds an id that sent is remembered
MAX_KEPT = 20_000
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def new_id() -> str:
    """A fresh id for a form that sends."""
    return secrets.token_urlsafe(16)


class SendOnce:
    """The ids of the sends taken lately, per account."""

    def __init__(self) -> None:
        self._taken: OrderedDict[tuple[int, str], float] = OrderedDict()

    def take(self, account_id: int, send_id: str) -> bool:
        """Whether the form ``send_id`` of ``account_id`` may send now
        (False: it sent already, or is sending). A missing or malformed id
        may always send."""
        if not send_id or len(send_id) > 64 or not set(send_id) <= _ID_CHARS:
            return True
        now = time.monotonic()
        while self._taken:
            _key, when = next(iter(self._taken.items()))
            if now - when < KEPT_FOR:
                break
            self._taken.popitem(last=False)
        key = (account_id, send_id)
        if key in self._taken:
            return False
        self._taken[key] = now
        if len(self._taken) > MAX_KEPT:
            self._taken.popitem(last=False)
        return True

    def give_back(self, account_id: int, send_id: str) -> None:
        """Nothing went: the same form may send again."""
        self._taken.pop((account_id, send_id), None)
