"""The outbound queue runner: the one place that sends mail to other servers
and the one place that retries (DESIGN.md).

``OutboundQueue.enqueue`` puts a message for remote recipients in the durable
queue (the Store API's ``queue_*`` operations), optionally together with its
local copies in the same commit. The runner task (started by ``mailyard serve``) picks due recipients,
groups them by destination domain, and gives each destination up to
``max_connections_per_domain`` connections (``max_connections`` in all). A
connection goes to the first MX host that answers (delivery/mx.py; or the
smarthost), carries one transaction per queued message with all of that
message's recipients at the domain, and is reused for the next queued message
to the same domain. Due entries are read ``DUE_BATCH`` at a time, leaving out
the recipients the runner holds and the destinations that have enough
waiting, and read again as deliveries make room (``_release``): a backlog
costs a read per half a batch delivered, not one per message. Mail for
other destinations due meanwhile is taken by the next read that finds the
backlog's destination with enough waiting (and so skips it): a new message,
or the poll interval, at the latest.

Per recipient: 2xx is done; 4xx (or no host reachable) is retried with
exponential back-off (``retry_initial`` * ``retry_factor`` ** n, capped at
``retry_max_interval``) until ``max_lifetime``; 5xx, a null MX, or expiry fail
the recipient and the reverse-path gets a DSN (delivery/bounce.py), stored in
the same commit that records the failure. A delay warning goes out once after
``delay_warning`` seconds.

The I/O of one SMTP connection is connection.py (``ClientConnection``); the
daily TLS-RPT and DMARC reports the runner sends are dailyreports.py
(``DailyReportsMixin``, mixed into ``OutboundQueue``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import logs, metrics
from ..mailauth.srs import SRS, SRSError
from ..protocols.smtp.client import (
    OutboundMessage,
    OutboundRecipient,
    SessionFailed,
    SessionReady,
    SMTPClientEngine,
)
from ..protocols.smtp.replies import Reply
from ..spam.limits import QueueWatch
from ..store.api import (
    DELIVERED,
    FAILED,
    PENDING,
    Account,
    DeliveryTarget,
    NewMessage,
    NewQueueEntry,
    NewRecipient,
    QueueEntry,
    QueueRecipient,
    RecipientOutcome,
    Store,
)
from .bounce import ReportedRecipient, make_dsn, should_report, status_of, wants_report
from .connection import ClientConnection, _Unreachable, reply_text
from .dailyreports import DailyReportsMixin
from .dane import DANETempError, peer_chain
from .dane import verify as dane_verify
from .dmarcrpt import DMARCReports
from .local import local_targets
from .mx import MXResolver, NullMX, PermanentDNSError, TemporaryDNSError, make_resolver
from .router import Router, Verdict
from .tlspolicy import TLSPlan, TransportSecurity

if TYPE_CHECKING:
    from ..config import DeliveryConfig

log = logging.getLogger("mailyard.queue")
# Seconds between two counts of the queue for [spam] queue_alert.
WATCH_EVERY = 2.0
DUE_BATCH = 1000  # due entries the runner reads at a time
# The runner reads no more while it holds this many reads' worth of jobs
# (waiting for a connection or being delivered): its memory stays bounded
# whatever the queue holds.
HELD_BATCHES = 4
# The runner reads the queue at least this often, whatever [delivery]
# poll_interval says: reads renew the store's claims on the recipients it
# holds (PostgreSQL's 15-minute leases, renewed past half their term).
MAX_POLL = 300.0


def queue_name(queue_id: int, created: float) -> str:
    """The queue id as logs show it: the creation time in milliseconds (11
    hex digits, fixed width) then the row id in hex. Unique across restarts
    and processes, where the row id alone may be reused once a row is gone."""
    return f"{int(created * 1000):011X}{queue_id:X}"

RELAY_KEY = "[smarthost]"

# Makes the TLS client context of one outbound connection: ``verify`` True
# checks the peer's chain and host name (a smarthost with relay_verify),
# False encrypts without authenticating (RFC 7435 opportunistic security).
# ``cafile`` (a smarthost's relay_ca_file) replaces the system's CAs.
# The server passes net/tls.py's ``client_context``.
ClientTLS = Callable[..., ssl.SSLContext]

# delivery.relay_tls (config.TLS_MODES) -> the SMTP client engine's STARTTLS
# policy; "implicit" starts TLS before the greeting, so no STARTTLS follows.
RELAY_STARTTLS = {"starttls": "require", "opportunistic": "opportunistic", "none": "never", "implicit": "never"}

# Signs a message that enters the queue: (message, reverse-path) -> the
# message with its DKIM-Signature fields (mailauth/signer.py ``Signer.sign``).
# Blocking; the queue runs it in a worker thread.
MessageSigner = Callable[[bytes, str], bytes]

# Seals a forwarded message (mailauth/signer.py ``Signer.seal``): the
# message -> the ARC set to prepend (RFC 8617 5.1), b"" when none applies.
# Blocking; the queue runs it in a worker thread.
MessageSealer = Callable[[bytes], bytes]


def backoff(cfg: DeliveryConfig, attempts: int) -> float:
    """Seconds before retry number ``attempts`` (1 = the first retry)."""
    delay = cfg.retry_initial * cfg.retry_factor ** max(attempts - 1, 0)
    return min(delay, cfg.retry_max_interval)


@dataclass
class Job:
    """One queued message's pending recipients at one destination domain."""

    entry: QueueEntry
    domain: str
    recipients: list[QueueRecipient]

    @property
    def key(self) -> tuple[int, str]:
        return (self.entry.id, self.domain)


