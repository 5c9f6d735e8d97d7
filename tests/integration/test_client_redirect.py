"""`mailyard mail redirect` against a real server: the message goes on
unchanged with a resent block naming the user (RFC 5322 3.6.6), through the
submission port and its sender rule."""

from __future__ import annotations

from mailyard.message.compose import compose, to_bytes

from ..conftest import RunningServer
from .test_client import ALICE, BOB, POSTMASTER, MailCLI, mail  # noqa: F401 - the fixture


def _append(server: RunningServer, user: str, data: bytes) -> int:
    async def go() -> int:
        account = await server.store.get_account(user)
        box = await server.store.get_mailbox(account.id, "INBOX")
        return await server.store.append(box, data, ())

    return server.call(go())


def test_mail_redirect(mail: MailCLI, mailserver: RunningServer) -> None:  # noqa: F811
    original = to_bytes(compose("Dana <dana@elsewhere.test>", ALICE, subject="hello there", text="body text\n"))
    uid = _append(mailserver, ALICE, b"Return-Path: <dana@elsewhere.test>\r\n" + original)
    res = mail("redirect", str(uid), "--to", "Bob <bob@example.test>", "--to", POSTMASTER, account="alice")
    assert f"redirected message {uid} to 2 recipient(s): {BOB}, {POSTMASTER}" in res.out, res.out + res.err
    (got,) = mailserver.messages(BOB)
    assert got.endswith(original)
    assert got.startswith(b"Return-Path: <alice@example.test>\r\n")
    assert b"\r\nResent-From: =?utf-8?q?Alice_=C3=84=2E_Example?= <alice@example.test>\r\n" in got
    assert f"\r\nResent-To: {BOB}, {POSTMASTER}\r\nResent-Date: ".encode() in got
    assert b"\r\nResent-Message-ID: <" in got
    assert len(mailserver.messages(POSTMASTER)) == 1
    # a local colleague's message cannot be resent under their name
    uid2 = _append(mailserver, ALICE, to_bytes(compose(BOB, ALICE, subject="from bob", text="x\n")))
    res = mail("redirect", str(uid2), "--to", POSTMASTER, account="alice", check=False)
    assert res.returncode != 0 and "bob@example.test" in res.err, res.out + res.err
    assert len(mailserver.messages(POSTMASTER)) == 1
