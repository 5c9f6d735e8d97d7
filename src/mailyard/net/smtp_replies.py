"""SMTP replies to RCPT TO for the router's and the relay policy's verdicts.

The router (delivery/router.py) says where a forward-path goes and the relay
policy (policy/relay.py) whether this client may send there; both answer
with verdicts, and this SMTP glue maps them to reply codes (RFC 5321 4.2.2,
enhanced status codes RFC 3463).
"""

from __future__ import annotations

from ..delivery.router import Resolution, Verdict
from ..policy.relay import RelayVerdict, relay_verdict
from ..protocols.smtp.replies import Reply


def trick_reply(forward_path: str, reason: str) -> Reply:
    """A local part with a routing syntax (``policy.relay.routing_trick``)."""
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
    verdict = relay_verdict(
        remote=resolution.verdict is Verdict.REMOTE,
        forwards_remote=bool(resolution.remote),
        relay_allowed=relay_allowed,
        remote_ok=remote_ok,
    )
    match verdict:
        case RelayVerdict.RELAY_DENIED:
            return Reply(550, "5.7.1", f"<{addr}>: relaying denied")
        case RelayVerdict.NO_REMOTE_DELIVERY:
            return Reply(451, "4.4.0", f"<{addr}>: remote delivery is not available yet")
        case RelayVerdict.FORWARDS_UNDELIVERABLE:
            return Reply(
                550, "5.3.0", f"<{addr}>: forwards to remote addresses, which this server cannot deliver yet"
            )
    return Reply(250, "2.1.5", "Recipient OK")