@dataclass(frozen=True)
class Target:
    host: str  # name for logs and Remote-MTA
    address: str
    port: int


class OutboundQueue(DailyReportsMixin):
    """The queue runner. ``store`` holds the queue (its ``queue_*`` operations), ``router``
    resolves the reverse-path of a DSN, ``hostname`` names this MTA in EHLO
    and in reports, ``client_tls`` makes the TLS contexts of outbound
    connections, ``relay_ca_file`` (an absolute path, or None) is the CA file
    the smarthost's certificate is checked against, ``signer`` (when given)
    DKIM-signs each message once as it enters the queue (RFC 6376),
    submissions and generated reports alike. A forwarded message (an alias
    or list at a local domain sends it on to a remote address) also gets an
    ARC set from ``sealer`` (RFC 8617) and, with ``srs``, an SRS reverse-path
    at ``srs_domain`` (empty: the first local domain) when its sender's
    domain is not local (mailauth/srs.py)."""

    def __init__(self, store: Store, router: Router, cfg: DeliveryConfig, hostname: str,
                 client_tls: ClientTLS, relay_ca_file: str | None = None,
                 signer: MessageSigner | None = None, security: TransportSecurity | None = None,
                 sealer: MessageSealer | None = None, srs: SRS | None = None, srs_domain: str = "",
                 dmarc_reports: DMARCReports | None = None, queue_alert: int = 0) -> None:
        if cfg.relay_tls not in RELAY_STARTTLS:
            # Config.load refuses it; this guards configurations built in code.
            raise ValueError(f"delivery.relay_tls {cfg.relay_tls!r} is not one of {', '.join(RELAY_STARTTLS)}")
        self.store = store
        self.signer = signer
        self.sealer = sealer
        self.srs = srs
        self.srs_domain = srs_domain
        self.router = router
        self.cfg = cfg
        self.hostname = hostname
        self.client_tls = client_tls
        self.relay_ca_file = relay_ca_file
        self.mx = MXResolver(make_resolver(self.cfg.nameservers, self.cfg.dns_timeout))
        # DANE, MTA-STS and TLS-RPT of MX delivery (delivery/tlspolicy.py); None: opportunistic TLS only.
        self.security = security
        # DMARC aggregate reports (delivery/dmarcrpt.py) of what the MX port checked; None: not sent.
        self.dmarc_reports = dmarc_reports
        self._reports_checked = 0.0
        self._wake = asyncio.Event()
        # Where new entries are announced when the runner is in another
        # process (``[server] workers``: worker 0 runs it); None: here.
        self.elsewhere: Callable[[], None] | None = None
        self._task: asyncio.Task | None = None
        self._workers: set[asyncio.Task] = set()
        # The jobs read and not finished (waiting or being delivered), and
        # their recipients, which reads leave out.
        self._inflight: set[tuple[int, str]] = set()
        self._held: set[int] = set()
        # What the last read may have left due: its limit cut it short (any
        # destination), it skipped destinations with enough waiting, or it
        # met recipients due beside a job in flight for the same entry and
        # domain (taken once that job ends).
        self._cut = False
        self._skipped: set[str] = set()
        self._blocked: set[tuple[int, str]] = set()
        self._asked = 0.0  # time.monotonic() of the last read
        self._pending: dict[str, deque[Job]] = defaultdict(deque)
        self._active: dict[str, int] = defaultdict(int)
        self._job_added: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._recording: set[asyncio.Task] = set()  # outcome commits in flight
        self._stopping = False
        self.stats: dict[str, int] = defaultdict(int)  # connections, transactions, delivered, deferred, failed
        # A queue suddenly much larger than usual (a stolen account, a loop)
        # is told in the log once per crossing ([spam] queue_alert).
        self._watch = QueueWatch(queue_alert)
        self._watched = 0.0

    # --- entering the queue ------------------------------------------------------
    async def enqueue(
        self,
        body: bytes,
        reverse_path: str,
        recipients: Sequence[str | NewRecipient],
        *,
        accounts: Sequence[Account] = (),
        inbox_id: Any = None,
        enforce_quota: bool = False,
        placements: Any = None,
        fields: Any = None,
        envid: str | None = None,
        ret: str | None = None,
        smtputf8: bool = False,
        eight_bit: bool | None = None,
        msgid: str | None = None,
        forwarded: bool = False,
        forwarded_to: Sequence[str | NewRecipient] = (),
    ) -> int | None:
        """Queue ``body`` for the remote ``recipients`` and, in the same durable
        commit, deliver it to the INBOX of the local ``accounts``. Returns the
        queue id (None when no recipient is remote). ``enforce_quota``: as
        delivery/local.py's (QuotaExceeded, nothing stored or queued).
        ``forwarded``: the recipients are where a local alias or list sends
        the message on (see the class doc): the queue entry's reverse-path is
        SRS-rewritten and the message ARC-sealed; the local copies keep the
        original reverse-path. ``forwarded_to``: more such recipients beside
        the ``recipients`` a sender named, queued as an entry of their own
        (so rewritten and sealed) in the same commit: one acceptance is
        queued whole or not at all, so a client that retries after an error
        does not deliver the local copies twice. ``fields``: header fields of
        one account's local copy (delivery/local.py)."""
        assert recipients or not forwarded_to, "forwarded_to goes beside named recipients"
        # the creation time the log's queue name needs is chosen here, not
        # read back after the commit: nothing after the commit may fail (the
        # SMTP glue would answer 451 for a message already queued, and the
        # client send it again)
        created = time.time()
        first = await self._outgoing(body, reverse_path, recipients, forwarded, envid, ret, smtputf8, eight_bit,
                                     created)
        targets = await self.local_targets(reverse_path, accounts, inbox_id, enforce_quota=enforce_quota,
                                           placements=placements, fields=fields)
        messages = [dataclasses.replace(first, targets=targets)]
        if forwarded_to:
            messages.append(await self._outgoing(body, reverse_path, forwarded_to, True, envid, ret, smtputf8,
                                                 eight_bit, created))
        queued = await self.store.queue_submit_all(messages)
        for msg, (_uids, queue_id) in zip(messages, queued, strict=True):
            if queue_id is not None and msg.entry is not None:
                logs.event(log, logging.INFO, "queued", msgid=msgid, queue_id=queue_name(queue_id, created),
                           size=len(msg.body), **{"from": msg.entry.reverse_path,
                                                  "to": [r.address for r in msg.entry.recipients]})
                metrics.count_delivery("remote", "queued", len(msg.entry.recipients))
        if any(queue_id is not None for _uids, queue_id in queued):
            self.wake()
        return queued[0][1]

    async def _outgoing(self, body: bytes, reverse_path: str, recipients: Sequence[str | NewRecipient],
                        forwarded: bool, envid: str | None, ret: str | None, smtputf8: bool,
                        eight_bit: bool | None, created: float) -> NewMessage:
        """The queue's copy of ``body`` for ``recipients`` (no entry when
        there are none): DKIM-signed, and for a ``forwarded`` copy with an
        SRS reverse-path and ARC-sealed."""
        rcpts = [r if isinstance(r, NewRecipient) else NewRecipient(r) for r in recipients]
        if not rcpts:
            return NewMessage(body)
        sender = reverse_path
        if forwarded:
            sender = await self.forwarding_sender(reverse_path)
        body = await self.sign(body, sender)
        if forwarded and self.sealer is not None:
            body = await self.seal(body)
        if eight_bit is None:
            eight_bit = not body.isascii()
        return NewMessage(body, (), NewQueueEntry(sender, rcpts, envid, ret, smtputf8, eight_bit, created=created))

    async def sign(self, body: bytes, reverse_path: str) -> bytes:
        """``body`` DKIM-signed (once, here, not per attempt), off the event loop."""
        if self.signer is None:
            return body
        return await asyncio.to_thread(self.signer, body, reverse_path)

    async def seal(self, body: bytes) -> bytes:
        """``body`` with its ARC set (RFC 8617 5.1) on top, off the event loop;
        unchanged when sealing fails (the message still goes, as unsigned)."""
        assert self.sealer is not None
        try:
            return await asyncio.to_thread(self.sealer, body) + body
        except Exception:  # noqa: BLE001 - an unsealable message is forwarded unsealed
            log.exception("ARC sealing failed; forwarding unsealed")
            return body

    async def forwarding_sender(self, reverse_path: str) -> str:
        """The reverse-path of a forwarded copy: SRS-rewritten unless SRS is
        off, the path is null (a bounce is never rewritten: RFC 5321 4.5.5)
        or its domain is local (this server's SPF covers it already)."""
        if self.srs is None or not reverse_path or "@" not in reverse_path:
            return reverse_path
        if await self.router.directory.is_local_domain(reverse_path.rpartition("@")[2].lower()):
            return reverse_path
        domain = self.srs_domain
        if not domain:
            domains = await self.store.list_domains()
            domain = domains[0] if domains else self.hostname
        try:
            return self.srs.forward(reverse_path, domain)
        except SRSError:
            return reverse_path

    async def local_targets(self, reverse_path: str, accounts: Sequence[Account], inbox_id: Any = None,
                            *, enforce_quota: bool = False, placements: Any = None,
                            fields: Any = None) -> list[DeliveryTarget]:
        """The targets of a local delivery from the queue (delivery/local.py)."""
        return await local_targets(self.store, reverse_path, accounts, inbox_id, enforce_quota=enforce_quota,
                                   placements=placements, fields=fields)

    def wake(self) -> None:
        self._wake.set()
        if self.elsewhere is not None:
            self.elsewhere()

    # --- life cycle --------------------------------------------------------------
    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="mailyard-queue")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        tasks = [t for t in [self._task, *self._workers] if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._recording:
            # Outcomes already known are recorded before the store closes.
            await asyncio.wait(list(self._recording), timeout=10)
        self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                now = time.time()
                await self._dispatch(now)
                await self._watch_size()
                await self._reports_due()
                # What is due by now was read: it is being delivered, or
                # waits for a connection, and each delivery that ends wakes
                # the runner when a read may find more (_release); what the
                # read left for later (past its limit, or for a destination
                # with enough waiting) is read as deliveries make room. So
                # the next wake-up is for what falls due later (else the
                # runner would spin, reading every due entry each
                # millisecond, while a slow delivery runs); due entries no
                # read took (another node's claim) wait at most the poll
                # interval.
                nxt = await self.store.queue_next_due(after=now)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("queue runner failed; retrying")
                nxt = None
            delay = self._poll_interval
            if nxt is not None:
                delay = max(0.0, min(delay, nxt - time.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay if delay > 0 else 0.001):
                    await self._wake.wait()

    async def _watch_size(self) -> None:
        """Log when the queue grows past ``[spam] queue_alert`` entries (and
        when it is back under half of it); counted at most every few seconds."""
        now = time.monotonic()
        if self._watch.threshold <= 0 or now - self._watched < WATCH_EVERY:
            return
        self._watched = now
        size = await self.store.queue_size()
        change = self._watch.observe(size)
        if change == "over":
            logs.event(log, logging.WARNING, "queue_alert", size=size, threshold=self._watch.threshold)
        elif change == "under":
            logs.event(log, logging.INFO, "queue_alert_cleared", size=size, threshold=self._watch.threshold)

    @property
    def _poll_interval(self) -> float:
        return min(self.cfg.poll_interval, MAX_POLL)

    def _release(self, job: Job) -> None:
        """``job`` is no longer in flight: its outcome is recorded, or it failed.

        Wakes the runner when a read may now find due work: a read met
        recipients due beside this job (``_blocked``), or it left work behind
        for the job's destination (``_cut``, ``_skipped``) and the waiting
        jobs there are down to half a read, with room for half a read more.
        A backlog is so read a batch at a time, once per half a batch of
        deliveries, not once per delivery."""
        if job.key not in self._inflight:
            return
        self._inflight.remove(job.key)
        self._held.difference_update(r.id for r in job.recipients)
        if job.key in self._blocked:
            self._blocked.discard(job.key)
            self._wake.set()
            return
        low = DUE_BATCH // 2
        dest = RELAY_KEY if self.cfg.relay_host else job.domain
        if ((self._cut or dest in self._skipped) and len(self._pending.get(dest, ())) <= low
                and HELD_BATCHES * DUE_BATCH - len(self._inflight) >= low):
            self._wake.set()

    async def _dispatch(self, now: float) -> None:
        relay = bool(self.cfg.relay_host)
        # A destination with more than half a read waiting is left out of
        # the read: one destination's backlog must not take the reads (and
        # the room) that other destinations' due mail needs. It is read
        # again when its waiting jobs are down to half a read (_release).
        full = {dest for dest, jobs in self._pending.items() if len(jobs) > DUE_BATCH // 2}
        limit = max(0, min(DUE_BATCH, HELD_BATCHES * DUE_BATCH - len(self._inflight)))
        if relay and full:
            limit = 0  # the smarthost is the one destination
        if limit or time.monotonic() - self._asked >= self._poll_interval:
            # (With nothing to take the store is asked once per poll
            # interval, for its claims on what is held: PostgreSQL's leases.)
            self._asked = time.monotonic()
            due = await self.store.queue_due(now, limit=limit, exclude=list(self._held),
                                             skip_domains=() if relay else sorted(full))
        else:
            due = []
        self._cut = len(due) >= limit
        self._skipped = full
        for entry in due:
            by_domain: dict[str, list[QueueRecipient]] = defaultdict(list)
            for r in entry.recipients:
                if r.state == PENDING and r.next_attempt <= now:
                    by_domain[r.domain].append(r)
            for domain, rcpts in by_domain.items():
                job = Job(entry, domain, rcpts)
                if job.key in self._inflight:
                    # Its recipients are held (SQLite shows them due while
                    # they are delivered); another due beside them waits for
                    # the job to end: one job per entry and domain at a time.
                    if any(r.id not in self._held for r in rcpts):
                        self._blocked.add(job.key)
                    continue
                self._inflight.add(job.key)
                self._held.update(r.id for r in rcpts)
                dest = RELAY_KEY if relay else domain
                self._pending[dest].append(job)
                self._job_added[dest].set()
        total = sum(self._active.values())
        for dest, jobs in list(self._pending.items()):
            while jobs and total < self.cfg.max_connections and (
                self._active[dest] < max(1, self.cfg.max_connections_per_domain)
            ):
                # Another connection only when the open ones have a backlog
                # (more than two messages each); otherwise they carry it all.
                if self._active[dest] and len(jobs) <= 2 * self._active[dest]:
                    break
                self._active[dest] += 1
                total += 1
                task = asyncio.create_task(self._worker(dest), name=f"mailyard-deliver-{dest}")
                self._workers.add(task)
                task.add_done_callback(self._workers.discard)
            if not jobs and not self._active[dest]:
                del self._pending[dest]
                self._job_added.pop(dest, None)

    # --- one destination ---------------------------------------------------------
    async def _targets(self, dest: str) -> list[Target]:
        cfg = self.cfg
        if dest == RELAY_KEY:
            addrs = await self.mx.addresses(cfg.relay_host)
            if not addrs:
                raise PermanentDNSError(f"smarthost {cfg.relay_host} has no address")
            return [Target(cfg.relay_host, a, cfg.relay_port) for a in addrs]
        hosts = await self.mx.resolve(dest)
        return [Target(h.name, a, cfg.smtp_port) for h in hosts for a in h.addresses]

    async def _connect(self, target: Target, plan: TLSPlan | None = None) -> ClientConnection:
        cfg = self.cfg
        relay = bool(cfg.relay_host)
        implicit = relay and cfg.relay_tls == "implicit"
        check_peer = None
        if plan is not None and not relay:
            # An MX host under a DANE or MTA-STS policy (delivery/tlspolicy.py).
            verify_ctx = self.client_tls(plan.verify, cafile=plan.cafile) if plan.verify else self.client_tls(False)
            policy = plan.starttls
            auth = None
            if plan.dane:
                tlsa, names = plan.tlsa, [target.host]
                check_peer = lambda ssl_object: dane_verify(peer_chain(ssl_object), tlsa, names)  # noqa: E731
        elif relay:
            if self.relay_ca_file and cfg.relay_verify:
                verify_ctx = self.client_tls(True, cafile=self.relay_ca_file)
            else:
                verify_ctx = self.client_tls(cfg.relay_verify)
            policy = RELAY_STARTTLS[cfg.relay_tls]
            auth = (cfg.relay_username, cfg.relay_password) if cfg.relay_username else None
        else:
            verify_ctx = self.client_tls(False)  # RFC 7435 opportunistic security
            policy = cfg.starttls
            auth = None
        local = (cfg.source_address, 0) if cfg.source_address else None
        async with asyncio.timeout(cfg.connect_timeout):
            reader, writer = await asyncio.open_connection(
                target.address, target.port, local_addr=local,
                ssl=verify_ctx if implicit else None,
                server_hostname=target.host if implicit else None,
            )
        engine = SMTPClientEngine(self.hostname, starttls=policy, auth=auth, tls_active=implicit)
        self.stats["connections"] += 1
        return ClientConnection(engine, reader, writer, cfg.reply_timeout_cap, verify_ctx, target.host, check_peer)

    async def _worker(self, dest: str) -> None:
        jobs = self._pending[dest]
        try:
            await self._serve_destination(dest, jobs)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery to %s failed", dest)
            while jobs:
                self._release(jobs.popleft())
        finally:
            self._active[dest] -= 1
            if not self._stopping:
                self.wake()

    async def _serve_destination(self, dest: str, jobs: deque[Job]) -> None:
        try:
            targets = await self._targets(dest)
        except NullMX as exc:
            await self._fail_all(jobs, Reply(556, "5.1.10", str(exc)), None, permanent=True)
            return
        except PermanentDNSError as exc:
            await self._fail_all(jobs, Reply(550, "5.1.2", str(exc)), None, permanent=True)
            return
        except TemporaryDNSError as exc:
            await self._fail_all(jobs, Reply(451, "4.4.3", str(exc)), None, permanent=False)
            return
        last: _Unreachable | None = None
        permanent = True  # every host refused with 5xx: a permanent failure
        security = self.security if dest != RELAY_KEY else None
        sts = await security.destination(dest) if security is not None else None
        for target in targets:
            if not jobs:
                return
            plan: TLSPlan | None = None
            if security is not None and sts is not None:
                try:
                    plan = await security.plan(dest, sts, target.host)
                except DANETempError as exc:
                    last = _Unreachable(Reply(451, "4.7.5", str(exc)), target.host)
                    permanent = False
                    continue
                if plan.refuse is not None:
                    # RFC 8461 5.1: not this host; the mail waits for one that matches.
                    logs.event(log, logging.INFO, "mx_refused", relay=f"{target.host}[{target.address}]",
                               reason=plan.refuse)
                    security.record(plan.report, success=False, result_type="validation-failure",
                                    receiving_mx=target.host, receiving_ip=target.address, reason=plan.refuse)
                    last = _Unreachable(Reply(451, "4.7.5", plan.refuse), target.host)
                    permanent = False
                    continue
            try:
                conn, ready = await self._open(target, plan)
            except (OSError, TimeoutError) as exc:
                logs.event(log, logging.INFO, "connect_failed", relay=f"{target.host}[{target.address}]:{target.port}",
                           reason=str(exc))
                last = _Unreachable(Reply(421, "4.4.1", f"connect to {target.host}[{target.address}] failed"),
                                    target.host)
                permanent = False
                continue
            try:
                if isinstance(ready, SessionFailed):
                    logs.event(log, logging.INFO, "session_refused", relay=f"{target.host}[{target.address}]",
                               stage=ready.stage, reply=reply_text(ready.reply))
                    last = _Unreachable(ready.reply, target.host)
                    permanent = permanent and ready.reply.code >= 500
                    continue  # RFC 5321 5.1: try the next host
                sent = 0
                while conn.usable and sent < max(1, self.cfg.max_messages_per_connection):
                    if not jobs and not await self._wait_for_jobs(dest, jobs):
                        break
                    job = jobs.popleft()
                    sent += 1
                    await self._transact(conn, job, target)
                # Done, or the connection limit was reached or it broke: what is
                # left waits for the next connection (the next dispatch).
                return
            finally:
                await conn.close()
        if last is not None:
            reply = last.reply
            if not permanent and reply.code >= 500:
                reply = Reply(451, "4.4.0", reply_text(reply))
            await self._fail_all(jobs, reply, last.host)

    async def _open(self, target: Target, plan: TLSPlan | None) -> tuple[ClientConnection, SessionReady | SessionFailed]:
        """Connect and greet under ``plan``, recording the TLS outcome for
        TLS-RPT. A required TLS that fails is a temporary failure (4.7.5)
        under an enforced policy; under a testing-mode one the host is
        tried again as without a policy (RFC 8461 5.2)."""
        conn = await self._connect(target, plan)
        ready = await self._greet(conn)
        security = self.security
        if plan is None or security is None or plan.report is None:
            return conn, ready
        sockname = conn.writer.get_extra_info("sockname")
        local_ip = sockname[0] if sockname else None
        if isinstance(ready, SessionReady):
            security.record(plan.report, success=True)
            return conn, ready
        if ready.stage != "starttls" and conn.tls_failure is None:
            return conn, ready  # refused for other reasons: not a TLS outcome
        result = conn.tls_failure or "starttls-not-supported"
        security.record(plan.report, success=False, result_type=result, sending_ip=local_ip,
                        receiving_mx=target.host, receiving_ip=target.address, reason=reply_text(ready.reply))
        if plan.enforce:
            reply = ready.reply
            if reply.code >= 500:
                reply = Reply(451, "4.7.5", reply_text(reply))
            return conn, SessionFailed("starttls", reply)
        await conn.close()
        fallback = plan.fallback(self.cfg.starttls)
        conn = await self._connect(target, fallback)
        return conn, await self._greet(conn)

    @staticmethod
    async def _greet(conn: ClientConnection) -> SessionReady | SessionFailed:
        try:
            return await conn.open()
        except _Unreachable as exc:
            return SessionFailed("starttls", exc.reply)
        except BaseException:
            await conn.close()
            raise

    async def _wait_for_jobs(self, dest: str, jobs: deque[Job]) -> bool:
        """Keep an idle connection open for ``connection_cache_time`` seconds in
        case more mail for the same destination arrives (as Postfix's connection
        cache does); True when there is a job to send."""
        deadline = time.monotonic() + self.cfg.connection_cache_time
        event = self._job_added[dest]
        while not jobs and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            event.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await event.wait()
        return bool(jobs)

    async def _transact(self, conn: ClientConnection, job: Job, target: Target) -> None:
        entry = job.entry
        try:
            body = await self.store.queue_body(entry.id)
            message = OutboundMessage(
                entry.reverse_path,
                tuple(OutboundRecipient(r.address, r.notify, r.orcpt) for r in job.recipients),
                body,
                eight_bit=entry.eight_bit,
                smtputf8=entry.smtputf8,
                ret=entry.ret,
                envid=entry.envid,
            )
            result = await conn.send(message)
            self.stats["transactions"] += 1
            # RFC 3461 5.2.2: a next hop without DSN cannot take NOTIFY=SUCCESS on; report "relayed".
            dsn_relayed = conn.ready is not None and "DSN" not in conn.ready.extensions
        except BaseException:
            self._release(job)
            raise
        # The outcome's commit need not hold up the connection: the next message
        # goes out while this one's result is being made durable (group commit
        # batches them). A crash before that commit re-sends the message later,
        # as it would after a crash between the peer's 250 and our commit.
        task = asyncio.create_task(self._record(job, list(result.replies), target.host, dsn_relayed=dsn_relayed))
        self._recording.add(task)
        task.add_done_callback(self._recorded)

    def _recorded(self, task: asyncio.Task) -> None:
        self._recording.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording a delivery outcome failed: %s", task.exception())

    async def _fail_all(self, jobs: deque[Job], reply: Reply, host: str | None, permanent: bool = True) -> None:
        """Every job of a destination gets ``reply`` (a 5xx only when ``permanent``)."""
        if not permanent and reply.code >= 500:
            reply = Reply(451, "4.4.0", reply_text(reply))
        while jobs:
            job = jobs.popleft()
            await self._record(job, [reply for _ in job.recipients], host, dsn_relayed=False)

    # --- outcomes -----------------------------------------------------------------
    @staticmethod
    def _outcome(entry: QueueEntry, address: str, host: str | None, status: str, reply: str, now: float,
                 retry_in: int | None = None) -> None:
        """Log and count one recipient's outcome. ``relay`` is left out when
        no host was reached (e.g. no MX answered)."""
        logs.event(log, logging.INFO, status, queue_id=queue_name(entry.id, entry.created), to=address,
                   relay=host, status=status, delay=round(now - entry.created, 3), retry_in=retry_in, reply=reply)
        if status == "deferred":
            metrics.count_delivery("remote", "deferred")
        else:
            result = "delivered" if status == "sent" else "bounced"
            metrics.count_delivery("remote", result)
            metrics.observe_delivery("remote", now - entry.created)

    async def _record(self, job: Job, replies: list[Reply], host: str | None, dsn_relayed: bool) -> None:
        """Record the outcome of ``job``'s attempt; the job leaves flight
        whatever happens here (else its recipients would never be read
        again, and on PostgreSQL their leases would be renewed for good)."""
        try:
            await self._record_outcomes(job, replies, host, dsn_relayed)
        finally:
            self._release(job)

    async def _record_outcomes(self, job: Job, replies: list[Reply], host: str | None, dsn_relayed: bool) -> None:
        entry = job.entry
        cfg = self.cfg
        now = time.time()
        expires = entry.created + cfg.max_lifetime
        outcomes: list[RecipientOutcome] = []
        reports: dict[str, list[ReportedRecipient]] = defaultdict(list)
        still_pending: list[QueueRecipient] = []
        for rcpt, reply in zip(job.recipients, replies, strict=True):
            text = reply_text(reply)
            if reply.is_positive:
                outcomes.append(RecipientOutcome(rcpt.id, DELIVERED, text, host))
                self.stats["delivered"] += 1
                self._outcome(entry, rcpt.address, host, "sent", text, now)
                if dsn_relayed and rcpt.notify and "SUCCESS" in rcpt.notify:
                    reports["relayed"].append(ReportedRecipient(rcpt, "relayed", "2.0.0", text, host))
            elif reply.code >= 500 or now >= expires:
                expired = reply.code < 500
                outcomes.append(RecipientOutcome(rcpt.id, FAILED, text, host))
                self.stats["failed"] += 1
                self._outcome(entry, rcpt.address, host, "expired" if expired else "bounced", text, now)
                reports["failed"].append(ReportedRecipient(
                    rcpt, "failed", status_of(reply.code, reply.enhanced, expired), text, host))
            else:
                retry_at = min(now + backoff(cfg, rcpt.attempts + 1), expires)
                outcomes.append(RecipientOutcome(rcpt.id, PENDING, text, host, retry_at))
                self.stats["deferred"] += 1
                self._outcome(entry, rcpt.address, host, "deferred", text, now, retry_in=round(retry_at - now))
                still_pending.append(rcpt)
                reports["delayed-candidate"].append(ReportedRecipient(
                    rcpt, "delayed", status_of(reply.code, reply.enhanced), text, host))
        warned = False
        delayed = reports.pop("delayed-candidate", [])
        if (delayed and not entry.warned and cfg.delay_warning > 0
                and now - entry.created >= cfg.delay_warning):
            warned = True
            reports["delayed"] = delayed
        follow_up: list[NewMessage] = []
        if should_report(entry):
            try:
                body = None
                for action in ("failed", "delayed", "relayed"):
                    wanted = [r for r in reports.get(action, []) if wants_report(r.recipient, action)]
                    if not wanted:
                        continue
                    if body is None:
                        body = await self.store.queue_body(entry.id)
                    follow_up.extend(await self._report(entry, body, wanted, expires))
            except Exception:
                # The outcomes are recorded all the same: recipients that
                # took the message must not get it again (RFC 5321 6.1).
                log.exception("queue %s: the delivery report could not be made", queue_name(entry.id, entry.created))
                follow_up = []
        attempt_log = [(job.domain, host, "; ".join(sorted({o.reply for o in outcomes})))]
        await self.store.queue_update(entry.id, outcomes, attempt_log, warned=warned, follow_up=follow_up)
        if follow_up:
            self.wake()

    async def _report(self, entry: QueueEntry, original: bytes, reported: list[ReportedRecipient],
                      expires: float) -> list[NewMessage]:
        """A DSN for ``reported`` as messages to store: local copies or a queue entry."""
        router = self.router
        domain = entry.reverse_path.rpartition("@")[2]
        local_domain = domain if await self.store.is_local_domain(domain) else None
        if local_domain is None:
            domains = await self.store.list_domains()
            local_domain = domains[0] if domains else self.hostname
        dsn = await make_dsn(
            reporting_mta=self.hostname, entry=entry, original=original, reported=reported,
            postmaster_domain=local_domain, retry_until=expires,
        )
        logs.event(log, logging.INFO, "dsn", queue_id=queue_name(entry.id, entry.created), to=entry.reverse_path,
                   action=reported[0].action)
        resolution = await router.resolve(entry.reverse_path)
        if resolution.verdict is Verdict.LOCAL:
            targets = await self.local_targets("", resolution.accounts)
            remote = [NewRecipient(r) for r in resolution.remote]
            entry_new = NewQueueEntry("", remote) if remote else None
            if remote:
                dsn = await self.sign(dsn, "")
            return [NewMessage(dsn, targets, entry_new)]
        if resolution.verdict is Verdict.REMOTE:
            dsn = await self.sign(dsn, "")
            return [NewMessage(dsn, (), NewQueueEntry("", [NewRecipient(resolution.address)]))]
        logs.event(log, logging.WARNING, "dsn_dropped", queue_id=queue_name(entry.id, entry.created),
                   to=entry.reverse_path, reason=resolution.verdict.value)
        return []
