"""One IMAP connection: read bytes, feed the engine, run its commands.

Untagged updates (RFC 9051 5.2): the store calls our listener after every
committed change to a mailbox; the session marks its selected mailbox dirty
and, at the end of the next command (or at once while IDLE), asks the store
what changed since the mod-sequence it last reported and announces EXISTS,
FETCH (flags) and EXPUNGE/VANISHED. Expunges are held back while the command
is FETCH, STORE or SEARCH (RFC 9051 7.5.1) so sequence numbers never shift
under the client.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...protocols.imap import commands as c
from ...protocols.imap.engine import CLOSED, NEED_DATA, ImapEngine, State
from ...protocols.imap.framing import Limits
from ...protocols.imap.response import Atom, Raw, flag_list, format_uid_set
from ...protocols.imap.selected import MessageMap
from ...store.api import (
    Account,
    Mailbox,
    MailboxGone,
    MailboxRef,
    MessageInfo,
    StorageFull,
    StoreError,
)
from ..listener import ShutdownRequested
from ..session_protocol import SessionProtocol

if TYPE_CHECKING:
    from ...server import MailServer
    from ..listener import Listener

log = logging.getLogger("mailyard.imap")


class CommandDeadline(TimeoutError):
    """The client did not finish a command (or its literal) in time."""


FLUSH_AT = 64 * 1024  # write out queued responses past this size, so a big FETCH streams
PERMANENT_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
SYSTEM_FLAGS = frozenset(f.lower() for f in PERMANENT_FLAGS)


class RecentUids:
    """The UIDs that are \\Recent in this session, as ranges (lo, hi]: each
    claim in the store (claim_recent) hands a session every UID above the
    last claim, so a few ranges describe even a mailbox of new messages, and
    an idle connection keeps no per-message set (RFC 3501 2.3.2)."""

    __slots__ = ("ranges",)

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []

    def add(self, above: int, upto: int) -> None:
        if upto > above:
            self.ranges.append((above, upto))

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __contains__(self, uid: object) -> bool:
        # A plain loop: asked once per message by FETCH 1:* (FLAGS), where a
        # generator expression cost 40% of the command (bench/imap.py).
        for lo, hi in self.ranges:
            if lo < uid <= hi:  # type: ignore[operator]
                return True
        return False

    def count(self, view: MessageMap) -> int:
        """How many messages of the view are \\Recent (expunged ones are not)."""
        uids = view.uids
        return sum(bisect_right(uids, hi) - bisect_right(uids, lo) for lo, hi in self.ranges)


@dataclass
class Selected:
    """The selected mailbox as this session sees it."""

    mailbox: Mailbox
    readonly: bool
    view: MessageMap
    known_modseq: int  # changes up to here are reflected in what we announced
    dirty: bool = False
    pending_expunge: set[int] = field(default_factory=set)
    own_changes: dict[int, int] = field(default_factory=dict)  # uid -> modseq we reported
    saved: frozenset[int] = frozenset()  # RFC 5182 SEARCHRES
    condstore: bool = False  # a CONDSTORE-enabling command was used (RFC 7162 3.1)
    # index data by UID, kept current from changes_since; dropped in IDLE so an
    # idle connection costs little memory
    infos: dict[int, MessageInfo] | None = None
    infos_modseq: int = 0
    infos_stale: bool = False
    # RFC 3501 2.3.2: UIDs that are \\Recent in this session (rev1 clients only)
    recent: RecentUids = field(default_factory=lambda: RecentUids())


Handler = Callable[["ImapSession", c.Command], Awaitable[None]]
_HANDLERS: dict[str, Handler] | None = None


def _load_handlers() -> dict[str, Handler]:
    """The command table (dispatch.py imports this module, hence loaded late).
    Kept here: a function-level ``from .dispatch import`` on every command
    cost ~5 us, a sixth of an IMAP NOOP's Python time (py-spy)."""
    global _HANDLERS
    from .dispatch import HANDLERS

    _HANDLERS = HANDLERS
    return HANDLERS


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class ImapSession(SessionProtocol):
    """Runs one connection: the engine, the account, the selected mailbox.

    An asyncio.Protocol (net/session_protocol.py, like SMTP and POP3): bytes
    go from ``data_received`` into the engine, and each command is a step
    started at once (``eager_steps``). A FETCH whose data the store reads
    without waiting finishes inside ``data_received``, so a command costs one
    read and one write on the socket and no task switch. A step that waits
    (a commit, a password check) goes on in a task while input waits; IDLE
    and AUTHENTICATE read their further lines with `wait_input`.
    """

    eager_steps = True

    def __init__(self, server: MailServer, listener: Listener) -> None:
        super().__init__(listener)
        self.server = server
        self.store = server.store
        cfg = server.config
        limits = cfg.limits
        self.engine = ImapEngine(Limits(
            max_line=getattr(limits, "imap_max_line", 64 * 1024),
            max_literal=getattr(limits, "imap_max_literal", 64 * 1024),
            max_append=getattr(cfg.smtp, "max_message_size", 50 << 20),
            max_command=getattr(limits, "imap_max_command", 1 << 20),
            max_append_command=getattr(limits, "imap_max_append_command", 100 << 20),
            max_unauthenticated=getattr(limits, "imap_max_command_unauthenticated", 8 << 10),
        ))
        self.account: Account | None = None
        self.sel: Selected | None = None
        self._unlisten: Callable[[], None] | None = None
        self.idle_timeout = getattr(cfg.limits, "imap_idle_timeout", 1800.0)
        self.hostname = cfg.server.hostname
        self.eof = False  # the client closed its side
        self._waiter: asyncio.Future[None] | None = None  # a step waiting for input (IDLE, AUTHENTICATE)

    # --- SessionProtocol hooks ----------------------------------------------
    def start(self) -> None:
        from .auth import capabilities

        self.engine.greeting(
            "mailyard IMAP4rev2 server ready", code="CAPABILITY " + " ".join(capabilities(self))
        )
        self.write(self.engine.data_to_send())

    def received(self, data: bytes) -> None:
        if data:
            self.engine.receive_data(data)
        else:
            self.eof = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pump(self) -> Coroutine[Any, Any, None] | None:
        engine = self.engine
        if engine.pending > FLUSH_AT:
            # pipelined FETCHes: write as we go; stop while the client is behind
            self.write(engine.data_to_send())
            if self.writing_paused:
                return None
        ev = engine.next_event()
        if ev is NEED_DATA:
            self.write(engine.data_to_send())
            if self.eof:
                self.close()
            elif engine.framer.mid_command:
                self._quick_ack()
            return None
        if ev is CLOSED:
            self.write(engine.data_to_send())
            self.close()
            return None
        return self.execute(ev)  # type: ignore[arg-type]  # a Command

    def goodbye(self) -> bytes:
        self.engine.bye("Server shutting down", code="UNAVAILABLE")
        return self.engine.data_to_send()

    def refusal(self, reason: str) -> bytes:
        # Over the connection limits: RFC 9051 7.1.5 allows BYE as the greeting.
        return f"* BYE {reason}\r\n".encode()

    def on_timeout(self) -> bytes:
        self.engine.bye("Autologout; idle for too long")
        return self.engine.data_to_send()

    def input_state(self) -> tuple[bool, int, float]:
        # A command line (or a command with its literals, e.g. APPEND) must be
        # complete within the command (literal) deadline, however slowly its
        # bytes trickle in (listener.CommandClock).
        framer = self.engine.framer
        limits = self.listener.limits
        deadline = limits.literal_deadline if framer.mid_command else limits.command_deadline
        return framer.partial, framer.completed, deadline

    def on_deadline(self) -> bytes:
        self.engine.bye("Command not completed in time")
        return self.engine.data_to_send()

    def shutdown(self) -> None:
        waiter = self._waiter
        if self.busy and waiter is not None and not waiter.done():
            self._stopping = True
            waiter.set_exception(ShutdownRequested())  # IDLE / AUTHENTICATE: BYE now
            return
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        authenticator = getattr(self, "authenticator", None)
        if authenticator is not None:
            authenticator.close()  # an AUTHENTICATE left open counts as a failure
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self.eof = True
            waiter.set_result(None)

    def _quick_ack(self) -> None:
        """ACK the rest of a command at once. A client that writes a literal and
        its closing CRLF in two send() calls (Python's imaplib does) has the
        CRLF held back by Nagle's algorithm until the literal is ACKed, and a
        delayed ACK costs 40 ms per APPEND. TCP_QUICKACK is reset by the
        kernel, hence set again before each read that is mid-command."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        quickack = getattr(socket, "TCP_QUICKACK", None)
        if sock is not None and quickack is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
            except OSError:
                pass

    # --- output and further input inside a step ---------------------------------
    async def flush(self) -> None:
        """Write what the engine has queued; wait while the client is behind."""
        data = self.engine.data_to_send()
        if data:
            self.write(data)
            await self.drain()

    async def maybe_flush(self) -> None:
        if self.engine.pending > FLUSH_AT:
            await self.flush()

    async def wait_input(self, timeout: float) -> None:
        """Wait, with reading resumed, until bytes (or the end of input) reach
        the engine or the selected mailbox changes (IDLE). Raises TimeoutError
        after ``timeout`` seconds, ShutdownRequested when the server stops."""
        if self.eof or self.closed:
            self.eof = True
            return
        if self._stopping:  # the stop came while this step was busy elsewhere
            raise ShutdownRequested
        fut = self.loop.create_future()
        self._waiter = fut
        timer = self.loop.call_later(timeout, _expire, fut)
        self.reading_wanted = True
        if self.transport is not None:
            self.transport.resume_reading()
        try:
            await fut
        finally:
            timer.cancel()
            self._waiter = None
            self.reading_wanted = False
            if self.transport is not None and not self.closed:
                self.transport.pause_reading()

    async def more_input(self) -> bool:
        """Wait for more of a command's input (an AUTHENTICATE response line)
        under the command deadline; False at the end of input. A partial line
        keeps the deadline it started with (listener.CommandClock): bytes
        trickled in do not restart it."""
        partial, progress, deadline = self.input_state()
        left = self._clock.remaining(self.loop.time(), partial, progress, deadline)
        if left is None:
            left = self.listener.limits.command_deadline
        if left <= 0:
            raise CommandDeadline
        try:
            await self.wait_input(left)
        except TimeoutError:
            raise CommandDeadline from None
        return not self.eof

    # --- commands -------------------------------------------------------------
    def references_current(self) -> bool:
        """Whether the session may go on: its account still exists under the
        credentials it logged in with, and its selected mailbox still exists
        (same owner, same UIDVALIDITY). Asked before every command; answered
        from memory unless something was revoked since (store.revocation).

        If not, the session ends with ``* BYE``: RFC 2180 3.2 (a server may
        let a mailbox be deleted and disconnect the other clients that have it
        selected, as Dovecot does), RFC 9051 7.1.5 (BYE: the server closes
        the connection). A client cannot be left in the selected state of a
        mailbox that is gone, and a removed account or changed password must
        not keep a session it opened."""
        account = self.account
        if account is None:
            return True
        store = self.store
        if not store.credentials_current(account.id, account.epoch):
            log.info("imap: ending session of %s: account removed or password changed", account.address)
            self.engine.bye("Account removed or password changed; log in again")
            return False
        sel = self.sel
        if sel is not None and not store.mailbox_current(sel.mailbox):
            self.selected_mailbox_gone()
            return False
        return True

    def selected_mailbox_gone(self) -> None:
        self.sel = None
        self.engine.bye("Selected mailbox was deleted, have to disconnect")

    async def execute(self, cmd: c.Command) -> None:
        handler = (_HANDLERS or _load_handlers())[cmd.name]
        if self.account is not None and not self.references_current():
            return
        try:
            await handler(self, cmd)
        except MailboxGone as exc:
            sel = self.sel
            if sel is not None and exc.mailbox_id == sel.mailbox.id:
                self.selected_mailbox_gone()  # deleted while this command ran
            elif self.engine.current is not None:
                await self.finish("NO", "Mailbox does not exist", "NONEXISTENT", allow_expunge=False)
        except ShutdownRequested:
            self.engine.bye("Server shutting down", code="UNAVAILABLE")
        except CommandDeadline:
            self.engine.bye("Command not completed in time")
        except TimeoutError:
            self.engine.bye("Autologout; idle for too long")
        except StoreError as exc:
            log.info("imap: %s failed: %s", cmd.name, exc)
            if self.engine.current is not None:
                await self.finish("NO", str(exc) or "Operation failed", allow_expunge=False)
        except (ConnectionError, ssl.SSLError):
            raise  # the connection is gone; SessionProtocol closes it
        except Exception:
            log.exception("imap: %s crashed", cmd.name)
            if self.engine.current is not None:
                self.engine.complete("NO", "Internal server error", "SERVERBUG")
        if self.engine.state is not State.NOT_AUTHENTICATED and self._timeout != self.idle_timeout:
            # RFC 9051 5.4: the autologout timer is at least 30 minutes once
            # authenticated; the listener's shorter idle timeout applies before.
            self.set_timeout(self.idle_timeout)

    async def finish(self, status: str, text: str, code: str | None = None, allow_expunge: bool = True) -> None:
        """Send pending mailbox updates, then the tagged response."""
        if self.sel is not None and self.engine.state is State.SELECTED:
            await self.sync(allow_expunge)
        self.engine.complete(status, text, code)

    # --- change notification ----------------------------------------------
    def listen(self) -> None:
        """Start receiving store change notifications (after login)."""
        if self._unlisten is None and not self.closed:
            self._unlisten = self.store.add_listener(self._changed)

    def _changed(self, mailbox_id: int) -> None:
        sel = self.sel
        if sel is not None and sel.mailbox.id == mailbox_id:
            sel.dirty = True
            sel.infos_stale = True
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)  # IDLE announces it at once
    async def sync(self, allow_expunge: bool) -> None:
        """Announce what other sessions changed (RFC 9051 5.2, 7.4.1, 7.5.1)."""
        sel = self.sel
        if sel is None:
            return
        if sel.dirty:
            sel.dirty = False
            changes = await self.store.changes_since(sel.mailbox, sel.known_modseq)
            for uid in changes.vanished:
                if sel.view.seq_of(uid) is not None:
                    sel.pending_expunge.add(uid)
            new: list[int] = []
            updated = []
            top = sel.view.max_uid
            for info in changes.changed:
                if info.uid > top:
                    new.append(info.uid)
                elif info.uid not in sel.pending_expunge and sel.own_changes.get(info.uid) != info.modseq:
                    updated.append(info)
            sel.known_modseq = max(sel.known_modseq, changes.highest_modseq)
            sel.own_changes.clear()
            if allow_expunge:
                self.announce_expunge(list(sel.pending_expunge))
                sel.pending_expunge.clear()
            if new:
                sel.view.append(new)
                self.engine.untagged(len(sel.view), Atom("EXISTS"))
                if not self.engine.rev2:
                    await self.claim_recent(new)
                    self.engine.untagged(sel.recent.count(sel.view), Atom("RECENT"))  # RFC 3501 7.3.2
            for info in updated:
                seq = sel.view.seq_of(info.uid)
                if seq is None:
                    continue
                # RFC 9051 7.5.2: unsolicited FETCH must carry UID
                items: list[object] = [Atom("UID"), info.uid, Atom("FLAGS"), Raw(session_flags(self, info))]
                if sel.condstore:
                    items += [Atom("MODSEQ"), [info.modseq]]
                self.engine.untagged(seq, Atom("FETCH"), items)
        elif allow_expunge and sel.pending_expunge:
            self.announce_expunge(list(sel.pending_expunge))
            sel.pending_expunge.clear()

    async def claim_recent(self, uids: list[int]) -> None:
        """RFC 3501 2.3.2: a new message is \\Recent in the first session told
        of it; a read-only (EXAMINE) session does not take that away."""
        sel = self.sel
        assert sel is not None
        first = await self.claim_recent_from(sel.mailbox, claim=not sel.readonly)
        if first is None:
            return
        sel.recent.add(max(first, min(uids) - 1), max(uids))  # disjoint from earlier ranges

    async def claim_recent_from(self, mailbox: MailboxRef, claim: bool) -> int | None:
        """store.claim_recent, or None when the claim cannot be written (full
        disk): this session then shows no new \\Recent and they stay for the
        next one, rather than failing SELECT or the command that noticed them."""
        try:
            return await self.store.claim_recent(mailbox, claim=claim)
        except StorageFull:
            log.warning("imap: \\Recent not claimed, the disk is full")
            return None

    def announce_expunge(self, uids: list[int]) -> None:
        """EXPUNGE per message, or one VANISHED with QRESYNC (RFC 7162 3.2.10)."""
        sel = self.sel
        if sel is None or not uids:
            return
        if "QRESYNC" in self.engine.enabled:
            present = [u for u in uids if sel.view.seq_of(u) is not None]
            sel.view.expunge(present)
            if present:
                self.engine.untagged(Atom("VANISHED"), Atom(format_uid_set(present)))
            return
        for seq in sel.view.expunge(uids):
            self.engine.untagged(seq, Atom("EXPUNGE"))

    async def idle(self) -> None:
        """Wait for DONE, announcing changes as they happen (RFC 2177 3)."""
        from ...protocols.imap.engine import IdleDone

        self.engine.start_idle()
        if self.sel is not None:
            self.sel.infos = None
            await self.sync(allow_expunge=True)
        await self.flush()
        while True:
            ev = self.engine.next_event()
            if isinstance(ev, IdleDone):
                if ev.ok:
                    await self.finish("OK", "IDLE terminated")
                else:
                    await self.finish("BAD", "Expected DONE")
                return
            if ev is CLOSED:
                return
            if self.sel is not None and self.sel.dirty:
                await self.sync(allow_expunge=True)
                await self.flush()
                continue
            if self.eof:
                self.engine.bye("Connection closed")
                return
            # RFC 9051 5.4: the autologout timer counts the client's silence
            # (its last byte, SessionProtocol._arm_timer), not our reports.
            left = self._last_activity + self.idle_timeout - self.loop.time()
            if left <= 0:
                raise TimeoutError
            await self.wait_input(left)


def flags_from_client(flags: tuple[str, ...]) -> tuple[list[str], str | None]:
    """Validate flags for STORE/APPEND: keywords and the five system flags;
    \\Recent and unknown system flags are refused (RFC 9051 2.3.2)."""
    out: list[str] = []
    for f in flags:
        if f.startswith("\\"):
            if f.lower() not in SYSTEM_FLAGS:
                return [], f"flag {f} cannot be set"
            f = next(p for p in PERMANENT_FLAGS if p.lower() == f.lower())
        out.append(f)
    return out, None


_FLAG_BYTES: dict[frozenset[str], bytes] = {}
_FLAG_BYTES_RECENT: dict[frozenset[str], bytes] = {}  # keyed by the flags without \\Recent
_RECENT = frozenset({"\\Recent"})


def flags_bytes(flags: frozenset[str]) -> bytes:
    """``(\\Seen ...)`` in the order of ``flag_list``. Few distinct flag sets
    exist, so each is serialised once (FETCH 1:* FLAGS of a large mailbox)."""
    b = _FLAG_BYTES.get(flags)
    if b is None:
        b = b"(" + b" ".join(f.encode("utf-8") for f in flag_list(flags)) + b")"
        if len(_FLAG_BYTES) < 4096:
            _FLAG_BYTES[flags] = b
    return b


def flags_reporter(s: ImapSession) -> Callable[[MessageInfo], bytes]:
    """`session_flags` for one command over many messages: the \\Recent
    question is settled once, so a session without \\Recent messages (every
    rev2 client) formats FLAGS with one dict lookup per message."""
    sel = s.sel
    if sel is not None and sel.recent and not s.engine.rev2:
        return lambda info: session_flags(s, info)
    return lambda info: flags_bytes(info.flags)


def session_flags(s: ImapSession, info: MessageInfo) -> bytes:
    """A message's FLAGS as this session reports them: with \\Recent for a
    rev1 client when this session saw the message first (RFC 3501 2.3.2;
    RFC 9051 dropped the flag)."""
    sel = s.sel
    flags = info.flags
    if sel is not None and sel.recent and not s.engine.rev2 and info.uid in sel.recent:
        b = _FLAG_BYTES_RECENT.get(flags)  # no new frozenset per message
        if b is None:
            b = flags_bytes(flags | _RECENT)
            if len(_FLAG_BYTES_RECENT) < 4096:
                _FLAG_BYTES_RECENT[flags] = b
        return b
    return flags_bytes(flags)
