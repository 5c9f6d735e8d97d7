"""Interop with Postfix as a peer MTA, both directions.

The test starts its own Postfix instance (``postfix -c DIR start``) with a
generated configuration on 127.0.0.9 and the multi-host harness's shared SMTP
port: it is the MX of p.test (virtual mailboxes in Maildir form under DIR)
and sends mail for a.test to mailyard at [127.0.0.2]:PORT (transport_maps).
Debian package: postfix (``.ci/run`` installs it without starting the system
daemon). Needs root, as Postfix's master does.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_program
from tests.integration.multihost import MultiHost

A, P = "127.0.0.2", "127.0.0.9"


class Postfix:
    def __init__(self, base: Path, port: int, relay_to: dict[str, str]) -> None:
        self.postfix = require_program("postfix", "postfix")
        self.postconf = require_program("postconf", "postfix")
        if os.geteuid() != 0:
            message = "Postfix interop needs root (Postfix's master runs as root)"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        # Postfix opens data_directory and delivers mail as the postfix user, who
        # cannot enter pytest's 0700 temporary tree: a directory of its own in /tmp.
        self.dir = Path(tempfile.mkdtemp(prefix="mailyard-postfix-"))
        self.dir.chmod(0o755)
        self.config = self.dir / "etc"
        self.mail = self.dir / "mail"
        for d in (self.config, self.mail, self.dir / "spool", self.dir / "data"):
            d.mkdir(parents=True, exist_ok=True)
        uid = int(subprocess.run(["id", "-u", "postfix"], capture_output=True, text=True).stdout)
        gid = int(subprocess.run(["id", "-g", "postfix"], capture_output=True, text=True).stdout)
        for d in (self.mail, self.dir / "data"):
            os.chown(d, uid, gid)
        (self.config / "vmailbox").write_text("carol@p.test p.test/carol/\n")
        (self.config / "transport").write_text(
            "".join(f"{domain} smtp:[{ip}]:{port}\n" for domain, ip in relay_to.items())
        )
        main = f"""
compatibility_level = 3.6
queue_directory = {self.dir}/spool
data_directory = {self.dir}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = all
inet_protocols = ipv4
smtp_bind_address = {P}
myhostname = mx.p.test
mydomain = p.test
myorigin = p.test
mydestination =
mynetworks = 127.0.0.0/8
local_recipient_maps =
alias_maps =
alias_database =
virtual_mailbox_domains = p.test
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = texthash:{self.config}/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
transport_maps = texthash:{self.config}/transport
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_host_lookup = native
disable_dns_lookups = yes
smtp_tls_security_level = may
maillog_file = {self.dir}/maillog
maillog_file_prefixes = {self.dir}
biff = no
"""
        (self.config / "main.cf").write_text(main)
        master = Path("/etc/postfix/master.cf").read_text()
        lines = []
        for line in master.splitlines():
            if line.startswith("smtp      inet") or line.startswith("smtp inet"):
                line = f"{P}:{port} inet n - n - - smtpd"
            lines.append(line)
        (self.config / "master.cf").write_text("\n".join(lines) + "\n")
        self.port = port

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.postfix, "-c", str(self.config), *args], capture_output=True, text=True,
                              timeout=60)

    def start(self) -> None:
        out = self.run("start")
        if out.returncode != 0:
            # Postfix reports fatal start-up errors only to syslog or a terminal.
            check = subprocess.run(["script", "-qc", f"{self.postfix} -c {self.config} check", "/dev/null"],
                                   capture_output=True, text=True, timeout=60)
            raise RuntimeError(f"postfix start failed: {out.stdout}{out.stderr}{check.stdout}")

    def stop(self) -> None:
        self.run("stop")
        # wait for master to go so the next test can bind the address again
        pid_file = self.dir / "spool" / "pid" / "master.pid"
        deadline = time.monotonic() + 15
        while pid_file.exists() and time.monotonic() < deadline:
            try:
                os.kill(int(pid_file.read_text().split()[0]), 0)
            except (OSError, ValueError):
                break
            time.sleep(0.1)

    def maildir(self, local: str) -> list[bytes]:
        new = self.mail / "p.test" / local / "new"
        if not new.exists():
            return []
        return [p.read_bytes() for p in sorted(new.iterdir())]

    def log(self) -> str:
        path = self.dir / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[MultiHost]:
    harness = MultiHost(tmp_path)
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture
def postfix(tmp_path: Path, hosts: MultiHost) -> Iterator[Postfix]:
    pf = Postfix(tmp_path, hosts.smtp_port, {"a.test": A})
    pf.start()
    try:
        yield pf
    finally:
        pf.stop()
        shutil.rmtree(pf.dir, ignore_errors=True)


def test_mailyard_to_postfix_and_postfix_to_mailyard(hosts: MultiHost, postfix: Postfix) -> None:
    hosts.dns.add("p.test", "MX", "10 mx.p.test.")
    hosts.dns.add("mx.p.test", "A", P)
    a = hosts.add("a.test", A, {"alice": "alice-pw-1"})

    # mailyard -> Postfix: alice submits to carol@p.test; a.test finds Postfix by MX.
    outgoing = (b"From: alice@a.test\r\nTo: carol@p.test\r\nSubject: to postfix\r\n"
                b"Message-ID: <pf1@a.test>\r\nDate: Mon, 23 Nov 2026 08:00:00 +0000\r\n\r\nhello postfix\r\n")
    with smtplib.SMTP(a.host, a.config.ports.submission, timeout=10) as client:
        client.login("alice@a.test", "alice-pw-1")
        client.sendmail("alice@a.test", ["carol@p.test"], outgoing)
    deadline = time.monotonic() + 60
    while not postfix.maildir("carol") and time.monotonic() < deadline:
        time.sleep(0.1)
    got = postfix.maildir("carol")
    assert got, f"Postfix did not deliver; log:\n{postfix.log()}"
    raw = got[0]
    assert b"Subject: to postfix" in raw and b"hello postfix" in raw
    assert b"from mx.a.test" in raw and b"by mx.p.test (Postfix)" in raw
    hosts.wait_for(lambda: not hosts.queue("a.test"), what="a.test's queue to empty")

    # Postfix -> mailyard: a message handed to Postfix for alice@a.test goes to mailyard.
    incoming = (b"From: carol@p.test\r\nTo: alice@a.test\r\nSubject: from postfix\r\n"
                b"Message-ID: <pf2@p.test>\r\nDate: Mon, 23 Nov 2026 08:00:00 +0000\r\n\r\nhello mailyard\r\n")
    with smtplib.SMTP(P, postfix.port, timeout=10) as client:
        client.sendmail("carol@p.test", ["alice@a.test"], incoming)
    try:
        (raw,) = hosts.wait_messages("alice@a.test", timeout=60)
    except AssertionError:
        raise AssertionError(f"mailyard did not get the message; Postfix log:\n{postfix.log()}") from None
    assert raw.endswith(b"\r\n\r\nhello mailyard\r\n")
    assert b"Return-Path: <carol@p.test>" in raw
    assert b"from mx.p.test" in raw and b"by mx.a.test" in raw
