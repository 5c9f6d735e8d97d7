"""Trace fields (RFC 5321 4.4, RFC 3848) and Message-ID generation (RFC 5322 3.6.4)."""

from __future__ import annotations

import re

import pytest

from mailyard.message.dates import to_timestamp
from mailyard.message.msgid import make_msgid
from mailyard.message.parse import parse_message
from mailyard.message.trace import (
    delivered_to_header,
    received_header,
    return_path_header,
    with_protocol,
)


def test_received_full_form():
    h = received_header(by="mx.example.net", helo="x.y.test", ip="192.0.2.7", rdns="mail.y.test",
                        protocol="ESMTPS", id="ABC12345", for_addr="mary@example.net",
                        ts=880128343)
    text = h.decode()
    assert text.startswith("Received: from x.y.test (mail.y.test [192.0.2.7])\r\n\tby mx.example.net"
                           " with ESMTPS id ABC12345\r\n\tfor <mary@example.net>; ")
    assert h.endswith(b"\r\n") and h.count(b"\r\n") == 3
    assert all(len(line) <= 78 for line in h.split(b"\r\n"))
    value = text.split(": ", 1)[1]
    assert to_timestamp(value.rsplit(";", 1)[1]) == 880128343
    msg = parse_message(h + b"Subject: x\r\n\r\nbody\r\n")
    assert msg["Subject"] == "x" and "by mx.example.net" in msg["Received"]


def test_received_minimal_and_ipv6_and_hostile_helo():
    h = received_header(by="mx.example.net", ts=0)
    assert re.fullmatch(rb"Received: by mx\.example\.net with ESMTP; .+ [+-]\d{4}\r\n", h)
    h = received_header(by="mx", helo="evil) (x\\", ip="2001:db8::1", protocol="SMTP", ts=0)
    assert b"from evil???x? ([IPv6:2001:db8::1])" in h
    h = received_header(by="mx", helo="h", ip="::ffff:192.0.2.1", ts=0)
    assert b"(([192.0.2.1]))" not in h and b"from h ([192.0.2.1])" in h
    with pytest.raises(ValueError):
        received_header(by="mx", for_addr="a@b\r\nX: y")


def test_received_names_the_authenticated_sender():
    h = received_header(by="mx.example.net", helo="pc", ip="192.0.2.7", protocol="ESMTPSA",
                        auth_user="alice@example.net", ts=0)
    assert h.startswith(b"Received: from pc ([192.0.2.7])\r\n\t(Authenticated sender: alice@example.net)"
                        b"\r\n\tby mx.example.net with ESMTPSA; ")
    # a comment cannot be closed or escaped by the name (RFC 5322 3.2.2 ctext)
    h = received_header(by="mx", protocol="ESMTPA", auth_user="a)(b\\c@x", ts=0)
    assert b"(Authenticated sender: a??b?c@x)" in h


@pytest.mark.parametrize("kwargs, expected", [
    ({}, "ESMTP"), ({"esmtp": False}, "SMTP"), ({"tls": True}, "ESMTPS"),
    ({"auth": True}, "ESMTPA"), ({"tls": True, "auth": True}, "ESMTPSA"),
    ({"utf8": True, "tls": True}, "UTF8SMTPS"), ({"lmtp": True, "auth": True}, "LMTPA"),
])
def test_with_protocol_rfc3848(kwargs, expected):
    assert with_protocol(**kwargs) == expected


def test_return_path_and_delivered_to():
    assert return_path_header("") == b"Return-Path: <>\r\n"
    assert return_path_header("<>") == b"Return-Path: <>\r\n"
    assert return_path_header("a@example.com") == b"Return-Path: <a@example.com>\r\n"
    assert return_path_header("<a@example.com>") == b"Return-Path: <a@example.com>\r\n"
    assert delivered_to_header("bob@example.test") == b"Delivered-To: bob@example.test\r\n"
    assert return_path_header("ü@example.com") == "Return-Path: <ü@example.com>\r\n".encode()
    for bad in ("a@b\r\nX: y", "a@b\n"):
        with pytest.raises(ValueError):
            return_path_header(bad)
        with pytest.raises(ValueError):
            delivered_to_header(bad)


def test_make_msgid_form_and_uniqueness():
    ids = {make_msgid("example.com") for _ in range(2000)}
    assert len(ids) == 2000
    for i in list(ids)[:20]:
        assert re.fullmatch(r"<[0-9a-z]+\.[0-9a-z]+@example\.com>", i)
    assert make_msgid("bücher.example").endswith("@xn--bcher-kva.example>")
    with pytest.raises(ValueError):
        make_msgid("bad domain")
    with pytest.raises(ValueError):
        make_msgid("x>\r\n")
