"""Sieve at local delivery, through real SMTP (smtplib) on a real server
over the SQLite store: fileinto, flags, discard, plus-addressing and
:detail, redirect (and a redirect loop between two accounts stopped),
reject, vacation (once per sender, never to lists, bulk or automatic mail,
and no reply loop between two vacationing users), a broken script keeps."""

from __future__ import annotations

import smtplib

import pytest

from mailyard.delivery.sieve import ScriptStore
from tests.conftest import RunningServer

ALICE = "alice@example.test"
BOB = "bob@example.test"


def message(sender: str, to: str, subject: str, extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}"
            f"Message-ID: <{abs(hash((sender, to, subject, extra)))}@remote.test>\r\n\r\nhello\r\n").encode()


def send(server: RunningServer, sender: str, rcpt: str, subject: str, extra: str = "", to_header: str = "") -> None:
    with smtplib.SMTP(server.host, server.port("smtp"), local_hostname="client.remote.test", timeout=10) as s:
        assert s.sendmail(sender, [rcpt], message(sender, to_header or rcpt, subject, extra)) == {}


def install(server: RunningServer, address: str, text: str) -> None:
    account = server.call(server.store.get_account(address))
    assert account is not None
    scripts = ScriptStore(server.data_dir / "sieve")
    scripts.put(account.id, "main", text)
    scripts.activate(account.id, "main")


def subjects(server: RunningServer, address: str, mailbox: str = "INBOX") -> list[str]:
    out = []
    for raw in server.messages(address, mailbox):
        for line in raw.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                out.append(line[9:].decode())
    return out


def flags(server: RunningServer, address: str, mailbox: str = "INBOX") -> list[set[str]]:
    async def read() -> list[set[str]]:
        account = await server.store.get_account(address)
        assert account is not None
        box = await server.store.get_mailbox(account.id, mailbox)
        assert box is not None
        return [set(m.flags) for m in await server.store.list_messages(box)]

    return server.call(read())


def test_fileinto_files_a_message_sent_by_smtp(mailserver: RunningServer) -> None:
    install(mailserver, ALICE, 'require ["fileinto", "mailbox"];\r\n'
                               'if header :contains "subject" "report" { fileinto :create "Reports"; }\r\n')
    send(mailserver, "carol@remote.test", ALICE, "weekly report")
    send(mailserver, "carol@remote.test", ALICE, "lunch?")
    assert subjects(mailserver, ALICE, "Reports") == ["weekly report"]
    assert subjects(mailserver, ALICE) == ["lunch?"]
    raw = mailserver.messages(ALICE, "Reports")[0]
    assert raw.startswith(b"Return-Path: <carol@remote.test>\r\nDelivered-To: alice@example.test\r\n")


def test_flags_discard_and_keep_copy(mailserver: RunningServer) -> None:
    install(mailserver, ALICE, 'require ["imap4flags", "fileinto", "copy"];\r\n'
                               'if header :is "subject" "spam" { discard; stop; }\r\n'
                               'if header :is "subject" "flag me" { addflag ["\\\\Flagged", "work"]; }\r\n'
                               'if header :is "subject" "copy" { fileinto :copy "INBOX"; }\r\n')
    send(mailserver, "carol@remote.test", ALICE, "spam")
    send(mailserver, "carol@remote.test", ALICE, "flag me")
    send(mailserver, "carol@remote.test", ALICE, "copy")
    assert subjects(mailserver, ALICE) == ["flag me", "copy"]  # filed once (RFC 5228 2.10.3)
    assert flags(mailserver, ALICE)[0] >= {"\\Flagged", "work"}


