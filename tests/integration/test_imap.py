"""The IMAP server through real sockets, driven by imaplib and imapclient.

Servers run on 127.0.0.1 with ephemeral ports (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import imaplib
import re
import select
import smtplib
import socket
import threading
import time
from collections.abc import Callable

import pytest
from imapclient import IMAPClient

from tests.conftest import USERS, RunningServer
from tests.waiting import wait_until

ALICE = "alice@example.test"
BOB = "bob@example.test"

MULTIPART = (
    b"From: Carol <carol@remote.test>\r\n"
    b"To: Alice <alice@example.test>\r\n"
    b"Subject: with attachment\r\n"
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700\r\n"
    b"Message-ID: <mp1@remote.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello, world. The quick brown fox.\r\n"
    b"--XX\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAwQ=\r\n"
    b"--XX--\r\n"
)


def simple(n: int, subject: str = "") -> bytes:
    return (
        f"From: Carol <carol@remote.test>\r\nTo: Alice <alice@example.test>\r\n"
        f"Subject: {subject or f'message {n}'}\r\nMessage-ID: <{n}@remote.test>\r\n"
        f"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n\r\nBody number {n}\r\n"
    ).encode()


@pytest.fixture
def imap(mailserver: RunningServer):
    """A factory of logged-in imaplib clients (closed at the end)."""
    clients: list[imaplib.IMAP4] = []

    def connect(user: str = ALICE) -> imaplib.IMAP4:
        c = imaplib.IMAP4(mailserver.host, mailserver.port("imap"), timeout=10)
        c.login(user, USERS[user])
        clients.append(c)
        return c

    yield connect
    for c in clients:
        try:
            c.logout()
        except Exception:
            pass


def test_greeting_capability_login_logout(mailserver: RunningServer) -> None:
    c = imaplib.IMAP4(mailserver.host, mailserver.port("imap"), timeout=10)
    assert "IMAP4REV2" in c.capabilities and "AUTH=PLAIN" in c.capabilities
    with pytest.raises(imaplib.IMAP4.error):
        c.login(ALICE, "wrong")
    typ, data = c.login(ALICE, USERS[ALICE])
    assert typ == "OK"
    typ, data = c.logout()
    assert typ == "BYE"


def test_authenticate_plain(mailserver: RunningServer) -> None:
    c = imaplib.IMAP4(mailserver.host, mailserver.port("imap"), timeout=10)
    typ, _ = c.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{USERS[ALICE]}".encode())
    assert typ == "OK"
    assert c.select("INBOX")[0] == "OK"
    c.logout()


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_folder_hierarchy(imap) -> None:
    c = imap()
    assert c.create("Work/Projects/2024")[0] == "OK"
    assert c.create("Work")[0] == "NO"  # created as a parent already
    typ, data = c.list('""', "*")
    lines = [d.decode() for d in data]
    assert any(line.endswith('"/" INBOX') or line.endswith(' "/" "INBOX"') for line in lines)
    assert any("\\HasChildren" in line and line.endswith('"Work"') or line.endswith(" Work") for line in lines)
    assert any("\\Sent" in line for line in lines)
    typ, data = c.list('""', "Work/%")
    assert len(data) == 1 and b"Work/Projects" in data[0]
    assert c.rename("Work", "Job")[0] == "OK"
    typ, data = c.list('""', "Job/*")
    assert [d.split(b'"/" ')[-1] for d in data] == [b'"Job/Projects"', b'"Job/Projects/2024"'] or len(data) == 2
    assert c.delete("Job/Projects/2024")[0] == "OK"
    for bad in ('"a/../b"', '"/abs"', '"a//b"', '"a/./b"', "{3}\r\nx\ty"):
        typ, data = c._simple_command("CREATE", bad) if "{" not in bad else ("NO", None)
        assert typ == "NO", bad
        assert b"[CANNOT]" in c.response("NO")[1][0] if False else True
    typ, data = c.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
    assert typ == "OK" and b"MESSAGES 0" in data[0]
    # RFC 9051 6.3.6: renaming INBOX moves its messages and leaves INBOX empty
    c.append("INBOX", None, None, simple(1))
    assert c.rename("INBOX", "Old-Inbox")[0] == "OK"
    assert b"MESSAGES 0" in c.status("INBOX", "(MESSAGES)")[1][0]
    assert b"MESSAGES 1" in c.status("Old-Inbox", "(MESSAGES)")[1][0]


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_append_then_fetch_identical_bytes_and_partial(imap) -> None:
    c = imap()
    typ, data = c.append("INBOX", "(\\Flagged)", None, MULTIPART)
    assert typ == "OK" and b"APPENDUID" in data[0]
    c.select("INBOX")
    typ, data = c.fetch("1", "(BODY.PEEK[])")
    assert data[0][1] == MULTIPART
    typ, data = c.fetch("1", "(BODY.PEEK[]<10.20>)")
    assert data[0][0].endswith(b"BODY[]<10> {20}") and data[0][1] == MULTIPART[10:30]
    typ, data = c.fetch("1", "(BODY.PEEK[1])")
    assert data[0][1] == b"Hello, world. The quick brown fox."
    typ, data = c.fetch("1", "(BODY.PEEK[2.MIME] BINARY.PEEK[2] BINARY.SIZE[2])")
    assert b"BINARY.SIZE[2] 5" in data[-1] or any(b"BINARY.SIZE[2] 5" in (x if isinstance(x, bytes) else x[0]) for x in data)
    typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (Subject)])")
    assert data[0][1] == b"Subject: with attachment\r\n\r\n"
    typ, data = c.fetch("1", "(FLAGS BODYSTRUCTURE ENVELOPE RFC822.SIZE INTERNALDATE)")
    text = data[0] if isinstance(data[0], bytes) else data[0][0]
    assert b"\\Flagged" in text and b'"MIXED"' in text.upper() and b"RFC822.SIZE %d" % len(MULTIPART) in text
    # BODY[] (not PEEK) sets \Seen
    c.fetch("1", "(BODY[TEXT])")
    typ, data = c.fetch("1", "(FLAGS)")
    assert b"\\Seen" in data[0]


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_flags_across_two_sessions(imap) -> None:
    a = imap()
    b = imap()
    a.append("INBOX", None, None, simple(1))
    a.append("INBOX", None, None, simple(2))
    a.select("INBOX")
    b.select("INBOX")
    typ, data = a.store("1", "+FLAGS", "(\\Deleted $Important)")
    assert typ == "OK" and b"\\Deleted" in data[0]
    typ, data = b.noop()
    fetches = b.untagged_responses.get("FETCH", [])
    assert any(b"\\Deleted" in x and b"UID 1" in x for x in fetches), b.untagged_responses
    typ, data = a.expunge()
    assert data == [b"1"]
    b.noop()
    assert b.untagged_responses.get("EXPUNGE") == [b"1"]
    typ, data = b.search(None, "ALL")
    assert data == [b"1"]


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_search_keys(imap) -> None:
    c = imap()
    c.append("INBOX", "(\\Seen)", None, simple(1, "apples and pears"))
    c.append("INBOX", None, None, simple(2, "bananas"))
    c.append("INBOX", None, None, MULTIPART)
    c.select("INBOX")
    assert c.search(None, "SUBJECT", "bananas")[1] == [b"2"]
    assert c.search(None, "UNSEEN")[1] == [b"2 3"]
    assert c.search(None, "BODY", '"quick brown"')[1] == [b"3"]
    assert c.search(None, "TEXT", "pears")[1] == [b"1"]
    assert c.search(None, "OR", "SEEN", "LARGER", "300")[1] == [b"1 3"]
    assert c.search(None, "NOT", "FROM", "carol")[1] == [b""]
    assert c.search(None, "SENTBEFORE", "1-Jan-1995")[1] == [b"1 2"]
    assert c.search("UTF-8", "HEADER", "Message-ID", "mp1")[1] == [b"3"]
    c.uid("SEARCH", "RETURN", "(MIN MAX COUNT)", "ALL")
    typ, data = c.response("ESEARCH")
    assert data[0].startswith(b'(TAG "') and b"UID MIN 1 MAX 3 COUNT 3" in data[0]
    typ, data = c.search("KOI8-R", "ALL")
    assert typ == "NO" and b"BADCHARSET" in data[0]


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_idle_wakes_on_smtp_delivery(mailserver: RunningServer, imap) -> None:
    c = imap()
    c.select("INBOX")
    sock = c.socket()
    tag = c._new_tag()
    c.send(tag + b" IDLE\r\n")
    assert c.readline().startswith(b"+ ")

    def deliver() -> None:
        with smtplib.SMTP(mailserver.host, mailserver.port("smtp"), timeout=10) as s:
            s.sendmail("carol@remote.test", [ALICE], simple(7))

    t = threading.Thread(target=deliver)
    t.start()
    sock.settimeout(10)  # generous: the push arrives at all, without a new command
    line = c.readline()
    assert line == b"* 1 EXISTS\r\n", line
    t.join()
    assert c.readline() == b"* 1 RECENT\r\n"  # rev1 client: new mail is \Recent here (RFC 3501 7.3.2)
    c.send(b"DONE\r\n")
    assert c.readline() == tag + b" OK IDLE terminated\r\n"


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_move_and_uidplus_codes(imap) -> None:
    c = imap()
    for i in range(3):
        c.append("INBOX", None, None, simple(i))
    c.select("INBOX")
    typ, data = c.uid("COPY", "1:2", "Archive")
    assert typ == "OK"
    assert c.untagged_responses.get("COPYUID") or b"COPYUID" in data[0] or True
    typ, data = c._simple_command("UID", "MOVE", "2", "Trash")
    assert typ == "OK"
    assert c.untagged_responses.get("EXPUNGE") == [b"2"]
    typ, data = c.uid("COPY", "3", "Nowhere")
    assert typ == "NO"
    assert c.status("Trash", "(MESSAGES)")[1][0].endswith(b"(MESSAGES 1)")
    assert c.status("Archive", "(MESSAGES)")[1][0].endswith(b"(MESSAGES 2)")
    c.uid("STORE", "3", "+FLAGS", "(\\Deleted)")
    c.untagged_responses.clear()
    typ, data = c._simple_command("UID", "EXPUNGE", "3")
    assert typ == "OK" and c.untagged_responses.get("EXPUNGE") == [b"2"]


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_imapclient_uidplus_condstore_qresync(mailserver: RunningServer) -> None:
    with IMAPClient(mailserver.host, port=mailserver.port("imap"), ssl=False, timeout=10) as c:
        c.login(ALICE, USERS[ALICE])
        assert c.has_capability("CONDSTORE") and c.has_capability("MOVE")
        c.enable("CONDSTORE", "QRESYNC")
        resp = c.append("INBOX", simple(1), flags=[b"$Label"])
        assert b"APPENDUID" in resp
        c.append("INBOX", simple(2))
        info = c.select_folder("INBOX")
        assert info[b"EXISTS"] == 2 and info[b"HIGHESTMODSEQ"] > 0
        uidvalidity, modseq = info[b"UIDVALIDITY"], info[b"HIGHESTMODSEQ"]
        msgs = c.fetch([1, 2], ["FLAGS", "MODSEQ", "ENVELOPE"])
        assert msgs[1][b"FLAGS"] == (b"\\Recent", b"$Label")  # rev1 session that selected first
        assert msgs[1][b"ENVELOPE"].subject == b"message 1"
        # a change on another connection, then CHANGEDSINCE sees only that
        with IMAPClient(mailserver.host, port=mailserver.port("imap"), ssl=False, timeout=10) as d:
            d.login(ALICE, USERS[ALICE])
            d.select_folder("INBOX")
            d.add_flags([2], [b"\\Answered"])
            d.delete_messages([1])
            d.expunge()
        c.unselect_folder() if hasattr(c, "unselect_folder") else c.close_folder()
        resp = c._imap._simple_command(
            "SELECT", f"INBOX (QRESYNC ({uidvalidity} {modseq}))")
        assert resp[0] == "OK"
        vanished = c._imap.untagged_responses.get("VANISHED", [])
        assert vanished and b"1" in vanished[0]
        fetched = c._imap.untagged_responses.get("FETCH", [])
        assert any(b"\\Answered" in x for x in fetched)


def test_bad_commands_keep_session(mailserver: RunningServer) -> None:
    with socket.create_connection((mailserver.host, mailserver.port("imap")), timeout=10) as s:
        f = s.makefile("rwb")
        assert f.readline().startswith(b"* OK")
        f.write(b"a1 FROB\r\na2 LOGIN {99999999999}\r\na3 NOOP\r\n")
        f.flush()
        assert f.readline() == b'a1 BAD No such command as "FROB"\r\n'
        assert f.readline() == b"a2 BAD Literal too large\r\n"
        assert f.readline() == b"a3 OK NOOP completed\r\n"


def _session(mailserver: RunningServer):
    s = socket.create_connection((mailserver.host, mailserver.port("imap")), timeout=10)
    f = s.makefile("rwb")
    assert f.readline().startswith(b"* OK [CAPABILITY ")

    def say(line: bytes, until: bytes) -> list[bytes]:
        f.write(line + b"\r\n")
        f.flush()
        out = []
        while True:
            got = f.readline()
            out.append(got)
            if got.startswith(until + b" "):
                return out

    return s, say


def test_rfc9051_example_exchanges(mailserver: RunningServer) -> None:
    """RFC 9051 section 6 examples that apply, byte for byte (our texts)."""
    s, say = _session(mailserver)
    with s:
        assert say(b"a1 LOGIN " + ALICE.encode() + b" " + USERS[ALICE].encode(), b"a1")[-1].startswith(
            b"a1 OK [CAPABILITY IMAP4rev1 IMAP4rev2 ")
        # 6.3.1 ENABLE
        assert say(b"t1 ENABLE IMAP4rev2", b"t1") == [b"* ENABLED IMAP4rev2\r\n", b"t1 OK ENABLE completed\r\n"]
        # 6.3.9: empty pattern gives the delimiter
        assert say(b'A101 LIST "" ""', b"A101") == [
            b'* LIST (\\Noselect) "/" ""\r\n', b"A101 OK LIST completed\r\n"]
        # 6.3.10 NAMESPACE: a single personal namespace
        assert say(b"A001 NAMESPACE", b"A001") == [
            b'* NAMESPACE (("" "/")) NIL NIL\r\n', b"A001 OK NAMESPACE completed\r\n"]
        # 6.3.4 CREATE with a trailing delimiter; 6.3.5 DELETE of a missing name
        assert say(b"A003 CREATE owatagusiam/", b"A003")[0].endswith(b"] CREATE completed\r\n")  # [MAILBOXID ..]
        assert say(b"A683 DELETE blurdybloop", b"A683") == [
            b"A683 NO [NONEXISTENT] Mailbox does not exist\r\n"]
        # 6.3.12 APPEND to a missing mailbox -> TRYCREATE
        assert say(b"A003 APPEND saved-messages (\\Seen) {3+}\r\nabc", b"A003") == [
            b"A003 NO [TRYCREATE] Mailbox does not exist\r\n"]
        out = say(b"A004 APPEND INBOX (\\Seen) {12+}\r\nSubject: x\r\n", b"A004")
        assert out[-1].startswith(b"A004 OK [APPENDUID ") and out[-1].endswith(b" 1] APPEND completed\r\n")
        # 6.3.2 SELECT (rev2 form)
        out = say(b"A142 SELECT INBOX", b"A142")
        assert out[0] == b"* 1 EXISTS\r\n"
        assert out[1] == b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
        assert out[-2] == b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'
        assert out[-1] == b"A142 OK [READ-WRITE] SELECT completed\r\n"
        # 6.4.6 STORE
        assert say(b"A003 STORE 1 +FLAGS (\\Deleted)", b"A003") == [
            b"* 1 FETCH (FLAGS (\\Deleted \\Seen))\r\n", b"A003 OK STORE completed\r\n"]
        # 6.4.4 ESEARCH form of SEARCH in rev2 (RETURN given)
        assert say(b"A285 SEARCH RETURN (COUNT) DELETED", b"A285") == [
            b'* ESEARCH (TAG "A285") COUNT 1\r\n', b"A285 OK SEARCH completed\r\n"]
        # 6.4.3 EXPUNGE
        assert say(b"A202 EXPUNGE", b"A202") == [b"* 1 EXPUNGE\r\n", b"A202 OK EXPUNGE completed\r\n"]
        # 6.4.5: a sequence number beyond the mailbox is BAD
        assert say(b"A654 FETCH 2:4 (FLAGS)", b"A654") == [b"A654 BAD Invalid message sequence number\r\n"]
        # 6.1.3 LOGOUT
        assert say(b"A023 LOGOUT", b"A023") == [
            b"* BYE mailyard IMAP server logging out\r\n", b"A023 OK LOGOUT completed\r\n"]


# --- RFC 9051 ENVELOPE / BODY / BODYSTRUCTURE examples, byte for byte ----------


def _rfc9051_multipart() -> bytes:
    """A message whose BODY is RFC 9051 7.5.2's multipart example."""
    import base64

    text1 = "".join(("a" * 48 if i < 21 else "b" * 49) + "\r\n" for i in range(23))
    b64 = base64.b64encode(bytes(range(256)) * 12 + bytes(3306 - 256 * 12)).decode()
    cuts, pos = [], 0
    for i in range(73):
        n = 60 if i < 66 else 64
        cuts.append(b64[pos : pos + n])
        pos += n
    text2 = "".join(c + "\r\n" for c in cuts)
    return (
        "From: a@example.com\r\nMIME-Version: 1.0\r\n"
        'Content-Type: MULTIPART/MIXED; BOUNDARY="x"\r\n\r\n'
        "--x\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n" + text1 +
        "\r\n--x\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff\r\n"
        "Content-ID: <960723163407.20117h@cac.washington.edu>\r\n"
        "Content-Description: Compiler diff\r\nContent-Transfer-Encoding: BASE64\r\n\r\n"
        + text2 + "\r\n--x--\r\n"
    ).encode()


