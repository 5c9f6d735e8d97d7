"""Showing and answering messages: best text part, HTML as readable text,
attachment lists, quoting, and the header rules of replies and forwards.

Parsing is the message layer's (``message.parse.parse_message``, the stdlib
``email`` package underneath); this module only decides what a reader sees.
"""

from __future__ import annotations

import html
import html.parser
import os
import re
import textwrap
from dataclasses import dataclass
from email.message import EmailMessage, Message
from pathlib import Path

from ..message.address import Mailbox, iter_mailboxes, parse_address_list
from ..message.dates import parse_date
from ..message.headers import decode_words

HEADERS_OF_INTEREST = ("Date", "From", "Reply-To", "To", "Cc", "Bcc", "Subject")


def header(msg: Message, name: str) -> str:
    """A header field's value as text (RFC 2047 words decoded), '' when absent."""
    value = msg.get(name)
    if value is None:
        return ""
    return decode_words(str(value))


def display_addresses(msg: Message, name: str) -> str:
    """An address header for a reader: decoded names, no RFC 5322 quoting."""
    boxes = addresses(msg, name)
    if not boxes:
        return header(msg, name)
    return ", ".join(f"{m.display_name} <{m.addr_spec}>" if m.display_name else m.addr_spec for m in boxes)


def addresses(msg: Message, *names: str) -> list[Mailbox]:
    out: list[Mailbox] = []
    for name in names:
        for value in msg.get_all(name) or []:
            out.extend(iter_mailboxes(parse_address_list(str(value))))
    return out


# --- HTML to text ----------------------------------------------------------------


