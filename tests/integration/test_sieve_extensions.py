"""Sieve extensions at delivery, through real SMTP on a real server over
the SQLite store: editheader (RFC 5293: the edited message is the one
filed and redirected; trace fields refused) and enotify with mailto (RFC
5435, RFC 5436: the notification goes through the acceptance path, marked
auto-notified, never for automatic mail)."""

from __future__ import annotations

import pytest

from mailyard.sieve import SieveError
from tests.integration.test_sieve_delivery import ALICE, BOB, install, send, subjects


def test_editheader_edits_what_is_filed_and_redirected(mailserver) -> None:
    install(mailserver, ALICE, 'require ["editheader", "fileinto", "mailbox", "copy"];\r\n'
                               'deleteheader "X-Secret";\r\n'
                               'addheader "X-Filed" "by sieve";\r\n'
                               'if header :is "x-filed" "by sieve" { fileinto :create "Edited"; }\r\n'
                               'redirect :copy "bob@example.test";\r\n')
    send(mailserver, "carol@remote.test", ALICE, "edit me", extra="X-Secret: 42\r\n")
    assert subjects(mailserver, ALICE, "Edited") == ["edit me"]
    filed = mailserver.messages(ALICE, "Edited")[0]
    # the trace fields delivery adds stay first; the script's field follows them
    assert b"\r\nX-Filed: by sieve\r\nReceived: " in filed
    assert b"X-Secret" not in filed
    redirected = mailserver.messages(BOB)[0]
    assert b"X-Filed: by sieve\r\n" in redirected and b"X-Secret" not in redirected


def test_editheader_refuses_trace_fields_at_upload() -> None:
    from mailyard.sieve import compile_script

    for text in ('require "editheader"; deleteheader "Received";',
                 'require "editheader"; addheader "Auto-Submitted" "no";'):
        with pytest.raises(SieveError, match="may not change"):
            compile_script(text)


def test_notify_mailto_reaches_a_local_account(mailserver) -> None:
    install(mailserver, ALICE, 'require ["enotify"];\r\n'
                               'if header :contains "subject" "urgent" {\r\n'
                               '  notify :importance "1" :message "urgent mail" "mailto:bob@example.test"; }\r\n')
    send(mailserver, "carol@remote.test", ALICE, "urgent: call me")
    send(mailserver, "carol@remote.test", ALICE, "not so")
    assert subjects(mailserver, ALICE) == ["urgent: call me", "not so"]  # notify keeps (RFC 5435 3)
    assert subjects(mailserver, BOB) == ["urgent mail"]
    note = mailserver.messages(BOB)[0]
    assert note.startswith(b"Return-Path: <>\r\n")  # the null reverse-path: nothing answers it
    assert b"\r\nFrom: alice@example.test\r\n" in note
    assert b"\r\nAuto-Submitted: auto-notified\r\n" in note
    assert b"\r\nImportance: high\r\n" in note


def test_notify_never_for_automatic_mail_nor_between_two_scripts(mailserver) -> None:
    install(mailserver, ALICE, 'require ["enotify"]; notify "mailto:bob@example.test";\r\n')
    install(mailserver, BOB, 'require ["enotify"]; notify "mailto:alice@example.test";\r\n')
    send(mailserver, "carol@remote.test", ALICE, "robot", extra="Auto-Submitted: auto-generated\r\n")
    assert subjects(mailserver, BOB) == []
    send(mailserver, "carol@remote.test", ALICE, "human")
    # alice's notification reaches bob; it is auto-notified, so bob's script sends none back
    assert len(subjects(mailserver, BOB)) == 1
    assert subjects(mailserver, ALICE) == ["robot", "human"]


def test_plus_addressing_off_for_one_domain(make_server) -> None:
    """[delivery] recipient_delimiter_off_domains: "user+tag" is refused in
    that domain and still delivered to "user" in the others."""
    import smtplib

    async def seed(store) -> None:
        await store.add_domain("strict.test")
        await store.add_account("dora@strict.test", "x")

    def configure(cfg) -> None:
        cfg.delivery.recipient_delimiter_off_domains = ["Strict.test"]

    server = make_server(configure=configure, seed=seed)
    with smtplib.SMTP(server.host, server.port("smtp"), local_hostname="client.remote.test", timeout=10) as s:
        s.ehlo()
        s.mail("carol@remote.test")
        assert s.rcpt("dora+shop@strict.test")[0] == 550
        assert s.rcpt("dora@strict.test")[0] == 250
        assert s.rcpt("alice+shop@example.test")[0] == 250


