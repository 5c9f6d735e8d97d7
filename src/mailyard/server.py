"""The running server (``mailyard serve``): the store, the router, and one
listener per enabled protocol port, started and stopped together.

``MailServer.start`` builds the shared parts once, as one typed ``Services``
object (mailyard/services.py), and hands it to every service: the protocol
sessions, the webmail app and the outbound queue's dependencies. The
server object itself is never passed down."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import logs
from .auth.service import SECRET_FILE, LoginService, load_secret
from .auth.throttle import LoginThrottle
from .auth.throttle_shared import SharedThrottle
from .config import Config, ConfigError
from .delivery.dane import DANE
from .delivery.dmarcrpt import DMARCReports
from .delivery.mtasts import PolicyResolver
from .delivery.mx import MXResolver, make_resolver
from .delivery.queue import OutboundQueue
from .delivery.router import Router
from .delivery.sieve import ScriptStore, SieveDelivery
from .delivery.tlspolicy import TransportSecurity
from .delivery.tlsrpt import TLSReports
from .mailauth.dnscache import Resolver
from .mailauth.inbound import InboundChecker
from .mailauth.pool import CheckPool
from .mailauth.signer import Signer
from .mailauth.srs import SRS
from .mailauth.srs import load_secret as load_srs_secret
from .net.accept import AcceptShare, WorkerLoad
from .net.acme import AcmeManager, Challenges, default_names, signal_supervisor
from .net.addresses import AddressSet
from .net.learning import Learner
from .net.listener import ConnectionLimits, Listener
from .net.login import throttle_from_config
from .net.tls import ReloadableTLS, client_context, ensure_certificate
from .services import Services
from .spam.checker import SpamChecker
from .spam.learning import Controller
from .spam.limits import SendLimiter
from .spam.rates import RateLimiter, rate_policy_from_config
from .spam.rspamd import RspamdClient
from .store import open_store
from .store.api import Store
from .store.greylist import GreylistState
from .store.notify import QUEUE, SETTLED, ChangeChannel
from .store.spamlog import DecisionLog
from .store.spool import MessageSpool

log = logging.getLogger("mailyard")

# File descriptors kept for the store, TLS files, DNS and outbound connections
# on top of one per client connection the caps allow.
FD_RESERVE = 512


def raise_fd_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``needed`` (within the hard limit).

    Why: the default soft limit is often 1,024, far below the connection caps
    ([limits] max_connections per listener); past it accept() fails with
    EMFILE and, worse, the store cannot open its files. Returns the soft
    limit in force; warns when the hard limit is below what the caps need.
    """
    try:
        import resource
    except ImportError:  # not POSIX
        return needed
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if hard != resource.RLIM_INFINITY and hard < needed:
        log.warning(
            "the connection caps need %d file descriptors but the hard limit is %d;"
            " lower [limits] max_connections or raise the limit (ulimit -Hn, LimitNOFILE=)",
            needed, hard,
        )
    return soft


