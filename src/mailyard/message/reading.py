"""Reading a message: header text, addresses, the body as text, HTML as
readable text, attachment names and bytes, human sizes.

What: pure functions over stdlib ``email`` message objects (as
``parse.parse_message`` returns them), shared by every mail reader in the
project -- the terminal client and webmail both show and quote mail through
these, so a message reads the same in both.

Why here: deciding what text a message carries is RFC 5322 / MIME work
(RFC 2045-2047, RFC 2183, RFC 2231), and it runs on mail from strangers: every
function is tolerant (a broken part gives the best text it can, never an
exception) and linear in the size of its input.
"""

from __future__ import annotations

import codecs
import html
import html.parser
import re
import textwrap
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message

from .address import Mailbox, iter_mailboxes, parse_address_list
from .dates import format_date
from .headers import bytes_to_text, decode_words

__all__ = [
    "AttachmentInfo",
    "attachment_filename",
    "attachments",
    "body_text",
    "field_values",
    "header_text",
    "html_to_text",
    "human_size",
    "limit_size",
    "mailboxes",
    "message_date",
    "part_bytes",
    "part_filename",
    "part_label",
    "part_text",
    "readable_address",
    "readable_addresses",
    "safe_filename",
]


# --- header fields ---------------------------------------------------------------


def field_values(msg: Message, name: str) -> list[str]:
    """Every value of the field ``name`` as written (folded, encoded words
    kept), as text.

    The raw value is used rather than the stdlib header object: the header
    registry parses address fields without a size bound, while
    ``address.parse_address_list`` bounds its input. Raw 8-bit octets (kept by
    the parser as surrogates) are read as UTF-8 (RFC 6532) or else Latin-1.
    """
    out: list[str] = []
    wanted = name.lower()
    try:
        items = msg.raw_items()
    except Exception:
        return out
    for key, value in items:
        if key.lower() != wanted:
            continue
        text = str(value)
        if not text.isascii():
            text = bytes_to_text(text.encode("utf-8", "surrogateescape"))
        out.append(text)
    return out


def header_text(msg: Message, name: str) -> str:
    """A header field's value as text (unfolded, RFC 2047 words decoded); '' when absent."""
    values = field_values(msg, name)
    return decode_words(values[0]) if values else ""


def message_date(msg: Message, arrived: float | None = None) -> str:
    """The Date field as text; for a message without one (RFC 5322 3.6 makes
    it required, yet such mail arrives), the arrival time ``arrived`` (IMAP
    INTERNALDATE, seconds since the epoch) as an RFC 5322 date in local time,
    as Thunderbird and Gmail show it. '' when neither is known."""
    text = header_text(msg, "Date").strip()
    if text or arrived is None:
        return text
    return format_date(arrived)


def mailboxes(msg: Message, *names: str) -> list[Mailbox]:
    """The mailboxes of the address fields ``names`` (RFC 5322 3.4), in order,
    groups flattened, display names decoded."""
    out: list[Mailbox] = []
    for name in names:
        for value in field_values(msg, name):
            out.extend(iter_mailboxes(parse_address_list(value)))
    return out


# Characters that end or split a display name when an address list is read
# back (RFC 5322 3.2.3 specials, without ".": obs-phrase allows it, 4.1).
_NAME_SPECIALS = re.compile(r'[,;:<>@"()\[\]\\]')
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")


def readable_address(display_name: str | None, addr_spec: str) -> str:
    """One address as people read and type it: ``Name <addr>`` with the name
    as text (no RFC 2047 encoding), quoted only where reading the list back
    needs it (a comma, an @, ...); ``addr`` alone without a name."""
    name = _CONTROLS.sub(" ", display_name or "").strip()
    if not name:
        return addr_spec
    if _NAME_SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{addr_spec}>"


def readable_addresses(boxes: Iterable[Mailbox]) -> str:
    """Mailboxes as a readable, editable list (``readable_address``, comma separated)."""
    return ", ".join(readable_address(m.display_name, m.addr_spec) for m in boxes)


