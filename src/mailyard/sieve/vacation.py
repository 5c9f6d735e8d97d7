"""Vacation replies (RFC 5230 with RFC 3834): whether to answer, and the
answer, without I/O.

``decide`` says why no reply goes out (None: reply): the null sender or a
sender that is the user, a message sent automatically (``Auto-Submitted``
other than ``no``, RFC 3834 5), a list or bulk message (``List-Id`` and the
other RFC 2369 fields, ``Precedence: bulk/list/junk``), a system sender
(RFC 5230 4.6: MAILER-DAEMON, LISTSERV, owner-*, *-request), or a message
where none of the user's addresses is among the recipients' header fields
(RFC 5230 4.5). Whether the sender already got a reply within the period
(RFC 5230 4.2 ``:days``) is the caller's record (delivery/sieve.py).

``build_reply`` writes the answer: to the envelope sender, ``Subject``
``Auto: `` plus the original's unless ``:subject`` (RFC 5230 4.4),
``In-Reply-To`` / ``References`` (RFC 5230 4.7), ``Auto-Submitted:
auto-replied`` (RFC 3834 5.1).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from email.header import Header
from email.utils import formatdate

from ..message.address import Group, parse_address_list
from ..message.headers import bytes_to_text, decode_words, split_fields
from ..message.parse import split_header_body
from .actions import Vacation

_LIST_FIELDS = {"list-id", "list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner",
                "list-archive"}
_RECIPIENT_FIELDS = {"to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc"}
_SYSTEM_LOCALPARTS = {"mailer-daemon", "listserv", "majordomo", "postmaster", "nobody"}


def _fields(message: bytes) -> list[tuple[str, str]]:
    header, _ = split_header_body(message)
    return [(n.lower(), bytes_to_text(v)) for n, v in split_fields(header)]


def _addresses(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        try:
            items = parse_address_list(v)
        except Exception:  # noqa: BLE001 - an unparsable field names nobody
            continue
        for item in items:
            for box in item.mailboxes if isinstance(item, Group) else (item,):
                out.append(box.addr_spec.lower())
    return out


def decide(message: bytes, sender: str, own: Iterable[str]) -> str | None:
    """Why no vacation reply is sent for ``message`` from envelope
    ``sender`` to a user whose addresses are ``own``; None: send one."""
    own_set = {a.lower() for a in own if a}
    if not sender:
        return "null sender (RFC 5230 4.5)"
    if sender.lower() in own_set:
        return "the sender is the user (RFC 5230 4.5)"
    local = sender.rpartition("@")[0].lower()
    if local in _SYSTEM_LOCALPARTS or local.startswith("owner-") or local.endswith("-request"):
        return "a system or list address (RFC 5230 4.6)"
    fields = _fields(message)
    for name, value in fields:
        v = value.strip().lower()
        if name == "auto-submitted" and v.split(";")[0].strip() != "no":
            return "Auto-Submitted (RFC 3834 5)"
        if name in _LIST_FIELDS:
            return f"a list message ({name}, RFC 3834 3.1.3)"
        if name == "precedence" and v in ("bulk", "list", "junk"):
            return f"Precedence: {v} (RFC 3834 3.1.3)"
        if name in ("x-auto-response-suppress",) and ("oof" in v or "all" in v):
            return "X-Auto-Response-Suppress"
    recipients = set(_addresses(v for n, v in fields if n in _RECIPIENT_FIELDS))
    if not recipients & own_set:
        return "none of the user's addresses is a recipient (RFC 5230 4.5)"
    return None


def build_reply(message: bytes, action: Vacation, sender: str, recipient: str, hostname: str,
                now: float | None = None) -> bytes:
    """The reply to ``message`` (from envelope ``sender``), sent for
    ``recipient`` (the user's address: the From unless ``:from``)."""
    fields = _fields(message)

    def first(name: str) -> str | None:
        return next((v for n, v in fields if n == name), None)

    subject = action.subject
    if subject is None:
        original = decode_words(first("subject") or "").strip()
        subject = "Auto: " + original if original else "Automated reply"
    subject = " ".join(subject.split())
    from_ = action.from_ or recipient
    msgid = first("message-id")
    lines = [
        f"From: {from_}",
        f"To: {sender}",
        f"Subject: {_encode(subject)}",
        f"Date: {formatdate(now if now is not None else time.time(), localtime=False)}",
        f"Message-ID: <{uuid.uuid4().hex}@{hostname}>",
        "Auto-Submitted: auto-replied (vacation)",
    ]
    if msgid:
        msgid = " ".join(msgid.split())
        lines.append(f"In-Reply-To: {msgid}")
        refs = " ".join((first("references") or "").split())
        lines.append(f"References: {(refs + ' ' + msgid).strip()}")
    lines.append("MIME-Version: 1.0")
    if action.mime:
        # RFC 5230 5.8: the reason is a MIME entity (its own header and body)
        entity = action.reason.replace("\r\n", "\n").replace("\n", "\r\n")
        return ("\r\n".join(lines) + "\r\n" + entity).encode("utf-8")
    body = action.reason.replace("\r\n", "\n").replace("\n", "\r\n")
    if not body.endswith("\r\n"):
        body += "\r\n"
    charset = "us-ascii" if body.isascii() else "utf-8"
    lines += [f"Content-Type: text/plain; charset={charset}", "Content-Transfer-Encoding: 8bit"
              if charset == "utf-8" else "Content-Transfer-Encoding: 7bit"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


def _encode(text: str) -> str:
    if text.isascii():
        return text
    return Header(text, "utf-8").encode()


__all__ = ["build_reply", "decide"]
