"""ManageSieve glue (RFC 5804): feeds socket bytes to the sans-I/O engine
(protocols/managesieve/engine.py) and carries out what it asks: logins
through the server's login service (auth/service.py: every failure counted
and logged as for IMAP, POP3 and SMTP), STARTTLS, and the account's scripts
(delivery/sieve.py ``ScriptStore``: checked when stored, RFC 5804 2.6).

SASL PLAIN and SCRAM-SHA-256 are offered; PLAIN only under TLS unless
``[auth]`` allows clear-text passwords (on loopback by default). The
SIEVE capability lists exactly the extensions the interpreter implements.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..auth import sasl
from ..delivery.sieve import MAX_SCRIPT_BYTES, MAX_SCRIPTS, ScriptProblem, ScriptStore, check_name
from ..protocols.contract import Closed
from ..protocols.managesieve.engine import (
    Authenticate,
    BadSASLResponse,
    ManageSieveServer,
    SASLResponse,
    ScriptCommand,
    StartTLS,
    quote,
)
from ..sieve import EXTENSIONS, SieveError, compile_script
from ..store.api import Account, StoreUnavailable
from .listener import Listener
from .login import Authenticator, owed_expiry, plaintext_allowed, too_slow
from .session_protocol import SessionProtocol

if TYPE_CHECKING:
    from ..services import Services

log = logging.getLogger("mailyard.managesieve")

MAX_LOGIN_FAILURES = 3  # per connection, then BYE
# The answer while the store cannot be reached (its database down, or closed
# as the server stops): RFC 5804 1.3 TRYLATER, a temporary failure.
STORE_UNAVAILABLE = "the mail store is unavailable, try again later"
# What NO says for a SASL exchange that failed before any credentials were
# checked (RFC 5804 2.1: any human-readable text); the rest get
# "authentication failed".
SASL_FAILURE_TEXT = {
    "cancelled": "authentication cancelled",
    "malformed": "cannot decode the authentication data",
    "too-long": "authentication data too long",
    "protocol": "authentication exchange out of order",
}


def _refusal(failure: sasl.Failure | None) -> tuple[str, str | None]:
    """The text and response code of the NO that refuses a login for its
    SASL ``failure`` (None: the account vanished): TRYLATER (RFC 5804 1.3)
    for a temporary failure, whatever the password; its text says which
    (over a login limit, or a right SCRAM proof whose exchange the deadline
    ended)."""
    kind = failure.kind if failure is not None else None
    if failure is not None and too_slow(failure):
        return "authentication took too long, try again", "TRYLATER"
    if kind == "temporary":
        return "too many failed logins, try again later", "TRYLATER"
    return SASL_FAILURE_TEXT.get(kind or "", "authentication failed"), None


class ManageSieveSession(SessionProtocol):
    protocol_label = "managesieve"

    def __init__(self, services: Services, listener: Listener) -> None:
        super().__init__(listener)
        self.services = services
        sieve = services.sieve
        self.scripts: ScriptStore | None = sieve.scripts if sieve is not None else None
        self.engine: ManageSieveServer | None = None
        self.account: Account | None = None
        self._auth: Authenticator | None = None
        self._mech: sasl.Mechanism | None = None
        self._failures = 0

    def _mechanisms(self) -> list[str]:
        return ["PLAIN", "SCRAM-SHA-256"] if plaintext_allowed(self.services, self) else ["SCRAM-SHA-256"]

    def start(self) -> None:
        tls = self.services.tls
        limits = self.services.config.limits
        self.engine = ManageSieveServer(
            capabilities=[
                ("IMPLEMENTATION", f"mailyard {__version__}"),
                ("SIEVE", " ".join(EXTENSIONS)),
                ("MAXREDIRECTS", str(4)),
                ("VERSION", "1.0"),
            ],
            sasl_mechanisms=self._mechanisms(),
            tls_available=tls is not None and not self.tls,
            max_literal=MAX_SCRIPT_BYTES,
            max_command_unauthenticated=limits.managesieve_max_command_unauthenticated,
            max_bad_commands=limits.max_bad_commands,
        )
        self.set_timeout(limits.idle_timeout)
        self.write(self.engine.data_to_send())

    def received(self, data: bytes) -> None:
        assert self.engine is not None
        self.engine.receive_data(data)

    def on_event(self, event: Any) -> Coroutine[Any, Any, None] | None:
        if isinstance(event, ScriptCommand):
            return self.script_step(event)
        return self.step(event)

    def goodbye(self) -> bytes:
        return b'BYE "server shutting down"\r\n'

    def refusal(self, reason: str) -> bytes:
        return b"BYE (TRYLATER) " + quote(reason) + b"\r\n"

    def on_timeout(self) -> bytes:
        return b'BYE "idle for too long"\r\n'

    def input_state(self) -> tuple[bool, int, float]:
        engine = self.engine
        if engine is None:
            return False, 0, 0.0
        return engine.partial_input, engine.lines_completed, self.listener.limits.command_deadline

    def ended(self, event: Closed) -> None:
        if self._auth is not None:
            self._auth.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._auth is not None:
            self._auth.close()

    # --- logins and TLS -----------------------------------------------------------
    async def step(self, event: Any) -> None:
        engine = self.engine
        assert engine is not None
        if isinstance(event, StartTLS):
            tls = self.services.tls
            assert tls is not None

            def forget() -> None:
                engine.sasl_mechanisms = ["PLAIN", "SCRAM-SHA-256"]
                engine.tls_started()

            await self.upgrade_tls(tls.context, forget=forget)
            return
        if not isinstance(event, Authenticate | SASLResponse | BadSASLResponse):
            return
        try:
            await self._login(engine, event)
        except StoreUnavailable as exc:
            # the login service could not look the name up: a temporary
            # failure; it counts against the connection's logins like any
            # refusal, so one connection cannot try without end
            self._mech = None
            self._failures += 1
            log.info("managesieve: login from %s refused for now: %s", self.peer_ip, exc)
            engine.login_failed(STORE_UNAVAILABLE, "TRYLATER", close=self._failures >= MAX_LOGIN_FAILURES)

    async def _login(self, engine: ManageSieveServer, event: Authenticate | SASLResponse | BadSASLResponse) -> None:
        if self._auth is None:
            self._auth = Authenticator(self.services, self, self.listener.name)
        if isinstance(event, Authenticate):
            self._mech = sasl.start(event.mechanism)
            ev = self._mech.begin(event.initial_response)
        elif isinstance(event, BadSASLResponse):
            # not a string: the exchange ends now, as for a message that does
            # not decode (a reserved attempt is settled as a failure)
            assert self._mech is not None
            ev = sasl.Failure("SASL response is not a string", "malformed", self._mech.authcid)
        else:
            assert self._mech is not None
            ev = self._mech.step(event.data)
        result = await self._auth.sasl(self._mech, ev)
        if isinstance(result, sasl.Challenge):
            engine.sasl_challenge(result.wire)
            return
        self._mech = None
        if isinstance(result, sasl.Success):
            account = await self._auth.account(result)
            if account is not None:
                self.account = account.without_secrets()
                engine.login_ok()
                return
        self._failures += 1
        text, code = _refusal(result if isinstance(result, sasl.Failure) else None)
        engine.login_failed(text, code, close=self._failures >= MAX_LOGIN_FAILURES)

    def end_sasl(self) -> bool:
        engine = self.engine
        failure = owed_expiry(self._auth, self._mech, engine is not None and engine.awaiting_sasl_response)
        if failure is None or engine is None:
            return False
        self._mech = None
        self._failures += 1  # settled by the login session; answered as `_login` answers it
        engine.end_sasl(*_refusal(failure), close=self._failures >= MAX_LOGIN_FAILURES)
        return True

    # --- scripts (RFC 5804 2.6-2.13) ----------------------------------------------
    async def script_step(self, event: ScriptCommand) -> None:
        """A script command, its file work and compiling off the event loop
        (a 256 KiB script takes a while to check): other sessions go on."""
        engine = self.engine
        assert engine is not None
        if event.name == "UNAUTHENTICATE":
            self.account = None
            engine.respond(True, "")
            return
        account, scripts = self.account, self.scripts
        if account is None or scripts is None:
            engine.respond(False, "Sieve is turned off on this server")
            return
        try:
            current = await self.services.store.credentials_current(account.id, account.epoch)
        except StoreUnavailable as exc:
            # the credentials cannot be checked: no script work, and the
            # session goes on (the next command asks the store again)
            log.info("managesieve: %s for %s refused for now: %s", event.name, account.address, exc)
            engine.respond(False, STORE_UNAVAILABLE, "TRYLATER")
            return
        if not current:
            engine.respond(False, "the account was removed or its password changed", "AUTH-TOO-WEAK")
            return
        ok, text, code, data = await asyncio.to_thread(self.script_command, scripts, account, event)
        if not self.closed:
            engine.respond(ok, text, code, data)

    def script_command(self, scripts: ScriptStore, account: Account,
                       event: ScriptCommand) -> tuple[bool, str, str | None, bytes]:
        """(OK?, text, response code, data lines) for one script command."""
        try:
            return self._script_command(scripts, account, event)
        except ScriptProblem as exc:
            text = str(exc)
            code = ("NONEXISTENT" if text.startswith("no script") else "ACTIVE" if "active" in text
                    else "ALREADYEXISTS" if "exists already" in text
                    else "QUOTA/MAXSCRIPTS" if "too many" in text
                    else "QUOTA/MAXSIZE" if "too large" in text else None)
            return False, text, code, b""
        except OSError as exc:
            log.error("managesieve %s for %s failed: %s", event.name, account.address, exc)
            return False, "the scripts cannot be read or written now", "TRYLATER", b""

    def _script_command(self, scripts: ScriptStore, account: Account,
                        event: ScriptCommand) -> tuple[bool, str, str | None, bytes]:
        name, args = event.name, event.args
        if name == "LISTSCRIPTS":
            data = b"".join(quote(n) + (b" ACTIVE" if active else b"") + b"\r\n"
                            for n, active in scripts.list(account.id))
            return True, "listscripts completed", None, data
        if name == "GETSCRIPT":
            text = scripts.get(account.id, args[0]).encode("utf-8")
            return True, "getscript completed", None, b"{%d}\r\n" % len(text) + text + b"\r\n"
        if name in ("PUTSCRIPT", "CHECKSCRIPT"):
            try:
                source = args[-1].decode("utf-8")
            except UnicodeDecodeError:
                return False, "the script is not UTF-8", None, b""
            try:
                if name == "PUTSCRIPT":
                    scripts.put(account.id, args[0], source)
                else:
                    compile_script(source)
            except SieveError as exc:
                return False, str(exc), None, b""
            return True, f"{name.lower()} completed", None, b""
        if name == "SETACTIVE":
            scripts.activate(account.id, args[0] or None)  # RFC 5804 2.8: "" deactivates
            return True, "setactive completed", None, b""
        if name == "DELETESCRIPT":
            scripts.delete(account.id, args[0])
            return True, "deletescript completed", None, b""
        if name == "RENAMESCRIPT":
            scripts.rename(account.id, args[0], args[1])
            return True, "renamescript completed", None, b""
        # HAVESPACE
        check_name(args[0])
        names = [n for n, _ in scripts.list(account.id)]
        if args[1] > MAX_SCRIPT_BYTES:
            return False, f"scripts are limited to {MAX_SCRIPT_BYTES} octets", "QUOTA/MAXSIZE", b""
        if args[0] not in names and len(names) >= MAX_SCRIPTS:
            return False, f"at most {MAX_SCRIPTS} scripts", "QUOTA/MAXSCRIPTS", b""
        return True, "putscript would succeed", None, b""


def managesieve_protocol(services: Services, listener: Listener) -> ManageSieveSession:
    """The ManageSieve port: 4190 (RFC 5804 1.8), 24190 in development."""
    return ManageSieveSession(services, listener)