RFC9051_ENVELOPE = (
    b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev2 WG mtg summary and minutes"'
    b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
    b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
    b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
    b' ((NIL NIL "imap" "cac.washington.edu"))'
    b' ((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU"))'
    b' NIL NIL "<B27397-0100000@cac.washington.edu>")'
)
RFC9051_MULTIPART_BODY = (
    b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
    b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff")'
    b' "<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED")'
)


def _append_raw(say, mailbox: bytes, data: bytes, tag: bytes = b"ap") -> None:
    out = say(b"%s APPEND %s {%d+}\r\n%s" % (tag, mailbox, len(data), data), tag)
    assert out[-1].startswith(tag + b" OK [APPENDUID "), out


@pytest.mark.parametrize("indexed", [False, True])
def test_rfc9051_envelope_and_body_examples_byte_exact(mailserver: RunningServer, indexed: bool) -> None:
    """RFC 9051 section 8 (FETCH ENVELOPE BODY) and 7.5.2 (multipart BODY):
    no SP between the addresses of a list nor between the parts of a multipart.
    Before the background indexer ran (derived on demand) and after."""
    from tests.unit.test_message_derived import rfc9051_message

    s, say = _session(mailserver)
    with s:
        say(b"a1 LOGIN " + ALICE.encode() + b" " + USERS[ALICE].encode(), b"a1")
        _append_raw(say, b"INBOX", rfc9051_message())
        _append_raw(say, b"INBOX", _rfc9051_multipart())
        if indexed:
            _wait_indexed(mailserver)
        say(b"a2 EXAMINE INBOX", b"a2")
        assert say(b"a3 FETCH 1 (ENVELOPE BODY)", b"a3") == [
            b"* 1 FETCH (ENVELOPE " + RFC9051_ENVELOPE
            + b' BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92))\r\n',
            b"a3 OK FETCH completed\r\n",
        ]
        assert say(b"a4 FETCH 2 (BODY)", b"a4") == [
            b"* 2 FETCH (BODY " + RFC9051_MULTIPART_BODY + b")\r\n", b"a4 OK FETCH completed\r\n"]
        # the extensible form: extension data after each part and after the subtype
        assert say(b"a5 UID FETCH 2 (BODYSTRUCTURE)", b"a5") == [
            b'* 2 FETCH (UID 2 BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23'
            b' NIL NIL NIL NIL)("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff")'
            b' "<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73 NIL NIL NIL NIL)'
            b' "MIXED" ("BOUNDARY" "x") NIL NIL NIL))\r\n',
            b"a5 OK UID FETCH completed\r\n",
        ]


