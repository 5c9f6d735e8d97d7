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
