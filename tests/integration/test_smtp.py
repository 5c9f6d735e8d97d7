"""The SMTP receiving server through real sockets, driven by smtplib and
aiosmtplib; delivered bytes are read back through the store API."""

from __future__ import annotations

import asyncio
import email.utils
import smtplib
import socket
import time
from typing import BinaryIO

import aiosmtplib
import pytest

from mailyard.net.session_protocol import SessionProtocol
from mailyard.net.smtp import SMTPSession
from tests.conftest import RunningServer

MESSAGE = (
    b"From: Carol <carol@remote.test>\r\n"
    b"To: Alice <alice@example.test>\r\n"
    b"Subject: Hello\r\n"
    b"Date: Mon, 23 Nov 2026 08:00:00 +0000\r\n"
    b"Message-ID: <1@remote.test>\r\n"
    b"\r\n"
    b"Hi Alice,\r\n"
    b".leading dot\r\n"
    b".\r\n"
    b"..two dots\r\n"
    b"bye\r\n"
)


def smtp(server: RunningServer) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port("smtp"), local_hostname="client.remote.test", timeout=10)


def split_trace(stored: bytes) -> tuple[list[bytes], bytes]:
    """(the trace header lines this server added, the rest)."""
    lines = stored.split(b"\r\n")
    trace = []
    i = 0
    while i < len(lines) and lines[i].split(b":")[0] in (b"Return-Path", b"Delivered-To", b"Received"):
        trace.append(lines[i])
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            trace[-1] += b"\r\n" + lines[i]
            i += 1
    return trace, b"\r\n".join(lines[i:])


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_delivery_bytes_exact_with_trace(mailserver: RunningServer) -> None:
    with smtp(mailserver) as s:
        code, banner = s.ehlo()
        assert code == 250
        features = banner.decode()
        for keyword in ("SIZE", "8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES", "SMTPUTF8"):
            assert keyword in features
        refused = s.sendmail("carol@remote.test", ["alice@example.test"], MESSAGE)
        assert refused == {}
    (stored,) = mailserver.messages("alice@example.test")
    trace, rest = split_trace(stored)
    assert rest == MESSAGE  # bytes as sent, dot-stuffing undone by the server
    assert trace[0] == b"Return-Path: <carol@remote.test>"
    assert trace[1] == b"Delivered-To: alice@example.test"
    received = trace[2].decode()
    assert received.startswith("Received: from client.remote.test")
    assert "[127.0.0.1]" in received and "by mx.example.test" in received and "ESMTP" in received


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_two_recipients_one_rejected(mailserver: RunningServer) -> None:
    with smtp(mailserver) as s:
        s.ehlo()
        assert s.mail("carol@remote.test")[0] == 250
        assert s.rcpt("alice@example.test")[0] == 250
        code, text = s.rcpt("nobody@example.test")
        assert code == 550 and text.startswith(b"5.1.1")
        assert s.rcpt("bob@EXAMPLE.TEST")[0] == 250
        code, _ = s.data(MESSAGE)
        assert code == 250
    assert len(mailserver.messages("alice@example.test")) == 1
    assert len(mailserver.messages("bob@example.test")) == 1


def test_relaying_denied_on_mx_port(mailserver: RunningServer) -> None:
    with smtp(mailserver) as s:
        s.ehlo()
        s.mail("carol@example.test")
        code, text = s.rcpt("victim@remote.test")
        assert code == 550 and text.startswith(b"5.7.1")


