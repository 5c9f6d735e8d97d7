"""delivery.relay_ca_file: a smarthost whose certificate a private CA signed
is trusted through that CA, and only through it. The smarthost is a second
mailyard server (its submission port, STARTTLS, AUTH) with a certificate for
127.0.0.1 issued by a test CA made here."""

from __future__ import annotations

import datetime
import ipaddress
import smtplib
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailyard.config import Config
from mailyard.store.sqlite import SQLiteStore
from tests.conftest import USERS, RunningServer
from tests.waiting import wait_until

ALICE = "alice@example.test"
CAROL = "carol@remote.test"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca_and_leaf(directory: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, leaf certificate, leaf key) PEM files; the leaf is for
    IP 127.0.0.1 and localhost, signed by the CA."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("mailyard test CA")).issuer_name(_name("mailyard test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(_name("smarthost.test")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "smarthost.pem", directory / "smarthost.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_file, cert_file, key_file


@pytest.fixture
def smarthost(make_server: Callable[..., RunningServer], tmp_path: Path) -> tuple[RunningServer, Path]:
    ca_file, cert, key = make_ca_and_leaf(tmp_path / "pki")

    def configure(cfg: Config) -> None:
        cfg.server.hostname = "smarthost.test"
        cfg.tls.cert, cfg.tls.key = str(cert), str(key)

    async def seed(store: SQLiteStore) -> None:
        await store.add_domain("remote.test")
        await store.add_account(CAROL, "!locked")

    return make_server(configure=configure, seed=seed), ca_file


def sender(make_server: Callable[..., RunningServer], host: RunningServer, ca_file: str) -> RunningServer:
    def configure(cfg: Config) -> None:
        d = cfg.delivery
        d.relay_host, d.relay_port, d.relay_tls = "127.0.0.1", host.port("submission"), "starttls"
        d.relay_username, d.relay_password = ALICE, USERS[ALICE]
        d.relay_ca_file = ca_file
        d.retry_initial = 3600.0

    return make_server(configure=configure)


def submit(server: RunningServer, subject: str) -> None:
    ctx = ssl.create_default_context(cafile=str(server.data_dir / "tls" / "cert.pem"))
    with smtplib.SMTP(server.host, server.port("submission"), timeout=10) as s:
        s.starttls(context=ctx)
        s.login(ALICE, USERS[ALICE])
        s.sendmail(ALICE, [CAROL], f"From: {ALICE}\r\nTo: {CAROL}\r\nSubject: {subject}\r\n\r\nhi\r\n".encode())


def test_smarthost_certificate_from_a_private_ca(make_server, smarthost) -> None:  # noqa: ANN001
    host, ca_file = smarthost
    a = sender(make_server, host, str(ca_file))
    submit(a, "via the smarthost")
    wait_until(lambda: host.messages(CAROL), timeout=30, what="delivery through the smarthost")
    (raw,) = host.messages(CAROL)
    assert b"Subject: via the smarthost" in raw and b"ESMTPSA" in raw  # STARTTLS and AUTH on the hop


def test_smarthost_certificate_not_trusted_without_the_ca(make_server, smarthost, tmp_path: Path) -> None:  # noqa: ANN001
    host, _ca_file = smarthost
    other_ca, _c, _k = make_ca_and_leaf(tmp_path / "other-pki")  # a CA that did not sign the smarthost
    a = sender(make_server, host, str(other_ca))
    submit(a, "must not go")

    def deferred() -> str:
        entries = a.call(a.store.queue_list())
        replies = [r.last_reply or "" for e in entries for r in e.recipients]
        return next((r for r in replies if r), "")

    reply = wait_until(deferred, timeout=30, what="a deferred attempt")
    assert "certificate" in reply.lower(), reply
    assert host.messages(CAROL) == []


def test_unreadable_relay_ca_file_is_a_config_error(make_server, tmp_path: Path) -> None:  # noqa: ANN001
    from mailyard.config import ConfigError

    def configure(cfg: Config) -> None:
        cfg.delivery.relay_host = "127.0.0.1"
        cfg.delivery.relay_ca_file = str(tmp_path / "missing.pem")

    with pytest.raises(ConfigError, match="relay_ca_file"):
        make_server(configure=configure)
