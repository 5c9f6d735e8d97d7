"""Unit tests of the mail client's own parts: saving attachments, id specs,
account config, the editor and Maildir. Reading and answering rules are the
message layer's: tests/unit/test_message_reading.py, test_message_reply.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from mailyard.client.commands import sending
from mailyard.client.commands.common import parse_ids
from mailyard.client.config import Account, AccountStore, ClientError, Endpoint, guess_endpoints
from mailyard.client.maildir import Maildir, UIDLState
from mailyard.client.render import safe_filename


def test_safe_filename(tmp_path: Path) -> None:
    assert safe_filename("../../etc/passwd", tmp_path) == tmp_path / "passwd"
    assert safe_filename("..\\..\\boot.ini", tmp_path) == tmp_path / "boot.ini"
    assert safe_filename(".bashrc", tmp_path) == tmp_path / "bashrc"
    assert safe_filename("", tmp_path) == tmp_path / "attachment"
    (tmp_path / "a.txt").write_text("x")
    assert safe_filename("a.txt", tmp_path) == tmp_path / "a-1.txt"


def test_parse_ids() -> None:
    assert parse_ids("3") == [3]
    assert parse_ids("3,5, 9-11") == [3, 5, 9, 10, 11]
    assert parse_ids("4:2") == [2, 3, 4]
    for bad in ("x", "0", "", "-"):
        with pytest.raises(ClientError):
            parse_ids(bad)


def test_guess_endpoints() -> None:
    eps = guess_endpoints("Ann@Example.ORG")
    assert eps["imap"] == Endpoint("imap.example.org", 993, "implicit")
    assert eps["pop3"] == Endpoint("pop.example.org", 995, "implicit")
    assert eps["smtp"] == Endpoint("smtp.example.org", 587, "starttls")


def test_account_store_roundtrip_and_passwords(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = AccountStore(tmp_path)
    acct = Account(name="work", address="ann@x.test", display_name='Ann "the" Ü',
                   imap=Endpoint("imap.x.test", 993, "implicit"), aliases=["a@x.test"], tls_verify=False)
    acct.password_file = str(store.write_password("work", "s3cret"))
    store.accounts["work"] = acct
    store.default = "work"
    store.save()
    assert (tmp_path / "passwords" / "work").stat().st_mode & 0o777 == 0o600
    again = AccountStore(tmp_path)
    got = again.get(None)
    assert got == acct and got.password() == "s3cret"
    assert again.get("ann@x.test") is got
    os.chmod(acct.password_file, 0o644)
    with pytest.raises(ClientError, match="readable by others"):
        got.password()
    got.password_file, got.password_env = "", "MY_MAIL_PW"
    monkeypatch.setenv("MY_MAIL_PW", "from-env")
    assert got.password() == "from-env"
    got.password_env, got.password_command = "", "printf 'from-cmd\\nextra'"
    assert got.password() == "from-cmd"
    got.password_command = "exit 3"
    with pytest.raises(ClientError, match="exited with 3"):
        got.password()
    with pytest.raises(ClientError, match="no account"):
        again.get("nobody")
    (tmp_path / "accounts.toml").write_text('[accounts.x]\naddress = "a@b"\ntypo = 1\n')
    with pytest.raises(ClientError, match="unknown setting 'typo'"):
        AccountStore(tmp_path)


def test_maildir_and_uidl_state(tmp_path: Path) -> None:
    box = Maildir(tmp_path / "md")
    path = box.add(b"Subject: x\r\n\r\nbody\r\n")
    assert path.parent.name == "new" and path.read_bytes() == b"Subject: x\n\nbody\n"
    assert list((tmp_path / "md" / "tmp").iterdir()) == []
    assert box.add(b"x") != path
    state = UIDLState(tmp_path / "uidl")
    assert state.load() == set()
    state.add("a")
    state.add("b")
    assert state.load() == {"a", "b"}
    state.prune({"b", "c"})
    assert state.load() == {"b"}


def test_body_from_editor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    script = tmp_path / "ed.py"
    script.write_text("import sys\nopen(sys.argv[1], 'a').write('written in the editor\\n')\n")
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    args = argparse.Namespace(body=None, body_file=None)
    assert sending._body(args, template="> quoted\n") == "> quoted\nwritten in the editor\n"
    script.write_text("")  # an editor that changes nothing: nothing is sent
    with pytest.raises(ClientError, match="empty message"):
        sending._body(args, template="> quoted\n")


def test_safe_filename_long_names_and_dangling_links(tmp_path: Path) -> None:
    # at most 200 octets (NAME_MAX is 255 octets, not characters)
    assert len(safe_filename("ä" * 300, tmp_path).name.encode()) <= 200
    # a dangling symlink counts as taken: writing through it would leave tmp_path
    (tmp_path / "x.txt").symlink_to(tmp_path.parent / "outside.txt")
    assert safe_filename("x.txt", tmp_path) == tmp_path / "x-1.txt"


def test_save_attachment_never_follows_or_overwrites(tmp_path: Path) -> None:
    from mailyard.client.render import save_attachment

    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "victim"
    (out / "a.bin").symlink_to(target)
    path = save_attachment("../../a.bin", out, b"data")
    assert path.parent == out and path.read_bytes() == b"data" and not target.exists()
    assert save_attachment("/etc/passwd", out, b"p") == out / "passwd"
    assert save_attachment("/etc/passwd", out, b"q") == out / "passwd-1"
    assert (out / "passwd").read_bytes() == b"p"


def test_old_security_words_load_with_a_deprecation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """accounts.toml written with ssl/plain still loads, as implicit/none, and
    says which word to write; an unknown word is an error listing the words."""
    (tmp_path / "accounts.toml").write_text(
        '[accounts.a]\naddress = "a@x.test"\n[accounts.a.imap]\nhost = "h"\nport = 993\nsecurity = "ssl"\n'
        '[accounts.a.smtp]\nhost = "h"\nport = 25\nsecurity = "plain"\n'
    )
    acct = AccountStore(tmp_path).accounts["a"]
    assert (acct.imap.security, acct.smtp.security) == ("implicit", "none")
    err = capsys.readouterr().err
    assert 'security "ssl" is deprecated, write "implicit"' in err
    assert 'security "plain" is deprecated, write "none"' in err
    (tmp_path / "accounts.toml").write_text(
        '[accounts.a]\naddress = "a@x.test"\n[accounts.a.imap]\nhost = "h"\nport = 993\nsecurity = "tls1.3"\n'
    )
    with pytest.raises(ClientError, match='security must be one of implicit, starttls, none, not "tls1.3"'):
        AccountStore(tmp_path)


def test_smtp_auth_word_is_checked(tmp_path: Path) -> None:
    (tmp_path / "accounts.toml").write_text('[accounts.a]\naddress = "a@x.test"\nsmtp_auth = "always"\n')
    with pytest.raises(ClientError, match='smtp_auth must be one of auto, yes, no, not "always"'):
        AccountStore(tmp_path)
