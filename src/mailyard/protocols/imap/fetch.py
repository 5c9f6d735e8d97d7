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
import heapq
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence

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


class ParsedHeader:
    """A header cut once into its fields, so that each HEADER.FIELDS item of
    a message is a lookup by name rather than another scan of the header (a
    FETCH may hold a hundred such items, a header megabytes).

    A field (RFC 5322 2.2) is a line, with its field name if it has one,
    and the folded lines after it; lines end as bytes.splitlines ends them
    (CRLF, LF or a lone CR); the header ends at its blank line (2.1) or
    with the data. A field is kept as where it starts in the header (fields
    follow one another, so the next one's start is its end) and its name:
    memory grows with the number of fields and names, not with a copy of
    the header.

    ``ParsedHeader(header)`` cuts the whole header; ``ParsedHeader(header,
    whole=False)`` cuts none of it, and ``cut(most)`` goes on a slice of
    lines at a time, so that a header of a million lines is cut with turns
    of the other connections between the slices: each line costs a few
    operations in Python and searches of the octets (``bytes.find``),
    never a regular expression over a run of them, which would go through
    a long line, or a field folded a million times, in one call."""

    __slots__ = ("_at", "_cr", "_lower", "_nl", "by_name", "done", "header", "starts")

    def __init__(self, header: bytes, whole: bool = True) -> None:
        self.header = header
        code = "i" if len(header) < 2**31 else "q"  # 4 octets an offset when they fit
        # where each field starts, then (once done) where the last one ends
        self.starts = array.array(code)
        # field numbers by lower-case name; None: lines without a field name
        self.by_name: dict[bytes | None, array.array[int]] = {}
        self._lower: dict[bytes, bytes] = {}  # names as written, in lower case
        self._at = 0  # where the next line starts
        self.done = False
        # where the next CR and LF are at or after ``at`` (the length of the
        # header: none), found again only once passed, so that a header of
        # lines ended by one of them is searched once for the other
        self._cr = self._nl = -1
        if whole:
            self.cut()

    def cut(self, most: int | None = None) -> int:
        """Cut the header's next ``most`` lines (all of them: None) into
        fields; returns how many lines that was. ``done`` once the header's
        end is reached."""
        if self.done:
            return 0
        h, starts, by_name, lower = self.header, self.starts, self.by_name, self._lower
        size = len(h)
        at, cr, nl = self._at, self._cr, self._nl
        lines = 0
        limit = size + 1 if most is None else most  # (no header has more lines than octets)
        while lines < limit:
            if at >= size:
                starts.append(size)
                self.done = True
                break
            c = h[at]
            if c == 10 or (c == 13 and at + 1 < size and h[at + 1] == 10):
                starts.append(at)  # the blank line that ends the header (RFC 5322 2.1)
                self.done = True
                break
            # the line's end: CRLF, LF or a lone CR, or the end of the data
            if cr < at:
                cr = h.find(b"\r", at)
                if cr < 0:
                    cr = size
            if nl < at:
                nl = h.find(b"\n", at)
                if nl < 0:
                    nl = size
            if cr < nl:
                text_end, line_end = cr, cr + 2 if cr + 1 == nl else cr + 1
            else:
                text_end, line_end = nl, min(nl + 1, size)
            lines += 1
            if c != 32 and c != 9:
                # a field, or a line without a field name: a name is a run
                # of octets other than colon and white space, then blanks
                # and a colon (RFC 5322 2.2, 3.6.8, read loosely)
                name: bytes | None = None
                colon = h.find(b":", at, text_end)
                if colon > at:
                    raw = h[at:colon].rstrip(b" \t")
                    if raw and raw.split() == [raw]:
                        name = lower.get(raw)
                        if name is None:
                            name = lower[raw] = raw.lower()
                fields = by_name.get(name)
                if fields is None:
                    fields = by_name[name] = array.array(starts.typecode)
                fields.append(len(starts))
                starts.append(at)
            # else a folded line: part of the field before it (before any
            # field: part of none)
            at = line_end
        self._at, self._cr, self._nl = at, cr, nl
        return lines

    def selection(self, names: Sequence[str], exclude: bool) -> Selection:
        """HEADER.FIELDS (.NOT) of this header (cut whole), made a slice at
        a time (``Selection``)."""
        assert self.done, "the header is not cut yet"
        return Selection(self, names, exclude)

    def select(self, names: Sequence[str], exclude: bool) -> bytes:
        """HEADER.FIELDS (.NOT): the matching fields in header order, plus
        the terminating blank line (RFC 9051 6.4.5). .NOT leaves out the
        lines without a field name as well."""
        chosen = self.selection(names, exclude)
        chosen.advance()
        return chosen.data()


_SORTED_AT_ONCE = 4096


class Selection:
    """HEADER.FIELDS (.NOT) of a ParsedHeader: the matching fields in
    header order, plus the terminating blank line (RFC 9051 6.4.5); .NOT
    leaves out the lines without a field name as well. ``advance(most)``
    goes through the next ``most`` fields it takes (for .NOT: leaves out),
    so that a selection of a million fields is made with turns of the
    other connections between the slices; ``data()`` once ``done``."""

    __slots__ = ("done", "exclude", "header", "next", "parts", "run", "starts", "todo")

    def __init__(self, parsed: ParsedHeader, names: Sequence[str], exclude: bool) -> None:
        self.header, self.starts, self.exclude = parsed.header, parsed.starts, exclude
        wanted: set[bytes | None] = {n.lower().encode("ascii") for n in names}
        if exclude:
            wanted.add(None)  # the lines without a field name
        found = [parsed.by_name[n] for n in wanted if n in parsed.by_name]
        # the field numbers to take (.NOT: to leave out), in header order:
        # each name's are; a few of several names sorted at once, many
        # merged as they are gone through
        self.todo: Iterator[int]
        if len(found) == 1:
            self.todo = iter(found[0])
        elif sum(map(len, found)) <= _SORTED_AT_ONCE:
            self.todo = iter(sorted(itertools.chain.from_iterable(found)))
        else:
            self.todo = heapq.merge(*found)
        self.parts: list[bytes] = []  # slices of the header
        # taking: the run of consecutive fields begun (its first and past its
        # last; -1: none yet); leaving out: the first field after the last
        # one left out
        self.run = -1
        self.next = -1 if not exclude else 0
        self.done = False

    def advance(self, most: int | None = None) -> int:
        """Go through the next ``most`` fields (all: None); returns how many."""
        h, starts, parts = self.header, self.starts, self.parts
        run, end = self.run, self.next
        count = 0
        first = len(parts)
        for i in itertools.islice(self.todo, most):
            count += 1
            if self.exclude:
                if i > end:  # the fields between the last left out and this one
                    parts.append(h[starts[end] : starts[i]])
                end = i + 1
            else:
                if i != end:  # a new run of consecutive fields
                    if run >= 0:
                        parts.append(h[starts[run] : starts[end]])
                    run = i
                end = i + 1
        self.run, self.next = run, end
        if most is None or count < most:
            self.done = True
            if self.exclude:
                if end < len(starts) - 1:
                    parts.append(h[starts[end] : starts[-1]])
            elif run >= 0:
                parts.append(h[starts[run] : starts[end]])
            parts.append(b"\r\n")
        if len(parts) > first + 1:
            # one string a slice: data() joins as many as there were slices
            parts[first:] = [b"".join(parts[first:])]
        return count

    def data(self) -> bytes:
        """The selection, once ``done``."""
        assert self.done
        return b"".join(self.parts)


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
