"""Configuration: a TOML file (``config.toml`` in the data directory) over defaults.

Every option has a default, so ``mailyard init`` + ``mailyard serve`` need nothing
else. Unknown keys are an error that names the key and the known ones: a typo
must not silently leave a limit at its default. The README documents every
option; ``mailyard config defaults`` prints this file's defaults as TOML.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """The configuration file is unreadable or has a bad key or value."""


# The longest ``[limits] sasl_deadline``: auth/service.py SASL_EXCHANGE_MAX
# (half the throttle's PENDING_TTL), past which a SCRAM proof is refused
# anyway (tests/unit/test_config.py checks the two agree).
SASL_DEADLINE_MAX = 60.0


@dataclass
class ServerConfig:
    # The name this server gives itself in greetings, EHLO and Received headers.
    hostname: str = field(default_factory=lambda: socket.getfqdn() or "localhost")
    # Address every listener binds (production: "0.0.0.0" or "::").
    bind: str = "127.0.0.1"
    # Seconds open sessions get to finish on SIGTERM before they are cut.
    shutdown_grace: float = 10.0
    # Python logging level: "debug", "info", "warning", "error" or "critical".
    log_level: str = "info"
    # Worker processes that serve the listeners (mailyard/workers.py);
    # 0: one per available core; 1: a single process, no supervisor.
    workers: int = 0
    # "text": one line of key=value fields per event; "json": one JSON object per line (mailyard/logs.py).
    log_format: str = "text"
    # Addresses (or networks, "10.0.0.0/8") of load balancers that put a
    # PROXY protocol header (v1 or v2) before the mail protocols: from these
    # the mail listeners read the header before the greeting and take the
    # client's address from it; from anyone else a connection is ordinary.
    proxy_protocol_from: list = field(default_factory=list)


@dataclass
class PortsConfig:
    """Listening ports; 0 disables a listener. Defaults are the development ports
    (DESIGN.md); production uses 25, 587, 465, 143, 993, 110, 995."""

    smtp: int = 2525
    submission: int = 2587
    smtps: int = 2465
    imap: int = 2143
    imaps: int = 2993
    pop3: int = 2110
    pop3s: int = 2995
    http: int = 8080
    # Webmail over TLS (production: 443) with the [tls] certificate; also
    # answers ACME TLS-ALPN-01 (RFC 8737) challenges.
    https: int = 8443
    # ManageSieve (RFC 5804; production 4190): users manage their Sieve filters.
    managesieve: int = 24190
    # ManageSieve over implicit TLS (TLS from the first byte, like imaps;
    # RFC 5804 offers STARTTLS only, but some clients and TLS-terminating
    # setups want it): off by default, 24191 is the development choice.
    managesieve_tls: int = 0


@dataclass
class LimitsConfig:
    # Open connections in total, and from one client address (per listener).
    max_connections: int = 2000
    max_connections_per_ip: int = 100
    # Seconds a client may stay silent (IMAP IDLE uses imap_idle_timeout).
    idle_timeout: float = 300.0
    imap_idle_timeout: float = 1800.0  # RFC 9051 5.4: at least 30 minutes
    # Seconds to finish a command line once it began (SMTP, IMAP, POP3); a
    # trickle of bytes does not extend it (slowloris). 0: no deadline.
    command_deadline: float = 120.0
    # HTTP request bodies: command_deadline seconds from the first wait for
    # the body, plus one second per this many bytes received (a floor rate:
    # 4 KiB/s, 32 kbit/s, brings 26 MB in under two hours). 0: no bound.
    http_body_min_rate: int = 4096
    # Seconds for a whole IMAP literal (e.g. APPEND) once its command began.
    literal_deadline: float = 600.0
    # Seconds a client has, in all, to answer the challenges of one SASL
    # exchange (AUTH / AUTHENTICATE on SMTP, IMAP, POP3 and ManageSieve);
    # then it ends with the protocol's failure reply (auth/service.py
    # LoginSession.sasl says what it counts). More than 0, at most
    # SASL_DEADLINE_MAX.
    sasl_deadline: float = SASL_DEADLINE_MAX
    # IMAP: longest command line, and largest literal outside APPEND (APPEND
    # is bounded by smtp.max_message_size).
    imap_max_line: int = 64 * 1024
    imap_max_literal: int = 64 * 1024
    # IMAP: a whole command (its lines and literals together) before login,
    # outside APPEND after login, and a whole APPEND (all messages of a
    # MULTIAPPEND; one message of smtp.max_message_size always fits).
    imap_max_command_unauthenticated: int = 8 * 1024
    imap_max_command: int = 1024 * 1024
    imap_max_append_command: int = 100 * 1024 * 1024
    # ManageSieve: a whole command (its line and literals together) before
    # login; after it, a script of the size limit with its command line.
    managesieve_max_command_unauthenticated: int = 8 * 1024
    # IMAP and POP3: bad commands (IMAP BAD in a row, POP3 -ERR for a bad
    # command) on one connection before it is closed.
    max_bad_commands: int = 20
    # Mailboxes (folders) one account may have; creating one more is refused
    # (IMAP NO [LIMIT], RFC 5530; the webmail says so), and so is subscribing
    # to more than twice as many names. Gmail allows 10,000 labels, so no
    # real user meets it; and every LIST, LIST-STATUS and webmail page goes
    # over the whole list, which at 10,000 names costs a few tens of ms of
    # CPU in slices that let the other sessions in (100,000 folders made
    # each such request seconds of work).
    max_mailboxes: int = 10_000


@dataclass
class SMTPConfig:
    # RFC 1870 SIZE, advertised in EHLO; larger messages get 552 5.3.4.
    max_message_size: int = 25 * 1024 * 1024
    # RFC 5321 4.5.3.1.8 requires at least 100.
    max_recipients: int = 100
    # RFC 5321 4.5.3.1.4 / 4.5.3.1.6 (octets including CRLF).
    max_command_line: int = 512
    max_text_line: int = 1000
    # Unknown or bad commands before 421 and disconnect.
    max_unknown_commands: int = 20
    # Error replies of any kind (bad commands, sequence errors, refused data)
    # before 421 and disconnect.
    max_errors: int = 50
    # VRFY/EXPN answer with real data only when enabled (RFC 5321 3.5.3: 252 otherwise).
    vrfy: bool = False
    expn: bool = False
    # RFC 5321 4.5.3.2 timeouts, seconds.
    timeout_command: float = 300.0
    timeout_data_block: float = 180.0
    timeout_data_term: float = 600.0
    # Alias/list expansion depth (loop safety) and the largest expansion.
    max_expansion_depth: int = 10
    max_expansion_recipients: int = 1000


@dataclass
class StoreConfig:
    # fsync before acknowledging (DESIGN.md "Durability"); off only for throwaway tests.
    fsync: bool = True
    # Blob segment files are rolled over at this size.
    segment_size: int = 64 * 1024 * 1024
    # Most writes that share one commit.
    group_commit_max: int = 512
    # Index data (ENVELOPE, header fields, full-text index) is a cache computed
    # again on demand: it is written only while the file system keeps this many
    # bytes free for mail; below, reads derive it on the spot and the
    # background indexer waits for room.
    index_min_free: int = 64 * 1024 * 1024
    # "sqlite": the embedded store in the data directory; "postgresql": the
    # database ``dsn`` names (several nodes may share it).
    backend: str = "sqlite"
    # libpq connection string or URI for the postgresql backend,
    # e.g. "postgresql://mailyard@db.example.com/mailyard".
    dsn: str = ""
    # Most connections the postgresql backend keeps open per process.
    pool_size: int = 10
    # Seconds a request of the postgresql backend waits for a connection
    # (the database unreachable, or every connection busy) before it is
    # answered as a temporary failure.
    pool_timeout: float = 10.0


LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"


@dataclass
class TLSConfig:
    # PEM files; empty: the self-signed pair `mailyard init` creates in the
    # data dir (or, with acme = true, the certificate ACME issued).
    cert: str = ""
    key: str = ""
    # ACME (RFC 8555): get and renew the certificate from a certificate
    # authority (mailyard/acme/). Needs the names below to point at this
    # server and the http (HTTP-01) or https (TLS-ALPN-01) port reachable as
    # 80 / 443 from the Internet.
    acme: bool = False
    acme_directory: str = LETS_ENCRYPT_DIRECTORY
    # The account's contact address (expiry notices from the CA); may be empty.
    acme_email: str = ""
    # Host names the certificate covers; empty: [server] hostname plus mail.,
    # autoconfig. and mta-sts. of each local domain.
    acme_names: list = field(default_factory=list)
    # "http-01" (RFC 8555 8.3, on the http port) or "tls-alpn-01" (RFC 8737,
    # on the https port).
    acme_challenge: str = "http-01"
    # Renew this many days before the certificate expires.
    acme_renew_days: int = 30
    # Seconds before the first retry of a failed order; each next retry
    # waits twice as long, at most a day.
    acme_retry: float = 300.0
    # A PEM file of CA certificates to trust for the ACME server itself
    # (a private CA); relative to the data directory. Empty: the system's CAs.
    acme_ca_file: str = ""


@dataclass
class HTTPConfig:
    """The webmail's HTTP and HTTPS listeners."""

    # Reverse proxies (addresses or networks) whose X-Forwarded-For and
    # X-Forwarded-Proto headers are believed: the login throttle and the
    # logs then see the client's address. From anyone else they are ignored.
    trusted_proxies: list = field(default_factory=list)
    # Strict-Transport-Security max-age (RFC 6797) sent over HTTPS when the
    # certificate is not the self-signed one; 0: no HSTS.
    hsts_max_age: int = 31536000
    # Plain HTTP redirects to the https port when the certificate is not the
    # self-signed one (ACME challenges are always answered on HTTP).
    redirect_https: bool = True


