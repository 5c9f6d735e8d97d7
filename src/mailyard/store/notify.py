"""Change notification between the worker processes of one ``mailyard serve``.

With ``[server] workers`` above 1, every worker opens the one store and runs
its own sessions; a delivery committed by one worker must wake the IMAP IDLE
sessions, the webmail live updates and the POP3/webmail listing caches of
every other at once, as the store's listeners (``Store.add_listener``) do
inside one process.

The supervisor creates one datagram socket pair per worker slot before it
starts any worker, and keeps them for its lifetime: a worker receives on its
own pair and sends to every other slot's. A datagram per commit carries the
changed mailbox ids, so a wake-up costs one ``sendto`` per peer and no
polling. Sends never block: while a slot's worker is dead (being restarted)
its buffer fills and further notes to it are dropped; a new worker starts
from the store itself, so a dropped note loses nothing but a wake-up nobody
was waiting for.

Messages are one kind byte and a list of unsigned 64-bit numbers:

- ``M``: mailboxes whose content changed (the listeners' argument);
- ``D``: the directory changed (domains, accounts, aliases): caches forget;
- ``Q``: the outbound queue has new work (wakes the queue runner's worker);
- ``S``: a login attempt settled in the shared throttle (auth/throttle_shared.py):
  logins waiting for a budget held by attempts in flight ask again.

Each kind has its handlers (``on``): the store takes M, D and Q, the login
service S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable, Iterable

log = logging.getLogger("mailyard.store")

MAILBOXES = b"M"
DIRECTORY = b"D"
QUEUE = b"Q"
SETTLED = b"S"
# Ids per datagram: well under the default socket buffer, one page of numbers.
_PER_DATAGRAM = 512


def make_slots(count: int) -> list[tuple[socket.socket, socket.socket]]:
    """One (receive, send) datagram socket pair per worker slot."""
    pairs = []
    for _ in range(count):
        recv, send = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        recv.setblocking(False)
        send.setblocking(False)
        pairs.append((recv, send))
    return pairs


class ChangeChannel:
    """The notification channel as one worker (``slot``) sees it."""

    def __init__(self, slots: list[tuple[socket.socket, socket.socket]], slot: int) -> None:
        self.slot = slot
        self._recv = slots[slot][0]
        self._peers = [send for i, (_recv, send) in enumerate(slots) if i != slot]
        self.dropped = 0  # notes a full peer buffer refused (its worker is down or stalled)
        self._handlers: dict[bytes, list[Callable[[list[int]], None]]] = {}
        self._drain()  # notes sent to this slot's previous worker

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._recv.recv(65536):
                pass

    def publish(self, kind: bytes, ids: Iterable[int] = ()) -> None:
        """Tell every other worker; never blocks."""
        numbers = sorted(ids)
        chunks = [numbers[i : i + _PER_DATAGRAM] for i in range(0, len(numbers), _PER_DATAGRAM)] or [[]]
        for chunk in chunks:
            data = kind + struct.pack(f"<{len(chunk)}Q", *chunk)
            for peer in self._peers:
                try:
                    peer.send(data)
                except (BlockingIOError, ConnectionRefusedError):
                    self.dropped += 1
                except OSError as exc:
                    self.dropped += 1
                    log.debug("change note not sent: %s", exc)

    def on(self, kind: bytes, handle: Callable[[list[int]], None]) -> None:
        """Call ``handle(ids)`` for every note of ``kind`` another worker sends."""
        self._handlers.setdefault(kind, []).append(handle)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Receive notes on ``loop`` and run their handlers there."""

        def readable() -> None:
            while True:
                try:
                    data = self._recv.recv(65536)
                except (BlockingIOError, InterruptedError):
                    return
                if not data:
                    return
                count = (len(data) - 1) // 8
                try:
                    ids = list(struct.unpack_from(f"<{count}Q", data, 1))
                    for handle in self._handlers.get(data[:1], ()):
                        handle(ids)
                except Exception:
                    log.exception("change note handling failed")

        loop.add_reader(self._recv.fileno(), readable)

    def detach(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(Exception):
            loop.remove_reader(self._recv.fileno())
