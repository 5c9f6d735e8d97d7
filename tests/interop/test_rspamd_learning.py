"""Learning round trip with a real rspamd (Debian package rspamd; its Bayes
statistics need Redis: package redis-server). The session's private rspamd
on loopback (tests/integration/rspamd_server.py: its controller worker and
Debian's Bayes classifier on a private Redis) is the peer; the test moves
a message into Junk over IMAP: rspamd learns it as spam (the learner's
request succeeds and rspamd counts one learn); moved back out, it learns it
as ham (a second one)."""

from __future__ import annotations

import imaplib
import smtplib
import time
from collections.abc import Callable

import pytest

from mailyard.config import Config
from tests.conftest import USERS, RunningServer, require_program
from tests.integration.rspamd_server import PASSWORD, RspamdServer
from tests.waiting import wait_until

ALICE = "alice@example.test"
# rspamd's Bayes wants at least 11 tokens (statistic.conf min_tokens)
TEXT = "\r\n".join(f"offer{i} unbelievable discount pharmacy shipping worldwide" for i in range(20))
MESSAGE = (f"From: Seller <seller@spam.example>\r\nTo: {ALICE}\r\nSubject: discount\r\n"
           f"Message-ID: <learn1@spam.example>\r\n\r\n{TEXT}\r\n").encode()


@pytest.fixture
def rspamd(rspamd_service: RspamdServer) -> RspamdServer:
    """The session's rspamd (rspamd_server.py) with its controller and Bayes
    statistics on a private Redis."""
    require_program("redis-server", "redis-server")
    assert rspamd_service.controller_url, "rspamd_service started without Redis"
    return rspamd_service


def test_junk_moves_teach_rspamd(make_server: Callable[..., RunningServer], rspamd: RspamdServer) -> None:
    def configure(cfg: Config) -> None:
        cfg.spam.rspamd_controller_url = rspamd.controller_url
        cfg.spam.rspamd_controller_password = PASSWORD

    server = make_server(configure)
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=10) as s:
        s.sendmail("seller@spam.example", [ALICE], MESSAGE)
    learner = server.server.learner
    before = rspamd.learned()  # the session's rspamd: other tests' learns, if any, are not this one's
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
    wait_until(lambda: rspamd.learned() == before + 1, 30, lambda: f"rspamd learned {rspamd.learned()}")
    m.select("Junk")
    assert m.uid("MOVE", "1", "INBOX")[0] == "OK"
    wait_until(lambda: learner.learned + learner.failed == 2, 60, "the learn_ham request")
    assert (learner.learned, learner.failed) == (2, 0)
    wait_until(lambda: rspamd.learned() == before + 2, 30, lambda: f"rspamd learned {rspamd.learned()}")
    m.logout()
