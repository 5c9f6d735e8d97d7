"""Relay control: which recipients a session may send to.

The MX port accepts mail only for local destinations; a remote recipient is
relaying and is refused unless the session is authenticated (submission).
Addresses with routing tricks never reach here as "local": the router
normalises the path (source routes are dropped by the engine, RFC 5321 4.1.2
and appendix C), and a local part such as ``user%other.test`` or ``a@b`` in
quotes is just an unknown local user of this domain.
"""

from __future__ import annotations

from ..delivery.router import Resolution, Verdict
from ..protocols.smtp.replies import Reply


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
