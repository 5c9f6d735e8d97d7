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
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence

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


def field_names(names: Iterable[str]) -> frozenset[bytes]:
    """Header field names as a ParsedHeader is cut for them: in lower case
    (RFC 5322 1.2.2: names are case-insensitive), as octets."""
    return frozenset(n.lower().encode("ascii") for n in names)


# A line whose name and the blanks after it take up to this many octets is
# read with a few operations on a copy of them; a longer one with searches
# of the header (bytes.find, bytes.startswith), never a copy of the whole.
_SHORT_NAME = 256
# white space that ends a name within a line (RFC 5322 2.2: a name is
# printable US-ASCII but colon; read loosely, any octet but these and colon)
_WHITE = (b" ", b"\t", b"\x0b", b"\x0c")
# the most octets of a long run of blanks looked at in one go
_BLANKS_AT_ONCE = 64 * 1024
_SPACES = memoryview(b" " * _BLANKS_AT_ONCE)


def _blank_run(h: bytes, at: int, end: int, stop: int) -> int:
    """Whether ``h[at:end]`` is blanks only (SP, HTAB), looked at in chunks
    growing from _SHORT_NAME octets, none past ``stop`` after the first:
    ``end`` if it is, -1 at the first chunk holding another octet, else
    where the look stopped, to go on from. Spaces are compared at once
    (bytes.startswith), a chunk with tabs checked on a copy of it."""
    chunk = _SHORT_NAME
    last = min(end, max(stop, at + chunk))
    while at < last:
        to = min(last, at + chunk)
        if not h.startswith(_SPACES[: to - at], at) and (
                not h[at:to].isspace() or h.find(b"\x0b", at, to) >= 0 or h.find(b"\x0c", at, to) >= 0):
            return -1  # (a line holds no CR or LF: blanks, VT and FF are its white space)
        at = to
        chunk = min(2 * chunk, _BLANKS_AT_ONCE)
    return at