# --- HTML to text ----------------------------------------------------------------


class _HTMLText(html.parser.HTMLParser):
    """Readable text from HTML: block elements become line breaks, list items
    bullets, links "text <url>", images their alt text; script/style dropped.

    The state of the text written so far (trailing line breaks, last
    character) is kept as it is written, never recomputed from the whole
    output, so the time is linear in the input however many tags it has.
    """

    BLOCK = {"p", "div", "section", "article", "header", "footer", "table", "tr", "ul", "ol",
             "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "hr", "form", "dl", "dt", "dd"}
    SKIP = {"script", "style", "head", "title", "template"}
    PARAGRAPH = {"p", "h1", "h2", "h3", "blockquote", "table"}
    # Links nested deeper than this are shown without their URL; it bounds the
    # text each closing </a> looks back over.
    MAX_LINK_DEPTH = 32

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.pre = 0
        self.quote = 0
        self.links: list[tuple[str | None, int]] = []  # (href, where its text starts in out)
        self.has_text = False
        self.trailing_newlines = 0
        self.last = ""

    def _write(self, text: str) -> None:
        if not text:
            return
        self.out.append(text)
        body = text.rstrip("\n")
        self.trailing_newlines = len(text) - len(body) if body else self.trailing_newlines + len(text)
        self.last = text[-1]
        if not self.has_text and not text.isspace():
            self.has_text = True

    def _newline(self, n: int = 1) -> None:
        have = self.trailing_newlines if self.has_text else n
        self._write("\n" * max(0, n - have))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in self.SKIP:
            self.skip += 1
        elif tag == "br":
            self._write("\n")
        elif tag == "li":
            self._newline()
            self._write("  * ")
        elif tag in ("td", "th"):
            self._write("\t")
        elif tag == "img" and a.get("alt"):
            self._write(f"[{a['alt']}]")
        elif tag == "a":
            href = a.get("href") if len(self.links) < self.MAX_LINK_DEPTH else None
            self.links.append((href, len(self.out)))
        elif tag in self.BLOCK:
            self._newline(2 if tag in self.PARAGRAPH else 1)
            if tag == "pre":
                self.pre += 1
            if tag == "blockquote":
                self.quote += 1
            if tag == "hr":
                self._write("-" * 40 + "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "a":
            href, start = self.links.pop() if self.links else (None, 0)
            if href and not href.startswith(("#", "javascript:")):
                if not "".join(self.out[start:]).rstrip().endswith(href):
                    self._write(f" <{href}>")
        elif tag in self.BLOCK:
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
            if tag == "blockquote":
                self.quote = max(0, self.quote - 1)
            self._newline(2 if tag in self.PARAGRAPH else 1)

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if data.startswith(" ") and (not self.out or self.last in (" ", "\n", "\t")):
                data = data[1:]
        if self.quote:
            data = data.replace("\n", "\n> ")
            if not self.out or self.last == "\n":
                data = "> " + data
        self._write(data)


# A "<" that no ">" closes before the next "<" (or the end) cannot open a
# tag: it is text. Escaping it first matters for time, not only for looks:
# the stdlib parser scans to the end of the input for each such "<" (a tag
# name may contain "<"), which is quadratic on input like "<a<a<a...".
_STRAY_LT = re.compile(r"<(?=[^<>]*(?:<|\Z))")


def _without_comments(source: str) -> str:
    """``source`` without its comments, in one forward pass.

    A comment ends at the first ``-->``; one that never ends runs to the end
    of the input (HTML "eof-in-comment"). Removed here rather than by the
    stdlib parser, which searches again from each unclosed ``<!--``.
    """
    out: list[str] = []
    pos = 0
    while True:
        start = source.find("<!--", pos)
        if start < 0:
            out.append(source[pos:])
            return "".join(out)
        out.append(source[pos:start])
        end = source.find("-->", start + 4)
        if end < 0:
            return "".join(out)
        pos = end + 3


def html_to_text(source: str, width: int = 78) -> str:
    """HTML as plain text for reading and quoting (``_HTMLText``), long lines
    wrapped at ``width``; at most one empty line in a row."""
    parser = _HTMLText()
    try:
        parser.feed(_STRAY_LT.sub("&lt;", _without_comments(source)))
        parser.close()
    except Exception:  # malformed HTML from strangers must still show something
        # "<[^<>]*>": a tag never spans another "<", so the scan stays linear.
        return html.unescape(re.sub(r"<[^<>]*>", " ", source))
    lines = []
    for line in "".join(parser.out).split("\n"):
        line = line.rstrip()
        if len(line) > width and not line.startswith(">"):
            lines.extend(textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=False) or [""])
        else:
            lines.append(line)
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


# --- body text -------------------------------------------------------------------

# Codecs Python knows that are not charsets of mail: punycode and idna decode
# in quadratic time, the escape codecs turn text into other text.
_NOT_CHARSETS = {"punycode", "idna", "unicode_escape", "raw_unicode_escape", "raw-unicode-escape",
                 "unicode-escape"}


def _codec(charset: str | None) -> str | None:
    if not charset:
        return None
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError):
        return None
    if info.name in _NOT_CHARSETS or not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def part_text(part: Message) -> str:
    """The text of a text/* part, transfer encoding undone, charset applied.

    Charset fallback (RFC 2046 4.1.2 makes US-ASCII the default): an unknown
    or unusable charset, or none at all, reads the octets as UTF-8 when they
    are valid UTF-8 and as Windows-1252 (a superset of Latin-1, the most
    common undeclared charset) otherwise; invalid octets in a declared
    charset become U+FFFD rather than an error.
    """
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    codec = _codec(part.get_content_charset())
    if codec is not None and codec not in ("ascii", "us-ascii"):
        try:
            return payload.decode(codec, "replace")
        except Exception:  # a codec that fails on its own replacement path
            pass
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("cp1252", "replace")


