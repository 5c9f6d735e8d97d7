"""Building new messages: for the mail client and for the server's own reports.

What: ``compose(...)`` returns an ``email.message.EmailMessage`` with the
structure its content needs (text/plain; multipart/alternative for text + HTML;
multipart/mixed, or another multipart such as multipart/report, around
attachments); ``to_bytes(msg)`` serialises it for SMTP.

Why the stdlib does the MIME work: ``EmailMessage.set_content`` /
``add_alternative`` / ``add_attachment`` already choose the transfer encoding
sensibly (7bit when it can, else quoted-printable or base64, whichever is
shorter for the first lines) and RFC 2047-encode non-ASCII header text. We set
``cte_type="7bit"`` so a composed message never needs 8BITMIME to be relayed
(RFC 6152), and we refuse CR/LF in every value a caller passes, because a
value carrying a line break could inject header fields (the stdlib would
otherwise raise late or, in older versions, emit them).
"""

from __future__ import annotations

import datetime as _dt
import email.policy
import email.utils
import html as _html
import mimetypes
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.headerregistry import Group as HGroup
from email.message import EmailMessage, Message, MIMEPart

from . import address as _address
from .dates import format_date
from .headers import SafeFoldPolicy, check_header_name, check_header_value
from .msgid import make_msgid
from .parse import split_header_body

__all__ = ["Attachment", "compose", "delivery_status_part", "signature_text", "signed_bodies", "text_to_html",
           "to_bytes", "unsigned", "without_bcc"]

# Composition policy: 7-bit transfer encodings for bodies, RFC 2047 for headers.
# SafeFoldPolicy (= email.policy.SMTP otherwise): re-folding a forwarded
# message's header can never split it into two fields (headers.py).
_SMTP = SafeFoldPolicy(linesep="\r\n")
COMPOSE_POLICY = _SMTP.clone(cte_type="7bit")
# Output policy: CRLF line ends, headers folded at 78 (RFC 5322 2.1.1 SHOULD)
# and never beyond 998 (MUST); the stdlib folder splits overlong words into
# several encoded words to keep within the limit.
OUTPUT_POLICY = _SMTP.clone(cte_type="7bit", max_line_length=78)

# Fields compose() writes itself; extra_headers may not override them.
_RESERVED = {
    "from", "sender", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id",
    "in-reply-to", "references", "mime-version", "content-type",
    "content-transfer-encoding",
}

AddressLike = str | tuple[str | None, str] | _address.Mailbox | _address.Group


@dataclass(frozen=True)
class Attachment:
    """A file to attach. ``content_type`` is guessed from ``filename`` when None
    (``application/octet-stream`` if unknown). ``inline`` sets
    ``Content-Disposition: inline`` (RFC 2183) and ``content_id`` a Content-ID
    so HTML can reference it as ``cid:``."""

    filename: str | None
    data: bytes | str
    content_type: str | None = None
    inline: bool = False
    content_id: str | None = None


def _to_header_addresses(items: Iterable[AddressLike] | AddressLike, what: str,
                         single: bool = False) -> list[Address | HGroup]:
    # A bare str/Mailbox/Group is one item; a tuple is one (name, addr) pair only
    # where a single address is expected (From, Sender), else it is a sequence.
    if isinstance(items, str | _address.Mailbox | _address.Group) or (
            single and isinstance(items, tuple)):
        items = [items]  # type: ignore[list-item]
    out: list[Address | HGroup] = []
    for item in items:  # type: ignore[union-attr]
        if isinstance(item, tuple):
            if len(item) != 2:
                raise ValueError(f"{what}: expected (name, address), got {item!r}")
            name, addr = item
            check_header_value(addr, what)
            if name:
                check_header_value(name, what)
            out.append(_make_address(name, addr, what))
            continue
        if isinstance(item, str):
            check_header_value(item, what)
            parsed = _address.parse_address_list(item)
            if not parsed:
                raise ValueError(f"no address in {what}: {item!r}")
        else:
            parsed = [item]
        for p in parsed:
            if isinstance(p, _address.Group):
                members = [_make_address(m.display_name, m.addr_spec, what) for m in p.mailboxes]
                out.append(HGroup(p.name, members))
            else:
                if p.domain is None:
                    raise ValueError(f"address without domain in {what}: {item!r}")
                out.append(_make_address(p.display_name, p.addr_spec, what))
    return out


