"""Showing a stored message in the browser: parts, bodies, attachments.

The message is parsed with the message layer (``message.parse.parse_message``,
the stdlib ``email`` package underneath); parts are numbered as IMAP numbers
them (RFC 9051 6.4.5), so ``/part/1.2`` names the same bytes as ``BODY[1.2]``.

HTML bodies are sanitised with nh3 (an allow-list: no scripts, forms, event
handlers, ``style`` elements, frames or objects) and then shown in a sandboxed
``<iframe>`` without ``allow-scripts`` whose response carries its own
Content-Security-Policy (``default-src 'none'``, no script source, and the
same sandbox). So even a
sanitiser bypass cannot run script, and remote images/CSS are blocked by the
CSP unless the user allows remote content for that message.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from urllib.parse import quote

import nh3

from ..message.address import Group, Mailbox, parse_address_list
from ..message.headers import decode_words
from ..message.parse import parse_message
from ..message.reading import (
    attachment_filename,
    field_values,
    limit_size,
    part_bytes,
    part_filename,
    part_text,
    readable_address,
    readable_addresses,
    safe_filename,
)
from ..message.reading import header_text as _header
from ..message.reply import build_reply, forward_attachment, inline_forward

ALLOWED_TAGS = {
    "a", "abbr", "acronym", "address", "area", "b", "bdi", "bdo", "big", "blockquote", "br",
    "caption", "center", "cite", "code", "col", "colgroup", "dd", "del", "details", "dfn", "div",
    "dl", "dt", "em", "figcaption", "figure", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "i", "img", "ins", "kbd", "li", "map", "mark", "ol", "p", "pre", "q", "rp", "rt", "ruby", "s",
    "samp", "small", "span", "strike", "strong", "sub", "summary", "sup", "table", "tbody", "td",
    "tfoot", "th", "thead", "time", "tr", "tt", "u", "ul", "var", "wbr",
}
ALLOWED_ATTRIBUTES = {
    "*": {"align", "valign", "dir", "lang", "title", "width", "height", "style", "bgcolor", "color"},
    "a": {"href", "name"},
    "img": {"src", "alt", "border", "hspace", "vspace"},
    "font": {"face", "size"},
    "table": {"border", "cellpadding", "cellspacing", "summary"},
    "td": {"colspan", "rowspan", "nowrap"},
    "th": {"colspan", "rowspan", "nowrap", "scope"},
    "ol": {"start", "type"},
    "ul": {"type"},
    "li": {"value"},
    "col": {"span"},
    "colgroup": {"span"},
    "area": {"alt", "coords", "href", "shape"},
    "map": {"name"},
    "q": {"cite"},
    "blockquote": {"cite"},
}
# CSS properties kept in style attributes; nothing that takes url() values.
STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style", "font-weight",
    "text-align", "text-decoration", "text-indent", "text-transform", "line-height",
    "letter-spacing", "white-space", "vertical-align", "margin", "margin-top", "margin-bottom",
    "margin-left", "margin-right", "padding", "padding-top", "padding-bottom", "padding-left",
    "padding-right", "border", "border-top", "border-bottom", "border-left", "border-right",
    "border-color", "border-style", "border-width", "border-collapse", "border-spacing",
    "border-radius", "width", "height", "max-width", "min-width", "max-height", "min-height",
    "display", "list-style-type",
}
URL_SCHEMES = {"http", "https", "mailto", "cid", "data"}
_SAFE_DATA_IMAGE = re.compile(r"^data:image/(png|gif|jpe?g|webp|bmp);", re.I)


@dataclass
class Part:
    spec: str  # IMAP part number
    part: EmailMessage
    content_type: str
    filename: str
    disposition: str | None
    content_id: str | None

    @property
    def size(self) -> int:
        payload = self.part.get_payload()
        return len(payload) if isinstance(payload, str | bytes) else 0


@dataclass
class Summary:
    """The header fields a page shows of one message (decoded, addresses as
    (name, address) pairs)."""

    subject: str
    from_: list[tuple[str, str]]
    to: list[tuple[str, str]]
    cc: list[tuple[str, str]]
    reply_to: list[tuple[str, str]]
    date: str
    message_id: str
    references: str


@dataclass
class View(Summary):
    """What the read page shows of one message, as parsed."""

    text: str | None
    html: str | None  # raw, unsanitised; sanitise with sanitize_html
    attachments: list[Part] = field(default_factory=list)
    cids: dict[str, str] = field(default_factory=dict)  # Content-ID -> part spec
    parts: dict[str, Part] = field(default_factory=dict)
    headers: list[tuple[str, str]] = field(default_factory=list)
    raw_headers: list[tuple[str, str]] = field(default_factory=list)  # as written, not decoded
    # attached messages (message/rfc822 parts) with their part numbers, shown inline
    embedded: list[tuple[str, View]] = field(default_factory=list)


def content_disposition(kind: str, filename: str) -> str:
    """RFC 6266: an ASCII ``filename`` fallback and the exact name as ``filename*``
    (RFC 8187 UTF-8 encoding)."""
    ascii_name = filename.encode("ascii", "replace").decode("ascii").replace("?", "_")
    ascii_name = re.sub(r'["\\;\x00-\x1f\x7f]', "_", ascii_name)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _addresses(value: str | None) -> list[tuple[str, str]]:
    if not value:
        return []
    out: list[tuple[str, str]] = []
    for item in parse_address_list(str(value)):
        if isinstance(item, Group):
            for m in item.mailboxes:
                out.append((m.display_name or "", m.addr_spec))
        elif isinstance(item, Mailbox):
            out.append((item.display_name or "", item.addr_spec))
    return out


def _raw_header(msg: EmailMessage, name: str) -> str:
    # raw values: address parsing is done by the message layer
    values = field_values(msg, name)
    return values[0] if values else ""


def number_parts(msg: EmailMessage) -> list[tuple[str, EmailMessage]]:
    """Leaf parts with their IMAP part numbers (message/rfc822 parts are leaves)."""
    out: list[tuple[str, EmailMessage]] = []

    def walk(part: EmailMessage, spec: str) -> None:
        if part.get_content_maintype() == "multipart" and isinstance(part.get_payload(), list):
            for i, child in enumerate(part.get_payload(), 1):
                walk(child, f"{spec}.{i}" if spec else str(i))
        else:
            out.append((spec or "1", part))

    walk(msg, "")
    return out


# Attached messages shown inline, this many levels deep (a forward of a
# forward of ...); deeper ones stay downloads.
MAX_EMBED_DEPTH = 4
_CID_REF = re.compile(r"""cid:\s*<?([^"'\s)>]+)""", re.I)


def build_view(raw: bytes | EmailMessage, prefix: str = "", depth: int = 0,
               registry: dict[str, Part] | None = None) -> View:
    """What a page shows of a message (``raw``) or of a message/rfc822
    part's message (then ``prefix`` is that part's number, so its parts are
    numbered as IMAP numbers them, RFC 9051 6.4.5: ``2.1``, ``2.2``...).
    Every part, nested ones too, is in the top view's ``parts``."""
    msg = parse_message(raw) if isinstance(raw, bytes) else raw
    headers = []
    raw_headers = [(k, str(v)) for k, v in msg._headers]
    for k, v in msg._headers:
        try:
            headers.append((k, decode_words(str(v))))
        except Exception:
            headers.append((k, str(v)))
    view = View(
        subject=_header(msg, "subject"),
        from_=_addresses(_raw_header(msg, "from")),
        to=_addresses(_raw_header(msg, "to")),
        cc=_addresses(_raw_header(msg, "cc")),
        reply_to=_addresses(_raw_header(msg, "reply-to")),
        date=_header(msg, "date"),
        message_id=_raw_header(msg, "message-id").strip(),
        references=" ".join(_raw_header(msg, "references").split()),
        text=None,
        html=None,
        headers=headers,
        raw_headers=raw_headers,
    )
    parts = view.parts if registry is None else registry
    listed: list[Part] = []
    for sub, part in number_parts(msg):
        spec = f"{prefix}.{sub}" if prefix else sub
        ctype = part.get_content_type()
        try:
            disposition = part.get_content_disposition()
        except Exception:
            disposition = None
        filename = part_filename(part)
        cid = (part.get("Content-ID") or "").strip().strip("<>") or None
        p = Part(spec, part, ctype, safe_filename(filename, f"part-{spec}"), disposition, cid)
        parts[spec] = p
        if cid:
            view.cids[cid] = spec
        is_body = disposition != "attachment" and not filename
        if is_body and ctype == "text/plain" and view.text is None:
            view.text = part_text(part)
            continue
        if is_body and ctype == "text/html" and view.html is None:
            view.html = part_text(part)
            continue
        if ctype.startswith("multipart/"):
            continue
        if cid and disposition != "attachment" and ctype.startswith("image/") and not filename:
            continue  # an inline image only the HTML shows
        if not filename:
            p.filename = safe_filename(attachment_filename(part, f"part-{spec}"))
        if ctype == "message/rfc822" and depth < MAX_EMBED_DEPTH:
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], EmailMessage):
                view.embedded.append((spec, build_view(inner[0], spec, depth + 1, parts)))
        listed.append(p)
    # an image the HTML shows by its Content-ID (RFC 2392) is not listed
    # again as an attachment, whatever its disposition or name
    shown = {c.strip("<>") for c in _CID_REF.findall(view.html or "")}
    view.attachments = [p for p in listed if not (p.content_id and p.content_id in shown
                                                  and p.content_type.startswith("image/"))]
    return view


