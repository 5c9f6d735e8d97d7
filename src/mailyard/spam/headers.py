"""The X-Spam-* fields that record the verdict for filters (SpamAssassin's
format, which Sieve scripts and mail clients already read), and the edits a
verdict makes to a message's header: copies of these fields from outside
removed, rspamd's added fields and rewritten Subject applied.

Header edits work on the raw bytes (RFC 5322 2.2: a field is its first line
and the continuation lines that start with WSP), so the rest of the message
stays byte for byte as received (DKIM signatures keep verifying)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from email.header import Header

from ..message.parse import header_end

# Fields a sender (or a filter before us) may have written that would pass
# for our verdict.
OUR_PREFIXES = (b"x-spam-", b"x-spamd-", b"x-rspamd-")


def _fields(header: bytes) -> list[bytes]:
    """The header block split into raw fields (each with its line ends)."""
    out: list[bytes] = []
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and out:
            out[-1] += line
        else:
            out.append(line)
    return out


def strip_fields(message: bytes, prefixes: Iterable[bytes] = OUR_PREFIXES, names: Iterable[str] = (),
                 end: int | None = None) -> bytes:
    """``message`` without the fields whose name starts with one of
    ``prefixes`` or is one of ``names`` (case-insensitive). ``end``: where
    its header ends (message/parse.py header_end), when the caller knows."""
    if end is None:
        end, _body_start = header_end(message)
    header, rest = message[:end], message[end:]
    folded = header.lower()
    if prefixes is OUR_PREFIXES and not names:
        # the verdict's own strip, once per message: every name with one of
        # OUR_PREFIXES holds b"x-spam" or b"x-rspamd-"
        if b"x-spam" not in folded and b"x-rspamd-" not in folded:
            return message  # no field can match: nothing to take out (most mail)
        lowered: tuple[bytes, ...] = OUR_PREFIXES
        exact: set[bytes] = set()
    else:
        lowered = tuple(p.lower() for p in prefixes)
        exact = {n.lower().encode() for n in names}
        if not any(p in folded for p in lowered) and not any(n in folded for n in exact):
            return message  # no field can match: nothing to take out (most mail)
    kept = []
    for f in _fields(header):
        name = f.split(b":", 1)[0].strip().lower()
        if name.startswith(lowered) or name in exact:
            continue
        kept.append(f)
    return b"".join(kept) + rest


def _encode(name: str, value: str) -> bytes:
    """One field, folded; non-ASCII values as RFC 2047 encoded words."""
    try:
        value.encode("ascii")
        text = value
    except UnicodeEncodeError:
        text = Header(value, "utf-8", header_name=name).encode()
    clean = " ".join(text.replace("\r", " ").replace("\n", " ").split())
    return f"{name}: {clean}\r\n".encode("ascii", "replace")


def rewrite_subject(message: bytes, subject: str) -> bytes:
    """The Subject replaced by ``subject`` (rspamd's "rewrite subject")."""
    stripped = strip_fields(message, (), ("subject",))
    return _encode("Subject", subject) + stripped


def add_fields(message: bytes, fields: Sequence[tuple[str, str]]) -> bytes:
    return b"".join(_encode(n, v) for n, v in fields) + message


def verdict_fields(score: float, required: float, tests: Sequence[str], flag: bool) -> bytes:
    """``X-Spam-Flag`` (only when spam), ``X-Spam-Score`` and
    ``X-Spam-Status: Yes, score=7.3 required=6.0 tests=A,B`` folded at
    commas to keep lines under 78 characters (RFC 5322 2.1.1)."""
    return _verdict_fields(f"{score:.1f}", f"{required:.1f}", tuple(tests), flag)


@functools.lru_cache(maxsize=512)
def _verdict_fields(score: str, required: str, tests: tuple[str, ...], flag: bool) -> bytes:
    # kept by the numbers as written (-0.0 and 0.0 are one float key, two
    # texts): a sender's messages, and most mail (no test hit), repeat a verdict
    status = f"X-Spam-Status: {'Yes' if flag else 'No'}, score={score} required={required} tests="
    lines = [status]
    names = list(tests) or ["none"]
    for i, name in enumerate(names):
        piece = name + ("," if i < len(names) - 1 else "")
        if len(lines[-1]) + len(piece) > 78 and lines[-1].strip():
            lines.append("\t")
        lines[-1] += piece
    out = b"X-Spam-Flag: YES\r\n" if flag else b""
    out += f"X-Spam-Score: {score}\r\n".encode()
    out += ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")
    return out
