"""Unit tests of the mail client's pure parts: reply/forward header rules,
HTML rendering, attachment names, id specs, account config and Maildir."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from mailyard.client import cli as client_cli
from mailyard.client.config import Account, AccountStore, ClientError, Endpoint, guess_endpoints
from mailyard.client.maildir import Maildir, UIDLState
from mailyard.client.render import (
    attachments,
    body_text,
    for_attaching,
    html_to_text,
    prefixed_subject,
    quote,
    reply_recipients,
    reply_threading,
    safe_filename,
)
from mailyard.message.compose import Attachment, compose, to_bytes
from mailyard.message.parse import parse_message

OWN = {"me@example.test", "me.alias@example.test"}


def msg(**headers: str):
    raw = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items()) + "\r\nbody\r\n"
    return parse_message(raw.encode())


def test_reply_threading_rfc5322_3_6_4() -> None:
    # Parent with References: References + parent id.
    m = msg(Message_ID="<c@x>", References="<a@x> <b@x>", In_Reply_To="<b@x>")
    assert reply_threading(m) == ("<c@x>", ["<a@x>", "<b@x>", "<c@x>"])
    # Parent without References but a single In-Reply-To id: that id + parent id.
    m = msg(Message_ID="<c@x>", In_Reply_To="<b@x>")
    assert reply_threading(m) == ("<c@x>", ["<b@x>", "<c@x>"])
    # Several In-Reply-To ids are not used (RFC 5322: only one can be the parent).
    m = msg(Message_ID="<c@x>", In_Reply_To="<a@x> <b@x>")
    assert reply_threading(m) == ("<c@x>", ["<c@x>"])
    assert reply_threading(msg(Subject="no id")) == (None, [])


def test_reply_recipients() -> None:
    m = msg(From="Ann <ann@x.test>", To="me@example.test, Bob <bob@x.test>",
            Cc="ME <ME@example.test>, carol@x.test, me.alias@example.test, bob@x.test")
    to, cc = reply_recipients(m, OWN, reply_all=False)
    assert [b.addr_spec for b in to] == ["ann@x.test"] and cc == []
    to, cc = reply_recipients(m, OWN, reply_all=True)
    assert [b.addr_spec for b in to] == ["ann@x.test"]
    assert [b.addr_spec for b in cc] == ["bob@x.test", "carol@x.test"]  # no self, no duplicates
    # Reply-To replaces From (RFC 5322 3.6.2).
    m = msg(From="ann@x.test", Reply_To="list@x.test", To="me@example.test")
    assert [b.addr_spec for b in reply_recipients(m, OWN, False)[0]] == ["list@x.test"]
    # Replying to one's own sent message goes to its recipients.
    m = msg(From="me@example.test", To="bob@x.test")
    assert [b.addr_spec for b in reply_recipients(m, OWN, False)[0]] == ["bob@x.test"]


@pytest.mark.parametrize(("subject", "prefix", "expected"), [
    ("Hello", "Re:", "Re: Hello"),
    ("Re: Hello", "Re:", "Re: Hello"),
    ("RE: Hello", "Re:", "RE: Hello"),
    ("AW: Hallo", "Re:", "AW: Hallo"),
    ("", "Re:", "Re:"),
    ("Hello", "Fwd:", "Fwd: Hello"),
    ("Fw: Hello", "Fwd:", "Fw: Hello"),
    ("Re: Hello", "Fwd:", "Fwd: Re: Hello"),
])
def test_prefixed_subject(subject: str, prefix: str, expected: str) -> None:
    assert prefixed_subject(subject, prefix) == expected


def test_quote() -> None:
    assert quote("a\n\n> b\n") == "> a\n>\n>> b\n"


def test_html_to_text() -> None:
    text = html_to_text(
        "<html><head><title>t</title><style>x{}</style><script>alert(1)</script></head><body>"
        "<p>One &amp; <i>two</i></p><p>Three<br>four</p><ul><li>a</li><li>b</li></ul>"
        "<a href='https://x.test/'>site</a> <img alt='logo' src='x.png'>"
        "<blockquote>quoted</blockquote></body></html>")
    assert "One & two" in text and "Three\nfour" in text
    assert "  * a\n  * b" in text
    assert "site <https://x.test/>" in text and "[logo]" in text
    assert "> quoted" in text
    assert "alert" not in text and "x{}" not in text


def test_body_and_attachments() -> None:
    m = parse_message(to_bytes(compose(
        "a@x.test", "b@x.test", subject="s", text="plain text", html="<p>html</p>",
        attachments=[Attachment("../../etc/passwd", b"\x00\x01"), Attachment("r.txt", "hi", "text/plain")])))
    assert body_text(m) == ("plain text\n", "plain")
    atts = attachments(m)
    assert [(a.filename, a.size) for a in atts] == [("../../etc/passwd", 2), ("r.txt", 3)]
    html_only = compose("a@x.test", "b@x.test", text="x")
    html_only.set_content("<p>only <b>html</b></p>", subtype="html")
    text, kind = body_text(parse_message(to_bytes(html_only)))
    assert kind == "html" and text.strip() == "only html"


def test_safe_filename(tmp_path: Path) -> None:
    assert safe_filename("../../etc/passwd", tmp_path) == tmp_path / "passwd"
    assert safe_filename("..\\..\\boot.ini", tmp_path) == tmp_path / "boot.ini"
    assert safe_filename(".bashrc", tmp_path) == tmp_path / "bashrc"
    assert safe_filename("", tmp_path) == tmp_path / "attachment"
    (tmp_path / "a.txt").write_text("x")
    assert safe_filename("a.txt", tmp_path) == tmp_path / "a-1.txt"


def test_parse_ids() -> None:
    assert client_cli.parse_ids("3") == [3]
    assert client_cli.parse_ids("3,5, 9-11") == [3, 5, 9, 10, 11]
    assert client_cli.parse_ids("4:2") == [2, 3, 4]
    for bad in ("x", "0", "", "-"):
        with pytest.raises(ClientError):
            client_cli.parse_ids(bad)


def test_guess_endpoints() -> None:
    eps = guess_endpoints("Ann@Example.ORG")
    assert eps["imap"] == Endpoint("imap.example.org", 993, "ssl")
    assert eps["pop3"] == Endpoint("pop.example.org", 995, "ssl")
    assert eps["smtp"] == Endpoint("smtp.example.org", 587, "starttls")


def test_account_store_roundtrip_and_passwords(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = AccountStore(tmp_path)
    acct = Account(name="work", address="ann@x.test", display_name='Ann "the" Ü',
                   imap=Endpoint("imap.x.test", 993, "ssl"), aliases=["a@x.test"], tls_verify=False)
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
    assert client_cli._body(args, template="> quoted\n") == "> quoted\nwritten in the editor\n"
    script.write_text("")  # an editor that changes nothing: nothing is sent
    with pytest.raises(ClientError, match="empty message"):
        client_cli._body(args, template="> quoted\n")


def test_forwarding_an_8bit_message_keeps_it_readable() -> None:
    orig = (b"From: J\xc3\xb6rg <a@b.test>\r\nTo: d@e.test\r\nSubject: caf\xc3\xa9\r\n"
            b"Received: from x by y; Tue, 01 Oct 2024 10:00:00 +0200\r\n"
            b"Received: from w by x; Tue, 01 Oct 2024 09:59:00 +0200\r\n"
            b"Date: Tue, 01 Oct 2024 10:00:00 +0200\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n")
    out = to_bytes(compose("x@y.test", "q@r.test", text="FYI", attachments=[for_attaching(parse_message(orig))]))
    assert out.isascii() and b"unknown-8bit" not in out
    inner = next(parse_message(out).iter_attachments()).get_content()
    assert str(inner["From"]) == "Jörg <a@b.test>" and inner["Subject"] == "café"
    assert [k for k, _v in inner.items()][:4] == ["From", "To", "Subject", "Received"]
    assert inner.get_content().rstrip() == "Grüße"


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