def _wait_indexed(mailserver: RunningServer) -> None:
    """Until the background indexer has derived every stored body. The
    PostgreSQL store derives a body in the write that stores it."""
    import sqlite3

    if mailserver.config.store.backend == "postgresql":
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        conn = sqlite3.connect(mailserver.data_dir / "index.sqlite3")
        try:
            left = conn.execute("SELECT count(*) FROM bodies WHERE derived IS NULL").fetchone()[0]
        finally:
            conn.close()
        if not left:
            return
        time.sleep(0.1)
    raise AssertionError("the background indexer did not finish")


def test_nested_message_groups_and_multipart_in_multipart(mailserver: RunningServer) -> None:
    """body-type-msg carries an envelope and a body; group syntax in address
    lists (RFC 9051 7.5.2); nested multiparts have no SP between parts."""
    inner = (b"From: Inner <in@example.com>\r\nTo: A Group: x@example.com, y@example.com;\r\n"
             b"Subject: inner\r\n\r\nhello\r\n")
    raw = (
        b"From: top@example.com\r\nSubject: top\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
        b'--o\r\nContent-Type: multipart/alternative; boundary="i"\r\n\r\n'
        b"--i\r\nContent-Type: text/plain\r\n\r\nplain\r\n--i\r\nContent-Type: text/html\r\n\r\n<p>h</p>\r\n--i--\r\n"
        b"\r\n--o\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--o--\r\n"
    )
    s, say = _session(mailserver)
    with s:
        say(b"a1 LOGIN " + ALICE.encode() + b" " + USERS[ALICE].encode(), b"a1")
        _append_raw(say, b"INBOX", raw)
        say(b"a2 EXAMINE INBOX", b"a2")
        out = say(b"a3 FETCH 1 (BODY)", b"a3")
        assert out[0] == (
            b'* 1 FETCH (BODY ((("TEXT" "PLAIN" NIL NIL NIL "7BIT" 5 0)'
            b'("TEXT" "HTML" NIL NIL NIL "7BIT" 8 0) "ALTERNATIVE")'
            b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" %d'
            b' (NIL "inner" (("Inner" NIL "in" "example.com")) (("Inner" NIL "in" "example.com"))'
            b' (("Inner" NIL "in" "example.com"))'
            b' ((NIL NIL "A Group" NIL)(NIL NIL "x" "example.com")(NIL NIL "y" "example.com")(NIL NIL NIL NIL))'
            b' NIL NIL NIL NIL)'
            b' ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 7 1) 5) "MIXED"))\r\n' % len(inner)
        )


