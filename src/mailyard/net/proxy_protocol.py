"""The PROXY protocol (HAProxy's, versions 1 and 2) on the mail listeners.

A TCP load balancer in front of the mail ports can say who its client is
by sending one header before the client's bytes: version 1 is a text line
(``PROXY TCP4 198.51.100.7 203.0.113.1 51234 25\\r\\n``), version 2 a binary
block after a 12-byte signature. ``[server] proxy_protocol_from`` lists the
addresses allowed to send it; from those a connection must start with the
header, from anyone else it is an ordinary connection (so a client cannot
claim another address).

`parse` is the sans-I/O parser. `header_reader` is the step the accept
loop of a listener with such addresses (net/accept.py) takes first: it
reads exactly the header's bytes from the accepted socket (no byte after
it); the loop then hands the socket to asyncio with the session and, on an
implicit-TLS port, TLS (the header precedes the TLS handshake; the
ClientHello may follow in the same segment).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any

from .. import logs
from .accept import SourceOf
from .addresses import AddressSet

log = logging.getLogger("mailyard.net")

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the specification's longest v1 line, CRLF included
HEADER_TIMEOUT = 10.0


class ProxyHeaderError(ValueError):
    """The bytes are not a PROXY protocol header."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    length: int  # bytes of the header
    # The client's (address, port); None for v1 UNKNOWN, v2 LOCAL or an
    # address family other than TCP over IPv4/IPv6 (the connection's own
    # peer then stands).
    source: tuple[str, int] | None


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; None while it is incomplete."""
    if data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data)
    if data[:6] != b"PROXY "[: len(data[:6])]:
        raise ProxyHeaderError("no PROXY protocol header")
    end = data.find(b"\r\n")
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError("PROXY v1 line too long")
        return None
    if end + 2 > V1_MAX:
        raise ProxyHeaderError("PROXY v1 line too long")
    parts = data[:end].decode("ascii", "replace").split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(end + 2, None)
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("bad PROXY v1 line")
    try:
        ip = ipaddress.ip_address(parts[2])
        ipaddress.ip_address(parts[3])
        port = int(parts[4])
        int(parts[5])
    except ValueError:
        raise ProxyHeaderError("bad PROXY v1 address") from None
    if (ip.version == 4) != (parts[1] == "TCP4") or not 0 <= port <= 65535:
        raise ProxyHeaderError("bad PROXY v1 address")
    return ProxyHeader(end + 2, (str(ip), port))


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if data[:12] != V2_SIGNATURE[: len(data[:12])]:
        raise ProxyHeaderError("bad PROXY v2 signature")
    if len(data) < 16:
        return None
    if data[:12] != V2_SIGNATURE:
        raise ProxyHeaderError("bad PROXY v2 signature")
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2 or command > 1:
        raise ProxyHeaderError("unsupported PROXY v2 version or command")
    family = data[13]
    total = 16 + int.from_bytes(data[14:16], "big")
    if len(data) < total:
        return None
    body = data[16:total]
    if command == 0:  # LOCAL: the proxy's own connection (a health check)
        return ProxyHeader(total, None)
    if family == 0x11 and len(body) >= 12:  # TCP over IPv4
        return ProxyHeader(total, (str(ipaddress.IPv4Address(body[0:4])), int.from_bytes(body[8:10], "big")))
    if family == 0x21 and len(body) >= 36:  # TCP over IPv6
        return ProxyHeader(total, (str(ipaddress.IPv6Address(body[0:16])), int.from_bytes(body[32:34], "big")))
    if family in (0x11, 0x21):
        raise ProxyHeaderError("PROXY v2 address block too short")
    return ProxyHeader(total, None)


async def read_header(sock: socket.socket, timeout: float = HEADER_TIMEOUT) -> ProxyHeader:
    """Read exactly one header from a freshly accepted non-blocking socket.

    Exactly: v2 says its length after 16 bytes, and a v1 line is read up to
    its CRLF (at most 107 bytes, one at a time), so the client's first byte
    (a greeting-less protocol's command, a TLS ClientHello) stays in the
    socket for the session. Raises `ProxyHeaderError` (or TimeoutError).
    """
    loop = asyncio.get_running_loop()

    async def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = await loop.sock_recv(sock, n - len(data))
            if not chunk:
                raise ProxyHeaderError("closed before the PROXY header ended")
            data += chunk
        return data

    async def read() -> ProxyHeader:
        # 5 bytes: shorter than any header ("PROXY UNKNOWN\r\n" is 15, v2 at least 16)
        data = await exactly(5)
        while True:
            header = parse(data)
            if header is not None:
                return header
            if data[:1] == V2_SIGNATURE[:1]:
                need = 16 if len(data) < 16 else 16 + int.from_bytes(data[14:16], "big")
                data += await exactly(need - len(data))
            else:
                data += await exactly(1)

    return await asyncio.wait_for(read(), timeout)


def header_reader(allowed: AddressSet, name: str) -> SourceOf:
    """The PROXY step of `Acceptor` (net/accept.py): for a socket
    from ``allowed``, the client's address from the header it must send
    (False, logged, when it sends none or a bad one); None for any other."""

    async def source_of(conn: socket.socket, peer: Any) -> tuple[str, int] | None | bool:
        if not (peer and peer[0] in allowed):
            return None
        try:
            return (await read_header(conn)).source
        except (ProxyHeaderError, TimeoutError, OSError) as exc:
            logs.event(log, logging.WARNING, "proxy_header_refused", proto=name, ip=peer[0],
                       reason=str(exc) or type(exc).__name__)
            return False

    return source_of
