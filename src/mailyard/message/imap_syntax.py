"""ENVELOPE and BODYSTRUCTURE written in IMAP syntax (RFC 9051 section 9).

The derived data of a message (``derive`` in message/derived.py) is computed
once at delivery and stored with the message, so FETCH does not re-parse
(DESIGN.md "Message handling"). The store keeps the ENVELOPE, BODYSTRUCTURE
and BODY ready to send; this module writes them. The values are the plain
ones ``derive`` produces: None (NIL), int (number), str (string), bytes
(literal) and lists (parenthesised lists).

Written in the 7-bit mode by default (8-bit text as a literal, RFC 9051
4.3), which is valid for every client, so the bytes can be sent to any
connection; ``utf8=True`` writes 8-bit text as quoted strings for a
connection that enabled UTF-8 (RFC 9051 4.3, RFC 6855).
"""

from __future__ import annotations

__all__ = ["body_bytes", "envelope_bytes", "write_body", "write_envelope", "write_string"]

# Longest string written as a quoted string; longer ones are literals.
_QUOTE_MAX = 512


def write_string(out: bytearray, s: str, utf8: bool = False) -> None:
    """RFC 9051 9: string = quoted / literal; quoted = DQUOTE *QUOTED-CHAR
    DQUOTE, QUOTED-CHAR excludes CR, LF and NUL and escapes DQUOTE and "\\"."""
    if s.isascii() and len(s) <= _QUOTE_MAX and s.isprintable():
        if '"' in s or "\\" in s:
            s = s.replace("\\", "\\\\").replace('"', '\\"')
        out += b'"' + s.encode("ascii") + b'"'
        return
    data = s.encode("utf-8", "surrogateescape")
    if len(data) <= _QUOTE_MAX and b"\r" not in data and b"\n" not in data and b"\0" not in data:
        if utf8 or data.isascii():
            out += b'"'
            out += data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
            out += b'"'
            return
    out += b"{%d}\r\n" % len(data)
    out += data


def _value(out: bytearray, v: object, utf8: bool) -> None:
    if v is None:
        out += b"NIL"
    elif isinstance(v, bool):
        raise TypeError("bool is not an IMAP value")
    elif isinstance(v, int):
        out += str(int(v)).encode("ascii")
    elif isinstance(v, str):
        write_string(out, v, utf8)
    elif isinstance(v, bytes | bytearray | memoryview):
        out += b"{%d}\r\n" % len(v)
        out += v
    elif isinstance(v, list | tuple):
        out += b"("
        for i, item in enumerate(v):
            if i:
                out += b" "
            _value(out, item, utf8)
        out += b")"
    else:
        raise TypeError(f"cannot write {type(v).__name__} in IMAP syntax")


# RFC 9051 9: the grammar has no SP between the addresses of an address list
# ("(" 1*address ")") nor between the parts of a multipart ("1*body SP
# media-subtype"); everywhere else list items are SP-separated.
def write_envelope(out: bytearray, env: list, utf8: bool = False) -> None:
    """envelope = "(" env-date SP env-subject SP env-from SP env-sender SP
    env-reply-to SP env-to SP env-cc SP env-bcc SP env-in-reply-to SP
    env-message-id ")" (RFC 9051 9); address lists are ``1*address``."""
    out += b"("
    for i, item in enumerate(env):
        if i:
            out += b" "
        if 2 <= i <= 7:
            if not item:
                out += b"NIL"  # "(" 1*address ")" / nil: never an empty list
                continue
            out += b"("
            for addr in item:  # address = "(" addr-name SP addr-adl SP addr-mailbox SP addr-host ")"
                _value(out, list(addr), utf8)
            out += b")"
        else:
            _value(out, item, utf8)
    out += b")"


def write_body(out: bytearray, bs: list, utf8: bool = False) -> None:
    """body = "(" (body-type-1part / body-type-mpart) ")" (RFC 9051 9)."""
    out += b"("
    if bs and isinstance(bs[0], list):
        # body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]
        n = 0
        while n < len(bs) and isinstance(bs[n], list):
            write_body(out, bs[n], utf8)
            n += 1
        for item in bs[n:]:
            out += b" "
            _value(out, item, utf8)
    else:
        message = (len(bs) >= 10 and isinstance(bs[0], str) and bs[0].upper() == "MESSAGE"
                   and isinstance(bs[7], list) and isinstance(bs[8], list))
        for i, item in enumerate(bs):
            if i:
                out += b" "
            if message and i == 7:
                # body-type-msg = media-message SP body-fields SP envelope SP body SP body-fld-lines
                write_envelope(out, item, utf8)
            elif message and i == 8:
                write_body(out, item, utf8)
            else:
                _value(out, item, utf8)
    out += b")"


def envelope_bytes(env: list) -> bytes:
    """An ENVELOPE in IMAP syntax, 7-bit mode (valid for every connection)."""
    out = bytearray()
    write_envelope(out, env)
    return bytes(out)


def body_bytes(bs: list) -> bytes:
    """A BODY or BODYSTRUCTURE in IMAP syntax, 7-bit mode (see ``envelope_bytes``)."""
    out = bytearray()
    write_body(out, bs)
    return bytes(out)
