"""Server-side SASL (RFC 4422) mechanisms as sans-I/O state machines, and APOP.

One implementation serves SMTP AUTH (RFC 4954), IMAP AUTHENTICATE (RFC 9051
section 6.2.2) and POP3 AUTH (RFC 5034). The mechanism never touches the store
or the password hash: it says what it needs, the protocol glue does the
(async) work and feeds the answer back.

Mechanisms: PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login, the classic
``Username:``/``Password:`` prompts), SCRAM-SHA-256 (RFC 5802 + RFC 7677).
SCRAM channel binding: only the gs2 flags ``n`` and ``y`` are accepted; the
-PLUS variant (``p=``, tls-exporter/tls-server-end-point) is not implemented
and a client asking for it fails with ``channel-binding-not-supported``.

Usage (the glue's loop)::

    mech = sasl.start("PLAIN")                       # UnsupportedMechanism if unknown
    ev = mech.begin(initial_response)                # wire bytes after "AUTH PLAIN", or None
    while True:
        match ev:
            case Challenge():                        # send "334 " + ev.wire / "+ " + ev.wire
                ev = mech.step(read_line())          # wire bytes, CRLF stripped
            case NeedCredentials(authcid, password):
                acct = await store.get_account(authcid)
                ok = await verify_password_async(acct and acct.password_hash, password)
                ev = mech.provide_result(ok)
            case NeedScramKeys(authcid):
                acct = await store.get_account(authcid)
                ev = mech.provide_scram_keys(acct and acct.scram_sha256)
            case Success(authcid): ...               # 235 / OK / +OK
            case Failure(reason, kind): ...          # 535 / 501 / NO / -ERR, see `kind`

Wire format: `begin`/`step` take what the client sent on the line (base64,
``*`` to cancel, and for an initial response ``=`` for "empty", RFC 4954
section 4); `Challenge.data` is the raw challenge and `Challenge.wire` its
base64 form to send.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mailyard.auth.passwords import ScramKeys, parse_scram_sha256

__all__ = [
    "DEFAULT_MAX_RESPONSE",
    "MECHANISMS",
    "PLAINTEXT_MECHANISMS",
    "Challenge",
    "Event",
    "Failure",
    "FailureKind",
    "LoginMechanism",
    "Mechanism",
    "NeedCredentials",
    "NeedScramKeys",
    "PlainMechanism",
    "ScramSha256Mechanism",
    "Success",
    "UnsupportedMechanism",
    "advertised_mechanisms",
    "apop_digest",
    "make_apop_timestamp",
    "start",
    "verify_apop",
]

# Longest client response line (base64 octets) we accept. PLAIN with three
# 255-octet fields is ~1 KiB of base64; SCRAM messages are ~200 octets.
DEFAULT_MAX_RESPONSE = 8192


# --- events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send this challenge to the client and feed its answer to `Mechanism.step`."""

    data: bytes  # raw challenge octets

    @property
    def wire(self) -> bytes:
        """The base64 form that goes after ``334 `` / ``+ ``; empty for an empty challenge."""
        return base64.b64encode(self.data)


@dataclass(frozen=True, slots=True)
class NeedCredentials:
    """Check ``password`` for ``authcid`` and call `Mechanism.provide_result`."""

    authcid: str
    password: str

    def __repr__(self) -> str:  # keep passwords out of logs and tracebacks
        return f"NeedCredentials(authcid={self.authcid!r}, password=<hidden>)"


@dataclass(frozen=True, slots=True)
class NeedScramKeys:
    """Look up the RFC 5803 SCRAM-SHA-256 keys of ``authcid``; call `provide_scram_keys`."""

    authcid: str


@dataclass(frozen=True, slots=True)
class Success:
    """Authenticated as ``authcid`` (authzid is always empty or the same, RFC 4616 2).

    ``server_final`` is additional success data (SCRAM's ``v=...``) only when
    the mechanism was started with ``success_data=True``; otherwise it was
    already sent as a last `Challenge` and this is None.
    """

    authcid: str
    server_final: bytes | None = None