def sanitize_html(html: str, base: str, cids: dict[str, str], allow_remote: bool) -> tuple[str, bool]:
    """Sanitise an HTML body; returns (safe HTML, whether remote content was blocked).

    ``base`` is the URL prefix of this message's parts (``/box/1/msg/2``):
    ``cid:`` images become links to the part with that Content-ID.
    """
    blocked = False

    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        nonlocal blocked
        v = value.strip()
        low = v.lower()
        if attr in ("href",):
            if low.startswith(("http://", "https://", "mailto:")) or low.startswith("#"):
                return v
            return None
        if attr == "src":
            if low.startswith("cid:"):
                spec = cids.get(v[4:].strip().strip("<>"))
                return f"{base}/part/{spec}?inline=1" if spec else None
            if _SAFE_DATA_IMAGE.match(v):
                return v
            if low.startswith(("http://", "https://", "//")):
                if allow_remote:
                    return v
                blocked = True
                return None
            return None
        if attr in ("cite",):
            return v if low.startswith(("http://", "https://")) else None
        if attr == "style":
            compact = re.sub(r"[\s\\]", "", low)
            if any(bad in compact for bad in ("expression(", "javascript:", "vbscript:", "behavior:",
                                              "-moz-binding", "@import")):
                return None  # old-browser script hooks: drop the whole style
            if "url(" in compact and not allow_remote:
                blocked = True  # the body CSP blocks it; offer to show it
        return value

    safe = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        clean_content_tags={"script", "style", "title", "head", "noscript", "template", "textarea",
                            "select", "iframe", "object", "embed", "svg", "math"},
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=attribute_filter,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        filter_style_properties=STYLE_PROPERTIES,
        strip_comments=True,
    )
    return safe, blocked


