"""The PROXY protocol (v1 and v2) on the mail ports, over raw sockets: from
an address in ``[server] proxy_protocol_from`` the header gives the client's
address (seen in Received fields and login events), on an implicit-TLS port
it precedes the handshake (even in the same segment as the ClientHello),
and from any other address it is not read, so it cannot spoof one."""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import struct
from collections.abc import Callable

import pytest

from tests.conftest import USERS, RunningServer

ALICE = "alice@example.test"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"  # the PROXY protocol v2 signature (12 bytes)


def proxied_server(make_server: Callable[..., RunningServer]) -> RunningServer:
    def configure(cfg) -> None:  # noqa: ANN001
        cfg.server.proxy_protocol_from = ["127.0.0.1"]

    return make_server(configure=configure)


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock


def read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def smtp_reply(sock: socket.socket) -> bytes:
    lines = [read_line(sock)]
    while lines[-1][3:4] == b"-":
        lines.append(read_line(sock))
    return b"".join(lines)


def v2_header(src: str, dst: str, sport: int, dport: int) -> bytes:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x11 if a.version == 4 else 0x21
    body = a.packed + b.packed + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


def send_message(sock: socket.socket, marker: str) -> None:
    assert smtp_reply(sock).startswith(b"220 ")
    for command in (b"EHLO client.example\r\n", b"MAIL FROM:<someone@remote.example>\r\n",
                    f"RCPT TO:<{ALICE}>\r\n".encode(), b"DATA\r\n"):
        sock.sendall(command)
        assert smtp_reply(sock)[:1] in (b"2", b"3"), command
    sock.sendall(f"Subject: {marker}\r\n\r\nhello\r\n.\r\n".encode())
    assert smtp_reply(sock).startswith(b"250")
    sock.sendall(b"QUIT\r\n")


def received_of(server: RunningServer, marker: str) -> bytes:
    for message in server.messages(ALICE):
        if marker.encode() in message:
            return message.split(b"\r\n\r\n", 1)[0]
    raise AssertionError(f"no message {marker}")


def test_v1_gives_the_client_address_on_the_mx_port(make_server: Callable[..., RunningServer]) -> None:
    server = proxied_server(make_server)
    with connect(server.port("smtp")) as sock:
        sock.sendall(b"PROXY TCP4 198.51.100.7 203.0.113.1 51234 25\r\n")
        send_message(sock, "via-v1")
    head = received_of(server, "via-v1")
    assert b"198.51.100.7" in head, head


def test_untrusted_address_cannot_spoof(make_server: Callable[..., RunningServer]) -> None:
    server = proxied_server(make_server)
    # 127.0.0.2 is not in proxy_protocol_from: its header is an SMTP command.
    with connect(server.port("smtp"), source="127.0.0.2") as sock:
        assert smtp_reply(sock).startswith(b"220 ")
        sock.sendall(b"PROXY TCP4 198.51.100.7 203.0.113.1 51234 25\r\n")
        assert smtp_reply(sock)[:1] == b"5"
        send_message_after_greeting(sock, "spoof")
    head = received_of(server, "spoof")
    assert b"198.51.100.7" not in head and b"127.0.0.2" in head, head


def send_message_after_greeting(sock: socket.socket, marker: str) -> None:
    for command in (b"EHLO client.example\r\n", b"MAIL FROM:<someone@remote.example>\r\n",
                    f"RCPT TO:<{ALICE}>\r\n".encode(), b"DATA\r\n"):
        sock.sendall(command)
        assert smtp_reply(sock)[:1] in (b"2", b"3"), command
    sock.sendall(f"Subject: {marker}\r\n\r\nhello\r\n.\r\n".encode())
    assert smtp_reply(sock).startswith(b"250")


class TLSOverSocket:
    """A TLS client over a raw socket whose first segment carries ``prefix``
    and the ClientHello together (as a proxy forwarding at once sends them)."""

    def __init__(self, sock: socket.socket, prefix: bytes) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="mx.example.test")
        first = True
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                out = self.outgoing.read()
                if out:
                    sock.sendall((prefix if first else b"") + out)
                    first = False
                self._fill()
        self._flush()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        self.incoming.write(data)

    def _flush(self) -> None:
        out = self.outgoing.read()
        if out:
            self.sock.sendall(out)

    def send(self, data: bytes) -> None:
        self.obj.write(data)
        self._flush()

    def line(self) -> bytes:
        buf = b""
        while not buf.endswith(b"\r\n"):
            try:
                buf += self.obj.read(1)
            except ssl.SSLWantReadError:
                self._fill()
        return buf


def test_v2_before_the_tls_handshake_on_imaps(make_server: Callable[..., RunningServer],
                                              caplog: pytest.LogCaptureFixture) -> None:
    server = proxied_server(make_server)
    caplog.set_level(logging.INFO, logger="mailyard.auth")
    with connect(server.port("imaps")) as sock:
        tls = TLSOverSocket(sock, v2_header("2001:db8::7", "2001:db8::1", 40000, 993))
        assert tls.line().startswith(b"* OK")
        tls.send(f'a1 LOGIN {ALICE} "{USERS[ALICE]}"\r\n'.encode())
        while not (reply := tls.line()).startswith(b"a1 "):
            pass
        assert reply.startswith(b"a1 OK"), reply
    events = [str(r.msg) for r in caplog.records if str(r.msg).startswith("login ")]
    assert events == [f"login proto=imaps ip=2001:db8::7 tls=yes user={ALICE}"], events


def test_v1_on_pop3_and_a_bad_header_is_cut(make_server: Callable[..., RunningServer]) -> None:
    server = proxied_server(make_server)
    with connect(server.port("pop3")) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")  # a trusted peer must send the header
        sock.settimeout(10)
        try:
            assert sock.recv(100) == b""  # closed without a greeting
        except ConnectionResetError:
            pass  # (closed with our bytes unread: a reset)
    with connect(server.port("pop3")) as sock:
        sock.sendall(v2_header("198.51.100.8", "203.0.113.1", 1234, 110))
        assert read_line(sock).startswith(b"+OK")
        sock.sendall(b"QUIT\r\n")
        assert read_line(sock).startswith(b"+OK")
