"""Data IMAP needs about a message, computed once at delivery.

What: ``derive(raw)`` returns a ``Derived`` holding the ENVELOPE and
BODYSTRUCTURE (RFC 9051 7.5.2), byte offsets of every MIME part in ``raw``,
the decoded header fields and text for SEARCH/SORT. ``Derived.to_json()`` is
what the store keeps; ``Derived.from_json`` restores it.

Why: DESIGN.md "Message handling": FETCH and SEARCH must not re-parse
messages. The offsets let IMAP return ``BODY[1.2]``, ``BODY[1.2.MIME]``,
``BODY[3.HEADER]`` or ``BODY[TEXT]`` as slices of the stored bytes.

How the parts are found. The stdlib (``email``) says what each header means
(Content-Type and its parameters with RFC 2231, the boundary, the
disposition, RFC 2047 words). The parts themselves are located in the raw bytes
by the RFC 2046 5.1.1 delimiter rule -- a line that is ``--boundary``,
optionally ``--`` (close), optional transport padding, then the line end; the
line break *before* it belongs to the delimiter -- the same rule (and the same
regular expression shape) the stdlib's feedparser applies, so both agree on
well-formed mail. Each multipart is scanned only inside its parent's part, so
a missing inner close-delimiter ends at the outer delimiter. A multipart
without a boundary parameter, or whose boundary never occurs, is treated as
text/plain, as the stdlib does.

Representation (maps 1:1 onto IMAP data; ``None`` is NIL, ``int`` a number,
``str`` a string, ``list`` a parenthesised list):

* envelope: ``[date, subject, from, sender, reply_to, to, cc, bcc,
  in_reply_to, message_id]``; address lists are lists of
  ``[name, adl, mailbox, host]``; a group is ``[None, None, name, None]``,
  its members, then ``[None, None, None, None]`` (RFC 9051 7.5.2). Strings are
  the raw header bytes unfolded, decoded as UTF-8 when valid (RFC 6532) and as
  latin-1 otherwise -- always valid Unicode, so storable as JSON in SQLite and
  PostgreSQL (jsonb refuses the lone surrogates ``surrogateescape`` makes).
  Encoded words are *not* decoded: IMAP sends them as written. A mailbox
  without a domain gets host ``MISSING_DOMAIN`` (a NIL host would read as a
  group marker).
* bodystructure, extensible form. Single part: ``[type, subtype, params,
  id, description, encoding, octets, (envelope, body, lines for MESSAGE/RFC822),
  (lines for TEXT), md5, disposition, language, location]``; multipart:
  ``[child, child, ..., subtype, params, disposition, language, location]``.
  params is a flat ``[NAME, value, ...]`` list or None; disposition
  ``[TYPE, params]`` or None; language a list of tags or None; md5 always None.
  Types, subtypes, parameter names and encodings are upper-cased as in the
  RFC examples; RFC 2231 parameters are decoded to text.
  Note for the serialiser: RFC 9051's grammar puts *no* space between the
  child bodies of a multipart (``1*body``) nor between the addresses of an
  address list (``1*address``); elsewhere items are space-separated.
  ``body_structure(bs)`` gives the non-extensible BODY form.
* parts: part specifier -> ``(header_start, body_start, body_end)`` offsets
  into ``raw``; ``""`` is the whole message. For a non-multipart message part
  ``1`` is its body (RFC 9051 6.4.5). messages: the same triple for the
  message itself (``""``) and for the message inside each MESSAGE/RFC822
  part, for ``HEADER``/``TEXT``. ``section_range`` applies the rules.
* octets are ``body_end - body_start``; lines count LF octets in the body.
* preview (RFC 8970 3, IMAP FETCH PREVIEW): the first text part as plain
  text (transfer encoding and charset undone, HTML reduced to its text),
  whitespace runs collapsed to one space, at most ``PREVIEW_CHARS``
  characters; ``""`` when the message has no text part.

Bounds: nesting deeper than ``MAX_DEPTH`` levels, or parts beyond
``MAX_PARTS``, are treated as opaque APPLICATION/OCTET-STREAM; at most
``MAX_HEADER_FIELDS`` header fields of ``MAX_FIELD_CHARS`` each are decoded for
search; ``body_text`` keeps the first ``MAX_BODY_TEXT`` characters.
``derive`` never raises.
"""

