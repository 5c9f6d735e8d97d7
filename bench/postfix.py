"""Postfix as the SMTP benchmark's peer: a private instance of the installed
Postfix (Debian's 3.7 here) in a temporary directory, on a free loopback
port, accepting mail for alice@example.test into a Maildir (virtual(8)).

Its own ``main.cf``/``master.cf``/queue, so the system's Postfix (if any)
is untouched; started with ``postfix -c DIR start`` and stopped with ``stop``.
Postfix forks one ``smtpd`` per connection, so ``default_process_limit`` is
raised above the largest client count, and its per-client connection caps
(anvil) are switched off as mailyard's per-address cap is raised: all the
clients come from 127.0.0.1. Postfix answers ``250`` once the message is in
its queue (fsync'ed), and delivers to the Maildir afterwards; a run counts
the Maildir files once the queue has drained.

Needs root (Postfix's master runs as root and drops to ``postfix``) and the
``postfix`` binary; `available` says whether both are there.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .common import free_port


def available() -> bool:
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return False
    return os.geteuid() == 0 and shutil.which("postfix", path="/usr/sbin:/usr/bin") is not None


def version() -> str:
    out = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


class Postfix:
    """A private Postfix; ``port`` is its SMTP port, `delivered` counts mail."""

    def __init__(self, process_limit: int = 1100) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="mailyard-bench-postfix-")
        self.root = Path(self.tmp.name)
        self.etc = self.root / "etc"
        self.mail = self.root / "mail"
        self.port = free_port()
        self.process_limit = process_limit
        self.running = False

    def _postfix(self, *args: str) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), *args], check=True, capture_output=True)

    def start(self) -> None:
        owner = pwd.getpwnam("postfix")
        for sub in ("etc", "queue", "data", "mail"):
            (self.root / sub).mkdir()
        os.chmod(self.root, 0o755)
        for sub in ("data", "mail"):
            os.chown(self.root / sub, owner.pw_uid, owner.pw_gid)
        (self.etc / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.root}/queue
data_directory = {self.root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.example.test
mydomain = example.test
myorigin = postfix.example.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_recipient_restrictions = permit_mynetworks, reject
virtual_mailbox_domains = example.test
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = static:alice/
virtual_uid_maps = static:{owner.pw_uid}
virtual_gid_maps = static:{owner.pw_gid}
virtual_minimum_uid = 1
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
default_process_limit = {self.process_limit}
disable_dns_lookups = yes
alias_maps =
alias_database =
biff = no
""")
        master = Path("/etc/postfix/master.cf").read_text().splitlines()
        lines = []
        for line in master:
            fields = line.split()
            if fields[:2] == ["smtp", "inet"]:  # the SMTP listener on our port, not chrooted
                line = f"{self.port} inet n - n - - smtpd"
            lines.append(line)
        (self.etc / "master.cf").write_text("\n".join(lines) + "\n")
        for extra in Path("/etc/postfix").glob("dynamicmaps.cf*"):
            target = self.etc / extra.name
            if extra.is_dir():
                shutil.copytree(extra, target)
            else:
                shutil.copy(extra, target)
        self._postfix("start")
        self.running = True
        self.warm()

    @property
    def pid(self) -> int:
        """The master's process id (every Postfix daemon runs below it)."""
        return int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])

    def warm(self) -> None:
        """One message through, so the first run does not pay the start-up."""
        self.send(1, 1024, 1)
        self.wait_delivered(1)
        self.clear()

    def send(self, count: int, size: int, sessions: int) -> float:
        exe = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
        start = time.perf_counter()
        out = subprocess.run(
            [exe, "-c", "-s", str(sessions), "-m", str(count), "-l", str(size), "-f", "load@remote.test",
             "-t", "alice@example.test", f"127.0.0.1:{self.port}"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        elapsed = time.perf_counter() - start
        if out.stderr.strip():
            raise RuntimeError(f"smtp-source to Postfix with {sessions} sessions reported:\n{out.stderr[:2000]}")
        return elapsed

    def delivered(self) -> int:
        box = self.mail / "alice"
        return sum(len(os.listdir(box / sub)) for sub in ("new", "cur") if (box / sub).is_dir())

    def wait_delivered(self, count: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while (got := self.delivered()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Postfix delivered {got} of {count} messages")
            time.sleep(0.2)

    def clear(self) -> None:
        """Empty the Maildir (the queue is empty once everything is delivered)."""
        box = self.mail / "alice"
        for sub in ("new", "cur", "tmp"):
            if (box / sub).is_dir():
                for name in os.listdir(box / sub):
                    (box / sub / name).unlink()

    def stop(self) -> None:
        if self.running:
            subprocess.run(["postfix", "-c", str(self.etc), "stop"], capture_output=True)
            deadline = time.monotonic() + 20
            pid_file = self.root / "queue" / "pid" / "master.pid"
            while pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            self.running = False
        self.tmp.cleanup()