# --- bounded preparation, run in a worker process (web/worker.py) ---------------
# A message shown in webmail has at most MAX_DISPLAY_PARTS MIME parts and its
# HTML at most MAX_HTML_DEPTH levels of elements: the stdlib parser needs
# about 60 us and 1 KB per part, and nh3 time grows with the square of the
# nesting depth. Past either, the page offers the download instead.
MAX_DISPLAY_PARTS = 1000
MAX_HTML_DEPTH = 1000
# Elements that never nest (void) or whose end tag the HTML parser implies
# (a new <p>, <li>, <td>... closes the open one): not counted as depth.
_NO_DEPTH = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr", "p", "li", "dt", "dd", "tr", "td", "th", "option", "optgroup", "rp", "rt",
    "tbody", "thead", "tfoot", "colgroup", "caption", "html", "head", "body",
})
_TAG = re.compile(r"<(/?)([A-Za-z][^\s/>]*)[^>]*?(/?)>")
_DELIMITER_LINE = re.compile(rb"^--([^\r\n]*)", re.M)
_BOUNDARY_PARAM = re.compile(rb"""boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))""", re.I)


def check_parts(raw: bytes, limit: int = MAX_DISPLAY_PARTS) -> None:
    """Raise ``TooComplex`` if ``raw`` has more than ``limit`` MIME parts,
    judged from the bytes before the parser sees them: each part starts at a
    delimiter line ``--boundary`` (RFC 2046 5.1.1) of some boundary parameter
    in the message. Lines starting with ``--`` are counted first (fast); only
    when there are many are they matched against the boundaries."""
    from .worker import TooComplex

    if raw.count(b"\n--") <= limit:
        return
    boundaries = {(m.group(1) or m.group(2)).strip() for m in _BOUNDARY_PARAM.finditer(raw)}
    if len(boundaries) > limit:
        raise TooComplex(f"it has more than {limit} MIME parts")
    count = 0
    for m in _DELIMITER_LINE.finditer(raw):
        # each part follows one delimiter; the close delimiter "--b--" starts none
        if m.group(1).rstrip(b" \t") in boundaries:
            count += 1
            if count > limit:
                raise TooComplex(f"it has more than {limit} MIME parts")