from __future__ import annotations

import binascii
import codecs
import html.parser
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from email.utils import collapse_rfc2231_value

from .address import Group, Mailbox, parse_address_list
from .dates import to_timestamp
from .headers import bytes_to_text, decode_words, split_fields, unfold
from .parse import header_end

__all__ = ["Derived", "body_structure", "derive", "derive_unguarded"]

MAX_DEPTH = 100
MAX_PARTS = 10_000
MAX_HEADER_FIELDS = 10_000
MAX_FIELD_CHARS = 64 * 1024
MAX_BODY_TEXT = 8 * 1024 * 1024
MISSING_DOMAIN = "MISSING_DOMAIN"
FORMAT_VERSION = 2  # raised whenever derive() gives other results: stores derive again

Offsets = tuple[int, int, int]


@dataclass
class Derived:
    """Everything FETCH/SEARCH/SORT need about one message (see module doc)."""

    envelope: list
    bodystructure: list
    parts: dict[str, Offsets]
    messages: dict[str, Offsets]
    headers: dict[str, list[str]] = field(default_factory=dict)
    date: float | None = None
    body_text: str = ""
    header_text: str = ""
    size: int = 0
    preview: str = ""  # RFC 8970 3: FETCH PREVIEW

    def to_json(self) -> dict:
        """A JSON-serialisable dict (lists, str, int, float, None only)."""
        return {
            "v": FORMAT_VERSION,
            "envelope": self.envelope,
            "bodystructure": self.bodystructure,
            "parts": {k: list(v) for k, v in self.parts.items()},
            "messages": {k: list(v) for k, v in self.messages.items()},
            "headers": self.headers,
            "date": self.date,
            "body_text": self.body_text,
            "header_text": self.header_text,
            "size": self.size,
            "preview": self.preview,
        }

    @classmethod
    def from_json(cls, d: dict) -> Derived:
        """Inverse of ``to_json``."""
        return cls(
            envelope=d["envelope"],
            bodystructure=d["bodystructure"],
            parts={k: tuple(v) for k, v in d["parts"].items()},  # type: ignore[misc]
            messages={k: tuple(v) for k, v in d["messages"].items()},  # type: ignore[misc]
            headers=d.get("headers", {}),
            date=d.get("date"),
            body_text=d.get("body_text", ""),
            header_text=d.get("header_text", ""),
            size=d.get("size", 0),
            preview=d.get("preview", ""),
        )

    def section_range(self, part: str = "", text: str = "") -> tuple[int, int] | None:
        """Byte range of an IMAP section (RFC 9051 6.4.5), or None if it does not exist.

        ``part`` is the numeric specifier ("" or "1.2"), ``text`` one of "",
        "MIME", "HEADER", "TEXT" (HEADER.FIELDS[.NOT] use the HEADER range).
        ``""``/``""`` is the whole message; ``part``/``""`` the part's body;
        MIME the part's own header (needs a part); HEADER/TEXT the header/body
        of the message itself or of the message inside a MESSAGE/RFC822 part.
        A part that does not exist gives None (IMAP answers with an empty string).
        """
        text = text.upper()
        if text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"):
            m = self.messages.get(part)
            if m is None:
                return None
            return (m[0], m[1]) if text != "TEXT" else (m[1], m[2])
        if part == "":
            if text == "":
                return (0, self.size)
            return None  # MIME needs a part number
        p = self.parts.get(part)
        if p is None:
            return None
        if text == "MIME":
            return (p[0], p[1])
        if text == "":
            return (p[1], p[2])
        return None


