"""ACME (RFC 8555) against Pebble, the ACME test server (Debian package
``pebble``), on loopback: HTTP-01 on the webmail's HTTP port, TLS-ALPN-01
(RFC 8737) on the HTTPS port, a failed challenge with back-off, and a
renewal that `openssl s_client` then sees on every TLS port.

Pebble resolves the names to validate through the test DNS server
(tests/integration/multihost.py) and connects to our ports through its
``httpPort`` / ``tlsPort`` settings; PEBBLE_VA_ALWAYS_VALID=0 makes it
really validate.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import socket
import ssl
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from mailyard.config import Config
from mailyard.net.acme import BACKOFF_FIRST, cert_info
from mailyard.net.tls import create_self_signed
from tests.conftest import RunningServer, make_test_config, require_program
from tests.integration.multihost import DNSServer
from tests.integration.serve_process import ServeProcess
from tests.ports import free_port
from tests.waiting import wait_until

NAMES = ["mx.example.test", "mail.example.test", "autoconfig.example.test", "mta-sts.example.test"]
TLS_PORTS = {  # port name: openssl s_client -starttls protocol (None: implicit TLS)
    "smtp": "smtp", "submission": "smtp", "smtps": None, "imap": "imap", "imaps": None,
    "pop3": "pop3", "pop3s": None, "https": None,
}


class Pebble:
    """A Pebble process on loopback validating against ``http_port`` / ``tls_port``."""

    def __init__(self, tmp: Path, dns: DNSServer, http_port: int, tls_port: int) -> None:
        binary = require_program("pebble", "pebble")
        tmp.mkdir(parents=True, exist_ok=True)
        self.ca = tmp / "pebble-api.pem"
        key = tmp / "pebble-api.key"
        create_self_signed("localhost", self.ca, key)
        self.port = free_port()
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{free_port()}",
            "certificate": str(self.ca), "privateKey": str(key),
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}
        (tmp / "pebble.json").write_text(json.dumps(config))
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_VA_ALWAYS_VALID": "0",
               "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
        self.log = tmp / "pebble.log"
        self.proc = subprocess.Popen(
            [binary, "-config", str(tmp / "pebble.json"), "-dnsserver", dns.address],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=env,
        )
        self.directory = f"https://localhost:{self.port}/dir"

        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                assert self.proc.poll() is None, self.log.read_text()
                return False

        wait_until(up, timeout=30, what="pebble did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    server = DNSServer()
    for name in NAMES:
        server.add(name, "A", "127.0.0.1")
    yield server
    server.stop()


def start_acme_server(tmp_path: Path, dns: DNSServer, challenge: str) -> tuple[RunningServer, Pebble]:
    cfg = make_test_config()
    for name in ("smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "http", "https"):
        setattr(cfg.ports, name, free_port())
    cfg.metrics.listen = ""
    pebble = Pebble(tmp_path / "pebble", dns, cfg.ports.http, cfg.ports.https)
    data = tmp_path / "data"
    data.mkdir()
    (data / "acme-ca.pem").write_bytes(pebble.ca.read_bytes())
    cfg.tls.acme = True
    cfg.tls.acme_directory = pebble.directory
    cfg.tls.acme_ca_file = "acme-ca.pem"
    cfg.tls.acme_email = "postmaster@example.test"
    cfg.tls.acme_challenge = challenge
    (data / "config.toml").write_text(cfg.to_toml())  # for `mailyard tls status`
    server = RunningServer(data, cfg, ephemeral_ports=False)
    try:
        server.start()
    except BaseException:
        pebble.stop()
        raise
    return server, pebble


def served_certificate(port: int, starttls: str | None) -> x509.Certificate:
    """The certificate `openssl s_client` receives on ``port``."""
    openssl = require_program("openssl", "openssl")
    args = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "mx.example.test"]
    if starttls:
        args += ["-starttls", starttls]
    out = subprocess.run(args, input=b"", capture_output=True, timeout=30).stdout.decode("latin-1")
    match = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", out, re.S)
    assert match, out
    return x509.load_pem_x509_certificate(match.group(0).encode())


def tls_status(data_dir: Path) -> str:
    """`mailyard tls status` of a data directory (its config.toml is the server's)."""
    out = subprocess.run([sys.executable, "-m", "mailyard", "--data", str(data_dir), "tls", "status"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def assert_served_everywhere(server: RunningServer, cert_file: Path) -> None:
    expected = x509.load_pem_x509_certificate(cert_file.read_bytes())
    for name, starttls in TLS_PORTS.items():
        got = served_certificate(server.port(name), starttls)
        assert got.serial_number == expected.serial_number, (name, got.issuer, expected.issuer)


def test_http01_issue_and_renew_seen_on_every_tls_port(tmp_path: Path, dns: DNSServer) -> None:
    server, pebble = start_acme_server(tmp_path, dns, "http-01")
    try:
        assert server.server is not None
        acme = server.server.acme
        assert acme is not None
        # The manager orders at start: the placeholder certificate is self-signed.
        wait_until(lambda: acme.issued >= 1 or acme.last_error, timeout=60, what="no order")
        assert acme.last_error is None, acme.last_error
        cert_file = server.data_dir / "tls" / "acme" / "cert.pem"
        first = cert_info(cert_file.read_bytes())
        assert sorted(first.names) == sorted(NAMES)
        assert not first.self_signed and "Pebble" in first.issuer
        for name in ("cert.pem", "key.pem", "account.key"):
            mode = stat.S_IMODE((cert_file.parent / name).stat().st_mode)
            assert mode == 0o600, (name, oct(mode))
        assert server.server.tls is not None and not server.server.tls.self_signed
        assert_served_everywhere(server, cert_file)
        status = tls_status(server.data_dir)
        print(status)
        for name in NAMES:
            assert re.search(rf"^{re.escape(name)} +CN=Pebble Intermediate CA \w+ +"
                             rf"{first.not_after:%Y-%m-%d %H:%M} UTC", status, re.M), status
        assert "last ACME order" in status and ": ok;" in status
        first_serial = x509.load_pem_x509_certificate(cert_file.read_bytes()).serial_number

        # Not due yet: a check orders nothing.
        assert server.call(acme.check()) > 0 and acme.issued == 1
        # 29 days before expiry: due (renew 30 days before), renewed and applied.
        near_end = first.not_after - datetime.timedelta(days=29)
        server.call(acme.check(now=near_end))
        assert acme.issued == 2, acme.last_error
        renewed = x509.load_pem_x509_certificate(cert_file.read_bytes())
        assert renewed.serial_number != first_serial
        assert_served_everywhere(server, cert_file)
        print(f"issued twice by {first.issuer}; new serial seen on {len(TLS_PORTS)} TLS ports")
    finally:
        server.stop()
        pebble.stop()


def test_failed_challenge_backs_off_and_keeps_serving(tmp_path: Path, dns: DNSServer) -> None:
    # mta-sts.example.test points at an address where nothing answers.
    dns.remove("mta-sts.example.test")
    dns.add("mta-sts.example.test", "A", "127.0.0.9")
    server, pebble = start_acme_server(tmp_path, dns, "http-01")
    try:
        assert server.server is not None
        acme = server.server.acme
        assert acme is not None
        wait_until(lambda: acme.issued >= 1 or acme.last_error, timeout=60, what="no order")
        assert acme.issued == 0
        assert acme.last_error is not None and "mta-sts.example.test" in acme.last_error, acme.last_error
        assert acme.backoff == BACKOFF_FIRST
        print("failed order:", acme.last_error)
        # The self-signed placeholder stays in service.
        assert server.server.tls is not None and server.server.tls.self_signed
        assert served_certificate(server.port("imaps"), None).issuer.rfc4514_string().startswith(
            "O=mailyard self-signed")
        # A second failure doubles the back-off.
        assert server.call(acme.check()) == 2 * BACKOFF_FIRST
        # Once the name points here, the next attempt succeeds.
        dns.remove("mta-sts.example.test")
        dns.add("mta-sts.example.test", "A", "127.0.0.1")
        server.call(acme.check())
        assert acme.issued == 1 and acme.last_error is None and acme.backoff == 0
        assert_served_everywhere(server, server.data_dir / "tls" / "acme" / "cert.pem")
    finally:
        server.stop()
        pebble.stop()


def test_tls_alpn01_on_the_https_port(tmp_path: Path, dns: DNSServer) -> None:
    server, pebble = start_acme_server(tmp_path, dns, "tls-alpn-01")
    try:
        assert server.server is not None
        acme = server.server.acme
        assert acme is not None
        wait_until(lambda: acme.issued >= 1 or acme.last_error, timeout=60, what="no order")
        assert acme.last_error is None, acme.last_error
        cert_file = server.data_dir / "tls" / "acme" / "cert.pem"
        assert sorted(cert_info(cert_file.read_bytes()).names) == sorted(NAMES)
        assert_served_everywhere(server, cert_file)
        # With a real certificate, plain HTTP redirects to HTTPS.
        request = urllib.request.Request(f"http://127.0.0.1:{server.port('http')}/login?x=1",
                                         headers={"Host": "mail.example.test"})

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: object, **kwargs: object) -> None:
                return None

        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.build_opener(NoRedirect).open(request, timeout=10)
        assert caught.value.code == 301
        assert caught.value.headers["Location"] == f"https://mail.example.test:{server.port('https')}/login?x=1"
    finally:
        server.stop()
        pebble.stop()


def certificates_by_worker(proc: ServeProcess, port: int, tries: int = 60) -> dict[int, int]:
    """The serial each worker's imaps listener presents: TLS connections until every worker held one.

    The connections stay open until then: which worker takes a connection
    is the kernel's choice, and the spreading over the workers
    (net/accept.py) sees only the connections they hold."""
    workers = set(proc.worker_pids())
    found: dict[int, int] = {}
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with contextlib.ExitStack() as held:
        for _ in range(tries):
            raw = held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            tls = held.enter_context(ctx.wrap_socket(raw, server_hostname="mx.example.test"))
            der = tls.getpeercert(binary_form=True)
            pid = proc.serving_pid(tls)
            if pid in workers and pid not in found:
                found[pid] = x509.load_der_x509_certificate(der).serial_number
            if len(found) == len(workers):
                break
    assert len(found) == len(workers), (found, workers)
    return found


def test_every_worker_applies_the_new_certificate(tmp_path: Path, dns: DNSServer) -> None:
    # One name fails at first, so both workers are up with the self-signed
    # placeholder before the order that succeeds (retried after 1 s, 2 s, ...).
    dns.remove("mta-sts.example.test")
    http, https, imaps = free_port(), free_port(), free_port()
    pebble = Pebble(tmp_path / "pebble", dns, http, https)
    data = tmp_path / "data"
    data.mkdir()
    (data / "acme-ca.pem").write_bytes(pebble.ca.read_bytes())

    def configure(cfg: Config) -> None:
        cfg.server.workers = 2
        cfg.server.hostname = "mx.example.test"
        cfg.ports.http, cfg.ports.https, cfg.ports.imaps = http, https, imaps
        cfg.tls.acme = True
        cfg.tls.acme_directory = pebble.directory
        cfg.tls.acme_ca_file = "acme-ca.pem"
        cfg.tls.acme_names = NAMES
        cfg.tls.acme_retry = 1.0

    try:
        proc = ServeProcess(data, configure)
    except BaseException:
        pebble.stop()
        raise
    try:
        wait_until(lambda: len(proc.worker_pids()) == 2, 30, "both workers to start")
        status = data / "tls" / "acme" / "status.json"
        wait_until(lambda: status.exists(), 60, "the first (failing) order")
        assert "mta-sts.example.test" in json.loads(status.read_text())["last_error"]
        before = certificates_by_worker(proc, imaps)
        cert_file = data / "tls" / "acme" / "cert.pem"
        assert cert_info(cert_file.read_bytes()).self_signed
        dns.add("mta-sts.example.test", "A", "127.0.0.1")
        wait_until(lambda: not cert_info(cert_file.read_bytes()).self_signed, 60, "the certificate")
        issued = x509.load_pem_x509_certificate(cert_file.read_bytes()).serial_number

        def all_new() -> bool:
            return set(certificates_by_worker(proc, imaps).values()) == {issued}

        wait_until(all_new, 30, "every worker to present the new certificate")
        print(f"workers {sorted(before)}: self-signed before, serial {issued:x} after; {proc.tracebacks()!r}")
        assert "Traceback" not in proc.tracebacks()
    finally:
        proc.stop()
        pebble.stop()


def test_tls_status_without_acme(tmp_path: Path) -> None:
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "mailyard", "--data", str(data), "init", "--domain", "example.test"],
                   check=True, capture_output=True)
    status = tls_status(data)
    assert re.search(r"^certificate .*/tls/cert\.pem \(file\)$", status, re.M), status
    assert re.search(r"^localhost +O=mailyard self-signed,CN=\S+ \(self-signed\) +\d{4}-\d\d-\d\d", status,
                     re.M), status
    assert "ACME" not in status
