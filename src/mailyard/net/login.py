"""Login glue shared by SMTP AUTH, IMAP and POP3.

- `plaintext_allowed`: may this connection carry a password in the clear
  (LOGIN/USER-PASS, SASL PLAIN and LOGIN)? Over TLS always; otherwise only from
  loopback (``[auth] allow_plaintext_on_loopback``, default on) or when
  ``[auth] allow_plaintext_insecure`` says so (RFC 8314 section 4.1, RFC 4954
  section 4, RFC 9051 section 11.1, RFC 2595 section 2.1).
- `throttle_from_config`: the one `LoginThrottle` of a server, from ``[auth]``.
- `Authenticator`: the login service's session (auth/service.py) for one
  connection: every check of every protocol goes through the one service, so
  delays, lockouts, the temporary refusal and the SASL exchange deadline
  behave the same everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..auth.service import LoginSession, TryLater, too_slow
from ..auth.throttle import LoginThrottle, ThrottlePolicy

if TYPE_CHECKING:
    from ..auth import sasl
    from ..config import AuthConfig, StoreConfig
    from ..services import Services
    from .session_protocol import SessionProtocol

__all__ = ["Authenticator", "TryLater", "owed_expiry", "plaintext_allowed", "throttle_from_config", "too_slow"]


def throttle_from_config(cfg: AuthConfig, store: StoreConfig | None = None) -> LoginThrottle:
    """The login throttle of ``[auth]``: in this process, or, on a store in
    PostgreSQL (several nodes), in that database (auth/throttle_db.py)."""
    policy = ThrottlePolicy(
        base_delay=cfg.base_delay,
        max_delay=cfg.max_delay,
        window=cfg.window,
        account_max_failures=max(1, cfg.account_max_failures),
        account_lockout=cfg.account_lockout,
        ip_max_failures=max(1, cfg.ip_max_failures),
        ip_lockout=cfg.ip_lockout,
    )
    if store is not None and store.backend == "postgresql" and store.dsn:
        from ..auth.throttle_db import DatabaseThrottle

        return DatabaseThrottle(store.dsn, policy)
    return LoginThrottle(policy)


def plaintext_allowed(services: Services, conn: SessionProtocol) -> bool:
    """True if a password may be sent in the clear on ``conn``."""
    if conn.tls:
        return True
    cfg = services.config.auth
    return cfg.allow_plaintext_insecure or (cfg.allow_plaintext_on_loopback and conn.is_loopback)


class Authenticator(LoginSession):
    """The login session of one connection of one protocol, under the
    exchange deadline of ``[limits] sasl_deadline``: when it passes while the
    client was to answer a challenge, the connection's ``sasl_expired``
    sends the protocol's failure reply."""

    def __init__(self, services: Services, conn: SessionProtocol, protocol: str) -> None:
        super().__init__(services.login, conn.peer_ip, protocol, lambda: conn.tls,
                         deadline=services.config.limits.sasl_deadline, on_expired=conn.sasl_expired)
        self.conn = conn


def owed_expiry(auth: LoginSession | None, mech: sasl.Mechanism | None, waiting: bool) -> sasl.Failure | None:
    """The failure the exchange deadline left owed for ``mech``, handed over
    once (`LoginSession.expiry`), while the protocol waits for the client's
    answer to a challenge (``waiting``); None when there is none to send now.
    Each protocol's ``end_sasl`` answers it in its own words."""
    if mech is None or auth is None or not waiting:
        return None
    return auth.expiry(mech)
