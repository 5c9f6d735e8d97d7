"""Answering a message: reply recipients, threading fields, subjects,
quoting, and forwarding (attached or inline).

What: pure functions from a received message (a stdlib ``email`` message)
to the parts of the answer a mail user agent prefills -- the terminal client
and webmail both build their replies and forwards here, so both follow the
same rules:

- recipients (RFC 5322 3.6.3): Reply-To, when present, instead of From;
  reply-all adds the original To and Cc; the user's own addresses are never
  answered, and a reply to one's own message (from Sent) goes to that
  message's recipients;
- threading (RFC 5322 3.6.4): In-Reply-To is the parent's Message-ID;
  References the parent's References -- or its single In-Reply-To id -- and
  then the parent's Message-ID;
- subject (RFC 5322 3.6.5): the reply prefixes mailers write in many
  languages (Re, RE, Aw, AW, SV, Antw, ...) are removed and one ``Re: `` is
  written;
- quoting: ``> `` before each line, ``>>`` for text already quoted (RFC 3676
  4.5), the signature (RFC 3676 4.3) left out.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from email.message import EmailMessage, Message

from .address import Mailbox
from .compose import Attachment
from .dates import parse_date
from .parse import parse_message
from .reading import attachments, body_text, field_values, header_text, mailboxes, message_date

__all__ = [
    "Reply",
    "attribution",
    "base_subject",
    "build_reply",
    "for_attaching",
    "forward_attachment",
    "forward_subject",
    "forwarded_header_block",
    "inline_forward",
    "message_ids",
    "quote",
    "quoted_reply",
    "reply_recipients",
    "reply_subject",
    "reply_threading",
    "strip_signature",
]

# The reply and forward markers mail programs put before a subject, in the
# languages they are seen in: English, German, Scandinavian, Dutch, Polish,
# Italian, French, Portuguese, Turkish, Latvian, Croatian, Greek, Chinese;
# forwards: English, German, French, Spanish, Portuguese, Dutch, Scandinavian
# and Finnish, Polish.
_REPLY_WORDS = ("re", "aw", "sv", "antw", "antwort", "odp", "rif", "réf", "res", "ynt", "atb",
                "odg", "απ", "σχετ", "回复", "答复", "回覆")
_FORWARD_WORDS = ("fwd", "fw", "wg", "tr", "rv", "enc", "doorst", "vs", "vl", "pd", "转发", "轉寄")


def _prefixes(words: tuple[str, ...]) -> re.Pattern[str]:
    # A marker, an optional counter ("Re[2]:", "Re^2:", "Re(2):"), a colon
    # (also the full-width one of CJK text); repeated ("Re: AW: Re: x").
    alternatives = "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))
    # No two white-space runs touch, so a long run that ends in no colon fails in linear time.
    counter = r"(?:\[\d+\]|\^\d+|\(\d+\))\s*"
    return re.compile(rf"^\s*(?:(?:{alternatives})\s*(?:{counter})?[:：]\s*)+", re.IGNORECASE)


_REPLY_PREFIXES = _prefixes(_REPLY_WORDS)
_FORWARD_PREFIXES = _prefixes(_FORWARD_WORDS)
_ANY_PREFIXES = _prefixes(_REPLY_WORDS + _FORWARD_WORDS)
_MSG_ID = re.compile(r"<[^<>\s]+>")


# --- subjects --------------------------------------------------------------------


def reply_subject(subject: str) -> str:
    """The subject of a reply: the original's without its reply markers, after
    one ``Re: `` (RFC 5322 3.6.5), so answers never pile up "Re: AW: Re:"."""
    rest = _REPLY_PREFIXES.sub("", subject.strip())
    return f"Re: {rest}".strip()


def forward_subject(subject: str) -> str:
    """The subject of a forward: ``Fwd: `` before the original's, unless it
    already starts with a forward marker (a forward of a forward)."""
    subject = subject.strip()
    if _FORWARD_PREFIXES.match(subject):
        return subject
    return f"Fwd: {subject}".strip()


def base_subject(subject: str) -> str:
    """The subject without any leading reply or forward markers: what a
    conversation is sorted and grouped by (as RFC 5256 2.1 does for IMAP SORT)."""
    return _ANY_PREFIXES.sub("", subject.strip())


# --- recipients and threading ----------------------------------------------------


def message_ids(value: str) -> list[str]:
    """The ``<id>`` message identifiers in a field value (RFC 5322 3.6.4 msg-id)."""
    return _MSG_ID.findall(value or "")


def _ids(msg: Message, name: str) -> list[str]:
    return [i for value in field_values(msg, name) for i in message_ids(value)]


def reply_threading(original: Message) -> tuple[str | None, list[str]]:
    """In-Reply-To and References for a reply (RFC 5322 3.6.4).

    In-Reply-To is the parent's Message-ID. References is the parent's
    References followed by the parent's Message-ID; when the parent has no
    References but an In-Reply-To with a single id, that id stands in for
    them. Without a parent Message-ID there is no In-Reply-To.
    """
    parent_id = (_ids(original, "Message-ID") or [None])[0]
    refs = _ids(original, "References")
    if not refs:
        in_reply_to = _ids(original, "In-Reply-To")
        if len(in_reply_to) == 1:
            refs = in_reply_to
    if parent_id:
        refs = [r for r in refs if r != parent_id] + [parent_id]
    return parent_id, refs


def reply_recipients(original: Message, own: Collection[str], reply_all: bool) -> tuple[list[Mailbox], list[Mailbox]]:
    """(To, Cc) of a reply.

    RFC 5322 3.6.3: Reply-To, when present, replaces From as the destination;
    reply-all adds the original To and Cc. The user's ``own`` addresses and
    duplicates are left out. A reply to one's own message (e.g. from Sent)
    goes back to that message's recipients.
    """
    own_keys = {a.lower() for a in own}
    author = mailboxes(original, "Reply-To") or mailboxes(original, "From")
    seen: set[str] = set()

    def keep(boxes: list[Mailbox]) -> list[Mailbox]:
        out = []
        for m in boxes:
            key = m.addr_spec.lower()
            if key in seen or key in own_keys or m.domain is None:
                continue
            seen.add(key)
            out.append(m)
        return out

    to = keep(author)
    cc: list[Mailbox] = []
    if reply_all:
        others = keep(mailboxes(original, "To", "Cc"))
        if to:
            cc = others
        else:
            to = others
    if not to and not cc:
        to = [m for m in mailboxes(original, "To") if m.domain] or author
    return to, cc


# --- quoting ---------------------------------------------------------------------


def strip_signature(text: str) -> str:
    """The text above the signature separator "-- " (RFC 3676 4.3), if any."""
    lines = text.split("\n")
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].rstrip("\r") == "-- ":
            return "\n".join(lines[:i]).rstrip("\n") + "\n"
    return text


def quote(text: str) -> str:
    """Each line behind ``> ``; a line already quoted gets ``>`` alone, so
    levels read ``>>`` (RFC 3676 4.5); an empty line becomes ``>``."""
    lines = text.rstrip("\n").split("\n")
    return "\n".join(">" + ("" if line.startswith(">") or not line else " ") + line for line in lines) + "\n"


def attribution(original: Message, arrived: float | None = None) -> str:
    """The line above a quote: ``On <date>, <author> wrote:``; the date is
    the Date field, or for a message without one its arrival time ``arrived``
    (IMAP INTERNALDATE)."""
    who = mailboxes(original, "From")
    name = (who[0].display_name or who[0].addr_spec) if who else "someone"
    shown = message_date(original, arrived)
    date = parse_date(shown or None)
    when = date.strftime("%a, %d %b %Y %H:%M") if date else shown
    return f"On {when}, {name} wrote:" if when else f"{name} wrote:"


def quoted_reply(original: Message, arrived: float | None = None) -> str:
    """The attribution line and the original's text quoted, signature left out."""
    text, _kind = body_text(original)
    return f"{attribution(original, arrived)}\n{quote(strip_signature(text))}"


