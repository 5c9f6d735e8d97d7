"""Trace header fields the server prepends: Received, Return-Path, Delivered-To.

What: each function returns one complete header field as bytes (folded,
CRLF-terminated), ready to be prepended to the stored message bytes.

Why bytes: the server never re-serialises a message it received (DESIGN.md:
the bytes a client sent are stored exactly); it only puts trace fields in
front of them, RFC 5321 4.4.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from .dates import format_date
from .headers import check_header_value

__all__ = [
    "delivered_to_header",
    "received_header",
    "return_path_header",
    "with_protocol",
]

# Characters a client-supplied name may keep inside the Received field. The
# HELO argument and reverse-DNS name come from the network: anything outside
# this set (parentheses would open or close a comment, 8-bit, controls) is
# replaced so the field always parses.
_UNSAFE = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")
_MAX_NAME = 255


def _safe(name: str) -> str:
    return _UNSAFE.sub("?", name[:_MAX_NAME]) or "?"


def with_protocol(*, esmtp: bool = True, tls: bool = False, auth: bool = False,
                  utf8: bool = False, lmtp: bool = False) -> str:
    """The ``with`` keyword for Received (RFC 3848, RFC 6531 4.3).

    SMTP / ESMTP; ESMTPS with TLS, ESMTPA with AUTH, ESMTPSA with both
    (RFC 3848); UTF8SMTP[S][A] when the transaction used SMTPUTF8 (RFC 6531
    4.3); LMTP[S][A] (RFC 3848) for LMTP.
    """
    if lmtp:
        base = "LMTP"
    elif utf8:
        base = "UTF8SMTP"
    elif esmtp:
        base = "ESMTP"
    else:
        return "SMTP"  # RFC 3848 defines no S/A suffix for plain SMTP
    return base + ("S" if tls else "") + ("A" if auth else "")


@functools.lru_cache(maxsize=1024)  # one client sends many messages
def _address_literal(ip: str) -> str:
    # RFC 5321 4.1.3: IPv4 as [a.b.c.d], IPv6 as [IPv6:...]
    try:
        addr = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return "[" + _safe(ip) + "]"
    if addr.version == 6:
        mapped = addr.ipv4_mapped
        if mapped is not None:
            return f"[{mapped}]"
        return f"[IPv6:{addr.compressed}]"
    return f"[{addr}]"


def received_header(
    *,
    by: str,
    helo: str | None = None,
    ip: str | None = None,
    rdns: str | None = None,
    protocol: str = "ESMTP",
    id: str | None = None,
    for_addr: str | None = None,
    tls_info: str | None = None,
    auth_user: str | None = None,
    ts: float | None = None,
) -> bytes:
    """A Received field in RFC 5321 4.4 form::

        Received: from HELO (rDNS [IP])
                (Authenticated sender: alice@example.test)
                by HOST with ESMTPSA id ID
                for <addr>; Fri, 21 Nov 1997 10:05:43 -0600

    ``helo`` is the client's HELO/EHLO argument, ``rdns`` the verified
    reverse-DNS name of ``ip`` (RFC 5321 4.4 TCP-info), ``protocol`` the
    ``with`` value (see ``with_protocol``), ``for_addr`` the one recipient
    (callers pass it only for single-recipient transactions, for privacy),
    ``tls_info`` an optional comment such as ``TLSv1.3 TLS_AES_256_GCM_SHA384``,
    ``auth_user`` the account that authenticated (RFC 4954 / RFC 6409
    submission), named in a comment as Postfix writes it, so a recipient can
    tell which user sent the message (RFC 3848 marks the ``with`` type ``A``).
    Each clause goes on its own folded line (RFC 5322 2.2.3).
    """
    lines: list[str] = []
    if helo is not None or ip is not None:
        clause = "from " + (_safe(helo) if helo else "unknown")
        tcp_info = []
        if rdns:
            tcp_info.append(_safe(rdns))
        if ip:
            tcp_info.append(_address_literal(ip))
        if tcp_info:
            clause += " (" + " ".join(tcp_info) + ")"
        lines.append(clause)
    if auth_user:
        lines.append("(Authenticated sender: " + _safe_comment(auth_user) + ")")
    by_clause = f"by {_safe(by)}"
    if tls_info:
        by_clause += " (" + _safe_comment(tls_info) + ")"
    by_clause += f" with {_safe(protocol)}"
    if id:
        by_clause += f" id {_safe(id)}"
    lines.append(by_clause)
    tail = ""
    if for_addr:
        check_header_value(for_addr, "for address")
        addr = for_addr.strip().strip("<>")
        tail = f"for <{addr}>"
    date = format_date(ts)
    if tail:
        lines.append(f"{tail}; {date}")
    else:
        lines[-1] += f"; {date}"
    text = "Received: " + "\r\n\t".join(lines) + "\r\n"
    return text.encode("utf-8")


def _safe_comment(text: str) -> str:
    # RFC 5322 3.2.2: ctext excludes "(", ")" and "\"; keep it printable ASCII.
    return re.sub(r"[^\x20-\x27\x2a-\x5b\x5d-\x7e]", "?", text[:200])


def return_path_header(reverse_path: str) -> bytes:
    """``Return-Path: <reverse-path>`` (RFC 5321 4.4), added at final delivery.

    The null reverse-path (bounces, RFC 5321 4.5.5) gives ``Return-Path: <>``.
    Angle brackets around ``reverse_path`` are optional on input.
    """
    check_header_value(reverse_path, "reverse-path")
    path = reverse_path.strip()
    if path.startswith("<") and path.endswith(">"):
        path = path[1:-1]
    return f"Return-Path: <{path}>\r\n".encode()


def delivered_to_header(addr: str) -> bytes:
    """``Delivered-To: addr``: the mailbox address this copy was delivered to.

    Not an RFC field but the common practice (Postfix, qmail) that lets a
    later hop detect a forwarding loop.
    """
    check_header_value(addr, "address")
    addr = addr.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1]
    return f"Delivered-To: {addr}\r\n".encode()