FailureKind = Literal[
    "cancelled",  # client sent "*": SMTP 501 5.0.0, IMAP BAD, POP3 -ERR
    "malformed",  # bad base64 or bad mechanism syntax: SMTP 501 5.5.2
    "too-long",  # response over max_response: SMTP 500 5.5.6
    "authzid",  # authorization identity not allowed: SMTP 535 5.7.8
    "invalid-credentials",  # wrong user/password/proof: SMTP 535 5.7.8
    "unsupported",  # e.g. SCRAM channel binding requested: SMTP 535 5.7.8
    "protocol",  # step() after the exchange finished
    "temporary",  # over a login limit, nothing checked: SMTP 454 4.7.0 (set by auth/service.py)
]


@dataclass(frozen=True, slots=True)
class Failure:
    """Authentication failed; ``reason`` is for logs, ``kind`` picks the reply code.

    The ``reason`` of a ``malformed`` failure is a fixed text (what does not
    parse), never the client's data: a reply may carry it (SMTP's 501).

    ``authcid`` is set when the client named one, so the glue can count the
    failure against the account (auth/throttle.py).
    """

    reason: str
    kind: FailureKind = "invalid-credentials"
    authcid: str | None = None


Event = Challenge | NeedCredentials | NeedScramKeys | Success | Failure


class UnsupportedMechanism(ValueError):
    """The client named a mechanism we do not offer (SMTP 504 5.5.4, IMAP NO)."""


def decode_base64(text: bytes | str) -> bytes:
    """Base64 as SASL carries it, decoded strictly: RFC 4954 4, RFC 9051
    6.2.2 and RFC 5034 4 have a server reject a response it cannot decode.
    Only the alphabet, in quanta of four with padding only where the last
    one needs it and zero pad bits (RFC 4648 3.3, 3.5): the one encoding of
    its octets, checked by encoding them again (``AAAA==``, which
    ``b64decode`` takes even with ``validate=True``, is refused). Raises
    ``binascii.Error``."""
    raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
    data = binascii.a2b_base64(raw, strict_mode=True)
    if binascii.b2a_base64(data, newline=False) != raw:
        raise binascii.Error("not the canonical base64 of its octets")
    return data


class _Malformed(Exception):
    """Internal: a client message does not parse; becomes Failure("malformed")."""


# --- the base state machine -----------------------------------------------------