@dataclass
class AuthConfig:
    """Authentication policy shared by SMTP AUTH, IMAP, POP3 and webmail."""

    # Passwords in the clear (USER/PASS, LOGIN, AUTH PLAIN/LOGIN) need TLS,
    # except from a loopback client when this is true (RFC 8314 4.1; RFC 9051 11.1).
    allow_plaintext_on_loopback: bool = True
    # Allow them on unencrypted connections from anywhere (not recommended).
    allow_plaintext_insecure: bool = False
    # Login throttle (auth/throttle.py), shared by every protocol (SMTP, IMAP,
    # POP3, webmail): each failure against an account doubles the next
    # attempt's delay for that account from base_delay up to max_delay; this
    # many failures (attempts in flight count) within `window` seconds lock the
    # account / client address out, and every attempt then gets the protocol's
    # temporary reply whatever the password.
    base_delay: float = 1.0
    max_delay: float = 16.0
    window: float = 900.0
    account_max_failures: int = 10
    account_lockout: float = 900.0
    ip_max_failures: int = 30
    ip_lockout: float = 900.0
    # Failed logins on one connection before it is closed (SMTP 421, IMAP BYE,
    # POP3 -ERR).
    smtp_connection_max_failures: int = 5
    imap_connection_max_failures: int = 3
    pop3_connection_max_failures: int = 3
    # IMAP UNAUTHENTICATE (RFC 8437): a logged-in client may return to the
    # not-authenticated state and log in again on the same connection. RFC
    # 8437 8 requires a way to turn it off (e.g. behind a pass-through proxy).
    imap_unauthenticate: bool = True


