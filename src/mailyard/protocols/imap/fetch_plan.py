"""A FETCH's plan and its item encoder (RFC 9051 6.4.5, 7.5.2; RFC 3516
BINARY; RFC 7162 3.1.4.1 MODSEQ; RFC 8474 EMAILID / THREADID; RFC 8970 PREVIEW).

`plan` works out once per distinct attribute list (a client repeats the same
few) what the backend must supply: the message bytes, the part offsets, which
derived items (ENVELOPE, BODYSTRUCTURE, ...); whether the FETCH sets \\Seen;
and, for lists answered from the index alone (FETCH 1:* (UID FLAGS), what
clients sync with), one precomputed format per response line.

`encode_items` writes one message's items; `MessageParts` cuts body
sections out of the stored bytes with the offsets computed at delivery.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ...message.derived import Derived
from . import commands as c
from . import fetch as f
from .response import Literal8, Writer

if TYPE_CHECKING:
    from .backend import MessageRecord

_BODY_ATTS = {"BODY[]", "BINARY[]", "BINARY.SIZE[]", "RFC822", "RFC822.HEADER", "RFC822.TEXT"}
# What each fetch-att needs of the backend's derived data (ImapBackend.get_derived).
_STRUCTURE_FIELDS = {"ENVELOPE": "envelope_imap", "BODYSTRUCTURE": "bodystructure_imap", "BODY": "body_imap",
                     "EMAILID": "email_id", "THREADID": "thread_id", "PREVIEW": "preview"}
_OFFSET_FIELDS = ("parts", "messages", "size")
_NIL_ENVELOPE = b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
# fetch-atts answered from the index data alone, with their response templates
_INDEX_ATTS = {"UID": b"UID %d", "FLAGS": b"FLAGS %s", "RFC822.SIZE": b"RFC822.SIZE %d",
               "INTERNALDATE": b'INTERNALDATE "%s"', "MODSEQ": b"MODSEQ (%d)",  # RFC 7162 3.1.4.1
               "SAVEDATE": b"SAVEDATE %s"}  # RFC 8514 3
_RFC822_SECTIONS = {"RFC822": None, "RFC822.HEADER": "HEADER", "RFC822.TEXT": "TEXT"}

# What formatting one message's items costs, in units of about a microsecond
# of CPU (measured with encode_items on a 2.7 KB header): a response line
# from a precomputed format (line_format) half a unit plus half per item; a
# line of encoded items 2, plus per item 1, 3 for a formatted date, 2 for a
# cut section, and for HEADER.FIELDS(.NOT) 15 and a tenth per field name. cmd_fetch (handlers/messages.py)
# lets the other connections in after FETCH_TURN of them (FetchPlan.work).
# Items that read the message are charged by octets besides: see
# FetchPlan.sized.
_ITEM_WORK = {"INTERNALDATE": 3.0, "SAVEDATE": 3.0}
_SECTION_WORK = 2.0
_HEADER_FIELDS_WORK = 15.0
_FIELD_NAME_WORK = 0.1
# What a header's HEADER.FIELDS (.NOT) items cost beyond that, once its size
# is known: cutting it into fields (fetch.ParsedHeader.cut) about a unit a
# line (0.75 µs for a field of a few octets, 1.25 for those of a typical
# 3 KB header) and a unit for every HEADER_OCTETS_A_UNIT octets it passes
# (the searches of a long line: 0.2-1 ns an octet); a selection
# (fetch.Selection) 0.3 of a unit a field it takes or leaves out, and
# MERGED_FIELD_WORK more for every doubling of the lists of fields it
# merges into header order (0.27 µs a field of one name, 0.7-0.9 of a
# thousand, MAX_FETCH_FIELD_NAMES), and a unit for every
# SELECTED_OCTETS_A_UNIT octets it copies. They are done ahead of
# encode_items, a slice at a time, with the other connections' turns in
# between (handlers/messages.py _choose_fields): a million short fields
# take most of a second to cut and a fifth to select, a line of 20 MB up
# to ten milliseconds to search.
HEADER_LINE_WORK = 1.0
HEADER_OCTETS_A_UNIT = 1024
SELECTED_FIELD_WORK = 0.3
MERGED_FIELD_WORK = 0.05
SELECTED_OCTETS_A_UNIT = 1024
HEADER_FIELDS_TEXTS = ("HEADER.FIELDS", "HEADER.FIELDS.NOT")


class MessageParts:
    """Bytes and part offsets of one message, with the trace-prefix shift:
    the offsets are into the body as delivered; the stored message may carry
    a per-recipient prefix (Return-Path, Delivered-To) before it."""

    __slots__ = ("chosen", "derived", "headers", "raw", "shift")

    def __init__(self, raw: bytes, derived: Derived | None) -> None:
        self.raw = raw
        self.derived = derived
        self.shift = len(raw) - derived.size if derived is not None else 0
        # headers cut into fields, by range: parsed once for all the
        # HEADER.FIELDS items of the message
        self.headers: dict[tuple[int, int], f.ParsedHeader] = {}
        # HEADER.FIELDS (.NOT) sections selected ahead, a slice at a time
        # with the other connections' turns between (handlers/messages.py
        # _choose_fields), by section
        self.chosen: dict[c.Section, bytes] = {}

    @classmethod
    def of(cls, raw: bytes, d: Mapping[str, Any] | None, need_offsets: bool) -> MessageParts:
        offsets = None
        if need_offsets and d is not None:
            offsets = Derived([], [], {k: tuple(v) for k, v in d["parts"].items()},
                              {k: tuple(v) for k, v in d["messages"].items()}, size=d["size"])
        return cls(raw, offsets)

    def _range(self, part: str, text: str) -> tuple[int, int] | None:
        assert self.derived is not None
        rng = self.derived.section_range(part, text)
        if rng is None:
            return None
        a, b = rng
        # offset 0 is the start of the message header, which the prefix extends
        return (a + self.shift if a else 0, b + self.shift)

    def header_range(self, sec: c.Section) -> tuple[int, int] | None:
        """Where the header a HEADER.FIELDS (.NOT) section selects from is in
        the stored bytes; None if the part does not exist."""
        return self._range(".".join(map(str, sec.part)), "HEADER")

    def parsed_header(self, rng: tuple[int, int], names: frozenset[bytes]) -> f.ParsedHeader:
        """The header at ``rng`` cut for the field names ``names``
        (fetch.field_names) at least, kept in ``headers`` for the message's
        other HEADER.FIELDS items (a FETCH asks for the names of all of
        them, FetchPlan.field_names: one header cut for all); cut into
        fields as far as ``cut`` went."""
        parsed = self.headers.get(rng)
        if parsed is None or not names <= parsed.names:
            # cut again for the names already asked too, so that sections
            # asking alternately for different names (CATENATE URLs) cut once each
            if parsed is not None:
                names = names | parsed.names
            parsed = self.headers[rng] = f.ParsedHeader(self.raw, names, whole=False, start=rng[0], end=rng[1])
        return parsed

    def section(self, sec: c.Section) -> bytes | None:
        """The octets of a body section; None if the part does not exist."""
        part = ".".join(map(str, sec.part))
        text = sec.text or ""
        if not part and not text:
            return self.raw
        if text in HEADER_FIELDS_TEXTS:
            chosen = self.chosen.get(sec)
            if chosen is not None:
                return chosen
        rng = self._range(part, "HEADER" if text.startswith("HEADER") else text)
        if rng is None:
            return None
        if text in HEADER_FIELDS_TEXTS:
            parsed = self.parsed_header(rng, f.field_names(sec.fields))
            if not parsed.done:
                parsed.cut()
            return parsed.select(sec.fields, text == "HEADER.FIELDS.NOT")
        return self.raw[rng[0] : rng[1]]

    def binary(self, part: tuple[int, ...]) -> bytes | None:
        """BINARY[part] (RFC 3516 4.2): the part with its transfer encoding
        undone; raises fetch.UnknownCTE."""
        if not part:
            return self.raw
        spec = ".".join(map(str, part))
        body = self._range(spec, "")
        head = self._range(spec, "MIME")
        if body is None or head is None:
            return None
        return f.decode_cte(self.raw[body[0] : body[1]], self.raw[head[0] : head[1]])


def save_date(m: MessageRecord) -> bytes:
    """RFC 8514 3: the save date as a quoted date-time, NIL when the mailbox keeps none."""
    if m.save_date is None:
        return b"NIL"
    return b'"%s"' % f.format_internal_date(m.save_date).encode("ascii")


def index_values(atts: tuple[c.FetchAtt, ...], flags_of: Callable[[MessageRecord], bytes]
                 ) -> Callable[[MessageRecord], tuple[object, ...]]:
    """The values for a plan's ``line_format``, as one function of a message."""
    getters: list[Callable[[MessageRecord], object]] = []
    for a in atts:
        if a.name == "UID":
            getters.append(lambda m: m.uid)
        elif a.name == "FLAGS":
            getters.append(flags_of)
        elif a.name == "RFC822.SIZE":
            getters.append(lambda m: m.size)
        elif a.name == "INTERNALDATE":
            getters.append(lambda m: f.format_internal_date(m.internal_date).encode("ascii"))
        elif a.name == "SAVEDATE":
            getters.append(save_date)
        else:
            getters.append(lambda m: m.modseq)
    if len(getters) == 1:  # FETCH 1:* (FLAGS): no loop per message
        only = getters[0]
        return lambda m: (only(m),)
    return lambda m: tuple(g(m) for g in getters)


