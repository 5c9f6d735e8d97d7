"""Connection caps per listener: open connections in total and per client
address ([limits] max_connections, max_connections_per_ip).

One home for the mail listeners (net/listener.py) and the HTTP port
(web/limits.py): a client over a cap is refused at once, so one address
cannot take every slot and the server keeps serving others. On a plain port
(STARTTLS ones included) it gets its protocol's own "try again later" (SMTP
421, IMAP BYE, POP3 -ERR [SYS/TEMP], ManageSieve BYE (TRYLATER), HTTP 503);
on an implicit-TLS port (smtps, imaps, pop3s, managesieve_tls, https) its
connection is closed with no reply, since a reply would need the TLS
handshake the cap is there to spare.

A connection counts from its TCP accept, whatever its state: on an
implicit-TLS port the accept loop (net/accept.py `Acceptor`) admits it
before its handshake, and the session's own admission when the handshake
is done finds it counted already (one slot, handed over). From then on the
slot is the session's: the accept loop may only `withdraw` a connection
its session never claimed (a failed or cancelled handshake), so a stop
that cancels the handshake's task just after the session greeted leaves
the slot counted until the session's own end releases it.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

from .. import logs, metrics

__all__ = ["ConnectionCaps", "log_refusal"]

# A client refused for a cap may open connections as fast as it likes: the
# "connection_refused" lines of one listener and reason are bounded per
# process (logs.EventBudget's default); the metric counts every refusal.
_REFUSALS = logs.EventBudget()


def log_refusal(logger: logging.Logger, proto: str, ip: str, reason: str) -> None:
    """Count a connection refused over a cap, and log it within the budget."""
    metrics.count_connection_refused(proto, reason)
    _REFUSALS.event(logger, logging.WARNING, "connection_refused", (proto, reason), proto=proto, ip=ip, reason=reason)


class ConnectionCaps:
    """Counts the open connections of one listener, in total and per address."""

    __slots__ = ("_claimed", "_open", "_per_ip", "max_connections", "max_per_ip")

    def __init__(self, max_connections: int, max_per_ip: int) -> None:
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self._open: dict[Hashable, str] = {}  # connection -> its client address
        self._per_ip: dict[str, int] = {}
        self._claimed: set[Hashable] = set()  # admitted a second time: the session holds the slot

    @property
    def active(self) -> int:
        """Connections counted in now."""
        return len(self._open)

    def connections(self) -> list[Hashable]:
        """The connections counted in now (a copy: safe to iterate while they end)."""
        return list(self._open)

    def refusal(self, ip: str) -> str | None:
        """Why a new connection from ``ip`` would be refused now, or None."""
        if len(self._open) >= self.max_connections:
            return "too many connections"
        if self._per_ip.get(ip, 0) >= self.max_per_ip:
            return "too many connections from your address"
        return None

    def admit(self, connection: Hashable, ip: str) -> str | None:
        """Count ``connection`` from ``ip`` in; returns why it is refused, or
        None. A connection counted in already stays counted once (admitted
        at accept, it is admitted again when its TLS handshake is done),
        and is marked claimed by its session (see `withdraw`)."""
        if connection in self._open:
            self._claimed.add(connection)
            return None
        refused = self.refusal(ip)
        if refused is not None:
            return refused
        self._open[connection] = ip
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        return None

    def release(self, connection: Hashable) -> None:
        """Count ``connection`` out (once; a second call, or one for a refused
        connection, does nothing)."""
        ip = self._open.pop(connection, None)
        self._claimed.discard(connection)
        if ip is None:
            return
        left = self._per_ip.get(ip, 1) - 1
        if left:
            self._per_ip[ip] = left
        else:
            self._per_ip.pop(ip, None)

    def withdraw(self, connection: Hashable) -> None:
        """Count ``connection`` out unless its session claimed the slot
        (admitted it a second time): the accept loop's way to give back the
        slot of a handshake that did not end in a session. A claimed slot is
        the session's to release, at its end."""
        if connection not in self._claimed:
            self.release(connection)