def test_imap4flags_keeps_the_system_flags_of_rfc9051_only(mailserver: RunningServer) -> None:
    """RFC 5232 / RFC 9051 2.3.2: the system flags compare without case and
    are stored in their spelling; another word beginning with a backslash
    is no flag and is dropped (it cannot pass the keyword bounds), as is
    \\Recent; a keyword in two cases is one keyword."""
    odd = ", ".join(f'"\\\\{i:03d}' + "x" * 300 + '"' for i in range(300))
    install(mailserver, ALICE, 'require ["imap4flags", "fileinto"];\r\n'
                               'if header :is "subject" "flags" {\r\n'
                               '  fileinto :flags "\\\\answered \\\\Bogus tag" "INBOX"; stop; }\r\n'
                               f'addflag ["\\\\seen", "\\\\FLAGGED", "\\\\Recent", "$Work", "$WORK", {odd}];\r\n')
    send(mailserver, "carol@remote.test", ALICE, "flags")
    (got,) = flags(mailserver, ALICE)
    assert got == {"\\Answered", "tag"}
    send(mailserver, "carol@remote.test", ALICE, "keep")
    (_, kept) = flags(mailserver, ALICE)
    assert kept in ({"\\Seen", "\\Flagged", "$Work"}, {"\\Seen", "\\Flagged", "$WORK"})


def test_plus_addressing_and_detail(mailserver: RunningServer) -> None:
    install(mailserver, ALICE, 'require ["fileinto", "mailbox", "envelope", "subaddress", "variables"];\r\n'
                               'if envelope :detail :matches "to" "*" { if string :is "${1}" "" { keep; stop; }\r\n'
                               '  fileinto :create "tags/${1}"; }\r\n')
    send(mailserver, "carol@remote.test", "alice+shop@example.test", "from the shop")
    send(mailserver, "carol@remote.test", ALICE, "plain")
    assert subjects(mailserver, ALICE, "tags/shop") == ["from the shop"]
    assert subjects(mailserver, ALICE) == ["plain"]


def test_plus_addressing_off(make_server) -> None:
    def configure(cfg) -> None:
        cfg.delivery.recipient_delimiter = ""

    server = make_server(configure=configure)
    with smtplib.SMTP(server.host, server.port("smtp"), local_hostname="client.remote.test", timeout=10) as s:
        s.ehlo()
        s.mail("carol@remote.test")
        code, _ = s.rcpt("alice+shop@example.test")
    assert code == 550


def test_redirect_to_a_local_account(mailserver: RunningServer) -> None:
    install(mailserver, ALICE, 'redirect "bob@example.test";\r\n')
    send(mailserver, "carol@remote.test", ALICE, "for bob")
    assert subjects(mailserver, ALICE) == []
    assert subjects(mailserver, BOB) == ["for bob"]
    raw = mailserver.messages(BOB)[0]
    # the original sender stays the envelope sender (RFC 5228 4.2)
    assert raw.startswith(b"Return-Path: <carol@remote.test>\r\nDelivered-To: bob@example.test\r\n")
    assert b"\r\nDelivered-To: alice@example.test\r\n" in raw


def test_redirect_loop_between_two_accounts_is_stopped(mailserver: RunningServer) -> None:
    install(mailserver, ALICE, 'redirect "bob@example.test";\r\n')
    install(mailserver, BOB, 'redirect "alice@example.test";\r\n')
    send(mailserver, "carol@remote.test", ALICE, "ping pong")
    # alice -> bob -> alice: alice sees her own Delivered-To and keeps it
    assert subjects(mailserver, ALICE) == ["ping pong"]
    assert subjects(mailserver, BOB) == []


def test_reject_sends_a_dsn_with_the_reason(mailserver: RunningServer) -> None:
    install(mailserver, ALICE, 'require "reject";\r\nif address :is "from" "bob@example.test" '
                               '{ reject "I do not read mail from you"; }\r\n')
    send(mailserver, BOB, ALICE, "hello alice")
    assert subjects(mailserver, ALICE) == []
    dsns = mailserver.messages(BOB)
    assert len(dsns) == 1
    assert b"Status: 5.7.1" in dsns[0] and b"I do not read mail from you" in dsns[0]


VACATION = ('require "vacation";\r\n'
            'vacation :days 3 :subject "Away" "I am away until Monday.";\r\n')


