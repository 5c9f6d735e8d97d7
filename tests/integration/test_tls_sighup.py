"""`mailyard serve` re-reads its certificate on SIGHUP (as after an ACME
renewal): new connections on implicit-TLS and STARTTLS ports get the new
certificate, a session opened before keeps working, and a broken new pair
leaves the old certificate in use."""

from __future__ import annotations

import hashlib
import poplib
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mailyard.net.tls import create_self_signed
from tests.ports import free_port
from tests.waiting import wait_until


def fingerprint(port: int, starttls_pop3: bool = False) -> str:
    """SHA-256 of the certificate the server presents now."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        if starttls_pop3:
            f = raw.makefile("rb")
            f.readline()
            raw.sendall(b"STLS\r\n")
            assert f.readline().startswith(b"+OK")
        with ctx.wrap_socket(raw, server_hostname="mx.example.test") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


WORKERS = 2

class ServerLog:
    """The output of a ``mailyard serve`` subprocess, read by a thread, so a
    test can wait for a line (the server's own report of an event)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._stdout = proc.stdout
        self._proc = proc
        self._lines: list[bytes] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._stdout:
            with self._lock:
                self._lines.append(line)

    def text(self) -> bytes:
        with self._lock:
            return b"".join(self._lines)

    def count(self, needle: bytes) -> int:
        with self._lock:
            return sum(needle in line for line in self._lines)

    def wait_for(self, needle: bytes, times: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``needle`` has been in ``times`` lines of the output;
        fail at once if the server exits first."""
        wait_until(
            lambda: self.count(needle) >= times or self._proc.poll() is not None,
            timeout,
            what=lambda: f"{needle.decode()!r} in the server's output:\n{self.text().decode(errors='replace')}",
        )
        assert self.count(needle) >= times, (
            f"the server exited ({self._proc.returncode}) without {needle.decode()!r}:\n"
            + self.text().decode(errors="replace")
        )

    def close(self) -> None:
        self._reader.join(10)


def file_fingerprint(cert: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_reloads_certificate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    subprocess.run(
        [sys.executable, "-m", "mailyard", "--data", str(data), "init", "--domain", "example.test",
         "--hostname", "mx.example.test", "--demo"],
        check=True, capture_output=True,
    )
    ports = {name: free_port() for name in ("pop3", "pop3s", "imaps")}
    text = (data / "config.toml").read_text()
    for name in ("smtp", "submission", "smtps", "imap", "http", "https", "managesieve"):
        text = re.sub(rf"^{name} = \d+$", f"{name} = 0", text, flags=re.M)
    for name, port in ports.items():
        text = re.sub(rf"^{name} = \d+$", f"{name} = {port}", text, flags=re.M)
    # two workers, each of which must report its reload before a handshake
    # (it may land on either) can be expected to show the new certificate
    text = re.sub(r"^workers = \d+$", f"workers = {WORKERS}", text, flags=re.M)
    (data / "config.toml").write_text(text)
    password = (data / "demo-passwords.txt").read_text().split()
    alice, alice_pw = password[0], password[2]

    proc = subprocess.Popen(
        [sys.executable, "-m", "mailyard", "--data", str(data), "serve"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    log = ServerLog(proc)
    try:
        log.wait_for(b"mailyard is running", timeout=30)
        # every worker has loaded the certificate before the "renewal"
        # rewrites it (a worker reading the pair halfway through its rewrite
        # fails its start and is started again, with no reload to report)
        log.wait_for(b"imaps accepting", times=WORKERS, timeout=30)

        cert, key = data / "tls" / "cert.pem", data / "tls" / "key.pem"
        old = file_fingerprint(cert)
        assert fingerprint(ports["pop3s"]) == old
        trust_old = ssl.create_default_context(cafile=str(cert))
        before = poplib.POP3_SSL("127.0.0.1", ports["pop3s"], context=trust_old, timeout=10)

        create_self_signed("mx.example.test", cert, key)  # the "renewal"
        new = file_fingerprint(cert)
        assert new != old
        proc.send_signal(signal.SIGHUP)
        # The server says it reloaded, and new handshakes present the new
        # certificate on every TLS port (implicit TLS and STLS).
        log.wait_for(b"TLS certificate reloaded", times=WORKERS)
        assert fingerprint(ports["imaps"]) == new
        assert fingerprint(ports["pop3s"]) == new
        assert fingerprint(ports["pop3"], starttls_pop3=True) == new

        before.user(alice)  # the session from before the reload goes on
        before.pass_(alice_pw)
        before.quit()

        # A broken pair: once the server has reported the failed reload, it
        # still presents the current certificate and keeps serving.
        cert.write_text("not a certificate\n")
        proc.send_signal(signal.SIGHUP)
        log.wait_for(b"TLS reload failed, keeping the previous certificate", times=WORKERS)
        assert fingerprint(ports["imaps"]) == new
        assert fingerprint(ports["pop3"], starttls_pop3=True) == new
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
