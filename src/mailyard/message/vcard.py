"""vCard 4.0 (RFC 6350): the address book's import and export format.

Only what the address book keeps is read and written: FN, N (for a card
without FN), EMAIL, TEL, ORG, NOTE and UID. Reading is tolerant of vCard
3.0 (RFC 2426) and of bare LF line ends, as other address books export
them; writing is strict 4.0 (CRLF, folding at 75 octets, escaped text).

Written here rather than taken from PyPI: ``vobject``, the maintained
Python vCard library, reads and writes vCard 3.0 (its serialiser emits
VERSION:3.0 structures and its 4.0 support is partial), and the subset
needed is a page of code whose every rule cites RFC 6350.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_CARDS = 10_000
MAX_LINE = 64 * 1024  # an unfolded content line longer than this is skipped
MAX_VALUES = 20  # addresses, and phones, kept of one card (the store's limit too)
MAX_LINES = 200_000  # content lines of one stream: more is refused, not read


@dataclass
class Card:
    """The fields of one vCard the address book keeps."""

    name: str = ""
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    org: str = ""
    note: str = ""
    uid: str = ""


class VCardError(ValueError):
    """The text is not a vCard stream."""


# --- writing -----------------------------------------------------------------
def escape(value: str, structured: bool = False) -> str:
    """RFC 6350 3.4: backslash, comma and newline escaped in a text value
    (semicolon too in a structured one, e.g. ORG)."""
    value = value.replace("\\", "\\\\").replace(",", "\\,").replace("\r\n", "\n").replace("\r", "\n")
    value = value.replace("\n", "\\n")
    return value.replace(";", "\\;") if structured else value


def fold(line: str) -> str:
    """RFC 6350 3.2: lines longer than 75 octets are folded (CRLF and one
    space), never inside a UTF-8 sequence."""
    out: list[str] = []
    current = ""
    size = 0
    for ch in line:
        n = len(ch.encode("utf-8"))
        if size + n > 75:
            out.append(current)
            current, size = " ", 1
        current += ch
        size += n
    out.append(current)
    return "\r\n".join(out) + "\r\n"


def serialise(cards: list[Card]) -> str:
    """A vCard 4.0 stream of ``cards`` (RFC 6350 6.1.1-6.1.3: BEGIN, VERSION
    right after it, END; FN is the one required property, 6.2.1)."""
    out: list[str] = []
    for card in cards:
        lines = ["BEGIN:VCARD", "VERSION:4.0"]
        if card.uid:
            lines.append(f"UID:{escape(card.uid)}")  # 6.7.6
        lines.append(f"FN:{escape(card.name or (card.emails[0] if card.emails else ''))}")  # 6.2.1
        for i, email in enumerate(card.emails):  # 6.4.2; PREF=1 the preferred (5.3)
            lines.append(f"EMAIL{';PREF=1' if i == 0 and len(card.emails) > 1 else ''}:{escape(email)}")
        for phone in card.phones:  # 6.4.1, a text value (the default is uri; 5.2 VALUE)
            lines.append(f"TEL;VALUE=text:{escape(phone)}")
        if card.org:
            lines.append(f"ORG:{escape(card.org, structured=True)}")  # 6.6.4
        if card.note:
            lines.append(f"NOTE:{escape(card.note)}")  # 6.7.2
        lines.append("END:VCARD")
        out.extend(fold(line) for line in lines)
    return "".join(out)


# --- reading -----------------------------------------------------------------
_NAME = re.compile(r"(?:[A-Za-z0-9-]+\.)?([A-Za-z0-9-]+)")


def unfold(text: str) -> Iterator[str]:
    """RFC 6350 3.2: a line break followed by one space or tab continues the
    line. CRLF or bare LF (as some exporters write) end a line."""
    current: str | None = None
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if raw[:1] in (" ", "\t") and current is not None:
            current += raw[1:]
            continue
        if current is not None:
            yield current
        current = raw
    if current is not None:
        yield current


def split_line(line: str) -> tuple[str, dict[str, str], str] | None:
    """A content line (RFC 6350 3.3): ``[group.]name *(;param) : value``;
    parameter values may be double-quoted (and then hold ``:`` and ``;``)."""
    m = _NAME.match(line)
    if m is None:
        return None
    name = m.group(1).upper()
    i = m.end()
    params: dict[str, str] = {}
    while i < len(line) and line[i] == ";":
        j = i + 1
        while j < len(line) and line[j] not in "=;:":
            j += 1
        pname = line[i + 1:j].upper()
        pvalue = ""
        if j < len(line) and line[j] == "=":
            j += 1
            start = j
            quoted = False
            while j < len(line) and (quoted or line[j] not in ";:"):
                if line[j] == '"':
                    quoted = not quoted
                j += 1
            pvalue = line[start:j].replace('"', "")
        params[pname] = pvalue
        i = j
    if i >= len(line) or line[i] != ":":
        return None
    return name, params, line[i + 1:]


def unescape(value: str) -> str:
    """RFC 6350 3.4: ``\\n`` / ``\\N`` is a newline, a backslash quotes the
    next character."""
    out: list[str] = []
    it = iter(value)
    for ch in it:
        if ch == "\\":
            nxt = next(it, "")
            out.append("\n" if nxt in ("n", "N") else nxt)
        else:
            out.append(ch)
    return "".join(out)


def split_structured(value: str) -> list[str]:
    """The components of a structured value (N, ORG), at unescaped ``;``."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in value:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ";":
            parts.append(unescape("".join(current)))
            current = []
        else:
            current.append(ch)
    parts.append(unescape("".join(current)))
    return parts


