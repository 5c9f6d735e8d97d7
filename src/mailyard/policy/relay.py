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
"""

from __future__ import annotations

from ..delivery.router import Resolution, Verdict
from ..protocols.smtp.replies import Reply

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


def trick_reply(forward_path: str, reason: str) -> Reply:
    return Reply(550, "5.7.1", f"<{forward_path}>: relaying denied ({reason})")


def rcpt_reply(resolution: Resolution, relay_allowed: bool, remote_ok: bool = False) -> Reply:
    """The reply to RCPT TO for one resolved forward-path.

    ``relay_allowed``: the client may send to remote domains (authenticated).
    ``remote_ok``: this server can deliver to remote addresses (an outbound
    queue exists); an alias or list that forwards off-site needs it too.
    """
    addr = resolution.address
    match resolution.verdict:
        case Verdict.INVALID:
            return Reply(553, "5.1.3", f"<{addr}>: bad address syntax")
        case Verdict.UNKNOWN:
            return Reply(550, "5.1.1", f"<{addr}>: no such user here")
        case Verdict.LOOP:
            return Reply(554, "5.4.6", f"<{addr}>: alias or list expansion loops or is too large")
        case Verdict.REMOTE:
            if not relay_allowed:
                return Reply(550, "5.7.1", f"<{addr}>: relaying denied")
            if not remote_ok:
                return Reply(451, "4.4.0", f"<{addr}>: remote delivery is not available yet")
            return Reply(250, "2.1.5", "Recipient OK")
    if resolution.remote and not remote_ok:
        # An alias/list forwarding off-site: refuse rather than lose the remote copies.
        return Reply(
            550, "5.3.0", f"<{addr}>: forwards to remote addresses, which this server cannot deliver yet"
        )
    return Reply(250, "2.1.5", "Recipient OK")