def _make_address(name: str | None, addr: str, what: str) -> Address:
    check_header_value(addr, what)
    if name:
        check_header_value(name, what)
    try:
        return Address(display_name=name or "", addr_spec=addr.strip().strip("<>"))
    except Exception as exc:  # the stdlib raises HeaderParseError/IndexError
        raise ValueError(f"invalid address in {what}: {addr!r}") from exc


def _msg_id(value: str, what: str) -> str:
    # RFC 5322 3.6.4: msg-id = "<" id-left "@" id-right ">"
    check_header_value(value, what)
    value = value.strip()
    if not value.startswith("<"):
        value = f"<{value}>"
    if " " in value or "\t" in value or "@" not in value:
        raise ValueError(f"not a msg-id in {what}: {value!r}")
    return value


def _date(date: float | _dt.datetime | str | None) -> str:
    if date is None:
        return format_date()
    if isinstance(date, str):
        return check_header_value(date, "date")
    if isinstance(date, _dt.datetime):
        if date.tzinfo is None:
            date = date.astimezone()
        return email.utils.format_datetime(date)
    return format_date(date)


def compose(
    from_: AddressLike,
    to: Iterable[AddressLike] | AddressLike = (),
    *,
    cc: Iterable[AddressLike] = (),
    bcc: Iterable[AddressLike] = (),
    subject: str = "",
    text: str = "",
    html: str | None = None,
    attachments: Sequence[Attachment | tuple | MIMEPart] = (),
    date: float | _dt.datetime | str | None = None,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: Iterable[str] = (),
    reply_to: Iterable[AddressLike] | AddressLike | None = None,
    sender: AddressLike | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
    multipart_subtype: str = "mixed",
    multipart_params: Mapping[str, str] | None = None,
) -> EmailMessage:
    """Build a message (RFC 5322 header + MIME body, RFC 2045-2047).

    Addresses may be ``"Name <a@b>"`` strings (several, comma-separated, or a
    group), ``(name, addr)`` tuples or parsed ``Mailbox``/``Group`` values.
    ``date`` defaults to now and ``message_id`` to a new one in the From
    domain (RFC 5322 3.6.1 and 3.6.4). Body structure: ``text`` alone is
    text/plain; with ``html`` a multipart/alternative (plain first, RFC 2046
    5.1.4: last is preferred); with attachments the whole is wrapped in
    multipart/``multipart_subtype`` (e.g. ``"report"`` with
    ``{"report-type": "delivery-status"}`` for a DSN, RFC 6522).

    Attachments are ``Attachment`` values, ``(filename, data[, content_type])``
    tuples, an ``EmailMessage`` (attached as message/rfc822, e.g. forwarding)
    or a prepared ``MIMEPart`` (attached as it is, e.g. message/delivery-status).

    Raises ValueError on CR/LF in any header value, on bad addresses and on
    extra headers that would override the structure.
    """
    msg = EmailMessage(policy=COMPOSE_POLICY)
    from_list = _to_header_addresses(from_, "From", single=True)
    msg["Date"] = _date(date)
    msg["From"] = from_list
    if sender is not None:
        msg["Sender"] = _to_header_addresses(sender, "Sender", single=True)
    if reply_to is not None:
        msg["Reply-To"] = _to_header_addresses(reply_to, "Reply-To")
    to_list = _to_header_addresses(to, "To")
    if to_list:
        msg["To"] = to_list
    cc_list = _to_header_addresses(cc, "Cc")
    if cc_list:
        msg["Cc"] = cc_list
    bcc_list = _to_header_addresses(bcc, "Bcc")
    if bcc_list:
        msg["Bcc"] = bcc_list
    if check_header_value(subject, "Subject"):
        msg["Subject"] = subject  # RFC 5322 3.6.5: optional; omitted when empty
    if message_id is None:
        first = next((a for a in from_list if isinstance(a, Address)), None)
        domain = first.domain if first is not None and first.domain else "localhost"
        message_id = make_msgid(domain)
    msg["Message-ID"] = _msg_id(message_id, "Message-ID")
    if in_reply_to:
        msg["In-Reply-To"] = _msg_id(in_reply_to, "In-Reply-To")
    refs = [_msg_id(r, "References") for r in references]
    if refs:
        msg["References"] = " ".join(refs)
    for name, value in extra_headers:
        check_header_name(name)
        check_header_value(value, name)
        if name.lower() in _RESERVED:
            raise ValueError(f"{name} is set by compose(), not by extra_headers")
        msg[name] = value

    msg.set_content(text, subtype="plain", charset="utf-8")
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8")
    if attachments:
        msg.make_mixed()
        for att in attachments:
            _attach(msg, att)
        # After attaching: add_attachment() re-wraps anything not multipart/mixed.
        if multipart_subtype != "mixed":
            check_header_value(multipart_subtype, "multipart subtype")
            msg.set_type(f"multipart/{multipart_subtype}")
        for key, val in (multipart_params or {}).items():
            check_header_value(val, key)
            msg.set_param(key, val)
    # The stdlib's add_* helpers give every sub-part its own MIME-Version;
    # RFC 2045 4 needs it only at the top.
    for part in msg.walk():
        if part is not msg and "MIME-Version" in part:
            del part["MIME-Version"]
    return msg