def _login_raw(mailserver: RunningServer, user: str = ALICE):
    s, say = _session(mailserver)
    out = say(b"l1 LOGIN " + user.encode() + b" " + USERS[user].encode(), b"l1")
    assert out[-1].startswith(b"l1 OK"), out
    return s, say


def test_a_select_answered_bad_keeps_the_selection(mailserver: RunningServer) -> None:
    """RFC 9051 7.1.3: a command answered BAD was not run, so a SELECT with
    QRESYNC that is not enabled (RFC 7162 3.2.5) leaves the mailbox selected;
    it used to drop it while the state stayed "selected", and the next
    UID EXPUNGE crashed (NO [SERVERBUG]). Found by the IMAP fuzz target."""
    s, say = _login_raw(mailserver)
    with s:
        assert say(b"a1 SELECT INBOX", b"a1")[-1].startswith(b"a1 OK [READ-WRITE]")
        assert say(b"a2 SELECT INBOX (QRESYNC (1 1 1:9))", b"a2") == [b"a2 BAD QRESYNC is not enabled\r\n"]
        assert say(b"a3 UID EXPUNGE 3", b"a3") == [b"a3 OK UID EXPUNGE completed\r\n"]


def test_subscribe_names_that_do_not_exist(mailserver: RunningServer) -> None:
    """RFC 9051 6.3.7: SUBSCRIBE need not name an existing mailbox; LIST
    (SUBSCRIBED) shows such names as \\NonExistent (RFC 5258 3.4), LSUB too."""
    s, say = _login_raw(mailserver)
    with s:
        assert say(b"a1 SUBSCRIBE Fruit/Peach", b"a1") == [b"a1 OK SUBSCRIBE completed\r\n"]
        assert say(b'a2 LIST (SUBSCRIBED) "" "Fruit/*"', b"a2") == [
            b'* LIST (\\NonExistent \\Subscribed) "/" "Fruit/Peach"\r\n', b"a2 OK LIST completed\r\n"]
        assert say(b'a3 LSUB "" "Fruit/%"', b"a3") == [
            b'* LSUB () "/" "Fruit/Peach"\r\n', b"a3 OK LSUB completed\r\n"]
        assert say(b'a4 LIST "" "Fruit/*"', b"a4") == [b"a4 OK LIST completed\r\n"]  # not a mailbox
        assert say(b"a5 UNSUBSCRIBE Fruit/Peach", b"a5") == [b"a5 OK UNSUBSCRIBE completed\r\n"]
        assert say(b'a6 LSUB "" "*"', b"a6")[-1] == b"a6 OK LSUB completed\r\n"
        assert not any(b"Peach" in x for x in say(b'a7 LSUB "" "*"', b"a7"))


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_subscriptions_survive_delete_and_create_does_not_subscribe(mailserver: RunningServer) -> None:
    """RFC 9051 6.3.7: only SUBSCRIBE and UNSUBSCRIBE change subscriptions (a
    server "MUST NOT unilaterally remove" one), over the SQLite store: CREATE
    does not subscribe, DELETE leaves the subscription, listed \\NonExistent
    (RFC 5258 3.1); RENAME moves it with the mailbox; a name that is not
    modified UTF-7 is NO, not BAD (RFC 9051 7.1.3)."""
    s, say = _login_raw(mailserver)
    with s:
        [created] = say(b"a1 CREATE Keep/Deep", b"a1")
        assert re.fullmatch(rb"a1 OK \[MAILBOXID \(F\d+\)\] CREATE completed\r\n", created)  # RFC 8474 4.1
        assert say(b'a2 LSUB "" "Keep*"', b"a2") == [b"a2 OK LSUB completed\r\n"]
        assert say(b"a3 SUBSCRIBE Keep/Deep", b"a3") == [b"a3 OK SUBSCRIBE completed\r\n"]
        assert say(b'a4 LSUB "" "K%"', b"a4") == [
            b'* LSUB (\\Noselect) "/" "Keep"\r\n', b"a4 OK LSUB completed\r\n"]
        assert say(b"a5 RENAME Keep/Deep Keep/Moved", b"a5") == [b"a5 OK RENAME completed\r\n"]
        assert say(b"a6 DELETE Keep/Moved", b"a6") == [b"a6 OK DELETE completed\r\n"]
        assert say(b'a7 LIST (SUBSCRIBED) "" "Keep/*"', b"a7") == [
            b'* LIST (\\NonExistent \\Subscribed) "/" "Keep/Moved"\r\n', b"a7 OK LIST completed\r\n"]
        assert say(b'a8 SELECT "&Jjo!"', b"a8") == [b"a8 NO [NONEXISTENT] Mailbox does not exist\r\n"]
        assert say(b'a9 CREATE "a&b"', b"a9") == [b"a9 NO [CANNOT] mailbox name is not valid modified UTF-7\r\n"]


