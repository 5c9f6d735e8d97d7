"""Any-state and not-authenticated commands: CAPABILITY NOOP LOGOUT ID
(RFC 2971), LOGIN, AUTHENTICATE (RFC 9051 6.2.2, SASL-IR RFC 4959), ENABLE
(RFC 5161), and STARTTLS (not offered until IMAP gets TLS)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ... import __version__ as VERSION
from ...auth import sasl
from ...auth.passwords import verify_password_async
from ...auth.throttle import Locked, LoginThrottle
from ...protocols.imap import commands as c
from ...protocols.imap.engine import AuthResponse, State
from ...protocols.imap.response import Atom

if TYPE_CHECKING:
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
MAX_AUTH_FAILURES = 3  # per connection, then BYE


def plaintext_ok(s: ImapSession) -> bool:
    """Passwords in the clear only over TLS or loopback (RFC 9051 11.1)."""
    return s.conn.tls or s.conn.is_loopback


def capabilities(s: ImapSession) -> list[str]:
    caps = ["IMAP4rev1", "IMAP4rev2", *EXTENSIONS, f"APPENDLIMIT={s.engine.framer.limits.max_append}"]
    if s.engine.state is State.NOT_AUTHENTICATED:
        if plaintext_ok(s):
            caps += ["SASL-IR", "AUTH=PLAIN"]
        else:
            caps += ["LOGINDISABLED"]
    return caps


def _throttle(s: ImapSession) -> LoginThrottle:
    # one throttle per server, shared by every IMAP session (auth/throttle.py)
    t = getattr(s.server, "imap_login_throttle", None)
    if t is None:
        t = LoginThrottle()
        s.server.imap_login_throttle = t  # type: ignore[attr-defined]
    return t


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
    s.engine.complete("BAD", "STARTTLS is not offered on this port")


async def cmd_enable(s: ImapSession, cmd: c.Enable) -> None:
    new = [x for x in cmd.capabilities if x in ENABLEABLE and x not in s.engine.enabled]
    s.engine.enable(new)
    # RFC 5161 3.1: ENABLED lists only what this command newly enabled
    s.engine.untagged(Atom("ENABLED"), *[Atom(ENABLED_NAMES[x]) for x in new])
    await s.finish("OK", "ENABLE completed")


async def _check_login(s: ImapSession, user: str, password: str) -> str | None:
    """Verify a user name and password; None on success, else the NO text."""
    throttle = _throttle(s)
    now = time.monotonic()
    verdict = throttle.before_attempt(s.conn.peer_ip, user, now)
    if isinstance(verdict, Locked):
        return "Too many failed logins; try again later"
    account = await s.store.get_account(user)
    ok = await verify_password_async(account.password_hash if account else None, password)
    if not ok or account is None:
        throttle.record_failure(s.conn.peer_ip, user, time.monotonic())
        return "Invalid credentials"
    throttle.record_success(s.conn.peer_ip, user, time.monotonic())
    s.account = account
    return None


async def _login_done(s: ImapSession, problem: str | None) -> None:
    if problem is None:
        s.listen()
        s.engine.complete("OK", "Logged in", "CAPABILITY " + " ".join(
            capabilities_after_login(s)))
        return
    s.auth_failures = getattr(s, "auth_failures", 0) + 1
    s.engine.complete("NO", problem, "AUTHENTICATIONFAILED")
    if s.auth_failures >= MAX_AUTH_FAILURES:
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
    if cmd.mechanism not in ("PLAIN",) or not plaintext_ok(s):
        s.engine.complete("NO", f"Unsupported authentication mechanism {cmd.mechanism}", "CANNOT")
        return
    mech = sasl.start(cmd.mechanism)
    ev = mech.begin(cmd.initial_response)
    while True:
        if isinstance(ev, sasl.Challenge):
            s.engine.continuation(ev.wire)
            await s.flush()
            while True:
                reply = s.engine.next_event()
                if isinstance(reply, AuthResponse):
                    break
                data = await s.read()
                if not data:
                    s.engine.bye("Connection closed")
                    return
                s.engine.receive_data(data)
            ev = mech.step(reply.line)
        elif isinstance(ev, sasl.NeedCredentials):
            problem = await _check_login(s, ev.authcid, ev.password)
            ev = mech.provide_result(problem is None)
        elif isinstance(ev, sasl.Success):
            await _login_done(s, None)
            return
        elif isinstance(ev, sasl.Failure):
            if ev.kind == "cancelled":
                # RFC 9051 6.2.2: "*" cancels with BAD
                s.engine.complete("BAD", "Authentication cancelled")
            elif ev.kind in ("malformed", "too-long"):
                s.engine.complete("BAD", "Malformed authentication data")
            else:
                await _login_done(s, "Invalid credentials")
            return
        else:
            s.engine.complete("NO", "Authentication failed", "AUTHENTICATIONFAILED")
            return
