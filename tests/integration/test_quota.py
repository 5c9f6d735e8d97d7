"""Quotas (RFC 9208) on every write path of a real server over the SQLite
store: SMTP (RCPT 452 4.2.2 for a full mailbox, per-recipient refusal at
the end of DATA with a DSN for the ones left out), IMAP (APPEND / COPY
NO [OVERQUOTA], MOVE allowed, GETQUOTAROOT, SAVEDATE) and POP3 (a mailbox
over quota stays readable, and deleting from it works)."""

from __future__ import annotations

import imaplib
import poplib
import smtplib

import pytest

from mailyard.store.api import Quota
from tests.conftest import USERS, RunningServer

ALICE = "alice@example.test"
BOB = "bob@example.test"
POSTMASTER = "postmaster@example.test"


def message(subject: str, size: int = 0) -> bytes:
    return (f"From: Carol <carol@remote.test>\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@remote.test>\r\n\r\n").encode() + body(size)


def body(size: int) -> bytes:
    """About ``size`` octets of text in lines of 78 (RFC 5321 4.5.3.1.6 limits a line)."""
    line = b"x" * 76 + b"\r\n"
    return line * (size // len(line)) + b"end\r\n"


def set_quota(server: RunningServer, address: str, **limits: int | None) -> None:
    server.call(server.store.set_quota(address, **limits))  # type: ignore[arg-type]


def usage(server: RunningServer, address: str) -> tuple[int, int]:
    async def read() -> tuple[int, int]:
        account = await server.store.get_account(address)
        assert account is not None
        q = await server.store.get_quota(account.id)
        return q.storage_used, q.messages_used

    return server.call(read())


def smtp(server: RunningServer) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30)
    s.ehlo()
    return s


def test_smtp_rcpt_452_4_2_2_when_the_mailbox_is_full(mailserver: RunningServer) -> None:
    """RFC 3463 4.2.2: a recipient whose mailbox is at its limit is refused at
    RCPT (temporary: the sending server tries later); the others still get it."""
    set_quota(mailserver, ALICE, messages=1)
    with smtp(mailserver) as s:
        s.sendmail("carol@remote.test", [ALICE], message("first"))
        s.mail("carol@remote.test")
        assert s.rcpt(ALICE) == (452, b"4.2.2 Mailbox full, try again later")
        assert s.rcpt(BOB)[0] == 250
        assert s.data(message("second"))[0] == 250
    assert [b"Subject: first" in m for m in mailserver.messages(ALICE)] == [True]
    assert [b"Subject: second" in m for m in mailserver.messages(BOB)] == [True]
    set_quota(mailserver, ALICE, messages=None)
    with smtp(mailserver) as s:
        s.mail("carol@remote.test")
        assert s.rcpt(ALICE)[0] == 250  # limit removed: accepted again
        s.rset()


