"""Validation and canonical forms of the names the store keys on."""

from __future__ import annotations

import re

from ..message.address import canonical_local_part
from .api import HIERARCHY_DELIMITER, InvalidName

MAX_MAILBOX_NAME = 512
MAX_ADDRESS = 320  # RFC 5321 4.5.3.1.1-2: 64-octet local part + 255-octet domain

# What a domain never holds: white space (``\s`` is str.isspace), controls,
# DEL and ``@<>\"/``; one regex scan rather than a test per character.
_NOT_IN_DOMAIN = re.compile(r'[\s@<>\\"/\x00-\x1f\x7f]')


def normalize_domain(name: str) -> str:
    """Lower-case a domain (RFC 5321 2.4: domains are case-insensitive), IDNA to A-labels."""
    domain = name.strip().rstrip(".").lower()
    # No "/" or controls either: a domain is LDH labels or an address literal
    # (RFC 5321 4.1.2), and names end up in paths and log lines elsewhere.
    if not domain or len(domain) > 255 or _NOT_IN_DOMAIN.search(domain):
        raise InvalidName(f"not a domain name: {name!r}")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidName(f"not a domain name: {name!r}") from None
    return domain


def normalize_address(address: str) -> str:
    """``local@domain`` with the domain canonical; the local part is kept as given
    (lookups compare it case-insensitively, as every mainstream server does)."""
    addr = address.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1]
    local, at, domain = addr.rpartition("@")
    if not at or not local or len(addr) > MAX_ADDRESS or any(ord(c) < 32 or c in "<>" for c in local):
        raise InvalidName(f"not an address: {address!r}")
    return f"{local}@{normalize_domain(domain)}"


def normalize_sender_pattern(pattern: str) -> str:
    """An address an account may also send as, or a pattern of them: ``*``
    stands for any run of characters (``*@example.test``: every address of
    the domain; ``noreply-*@example.test``). The domain is made canonical
    where it has no ``*``, the local part gets its least-quoted form (RFC
    5321 4.1.2)."""
    text = pattern.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local, at, domain = text.rpartition("@")
    if (not at or not local or not domain or len(text) > MAX_ADDRESS
            or any(ord(c) < 32 or ord(c) == 127 or c in "<>" for c in text)):
        raise InvalidName(f"not an address or address pattern: {pattern!r}")
    if "*" in domain:
        if any(c.isspace() or c in "\\\"/" for c in domain):
            raise InvalidName(f"not an address or address pattern: {pattern!r}")
        domain = domain.rstrip(".").lower()
    else:
        domain = normalize_domain(domain)
    return f"{canonical_local_part(local)}@{domain}"


def check_mailbox_name(name: str) -> None:
    """Refuse mailbox names that are empty, too long, carry control characters,
    or play path games (empty or dot-only hierarchy levels)."""
    if not name or len(name) > MAX_MAILBOX_NAME:
        raise InvalidName("a mailbox name must have 1 to 512 characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidName("a mailbox name cannot contain control characters")
    for level in name.split(HIERARCHY_DELIMITER):
        if level.strip() in ("", ".", ".."):
            raise InvalidName(f"bad mailbox name {name!r}: empty, '.' or '..' hierarchy level")
    if "*" in name or "%" in name:
        raise InvalidName("a mailbox name cannot contain the LIST wildcards * and %")


def alias_source(source: str) -> str:
    """An alias source: an address, or ``@domain`` for the domain's catch-all
    (the notation of Postfix's virtual alias maps)."""
    text = source.strip()
    if text.startswith("@"):
        return "@" + normalize_domain(text[1:])
    return normalize_address(text)


def canonical_name(name: str) -> str:
    """``name`` checked (InvalidName), with an INBOX prefix in upper case."""
    check_mailbox_name(name)
    first, sep, rest = name.partition(HIERARCHY_DELIMITER)
    if first.upper() == "INBOX":
        return "INBOX" + sep + rest
    return name


def superior_names(name: str) -> list[str]:
    """The superior names of a canonical mailbox name, outermost first
    ("a/b/c": "a", "a/b"), canonical too (RFC 9051 6.3.4)."""
    levels = name.split(HIERARCHY_DELIMITER)
    return [HIERARCHY_DELIMITER.join(levels[:i]) for i in range(1, len(levels))]