def _tags(html: str) -> Iterator[re.Match[str]]:
    """``_TAG.finditer(html)`` in time linear in ``html``. A tag ends at
    the first ">" after its "<", so each "<" is matched against that span
    alone: run over the whole text, the pattern takes time cubic in a run
    of "<a" with no ">" (any sender's HTML, any user's signature)."""
    pos, gt = 0, -1
    while True:
        lt = html.find("<", pos)
        if lt < 0:
            return
        if gt <= lt:
            gt = html.find(">", lt + 1)
            if gt < 0:
                return
        m = _TAG.fullmatch(html, lt, gt + 1)
        if m is None:
            pos = lt + 1
        else:
            yield m
            pos = gt + 1


def html_depth(html: str, stop: int = MAX_HTML_DEPTH) -> int:
    """How deep elements nest in ``html`` (an upper estimate: an end tag
    closes the innermost open element whatever its name); stops counting at
    ``stop + 1``."""
    if html.count("<") <= stop:
        return min(html.count("<"), stop)
    depth = deepest = 0
    for m in _tags(html):
        if m.group(3) or m.group(2).lower() in _NO_DEPTH:
            continue
        if m.group(1):
            depth = max(0, depth - 1)
        else:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop:
                    break
    return deepest


def checked_html(html: str) -> str:
    """``html`` if it is shallow enough to sanitise, else ``TooComplex``."""
    from .worker import TooComplex

    if html_depth(html) > MAX_HTML_DEPTH:
        raise TooComplex(f"its HTML nests more than {MAX_HTML_DEPTH} levels deep")
    return html


# Attachments previewed in the page: images as <img> (the types the part
# route serves inline), PDF in a sandboxed frame.
PREVIEW_IMAGES = frozenset({"image/png", "image/gif", "image/jpeg", "image/webp", "image/bmp"})


@dataclass
class AttachmentInfo:
    spec: str
    filename: str
    content_type: str
    size: int
    within: str = ""  # the subject of the attached message it belongs to ("": the message itself)

    @property
    def preview(self) -> str:
        """"image", "pdf" or "": how the read page previews it."""
        if self.content_type in PREVIEW_IMAGES:
            return "image"
        return "pdf" if self.content_type == "application/pdf" else ""


def _attachment_infos(view: View, within: str = "") -> list[AttachmentInfo]:
    return [AttachmentInfo(p.spec, p.filename, p.content_type, len(part_bytes(p.part)), within)
            for p in view.attachments]


def _embedded_infos(view: View) -> list[AttachmentInfo]:
    """The attachments of the attached messages, at every depth."""
    out: list[AttachmentInfo] = []
    for _spec, inner in view.embedded:
        out += _attachment_infos(inner, inner.subject or "(no subject)")
        out += _embedded_infos(inner)
    return out


def _body_html(view: View, base: str, allow_remote: bool) -> tuple[str, bool]:
    """The body of ``view`` for the frame (sanitised HTML, or the text
    escaped), followed by each attached message: its header block and body,
    recursively."""
    import html as _html

    if view.html is not None:
        body, blocked = sanitize_html(checked_html(view.html), base, view.cids, allow_remote)
    else:
        body, blocked = f"<pre>{_html.escape(view.text or '')}</pre>", False
    for spec, inner in view.embedded:
        rows = []
        for label, value in (("From", draft_addresses(inner.from_)), ("To", draft_addresses(inner.to)),
                             ("Cc", draft_addresses(inner.cc)), ("Date", inner.date),
                             ("Subject", inner.subject)):
            if value:
                rows.append(f"<tr><th style=\"text-align:left;padding-right:1em\">{label}</th>"
                            f"<td>{_html.escape(value)}</td></tr>")
        inner_body, inner_blocked = _body_html(inner, base, allow_remote)
        blocked = blocked or inner_blocked
        body += (f'<section class="forwarded" id="fwd-{_html.escape(spec)}" style="border-left:3px solid #999;'
                 'margin:1em 0;padding:0 0 0 .8em"><p style="font-weight:bold">Attached message</p>'
                 f'<table class="fwd-headers">{"".join(rows)}</table>{inner_body}</section>')
    return body, blocked