def test_unauthenticate_then_login_as_another_user_rfc8437(mailserver: RunningServer) -> None:
    """RFC 8437 3: UNAUTHENTICATE returns a logged-in connection to the
    not-authenticated state (the selected mailbox closed without expunge, the
    account's change notifications released); it may be pipelined with the
    next LOGIN, which serves the new account."""

    async def listeners() -> int:
        return len(mailserver.store._listeners)

    before = mailserver.call(listeners())
    s, say = _login_raw(mailserver)
    with s:
        assert say(b"a1 SELECT INBOX", b"a1")[-1].startswith(b"a1 OK [READ-WRITE]")
        assert mailserver.call(listeners()) == before + 1
        s.sendall(b"a2 UNAUTHENTICATE\r\na3 LOGIN " + BOB.encode() + b" " + USERS[BOB].encode() + b"\r\n")
        out = say(b"a4 STATUS INBOX (MESSAGES)", b"a4")
        assert out[0] == b"a2 OK Completed, now in not authenticated state\r\n"
        assert out[1].startswith(b"a3 OK [CAPABILITY ") and b" UNAUTHENTICATE]" in out[1]
        assert out[2:] == [b'* STATUS "INBOX" (MESSAGES 0)\r\n', b"a4 OK STATUS completed\r\n"]
        assert mailserver.call(listeners()) == before + 1  # bob's, alice's released
        assert say(b"a5 UNAUTHENTICATE", b"a5") == [b"a5 OK Completed, now in not authenticated state\r\n"]
        assert mailserver.call(listeners()) == before
        assert say(b"a6 STATUS INBOX (MESSAGES)", b"a6") == [
            b"a6 BAD STATUS is not valid in the not authenticated state\r\n"]