class Mechanism:
    """One SASL exchange. Subclasses define ``name``, ``plaintext`` and handlers.

    States are strings; ``_handlers`` maps a state to the method that consumes
    the next decoded client response. ``done`` is terminal.
    """

    name: str = ""
    plaintext: bool = True  # sends the password itself: only over TLS (RFC 4954 4)

    def __init__(self, *, max_response: int = DEFAULT_MAX_RESPONSE) -> None:
        self.max_response = max_response
        self.state = "start"
        self.authcid: str | None = None
        self._handlers: dict[str, Callable[[bytes], Event]] = {}

    # -- driver ----------------------------------------------------------------
    def begin(self, initial_response: bytes | None = None) -> Event:
        """Start the exchange, with the SASL-IR initial response if the client gave one.

        ``initial_response`` is the wire token: base64, ``=`` for an empty
        response (RFC 4954 section 4, RFC 4959), ``*`` to cancel.
        """
        if self.state != "start":
            return self._fail("exchange already started", "protocol")
        if initial_response is None:
            return self._first_challenge()
        self.state = "first"
        if initial_response.strip() == b"=":
            return self._feed(b"")
        return self.step(initial_response)

    def step(self, response: bytes) -> Event:
        """Feed one client response line (wire form, CRLF stripped)."""
        if self.state in ("done", "start") or self.state.startswith("await-"):
            return self._fail(f"unexpected client response in state {self.state}", "protocol")
        response = response.strip(b"\r\n")
        if len(response) > self.max_response:
            return self._fail(f"response longer than {self.max_response} octets", "too-long")
        # RFC 4954 section 4, RFC 9051 section 6.2.2, RFC 5034 section 4:
        # a single "*" cancels the exchange.
        if response.strip() == b"*":
            return self._fail("authentication cancelled by client", "cancelled")
        try:
            data = decode_base64(response)
        except (binascii.Error, ValueError):
            return self._fail("response is not valid base64", "malformed")
        return self._feed(data)

    def provide_result(self, ok: bool) -> Event:
        """Answer a `NeedCredentials`: True if the password is right."""
        if self.state != "await-credentials":
            return self._fail("no credentials were requested", "protocol")
        self.state = "done"
        if ok:
            assert self.authcid is not None
            return Success(self.authcid)
        return Failure("invalid user name or password", "invalid-credentials", self.authcid)

    def provide_scram_keys(self, keys: ScramKeys | str | None, fake_salt: bytes | None = None) -> Event:
        """Answer a `NeedScramKeys` (only SCRAM mechanisms ask)."""
        return self._fail("no SCRAM keys were requested", "protocol")

    # -- helpers for subclasses --------------------------------------------------
    def _first_challenge(self) -> Event:
        # Most mechanisms are client-first: an empty challenge asks for the
        # response (RFC 4422 section 3.3).
        self.state = "first"
        return Challenge(b"")

    def _feed(self, data: bytes) -> Event:
        handler = self._handlers.get(self.state)
        if handler is None:
            return self._fail(f"no handler for state {self.state}", "protocol")
        try:
            return handler(data)
        except _Malformed as exc:
            return self._fail(str(exc), "malformed")

    def _fail(self, reason: str, kind: FailureKind) -> Failure:
        self.state = "done"
        return Failure(reason, kind, self.authcid)

    def _need_credentials(self, authcid: str, password: str) -> NeedCredentials:
        self.authcid = authcid
        self.state = "await-credentials"
        return NeedCredentials(authcid, password)


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed(f"{what} is not valid UTF-8") from None


# --- PLAIN (RFC 4616) -------------------------------------------------------------


class PlainMechanism(Mechanism):
    """RFC 4616: one message ``[authzid] NUL authcid NUL passwd``."""

    name = "PLAIN"

    def __init__(self, **kw: int) -> None:
        super().__init__(**kw)
        self._handlers = {"first": self._message}

    def _message(self, data: bytes) -> Event:
        # RFC 4616 section 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd
        parts = data.split(b"\x00")
        if len(parts) != 3:
            raise _Malformed("PLAIN message must be authzid NUL authcid NUL passwd")
        authzid, authcid, passwd = (_utf8(p, "PLAIN field") for p in parts)
        if not authcid or not passwd:
            raise _Malformed("PLAIN authcid and passwd must not be empty")
        self.authcid = authcid
        # We do not support proxy authorisation: the authzid must be empty or
        # name the same identity (RFC 4616 section 2: the server decides whether
        # authcid may act as authzid).
        if authzid and authzid != authcid:
            return self._fail(f"{authcid!r} may not act as {authzid!r}", "authzid")
        return self._need_credentials(authcid, passwd)


# --- LOGIN (draft-murchison-sasl-login-00) ------------------------------------------


class LoginMechanism(Mechanism):
    """The obsolete but ubiquitous LOGIN: server prompts ``Username:``, ``Password:``.

    An initial response (``AUTH LOGIN <b64 user>``, sent by Outlook and others)
    is taken as the user name, and the exchange continues with ``Password:``.
    """

    name = "LOGIN"
    USERNAME_PROMPT = b"Username:"
    PASSWORD_PROMPT = b"Password:"

    def __init__(self, **kw: int) -> None:
        super().__init__(**kw)
        self._handlers = {"first": self._username, "password": self._password}

    def _first_challenge(self) -> Event:
        self.state = "first"
        return Challenge(self.USERNAME_PROMPT)

    def _username(self, data: bytes) -> Event:
        user = _utf8(data, "user name")
        if not user:
            raise _Malformed("empty user name")
        self.authcid = user
        self.state = "password"
        return Challenge(self.PASSWORD_PROMPT)

    def _password(self, data: bytes) -> Event:
        password = _utf8(data, "password")
        if not password:
            raise _Malformed("empty password")
        assert self.authcid is not None
        return self._need_credentials(self.authcid, password)


