"""One IMAP session's semantics, sans-I/O: what each command means and which
responses it causes (RFC 9051, RFC 3501 and the extensions in
``EXTENSIONS``).

The engine (engine.py) frames and parses; `ImapSession.execute` answers one
parsed command against the interfaces of backend.py -- `ImapBackend` (the
account's mailboxes), `ImapLogin` (credential checks) and `ImapIO` (flush,
waits, STARTTLS) -- and queues the responses on the engine, for the I/O side
to send. The command handlers live in handlers/, one module per group, and
are given to the session (`handlers.HANDLERS`) by whoever makes it.

Why coroutines: backend calls may wait (a durable commit), and a big FETCH
must stop while the client is behind (`ImapIO.flush`). The layer awaits
those interfaces and nothing else -- no socket, clock, store or event loop
of its own -- so a test (memory.py) drives it by hand, byte for byte. When
no awaited call suspends, a command completes in one ``send(None)`` of
``execute``'s coroutine: net/session_protocol.py runs it eagerly inside
``data_received`` (one read, one write, no task switch per FETCH).

Untagged updates (RFC 9051 5.2): the backend calls `changed` after every
committed change to a mailbox; the selected view (selected.py) is marked
dirty and, at the end of the next command (or at once in IDLE), `sync`
announces EXISTS, FETCH (flags) and EXPUNGE/VANISHED. Expunges are held back
while the command is FETCH, STORE or SEARCH (RFC 9051 7.5.1) so sequence
numbers never shift under the client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..contract import FLUSH_AT, NEED_DATA, AbuseBudgets, Closed
from . import commands as c
from .backend import (
    BackendError,
    ConnectionEnding,
    ImapBackend,
    ImapIO,
    ImapLogin,
    LimitExceeded,
    MailboxGone,
    Unavailable,
)
from .engine import IdleDone, ImapEngine, State
from .framing import Limits
from .selected import KeptCaches, SelectedMailbox

log = logging.getLogger("mailyard.imap")

# Queued output past FLUSH_AT (protocols/contract.py: between commands) is
# written out inside a command too (``maybe_flush``), so a big FETCH streams.

# One command's handler (handlers/): it queues the command's responses on
# the session's engine.
Handler = Callable[["ImapSession", Any], Awaitable[None]]

EXTENSIONS = (
    "LITERAL+", "ENABLE", "IDLE", "ID", "NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE",
    "CHILDREN", "LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE", "CREATE-SPECIAL-USE",
    "ESEARCH", "SEARCHRES", "WITHIN", "CONDSTORE", "QRESYNC", "BINARY", "MULTIAPPEND",
    "UTF8=ACCEPT", "STATUS=SIZE", "COMPRESS=DEFLATE", "OBJECTID", "PREVIEW", "CATENATE",
    "SORT", "SORT=DISPLAY", "ESORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES",
    # RFC 5267 section 4 (live results), RFC 9394 (PARTIAL results and UID FETCH)
    "CONTEXT=SEARCH", "CONTEXT=SORT", "PARTIAL",
    # RFC 9208 (no QUOTASET: only the operator sets limits), RFC 8514
    "QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE", "SAVEDATE",
)


@dataclass(frozen=True)
class ImapConfig:
    """What a session needs to know of its server, and its abuse budgets
    (consecutive BADs, failed logins per connection; the engine counts them)."""

    hostname: str = "localhost"
    version: str = "0"  # RFC 2971 ID
    budgets: AbuseBudgets = AbuseBudgets()
    # exceptions meaning "the backend refused or failed this operation": NO with their text
    failures: tuple[type[BaseException], ...] = (BackendError,)
    # exceptions meaning "the backend cannot be reached now": NO [UNAVAILABLE] (RFC 5530 3)
    unavailable: tuple[type[BaseException], ...] = (Unavailable,)
    # RFC 8437 UNAUTHENTICATE offered (RFC 8437 8: there must be a way to turn it off)
    unauthenticate: bool = True
    # the budget of the big mailboxes' index data kept through IDLE, shared
    # by the sessions of the server process (selected.py KeptCaches); None:
    # no budget
    kept: KeptCaches | None = None


class ImapSession:
    """One connection's IMAP state: the engine, the logged-in account's
    backend, the selected mailbox."""

    __slots__ = ("_running", "_sel", "_unwatch", "backend", "closed", "config", "engine", "handlers", "io", "login",
                 "notes")

    def __init__(self, io: ImapIO, login: ImapLogin, handlers: Mapping[str, Handler], limits: Limits | None = None,
                 config: ImapConfig | None = None) -> None:
        """``handlers``: what each command does (handlers.HANDLERS, the
        glue's half of the engine's state table)."""
        self.config = config = config or ImapConfig()
        self.handlers = handlers
        self.engine = ImapEngine(limits, config.budgets)
        self.io = io
        self.login = login
        self.backend: ImapBackend | None = None
        self._sel: SelectedMailbox | None = None
        self.closed = False  # the connection is gone
        self._running = False  # a command is under way (``execute``)
        self._unwatch: Callable[[], None] | None = None
        # change notifications received, of any mailbox: a SELECT that read
        # its snapshot while one arrived (no mailbox selected yet) asks again
        self.notes = 0

    @property
    def sel(self) -> SelectedMailbox | None:
        """The selected mailbox, or None."""
        return self._sel

    @sel.setter
    def sel(self, value: SelectedMailbox | None) -> None:
        # a mailbox no longer selected: expunged messages it held may go (RFC 2180 4.1.1)
        if self._sel is not None and value is not self._sel and self.backend is not None:
            self.backend.hold_expunged(None)
        self._sel = value

    # --- connection life ----------------------------------------------------
    def greeting(self) -> None:
        """``* OK [CAPABILITY ...]`` (RFC 9051 7.1.1)."""
        self.engine.greeting("mailyard IMAP4rev2 server ready", code="CAPABILITY " + " ".join(self.capabilities()))

    def capabilities(self, logged_in: bool = False) -> list[str]:
        """The CAPABILITY list in the session's current state (RFC 9051 7.2.2),
        or as it is once the login in progress completes."""
        caps = ["IMAP4rev1", "IMAP4rev2", *EXTENSIONS, f"APPENDLIMIT={self.engine.framer.limits.max_append}"]
        authenticated = logged_in or self.engine.state is not State.NOT_AUTHENTICATED
        if authenticated and self.config.unauthenticate:
            caps.append("UNAUTHENTICATE")  # RFC 8437 3: servers MAY advertise it only after login
        if not authenticated:
            if not self.io.tls_active and self.io.can_start_tls:
                caps.append("STARTTLS")  # RFC 9051 6.2.1
            caps.append("SASL-IR")  # RFC 4959
            clear = self.login.plaintext_ok()
            caps += [f"AUTH={m}" for m, plain in self.login.sasl_mechanisms.items() if clear or not plain]
            if not clear:
                # RFC 9051 6.2.3: LOGIN refused until TLS; the clear-text mechanisms
                # are not offered either (as Dovecot does) and get [PRIVACYREQUIRED].
                caps.append("LOGINDISABLED")
        return caps

    def logged_in(self, backend: ImapBackend) -> None:
        """LOGIN or AUTHENTICATE succeeded: serve this account from now on."""
        self.backend = backend
        if not self.closed and self._unwatch is None:
            self._unwatch = backend.watch(self.changed)
        self.io.authenticated()

    def logged_out(self) -> None:
        """UNAUTHENTICATE (RFC 8437 3): back to the not-authenticated state
        as on a new connection, TLS kept. The selected mailbox is left
        without an expunge (its SEARCHRES result with it), the account's
        change notifications stop, ENABLEd extensions end (RFC 8437 4.1),
        and the I/O side goes back to its not-authenticated timers. The
        failed-login count of the connection stays: it is an abuse budget,
        not session state."""
        self.sel = None
        self.backend = None
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        self.engine.forget_enabled()
        self.io.unauthenticated()

    def restart(self) -> None:
        """STARTTLS: forget everything learned before TLS, including commands
        pipelined after STARTTLS in the clear (RFC 9051 6.2.1, RFC 3207 4.2)."""
        self.engine = ImapEngine(self.engine.framer.limits, self.config.budgets)

    def close(self) -> None:
        """The connection is gone: stop watching the backend, let go of the
        selected mailbox's index data; an AUTHENTICATE left open counts as
        a failed login."""
        self.closed = True
        self.login.close()
        # a command under way keeps the selected mailbox until it ends
        # (``execute`` lets go of it then)
        self._let_go(drop=not self._running)
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    def _let_go(self, drop: bool = True) -> None:
        """A closed session's hold on its mailbox: its index data, its place
        in the budget of kept caches, its hold of expunged messages, and
        (``drop``) the selected mailbox itself. The session and its
        connection object refer to each other, so what the session still
        refers to goes only when the cycle collector finds them; the
        selected mailbox (its sequence-number map and view) goes at once."""
        sel = self._sel
        if sel is not None:
            sel.release()
            if self.config.kept is not None:
                self.config.kept.release(sel)
            if drop:
                self._sel = None
        if self.backend is not None:
            self.backend.hold_expunged(None)

    def changed(self, mailbox_id: int) -> None:
        """The backend committed a change to ``mailbox_id`` (any session's)."""
        self.notes += 1
        sel = self.sel
        if sel is not None and sel.mailbox.id == mailbox_id:
            sel.changed()
            self.io.wake()  # IDLE announces it at once

    # --- commands -------------------------------------------------------------
    async def references_current(self) -> bool:
        """Whether the session may go on: its account still exists under the
        credentials it logged in with, and its selected mailbox still exists
        (same UIDVALIDITY). Asked before every command; the backend answers
        from memory unless something was revoked since.

        If not, the session ends with ``* BYE``: RFC 2180 3.2 (a server may
        let a mailbox be deleted and disconnect the other clients that have it
        selected, as Dovecot does), RFC 9051 7.1.5 (BYE: the server closes
        the connection). A client cannot be left in the selected state of a
        mailbox that is gone, and a removed account or changed password must
        not keep a session it opened."""
        backend = self.backend
        if backend is None:
            return True
        if not await backend.account_current():
            log.info("imap: ending a session: account removed or password changed")
            self.engine.bye("Account removed or password changed; log in again", reason="withdrawn")
            return False
        sel = self.sel
        if sel is not None and not await backend.mailbox_current(sel.mailbox):
            self.selected_mailbox_gone()
            return False
        return True

    def selected_mailbox_gone(self) -> None:
        self.sel = None
        self.engine.bye("Selected mailbox was deleted, have to disconnect")

    async def execute(self, cmd: c.Command) -> None:
        """Answer one command; its responses are queued on the engine."""
        self._running = True
        try:
            if self.backend is not None and not await self.references_current():
                return
            await self.handlers[cmd.name](self, cmd)
        except MailboxGone as exc:
            sel = self.sel
            if sel is not None and exc.mailbox_id == sel.mailbox.id:
                self.selected_mailbox_gone()  # deleted while this command ran
            elif self.engine.current is not None:
                await self.finish("NO", "Mailbox does not exist", "NONEXISTENT", allow_expunge=False)
        except ConnectionEnding as end:
            self.engine.bye(end.text, end.code)
        except self.config.unavailable as exc:
            # RFC 5530 3 UNAVAILABLE: a subsystem is down; the client may try again
            log.info("imap: %s failed: %s", cmd.name, exc)
            if self.engine.current is not None:
                self.engine.complete("NO", str(exc) or "Service unavailable, try again later", "UNAVAILABLE")
        except LimitExceeded as exc:
            # RFC 5530 3 LIMIT: the operation would pass a limit of the server
            log.info("imap: %s refused: %s", cmd.name, exc)
            if self.engine.current is not None:
                await self.finish("NO", str(exc), "LIMIT", allow_expunge=False)
        except self.config.failures as exc:
            log.info("imap: %s failed: %s", cmd.name, exc)
            if self.engine.current is not None:
                await self.finish("NO", str(exc) or "Operation failed", allow_expunge=False)
        except ConnectionError:
            raise  # the connection is gone (ImapIO says so); the I/O side closes it
        except Exception:
            log.exception("imap: %s crashed", cmd.name)
            if self.engine.current is not None:
                self.engine.complete("NO", "Internal server error", "SERVERBUG")
        finally:
            self._running = False
            if self.closed:
                # the connection went while this command ran: what it took
                # since (a SELECT's hold, a sync's) is let go here, as close()
                # did for what was held then
                self._let_go()

    async def finish(self, status: str, text: str, code: str | None = None, allow_expunge: bool = True) -> None:
        """Send pending mailbox updates, then the tagged response."""
        sel = self.sel
        # (no coroutine at all for the usual command that has nothing to announce)
        if sel is not None:
            if ((sel.dirty or (allow_expunge and sel.pending_expunge))
                    and self.backend is not None and self.engine.state is State.SELECTED):
                await sel.sync(self.engine, self.backend, allow_expunge, self.turn)
            sel.read_changes = None  # (kept for this command's sync only)
        self.engine.complete(status, text, code)

    async def sync(self, allow_expunge: bool) -> None:
        """Announce what changed in the selected mailbox (RFC 9051 5.2)."""
        sel = self.sel
        if sel is not None and self.backend is not None:
            await sel.sync(self.engine, self.backend, allow_expunge, self.turn)

    async def turn(self) -> None:
        """Between the slices of a long announcement: write out what is
        queued (waiting while the client is behind) and let the other
        connections in. Once the connection is gone the command stops here
        (ConnectionError, as the I/O side's flush raises when it finds the
        connection closed): the slices left would be formatted for nobody."""
        if not self.closed:
            await self.io.flush()
            await self.io.pause()
        if self.closed:
            raise ConnectionError("connection closed")

    async def maybe_flush(self) -> None:
        """Write out queued responses once they pass FLUSH_AT."""
        if self.engine.pending > FLUSH_AT:
            await self.io.flush()

    async def idle(self) -> None:
        """Wait for DONE, announcing changes as they happen (RFC 2177 3).

        Every wake (a change, input, or the I/O side's word that something
        may have been revoked) asks `references_current` before anything is
        reported, as `execute` does before a command: a session whose
        account was removed, whose password changed or whose mailbox was
        deleted meanwhile ends with ``* BYE`` and reports nothing more. The
        I/O side's revocation mark is read before each check and handed to
        the wait that follows it, which ends at once if something was
        revoked since the mark (while the check read the database, say),
        and within seconds of a revocation after it. The mark and the check
        come inside the I/O side's `idle_check`: the sessions a revocation
        woke take turns reading the database; DONE, and input that comes
        while a session waits for its turn, take none.

        A check that cannot be answered (the store unavailable) reports
        nothing, the mail it could not check included: the session goes on
        idling and asks again at its next wake, which the I/O side brings
        within seconds. DONE then ends IDLE with its tagged answer and no
        update; the next command's check reports what the store says."""
        engine = self.engine
        engine.start_idle()
        sel = self.sel
        kept = self.config.kept
        try:
            if sel is not None:
                sel.idle_begins(kept)
                await self.sync(allow_expunge=True)
            await self.io.flush()
            ev = engine.next_event()
            while True:
                if isinstance(ev, Closed):
                    return
                current: bool | None = None
                # a wake by the watch takes a turn among the sessions it woke;
                # DONE takes none (commands are not rationed)
                async with self.io.idle_check(paced=not isinstance(ev, IdleDone)) as turn:
                    if turn:
                        since = self.io.revocation_mark()
                        try:
                            current = await self.references_current()
                        except self.config.unavailable as exc:
                            # (debug: every idler asks again every few seconds while
                            # the store is down; the store warns of the outage itself)
                            log.debug("imap: IDLE cannot check the session now: %s", exc)
                            current = None
                if not turn:
                    # input, a wake or the end of the connection came before
                    # a turn: that first, and the check after it takes none
                    if self.closed or engine.input_ended:
                        engine.bye("Connection closed", reason="eof")
                        return
                    ev = engine.next_event()
                    continue
                if current is False:
                    return
                if isinstance(ev, IdleDone):
                    if sel is not None and kept is not None:
                        # IDLE ends here: the sync that answers DONE does
                        # not count this cache against the budget (growing
                        # it there could drop another idler's cache for a
                        # count about to be let go)
                        kept.release(sel)
                    status, text = ("OK", "IDLE terminated") if ev.ok else ("BAD", "Expected DONE")
                    if current is None:
                        if self.sel is not None:
                            self.sel.read_changes = None
                        engine.complete(status, text)  # (no update: nothing checked to report)
                    else:
                        await self.finish(status, text)
                    return
                if current and self.sel is not None and self.sel.dirty:
                    await self.sync(allow_expunge=True)
                    await self.io.flush()
                    if self.sel is not None and self.sel.dirty:
                        ev = engine.next_event()
                        continue  # more came meanwhile: checked again before it is reported
                # (a revocation since ``since``, during the sync too, ends the wait at once)
                ev = engine.next_event()
                if ev is not NEED_DATA:
                    continue  # (input that came while a turn was given or during the sync: it is seen to first)
                if not await self.io.wait_idle(since, checked=current is True):
                    engine.bye("Connection closed", reason="eof")
                    return
                ev = engine.next_event()
        finally:
            if sel is not None and kept is not None:
                kept.release(sel)  # (after IDLE the cache serves commands: not counted)