def body_structure(bs: list) -> list:
    """The non-extensible BODY form of a BODYSTRUCTURE (RFC 9051 7.5.2 BODY)."""
    if bs and isinstance(bs[0], list):
        n = 0
        while n < len(bs) and isinstance(bs[n], list):
            n += 1
        return [*(body_structure(c) for c in bs[:n]), bs[n]]
    if len(bs) >= 2 and bs[0] == "MESSAGE" and bs[1] in ("RFC822", "GLOBAL") and len(bs) >= 10:
        return [*bs[:7], bs[7], body_structure(bs[8]), bs[9]]
    if bs and bs[0] == "TEXT":
        return bs[:8]
    return bs[:7]


# --- helpers ---------------------------------------------------------------------


def _first(fields: list[tuple[str, bytes]], name: str) -> bytes | None:
    for n, v in fields:
        if n.lower() == name:
            return v
    return None


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    return unfold(bytes_to_text(raw)).strip()


def _address_entries(value: bytes | None) -> list | None:
    text = _text(value)
    if not text:
        return None
    out: list = []

    def add(m: Mailbox) -> None:
        adl = ",".join("@" + r for r in m.route) if m.route else None
        out.append([m.display_name, adl, m.local_part, m.domain or MISSING_DOMAIN])

    for item in parse_address_list(text, decode=False, comment_names=True):
        if isinstance(item, Group):
            # RFC 9051 7.5.2: group start [NIL NIL name NIL], members, end [NIL NIL NIL NIL]
            out.append([None, None, item.name, None])
            for m in item.mailboxes:
                add(m)
            out.append([None, None, None, None])
        else:
            add(item)
    return out or None


def _envelope(fields: list[tuple[str, bytes]]) -> list:
    from_ = _address_entries(_first(fields, "from"))
    # RFC 9051 7.5.2: absent or empty Sender / Reply-To default to From.
    sender = _address_entries(_first(fields, "sender")) or from_
    reply_to = _address_entries(_first(fields, "reply-to")) or from_
    return [
        _text(_first(fields, "date")) or None,
        _text(_first(fields, "subject")),
        from_,
        sender,
        reply_to,
        _address_entries(_first(fields, "to")),
        _address_entries(_first(fields, "cc")),
        _address_entries(_first(fields, "bcc")),
        _text(_first(fields, "in-reply-to")) or None,
        _text(_first(fields, "message-id")) or None,
    ]


class _Mime:
    """What an entity's MIME header fields say, read with the stdlib."""

    def __init__(self, fields: list[tuple[str, bytes]], default_type: str) -> None:
        m = Message()
        m.set_default_type(default_type)
        for name, value in fields:
            lname = name.lower()
            if lname.startswith("content-"):
                m[name] = unfold(bytes_to_text(value[:MAX_FIELD_CHARS]))
        self.msg = m
        self.has_type = "content-type" in m
        ctype = m.get_content_type()
        self.maintype, _, self.subtype = ctype.partition("/")
        self.boundary = _safe_param(m.get_boundary) if self.maintype == "multipart" else None
        cte = m.get("content-transfer-encoding")
        self.encoding = str(cte).strip().lower() if cte else "7bit"

    def params(self, header: str = "content-type") -> list | None:
        try:
            raw = self.msg.get_params(header=header) or []
        except Exception:
            return None
        out: list = []
        for name, value in raw[1:]:  # the first item is the value itself
            if not name:
                continue
            val = collapse_rfc2231_value(value) if isinstance(value, tuple) else value
            out += [name.upper(), str(val)]
        return out or None

    def type_params(self) -> list | None:
        if not self.has_type and self.maintype == "text":
            return ["CHARSET", "US-ASCII"]  # RFC 2045 5.2 default
        return self.params()

    def disposition(self) -> list | None:
        value = self.msg.get("content-disposition")
        if not value:
            return None
        kind = str(value).split(";", 1)[0].strip()
        if not kind:
            return None
        return [kind.upper(), self.params("content-disposition")]

    def raw(self, name: str) -> str | None:
        value = self.msg.get(name)
        return str(value).strip() if value is not None else None

    def language(self) -> list | None:
        value = self.msg.get("content-language")
        if not value:
            return None
        tags = [t.strip() for t in str(value).split(",") if t.strip()]
        return tags or None

    def charset(self) -> str:
        cs = _safe_param(self.msg.get_content_charset)
        return cs or "us-ascii"