@dataclass
class Shown(Summary):
    """What a page needs of one message, prepared in a worker (plain data,
    picklable); templates take it or a ``View``."""

    headers: list[tuple[str, str]]
    attachments: list[AttachmentInfo]
    text: str | None
    has_html: bool
    body: str | None = None  # sanitised HTML (or escaped text) for the body frame
    blocked: bool = False  # remote content was left out of ``body``
    bcc: list[tuple[str, str]] = field(default_factory=list)
    in_reply_to: str = ""
    references_raw: str = ""
    # attachments of attached messages (shown inline in the body)
    forwarded: list[AttachmentInfo] = field(default_factory=list)


def show(raw: bytes, base: str, allow_remote: bool, body: bool = True) -> Shown:
    """Parse ``raw`` for display within the complexity limits (``TooComplex``
    past them). ``body``: sanitise the body for the frame."""

    check_parts(raw)
    view = build_view(raw)
    if len(view.parts) > MAX_DISPLAY_PARTS:
        from .worker import TooComplex

        raise TooComplex(f"it has more than {MAX_DISPLAY_PARTS} MIME parts")
    msg_bcc = ""
    in_reply_to = references_raw = ""
    out = Shown(
        subject=view.subject, from_=view.from_, to=view.to, cc=view.cc, reply_to=view.reply_to,
        date=view.date, message_id=view.message_id, references=view.references, headers=view.headers,
        attachments=_attachment_infos(view), forwarded=_embedded_infos(view),
        text=view.text, has_html=view.html is not None,
    )
    for k, v in view.raw_headers:
        low = k.lower()
        if low == "bcc" and not msg_bcc:
            msg_bcc = v
        elif low == "in-reply-to" and not in_reply_to:
            in_reply_to = v.strip()
        elif low == "references" and not references_raw:
            references_raw = " ".join(v.split())
    out.bcc = _addresses(msg_bcc)
    out.in_reply_to = in_reply_to
    out.references_raw = references_raw
    if body:
        out.body, out.blocked = _body_html(view, base, allow_remote)
    return out


@dataclass
class ReplyDraft:
    """The compose form of a reply (plain data, picklable): addresses as
    people type them, the threading fields and the quoted original."""

    to: str
    cc: str
    subject: str
    in_reply_to: str
    references: str
    quoted: str


def reply_draft(raw: bytes, own: frozenset[str], reply_all: bool, arrived: float | None = None) -> ReplyDraft:
    """A reply to ``raw`` by the owner of ``own`` (message/reply.py, the
    reading core the CLI client uses too), within the complexity limits;
    ``arrived`` (INTERNALDATE) dates the quote of a message without Date."""
    check_parts(raw)
    reply = build_reply(parse_message(raw), own, reply_all, arrived)
    return ReplyDraft(readable_addresses(reply.to), readable_addresses(reply.cc), reply.subject,
                      reply.in_reply_to or "", " ".join(reply.references), reply.quoted)


def forward_text(raw: bytes, arrived: float | None = None) -> str:
    """The body of a forward inline: the original's header block and text
    (message/reply.py, as the terminal client writes it); no words of ours."""
    check_parts(raw)
    text, _copies = inline_forward(parse_message(raw), "", arrived)
    return text


def draft_addresses(items: list[tuple[str, str]]) -> str:
    """(name, address) pairs as an editable address field."""
    return ", ".join(readable_address(n, a) for n, a in items)


def part_content(raw: bytes, spec: str) -> tuple[bytes, str, str, str | None] | None:
    """The decoded bytes, content type, file name and charset of part ``spec``."""
    check_parts(raw)
    view = build_view(raw)
    part = view.parts.get(spec)
    if part is None:
        return None
    return part_bytes(part.part), part.content_type, part.filename, part.part.get_content_charset()