class FetchPlan:
    """What a FETCH's attribute list asks of the backend, worked out once."""

    __slots__ = ("atts", "condstore", "field_names", "field_sections", "fields", "line_format", "need_offsets",
                 "need_raw", "sets_seen", "sized", "with_flags", "work")

    def __init__(self, atts: list[c.FetchAtt], condstore: bool, condstore_on: bool = False) -> None:
        self.atts = tuple(atts)
        self.condstore = condstore  # RFC 7162 3.1: a CONDSTORE-enabling FETCH
        names = {a.name for a in atts}
        # RFC 9051 6.4.5: BODY[...] (not PEEK) and RFC822(.TEXT) set \Seen
        self.sets_seen = any(
            (a.name in ("BODY[]", "BINARY[]") and not a.peek) or a.name in ("RFC822", "RFC822.TEXT") for a in atts
        )
        self.need_raw = bool(names & _BODY_ATTS)
        # only sections inside the message need the part offsets; BODY[] / RFC822 /
        # BINARY[] of the whole message are the stored bytes as they are
        self.need_offsets = any(
            a.name in ("RFC822.HEADER", "RFC822.TEXT")
            or (a.section is not None and (a.section.part or a.section.text))
            for a in atts
        )
        fields = {_STRUCTURE_FIELDS[a.name] for a in atts if a.name in _STRUCTURE_FIELDS}
        if self.need_offsets:
            fields.update(_OFFSET_FIELDS)
        self.fields = frozenset(fields)
        # How many times over formatting one message may go through its octets
        # (cmd_fetch charges RFC822.SIZE times this to a batch, and writes a
        # message whose charge passes a batch's item by item): once per item
        # that cuts, decodes or outputs a section, as large as the message at
        # most. HEADER.FIELDS(.NOT) items too: the header is parsed once for
        # all of them (MessageParts.section), but each one's output may be
        # the whole header (a hundred HEADER.FIELDS (X) of a header of X:
        # fields).
        self.sized = sum(a.name in _BODY_ATTS for a in atts)
        # the HEADER.FIELDS (.NOT) sections, each once: selected ahead of
        # encode_items (handlers/messages.py _choose_fields)
        self.field_sections = tuple(dict.fromkeys(
            a.section for a in atts if a.section is not None and a.section.text in HEADER_FIELDS_TEXTS))
        # their field names, all of them: what a header is cut for, once for
        # all the sections (MessageParts.parsed_header)
        self.field_names = f.field_names(n for sec in self.field_sections for n in sec.fields)
        # Attributes that come from the index alone are written with one format per line.
        self.line_format: bytes | None = None
        if all(a.name in _INDEX_ATTS for a in atts):
            self.line_format = b"* %d FETCH (" + b" ".join(_INDEX_ATTS[a.name] for a in atts) + b")\r\n"
            self.work = 0.5 + 0.5 * len(atts)
        else:
            self.work = 2.0 + sum(map(_item_work, atts))
        # the same list plus FLAGS, for a FETCH that set \Seen implicitly
        # (and MODSEQ with them once CONDSTORE is on: plan())
        if "FLAGS" in names:
            self.with_flags = self
        else:
            more = [c.FetchAtt("FLAGS")]
            if condstore_on and "MODSEQ" not in names:
                more.append(c.FetchAtt("MODSEQ"))
            self.with_flags = FetchPlan([*atts, *more], condstore, condstore_on)


