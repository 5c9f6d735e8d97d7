"""Relay control: which recipients a session may send to.

The MX port accepts mail only for local destinations; a remote recipient is
relaying and is refused unless the session is authenticated (submission).

Addresses with routing tricks never become relaying:

- source routes (``@a,@b:user@c``) are dropped by the engine (RFC 5321 4.1.1.3
  and appendix C), so only ``user@c`` is judged;
- the domain decides: it is compared after the router's normalisation (case,
  trailing dot, IDNA), so ``USER@LOCAL.`` is local and ``user@local.evil`` is
  not; IP literals (``user@[192.0.2.1]``) are never local;
- a local part carrying another routing syntax -- the percent hack
  ``user%other@local`` (RFC 1123 5.2.16), UUCP bang paths ``other!user@local``,
  a quoted ``"user@other"@local`` or a ``:`` -- is refused outright for
  unauthenticated clients (`routing_trick`), rather than trusting that no
  later component ever interprets it (as sendmail did).

The policy answers with verdicts (``RelayVerdict``, a reason string); the
SMTP glue (net/smtp_replies.py) turns them into replies.
"""

from __future__ import annotations

import enum

# Characters that route mail in some old syntax when they appear in a local part.
_ROUTING_CHARS = frozenset("%!@:")


def routing_trick(forward_path: str) -> str | None:
    """Why ``forward_path``'s local part looks like a relay attempt, or None.

    ``forward_path`` is the engine's path without angle brackets and source
    route (``local@domain``, the local part possibly quoted).
    """
    if forward_path.lower() == "postmaster":
        return None
    local = forward_path.rpartition("@")[0] or forward_path
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        local = local[1:-1]  # a quoted-pair such as \@ is still an "@"
    found = sorted(_ROUTING_CHARS.intersection(local))
    if found:
        return "routing characters " + " ".join(repr(c) for c in found) + " in the local part"
    return None


class RelayVerdict(enum.Enum):
    """May a recipient the router resolved be accepted?"""

    ALLOWED = "allowed"
    # A remote recipient, and the client may not relay (not authenticated).
    RELAY_DENIED = "relay denied"
    # A remote recipient, and this server has no outbound queue.
    NO_REMOTE_DELIVERY = "no remote delivery"
    # A local alias or list with remote members, and no outbound queue:
    # refused rather than losing the remote copies.
    FORWARDS_UNDELIVERABLE = "forwards undeliverable"


def relay_verdict(remote: bool, forwards_remote: bool, relay_allowed: bool, remote_ok: bool) -> RelayVerdict:
    """The relay decision for one recipient.

    ``remote``: the recipient is at another domain. ``forwards_remote``: a
    local recipient (alias, list) has remote members. ``relay_allowed``: the
    client may send to remote domains (authenticated). ``remote_ok``: this
    server can deliver to remote addresses (an outbound queue exists).
    """
    if remote:
        if not relay_allowed:
            return RelayVerdict.RELAY_DENIED
        if not remote_ok:
            return RelayVerdict.NO_REMOTE_DELIVERY
        return RelayVerdict.ALLOWED
    if forwards_remote and not remote_ok:
        return RelayVerdict.FORWARDS_UNDELIVERABLE
    return RelayVerdict.ALLOWED
