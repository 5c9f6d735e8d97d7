"""Abuse budgets: counted in the engines, their numbers read from config.

Each protocol's budgets come from config.toml (net/budgets.py) and the
engine enforces them (protocols/contract.py AbuseBudgets): failed logins
and bad commands on one connection, each ending it with the protocol's own
reply. Driven through a running server on raw sockets.
"""

from __future__ import annotations

from collections.abc import Callable

from mailyard.config import Config
from tests.conftest import RunningServer
from tests.integration.test_security import Wire, b64

WRONG = "wrong-password-77"


def _fast_throttle(cfg: Config) -> None:
    cfg.auth.base_delay = 0.001
    cfg.auth.max_delay = 0.002


def _closed(w: Wire) -> bool:
    """The server closed the connection (EOF before any further line)."""
    return w.file.readline() == b""


def test_pop3_failed_logins_per_connection_from_config(make_server: Callable[..., RunningServer]) -> None:
    def configure(cfg: Config) -> None:
        _fast_throttle(cfg)
        cfg.auth.pop3_connection_max_failures = 2

    server = make_server(configure=configure)
    w = Wire(server.port("pop3"))
    try:
        assert w.line().startswith(b"+OK")
        assert w.cmd("USER alice@example.test") == b"+OK\r\n"
        assert w.cmd(f"PASS {WRONG}") == b"-ERR [AUTH] Authentication failed\r\n"
        assert w.cmd("USER alice@example.test") == b"+OK\r\n"
        assert w.cmd(f"PASS {WRONG}") == b"-ERR [AUTH] Authentication failed, closing connection\r\n"
        assert _closed(w)
    finally:
        w.close()


def test_pop3_bad_commands_per_connection_from_config(make_server: Callable[..., RunningServer]) -> None:
    def configure(cfg: Config) -> None:
        cfg.limits.max_bad_commands = 2

    server = make_server(configure=configure)
    w = Wire(server.port("pop3"))
    try:
        assert w.line().startswith(b"+OK")
        assert w.cmd("FROB") == b"-ERR unknown command\r\n"
        assert w.cmd("FROB") == b"-ERR unknown command (too many bad commands, closing connection)\r\n"
        assert _closed(w)
    finally:
        w.close()


def test_smtp_error_replies_per_connection_from_config(make_server: Callable[..., RunningServer]) -> None:
    # Sequence errors (503) are not unknown commands: only max_errors ends this.
    def configure(cfg: Config) -> None:
        cfg.smtp.max_errors = 3

    server = make_server(configure=configure)
    w = Wire(server.port("smtp"))
    try:
        assert w.smtp().startswith(b"220 ")
        assert w.smtp("EHLO client.example.org").startswith(b"250-")
        assert w.smtp("RCPT TO:<alice@example.test>") == b"503 5.5.1 Need MAIL command\r\n"
        assert w.smtp("DATA") == b"503 5.5.1 Need MAIL command\r\n"
        assert w.smtp("RCPT TO:<alice@example.test>") == b"503 5.5.1 Need MAIL command\r\n"
        assert w.smtp() == b"421 4.7.0 mx.example.test Too many errors, closing connection\r\n"
        assert _closed(w)
    finally:
        w.close()


def test_smtp_failed_auth_budget_is_the_engines(make_server: Callable[..., RunningServer]) -> None:
    # [auth] smtp_connection_max_failures, enforced by the engine: the failure
    # that uses the budget up is answered 421 and the session ends.
    def configure(cfg: Config) -> None:
        _fast_throttle(cfg)
        cfg.auth.smtp_connection_max_failures = 2

    server = make_server(configure=configure)
    w = Wire(server.port("submission"))
    try:
        assert w.smtp().startswith(b"220 ")
        assert w.smtp("EHLO client.example.org").startswith(b"250-")
        bad = b64(f"\0alice@example.test\0{WRONG}").decode()
        assert w.smtp(f"AUTH PLAIN {bad}") == b"535 5.7.8 Authentication credentials invalid\r\n"
        assert w.smtp(f"AUTH PLAIN {bad}") == (
            b"421 4.7.0 Too many failed authentication attempts, closing connection\r\n"
        )
        assert _closed(w)
    finally:
        w.close()


def test_imap_bad_commands_per_connection_from_config(make_server: Callable[..., RunningServer]) -> None:
    def configure(cfg: Config) -> None:
        cfg.limits.max_bad_commands = 2

    server = make_server(configure=configure)
    w = Wire(server.port("imap"))
    try:
        assert w.line().startswith(b"* OK ")
        assert w.cmd("t1 FROB") == b't1 BAD No such command as "FROB"\r\n'
        assert w.cmd("t2 FROB") == b't2 BAD No such command as "FROB"\r\n'
        assert w.line() == b"* BYE Too many invalid commands\r\n"
        assert _closed(w)
    finally:
        w.close()


def test_imap_failed_logins_per_connection_from_config(make_server: Callable[..., RunningServer]) -> None:
    def configure(cfg: Config) -> None:
        _fast_throttle(cfg)
        cfg.auth.imap_connection_max_failures = 2

    server = make_server(configure=configure)
    w = Wire(server.port("imap"))
    try:
        assert w.line().startswith(b"* OK ")
        assert w.cmd(f"t1 LOGIN alice@example.test {WRONG}") == b"t1 NO [AUTHENTICATIONFAILED] Invalid credentials\r\n"
        assert w.cmd(f"t2 LOGIN alice@example.test {WRONG}") == b"t2 NO [AUTHENTICATIONFAILED] Invalid credentials\r\n"
        assert w.line() == b"* BYE Too many failed logins\r\n"
        assert _closed(w)
    finally:
        w.close()