class _HTMLText(html.parser.HTMLParser):
    """Readable text from HTML: block elements become line breaks, list items
    bullets, links "text <url>", images their alt text; script/style dropped."""

    BLOCK = {"p", "div", "section", "article", "header", "footer", "table", "tr", "ul", "ol",
             "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "hr", "form", "dl", "dt", "dd"}
    SKIP = {"script", "style", "head", "title", "template"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.pre = 0
        self.quote = 0
        self.href: list[str | None] = []

    def _newline(self, n: int = 1) -> None:
        text = "".join(self.out)
        have = len(text) - len(text.rstrip("\n")) if text.strip() else n
        self.out.append("\n" * max(0, n - have))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in self.SKIP:
            self.skip += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag == "li":
            self._newline()
            self.out.append("  * ")
        elif tag in ("td", "th"):
            self.out.append("\t")
        elif tag == "img" and a.get("alt"):
            self.out.append(f"[{a['alt']}]")
        elif tag == "a":
            self.href.append(a.get("href"))
        elif tag in self.BLOCK:
            self._newline(2 if tag in ("p", "h1", "h2", "h3", "blockquote", "table") else 1)
            if tag == "pre":
                self.pre += 1
            if tag == "blockquote":
                self.quote += 1
            if tag == "hr":
                self.out.append("-" * 40 + "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "a":
            href = self.href.pop() if self.href else None
            if href and not href.startswith(("#", "javascript:")):
                text = "".join(self.out).rstrip()
                if not text.endswith(href):
                    self.out.append(f" <{href}>")
        elif tag in self.BLOCK:
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
            if tag == "blockquote":
                self.quote = max(0, self.quote - 1)
            self._newline(2 if tag in ("p", "h1", "h2", "h3", "blockquote", "table") else 1)

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            text = "".join(self.out)
            if data.startswith(" ") and (not text or text.endswith((" ", "\n", "\t"))):
                data = data[1:]
        if self.quote:
            data = data.replace("\n", "\n> ")
            if "".join(self.out).endswith("\n") or not self.out:
                data = "> " + data
        self.out.append(data)


def html_to_text(source: str, width: int = 78) -> str:
    parser = _HTMLText()
    try:
        parser.feed(source)
        parser.close()
    except Exception:  # malformed HTML from strangers must still show something
        return html.unescape(re.sub(r"<[^>]*>", " ", source))
    lines = []
    for line in "".join(parser.out).split("\n"):
        line = line.rstrip()
        if len(line) > width and not line.startswith(">"):
            lines.extend(textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=False) or [""])
        else:
            lines.append(line)
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


# --- body and attachments --------------------------------------------------------


def _content_text(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except Exception:
        payload = part.get_payload(decode=True) or b""
        charset = part.get_content_charset() or "utf-8"
        try:
            return payload.decode(charset, "replace")
        except LookupError:
            return payload.decode("utf-8", "replace")
    if isinstance(content, bytes):
        return content.decode("utf-8", "replace")
    return str(content)


def body_text(msg: EmailMessage) -> tuple[str, str]:
    """The best text to show: (text, "plain"|"html"|"none"). text/plain is
    preferred; an HTML-only message is rendered to text."""
    try:
        part = msg.get_body(preferencelist=("plain", "html"))
    except Exception:
        part = None
    if part is None:
        if msg.get_content_maintype() == "text":
            part = msg
        else:
            return "", "none"
    text = _content_text(part)
    if part.get_content_subtype() == "html":
        return html_to_text(text), "html"
    return text.replace("\r\n", "\n"), "plain"


@dataclass
class AttachmentInfo:
    filename: str
    content_type: str
    size: int
    part: Message

    def data(self) -> bytes:
        if self.part.get_content_type() == "message/rfc822" or self.part.is_multipart():
            inner = self.part.get_payload()
            if isinstance(inner, list) and inner:
                return inner[0].as_bytes()
            return self.part.as_bytes()
        data = self.part.get_payload(decode=True) or b""
        if self.part.get_content_maintype() == "text":
            # RFC 2046 4.1.1: text travels with CRLF line breaks; saved files use the local LF.
            data = data.replace(b"\r\n", b"\n")
        return data


def attachments(msg: EmailMessage) -> list[AttachmentInfo]:
    """Every attachment (RFC 2183 disposition attachment, or a named non-body part,
    or an attached message) with its decoded size."""
    out: list[AttachmentInfo] = []
    try:
        parts = list(msg.iter_attachments())
    except Exception:
        parts = []
    for part in parts:
        info = AttachmentInfo("", part.get_content_type(), 0, part)
        name = part.get_filename()
        if not name and part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            subject = header(inner[0], "Subject") if isinstance(inner, list) and inner else ""
            name = (subject or "message") + ".eml"
        info.filename = decode_words(name) if name else f"part-{len(out) + 1}"
        try:
            info.size = len(info.data())
        except Exception:
            info.size = 0
        out.append(info)
    return out


def safe_filename(name: str, directory: Path) -> Path:
    """A path in ``directory`` for an attachment name from a stranger: no path
    separators, no leading dots, no controls, at most 200 octets (file systems
    allow 255), never an existing file or symlink (a number is added)."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[\x00-\x1f\x7f]", "_", name).strip().lstrip(".") or "attachment"
    name = name.encode("utf-8", "surrogateescape")[:200].decode("utf-8", "ignore") or "attachment"
    path = directory / name
    stem, suffix = path.stem, path.suffix
    n = 1
    while os.path.lexists(path):
        path = directory / f"{stem}-{n}{suffix}"
        n += 1
    return path


def save_attachment(name: str, directory: Path, data: bytes) -> Path:
    """Write ``data`` under a `safe_filename` in ``directory`` and return the path.

    The file is created exclusively and a symlink is never followed
    (O_EXCL | O_NOFOLLOW), so a name that appears between the check and the
    write -- or a planted link -- cannot redirect the write outside
    ``directory``; a clash just moves on to the next free name.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = safe_filename(name, directory)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path
    raise FileExistsError(f"no free file name for {name!r} in {directory}")


def human_size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    for unit in ("KB", "MB", "GB"):
        n_f = n / 1024
        if n_f < 1024 or unit == "GB":
            return f"{n_f:.1f} {unit}" if n_f < 10 else f"{n_f:.0f} {unit}"
        n = int(n_f)
    return f"{n} B"


# --- replying and forwarding -----------------------------------------------------


def prefixed_subject(subject: str, prefix: str) -> str:
    """'Re: x' / 'Fwd: x', without piling up prefixes already there."""
    subject = subject.strip()
    pattern = r"(re|aw|sv)\s*:" if prefix == "Re:" else r"(fwd?|wg)\s*:"
    if re.match(pattern, subject, re.IGNORECASE):
        return subject
    return f"{prefix} {subject}".strip()


def strip_signature(text: str) -> str:
    """The text above the signature separator "-- " (RFC 3676 4.3), if any."""
    lines = text.split("\n")
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].rstrip("\r") == "-- ":
            return "\n".join(lines[:i]).rstrip("\n") + "\n"
    return text


def quote(text: str) -> str:
    lines = text.rstrip("\n").split("\n")
    return "\n".join(">" + ("" if line.startswith(">") or not line else " ") + line for line in lines) + "\n"


def attribution(msg: Message) -> str:
    who = addresses(msg, "From")
    name = (who[0].display_name or who[0].addr_spec) if who else "someone"
    date = parse_date(msg.get("Date"))
    when = date.strftime("%a, %d %b %Y %H:%M") if date else header(msg, "Date")
    return f"On {when}, {name} wrote:" if when else f"{name} wrote:"


def message_ids(value: str) -> list[str]:
    return re.findall(r"<[^<>\s]+>", value or "")


def reply_threading(original: Message) -> tuple[str | None, list[str]]:
    """In-Reply-To and References for a reply (RFC 5322 3.6.4): In-Reply-To is
    the parent's Message-ID; References is the parent's References (or, when it
    has none, its single In-Reply-To id) followed by the parent's Message-ID."""
    parent_id = (message_ids(str(original.get("Message-ID", ""))) or [None])[0]
    refs = message_ids(str(original.get("References", "")))
    if not refs:
        irt = message_ids(str(original.get("In-Reply-To", "")))
        if len(irt) == 1:
            refs = irt
    if parent_id:
        refs = [r for r in refs if r != parent_id] + [parent_id]
    return parent_id, refs


def reply_recipients(original: Message, own: set[str], reply_all: bool) -> tuple[list[Mailbox], list[Mailbox]]:
    """(To, Cc) of a reply. RFC 5322 3.6.3: Reply-To, when present, replaces From
    as the destination; reply-all adds the original To and Cc. The user's own
    addresses and duplicates are left out (unless the user wrote only to themself)."""
    author = addresses(original, "Reply-To") or addresses(original, "From")
    seen: set[str] = set()

    def keep(boxes: list[Mailbox]) -> list[Mailbox]:
        out = []
        for m in boxes:
            key = m.addr_spec.lower()
            if key in seen or key in own or m.domain is None:
                continue
            seen.add(key)
            out.append(m)
        return out

    to = keep(author)
    cc: list[Mailbox] = []
    if reply_all:
        others = keep(addresses(original, "To", "Cc"))
        if to:
            cc = others
        else:
            to = others
    if not to and not cc:
        # A reply to one's own message (e.g. from Sent): back to its recipients.
        to = [m for m in addresses(original, "To") if m.domain] or author
    return to, cc


def forward_header_block(original: Message) -> str:
    lines = ["---------- Forwarded message ----------"]
    for name in ("From", "Date", "Subject", "To", "Cc"):
        value = header(original, name)
        if value:
            lines.append(f"{name}: {value}")
    return "\n".join(lines) + "\n\n"


def for_attaching(msg: EmailMessage) -> EmailMessage:
    """Prepare a received message to be attached (forwarding). The composed
    message is 7-bit clean, so header fields written in raw UTF-8 (RFC 6532)
    are set again as text, to come out as UTF-8 encoded words rather than the
    stdlib's ``unknown-8bit`` ones; the order of the fields is kept."""
    items = list(msg.items())
    if all(str(v).isascii() for _k, v in items):
        return msg
    for name in {k for k, _v in items}:
        del msg[name]
    for name, value in items:
        text = str(value)
        try:
            msg[name] = text
        except Exception:  # a field the header registry cannot take back as text: keep it
            msg[name] = value
    return msg