def _safe_param(getter: Callable[[], str | None]) -> str | None:
    """A parameter through the stdlib, or None where the stdlib itself fails:
    ``email.utils.decode_params`` raises TypeError on RFC 2231 parameters that
    mix a numbered and an unnumbered section (``boundary*0=a; boundary*=b``).
    Without the guard such a message would derive as one opaque part."""
    try:
        return getter()
    except Exception:
        return None


class _TextOnly(html.parser.HTMLParser):
    """HTML to plain text for the search index: data only, no script/style."""

    _SKIP = {"script", "style", "head", "title"}
    _BREAK = {"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "td", "table"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in self._SKIP:
            self.skip += 1
        elif tag in self._BREAK:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self.skip:
            self.skip -= 1

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)


def _strip_html(text: str) -> str:
    p = _TextOnly()
    try:
        p.feed(text)
        p.close()
    except Exception:
        pass
    return "".join(p.out)


def _transfer_decode(data: bytes, encoding: str) -> bytes:
    # RFC 2045 6: undo base64 / quoted-printable; 7bit, 8bit, binary are identity.
    try:
        if encoding == "base64":
            clean = bytes(b for b in data if b in _B64) if not data.isascii() else data
            try:
                return binascii.a2b_base64(clean)
            except binascii.Error:
                clean = bytes(b for b in clean if b in _B64_CORE)
                clean = clean[: len(clean) - len(clean) % 4]
                return binascii.a2b_base64(clean)
        if encoding == "quoted-printable":
            return binascii.a2b_qp(data)
    except Exception:
        return data
    return data


_B64_CORE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_B64 = _B64_CORE | frozenset(b"=\r\n \t")


def _charset_decode(data: bytes, charset: str) -> str:
    try:
        codecs.lookup(charset)
    except (LookupError, ValueError):
        charset = "utf-8"
    try:
        return data.decode(charset, "replace")
    except Exception:
        return data.decode("utf-8", "replace")


def _scan_multipart(raw: bytes, start: int, end: int, boundary: bytes, limit: int) -> list[tuple[int, int]]:
    """Regions ``(start, end)`` of the body parts of a multipart body ``raw[start:end]``.

    RFC 2046 5.1.1: a delimiter is CRLF "--" boundary, a close delimiter adds
    "--"; either may be followed by transport padding (spaces/tabs) before the
    line end. Bare LF line ends are accepted too. Text before the first
    delimiter (preamble) and after the close delimiter (epilogue) belongs to no
    part. Without a close delimiter the last part runs to ``end``. At most
    ``limit`` parts; the last one absorbs the rest.
    """
    dash = b"--" + boundary
    n = len(dash)
    delims: list[tuple[int, int, bool]] = []  # (delimiter start, line end, is close)
    pos = start
    while pos < end:
        i = raw.find(dash, pos, end)
        if i < 0:
            break
        if i == start or raw[i - 1] == 0x0A:
            j = i + n
            close = raw.startswith(b"--", j) and j + 2 <= end
            k = j + 2 if close else j
            while k < end and raw[k] in (0x20, 0x09):
                k += 1
            eol: int | None = None
            if k >= end:
                eol = end
            elif raw[k] == 0x0A:
                eol = k + 1
            elif raw[k] == 0x0D and (k + 1 >= end or raw[k + 1] == 0x0A):
                eol = min(k + 2, end)
            if eol is not None:
                # The line break before the delimiter is part of it (RFC 2046 5.1.1).
                d_start = i
                if i > start:
                    d_start = i - 2 if i - 2 >= start and raw[i - 2] == 0x0D else i - 1
                delims.append((d_start, eol, close))
                if close or len(delims) > limit:
                    break
                pos = eol
                continue
        pos = i + 1
    regions: list[tuple[int, int]] = []
    for idx, (_d_start, eol, close) in enumerate(delims):
        if close:
            break
        if idx + 1 < len(delims) and len(regions) + 1 < limit:
            nxt = delims[idx + 1][0]
            regions.append((eol, max(eol, nxt)))
        else:
            regions.append((eol, end))
            break
    return regions


