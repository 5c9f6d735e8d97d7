"""DKIM interoperability with OpenDKIM (Debian opendkim-tools'
``opendkim-testmsg``, which .ci/run installs): OpenDKIM verifies what
mailyard signs (each signature alone: rsa-sha256 and ed25519-sha256), and
mailyard verifies what OpenDKIM signs; a signed message delivered by Postfix
(the receiving peer) still verifies.

OpenDKIM looks keys up through the system resolver (/etc/resolv.conf, port
53), so the verifying run gets a private mount namespace (``unshare -m``)
whose resolv.conf points at 127.0.0.77:53, where the test answers from the
project's DNS test server (multihost.py ``DNSServer.answer``). That needs
root, as CI has."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailyard.mailauth import dkim, keys
from tests.conftest import require_program
from tests.integration.multihost import DNSServer

RESOLVER = "127.0.0.77"

MESSAGE = (
    b"From: Alice <alice@a.test>\r\n"
    b"To: bob@b.test\r\n"
    b"Subject: interop\r\n"
    b"Date: Sat, 05 Dec 2026 08:00:00 +0000\r\n"
    b"Message-ID: <interop1@a.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Gr\xc3\xbc\xc3\x9fe,   with  spaces \t and tabs  \r\n"
    b".a line with a leading dot\r\n"
    b"\r\n\r\n"
)


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    server = DNSServer()
    yield server
    server.stop()


@pytest.fixture
def port53(dns: DNSServer) -> Iterator[str]:
    """A DNS server on RESOLVER:53 answering from ``dns``."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        _unavailable("OpenDKIM verification needs root and unshare (util-linux) to give it a private resolv.conf")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((RESOLVER, 53))
    except OSError as exc:
        sock.close()
        _unavailable(f"cannot bind {RESOLVER}:53 for OpenDKIM's resolver: {exc}")
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                wire, peer = sock.recvfrom(65535)
            except OSError:
                continue
            try:
                sock.sendto(dns.answer(wire), peer)
            except Exception:  # noqa: BLE001 - a test DNS server keeps serving
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield RESOLVER
    stop.set()
    thread.join(5)
    sock.close()


def opendkim_verify(tmp_path: Path, message: bytes) -> subprocess.CompletedProcess[bytes]:
    testmsg = require_program("opendkim-testmsg", "opendkim-tools")
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {RESOLVER}\noptions timeout:2 attempts:1\n")
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", f'mount --bind "{conf}" /etc/resolv.conf && exec "{testmsg}" -C'],
        input=message, capture_output=True, timeout=60, check=False,
    )


def assert_opendkim_passes(tmp_path: Path, name: str, signed: bytes) -> None:
    """OpenDKIM verifies the ``name`` signature of ``signed``, and says nothing else."""
    result = opendkim_verify(tmp_path, signed)
    print(name, result.returncode, result.stderr)
    assert (result.returncode, result.stderr) == (0, b""), name


def split_signatures(signed: bytes) -> tuple[bytes, bytes]:
    """(the Ed25519 field, the RSA field) of ``dkim.sign``'s output."""
    first, second = (b"DKIM-Signature:" + f for f in signed.split(b"DKIM-Signature:")[1:])
    return first, second


def test_opendkim_verifies_mailyard_signatures(tmp_path: Path, dns: DNSServer, port53: str) -> None:
    signing = dns.publish_dkim(tmp_path, "a.test")
    ed, rsa = split_signatures(dkim.sign(MESSAGE, signing))
    for name, field in (("rsa-sha256", rsa), ("ed25519-sha256", ed)):
        assert_opendkim_passes(tmp_path, name, field + MESSAGE)
        bad = opendkim_verify(tmp_path, field + MESSAGE.replace(b"spaces", b"spades"))
        assert bad.returncode != 0 and b"Bad signature" in bad.stderr, name


def test_mailyard_verifies_an_opendkim_signature(tmp_path: Path, dns: DNSServer) -> None:
    testmsg = require_program("opendkim-testmsg", "opendkim-tools")
    signing = dns.publish_dkim(tmp_path, "a.test")
    key_file = tmp_path / "dkim" / "a.test" / f"{signing.generation}.rsa.pem"
    signed = subprocess.run([testmsg, "-C", "-d", "a.test", "-s", signing.rsa_selector, "-k", str(key_file)],
                            input=MESSAGE, capture_output=True, timeout=60, check=True).stdout
    assert signed.startswith(b"DKIM-Signature:") and signed.endswith(MESSAGE)
    tags = dkim._tags(signed.split(b"\r\n\r\n")[0].split(b"DKIM-Signature:")[1])
    # opendkim-testmsg signs with its library's defaults: rsa-sha1, relaxed/simple
    print(tags["a"], tags["c"])
    from mailyard.mailauth.dnscache import Resolver

    resolver = Resolver(dns.address, timeout=3.0)
    (checked,) = dkim.verify(signed, resolver.txt, allow_sha1=tags["a"] == "rsa-sha1")
    assert (checked.result, checked.domain, checked.selector) == ("pass", "a.test", signing.rsa_selector)
    (tampered,) = dkim.verify(signed.replace(b"spaces", b"spades"), resolver.txt, allow_sha1=True)
    assert tampered.result == "fail"
    if tags["a"] == "rsa-sha1":
        # RFC 8301 3.1: the server itself does not accept rsa-sha1
        (strict,) = dkim.verify(signed, resolver.txt)
        assert (strict.result, strict.reason) == ("fail", "rsa-sha1 is not accepted (RFC 8301)")