def _item_work(a: c.FetchAtt) -> float:
    """What encoding one item of one message costs (see _ITEM_WORK)."""
    sec = a.section
    if sec is not None and sec.text in HEADER_FIELDS_TEXTS:
        return _HEADER_FIELDS_WORK + _FIELD_NAME_WORK * len(sec.fields)
    if sec is not None or a.name in _RFC822_SECTIONS:
        return _SECTION_WORK
    return _ITEM_WORK.get(a.name, 1.0)


_PLANS: dict[tuple[tuple[c.FetchAtt, ...], bool, bool, bool], FetchPlan] = {}


def plan(atts: tuple[c.FetchAtt, ...], uid: bool, changed_since: bool, condstore_on: bool = False) -> FetchPlan:
    """The plan of a FETCH (cached for short attribute lists: bounded memory,
    so a client cannot fill it with 16 MiB of HEADER.FIELDS lists).
    ``condstore_on``: the session is CONDSTORE-aware, so FLAGS come with
    MODSEQ (RFC 7162 3.1: mod-sequence data in every untagged FETCH)."""
    key = (atts, uid, changed_since, condstore_on)
    p = _PLANS.get(key)
    if p is None:
        full = list(atts)
        names = {a.name for a in full}
        if uid and "UID" not in names:
            full.insert(0, c.FetchAtt("UID"))  # RFC 9051 6.4.9: UID FETCH always returns UID
        condstore = changed_since or "MODSEQ" in names  # RFC 7162 3.1: CONDSTORE-enabling
        if (condstore or (condstore_on and "FLAGS" in names)) and "MODSEQ" not in names:
            full.append(c.FetchAtt("MODSEQ"))
        p = FetchPlan(full, condstore, condstore_on)
        if len(atts) + sum(len(a.section.fields) for a in atts if a.section) <= 32:
            if len(_PLANS) >= 256:
                _PLANS.clear()
            _PLANS[key] = p
    return p