def parse(text: str) -> list[Card]:
    """The cards of a vCard stream (4.0 or 3.0); VCardError when there is
    none or a card is not closed. Properties not kept are skipped."""
    cards: list[Card] = []
    card: Card | None = None
    n_name = ""
    pref_email: tuple[int, str] | None = None
    # the values of the open card, for a duplicate test in constant time
    seen_emails: set[str] = set()
    seen_phones: set[str] = set()
    for count, line in enumerate(unfold(text)):
        if count >= MAX_LINES:
            raise VCardError(f"more than {MAX_LINES} lines")
        if not line.strip() or len(line) > MAX_LINE:
            continue
        parsed = split_line(line)
        if parsed is None:
            continue
        name, params, value = parsed
        if name == "BEGIN" and value.strip().upper() == "VCARD":
            if card is not None:
                raise VCardError("a vCard begins inside another (nested cards are not read)")
            card, n_name, pref_email = Card(), "", None
            seen_emails, seen_phones = set(), set()
            continue
        if card is None:
            continue
        if name == "END" and value.strip().upper() == "VCARD":
            if not card.name:
                card.name = n_name
            if pref_email is not None and pref_email[1] in card.emails:
                card.emails.remove(pref_email[1])
                card.emails.insert(0, pref_email[1])
            if card.name or card.emails:
                cards.append(card)
            if len(cards) > MAX_CARDS:
                raise VCardError(f"more than {MAX_CARDS} cards")
            card = None
            continue
        if params.get("ENCODING", "").upper() in ("QUOTED-PRINTABLE", "B", "BASE64"):
            continue  # vCard 2.1 encodings: not text
        if name == "FN":
            card.name = unescape(value).strip()
        elif name == "N":
            # 6.2.2: family; given; additional; prefixes; suffixes
            parts = [p.strip() for p in split_structured(value)] + [""] * 5
            n_name = " ".join(p for p in (parts[3], parts[1], parts[2], parts[0], parts[4]) if p)
        elif name == "EMAIL":
            email = unescape(value).strip()
            if email.lower().startswith("mailto:"):
                email = email[7:]
            if email and email not in seen_emails and len(card.emails) < MAX_VALUES:
                seen_emails.add(email)
                card.emails.append(email)
                pref = params.get("PREF", "")
                types = params.get("TYPE", "").lower().split(",")
                # 5.3: PREF is an integer 1-100 (ASCII digits only: str.isdigit
                # is also true of "²", which int() refuses); RFC 2426 3.3.2 TYPE=pref
                numeric = pref.isascii() and pref.isdigit() and len(pref) <= 3
                rank = int(pref) if numeric else (1 if "pref" in types else 101)
                if rank <= 100 and (pref_email is None or rank < pref_email[0]):
                    pref_email = (rank, email)
        elif name == "TEL":
            phone = unescape(value).strip()
            if phone.lower().startswith("tel:"):
                phone = phone[4:]
            if phone and phone not in seen_phones and len(card.phones) < MAX_VALUES:
                seen_phones.add(phone)
                card.phones.append(phone)
        elif name == "ORG":
            card.org = " ".join(p.strip() for p in split_structured(value) if p.strip())
        elif name == "NOTE":
            card.note = unescape(value)
        elif name == "UID":
            card.uid = unescape(value).strip()
    if card is not None:
        raise VCardError("a vCard is not closed (END:VCARD missing)")
    if not cards:
        raise VCardError("no vCard found")
    return cards
