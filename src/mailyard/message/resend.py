"""Redirecting a message ("bounce" in mutt's words): sending it on, unchanged,
to someone else, with a block of resent fields on top.

RFC 5322 3.6.6: a message reintroduced into the transport system by a user
keeps its original fields (From, To, Subject, ... still name the author and
the original recipients) and gets "Resent-" fields prepended as a block --
Resent-Date and Resent-From are required, Resent-To / Resent-Message-ID
name the new recipients and give the resending its own identifier. Each
resending adds its own block above any earlier one, so the blocks read
newest first.

The terminal client (``mailyard mail redirect``) and webmail both build the
block here. What goes out is the original's bytes after the block, less the
trace fields of the original's last delivery that must not travel:
Return-Path (RFC 5321 4.4: written at final delivery, the resending's own
delivery writes a new one) and Delivered-To (a loop-detection field of the
delivering host; carried along, a later host might take the message for a
loop). The Bcc field of the original, if the stored copy has one, is
removed too: its addresses were meant to stay hidden (RFC 5322 3.6.3).
"""

from __future__ import annotations

from collections.abc import Sequence

from .address import format_address
from .dates import format_date
from .headers import check_header_value
from .msgid import make_msgid
from .parse import split_header_body

__all__ = ["resent_block", "resend"]

# Fields of the original's own delivery that are dropped before resending.
_DROPPED = (b"return-path", b"delivered-to", b"bcc")


def resent_block(
    resent_from: tuple[str | None, str], resent_to: Sequence[str], *,
    date: float | None = None, message_id: str | None = None,
) -> bytes:
    """The resent fields of one redirection (RFC 5322 3.6.6), CRLF lines:
    Resent-From (``(display name or None, address)``), Resent-To (the new
    recipients' addresses), Resent-Date (``date``, default now) and
    Resent-Message-ID (``message_id``, default a new one in the sender's
    domain). Raises ValueError on a line break in any value."""
    name, address = resent_from
    check_header_value(address, "Resent-From")
    if name:
        check_header_value(name, "Resent-From")
    if not resent_to:
        raise ValueError("Resent-To: give at least one address")
    for rcpt in resent_to:
        check_header_value(rcpt, "Resent-To")
    if message_id is None:
        message_id = make_msgid(address.rpartition("@")[2] or "localhost")
    check_header_value(message_id, "Resent-Message-ID")
    lines = [
        f"Resent-From: {format_address(name or None, address)}",
        f"Resent-To: {', '.join(resent_to)}",
        f"Resent-Date: {format_date(date)}",
        f"Resent-Message-ID: {message_id}",
    ]
    return "".join(_fold(line) + "\r\n" for line in lines).encode("utf-8")


def _fold(line: str) -> str:
    """``line`` folded at the commas of an address list so no line is over
    78 characters where it can be helped (RFC 5322 2.1.1, 2.2.3)."""
    if len(line) <= 78:
        return line
    out: list[str] = []
    current = ""
    for piece in line.split(", "):
        candidate = f"{current}, {piece}" if current else piece
        if current and len(candidate) > 76:
            out.append(current + ",")
            current = " " + piece
        else:
            current = candidate
    out.append(current)
    return "\r\n".join(out)


def resend(raw: bytes, block: bytes) -> bytes:
    """``raw`` with the resent ``block`` prepended, its Return-Path,
    Delivered-To and Bcc fields removed (see the module doc); everything
    else is the original's bytes. Bare LF line ends become CRLF (RFC 5322
    2.1: the wire form)."""
    header, body = split_header_body(raw)
    kept: list[bytes] = []
    skipping = False
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):  # a continuation of the field above (RFC 5322 2.2.3)
            if not skipping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        skipping = name in _DROPPED
        if not skipping:
            kept.append(line)
    out_header = b"".join(_crlf(line) for line in kept)
    return block + out_header + _crlf_all(body)


def _crlf(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return line
    if line.endswith(b"\n"):
        return line[:-1] + b"\r\n"
    return line + b"\r\n"


def _crlf_all(data: bytes) -> bytes:
    if b"\n" not in data or data.count(b"\n") == data.count(b"\r\n"):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
