"""FETCH data: body sections, partial ranges, BINARY, and the structure items
(RFC 9051 6.4.5 and 7.5.2, RFC 3516).

Sections are cut out of the stored bytes using the part offsets computed at
delivery (message/derived.py: ``parts = {"1.2": (header_start, body_start,
body_end)}``), so a FETCH never re-parses MIME. Pure functions, no I/O.
"""

from __future__ import annotations

import array
import binascii
import datetime as dt
import re
from collections.abc import Mapping, Sequence

from .commands import FetchAtt, Section

PartOffsets = Mapping[str, Sequence[int]]


class UnknownCTE(ValueError):
    """BINARY of a part whose Content-Transfer-Encoding we cannot decode
    (RFC 3516 4.3: NO [UNKNOWN-CTE])."""


def format_internal_date(ts: float) -> str:
    """date-time as in RFC 9051 9: "dd-Mon-yyyy hh:mm:ss +zzzz" (UTC here)."""
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    months = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
    return f"{d.day:02d}-{months[d.month - 1]}-{d.year:04d} {d:%H:%M:%S} +0000"


def split_header(data: bytes) -> tuple[bytes, bytes]:
    """(header including the blank line, body) of an RFC 5322 message."""
    m = re.search(rb"\r?\n\r?\n", data)
    if data.startswith((b"\r\n", b"\n")):
        cut = 2 if data.startswith(b"\r\n") else 1
        return data[:cut], data[cut:]
    if m is None:
        return data, b""
    return data[: m.end()], data[m.end() :]


# One field of a header (RFC 5322 2.2): a line, its field name if it has
# one, and the folded lines after it; lines end as bytes.splitlines ends
# them (CRLF, LF or a lone CR).
_FIELD_LINES = re.compile(rb"(?:([^:\s]+)[ \t]*:)?[^\r\n]*(?:\r\n|\r|\n|\Z)(?:[ \t][^\r\n]*(?:\r\n|\r|\n|\Z))*")


class ParsedHeader:
    """A header cut once into its fields, so that each HEADER.FIELDS item of
    a message is a lookup by name rather than another scan of the header (a
    FETCH may hold a hundred such items, a header megabytes).

    A field is kept as where it starts in the header (fields follow one
    another, so the next one's start is its end) and its name: memory grows
    with the number of fields and names, not with a copy of the header."""

    __slots__ = ("by_name", "header", "starts")

    def __init__(self, header: bytes) -> None:
        self.header = header
        code = "i" if len(header) < 2**31 else "q"  # 4 octets an offset when they fit
        # where each field starts, then where the last one ends
        self.starts = starts = array.array(code)
        # field numbers by lower-case name; None: lines without a field name
        self.by_name: dict[bytes | None, array.array[int]] = {}
        lower: dict[bytes | None, bytes | None] = {None: None}  # names as written, in lower case
        end = 0
        for m in _FIELD_LINES.finditer(header):
            at, end = m.span()
            if at == end:
                break  # the end of the header
            c = header[at]
            if c == 10 or (c == 13 and header[at + 1 : at + 2] == b"\n"):
                end = at  # the blank line that ends the header (RFC 5322 2.1)
                break
            if c == 32 or c == 9:
                continue  # folded lines before any field: no field of theirs
            raw = m.group(1)
            name = lower.get(raw)
            if name is None and raw is not None:
                name = lower[raw] = raw.lower()
            fields = self.by_name.get(name)
            if fields is None:
                fields = self.by_name[name] = array.array(code)
            fields.append(len(starts))
            starts.append(at)
        starts.append(end)

    def select(self, names: Sequence[str], exclude: bool) -> bytes:
        """HEADER.FIELDS (.NOT): the matching fields in header order, plus
        the terminating blank line (RFC 9051 6.4.5). .NOT leaves out the
        lines without a field name as well."""
        h, starts, by_name = self.header, self.starts, self.by_name
        wanted = {n.lower().encode("ascii") for n in names}
        parts: list[bytes] = []
        if not exclude:
            # runs of consecutive fields, each one slice of the header
            keep = sorted(i for n in wanted for i in by_name.get(n, ()))
            run = end = -1
            for i in keep:
                if i != end:
                    if run >= 0:
                        parts.append(h[starts[run] : starts[end]])
                    run = i
                end = i + 1
            if run >= 0:
                parts.append(h[starts[run] : starts[end]])
        else:
            # the runs between the fields left out
            at = 0
            for i in sorted(i for n in (*wanted, None) for i in by_name.get(n, ())):
                if i > at:
                    parts.append(h[starts[at] : starts[i]])
                at = i + 1
            if at < len(starts) - 1:
                parts.append(h[starts[at] : starts[-1]])
        parts.append(b"\r\n")
        return b"".join(parts)


def header_fields(header: bytes, names: Sequence[str], exclude: bool) -> bytes:
    """HEADER.FIELDS (.NOT): the matching fields, folded lines kept, plus the
    terminating blank line (RFC 9051 6.4.5)."""
    return ParsedHeader(header).select(names, exclude)


