"""ACME (RFC 8555): get the server certificate from a certificate authority
and renew it before it expires.

- `Challenges` holds what the server answers while an order is being
  validated: HTTP-01 key authorizations (RFC 8555 8.3), served by the
  webmail's HTTP listener at ``/.well-known/acme-challenge/TOKEN``, and
  TLS-ALPN-01 certificates (RFC 8737), which the TLS listeners present to a
  ClientHello for the name being validated (net/tls.py ``sni_hook``).
- `issue` runs one order with the ``acme`` library (certbot's): account,
  new order, challenges, finalize, download. It blocks (``requests``), so
  the manager runs it in a thread.
- `AcmeManager` decides when: at start when the certificate is the
  self-signed placeholder, lacks a configured name, or is within
  ``acme_renew_days`` of expiry; on failure it tries again after a back-off
  (``acme_retry``, 5 minutes, doubling, at most a day). A new certificate is written to the
  data directory (0600) and applied without a restart: this process reloads
  its TLS context and, under a supervisor, asks it to send SIGHUP to every
  worker (mailyard/workers.py).

Files, in ``DATA/tls/acme/``: ``account.key`` (the account's RSA key, PEM),
``cert.pem`` (the certificate and its chain), ``key.pem`` (its key).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import os
import signal
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import josepy as jose
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .. import logs
from ..fsutil import write_atomic
from .tls import _harden_server

__all__ = [
    "ACME_TLS_ALPN",
    "AcmeError",
    "AcmeManager",
    "STATUS_FILE",
    "CertInfo",
    "Challenges",
    "cert_info",
    "default_names",
    "issue",
]

log = logging.getLogger("mailyard.acme")

# RFC 8737 section 6.2: the ALPN protocol of the TLS-ALPN-01 validation.
ACME_TLS_ALPN = "acme-tls/1"
# RFC 8737 section 6.1: id-pe-acmeIdentifier.
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")

BACKOFF_FIRST = 300.0
BACKOFF_MAX = 86400.0
CHECK_INTERVAL = 12 * 3600.0
ORDER_DEADLINE = 120.0
STATUS_FILE = "status.json"


class AcmeError(Exception):
    """An order failed: the CA refused it or a challenge was not validated."""


# --- the tls-alpn-01 challenge type for the acme library -----------------------------


@challenges.ChallengeResponse.register
class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """RFC 8737 section 3: the client answers with an empty object."""

    typ = "tls-alpn-01"


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """RFC 8737 section 3: a token; the validation is the key authorization."""

    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: jose.JWK, **unused: Any) -> str:
        return self.key_authorization(account_key)


def alpn_certificate(name: str, key_authorization: str) -> ssl.SSLContext:
    """A server context presenting the RFC 8737 section 3 validation certificate.

    Self-signed, one dNSName (``name``), and the critical acmeIdentifier
    extension whose value is the DER OCTET STRING of SHA-256 of the key
    authorization; it negotiates only the ``acme-tls/1`` protocol.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, b"\x04\x20" + digest), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden_server(ctx)
    ctx.set_alpn_protocols([ACME_TLS_ALPN])
    with tempfile.TemporaryDirectory(prefix="mailyard-acme-") as tmp:
        cert_file, key_file = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


class Challenges:
    """The answers to the challenges of orders in progress (thread-safe:
    `issue` adds them in its thread, the listeners read them on the loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._http: dict[str, str] = {}
        self._alpn: dict[str, ssl.SSLContext] = {}

    def http01(self, token: str) -> str | None:
        """The key authorization for ``token`` (RFC 8555 8.3), or None."""
        with self._lock:
            return self._http.get(token)

    def tls_alpn01(self, server_name: str | None) -> ssl.SSLContext | None:
        """The validation context for the name of a ClientHello, or None."""
        if not server_name:
            return None
        with self._lock:
            return self._alpn.get(server_name.lower().rstrip("."))

    def add(self, kind: str, key: str, value: Any) -> None:
        with self._lock:
            (self._http if kind == "http-01" else self._alpn)[key] = value

    def remove(self, kind: str, key: str) -> None:
        with self._lock:
            (self._http if kind == "http-01" else self._alpn).pop(key, None)


# --- one order -----------------------------------------------------------------------


def _save(path: Path, data: bytes) -> None:
    """Replace one of ACME's files (all private: mode 0600), making its folder on first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, mode=0o600)