def test_vacation_replies_once_per_sender(mailserver: RunningServer) -> None:
    install(mailserver, ALICE, VACATION)
    send(mailserver, BOB, ALICE, "first")
    send(mailserver, BOB, ALICE, "second")
    assert subjects(mailserver, ALICE) == ["first", "second"]
    replies = mailserver.messages(BOB)
    assert len(replies) == 1
    reply = replies[0]
    assert reply.startswith(b"Return-Path: <>\r\n")
    assert b"\r\nSubject: Away\r\n" in reply and b"\r\nAuto-Submitted: auto-replied" in reply
    assert b"\r\nFrom: alice@example.test\r\nTo: bob@example.test\r\n" in reply
    assert b"I am away until Monday.\r\n" in reply
    assert b"\r\nIn-Reply-To: <" in reply


@pytest.mark.parametrize("extra", [
    "List-Id: <team.lists.example.test>\r\n",
    "Precedence: bulk\r\n",
    "Precedence: list\r\n",
    "Auto-Submitted: auto-generated\r\n",
])
def test_vacation_never_answers_lists_bulk_or_automatic_mail(mailserver: RunningServer, extra: str) -> None:
    install(mailserver, ALICE, VACATION)
    send(mailserver, BOB, ALICE, "automatic", extra)
    assert subjects(mailserver, ALICE) == ["automatic"]
    assert mailserver.messages(BOB) == []


def test_vacation_not_to_the_null_sender_nor_when_not_addressed(mailserver: RunningServer) -> None:
    install(mailserver, ALICE, VACATION)
    send(mailserver, "", ALICE, "a bounce")
    send(mailserver, BOB, ALICE, "bcc'd", to_header="team@elsewhere.test")
    assert subjects(mailserver, ALICE) == ["a bounce", "bcc'd"]
    assert mailserver.messages(BOB) == []


def test_two_vacations_do_not_loop(mailserver: RunningServer) -> None:
    install(mailserver, ALICE, VACATION)
    install(mailserver, BOB, VACATION)
    send(mailserver, BOB, ALICE, "are you there?")
    # alice answers bob once; bob's vacation does not answer an auto-reply
    assert subjects(mailserver, BOB) == ["Away"]
    assert subjects(mailserver, ALICE) == ["are you there?"]


def test_a_failing_script_keeps_the_message(mailserver: RunningServer) -> None:
    install(mailserver, ALICE, 'require "fileinto";\r\nfileinto "No such folder";\r\n')
    send(mailserver, "carol@remote.test", ALICE, "must not be lost")
    assert subjects(mailserver, ALICE) == ["must not be lost"]


def test_ereject_refuses_in_smtp_for_a_single_recipient(mailserver: RunningServer) -> None:
    install(mailserver, ALICE, 'require "ereject";\r\nif header :contains "subject" "offer" '
                               '{ ereject "No offers, thanks"; }\r\n')
    with smtplib.SMTP(mailserver.host, mailserver.port("smtp"), local_hostname="client.remote.test", timeout=10) as s:
        s.ehlo()
        s.mail(BOB)
        assert s.rcpt(ALICE)[0] == 250
        code, text = s.data(message(BOB, ALICE, "great offer"))
    # RFC 5429 2.1: refused in the protocol, nothing stored, no DSN of ours
    assert (code, text) == (550, b"5.7.1 No offers, thanks")
    assert subjects(mailserver, ALICE) == [] and mailserver.messages(BOB) == []
    # with another recipient the message is accepted for them, and the sender gets a DSN
    with smtplib.SMTP(mailserver.host, mailserver.port("smtp"), local_hostname="client.remote.test", timeout=10) as s:
        assert s.sendmail(BOB, [ALICE, "postmaster@example.test"], message(BOB, ALICE, "second offer")) == {}
    assert subjects(mailserver, ALICE) == []
    assert subjects(mailserver, "postmaster@example.test") == ["second offer"]
    dsns = mailserver.messages(BOB)
    assert len(dsns) == 1 and b"Status: 5.7.1" in dsns[0] and b"No offers, thanks" in dsns[0]


