"""Addresses: parse address lists, format, split, canonicalise, validate.

What: RFC 5322 3.4 address lists (display names, groups such as
``undisclosed-recipients: ;``, obsolete routes) parsed into small structured
values; ``format_address`` for writing one; ``split_address`` and
``canonical_address`` for the router and the store; ``is_valid_addr_spec``
for SMTP path checks (RFC 5321 4.1.2).

Why: every component compares and prints addresses. Parsing is the stdlib's
RFC 5322 parser (``email._header_value_parser``, the engine behind
``email.policy.default``); this module only shapes its result and adds the
SMTP-side rules the stdlib does not have.

Canonical form (the choice ``canonical_address`` documents): the domain is
lower-cased and converted to its IDNA A-label (``xn--...``) so that
``bücher.example`` and ``xn--bcher-kva.example`` are one domain; the local part
is kept exactly (RFC 5321 2.4: it is case-sensitive in principle, only its
owner may fold case), except ``postmaster`` which RFC 5321 4.5.1 makes
case-insensitive. A-labels are the form DNS uses, so canonical domains can be
looked up directly. The conversion uses the stdlib ``idna`` codec (IDNA 2003);
its output agrees with IDNA 2008 for ordinary names.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email import _header_value_parser as hvp
from email.utils import formataddr

from .headers import check_header_value, decode_words, unfold

__all__ = [
    "Group",
    "Mailbox",
    "canonical_address",
    "canonical_domain",
    "canonical_local_part",
    "format_address",
    "is_valid_addr_spec",
    "is_valid_domain",
    "iter_mailboxes",
    "parse_address",
    "parse_address_list",
    "search_value",
    "split_address",
]

# Longer values are cut before parsing: the stdlib parser copies the rest of
# the value at each token, which is quadratic on megabyte headers. 64 KiB
# holds well over a thousand addresses.
MAX_PARSE_CHARS = 64 * 1024

# RFC 5322 3.2.3 atext, as a regex character-class body.
_ATEXT_CHARS = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"

# A code point no mail contains, standing in for "=?" when encoded words must
# be kept undecoded (IMAP ENVELOPE sends display names as they were written).
_EW_GUARD = "\ufdd0"


@dataclass(frozen=True)
class Mailbox:
    """One mailbox (RFC 5322 3.4): display name, local part, domain.

    ``domain`` is None for an address without one (invalid, but seen in the
    wild); ``route`` holds an obsolete source route (RFC 5322 4.4) as domains.
    """

    display_name: str | None
    local_part: str
    domain: str | None
    route: tuple[str, ...] = ()

    @property
    def addr_spec(self) -> str:
        """``local@domain`` (the local part re-quoted when RFC 5322 needs it)."""
        local = self.local_part
        if not _DOT_ATOM_UTF8.fullmatch(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{local}@{self.domain}" if self.domain is not None else local

    def __str__(self) -> str:
        return format_address(self.display_name, self.addr_spec)


@dataclass(frozen=True)
class Group:
    """RFC 5322 3.4 group: ``name: member, member;`` (members may be none)."""

    name: str
    mailboxes: tuple[Mailbox, ...] = field(default=())


def _text(token: object, keep_words: bool) -> str:
    s = str(token)
    return s.replace(_EW_GUARD, "=?") if keep_words else s


def _mailbox(tok: hvp.Mailbox, keep_words: bool, comment_name: bool = False) -> Mailbox | None:
    try:
        local = tok.local_part
        domain = tok.domain
        name = tok.display_name
        route = tuple(tok.route or ())
        if name is None and comment_name and tok[0].token_type == "addr-spec" and tok.comments:
            # the legacy ``user@domain (Real Name)``: the last comment names the
            # person (RFC 5322 3.4 and 4.4), as Dovecot and Cyrus read it
            name = tok.comments[-1]
    except Exception:
        return None
    if not local:
        return None
    if name is not None:
        name = _text(name, keep_words).strip() or None
    return Mailbox(
        display_name=name,
        local_part=_text(local, keep_words),
        domain=_text(domain, keep_words) if domain else None,
        route=tuple(_text(r, keep_words) for r in route),
    )


def parse_address_list(value: str, *, decode: bool = True, comment_names: bool = False) -> list[Mailbox | Group]:
    """Parse an address-list header value (From, To, Cc, Reply-To, ...).

    RFC 5322 3.4: address-list = address *("," address); address = mailbox /
    group. Obsolete forms (RFC 5322 4.4: routes, empty list members, CFWS
    around dots) are accepted. With ``decode`` (default) RFC 2047 encoded words
    in display names are decoded; with ``decode=False`` they are kept as
    written (IMAP ENVELOPE wants them undecoded). With ``comment_names`` a
    bare addr-spec followed by a comment (``user@domain (Real Name)``) gets
    the comment as its display name. Never raises; unparseable members are
    skipped.
    """
    value = unfold(value)[:MAX_PARSE_CHARS]
    fast = _parse_simple(value)
    if fast is not None:
        return fast
    if not decode:
        value = value.replace("=?", _EW_GUARD)
    try:
        parsed, _rest = hvp.get_address_list(value)
    except Exception:
        return []
    out: list[Mailbox | Group] = []
    for addr in parsed.addresses:
        try:
            first = addr[0]
        except IndexError:
            continue
        if first.token_type == "group":
            members = []
            for mb in first.all_mailboxes:
                m = _mailbox(mb, not decode, comment_names)
                if m is not None:
                    members.append(m)
            try:
                name = first.display_name or ""
            except Exception:  # the stdlib's getter raises IndexError on an empty
                name = ""  # phrase (": x;"), AttributeError on a phrase of dots ("..: x;")
            out.append(Group(_text(name, not decode).strip(), tuple(members)))
        else:
            for mb in addr.all_mailboxes:
                m = _mailbox(mb, not decode, comment_names)
                if m is not None:
                    out.append(m)
    if decode:
        # The stdlib decodes encoded words only where RFC 2047 5 allows them;
        # finish any the phrase parser left as text, tolerantly.
        out = [_decode_item(x) for x in out]
    return out


# Fast path for the common shapes (``a@b.c``, ``Name Words <a@b.c>``, comma
# separated): the stdlib parser costs ~100 us per address, and every delivered
# message has several. Anything with quotes, comments, groups, routes,
# literals, encoded words, obsolete dots in names or non-ASCII takes the full
# parser; test_message_address checks both paths agree.
_SIMPLE_ADDR = rf"[{_ATEXT_CHARS}]+(?:\.[{_ATEXT_CHARS}]+)*@[{_ATEXT_CHARS}]+(?:\.[{_ATEXT_CHARS}]+)*"
_SIMPLE_MEMBER = re.compile(
    rf"(?:(?P<name>[{_ATEXT_CHARS}]+(?: [{_ATEXT_CHARS}]+)*) ?)?<(?P<angle>{_SIMPLE_ADDR})>"
    rf"|(?P<bare>{_SIMPLE_ADDR})")
_NOT_SIMPLE = re.compile(r'[^\x20-\x7e]|["()\\:;\[\]]|=\?')


def _parse_simple(value: str) -> list[Mailbox | Group] | None:
    if _NOT_SIMPLE.search(value):
        return None
    out: list[Mailbox | Group] = []
    for member in value.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        m = _SIMPLE_MEMBER.fullmatch(member)
        if m is None:
            return None
        addr = m.group("angle") or m.group("bare")
        local, _, domain = addr.rpartition("@")
        out.append(Mailbox(m.group("name"), local, domain))
    return out


def _decode_item(item: Mailbox | Group) -> Mailbox | Group:
    if isinstance(item, Group):
        return Group(decode_words(item.name), tuple(_decode_item(m) for m in item.mailboxes))  # type: ignore[misc]
    if item.display_name and "=?" in item.display_name:
        return Mailbox(decode_words(item.display_name), item.local_part, item.domain, item.route)
    return item


# Header fields whose value is an address list (RFC 5322 3.6.2, 3.6.3).
ADDRESS_FIELDS = frozenset({"from", "sender", "reply-to", "to", "cc", "bcc"})


def search_value(name: str, value: str) -> str:
    """What SEARCH FROM/TO/CC/BCC and HEADER match a header field against:
    the decoded field text and, for an address field, each address as
    parsed (``mailbox@host`` and the display name, the forms ENVELOPE gives),
    one per line. So ``<user (comment)@ (comment) example.org>`` is found by
    ``user@example.org`` and ``user@example.org (Real Name)`` by its name.
    ``name`` is the lower-case field name; the result is not case-folded."""
    if name not in ADDRESS_FIELDS:
        return value
    forms = [value]
    for item in parse_address_list(value, comment_names=True):
        if isinstance(item, Group):
            if item.name:
                forms.append(item.name)
            members: Iterable[Mailbox] = item.mailboxes
        else:
            members = (item,)
        for m in members:
            forms.append(f"{m.local_part}@{m.domain}" if m.domain is not None else m.local_part)
            if m.display_name:
                forms.append(m.display_name)
    return "\n".join(forms)


def parse_address(value: str) -> Mailbox | None:
    """The first mailbox of ``value`` (e.g. a From with one author), or None."""
    for m in iter_mailboxes(parse_address_list(value)):
        return m
    return None


def iter_mailboxes(items: Iterable[Mailbox | Group]) -> Iterator[Mailbox]:
    """Flatten groups: every mailbox of an address list, in order."""
    for item in items:
        if isinstance(item, Group):
            yield from item.mailboxes
        else:
            yield item


def format_address(name: str | None, addr: str) -> str:
    """``Name <addr>`` for a header, or ``addr`` alone when there is no name.

    Names with RFC 5322 specials are quoted (3.2.4); non-ASCII names become
    RFC 2047 encoded words in UTF-8. CR/LF in either part raise ValueError.
    """
    check_header_value(addr, "address")
    if name:
        check_header_value(name, "display name")
    if not name:
        return addr
    return formataddr((name, addr), charset="utf-8")


def split_address(addr: str) -> tuple[str, str]:
    """``(local_part, domain)`` of ``local@domain``; domain "" when absent.

    Splits at the last ``@``: a quoted local part may itself contain ``@``
    (RFC 5321 4.1.2). Surrounding angle brackets are removed.
    """
    addr = addr.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1]
    local, at, domain = addr.rpartition("@")
    if not at:
        return addr, ""
    return local, domain


def canonical_domain(domain: str) -> str:
    """Lower-case, trailing dot removed, IDNA A-label form; address literals kept."""
    domain = domain.strip().rstrip(".")
    if domain.startswith("["):
        return domain  # RFC 5321 4.1.3 address literal
    domain = domain.lower()
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            pass  # not a valid IDN: keep the lower-cased U-label form
    return domain


def canonical_local_part(local: str) -> str:
    """The local part with the least quoting (RFC 5321 4.1.2).

    RFC 5321 4.1.2: "all quoted forms MUST be treated as equivalent" when
    local parts are compared, and the minimum quoting possible is the one to
    send. So a Quoted-string whose content is a valid Dot-string is that
    Dot-string (``"alice"`` and ``"al\\ice"`` are ``alice``); any other
    Quoted-string keeps its quotes, with only ``\\`` and ``"`` escaped inside
    (``"a b"``). Case is kept (RFC 5321 2.4); anything not a Quoted-string is
    returned unchanged.
    """
    if len(local) < 2 or not _QUOTED_UTF8.fullmatch(local):
        return local
    content = _QUOTED_PAIR.sub(r"\1", local[1:-1])
    if _DOT_ATOM_UTF8.fullmatch(content):
        return content
    return '"' + content.replace("\\", "\\\\").replace('"', '\\"') + '"'


def canonical_address(addr: str) -> str:
    """The form addresses are compared and stored in (see module docstring).

    RFC 5321 4.5.1: "postmaster" is case-insensitive; other local parts are
    kept as written (RFC 5321 2.4) except for quoting, which is reduced to the
    minimum (``canonical_local_part``, RFC 5321 4.1.2).
    """
    local, domain = split_address(addr)
    local = canonical_local_part(local)
    if local.lower() == "postmaster":
        local = "postmaster"
    if not domain:
        return local
    return f"{local}@{canonical_domain(domain)}"


# --- RFC 5321 4.1.2 / 4.1.3 syntax ------------------------------------------------
# atext (RFC 5322 3.2.3) and, with SMTPUTF8, any non-ASCII UTF-8 (RFC 6531 3.3).
_ATEXT = _ATEXT_CHARS
_DOT_ATOM_ASCII = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_DOT_ATOM_UTF8 = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(?:\.[{_ATEXT}\u0080-\U0010ffff]+)*")
# Quoted-string = DQUOTE *QcontentSMTP DQUOTE; qtextSMTP = %d32-33 / %d35-91 / %d93-126,
# quoted-pairSMTP = "\" %d32-126.
_QUOTED_ASCII = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')
_QUOTED_UTF8 = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"')
_QUOTED_PAIR = re.compile(r"\\([\x20-\x7e])")
# sub-domain = Let-dig [Ldh-str]
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
# General-address-literal = Standardized-tag ":" 1*dcontent
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+")


def is_valid_domain(domain: str, *, smtputf8: bool = False) -> bool:
    """RFC 5321 4.1.2 Domain (dot-separated LDH labels, 255 octets max,
    4.5.3.1.2); with ``smtputf8`` U-labels are allowed (RFC 6531 3.3)."""
    if not domain or len(domain.encode("utf-8")) > 255:
        return False
    if not domain.isascii():
        if not smtputf8:
            return False
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return False
    labels = domain.split(".")
    return all(len(lb) <= 63 and _LABEL.fullmatch(lb) for lb in labels)


def _is_address_literal(lit: str) -> bool:
    # RFC 5321 4.1.3: "[" ( IPv4-address-literal / IPv6-address-literal /
    # General-address-literal ) "]"
    if not (lit.startswith("[") and lit.endswith("]")):
        return False
    inner = lit[1:-1]
    if inner[:5].lower() == "ipv6:":
        try:
            ipaddress.IPv6Address(inner[5:])
            return True
        except ValueError:
            return False
    if re.fullmatch(r"[0-9.]+", inner):
        try:
            ipaddress.IPv4Address(inner)
            return True
        except ValueError:
            return False
    return bool(_GENERAL_LITERAL.fullmatch(inner))


def is_valid_addr_spec(addr: str, *, smtputf8: bool = False) -> bool:
    """Is ``addr`` an RFC 5321 4.1.2 Mailbox (``Local-part "@" (Domain / address-literal)``)?

    Local-part is a Dot-string or a Quoted-string, at most 64 octets
    (4.5.3.1.1). Without ``smtputf8`` only ASCII is allowed; with it, UTF-8 in
    the local part and U-labels in the domain (RFC 6531 3.3).
    """
    if not addr or "@" not in addr:
        return False
    local, _, domain = addr.rpartition("@")
    if not local or len(local.encode("utf-8", "surrogatepass")) > 64:
        return False
    if not smtputf8 and not local.isascii():
        return False
    dot_atom = _DOT_ATOM_UTF8 if smtputf8 else _DOT_ATOM_ASCII
    quoted = _QUOTED_UTF8 if smtputf8 else _QUOTED_ASCII
    if not (dot_atom.fullmatch(local) or quoted.fullmatch(local)):
        return False
    if domain.startswith("["):
        return _is_address_literal(domain)
    return is_valid_domain(domain, smtputf8=smtputf8)