# --- signatures --------------------------------------------------------------------
# RFC 3676 4.3: a signature follows a line of "-- " (dash, dash, space).
SIGNATURE_SEPARATOR = "-- "


def signature_text(plain: str, html: str) -> str:
    """The plain-text form of a signature: ``plain`` when it says anything,
    else a text rendering of ``html``; without a trailing line break."""
    if plain.strip():
        return plain.replace("\r\n", "\n").strip("\n")
    if html.strip():
        from .reading import html_to_text

        return html_to_text(html).strip("\n")
    return ""


def text_to_html(text: str) -> str:
    """Plain text as HTML: escaped, paragraphs at empty lines, line breaks
    kept; nothing is turned into a link (the text is the user's, as written)."""
    paragraphs = [p for p in text.replace("\r\n", "\n").split("\n\n") if p.strip("\n")]
    return "\n".join("<p>" + "<br>\n".join(_html.escape(line, quote=False) for line in p.strip("\n").split("\n"))
                     + "</p>" for p in paragraphs)


def signed_bodies(text: str, plain_signature: str, safe_html_signature: str) -> tuple[str, str]:
    """The text/plain and text/html bodies of a message whose sender signs
    with an HTML signature (``safe_html_signature``: sanitised by the caller,
    this module knows no policy of what HTML may hold).

    The plain body is ``text``, the "-- " line (RFC 3676 4.3) and the plain
    signature (``signature_text``); the HTML body is ``text`` as escaped
    paragraphs, then the separator and the HTML signature. compose() puts
    them in a multipart/alternative (RFC 2046 5.1.4), plain first."""
    body = text.replace("\r\n", "\n").rstrip("\n")
    plain_sig = signature_text(plain_signature, safe_html_signature)
    plain = (body + "\n\n" if body else "") + SIGNATURE_SEPARATOR + "\n" + plain_sig + "\n"
    html = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>\n" + text_to_html(body)
            + f'\n<div class="signature">{SIGNATURE_SEPARATOR}<br>\n{safe_html_signature}</div>\n</body></html>\n')
    return plain, html