@dataclass
class DeliveryConfig:
    """Outbound delivery: the queue runner, MX routing, retries and bounces (delivery/)."""

    # TCP port of remote mail exchangers. RFC 5321 says 25; tests and private
    # set-ups may use another (every MX is then reached on this port).
    smtp_port: int = 25
    # DNS servers for MX/A/AAAA lookups ("host" or "host:port", comma-separated);
    # empty: the system resolver (/etc/resolv.conf).
    nameservers: str = ""
    dns_timeout: float = 10.0
    # Address outgoing connections come from ("" = the system's choice).
    source_address: str = ""
    # Smarthost: relay everything through this host instead of MX delivery.
    relay_host: str = ""
    relay_port: int = 587
    # TLS to the smarthost, in the vocabulary the mail client shares
    # (TLS_MODES): "starttls" (required), "implicit" (TLS from the first byte,
    # SMTPS on 465, RFC 8314 3.3), "opportunistic" (STARTTLS when offered),
    # "none" (plain text: the password travels in clear).
    relay_tls: str = "starttls"
    relay_username: str = ""
    relay_password: str = ""
    # Check the smarthost's certificate and name (it receives the password).
    relay_verify: bool = True
    # A PEM file of CA certificates (or the smarthost's own self-signed
    # certificate) to trust for the smarthost instead of the system's CAs;
    # relative to the data directory. Empty: the system's CAs.
    relay_ca_file: str = ""
    # STARTTLS to MX hosts: "opportunistic" (RFC 7435), "require" or "never".
    starttls: str = "opportunistic"
    # Concurrency: connections in total and per destination domain.
    max_connections: int = 20
    max_connections_per_domain: int = 10
    # Messages carried over one connection before it is closed and re-opened.
    max_messages_per_connection: int = 100
    # Seconds an idle connection stays open for more mail to the same destination.
    connection_cache_time: float = 2.0
    # Back-off: first retry after retry_initial seconds, each next one
    # retry_factor times later, at most retry_max_interval apart; a message
    # still undelivered after max_lifetime seconds bounces (default 5 days).
    retry_initial: float = 300.0
    retry_factor: float = 2.0
    retry_max_interval: float = 4 * 3600.0
    max_lifetime: float = 5 * 86400.0
    # A delay warning DSN once a message has waited this long (0: never).
    delay_warning: float = 4 * 3600.0
    # How often the runner looks at the queue even when nothing woke it (so
    # `mailyard queue retry` from another process takes effect).
    poll_interval: float = 5.0
    # Client timeouts (RFC 5321 4.5.3.2): connect, and a cap on every reply wait.
    connect_timeout: float = 30.0
    reply_timeout_cap: float = 600.0
    # DANE (RFC 7672): look up TLSA records of MX hosts and require TLS
    # authenticated by them. Only with a DNSSEC-validating resolver in
    # `nameservers` (e.g. unbound on 127.0.0.1): its AD bit is trusted.
    dnssec: bool = False
    # SMTP TLS Reporting (RFC 8460): record outgoing TLS results per policy
    # domain and mail the daily report to the domain's _smtp._tls rua.
    tls_reports: bool = True
    # Plus-addressing (subaddresses, RFC 5233): "user+tag@domain" is
    # delivered to "user@domain" when no address "user+tag" exists, and
    # Sieve sees "tag" as :detail. "" turns it off.
    recipient_delimiter: str = "+"
    # Domains where plus-addressing is off although recipient_delimiter is
    # set (their "user+tag" addresses exist only when created as such).
    recipient_delimiter_off_domains: list = field(default_factory=list)
    # Run each account's active Sieve script at local delivery (``mailyard sieve``).
    sieve: bool = True