def test_postmaster_always_accepted(mailserver: RunningServer) -> None:
    with smtp(mailserver) as s:
        s.helo()
        s.mail("")
        assert s.rcpt("<postmaster>")[0] == 250
        assert s.rcpt("PostMaster@example.test")[0] == 250
        assert s.data(MESSAGE)[0] == 250
    assert len(mailserver.messages("postmaster@example.test")) == 1  # one copy per mailbox


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_alias_and_list_expand_and_store_once_per_mailbox(mailserver: RunningServer) -> None:
    store = mailserver.store
    mailserver.call(store.add_alias("info@example.test", ["alice@example.test", "team@example.test"]))
    mailserver.call(store.add_list("team@example.test"))
    for member in ("alice@example.test", "bob@example.test", "info@example.test"):  # a loop back to info
        mailserver.call(store.subscribe_list("team@example.test", member))
    with smtp(mailserver) as s:
        assert s.sendmail("carol@remote.test", ["info@example.test"], MESSAGE) == {}
    alice = mailserver.messages("alice@example.test")
    bob = mailserver.messages("bob@example.test")
    assert len(alice) == 1 and len(bob) == 1
    assert split_trace(alice[0])[0][1] == b"Delivered-To: alice@example.test"


def test_vrfy_and_expn_off_by_default(mailserver: RunningServer) -> None:
    with smtp(mailserver) as s:
        s.ehlo()
        assert s.verify("alice@example.test")[0] == 252


def test_vrfy_and_expn_when_enabled(make_server) -> None:  # noqa: ANN001
    def configure(cfg):  # noqa: ANN001, ANN202
        cfg.smtp.vrfy = True
        cfg.smtp.expn = True

    server = make_server(configure)
    server.call(server.store.add_list("team@example.test"))
    server.call(server.store.subscribe_list("team@example.test", "bob@example.test"))
    with smtp(server) as s:
        s.ehlo()
        code, text = s.verify("alice@example.test")
        assert code == 250 and b"alice@example.test" in text
        assert s.verify("nobody@example.test")[0] == 550
        code, text = s.expn("team@example.test")
        assert code == 250 and b"<bob@example.test>" in text


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_oversized_message_refused_and_nothing_stored(make_server) -> None:  # noqa: ANN001
    server = make_server(lambda cfg: setattr(cfg.smtp, "max_message_size", 10_000))
    with smtp(server) as s:
        s.ehlo()
        assert "10000" in s.esmtp_features["size"]
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            s.sendmail("carol@remote.test", ["alice@example.test"], b"x" * 20_000)
        assert info.value.smtp_code == 552
        s.rset()
        s.mail("carol@remote.test")
        s.rcpt("alice@example.test")
        code, _ = s.data(b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 20)
        assert code == 552
        assert s.noop()[0] == 250  # the session goes on
    assert server.messages("alice@example.test") == []


def greeted_ehlo(sock: socket.socket) -> BinaryIO:
    """Read the greeting, say EHLO and read its reply; the reader for what follows."""
    f = sock.makefile("rb")
    assert f.readline().startswith(b"220 ")
    sock.sendall(b"EHLO pipe.test\r\n")
    while f.readline()[3:4] == b"-":
        pass
    return f