def _load_account_key(path: Path) -> jose.JWKRSA:
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _save(
            path,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
    return jose.JWKRSA(key=key)


def _problem(exc: Exception) -> str:
    if isinstance(exc, errors.ValidationError):
        details = []
        for authzr in exc.failed_authzrs:
            for chall in authzr.body.challenges:
                if chall.error is not None:
                    details.append(f"{authzr.body.identifier.value}: {chall.error}")
        return "challenge failed: " + "; ".join(details)
    return f"{type(exc).__name__}: {exc}"


def issue(
    names: list[str],
    *,
    directory: str,
    email: str,
    account_key_path: Path,
    challenge: str,
    answers: Challenges,
    ca_file: str | None = None,
) -> tuple[bytes, bytes]:
    """Order a certificate for ``names``; returns (chain PEM, key PEM).

    Blocking. Raises `AcmeError` with the CA's problem detail when the CA
    refuses or a challenge fails. The challenge answers are published in
    ``answers`` only while the order's authorizations are pending.
    """
    account_key = _load_account_key(account_key_path)
    net = client.ClientNetwork(account_key, verify_ssl=ca_file or True, user_agent="mailyard")
    published: list[tuple[str, str]] = []
    try:
        acme = client.ClientV2(client.ClientV2.get_directory(directory, net), net)
        registration = messages.NewRegistration.from_data(
            email=email or None, terms_of_service_agreed=True
        )
        try:
            net.account = acme.new_account(registration)
        except errors.ConflictError as exc:
            # RFC 8555 7.3.1: the key already has an account; its URL is in Location.
            net.account = acme.query_registration(
                messages.RegistrationResource(uri=exc.location, body=messages.Registration()))
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        order = acme.new_order(crypto_util.make_csr(key_pem, names))
        for authzr in order.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue  # RFC 8555 7.1.4: an authorization the account still holds
            name = authzr.body.identifier.value
            chosen = next((c for c in authzr.body.challenges if c.chall.typ == challenge), None)
            if chosen is None:
                raise AcmeError(f"{name}: the CA offers no {challenge} challenge")
            response, validation = chosen.chall.response_and_validation(account_key)
            if challenge == "http-01":
                token = chosen.chall.encode("token")
                answers.add("http-01", token, validation)
                published.append(("http-01", token))
            else:
                answers.add("tls-alpn-01", name.lower(), alpn_certificate(name, validation))
                published.append(("tls-alpn-01", name.lower()))
            acme.answer_challenge(chosen, response)
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_DEADLINE)
        done = acme.poll_and_finalize(order, deadline)
        return done.fullchain_pem.encode("ascii"), key_pem
    except AcmeError:
        raise
    except (errors.Error, messages.Error, OSError, ValueError) as exc:
        raise AcmeError(_problem(exc)) from exc
    except Exception as exc:  # requests' own errors (network, TLS to the CA)
        raise AcmeError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        for kind, key_name in published:
            answers.remove(kind, key_name)
        with contextlib.suppress(Exception):
            net.session.close()


# --- certificate facts ---------------------------------------------------------------


@dataclass(frozen=True)
class CertInfo:
    names: tuple[str, ...]
    issuer: str
    not_after: datetime.datetime
    self_signed: bool


