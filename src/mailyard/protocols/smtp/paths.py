"""Reverse-path and forward-path syntax (RFC 5321 4.1.2, 4.1.3, RFC 6531 3.3).

``split_path`` separates ``<...>`` from the parameters that follow it;
``parse_reverse_path`` / ``parse_forward_path`` check the path and return the
mailbox with any source route removed (RFC 5321 4.1.1.3 and appendix C:
source routes MUST be accepted, SHOULD be ignored).

Decisions (documented here because the RFC leaves room):

* ``MAIL FROM: <a@b>`` -- a space after the colon -- is accepted; many
  clients send it and it is unambiguous. The caller strips it.
* A path without angle brackets (``MAIL FROM:a@b``, common in old textbook
  telnet sessions) is refused with 501: RFC 5321 4.1.2 makes the brackets
  part of the grammar, and guessing where a bare address ends is how
  parameter-injection bugs start.
* Non-ASCII in a path is accepted only when the transaction carries
  SMTPUTF8 (RFC 6531 3.4); otherwise ``553 5.6.7`` (RFC 6531 3.5).
* Length limits: path at most 256 octets, domain at most 255 (RFC 5321
  4.5.3.1.2-3), answered with ``501 ... Path too long`` (4.5.3.1.9).
"""

from __future__ import annotations

import ipaddress
import re

from .replies import Reply

__all__ = [
    "PathError",
    "split_path",
    "parse_reverse_path",
    "parse_forward_path",
    "is_valid_domain",
]


class PathError(ValueError):
    """A path could not be accepted; ``reply`` is what to answer."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.lines[0])
        self.reply = reply


_U = "\u0080-\U0010ffff"  # RFC 6531 3.3: UTF8-non-ascii extends atext and sub-domain


def _build(utf8: bool) -> re.Pattern[str]:
    u = _U if utf8 else ""
    atom = f"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~{u}-]+"
    dot_string = f"{atom}(?:\\.{atom})*"
    quoted = f'"(?:[\\x20\\x21\\x23-\\x5b\\x5d-\\x7e{u}]|\\\\[\\x20-\\x7e])*"'
    # sub-domain = Let-dig [Ldh-str]; written as alnum runs joined by hyphen
    # runs so the regex cannot backtrack badly.
    sub = f"[A-Za-z0-9{u}]+(?:-+[A-Za-z0-9{u}]+)*"
    domain = f"{sub}(?:\\.{sub})*"
    literal = r"\[[^\[\]\\\s]+\]"
    adl = f"@{domain}(?:,@{domain})*"
    return re.compile(
        f"<(?:{adl}:)?(?P<local>{dot_string}|{quoted})@(?P<domain>{domain}|{literal})>"
    )


_PATH_ASCII = _build(False)
_PATH_UTF8 = _build(True)
_DOMAIN_ASCII = re.compile(r"[A-Za-z0-9]+(?:-+[A-Za-z0-9]+)*(?:\.[A-Za-z0-9]+(?:-+[A-Za-z0-9]+)*)*")
# <...> with quoted strings skipped, so a '>' inside quotes does not end the path.
_BRACKETED = re.compile(r'<(?:[^"<>]|"(?:[^"\\]|\\.)*")*>')
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+")


def split_path(argument: str, *, sender: bool) -> tuple[str, str]:
    """Split ``<path> params`` into the bracketed path and the parameter text.

    Raises ``PathError`` (501) when the argument does not start with a
    bracketed path or the path is not followed by a space or the end.
    """
    m = _BRACKETED.match(argument)
    if m is None:
        raise PathError(_bad(sender, "Syntax: path must be enclosed in <>"))
    rest = argument[m.end() :]
    if rest and not rest.startswith(" "):
        raise PathError(_bad(sender, "Syntax error after path"))
    return m.group(), rest.strip(" ")


def _bad(sender: bool, text: str) -> Reply:
    # RFC 3463: X.1.7 bad sender's mailbox syntax, X.1.3 bad destination syntax.
    return Reply(501, "5.1.7" if sender else "5.1.3", text)


def _check_mailbox(path: str, *, utf8: bool, sender: bool) -> str:
    if len(path.encode("utf-8", "surrogatepass")) > 256:
        raise PathError(_bad(sender, "Path too long"))  # RFC 5321 4.5.3.1.3
    if not path.isascii() and not utf8:
        # RFC 6531 3.5: non-ASCII address without SMTPUTF8 in MAIL.
        raise PathError(Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8"))
    m = (_PATH_UTF8 if utf8 else _PATH_ASCII).fullmatch(path)
    if m is None:
        raise PathError(_bad(sender, "Bad address syntax"))
    domain = m.group("domain")
    if domain.startswith("["):
        if not _valid_literal(domain[1:-1]):
            raise PathError(_bad(sender, "Bad address literal"))
    elif len(domain.encode("utf-8", "surrogatepass")) > 255:
        raise PathError(_bad(sender, "Domain too long"))  # RFC 5321 4.5.3.1.2
    # Source route (A-d-l) dropped: only Local-part@Domain is kept.
    return f"{m.group('local')}@{domain}"


def _valid_literal(inner: str) -> bool:
    """RFC 5321 4.1.3 address literals: IPv4, IPv6:..., or tag:content."""
    if inner[:5].lower() == "ipv6:":
        try:
            ipaddress.IPv6Address(inner[5:])
        except ValueError:
            return False
        return True
    if inner[:1].isdigit():
        try:
            ipaddress.IPv4Address(inner)
        except ValueError:
            return False
        return True
    return _GENERAL_LITERAL.fullmatch(inner) is not None


def parse_reverse_path(path: str, *, utf8: bool) -> str:
    """``<>`` -> ``''``; otherwise the mailbox (RFC 5321 4.1.1.2, 4.1.2)."""
    if path == "<>":
        return ""  # null reverse-path: bounces and other notifications (RFC 5321 3.6.3)
    return _check_mailbox(path, utf8=utf8, sender=True)


def parse_forward_path(path: str, *, utf8: bool) -> str:
    """The recipient mailbox; ``<Postmaster>`` (any case) -> ``postmaster``.

    RFC 5321 4.1.1.3 / 4.5.1: the domain-less ``<Postmaster>`` MUST be
    accepted; we hand it to the glue as the bare word ``postmaster``.
    """
    if path.lower() == "<postmaster>":
        return "postmaster"
    if path == "<>":
        raise PathError(_bad(False, "Null forward-path not allowed"))
    return _check_mailbox(path, utf8=utf8, sender=False)


def is_valid_domain(name: str) -> bool:
    """True for an ASCII domain or an address literal (EHLO argument, 4.1.1.1)."""
    if name.startswith("[") and name.endswith("]"):
        return _valid_literal(name[1:-1])
    return len(name) <= 255 and _DOMAIN_ASCII.fullmatch(name) is not None