# --- SCRAM-SHA-256 (RFC 5802, RFC 7677) ------------------------------------------------


def _default_nonce() -> str:
    # RFC 5802 section 5.1: printable ASCII except ","; base64 never has ",".
    return base64.b64encode(secrets.token_bytes(18)).decode("ascii")


# One secret per process for the fake salts of unknown users (see below).
_PROCESS_MOCK_SECRET = secrets.token_bytes(32)


def _decode_saslname(value: str) -> str:
    # RFC 5802 section 5.1: "=" is encoded as "=3D" and "," as "=2C"; any other
    # "=" sequence is invalid.
    out = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "=":
            code = value[i + 1 : i + 3]
            if code == "3D":
                out.append("=")
            elif code == "2C":
                out.append(",")
            else:
                raise _Malformed("invalid =XX escape in SCRAM name")
            i += 3
        elif ch == ",":
            raise _Malformed("unescaped ',' in SCRAM name")
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _is_printable_nonce(nonce: str) -> bool:
    return bool(nonce) and all(0x21 <= ord(c) <= 0x7E and c != "," for c in nonce)


class ScramSha256Mechanism(Mechanism):
    """SCRAM-SHA-256 server (RFC 5802 section 5 messages, RFC 7677 hash).

    Flow: client-first -> `NeedScramKeys` -> `provide_scram_keys` -> Challenge
    (server-first) -> client-final -> Challenge(server-final ``v=``) -> empty
    response -> Success. With ``success_data=True`` (protocols that can carry
    data with their success reply) the last two collapse into Success(..., v=).

    Unknown users get a fake salt derived from the name (HMAC with a process
    secret), so the server-first message does not reveal whether an account
    exists (RFC 5802 section 9 recommends this); they fail at the proof.
    """

    name = "SCRAM-SHA-256"
    plaintext = False
    _hash = "sha256"

    def __init__(
        self,
        *,
        max_response: int = DEFAULT_MAX_RESPONSE,
        nonce_source: Callable[[], str] | None = None,
        success_data: bool = False,
        mock_secret: bytes | None = None,
    ) -> None:
        super().__init__(max_response=max_response)
        self._nonce_source = nonce_source or _default_nonce
        self._success_data = success_data
        self._mock_secret = mock_secret if mock_secret is not None else _PROCESS_MOCK_SECRET
        self._handlers = {
            "first": self._client_first,
            "final": self._client_final,
            "ack": self._ack,
        }
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._keys: ScramKeys | None = None
        self._user_known = False

    # RFC 5802 section 7: client-first-message = gs2-header client-first-message-bare
    def _client_first(self, data: bytes) -> Event:
        msg = _utf8(data, "client-first-message")
        parts = msg.split(",", 2)
        if len(parts) != 3:
            raise _Malformed("client-first-message needs gs2-header and bare message")
        cbind, authzid_attr, bare = parts
        if cbind.startswith("p="):
            # RFC 5802 section 6: we never advertise -PLUS, so a client that
            # insists on channel binding must fail.
            return self._fail("channel binding not supported (no -PLUS)", "unsupported")
        if cbind not in ("n", "y"):
            raise _Malformed("gs2-cbind-flag must be n, y or p=")
        authzid = ""
        if authzid_attr:
            if not authzid_attr.startswith("a="):
                raise _Malformed("gs2 authzid must be a=saslname")
            authzid = _decode_saslname(authzid_attr[2:])
        self._gs2_header = f"{cbind},{authzid_attr},"
        attrs = bare.split(",")
        if attrs[0].startswith("m="):
            # RFC 5802 section 5.1: "m" is reserved for mandatory extensions.
            return self._fail("mandatory SCRAM extension not supported", "unsupported")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            raise _Malformed("client-first-message-bare must start n=...,r=...")
        authcid = _decode_saslname(attrs[0][2:])
        cnonce = attrs[1][2:]
        if not authcid:
            raise _Malformed("empty SCRAM user name")
        if not _is_printable_nonce(cnonce):
            raise _Malformed("invalid client nonce")
        self.authcid = authcid
        if authzid and authzid != authcid:
            return self._fail(f"{authcid!r} may not act as {authzid!r}", "authzid")
        self._client_first_bare = bare
        snonce = self._nonce_source()
        if not _is_printable_nonce(snonce):
            raise ValueError("nonce_source returned a non-printable nonce")
        self._nonce = cnonce + snonce
        self.state = "await-keys"
        return NeedScramKeys(authcid)

    def provide_scram_keys(self, keys: ScramKeys | str | None, fake_salt: bytes | None = None) -> Event:
        """Feed the account's stored keys (RFC 5803 string or parsed), or None if unknown.

        For None, ``fake_salt`` is the salt to show (auth/service.py derives it
        from the normalised name); without it, one derived from the name as sent.
        """
        if self.state != "await-keys":
            return self._fail("no SCRAM keys were requested", "protocol")
        if isinstance(keys, str):
            try:
                keys = parse_scram_sha256(keys)
            except ValueError:
                keys = None  # a broken credential behaves like a missing one
        if keys is None:
            assert self.authcid is not None
            if fake_salt is None:
                fake_salt = hmac.digest(self._mock_secret, self.authcid.encode("utf-8"), "sha256")[:16]
            keys = ScramKeys(4096, fake_salt, secrets.token_bytes(32), secrets.token_bytes(32))
            self._user_known = False
        else:
            self._user_known = True
        self._keys = keys
        # RFC 5802 section 7: server-first-message = nonce "," salt "," iteration-count
        salt_b64 = base64.b64encode(keys.salt).decode("ascii")
        self._server_first = f"r={self._nonce},s={salt_b64},i={keys.iterations}"
        self.state = "final"
        return Challenge(self._server_first.encode("ascii"))

    # RFC 5802 section 7: client-final-message =
    #     channel-binding "," nonce ["," extensions] "," proof
    def _client_final(self, data: bytes) -> Event:
        msg = _utf8(data, "client-final-message")
        without_proof, sep, proof_b64 = msg.rpartition(",p=")
        if not sep:
            raise _Malformed("client-final-message has no proof")
        attrs = without_proof.split(",")
        if len(attrs) < 2 or not attrs[0].startswith("c=") or not attrs[1].startswith("r="):
            raise _Malformed("client-final-message must start c=...,r=...")
        try:
            cbind_input = decode_base64(attrs[0][2:])
            proof = decode_base64(proof_b64)
        except (binascii.Error, ValueError):
            raise _Malformed("bad base64 in client-final-message") from None
        # RFC 5802 section 6: without channel binding, c= is the base64 of the
        # gs2-header exactly as the client sent it first.
        if cbind_input != self._gs2_header.encode("utf-8"):
            return self._fail(
                "channel-binding data does not match gs2-header", "invalid-credentials"
            )
        if attrs[1][2:] != self._nonce:
            return self._fail("nonce mismatch", "invalid-credentials")
        assert self._keys is not None
        auth_message = ",".join((self._client_first_bare, self._server_first, without_proof))
        am = auth_message.encode("utf-8")
        # RFC 5802 section 3: ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage);
        # the proof is good iff H(ClientKey) == StoredKey.
        client_signature = hmac.digest(self._keys.stored_key, am, self._hash)
        if len(proof) != len(client_signature):
            return self._fail("invalid proof length", "invalid-credentials")
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        good = hmac.compare_digest(
            hashlib.new(self._hash, client_key).digest(), self._keys.stored_key
        )
        if not (good and self._user_known):
            # RFC 5802 section 7 server-error "invalid-proof"; the same answer for
            # an unknown user so the two are indistinguishable.
            return self._fail("e=invalid-proof", "invalid-credentials")
        server_signature = hmac.digest(self._keys.server_key, am, self._hash)
        server_final = b"v=" + base64.b64encode(server_signature)
        assert self.authcid is not None
        if self._success_data:
            self.state = "done"
            return Success(self.authcid, server_final)
        # RFC 4954 section 4 (and RFC 9051 / RFC 5034): success data the reply
        # cannot carry goes out as a last challenge; the client answers empty.
        self.state = "ack"
        return Challenge(server_final)

    def _ack(self, data: bytes) -> Event:
        if data:
            raise _Malformed("expected an empty response after server-final-message")
        self.state = "done"
        assert self.authcid is not None
        return Success(self.authcid)