def outgoing(
    sender: tuple[str | None, str], to: list[tuple[str, str]], cc: list[tuple[str, str]], bcc: list[tuple[str, str]],
    subject: str, text: str, uploads: list[tuple[str, bytes, str | None]],
    draft_raw: bytes | None, keep: list[str], forward_raw: bytes | None,
    in_reply_to: str | None, references: list[str], limit: int, too_large: str,
    max_message_size: int = 0, forward_inline: bool = False, signature: tuple[str, str] | None = None,
    draft_forward_parts: int = 0,
) -> tuple[bytes, bytes, int] | str:
    """The message a compose form describes (``sender``: display name or
    None, address), as (bytes for the Sent folder,
    bytes for the wire without Bcc, how many of its attachments, the last
    ones, carry the forwarded original); or the reason it cannot be built,
    for the user. ``uploads`` are the new attachments (name, data, type or
    None to guess); ``keep`` the part numbers of ``draft_raw`` (the draft
    being resumed) to carry over, of which its last ``draft_forward_parts``
    attachments came from the forwarded original; ``forward_raw`` a message
    to attach whole (RFC 2046 5.2.1), or with ``forward_inline`` only its
    attachments (its text is in ``text`` already): given, it replaces what
    the draft carried of it (a forward switched between attached and
    inline), else the draft's parts of it stay, last. The attachments
    together may have ``limit`` bytes
    (``too_large`` is the refusal; ``{size}`` in it becomes their size); the
    whole message ``max_message_size`` (0: no check). ``signature`` (plain,
    HTML) of an identity with an HTML signature makes the text a
    multipart/alternative with the signature under it (``signature_html``)."""
    from ..message.compose import Attachment, compose, signed_bodies, to_bytes

    html: str | None = None
    if signature is not None:
        text, html = signed_bodies(text, signature[0], signature_html(signature[1]))

    attachments: list = [Attachment(name, data, ctype) for name, data, ctype in uploads]
    total = sum(len(data) for _, data, _ in uploads)
    forwarded: list = []  # what carries the original: after the other attachments
    if draft_raw is not None:
        check_parts(draft_raw)
        listed = build_view(draft_raw).attachments
        first_forwarded = len(listed) - min(max(draft_forward_parts, 0), len(listed))
        for i, p in enumerate(listed):
            if p.spec not in keep:
                continue
            if i >= first_forwarded and forward_raw is not None:
                continue  # the original is carried again, as the form now says
            into = forwarded if i >= first_forwarded else attachments
            if p.content_type == "message/rfc822":
                payload = p.part.get_payload()
                into.append(payload[0] if isinstance(payload, list) else p.part)
            else:
                data = part_bytes(p.part)
                total += len(data)
                into.append(Attachment(p.filename, data, p.content_type))
    if forward_raw is not None and forward_inline:
        check_parts(forward_raw)
        _text, copies = inline_forward(parse_message(forward_raw))
        total += sum(len(c.data) for c in copies)
        forwarded.extend(copies)
    elif forward_raw is not None:
        check_parts(forward_raw)
        total += len(forward_raw)
        forwarded.append(forward_attachment(forward_raw))
    if total > limit:
        return too_large.replace("{size}", limit_size(total))
    try:
        msg = compose(
            sender, to, cc=cc, bcc=bcc, subject=subject, text=text, html=html, attachments=attachments + forwarded,
            in_reply_to=in_reply_to, references=references,
            extra_headers=[("User-Agent", "mailyard webmail")],
        )
    except ValueError as exc:
        return str(exc)
    full, wire = to_bytes(msg), to_bytes(msg, strip_bcc=True)
    if max_message_size and len(wire) > max_message_size:
        return (f"The message is {limit_size(len(wire))}; the server accepts at most "
                f"{limit_size(max_message_size)}.")
    return full, wire, len(forwarded)


@functools.lru_cache(maxsize=256)
def signature_html(source: str) -> str:
    """A user's HTML signature as it may go out and be shown: through the
    sanitiser every message body passes (no scripts, event handlers, forms
    or styles that run code), with no base for ``cid:`` parts (dropped) and
    remote images dropped (their URL would tell the sender's mail was read).
    Kept per source text: the compose page shows every identity's signature
    on each view, and sanitising runs on the event loop."""
    if not source.strip():
        return ""
    safe, _blocked = sanitize_html(checked_html(source), "", {}, False)
    return safe


# Room in a message for its header and text beside the attachments.
ATTACHMENT_HEADROOM = 64 * 1024


def attachment_limit(max_message_size: int) -> int:
    """The attachment bytes a message of ``max_message_size`` can carry:
    base64 (RFC 2045 6.8) turns every 57 octets into a 76-character line
    plus CRLF, 78 octets, so attachments grow by more than a third."""
    return max(0, (max_message_size - ATTACHMENT_HEADROOM) * 57 // 78)