def test_pipelined_transaction_in_one_write(mailserver: RunningServer) -> None:
    with socket.create_connection((mailserver.host, mailserver.port("smtp")), timeout=10) as sock:
        f = greeted_ehlo(sock)
        sock.sendall(
            b"MAIL FROM:<carol@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
            b"RCPT TO:<ghost@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
        )
        replies = [f.readline()[:3] for _ in range(5)]
        assert replies == [b"250", b"250", b"550", b"250", b"354"]
        sock.sendall(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        assert f.readline()[:3] == b"250"
        assert f.readline()[:3] == b"221"
    assert len(mailserver.messages("bob@example.test")) == 1


def test_replies_to_a_pipelined_group_are_written_as_one_unit(mailserver: RunningServer,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 2920 3.2: the replies to MAIL, RCPT and DATA of one group go out
    in one write, and so do the 250 of a message and the 221 of the QUIT
    pipelined after it (every reply is still sent before the server waits
    for input)."""
    writes: list[bytes] = []
    real = SessionProtocol.write

    def spy(self: SessionProtocol, data: bytes) -> None:
        if data and self.protocol_label == "smtp":
            writes.append(bytes(data))
        real(self, data)

    monkeypatch.setattr(SessionProtocol, "write", spy)
    with socket.create_connection((mailserver.host, mailserver.port("smtp")), timeout=10) as sock:
        f = greeted_ehlo(sock)
        sock.sendall(b"MAIL FROM:<carol@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
                     b"RCPT TO:<ghost@example.test>\r\nDATA\r\n")
        assert [f.readline()[:3] for _ in range(4)] == [b"250", b"250", b"550", b"354"]
        sock.sendall(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        assert f.readline()[:3] == b"250"
        assert f.readline()[:3] == b"221"
        assert f.read() == b""  # closed after the 221
    assert [w[:3] for w in writes[2:]] == [b"250", b"250"]
    assert [line[:3] for line in writes[2].splitlines()] == [b"250", b"250", b"550", b"354"]
    assert [line[:3] for line in writes[3].splitlines()] == [b"250", b"221"]
    assert len(mailserver.messages("alice@example.test")) == 1


def test_a_step_that_fails_still_sends_the_replies_queued_before_it(mailserver: RunningServer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that raises (here the recipient lookup) does not swallow the
    replies queued for the commands pipelined before it (RFC 2920 3.2: each
    command gets its reply), and the client is told the session ends (RFC
    5321 3.8: 421) rather than finding the connection closed in silence."""

    async def broken(self: SMTPSession, forward_path: str) -> None:
        raise RuntimeError("router broke")

    monkeypatch.setattr(SMTPSession, "rcpt", broken)
    with socket.create_connection((mailserver.host, mailserver.port("smtp")), timeout=10) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220 ")
        sock.sendall(b"EHLO pipe.test\r\n")
        while f.readline()[3:4] == b"-":
            pass
        sock.sendall(b"MAIL FROM:<carol@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
        assert f.readline() == b"250 2.1.0 Sender OK\r\n"
        assert f.readline().startswith(b"421 4.3.0 mx.example.test ")
        assert f.read() == b""  # closed after the 421


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_abrupt_disconnect_mid_data_stores_nothing(mailserver: RunningServer) -> None:
    with socket.create_connection((mailserver.host, mailserver.port("smtp")), timeout=10) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"HELO x\r\nMAIL FROM:<c@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        for _ in range(4):
            f.readline()
        sock.sendall(b"Subject: cut\r\n\r\nhalf a message")
    # the server keeps serving others, and the cut message is nowhere
    with smtp(mailserver) as s:
        assert s.sendmail("c@remote.test", ["alice@example.test"], MESSAGE) == {}
    assert len(mailserver.messages("alice@example.test")) == 1


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
async def test_aiosmtplib_concurrent_clients(mailserver: RunningServer) -> None:
    port = mailserver.port("smtp")

    async def send(i: int) -> None:
        msg = b"Subject: n%d\r\n\r\nmessage %d\r\n" % (i, i)
        await aiosmtplib.send(
            msg, sender="carol@remote.test", recipients=["bob@example.test"],
            hostname=mailserver.host, port=port, timeout=20, start_tls=False,
        )

    await asyncio.gather(*(send(i) for i in range(40)))
    stored = mailserver.messages("bob@example.test")
    assert len(stored) == 40
    assert sorted(split_trace(m)[1] for m in stored) == sorted(
        b"Subject: n%d\r\n\r\nmessage %d\r\n" % (i, i) for i in range(40)
    )


def test_shutdown_answers_421(make_server) -> None:  # noqa: ANN001
    server = make_server()
    sock = socket.create_connection((server.host, server.port("smtp")), timeout=10)
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(b"EHLO x\r\n")
    while f.readline()[3:4] == b"-":
        pass
    assert server.server is not None
    server.call(server.server.stop())
    server.server = None
    assert f.readline().startswith(b"421 ")
    sock.close()


def test_connection_limit_per_client_answers_421(make_server) -> None:  # noqa: ANN001
    server = make_server(lambda cfg: setattr(cfg.limits, "max_connections_per_ip", 2))
    held = [socket.create_connection((server.host, server.port("smtp")), timeout=10) for _ in range(2)]
    try:
        for sock in held:
            assert sock.makefile("rb").readline().startswith(b"220 ")
        with socket.create_connection((server.host, server.port("smtp")), timeout=10) as third:
            assert third.makefile("rb").readline().startswith(b"421 4.7.0")
    finally:
        for sock in held:
            sock.close()
    # once they are gone, clients are served again
    deadline = time.monotonic() + 10
    while True:
        try:
            with smtp(server) as s:
                assert s.noop()[0] == 250
            break
        except smtplib.SMTPConnectError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_over_long_command_line_and_garbage_keep_session(mailserver: RunningServer) -> None:
    with socket.create_connection((mailserver.host, mailserver.port("smtp")), timeout=10) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"HELO " + b"x" * 5000 + b"\r\n")
        assert f.readline().startswith(b"500 ")
        sock.sendall(b"\x00\xff\xfe garbage\r\n")
        assert f.readline()[:1] == b"5"
        sock.sendall(b"NOOP\r\n")
        assert f.readline().startswith(b"250")


def _raw_send(server: RunningServer, message: bytes, pieces: int = 37) -> list[bytes]:
    """One transaction over a raw socket, the message (ending with CRLF)
    dot-stuffed and written in pieces; the replies to DATA's end and QUIT."""
    stuffed = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in message.split(b"\r\n"))
    with socket.create_connection((server.host, server.port("smtp")), timeout=10) as sock:
        f = sock.makefile("rb")

        def reply() -> bytes:
            while True:
                line = f.readline()
                if line[3:4] != b"-":
                    return line

        reply()
        for command in (b"EHLO client.remote.test", b"MAIL FROM:<carol@remote.test>", b"RCPT TO:<alice@example.test>",
                        b"DATA"):
            sock.sendall(command + b"\r\n")
            assert reply()[:1] in (b"2", b"3")
        data = stuffed + b".\r\n"  # the message ends with CRLF
        step = len(data) // pieces + 1
        for i in range(0, len(data), step):
            sock.sendall(data[i : i + step])
        end = reply()
        sock.sendall(b"QUIT\r\n")
        return [end, reply()]


def test_large_message_stored_exactly_with_its_received_field(mailserver: RunningServer) -> None:
    """A message past the reader's spill size (spooled), with dot lines,
    lines of exactly 998 octets, lines without any dot (base64) and a text
    body: the stored bytes are the Received field and the message as sent."""
    base64ish = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3"[:76]
    message = (
        b"From: Carol <carol@remote.test>\r\nTo: <alice@example.test>\r\nSubject: big\r\n"
        b"Message-ID: <big@remote.test>\r\n\r\n"
        + b".starts with a dot\r\n..two\r\n.\r\n" * 3
        + (b"y" * 998 + b"\r\n") * 5
        + (base64ish + b"\r\n") * 2000
        + b"Text. With dots... and a line\r\n.\r\nend\r\n"
    )
    end, bye = _raw_send(mailserver, message)
    assert end.startswith(b"250 2.0.0 OK queued as ") and bye.startswith(b"221")
    queue_id = end.split()[-1].decode()
    (stored,) = mailserver.messages("alice@example.test")
    trace, rest = split_trace(stored)
    assert rest == message
    assert trace[:2] == [b"Return-Path: <carol@remote.test>", b"Delivered-To: alice@example.test"]
    received = trace[2].decode()
    head, _, date = received.rpartition("; ")
    assert head == ("Received: from client.remote.test ([127.0.0.1])\r\n\tby mx.example.test with ESMTP"
                    f" id {queue_id}\r\n\tfor <alice@example.test>")
    assert abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time()) < 300


def test_a_999_octet_line_in_a_large_message_is_refused(mailserver: RunningServer) -> None:
    """RFC 5321 4.5.3.1.6: 1000 octets with CRLF; one more is refused (500
    5.5.2) wherever it lies in a large message, and nothing is stored."""
    message = b"Subject: long\r\n\r\n" + (b"x" * 76 + b"\r\n") * 1500 + b"z" * 999 + b"\r\n" + b"tail\r\n" * 100
    end, bye = _raw_send(mailserver, message)
    assert end.startswith(b"500 5.5.2") and bye.startswith(b"221")
    assert mailserver.messages("alice@example.test") == []