class ParsedHeader:
    """A header cut once into its fields, so that each HEADER.FIELDS item of
    a message is a lookup by name rather than another scan of the header (a
    FETCH may hold a hundred such items, a header megabytes).

    A field (RFC 5322 2.2) is a line, with its field name if it has one,
    and the folded lines after it; lines end as bytes.splitlines ends them
    (CRLF, LF or a lone CR); the header ends at its blank line (2.1) or
    with the data. A field is kept as where it starts in ``data`` (fields
    follow one another, so the next one's start is its end): memory grows
    with the number of fields, not with a copy of the header. The header
    is ``data[start:end]``, read in place (a message's header is not copied
    out of it).

    Only the fields of ``names`` (``field_names``: those of every
    HEADER.FIELDS (.NOT) item to be selected from it) and the lines without
    a field name are indexed by name (``by_name``); any other field is only
    where it starts, which .NOT keeps and HEADER.FIELDS does not need: the
    index holds as many names as the command, never as many as the header
    (a million distinct ones).

    ``ParsedHeader(data, names)`` cuts the whole header; with
    ``whole=False`` none of it, and ``cut(most, per_line)`` goes on a slice
    at a time, so that a header of a million lines, or of a line of 20 MB,
    is cut with turns of the other connections between the slices: each
    line costs a few operations in Python and searches of its octets
    (``bytes.find``), never a regular expression over a run of them nor a
    copy of a long name."""

    __slots__ = ("_at", "_cr", "_longest", "_nl", "_pending", "by_name", "done", "end", "header", "names", "starts")

    def __init__(self, data: bytes, names: Collection[bytes], whole: bool = True, start: int = 0,
                 end: int | None = None) -> None:
        self.header = data
        self.end = len(data) if end is None else end
        self.names = frozenset(names)
        self._longest = max(map(len, self.names), default=0)  # a longer name is none of them
        code = "i" if len(data) < 2**31 else "q"  # 4 octets an offset when they fit
        # where each field starts, then (once done) where the last one ends
        self.starts = array.array(code)
        # field numbers by lower-case name, of ``names``; None: the lines
        # without a field name
        self.by_name: dict[bytes | None, array.array[int]] = {}
        self._at = start  # where the next line starts
        self.done = False
        # where the next CR and LF are at or after ``at`` (``end``: none),
        # found again only once passed, so that a header of lines ended by
        # one of them is searched once for the other
        self._cr = self._nl = -1
        # a line at ``at`` whose blanks between name and colon are being
        # looked at: (the name's end, the colon, looked at up to, the line's end)
        self._pending: tuple[int, int, int, int] | None = None
        if whole:
            self.cut()

    def cut(self, most: int | None = None, per_line: int = 0) -> tuple[int, int]:
        """Cut the header into fields on until ``most`` octets are passed,
        each line begun counting as ``per_line`` octets more (what going
        through a line costs beyond searching its octets), at least one
        line or, of a long run of blanks in a line, _SHORT_NAME octets (all
        of the header: None); returns how many lines were begun and how
        many octets passed. ``done`` once the header's end is reached."""
        if self.done:
            return 0, 0
        h, starts, by_name, names, longest = self.header, self.starts, self.by_name, self.names, self._longest
        size = self.end
        at, cr, nl, pending = self._at, self._cr, self._nl, self._pending
        begun = at if pending is None else pending[2]
        # where to stop: ``most`` octets on, less per_line for each line begun
        stop = size + 1 if most is None else begun + max(1, most)
        lines = 0
        if pending is not None:
            # the rest of a long line's blanks first
            end, colon, looked, line_end = pending
            looked = _blank_run(h, looked, colon, stop)
            if 0 <= looked < colon:
                self._pending = (end, colon, looked, line_end)
                return 0, looked - begun
            pending = None
            self._index(at, end if looked == colon else at)
            at = line_end
        while at < stop:
            if at >= size:
                starts.append(size)
                self.done = True
                break
            c = h[at]
            if c == 10 or (c == 13 and at + 1 < size and h[at + 1] == 10):
                starts.append(at)  # the blank line that ends the header (RFC 5322 2.1)
                self.done = True
                break
            # the line's end: CRLF, LF or a lone CR, or the end of the header
            if cr < at:
                cr = h.find(b"\r", at, size)
                if cr < 0:
                    cr = size
            if nl < at:
                nl = h.find(b"\n", at, size)
                if nl < 0:
                    nl = size
            if cr < nl:
                text_end, line_end = cr, cr + 2 if nl == cr + 1 < size else cr + 1
            else:
                text_end, line_end = nl, min(nl + 1, size)
            lines += 1
            stop -= per_line
            if c == 32 or c == 9:
                # a folded line: part of the field before it (before any
                # field: part of none)
                at = line_end
                continue
            # a field, or a line without a field name: a name is a run of
            # octets other than colon and white space, then blanks and a
            # colon (RFC 5322 2.2, 3.6.8, read loosely)
            colon = h.find(b":", at, text_end)
            if colon <= at:
                fields = by_name.get(None)
                if fields is None:
                    fields = by_name[None] = array.array(starts.typecode)
                fields.append(len(starts))
                starts.append(at)
            elif colon - at <= _SHORT_NAME:
                raw = h[at:colon].rstrip(b" \t")
                if not raw or raw.split(None, 1) != [raw]:
                    fields = by_name.get(None)
                    if fields is None:
                        fields = by_name[None] = array.array(starts.typecode)
                    fields.append(len(starts))
                elif len(raw) <= longest:
                    name = raw.lower()
                    if name in names:
                        fields = by_name.get(name)
                        if fields is None:
                            fields = by_name[name] = array.array(starts.typecode)
                        fields.append(len(starts))
                # (else a field of a name not asked for: where it starts only)
                starts.append(at)
            else:
                # a long name, or blanks: searched in place
                end = colon
                for w in _WHITE:
                    found = h.find(w, at, end)
                    if found >= 0:
                        end = found
                if at < end < colon:
                    looked = _blank_run(h, end, colon, stop)
                    if 0 <= looked < colon:
                        pending = (end, colon, looked, line_end)
                        break  # looked as far as this slice goes
                    end = end if looked == colon else at
                self._index(at, end)
            at = line_end
        self._at, self._cr, self._nl, self._pending = at, cr, nl, pending
        return lines, (at if pending is None else pending[2]) - begun

    def _index(self, at: int, name_end: int) -> None:
        """The field at ``at`` whose name ends at ``name_end`` (``at``: a
        line without a name) into ``starts``, and ``by_name`` if its name is
        one of ``names`` or it has none."""
        h, by_name = self.header, self.by_name
        name: bytes | None = None
        if name_end > at:
            name = h[at:name_end].lower() if name_end - at <= self._longest else None
            if name not in self.names:
                self.starts.append(at)
                return  # a field of a name not asked for: where it starts only
        fields = by_name.get(name)
        if fields is None:
            fields = by_name[name] = array.array(self.starts.typecode)
        fields.append(len(self.starts))
        self.starts.append(at)

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
# a run of fields at least this long is kept as a view of the header, not
# copied, until data() joins the selection
_RUN_VIEWED = 64 * 1024


