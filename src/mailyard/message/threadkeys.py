"""The keys messages are sorted and threaded by (RFC 5256, RFC 5957, RFC 5051).

What: pure functions from decoded header values (the store's header_fields,
message/derived.py) to the values IMAP SORT and THREAD compare:

- ``base_subject``: the base subject of RFC 5256 section 2.1 and whether the
  subject marked a reply or forward;
- ``sent_date``: the sent date of RFC 5256 section 2.2 (the Date header in
  UTC, else the INTERNALDATE);
- ``first_address``: addr-mailbox (RFC 5256 section 3, SORT FROM/TO/CC) and
  the display name (RFC 5957 DISPLAYFROM/DISPLAYTO) of a field's first mailbox;
- ``message_id`` / ``parent_ids``: the msg-ids THREAD=REFERENCES links by
  (RFC 5256 section 3 step 1);
- ``casemap``: the i;unicode-casemap collation key (RFC 5051), which RFC
  5256 section 1 requires (I18NLEVEL=1) for every string comparison.

Why here: the webmail's conversation view and the IMAP server sort by the
same rules; message/reply.py ``base_subject`` is the lenient, multilingual
prefix stripping a mail user agent wants for "Re:" handling, this module the
exact RFC 5256 grammar servers are compared on.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Mapping
from typing import NamedTuple

from .address import Group, parse_address_list
from .dates import to_timestamp

__all__ = ["KEY_FIELDS", "SortKeys", "ThreadKeys", "base_subject", "casemap", "first_address", "keys_from_json", "message_id",
           "parent_ids", "sent_date", "sort_keys"]

# RFC 5256 section 5 (formal syntax), matched case-insensitively:
#   subj-blob    = "[" *BLOBCHAR "]" *WSP          BLOBCHAR: any CHAR but "[" "]"
#   subj-refwd   = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
#   subj-leader  = (*subj-blob subj-refwd) / WSP
#   subj-trailer = "(fwd)" / WSP
#   subj-fwd-hdr = "[fwd:"   subj-fwd-trl = "]"
_BLOB = r"\[[^\[\]]*\] ?"  # step 1 left single spaces only
_BLOB_RE = re.compile(_BLOB)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_REFWD = re.compile(rf"(?:re|fwd?) ?(?:{_BLOB})?:")  # matched on the lower-cased text
_WSP_RUN = re.compile(r"[ \t\r\n]+")
_MSG_ID = re.compile(r"<([^<>]*)>")
# One address alone, in the two common forms (``Name <a@b>``, ``"Name" <a@b>``
# and ``a@b``); anything else goes through the address-list parser.
_ONE_ANGLE = re.compile(r'\s*(?:"([^"\\]*)"|([^"\\,;:<>()\[\]@]*?))\s*<([^<>@\s",;:()\\]+)@([^<>\s",;:()\\]*)>\s*\Z')
# The two patterns above take time quadratic in a value's blanks (the name
# and the white space around it overlap): only values of an address's usual
# length try them; longer ones go to the parser, which is linear.
FAST_PATH_MAX = 1024
_ONE_BARE = re.compile(r'\s*([^<>@\s",;:()\\]+)@([^<>\s",;:()\\]+)\s*\Z')
# a subject with nothing RFC 5256 2.1 could remove but white space at its ends
_PLAIN_SUBJECT = re.compile(r"[^\[\]:()\t\r\n]*\Z")
_CFWS = re.compile(r"[ \t\r\n]+|\([^()]*\)")


def base_subject(subject: str | None) -> tuple[str, bool]:
    """(base subject, whether it was a reply or forward) per RFC 5256 2.1.

    ``subject`` is the decoded field value (step 1's RFC 2047 decoding is done
    at delivery, message/derived.py). "Reply or forward" is what THREAD
    REFERENCES step 5 asks: a subj-refwd, "(fwd)" trailer or "[fwd: ...]"
    wrapper was removed.

    The steps move two indexes over the text instead of cutting it, and each
    character is looked at a bounded number of times: a 64 KiB subject of
    "[]" or "(fwd)" repeated takes linear time, not quadratic.
    """
    if not subject:
        return "", False
    if _PLAIN_SUBJECT.match(subject) and "  " not in subject:
        return subject.strip(" "), False
    # (1) tabs and continuations become one space; runs of spaces one space
    s = _WSP_RUN.sub(" ", subject)
    low = s.translate(_ASCII_LOWER)  # the RFC's literals are ASCII; lower() may change lengths
    pos, end = 0, len(s)
    refwd = False
    while True:
        # (2) remove subj-trailers ("(fwd)" / WSP) until none is left
        while end > pos:
            if s[end - 1] == " ":
                end -= 1
            elif end - pos >= 5 and low.startswith("(fwd)", end - 5):
                end -= 5
                refwd = True
            else:
                break
        # (3)-(5) remove subj-leaders (*subj-blob subj-refwd, or WSP), and a
        # subj-blob when a non-empty base follows it, until neither matches
        while pos < end:
            if s[pos] == " ":
                pos += 1
                continue
            blobs = []
            q = pos
            while (m := _BLOB_RE.match(s, q, end)) is not None:
                blobs.append(q)
                q = m.end()
            m = _REFWD.match(low, q, end)
            if m is not None:
                pos = m.end()  # a leader: the blobs and the subj-refwd
                refwd = True
                continue
            if blobs:
                # no refwd after them: step 4 removes the blobs one by one
                # while something is left after the one removed
                pos = q if q < end else blobs[-1]
            break
        # (6) a "[fwd: ...]" wrapper: remove it and start again at (2)
        if end - pos >= 6 and low.startswith("[fwd:", pos) and s[end - 1] == "]":
            pos += 5
            end -= 1
            refwd = True
            continue
        return s[pos:end], refwd


@functools.lru_cache(maxsize=4096)
def _simple_title(ch: str) -> str:
    # UnicodeData.txt's Simple_Titlecase_Mapping: one character or none
    # (str.title gives the full mapping, "ß" -> "Ss": then there is none)
    t = ch.title()
    return t if len(t) == 1 else ch


def casemap(s: str) -> str:
    """The i;unicode-casemap key of ``s`` (RFC 5051 section 2): every
    character's simple titlecase mapping, then the compatibility
    decomposition (NFKD); keys compare as code point (UTF-8 octet) sequences."""
    if s.isascii():
        return s.upper()  # the titlecase of an ASCII letter is its upper case
    return unicodedata.normalize("NFKD", "".join(map(_simple_title, s)))


def sent_date(date_value: str | None, internal_date: float) -> float:
    """The sent date of RFC 5256 2.2 as a UTC timestamp: the Date header, or
    the INTERNALDATE when it is missing or cannot be parsed."""
    ts = to_timestamp(date_value) if date_value else None
    return internal_date if ts is None else ts


def first_address(value: str | None) -> tuple[str, str]:
    """(addr-mailbox, display key) of the first mailbox of an address field.

    addr-mailbox is the local part (RFC 5256 section 3, SORT FROM/TO/CC);
    the display key is the decoded display name, or the address
    ``local@domain`` when there is no name (RFC 5957 section 3, DISPLAYFROM,
    DISPLAYTO). A missing field or an unparseable one gives two empty strings.
    """
    if not value:
        return "", ""
    if len(value) <= FAST_PATH_MAX:
        m = _ONE_ANGLE.match(value)
        if m is not None:
            name = (m[1] if m[1] is not None else m[2]).strip()
            return m[3], name or f"{m[3]}@{m[4]}"
        m = _ONE_BARE.match(value)
        if m is not None:
            return m[1], f"{m[1]}@{m[2]}"
    for item in parse_address_list(value, decode=False):
        if isinstance(item, Group):
            if not item.mailboxes:
                continue
            item = item.mailboxes[0]
        local = item.local_part
        name = (item.display_name or "").strip()
        if not name:
            name = f"{local}@{item.domain}" if item.domain else local
        return local, name
    return "", ""


def _ids(value: str | None) -> list[str]:
    # RFC 5256 section 3 step 1: msg-ids with their CFWS removed; a msg-id
    # without "@" is not valid and is skipped
    if not value:
        return []
    out = []
    for raw in _MSG_ID.findall(value):
        mid = _CFWS.sub("", raw)
        left, at, right = mid.partition("@")
        if at and left and right:
            out.append(mid)
    return out


def message_id(value: str | None) -> str | None:
    """The message's own id (Message-ID's first valid msg-id), or None."""
    ids = _ids(value)
    return ids[0] if ids else None


def parent_ids(references: str | None, in_reply_to: str | None) -> list[str]:
    """The ids to link a message under (RFC 5256 section 3 step 1): the
    References field's, or when it holds no valid msg-id, the first valid
    msg-id of In-Reply-To."""
    refs = _ids(references)
    if refs:
        return refs
    irt = _ids(in_reply_to)
    return irt[:1]


# The header fields ``sort_keys`` reads (lower-case).
KEY_FIELDS = ("cc", "date", "from", "in-reply-to", "message-id", "references", "subject", "to")


class SortKeys(NamedTuple):
    """Everything SORT and THREAD compare about one message, computed once
    from its decoded header fields (strings already casemapped)."""

    date: float | None  # the Date header in UTC; None: use the INTERNALDATE (RFC 5256 2.2)
    subject: str  # casemap(base subject)
    refwd: bool  # the subject marked a reply or forward
    from_mailbox: str  # casemapped addr-mailbox of the first From address
    from_display: str  # casemapped display name (RFC 5957), else the address
    to_mailbox: str
    to_display: str
    cc_mailbox: str
    message_id: str | None
    parents: tuple[str, ...]  # parent_ids(References, In-Reply-To)


# What THREAD compares of a message (RFC 5256 section 3): (sent date in UTC,
# the INTERNALDATE already standing in for a missing Date; casemapped base
# subject; whether it was a reply or forward; Message-ID; parent ids). A
# plain tuple: a THREAD of 100,000 messages makes one per message.
ThreadKeys = tuple[float, str, bool, "str | None", tuple[str, ...]]


def keys_from_json(v: list) -> SortKeys:
    """SortKeys from ``list(keys)`` as kept in JSON. The strings many
    messages share (a correspondent's address and name, a thread's subject,
    the ids replies refer to) are interned, so a mailbox's keys held in
    memory keep one copy of each.
    Raises TypeError, IndexError or ValueError for a list of another shape."""
    if len(v) != len(SortKeys._fields):
        raise ValueError("not a SortKeys list")
    intern = sys.intern
    date = v[0]
    if date is not None and not isinstance(date, int | float):
        raise TypeError("date")
    mid = v[8]
    if mid is not None and not isinstance(mid, str):
        raise TypeError("message id")
    # a message's id is also in its replies' References: one copy for all
    parents = tuple(map(intern, v[9]))
    return SortKeys(date, intern(v[1]), bool(v[2]), intern(v[3]), intern(v[4]), intern(v[5]), intern(v[6]),
                    intern(v[7]), None if mid is None else intern(mid), parents)


def sort_keys(fields: Mapping[str, str]) -> SortKeys:
    """The SortKeys of a message from the first decoded value of each of
    its ``KEY_FIELDS`` (a missing field is left out of ``fields``)."""
    get = fields.get
    date = get("date")
    subject, refwd = base_subject(get("subject"))
    from_mailbox, from_display = first_address(get("from"))
    to_mailbox, to_display = first_address(get("to"))
    return SortKeys(
        to_timestamp(date) if date else None,
        casemap(subject),
        refwd,
        casemap(from_mailbox),
        casemap(from_display),
        casemap(to_mailbox),
        casemap(to_display),
        casemap(first_address(get("cc"))[0]),
        message_id(get("message-id")),
        tuple(parent_ids(get("references"), get("in-reply-to"))),
    )
