"""What the services of ``mailyard serve`` share, as one typed object.

``MailServer.start`` (server.py) builds one ``Services`` and hands it to each
service: the SMTP, POP3 and IMAP listeners' sessions, the webmail app and,
through its fields, the outbound queue runner. A service reads the fields
it uses; nothing is looked up on the server object by name, so what a
service depends on is visible in its signature and checked by the type
checker.

This module sits between ``delivery/`` and the top (``net/``, ``web/``):
it names the store, the router, the queue and the login service, and is
imported by the net and web glue, never by the layers below
(tests/unit/test_layers.py).
"""

from __future__ import annotations

import collections
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .auth.service import LoginService
from .config import Config
from .delivery.dmarcrpt import DMARCReports
from .delivery.queue import OutboundQueue
from .delivery.router import Router
from .delivery.sieve import SieveDelivery
from .mailauth.inbound import InboundChecker
from .mailauth.pool import CheckPool
from .protocols.imap.selected import KeptCaches
from .protocols.smtp.server import ServerConfig
from .spam.checker import SpamChecker
from .store.api import Account, Mailbox, Store
from .store.greylist import GreylistState
from .store.spool import MessageSpool


class ServerTLS(Protocol):
    """The server certificate for STARTTLS (net/tls.py ``ReloadableTLS``).

    ``context`` is read at the moment of each upgrade, so a reload (SIGHUP)
    applies to the next handshake."""

    @property
    def context(self) -> ssl.SSLContext: ...

    # The certificate is its own issuer (the development one).
    self_signed: bool


@dataclass(frozen=True, eq=False)
class Services:
    """The shared parts of a running server, built once at start."""

    config: Config
    data_dir: Path
    store: Store
    # The one place that decides where a recipient goes (delivery/router.py).
    router: Router
    # Every login of every protocol, under one throttle (auth/service.py).
    login: LoginService
    # Spool files of messages being received (store/spool.py).
    spool: MessageSpool
    # None when the server runs no outbound queue: remote recipients are refused.
    queue: OutboundQueue | None
    # None when no certificate is loaded: STARTTLS is not offered.
    tls: ServerTLS | None
    # The SMTP engine settings of the MX port and of the submission ports
    # (RFC 6409: AUTH before MAIL), derived from [smtp] once.
    smtp_engine: ServerConfig
    submission_engine: ServerConfig
    # Counters for tests and metrics (e.g. "smtp_sessions" on the MX port).
    stats: collections.Counter[str]
    # The SPF / DKIM / ARC / DMARC checks of the MX port (mailauth/pool.py, or
    # mailauth/inbound.py on threads); None:
    # the MX port does not check ([authentication] inbound_checks = false).
    mailauth: InboundChecker | CheckPool | None = None
    # Where the MX port records each DMARC evaluation for the daily aggregate
    # reports (delivery/dmarcrpt.py); None: no reports ([authentication] dmarc_reports).
    dmarc_reports: DMARCReports | None = None
    # The key authorization of a pending ACME HTTP-01 challenge by token
    # (net/acme.py ``Challenges.http01``); None when ACME is off.
    acme_http01: Callable[[str], str | None] | None = None
    # Sieve filters at local delivery (delivery/sieve.py); None: off.
    sieve: SieveDelivery | None = None
    # The spam verdict of the MX port (spam/checker.py); None: no built-in
    # checks and no rspamd ([spam] checks = false, rspamd_url = "").
    spam: SpamChecker | None = None
    # The MX port's connection and message rates (spam/rates.py), shared by
    # the workers: ``await mx_rates(kind, ip)`` counts one and returns the
    # reason the client is over its budget, or None. None: no rate limits.
    mx_rates: Callable[[str, str], Awaitable[str | None]] | None = None
    # The accounts' submission limits (spam/limits.py), shared by the workers;
    # see delivery/submit.py Intake.send_limits. None: no limits.
    send_limits: Callable[[str, int, int, int], Awaitable[str | None]] | None = None
    # Teaches the spam filter from users' moves into and out of Junk
    # (net/learning.py ``Learner.submit``: account, mailbox, UIDs there,
    # "spam" or "ham"; returns at once). None: no learning.
    learn: Callable[[Account, Mailbox, Sequence[int], str], None] | None = None
    # Greylisting state of the MX port (store/greylist.py); None: greylisting off.
    greylist: GreylistState | None = None
    # Whether a client address is exempt from the MX port's abuse defences ([spam] trusted_networks).
    mx_exempt: Callable[[str], bool] | None = None
    # The big mailboxes' index data the IMAP sessions keep through IDLE,
    # under one budget (protocols/imap/selected.py KeptCaches).
    imap_idle_caches: KeptCaches = field(default_factory=KeptCaches)
