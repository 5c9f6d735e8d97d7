"""IMAP URLs as CATENATE names its parts (RFC 4469 5, RFC 5092): the
relative form ``/mailbox[;UIDVALIDITY=n]/;UID=n[/;SECTION=s][/;PARTIAL=o[.l]]``.

Only the relative form is taken: it names a mailbox of the logged-in user,
looked up through that user's backend, so a URL can never reach another
account's mail. Absolute URLs (``imap://user@host/...``) and URLAUTH
(RFC 4467) are not supported: CATENATE answers them NO [BADURL].
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from .commands import Section
from .fetch_parser import parse_section
from .reader import ParseError, Reader

# RFC 5092 11: ipath-fetch = enc-mailbox [uidvalidity] iuid [isection] [ipartial]
_URL = re.compile(
    rb"/(?P<box>[^;]+?)(?:;UIDVALIDITY=(?P<uv>[1-9][0-9]{0,9}))?/;UID=(?P<uid>[1-9][0-9]{0,9})"
    rb"(?:/;SECTION=(?P<sec>[^;]+?))?(?:/;PARTIAL=(?P<p0>[0-9]{1,10})(?:\.(?P<p1>[1-9][0-9]{0,9}))?)?",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ImapUrl:
    mailbox: str  # UTF-8, "INBOX" canonical
    uid: int
    uid_validity: int | None = None
    section: Section | None = None  # None: the whole message
    partial: tuple[int, int | None] | None = None  # (origin, length or None: to the end)


def parse(text: str) -> ImapUrl | None:
    """The URL, or None if it is not a relative IMAP message URL we can serve."""
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        return None  # RFC 5092: non-ASCII octets are percent-encoded
    m = _URL.fullmatch(raw)
    if m is None:
        return None
    try:
        # RFC 5092 3.3 / 6: enc-mailbox is the UTF-8 name, percent-encoded
        mailbox = unquote_to_bytes(m["box"]).decode("utf-8")
        spec = unquote_to_bytes(m["sec"]).decode("ascii") if m["sec"] else None
    except UnicodeDecodeError:
        return None
    if mailbox.upper() == "INBOX":
        mailbox = "INBOX"
    elif mailbox[:6].upper() == "INBOX/":
        mailbox = "INBOX/" + mailbox[6:]
    section = None
    if spec is not None:
        r = Reader([b"[" + spec.encode("ascii") + b"]"], [])
        try:
            section, _ = parse_section(r)  # RFC 5092 section = RFC 3501 section-spec
            r.end()
        except ParseError:
            return None
    partial = None
    if m["p0"] is not None:
        partial = (int(m["p0"]), int(m["p1"]) if m["p1"] else None)
    return ImapUrl(mailbox, int(m["uid"]), int(m["uv"]) if m["uv"] else None, section, partial)


def response_text(url: str) -> str:
    """The URL as BADURL's url-resp-text (RFC 4469 5: TEXT-CHARs except "]")."""
    return "".join(ch for ch in url if "!" <= ch <= "~" and ch != "]")[:200] or "-"
