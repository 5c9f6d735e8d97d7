"""Notifications by mail (RFC 5435 with the mailto method of RFC 5436):
whether to send one, and the message, without I/O.

``decide`` says why no notification goes out (None: send): the message
was itself sent automatically (``Auto-Submitted`` other than ``no``, RFC
5436 2.7 and RFC 3834 2), so two notifying scripts cannot feed each other.
``build_notification`` writes it: to the URI's recipients, ``From`` the
``:from`` or the user's address (RFC 5436 2.3), ``Subject`` the URI's
``subject`` field, else the ``:message``, else a summary of the message
(RFC 5436 2.6, 2.7), ``Importance`` from ``:importance`` (RFC 5436 2.4),
``Auto-Submitted: auto-notified`` (RFC 5436 2.7.1). Header fields the URI
asks for are added except those that would forge the trace or the origin.
"""

from __future__ import annotations

import time
import uuid
from email.header import Header
from email.utils import formatdate

from ..message.headers import bytes_to_text, decode_words, split_fields
from ..message.parse import split_header_body
from .actions import Notify
from .mailto import parse_mailto

# fields a mailto URI may not set in a notification (RFC 5436 2.7: the
# notification's own origin and trace are the server's)
_UNSAFE = {"from", "sender", "reply-to", "date", "message-id", "auto-submitted", "received", "return-path",
           "importance", "x-priority", "mime-version", "content-type", "content-transfer-encoding",
           "subject", "to", "bcc", "in-reply-to", "references"}
_IMPORTANCE = {"1": "high", "2": "normal", "3": "low"}


def _fields(message: bytes) -> list[tuple[str, str]]:
    header, _ = split_header_body(message)
    return [(n.lower(), bytes_to_text(v)) for n, v in split_fields(header)]


def decide(message: bytes) -> str | None:
    """Why no notification is sent for ``message``; None: send one."""
    for name, value in _fields(message):
        if name == "auto-submitted" and value.split(";")[0].strip().lower() != "no":
            return "the message was sent automatically (RFC 5436 2.7)"
    return None


def _encode(text: str, name: str) -> str:
    text = " ".join(text.split())
    return text if text.isascii() else Header(text, "utf-8", header_name=name).encode()


def build_notification(message: bytes, action: Notify, recipient: str, hostname: str,
                       now: float | None = None) -> tuple[list[str], bytes]:
    """The recipients and the notification for ``message``, sent for
    ``recipient`` (the user's address); ValueError if the URI is bad."""
    uri = parse_mailto(action.method)
    fields = _fields(message)

    def first(name: str) -> str:
        return decode_words(next((v for n, v in fields if n == name), "")).strip()

    wanted = dict(uri.headers)
    subject = wanted.get("subject") or action.message
    if not subject:
        subject = f"New mail from {first('from') or 'an unknown sender'}: {first('subject') or '(no subject)'}"
    lines = [
        f"From: {action.from_ or recipient}",
        f"To: {', '.join(uri.to)}",
        f"Subject: {_encode(subject[:400], 'Subject')}",
        f"Date: {formatdate(now if now is not None else time.time(), localtime=False)}",
        f"Message-ID: <{uuid.uuid4().hex}@{hostname}>",
        "Auto-Submitted: auto-notified",
        f"Importance: {_IMPORTANCE.get(action.importance, 'normal')}",
    ]
    for name, value in uri.headers:
        if name not in _UNSAFE and len(lines) < 32:
            lines.append(f"{name.title()}: {_encode(value[:400], name)}")
    if uri.body is not None:
        body = uri.body
    else:
        body = (f"{action.message or 'New mail'}\n\n  from:    {first('from')}\n  subject: {first('subject')}\n"
                f"  date:    {first('date')}\n")
    body = body.replace("\r\n", "\n").replace("\n", "\r\n")
    if not body.endswith("\r\n"):
        body += "\r\n"
    charset = "us-ascii" if body.isascii() else "utf-8"
    lines += ["MIME-Version: 1.0", f"Content-Type: text/plain; charset={charset}",
              "Content-Transfer-Encoding: " + ("7bit" if charset == "us-ascii" else "8bit")]
    return list(uri.to), ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")
