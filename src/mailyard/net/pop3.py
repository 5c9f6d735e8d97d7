"""POP3 glue: feeds socket bytes to the sans-I/O engine (protocols/pop3/engine.py)
and carries out what it asks: credential checks (auth/), the maildrop listing and
message bytes (store/), and the deletions at QUIT.

What this module decides, and why:

- The maildrop is the account's INBOX, fixed at login (RFC 1939 section 8:
  message numbers and sizes do not change during a session). Mail arriving
  meanwhile shows up in the next session.
- One POP3 session per maildrop at a time: a second login gets
  ``-ERR [IN-USE]`` (RFC 2449 section 8.1.2). The lock holds across the
  worker processes of one server (``[server] workers``): an flock() on a
  file per account under ``<data>/locks/pop3/``, which the kernel releases
  when the holding process dies, so a killed worker leaves no stale lock.
- DELE only marks; the marked messages are removed with one atomic
  ``store.expunge`` when the client says QUIT (the UPDATE state, RFC 1939
  section 6). A connection that drops, times out or is cut at shutdown removes
  nothing. IMAP sessions on the same INBOX are told by the store's listeners.
- UIDL = ``<uid_validity>.<uid>``: the store never reuses a UID within one
  UIDVALIDITY (RFC 9051 section 2.3.1.1), so the pair is stable across sessions
  and never names another message.
- Sizes in STAT/LIST are exactly what RETR sends before dot-stuffing (CRLF line
  endings, RFC 1939 section 11). The store's sizes are those of the stored bytes,
  which equal it for mail received over SMTP; bytes with bare LF (IMAP APPEND
  from a Unix client) grow when converted. `MaildropCache` checks every message
  once per process and remembers the few that differ, so later logins cost nothing.
- Every login (USER/PASS, APOP, AUTH) goes through the server's login service
  (auth/service.py), as SMTP, IMAP and webmail do: a wrong password is
  answered ``-ERR [AUTH]`` (RFC 3206 section 5) after a delay that grows with
  repeated failures against the account, the same whether or not the user
  exists; over a login limit every attempt is answered ``-ERR [SYS/TEMP]``
  (RFC 3206 section 4) without a check, whatever the password.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import ssl
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from itertools import takewhile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import logs
from ..auth import sasl
from ..protocols.contract import Closed
from ..protocols.pop3.engine import (
    APOPLogin,
    Event,
    Maildrop,
    POP3Server,
    RetrieveMessage,
    SASLResponse,
    SASLStart,
    StartTLS,
    Update,
    UserPassLogin,
    pop3_message_bytes,
)
from ..store.api import Account, Mailbox, NotFound, Store, StoreUnavailable
from ..store.view import MailboxView
from .budgets import abuse_budgets
from .listener import Listener
from .login import Authenticator, TryLater, owed_expiry, plaintext_allowed, too_slow
from .session_protocol import SessionProtocol

if TYPE_CHECKING:
    from ..services import Services

log = logging.getLogger("mailyard.pop3")

# RFC 1939 section 3: an inactivity autologout timer "MUST be of at least 10
# minutes' duration". On expiry the session ends without entering UPDATE.
MIN_AUTOLOGOUT = 600.0
# The first look at a maildrop reads its messages (exact sizes) in batches of
# at most this many messages and about this many bytes.
SIZE_CHECK_BATCH = 512
SIZE_CHECK_BYTES = 4 << 20

# Mechanisms offered by AUTH (RFC 5034). PLAIN and LOGIN carry the password;
# SCRAM-SHA-256 does not.
SASL_MECHANISMS = ("SCRAM-SHA-256", "PLAIN", "LOGIN")
# Without TLS (and off loopback, net/login.py plaintext_allowed): the engine
# refuses PLAIN with "-ERR [AUTH] ... non-secure" and LOGIN is not offered.
_NO_CLEARTEXT_MECHANISMS = ("SCRAM-SHA-256", "PLAIN")
# The refusals of a login (response code, text; RFC 3206 4): wrong
# credentials or an unknown name (counted against the engine's failed
# logins), and a temporary failure, whatever the password: over a login
# limit, or a SCRAM exchange with a right proof ended by its deadline.
_AUTH_FAILED = ("AUTH", "Authentication failed")
_TRY_LATER = ("SYS/TEMP", "Too many failed logins, try again later")
_TOO_SLOW = ("SYS/TEMP", "Authentication took too long, try again")


def _sasl_refusal(failure: sasl.Failure) -> tuple[str, str]:
    """The refusal of a SASL exchange that ended in ``failure`` of a kind
    counted as a login (not a cancel or a malformed exchange)."""
    if failure.kind != "temporary":
        return _AUTH_FAILED
    return _TOO_SLOW if too_slow(failure) else _TRY_LATER


@dataclass
class _CachedMaildrop:
    # uid -> POP3 size, ascending uid, kept current by store/view.py
    view: MailboxView[int] = field(default_factory=lambda: MailboxView(lambda info: info.size))
    checked_through: int = 0  # every UID <= this has been read and its POP3 size known
    odd: set[int] = field(default_factory=set)  # UIDs whose stored bytes need conversion
    listing: Maildrop | None = None
    counted: int = 0  # len(view) when last added to MaildropCache._cached


class MaildropCache:
    """Per-process maildrop listings with exact POP3 sizes, kept up to date cheaply.

    The cache is shared by all sessions of the server; each session gets the
    immutable ``Maildrop`` of its login and never sees later changes (RFC 1939
    section 8). Two things would make a login slow on a big INBOX, and both are
    remembered:

    - Exact sizes. Messages are immutable and UIDs only grow, so each message is
      read once (`pop3_message_bytes`) and only the rare ones whose POP3 size
      differs from the stored size are marked. The first login after a restart
      pays one read of the INBOX; later ones read only new mail.
    - The listing itself, a ``MailboxView`` (store/view.py): an unchanged
      ``highest_modseq`` means it is current, and otherwise ``changes_since``
      gives just the new and expunged messages.

    Memory is bounded by ``max_messages`` cached entries (least recently used
    mailboxes are dropped first).
    """

    def __init__(self, max_messages: int = 500_000) -> None:
        self._boxes: OrderedDict[int, _CachedMaildrop] = OrderedDict()
        self.max_messages = max_messages
        self._cached = 0

    async def maildrop(self, store: Store, mailbox: Mailbox) -> tuple[Maildrop, Callable[[int], bool]]:
        """The listing of ``mailbox``, and a test telling whether a UID's stored
        bytes are exactly what POP3 sends (so RETR can skip the conversion)."""
        box = self._boxes.get(mailbox.id) or _CachedMaildrop()
        update = await box.view.refresh(store, mailbox)
        if update.reloaded:
            box.checked_through, box.odd = 0, set()
        else:
            box.odd.difference_update(update.removed)
        if update.moved:
            box.listing = None
        await self._check_sizes(store, mailbox, box)
        if box.listing is None:
            v, sizes = mailbox.uid_validity, box.view.entries
            box.listing = Maildrop(tuple(sizes), tuple(sizes.values()), tuple([f"{v}.{u}" for u in sizes]))
        self._remember(mailbox.id, box)
        checked, odd = box.checked_through, box.odd
        return box.listing, lambda uid: uid <= checked and uid not in odd

    async def _check_sizes(self, store: Store, mailbox: Mailbox, box: _CachedMaildrop) -> None:
        done, sizes = box.checked_through, box.view.entries
        unchecked = list(takewhile(lambda uid: uid > done, reversed(sizes)))
        if not unchecked:
            return
        highest = unchecked[0]
        unchecked.reverse()
        start = 0
        while start < len(unchecked):
            # read in batches (one store call each) of at most SIZE_CHECK_BYTES,
            # so a maildrop of big messages is not held in memory at once
            end, total = start + 1, sizes.get(unchecked[start], 0)
            while end < len(unchecked) and end - start < SIZE_CHECK_BATCH and total < SIZE_CHECK_BYTES:
                total += sizes.get(unchecked[end], 0)
                end += 1
            # a message expunged meanwhile is left out; the next changes_since drops it
            for uid, data in await store.read_messages(mailbox, unchecked[start:end]):
                size = len(pop3_message_bytes(data))
                if size != len(data):
                    box.odd.add(uid)
                if uid in sizes and size != sizes[uid]:
                    sizes[uid] = size
            start = end
            await asyncio.sleep(0)  # a long first scan must not stall other sessions
        box.checked_through = highest
        box.listing = None

    def _remember(self, mailbox_id: int, box: _CachedMaildrop) -> None:
        old = self._boxes.pop(mailbox_id, None)
        if old is not None:
            self._cached -= old.counted
        self._boxes[mailbox_id] = box
        box.counted = len(box.view)
        self._cached += box.counted
        while self._cached > self.max_messages and len(self._boxes) > 1:
            _, evicted = self._boxes.popitem(last=False)
            self._cached -= evicted.counted


# The store's lock space of POP3 maildrops (Store.lock_exclusive).
MAILDROP_LOCK = "pop3-maildrop"


class MaildropLocks:
    """RFC 1939 section 8: one session per maildrop, across processes.

    An exclusive, non-blocking flock() on ``<directory>/<account id>`` per
    locked maildrop. flock() locks belong to an open file description, so
    two sessions of one process exclude each other as two processes do, and
    the kernel drops the lock with the descriptor when the process ends."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._held: dict[int, int] = {}  # account id -> descriptor of its lock file

    def acquire(self, account_id: int) -> bool:
        if account_id in self._held:
            return False
        if self.directory is None:  # no data directory: this process only
            self._held[account_id] = -1
            return True
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / str(account_id), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._held[account_id] = fd
        return True

    def release(self, account_id: int) -> None:
        fd = self._held.pop(account_id, None)
        if fd is not None and fd >= 0:
            os.close(fd)  # drops the flock

    def __contains__(self, account_id: int) -> bool:
        return account_id in self._held


