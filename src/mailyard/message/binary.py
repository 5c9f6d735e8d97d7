"""Binary content stored in a form every IMAP response can carry.

What: ``encode_nul_parts(raw)`` rewrites each MIME leaf part whose body holds
NUL octets (Content-Transfer-Encoding 7bit, 8bit or binary, RFC 2045 6.2) as
base64 and sets its Content-Transfer-Encoding accordingly; it returns None when
a NUL sits where no encoding can hold it (a header, a multipart preamble or
delimiter, a part already base64 or quoted-printable).

Why: a client may APPEND a message with NUL octets in a ``literal8`` (RFC 3516
4.3), but an IMAP ``string`` never contains NUL (RFC 9051 4.3, ``CHAR8``
excludes %x00), so BODY[], RFC822 and BODY[n] of such a part could not be
answered legally. RFC 3516 4.3 lets the server change the content transfer
encoding of appended data as long as nothing is lost; BINARY[n] still
returns the original octets (decoded from base64, in a literal8). Dovecot does
the same on APPEND.
"""

from __future__ import annotations

import base64
import re

from .derived import derive

__all__ = ["encode_nul_parts"]

_CTE_FIELD = re.compile(rb"^content-transfer-encoding[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*", re.I | re.M)
_IDENTITY = {b"", b"7bit", b"8bit", b"binary"}


def _cte(header: bytes) -> bytes:
    m = _CTE_FIELD.search(header)
    if m is None:
        return b""
    value = m.group(0).split(b":", 1)[1]
    return b" ".join(value.split()).split(b";", 1)[0].strip().lower()


def _base64_lines(data: bytes) -> bytes:
    # RFC 2045 6.8: encoded lines of at most 76 characters
    text = base64.b64encode(data)
    return b"\r\n".join(text[i : i + 76] for i in range(0, len(text), 76))


def _with_base64_cte(header: bytes) -> bytes:
    field = b"Content-Transfer-Encoding: base64\r\n"
    if _CTE_FIELD.search(header):
        return _CTE_FIELD.sub(lambda _m: field, header, count=1)
    # before the blank line that ends the header
    m = re.search(rb"\r?\n\Z", header)
    cut = m.start() if m is not None else len(header)
    return header[:cut] + field + header[cut:]


def encode_nul_parts(raw: bytes) -> bytes | None:
    """``raw`` with every leaf part holding NUL re-encoded as base64 (see the
    module doc); ``raw`` itself if it has no NUL; None if a NUL cannot be
    encoded away."""
    if b"\0" not in raw:
        return raw
    d = derive(raw)
    parents = {s.rpartition(".")[0] for s in d.parts if "." in s}
    leaves = [s for s in d.parts if s and s not in parents]
    edits: list[tuple[int, int, bytes]] = []
    for spec in leaves:
        h, b, e = d.parts[spec]
        if b"\0" not in raw[b:e]:
            continue
        header = raw[h:b]
        if _cte(header) not in _IDENTITY:
            return None
        edits.append((h, e, _with_base64_cte(header) + _base64_lines(raw[b:e])))
    out = bytearray(raw)
    # leaves do not overlap; from the end so earlier offsets stay valid
    for h, e, new in sorted(edits, reverse=True):
        out[h:e] = new
    result = bytes(out)
    return None if b"\0" in result else result