def test_smtp_rcpt_reads_no_usage_for_an_account_without_limits(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Most accounts have no quota: their recipients are accepted without a
    read of the usage at every RCPT (the directory's answer that there is no
    limit is cached like the rest of it). A limit set later applies at the
    next RCPT."""
    store = mailserver.store
    reads: list[int] = []
    real = store.get_quota

    async def counted(account_id: int) -> Quota:
        reads.append(account_id)
        return await real(account_id)

    monkeypatch.setattr(store, "get_quota", counted)
    with smtp(mailserver) as s:
        for _ in range(5):
            s.mail("carol@remote.test")
            assert s.rcpt(ALICE)[0] == 250
            s.rset()
        assert len(reads) <= 1, reads
        set_quota(mailserver, ALICE, messages=0)
        s.mail("carol@remote.test")
        assert s.rcpt(ALICE) == (452, b"4.2.2 Mailbox full, try again later")


def test_smtp_rcpt_452_when_the_declared_size_does_not_fit(mailserver: RunningServer) -> None:
    """RFC 1870 6.2: with MAIL SIZE=, a recipient whose remaining room is
    smaller is refused at RCPT (452 4.2.2) rather than after the transfer."""
    set_quota(mailserver, ALICE, storage=4000)
    with smtp(mailserver) as s:
        s.mail("carol@remote.test", ["SIZE=5000"])
        assert s.rcpt(ALICE) == (452, b"4.2.2 Mailbox full, try again later")
        assert s.rcpt(BOB)[0] == 250
        s.rset()
        s.mail("carol@remote.test", ["SIZE=3000"])
        assert s.rcpt(ALICE)[0] == 250
        s.rset()


def test_smtp_end_of_data_refuses_only_the_recipients_it_would_take_over(mailserver: RunningServer) -> None:
    """A message too large for alice's remaining room, to alice, bob and a
    list holding alice: bob gets it, alice does not, and the sender gets a
    DSN (RFC 3464) saying alice's mailbox is full (5.2.2). Sent alone to
    alice it is refused with 452 4.2.2 and nothing is stored."""
    mailserver.call(mailserver.store.add_alias("team@example.test", [ALICE]))
    set_quota(mailserver, ALICE, storage=4000)
    with smtp(mailserver) as s:
        s.sendmail(POSTMASTER, [ALICE], message("small", 100))
        s.mail(POSTMASTER)
        assert s.rcpt(ALICE)[0] == 250  # not full yet
        assert s.rcpt(BOB)[0] == 250
        assert s.rcpt("team@example.test")[0] == 250
        assert s.data(message("large", 5000))[0] == 250
        s.mail(POSTMASTER)
        assert s.rcpt(ALICE)[0] == 250
        code, text = s.data(message("large again", 5000))
        assert (code, text) == (452, b"4.2.2 Mailbox full, try again later")
    assert [b"Subject: small" in m for m in mailserver.messages(ALICE)] == [True]
    assert [b"Subject: large" in m for m in mailserver.messages(BOB)] == [True]
    storage, count = usage(mailserver, ALICE)
    assert count == 1 and storage < 4000
    (dsn,) = mailserver.messages(POSTMASTER)
    assert b"Final-Recipient: rfc822; alice@example.test" in dsn
    assert b"Status: 5.2.2" in dsn and b"Action: failed" in dsn
    assert b"Subject: large" in dsn  # the returned header section
    assert b"bob@example.test" not in dsn.split(b"Content-Type: text/rfc822-headers")[0]


def test_imap_append_copy_overquota_move_and_getquotaroot(mailserver: RunningServer) -> None:
    """RFC 9208 over the SQLite store with imaplib: GETQUOTAROOT reports the
    running totals, APPEND and COPY over the limit get NO [OVERQUOTA], MOVE
    does not change usage and goes through, SAVEDATE is the time of the save."""
    with smtp(mailserver) as s:
        s.sendmail("carol@remote.test", [ALICE], message("one", 2000))
    set_quota(mailserver, ALICE, storage=3 * 1024, messages=2)
    storage, _ = usage(mailserver, ALICE)
    m = imaplib.IMAP4("127.0.0.1", mailserver.port("imap"), timeout=30)
    try:
        m.login(ALICE, USERS[ALICE])
        typ, data = m.getquotaroot("INBOX")
        assert typ == "OK"
        assert data == [[b'"INBOX" ""'], [f'"" (STORAGE {-(-storage // 1024)} 3 MESSAGE 1 2)'.encode()]]
        assert m.append("INBOX", None, None, message("two", 1500))[0] == "NO"
        assert "[OVERQUOTA]" in m.append("INBOX", None, None, message("two", 1500))[1][0].decode()
        assert m.append("Drafts", None, None, message("small", 10))[0] == "OK"  # 2 of 2 messages
        typ, data = m.append("Drafts", None, None, message("tiny", 1))
        assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]")
        m.select("INBOX")
        typ, data = m.copy("1", "Archive")
        assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]")
        typ, data = m._simple_command("MOVE", "1", "Archive")
        assert typ == "OK", data
        assert usage(mailserver, ALICE)[1] == 2
        m.select("Archive")
        typ, data = m.fetch("1", "(SAVEDATE INTERNALDATE)")
        assert typ == "OK" and b"SAVEDATE \"" in data[0]
        typ, data = m._simple_command("SETQUOTA", '""', "(STORAGE 99999)")
        assert typ == "NO"
    finally:
        m.logout()


def test_pop3_reads_and_deletes_in_a_mailbox_over_quota(mailserver: RunningServer) -> None:
    """A mailbox the operator put over quota (limit lowered below usage)
    stays readable over POP3, and deleting from it frees room at once."""
    with smtp(mailserver) as s:
        for n in range(3):
            s.sendmail("carol@remote.test", [ALICE], message(f"m{n}", 100))
    set_quota(mailserver, ALICE, messages=1)
    p = poplib.POP3("127.0.0.1", mailserver.port("pop3"), timeout=30)
    try:
        p.user(ALICE)
        p.pass_(USERS[ALICE])
        assert p.stat()[0] == 3
        assert b"Subject: m0" in b"\r\n".join(p.retr(1)[1])
        p.dele(1)
        p.dele(2)
    finally:
        p.quit()
    assert usage(mailserver, ALICE)[1] == 1
    with smtp(mailserver) as s:
        s.mail("carol@remote.test")
        assert s.rcpt(ALICE)[0] == 452  # 1 of 1: still full
        s.rset()


def test_status_size_and_deleted_storage_over_sqlite(mailserver: RunningServer) -> None:
    """STATUS SIZE (RFC 8438) and DELETED-STORAGE (RFC 9208 4.2) over the store."""
    with smtp(mailserver) as s:
        s.sendmail("carol@remote.test", [ALICE], message("sized", 3000))
    (stored,) = mailserver.messages(ALICE)
    m = imaplib.IMAP4("127.0.0.1", mailserver.port("imap"), timeout=30)
    try:
        m.login(ALICE, USERS[ALICE])
        typ, data = m.status("INBOX", "(MESSAGES SIZE DELETED DELETED-STORAGE)")
        assert data == [f'"INBOX" (MESSAGES 1 SIZE {len(stored)} DELETED 0 DELETED-STORAGE 0)'.encode()]
        m.select("INBOX")
        m.store("1", "+FLAGS.SILENT", "(\\Deleted)")
        typ, data = m.status("INBOX", "(DELETED DELETED-STORAGE APPENDLIMIT)")
        kib = -(-len(stored) // 1024)
        assert data == [f'"INBOX" (DELETED 1 DELETED-STORAGE {kib} APPENDLIMIT '
                        f'{mailserver.config.smtp.max_message_size})'.encode()]
    finally:
        m.logout()


def test_webmail_send_and_save_with_a_full_mailbox(mailserver: RunningServer) -> None:
    """Webmail submission takes the same path: a full recipient mailbox
    refuses the send (nothing delivered); a full sender mailbox still sends,
    without the Sent copy, and a draft is not saved."""
    from urllib.parse import unquote

    from tests.integration.test_web_http import csrf, login

    client = login(mailserver)
    token = csrf(client)
    set_quota(mailserver, BOB, messages=0)
    form = {"csrf": token, "to": BOB, "subject": "to bob", "body": "hi", "action": "send"}
    r = client.post("/compose", data=form)
    assert r.status_code == 400 and "Not sent: the recipient" in r.text and "mailbox full: bob@example.test" in r.text
    assert mailserver.messages(BOB) == []
    set_quota(mailserver, BOB, messages=None)
    set_quota(mailserver, ALICE, messages=0)
    r = client.post("/compose", data=form)
    assert r.status_code == 303, r.text
    assert "no copy was kept in Sent" in unquote(r.headers["location"]).replace("+", " ")
    assert len(mailserver.messages(BOB)) == 1 and mailserver.messages(ALICE, "Sent") == []
    r = client.post("/compose", data={**form, "action": "save"})
    assert r.status_code == 400 and "Not saved: your mailbox is full" in r.text
