"""The contract every sans-I/O server engine keeps (SMTP, POP3, IMAP).

One shape for the three protocols, modelled on h11, so the net layer drives
them with one loop (net/session_protocol.py) and a reader who knows one
engine knows them all:

- ``receive_data(data)`` feeds bytes from the peer; ``b""`` means end of
  input. The engine never raises for anything the peer sends.
- ``next_event()`` returns the next event, or a sentinel: ``NEED_DATA``
  (feed more bytes), ``PAUSED`` (an event is waiting for the glue's
  answer) or ``FLUSH`` (its queued replies passed ``FLUSH_AT``: write them,
  and ask again once the peer takes our output). After the session ended
  it returns a ``Closed`` event, every time it is asked.
- ``data_to_send()`` returns, and forgets, every byte queued for the peer,
  ready for one write; ``pending`` is how many octets it would return.
- Output answers input: an engine whose ``pending`` passed ``FLUSH_AT``
  takes no further buffered command before its replies are written, so a
  peer that pipelines commands and reads nothing makes us hold at most
  ``FLUSH_AT`` and the replies of one command besides the transport's
  buffer (the glue stops asking while the transport is above its
  high-water mark, net/session_protocol.py: 64 KiB for plain TCP; a TLS
  transport pauses at 512 KiB of its own, over the TCP transport's 64 KiB).
- ``partial_input`` and a count of completed input units let the glue
  enforce a command deadline that a trickle of bytes cannot extend.
- The glue answers an event through the engine's answering method; calling
  it when no event waits, or with an answer the event cannot take, is a bug
  in the glue and raises ``ProtocolMisuse`` (never the peer's doing).
- Abuse budgets (``AbuseBudgets``) live in the engine: it counts the peer's
  bad commands and failed logins and ends the session with the protocol's
  own reply when one is used up. Their values come from config.

Nothing here imports another layer of mailyard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

__all__ = ["FLUSH", "FLUSH_AT", "NEED_DATA", "PAUSED", "AbuseBudgets", "Closed", "ProtocolMisuse", "Sentinel"]


class Sentinel:
    """A named marker ``next_event`` returns instead of an event; compare with ``is``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA: Final = Sentinel("NEED_DATA")
"""The engine needs more bytes: flush ``data_to_send()`` and read."""

PAUSED: Final = Sentinel("PAUSED")
"""An event handed out earlier is still waiting for the glue's answer."""

FLUSH: Final = Sentinel("FLUSH")
"""The engine holds more than ``FLUSH_AT`` octets of replies and takes no
further command: write ``data_to_send()``, and ask again once the peer is
reading (the transport below its high-water mark)."""

FLUSH_AT: Final = 64 * 1024
"""Octets of queued replies past which an engine stops taking buffered
commands (``FLUSH``): a plain TCP transport's default write high-water mark
(asyncio's and uvloop's), so what one connection holds for a peer that does
not read stays a small multiple of it, whatever it pipelined. The bound is
per transport: over TLS the TLS transport pauses at 512 KiB (asyncio's
``FLOW_CONTROL_HIGH_WATER_SSL_WRITE``) besides the TCP transport's 64 KiB."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over: flush ``data_to_send()`` and close the connection.

    ``reason`` says why, for logs and for the glue's clean-up: ``"quit"``
    (the client said goodbye), ``"eof"`` (the client went away), ``"errors"``
    (an abuse budget was used up), ``"rejected"`` (the glue answered with a
    closing reply), ``"shutdown"``, ``"withdrawn"`` (the account's
    authorization ended mid-session), ``"out-of-sync"`` (the client sent
    commands ahead of a reply where pipelining does not allow it).
    """

    reason: str
    needs_answer: ClassVar[bool] = False


class ProtocolMisuse(RuntimeError):
    """The glue called an engine in a way its state does not allow (answered
    an event that is not waiting, or with an answer that event cannot take).
    A bug in mailyard, never caused by what a peer sends."""


@dataclass(frozen=True, slots=True)
class AbuseBudgets:
    """How much a peer may get wrong on one connection before the engine ends
    it (DESIGN.md: abuse budgets live in the engines, defaults in config).

    ``max_bad_commands``: unknown, malformed or out-of-sequence commands
    (SMTP 500/501/502/504/555, POP3 ``-ERR`` for a bad command, IMAP BAD).
    ``max_errors``: every error reply the engine gives itself (SMTP).
    ``max_auth_failures``: failed logins (wrong credentials, or refused while
    the login throttle holds the account or address). The login throttle
    also counts across connections; this bounds one connection.
    Zero or less counts as one: a budget is never "unlimited".
    """

    max_bad_commands: int = 20
    max_errors: int = 50
    max_auth_failures: int = 3

    def __post_init__(self) -> None:
        for name in ("max_bad_commands", "max_errors", "max_auth_failures"):
            if getattr(self, name) < 1:
                object.__setattr__(self, name, 1)
