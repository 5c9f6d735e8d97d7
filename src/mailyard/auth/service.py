"""The login service: one credential check for SMTP AUTH, IMAP, POP3 (USER/PASS,
APOP, AUTH) and webmail, with one behaviour for delays and lockouts.

Every attempt runs the same steps, whatever the protocol:

1. Resolve the name the way the store does (`store.names.normalize_address`:
   case, trailing dot, IDNA and Unicode forms of the domain) and key the
   throttle on the account it resolves to, or on the normalised name if it
   resolves to none. Every spelling of one account shares one counter, and
   so does every spelling of one unknown name.
2. Reserve the attempt in the throttle (auth/throttle.py) *before* any
   verification. Over the address's or the name's limit the attempt is
   refused without looking at the credentials: the protocol answers its
   temporary reply (`TryLater`), the same for a right and a wrong password and
   for known and unknown names.
3. Wait the growing delay, verify (argon2 for passwords, a digest for APOP, the
   proof for SCRAM), and settle the reservation: a success releases it, a
   failure, a cancelled or abandoned exchange, counts.

Below the limit a wrong password and an unknown name get the same reply and
cost the same work (a dummy hash, a fake SCRAM salt). Fake salts come from
the normalised name and a secret kept in the data directory, so an unknown
name gets the same salt for every spelling and across restarts, as a real
account does (RFC 5802 section 9).

Pure of network code: the protocols (net/, web/) pass the client address and
turn the results into their replies.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from .. import logs, metrics
from ..fsutil import write_atomic
from ..store.api import Account, InvalidName, Store, StoreError, StoreUnavailable
from ..store.names import normalize_address
from . import sasl
from .passwords import SCRAM_SALT_BYTES, ScramKeys, parse_scram_sha256, verify_password_async
from .throttle import Attempt, Busy, Locked, LoginThrottle
from .throttle_db import PENDING_TTL

__all__ = ["LoginService", "LoginSession", "TryLater", "load_secret", "too_slow"]


# The longest a SCRAM exchange may run from the server-first message (the
# keys handed out, the attempt reserved against the login limits) to the
# client's proof. The PostgreSQL throttle lets a reservation go after
# ``PENDING_TTL`` (a node may die holding it); a proof arriving later would
# be a guess beyond the limit, made while new exchanges had been let in.
# So a later message of the exchange ends it as a failure, and whatever the
# proof was is never said: no server-final ``v=`` (RFC 5802 3), which would
# tell a right guess from a wrong one. A real client answers in a second.
SASL_EXCHANGE_MAX = PENDING_TTL / 2
# The reason logged (and the failure's) for an exchange ended by a deadline.
EXCHANGE_TOO_LONG = "exchange took too long"

log = logging.getLogger("mailyard.auth")


def too_slow(failure: sasl.Failure) -> bool:
    """True for the temporary failure of a SCRAM exchange whose proof was
    verified (the password was right) and that the exchange deadline ended
    before the client's last message (`LoginSession.sasl`): the protocols
    say so, not "too many failed logins", though with the same code."""
    return failure.kind == "temporary" and failure.reason == EXCHANGE_TOO_LONG

# The file in the data directory holding the secret of the fake SCRAM salts.
SECRET_FILE = "scram-salt.key"


# Longest an attempt waits for attempts in flight to settle before it gets
# the temporary reply: a verification takes tens of milliseconds, so this is
# reached only when a burst is far larger than the budgets allow.
BUSY_WAIT = 30.0


@dataclass(frozen=True, slots=True)
class TryLater:
    """Over a limit: refused without a check; answer the protocol's temporary reply."""

    retry_after: float  # seconds, a hint for the reply ("try again in N minutes")


def load_secret(path: Path) -> bytes:
    """The 32-byte secret in ``path``, created (mode 0600) on first use.

    Unreadable or uncreatable: a per-process secret, with a warning (fake salts
    then change at restart, which is the only loss).
    """
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data[:32]
    except FileNotFoundError:
        data = None
    except OSError as exc:
        log.warning("cannot read %s (%s): fake SCRAM salts change at restart", path, exc)
        return secrets.token_bytes(32)
    secret = secrets.token_bytes(32)
    # a link to a file nodes share, not made yet: the file is made where it points
    target = path.resolve() if path.is_symlink() else path
    try:
        if data is not None:
            # Empty or cut short (a crash while it was made, a truncated
            # restore): a short key would let anyone compute the fake salts
            # and tell unknown users from real ones (RFC 5802 5.1).
            log.warning("%s holds %d bytes, not 32: a new secret replaces it", path, len(data))
            write_atomic(target, secret)
            return path.read_bytes()[:32]
        try:
            write_atomic(target, secret, exclusive=True)
        except FileExistsError:  # another process made it first: use theirs
            theirs = path.read_bytes()
            if len(theirs) >= 32:
                return theirs[:32]
            raise OSError(f"{path} holds {len(theirs)} bytes, not 32") from None
    except OSError as exc:
        log.warning("cannot create %s (%s): fake SCRAM salts change at restart", path, exc)
    return secret


