"""Parsing a message from bytes, tolerantly.

What: ``parse_message`` gives an ``email.message.EmailMessage`` for any input;
``split_header_body`` cuts raw bytes into header section and body exactly.

Why: mail comes from anyone. The stdlib parser (``email.policy.default``)
already copes with bare LF line endings, 8-bit header bytes (kept with
``surrogateescape``), missing boundaries and missing bodies by recording
defects instead of failing; this module adds the last safety net (deeply
nested input can exhaust the stdlib's recursion) so callers never see an
exception from parsing.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser

from .headers import SafeFoldPolicy

__all__ = ["header_end", "parse_message", "split_header_body"]

# email.policy.default, except that serialising a parsed message again (a
# download, a forward) never turns one header field into two (headers.py).
_POLICY = SafeFoldPolicy()

# The stdlib's feedparser checks every line against the boundary of every
# enclosing multipart, so its time grows with lines x depth: 1,000 nested
# levels of a 100 KB message took 4.5 s (on the event loop, for webmail).
# Past this many boundary declarations -- derived.MAX_DEPTH, the depth IMAP
# BODYSTRUCTURE describes -- the body is kept as raw text instead.
MAX_BOUNDARIES = 100
_BOUNDARY = re.compile(rb"boundary\s*=", re.IGNORECASE)


def header_end(raw: bytes, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """Where the header section of the entity in ``raw[start:end]`` ends.

    Returns ``(header_end, body_start)``: the header bytes are
    ``raw[start:header_end]`` and include the line break of the last field;
    the empty line (RFC 5322 2.1: CRLF, or a bare LF) lies between
    ``header_end`` and ``body_start``. An entity that starts with an empty line
    has no header; one without an empty line is all header and has an empty
    body (``body_start == end``).
    """
    if end is None:
        end = len(raw)
    # An empty line right at the start: no header fields at all.
    if raw.startswith(b"\r\n", start) and start + 2 <= end:
        return start, start + 2
    if raw.startswith(b"\n", start) and start + 1 <= end:
        return start, start + 1
    crlf = raw.find(b"\n\r\n", start, end)
    # Only a bare-LF empty line before the CRLF one matters: the search for
    # it stops there instead of running through the whole body.
    lf = raw.find(b"\n\n", start, crlf + 1 if crlf >= 0 else end)
    if crlf < 0 and lf < 0:
        return end, end
    if lf < 0 or (0 <= crlf < lf):
        return crlf + 1, crlf + 3
    return lf + 1, lf + 2


def split_header_body(raw: bytes) -> tuple[bytes, bytes]:
    """Split at the first empty line (CRLF CRLF or LF LF), exact bytes.

    The header part ends with the empty line (as IMAP ``BODY[HEADER]`` does,
    RFC 9051 6.4.5), so ``header + body == raw``. Without an empty line the
    whole input is header and the body is ``b""``.
    """
    _h_end, b_start = header_end(raw)
    return raw[:b_start], raw[b_start:]


def parse_message(raw: bytes) -> EmailMessage:
    """Parse ``raw`` with ``email.policy.default``; never raises.

    Defects (RFC violations) are in ``msg.defects`` and each part's
    ``defects``. If the full parse fails (e.g. recursion on absurdly deep
    nesting), or the message declares more than MAX_BOUNDARIES multipart
    boundaries, the header is parsed alone and the body kept as its raw text.
    """
    if not _too_many_boundaries(raw):
        try:
            return BytesParser(policy=_POLICY).parsebytes(raw)  # type: ignore[return-value]
        except Exception:
            pass
    try:
        header, body = split_header_body(raw)
        msg = BytesHeaderParser(policy=_POLICY).parsebytes(header)
        msg.set_payload(body.decode("ascii", "surrogateescape"))
        return msg  # type: ignore[return-value]
    except Exception:
        msg = EmailMessage(policy=_POLICY)
        msg.set_payload(raw.decode("ascii", "surrogateescape"))
        return msg


def _too_many_boundaries(raw: bytes) -> bool:
    for n, _ in enumerate(_BOUNDARY.finditer(raw), 1):
        if n > MAX_BOUNDARIES:
            return True
    return False
