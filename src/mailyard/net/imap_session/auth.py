"""Any-state and not-authenticated commands: CAPABILITY NOOP LOGOUT ID
(RFC 2971), LOGIN, AUTHENTICATE (RFC 9051 6.2.2, SASL-IR RFC 4959), ENABLE
(RFC 5161), and STARTTLS (RFC 9051 6.2.1).

Mechanisms: SCRAM-SHA-256 (RFC 7677) always; PLAIN and LOGIN, like the LOGIN
command, only where passwords may travel in the clear (TLS, or loopback by
default; net/login.py). Elsewhere the greeting says LOGINDISABLED and they get
NO [PRIVACYREQUIRED]. Failures count against the server's one login throttle."""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING

from ... import __version__ as VERSION
from ...auth import sasl
from ...protocols.imap import commands as c
from ...protocols.imap.engine import AuthResponse, ImapEngine, State
from ...protocols.imap.response import Atom
from ..login import Authenticator, TryLater, plaintext_allowed

log = logging.getLogger("mailyard.imap")

if TYPE_CHECKING:
    from ..tls import ReloadableTLS
    from .core import ImapSession

# ENABLE-able extensions (RFC 5161 4): IMAP4rev2 (RFC 9051 6.3.1),
# CONDSTORE/QRESYNC (RFC 7162), UTF8=ACCEPT (RFC 6855).
ENABLEABLE = ("IMAP4REV2", "CONDSTORE", "QRESYNC", "UTF8=ACCEPT")
ENABLED_NAMES = {"IMAP4REV2": "IMAP4rev2", "CONDSTORE": "CONDSTORE", "QRESYNC": "QRESYNC",
                 "UTF8=ACCEPT": "UTF8=ACCEPT"}

EXTENSIONS = (
    "LITERAL+", "ENABLE", "IDLE", "ID", "NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE",
    "CHILDREN", "LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE", "CREATE-SPECIAL-USE",
    "ESEARCH", "SEARCHRES", "WITHIN", "CONDSTORE", "QRESYNC", "BINARY", "MULTIAPPEND",
    "UTF8=ACCEPT", "STATUS=SIZE",
)


def plaintext_ok(s: ImapSession) -> bool:
    """Passwords in the clear only over TLS, or from loopback (configurable,
    net/login.py; RFC 9051 11.1)."""
    return plaintext_allowed(s.server, s)


def _tls(s: ImapSession) -> ReloadableTLS | None:
    return getattr(s.server, "tls", None)


def capabilities(s: ImapSession) -> list[str]:
    caps = ["IMAP4rev1", "IMAP4rev2", *EXTENSIONS, f"APPENDLIMIT={s.engine.framer.limits.max_append}"]
    if s.engine.state is State.NOT_AUTHENTICATED:
        if not s.tls and _tls(s) is not None:
            caps.append("STARTTLS")  # RFC 9051 6.2.1
        caps.append("SASL-IR")  # RFC 4959
        if plaintext_ok(s):
            caps += ["AUTH=SCRAM-SHA-256", "AUTH=PLAIN", "AUTH=LOGIN"]
        else:
            # RFC 9051 6.2.3: LOGIN refused until TLS; the clear-text mechanisms
            # are not offered either (as Dovecot does) and get [PRIVACYREQUIRED].
            caps += ["AUTH=SCRAM-SHA-256", "LOGINDISABLED"]
    return caps


async def cmd_capability(s: ImapSession, cmd: c.Command) -> None:
    s.engine.untagged(Atom("CAPABILITY"), *[Atom(x) for x in capabilities(s)])
    await s.finish("OK", "CAPABILITY completed")


async def cmd_noop(s: ImapSession, cmd: c.Command) -> None:
    # RFC 9051 6.1.2: NOOP is the polling point for untagged updates
    await s.finish("OK", f"{cmd.name} completed")


async def cmd_logout(s: ImapSession, cmd: c.Command) -> None:
    s.engine.untagged_status("BYE", "mailyard IMAP server logging out")
    s.engine.complete("OK", "LOGOUT completed")


async def cmd_id(s: ImapSession, cmd: c.Command) -> None:
    # RFC 2971 3.1: the server answers with its own identification
    s.engine.untagged(Atom("ID"), ["name", "mailyard", "version", VERSION])
    await s.finish("OK", "ID completed")


async def cmd_starttls(s: ImapSession, cmd: c.Command) -> None:
    tls = _tls(s)
    if tls is None or s.tls:
        s.engine.complete("BAD", "STARTTLS is not available" if tls is None else "TLS is already active")
        return
    # RFC 9051 6.2.1: OK, then the TLS negotiation starts right after the CRLF.
    s.engine.complete("OK", "Begin TLS negotiation now")
    await s.flush()
    # RFC 9051 6.2.1 / RFC 3207 4.2: discard everything learned before TLS,
    # including commands pipelined after STARTTLS in the clear (injection).
    # Before the handshake, not after: asyncio delivers what the client sent
    # with its TLS Finished before this coroutine resumes.
    s.engine = ImapEngine(s.engine.framer.limits)
    try:
        await s.start_tls(tls.context)
    except (ssl.SSLError, OSError, ConnectionError) as exc:
        log.info("imap STARTTLS handshake with %s failed: %s", s.peer_ip, exc)
        s.engine.bye("TLS negotiation failed")
        s.engine.data_to_send()  # nothing more can be sent on this connection
        raise ConnectionError("TLS handshake failed") from exc
    s.auth_failures = 0