class Selection:
    """HEADER.FIELDS (.NOT) of a ParsedHeader: the matching fields in
    header order, plus the terminating blank line (RFC 9051 6.4.5); .NOT
    leaves out the lines without a field name as well.

    ``advance(most, per_field)`` goes on through the fields it takes (for
    .NOT: leaves out) until ``most`` octets of the header are in the
    selection, each field counting as ``per_field`` octets more, so that a
    selection of a million fields, or of megabytes, is made with turns of
    the other connections between the slices; ``data()`` once ``done``.
    ``merged``: how many lists of field numbers it goes through in step
    (heapq.merge), each field costing a comparison more for every doubling
    of them; 1 for one list or a few fields sorted at once."""

    __slots__ = ("done", "exclude", "header", "merged", "next", "parts", "run", "starts", "todo", "view")

    def __init__(self, parsed: ParsedHeader, names: Sequence[str], exclude: bool) -> None:
        self.header, self.starts, self.exclude = parsed.header, parsed.starts, exclude
        self.view = memoryview(parsed.header)
        asked = field_names(names)
        assert asked <= parsed.names, "the header was not cut for these names"
        wanted: set[bytes | None] = set(asked)
        if exclude:
            wanted.add(None)  # the lines without a field name
        found = [parsed.by_name[n] for n in wanted if n in parsed.by_name]
        # the field numbers to take (.NOT: to leave out), in header order:
        # each name's are; a few of several names sorted at once, many
        # merged as they are gone through
        self.todo: Iterator[int]
        self.merged = 1
        if len(found) == 1:
            self.todo = iter(found[0])
        elif sum(map(len, found)) <= _SORTED_AT_ONCE:
            self.todo = iter(sorted(itertools.chain.from_iterable(found)))
        else:
            self.todo = heapq.merge(*found)
            self.merged = len(found)
        # slices of the header, and views of its long runs
        self.parts: list[bytes | memoryview] = []
        # taking: the run of consecutive fields begun (its first and past its
        # last; -1: none yet); leaving out: the first field after the last
        # one left out
        self.run = -1
        self.next = -1 if not exclude else 0
        self.done = False

    def _add(self, a: int, b: int) -> int:
        """``header[a:b]`` into the selection; returns its length."""
        self.parts.append(self.header[a:b] if b - a < _RUN_VIEWED else self.view[a:b])
        return b - a

    def advance(self, most: int | None = None, per_field: int = 0) -> tuple[int, int]:
        """Go on through the fields until ``most`` octets are in the
        selection, each field counting as ``per_field`` octets more (all:
        None), one field at least; returns how many fields and octets that
        was."""
        h, view, starts, parts, exclude = self.header, self.view, self.starts, self.parts, self.exclude
        run, end = self.run, self.next
        count = got = 0
        first = len(parts)
        if most is None:
            fields, limit, per_field = None, len(h) + 1, 0
        else:
            fields, limit = max(1, most // per_field if per_field > 0 else most), most
        # (the fields are no more than ``most`` with per_field each: only
        # the octets added can take the slice past it)
        for i in itertools.islice(self.todo, fields):
            count += 1
            if exclude:
                if i > end:  # the fields between the last left out and this one
                    a, b = starts[end], starts[i]
                    end = i + 1
                    parts.append(h[a:b] if b - a < _RUN_VIEWED else view[a:b])
                    got += b - a
                    if got + count * per_field >= limit:
                        break
                else:
                    end = i + 1
            elif i != end:  # a new run of consecutive fields
                if run >= 0:
                    a, b = starts[run], starts[end]
                    run, end = i, i + 1
                    parts.append(h[a:b] if b - a < _RUN_VIEWED else view[a:b])
                    got += b - a
                    if got + count * per_field >= limit:
                        break
                else:
                    run, end = i, i + 1
            else:
                end = i + 1
        else:
            if fields is None or count < fields:
                self.done = True
                if exclude:
                    if end < len(starts) - 1:
                        got += self._add(starts[end], starts[-1])
                elif run >= 0:
                    got += self._add(starts[run], starts[end])
        self.run, self.next = run, end
        # one string a slice (data() joins as many as there were slices),
        # but for a long run last, not copied in this one
        last = len(parts) - (len(parts) > first and isinstance(parts[-1], memoryview))
        if last > first + 1:
            parts[first:last] = [b"".join(parts[first:last])]
        if self.done:
            parts.append(b"\r\n")
        return count, got

    def data(self) -> bytes:
        """The selection, once ``done``."""
        assert self.done
        return b"".join(self.parts)


def header_fields(header: bytes, names: Sequence[str], exclude: bool) -> bytes:
    """HEADER.FIELDS (.NOT): the matching fields, folded lines kept, plus the
    terminating blank line (RFC 9051 6.4.5)."""
    return ParsedHeader(header, field_names(names)).select(names, exclude)


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
