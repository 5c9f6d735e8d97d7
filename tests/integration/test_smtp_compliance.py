"""RFC details a strict client or a compliance checker looks at, over raw
sockets to a real server: command-line limits raised by the extensions
offered, the Received field's ``with`` clause."""

from __future__ import annotations

import socket
from typing import BinaryIO

from tests.conftest import RunningServer

# A reverse-path of 254 octets: a 64-octet local part and a 182-octet domain
# (RFC 5321 4.5.3.1.1-3).
LONG_ADDRESS = "s" * 64 + "@" + ".".join(["d" * 60] * 3) + ".test"


def session(server: RunningServer, port: str = "smtp") -> tuple[socket.socket, BinaryIO]:
    """A connection that has read the greeting and said EHLO."""
    sock = socket.create_connection((server.host, server.port(port)), timeout=10)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"220 ")
    sock.sendall(b"EHLO client.remote.test\r\n")
    while f.readline()[3:4] == b"-":
        pass
    return sock, f


def command(sock: socket.socket, f: BinaryIO, line: str) -> bytes:
    sock.sendall(line.encode() + b"\r\n")
    return f.readline()


def test_mail_and_rcpt_lines_may_exceed_512_octets_by_their_parameters(mailserver: RunningServer) -> None:
    """RFC 5321 4.5.3.1.4: extensions raise the 512-octet command line; SIZE
    (RFC 1870 3), RET/ENVID and NOTIFY/ORCPT (RFC 3461) add to MAIL and RCPT.
    A line that uses that room gets its answer, not 500 Line too long."""
    sock, f = session(mailserver)
    with sock:
        # ENVID of 100 characters (RFC 3461 4.4), xtext-encoded to 300 octets
        mail = f"MAIL FROM:<{LONG_ADDRESS}> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID={'+2B' * 100}"
        assert 512 < len(mail) + 2 < 512 + 26 + 14 + 100 + 200
        assert command(sock, f, mail).startswith(b"250 2.1.0")
        rcpt = f"RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;{'+2B' * 100}{LONG_ADDRESS}"
        assert 512 < len(rcpt) + 2 <= 512 + 500
        assert command(sock, f, rcpt).startswith(b"250 2.1.5")
        # past what the parameters may add, the line is still too long
        assert command(sock, f, rcpt + "x" * 500).startswith(b"500 5.5.2")
        # and other commands keep the 512 octets
        assert command(sock, f, "NOOP " + "x" * 600).startswith(b"500 5.5.2")
        assert command(sock, f, "DATA").startswith(b"354")
        sock.sendall(b"Subject: long envelope\r\n\r\nhi\r\n.\r\n")
        assert f.readline().startswith(b"250 ")
    assert len(mailserver.messages("alice@example.test")) == 1


def received_with(server: RunningServer, hello: str, mail: str) -> bytes:
    """Send one message after ``hello`` with ``mail``; its Received field."""
    with socket.create_connection((server.host, server.port("smtp")), timeout=10) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220 ")
        sock.sendall(hello.encode() + b"\r\n")
        while f.readline()[3:4] == b"-":
            pass
        for line in (mail, "RCPT TO:<alice@example.test>", "DATA"):
            assert command(sock, f, line)[:1] in (b"2", b"3")
        sock.sendall(b"Subject: trace\r\n\r\nhi\r\n.\r\n")
        assert f.readline().startswith(b"250 ")
    stored = server.messages("alice@example.test")[-1]
    start = stored.index(b"Received: ")
    return stored[start : stored.index(b";", start)]


def test_received_with_names_the_protocol_the_session_used(mailserver: RunningServer) -> None:
    """RFC 5321 4.4 and RFC 3848: "SMTP" after HELO, "ESMTP" after EHLO;
    RFC 6531 4.3: "UTF8SMTP" for a transaction with SMTPUTF8."""
    assert b" with SMTP id " in received_with(mailserver, "HELO client.remote.test", "MAIL FROM:<carol@remote.test>")
    assert b" with ESMTP id " in received_with(mailserver, "EHLO client.remote.test", "MAIL FROM:<carol@remote.test>")
    assert b" with UTF8SMTP id " in received_with(
        mailserver, "EHLO client.remote.test", "MAIL FROM:<carolé@remote.test> SMTPUTF8"
    )


def test_mail_parameters_it_cannot_implement_get_555(mailserver: RunningServer) -> None:
    """RFC 5321 4.1.1.11: a MAIL parameter the server does not recognise or
    cannot implement gets 555 (4.3.2 lists no 504 for MAIL); BODY=BINARYMIME
    needs CHUNKING (RFC 3030), which is not offered."""
    sock, f = session(mailserver)
    with sock:
        assert command(sock, f, "MAIL FROM:<carol@remote.test> BODY=BINARYMIME").startswith(b"555 5.5.4")
        assert command(sock, f, "MAIL FROM:<carol@remote.test> XFOO=1").startswith(b"555 5.5.4")
        assert command(sock, f, "MAIL FROM:<carol@remote.test> BODY=8BITMIME").startswith(b"250 2.1.0")


def test_reply_lines_stay_within_512_octets_however_long_the_ehlo_name(mailserver: RunningServer) -> None:
    """RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its code
    and CRLF; the EHLO reply does not echo a name that would pass that."""
    name = "h" * (512 - len("EHLO \r\n"))
    with socket.create_connection((mailserver.host, mailserver.port("smtp")), timeout=10) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(f"EHLO {name}\r\n".encode())
        lines = [f.readline()]
        while lines[-1][3:4] == b"-":
            lines.append(f.readline())
    assert lines[0].startswith(b"250-mx.example.test ")
    assert max(len(line) for line in lines) <= 512


def test_a_refused_parameter_is_named_within_a_512_octet_reply(mailserver: RunningServer) -> None:
    """A MAIL line may pass 512 octets by its parameters' room (RFC 5321
    4.5.3.1.4); the reply naming a refused parameter may not (4.5.3.1.5)."""
    sock, f = session(mailserver)
    with sock:
        for line in ("MAIL FROM:<carol@remote.test> X" + "K" * 600,
                     "MAIL FROM:<carol@remote.test> X" + "K" * 600 + "=1 X" + "K" * 600 + "=2"):
            reply = command(sock, f, line)
            assert reply[:1] == b"5" and len(reply) <= 512, (len(reply), reply[:80])