def body_text(msg: Message) -> tuple[str, str]:
    """The best text to show or quote: (text, "plain"|"html"|"none").

    text/plain is preferred (RFC 2046 5.1.4: of alternatives, the plainest
    serves a text reader); an HTML-only message is rendered to text. Line
    ends are LF.
    """
    try:
        part = msg.get_body(preferencelist=("plain", "html"))  # type: ignore[attr-defined]
    except Exception:
        part = None
    if part is None:
        if msg.get_content_maintype() == "text":
            part = msg
        else:
            return "", "none"
    text = part_text(part)
    if part.get_content_subtype() == "html":
        return html_to_text(text), "html"
    return text.replace("\r\n", "\n"), "plain"


# --- attachments -----------------------------------------------------------------


def part_bytes(part: Message) -> bytes:
    """The content of a part as octets: transfer encoding undone; for an
    attached message (message/rfc822, RFC 2046 5.2.1) the message itself."""
    if part.get_content_type() == "message/rfc822" or part.get_content_maintype() == "multipart":
        payload = part.get_payload()
        if isinstance(payload, list) and payload:
            try:
                return payload[0].as_bytes()
            except Exception:
                return str(payload[0]).encode("utf-8", "surrogateescape")
        return str(payload).encode("utf-8", "surrogateescape")
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    return data if isinstance(data, bytes) else b""


def part_filename(part: Message) -> str | None:
    """The file name a part declares, decoded; None when it has none.

    RFC 2183 2.3 ``filename`` of Content-Disposition, else the older ``name``
    of Content-Type; RFC 2231 continuations and charsets are undone by the
    stdlib, and RFC 2047 encoded words (not allowed in parameters by RFC 2047
    5, but what many mailers send) are decoded too.
    """
    try:
        name = part.get_filename()
    except Exception:
        return None
    if not name:
        return None
    name = str(name)
    if not name.isascii():
        name = bytes_to_text(name.encode("utf-8", "surrogateescape"))
    return decode_words(name) if "=?" in name else name