def _without_nul(data: bytes) -> bytes:
    """A string never holds NUL (RFC 9051 4.3: CHAR8 excludes %x00) and BODY[]
    and RFC822 are strings, not literal8. APPEND keeps NUL octets out of parts
    (RFC 3516 4.3, message/binary.py); a NUL that arrived otherwise (SMTP DATA)
    is sent as 0x80, as Dovecot does, keeping the octet count (sizes and
    partial ranges stay true). BINARY[] carries the octets in a literal8."""
    return data.replace(b"\0", b"\x80") if b"\0" in data else data


def encode_items(flags_of: Callable[[MessageRecord], bytes], writer: Writer, atts: tuple[c.FetchAtt, ...],
                 info: MessageRecord, msg: MessageParts | None, d: Mapping[str, Any] | None) -> list[bytes]:
    """The msg-att items of one FETCH response line; raises fetch.UnknownCTE
    (BINARY of an encoding we cannot undo, RFC 3516 4.3)."""
    out: list[bytes] = []
    for a in atts:
        n = a.name
        if n == "UID":
            out.append(b"UID %d" % info.uid)
        elif n == "FLAGS":
            out.append(b"FLAGS " + flags_of(info))
        elif n == "ENVELOPE":
            out.append(b"ENVELOPE " + (d["envelope_imap"] if d else _NIL_ENVELOPE))
        elif n == "RFC822.SIZE":
            out.append(b"RFC822.SIZE %d" % info.size)
        elif n == "INTERNALDATE":
            out.append(b'INTERNALDATE "%s"' % f.format_internal_date(info.internal_date).encode("ascii"))
        elif n == "MODSEQ":
            out.append(b"MODSEQ (%d)" % info.modseq)  # RFC 7162 3.1.4.1
        elif n == "SAVEDATE":
            out.append(b"SAVEDATE " + save_date(info))
        elif n == "BODYSTRUCTURE":
            out.append(b"BODYSTRUCTURE " + (d["bodystructure_imap"] if d else b"NIL"))
        elif n == "BODY":
            out.append(b"BODY " + (d["body_imap"] if d else b"NIL"))
        elif n == "EMAILID":
            # RFC 8474 5.1: fetch-emailid-resp = "EMAILID" SP "(" objectid ")"
            out.append(b"EMAILID (%s)" % d["email_id"].encode("ascii") if d else b"EMAILID NIL")
        elif n == "THREADID":
            # RFC 8474 5.2: fetch-threadid-resp = "THREADID" SP ( "(" objectid ")" / nil )
            out.append(b"THREADID (%s)" % d["thread_id"].encode("ascii") if d else b"THREADID NIL")
        elif n == "PREVIEW":
            # RFC 8970 3: the preview as a string, NIL only where none can be made
            out.append(b"PREVIEW " + (writer.value(d["preview"]) if d else b"NIL"))
        elif n in _RFC822_SECTIONS:
            assert msg is not None
            sec = c.Section((), _RFC822_SECTIONS[n])
            out.append(n.encode("ascii") + b" " + writer.value(_without_nul(msg.section(sec) or b"")))
        elif n == "BODY[]":
            assert msg is not None and a.section is not None
            data = msg.section(a.section)
            # RFC 9051 6.4.5: a part that does not exist reads as an empty string
            data = _without_nul(f.apply_partial(data or b"", a.partial))
            out.append(b"%s {%d}\r\n%s" % (f.response_name(a).encode("ascii"), len(data), data))
        elif n == "BINARY[]":
            assert msg is not None and a.section is not None
            data = msg.binary(a.section.part)
            data = f.apply_partial(data or b"", a.partial)
            out.append(f.response_name(a).encode("ascii") + b" "
                       + writer.value(Literal8(data) if b"\0" in data else data))
        elif n == "BINARY.SIZE[]":
            assert msg is not None and a.section is not None
            out.append(b"%s %d" % (f.response_name(a).encode("ascii"), len(msg.binary(a.section.part) or b"")))
    return out