def unsigned(text: str, plain_signature: str) -> str:
    """``text`` without a trailing signature block equal to
    ``plain_signature`` (a draft saved with its signature, opened again: the
    signature is added once more when it is sent)."""
    sig = plain_signature.replace("\r\n", "\n").strip("\n")
    body = text.replace("\r\n", "\n").rstrip("\n")
    block = SIGNATURE_SEPARATOR + "\n" + sig
    if sig and (body == block or body.endswith("\n" + block)):
        return body[: len(body) - len(block)].rstrip("\n") + "\n"
    return text


def _attach(msg: EmailMessage, att: Attachment | tuple | MIMEPart) -> None:
    if isinstance(att, EmailMessage) and not _is_bare_part(att):
        # RFC 2046 5.2.1: a whole message goes in as message/rfc822.
        msg.add_attachment(att)
        return
    if isinstance(att, MIMEPart):
        msg.attach(att)
        return
    if isinstance(att, tuple):
        att = Attachment(*att)
    ctype = att.content_type
    if ctype is None:
        ctype = (mimetypes.guess_type(att.filename or "")[0]) or "application/octet-stream"
    check_header_value(ctype, "content type")
    maintype, _, subtype = ctype.partition("/")
    disposition = "inline" if att.inline else "attachment"
    kwargs: dict = {"disposition": disposition}
    if att.filename:
        check_header_value(att.filename, "filename")
        kwargs["filename"] = att.filename
    if att.content_id:
        kwargs["cid"] = _msg_id(att.content_id, "Content-ID")
    if isinstance(att.data, str):
        if maintype != "text":
            raise ValueError("str attachment data needs a text/* content type")
        msg.add_attachment(att.data, subtype=subtype or "plain", **kwargs)
    else:
        msg.add_attachment(att.data, maintype=maintype, subtype=subtype or "octet-stream", **kwargs)


def _is_bare_part(part: EmailMessage) -> bool:
    # A prepared body part has MIME headers only; a message has From or Date.
    return "From" not in part and "Date" not in part


def to_bytes(msg: EmailMessage, *, strip_bcc: bool = False) -> bytes:
    """Serialise for SMTP: CRLF line ends, header lines folded at 78 and never
    over 998 octets (RFC 5322 2.1.1), 7-bit transfer encodings.

    ``strip_bcc`` removes the Bcc field (RFC 5322 3.6.3: the blind recipients
    must not be disclosed; submission, RFC 6409 8.1, strips it before relay).
    """
    data = msg.as_bytes(policy=OUTPUT_POLICY)
    return without_bcc(data) if strip_bcc else data


def without_bcc(data: bytes) -> bytes:
    """``data`` (a whole message) without its Bcc field (RFC 5322 3.6.3), the
    rest byte for byte: what goes on the wire of a message whose stored copy
    keeps its Bcc."""
    header, body = split_header_body(data)
    kept: list[bytes] = []
    skipping = False
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):  # RFC 5322 2.2.3: continuation of the field above
            if not skipping:
                kept.append(line)
            continue
        skipping = line[:4].lower() == b"bcc:"
        if not skipping:
            kept.append(line)
    return b"".join(kept) + body


def delivery_status_part(message_fields: Sequence[tuple[str, str]],
                         recipient_fields: Sequence[Sequence[tuple[str, str]]]) -> MIMEPart:
    """A message/delivery-status body part (RFC 3464 2.1) for a DSN.

    ``message_fields`` are the per-message fields (Reporting-MTA, ...), each
    item of ``recipient_fields`` one recipient's block (Final-Recipient,
    Action, Status, ...). Pass it in ``attachments`` with
    ``multipart_subtype="report"`` (RFC 6522).
    """
    part = MIMEPart(policy=COMPOSE_POLICY)
    part["Content-Type"] = "message/delivery-status"
    blocks = []
    for fields in [message_fields, *recipient_fields]:
        block = Message(policy=COMPOSE_POLICY)
        for name, value in fields:
            block[check_header_name(name)] = check_header_value(value, name)
        blocks.append(block)
    part.set_payload(blocks)
    return part
