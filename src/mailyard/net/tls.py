"""TLS set-up shared by every listener: certificates, contexts, reload on SIGHUP.

- `create_self_signed` makes the development certificate `mailyard init`
  writes when the config names none (``cryptography``; EC P-256 by default).
- `server_context` builds the server `ssl.SSLContext`: TLS 1.2 minimum
  (RFC 8996 deprecates 1.0/1.1; RFC 8314 section 4.1 asks for current TLS),
  the default context's cipher list, no compression, no renegotiation.
- `client_context` is for the outbound SMTP client.
- `ReloadableTLS` holds the current server context and swaps it when the
  certificate files change (SIGHUP). A failed reload keeps the old context.
  Sessions already running keep the context they were handshaken with; new
  handshakes use the new one. For listeners that were handed one context at
  start-up (implicit TLS: asyncio.start_server(ssl=...)), `listener_context`
  is a fixed front context whose SNI callback switches each new connection
  to the current context, so those pick up reloads too.

Nothing here opens sockets; reading and writing the PEM files is the only I/O.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import signal
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .. import logs, metrics
from ..fsutil import write_atomic

__all__ = [
    "DEV_CERT_VALIDITY_DAYS",
    "ReloadResult",
    "ReloadableTLS",
    "client_context",
    "create_self_signed",
    "ensure_certificate",
    "log_tls_failure",
    "server_context",
]

log = logging.getLogger("mailyard.net.tls")

DEV_CERT_VALIDITY_DAYS = 3650  # 10 years: a development certificate


# --- failed handshakes -------------------------------------------------------------

# A client may fail TLS handshakes as fast as it connects (STARTTLS and then
# garbage, or garbage to an implicit-TLS port): the "tls_failed" lines of one
# listener and reason are bounded per process (logs.EventBudget's default);
# the metric counts every failure.
_TLS_FAILURES = logs.EventBudget()


def tls_failure_reason(exc: BaseException, waited: float = 0.0, timeout: float | None = None) -> str:
    """The kind of a handshake that failed with ``exc`` after ``waited``
    seconds of its ``timeout``, one of a few words (a log budget's kind and
    a metric label, so never the exception's text): ``timeout``, ``closed``
    (the client went away, or hung up in the middle: SSLEOFError),
    ``protocol`` (TLS refused what it sent) or ``error``.

    asyncio (3.11) and uvloop end a handshake that runs past its
    ``ssl_handshake_timeout`` with ConnectionAbortedError ("SSL handshake is
    taking longer than..."), which nothing else raises there but a socket
    aborted by the kernel: so the caller, which knows its timeout, says
    how long it waited, and an abort after at least half of it (the loop's
    timer may fire a little early by the caller's clock) is the timeout."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionAbortedError) and timeout is not None and waited >= timeout / 2:
        return "timeout"
    if isinstance(exc, ssl.SSLEOFError):
        return "closed"
    if isinstance(exc, ssl.SSLError):
        return "protocol"
    if isinstance(exc, ConnectionError):
        return "closed"
    return "error"


def log_tls_failure(logger: logging.Logger, proto: str, ip: str, exc: BaseException,
                    waited: float = 0.0, timeout: float | None = None) -> None:
    """Count a failed TLS handshake, and log it within the budget
    (``reason`` the kind, `tls_failure_reason`; ``detail`` what TLS said).
    A client that connects and goes away without a handshake is what load
    balancers and monitors do to check an implicit-TLS port is up: a
    ``closed`` one is counted but logged at DEBUG only."""
    reason = tls_failure_reason(exc, waited, timeout)
    metrics.count_tls_failure(proto, reason)
    level = logging.DEBUG if reason == "closed" else logging.INFO
    _TLS_FAILURES.event(logger, level, "tls_failed", (proto, reason),
                        proto=proto, ip=ip, reason=reason, detail=str(exc) or type(exc).__name__)


# --- certificates ------------------------------------------------------------------


def create_self_signed(
    hostname: str,
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    *,
    key_type: Literal["ec", "rsa"] = "ec",
    days: int = DEV_CERT_VALIDITY_DAYS,
    now: datetime.datetime | None = None,
) -> None:
    """Write a self-signed certificate and its private key as PEM files.

    SAN: ``hostname`` (DNS name, or IP if it is one), ``localhost``,
    ``127.0.0.1`` and ``::1``. Key: EC P-256 (default) or RSA 2048, PKCS#8
    unencrypted, file mode 0600. Validity: ``days`` (10 years) from ``now``
    (backdated one hour for clock skew). Serves as its own trust anchor, so a
    client can verify it with ``cafile=cert_path``.
    """
    if key_type == "ec":
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = ec.generate_private_key(
            ec.SECP256R1()
        )
    elif key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise ValueError(f"key_type must be 'ec' or 'rsa', not {key_type!r}")
    now = now or datetime.datetime.now(datetime.UTC)

    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in (hostname, "localhost", "127.0.0.1", "::1"):
        if not name or name.lower() in seen:
            continue
        seen.add(name.lower())
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailyard self-signed"),
        ]
    )
    public = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    key_usage = x509.KeyUsage(
        digital_signature=True,
        key_encipherment=key_type == "rsa",  # RSA key transport; not used by EC
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for path in (Path(key_path), Path(cert_path)):
        path.parent.mkdir(parents=True, exist_ok=True)
    # Key first: if we stop between the two writes, the old cert no longer
    # matches and a reload fails loudly instead of serving a wrong pair.
    write_atomic(key_path, key_pem, mode=0o600)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def ensure_certificate(
    hostname: str, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]
) -> bool:
    """Create a self-signed pair unless both files exist; True if one was created."""
    if Path(cert_path).exists() and Path(key_path).exists():
        return False
    create_self_signed(hostname, cert_path, key_path)
    return True


# --- contexts ----------------------------------------------------------------------


def server_context(
    cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]
) -> ssl.SSLContext:
    """A server context with the certificate chain and key loaded.

    Raises `ssl.SSLError` / `OSError` if the files are missing, unreadable,
    or the key does not match the certificate.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _harden_server(ctx)
    ctx.load_cert_chain(os.fspath(cert_path), os.fspath(key_path))
    return ctx


def _harden_server(ctx: ssl.SSLContext) -> None:
    # RFC 8996: TLS 1.0 and 1.1 are deprecated; RFC 8314 section 4.1.
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # The default context's cipher list (forward-secret AEAD first) is kept.
    ctx.options |= ssl.OP_NO_COMPRESSION  # CRIME
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_SINGLE_ECDH_USE
    if hasattr(ssl, "OP_NO_RENEGOTIATION"):
        ctx.options |= ssl.OP_NO_RENEGOTIATION  # client-initiated renegotiation DoS
    # Mail clients do not present certificates; we do not ask for one.
    ctx.verify_mode = ssl.CERT_NONE


# Client contexts are kept and shared by connections: making one reads the
# system's CA certificates (about 20 ms of CPU each time, on the event loop
# of the outbound queue, once per connection). An entry is made again when
# its CA file changes, and after CLIENT_CONTEXT_LIFETIME seconds, so an
# update of the system's CA store is seen without a restart.
CLIENT_CONTEXT_LIFETIME = 600.0
_CLIENT_CONTEXTS_MAX = 32
_client_contexts: dict[tuple[object, ...], tuple[float, ssl.SSLContext]] = {}
_client_contexts_lock = threading.Lock()


def client_context(
    verify: bool = True,
    cafile: str | os.PathLike[str] | None = None,
    *,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
) -> ssl.SSLContext:
    """A client context for outbound SMTP (and tests), shared: callers must
    not change it.

    ``verify`` True checks the chain (system CAs, or ``cafile``) and the host
    name. False is for opportunistic STARTTLS to MX hosts (RFC 3207 section
    4.1 / RFC 7435): encryption without authentication beats plaintext.
    """
    path = os.fspath(cafile) if cafile is not None else None
    stamp: tuple[int, int, int] | None = None
    if path is not None:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    key = (verify, path, stamp, minimum_version)
    now = time.monotonic()
    with _client_contexts_lock:
        kept = _client_contexts.get(key)
        if kept is not None and now - kept[0] < CLIENT_CONTEXT_LIFETIME:
            return kept[1]
    ctx = _new_client_context(verify, path, minimum_version)
    with _client_contexts_lock:
        if len(_client_contexts) >= _CLIENT_CONTEXTS_MAX:
            _client_contexts.clear()
        _client_contexts[key] = (now, ctx)
    return ctx


def _new_client_context(verify: bool, cafile: str | None, minimum_version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=cafile
    )
    ctx.minimum_version = minimum_version
    ctx.options |= ssl.OP_NO_COMPRESSION
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _is_self_signed(cert_path: str) -> bool:
    """True when the first certificate of the file names itself as issuer."""
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except (OSError, ValueError):
        return True
    return cert.issuer == cert.subject


# --- reloadable holder ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    error: str | None = None


class ReloadableTLS:
    """The current server context for one certificate/key pair, swappable at run time.

    ``context`` is what STARTTLS should use (read it at the moment of the
    upgrade). `listener_context` is the context to hand to a listener that
    takes one context at start (implicit TLS); it delegates each new
    handshake to the current ``context``.
    """

    def __init__(
        self,
        cert_path: str | os.PathLike[str],
        key_path: str | os.PathLike[str],
        *,
        factory: Callable[[str, str], ssl.SSLContext] | None = None,
    ) -> None:
        self.cert_path = os.fspath(cert_path)
        self.key_path = os.fspath(key_path)
        self._factory = factory or server_context
        self._lock = threading.Lock()
        # The first load must succeed: there is no old context to keep.
        self._stamps = self._file_stamps()
        self._context = self._factory(self.cert_path, self.key_path)
        self.generation = 1
        self.last_error: str | None = None
        self._front: ssl.SSLContext | None = None
        # Whether the loaded certificate is its own issuer (the development
        # one): the webmail then neither redirects to HTTPS nor sends HSTS.
        self.self_signed = _is_self_signed(self.cert_path)
        # Called with the SNI name of each handshake of ``listener_context``;
        # a context it returns is used instead of the current one (ACME
        # TLS-ALPN-01, RFC 8737 section 3: the validation certificate).
        self.sni_hook: Callable[[str | None], ssl.SSLContext | None] | None = None
        self.listener_context()

    @property
    def context(self) -> ssl.SSLContext:
        return self._context

    def _file_stamps(self) -> tuple:
        """What identifies the files' contents on disk (device, inode, size,
        modification time of each): a renewal changes them."""
        out = []
        for path in (self.cert_path, self.key_path):
            try:
                st = os.stat(path)
                out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    def reload(self) -> ReloadResult:
        """Re-read certificate and key; keep the old context if that fails."""
        stamps = self._file_stamps()
        try:
            new = self._factory(self.cert_path, self.key_path)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error(
                "TLS reload failed, keeping the previous certificate (%s, %s): %s",
                self.cert_path,
                self.key_path,
                self.last_error,
            )
            return ReloadResult(False, self.last_error)
        with self._lock:
            self._context = new
            self.generation += 1
            self._stamps = stamps
        self.self_signed = _is_self_signed(self.cert_path)
        self.last_error = None
        log.info(
            "TLS certificate reloaded from %s (generation %d)", self.cert_path, self.generation
        )
        return ReloadResult(True)

    def listener_context(self) -> ssl.SSLContext:
        """A fixed context whose handshakes use the current ``context``.

        OpenSSL calls the SNI callback early in every ClientHello (with
        ``server_name`` None if the client sent none); switching
        ``ssl_object.context`` there makes the handshake use the new
        certificate and settings (Python ssl docs, SSLContext.sni_callback).
        It is made once, at start, from the files of the first load: made
        at a process's first implicit-TLS connection instead, after a
        renewal had left broken files, it could not be made, and every such
        connection failed while the log said the previous certificate was
        kept.
        """
        if self._front is None:
            front = self._factory(self.cert_path, self.key_path)

            def _switch(obj: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: object) -> None:
                hook = self.sni_hook
                current = (hook(name) if hook is not None else None) or self._context
                if obj.context is not current:
                    obj.context = current
                return None

            front.sni_callback = _switch
            self._front = front
        return self._front

    def install_sighup(self, loop: object | None = None) -> None:
        """Reload on SIGHUP (Unix). With an asyncio loop, via loop.add_signal_handler."""
        if loop is not None and hasattr(loop, "add_signal_handler"):
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        else:
            signal.signal(signal.SIGHUP, lambda _s, _f: self.reload())
        # A SIGHUP that came between the first load and now went unheard (a
        # worker ignores it while it starts): files changed since are loaded.
        if self._file_stamps() != self._stamps:
            self.reload()
