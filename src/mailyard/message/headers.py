"""Header-field helpers shared by the message layer.

What: turn raw header bytes into text, decode RFC 2047 encoded words, unfold,
split a header block into fields, and refuse CR/LF in caller-supplied values.

Why here: every other module (address, derived, compose) needs the same
tolerant rules, and "tolerant" must mean the same thing everywhere: a broken
encoded word or an unknown charset yields the best text we can get, never an
exception, because these run on mail from strangers.
"""

from __future__ import annotations

import re
from email import _header_value_parser as hvp
from email.policy import EmailPolicy
from typing import Any

__all__ = [
    "SafeFoldPolicy",
    "bytes_to_text",
    "check_header_value",
    "check_header_name",
    "decode_words",
    "split_fields",
    "split_plain_fields",
    "unfold",
]

# RFC 5322 2.2: field-name = 1*ftext; ftext = %d33-57 / %d59-126 (printable, no colon).
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
_FIELD_NAME_STR = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")
# RFC 5322 2.2 and 2.2.3: one field whose every line ends with LF (CRLF or a
# bare LF): the name, the colon right after it and the one conventional SP,
# the value (its line end lost), each continuation line starting with WSP
# ("." is any octet but LF: no DOTALL). WSP between the name and the colon
# (obs-optional, RFC 5322 4.5.8) is left to the line-by-line reading: a
# block this pattern splits is one DKIM's fast path may sign over
# (mailauth.dkim._only_fields), and dkimpy, like Python's email parser,
# takes no such line for a field. Possessive: what a repeat took is never
# given back, so a line that does not end (a hostile megabyte without LF)
# fails at once rather than being tried again octet by octet; a block that
# is only fields never needs to give anything back.
_PLAIN_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]++): ?(.*+(?:\n[ \t].*+)*+)\n")
# RFC 5322 2.2.3: unfolding removes each CRLF that is followed by WSP.
_FOLD = re.compile(r"\r?\n(?=[ \t])")


def bytes_to_text(raw: bytes) -> str:
    """Raw header bytes as text: UTF-8 when valid (RFC 6532), else latin-1.

    Latin-1 maps each byte to one code point, so it never fails and keeps the
    byte count; unlike ``surrogateescape`` the result is always valid Unicode,
    which JSON in SQLite and PostgreSQL (jsonb rejects lone surrogates) can store.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def unfold(value: str) -> str:
    """RFC 5322 2.2.3: remove the CRLF of folded lines (the WSP after it stays);
    stray CR or LF that do not introduce a fold become a space."""
    value = _FOLD.sub("", value)
    if "\r" in value or "\n" in value:
        value = value.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    return value


def _clean(text: str) -> str:
    # Undecodable bytes inside encoded words come back as surrogates; replace them
    # so the result is valid Unicode (U+FFFD), as bytes_to_text promises.
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words in an unstructured value (Subject, a display
    name, ...) to text, tolerantly.

    Uses the stdlib's tolerant unstructured parser: adjacent encoded words
    separated only by white space are joined (RFC 2047 6.2), unknown charsets
    and broken base64/quoted-printable give replacement characters instead of
    an exception. Folding is removed first.
    """
    value = unfold(value)
    if "=?" not in value:
        return value.strip()
    try:
        return _clean(str(hvp.get_unstructured(value))).strip()
    except Exception:  # the stdlib parser has had crash bugs; never let one escape
        return value.strip()


def split_plain_fields(block: bytes) -> list[tuple[str, bytes]] | None:
    """``split_fields(block)`` for a block that is only fields (RFC 5322
    2.2): every line a field line (its name followed at once by the colon)
    or a continuation line, each ending with CRLF or LF, no other CR, at
    most one empty line and only at the end (as
    ``message.parse.split_header_body`` gives the header section); None for
    any other block. A block it splits is one ``mailauth.dkim._only_fields``
    accepts too (the inbound checks rely on that to skip the check). One regular-expression match per field rather than a
    loop over lines: the MX port's checks split every message's header."""
    if block.count(b"\r") != block.count(b"\r\n"):
        return None  # a bare CR ends a line for split_fields (bytes.splitlines)
    fields: list[tuple[str, bytes]] = []
    end = 0
    for match in iter(_PLAIN_FIELD.scanner(block).match, None):  # each match starts where the last ended
        name, value = match.groups()
        fields.append((name.decode("ascii"), value[:-1] if value.endswith(b"\r") else value))
        end = match.end()
    if end < len(block) and block[end:] not in (b"\r\n", b"\n"):
        return None  # a line that is no field, an empty line before the end, no final line end
    return fields