@dataclass
class MTASTSConfig:
    """MTA-STS (RFC 8461): the policy served for the local domains, and the
    honouring of other domains' policies on outgoing mail."""

    # The mode of the policy served at https://mta-sts.DOMAIN/.well-known/mta-sts.txt
    # for every local domain: "testing" (senders report failures but deliver),
    # "enforce" (senders refuse MX hosts or certificates that do not match),
    # "none" (the policy is withdrawn).
    mode: str = "testing"
    # Seconds senders may cache the served policy (RFC 8461 3.2: at most a year).
    max_age: int = 604800
    # The served policy's mx patterns, comma-separated ("mx1.example.org,
    # *.mail.example.org"); empty: [server] hostname.
    mx: str = ""
    # Honour other domains' policies on outgoing mail.
    outbound: bool = True
    # Port policy hosts are fetched from (RFC 8461 3.3: 443; tests use another).
    https_port: int = 443
    # PEM file of CA certificates that policy hosts, and the MX hosts of an
    # enforced policy, are checked against (relative to the data directory);
    # empty: the system's CAs.
    ca_file: str = ""
    # Limits of one policy fetch: seconds, and bytes of policy.
    fetch_timeout: float = 60.0
    max_policy_size: int = 65536


@dataclass
class MetricsConfig:
    # host:port of the Prometheus endpoint (GET /metrics, net/metrics_http.py);
    # "" turns it off. Loopback by default: the figures are for the operator.
    listen: str = "127.0.0.1:9154"


