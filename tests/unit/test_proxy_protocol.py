"""The PROXY protocol header parser (net/proxy_protocol.py), v1 and v2."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailyard.net.addresses import AddressSet
from mailyard.net.proxy_protocol import V2_SIGNATURE, ProxyHeader, ProxyHeaderError, parse


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def test_v1_tcp4_and_tcp6() -> None:
    line = b"PROXY TCP4 198.51.100.7 203.0.113.1 51234 25\r\n"
    assert parse(line + b"EHLO x\r\n") == ProxyHeader(len(line), ("198.51.100.7", 51234))
    line6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 993\r\n"
    assert parse(line6) == ProxyHeader(len(line6), ("2001:db8::7", 4000))
    assert parse(b"PROXY UNKNOWN\r\n") == ProxyHeader(15, None)


def test_v1_incomplete_and_bad() -> None:
    for part in (b"", b"P", b"PROXY TCP4 198.51", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"):
        assert parse(part) is None, part
    for bad in (b"EHLO x\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", b"PROXY TCP4 ::1 ::1 1 2\r\n",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n", b"PROXY " + b"x" * 120):
        with pytest.raises(ProxyHeaderError):
            parse(bad)


def test_v2_ipv4_ipv6_local() -> None:
    body4 = ipaddress.IPv4Address("198.51.100.7").packed + ipaddress.IPv4Address("203.0.113.1").packed
    body4 += struct.pack("!HH", 51234, 25)
    head = v2(1, 0x11, body4)
    assert parse(head + b"rest") == ProxyHeader(len(head), ("198.51.100.7", 51234))
    body6 = ipaddress.IPv6Address("2001:db8::7").packed + ipaddress.IPv6Address("2001:db8::1").packed
    body6 += struct.pack("!HH", 4000, 993) + b"\x03\x00\x04abcd"  # with a TLV
    head6 = v2(1, 0x21, body6)
    assert parse(head6) == ProxyHeader(len(head6), ("2001:db8::7", 4000))
    assert parse(v2(0, 0x00, b"")) == ProxyHeader(16, None)  # LOCAL: a health check
    for n in range(len(head)):
        assert parse(head[:n]) is None


def test_v2_bad() -> None:
    with pytest.raises(ProxyHeaderError):
        parse(b"\r\n\r\n\x00\r\nQUIX\n" + bytes(8))
    with pytest.raises(ProxyHeaderError):
        parse(V2_SIGNATURE + b"\x12\x11\x00\x00")  # version 1 in a v2 block
    with pytest.raises(ProxyHeaderError):
        parse(v2(1, 0x11, b"\x01\x02"))  # address block too short


def test_address_set() -> None:
    allowed = AddressSet(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"])
    assert "127.0.0.1" in allowed and "10.9.8.7" in allowed and "::ffff:10.1.1.1" in allowed
    assert "2001:db8::5" in allowed
    assert "127.0.0.2" not in allowed and "junk" not in allowed and "" not in allowed
    assert not AddressSet([]) and "127.0.0.1" not in AddressSet([])


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_refuse(data: bytes) -> None:
    try:
        header = parse(data)
    except ProxyHeaderError:
        return
    if header is not None:
        assert 15 <= header.length <= len(data)


@given(st.sampled_from([b"PROXY TCP4 198.51.100.7 203.0.113.1 51234 25\r\n",
                        v2(1, 0x11, bytes(12)), v2(1, 0x21, bytes(36) + b"\x01\x00\x02ab")]),
       st.binary(max_size=50))
def test_the_bytes_after_a_header_are_not_part_of_it(head: bytes, rest: bytes) -> None:
    header = parse(head + rest)
    assert header is not None and header.length == len(head)