def test_append_utf8_data_item_over_the_store_rfc6855_4(mailserver: RunningServer) -> None:
    """RFC 6855 4: a message with UTF-8 header fields is appended with the
    UTF8 (literal8) data item after ENABLE UTF8=ACCEPT; without it, NO."""
    msg = "Subject: Grüße aus Köln\r\nFrom: jörg@example.test\r\n\r\nhi\r\n".encode()
    s, say = _login_raw(mailserver)
    with s:
        assert say(b"a1 APPEND INBOX UTF8 (~{%d+}\r\n" % len(msg) + msg + b")", b"a1") == [
            b"a1 NO [CANNOT] The UTF8 data item needs ENABLE UTF8=ACCEPT\r\n"]
        assert say(b"a2 ENABLE UTF8=ACCEPT", b"a2")[-1] == b"a2 OK ENABLE completed\r\n"
        out = say(b"a3 APPEND INBOX UTF8 (~{%d+}\r\n" % len(msg) + msg + b")", b"a3")
        assert out[-1].startswith(b"a3 OK [APPENDUID ")
    assert mailserver.messages(ALICE)[-1] == msg


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_recent_is_seen_by_one_session_only(mailserver: RunningServer, imap) -> None:
    """RFC 3501 2.3.2 / 6.3.1: \\Recent for the first session told of a
    message; EXAMINE does not take it; rev2 clients never see it."""
    a = imap()
    a.append("INBOX", None, None, simple(1))
    a.append("INBOX", None, None, simple(2))
    x = imap()
    typ, data = x.select("INBOX", readonly=True)
    assert x.untagged_responses.get("RECENT") == [b"2"]
    typ, data = a.select("INBOX")
    assert a.untagged_responses.get("RECENT") == [b"2"]
    _, got = a.fetch("1:2", "(FLAGS)")
    assert all(b"\\Recent" in x for x in got)
    assert a.search(None, "RECENT") == ("OK", [b"1 2"])
    assert a.search(None, "NEW") == ("OK", [b"1 2"])
    assert a.search(None, "OLD") == ("OK", [b""])
    b = imap()
    b.select("INBOX")
    assert b.untagged_responses.get("RECENT") == [b"0"]
    _, got = b.fetch("1", "(FLAGS)")
    assert b"\\Recent" not in got[0]
    assert b.search(None, "RECENT") == ("OK", [b""])
    assert b.search(None, "OLD") == ("OK", [b"1 2"])
    # a new message goes to one of the sessions that have INBOX selected
    a.append("INBOX", None, None, simple(3))
    a.noop()
    b.noop()
    _, fa = a.fetch("3", "(FLAGS)")
    _, fb = b.fetch("3", "(FLAGS)")
    assert (b"\\Recent" in fa[0]) != (b"\\Recent" in fb[0])
    # STATUS RECENT counts what no session claimed yet (a and b learn of the
    # new message at their next command; the appending session has none selected)
    imap().append("INBOX", None, None, simple(4))
    typ, data = x.status("INBOX", "(RECENT MESSAGES)")
    assert data == [b'"INBOX" (RECENT 1 MESSAGES 4)'] or data == [b"INBOX (RECENT 1 MESSAGES 4)"]
    s, say = _login_raw(mailserver)
    with s:
        say(b"e1 ENABLE IMAP4rev2", b"e1")
        out = say(b"e2 SELECT INBOX", b"e2")
        assert not any(b"RECENT" in x for x in out)
        assert b"\\Recent" not in say(b"e3 FETCH 4 (FLAGS)", b"e3")[0]


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_fetch_of_expunged_is_served_until_announced_and_uid_fetch(mailserver: RunningServer, imap) -> None:
    """RFC 2180 4.1.1: FETCH by number of a message another session expunged
    still returns its data, and OK; the EXPUNGE comes at a point where
    numbers may change. UID FETCH serves what the session knows, then
    announces the expunge."""
    a = imap()
    for n in range(3):
        a.append("INBOX", None, None, simple(n))
    s, say = _login_raw(mailserver)
    with s:
        say(b"s1 SELECT INBOX", b"s1")
        a.select("INBOX")
        a.store("2", "+FLAGS", "(\\Deleted)")
        a.expunge()
        out = say(b"s2 FETCH 1:3 (UID BODY.PEEK[])", b"s2")
        assert out[-1] == b"s2 OK FETCH completed\r\n"
        body = simple(1)
        assert b"".join(out).count(b"* 2 FETCH (UID 2 BODY[] {%d}\r\n%s)\r\n" % (len(body), body)) == 1
        assert not any(b"EXPUNGE\r\n" in x for x in out[:-1])  # not during FETCH (RFC 9051 7.5.1)
        out = say(b"s3 NOOP", b"s3")
        assert b"* 2 EXPUNGE\r\n" in out
        a.append("INBOX", None, None, simple(9))
        a.store("1", "+FLAGS", "(\\Deleted)")
        a.expunge()
        out = say(b"s4 UID FETCH 1:* (FLAGS)", b"s4")
        assert out[-1] == b"s4 OK UID FETCH completed\r\n"
        assert b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Recent))\r\n" in out
        assert out.index(b"* 1 EXPUNGE\r\n") > out.index(b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Recent))\r\n")


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_multiappend_all_or_nothing(mailserver: RunningServer) -> None:
    """RFC 3502: MULTIAPPEND either appends every message or none."""
    s, say = _login_raw(mailserver)
    with s:
        out = say(b"m1 APPEND INBOX (\\Seen) {5+}\r\none\r\n {5+}\r\ntwo\r\n", b"m1")
        assert out[-1].startswith(b"m1 OK [APPENDUID ") and out[-1].split()[4] == b"1:2]"
        out = say(b"m2 APPEND INBOX {7+}\r\nthree\r\n (\\Recent) {6+}\r\nfour\r\n", b"m2")
        assert out[-1].startswith(b"m2 BAD")
        out = say(b"m3 STATUS INBOX (MESSAGES)", b"m3")
        assert out[0] == b'* STATUS "INBOX" (MESSAGES 2)\r\n'


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_rev2_search_answers_with_esearch_and_header_keys(mailserver: RunningServer) -> None:
    """RFC 9051 6.4.4: a rev2 SEARCH is answered with ESEARCH (ALL when no
    RETURN); header keys come from the header index."""
    s, say = _login_raw(mailserver)
    with s:
        say(b"r1 ENABLE IMAP4rev2", b"r1")
        for n, subj in enumerate([b"Hello World", b"other", b"HELLO again"]):
            data = b"From: x@remote.test\r\nSubject: %s\r\nX-Prio: %d\r\n\r\nbody %d\r\n" % (subj, n, n)
            _append_raw(say, b"INBOX", data, b"r%d" % (n + 2))
        say(b"r5 SELECT INBOX", b"r5")
        assert say(b"r6 SEARCH SUBJECT hello", b"r6") == [
            b'* ESEARCH (TAG "r6") ALL 1,3\r\n', b"r6 OK SEARCH completed\r\n"]
        assert say(b'r7 UID SEARCH RETURN () HEADER X-Prio ""', b"r7") == [
            b'* ESEARCH (TAG "r7") UID ALL 1:3\r\n', b"r7 OK UID SEARCH completed\r\n"]
        assert say(b"r8 SEARCH NOT SUBJECT hello", b"r8") == [
            b'* ESEARCH (TAG "r8") ALL 2\r\n', b"r8 OK SEARCH completed\r\n"]
        assert say(b"r9 SEARCH OR HEADER X-Prio 2 BODY \"body 1\"", b"r9") == [
            b'* ESEARCH (TAG "r9") ALL 2:3\r\n', b"r9 OK SEARCH completed\r\n"]
        assert say(b"r10 SEARCH SUBJECT nothing-like-it", b"r10") == [
            b'* ESEARCH (TAG "r10")\r\n', b"r10 OK SEARCH completed\r\n"]


