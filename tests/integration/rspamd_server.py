"""A private rspamd (Debian's package) on loopback for tests and the bench:
the normal worker only, a minimal configuration of its own (no Redis: a
check needs none; DNS pointed where the caller says), the test patterns on
(GTUBE rejects; its ZJS variant asks to rewrite the subject)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from tests.integration.multihost import free_port
from tests.waiting import wait_until

CONF = """
options {{
  pidfile = "{dir}/rspamd.pid";
  dns {{ nameserver = ["{dns}"]; timeout = 1s; retransmits = 1; }}
  hs_cache_dir = "{dir}";
  enable_test_patterns = true;
}}
logging {{ type = "file"; filename = "{dir}/rspamd.log"; level = "warning"; }}
worker "normal" {{ bind_socket = "127.0.0.1:{port}"; count = 1; }}
actions {{ reject = 15; add_header = 6; rewrite_subject = 8; greylist = 4; subject = "*** SPAM *** %s"; }}
"""


class RspamdServer:
    def __init__(self, program: str, directory: Path, dns: str | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)  # rspamd drops to nobody when started as root
        self.directory = directory
        self.port = free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        conf = directory / "rspamd.conf"
        conf.write_text(CONF.format(dir=directory, port=self.port, dns=dns or f"127.0.0.1:{free_port('127.0.0.1')}"))
        user = ["-u", "nobody", "-g", "nogroup"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen([program, "-f", "-c", str(conf), *user], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def log_tail(self) -> str:
        try:
            return (self.directory / "rspamd.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until /ping answers (rspamd compiles its TLD list first: seconds)."""

        def ready() -> bool:
            assert self.proc.poll() is None, f"rspamd ended: {self.log_tail()}"
            try:
                return httpx.get(self.url + "/ping", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout, "rspamd to answer /ping")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
