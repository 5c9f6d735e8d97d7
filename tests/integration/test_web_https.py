"""The webmail's https listener: the server's certificate, HSTS (RFC 6797)
and the HTTP to HTTPS redirect only with a real (CA-issued) certificate,
Secure cookies on HTTPS only."""

from __future__ import annotations

import datetime
import re
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import USERS, RunningServer

httpx = pytest.importorskip("httpx")

ALICE = "alice@example.test"


def write_ca_issued(data: Path) -> Path:
    """A CA and a leaf for mail.example.test signed by it; returns the CA file."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.test")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("mail.example.test")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    data.mkdir(parents=True, exist_ok=True)
    (data / "real.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (data / "real.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    (data / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return data / "ca.pem"


def login(client: httpx.Client) -> httpx.Response:
    token = re.search(r'name="login_token" value="([^"]+)"', client.get("/login").text).group(1)
    return client.post("/login", data={"username": ALICE, "password": USERS[ALICE], "login_token": token})


def session_cookie(r: httpx.Response) -> str:
    return [v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("mailyard_session=")][0]


def test_self_signed_https_without_hsts_or_redirect(mailserver: RunningServer) -> None:
    https = httpx.Client(base_url=f"https://127.0.0.1:{mailserver.port('https')}", verify=False,
                         follow_redirects=False, timeout=30)
    r = https.get("/login")
    assert r.status_code == 200 and "strict-transport-security" not in r.headers
    assert "Secure" in session_cookie(login(https))
    plain = httpx.Client(base_url=f"http://127.0.0.1:{mailserver.port('http')}", follow_redirects=False, timeout=30)
    assert plain.get("/login").status_code == 200  # no redirect to a certificate browsers refuse
    assert "Secure" not in session_cookie(login(plain))


def test_real_certificate_redirects_and_sends_hsts(make_server: Callable[..., RunningServer],
                                                   tmp_path: Path) -> None:
    def configure(cfg) -> None:  # noqa: ANN001
        cfg.tls.cert, cfg.tls.key = "real.pem", "real.key"

    ca = write_ca_issued(tmp_path / "data0")  # the data directory make_server uses first
    server = make_server(configure=configure)
    port = server.port("https")
    # The https port presents the configured chain: it verifies against the CA.
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
            ctx.wrap_socket(raw, server_hostname="mail.example.test") as tls:
        assert tls.getpeercert()["subject"] == ((("commonName", "mail.example.test"),),)
    r = httpx.get(f"https://127.0.0.1:{port}/login", verify=False, timeout=30)
    assert r.status_code == 200 and r.headers["strict-transport-security"] == "max-age=31536000"
    plain = httpx.Client(base_url=f"http://127.0.0.1:{server.port('http')}", follow_redirects=False, timeout=30,
                         headers={"Host": "mail.example.test:8080"})
    r = plain.get("/box/1?page=2")
    assert r.status_code == 301 and r.headers["location"] == f"https://mail.example.test:{port}/box/1?page=2"
    r = plain.post("/login", data={"x": "1"})
    assert r.status_code == 308 and r.headers["location"] == f"https://mail.example.test:{port}/login"
    # A Host header that is not a host name is not put into the Location.
    r = plain.get("/", headers={"Host": "evil.example/path@x"})
    assert r.headers["location"] == f"https://mx.example.test:{port}/"
    assert "strict-transport-security" not in r.headers  # never over plain HTTP (RFC 6797 7.2)


def test_a_uvicorn_protocol_made_with_other_arguments_stops_the_https_start(
    mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The https accept loop makes uvicorn's protocol as uvicorn's own
    Server.startup does (web/service.py): a uvicorn whose protocol takes
    other arguments stops the start with an error naming its version, rather
    than failing each connection, and the socket the service bound for
    itself is closed."""
    from mailyard.web import service as web_service

    real = web_service.limited_h11

    def changed(limits, name):  # noqa: ANN001, ANN202
        class Changed(real(limits, name)):  # type: ignore[misc, valid-type]
            def __init__(self, config, server_state, app_state, transport_options, _loop=None) -> None:  # noqa: ANN001
                super().__init__(config, server_state, app_state, _loop)

        return Changed

    monkeypatch.setattr(web_service, "limited_h11", changed)
    running = mailserver.server
    assert running is not None
    https = web_service.HTTPService(running.services, "127.0.0.1", 0, tls=running.tls)
    try:
        with pytest.raises(RuntimeError, match=r"uvicorn \S+ makes its protocol with other arguments") as failed:
            mailserver.call(https.start())
        # the port it bound is closed by the service, not by the garbage
        # collector (the error's traceback, alive here, holds the socket)
        assert failed.value.__traceback__ is not None
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", https.bound_port), timeout=10).close()
    finally:
        mailserver.call(https.stop())