def pin_mmap_threshold() -> None:
    """Keep glibc from holding on to large freed blocks.

    Fixing M_MMAP_THRESHOLD (at glibc's default 128 KiB) stops glibc from
    raising it after a big block is freed, so blocks above it stay mmap()ed
    and are returned on free instead of staying resident in a thread's
    arena. Argon2id verifications borrow their ~19 MiB from auth/passwords.py's
    bounded pool; the pin bounds what argon2-cffi's fallback path (argon2i,
    v=16 or non-canonical hashes) and other large short-lived allocations of
    the login threads keep resident. The price is a fresh mapping, with its
    page faults, for each such block. Process-wide, so it is set by the
    server at start rather than by importing a module; a no-op where libc is
    not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_mmap_threshold = -3  # <malloc.h>
        if not libc.mallopt(m_mmap_threshold, 128 * 1024):
            log.debug("mallopt(M_MMAP_THRESHOLD) refused")
    except (OSError, AttributeError):
        pass


def certificate_paths(data_dir: Path, config: Config) -> tuple[Path, Path]:
    """The certificate and key files: ``[tls]`` (relative to the data
    directory), else ACME's pair with ``[tls] acme``, else the self-signed
    pair `mailyard init` made."""
    cfg = config.tls
    if cfg.cert or cfg.key:
        if not (cfg.cert and cfg.key):
            raise ConfigError("[tls] needs both cert and key (or neither)")
        return data_dir / cfg.cert, data_dir / cfg.key
    if cfg.acme:
        # ACME's pair (net/acme.py); a self-signed one until the first order
        return data_dir / "tls" / "acme" / "cert.pem", data_dir / "tls" / "acme" / "key.pem"
    return data_dir / "tls" / "cert.pem", data_dir / "tls" / "key.pem"


@dataclass(frozen=True)
class Service:
    """A protocol service: which port of [ports] it uses and how a session runs."""

    name: str  # key in [ports]
    # an asyncio.Protocol per connection (net/session_protocol.py)
    protocol: Callable[[Services, Listener], asyncio.Protocol]
    implicit_tls: bool = False


def protocol_services() -> list[Service]:
    """Every protocol service this build offers, in start-up order."""
    from .net import imap, managesieve, pop3, smtp

    return [
        Service("smtp", protocol=smtp.smtp_protocol),
        # RFC 6409 submission with STARTTLS, and RFC 8314 implicit-TLS submission.
        Service("submission", protocol=smtp.submission_protocol),
        Service("smtps", protocol=smtp.submission_protocol, implicit_tls=True),
        Service("pop3", protocol=pop3.pop3_protocol),
        Service("imap", protocol=imap.imap_protocol),
        # RFC 8314: implicit TLS from the first byte (POP3S 995, IMAPS 993).
        Service("pop3s", protocol=pop3.pop3_protocol, implicit_tls=True),
        Service("imaps", protocol=imap.imap_protocol, implicit_tls=True),
        # RFC 5804: ManageSieve, STARTTLS on the plain port.
        Service("managesieve", protocol=managesieve.managesieve_protocol),
        # the same over implicit TLS ([ports] managesieve_tls, off unless set)
        Service("managesieve_tls", protocol=managesieve.managesieve_protocol, implicit_tls=True),
    ]


@dataclass
class WorkerRole:
    """What a worker process of a multi-process server (mailyard/workers.py)
    gets from its supervisor: its slot (slot 0 also runs the outbound queue
    and the store's background work), the listening sockets by service
    name, the change channel to the other workers and the shared throttle."""

    slot: int
    count: int  # workers in all
    channel: ChangeChannel
    throttle: LoginThrottle
    sockets: dict[str, list[socket.socket]] = field(default_factory=dict)
    # each worker's count of connections per service, to take turns accepting (net/accept.py)
    accept_share: AcceptShare | None = None

    @property
    def runs_background(self) -> bool:
        return self.slot == 0

    def accept_load(self, service: str) -> WorkerLoad | None:
        """This worker's count of ``service``'s connections among the others'
        (None: the service is not shared, or there is no table)."""
        return self.accept_share.load(service, self.slot) if self.accept_share is not None else None


class MailServer:
    """``mailyard serve``: owns the store, the listeners and the queue runner.

    ``services`` is what every service receives, built by ``start``.
    """

    def __init__(
        self,
        data_dir: Path,
        config: Config,
        store: Store | None = None,
        ephemeral_ports: bool = False,
        worker: WorkerRole | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        # Set when this process is one worker of several (mailyard/workers.py).
        self.worker = worker
        self.config = config
        self.ephemeral_ports = ephemeral_ports
        self._store = store
        self.listeners: dict[str, Listener] = {}
        self._stopped = asyncio.Event()
        # TLS for STARTTLS and the implicit-TLS ports; reloaded on SIGHUP (net/tls.py).
        # Loaded by start() unless set before.
        self.tls: ReloadableTLS | None = None
        # One login throttle for every protocol (auth/throttle.py, config [auth]),
        # used by the one login service (auth/service.py) that start() builds.
        self._throttle = worker.throttle if worker is not None else throttle_from_config(config.auth, config.store)
        # Counters for tests and metrics (e.g. "smtp_sessions" on the MX port).
        self.stats: collections.Counter[str] = collections.Counter()
        # ACME ([tls] acme): the answers to pending challenges, and the
        # manager (in the process that runs background work), set by start().
        self.acme_answers: Challenges | None = None
        self.acme: AcmeManager | None = None
        # Teaches rspamd from users' Junk moves ([spam] rspamd_controller_url), set by start().
        self.learner: Learner | None = None
        # What every service receives, set by start().
        self.services: Services | None = None

    @property
    def throttle(self) -> LoginThrottle:
        return self._throttle

    @throttle.setter
    def throttle(self, throttle: LoginThrottle) -> None:
        # Replacing the throttle (tests tune it) replaces the service's too.
        self._throttle = throttle
        if self.services is not None:
            self.services.login.throttle = throttle

    def _mx_rates(self) -> Callable[[str, str], Awaitable[str | None]]:
        """The MX port's rate counter: the supervisor's, shared by all workers
        (over the login throttle's channel), or this process's own."""
        policy = rate_policy_from_config(self.config.spam)
        local = RateLimiter(policy)
        shared = self.worker.throttle if self.worker is not None else None
        if not isinstance(shared, SharedThrottle):
            async def count(kind: str, ip: str) -> str | None:
                return local.hit(kind, ip)
            return count

        async def hit(kind: str, ip: str) -> str | None:
            # exempt clients and a kind without a budget never cost a round
            # trip to the supervisor
            if policy.budget(kind) <= 0 or policy.is_exempt(ip):
                return None
            return await shared.ask_or_async(local.hit, "spam_rate", kind, ip)

        return hit

    def _send_limits(self) -> Callable[[str, int, int, int], Awaitable[str | None]]:
        """The accounts' submission limits: the supervisor's, shared by all
        workers, or this process's own."""
        local = SendLimiter()
        shared = self.worker.throttle if self.worker is not None else None
        if isinstance(shared, SharedThrottle):
            async def ask(account: str, recipients: int, per_hour: int, per_day: int) -> str | None:
                return await shared.ask_or_async(local.check, "spam_send", account, recipients, per_hour, per_day)
            return ask

        async def check(account: str, recipients: int, per_hour: int, per_day: int) -> str | None:
            return local.check(account, recipients, per_hour, per_day)
        return check

    @property
    def login(self) -> LoginService | None:
        """The login service (auth/service.py), once started."""
        return self.services.login if self.services is not None else None

    @property
    def queue(self) -> OutboundQueue | None:
        """The outbound queue runner (delivery/queue.py), once started."""
        return self.services.queue if self.services is not None else None

    @property
    def store(self) -> Store:
        assert self._store is not None, "server not started"
        return self._store

    def port(self, name: str) -> int:
        """The bound port of a service (useful with ephemeral ports)."""
        return self.listeners[name].bound_port

    async def start(self) -> None:
        from .net.smtp import engine_config, submission_engine_config

        pin_mmap_threshold()
        worker = self.worker
        background = worker is None or worker.runs_background
        if self._store is None:
            self._store = open_store(self.data_dir, self.config.store, background=background)
        store = self._store
        cfg = self.config
        # the bound of this server's [limits], on a store opened here or handed in
        store.max_mailboxes = cfg.limits.max_mailboxes
        spool = MessageSpool(self.data_dir / "spool")
        if worker is None:
            # (a supervisor sweeps before it starts workers: a worker's
            # restart must not remove the files of the others' sessions)
            stray = spool.sweep()
            if stray:
                log.info("removed %d stray spool file(s)", stray)
            # a command run beside this server (mailyard user ...) opens the
            # store too: it must leave this server's sessions what they hold
            store.share_holds(keep_expunged=False)
        else:
            store.attach_peers(worker.channel)
        auth = cfg.authentication
        srs = None
        if auth.srs:
            try:
                srs = SRS(load_srs_secret(self.data_dir))
            except OSError as exc:
                # forwarding still works, with the original reverse-path
                log.warning("SRS is off: cannot read or create its secret: %s", exc)
        router = Router(store, cfg.smtp.max_expansion_depth, cfg.smtp.max_expansion_recipients, srs=srs,
                        recipient_delimiter=cfg.delivery.recipient_delimiter,
                        delimiter_off_domains=cfg.delivery.recipient_delimiter_off_domains)
        if self.tls is None:
            self.tls = self._load_tls()
        if cfg.tls.acme:
            self.acme_answers = Challenges()
            self.tls.sni_hook = self.acme_answers.tls_alpn01
        authserv_id = auth.authserv_id or cfg.server.hostname
        keyring = Signer(self.data_dir, cfg.server.hostname, authserv_id, auth.srs_domain)
        signer = keyring.sign if auth.dkim_sign else None
        mailauth: InboundChecker | CheckPool | None = None
        if auth.inbound_checks and auth.check_processes > 0:
            mailauth = CheckPool(cfg.delivery.nameservers, auth.dns_timeout, authserv_id,
                                 processes=auth.check_processes)
            await mailauth.start()
        elif auth.inbound_checks:
            mailauth = InboundChecker(Resolver(cfg.delivery.nameservers, auth.dns_timeout), authserv_id)
        dmarc_reports = (DMARCReports(self.data_dir / "dmarc-reports")
                         if auth.inbound_checks and auth.dmarc_reports else None)
        spam: SpamChecker | None = None
        if cfg.spam.checks or cfg.spam.rspamd_url:
            spam = SpamChecker(
                cfg.spam, store, DecisionLog(self.data_dir / "spam", cfg.spam.log_max_bytes),
                Resolver(cfg.delivery.nameservers, cfg.spam.dns_timeout) if cfg.spam.checks else None,
                RspamdClient(cfg.spam.rspamd_url, cfg.spam.rspamd_timeout) if cfg.spam.rspamd_url else None,
                hostname=cfg.server.hostname,
            )
        if cfg.spam.rspamd_controller_url:
            self.learner = Learner(store, Controller.parse(cfg.spam.rspamd_controller_url,
                                                           cfg.spam.rspamd_controller_password))
        # the fake SCRAM salts' key, read (or made) once off the event loop
        scram_secret = await asyncio.to_thread(load_secret, self.data_dir / SECRET_FILE)
        self.services = Services(
            config=cfg,
            data_dir=self.data_dir,
            store=store,
            router=router,
            login=LoginService(store, self._throttle, scram_secret),
            spool=spool,
            queue=OutboundQueue(store, router, cfg.delivery, cfg.server.hostname, client_tls=client_context,
                                relay_ca_file=self._relay_ca_file(), signer=signer,
                                security=self._transport_security(),
                                sealer=keyring.seal if auth.dkim_sign else None, srs=srs,
                                srs_domain=auth.srs_domain, dmarc_reports=dmarc_reports,
                                queue_alert=cfg.spam.queue_alert),
            tls=self.tls,
            smtp_engine=engine_config(cfg),
            submission_engine=submission_engine_config(cfg),
            stats=self.stats,
            mailauth=mailauth,
            dmarc_reports=dmarc_reports,
            acme_http01=self.acme_answers.http01 if self.acme_answers is not None else None,
            spam=spam,
            sieve=(SieveDelivery(store, ScriptStore(self.data_dir / "sieve"), cfg.delivery.recipient_delimiter)
                   if cfg.delivery.sieve else None),
            mx_rates=self._mx_rates(),
            learn=self.learner.submit if self.learner is not None else None,
            greylist=(GreylistState.in_data_dir(self.data_dir, cfg.spam.greylist_retry_window)
                      if cfg.spam.greylisting else None),
            send_limits=self._send_limits(),
            mx_exempt=rate_policy_from_config(cfg.spam).is_exempt,
        )
        share = worker.count if worker is not None else 1
        limits = ConnectionLimits(
            # Each worker counts its own connections: it gets its share of
            # the caps, so the server as a whole keeps to [limits].
            -(-cfg.limits.max_connections // share),
            -(-cfg.limits.max_connections_per_ip // share),
            cfg.limits.idle_timeout,
            cfg.limits.command_deadline,
            cfg.limits.literal_deadline,
        )
        listening = [svc for svc in protocol_services() if getattr(cfg.ports, svc.name)]
        raise_fd_limit(len(listening) * cfg.limits.max_connections + FD_RESERVE)
        try:
            if worker is not None:
                # before the first session: its logins and rates use the peers
                self._join_peers(worker, store, self.services.login)
            for service in protocol_services():
                port = getattr(cfg.ports, service.name)
                if port == 0:
                    continue
                listener = Listener(
                    service.name,
                    cfg.server.bind,
                    0 if self.ephemeral_ports else port,
                    self._bind_protocol(service.protocol),
                    limits,
                    ssl_context=self.tls.listener_context if service.implicit_tls else None,
                    sockets=worker.sockets.get(service.name) if worker is not None else None,
                    proxy_from=AddressSet(cfg.server.proxy_protocol_from),
                    load=worker.accept_load(service.name) if worker is not None else None,
                )
                await listener.start()
                self.listeners[service.name] = listener
            queue = self.services.queue
            if queue is not None and background:
                await queue.start()
                store.on_queue_note = queue.wake
            elif queue is not None and worker is not None:
                # The runner is in worker 0: tell it of new entries.
                channel = worker.channel
                queue.elsewhere = lambda: channel.publish(QUEUE)
            await self._start_web(worker)
            if cfg.metrics.listen and background:  # one endpoint: the first worker reads every worker's files
                await self._start_metrics(store)
            if cfg.tls.acme and background and self.acme_answers is not None:
                self.acme = self._acme_manager(store, self.acme_answers)
                self.acme.start()
        except BaseException:
            await self.stop()
            raise

    async def _start_web(self, worker: WorkerRole | None) -> None:
        """Webmail (web/): uvicorn in this event loop on the http port and,
        with the server's certificate, the https port (each offers
        bound_port and stop() like a Listener)."""
        assert self.services is not None
        cfg = self.config
        served = [name for name in ("http", "https") if getattr(cfg.ports, name)
                  and (worker is None or name in worker.sockets)]
        if not served:
            return  # the webmail's modules (several MB) are not even imported
        from .web.app import create_app
        from .web.service import HTTPService

        # One app for both ports: a session made on one is known on the other.
        app = None
        for name in served:
            port = getattr(cfg.ports, name)
            socks = worker.sockets.get(name) if worker is not None else None
            service = HTTPService(
                self.services, cfg.server.bind, 0 if self.ephemeral_ports else port,
                sock=socks[0] if socks else None,
                tls=self.tls if name == "https" else None, app=app,
            )
            if app is None:
                app = service.app = create_app(self.services)
            await service.start()
            self.listeners[name] = service  # type: ignore[assignment]
            logs.event(log, logging.INFO, "listening", proto=name, ip=cfg.server.bind, port=service.bound_port)
        https = self.listeners.get("https")
        if app is not None and https is not None:
            app.state.web.https_port = https.bound_port

    def _acme_manager(self, store: Store, answers: Challenges) -> AcmeManager:
        """The ACME manager over ``[tls]`` (net/acme.py)."""
        cfg = self.config
        cert, key = self.cert_paths()

        async def names() -> list[str]:
            if cfg.tls.acme_names:
                return [n.lower() for n in cfg.tls.acme_names]
            return default_names(cfg.server.hostname, await store.list_domains())

        def applied() -> None:
            assert self.tls is not None
            self.tls.reload()
            if self.worker is not None:
                signal_supervisor()  # the other workers reload too

        ca_file = str(self.data_dir / cfg.tls.acme_ca_file) if cfg.tls.acme_ca_file else None
        return AcmeManager(
            cert_path=cert, key_path=key, account_key_path=self.data_dir / "tls" / "acme" / "account.key",
            names=names, directory=cfg.tls.acme_directory, email=cfg.tls.acme_email,
            challenge=cfg.tls.acme_challenge, renew_days=cfg.tls.acme_renew_days,
            answers=answers, applied=applied, ca_file=ca_file, retry=cfg.tls.acme_retry,
        )

    @staticmethod
    def _join_peers(worker: WorkerRole, store: Store, login: LoginService) -> None:
        """Exchange notes with the other workers (store/notify.py): store
        changes, and settled login attempts of the shared throttle (a login
        waiting for a budget held by another worker's attempt asks again)."""
        channel = worker.channel
        channel.on(SETTLED, lambda _ids: login.peer_settled())
        if isinstance(worker.throttle, SharedThrottle):
            def settled() -> None:
                channel.publish(SETTLED)
                login.peer_settled()  # this worker's waiting logins too: the supervisor has it now
            worker.throttle.on_settle = settled
            worker.throttle.attach(asyncio.get_running_loop())
        channel.attach(asyncio.get_running_loop())

    async def _start_metrics(self, store: Store) -> None:
        """The Prometheus endpoint ([metrics] listen). A port taken by
        another program is reported and mail keeps flowing without it."""
        from .net.metrics_http import MetricsListener, parse_listen

        try:
            host, port = parse_listen(self.config.metrics.listen)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        listener = MetricsListener(store, self.data_dir, host, 0 if self.ephemeral_ports else port)
        try:
            await listener.start()
        except OSError as exc:
            logs.event(log, logging.ERROR, "listen_failed", proto="metrics", ip=host, port=port, reason=str(exc))
            return
        self.listeners["metrics"] = listener  # type: ignore[assignment]

    def cert_paths(self) -> tuple[Path, Path]:
        """The certificate and key files (`certificate_paths`)."""
        return certificate_paths(self.data_dir, self.config)

    def _transport_security(self) -> TransportSecurity | None:
        """DANE, MTA-STS and TLS-RPT for MX delivery (delivery/tlspolicy.py);
        None with a smarthost (the relay's own TLS settings apply)."""
        cfg = self.config
        d, sts_cfg = cfg.delivery, cfg.mta_sts
        if d.relay_host or not (sts_cfg.outbound or d.dnssec or d.tls_reports):
            return None
        cafile = None
        if sts_cfg.ca_file:
            path = self.data_dir / sts_cfg.ca_file
            try:
                client_context(True, cafile=path)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"mta_sts.ca_file: cannot load {path}: {exc}") from exc
            cafile = str(path)
        sts = None
        if sts_cfg.outbound:
            mx = MXResolver(make_resolver(d.nameservers, d.dns_timeout))
            sts = PolicyResolver(mx.resolver, mx.addresses, cache_dir=self.data_dir / "mta-sts",
                                 https_port=sts_cfg.https_port, cafile=cafile, timeout=sts_cfg.fetch_timeout,
                                 max_size=sts_cfg.max_policy_size)
        dane = DANE(make_resolver(d.nameservers, d.dns_timeout)) if d.dnssec else None
        reports = TLSReports(self.data_dir / "tlsrpt") if d.tls_reports else None
        return TransportSecurity(sts=sts, dane=dane, reports=reports, cafile=cafile, starttls=d.starttls,
                                 port=d.smtp_port)

    def _relay_ca_file(self) -> str | None:
        """delivery.relay_ca_file as an absolute path, checked to load now
        rather than at the first delivery."""
        name = self.config.delivery.relay_ca_file
        if not name:
            return None
        path = self.data_dir / name
        try:
            client_context(True, cafile=path)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"delivery.relay_ca_file: cannot load {path}: {exc}") from exc
        return str(path)

    def _load_tls(self) -> ReloadableTLS:
        cert, key = self.cert_paths()
        if not (self.config.tls.cert or self.config.tls.key):
            # No certificate configured: make the development one if `init` did not.
            if ensure_certificate(self.config.server.hostname, cert, key):
                log.warning("created a self-signed TLS certificate in %s", cert.parent)
        try:
            return ReloadableTLS(cert, key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"cannot load the TLS certificate {cert} / key {key}: {exc}") from exc

    def _bind_protocol(
        self, protocol: Callable[[Services, Listener], asyncio.Protocol]
    ) -> Callable[[Listener], asyncio.Protocol]:
        def make(listener: Listener) -> asyncio.Protocol:
            # Read per connection: a test may swap in changed services.
            assert self.services is not None
            return protocol(self.services, listener)

        return make

    async def stop(self) -> None:
        """Stop accepting, let sessions end (SMTP answers 421), finish commits, close the store."""
        grace = self.config.server.shutdown_grace
        if self.acme is not None:
            await self.acme.stop()
            self.acme = None
        # A listener whose stop fails is logged and passed: the queue is
        # stopped and the store closed whatever happened to one port.
        names = list(self.listeners)
        ended = await asyncio.gather(*(self.listeners[name].stop(grace) for name in names), return_exceptions=True)
        for name, result in zip(names, ended, strict=True):
            if isinstance(result, BaseException):
                log.error("%s: the listener's stop failed", name, exc_info=result)
        self.listeners.clear()
        if self.worker is not None:
            self.worker.channel.detach(asyncio.get_running_loop())
            if isinstance(self.worker.throttle, SharedThrottle):
                self.worker.throttle.detach()
        if self.queue is not None:
            await self.queue.stop()
        if self.services is not None and self.services.mailauth is not None:
            self.services.mailauth.close()
        if self.services is not None and self.services.spam is not None:
            await self.services.spam.close()
        if self.learner is not None:
            await self.learner.stop()
        if self.services is not None and self.services.greylist is not None:
            self.services.greylist.close()
        if self.services is not None and self.services.sieve is not None:
            self.services.sieve.close()
        if self._store is not None:
            await self._store.close()
            self._store = None
        self._stopped.set()

    async def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down cleanly."""
        await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        if self.tls is not None:
            # SIGHUP re-reads certificate and key (e.g. after an ACME renewal);
            # open sessions keep theirs, new handshakes get the new pair.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self.tls.install_sighup(loop)
        if self.worker is None:
            for name, listener in self.listeners.items():
                print(f"  {name:<11} {self.config.server.bind}:{listener.bound_port}", flush=True)
            print("mailyard is running; press Ctrl-C to stop.", flush=True)
        await stop.wait()
        log.info("shutting down")
        if self.worker is None:
            print("shutting down...", flush=True)
        await self.stop()