def test_recipient_delimiter_off_domains_must_be_a_list() -> None:
    from mailyard.config import Config, ConfigError

    Config().apply({"delivery": {"recipient_delimiter_off_domains": ["strict.test"]}})
    with pytest.raises(ConfigError, match="recipient_delimiter_off_domains"):
        Config().apply({"delivery": {"recipient_delimiter_off_domains": ["a@strict.test"]}})


# --- what a script sends is held to the submission policy (RFC 6409 8) ---


def test_notify_from_is_only_an_address_of_the_user(mailserver) -> None:
    # RFC 5436 2.3 lets the server override :from: a forged author never reaches bob
    install(mailserver, ALICE, 'require ["enotify"];\r\n'
                               'notify :from "The CEO <ceo@example.test>"\r\n'
                               '  "mailto:bob@example.test?subject=Wire%20money&body=Pay%20now";\r\n')
    send(mailserver, "carol@remote.test", ALICE, "hello")
    (note,) = mailserver.messages(BOB)
    assert b"\r\nFrom: alice@example.test\r\nTo: bob@example.test\r\nSubject: Wire money\r\n" in note
    assert b"ceo@" not in note.lower()
    # an address the user may send as is kept as written
    install(mailserver, ALICE, 'require ["enotify"];\r\n'
                               'notify :from "Alice Smith <alice@example.test>" "mailto:bob@example.test";\r\n')
    send(mailserver, "carol@remote.test", ALICE, "again")
    assert b"\r\nFrom: Alice Smith <alice@example.test>\r\n" in mailserver.messages(BOB)[1]


def test_notify_counts_against_the_sending_limits(make_server) -> None:
    def configure(cfg) -> None:
        cfg.spam.messages_per_hour = 2

    server = make_server(configure=configure)
    install(server, ALICE, 'require ["enotify"]; notify "mailto:bob@example.test";\r\n')
    for i in range(4):
        send(server, "carol@remote.test", ALICE, f"note {i}")
    # every message is delivered; only the first two notifications go out
    assert subjects(server, ALICE) == ["note 0", "note 1", "note 2", "note 3"]
    assert len(server.messages(BOB)) == 2


def test_vacation_from_is_only_an_address_of_the_user(mailserver) -> None:
    # RFC 5230 4.3: the server may restrict :from (a value that fails is ignored)
    install(mailserver, ALICE, 'require "vacation";\r\n'
                               'vacation :from "The CEO <ceo@example.test>" :subject "Away" "Back Monday.";\r\n')
    send(mailserver, BOB, ALICE, "hi")
    (reply,) = mailserver.messages(BOB)
    assert b"\r\nFrom: alice@example.test\r\nTo: bob@example.test\r\nSubject: Away\r\n" in reply
    install(mailserver, BOB, 'require "vacation";\r\n'
                             'vacation :from "Bob B <bob@example.test>" :subject "Gone" "Back Monday.";\r\n')
    send(mailserver, ALICE, BOB, "hi")
    assert subjects(mailserver, ALICE) == ["hi", "Gone"]  # bob's message, then bob's reply
    reply = mailserver.messages(ALICE)[1]
    assert b"\r\nFrom: Bob B <bob@example.test>\r\nTo: alice@example.test\r\nSubject: Gone\r\n" in reply


def test_spamtest_trusts_no_verdict_the_sender_wrote(make_server) -> None:
    def configure(cfg) -> None:
        cfg.spam.checks = False

    server = make_server(configure=configure)
    install(server, ALICE, 'require ["spamtest", "relational", "comparator-i;ascii-numeric", "fileinto"];\r\n'
                           'if spamtest :value "ge" :comparator "i;ascii-numeric" "1" { fileinto "Junk"; }\r\n')
    forged = "X-Spam-Status: Yes, score=99 required=5.0 tests=X\r\nX-Spam-Score: 99\r\nX-Spam-Flag: YES\r\n"
    send(server, "carol@remote.test", ALICE, "forged on the MX port", extra=forged)
    # and from a local user over submission
    import smtplib
    import ssl

    from tests.conftest import USERS
    context = ssl.create_default_context(cafile=str(server.data_dir / "tls" / "cert.pem"))
    with smtplib.SMTP(server.host, server.port("submission"), timeout=10) as s:
        s.starttls(context=context)
        s.login(BOB, USERS[BOB])
        s.sendmail(BOB, [ALICE], (f"From: {BOB}\r\nTo: {ALICE}\r\nSubject: forged by bob\r\n{forged}\r\nx\r\n")
                   .encode())
    # RFC 5235 3.1: no verdict of this server is "not tested", 0
    assert subjects(server, ALICE) == ["forged on the MX port", "forged by bob"]
    assert server.messages(ALICE, "Junk") == []


