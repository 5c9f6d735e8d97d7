"""Any-state and not-authenticated commands: CAPABILITY NOOP CHECK LOGOUT ID
(RFC 2971), LOGIN, AUTHENTICATE (RFC 9051 6.2.2, SASL-IR RFC 4959), ENABLE
(RFC 5161), STARTTLS (RFC 9051 6.2.1), COMPRESS (RFC 4978), IDLE (RFC 2177)
and UNAUTHENTICATE (RFC 8437).

Passwords in the clear (LOGIN, and the SASL mechanisms the login service
marks as clear-text) only where `ImapLogin.plaintext_ok` says so: over TLS,
or from loopback by default. Elsewhere the capabilities say LOGINDISABLED and
such attempts get NO [PRIVACYREQUIRED]. The login service counts failures
(throttle) and may refuse any login for a while (NO [UNAVAILABLE]); the
engine counts both refusals and ends the session with BYE once the
failed-login budget (``AbuseBudgets.max_auth_failures``) is used up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import commands as c
from ..backend import LoginRefused, SaslChallenge
from ..engine import AuthResponse
from ..response import Atom

if TYPE_CHECKING:
    from ..backend import ImapBackend
    from ..session import ImapSession

# ENABLE-able extensions (RFC 5161 4): IMAP4rev2 (RFC 9051 6.3.1),
# CONDSTORE/QRESYNC (RFC 7162), UTF8=ACCEPT (RFC 6855).
ENABLEABLE = ("IMAP4REV2", "CONDSTORE", "QRESYNC", "UTF8=ACCEPT")
ENABLED_NAMES = {"IMAP4REV2": "IMAP4rev2", "CONDSTORE": "CONDSTORE", "QRESYNC": "QRESYNC",
                 "UTF8=ACCEPT": "UTF8=ACCEPT"}



async def cmd_capability(s: ImapSession, cmd: c.Command) -> None:
    s.engine.untagged(Atom("CAPABILITY"), *[Atom(x) for x in s.capabilities()])
    await s.finish("OK", "CAPABILITY completed")


async def cmd_noop(s: ImapSession, cmd: c.Command) -> None:
    # RFC 9051 6.1.2: NOOP is the polling point for untagged updates;
    # CHECK (RFC 3501 6.4.1, gone in rev2) is harmless as NOOP
    await s.finish("OK", f"{cmd.name} completed")


async def cmd_logout(s: ImapSession, cmd: c.Command) -> None:
    s.engine.untagged_status("BYE", "mailyard IMAP server logging out")
    s.engine.complete("OK", "LOGOUT completed")


async def cmd_id(s: ImapSession, cmd: c.Command) -> None:
    # RFC 2971 3.1: the server answers with its own identification
    s.engine.untagged(Atom("ID"), ["name", "mailyard", "version", s.config.version])
    await s.finish("OK", "ID completed")


async def cmd_starttls(s: ImapSession, cmd: c.Command) -> None:
    if not s.io.can_start_tls or s.io.tls_active:
        s.engine.complete("BAD", "TLS is already active" if s.io.can_start_tls else "STARTTLS is not available")
        return
    # RFC 9051 6.2.1: OK, then the TLS negotiation starts right after the CRLF.
    s.engine.complete("OK", "Begin TLS negotiation now")
    await s.io.flush()
    # Before the handshake, not after: what the client sends with its TLS
    # Finished may reach us before this coroutine resumes.
    s.restart()
    try:
        await s.io.begin_tls()
    except ConnectionError:
        s.engine.bye("TLS negotiation failed")
        s.engine.data_to_send()  # nothing more can be sent on this connection
        raise


async def cmd_compress(s: ImapSession, cmd: c.Compress) -> None:
    if cmd.mechanism != "DEFLATE":
        s.engine.complete("BAD", "Unknown compression mechanism")  # RFC 4978 3: BAD
        return
    if s.io.compression_active:
        s.engine.complete("NO", "DEFLATE is already active", "COMPRESSIONACTIVE")
        return
    if s.engine.framer.buffer:
        # RFC 4978 3: the client must wait for the result before it sends more;
        # what it pipelined is clear text, and cannot be told from DEFLATE data.
        s.engine.complete("BAD", "Commands were sent after COMPRESS before its result")
        return
    s.engine.complete("OK", "DEFLATE active")
    await s.io.flush()  # the OK goes out uncompressed, then both directions deflate
    s.io.begin_compress()


async def cmd_enable(s: ImapSession, cmd: c.Enable) -> None:
    new = [x for x in cmd.capabilities if x in ENABLEABLE and x not in s.engine.enabled]
    s.engine.enable(new)
    # RFC 5161 3.1: ENABLED lists only what this command newly enabled
    s.engine.untagged(Atom("ENABLED"), *[Atom(ENABLED_NAMES[x]) for x in new])
    await s.finish("OK", "ENABLE completed")


async def cmd_unauthenticate(s: ImapSession, cmd: c.Command) -> None:
    if not s.config.unauthenticate:
        # RFC 8437 3: BAD when the server does not advertise it
        s.engine.complete("BAD", "UNAUTHENTICATE is not available")
        return
    # RFC 8437 3: every state but TLS is reset, the selected mailbox closed
    # without an expunge; NO is not permitted. The tagged OK moves the
    # engine to the not-authenticated state (engine.TRANSITIONS).
    s.logged_out()
    s.engine.complete("OK", "Completed, now in not authenticated state")


async def cmd_idle(s: ImapSession, cmd: c.Command) -> None:
    await s.idle()


# The refusals: a wrong password or unknown name (RFC 9051 7.1
# AUTHENTICATIONFAILED), and a temporary failure (UNAVAILABLE: "temporary
# failure because a subsystem is down"), whatever the password: over a login
# limit, or a SCRAM exchange with a right proof that its deadline ended.
INVALID = ("Invalid credentials", "AUTHENTICATIONFAILED")
TRY_LATER = ("Too many failed logins, try again later", "UNAVAILABLE")
TOO_SLOW = ("Authentication took too long, try again", "UNAVAILABLE")
_REFUSALS = {"temporary": TRY_LATER, "too-slow": TOO_SLOW}


def _login_done(s: ImapSession, result: ImapBackend | LoginRefused) -> None:
    if not isinstance(result, LoginRefused):
        s.logged_in(result)
        s.engine.complete("OK", "Logged in", "CAPABILITY " + " ".join(s.capabilities(logged_in=True)))
        return
    s.engine.complete("NO", *_REFUSALS.get(result.kind, INVALID))  # counted by the engine


async def cmd_login(s: ImapSession, cmd: c.Login) -> None:
    if not s.login.plaintext_ok():
        # RFC 9051 6.2.3: LOGIN must be refused when LOGINDISABLED is advertised
        s.engine.complete("NO", "Use TLS first", "PRIVACYREQUIRED")
        return
    _login_done(s, await s.login.login(cmd.userid, cmd.password))


async def cmd_authenticate(s: ImapSession, cmd: c.Authenticate) -> None:
    name = cmd.mechanism.upper()
    plain = s.login.sasl_mechanisms.get(name)
    if plain is None:
        s.engine.complete("NO", f"Unsupported authentication mechanism {cmd.mechanism}", "CANNOT")
        return
    if plain and not s.login.plaintext_ok():
        s.engine.complete("NO", "Use TLS first, or SCRAM-SHA-256", "PRIVACYREQUIRED")
        return
    exchange = s.login.sasl(name)
    ev = await exchange.step(cmd.initial_response)
    while isinstance(ev, SaslChallenge):
        # RFC 9051 6.2.2: "+ base64" continuation; the client answers one line.
        s.engine.continuation(ev.wire)
        await s.io.flush()
        while True:
            reply = s.engine.next_event()
            if isinstance(reply, AuthResponse):
                ev = await exchange.step(reply.line)
                break
            refused = exchange.expiry()
            if refused is not None:
                # the client did not answer in time (settled by the login
                # service): NO [AUTHENTICATIONFAILED], or NO [UNAVAILABLE]
                # after a right SCRAM proof
                ev = refused
                break
            if not await s.io.more_input():
                s.login.close()  # an exchange left open counts as a failure
                s.engine.bye("Connection closed", reason="eof")
                return
    if isinstance(ev, LoginRefused) and ev.kind == "cancelled":
        s.engine.complete("BAD", "Authentication cancelled")  # RFC 9051 6.2.2: "*" cancels with BAD
    elif isinstance(ev, LoginRefused) and ev.kind == "malformed":
        s.engine.complete("BAD", "Malformed authentication data")
    else:
        _login_done(s, ev)