def _part_range(raw: bytes, parts: PartOffsets, part: tuple[int, ...]) -> tuple[int, int, int] | None:
    key = ".".join(map(str, part))
    if key in parts:
        a, b, c = parts[key][:3]
        return int(a), int(b), int(c)
    if part == (1,) and not any("." in k or k != "1" for k in parts if k):
        # RFC 9051 6.4.5: a non-multipart message's part 1 is its body
        hdr, _ = split_header(raw)
        return 0, len(hdr), len(raw)
    return None


def section_data(raw: bytes, parts: PartOffsets, section: Section) -> bytes | None:
    """The octets of a body section; None if the part does not exist."""
    if not section.part:
        data = raw
    else:
        rng = _part_range(raw, parts, section.part)
        if rng is None:
            return None
        h, b, e = rng
        if section.text == "MIME":
            return raw[h:b]
        data = raw[b:e]
        if section.text is None:
            return data
    if section.text is None:
        return data
    hdr, body = split_header(data)
    if section.text == "HEADER":
        return hdr
    if section.text == "TEXT":
        return body
    return header_fields(hdr, section.fields, section.text == "HEADER.FIELDS.NOT")


def part_header(raw: bytes, parts: PartOffsets, part: tuple[int, ...]) -> bytes:
    """The MIME header of a part (the message header for the top level)."""
    if not part:
        return split_header(raw)[0]
    rng = _part_range(raw, parts, part)
    if rng is None:
        return b""
    h, b, _ = rng
    if h == 0 and part == (1,):
        return split_header(raw)[0]
    return raw[h:b]


_CTE = re.compile(rb"^content-transfer-encoding[ \t]*:[ \t]*([^\r\n;]*)", re.I | re.M)


def decode_cte(data: bytes, header: bytes) -> bytes:
    """Undo the part's Content-Transfer-Encoding for BINARY (RFC 3516 4.2)."""
    m = _CTE.search(header)
    cte = m.group(1).strip().lower() if m else b"7bit"
    if cte in (b"7bit", b"8bit", b"binary", b""):
        return data
    if cte == b"base64":
        try:
            # RFC 2045 6.8: characters outside the alphabet (line breaks
            # among them) are ignored, which a2b_base64 does itself, in C, at
            # about 400 MB/s; the padding added makes a missing one no error.
            return binascii.a2b_base64(data + b"===")
        except (binascii.Error, ValueError) as exc:
            raise UnknownCTE("corrupt base64") from exc
    if cte == b"quoted-printable":
        return decode_quoted_printable(data)
    raise UnknownCTE(cte.decode("ascii", "replace"))


def _strip_trailing_whitespace(data: bytes) -> bytes:
    """RFC 2045 6.7 rule 3: whitespace at the end of an encoded line (before
    its CRLF or LF, or at the end of the data) is transport padding, not
    data; removing it also makes "=" followed by whitespace the soft line
    break it is (rule 5). Line by line, in time linear in the data: a regex
    with a lookahead takes time quadratic in a run of blanks that does not
    end a line, and any sender can put one in a message."""
    lines = data.split(b"\n")
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if i < last and line.endswith(b"\r"):
            lines[i] = line[:-1].rstrip(b" \t") + b"\r"
        else:
            lines[i] = line.rstrip(b" \t")
    return b"\n".join(lines)


def decode_quoted_printable(data: bytes) -> bytes:
    """Undo quoted-printable (RFC 2045 6.7): =XX escapes, soft line breaks
    ("=" at the end of a line, whitespace after it allowed), and trailing
    whitespace on a line removed. An "=" not followed by two hex digits or a
    line end is kept as it is (the robust reading 6.7 recommends)."""
    return binascii.a2b_qp(_strip_trailing_whitespace(data))


def binary_data(raw: bytes, parts: PartOffsets, part: tuple[int, ...]) -> bytes | None:
    """BINARY[part]: the decoded content of a part; the whole message for []."""
    if not part:
        return raw
    data = section_data(raw, parts, Section(part))
    if data is None:
        return None
    return decode_cte(data, part_header(raw, parts, part))


def apply_partial(data: bytes, partial: tuple[int, int] | None) -> bytes:
    """<origin.length> (RFC 9051 6.4.5): bytes past the end give an empty string."""
    if partial is None:
        return data
    origin, length = partial
    return data[origin : origin + length]


def response_name(att: FetchAtt) -> str:
    """The item name in the FETCH response: BODY[1.TEXT]<0>, BINARY[2], ..."""
    if att.name == "BODY[]":
        name = f"BODY[{att.section_text}]"
    elif att.name == "BINARY[]":
        name = f"BINARY[{att.section_text}]"
    elif att.name == "BINARY.SIZE[]":
        return f"BINARY.SIZE[{att.section_text}]"
    else:
        return att.name
    if att.partial is not None:
        name += f"<{att.partial[0]}>"
    return name
