"""Message submission policy (RFC 6409), the same for every submission path
(the SMTP submission ports 587 and 465, and webmail).

- `SenderRule`: whom an authenticated user may send as. Every sender address
  of a submission (the reverse-path, and each address of the From, Sender,
  Resent-From and Resent-Sender header fields) must be one of the user's
  own: the account's address, a local address (alias, list) every
  destination of which is that account and nothing else, or an address the
  account was granted (``mailyard user allow-from``: a shared role address,
  or a pattern such as ``*@example.test``). RFC 6409 4.3 and 8 let the MSA
  enforce this; RFC 5322 3.6.2 makes From and Sender the author and the
  agent responsible for sending, so a foreign address there is the spoofing
  this rule stops. The null reverse-path ``<>`` is allowed (RFC 8098 asks
  MDNs to use it), but not as a way around the header check. The rule
  returns a `SenderRefused` verdict (what, which address, why); the SMTP
  glue answers it with ``553``/``550 5.7.1`` and webmail shows the same
  reason as a form error.
- `complete_message`: add Date and Message-ID when missing (RFC 6409 8.2,
  8.3), at the end of the header section so the rest stays byte-identical.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..message.address import MAX_PARSE_CHARS, canonical_address, iter_mailboxes, parse_address_list
from ..message.dates import format_date
from ..message.msgid import make_msgid
from ..message.parse import split_header_body
from ..store.api import InvalidName
from ..store.names import normalize_address

if TYPE_CHECKING:
    from ..store.api import Account

__all__ = ["SENDER_FIELDS", "AddressOwners", "SenderRefused", "SenderRule", "complete_message"]

# Header fields that name who wrote or sent a message (RFC 5322 3.6.2, 3.6.6).
SENDER_FIELDS = ("From", "Sender", "Resent-From", "Resent-Sender")

# More sender addresses than this in one message are refused outright: each
# costs a directory lookup, and no real message names so many authors.
MAX_SENDER_ADDRESSES = 20

_SENDER_FIELD = re.compile(
    rb"^(" + b"|".join(f.encode() for f in SENDER_FIELDS) + rb")[ \t]*:(.*(?:\r?\n[ \t].*)*)",
    re.IGNORECASE | re.MULTILINE,
)

# Quoted strings (RFC 5322 3.2.4) may hold "@" without naming an address.
# Possessive, and a quote left open runs to the end: one pass over the value
# (``_without_quoted``), where retrying from every later quote would be
# quadratic in a run of escaped quotes.
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*+(")?', re.DOTALL)


def _without_quoted(value: str) -> str:
    """``value`` less its closed quoted strings. Once a quote finds no closing
    quote, neither does any later one (their escapes pair up the same way),
    so the rest is kept as it is."""
    kept: list[str] = []
    pos = 0
    for m in _QUOTED.finditer(value):
        if m.group(1) is None:
            break
        kept.append(value[pos:m.start()])
        pos = m.end()
    kept.append(value[pos:])
    return "".join(kept)


@dataclass(frozen=True, slots=True)
class AddressOwners:
    """Where a local address leads: the accounts it delivers to, and whether
    it also leads anywhere else (a remote address, a missing target, a loop)."""

    account_ids: frozenset[int]
    elsewhere: bool = False


# Expands a local address (the router does); None for an address this server
# is not the destination for.
Expand = Callable[[str], Awaitable["AddressOwners | None"]]


@dataclass(frozen=True, slots=True)
class SenderRefused:
    """Verdict: the user may not send as ``address`` (named in ``field``)."""

    field: str  # "MAIL FROM", "From", "Sender", ...
    address: str
    reason: str  # a sentence fit to show the user


def _shown(address: str) -> str:
    # Addresses come from the client: keep them short and on one line.
    text = "".join(c if c.isprintable() else "?" for c in address[:200])
    return text + ("..." if len(address) > 200 else "")


def _pattern_matches(pattern: str, address: str) -> bool:
    """``*`` is any run of characters; case-insensitive, like address lookups."""
    parts = (re.escape(p) for p in pattern.casefold().split("*"))
    return re.fullmatch(".*".join(parts), address.casefold(), re.DOTALL) is not None


class SenderRule:
    """The ownership rule of one authenticated account (see module doc)."""

    def __init__(self, account: Account, expand: Expand, grants: Sequence[str] = ()) -> None:
        self.account = account
        self.expand = expand
        self.grants = tuple(grants)

    async def owns(self, address: str) -> bool:
        """True if the account may name ``address`` as a sender."""
        try:
            # RFC 5321 4.1.2: "alice"@example.test is alice@example.test.
            addr = normalize_address(canonical_address(address))
        except InvalidName:
            return False
        if addr.casefold() == self.account.address.casefold():
            return True
        if any(_pattern_matches(g, addr) for g in self.grants):
            return True
        owners = await self.expand(addr)
        return (
            owners is not None
            and not owners.elsewhere
            and owners.account_ids == frozenset({self.account.id})
        )

    def _refused(self, field: str, address: str) -> SenderRefused:
        shown = _shown(address)
        return SenderRefused(field, address, f"{field} <{shown}> is not an address of {self.account.address}")

    async def check_reverse_path(self, reverse_path: str) -> SenderRefused | None:
        """The MAIL FROM address (RFC 5321 4.1.1.2); ``""`` (``<>``) passes."""
        if reverse_path == "" or await self.owns(reverse_path):
            return None
        return self._refused("MAIL FROM", reverse_path)

    async def check_header(self, message: bytes) -> SenderRefused | None:
        """The From, Sender, Resent-From and Resent-Sender addresses of
        ``message`` (its header section is read, the body is not). A message
        without these fields names no sender and passes; a field whose
        addresses cannot all be read is refused, since a reader's mail program
        might show what this parser could not check."""
        header, _body = split_header_body(message)
        wanted = {f.lower(): f for f in SENDER_FIELDS}
        checked = 0
        # A redirection (RFC 5322 3.6.6) is a message reintroduced by this
        # user: its resent block on top names them, while From and Sender
        # still name the original author and stay as they are. Then those
        # two are checked only where they name an address of this server's
        # own domains, which must still be the user's own (else a made-up
        # resent block would let anyone sign as a local colleague); an
        # author elsewhere is the other domain's business (its DMARC policy).
        resent = _top_resent_block(header)
        # A regex finds the few fields wanted without walking every line of
        # a large header in Python; continuation lines start with WSP (RFC
        # 5322 2.2.3), and a space before the colon is the obsolete form
        # readers still accept (RFC 5322 4.5).
        for match in _SENDER_FIELD.finditer(header):
            field = wanted[match.group(1).decode("ascii").lower()]
            value = match.group(2).decode("utf-8", "replace").rstrip("\r")
            if len(value) > MAX_PARSE_CHARS:
                return SenderRefused(field, value[:200], f"{field}: the field is too long")
            mailboxes = list(iter_mailboxes(parse_address_list(value, decode=False)))
            ats = _without_quoted(value).count("@")
            if not mailboxes or any(mb.domain is None for mb in mailboxes) or ats > len(mailboxes):
                return SenderRefused(
                    field, value, f"{field}: cannot read the address in {_shown(value.strip())!r}"
                )
            older_resent = resent is not None and field.startswith("Resent-") and match.start() >= resent
            for mb in mailboxes:
                checked += 1
                if checked > MAX_SENDER_ADDRESSES:
                    return SenderRefused(
                        field, mb.addr_spec, f"too many sender addresses (at most {MAX_SENDER_ADDRESSES})"
                    )
                if (resent is not None and (older_resent or not field.startswith("Resent-"))
                        and await self.expand(_plain(mb.addr_spec)) is None):
                    continue  # the original's author (or an earlier resender) elsewhere
                if not await self.owns(mb.addr_spec):
                    return self._refused(field, mb.addr_spec)
        return None


_TRACE_OR_RESENT = re.compile(rb"(?:resent-[!-9;-~]+|received|return-path)[ \t]*:", re.IGNORECASE)


def _top_resent_block(header: bytes) -> int | None:
    """Where the topmost resent block of ``header`` ends (the offset of the
    first field after it), if the header starts with one naming a
    Resent-From (RFC 5322 3.6.6: the block is prepended, newest on top; trace
    fields a delivery added above it may precede it); None otherwise."""
    pos = 0
    seen_resent = False
    has_from = False
    resent_names: set[bytes] = set()
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            pos += len(line)
            continue
        m = _TRACE_OR_RESENT.match(line)
        if m is None:
            break
        name = line.split(b":", 1)[0].strip().lower()
        if name.startswith(b"resent-"):
            if name in resent_names:
                break  # a second block starts: an earlier redirection
            resent_names.add(name)
            seen_resent = True
            has_from = has_from or name == b"resent-from"
        elif seen_resent:
            break
        pos += len(line)
    return pos if seen_resent and has_from else None


def _plain(address: str) -> str:
    try:
        return normalize_address(canonical_address(address))
    except InvalidName:
        return address


_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)


def _header_end(data: bytes) -> int:
    """Offset where the header section ends (the empty line), or -1 if it has none."""
    if data.startswith(b"\r\n") or data.startswith(b"\n"):
        return 0
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = data.find(sep)
        if i >= 0:
            return i + len(sep) // 2
    return -1


def complete_message(data: bytes, msgid_domain: str, ts: float | None = None) -> tuple[bytes, list[str]]:
    """``data`` with Date / Message-ID added if missing; also the names added."""
    end = _header_end(data)
    header = data if end < 0 else data[:end]
    names = {m.group(1).lower() for m in _FIELD_NAME.finditer(header)}
    extra: list[str] = []
    if b"date" not in names:
        extra.append(f"Date: {format_date(ts)}")  # RFC 6409 8.3
    if b"message-id" not in names:
        try:
            msgid = make_msgid(msgid_domain)
        except ValueError:
            msgid = make_msgid("localhost.invalid")
        extra.append(f"Message-ID: {msgid}")  # RFC 6409 8.2
    if not extra:
        return data, []
    added = "".join(line + "\r\n" for line in extra).encode("ascii")
    if end < 0:
        # Only a header section, without the empty line.
        if data and not data.endswith(b"\n"):
            data += b"\r\n"
        return data + added, [e.split(":", 1)[0] for e in extra]
    return data[:end] + added + data[end:], [e.split(":", 1)[0] for e in extra]
