"""Delivery status notifications: RFC 3464 multipart/report DSNs.

A DSN is sent from ``MAILER-DAEMON`` with the null reverse-path ``<>``
(RFC 5321 4.5.5, so that a DSN about a DSN can never be produced), to the
reverse-path of the message it reports on. Which recipients it reports on
follows RFC 3461 4.1 NOTIFY: FAILURE (the default when NOTIFY was not given)
for failures, DELAY (also sent by default, as RFC 3461 allows) for delay
warnings, SUCCESS for "relayed" when the next hop could not take the DSN
request on, and NEVER for nothing. The returned content follows RET (RFC
3461 4.3): FULL gives the whole message, HDRS (and the default) the header
section only, as text/rfc822-headers (RFC 6522 / RFC 3462).

The returned message is attached as the bytes it is, never parsed: parsing
costs time in the number of MIME parts (seconds for tens of thousands), and
the DSN is built on the event loop of a worker serving other sessions. A
DSN is always 7-bit (its queue entry asks for no 8BITMIME, RFC 6152), so an
original that is not 7-bit text with lines a 7-bit transport can carry is
returned as its header only, whatever RET says (RFC 3461 4.3: the whole
message is a SHOULD).
"""

from __future__ import annotations

import asyncio
import email.policy
import functools
import re
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import MIMEPart

from ..message.compose import COMPOSE_POLICY, compose, delivery_status_part, to_bytes
from ..message.dates import format_date
from ..message.parse import split_header_body
from ..store.api import QueueEntry, QueueRecipient

MAILER_DAEMON = "MAILER-DAEMON"

ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")


@dataclass(frozen=True)
class ReportedRecipient:
    recipient: QueueRecipient
    action: str  # RFC 3464 2.3.3
    status: str  # RFC 3463 code, e.g. "5.1.1"
    diagnostic: str | None = None  # the remote reply text, "550 5.1.1 no such user"
    remote_mta: str | None = None


def wants_report(recipient: QueueRecipient, action: str) -> bool:
    """RFC 3461 4.1: does this recipient's NOTIFY ask for a report on ``action``?"""
    notify = recipient.notify
    if notify is None:  # not given: failures always, delays at our discretion
        return action in ("failed", "delayed")
    if "NEVER" in notify:
        return False
    wanted = {"failed": "FAILURE", "delayed": "DELAY", "delivered": "SUCCESS", "relayed": "SUCCESS"}[action]
    return wanted in notify


def should_report(entry: QueueEntry) -> bool:
    """Never bounce a bounce: a message with the null reverse-path gets no DSN
    (RFC 5321 4.5.5, RFC 3464 / RFC 3461 6.2)."""
    return entry.reverse_path != ""


_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
}

_EXPLAIN = {
    "failed": "could not be delivered to one or more recipients. This is a permanent error; "
              "the following address(es) failed:",
    "delayed": "has not yet been delivered to one or more recipients. It will be retried "
               "until {until}; you do not need to send it again. Address(es):",
    "delivered": "was delivered to the following address(es):",
    "relayed": "was handed on to a server that does not send delivery reports, for:",
}


# The human-readable part is wrapped at word boundaries to this width (RFC
# 5322 2.1.1 recommends lines of at most 78 characters; mail readers quote
# with "> ", so a little room is left).
TEXT_WIDTH = 72


def _wrap(text: str, indent: str = "", subsequent: str = "") -> list[str]:
    """One paragraph as lines broken between words only: a word longer than
    the width (an address, a URL) stays whole on a line of its own."""
    return textwrap.wrap(text, TEXT_WIDTH, initial_indent=indent, subsequent_indent=subsequent,
                         break_long_words=False, break_on_hyphens=False) or [indent.rstrip()]