# Parts of reports that carry no file name, named for people with the usual
# extension: delivery status notifications (RFC 3464 2.1, RFC 6533 3 for the
# internationalised ones; the returned header is RFC 6522's
# text/rfc822-headers), disposition notifications (RFC 8098 3), abuse
# feedback (RFC 5965 3), and calendar data (RFC 5545 3.1).
PART_LABELS = {
    "message/delivery-status": "Delivery report.txt",
    "message/global-delivery-status": "Delivery report.txt",
    "text/rfc822-headers": "Returned headers.txt",
    "message/global-headers": "Returned headers.txt",
    "message/disposition-notification": "Read receipt.txt",
    "message/global-disposition-notification": "Read receipt.txt",
    "message/feedback-report": "Feedback report.txt",
    "text/calendar": "Invitation.ics",
    "message/global": "message.eml",
}


def part_label(content_type: str) -> str | None:
    """A readable name for a part of ``content_type`` that has none of its
    own (``Delivery report.txt`` for message/delivery-status), else None."""
    return PART_LABELS.get(content_type.lower())


def attachment_filename(part: Message, fallback: str) -> str:
    """The name to show and save a part under: its declared name; for an
    attached message without one, its Subject with ``.eml``; for a report
    part, what it is (``part_label``); else ``fallback``.
    Not made safe for a file system: see ``safe_filename``."""
    name = part_filename(part)
    if name:
        return name
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        subject = header_text(inner[0], "Subject") if isinstance(inner, list) and inner else ""
        return (subject[:150] or "message") + ".eml"
    return part_label(part.get_content_type()) or fallback


def safe_filename(name: str | None, fallback: str = "attachment") -> str:
    """A file name from a stranger made fit for a file system, a download and
    a terminal: no directory part (``/`` or ``\\``), no control or format
    characters (Unicode category C, which includes the bidirectional
    overrides that disguise an extension), no leading or trailing dots or
    spaces, at most 200 octets of UTF-8 (file systems allow 255)."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    name = name.strip(" .")
    name = name.encode("utf-8")[:200].decode("utf-8", "ignore").rstrip(" .")
    return name or fallback


@dataclass
class AttachmentInfo:
    """One attachment of a message as a file: its name, type, size and part."""

    filename: str
    content_type: str
    size: int
    part: Message

    def data(self) -> bytes:
        """The attachment as a file's content. RFC 2046 4.1.1: text travels
        with CRLF line breaks; as a file it takes the local LF."""
        data = part_bytes(self.part)
        if self.part.get_content_maintype() == "text":
            data = data.replace(b"\r\n", b"\n")
        return data


def attachments(msg: Message) -> list[AttachmentInfo]:
    """Every attachment (RFC 2183 disposition attachment, a named non-body
    part, or an attached message) with its name and decoded size."""
    out: list[AttachmentInfo] = []
    try:
        parts = list(msg.iter_attachments())  # type: ignore[attr-defined]
    except Exception:
        parts = []
    for part in parts:
        info = AttachmentInfo(attachment_filename(part, f"part-{len(out) + 1}"), part.get_content_type(), 0, part)
        info.size = len(info.data())
        out.append(info)
    return out


def limit_size(n: int) -> str:
    """A size in a limit message, in MB of 1024 * 1024 octets with one
    decimal dropped when it is 0: ``43.1 MB``, ``25 MB`` (or KB below 1 MB)."""
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if n >= scale:
            text = f"{n / scale:.1f}".removesuffix(".0")
            return f"{text} {unit}"
    return f"{n} bytes"


def human_size(n: int) -> str:
    """A size for people: ``512 B``, ``1.5 KB``, ``15 KB``, ``2.3 MB`` (units of 1024)."""
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        size /= 1024
        if size < 1024 or unit == "TB":
            return f"{size:.1f} {unit}" if size < 10 else f"{size:.0f} {unit}"
    return f"{n} B"