# --- the walk --------------------------------------------------------------------


class _Walker:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.parts: dict[str, Offsets] = {}
        self.messages: dict[str, Offsets] = {}
        self.parts_left = MAX_PARTS
        self.texts: list[str] = []
        self.text_len = 0
        self.preview: str | None = None

    def message(self, spec: str, start: int, end: int, depth: int) -> tuple[list, list, list]:
        """A message at ``raw[start:end]``: returns (fields, envelope, body structure)."""
        h_end, b_start = header_end(self.raw, start, end)
        fields = split_fields(self.raw[start:h_end])
        self.messages[spec] = (start, b_start, end)
        if spec == "":
            self.parts[""] = (start, b_start, end)
        env = _envelope(fields)
        bs = self.entity(spec, start, b_start, end, fields, depth, "text/plain", message_body=True)
        return fields, env, bs

    def entity(self, spec: str, h_start: int, b_start: int, b_end: int,
               fields: list[tuple[str, bytes]], depth: int, default_type: str,
               message_body: bool = False) -> list:
        """One entity (RFC 2045 2.4): its header at h_start, body b_start..b_end."""
        raw = self.raw
        mime = _Mime(fields, default_type)

        def child(i: int) -> str:
            return f"{spec}.{i}" if spec else str(i)

        if not message_body:
            self.parts[spec] = (h_start, b_start, b_end)
        self.parts_left -= 1
        opaque = depth >= MAX_DEPTH or self.parts_left <= 0

        if mime.maintype == "multipart" and mime.boundary and not opaque:
            boundary = mime.boundary.encode("utf-8", "surrogateescape")
            regions = _scan_multipart(raw, b_start, b_end, boundary, max(1, self.parts_left))
            if regions:
                children = []
                child_default = "message/rfc822" if mime.subtype == "digest" else "text/plain"
                for i, (ps, pe) in enumerate(regions, 1):
                    ch_end, ch_body = header_end(raw, ps, pe)
                    ch_fields = split_fields(raw[ps:ch_end])
                    children.append(self.entity(child(i), ps, ch_body, pe, ch_fields,
                                                depth + 1, child_default))
                # RFC 9051 7.5.2 body-type-mpart + body-ext-mpart
                return [*children, mime.subtype.upper(), mime.params(), mime.disposition(),
                        mime.language(), mime.raw("content-location")]
            # Boundary never found: fall through and present the body as text/plain.
            mime.maintype, mime.subtype = "text", "plain"
        elif mime.maintype == "multipart":
            # RFC 2046 5.1.1 requires the boundary; without one (or too deep) the
            # stdlib reads the body as text/plain, so do we.
            if opaque:
                mime.maintype, mime.subtype = "application", "octet-stream"
            else:
                mime.maintype, mime.subtype = "text", "plain"

        if message_body:
            # RFC 9051 6.4.5: a non-multipart message's body is its part 1.
            self.parts[child(1)] = (h_start, b_start, b_end)

        size = b_end - b_start
        fields_part = [mime.params() if mime.has_type else mime.type_params(), mime.raw("content-id"),
                       mime.raw("content-description"), mime.encoding.upper(), size]
        ext = [None, mime.disposition(), mime.language(), mime.raw("content-location")]
        is_message = (mime.maintype == "message" and mime.subtype in ("rfc822", "global"))
        if is_message and not opaque and mime.encoding in ("7bit", "8bit", "binary"):
            # RFC 9051 6.4.5: the encapsulated message of a MESSAGE/RFC822 part N
            # is N (N.HEADER, N.TEXT, its parts N.1 ...); when the MESSAGE/RFC822
            # entity is itself the body of a message M, that body is part M.1,
            # so the encapsulated message is numbered M.1, one level deeper.
            inner_spec = child(1) if message_body else spec
            _f, env, inner = self.message(inner_spec, b_start, b_end, depth + 1)
            lines = raw.count(b"\n", b_start, b_end)
            return ["MESSAGE", mime.subtype.upper(), *fields_part, env, inner, lines, *ext]
        if opaque and mime.maintype in ("multipart", "message"):
            return ["APPLICATION", "OCTET-STREAM", None, None, None, mime.encoding.upper(), size, *ext]
        if is_message:
            # An encoded message/rfc822 (not allowed, RFC 2046 5.2.1) is opaque.
            return ["APPLICATION", "OCTET-STREAM", None, mime.raw("content-id"),
                    mime.raw("content-description"), mime.encoding.upper(), size, *ext]
        if mime.maintype == "text":
            self._collect_text(b_start, b_end, mime)
            lines = raw.count(b"\n", b_start, b_end)
            return ["TEXT", mime.subtype.upper(), *fields_part, lines, *ext]
        return [mime.maintype.upper(), mime.subtype.upper(), *fields_part, *ext]

    def _collect_text(self, start: int, end: int, mime: _Mime) -> None:
        room = MAX_BODY_TEXT - self.text_len
        if room <= 0:
            return
        data = _transfer_decode(self.raw[start:end], mime.encoding)
        text = _charset_decode(data, mime.charset())
        if mime.subtype == "html":
            text = _strip_html(text)
        text = text.replace("\r\n", "\n").replace("\x00", "")[:room]
        if self.preview is None:
            self.preview = preview_text(text)
        self.texts.append(text)
        self.text_len += len(text)