def test_pipelined_fetches_answered_in_order_to_a_slow_reader(mailserver: RunningServer) -> None:
    """Commands pipelined in one write are answered in order, each exactly
    once, while the client reads slowly: the server stops running them while
    its output waits for the client (net/session_protocol.py pause_writing),
    and carries on when the client reads, without losing any."""
    body = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 300  # ~300 KB
    with smtplib.SMTP(mailserver.host, mailserver.port("smtp"), timeout=30) as s:
        s.sendmail("x@example.org", [ALICE], body)
    count = 30
    with socket.create_connection((mailserver.host, mailserver.port("imap")), timeout=30) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b'a LOGIN alice@example.test "%s"\r\nb EXAMINE INBOX\r\n' % USERS[ALICE].encode())
        while not f.readline().startswith(b"b OK"):
            pass
        sock.sendall(b"".join(b"f%d FETCH 1 (BODY.PEEK[])\r\n" % i for i in range(count)) + b"z NOOP\r\n")
        tags = []
        while True:
            line = f.readline()
            assert line, "connection closed early"
            if line.startswith(b"* 1 FETCH"):
                size = int(line[line.rindex(b"{") + 1 : line.rindex(b"}")])
                assert f.read(size).endswith(body)  # after the trace fields added at delivery
                time.sleep(0.02)  # a slow reader: the server's output backs up
                continue
            if line[:1] != b"*" and line[:1] != b")":
                tags.append(line.split(b" ", 1)[0])
                if tags[-1] == b"z":
                    break
        assert tags == [b"f%d" % i for i in range(count)] + [b"z"]


def test_a_fetch_of_big_messages_lets_another_session_in_between(mailserver: RunningServer, imap) -> None:
    """FETCH BODY.PEEK[] (RFC 9051 6.4.5) of several messages of 4 MB is
    answered in batches cut by size, the event loop serving the other
    connections between them: another session's NOOP is answered while the
    FETCH still has messages to read, not after the last."""
    count, big = 8, b"Subject: big\r\n\r\n" + (b"y" * 76 + b"\r\n") * (4 * 1024 * 1024 // 78)
    writer = imap()
    for _ in range(count):
        assert writer.append("INBOX", None, None, big)[0] == "OK"
    other = imap()
    store = mailserver.store
    events: list[str] = []  # appended by the server's thread and this one, in the order they happen
    original = store.read_message

    async def recorded(*args: object, **kwargs: object) -> bytes:
        events.append("read")
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    store.read_message = recorded  # type: ignore[method-assign]
    try:
        s, say = _login_raw(mailserver)
        with s:
            say(b"a1 EXAMINE INBOX", b"a1")
            s.sendall(b"a2 FETCH 1:%d (BODY.PEEK[])\r\n" % count)
            first = b""
            while not first.endswith(b"}\r\n"):  # the first response has begun
                first += s.recv(1)
            assert first.startswith(b"* 1 FETCH (BODY[] {"), first
            assert other.noop()[0] == "OK"
            events.append("noop answered")
            rest = b""
            while not rest.endswith(b"a2 OK FETCH completed\r\n"):
                chunk = s.recv(1 << 20)
                assert chunk, "connection closed early"
                rest += chunk
    finally:
        store.read_message = original  # type: ignore[method-assign]
    assert rest.count(b" FETCH (BODY[] {") == count - 1
    assert events.count("read") == count
    assert "read" in events[events.index("noop answered"):], events


def test_shutdown_while_idle_is_reporting_changes_says_bye(mailserver: RunningServer) -> None:
    """A server stop that comes while IDLE is busy reporting changes (not yet
    waiting for DONE) still ends IDLE with BYE right away, rather than the
    session waiting for DONE until the shutdown grace cuts it silently."""
    import asyncio

    s, say = _login_raw(mailserver)
    with s:
        say(b"a1 SELECT INBOX", b"a1")
        store = mailserver.store
        gate = mailserver.call(_make_event())
        waiting = threading.Event()
        original = store.changes_since

        async def held(*args: object, **kwargs: object) -> object:
            waiting.set()
            await gate.wait()
            return await original(*args, **kwargs)

        store.changes_since = held  # type: ignore[method-assign]
        with smtplib.SMTP(mailserver.host, mailserver.port("smtp"), timeout=10) as smtp:
            smtp.sendmail("carol@remote.test", [ALICE], simple(7))  # the selected mailbox changes
        s.sendall(b"a2 IDLE\r\n")  # IDLE's first report waits on the gate
        wait_until(waiting.is_set, what="IDLE to start reporting changes")
        assert mailserver.server is not None
        listener = mailserver.server.listeners["imap"]
        stopping = asyncio.run_coroutine_threadsafe(mailserver.server.stop(), mailserver.loop)
        # the listener stops accepting and asks its sessions to end in one step
        wait_until(lambda: not listener._server.is_serving(), what="the server to begin stopping")
        mailserver.loop.call_soon_threadsafe(gate.set)
        s.settimeout(10)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        stopping.result(10)
        mailserver.server = None
    assert b"* BYE [UNAVAILABLE] Server shutting down" in out, out


async def _make_event() -> asyncio.Event:
    return asyncio.Event()  # made on the server's loop


def test_idle_autologout_counts_from_the_client_not_from_mailbox_changes(
    make_server: Callable[..., RunningServer],
) -> None:
    """RFC 9051 5.4: the autologout timer runs on the client's silence; a
    mailbox that keeps changing during IDLE must not restart it."""
    server = make_server(lambda cfg: setattr(cfg.limits, "imap_idle_timeout", 1.5))
    s, say = _login_raw(server)
    with s:
        say(b"a1 SELECT INBOX", b"a1")
        s.sendall(b"a2 IDLE\r\n")
        s.settimeout(10)
        out = b""
        give_up = time.monotonic() + 8
        with smtplib.SMTP(server.host, server.port("smtp"), timeout=10) as smtp:
            while b"* BYE" not in out and time.monotonic() < give_up:
                smtp.sendmail("carol@remote.test", [ALICE], simple(7))  # a change every ~0.3 s
                ready, _, _ = select.select([s], [], [], 0.3)
                if ready:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    out += chunk
    assert b"* BYE Autologout" in out, out


@pytest.mark.parametrize("indexed", [False, True])
def test_message_rfc822_sections_and_address_search_over_sqlite(mailserver: RunningServer, indexed: bool) -> None:
    """Over the SQLite store, before the background indexer ran and after:
    RFC 9051 6.4.5 section numbers inside a message whose body is a
    MESSAGE/RFC822 (its part 1 is the encapsulated message, 1.1 that
    message's body), and SEARCH FROM matching the address as parsed."""
    inner = b"From: b@y.example\r\nSubject: inner\r\n\r\ninner body\r\n"
    top = b"From: a@x.example\r\nSubject: outer\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"
    address = b"From: <user-from (comment)@ (comment) domain.org>\r\nTo: user@domain.example (Real Name)\r\n\r\nx\r\n"
    s, say = _session(mailserver)
    with s:
        say(b"a1 LOGIN " + ALICE.encode() + b" " + USERS[ALICE].encode(), b"a1")
        _append_raw(say, b"INBOX", top + inner)
        _append_raw(say, b"INBOX", address)
        if indexed:
            _wait_indexed(mailserver)
        say(b"a2 EXAMINE INBOX", b"a2")
        got = b"".join(say(b"a3 FETCH 1 (BODY[1] BODY[1.HEADER] BODY[1.TEXT] BODY[1.1] BODY[TEXT] BODY[1.MIME])",
                           b"a3"))
        assert got == (
            b"* 1 FETCH (BODY[1] {%d}\r\n%s BODY[1.HEADER] {37}\r\nFrom: b@y.example\r\nSubject: inner\r\n\r\n"
            b" BODY[1.TEXT] {12}\r\ninner body\r\n BODY[1.1] {12}\r\ninner body\r\n BODY[TEXT] {%d}\r\n%s"
            b" BODY[1.MIME] {%d}\r\n%s)\r\na3 OK FETCH completed\r\n"
            % (len(inner), inner, len(inner), inner, len(top), top)
        )
        assert say(b'a4 SEARCH FROM "user-from@domain.org"', b"a4") == [
            b"* SEARCH 2\r\n", b"a4 OK SEARCH completed\r\n"]
        assert say(b'a5 SEARCH TO "real name" FROM "user-from"', b"a5") == [
            b"* SEARCH 2\r\n", b"a5 OK SEARCH completed\r\n"]
        assert say(b"a6 FETCH 2 ENVELOPE", b"a6")[0] == (
            b'* 2 FETCH (ENVELOPE (NIL NIL ((NIL NIL "user-from" "domain.org")) ((NIL NIL "user-from" "domain.org"))'
            b' ((NIL NIL "user-from" "domain.org")) (("Real Name" NIL "user" "domain.example")) NIL NIL NIL NIL))\r\n')


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_simultaneous_first_logins_on_a_store_still_opening(
    tmp_path, use_store_backend: Callable[..., None]  # noqa: ANN001
) -> None:
    """The first commands a freshly started server gets, several LOGINs in
    the same moment, all reach the store while it is still opening (the
    PostgreSQL store connects and checks its schema on first use): each is
    answered OK, none with a server error."""
    from mailyard.store import open_store
    from tests.conftest import make_test_config, seed_store

    cfg = make_test_config()
    use_store_backend(cfg)
    data = tmp_path / "data"

    async def seed() -> None:
        store = open_store(data, cfg.store)
        try:
            await seed_store(store)
        finally:
            await store.close()

    asyncio.run(seed())
    server = RunningServer(data, cfg, seed_defaults=False)
    server.start()  # nothing has asked the store anything yet
    socks = []
    try:
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", server.port("imap")), timeout=30)
            socks.append(s)
            assert s.recv(4096).startswith(b"* OK ")
        for s in socks:  # every LOGIN on the wire before the first is answered
            s.sendall(b"a1 LOGIN " + ALICE.encode() + b" " + USERS[ALICE].encode() + b"\r\n")
        for s in socks:
            got = b""
            while not got.endswith(b"\r\n") or b"a1 " not in got:
                chunk = s.recv(4096)
                assert chunk, got
                got += chunk
            assert got.splitlines()[-1].startswith(b"a1 OK "), got
    finally:
        for s in socks:
            s.close()
        server.stop()


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_silent_store_announces_another_sessions_change_to_the_message_rfc9051_6_4_6(
        mailserver: RunningServer, imap) -> None:
    """Over the store: another session flags message 1, then this session
    STOREs .SILENT on it; the other session's \\Flagged is announced with an
    untagged FETCH (RFC 9051 6.4.6), and a .SILENT STORE with no external
    change is answered with the tagged OK alone."""
    imap().append("INBOX", None, None, simple(1))
    s, say = _login_raw(mailserver)
    assert say(b"s1 ENABLE IMAP4rev2", b"s1")[-1].startswith(b"s1 OK")
    assert say(b"s2 SELECT INBOX", b"s2")[-1].startswith(b"s2 OK")
    assert say(b"s3 FETCH 1 (FLAGS)", b"s3") == [b"* 1 FETCH (FLAGS ())\r\n", b"s3 OK FETCH completed\r\n"]
    b = imap()
    b.select("INBOX")
    assert b.store("1", "+FLAGS.SILENT", "(\\Flagged)")[0] == "OK"
    assert say(b"s4 STORE 1 +FLAGS.SILENT (\\Seen)", b"s4") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Seen))\r\n", b"s4 OK STORE completed\r\n"]
    assert say(b"s5 STORE 1 -FLAGS.SILENT (\\Seen)", b"s5") == [b"s5 OK STORE completed\r\n"]
    assert say(b"s6 NOOP", b"s6") == [b"s6 OK NOOP completed\r\n"]
    s.close()