# --- registry / driver ------------------------------------------------------------

MECHANISMS: dict[str, type[Mechanism]] = {
    "SCRAM-SHA-256": ScramSha256Mechanism,
    "PLAIN": PlainMechanism,
    "LOGIN": LoginMechanism,
}
# Mechanisms that send the password itself; offered only over TLS unless configured.
PLAINTEXT_MECHANISMS = frozenset(n for n, c in MECHANISMS.items() if c.plaintext)


def advertised_mechanisms(*, secure: bool, allow_plaintext_insecure: bool = False) -> list[str]:
    """Mechanism names to list in EHLO / CAPABILITY / CAPA, strongest first.

    ``secure`` is True on a TLS connection (or a trusted loopback one, if the
    configuration says so); PLAIN and LOGIN are offered only then (RFC 4954
    section 4, RFC 9051 section 11.1).
    """
    return [
        n for n in MECHANISMS if secure or allow_plaintext_insecure or n not in PLAINTEXT_MECHANISMS
    ]


def start(
    name: str,
    *,
    max_response: int = DEFAULT_MAX_RESPONSE,
    nonce_source: Callable[[], str] | None = None,
    success_data: bool = False,
    mock_secret: bytes | None = None,
) -> Mechanism:
    """Create the server side of mechanism ``name`` (case-insensitive).

    ``nonce_source`` and ``mock_secret`` only matter to SCRAM (tests inject a
    fixed nonce); ``success_data`` True lets SCRAM return its ``v=`` in
    `Success` instead of a last challenge. Raises `UnsupportedMechanism`.
    """
    cls = MECHANISMS.get(name.upper())
    if cls is None:
        raise UnsupportedMechanism(f"unsupported SASL mechanism {name!r}")
    if cls is ScramSha256Mechanism:
        return ScramSha256Mechanism(
            max_response=max_response,
            nonce_source=nonce_source,
            success_data=success_data,
            mock_secret=mock_secret,
        )
    return cls(max_response=max_response)


# --- APOP (RFC 1939 section 7) -----------------------------------------------------


def make_apop_timestamp(hostname: str, now: float, token: str | None = None) -> str:
    """The greeting's msg-id ``<token.clock@hostname>`` (RFC 1939 section 7).

    It must be unique per greeting; ``token`` defaults to 64 random bits.
    """
    if token is None:
        token = secrets.token_hex(8)
    return f"<{token}.{int(now)}@{hostname}>"


def apop_digest(timestamp: str, secret: str) -> str:
    """MD5(timestamp + secret) as 32 lower-case hex digits (RFC 1939 section 7)."""
    return hashlib.md5((timestamp + secret).encode("utf-8"), usedforsecurity=False).hexdigest()


def verify_apop(timestamp: str, secret: str | None, digest: str) -> bool:
    """Check an APOP digest in constant time; ``secret`` None (unknown user) is False.

    The RFC's digest is lower-case hex; we accept upper case too, as some
    clients send it. An unknown user still costs one digest and compare.
    """
    expected = apop_digest(timestamp, secret if secret is not None else secrets.token_hex(16))
    ok = hmac.compare_digest(expected.encode("ascii"), digest.lower().encode("ascii", "replace"))
    return ok and secret is not None
