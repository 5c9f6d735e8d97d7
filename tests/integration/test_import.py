"""``mailyard import`` and ``mailyard export`` on files, through the command
(subprocesses) into a real SQLite store: mbox (LF and CRLF, quoting,
truncation, bad input), Maildir++ layouts, a Maildir tree, quota, re-runs and
an interrupted batch."""

from __future__ import annotations

import asyncio
import imaplib
import os
from pathlib import Path

from bench.import_ import mailyard, new_data_dir, read_store

from mailyard.store import open_store
from mailyard.store.api import AppendItem
from mailyard.store.import_state import ImportState
from mailyard.store.keywords import MAX_KEYWORD_OCTETS, MAX_KEYWORDS
from mailyard.transfer.importer import Importer, Incoming, digest
from mailyard.transfer.progress import Summary
from tests.conftest import USERS, RunningServer
from tests.unit.test_transfer_mbox import LF_MBOX

A = "alice@example.test"


def _folders(data: Path, address: str = A) -> dict[str, list]:
    return {k: v for k, v in read_store(data, address).items() if not k.endswith(" UIDVALIDITY")}


def test_mbox_files_lf_crlf_truncated_and_bad(tmp_path: Path) -> None:
    data = new_data_dir(tmp_path, A)
    (tmp_path / "lf.mbox").write_bytes(LF_MBOX)
    (tmp_path / "crlf.mbox").write_bytes(LF_MBOX.replace(b"\n", b"\r\n").replace(b"Subject: one", b"Subject: 1"))
    (tmp_path / "cut.mbox").write_bytes(b"From c@x Thu Nov 16 10:00:00 2023\nSubject: cut\n\nthe body stops he")
    (tmp_path / "notmbox").write_bytes(b"Subject: hello\n\nnot an mbox\n")
    (tmp_path / "garbage.mbox").write_bytes(b"From x Tue Nov 14 22:13:20 2023\n\x00\x01junk\n")
    files = [str(tmp_path / n) for n in ("lf.mbox", "crlf.mbox", "cut.mbox", "notmbox", "garbage.mbox")]
    r = mailyard(data, "import", "mbox", *files, "--to", A, "--folder", "Old/Mail")
    assert r.returncode == 0, r.stderr
    assert "imported 5 messages" in r.stdout
    assert "skipped 1: not a message" in r.stdout and "skipped 1: not an mbox file" in r.stdout
    assert "cut.mbox: message 1 (the last) ends in the middle of a line" in r.stderr
    assert "notmbox: not an mbox file" in r.stderr
    box = _folders(data)["Old/Mail"]
    assert [row[1] for row in box] == [
        b"From: alice@example.test\r\nSubject: one\r\n\r\nhello\r\nFrom the quoted line\r\n"
        b">From a line quoted twice\r\n",
        b"From: bob@example.test\r\nSubject: two\r\n\r\nbody two\r\nFrom a line after a non-empty line is body\r\n",
        b"From: alice@example.test\r\nSubject: 1\r\n\r\nhello\r\nFrom the quoted line\r\n"
        b">From a line quoted twice\r\n",
        b"From: bob@example.test\r\nSubject: two\r\n\r\nbody two\r\nFrom a line after a non-empty line is body\r\n",
        b"Subject: cut\r\n\r\nthe body stops he",
    ]
    assert box[0][2] == {"\\Seen", "\\Answered", "\\Flagged", "\\Draft", "$Label1", "work"}
    assert box[0][3] == 1700000000.0
    assert "Old" in _folders(data)  # the parent exists too
    # A re-run imports nothing, the identical second message included.
    r = mailyard(data, "import", "mbox", *files, "--to", A, "--folder", "Old/Mail")
    assert "imported 0 messages" in r.stdout and "already there from an earlier run: 5" in r.stdout
    assert len(_folders(data)["Old/Mail"]) == 5
    # Export as mboxrd and import that into another account: the same messages.
    assert mailyard(data, "user", "add", "b@example.test", "--password-stdin",
                    stdin="user-password-1\n").returncode == 0
    r = mailyard(data, "export", A, str(tmp_path / "out"), "--format", "mbox")
    assert r.returncode == 0 and "exported 5 messages" in r.stdout
    r = mailyard(data, "import", "mbox", str(tmp_path / "out" / "Old" / "Mail.mbox"), "--to", "b@example.test")
    assert r.returncode == 0 and "imported 5 messages" in r.stdout
    copy = _folders(data, "b@example.test")["INBOX"]
    assert [row[1:] for row in copy[:4]] == [row[1:] for row in box[:4]]
    # mbox has no way to say "no line end after the last line": the cut message gains one
    assert copy[4][1] == box[4][1] + b"\r\n"


