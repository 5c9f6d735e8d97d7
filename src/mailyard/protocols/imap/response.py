"""Serialising IMAP response data (RFC 9051 sections 4 and 7, formal syntax 9).

Python values map to IMAP data formats:

==================  =====================================================
``None``            NIL
``int``             number
``str``             string: quoted when it may be, else a literal
``bytes``           literal ``{n}`` (message data is always a literal)
``Literal8``        ``~{n}`` literal8 (RFC 3516 BINARY with NUL octets)
``Atom``            written as is (flags, keywords, item names)
``Mailbox``         a mailbox name, modified UTF-7 unless UTF-8 is on
``list``/``tuple``  parenthesised list
==================  =====================================================

``Writer`` carries the connection's encoding mode: after ENABLE IMAP4rev2 or
UTF8=ACCEPT quoted strings and mailbox names may hold UTF-8 (RFC 9051 4.3,
RFC 6855); before, 8-bit text goes out as a literal and mailbox names as
modified UTF-7 (RFC 3501 5.1.3).
"""

from __future__ import annotations

from collections.abc import Iterable

from ...message.imap_syntax import write_body, write_envelope, write_string
from . import utf7


class Atom(str):
    """Text written verbatim: flags, atoms, item names like ``BODY[1.2]<0>``."""

    __slots__ = ()


class Mailbox(str):
    """A mailbox name (UTF-8 str) to be encoded per the connection's mode."""

    __slots__ = ()


class Literal8(bytes):
    """Binary data sent as ``~{n}`` (RFC 3516 section 4.2)."""

    __slots__ = ()


class Raw(bytes):
    """Bytes already in IMAP syntax, written verbatim: an ENVELOPE or
    BODYSTRUCTURE serialised once at delivery (message/imap_syntax.py)."""

    __slots__ = ()


class Envelope(list):
    """An ENVELOPE as ``message.derived`` represents it, written by its own
    grammar (``Writer.envelope``)."""

    __slots__ = ()


class Body(list):
    """A BODY / BODYSTRUCTURE as ``message.derived`` represents it (``Writer.body``)."""

    __slots__ = ()


NIL = None


class Writer:
    """Serialises values for one connection (its UTF-8 mode may change)."""

    def __init__(self, utf8: bool = False) -> None:
        self.utf8 = utf8

    def value(self, v: object) -> bytes:
        out = bytearray()
        self._write(out, v)
        return bytes(out)

    def _write(self, out: bytearray, v: object) -> None:
        t = type(v)
        # fast paths for the common plain types (FETCH of 10,000 ENVELOPEs)
        if t is str:
            self._string(out, v)  # type: ignore[arg-type]
        elif v is None:
            out += b"NIL"
        elif t is list or t is tuple:
            out += b"("
            first = True
            for item in v:  # type: ignore[attr-defined]
                if not first:
                    out += b" "
                first = False
                self._write(out, item)
            out += b")"
        elif t is int:
            out += str(v).encode("ascii")
        elif t is Atom:
            out += v.encode("utf-8")  # type: ignore[attr-defined]
        elif t is Raw:
            out += v  # type: ignore[operator]
        elif t is Envelope:
            self.envelope(out, v)  # type: ignore[arg-type]
        elif t is Body:
            self.body(out, v)  # type: ignore[arg-type]
        elif isinstance(v, bool):
            raise TypeError("bool is not an IMAP value")
        elif isinstance(v, int):
            out += str(int(v)).encode("ascii")
        elif isinstance(v, Atom):
            out += v.encode("utf-8")
        elif isinstance(v, Mailbox):
            self._string(out, v if self.utf8 else utf7.encode(v))
        elif isinstance(v, str):
            self._string(out, v)
        elif isinstance(v, Literal8):
            out += b"~{%d}\r\n" % len(v)
            out += v
        elif isinstance(v, bytes | bytearray | memoryview):
            out += b"{%d}\r\n" % len(v)
            out += v
        elif isinstance(v, list | tuple):
            self._write(out, list(v))
        else:
            raise TypeError(f"cannot serialise {type(v).__name__}")

    # ENVELOPE, BODY and strings have one writer, in the message layer (it
    # also writes the bytes the store keeps with each message).
    def envelope(self, out: bytearray, env: list) -> None:
        write_envelope(out, env, self.utf8)

    def body(self, out: bytearray, bs: list) -> None:
        write_body(out, bs, self.utf8)

    def _string(self, out: bytearray, s: str) -> None:
        write_string(out, s, self.utf8)

    def line(self, *parts: object) -> bytes:
        """One response line: parts separated by SP, CRLF-terminated."""
        out = bytearray()
        first = True
        for p in parts:
            if not first:
                out += b" "
            first = False
            self._write(out, p)
        out += b"\r\n"
        return bytes(out)


def untagged(writer: Writer, *parts: object) -> bytes:
    """``* part part ...`` (RFC 9051 7)."""
    return writer.line(Atom("*"), *parts)


def status_line(tag: str, status: str, text: str, code: str | None = None) -> bytes:
    """A status response: ``tag OK [CODE] text`` (RFC 9051 7.1).

    ``code`` is the raw resp-text-code (without brackets); ``text`` is
    sanitised so a message can never break the line.
    """
    safe = " ".join(text.replace("\r", " ").replace("\n", " ").split()) or status
    head = f"{tag} {status} "
    if code:
        head += f"[{code}] "
    return (head + safe + "\r\n").encode("utf-8", "replace")


def continuation(text: str | bytes = b"") -> bytes:
    """``+ text`` (RFC 9051 7.6); bytes are sent raw (SASL base64 challenges)."""
    if isinstance(text, str):
        text = text.encode("utf-8")
    return b"+ " + text + b"\r\n"


_SYSTEM_ORDER = {f: i for i, f in enumerate(("\\answered", "\\flagged", "\\deleted", "\\seen", "\\draft", "\\recent"))}


def flag_list(flags: Iterable[str]) -> list[Atom]:
    """A flag list in a stable order: system flags in the order RFC 9051's
    examples use, then keywords alphabetically."""
    return [Atom(f) for f in sorted(flags, key=lambda f: (_SYSTEM_ORDER.get(f.lower(), 9), f.lower()))]


def format_uid_set(uids: Iterable[int]) -> str:
    """Compact uid-set text ``1:3,7,9:10`` from UIDs (any order; RFC 4315 COPYUID)."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def format_uid_list_ordered(uids: Iterable[int]) -> str:
    """uid-set text keeping the given order, ranges only where consecutive.

    COPYUID's source and destination sets must correspond element by element
    (RFC 4315 section 3), so they are written in matching order.
    """
    seq = list(uids)
    parts: list[str] = []
    i = 0
    while i < len(seq):
        j = i
        while j + 1 < len(seq) and seq[j + 1] == seq[j] + 1:
            j += 1
        parts.append(str(seq[i]) if i == j else f"{seq[i]}:{seq[j]}")
        i = j + 1
    return ",".join(parts)