def test_include_of_a_personal_and_a_global_script(mailserver: RunningServer) -> None:
    account = mailserver.call(mailserver.store.get_account(ALICE))
    assert account is not None
    scripts = ScriptStore(mailserver.data_dir / "sieve")
    scripts.put(account.id, "reports", 'require ["fileinto", "mailbox"];\r\n'
                                       'if header :contains "subject" "report" { fileinto :create "Reports"; stop; }\r\n')
    site = mailserver.data_dir / "sieve" / "global"
    site.mkdir(parents=True)
    (site / "flag.sieve").write_text('require "imap4flags";\r\naddflag "seen-by-site";\r\n')
    install(mailserver, ALICE, 'require "include";\r\ninclude :global "flag";\r\ninclude "reports";\r\n')
    send(mailserver, "carol@remote.test", ALICE, "monthly report")
    send(mailserver, "carol@remote.test", ALICE, "hello")
    assert subjects(mailserver, ALICE, "Reports") == ["monthly report"]
    assert subjects(mailserver, ALICE) == ["hello"]
    assert "seen-by-site" in flags(mailserver, ALICE, "Reports")[0] and "seen-by-site" in flags(mailserver, ALICE)[0]


def test_duplicate_drops_a_message_seen_before(mailserver: RunningServer) -> None:
    install(mailserver, ALICE, 'require "duplicate";\r\nif duplicate { discard; stop; }\r\n')
    raw = b"From: carol@remote.test\r\nTo: alice@example.test\r\nSubject: once\r\nMessage-ID: <dup-1@remote.test>\r\n\r\nx\r\n"
    for _ in range(2):  # the same message through two list expansions, say
        with smtplib.SMTP(mailserver.host, mailserver.port("smtp"), timeout=10) as s:
            assert s.sendmail("carol@remote.test", [ALICE], raw) == {}
    with smtplib.SMTP(mailserver.host, mailserver.port("smtp"), timeout=10) as s:
        s.sendmail("carol@remote.test", [ALICE], raw.replace(b"dup-1", b"dup-2").replace(b"once", b"other"))
    assert subjects(mailserver, ALICE) == ["once", "other"]


def test_an_internal_error_in_a_run_keeps_the_message(mailserver: RunningServer, monkeypatch) -> None:
    import mailyard.delivery.sieve as glue

    def broken(*args, **kwargs):
        raise IndexError("a bug")

    monkeypatch.setattr(glue, "run", broken)
    install(mailserver, ALICE, "discard;\r\n")
    send(mailserver, "carol@remote.test", ALICE, "still here")
    assert subjects(mailserver, ALICE) == ["still here"]


def test_a_body_test_on_a_message_of_many_parts_leaves_the_server_answering(mailserver: RunningServer) -> None:
    """RFC 5173 ``body`` on a message of 50,000 MIME parts: the script runs
    off the event loop (and looks at a bounded number of parts), so another
    session is answered while the delivery runs. Run on the event loop,
    the parse alone held every session of the worker for seconds."""
    import threading
    import time

    install(mailserver, ALICE, 'require "body";\r\nif body :contains "unsubscribe" { discard; }\r\n')
    parts = b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n" * 50_000
    raw = (b"From: carol@remote.test\r\nTo: alice@example.test\r\nSubject: many parts\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts
           + b"--b\r\nContent-Type: text/plain\r\n\r\nunsubscribe here\r\n--b--\r\n")
    done = threading.Event()
    outcome: list[object] = []

    def deliver() -> None:
        try:
            with smtplib.SMTP(mailserver.host, mailserver.port("smtp"), timeout=60) as s:
                outcome.append(s.sendmail("carol@remote.test", [ALICE], raw))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome.append(exc)
        finally:
            done.set()

    with smtplib.SMTP(mailserver.host, mailserver.port("smtp"), timeout=60) as other:
        other.ehlo()
        sender = threading.Thread(target=deliver)
        sender.start()
        slowest = 0.0
        while not done.is_set():
            started = time.monotonic()
            assert other.noop()[0] == 250
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.005)
        sender.join()
    assert outcome == [{}]
    # a bound far above a NOOP's time, far below the seconds the parse held the loop
    assert slowest < 2.0, f"a NOOP waited {slowest:.1f}s while the script ran"
    # more than 1,000 parts: the one after them is not looked at (the message is kept)
    assert subjects(mailserver, ALICE) == ["many parts"]