def _maildir(root: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        for folder in (root, root / ".Sent", root / ".Lists.foo", root / ".Caf&AOk-"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    (root / ".Lists.foo" / "dovecot-keywords").write_text("0 $Label1\n1 work\n")
    files = {
        root / "cur" / "1600000000.M1P1.h,S=30:2,S": b"Subject: in\n\nfirst\n",
        root / "new" / "1600000100.M2P1.h": b"Subject: new\n\nunseen\n",
        root / "cur" / "1600000200.M3P1.h:2,S": b"\x89PNG not a message at all",
        root / ".Sent" / "cur" / "1600000300.M4P1.h:2,RS": b"Subject: sent\r\n\r\nreplied\r\n",
        root / ".Lists.foo" / "cur" / "1600000400.M5P1.h:2,Fab": b"Subject: list\n\nkeywords\n",
        root / ".Caf&AOk-" / "cur" / "1600000500.M6P1.h:2,T": b"Subject: cafe\n\ntrashed\n",
    }
    for n, (path, content) in enumerate(files.items()):
        path.write_bytes(content)
        os.utime(path, (1_650_000_000 + n, 1_650_000_000 + n))


def test_maildir_plus_plus_layout(tmp_path: Path) -> None:
    data = new_data_dir(tmp_path, A)
    _maildir(tmp_path / "Maildir")
    r = mailyard(data, "import", "maildir", str(tmp_path / "Maildir"), "--to", A)
    assert r.returncode == 0, r.stderr
    assert "imported 5 messages" in r.stdout and "skipped 1: not a message" in r.stdout
    assert "1600000200.M3P1.h:2,S: not a message" in r.stderr
    got = _folders(data)
    assert [row[1:] for row in got["INBOX"]] == [
        (b"Subject: in\r\n\r\nfirst\r\n", frozenset({"\\Seen"}), 1_650_000_000.0),
        (b"Subject: new\r\n\r\nunseen\r\n", frozenset(), 1_650_000_001.0)]
    assert [row[1:] for row in got["Sent"]] == [
        (b"Subject: sent\r\n\r\nreplied\r\n", frozenset({"\\Answered", "\\Seen"}), 1_650_000_003.0)]
    assert got["Lists/foo"][0][2] == {"\\Flagged", "$Label1", "work"}
    assert got["Café"][0][2] == {"\\Deleted"}
    r = mailyard(data, "import", "maildir", str(tmp_path / "Maildir"), "--to", A)
    assert "imported 0 messages" in r.stdout and "already there from an earlier run: 5" in r.stdout


def test_maildir_tree_one_maildir_per_user(tmp_path: Path) -> None:
    data = new_data_dir(tmp_path, A, "bob@example.test")
    _maildir(tmp_path / "tree" / "alice" / "Maildir")
    _maildir(tmp_path / "tree" / "bob")
    _maildir(tmp_path / "tree" / "nobody")
    (tmp_path / "tree" / "empty").mkdir()
    r = mailyard(data, "import", "maildir-tree", str(tmp_path / "tree"), "--domain", "Example.test")
    assert r.returncode == 0, r.stderr
    assert "imported 10 messages" in r.stdout
    assert "skipped 1: no such account" in r.stdout and "skipped 1: not a Maildir (no cur/ or new/)" in r.stdout
    assert "mailyard user add nobody@example.test" in r.stderr
    assert len(_folders(data, "bob@example.test")["Lists/foo"]) == 1


def test_quota_applies_and_a_rerun_goes_on(tmp_path: Path) -> None:
    data = new_data_dir(tmp_path, A)
    assert mailyard(data, "user", "quota", A, "--messages", "1").returncode == 0
    (tmp_path / "lf.mbox").write_bytes(LF_MBOX)
    r = mailyard(data, "import", "mbox", str(tmp_path / "lf.mbox"), "--to", A)
    assert r.returncode == 1 and "quota" in r.stderr and "run the import again" in r.stderr
    assert "imported 0 messages" in r.stdout
    assert mailyard(data, "user", "quota", A, "--messages", "none").returncode == 0
    r = mailyard(data, "import", "mbox", str(tmp_path / "lf.mbox"), "--to", A)
    assert r.returncode == 0 and "imported 2 messages" in r.stdout


def test_keywords_past_a_folders_bound_are_left_out_not_the_messages(tmp_path: Path) -> None:
    """A folder holds at most MAX_KEYWORDS keywords of MAX_KEYWORD_OCTETS
    (store/keywords.py): an import keeps every message, without the keywords
    past that, and its summary says how many were left out."""
    data = new_data_dir(tmp_path, A)
    long_ = "Thunderbird_tag_" + "x" * MAX_KEYWORD_OCTETS
    (tmp_path / "a.mbox").write_bytes(
        b"From a@x Thu Nov 16 10:00:00 2023\nX-Keywords: ok " + long_.encode() + b"\nSubject: one\n\nhello\n\n"
        b"From a@x Thu Nov 16 10:00:00 2023\nSubject: two\n\nworld\n")
    r = mailyard(data, "import", "mbox", str(tmp_path / "a.mbox"), "--to", A, "--folder", "Old")
    assert r.returncode == 0, r.stderr
    assert "imported 2 messages" in r.stdout and "warning: 1 keyword left out in Old" in r.stdout, r.stdout
    assert [m[2] for m in _folders(data)["Old"]] == [{"ok"}, frozenset()]
    (tmp_path / "b.mbox").write_bytes(b"".join(
        b"From a@x Thu Nov 16 10:00:00 2023\nX-Keywords: tag%03d\nSubject: m%d\n\nbody %d\n\n" % (i, i, i)
        for i in range(MAX_KEYWORDS + 44)))
    r = mailyard(data, "import", "mbox", str(tmp_path / "b.mbox"), "--to", A, "--folder", "Many")
    assert r.returncode == 0, r.stderr
    assert f"imported {MAX_KEYWORDS + 44} messages" in r.stdout and "warning: 44 keywords left out in Many" in r.stdout
    many = _folders(data)["Many"]
    assert len(many) == MAX_KEYWORDS + 44 and len({k for m in many for k in m[2]}) == MAX_KEYWORDS


def test_bad_input_gives_clear_errors(tmp_path: Path) -> None:
    data = new_data_dir(tmp_path, A)
    r = mailyard(data, "import", "mbox", str(tmp_path / "missing.mbox"), "--to", A)
    assert r.returncode == 1 and "missing.mbox does not exist" in r.stderr
    (tmp_path / "x.mbox").write_bytes(LF_MBOX)
    r = mailyard(data, "import", "mbox", str(tmp_path / "x.mbox"), "--to", "nobody@example.test")
    assert r.returncode == 1 and "mailyard user add nobody@example.test" in r.stderr
    r = mailyard(data, "import", "imap", "--host", "127.0.0.1", "--port", "1", "--user", "u",
                 "--password-stdin", "--to", A, stdin="pw\n")
    assert r.returncode == 1 and "127.0.0.1:1" in r.stderr
    for argv in (["import", "--help"], ["import", "imap", "--help"], ["import", "mbox", "--help"],
                 ["import", "maildir", "--help"], ["import", "maildir-tree", "--help"], ["export", "--help"]):
        r = mailyard(data, *argv)
        assert r.returncode == 0 and "usage: mailyard" in r.stdout, argv


def test_an_interrupted_batch_is_settled_not_duplicated(tmp_path: Path) -> None:
    """A batch that reached the store but not the import state (a crash between
    the two commits) is found on the next run and not written again; a batch
    that never reached the store is imported."""
    data = new_data_dir(tmp_path, A)
    written = [Incoming(b"Subject: a\r\n\r\na\r\n", "k1"), Incoming(b"Subject: b\r\n\r\nb\r\n", "k2")]
    lost = [Incoming(b"Subject: c\r\n\r\nc\r\n", "k3")]

    async def crash() -> None:
        store = open_store(data, background=False)
        state = ImportState.in_data_dir(data)
        try:
            account = await store.get_account(A)
            assert account is not None
            box = await store.get_mailbox(account.id, "INBOX")
            assert box is not None
            state.begin(A, "src", box.id, box.uid_validity, box.uid_next,
                        [(m.key, digest(m.data)) for m in written + lost])
            await store.append_many(box, [AppendItem(m.data)
                                          for m in written])
            # ... and the process dies here, before state.commit

            importer = Importer(store, account, state, Summary())
            await importer.settle_pending()
            assert state.pending(A) == []
            await importer.add("INBOX", "src", written + lost)
            assert (importer.summary.imported, importer.summary.already) == (1, 2)
        finally:
            state.close()
            await store.close()

    asyncio.run(crash())
    assert [row[1] for row in _folders(data)["INBOX"]] == [m.data for m in written + lost]


def test_import_into_a_running_server(tmp_path: Path, mailserver: RunningServer) -> None:
    """The import writes through the store while ``serve`` runs (the store
    serialises writers of several processes): a session that selects INBOX
    afterwards reads the new messages, exact bytes and flags."""
    (tmp_path / "lf.mbox").write_bytes(LF_MBOX)
    r = mailyard(mailserver.data_dir, "import", "mbox", str(tmp_path / "lf.mbox"), "--to", A)
    assert r.returncode == 0 and "imported 2 messages" in r.stdout, r.stderr
    c = imaplib.IMAP4(mailserver.host, mailserver.port("imap"), timeout=10)
    c.login(A, USERS[A])
    assert c.select("INBOX") == ("OK", [b"2"])
    typ, data = c.fetch("1:2", "(FLAGS BODY.PEEK[])")
    assert b"\\Answered \\Flagged \\Seen \\Draft" in data[0][0] and b"$Label1 work" in data[0][0]
    assert data[2][1] == (b"From: bob@example.test\r\nSubject: two\r\n\r\nbody two\r\n"
                          b"From a line after a non-empty line is body\r\n")
    c.logout()


def test_imap_import_over_starttls_from_another_mailyard(tmp_path: Path, mailserver: RunningServer) -> None:
    """The IMAP source over STARTTLS (RFC 9051 6.2.1), here mailyard itself:
    folders with hierarchy, flags, keywords and INTERNALDATE come over; the
    source is only EXAMINEd, so its \\\\Seen flags and \\\\Recent stay as they were."""
    c = imaplib.IMAP4(mailserver.host, mailserver.port("imap"), timeout=10)
    c.login(A, USERS[A])
    assert c.create("Projects/2024")[0] == "OK"
    appended = [("INBOX", b"Subject: a\r\n\r\nfirst\r\n", "(\\Seen)", 1_700_000_000),
                ("Projects/2024", b"Subject: b\r\n\r\nsecond\r\n", "(\\Flagged todo)", 1_700_000_100),
                ("Sent", b"Subject: c\r\n\r\nthird\r\n", "()", 1_700_000_200)]
    for folder, data, flags, when in appended:
        assert c.append(folder, flags, imaplib.Time2Internaldate(when), data)[0] == "OK"
    c.logout()
    data = new_data_dir(tmp_path, A)
    r = mailyard(data, "import", "imap", "--host", mailserver.host, "--port", str(mailserver.port("imap")),
                 "--starttls", "--insecure", "--user", A, "--password-stdin", "--to", A,
                 stdin=USERS[A] + "\n")
    assert r.returncode == 0, r.stderr
    assert "imported 3 messages" in r.stdout
    got = _folders(data)
    assert [row[1:] for row in got["INBOX"]] == [(appended[0][1], frozenset({"\\Seen"}), 1_700_000_000.0)]
    assert [row[1:] for row in got["Projects/2024"]] == [
        (appended[1][1], frozenset({"\\Flagged", "todo"}), 1_700_000_100.0)]
    assert [row[1:] for row in got["Sent"]] == [(appended[2][1], frozenset(), 1_700_000_200.0)]
    assert "Projects" in got
    # without --insecure the self-signed certificate is refused, clearly
    r = mailyard(data, "import", "imap", "--host", mailserver.host, "--port", str(mailserver.port("imap")),
                 "--starttls", "--user", A, "--password-stdin", "--to", A, stdin=USERS[A] + "\n")
    assert r.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in r.stderr


def test_maildir_export_keeps_odd_folder_names(tmp_path: Path) -> None:
    """A "." inside a folder name (listescape's backslash-2e in Maildir++) and
    non-ASCII names (modified UTF-7) survive export and import."""
    data = new_data_dir(tmp_path, A, "b@example.test")

    async def seed() -> None:
        store = open_store(data, background=False)
        try:
            account = await store.get_account(A)
            assert account is not None
            for name in ("Releases", "Releases/v1.2", "Grüße"):
                box = await store.create_mailbox(account.id, name)
                await store.append(box, f"Subject: {name}\r\n\r\nx\r\n".encode(), ["\\Seen"], 1_700_000_000)
        finally:
            await store.close()

    asyncio.run(seed())
    assert mailyard(data, "export", A, str(tmp_path / "x")).returncode == 0
    assert (tmp_path / "x" / ".Releases.v1\\2e2" / "maildirfolder").exists()
    r = mailyard(data, "import", "maildir", str(tmp_path / "x"), "--to", "b@example.test")
    assert r.returncode == 0 and "imported 3 messages" in r.stdout, r.stderr
    got = _folders(data, "b@example.test")
    for name in ("Releases", "Releases/v1.2", "Grüße"):
        assert [row[1:] for row in got[name]] == [
            (f"Subject: {name}\r\n\r\nx\r\n".encode(), frozenset({"\\Seen"}), 1_700_000_000.0)]


def test_export_again_into_the_same_maildir_updates_it(tmp_path: Path) -> None:
    """A second export into the same DEST writes only new messages and renames
    the files whose flags changed: no duplicates."""
    data = new_data_dir(tmp_path, A)
    (tmp_path / "lf.mbox").write_bytes(LF_MBOX)
    assert mailyard(data, "import", "mbox", str(tmp_path / "lf.mbox"), "--to", A).returncode == 0
    r = mailyard(data, "export", A, str(tmp_path / "x"))
    assert "exported 2 messages" in r.stdout
    before = sorted(os.listdir(tmp_path / "x" / "cur"))
    assert [n.rpartition(":2,")[2] for n in before] == ["DFRSab", ""]
    assert (tmp_path / "x" / "dovecot-keywords").read_text() == "0 $Label1\n1 work\n"

    async def change() -> None:
        store = open_store(data, background=False)
        try:
            account = await store.get_account(A)
            assert account is not None
            box = await store.get_mailbox(account.id, "INBOX")
            assert box is not None
            await store.store_flags(box, [2], ["\\Seen", "later"], "add")
            await store.append(box, b"Subject: third\r\n\r\n3\r\n", [], 1_700_000_000)
        finally:
            await store.close()

    asyncio.run(change())
    r = mailyard(data, "export", A, str(tmp_path / "x"))
    assert "exported 1 messages" in r.stdout and "already there from an earlier run: 2" in r.stdout
    after = sorted(os.listdir(tmp_path / "x" / "cur"))
    assert len(after) == 3 and before[0] in after and before[1] + "Sc" in after
    assert (tmp_path / "x" / "dovecot-keywords").read_text() == "0 $Label1\n1 work\n2 later\n"
