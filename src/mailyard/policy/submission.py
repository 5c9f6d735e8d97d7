"""Message submission policy (RFC 6409) for the SMTP submission ports.

- `sender_allowed`: an authenticated user may use as reverse-path only an
  address they own: their account's address, or an alias every target of
  which is that account (RFC 6409 4.3 lets the MSA enforce this; else the
  glue answers ``553 5.7.1``). The null reverse-path ``<>`` is allowed
  (RFC 8098 asks MDNs to use it).
- `complete_message`: add Date and Message-ID when missing (RFC 6409 8.2,
  8.3), at the end of the header section so the rest stays byte-identical.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..message.dates import format_date
from ..message.msgid import make_msgid
from ..store.api import InvalidName
from ..store.names import normalize_address

if TYPE_CHECKING:
    from ..store.api import Account, Store

__all__ = ["complete_message", "sender_allowed"]


async def sender_allowed(store: Store, account: Account, reverse_path: str) -> bool:
    """True if ``account`` may send with MAIL FROM ``reverse_path``."""
    if reverse_path == "":
        return True
    try:
        address = normalize_address(reverse_path)
    except InvalidName:
        return False
    own = account.address.casefold()
    if address.casefold() == own:
        return True
    targets = await store.get_alias(address)
    return bool(targets) and all(t.strip().casefold() == own for t in targets)


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
