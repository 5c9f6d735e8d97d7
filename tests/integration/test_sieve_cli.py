"""``mailyard sieve`` as an administrator uses it (subprocesses): put
(checked first), list, get, activate, check with line and column, and a
dry run (``test``) that prints the actions and delivers nothing."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_cli import run

SCRIPT = ('require ["fileinto", "envelope", "subaddress"];\n'
          'if envelope :detail "to" "shop" { fileinto "Shop"; stop; }\n'
          'if header :contains "subject" "report" { fileinto "Reports"; }\n')
MESSAGE = "From: carol@remote.test\r\nTo: alice@example.test\r\nSubject: Monthly report\r\n\r\nhi\r\n"


def test_sieve_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run(data, "init", "--domain", "example.test", "--demo").returncode == 0
    script = tmp_path / "main.sieve"
    script.write_text(SCRIPT)
    bad = tmp_path / "bad.sieve"
    bad.write_text('require "fileinto";\nif header :is "subject" {\n  keep;\n}\n')
    msg = tmp_path / "msg.eml"
    msg.write_text(MESSAGE)

    r = run(data, "sieve", "check", str(bad))
    assert r.returncode == 1
    assert r.stderr == (f"mailyard: error: {bad}: line 2, column 4: test 'header' takes 2 positional "
                        "argument(s), got 1\n")
    r = run(data, "sieve", "check", str(script))
    assert r.returncode == 0 and r.stdout == f"{script}: OK (8 commands and tests; requires envelope, fileinto, " \
                                             "subaddress)\n", r.stdout
    r = run(data, "sieve", "put", "alice@example.test", "broken", str(bad))
    assert r.returncode == 1 and "not stored: line 2, column 4" in r.stderr
    r = run(data, "sieve", "put", "alice@example.test", "main", str(script))
    assert r.returncode == 0 and r.stdout == "stored 'main' for alice@example.test\n"
    r = run(data, "sieve", "put", "alice@example.test", "other", "-", stdin="keep;\n")
    assert r.returncode == 0
    assert run(data, "sieve", "list", "alice@example.test").stdout == "main\nother\n"
    assert run(data, "sieve", "activate", "alice@example.test", "main").returncode == 0
    assert run(data, "sieve", "list", "alice@example.test").stdout == "main  (active)\nother\n"
    assert run(data, "sieve", "get", "alice@example.test", "main").stdout == SCRIPT
    r = run(data, "sieve", "delete", "alice@example.test", "main")
    assert r.returncode == 1 and "the active script cannot be deleted" in r.stderr

    r = run(data, "sieve", "test", "alice@example.test", str(msg), "--from", "carol@remote.test")
    assert r.returncode == 0 and r.stdout == "fileinto 'Reports'\n", r.stdout + r.stderr
    r = run(data, "sieve", "test", "alice@example.test", str(msg), "--to", "alice+shop@example.test")
    assert r.stdout == "fileinto 'Shop'\n"
    # spamtest: the file's verdict fields stand for this server's (the operator's own file)
    spamtest = tmp_path / "spamtest.sieve"
    spamtest.write_text('require ["spamtest", "relational", "comparator-i;ascii-numeric", "fileinto"];\n'
                        'if spamtest :value "ge" :comparator "i;ascii-numeric" "6" { fileinto "Junk"; }\n'
                        'elsif spamtest :is "0" { fileinto "Untested"; }\n')
    spam = tmp_path / "spam.eml"
    spam.write_text("X-Spam-Status: Yes, score=7.5 required=6.0 tests=TEST_BL\r\n" + MESSAGE)
    r = run(data, "sieve", "test", "alice@example.test", str(spam), "--script", str(spamtest))
    assert r.stdout == "fileinto 'Junk'\n", r.stdout + r.stderr
    r = run(data, "sieve", "test", "alice@example.test", str(msg), "--script", str(spamtest))
    assert r.stdout == "fileinto 'Untested'\n", r.stdout + r.stderr
    r = run(data, "sieve", "test", "alice@example.test", str(msg), "--script", str(tmp_path / "none"))
    assert r.returncode == 1 and "cannot read" in r.stderr
    assert run(data, "sieve", "deactivate", "alice@example.test").returncode == 0
    r = run(data, "sieve", "test", "alice@example.test", str(msg))
    assert r.returncode == 1 and "has no active script" in r.stderr
    r = run(data, "sieve", "list", "nobody@example.test")
    assert r.returncode == 1 and "no account nobody@example.test" in r.stderr