PREVIEW_CHARS = 256
_WORD = re.compile(r"\S+")


def preview_text(text: str) -> str:
    """RFC 8970 3: a preview is plain text (HTML already stripped by the
    caller) of at most 256 characters, with runs of whitespace (line breaks
    included) collapsed to one space."""
    words: list[str] = []
    length = -1
    for m in _WORD.finditer(text):
        words.append(m.group())
        length += 1 + len(words[-1])
        if length >= PREVIEW_CHARS:
            break
    return " ".join(words)[:PREVIEW_CHARS]


def _search_headers(fields: list[tuple[str, bytes]]) -> tuple[dict[str, list[str]], str]:
    headers: dict[str, list[str]] = {}
    lines = []
    for name, value in fields[:MAX_HEADER_FIELDS]:
        text = decode_words(bytes_to_text(value[:MAX_FIELD_CHARS]))
        headers.setdefault(name.lower(), []).append(text)
        lines.append(f"{name}: {text}")
    return headers, "\n".join(lines)


def derive(raw: bytes) -> Derived:
    """Compute the derived data of a message (see the module docstring). Never raises."""
    try:
        return derive_unguarded(raw)
    except Exception:  # a bug must not stop delivery: fall back to "one opaque text part"
        return _fallback(raw)


def derive_unguarded(raw: bytes) -> Derived:
    """``derive`` without its safety net: a bug raises instead of degrading to
    the one-text-part fallback. The fuzzers (tests/fuzz) call this so that such
    bugs are found rather than hidden."""
    w = _Walker(raw)
    fields, env, bs = w.message("", 0, len(raw), 0)
    headers, header_text = _search_headers(fields)
    date_raw = _first(fields, "date")
    return Derived(
        envelope=env,
        bodystructure=bs,
        parts=w.parts,
        messages=w.messages,
        headers=headers,
        date=to_timestamp(_text(date_raw)),
        body_text="\n".join(w.texts),
        header_text=header_text,
        size=len(raw),
        preview=w.preview or "",
    )


def _fallback(raw: bytes) -> Derived:
    h_end, b_start = header_end(raw)
    size = len(raw) - b_start
    lines = raw.count(b"\n", b_start)
    return Derived(
        envelope=[None] * 10,
        bodystructure=["TEXT", "PLAIN", ["CHARSET", "US-ASCII"], None, None, "7BIT", size, lines,
                       None, None, None, None],
        parts={"1": (0, b_start, len(raw))},
        messages={"": (0, b_start, len(raw))},
        size=len(raw),
    )