def _login_failed(protocol: str, ip: str, name: str | None, why: str, **extra: object) -> None:
    """The one line every refused login logs, on every protocol, at WARNING:
    contrib/fail2ban/filter.d/mailyard.conf matches it. ``why`` is a short
    reason ("wrong credentials", "locked-out", "busy", a SASL failure)."""
    # User names come from the network: bounded (logs.render_value quotes them).
    logs.event(log, logging.WARNING, "login_failed", proto=protocol, ip=ip,
               user=name[:100] if name is not None else None, reason=why, **extra)
    metrics.count_login(protocol, "locked" if why in ("locked-out", "busy") else "failed")


class LoginService:
    """Credential checks under the shared login throttle; one per server."""

    def __init__(
        self,
        store: Store,
        throttle: LoginThrottle,
        secret: bytes | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``secret``: the key of the fake SCRAM salts, read from the data
        folder where the server is built (`load_secret`, in a thread, before
        any client is served), so a login never waits on the disk; without
        one, a secret of this process (the salts then change at restart)."""
        self.store = store
        self.throttle = throttle
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self.clock = clock
        # Every wait of a login goes through here (tests record the delays).
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        # Attempts waiting for one in flight to settle (LoginThrottle.Busy), in
        # arrival order: woken in that order, the longest waiting asks first.
        self._waiting: dict[asyncio.Future[None], None] = {}

    # -- names -------------------------------------------------------------------
    async def resolve(self, name: str) -> Account | None:
        try:
            return await self.store.get_account(name)
        except StoreUnavailable:
            raise  # not "no such account": the login is refused for now
        except (InvalidName, StoreError, ValueError):
            return None

    @staticmethod
    def key(name: str, account: Account | None) -> str:
        """The throttle key: the account the name resolves to, else the name
        in the store's normal form (the local part compared without case, as
        the store's lookup does)."""
        if account is not None:
            return account.address.casefold()
        try:
            return normalize_address(name).casefold()
        except (InvalidName, ValueError):
            return name.strip().casefold()

    def fake_salt(self, key: str) -> bytes:
        """The SCRAM salt shown for a name with no SCRAM keys: stable per
        normalised name and across restarts, unguessable without the secret
        (SCRAM, RFC 5802 and RFC 7677: an unknown user looks like one with keys)."""
        return hmac.digest(self._secret, key.encode("utf-8", "surrogatepass"), "sha256")[:SCRAM_SALT_BYTES]

    # -- the throttle ------------------------------------------------------------
    async def reserve(self, ip: str, key: str, name: str | None, protocol: str) -> Attempt | TryLater:
        """Reserve an attempt and wait its delay, or refuse it (`TryLater`).

        While the budget left is held by attempts in flight, wait for one of
        them to settle (at most ``BUSY_WAIT`` seconds, then `TryLater`)."""
        now = self.clock()
        verdict = await self.throttle.reserve_async(ip, key, now)
        deadline = now + BUSY_WAIT
        while isinstance(verdict, Busy):
            if not await self._settled(deadline - now):
                _login_failed(protocol, ip, name, "busy", scope=verdict.scope)
                return TryLater(self.throttle.policy.base_delay)
            now = self.clock()
            verdict = await self.throttle.reserve_async(ip, key, now)
        if isinstance(verdict, Locked):
            _login_failed(protocol, ip, name, "locked-out", scope=verdict.scope,
                          retry_after=round(verdict.retry_after(now)))
            # The same short wait for every refusal, whatever the password.
            await self.sleep(min(verdict.retry_after(now), self.throttle.policy.base_delay))
            return TryLater(verdict.retry_after(now))
        if verdict.delay > 0:
            try:
                await self.sleep(verdict.delay)
            except BaseException:
                self.throttle.fail(verdict, self.clock())
                self._wake()
                raise
        return verdict

    async def _settled(self, timeout: float) -> bool:
        """Wait until some attempt in flight settles; False after ``timeout``.
        A loop timer rather than ``asyncio.wait_for``: a login may run in an
        eager step that has no current task (net/session_protocol.py)."""
        if timeout <= 0:
            return False
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiting[fut] = None
        timer = loop.call_later(timeout, lambda: fut.done() or fut.set_exception(TimeoutError()))
        try:
            await fut
            return True
        except TimeoutError:
            return False
        finally:
            timer.cancel()
            self._waiting.pop(fut, None)

    def peer_settled(self) -> None:
        """An attempt settled in another process sharing the throttle
        (auth/throttle_shared.py): the waiting attempts ask again."""
        self._wake()

    def _wake(self) -> None:
        """An attempt settled: every waiting one asks for its turn again, the
        longest waiting first (a waiter that re-queues keeps its place)."""
        waiting, self._waiting = self._waiting, {}
        for fut in waiting:
            if not fut.done():
                fut.set_result(None)

    def failed(self, attempt: Attempt | None, ip: str, name: str | None, protocol: str,
               why: str = "wrong credentials", key: str | None = None) -> None:
        """Count a failure: the reserved attempt, or (without one) the address
        and ``key``."""
        if attempt is not None:
            self.throttle.fail(attempt, self.clock())
            self._wake()
        else:
            self.throttle.record_failure(ip, key, self.clock())
        _login_failed(protocol, ip, name, why)

    def succeeded(self, attempt: Attempt, account: Account, ip: str, protocol: str, tls: bool | None) -> None:
        self.proven(attempt)
        logs.event(log, logging.INFO, "login", proto=protocol, ip=ip, tls=tls, user=account.address)
        metrics.count_login(protocol, "success")

    def proven(self, attempt: Attempt) -> None:
        """Settle ``attempt`` as right credentials (a login, or one whose
        proof was verified but that could not finish)."""
        self.throttle.succeed(attempt, self.clock())
        self._wake()

    async def _check(
        self, ip: str, name: str, protocol: str, tls: bool | None,
        verify: Callable[[Account | None], Awaitable[bool]],
    ) -> Account | TryLater | None:
        account = await self.resolve(name)
        attempt = await self.reserve(ip, self.key(name, account), name, protocol)
        if isinstance(attempt, TryLater):
            return attempt
        ok = False
        try:
            ok = await verify(account) and account is not None
        finally:
            if ok:
                assert account is not None
                self.succeeded(attempt, account, ip, protocol, tls)
            else:
                self.failed(attempt, ip, name, protocol)
        return account if ok else None

    # -- the checks --------------------------------------------------------------
    async def password(
        self, ip: str, name: str, password: str, protocol: str, tls: bool | None = None
    ) -> Account | TryLater | None:
        """The account if ``password`` is right for ``name``; None if not
        (counted); `TryLater` if over a limit (nothing verified).

        An unknown user costs the same hash verification as a known one.
        """

        async def verify(account: Account | None) -> bool:
            return await verify_password_async(account.password_hash if account else None, password)

        return await self._check(ip, name, protocol, tls, verify)

    async def apop(
        self, ip: str, name: str, timestamp: str, digest: str, tls: bool | None = None
    ) -> Account | TryLater | None:
        """POP3 APOP (RFC 1939 section 7) under the same rules as a password."""

        async def verify(account: Account | None) -> bool:
            return sasl.verify_apop(timestamp, account.apop_secret if account else None, digest)

        return await self._check(ip, name, "pop3", tls, verify)

    def session(self, ip: str, protocol: str, tls: Callable[[], bool] | None = None) -> LoginSession:
        return LoginSession(self, ip, protocol, tls)


class LoginSession:
    """The SASL side of one connection: drives a mechanism (auth/sasl.py)
    through the service and holds the attempt reserved for a SCRAM exchange
    until it ends, which the exchange deadline (`sasl`) bounds for every
    mechanism and protocol. Call `close` when the connection goes: an
    exchange left open counts as a failure."""

    def __init__(
        self, service: LoginService, ip: str, protocol: str, tls: Callable[[], bool] | None = None,
        *, deadline: float = SASL_EXCHANGE_MAX, on_expired: Callable[[], None] | None = None,
    ) -> None:
        """``deadline``: seconds the client has to answer the challenges of
        one exchange (more than 0, at most ``SASL_EXCHANGE_MAX``, as config.py
        checks ``[limits] sasl_deadline``); ``on_expired``: called when it
        passes while the client was to answer, for the protocol to send its
        failure reply (the exchange is settled by then, `expiry`)."""
        if not 0 < deadline <= SASL_EXCHANGE_MAX:
            raise ValueError(f"a SASL exchange deadline is more than 0 and at most {SASL_EXCHANGE_MAX:g} s")
        self.service = service
        self.ip = ip
        self.protocol = protocol
        self._tls = tls  # read at login time: STARTTLS may have changed it
        self._open: Attempt | None = None
        # the mechanism of the exchange in ``_open``, and when it was reserved
        # (service.clock; None once its proof was judged in time)
        self._open_mech: sasl.Mechanism | None = None
        self._opened: float | None = None
        # The account record whose credentials the mechanism checks (the
        # password's, or the SCRAM keys handed to it), and the one the
        # exchange ended logged in to: a session is the account that was
        # proven, never whatever holds its name by the time the exchange ends
        # (removed and added again, or its password changed meanwhile).
        self._proven: Account | None = None
        self._logged_in: Account | None = None
        # The exchange deadline (`sasl`): the mechanism whose client time is
        # counted, the seconds the client took in it so far, when its last
        # challenge went out (loop time), the timer for the rest, and the
        # exchange the deadline ended with the failure that answers it (settled
        # then), kept only until the protocol answers it (`expiry`) or the
        # exchange's next step, cancel or end comes; the mechanism only by a
        # weak reference: whoever answers it holds it, and a SCRAM mechanism
        # holds the account's keys, which the session must not keep alive.
        self.deadline = deadline
        self._on_expired = on_expired
        self._timed: sasl.Mechanism | None = None
        self._waited = 0.0
        self._asked: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._expired: tuple[weakref.ref[sasl.Mechanism], sasl.Failure] | None = None

    @property
    def tls(self) -> bool | None:
        return self._tls() if self._tls is not None else None

    async def password(self, name: str, password: str) -> Account | TryLater | None:
        return await self.service.password(self.ip, name, password, self.protocol, self.tls)

    def _abandon(self, why: str, name: str | None) -> None:
        attempt, self._open, self._open_mech = self._open, None, None
        self._proven = self._logged_in = None
        if attempt is not None:
            self.service.failed(attempt, self.ip, name, self.protocol, why)

    def close(self) -> None:
        """The connection ended: an exchange in progress is a failure."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._asked = self._timed = self._expired = None
        self._abandon("exchange abandoned", None)

    def cancelled(self, mech: sasl.Mechanism) -> None:
        """The client cancelled ``mech``'s exchange (``*``, RFC 4422 3.5, or a
        line the engine refused) where the protocol engine answers that
        itself (SMTP): a failure, like a wrong password, against the
        mechanism's name if it had one."""
        self._stop_clock()
        self._timed = None
        if self.expiry(mech) is not None:
            return  # the deadline ended the exchange first, and settled it
        name = mech.authcid
        if self._open is not None:
            self._abandon("authentication cancelled", name)
            return
        key = self.service.key(name, None) if name is not None else None
        self.service.failed(None, self.ip, name, self.protocol, "authentication cancelled", key)

    async def sasl(self, mech: sasl.Mechanism, ev: sasl.Event) -> sasl.Challenge | sasl.Success | sasl.Failure:
        """Answer the mechanism's needs until it has something for the client.

        Failures of kind ``invalid-credentials``, ``authzid`` and
        ``cancelled`` are counted; kind ``temporary`` means try again later
        (SMTP 454 4.7.0, IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP],
        ManageSieve NO (TRYLATER)): over a limit, nothing was verified, or
        a SCRAM exchange ended by its deadline after the proof was verified.

        The exchange deadline: the client has ``deadline`` seconds in all to
        answer the challenges of one exchange (from the first challenge to
        its last response; the server's own work between them, a throttle
        delay or a verification, is not its time). A client that goes
        silent holds the attempt reserved for it, and enough of them would
        hold an account's whole budget so that its owner's login waits; so
        when the time is up, the exchange ends at once (`_deadline_passed`,
        `_expire`): one that holds a reservation (SCRAM after the
        server-first message) as a failed authentication, counted as a
        failure, since a client that cannot finish in time has proven
        nothing, and counting it keeps silence from being a free way to hold
        the budget, over and over; one that holds none (PLAIN or LOGIN
        waiting for the client's line, SCRAM for its first message) with the
        same reply, not counted and logged ``auth_aborted``: it held nothing,
        and a slow human is not a guesser. A SCRAM client whose proof was
        verified and that is late only with its empty last message gets the
        temporary failure: its password was right, so its attempt is settled
        as the throttle settles a login (never a ban for a right password),
        and the login does not happen. The protocol answers at once
        (``on_expired``, `expiry`); a step that reaches here after the
        deadline (its line came as the timer ran, or the protocol could not
        answer at once) gets that failure, settled once.
        """
        self._stop_clock()
        failure = self.expiry(mech)
        if failure is not None:
            return failure  # ended by the deadline, and settled then: what came since is not looked at
        if self._timed is mech and self._waited >= self.deadline:
            return self._expire(mech)
        try:
            result = await self._sasl(mech, ev)
        except BaseException:
            self._timed = None
            raise
        if isinstance(result, sasl.Challenge):
            self._start_clock(mech)
        else:
            self._timed = None
        return result

    # -- the exchange deadline ---------------------------------------------------
    def _start_clock(self, mech: sasl.Mechanism) -> None:
        """A challenge of ``mech`` goes out: the client's time runs."""
        if self._timed is not mech:
            self._timed, self._waited = mech, 0.0
        loop = asyncio.get_running_loop()
        self._asked = loop.time()
        self._timer = loop.call_later(max(self.deadline - self._waited, 0.0), self._deadline_passed, mech)

    def _stop_clock(self) -> None:
        """The client answered (or the exchange ends): its time stops."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._asked is not None:
            self._waited += asyncio.get_running_loop().time() - self._asked
            self._asked = None

    def _deadline_passed(self, mech: sasl.Mechanism) -> None:
        """The timer: the client did not answer in time. The exchange is
        settled now, whatever the protocol can do, and the protocol is told
        (``on_expired``) so that it sends its failure reply."""
        self._timer = None
        if self._timed is not mech:
            return
        self._stop_clock()
        self._expired = (weakref.ref(mech), self._expire(mech))
        if self._on_expired is not None:
            self._on_expired()

    def _expire(self, mech: sasl.Mechanism) -> sasl.Failure:
        """End ``mech``'s exchange by the deadline: settle it (`sasl` says
        how), and the failure that answers it."""
        self._timed, self._waited = None, 0.0
        name = mech.authcid
        if self._open is not None and self._open_mech is mech and self._opened is None:
            # a SCRAM proof verified in time: the password was right
            attempt, self._open, self._open_mech = self._open, None, None
            self._proven = None
            self.service.proven(attempt)
            logs.event(log, logging.INFO, "auth_aborted", proto=self.protocol, ip=self.ip,
                       reason=EXCHANGE_TOO_LONG)
            return sasl.Failure(EXCHANGE_TOO_LONG, "temporary", name)
        if self._open is not None:
            self._abandon(EXCHANGE_TOO_LONG, name)  # counted: login_failed
        else:
            # nothing reserved, nothing verified: not a failed login
            self._proven = None
            logs.event(log, logging.INFO, "auth_aborted", proto=self.protocol, ip=self.ip,
                       reason=EXCHANGE_TOO_LONG)
        return sasl.Failure(EXCHANGE_TOO_LONG, "invalid-credentials", name)

    def expiry(self, mech: sasl.Mechanism) -> sasl.Failure | None:
        """The failure that answers ``mech``'s exchange if the deadline ended
        it, handed over once: the protocol that sends it takes it, and from
        then on the session keeps nothing of the exchange (a SCRAM mechanism
        holds the account's keys)."""
        if self._expired is None or self._expired[0]() is not mech:
            return None
        failure, self._expired = self._expired[1], None
        return failure

    async def _sasl(self, mech: sasl.Mechanism, ev: sasl.Event) -> sasl.Challenge | sasl.Success | sasl.Failure:
        service = self.service
        if (self._open is not None and mech is self._open_mech and self._opened is not None
                and service.clock() - self._opened > SASL_EXCHANGE_MAX and not isinstance(ev, sasl.Failure)):
            # the proof, too late: whatever the mechanism made of it is
            # dropped unsaid (a cancel or a malformed message is answered as
            # such below, and counted all the same)
            self._abandon(EXCHANGE_TOO_LONG, mech.authcid)
            return sasl.Failure(EXCHANGE_TOO_LONG, "invalid-credentials", mech.authcid)
        keys_given = False
        while True:
            if isinstance(ev, sasl.NeedCredentials):
                if self._open is not None:
                    self._abandon("exchange restarted", ev.authcid)
                result = await self.password(ev.authcid, ev.password)
                if isinstance(result, TryLater):
                    return sasl.Failure("too many failed attempts", "temporary", ev.authcid)
                self._proven = result
                ev = mech.provide_result(result is not None)
                if isinstance(ev, sasl.Failure):
                    return ev  # counted by password()
            elif isinstance(ev, sasl.NeedScramKeys):
                self._abandon("exchange restarted", ev.authcid)
                account = await service.resolve(ev.authcid)
                key = service.key(ev.authcid, account)
                attempt = await service.reserve(self.ip, key, ev.authcid, self.protocol)
                if isinstance(attempt, TryLater):
                    # No keys, real or fake, for a name or address over its limit.
                    return sasl.Failure("too many failed attempts", "temporary", ev.authcid)
                self._open, self._open_mech, self._opened = attempt, mech, service.clock()
                keys_given = True
                keys: ScramKeys | None = None
                if account is not None and account.scram_sha256:
                    try:
                        keys = parse_scram_sha256(account.scram_sha256)
                    except ValueError:
                        keys = None  # a broken credential behaves like a missing one
                self._proven = account if keys is not None else None
                ev = mech.provide_scram_keys(keys, fake_salt=None if keys else service.fake_salt(key))
            elif isinstance(ev, sasl.Failure):
                self._proven = None
                if self._open is not None:
                    self._abandon(ev.reason if ev.kind != "invalid-credentials" else "wrong credentials",
                                  ev.authcid)
                elif ev.kind in ("invalid-credentials", "authzid", "cancelled"):
                    key = None
                    if ev.authcid is not None:
                        key = service.key(ev.authcid, await service.resolve(ev.authcid))
                        if isinstance(await service.throttle.before_attempt_async(self.ip, key, service.clock()), Locked):
                            return sasl.Failure("too many failed attempts", "temporary", ev.authcid)
                    service.failed(None, self.ip, ev.authcid, self.protocol, ev.reason, key)
                else:
                    logs.event(log, logging.INFO, "auth_aborted", proto=self.protocol, ip=self.ip, reason=ev.kind)
                return ev
            elif isinstance(ev, sasl.Success):
                attempt, self._open, self._open_mech = self._open, None, None
                proven, self._proven, self._logged_in = self._proven, None, None
                try:
                    account = await service.resolve(ev.authcid)
                except BaseException as exc:
                    # The attempt is settled whatever ends it (the store out
                    # of reach, the connection gone): none is left pending.
                    # The proof was verified, so the password was right: it
                    # counts as the throttle counts a login, never as a
                    # failure (no ban for a database that went away).
                    if attempt is not None:
                        service.proven(attempt)
                        why = "store unavailable" if isinstance(exc, StoreUnavailable) else "exchange abandoned"
                        logs.event(log, logging.INFO, "auth_aborted", proto=self.protocol, ip=self.ip, reason=why)
                    raise
                if account is None or proven is None or account.id != proven.id or account.epoch != proven.epoch:
                    # Removed, or removed and added again, or its password
                    # changed while the exchange ran (a SCRAM exchange may
                    # wait for its last message until the command deadline):
                    # what the client proved no longer opens this account.
                    why = "account vanished" if account is None else "credentials changed during the exchange"
                    if attempt is not None:
                        service.failed(attempt, self.ip, ev.authcid, self.protocol, why)
                    else:
                        # PLAIN or LOGIN: the password was right and counted
                        # so; the log says the login did not happen after all
                        logs.event(log, logging.INFO, "auth_aborted", proto=self.protocol, ip=self.ip, reason=why)
                    return sasl.Failure(why, "invalid-credentials", ev.authcid)
                if attempt is not None:  # SCRAM; PLAIN and LOGIN were settled by password()
                    service.succeeded(attempt, account, self.ip, self.protocol, self.tls)
                self._logged_in = account
                return ev
            else:
                assert isinstance(ev, sasl.Challenge)
                if self._open is not None and mech is self._open_mech and not keys_given:
                    self._opened = None  # the server-final message: the proof came in time
                return ev

    async def account(self, success: sasl.Success) -> Account | None:
        """The account the exchange that ended in ``success`` logged in to:
        the one whose credentials it proved, as checked at its end (``sasl``).
        Handed over once: the connection keeps no record with secrets in it
        (the caller keeps ``Account.without_secrets``)."""
        account, self._logged_in = self._logged_in, None
        return account