def split_fields(block: bytes) -> list[tuple[str, bytes]]:
    """Split a raw header block into ``(name, raw_value)`` fields.

    RFC 5322 2.2: a field is ``name ":" value`` on one line plus any
    continuation lines starting with WSP. The value keeps its folding and loses
    only the final line break. Lines that are neither a field nor a
    continuation (no colon, 8-bit name) are skipped: this is tolerant reading
    for indexing, the exact bytes stay in the stored message. ``From `` mbox
    separator lines are skipped too. Names are returned as ASCII text.
    """
    plain = split_plain_fields(block)
    if plain is not None:
        return plain
    fields: list[tuple[str, bytes]] = []
    name: str | None = None
    chunks: list[bytes] = []

    def flush() -> None:
        if name is not None:
            value = b"".join(chunks)
            if value.endswith(b"\n"):
                value = value[:-2] if value.endswith(b"\r\n") else value[:-1]
            fields.append((name, value))

    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                chunks.append(line)
            continue
        if not line.strip():
            continue
        colon = line.find(b":")
        head = line[:colon].rstrip(b" \t") if colon > 0 else b""
        flush()
        name = None
        chunks = []
        if head and _FIELD_NAME.fullmatch(head):
            name = head.decode("ascii")
            # RFC 5322 2.2: the value starts after the colon; one leading space
            # is conventional, keep it out of the value.
            rest = line[colon + 1 :]
            chunks = [rest[1:] if rest[:1] == b" " else rest]
    flush()
    return fields


def check_header_value(value: str, what: str = "header value") -> str:
    """Refuse CR, LF (and NUL) in a value a caller wants to put in a header.

    A CR or LF would let the caller start a new header field or end the header
    section (header injection); RFC 5322 2.2 allows them only as part of folding,
    which the generator does itself.
    """
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"{what} must not contain CR, LF or NUL: {value!r}")
    return value


def check_header_name(name: str) -> str:
    """RFC 5322 2.2: a field name is printable US-ASCII except colon."""
    if not _FIELD_NAME_STR.match(name):
        raise ValueError(f"invalid header field name: {name!r}")
    return name


def _injects(folded: str, linesep: str) -> bool:
    """True if a generated header field is more than one field: a line after
    the first that does not start with WSP (RFC 5322 2.2.3), or a CR/LF that
    is not the line separator."""
    body = folded[: -len(linesep)] if folded.endswith(linesep) else folded
    lines = body.split(linesep)
    return any("\r" in line or "\n" in line for line in lines) or any(
        line[:1] not in (" ", "\t") for line in lines[1:]
    )


class SafeFoldPolicy(EmailPolicy):
    """``EmailPolicy`` whose generator never turns one header field into two.

    Why: when the stdlib re-folds a parsed header (lines over the length
    limit, or 8-bit text under ``cte_type="7bit"``) it decodes RFC 2047
    encoded words and folds the decoded text; an encoded CR LF
    (``=?utf-8?q?a=0D=0AX-Injected:_1?=``) then comes out as a real line
    break and a new header field (CVE-2024-6923; fixed in Python 3.11.10,
    3.12.5 and 3.13 by refusing such output). This happens whenever a stored
    message is serialised again: forwarded as message/rfc822, returned in a
    DSN, downloaded as an attached message. Here such a field is written as
    it was received instead (its source lines, which already parse as one
    field); a header built by the program itself is refused (ValueError),
    which ``check_header_value`` makes unreachable for callers of compose().
    """

    def _safe(self, name: str, value: Any, folded: str) -> str:
        if not _injects(folded, self.linesep):
            return folded
        if not isinstance(value, str):
            raise ValueError(f"{name} header would fold into several fields")
        # Only CR, LF and CRLF end a source line (not str.splitlines's \x85,
        # U+2028, ...); continuation lines of a parsed field start with WSP.
        lines = re.split(r"\r\n|\r|\n", value)
        return name + ": " + self.linesep.join(lines) + self.linesep

    def fold(self, name: str, value: Any) -> str:
        return self._safe(name, value, super().fold(name, value))

    def fold_binary(self, name: str, value: Any) -> bytes:
        folded = super().fold_binary(name, value)
        text = folded.decode("ascii", "surrogateescape")
        if not _injects(text, self.linesep):
            return folded
        return self._safe(name, value, text).encode("utf-8" if self.utf8 else "ascii", "surrogateescape")