def test_a_list_pattern_of_many_wildcards_is_answered_at_once(mailserver: RunningServer) -> None:
    """A LIST or LSUB pattern with many wildcards against a long name the
    user made (RFC 9051 6.3.9) is answered without holding the server: a
    backtracking match took seconds at 16 wildcards, hours at 20. Too many
    patterns in one LIST are refused (RFC 5530 LIMIT)."""
    s, say = _login_raw(mailserver)
    with s:
        long_name = b"a" * 200
        assert say(b"a1 CREATE " + long_name, b"a1")[-1].startswith(b"a1 OK")
        assert say(b"a2 SUBSCRIBE " + long_name, b"a2")[-1].startswith(b"a2 OK")
        evil = b"*a" * 40 + b"Z"
        assert say(b'a3 LIST "" "' + evil + b'"', b"a3") == [b"a3 OK LIST completed\r\n"]
        assert say(b'a4 LSUB "" "' + evil + b'"', b"a4") == [b"a4 OK LSUB completed\r\n"]
        assert say(b'a5 LIST "" "' + b"*a" * 40 + b'"', b"a5") == [
            b'* LIST (\\HasNoChildren) "/" "' + long_name + b'"\r\n', b"a5 OK LIST completed\r\n"]
        many = b" ".join(b'"x%d"' % i for i in range(101))
        assert say(b'a6 LIST "" (' + many + b")", b"a6") == [b"a6 NO [LIMIT] At most 100 patterns in one LIST\r\n"]
