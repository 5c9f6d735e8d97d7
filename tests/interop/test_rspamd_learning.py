"""Learning round trip with a real rspamd (Debian package rspamd; its Bayes
statistics need Redis: package redis-server). The test starts a private
Redis and a private rspamd on loopback (free ports, its own LOCAL_CONFDIR
and database directory), then moves a message into Junk over IMAP: rspamd
learns it as spam (the learner's request succeeds and rspamd counts one
learn); moved back out, it learns it as ham (a second one)."""

from __future__ import annotations

import imaplib
import json
import shutil
import smtplib
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailyard.config import Config
from tests.conftest import USERS, RunningServer, require_program
from tests.integration.serve_process import free_port
from tests.waiting import wait_until

ALICE = "alice@example.test"
PASSWORD = "learn-secret-1"
START_TIMEOUT = 180.0  # rspamd compiles its rules at start: tens of seconds on a busy machine
# rspamd's Bayes wants at least 11 tokens (statistic.conf min_tokens)
TEXT = "\r\n".join(f"offer{i} unbelievable discount pharmacy shipping worldwide" for i in range(20))
MESSAGE = (f"From: Seller <seller@spam.example>\r\nTo: {ALICE}\r\nSubject: discount\r\n"
           f"Message-ID: <learn1@spam.example>\r\n\r\n{TEXT}\r\n").encode()


@dataclass
class Rspamd:
    controller: int
    proc: subprocess.Popen
    redis: subprocess.Popen
    dir: Path

    def learned(self) -> int:
        """How many learn requests rspamd carried out: ``learned`` in the
        controller's /stat (a read: it learns nothing; the per-class counts
        there come from Redis on rspamd's own schedule)."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.controller}/stat", headers={"Password": PASSWORD})
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(json.loads(r.read()).get("learned", 0))

    def post(self, path: str, body: bytes) -> tuple[int, dict]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.controller}{path}", data=body,
                                     headers={"Password": PASSWORD}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


@pytest.fixture
def rspamd() -> Iterator[Rspamd]:
    program = require_program("rspamd", "rspamd")
    redis_server = require_program("redis-server", "redis-server")
    base = Path(tempfile.mkdtemp(prefix="mailyard-rspamd-"))
    local = base / "local.d"
    for d in (local, base / "db", base / "run", base / "log"):
        d.mkdir(parents=True)
    controller, normal, proxy, redis_port = (free_port() for _ in range(4))
    files = {
        "worker-controller.inc": f'bind_socket = "127.0.0.1:{controller}";\npassword = "{PASSWORD}";\n'
                                 f'enable_password = "{PASSWORD}";\nsecure_ip = "192.0.2.1";\n',
        "worker-normal.inc": f'bind_socket = "127.0.0.1:{normal}";\n',
        "worker-proxy.inc": f'bind_socket = "127.0.0.1:{proxy}";\n',
        "worker-fuzzy.inc": "count = 0;\n",
        "redis.conf": f'servers = "127.0.0.1:{redis_port}";\n',
        "logging.inc": f'type = "file";\nfilename = "{base}/log/rspamd.log";\nlevel = "info";\n',
        "options.inc": f'pidfile = "{base}/run/rspamd.pid";\n',
    }
    for name, text in files.items():
        (local / name).write_text(text)
    redis = subprocess.Popen([redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    args = [program, "-f", "-i", "-c", "/etc/rspamd/rspamd.conf"]
    for var, value in (("LOCAL_CONFDIR", base), ("DBDIR", base / "db"), ("RUNDIR", base / "run"),
                       ("LOGDIR", base / "log")):
        args += ["--var", f"{var}={value}"]
    out = (base / "log" / "stdout").open("wb")
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    r = Rspamd(controller, proc, redis, base)

    def up() -> bool:
        assert proc.poll() is None, (base / "log" / "stdout").read_text(errors="replace")[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{controller}/ping", timeout=1) as resp:
                return resp.read().strip() == b"pong"
        except OSError:
            return False

    try:
        wait_until(up, START_TIMEOUT, "rspamd's controller to answer")
        yield r
    finally:
        for p in (proc, redis):
            p.terminate()
        for p in (proc, redis):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        out.close()
        shutil.rmtree(base, ignore_errors=True)


def test_junk_moves_teach_rspamd(make_server: Callable[..., RunningServer], rspamd: Rspamd) -> None:
    def configure(cfg: Config) -> None:
        cfg.spam.rspamd_controller_url = f"http://127.0.0.1:{rspamd.controller}"
        cfg.spam.rspamd_controller_password = PASSWORD

    server = make_server(configure)
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=10) as s:
        s.sendmail("seller@spam.example", [ALICE], MESSAGE)
    learner = server.server.learner
    m = imaplib.IMAP4(server.host, server.port("imap"))
    m.login(ALICE, USERS[ALICE])
    m.select("INBOX")
    started = time.monotonic()
    assert m.uid("MOVE", "1", "Junk")[0] == "OK"
    wait_until(lambda: learner.learned + learner.failed == 1, 60, "the learn_spam request")
    print(f"learn_spam answered in {time.monotonic() - started:.2f} s")
    assert (learner.learned, learner.failed) == (1, 0)
    # rspamd's own count says so (its "already learned" answer to a second
    # learn of the same message is written after the first one's reply, so
    # asking that way races with rspamd itself)
    wait_until(lambda: rspamd.learned() == 1, 30, lambda: f"rspamd learned {rspamd.learned()}")
    m.select("Junk")
    assert m.uid("MOVE", "1", "INBOX")[0] == "OK"
    wait_until(lambda: learner.learned + learner.failed == 2, 60, "the learn_ham request")
    assert (learner.learned, learner.failed) == (2, 0)
    wait_until(lambda: rspamd.learned() == 2, 30, lambda: f"rspamd learned {rspamd.learned()}")
    m.logout()
