"""A same-run reference: Dovecot on free loopback ports with the same corpus.

The issues quote Dovecot figures measured on a quiet machine; this machine is
shared, so a figure of ours is only comparable with Dovecot measured in the
same run, by the same client code, interleaved with ours. When
``/usr/sbin/dovecot`` is installed (Debian dovecot-imapd, dovecot-pop3d) this
starts it with a generated configuration (as in tests/interop/
test_client_readside.py), with:

- the same messages, written straight into a maildir the way Dovecot's own
  delivery leaves them (LF line endings, ``,S=<size>,W=<CRLF size>`` in the
  file name so Dovecot knows both sizes without reading the file);
- the same password check: the very argon2id PHC string mailyard stored for
  the account goes into Dovecot's passwd-file as ``{ARGON2ID}...`` (Dovecot
  2.3 verifies it with libsodium), so both servers do identical work per
  login. Dovecot's auth cache stays off (its default), like ours.

Everything else is Dovecot's default (a login process per connection,
``mail_fsync = optimized``, index files built on first access). The first
access is made before measuring, as for mailyard (its first POP3 login reads
the INBOX once).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .common import free_port

BINARY = "/usr/sbin/dovecot"

_CONF = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
protocols = {protocols}
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {login_user}
first_valid_uid = 1
mail_uid = {uid}
mail_gid = {gid}
mail_location = maildir:{base}/mail/%n
passdb {{
  driver = passwd-file
  args = username_format=%u {base}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/home/%n
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""


def available() -> bool:
    return os.path.exists(BINARY)


def argon2id_supported() -> bool:
    """Whether this Dovecot verifies ``{ARGON2ID}`` (built with libsodium)."""
    try:
        out = subprocess.run(["doveadm", "pw", "-s", "ARGON2ID", "-p", "x"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.startswith("{ARGON2ID}")


class Dovecot:
    """``with Dovecot(...) as d:`` -- ``d.ports["imap"]``, ``d.ports["pop3"]``."""

    def __init__(self, protocols: tuple[str, ...], address: str, password_hash: str, password: str,
                 messages: list[bytes], extra: str = "") -> None:
        self.extra = extra  # more configuration, appended
        self.protocols = protocols
        self.address = address
        self.password_hash = password_hash
        self.password = password
        self.messages = messages
        self.ports = {name: free_port() for name in ("imap", "pop3")}
        self.base = Path(tempfile.mkdtemp(prefix="mailyard-bench-dovecot-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.scheme = ""

    def __enter__(self) -> Dovecot:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        # Dovecot's unprivileged processes must reach base_dir.
        self.base.chmod(0o755)
        if os.geteuid() == 0:
            # Dovecot refuses uid 0 for mail: the mail belongs to Debian's "mail" user.
            ids = dict(user="dovecot", group="dovecot", login_user="dovenull", uid="mail", gid="mail")
        else:
            import grp
            import pwd

            me, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
            ids = dict(user=me, group=group, login_user=me, uid=me, gid=group)
        local = self.address.split("@")[0]
        self._write_maildir(self.base / "mail" / local)
        (self.base / "home" / local).mkdir(parents=True)
        if os.geteuid() == 0:
            for sub in ("mail", "home"):
                for root, _dirs, files in os.walk(self.base / sub):
                    shutil.chown(root, "mail", "mail")
                    for name in files:
                        shutil.chown(os.path.join(root, name), "mail", "mail")
        if self.password_hash.startswith("$argon2id$") and argon2id_supported():
            self.scheme = "ARGON2ID"
            secret = "{ARGON2ID}" + self.password_hash
        else:
            self.scheme = "PLAIN"  # no argon2 in this build: say so in the report
            secret = "{PLAIN}" + self.password
        (self.base / "passwd").write_text(f"{self.address}:{secret}\n")
        conf = self.base / "dovecot.conf"
        conf.write_text(_CONF.format(base=self.base, protocols=" ".join(self.protocols),
                                     imap_port=self.ports["imap"], pop3_port=self.ports["pop3"], **ids)
                        + self.extra)
        self.proc = subprocess.Popen([BINARY, "-F", "-c", str(conf)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        greeting = b"* OK" if "imap" in self.protocols else b"+OK"
        port = self.ports["imap" if "imap" in self.protocols else "pop3"]
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    if s.recv(100).startswith(greeting):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.base / "dovecot.log"
                raise RuntimeError("dovecot did not start: " + (log.read_text() if log.exists() else ""))
            time.sleep(0.1)

    def _write_maildir(self, root: Path) -> None:
        for sub in ("cur", "new", "tmp"):
            (root / sub).mkdir(parents=True)
        cur = root / "cur"
        base_time = 1_700_000_000
        for n, raw in enumerate(self.messages):
            lf = raw.replace(b"\r\n", b"\n")
            # Dovecot's own file name: time, unique part, physical and virtual
            # (CRLF) size, no flags. Increasing times keep the corpus order.
            vsize = len(lf) + lf.count(b"\n") - lf.count(b"\r\n")  # a CR before LF stays one
            name = f"{base_time + n}.M{n}P1.bench,S={len(lf)},W={vsize}:2,"
            (cur / name).write_bytes(lf)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not os.environ.get("MAILYARD_BENCH_KEEP_DOVECOT"):  # set it to read dovecot.log afterwards
            shutil.rmtree(self.base, ignore_errors=True)


def label(d: Dovecot | None) -> str:
    """The reference column for a same-run Dovecot row."""
    if d is None:
        return "dovecot not installed: static reference only"
    return f"Dovecot (this run), {d.scheme}"
