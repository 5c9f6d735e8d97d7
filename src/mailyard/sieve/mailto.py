"""The ``mailto`` URI (RFC 6068) as the Sieve notification method of RFC
5436 names it: recipients, header fields and body, without I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

MAX_RECIPIENTS = 8


@dataclass
class Mailto:
    """``to`` the addresses (the URI's to-part, ``to``/``cc``/``bcc`` fields),
    ``headers`` the other fields in order (lower-case names), ``body`` the
    ``body`` field or None."""

    to: list[str] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: str | None = None


def _address(text: str) -> str:
    addr = text.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1]
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or any(c in addr for c in " \t\r\n<>,;\"()"):
        raise ValueError(f"bad address {text!r} in the mailto URI")
    return addr


def parse_mailto(uri: str) -> Mailto:
    """Parse ``mailto:to?hname=hvalue&...`` (RFC 6068 2); raises ValueError
    when it is not one, names nobody or names more than MAX_RECIPIENTS."""
    if not uri[:7].lower() == "mailto:":
        raise ValueError(f"not a mailto URI: {uri[:100]!r}")
    rest = uri[7:]
    if any(c in rest for c in " \t\r\n"):
        raise ValueError("a mailto URI holds no white space (RFC 6068 2)")
    to_part, _, query = rest.partition("?")
    out = Mailto()
    for item in to_part.split(","):
        if item:
            out.to.append(_address(unquote(item)))
    for pair in query.split("&") if query else []:
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise ValueError(f"bad header field {pair!r} in the mailto URI")
        hname = unquote(name).lower()
        hvalue = unquote(value)
        if any(c in hname for c in ": \r\n") or not hname.isascii():
            raise ValueError(f"bad header field name {hname!r} in the mailto URI")
        if hname == "body":
            out.body = hvalue
        elif hname in ("to", "cc", "bcc"):
            out.to.extend(_address(a) for a in hvalue.split(",") if a.strip())
            if hname == "cc":
                out.headers.append((hname, hvalue))
        else:
            out.headers.append((hname, hvalue.replace("\r", " ").replace("\n", " ")))
    if not out.to:
        raise ValueError("the mailto URI names no recipient")
    if len(out.to) > MAX_RECIPIENTS:
        raise ValueError(f"the mailto URI names more than {MAX_RECIPIENTS} recipients")
    return out
