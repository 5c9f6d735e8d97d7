"""Moving an account from Dovecot into mailyard over IMAP and back out as a
Maildir++ that Dovecot serves again (Debian dovecot-imapd, private instance
on loopback: bench/import_.py), compared message by message: the exact
bytes, flags, keywords and INTERNALDATE; UIDs and UIDVALIDITY too for the
export."""

from __future__ import annotations

import imaplib
import time
from pathlib import Path

import pytest
from bench.import_ import (
    FOLDERS,
    PASSWORD,
    USER,
    MaildirDovecot,
    build_account,
    mailyard,
    new_data_dir,
    read_imap,
    read_store,
)

from mailyard.transfer.importer import target_name
from tests.conftest import require_program

COUNT = 1000  # bench/import_.py moves 10,000


def _content(rows: list) -> list[tuple[bytes, frozenset[str], float]]:
    return [(data, flags, date) for _uid, data, flags, date in rows]


def _import(data: Path, port: int) -> str:
    r = mailyard(data, "import", "imap", "--host", "127.0.0.1", "--port", str(port), "--user", USER,
                 "--password-stdin", "--to", USER, stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_imap_import_and_maildir_export_round_trip_with_dovecot(tmp_path: Path) -> None:
    require_program("dovecot", "dovecot-imapd")
    account = build_account(COUNT)
    data = new_data_dir(tmp_path, USER)
    with MaildirDovecot(account=account) as dove:
        port = dove.ports["imap"]
        source = read_imap(port)
        folders = [name for name in source if not name.endswith(" UIDVALIDITY")]
        assert sorted(folders) == sorted(FOLDERS)
        every_flag = frozenset().union(*(f for rows in source.values() for _u, _d, f, _t in rows))
        # the source is meaningful: every system flag and keyword is on some message
        assert {"\\Seen", "\\Answered", "\\Flagged", "\\Draft", "\\Deleted", "$Label1", "work"} <= every_flag
        assert sum(len(source[f]) for f in folders) == COUNT

        out = _import(data, port)
        print(out)
        assert f"imported {COUNT} messages" in out
        store = read_store(data)
        for name in folders:
            assert _content(store[target_name(name.split("/"))]) == _content(source[name]), name

        # a re-run imports nothing
        out = _import(data, port)
        assert "imported 0 messages" in out and f"already there from an earlier run: {COUNT}" in out
        assert read_store(data) == store

        # a message new on the source comes over on the next run, and only it
        conn = imaplib.IMAP4("127.0.0.1", port)
        conn.login(USER, PASSWORD)
        new = b"From: late@remote.test\r\nSubject: late\r\n\r\nlate body\r\n"
        typ, _ = conn.append('"Lists/python"', "(\\Flagged todo)",
                             imaplib.Time2Internaldate(1_700_000_000), new)
        assert typ == "OK"
        conn.logout()
        out = _import(data, port)
        assert "imported 1 messages" in out
        store = read_store(data)
        assert store["Lists/python"][-1][1:] == (new, frozenset({"\\Flagged", "todo"}), 1_700_000_000.0)

    # the export, served by Dovecot as it is, shows the same messages, UIDs and UIDVALIDITY
    r = mailyard(data, "export", USER, str(tmp_path / "export"), "--format", "maildir")
    assert r.returncode == 0, r.stderr
    assert f"exported {COUNT + 1} messages" in r.stdout
    with MaildirDovecot(source=tmp_path / "export") as dove:
        served = read_imap(dove.ports["imap"])
    assert sorted(served) == sorted(store)
    for name, rows in store.items():
        assert served[name] == rows, name


def test_export_then_import_maildir_is_identical(tmp_path: Path) -> None:
    """A Maildir written by the export imports back into another account unchanged."""
    require_program("dovecot", "dovecot-imapd")
    account = build_account(200, seed=5)
    data = new_data_dir(tmp_path, USER, "copy@example.test")
    with MaildirDovecot(account=account) as dove:
        _import(data, dove.ports["imap"])
    original = read_store(data)
    assert mailyard(data, "export", USER, str(tmp_path / "x"), "--format", "maildir").returncode == 0
    started = time.monotonic()
    r = mailyard(data, "import", "maildir", str(tmp_path / "x"), "--to", "copy@example.test")
    assert r.returncode == 0, r.stderr
    print(f"maildir import of 200 messages: {time.monotonic() - started:.2f} s")
    copy = read_store(data, "copy@example.test")
    for name, rows in original.items():
        if not name.endswith(" UIDVALIDITY"):
            assert _content(copy[name]) == _content(rows), name


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