def cert_info(pem: bytes) -> CertInfo:
    """Names (DNS SANs), issuer, expiry of the first certificate of a PEM chain."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(
        names=names,
        issuer=cert.issuer.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        self_signed=cert.issuer == cert.subject,
    )


def default_names(hostname: str, domains: list[str]) -> list[str]:
    """[server] hostname plus mail., autoconfig. and mta-sts. of each domain."""
    names = [hostname.lower()]
    for domain in sorted(domains):
        for prefix in ("mail.", "autoconfig.", "mta-sts."):
            name = (prefix + domain).lower()
            if name not in names:
                names.append(name)
    return names


# --- when to order -------------------------------------------------------------------


class AcmeManager:
    """Keeps the certificate at ``cert_path`` / ``key_path`` issued and fresh.

    ``names`` is called at each check (the domains may change). ``applied``
    runs after a new certificate is written (reload it everywhere).
    """

    def __init__(
        self,
        *,
        cert_path: Path,
        key_path: Path,
        account_key_path: Path,
        names: Callable[[], Any],
        directory: str,
        email: str,
        challenge: str,
        renew_days: int,
        answers: Challenges,
        applied: Callable[[], None],
        ca_file: str | None = None,
        retry: float = BACKOFF_FIRST,
    ) -> None:
        self.retry = retry
        self.cert_path = cert_path
        self.key_path = key_path
        self.account_key_path = account_key_path
        self.names = names
        self.directory = directory
        self.email = email
        self.challenge = challenge
        self.renew_before = datetime.timedelta(days=renew_days)
        self.answers = answers
        self.applied = applied
        self.ca_file = ca_file
        self.backoff = 0.0
        self.last_error: str | None = None
        self.issued = 0
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    def due(self, names: list[str], now: datetime.datetime) -> str | None:
        """Why a new certificate is needed now, or None."""
        try:
            info = cert_info(self.cert_path.read_bytes())
        except (OSError, ValueError):
            return "no certificate"
        if info.self_signed:
            return "the certificate is self-signed"
        missing = set(names) - {n.lower() for n in info.names}
        if missing:
            return "not covered: " + ", ".join(sorted(missing))
        if info.not_after - now <= self.renew_before:
            return f"expires {info.not_after:%Y-%m-%d %H:%M} UTC"
        return None

    async def check(self, now: datetime.datetime | None = None) -> float:
        """Order a certificate if one is due; seconds until the next check."""
        async with self._lock:
            now = now or datetime.datetime.now(datetime.UTC)
            names = list(await self.names())
            reason = self.due(names, now)
            if reason is None:
                return CHECK_INTERVAL
            logs.event(log, logging.INFO, "acme_order", names=",".join(names), reason=reason)
            try:
                chain, key = await asyncio.to_thread(
                    issue, names, directory=self.directory, email=self.email,
                    account_key_path=self.account_key_path, challenge=self.challenge,
                    answers=self.answers, ca_file=self.ca_file,
                )
            except AcmeError as exc:
                self.last_error = str(exc)
                self.backoff = min(BACKOFF_MAX, max(self.retry, self.backoff * 2))
                logs.event(log, logging.ERROR, "acme_failed", reason=str(exc), retry_in=int(self.backoff))
                await self._write_status(now, self.backoff)
                return self.backoff
            # Key first, as net/tls.py does: a reload between the two writes
            # fails (mismatched pair) and keeps the old context. The writes
            # fsync: off the event loop.
            await asyncio.to_thread(_save, self.key_path, key)
            await asyncio.to_thread(_save, self.cert_path, chain)
            self.backoff = 0.0
            self.last_error = None
            info = cert_info(chain)
            logs.event(log, logging.INFO, "acme_issued", names=",".join(info.names), issuer=info.issuer,
                       not_after=info.not_after.isoformat())
            self.applied()
            # counted once applied: whoever watches the count (tests, status)
            # then finds the new certificate in use
            self.issued += 1
            await self._write_status(now, CHECK_INTERVAL)
            return CHECK_INTERVAL

    async def _write_status(self, now: datetime.datetime, retry_in: float) -> None:
        """The last order's outcome, for `mailyard tls status` (another process)."""
        status = {"last_attempt": now.isoformat(), "last_error": self.last_error,
                  "next_attempt": (now + datetime.timedelta(seconds=retry_in)).isoformat()}
        with contextlib.suppress(OSError):
            await asyncio.to_thread(_save, self.cert_path.parent / STATUS_FILE, json.dumps(status).encode())

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mailyard-acme")

    async def _run(self) -> None:
        while True:
            try:
                delay = await self.check()
            except Exception:
                log.exception("ACME check failed")
                delay = BACKOFF_FIRST
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None


def signal_supervisor() -> None:
    """Ask the supervisor of a multi-process server to reload every worker."""
    with contextlib.suppress(OSError):
        os.kill(os.getppid(), signal.SIGHUP)
