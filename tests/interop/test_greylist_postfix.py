"""Greylisting against a real sender: Postfix (127.0.0.9) relays a message
to mailyard (127.0.0.2) with greylisting on; the first attempt gets
``451 4.7.1``, Postfix defers it and retries on its own (short backoff in
its main.cf: FAST_RETRY), and the retry is delivered. Debian package:
postfix; needs root (see test_outbound_postfix.py, whose Postfix harness
this uses)."""

from __future__ import annotations

import shutil
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailyard.config import Config
from tests.integration.multihost import MultiHost
from tests.interop.test_outbound_postfix import A, P, Postfix

# Postfix retries a deferred message one to three seconds after its attempt.
# minimal_backoff_time is 3s for the sake of the delivery agent. qmgr(8)
# stamps a deferred queue file minimal_backoff_time (at most
# maximal_backoff_time) ahead, in whole seconds, and its deferred-queue scan
# (every queue_run_delay) takes back a file stamped up to one second ahead
# (qmgr_active.c). With 1s that is at once: in the same turn of qmgr's event
# loop as the smtp(8) agent's "deferred" reply, whenever the queue_run_delay
# timer is due then. The agent answers qmgr before it closes the queue file;
# qmgr, finding the file still under the agent's lock, logs "skipped, still
# being delivered" and moves it to the incoming queue 60 seconds ahead, a queue
# it scans again only for new mail or master(8)'s wakeup of qmgr (300 s in
# master.cf): no retry for minutes. Stamped 3s ahead, the file is taken back a
# second after the deferral at the soonest, long after the agent let go of it.
# postconf(5): minimal_backoff_time >= queue_run_delay, maximal >= minimal.
FAST_RETRY = """
minimal_backoff_time = 3s
maximal_backoff_time = 3s
queue_run_delay = 1s
"""


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
    with (pf.config / "main.cf").open("a") as f:
        f.write(FAST_RETRY)
    pf.start()
    try:
        yield pf
    finally:
        pf.stop()
        shutil.rmtree(pf.dir, ignore_errors=True)


def test_postfix_retries_a_greylisted_message(hosts: MultiHost, postfix: Postfix) -> None:
    def greylisting(cfg: Config) -> None:
        cfg.spam.trusted_networks = []
        cfg.spam.greylisting = True
        cfg.spam.greylist_delay = 2.0

    hosts.add("a.test", A, {"alice": "alice-pw-1"}, configure=greylisting)
    incoming = (b"From: carol@p.test\r\nTo: alice@a.test\r\nSubject: greylisted\r\n"
                b"Message-ID: <grey1@p.test>\r\nDate: Mon, 23 Nov 2026 08:00:00 +0000\r\n\r\nplease retry\r\n")
    with smtplib.SMTP(P, postfix.port, timeout=10) as client:
        client.sendmail("carol@p.test", ["alice@a.test"], incoming)
    try:
        (raw,) = hosts.wait_messages("alice@a.test", timeout=90)
    except AssertionError:
        raise AssertionError(f"mailyard did not get the retry; Postfix log:\n{postfix.log()}") from None
    assert raw.endswith(b"\r\n\r\nplease retry\r\n")
    log = postfix.log()
    deferred = [line for line in log.splitlines() if "status=deferred" in line]
    print("\n".join(deferred))
    assert any("451 4.7.1 greylisted, please try again later" in line for line in deferred), log
    assert "status=sent" in log