def test_vacation_and_duplicate_records_are_written_off_the_event_loop(mailserver: RunningServer,
                                                                       monkeypatch) -> None:
    """The records of RFC 5230 replies and RFC 7352 ids are files written
    and synced: in a thread, never on the loop that serves the sessions."""
    import threading

    from mailyard.delivery.sieve import VacationLog

    written: list[tuple[str, threading.Thread]] = []
    record = VacationLog.record

    def watched(self, *args, **kwargs):
        written.append((self.kind, threading.current_thread()))
        return record(self, *args, **kwargs)

    monkeypatch.setattr(VacationLog, "record", watched)
    install(mailserver, ALICE, 'require ["vacation", "duplicate"];\r\nif duplicate { discard; stop; }\r\n'
                               'vacation :subject "Away" "I am away.";\r\n')
    send(mailserver, BOB, ALICE, "first")
    send(mailserver, BOB, ALICE, "first")
    assert subjects(mailserver, ALICE) == ["first"] and len(mailserver.messages(BOB)) == 1
    assert sorted(kind for kind, _ in written) == ["duplicate", "vacation"]
    assert all(thread is not mailserver._thread for _, thread in written)


def test_records_of_one_key_written_at_once_all_land(tmp_path) -> None:  # noqa: ANN001
    """Vacation and duplicate records are written in threads: two
    deliveries recording the same key at once (two copies of one list
    message, RFC 7352 :last) must both succeed, and a reader never sees a
    half-written record (a failed record would cost its delivery the
    redirects and replies after it)."""
    import threading

    from mailyard.delivery.sieve import VacationLog

    log = VacationLog(tmp_path, "duplicate")
    errors: list[str] = []
    torn: list[str] = []
    stop = threading.Event()

    def write() -> None:
        for _ in range(300):
            try:
                log.record(1, "", "<id@example.test>", 3600)
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(repr(exc))

    def read() -> None:
        path = log._path(1, "", "<id@example.test>")
        while not stop.is_set():
            try:
                text = path.read_text()
            except OSError:
                continue
            if not text.isdigit():
                torn.append(text)

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write) for _ in range(2)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    reader.join()
    assert not errors and not torn, (errors[:2], torn[:2])
    assert [p.name for p in (tmp_path / "1" / "duplicate").iterdir()] == [log._path(1, "", "<id@example.test>").name]


def test_mail_to_a_recipient_whose_script_edits_the_header_is_not_counted_as_sent_by_her(
        mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The address book counts the mail an account sends (delivery/submit.py
    ``_note_sent``). Mail from outside to a recipient whose Sieve script
    edits the header (RFC 5293) is received mail: nothing is counted as
    sent, by her or anyone."""
    from mailyard.delivery import submit

    senders: list[str] = []
    monkeypatch.setattr(submit, "_note_sent", lambda store, account, data: senders.append(account.address))
    install(mailserver, ALICE, 'require ["editheader"];\r\naddheader "X-Filed" "yes";\r\n')
    send(mailserver, "carol@remote.test", ALICE, "from outside")
    assert subjects(mailserver, ALICE) == ["from outside"]
    assert senders == []


def test_fileinto_create_makes_the_superiors(mailserver: RunningServer) -> None:
    """RFC 5490 3.2 with RFC 9051 6.3.4: the mailbox made and its superiors."""
    install(mailserver, ALICE, 'require ["fileinto", "mailbox"];\r\nfileinto :create "x/y";\r\n')
    send(mailserver, "carol@remote.test", ALICE, "deep")
    assert subjects(mailserver, ALICE, "x/y") == ["deep"]
    account = mailserver.call(mailserver.store.get_account(ALICE))
    assert mailserver.call(mailserver.store.get_mailbox(account.id, "x")) is not None
