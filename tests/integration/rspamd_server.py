"""A private rspamd (Debian's package) on loopback for tests and the bench:
the normal worker, a minimal configuration of its own (DNS pointed where the
caller says), the test patterns on (GTUBE rejects; its ZJS variant asks to
rewrite the subject); optionally a controller worker with Bayes statistics in
a private Redis, for learning.

``rspamd_service`` is the one rspamd of a test session (with its Redis),
shared by the spam verdict tests and the learning interop test: each start
costs seconds of rspamd's Lua start-up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.ports import free_port
from tests.waiting import wait_until

CONF = """
options {{
  pidfile = "{dir}/rspamd.pid";
  dns {{ nameserver = ["{dns}"]; timeout = 1s; retransmits = 1; }}
  hs_cache_dir = "{dir}";
  enable_test_patterns = true;{options}
}}
logging {{ type = "file"; filename = "{dir}/rspamd.log"; level = "warning"; }}
worker "normal" {{ bind_socket = "127.0.0.1:{port}"; count = 1; }}
actions {{ reject = 15; add_header = 6; rewrite_subject = 8; greylist = 4; subject = "*** SPAM *** %s"; }}
"""

# The controller (learning, /stat) and Bayes on Redis: Debian's statistic.conf
# classifier (its learn_condition refuses a second learn into the same class
# and unlearns the other class when a message changes sides).
LEARNING = """
worker "controller" {{
  bind_socket = "127.0.0.1:{controller}"; count = 1;
  password = "{password}"; enable_password = "{password}"; secure_ip = "192.0.2.1";
}}
classifier "bayes" {{
  tokenizer {{ name = "osb"; }}
  backend = "redis"; servers = "127.0.0.1:{redis}";
  new_schema = true; min_tokens = 11; min_learns = 200;
  statfile {{ symbol = "BAYES_HAM"; spam = false; }}
  statfile {{ symbol = "BAYES_SPAM"; spam = true; }}
  learn_condition = 'return require("lua_bayes_learn").can_learn';
}}
"""

# Public suffixes rspamd knows for its URL detection. Its own list (about 9000
# names) is compiled to a Hyperscan database at every start in a fresh cache
# directory, a minute of CPU on a loaded 2-core machine; the tests' mail names
# only these.
TEST_TLDS = ("com", "org", "net", "test", "example", "invalid", "localhost")

PASSWORD = "learn-secret-1"


class RspamdServer:
    def __init__(self, program: str, directory: Path, dns: str | None = None, *,
                 redis_port: int | None = None, test_tlds: bool = False) -> None:
        """Start rspamd in ``directory``. ``redis_port`` adds the controller
        worker and a Bayes classifier on that Redis; ``test_tlds`` narrows the
        suffix list to TEST_TLDS (a start in seconds instead of a minute)."""
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)  # rspamd drops to nobody when started as root
        self.directory = directory
        self.port = free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        self.controller_url = ""
        options = ""
        if test_tlds:
            tlds = directory / "tld.dat"
            tlds.write_text("".join(f"{name}\n" for name in TEST_TLDS))
            tlds.chmod(0o644)
            options += f'\n  url_tld = "{tlds}";'
        text = CONF.format(dir=directory, port=self.port, options=options,
                           dns=dns or f"127.0.0.1:{free_port('127.0.0.1')}")
        if redis_port is not None:
            controller = free_port("127.0.0.1")
            self.controller_url = f"http://127.0.0.1:{controller}"
            text += LEARNING.format(controller=controller, password=PASSWORD, redis=redis_port)
        conf = directory / "rspamd.conf"
        conf.write_text(text)
        user = ["-u", "nobody", "-g", "nogroup"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen([program, "-f", "-c", str(conf), *user], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def log_tail(self) -> str:
        try:
            return (self.directory / "rspamd.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until /ping answers (on the controller too when there is one)."""

        def ready() -> bool:
            assert self.proc.poll() is None, f"rspamd ended: {self.log_tail()}"
            try:
                return all(httpx.get(url + "/ping", timeout=2).status_code == 200
                           for url in (self.url, self.controller_url) if url)
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout, "rspamd to answer /ping")

    def learned(self) -> int:
        """How many learn requests rspamd carried out: ``learned`` in the
        controller's /stat (a read: it learns nothing; the per-class counts
        there come from Redis on rspamd's own schedule)."""
        req = urllib.request.Request(self.controller_url + "/stat", headers={"Password": PASSWORD})
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(json.loads(r.read()).get("learned", 0))

    def post(self, path: str, body: bytes) -> tuple[int, dict]:
        """A POST to the controller with its password: status and JSON answer."""
        req = urllib.request.Request(self.controller_url + path, data=body, headers={"Password": PASSWORD},
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def stop(self) -> None:
        _stop(self.proc)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="session")
def rspamd_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RspamdServer]:
    """The session's rspamd (minimal configuration, test patterns, no DNS
    answers) with its controller and Bayes on a private Redis when
    redis-server is installed (the learning test asks for it with
    ``require_program``); skipped without rspamd, failed in CI."""
    from tests.conftest import require_program

    program = require_program("rspamd", "rspamd")
    redis_server = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/sbin")
    redis = None
    redis_port = None
    if redis_server:
        redis_port = free_port("127.0.0.1")
        redis = subprocess.Popen([redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        server = RspamdServer(program, tmp_path_factory.mktemp("rspamd"), redis_port=redis_port, test_tlds=True)
        try:
            server.wait_ready()
            yield server
        finally:
            server.stop()
    finally:
        if redis is not None:
            _stop(redis)
