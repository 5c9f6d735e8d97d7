"""contrib/fail2ban/filter.d/mailyard.conf against the log of a real
``mailyard serve`` after failed logins on every protocol, checked with
fail2ban's own ``fail2ban-regex`` (Debian package fail2ban)."""

from __future__ import annotations

import base64
import imaplib
import poplib
import re
import smtplib
import subprocess
from pathlib import Path

import httpx
import pytest

from mailyard.config import Config
from tests.conftest import USERS, require_program
from tests.integration.serve_process import ServeProcess, free_port
from tests.waiting import wait_until

ALICE = "alice@example.test"
FILTER = Path(__file__).resolve().parents[2] / "contrib" / "fail2ban" / "filter.d" / "mailyard.conf"


def _fail_everywhere(proc: ServeProcess, submission: int, http: int) -> int:
    """One wrong password through every login path; returns how many."""
    host = proc.host
    attempts = 0
    # SMTP AUTH: the submission port, PLAIN and LOGIN
    for mech in ("PLAIN", "LOGIN"):
        with smtplib.SMTP(host, submission, timeout=30) as s:
            s.ehlo()
            s.user, s.password = ALICE, "wrong-smtp"
            with pytest.raises(smtplib.SMTPAuthenticationError):
                s.auth(mech, getattr(s, f"auth_{mech.lower()}"))
            attempts += 1
    # IMAP LOGIN and AUTHENTICATE PLAIN
    imap = imaplib.IMAP4(host, proc.port("imap"), timeout=30)
    with pytest.raises(imaplib.IMAP4.error):
        imap.login(ALICE, "wrong-imap")
    attempts += 1
    with pytest.raises(imaplib.IMAP4.error):
        imap.authenticate("PLAIN", lambda _: f"\0{ALICE}\0wrong-imap-sasl".encode())
    attempts += 1
    imap.logout()
    # POP3 USER/PASS, APOP, AUTH PLAIN
    pop = poplib.POP3(host, proc.port("pop3"), timeout=30)
    pop.user(ALICE)
    with pytest.raises(poplib.error_proto):
        pop.pass_("wrong-pop3")
    attempts += 1
    pop.quit()
    pop = poplib.POP3(host, proc.port("pop3"), timeout=30)
    with pytest.raises(poplib.error_proto):
        pop.apop(ALICE, "wrong-apop")
    attempts += 1
    pop.quit()
    pop = poplib.POP3(host, proc.port("pop3"), timeout=30)
    pop._putcmd("AUTH PLAIN " + base64.b64encode(f"\0{ALICE}\0wrong-pop3-sasl".encode()).decode())
    with pytest.raises(poplib.error_proto):
        pop._getresp()
    attempts += 1
    pop.quit()
    # webmail
    with httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=30) as client:
        page = client.get("/login")
        token = re.search(r'name="login_token" value="([^"]+)"', page.text)
        assert token is not None, page.text
        r = client.post("/login", data={"username": ALICE, "password": "wrong-web", "login_token": token.group(1)})
        assert r.status_code == 401
        attempts += 1
    # and one right password, which the filter must not count
    imap = imaplib.IMAP4(host, proc.port("imap"), timeout=30)
    imap.login(ALICE, USERS[ALICE])
    imap.logout()
    return attempts


def test_fail2ban_filter_matches_every_failed_login(tmp_path: Path) -> None:
    regex = require_program("fail2ban-regex", "fail2ban")
    submission, http = free_port(), free_port()

    def configure(cfg: Config) -> None:
        cfg.server.log_level = "info"
        cfg.ports.submission = submission
        cfg.ports.http = http
        cfg.metrics.listen = ""
        # no waits or lockouts in the way of the count
        cfg.auth.base_delay = 0.0
        cfg.auth.max_delay = 0.0
        cfg.auth.account_max_failures = 1000
        cfg.auth.ip_max_failures = 1000

    proc = ServeProcess(tmp_path / "data", configure)
    try:
        attempts = _fail_everywhere(proc, submission, http)
        # the last, successful login
        wait_until(lambda: any("event=login " in line for line in proc.output), timeout=30,
                   what=lambda: "".join(proc.output))
    finally:
        proc.stop()
    log = tmp_path / "mailyard.log"
    log.write_text("".join(proc.output))
    failed_lines = [line for line in proc.output if "event=login_failed" in line]
    protos = sorted({re.search(r"proto=(\S+)", line).group(1) for line in failed_lines})  # type: ignore[union-attr]
    assert protos == ["imap", "pop3", "submission", "web"], failed_lines
    out = subprocess.run([regex, "-o", "ip", str(log), str(FILTER)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    matched = out.stdout.split()
    print(f"{attempts} failed logins, {len(failed_lines)} login_failed lines, fail2ban matched {len(matched)}")
    assert len(failed_lines) == attempts
    assert matched == ["127.0.0.1"] * attempts, out.stdout