class POP3Service:
    """Server-wide POP3 state: maildrop locks and the size index."""

    def __init__(self, store: Store, hostname: str, data_dir: Path | None = None) -> None:
        self.store = store
        self.hostname = hostname
        self.maildrops = MaildropCache()
        # account ids with an open TRANSACTION session
        self.locked = MaildropLocks(data_dir / "locks" / "pop3" if data_dir is not None else None)

    def timestamp(self) -> str:
        """A fresh APOP timestamp (RFC 1939 section 7: unique per greeting)."""
        return sasl.make_apop_timestamp(self.hostname, time.time(), f"{os.getpid()}.{os.urandom(8).hex()}")


_services: weakref.WeakKeyDictionary[object, POP3Service] = weakref.WeakKeyDictionary()


def service_for(services: Services) -> POP3Service:
    """The POP3Service of a running server (created on first use)."""
    svc = _services.get(services)
    if svc is None or svc.store is not services.store:
        svc = POP3Service(services.store, services.config.server.hostname, services.data_dir)
        _services[services] = svc
    return svc


def _tls_context(services: Services) -> ssl.SSLContext | None:
    """The STARTTLS context if the server has TLS set up (net/tls.py ReloadableTLS)."""
    return services.tls.context if services.tls is not None else None


class POP3Session(SessionProtocol):
    """One POP3 connection, from greeting to QUIT or disconnect, as an
    asyncio.Protocol (net/session_protocol.py, like SMTP).

    Commands the engine answers itself are answered inside ``data_received``;
    a RETR/TOP, a login, STLS or the UPDATE at QUIT is a step. Steps start at
    once (``eager_steps``): a RETR whose bytes the store reads without waiting
    finishes there and then, so a RETR costs one read and one write on the
    socket and no task switch (bench/pop3.py).
    """

    eager_steps = True
    protocol_label = "pop3"

    def __init__(self, services: Services, listener: Listener) -> None:
        super().__init__(listener)
        self.services = services
        self.service = service_for(services)
        self.store = self.service.store
        timeout = services.config.limits.idle_timeout
        # RFC 1939 section 3: the autologout timer is at least 10 minutes.
        self.idle_timeout = max(timeout, MIN_AUTOLOGOUT)
        self.tls_context: ssl.SSLContext | None = None
        self.engine: POP3Server | None = None
        self.account: Account | None = None
        self.mailbox: Mailbox | None = None
        self._crlf_clean: Callable[[int], bool] = lambda uid: False
        self._mech: sasl.Mechanism | None = None
        self._auth: Authenticator | None = None
        self._updated = False  # UPDATE ran: the sign-off is the last word
        self._checked = False  # _check_credentials just asked the store: the next pump need not

    # --- SessionProtocol hooks ------------------------------------------------

    def start(self) -> None:
        services, service = self.services, self.service
        self.tls_context = _tls_context(services)
        plaintext_auth = plaintext_allowed(services, self)
        self.timestamp = service.timestamp()
        self.engine = POP3Server(
            timestamp=self.timestamp,
            greeting="mailyard POP3 server ready",
            signoff=f"{service.hostname} POP3 server signing off",
            sasl_mechanisms=SASL_MECHANISMS if plaintext_auth else _NO_CLEARTEXT_MECHANISMS,
            plaintext_auth=plaintext_auth,
            tls_available=self.tls_context is not None and not self.tls,
            tls_active=self.tls,
            budgets=abuse_budgets(services.config, "pop3"),
        )
        self.set_timeout(self.idle_timeout)
        self.write(self.engine.data_to_send())

    def received(self, data: bytes) -> None:
        assert self.engine is not None
        self.engine.receive_data(data)

    def pump(self) -> Coroutine[Any, Any, None] | None:
        account = self.account
        if self._checked:
            self._checked = False  # by the step that just ran
        elif account is not None:
            # checked before the engine answers the commands just received
            # (it answers STAT, LIST, DELE... from the listing it holds)
            current = self.store.credentials_known(account.id, account.epoch)
            if current is None:
                # only the database can tell: a step asks it, and the pump
                # runs again after it (the engine's input waits meanwhile)
                return self._check_credentials(account)
            if not current:
                assert self.engine is not None
                self.engine.withdraw("account removed or password changed")
        return super().pump()

    async def _check_credentials(self, account: Account) -> None:
        """Ask the store whether the session's credentials are current; a
        store that cannot tell ends the session with a temporary failure as
        the answer to the command waiting (RFC 3206 4 SYS/TEMP), before the
        engine has answered anything from its listing. A step as ``step``
        is: a client that leaves meanwhile has its maildrop unlocked when it
        ends (``connection_lost`` leaves that to the step in progress)."""
        try:
            try:
                current = await self.store.credentials_current(account.id, account.epoch)
            except StoreUnavailable:
                log.info("pop3: ending the session of %s: the store cannot check its credentials",
                         account.address)
                self.write(b"-ERR [SYS/TEMP] mail store unavailable, try again later\r\n")
                self.close()
                return
            if not current:
                assert self.engine is not None
                self.engine.withdraw("account removed or password changed")
            self._checked = True
        finally:
            if self.closed:  # the client left while the check ran
                self.unlock()

    def on_event(self, event: Event) -> Coroutine[Any, Any, None] | None:
        return self.step(event)  # every POP3 event needs the store, the login service or TLS

    def ended(self, event: Closed) -> None:
        self.unlock()

    async def step(self, event: Event) -> None:
        try:
            await self.handle(event)
        except StoreUnavailable:
            # the store cannot be reached (its database down): RFC 3206 4
            # SYS/TEMP, a temporary failure; the client tries again later
            text = "mail store unavailable, try again later"
            if isinstance(event, RetrieveMessage):
                self.engine.message_unavailable("[SYS/TEMP] " + text)
            elif isinstance(event, UserPassLogin | APOPLogin | SASLStart | SASLResponse):
                self.engine.reject_login("SYS/TEMP", text)
            else:
                raise
        finally:
            if self.closed:  # the client left while the step ran
                self.unlock()

    def goodbye(self) -> bytes:
        out = self.engine.data_to_send() if self.engine is not None else b""
        if self._updated:
            return out  # QUIT finished: its sign-off is the answer
        return out + b"-ERR [SYS/TEMP] server shutting down, nothing deleted\r\n"

    def refusal(self, reason: str) -> bytes:
        # Over the connection limits: -ERR [SYS/TEMP] as the greeting (RFC 3206 section 4).
        return f"-ERR [SYS/TEMP] {reason}, try again later\r\n".encode()

    def on_timeout(self) -> bytes:
        # RFC 1939 section 3: an idle client is closed without UPDATE and
        # without a response.
        return b""

    def input_state(self) -> tuple[bool, int, float]:
        # A command line must be complete within [limits] command_deadline
        # however slowly it trickles in.
        engine = self.engine
        if engine is None:
            return False, 0, 0.0
        return engine.partial_input, engine.lines_completed, self.listener.limits.command_deadline

    def on_deadline(self) -> bytes:
        return b"-ERR command not completed in time, closing connection\r\n"

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._auth is not None:
            self._auth.close()  # an AUTH exchange left open counts as a failure
        if not self.busy:
            self.unlock()  # else when the step ends (`step`)

    # --- steps ----------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        engine = self.engine
        assert engine is not None
        if isinstance(event, RetrieveMessage):
            assert self.mailbox is not None
            try:
                data = await self.store.read_message(self.mailbox, event.key)
            except NotFound:
                engine.message_unavailable()
            else:
                engine.send_message(data, self._crlf_clean(event.key))
                # Hand the bytes to the transport now, and wait for it when its
                # buffer is full, so a client pipelining many RETRs cannot make
                # us hold them all in memory.
                self.write(engine.data_to_send())
                await self.drain()
        elif isinstance(event, UserPassLogin):
            await self.finish_login(await self.authenticator().password(event.username, event.password))
        elif isinstance(event, APOPLogin):
            auth = self.authenticator()
            result = await auth.service.apop(auth.ip, event.username, event.timestamp, event.digest, self.tls)
            await self.finish_login(result)
        elif isinstance(event, SASLStart):
            self._mech = sasl.start(event.mechanism)
            await self.sasl_event(self._mech.begin(event.initial_response))
        elif isinstance(event, SASLResponse):
            assert self._mech is not None
            if event.too_long:
                # a response over the line limit ends the exchange, settled
                # as a cancelled one (as SMTP's over-long AUTH line)
                self.authenticator().cancelled(self._mech)
                self._mech = None
                self.engine.reject_login(None, "authentication line too long")
                return
            await self.sasl_event(self._mech.step(event.line))
        elif isinstance(event, Update):
            await self.update(event)
        elif isinstance(event, StartTLS):
            assert self.tls_context is not None
            # The context is read again now, so a SIGHUP reload applies.
            context = _tls_context(self.services) or self.tls_context
            await self.upgrade_tls(context, forget=self._forget_cleartext)

    def _forget_cleartext(self) -> None:
        """RFC 2595 section 4: the session starts again under TLS."""
        engine = self.engine
        assert engine is not None
        engine.tls_started()
        # RFC 2595 section 2.1: with TLS up, passwords may be sent in the clear.
        engine.plaintext_auth = True
        engine.sasl_mechanisms = SASL_MECHANISMS

    # --- authentication ---------------------------------------------------------

    def authenticator(self) -> Authenticator:
        if self._auth is None:
            self._auth = Authenticator(self.services, self, self.listener.name)
        return self._auth

    async def sasl_event(self, ev: sasl.Event) -> None:
        mech = self._mech
        assert mech is not None
        auth = self.authenticator()
        ev = await auth.sasl(mech, ev)
        if isinstance(ev, sasl.Challenge):
            self.engine.sasl_challenge(ev.data)
            return
        self._mech = None
        if isinstance(ev, sasl.Success):
            await self.finish_login(await auth.account(ev))
        elif ev.kind == "cancelled":
            self.engine.reject_login(None, "authentication cancelled")
        elif ev.kind in ("malformed", "too-long", "protocol"):
            self.engine.reject_login(None, "invalid authentication exchange")
        else:
            self.engine.reject_login(*_sasl_refusal(ev))

    def end_sasl(self) -> bool:
        engine = self.engine
        failure = owed_expiry(self._auth, self._mech, engine is not None and engine.awaiting_sasl_response)
        if failure is None or engine is None:
            return False
        self._mech = None
        # settled by the login session; answered as sasl_event answers it
        engine.end_sasl(*_sasl_refusal(failure))
        return True

    async def finish_login(self, acct: Account | TryLater | None) -> None:
        """Lock and list the maildrop of a verified account, or refuse."""
        engine = self.engine
        if isinstance(acct, TryLater):
            engine.reject_login(*_TRY_LATER)
            return
        if acct is None:
            engine.reject_login(*_AUTH_FAILED)
            return
        acct = acct.without_secrets()  # checked: the session keeps none of them
        mailbox = await self.store.get_mailbox(acct.id, "INBOX")
        if mailbox is None:
            engine.reject_login("SYS/PERM", "no INBOX for this account")
            return
        if not self.service.locked.acquire(acct.id):
            # RFC 2449 section 8.1.2: the maildrop is locked by another session.
            engine.reject_login("IN-USE", "maildrop already locked by another POP3 session")
            return
        self.account, self.mailbox = acct, mailbox  # unlock() from here on releases it
        try:
            # and by no session of another node sharing the store
            shared = await self.store.lock_exclusive(MAILDROP_LOCK, acct.id)
        except Exception:
            log.exception("pop3: locking the maildrop of %s failed", acct.address)
            shared = None
        if self.account is not acct:  # the session ended meanwhile (unlock ran)
            if shared:
                self.store.unlock_exclusive(MAILDROP_LOCK, acct.id)
            return
        if not shared:
            self.service.locked.release(acct.id)
            self.account = None
            if shared is None:
                engine.reject_login("SYS/TEMP", "cannot lock the maildrop, try again later")
            else:
                engine.reject_login("IN-USE", "maildrop already locked by another POP3 session")
            return
        try:
            maildrop, self._crlf_clean = await self.service.maildrops.maildrop(self.store, mailbox)
        except Exception:
            log.exception("pop3: listing the maildrop of %s failed", acct.address)
            self.unlock()
            engine.reject_login("SYS/TEMP", "cannot open the maildrop, try again later")
            return
        logs.event(log, logging.INFO, "maildrop_opened", proto=self.listener.name, ip=self.peer_ip, user=acct.address,
                   messages=len(maildrop.keys))
        engine.accept_login(maildrop, acct.address)

    # --- UPDATE ---------------------------------------------------------------------

    async def update(self, event: Update) -> None:
        """RFC 1939 section 6: remove the marked messages in one atomic expunge."""
        ok = True
        if event.keys:
            assert self.mailbox is not None and self.account is not None
            try:
                removed = await self.store.expunge(self.mailbox, sorted(event.keys))
                logs.event(log, logging.INFO, "maildrop_updated", proto=self.listener.name, ip=self.peer_ip,
                           user=self.account.address, deleted=len(removed))
            except Exception:
                log.exception("pop3: expunge for %s failed", self.account.address)
                ok = False
        self._updated = True
        self.engine.update_done(ok)
        self.unlock()

    def unlock(self) -> None:
        if self.account is not None:
            self.store.unlock_exclusive(MAILDROP_LOCK, self.account.id)
            self.service.locked.release(self.account.id)
            self.account = None


def pop3_protocol(services: Services, listener: Listener) -> POP3Session:
    """The POP3 ports: 110 / 1110 (STLS) and 995 / 1995 (implicit TLS, RFC 8314)."""
    return POP3Session(services, listener)