@dataclass
class AuthenticationConfig:
    """Mail authentication (mailauth/): DKIM signing of outbound mail and the
    SPF / DKIM / DMARC checks of mail received on the MX port. DNS goes to
    ``[delivery] nameservers``."""

    # DKIM-sign (RFC 6376) every message entering the outbound queue with
    # the domain's keys (``mailyard dkim``).
    dkim_sign: bool = True
    # Check SPF, DKIM and DMARC on the MX port and record the results in an
    # Authentication-Results field (RFC 8601).
    inbound_checks: bool = True
    # "enforce": DMARC p=reject is refused (550 5.7.1) and p=quarantine filed
    # in Junk; "record": only the Authentication-Results field says so.
    dmarc_policy: str = "enforce"
    # Send DMARC aggregate reports (RFC 7489 7.2) once a day to the rua=
    # addresses of the domains whose mail the MX port checked: the client
    # addresses that sent as each domain, with their SPF/DKIM results.
    dmarc_reports: bool = False
    # Seconds the checks of one message wait for DNS before temperror.
    dns_timeout: float = 5.0
    # Worker processes that run the checks (mailauth/pool.py), so the event
    # loop keeps its core; 0: the server process's own threads. Each costs
    # about 40 MB: worth it only where cores are to spare.
    check_processes: int = 0
    # The authserv-id of Authentication-Results (RFC 8601 2.5); empty: [server] hostname.
    authserv_id: str = ""
    # Rewrite the envelope sender of mail that an alias or list forwards to
    # another server with SRS (mailauth/srs.py), so it passes SPF there, and
    # take bounces to such addresses back to the original sender.
    srs: bool = True
    # The domain of the SRS addresses (one of this server's, whose SPF names
    # it); empty: the first local domain.
    srs_domain: str = ""