async def cmd_enable(s: ImapSession, cmd: c.Enable) -> None:
    new = [x for x in cmd.capabilities if x in ENABLEABLE and x not in s.engine.enabled]
    s.engine.enable(new)
    # RFC 5161 3.1: ENABLED lists only what this command newly enabled
    s.engine.untagged(Atom("ENABLED"), *[Atom(ENABLED_NAMES[x]) for x in new])
    await s.finish("OK", "ENABLE completed")


def _authenticator(s: ImapSession) -> Authenticator:
    auth = getattr(s, "authenticator", None)
    if auth is None:
        auth = s.authenticator = Authenticator(s.server, s, "imap")
    return auth


# The two refusals: a wrong password or unknown name (RFC 9051 7.1
# AUTHENTICATIONFAILED), and over a login limit, whatever the password
# (UNAVAILABLE: "temporary failure because a subsystem is down").
INVALID = ("Invalid credentials", "AUTHENTICATIONFAILED")
TRY_LATER = ("Too many failed logins, try again later", "UNAVAILABLE")


async def _check_login(s: ImapSession, user: str, password: str) -> tuple[str, str] | None:
    """Verify a user name and password; None on success, else the NO text and code."""
    result = await _authenticator(s).password(user, password)
    if isinstance(result, TryLater):
        return TRY_LATER
    if result is None:
        return INVALID
    s.account = result
    return None


async def _login_done(s: ImapSession, problem: tuple[str, str] | None) -> None:
    if problem is None:
        s.listen()
        s.engine.complete("OK", "Logged in", "CAPABILITY " + " ".join(
            capabilities_after_login(s)))
        return
    s.auth_failures = getattr(s, "auth_failures", 0) + 1
    s.engine.complete("NO", *problem)
    # [auth] imap_connection_max_failures: failed logins on one connection, then BYE.
    if s.auth_failures >= max(1, s.server.config.auth.imap_connection_max_failures):
        s.engine.bye("Too many failed logins")


def capabilities_after_login(s: ImapSession) -> list[str]:
    return ["IMAP4rev1", "IMAP4rev2", *EXTENSIONS, f"APPENDLIMIT={s.engine.framer.limits.max_append}"]


async def cmd_login(s: ImapSession, cmd: c.Login) -> None:
    if not plaintext_ok(s):
        # RFC 9051 6.2.3: LOGIN must be refused when LOGINDISABLED is advertised
        s.engine.complete("NO", "Use TLS first", "PRIVACYREQUIRED")
        return
    await _login_done(s, await _check_login(s, cmd.userid, cmd.password))


async def cmd_authenticate(s: ImapSession, cmd: c.Authenticate) -> None:
    name = cmd.mechanism.upper()
    if name not in sasl.MECHANISMS:
        s.engine.complete("NO", f"Unsupported authentication mechanism {cmd.mechanism}", "CANNOT")
        return
    if name in sasl.PLAINTEXT_MECHANISMS and not plaintext_ok(s):
        s.engine.complete("NO", "Use TLS first, or SCRAM-SHA-256", "PRIVACYREQUIRED")
        return
    auth = _authenticator(s)
    mech = sasl.start(name)
    ev = await auth.sasl(mech, mech.begin(cmd.initial_response))
    while isinstance(ev, sasl.Challenge):
        # RFC 9051 6.2.2: "+ base64" continuation; the client answers one line.
        s.engine.continuation(ev.wire)
        await s.flush()
        while True:
            reply = s.engine.next_event()
            if isinstance(reply, AuthResponse):
                break
            if not await s.more_input():
                auth.close()  # an exchange left open counts as a failure
                s.engine.bye("Connection closed")
                return
        ev = await auth.sasl(mech, mech.step(reply.line))
    if isinstance(ev, sasl.Success):
        account = await auth.account(ev)
        if account is not None:
            s.account = account
            await _login_done(s, None)
            return
        await _login_done(s, INVALID)
        return
    if ev.kind == "temporary":
        await _login_done(s, TRY_LATER)
    elif ev.kind == "cancelled":
        # RFC 9051 6.2.2: "*" cancels with BAD
        s.engine.complete("BAD", "Authentication cancelled")
    elif ev.kind in ("malformed", "too-long", "protocol"):
        s.engine.complete("BAD", "Malformed authentication data")
    else:
        await _login_done(s, INVALID)