def test_editheader_copy_that_fails_after_the_commit_is_kept_unedited(mailserver, monkeypatch) -> None:
    import smtplib

    from mailyard.delivery import sieve as delivery_sieve
    from tests.integration.test_sieve_delivery import message

    # the mailbox id a script files into is cached: keep it for the whole test
    monkeypatch.setattr(delivery_sieve, "MAILBOX_TTL", 3600.0)
    install(mailserver, ALICE, 'require ["editheader", "fileinto", "mailbox"];\r\n'
                               'addheader "X-Filed" "yes"; fileinto :create "Work";\r\n')
    send(mailserver, "carol@remote.test", ALICE, "first")
    assert subjects(mailserver, ALICE, "Work") == ["first"]
    account = mailserver.call(mailserver.store.get_account(ALICE))
    mailserver.call(mailserver.store.delete_mailbox(account.id, "Work"))
    # the stale id fails alice's edited copy after bob's copy is committed:
    # the message is accepted once (no retry, no second copy for bob) and
    # alice gets the unedited message in her INBOX
    with smtplib.SMTP(mailserver.host, mailserver.port("smtp"), local_hostname="client.remote.test",
                      timeout=10) as s:
        assert s.sendmail("carol@remote.test", [BOB, ALICE],
                          message("carol@remote.test", f"{BOB}, {ALICE}", "second")) == {}
    assert subjects(mailserver, BOB) == ["second"]
    assert subjects(mailserver, ALICE) == ["second"]
    assert b"X-Filed" not in mailserver.messages(ALICE)[0]


@pytest.mark.parametrize("forged", [
    "ceo@example.test",
    "Alice <alice@example.test>, ceo@example.test",  # every author must be the user's
    "ceo@example.test <alice@example.test>",  # an address hidden in an unquoted display name
    "carol@remote.test",
])
def test_notify_from_forms_that_name_someone_else(mailserver, forged: str) -> None:
    install(mailserver, ALICE, 'require ["enotify"];\r\n'
                               f'notify :from "{forged}" "mailto:bob@example.test";\r\n')
    send(mailserver, "carol@remote.test", ALICE, "hello")
    (note,) = mailserver.messages(BOB)
    assert b"\r\nFrom: alice@example.test\r\nTo: bob@example.test\r\n" in note


def test_editheader_copies_one_over_quota_one_out_of_reach_is_a_temporary_failure(mailserver, monkeypatch) -> None:
    """Every copy is one a script edited (stored on its own, RFC 5293):
    alice's would take her over quota, and the store is out of reach for
    bob's. Nothing is stored, so the sender is told to try again because of
    the store (451 4.3.0), not that the mailboxes are full (452 4.2.2)."""
    import smtplib

    from mailyard.store.api import StoreUnavailable
    from tests.integration.test_sieve_delivery import message

    for user in (ALICE, BOB):
        install(mailserver, user, 'require ["editheader"];\r\naddheader "X-Filed" "yes";\r\n')
    # room at RCPT time, none for the message (delivery/submit.py: left out)
    mailserver.call(mailserver.store.set_quota(ALICE, storage=4000))

    async def inbox(user: str) -> int:
        account = await mailserver.store.get_account(user)
        return (await mailserver.store.get_mailbox(account.id, "INBOX")).id

    bob_inbox = mailserver.call(inbox(BOB))
    deliver = mailserver.store.deliver

    async def out_of_reach_for_bob(body: bytes, targets, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if any(t.mailbox_id == bob_inbox for t in targets):
            raise StoreUnavailable("the mail store is unavailable, try again later")
        return await deliver(body, targets, *args, **kwargs)

    monkeypatch.setattr(mailserver.store, "deliver", out_of_reach_for_bob)
    with smtplib.SMTP(mailserver.host, mailserver.port("smtp"), local_hostname="client.remote.test",
                      timeout=10) as s:
        s.ehlo()
        s.mail("carol@remote.test")  # no SIZE: alice's RCPT is taken, her copy refused at the end of DATA
        assert s.rcpt(ALICE)[0] == 250 and s.rcpt(BOB)[0] == 250
        code, text = s.data(message("carol@remote.test", f"{ALICE}, {BOB}", "both") + (b"x" * 70 + b"\r\n") * 80)
    assert (code, text) == (451, b"4.3.0 Mail store unavailable, try again later")
    monkeypatch.undo()
    assert mailserver.messages(ALICE) == [] and mailserver.messages(BOB) == []
