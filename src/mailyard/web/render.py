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

import re
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
    part_filename,
    part_text,
    safe_filename,
)
from ..message.reading import header_text as _header
from ..message.reading import part_bytes as part_bytes  # the web's name for it (app.py)

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
class View:
    """What the read page shows of one message."""

    subject: str
    from_: list[tuple[str, str]]
    to: list[tuple[str, str]]
    cc: list[tuple[str, str]]
    reply_to: list[tuple[str, str]]
    date: str
    message_id: str
    references: str
    text: str | None
    html: str | None  # raw, unsanitised; sanitise with sanitize_html
    attachments: list[Part] = field(default_factory=list)
    cids: dict[str, str] = field(default_factory=dict)  # Content-ID -> part spec
    parts: dict[str, Part] = field(default_factory=dict)
    headers: list[tuple[str, str]] = field(default_factory=list)


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


def build_view(raw: bytes) -> View:
    msg = parse_message(raw)
    headers = []
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
    )
    for spec, part in number_parts(msg):
        ctype = part.get_content_type()
        try:
            disposition = part.get_content_disposition()
        except Exception:
            disposition = None
        filename = part_filename(part)
        cid = (part.get("Content-ID") or "").strip().strip("<>") or None
        p = Part(spec, part, ctype, safe_filename(filename, f"part-{spec}"), disposition, cid)
        view.parts[spec] = p
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
        if ctype == "message/rfc822" and not filename:
            p.filename = safe_filename(attachment_filename(part, f"part-{spec}"))
        view.attachments.append(p)
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

