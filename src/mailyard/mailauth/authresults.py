"""The Authentication-Results header field (RFC 8601).

``format_header`` writes one field with this server's authserv-id (its host
name, RFC 8601 2.5) and a result per method; ``strip_ours`` removes, before
the checks' own field is added, every Authentication-Results field already in
the message that claims this authserv-id (RFC 8601 5: a forged one would
otherwise be trusted by the user's agents).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from ..message.parse import split_header_body

_WS = re.compile(rb"[ \t\r\n]+")
# RFC 8601 2.2: the authserv-id is the first token, before ";" or CFWS.
_AUTHSERV = re.compile(rb"^\s*(?:\([^)]*\)\s*)*([^\s;()]+)")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~@]+")
_NOT_IN_COMMENT = re.compile(r"[()\\\r\n]")


def _value(text: str) -> str:
    """A value as a token, or as a quoted-string when it holds specials (RFC 2045 5.1)."""
    if text and _TOKEN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    clean = _NOT_IN_COMMENT.sub(" ", text).strip()
    return f" ({clean})" if clean else ""


def resinfo(method: str, result: str, reason: str = "", props: Sequence[tuple[str, str]] = ()) -> str:
    """One ``method=result (reason) ptype.prop=value ...`` (RFC 8601 2.2)."""
    return f"{method}={result}{_comment(reason)}" + resinfo_props(props)


def resinfo_props(props: Sequence[tuple[str, str]]) -> str:
    """The `` ptype.prop=value`` part of a resinfo (RFC 8601 2.2), each with its leading SP."""
    return "".join(f" {name}={_value(value)}" for name, value in props)


@functools.lru_cache(maxsize=1024)
def resinfo_kept(method: str, result: str, reason: str = "", props: tuple[tuple[str, str], ...] = ()) -> str:
    """``resinfo`` for a result that repeats from message to message (a
    sender's SPF and DMARC results, ``arc=none``): made once, then looked up."""
    return resinfo(method, result, reason, props)


def format_header(authserv_id: str, results: Sequence[str]) -> bytes:
    """The whole field, folded one result per line (RFC 5322 2.2.3), CRLF-terminated."""
    parts = [authserv_id] + list(results) if results else [authserv_id, "none"]
    text = "Authentication-Results: " + ";\r\n\t".join(parts) + "\r\n"
    return text.encode("utf-8")


def strip_ours(message: bytes, authserv_id: str, parts: tuple[bytes, bytes] | None = None) -> bytes:
    """``message`` without the Authentication-Results fields that name
    ``authserv_id`` (``message`` itself when it has none); ``parts``: its
    header and body (``split_header_body``) when the caller has them."""
    header, body = split_header_body(message) if parts is None else parts
    if b"authentication-results" not in header.lower():
        return message
    ours = authserv_id.lower().encode()
    out: list[bytes] = []
    drop = False
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and line.strip():
            if not drop:
                out.append(line)
            continue
        drop = False
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"authentication-results":
            m = _AUTHSERV.match(_WS.sub(b" ", value))
            # RFC 8601 5: compare the authserv-id case-insensitively
            if m is not None and m.group(1).lower() == ours:
                drop = True
                continue
        out.append(line)
    return b"".join(out) + body
