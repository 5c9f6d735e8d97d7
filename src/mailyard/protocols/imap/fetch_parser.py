"""FETCH attribute grammar (RFC 9051 6.4.5, RFC 3516 BINARY, RFC 7162 MODSEQ,
RFC 8514 SAVEDATE, RFC 8474 EMAILID / THREADID, RFC 8970 PREVIEW)."""

from __future__ import annotations

from .commands import FetchAtt, Section
from .reader import ParseError, Reader

# RFC 9051 6.4.5 macros
MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
SIMPLE_ATTS = {
    "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
    "RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID", "MODSEQ", "SAVEDATE", "EMAILID", "THREADID", "PREVIEW",
}
_NAME_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-"


def parse_fetch_atts(r: Reader) -> tuple[tuple[FetchAtt, ...], str | None]:
    """("ALL" / "FULL" / "FAST" / fetch-att / "(" fetch-att *(SP fetch-att) ")")."""
    if r.peek() == 0x28:
        r.open()
        atts = [parse_fetch_att(r)]
        while not r.close():
            r.sp()
            atts.append(parse_fetch_att(r))
        return tuple(atts), None
    word = r.peek_upper(4)
    for macro, names in MACROS.items():
        if word.startswith(macro.encode()):
            after = r.buf[r.pos + len(macro) : r.pos + len(macro) + 1]
            if after in (b"", b" "):
                r.pos += len(macro)
                return tuple(FetchAtt(n) for n in names), macro
    return (parse_fetch_att(r),), None


def parse_fetch_att(r: Reader) -> FetchAtt:
    name = r._take(_NAME_CHARS).decode("ascii").upper()
    if not name:
        raise ParseError("expected fetch attribute")
    if r.peek() == 0x5B:  # "["
        if name in ("BODY", "BODY.PEEK"):
            section, text = _section(r)
            return FetchAtt("BODY[]", section, name == "BODY.PEEK", _partial(r), text)
        if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
            # RFC 3516 4.1: section-binary = "[" [section-part] "]"
            r.pos += 1
            part = _part(r) if r.peek() != 0x5D else ()
            r.expect(b"]")
            text = ".".join(map(str, part))
            if name == "BINARY.SIZE":
                return FetchAtt("BINARY.SIZE[]", Section(part), True, None, text)
            return FetchAtt("BINARY[]", Section(part), name == "BINARY.PEEK", _partial(r), text)
        raise ParseError(f"{name[:20]} takes no section")
    if name not in SIMPLE_ATTS:
        raise ParseError(f"unknown fetch attribute {name[:20]}")
    if name == "PREVIEW" and r.buf[r.pos : r.pos + 6].upper() == b" (LAZY":
        # RFC 8970 7: "PREVIEW" [SP "(" preview-mod *(SP preview-mod) ")"]; preview-mod = "LAZY"
        # (only LAZY is defined: "PREVIEW (CHANGEDSINCE 1)" is a fetch modifier)
        r.pos += 1
        r.open()
        while True:
            if r.atom().upper() != "LAZY":
                raise ParseError("unknown PREVIEW modifier")
            if r.close():
                break
            r.sp()
    return FetchAtt(name)


def _part(r: Reader) -> tuple[int, ...]:
    nums = [r.nz_number()]
    while r.peek() == 0x2E and r.buf[r.pos + 1 : r.pos + 2].isdigit():
        r.pos += 1
        nums.append(r.nz_number())
    return tuple(nums)


def parse_section(r: Reader) -> tuple[Section, str]:
    """A bracketed section (also the SECTION of an IMAP URL, RFC 5092)."""
    return _section(r)


def _section(r: Reader) -> tuple[Section, str]:
    """section = "[" [section-spec] "]" -> (Section, the spec text for the reply)."""
    r.expect(b"[")
    part: tuple[int, ...] = ()
    text = None
    fields: tuple[str, ...] = ()
    if r.peek() != 0x5D:
        ch = r.peek()
        if ch is not None and 0x30 <= ch <= 0x39:
            part = _part(r)
            if r.maybe(b"."):
                text = _section_text(r, allow_mime=True)
        else:
            text = _section_text(r, allow_mime=False)
        if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            r.sp()
            fields = _header_list(r)
    r.expect(b"]")
    spec = ".".join(map(str, part))
    if text:
        spec = f"{spec}.{text}" if spec else text
    if fields:
        spec += " (" + " ".join(fields) + ")"
    return Section(part, text, fields), spec


def _section_text(r: Reader, allow_mime: bool) -> str:
    word = r._take(_NAME_CHARS).decode("ascii").upper()
    if word in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"):
        return word
    if word == "MIME" and allow_mime:
        return word
    raise ParseError(f"bad section text {word[:20]}")


def _header_list(r: Reader) -> tuple[str, ...]:
    r.open()
    names = [r.astring()]
    while not r.close():
        r.sp()
        names.append(r.astring())
    for n in names:
        # RFC 5322 2.2: field names are printable US-ASCII except ":"
        if not n or ":" in n or not all(33 <= ord(ch) <= 126 for ch in n):
            raise ParseError("bad header field name")
    return tuple(names)


def _partial(r: Reader) -> tuple[int, int] | None:
    """["<" number "." nz-number ">"]"""
    if r.peek() != 0x3C:
        return None
    r.pos += 1
    origin = r.number()
    r.expect(b".")
    length = r.number()
    if length == 0:
        raise ParseError("partial length must be non-zero")
    r.expect(b">")
    return origin, length
