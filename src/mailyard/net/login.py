"""Credential checks shared by SMTP AUTH, IMAP and POP3 (issue #5).

- `plaintext_allowed`: may this connection carry a password in the clear
  (LOGIN/USER-PASS, SASL PLAIN and LOGIN)? Over TLS always; otherwise only from
  loopback (``[auth] allow_plaintext_on_loopback``, default on) or when
  ``[auth] allow_plaintext_insecure`` says so (RFC 8314 section 4.1, RFC 4954
  section 4, RFC 9051 section 11.1, RFC 2595 section 2.1).
- `throttle_from_config`: the one `LoginThrottle` of a server, from ``[auth]``.
- `Authenticator`: runs one check under the throttle (growing delay, temporary
  lockout; one counter for every protocol), logs every failure with the
  protocol, user name and client address, and never the secret.

SASL mechanisms (auth/sasl.py) say what they need; `Authenticator.sasl`
answers those needs (password check, SCRAM keys) until the mechanism has a
challenge for the client, a success or a failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ..auth import sasl
from ..auth.passwords import verify_password_async
from ..auth.throttle import Locked, LoginThrottle, ThrottlePolicy

if TYPE_CHECKING:
    from ..config import AuthConfig
    from ..server import MailServer
    from ..store.api import Account
    from .session_protocol import SessionProtocol

log = logging.getLogger("mailyard.auth")

__all__ = ["Authenticator", "plaintext_allowed", "throttle_from_config"]


def throttle_from_config(cfg: AuthConfig) -> LoginThrottle:
    return LoginThrottle(
        ThrottlePolicy(
            base_delay=cfg.base_delay,
            max_delay=cfg.max_delay,
            window=cfg.window,
            account_max_failures=max(1, cfg.account_max_failures),
            account_lockout=cfg.account_lockout,
            ip_max_failures=max(1, cfg.ip_max_failures),
            ip_lockout=cfg.ip_lockout,
        )
    )


def plaintext_allowed(server: MailServer, conn: SessionProtocol) -> bool:
    """True if a password may be sent in the clear on ``conn``."""
    if conn.tls:
        return True
    cfg = server.config.auth
    return cfg.allow_plaintext_insecure or (cfg.allow_plaintext_on_loopback and conn.is_loopback)


def server_throttle(server: MailServer) -> LoginThrottle:
    """The server's shared throttle (created on first use for servers built
    without `MailServer.start`, e.g. in unit tests)."""
    throttle = getattr(server, "throttle", None)
    if throttle is None:
        throttle = throttle_from_config(server.config.auth)
        server.throttle = throttle
    return throttle


def _shown(name: str | None) -> str:
    # User names come from the network: bounded and repr'd in logs.
    return repr(name[:100]) if name is not None else "-"


class Authenticator:
    """Checks credentials for one connection of one protocol."""

    def __init__(self, server: MailServer, conn: SessionProtocol, protocol: str) -> None:
        self.server = server
        self.store = server.store
        self.conn = conn
        self.protocol = protocol
        self.throttle = server_throttle(server)
        self.locked = False  # the last refusal was a lockout (protocols may say so)

    async def _gate(self, name: str | None) -> bool:
        """Wait the throttle's delay; False if the client or account is locked out."""
        throttle, ip = self.throttle, self.conn.peer_ip
        now = time.monotonic()
        verdict = throttle.before_attempt(ip, name, now)
        if isinstance(verdict, Locked):
            self.locked = True
            log.warning(
                "%s login refused: %s locked out (user=%s ip=%s, %.0fs left)",
                self.protocol, verdict.scope, _shown(name), ip, verdict.retry_after(now),
            )
            # Answer no faster than a wrong password would be answered.
            await asyncio.sleep(min(verdict.retry_after(now), throttle.policy.base_delay))
            return False
        self.locked = False
        if verdict > 0:
            await asyncio.sleep(verdict)
        return True

    def failed(self, name: str | None, why: str = "wrong credentials") -> None:
        self.throttle.record_failure(self.conn.peer_ip, name, time.monotonic())
        log.warning("%s login failed: %s user=%s ip=%s", self.protocol, why, _shown(name), self.conn.peer_ip)

    def succeeded(self, account: Account) -> None:
        self.throttle.record_success(self.conn.peer_ip, account.address, time.monotonic())
        log.info(
            "%s login user=%s ip=%s tls=%s", self.protocol, account.address, self.conn.peer_ip,
            "yes" if self.conn.tls else "no",
        )

    async def password(self, name: str, password: str) -> Account | None:
        """The account if ``password`` is right for ``name``, else None (counted).

        An unknown user costs the same hash verification as a known one.
        """
        if not await self._gate(name):
            return None
        account = await self.store.get_account(name)
        ok = await verify_password_async(account.password_hash if account else None, password)
        if not ok or account is None:
            self.failed(name)
            return None
        self.succeeded(account)
        return account

    async def sasl(self, mech: sasl.Mechanism, ev: sasl.Event) -> sasl.Challenge | sasl.Success | sasl.Failure:
        """Answer the mechanism's needs until it has something for the client.

        A `Failure` of kind ``invalid-credentials`` (wrong password, wrong
        SCRAM proof) has been counted and logged already.
        """
        while True:
            if isinstance(ev, sasl.NeedCredentials):
                account = await self.password(ev.authcid, ev.password)
                ev = mech.provide_result(account is not None)
                if isinstance(ev, sasl.Failure):
                    return ev  # counted by password()
            elif isinstance(ev, sasl.NeedScramKeys):
                keys = None
                if await self._gate(ev.authcid):
                    account = await self.store.get_account(ev.authcid)
                    keys = account.scram_sha256 if account is not None else None
                # Locked or unknown: fake keys, so the exchange fails at the proof
                # exactly like a wrong password.
                ev = mech.provide_scram_keys(keys)
            elif isinstance(ev, sasl.Failure):
                if ev.kind in ("invalid-credentials", "authzid") and not self.locked:
                    self.failed(ev.authcid, ev.reason if ev.kind == "authzid" else "wrong credentials")
                else:
                    log.info("%s authentication aborted (%s) ip=%s", self.protocol, ev.kind, self.conn.peer_ip)
                return ev
            elif isinstance(ev, sasl.Success):
                account = await self.store.get_account(ev.authcid)
                if account is None:  # removed during the exchange
                    return sasl.Failure("account vanished", "invalid-credentials", ev.authcid)
                if mech.name.startswith("SCRAM"):
                    self.succeeded(account)  # PLAIN/LOGIN were recorded by password()
                return ev
            else:
                assert isinstance(ev, sasl.Challenge)
                return ev

    async def account(self, success: sasl.Success) -> Account | None:
        return await self.store.get_account(success.authcid)