@dataclass
class SpamConfig:
    """Spam and abuse defences (spam/): the spam verdict of mail received on
    the MX port (a built-in score from the sender's reputation: forward-
    confirmed reverse DNS, HELO, DNS blocklists and allowlists, SPF/DKIM/DMARC;
    and, when ``rspamd_url`` is set, rspamd's content scan; DNS goes to
    ``[delivery] nameservers``), rates on the MX port, early talkers,
    greylisting, outbound limits of accounts, learning from users' Junk moves."""

    # The built-in checks (they ask DNS: rDNS, HELO, the lists below).
    checks: bool = True
    # rspamd's normal worker (its HTTP protocol, /checkv2); "": no rspamd.
    rspamd_url: str = ""
    # Seconds to wait for rspamd; past that, the built-in score alone decides.
    rspamd_timeout: float = 15.0
    # Seconds the built-in checks wait for DNS.
    dns_timeout: float = 5.0
    # Score at or over which a message goes to the recipient's Junk folder
    # (per account: ``mailyard spam threshold``); also the "required" of X-Spam-Status.
    junk_threshold: float = 6.0
    # DNS blocklists and allowlists: "ZONE WEIGHT [CODES] [NAME]"; CODES are
    # addresses, ranges (127.0.0.2-127.0.0.3) or networks, comma-separated
    # (default any 127.0.0.0/8 answer); answers in 127.255.255.0/24 are the
    # list's errors (query refused, over quota) and never count. A negative
    # WEIGHT makes an allowlist.
    dnsbl: list[str] = field(default_factory=lambda: [
        "zen.spamhaus.org 4.0 127.0.0.2-127.0.0.3,127.0.0.9 SPAMHAUS_SBL",
        "zen.spamhaus.org 4.0 127.0.0.4-127.0.0.7 SPAMHAUS_XBL",
        "zen.spamhaus.org 2.5 127.0.0.10-127.0.0.11 SPAMHAUS_PBL",
    ])
    # Clients on these networks (local programs handing mail to the MX port)
    # are not scored by the built-in checks (rspamd still scans their mail)
    # and are exempt from the rates, early-talker rules and greylisting.
    trusted_networks: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    # Overrides of the built-in scores, "NAME=SCORE" (the names and their
    # defaults: spam/score.py DEFAULT_SCORES, README).
    scores: list[str] = field(default_factory=list)
    # The decision log (DATA/spam/decisions.jsonl), rotated past this many
    # bytes (one older file kept).
    log_max_bytes: int = 16 * 1024 * 1024

    # Connections and messages (MAIL commands) a client address may open or
    # send on the MX port per minute (0: no limit): over it, 421 4.7.0 at
    # connect and 451 4.7.1 at MAIL. A busy peer (a large provider's
    # outbound server) reuses connections and stays far below.
    mx_connections_per_minute: int = 120
    mx_messages_per_minute: int = 300
    # A network (/24 IPv4, /64 IPv6) may use this many times an address's budget.
    mx_network_factor: int = 4
    # Seconds the MX port waits before its greeting; a client that talks
    # first (RFC 5321 4.3.1) is refused. 0: greet at once.
    greet_pause: float = 0.0
    # Greylisting of the MX port (off by default): a first delivery attempt of
    # a (client network, sender, recipient) triplet gets 451 4.7.1; a retry
    # after greylist_delay seconds and within greylist_retry_window passes.
    greylisting: bool = False
    greylist_delay: float = 300.0
    greylist_retry_window: float = 2 * 86400.0
    # Days a (network, sender domain) that retried correctly passes unasked.
    greylist_allow_days: float = 35.0
    # Sender domains whose SPF- or DKIM-authenticated mail is never greylisted.
    greylist_known_good: list = field(default_factory=list)
    # Per account, on submission and webmail sends (0: no limit); an account
    # overrides them with ``mailyard user limits``.
    messages_per_hour: int = 300
    recipients_per_day: int = 2000
    # Messages in the outbound queue above which the log warns (once per crossing); 0: never.
    queue_alert: int = 1000
    # rspamd's controller (learn_spam / learn_ham on users' Junk moves), e.g.
    # "http://127.0.0.1:11334"; "": no learning.
    rspamd_controller_url: str = ""
    rspamd_controller_password: str = ""


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    ports: PortsConfig = field(default_factory=PortsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    smtp: SMTPConfig = field(default_factory=SMTPConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    authentication: AuthenticationConfig = field(default_factory=AuthenticationConfig)
    mta_sts: MTASTSConfig = field(default_factory=MTASTSConfig)
    spam: SpamConfig = field(default_factory=SpamConfig)

    @classmethod
    def load(cls, path: Path | None) -> Config:
        """Read ``path`` (if it exists) over the defaults; raise ConfigError naming a bad key."""
        cfg = cls()
        if path is None or not path.exists():
            return cfg
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
        cfg.apply(data, source=str(path))
        return cfg

    def apply(self, data: dict[str, Any], source: str = "config") -> None:
        """Overlay a parsed TOML document, checking section and key names and types."""
        sections = {f.name: f for f in dataclasses.fields(self)}
        for section, values in data.items():
            if section not in sections:
                raise ConfigError(
                    f"{source}: unknown section [{section}]; known sections: "
                    + ", ".join(sorted(sections))
                )
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: [{section}] must be a table")
            target = getattr(self, section)
            fields = {f.name: f for f in dataclasses.fields(target)}
            for key, value in values.items():
                if key not in fields:
                    raise ConfigError(
                        f"{source}: unknown key '{section}.{key}'; known keys in [{section}]: "
                        + ", ".join(sorted(fields))
                    )
                setattr(target, key, _coerce(section, key, getattr(target, key), value, source))
        if self.tls.acme and not self.tls.cert:
            # RFC 8555 8.3 / RFC 8737 3: the CA connects to the challenge's port.
            needed = "http" if self.tls.acme_challenge == "http-01" else "https"
            if not getattr(self.ports, needed):
                raise ConfigError(f"{source}: 'tls.acme_challenge' {self.tls.acme_challenge} needs the"
                                  f" {needed} port ([ports] {needed} is 0)")
        if not 0 < self.limits.sasl_deadline <= SASL_DEADLINE_MAX:
            raise ConfigError(f"{source}: 'limits.sasl_deadline' must be more than 0 and at most"
                              f" {SASL_DEADLINE_MAX:g} (seconds), not {self.limits.sasl_deadline:g}")
        if self.authentication.dmarc_policy not in ("enforce", "record"):
            raise ConfigError(f"{source}: 'authentication.dmarc_policy' must be \"enforce\" or \"record\"")
        if self.mta_sts.max_age > 31557600:  # RFC 8461 3.2
            raise ConfigError(f"{source}: 'mta_sts.max_age' must be at most 31557600 (one year)")
        _check_spam(self.spam, source)
        url = self.spam.rspamd_controller_url
        if url and not (url.startswith("http://") and len(url) > 7):
            raise ConfigError(f"{source}: 'spam.rspamd_controller_url' must be \"http://host:port\" or \"\"")
        delim = self.delivery.recipient_delimiter
        if len(delim) > 1 or delim in ("@", " ", '"'):
            raise ConfigError(f"{source}: 'delivery.recipient_delimiter' must be one character (such as \"+\") or \"\"")
        off = self.delivery.recipient_delimiter_off_domains
        if not isinstance(off, list) or not all(isinstance(d, str) and d and "@" not in d for d in off):
            raise ConfigError(f"{source}: 'delivery.recipient_delimiter_off_domains' must be a list of domain names")

    def to_toml(self) -> str:
        """The configuration as TOML (used by `init` and `config defaults`)."""
        lines: list[str] = []
        for f in dataclasses.fields(self):
            lines.append(f"[{f.name}]")
            for key, value in dataclasses.asdict(getattr(self, f.name)).items():
                lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
        return "\n".join(lines)


# Connection security words shared by the server (delivery.relay_tls) and the
# mail client ([imap]/[pop3]/[smtp] security in client/config.py).
TLS_MODES = ("starttls", "implicit", "opportunistic", "none")
# Words from other programs' vocabularies, each with the one meant by it; the
# mail client accepts them with a deprecation message, the server names the
# right word in its error.
TLS_MODE_ALIASES = {"ssl": "implicit", "tls": "implicit", "plain": "none"}

# Keys whose value is one word of a fixed set: anything else is an error at load
# time, so that a misspelling cannot quietly mean "no TLS".
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("server", "log_level"): ("debug", "info", "warning", "error", "critical"),
    ("delivery", "relay_tls"): TLS_MODES,
    # RFC 7435 opportunistic STARTTLS to MX hosts, required, or never tried.
    ("delivery", "starttls"): ("opportunistic", "require", "never"),
    ("mta_sts", "mode"): ("testing", "enforce", "none"),
    ("tls", "acme_challenge"): ("http-01", "tls-alpn-01"),
    ("store", "backend"): ("sqlite", "postgresql"),
}
# Lists of IP addresses or networks.
ADDRESS_LIST_KEYS = {("http", "trusted_proxies"), ("server", "proxy_protocol_from"), ("spam", "trusted_networks")}
# TCP port numbers (0 disables a listener).
PORT_KEYS = {("delivery", "smtp_port"), ("delivery", "relay_port"), ("mta_sts", "https_port")}
# Sizes and counts that must be at least 1: 0 would refuse everything.
POSITIVE_KEYS = {
    ("smtp", "max_message_size"), ("smtp", "max_recipients"), ("smtp", "max_command_line"),
    ("smtp", "max_text_line"), ("smtp", "max_expansion_recipients"),
    ("store", "segment_size"), ("store", "group_commit_max"), ("store", "pool_size"),
    ("limits", "imap_max_line"), ("limits", "imap_max_literal"),
    ("limits", "imap_max_command_unauthenticated"), ("limits", "imap_max_command"),
    ("limits", "imap_max_append_command"), ("limits", "managesieve_max_command_unauthenticated"),
    ("limits", "max_connections"),
    ("limits", "max_connections_per_ip"), ("limits", "max_mailboxes"),
    ("delivery", "max_connections"), ("delivery", "max_connections_per_domain"),
    ("delivery", "max_messages_per_connection"), ("delivery", "retry_factor"),
    ("mta_sts", "max_policy_size"),
    ("tls", "acme_renew_days"), ("tls", "acme_retry"),
    ("spam", "mx_network_factor"),
}


def _check_spam(spam: SpamConfig, source: str) -> None:
    """``[spam]`` entries have their own small syntax: check it at load time."""
    url = spam.rspamd_url
    if url and not (url.startswith("http://") or url.startswith("https://")):
        raise ConfigError(f"{source}: 'spam.rspamd_url' must be an http:// or https:// URL or \"\"")
    for item in spam.scores:
        name, eq, value = item.partition("=")
        try:
            float(value)
        except ValueError:
            eq = ""
        if not eq or not name.strip():
            raise ConfigError(f"{source}: 'spam.scores': {item!r} is not NAME=SCORE")
    for item in spam.dnsbl:
        parts = item.split()
        ok = 2 <= len(parts) <= 4
        if ok:
            try:
                float(parts[1])
            except ValueError:
                ok = False
        if ok and len(parts) >= 3:
            for code in parts[2].split(","):
                try:
                    for piece in code.split("-"):
                        ipaddress.ip_network(piece, strict=False)
                except ValueError:
                    ok = False
        if not ok:
            raise ConfigError(f"{source}: 'spam.dnsbl': {item!r} is not \"ZONE WEIGHT [CODES] [NAME]\"")


def _check_value(section: str, key: str, value: Any, source: str) -> Any:
    """Range and word checks beyond the type; returns the value (enumerated
    words folded to lower case)."""
    name = f"'{section}.{key}'"
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, str):
                raise ConfigError(f"{source}: {name} must be a list of strings, not {item!r}")
            if (section, key) in ADDRESS_LIST_KEYS:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ConfigError(f"{source}: {name}: {item!r} is not an IP address or network") from None
        return value
    choices = CHOICES.get((section, key))
    if choices is not None:
        word = value.strip().lower()
        if word not in choices:
            allowed = ", ".join(f'"{c}"' for c in choices)
            hint = ""
            meant = TLS_MODE_ALIASES.get(word) if choices is TLS_MODES else None
            if meant:
                hint = f' (for "{value}" write "{meant}")'
            raise ConfigError(f'{source}: {name} must be one of {allowed}, not "{value}"{hint}')
        return word
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if section == "ports" or (section, key) in PORT_KEYS:
        if not 0 <= value <= 65535:
            raise ConfigError(f"{source}: {name} must be a port number from 0 to 65535, not {value}")
    if (section, key) in POSITIVE_KEYS and value < 1:
        raise ConfigError(f"{source}: {name} must be at least 1, not {value}")
    return value


def _coerce(section: str, key: str, current: Any, value: Any, source: str) -> Any:
    expected = type(current)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        raise ConfigError(
            f"{source}: '{section}.{key}' must be {expected.__name__}, not {type(value).__name__}"
        )
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"{source}: '{section}.{key}' must not be negative")
    if isinstance(value, float) and value != value:  # TOML's nan: no number at all (inf is "never")
        raise ConfigError(f"{source}: '{section}.{key}' must be a number, not nan")
    return _check_value(section, key, value, source)


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
