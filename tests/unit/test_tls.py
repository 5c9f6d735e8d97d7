"""Tests for net/tls.py: self-signed certificates, contexts, real handshakes, reload."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailyard.net import tls
from tests.waiting import wait_until_async


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    tls.create_self_signed("mail.example.test", cert, key)
    return cert, key


def handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str | None = None
) -> tuple[str | None, bytes | None, BaseException | None]:
    """Run a TLS handshake over a socketpair; return (version, peer cert DER, server error)."""
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    server_error: list[BaseException] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.sendall(s.recv(5).upper())
        except (ssl.SSLError, OSError) as exc:
            server_error.append(exc)

    t = threading.Thread(target=serve)
    t.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=server_hostname) as c:
            version = c.version()
            der = c.getpeercert(binary_form=True)
            c.sendall(b"hello")
            assert c.recv(5) == b"HELLO"
            return version, der, None
    except (ssl.SSLError, OSError):
        t.join(10)
        return None, None, server_error[0] if server_error else None
    finally:
        t.join(10)
        a.close()
        b.close()


def test_self_signed_files(pair: tuple[Path, Path]) -> None:
    cert_path, key_path = pair
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mail.example.test", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert validity.days >= 3650
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"


def test_rsa_option_and_ip_hostname(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    tls.create_self_signed("192.0.2.1", cert, key, key_type="rsa")
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    assert isinstance(c.public_key(), rsa.RSAPublicKey) and c.public_key().key_size == 2048
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "192.0.2.1" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    tls.server_context(cert, key)  # loads
    with pytest.raises(ValueError):
        tls.create_self_signed("x", cert, key, key_type="dsa")  # type: ignore[arg-type]


def test_ensure_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "sub" / "c.pem", tmp_path / "sub" / "k.pem"
    assert tls.ensure_certificate("h.test", cert, key) is True
    before = cert.read_bytes()
    assert tls.ensure_certificate("h.test", cert, key) is False
    assert cert.read_bytes() == before


def test_server_context_settings(pair: tuple[Path, Path]) -> None:
    ctx = tls.server_context(*pair)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION


def test_handshake_verified_tls12_and_13(pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = pair
    server = tls.server_context(cert, key)
    # a CA file of its own: the context is shared by its callers, and this test changes it
    own = tmp_path / "ca.pem"
    own.write_bytes(cert.read_bytes())
    client = tls.client_context(verify=True, cafile=own)
    client.verify_flags |= ssl.VERIFY_X509_STRICT  # as Python 3.13's default context does
    for host in ("mail.example.test", "localhost", "127.0.0.1"):
        version, der, err = handshake(server, client, host)
        assert err is None and version == "TLSv1.3", host
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    version, _, _ = handshake(server, client, "localhost")
    assert version == "TLSv1.2"


def test_client_contexts_are_shared_and_made_again_when_the_ca_file_changes(tmp_path: Path) -> None:
    # Making a context reads the system's CA store (about 20 ms of CPU): the
    # outbound queue asks for one per connection, on its event loop.
    assert tls.client_context(verify=False) is tls.client_context(verify=False)
    ca, key = tmp_path / "ca.pem", tmp_path / "ca.key"
    tls.create_self_signed("one.test", ca, key)
    first = tls.client_context(verify=True, cafile=ca)
    assert tls.client_context(verify=True, cafile=str(ca)) is first
    assert tls.client_context(verify=False) is not first
    assert handshake(tls.server_context(ca, key), first, "one.test")[0] is not None
    # a new CA in the file is trusted at the next connection, without a restart
    tls.create_self_signed("two.test", ca, key)
    second = tls.client_context(verify=True, cafile=ca)
    assert second is not first
    assert handshake(tls.server_context(ca, key), second, "two.test")[0] is not None


def test_wrong_hostname_fails_verification(pair: tuple[Path, Path]) -> None:
    client = tls.client_context(verify=True, cafile=pair[0])
    version, _, _ = handshake(tls.server_context(*pair), client, "other.example")
    assert version is None


def test_unverified_client_context(pair: tuple[Path, Path]) -> None:
    client = tls.client_context(verify=False)
    version, _, err = handshake(tls.server_context(*pair), client, "anything")
    assert version is not None and err is None


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls11_client_is_refused_by_server(pair: tuple[Path, Path]) -> None:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    # Let the *client* speak TLS 1.0/1.1 (OpenSSL 3 disables them at the default
    # security level), so the failure we see is the server's refusal.
    client.set_ciphers("DEFAULT:@SECLEVEL=0")
    client.minimum_version = ssl.TLSVersion.TLSv1
    client.maximum_version = ssl.TLSVersion.TLSv1_1
    version, _, server_error = handshake(tls.server_context(*pair), client)
    assert version is None
    assert isinstance(server_error, ssl.SSLError)
    assert "UNSUPPORTED_PROTOCOL" in str(server_error).upper()


def test_server_context_errors(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    with pytest.raises(OSError):
        tls.server_context(tmp_path / "missing.pem", tmp_path / "missing.key")
    other_cert, other_key = tmp_path / "o.pem", tmp_path / "o.key"
    tls.create_self_signed("o.test", other_cert, other_key)
    with pytest.raises(ssl.SSLError):
        tls.server_context(pair[0], other_key)  # key does not match cert


def _peer_cert(ctx: ssl.SSLContext, sni: str | None = "x.test") -> x509.Certificate:
    version, der, err = handshake(ctx, tls.client_context(verify=False), sni)
    assert der is not None, err
    return x509.load_der_x509_certificate(der)


def test_reload_swaps_context_and_bad_files_keep_old(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    tls.create_self_signed("one.test", cert, key)
    r = tls.ReloadableTLS(cert, key)
    first = r.context
    front = r.listener_context()
    old_cert = _peer_cert(front)

    # In-flight session: established on the old context before the reload.
    a, b = socket.socketpair()
    accepted: list[ssl.SSLSocket] = []
    t = threading.Thread(target=lambda: accepted.append(first.wrap_socket(a, server_side=True)))
    t.start()
    live = tls.client_context(verify=False).wrap_socket(b, server_hostname="x")
    t.join(10)

    tls.create_self_signed("two.test", cert, key)
    assert r.reload() == tls.ReloadResult(True)
    assert r.context is not first and r.generation == 2
    new_cert = _peer_cert(r.context)
    assert new_cert.subject != old_cert.subject
    # The fixed listener context now hands out the new certificate too.
    assert _peer_cert(front) == new_cert
    assert _peer_cert(front, sni=None) == new_cert  # also without SNI in the ClientHello

    # The in-flight session still works on its old context.
    live.sendall(b"ping")
    assert accepted[0].recv(4) == b"ping"
    assert accepted[0].context is first
    live.close()
    accepted[0].close()

    # A broken file: the reload fails, says why, and the old context stays.
    current = r.context
    cert.write_text("not a certificate\n")
    res = r.reload()
    assert not res.ok and res.error and r.last_error == res.error
    assert r.context is current
    assert _peer_cert(front) == new_cert
    key.unlink()
    assert not r.reload().ok and r.context is current


def test_reloadable_needs_valid_files_at_start(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        tls.ReloadableTLS(tmp_path / "no.pem", tmp_path / "no.key")


def test_sighup_triggers_reload(tmp_path: Path) -> None:
    import asyncio
    import signal

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    tls.create_self_signed("one.test", cert, key)
    r = tls.ReloadableTLS(cert, key)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        r.install_sighup(loop)
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            await wait_until_async(lambda: r.generation == 2, what="the SIGHUP handler to reload")
        finally:
            loop.remove_signal_handler(signal.SIGHUP)

    asyncio.run(main())
    assert r.generation == 2


def test_listener_context_with_asyncio_server_picks_up_reload(tmp_path: Path) -> None:
    """asyncio takes one SSLContext at start_server; reloads must still apply."""
    import asyncio

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    tls.create_self_signed("one.test", cert, key)
    r = tls.ReloadableTLS(cert, key)

    async def subject_cn() -> str:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls.client_context(verify=False), server_hostname="x"
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        await writer.wait_closed()
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def main() -> list[str]:
        nonlocal port
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=r.listener_context())
        port = server.sockets[0].getsockname()[1]
        try:
            first = await subject_cn()
            tls.create_self_signed("two.test", cert, key)
            assert r.reload().ok
            return [first, await subject_cn()]
        finally:
            server.close()
            await server.wait_closed()

    port = 0
    first, second = asyncio.run(main())
    assert "CN=one.test" in first and "CN=two.test" in second


def test_the_kind_of_a_failed_handshake() -> None:
    """A handshake's failure in a few words (a metric label, a log budget's
    kind): asyncio and uvloop end one past its timeout with
    ConnectionAbortedError, which the caller, knowing its timeout, tells
    from the kernel's abort; SSLEOFError is a client that hung up in the
    middle of its handshake."""
    tls_failure_reason = tls.tls_failure_reason
    assert tls_failure_reason(ssl.SSLEOFError(8, "EOF occurred in violation of protocol")) == "closed"
    aborted = ConnectionAbortedError("SSL handshake is taking longer than 30.0 seconds: aborting the connection")
    assert tls_failure_reason(aborted, 30.0, 30.0) == "timeout"
    assert tls_failure_reason(aborted, 29.99, 30.0) == "timeout"  # the loop's timer, a little early
    assert tls_failure_reason(aborted, 0.1, 30.0) == "closed"
    assert tls_failure_reason(TimeoutError()) == "timeout"
    assert tls_failure_reason(ConnectionResetError()) == "closed"
    assert tls_failure_reason(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")) == "protocol"
    assert tls_failure_reason(OSError(5, "I/O error")) == "error"


def test_listener_context_first_asked_after_a_broken_renewal_still_serves(tmp_path: Path) -> None:
    """A process whose first implicit-TLS connection comes after a renewal
    left broken files (its reload failed, "keeping the previous certificate")
    must still get a listener context, one that presents that certificate."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    tls.create_self_signed("one.test", cert, key)
    r = tls.ReloadableTLS(cert, key)
    cert.write_text("not a certificate\n")
    assert not r.reload().ok
    front = r.listener_context()  # the first ask, after the files broke
    assert isinstance(front, ssl.SSLContext) and r.generation == 1
