"""The people a message is from and to, as (display name, addr-spec) pairs:
what the address book's suggestions count (store ``note_correspondents``)."""

from __future__ import annotations

from collections.abc import Iterable

from .address import iter_mailboxes, parse_address_list
from .headers import bytes_to_text, split_fields
from .parse import split_header_body

MAX_HEADER = 64 * 1024  # a header block longer than this is read only that far
MAX_ADDRESSES = 100


def header_mailboxes(data: bytes, names: Iterable[str]) -> list[tuple[str, str]]:
    """The mailboxes of the address fields ``names`` (lower-case, e.g.
    ``from``; RFC 5322 3.6.2, 3.6.3) of the message ``data``, names decoded
    (RFC 2047), in header order, each address once; bounded."""
    wanted = set(names)
    header, _ = split_header_body(data[:MAX_HEADER])
    out: dict[str, tuple[str, str]] = {}
    for name, value in split_fields(header):
        if name.lower() not in wanted:
            continue
        for mailbox in iter_mailboxes(parse_address_list(bytes_to_text(value))):
            if mailbox.domain and len(out) < MAX_ADDRESSES:
                out.setdefault(mailbox.addr_spec.casefold(), (mailbox.display_name or "", mailbox.addr_spec))
    return list(out.values())