def build_dsn(
    *,
    reporting_mta: str,
    entry: QueueEntry,
    original: bytes,
    reported: Sequence[ReportedRecipient],
    postmaster_domain: str,
    retry_until: float | None = None,
) -> bytes:
    """The DSN message bytes (RFC 3464). All ``reported`` share one action.

    Its cost grows with the size of ``original`` (a few copies and scans of
    it), never with its structure: the original is not parsed."""
    action = reported[0].action
    whole = returnable(original) if entry.ret == "FULL" else None
    until = format_date(retry_until) if retry_until else "later"
    lines = [
        *_wrap(f"This is the mail system at host {reporting_mta}."),
        "",
        *_wrap(f"Your message {_EXPLAIN[action].format(until=until)}"),
        "",
    ]
    for r in reported:
        line = f"<{r.recipient.address}>"
        if r.diagnostic:
            line += f": {' '.join(r.diagnostic.split())}"
        lines += _wrap(line, "  ", "      ")
    lines += ["", *_wrap("The delivery report and the " + (
        "original message" if whole else "header of the original message") + " are attached.")]

    # RFC 3464 2.2: per-message fields
    message_fields: list[tuple[str, str]] = [("Reporting-MTA", f"dns; {reporting_mta}")]
    if entry.envid:
        message_fields.insert(0, ("Original-Envelope-Id", entry.envid))
    message_fields.append(("Arrival-Date", format_date(entry.created)))
    recipient_fields = []
    for r in reported:
        fields: list[tuple[str, str]] = []
        if r.recipient.orcpt:
            fields.append(("Original-Recipient", f"{r.recipient.orcpt[0]};{r.recipient.orcpt[1]}"))
        fields += [
            ("Final-Recipient", f"rfc822; {r.recipient.address}"),  # RFC 3464 2.3.2
            ("Action", r.action),
            ("Status", r.status),
        ]
        if r.remote_mta:
            fields.append(("Remote-MTA", f"dns; {r.remote_mta}"))
        if r.diagnostic:
            fields.append(("Diagnostic-Code", f"smtp; {r.diagnostic}"))
        if r.action in ("failed", "delayed"):
            fields.append(("Last-Attempt-Date", format_date()))
        if r.action == "delayed" and retry_until:
            fields.append(("Will-Retry-Until", format_date(retry_until)))
        recipient_fields.append(fields)
    status_part = delivery_status_part(message_fields, recipient_fields)

    if whole:
        # RFC 2046 5.2.1: message/rfc822, the original exactly; it goes in
        # where this placeholder is, so the email package never handles it.
        boundary = _boundary(whole)
        placeholder = boundary + "-original"
        returned = MIMEPart(policy=COMPOSE_POLICY)
        returned["Content-Type"] = "message/rfc822"
        returned["Content-Transfer-Encoding"] = "7bit"
        returned["Content-Disposition"] = "attachment"
        returned.set_payload(placeholder)
    else:
        header, _body = split_header_body(original)
        returned = MIMEPart(policy=email.policy.SMTP)
        text = header.decode("utf-8", "replace").replace("\r\n", "\n")
        returned.set_content(text, subtype="rfc822-headers", charset="utf-8")
        if "MIME-Version" in returned:
            del returned["MIME-Version"]

    msg = compose(
        f"Mail Delivery System <{MAILER_DAEMON}@{postmaster_domain}>",
        entry.reverse_path,
        subject=_SUBJECTS[action],
        text="\n".join(lines) + "\n",
        attachments=[status_part, returned],
        multipart_subtype="report",
        multipart_params={"report-type": "delivery-status"},
        # RFC 3834 5: automatic responses are marked, so no one auto-replies to them
        extra_headers=[("Auto-Submitted", "auto-replied")],
    )
    if not whole:
        return to_bytes(msg)
    msg.set_boundary(boundary)
    head, found, tail = to_bytes(msg).partition(placeholder.encode())
    assert found, "the generator writes a message part's text payload as it is"
    return b"".join((head, whole, tail))


# RFC 5322 2.1.1 (and RFC 5321 4.5.3.1.6): at most 998 octets a line, CRLF
# not counted.
MAX_LINE = 998

_LINE_END = re.compile(rb"\r\n|\r|\n")


def returnable(original: bytes) -> bytes | None:
    """``original`` as the body of a message/rfc822 part in a 7-bit DSN, or
    None when it cannot be one unchanged: 8-bit octets, or a line over
    ``MAX_LINE`` (RFC 2046 5.2.1: message/rfc822 is only 7bit, 8bit or
    binary, and this DSN is 7bit). Bare CR or LF line ends become CRLF
    (RFC 5322 2.3), the only change made."""
    if not original.isascii():
        return None
    crlf = original.count(b"\r\n")
    if crlf != original.count(b"\n") or crlf != original.count(b"\r"):
        original = _LINE_END.sub(b"\r\n", original)
    if max(map(len, original.split(b"\r\n"))) > MAX_LINE:
        return None
    return original


def _boundary(original: bytes) -> str:
    """A multipart boundary whose delimiter line is not in ``original``
    (RFC 2046 5.1.1: it must not occur in any enclosed part)."""
    while True:
        boundary = "=_" + secrets.token_hex(16)
        if b"--" + boundary.encode() not in original:
            return boundary


# Above this size an original's scans and copy (a few ms a megabyte) are
# made in a thread, not on the event loop.
INLINE_ORIGINAL = 256 * 1024


async def make_dsn(
    *,
    reporting_mta: str,
    entry: QueueEntry,
    original: bytes,
    reported: Sequence[ReportedRecipient],
    postmaster_domain: str,
    retry_until: float | None = None,
) -> bytes:
    """``build_dsn`` for a caller on the event loop: a large original is
    handled in a thread, so the loop keeps serving its other sessions."""
    build = functools.partial(build_dsn, reporting_mta=reporting_mta, entry=entry, original=original,
                              reported=reported, postmaster_domain=postmaster_domain, retry_until=retry_until)
    if len(original) <= INLINE_ORIGINAL:
        return build()
    return await asyncio.to_thread(build)


def status_of(code: int, enhanced: str | None, expired: bool = False) -> str:
    """The RFC 3463 status for a recipient given its last SMTP reply; a
    message that ran out of time is 4.4.7 ("delivery time expired")."""
    if expired:
        return "4.4.7"
    if enhanced:
        return enhanced
    return f"{code // 100}.0.0"