def test_signature_survives_transport_to_postfix(tmp_path: Path) -> None:
    """mailyard signs at enqueue and sends to Postfix by MX; the copy Postfix
    delivers (8-bit body, a 900-octet line, a leading dot, trailing spaces)
    still verifies both signatures: nothing on the way re-encoded it."""
    import smtplib

    from mailyard.mailauth.dnscache import Resolver
    from tests.integration.multihost import MultiHost
    from tests.interop.test_outbound_postfix import A, P, Postfix
    from tests.waiting import wait_until

    hosts = MultiHost(tmp_path)
    postfix = None
    try:
        postfix = Postfix(tmp_path, hosts.smtp_port, {"a.test": A})
        postfix.start()
        hosts.dns.add("p.test", "MX", "10 mx.p.test.")
        hosts.dns.add("mx.p.test", "A", P)
        a = hosts.add("a.test", A, {"alice": "alice-pw-1"})
        keys.generate(a.data_dir, "a.test")
        signing = keys.load(a.data_dir, "a.test")
        assert signing is not None
        hosts.dns.publish_key_records(signing)
        outgoing = MESSAGE.replace(b"bob@b.test", b"carol@p.test") + b"z" * 900 + b"  \r\n"
        with smtplib.SMTP(a.host, a.config.ports.submission, timeout=10) as client:
            client.login("alice@a.test", "alice-pw-1")
            client.sendmail("alice@a.test", ["carol@p.test"], outgoing)
        wait_until(lambda: postfix.maildir("carol"), 60, "Postfix to deliver")  # type: ignore[union-attr]
        (raw,) = postfix.maildir("carol")
        delivered = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # a maildir file has LF lines
        results = dkim.verify(delivered, Resolver(hosts.dns.address, timeout=3.0).txt)
        print([(r.algorithm, r.result, r.reason) for r in results])
        assert [(r.algorithm, r.result) for r in results] == [("ed25519-sha256", "pass"), ("rsa-sha256", "pass")]
        assert b"\xc3\xbc" in raw and b"z" * 900 in raw
    finally:
        if postfix is not None:
            postfix.stop()
            shutil.rmtree(postfix.dir, ignore_errors=True)
        hosts.stop()


# OpenDKIM's reader takes only messages with the fields RFC 5322 3.6 counts
# in their counts (one Date, at most one To, Subject): the repeated fields
# here are Resent- ones (RFC 5322 3.6.6: one block per resending)
DATE = b"Date: Sat, 05 Dec 2026 08:00:00 +0000\r\n"
VARIED = [
    # repeated fields (signed bottom-up, RFC 6376 5.4.2), an unsigned one, folded values with tabs and WSP runs
    b"Received: from x by y\r\nFrom: Alice <alice@a.test>\r\n" + DATE + b"Resent-To: r1@a.test\r\n"
    b"Resent-To:\tr2@c.test,\r\n\t  r3@d.test  \r\nSubject:   folded\r\n \t  subject\t \r\n"
    b"To: bob@b.test\r\n\r\nbody\r\n",
    # no Message-ID, To (oversigned, absent: they contribute nothing), an empty body
    b"From: a@a.test\r\n" + DATE + b"Subject: empty body\r\n\r\n",
    # empty lines and WSP-only lines at the end, a long line, dot lines (RFC 6376 3.4.4)
    b"From: a@a.test\r\n" + DATE + b"Subject: tail\r\n\r\n.\r\n..dots\r\n" + b"y" * 2500
    + b"\r\n \r\n\t\r\n\r\n\r\n",
    # 8-bit octets in a value and the body, a body without a final line end
    b"Resent-From: x@a.test\r\nFrom: a@a.test\r\nResent-From: y@a.test\r\n" + DATE
    + b"Subject: caf\xc3\xa9  \xe2\x82\xac\r\nReply-To: r@a.test\r\n\r\nGr\xc3\xbc\xc3\x9fe \t \r\nend",
]


@pytest.mark.parametrize("message", VARIED)
def test_opendkim_verifies_fast_path_signatures_of_varied_messages(tmp_path: Path, dns: DNSServer, port53: str,
                                                                   message: bytes) -> None:
    """The fast signer (mailauth/dkim.py ``_sign_fast``) folds its fields
    itself: OpenDKIM verifies each signature of messages that exercise the
    header and body canonicalisation (RFC 6376 3.4.2, 3.4.4)."""
    signing = dns.publish_dkim(tmp_path, "a.test")
    ed, rsa = split_signatures(dkim.sign(message, signing))
    for name, field in (("rsa-sha256", rsa), ("ed25519-sha256", ed)):
        assert_opendkim_passes(tmp_path, name, field + message)
