"""The mailyard command as an administrator uses it (subprocesses)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest


def run(data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailyard", "--data", str(data), *args],
        input=stdin, capture_output=True, text=True, timeout=60,
    )


def test_init_and_administration(tmp_path: Path) -> None:
    data = tmp_path / "data"
    r = run(data, "init", "--domain", "Example.TEST", "--demo")
    assert r.returncode == 0, r.stderr
    assert "alice@example.test  password:" in r.stdout
    assert (data / "config.toml").exists() and (data / "tls" / "cert.pem").exists()
    assert (data / "demo-passwords.txt").stat().st_mode & 0o777 == 0o600
    assert run(data, "domain", "list").stdout.split() == ["example.test"]
    users = run(data, "user", "list").stdout.split()
    assert users == ["alice@example.test", "bob@example.test", "postmaster@example.test"]
    r = run(data, "user", "add", "carol@example.test", "--password-stdin", stdin="carol-secret-9\n")
    assert r.returncode == 0, r.stderr
    r = run(data, "user", "add", "carol@example.test", "--password-stdin", stdin="carol-secret-9\n")
    assert r.returncode == 1 and "exists already" in r.stderr
    r = run(data, "user", "add", "dave@example.test", "--password-stdin", stdin="short\n")
    assert r.returncode == 1 and "at least 8" in r.stderr
    r = run(data, "user", "add", "x@other.test", "--password-stdin", stdin="long-enough-1\n")
    assert r.returncode == 1 and "mailyard domain add other.test" in r.stderr
    assert run(data, "alias", "add", "info@example.test", "alice@example.test", "ext@remote.test").returncode == 0
    assert "info@example.test -> alice@example.test, ext@remote.test" in run(data, "alias", "list").stdout
    assert run(data, "list", "add", "team@example.test").returncode == 0
    assert run(data, "list", "subscribe", "team@example.test", "alice@example.test", "bob@example.test").returncode == 0
    assert run(data, "list", "members", "team@example.test").stdout.split() == ["alice@example.test", "bob@example.test"]
    assert run(data, "list", "unsubscribe", "team@example.test", "bob@example.test").returncode == 0
    assert run(data, "list", "members", "team@example.test").stdout.split() == ["alice@example.test"]
    r = run(data, "domain", "remove", "example.test")
    assert r.returncode == 1 and "remove them first" in r.stderr
    assert run(data, "user", "remove", "carol@example.test", "--yes").returncode == 0
    assert run(data, "config", "check").returncode == 0


def test_clear_errors(tmp_path: Path) -> None:
    r = run(tmp_path / "nothing", "user", "list")
    assert r.returncode == 1 and "mailyard --data" in r.stderr and "init" in r.stderr
    data = tmp_path / "data"
    run(data, "init", "--domain", "example.test")
    (data / "config.toml").write_text("[smtp]\nmax_mesage_size = 1\n")
    r = run(data, "serve")
    assert r.returncode == 1 and "max_mesage_size" in r.stderr and "max_message_size" in r.stderr
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        (data / "config.toml").write_text(
            f"[ports]\nsmtp = {port}\nsubmission = 0\nsmtps = 0\nimap = 0\nimaps = 0\n"
            "pop3 = 0\npop3s = 0\nhttp = 0\nmanagesieve = 0\n"
        )
        r = run(data, "serve")
        assert r.returncode == 1 and f"127.0.0.1:{port}" in r.stderr and "[ports]" in r.stderr
        # Every listener says the same, webmail too.
        (data / "config.toml").write_text(
            f"[ports]\nsmtp = 0\nsubmission = 0\nsmtps = 0\nimap = 0\nimaps = 0\n"
            f"pop3 = 0\npop3s = 0\nhttp = {port}\nmanagesieve = 0\n"
        )
        r = run(data, "serve")
        assert r.returncode == 1, r.stderr
        assert f"cannot listen for http (webmail) on 127.0.0.1:{port}" in r.stderr and "[ports]" in r.stderr, r.stderr
    finally:
        blocker.close()


@pytest.mark.parametrize("command", [[], ["user"], ["user", "add"], ["alias"], ["list"], ["domain"], ["serve"], ["init"]])
def test_help_everywhere(tmp_path: Path, command: list[str]) -> None:
    r = run(tmp_path, *command, "--help")
    assert r.returncode == 0 and "usage:" in r.stdout


def test_user_quota_sets_shows_and_removes_limits(tmp_path: Path) -> None:
    """`mailyard user quota ADDRESS --storage 2G --messages 100000`; `none`
    removes a limit; `user list` shows the limits of accounts that have any."""
    data = tmp_path / "data"
    assert run(data, "init", "--domain", "example.test", "--demo").returncode == 0
    r = run(data, "user", "quota", "alice@example.test", "--storage", "2G", "--messages", "100000")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "alice@example.test: storage 0 of 2G, messages 0 of 100000\n"
    listed = run(data, "user", "list").stdout.splitlines()
    assert "alice@example.test  storage 0 of 2G, messages 0 of 100000" in listed
    assert "bob@example.test" in listed
    r = run(data, "user", "quota", "alice@example.test", "--storage", "none")
    assert r.stdout == "alice@example.test: storage 0 (no limit), messages 0 of 100000\n"
    r = run(data, "user", "quota", "alice@example.test", "--storage", "1.5M")
    assert r.stdout == "alice@example.test: storage 0 of 1536K, messages 0 of 100000\n"
    assert run(data, "user", "quota", "alice@example.test").stdout == r.stdout  # shown, not changed
    r = run(data, "user", "quota", "alice@example.test", "--messages", "none", "--storage", "none")
    assert r.stdout == "alice@example.test: storage 0 (no limit), messages 0 (no limit)\n"
    assert "alice@example.test" in run(data, "user", "list").stdout.split()
    r = run(data, "user", "quota", "nobody@example.test", "--storage", "1G")
    assert r.returncode == 1 and "no account nobody@example.test" in r.stderr
    r = run(data, "user", "quota", "alice@example.test", "--storage", "lots")
    assert r.returncode == 2 and "not a size" in r.stderr


@pytest.mark.parametrize(("text", "words"), [
    ('[delivery]\nrelay_host = "smarthost.test"\nrelay_tls = "ssl"\n',
     ['\'delivery.relay_tls\' must be one of "starttls", "implicit", "opportunistic", "none"', 'write "implicit"']),
    ('[delivery]\nstarttls = "always"\n', ['"opportunistic", "require", "never"', 'not "always"']),
    ('[server]\nlog_level = "verbose"\n', ['"debug", "info", "warning", "error", "critical"']),
    ("[ports]\nsmtp = 70000\n", ["'ports.smtp' must be a port number from 0 to 65535, not 70000"]),
])
def test_config_check_and_serve_refuse_bad_values(tmp_path: Path, text: str, words: list[str]) -> None:
    data = tmp_path / "data"
    run(data, "init", "--domain", "example.test")
    (data / "config.toml").write_text(text)
    for command in (["config", "check"], ["serve"]):
        r = run(data, *command)
        assert r.returncode == 1, (command, r.stdout, r.stderr)
        for w in words:
            assert w in r.stderr, (command, r.stderr)


def test_user_add_checks_the_domain_before_the_password(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run(data, "init", "--domain", "example.test")
    r = run(data, "user", "add", "x@other.test", "--password-stdin", stdin="short\n")
    assert r.returncode == 1 and "other.test is not a local domain" in r.stderr, r.stderr
    assert "at least 8" not in r.stderr
    r = run(data, "user", "passwd", "nobody@example.test", "--password-stdin", stdin="short\n")
    assert r.returncode == 1 and "no account nobody@example.test" in r.stderr, r.stderr


def test_user_remove_asks_counts_and_cleans_aliases_and_lists(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run(data, "init", "--domain", "example.test", "--demo")
    assert run(data, "alias", "add", "info@example.test", "bob@example.test", "alice@example.test").returncode == 0
    assert run(data, "alias", "add", "only-bob@example.test", "bob@example.test").returncode == 0
    assert run(data, "list", "add", "team@example.test").returncode == 0
    assert run(data, "list", "subscribe", "team@example.test", "alice@example.test", "bob@example.test").returncode == 0
    # No terminal and no --yes: refused, nothing removed.
    r = run(data, "user", "remove", "bob@example.test")
    assert r.returncode == 1 and "pass --yes" in r.stderr and "0 message(s)" in r.stderr, r.stderr
    assert "bob@example.test" in run(data, "user", "list").stdout
    # On a terminal it asks; "n" keeps the account.
    status, transcript = _on_terminal(data, ["user", "remove", "bob@example.test"], "n")
    assert status == 1 and b"Delete bob@example.test and its 0 message(s)" in transcript
    assert b"[y/N]" in transcript and b"nothing removed" in transcript
    assert "bob@example.test" in run(data, "user", "list").stdout
    status, transcript = _on_terminal(data, ["user", "remove", "bob@example.test"], "y")
    assert status == 0 and b"removed user bob@example.test" in transcript, transcript
    assert "bob@example.test" not in run(data, "user", "list").stdout
    assert b"from the list(s) team@example.test" in transcript
    assert run(data, "list", "members", "team@example.test").stdout.split() == ["alice@example.test"]
    aliases = run(data, "alias", "list").stdout
    assert "info@example.test -> alice@example.test\n" in aliases and "only-bob" not in aliases
    r = run(data, "user", "remove", "alice@example.test", "--yes")
    assert r.returncode == 0 and "removed user alice@example.test" in r.stdout


def _on_terminal(data: Path, args: list[str], answer: str) -> tuple[int, bytes]:
    """Run a command on a pseudo-terminal, answer its one question, return
    (exit status, everything it printed)."""
    import os
    import pty
    import select
    import time

    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-m", "mailyard", "--data", str(data), *args])
    seen = b""
    answered = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not answered and b"[y/N]" in seen:
            os.write(fd, answer.encode() + b"\n")
            answered = True
        if select.select([fd], [], [], 0.5)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), seen


def test_catch_all_and_domain_alias_administration(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run(data, "init", "--domain", "example.test", "--demo")
    r = run(data, "alias", "add", "@example.test", "alice@example.test")
    assert r.returncode == 0, r.stderr
    assert "@example.test -> alice@example.test  (catch-all)" in run(data, "alias", "list").stdout
    r = run(data, "domain", "alias", "add", "Example.NET", "example.test")
    assert r.returncode == 0 and "example.net -> example.test" in r.stdout, r.stderr
    assert run(data, "domain", "list").stdout.splitlines() == ["example.net (alias of example.test)", "example.test"]
    assert run(data, "domain", "alias", "list").stdout == "example.net -> example.test\n"
    assert "example.net" not in run(data, "alias", "list").stdout
    r = run(data, "domain", "alias", "add", "example.net", "example.test")
    assert r.returncode == 1 and "local domain already" in r.stderr
    r = run(data, "domain", "alias", "add", "example.org", "nowhere.test")
    assert r.returncode == 1 and "nowhere.test is not a local domain" in r.stderr
    r = run(data, "user", "add", "x@example.net", "--password-stdin", stdin="long-enough-1\n")
    assert r.returncode == 1 and "alias of example.test" in r.stderr, r.stderr
    r = run(data, "domain", "remove", "example.net")
    assert r.returncode == 1 and "mailyard domain alias remove example.net" in r.stderr
    assert run(data, "domain", "alias", "remove", "example.net").returncode == 0
    assert run(data, "domain", "list").stdout.split() == ["example.test"]
    assert run(data, "alias", "remove", "@example.test").returncode == 0
    assert run(data, "alias", "list").stdout == ""


def test_mail_help_is_plain_text(tmp_path: Path) -> None:
    r = run(tmp_path, "mail", "--help")
    assert r.returncode == 0 and "--account NAME" in r.stdout
    assert "``" not in r.stdout, r.stdout


def test_readme_names_the_command_path_and_every_command_group() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert ".venv/bin/mailyard" in readme and "make install" in readme
    for command in ("mailyard queue list", "mailyard user apop-secret", "mailyard domain alias add",
                    "mailyard user remove ADDRESS [--yes]"):
        assert command in readme, command
    assert "/work/" not in readme  # no paths outside the repository