@dataclass(frozen=True)
class Reply:
    """What a reply to a message starts with."""

    to: list[Mailbox]
    cc: list[Mailbox]
    subject: str
    in_reply_to: str | None
    references: list[str]
    quoted: str  # attribution line + quoted text, to go below the answer


def build_reply(original: Message, own: Collection[str], reply_all: bool = False,
                arrived: float | None = None) -> Reply:
    """The recipients, subject, threading fields and quote of a reply to
    ``original`` by the owner of the addresses ``own``; ``arrived`` (IMAP
    INTERNALDATE) dates the quote of a message without a Date field."""
    to, cc = reply_recipients(original, own, reply_all)
    in_reply_to, references = reply_threading(original)
    return Reply(to, cc, reply_subject(header_text(original, "Subject")), in_reply_to, references,
                 quoted_reply(original, arrived))


# --- forwarding ------------------------------------------------------------------


def forwarded_header_block(original: Message, arrived: float | None = None) -> str:
    """The header lines that introduce a message forwarded inline."""
    lines = ["---------- Forwarded message ----------"]
    for name in ("From", "Date", "Subject", "To", "Cc"):
        value = message_date(original, arrived) if name == "Date" else header_text(original, name)
        if value:
            lines.append(f"{name}: {value}")
    return "\n".join(lines) + "\n\n"


def inline_forward(original: Message, note: str = "", arrived: float | None = None) -> tuple[str, list[Attachment]]:
    """Text and attachments of a forward inline: the note, the original's
    header block and text, and copies of its attachments."""
    text, _kind = body_text(original)
    body = ((note.rstrip("\n") + "\n\n" if note.strip() else "")
            + forwarded_header_block(original, arrived) + text)
    copies = [Attachment(a.filename, a.data(), a.content_type if "/" in a.content_type else None)
              for a in attachments(original)]
    return body, copies


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


def forward_attachment(raw: bytes) -> EmailMessage:
    """A stored message, ready to attach whole as message/rfc822 (RFC 2046 5.2.1)."""
    return for_attaching(parse_message(raw))
