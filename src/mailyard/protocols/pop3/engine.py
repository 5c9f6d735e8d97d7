"""Sans-I/O POP3 server engine (RFC 1939, RFC 2449, RFC 3206, RFC 5034, RFC 2595 STLS).

The engine consumes the bytes a client sends and produces the bytes to send back,
in the style of h11 and under the contract every engine keeps
(protocols/contract.py): no sockets, no clock, no store. Whatever needs the world
outside (checking a password, listing the maildrop, reading a message, applying
the deletions at QUIT, starting TLS) becomes an *event* the net glue answers by
calling one of the ``accept_login`` / ``reject_login`` / ``sasl_challenge`` /
``send_message`` / ``message_unavailable`` / ``update_done`` / ``tls_started``
methods.

Typical glue loop::

    engine = POP3Server(timestamp="<1896.697170952@dbc.mtview.ca.us>")
    write(engine.data_to_send())                # the greeting
    while True:
        event = engine.next_event()
        if event is NEED_DATA:
            write(engine.data_to_send())
            engine.receive_data(await read())    # b"" at end of file
        elif event is FLUSH:                      # FLUSH_AT octets of replies queued
            write(engine.data_to_send())          # (wait while the client is behind)
        elif isinstance(event, UserPassLogin):
            ...check...; engine.accept_login(entries)  # or engine.reject_login()
        elif isinstance(event, Closed):
            write(engine.data_to_send()); break
        ...

Commands are dispatched through a table ``(state, keyword) -> handler`` (DESIGN.md:
state machines as data). Invalid input of any kind produces ``-ERR`` and the session
stays usable; nothing a client sends makes the engine raise. Calling a response
method the engine did not ask for is a bug in the glue and raises `ProtocolMisuse`.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..contract import (
    FLUSH,
    FLUSH_AT,
    NEED_DATA,
    PAUSED,
    AbuseBudgets,
    Closed,
    ProtocolMisuse,
    Sentinel,
)

__all__ = [
    "FLUSH",
    "NEED_DATA",
    "PAUSED",
    "POP3_BUDGETS",
    "AbuseBudgets",
    "APOPLogin",
    "Closed",
    "ProtocolMisuse",
    "Maildrop",
    "MaildropEntry",
    "POP3Server",
    "RetrieveMessage",
    "SASLResponse",
    "SASLStart",
    "StartTLS",
    "State",
    "Update",
    "UserPassLogin",
    "pop3_message_bytes",
]

# RFC 2449 section 4: "Keywords and arguments ... the maximum length of a command
# line is 255 octets, including the terminating CRLF."
MAX_COMMAND_LINE = 255
# RFC 5034 section 4 lets a SASL client response be longer than a command (it is
# not a command); this bounds what we buffer for one (a SCRAM message is < 1 KiB).
MAX_SASL_LINE = 8192

# Defaults of the POP3 abuse budgets ([limits] max_bad_commands, [auth]
# pop3_connection_max_failures).
POP3_BUDGETS = AbuseBudgets(max_bad_commands=20, max_auth_failures=3)


class State(enum.Enum):
    """Session states of RFC 1939 section 3, plus the end of the session."""

    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"  # QUIT received in TRANSACTION; waiting for the glue's commit
    CLOSED = "CLOSED"


# --- events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserPassLogin:
    """USER + PASS (RFC 1939 section 7). Answer: accept_login() or reject_login()."""

    username: str
    password: str  # decoded as UTF-8 with surrogateescape: invalid bytes never match


@dataclass(frozen=True, slots=True)
class APOPLogin:
    """APOP name digest (RFC 1939 section 7): digest = MD5(timestamp + secret), lower-case hex.

    Answer: accept_login() or reject_login().
    """

    username: str
    digest: str
    timestamp: str


@dataclass(frozen=True, slots=True)
class SASLStart:
    """AUTH mechanism [initial-response] (RFC 5034 section 4).

    ``mechanism`` is upper-cased and one of the engine's ``sasl_mechanisms``;
    ``initial_response`` is the wire token as sent (base64, or "=" for an empty
    response) or None. Wire tokens go unchanged to auth/sasl.py, the one place
    that parses them for SMTP, IMAP and POP3.
    Answer: sasl_challenge(), accept_login() or reject_login().
    """

    mechanism: str
    initial_response: bytes | None


@dataclass(frozen=True, slots=True)
class SASLResponse:
    """A client response line in an AUTH exchange, as sent (base64, or "*" to
    cancel: RFC 5034 section 4). Answered as SASLStart; for "*" the glue answers
    reject_login(None, "authentication cancelled"). ``too_long``: the line
    passed the limit and was dropped (``line`` is empty); the exchange ends
    as a cancelled one, answered reject_login(None, ...)."""

    line: bytes
    too_long: bool = False


@dataclass(frozen=True, slots=True)
class RetrieveMessage:
    """RETR n (``body_lines`` None) or TOP n m (RFC 1939 sections 5 and 7).

    ``key`` is the `MaildropEntry.key` of message ``number``. Answer: send_message()
    with the stored bytes (the engine converts and truncates), or message_unavailable().
    """

    number: int
    key: int
    body_lines: int | None


@dataclass(frozen=True, slots=True)
class Update:
    """QUIT in TRANSACTION: the UPDATE state of RFC 1939 section 6.

    Remove ``keys`` (the messages marked with DELE) atomically, release the
    maildrop, then answer update_done(). An empty tuple means nothing to remove.
    """

    keys: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class StartTLS:
    """STLS accepted (RFC 2595 section 4); "+OK" is queued. Flush, negotiate TLS,
    then call tls_started() (or close the connection if negotiation fails)."""


# The session's end is the shared ``Closed`` event; its ``reason`` here is
# "quit" (QUIT answered), "eof" (the client went away: nothing is deleted),
# "errors" (an abuse budget used up) or "withdrawn" (see ``withdraw``).
Event = UserPassLogin | APOPLogin | SASLStart | SASLResponse | RetrieveMessage | Update | StartTLS | Closed


@dataclass(frozen=True, slots=True)
class MaildropEntry:
    """One message of the maildrop as the glue lists it at login.

    ``key``: the glue's handle (the store UID); ``size``: octets RETR will send for
    it before dot-stuffing, i.e. with CRLF line endings (RFC 1939 section 11);
    ``unique_id``: the UIDL value, 1-70 characters 0x21-0x7E (RFC 1939 section 7).
    """

    key: int
    size: int
    unique_id: str


@dataclass(frozen=True, slots=True)
class Maildrop:
    """The whole maildrop as three parallel sequences, in message-number order.

    The glue may keep and reuse these (tuples) across sessions: listing 10,000
    messages this way costs no per-message objects at login.
    """

    keys: Sequence[int]
    sizes: Sequence[int]
    unique_ids: Sequence[str]

    @classmethod
    def of(cls, entries: Sequence[MaildropEntry]) -> Maildrop:
        """Build a Maildrop from per-message entries (convenient in tests)."""
        return cls(
            tuple(e.key for e in entries),
            tuple(e.size for e in entries),
            tuple(e.unique_id for e in entries),
        )


# --- message transformation -------------------------------------------------


def pop3_message_bytes(data: bytes) -> bytes:
    """Return ``data`` as POP3 sends it, before dot-stuffing: CRLF line endings and
    ending with CRLF (RFC 1939 section 11). ``len()`` of the result is the size
    STAT and LIST must report.

    Messages that arrived over SMTP are CRLF already and are returned as is; only
    bytes with bare LF (e.g. an IMAP APPEND from a Unix client) are converted.
    Done with bytes.count/replace, which run in C: no per-line Python loop.
    """
    lf = data.count(b"\n")
    if lf and lf != data.count(b"\r\n"):
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def _dot_stuff(data: bytes) -> bytes:
    """RFC 1939 section 3: a line starting with "." gets one more "." prepended."""
    if b"\r\n." in data:
        data = data.replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    return data


def _top(data: bytes, body_lines: int) -> bytes:
    """Header, blank line and the first ``body_lines`` body lines (RFC 1939 section 7, TOP).

    ``data`` is already CRLF-normalized and ends with CRLF.
    """
    if data.startswith(b"\r\n"):
        sep = 0
        body_start = 2
    else:
        sep = data.find(b"\r\n\r\n")
        if sep < 0:  # no body at all: the whole message is header
            return data
        body_start = sep + 4
    if body_lines >= data.count(b"\r\n", body_start):
        return data
    end = body_start
    for _ in range(body_lines):
        nl = data.find(b"\r\n", end)
        if nl < 0:
            end = len(data)
            break
        end = nl + 2
    return data[:end]


# --- the engine ---------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


_Handler = Callable[["POP3Server", str], "Event | None"]


class POP3Server:
    """One POP3 server session, from greeting to QUIT (RFC 1939 section 3).

    Parameters:
        timestamp: the APOP timestamp ``<process.clock@host>`` put in the greeting
            (RFC 1939 section 7); None disables APOP. The glue makes it unique per
            connection (the engine has no clock).
        greeting / signoff: reply texts for the banner and for QUIT.
        sasl_mechanisms: mechanisms for AUTH (RFC 5034) and the CAPA SASL line.
        plaintext_auth: whether USER/PASS may be used (the glue turns it off on
            unencrypted non-loopback connections: RFC 2595 section 2.1, RFC 8314 4.1).
        tls_available: whether STLS (RFC 2595) is offered; tls_active: TLS is on
            already (implicit TLS, POP3S).
        budgets: the abuse budgets (protocols/contract.py): ``max_auth_failures``
            failed logins ([AUTH] refusals) and ``max_bad_commands`` bad
            commands; when one is used up the engine answers -ERR and closes
            the session.
    """

    def __init__(
        self,
        *,
        timestamp: str | None = None,
        greeting: str = "POP3 server ready",
        signoff: str = "POP3 server signing off",
        sasl_mechanisms: Sequence[str] = ("PLAIN",),
        plaintext_auth: bool = True,
        tls_available: bool = False,
        tls_active: bool = False,
        budgets: AbuseBudgets = POP3_BUDGETS,
    ) -> None:
        self.state = State.AUTHORIZATION
        self.timestamp = timestamp
        self.signoff = signoff
        self.sasl_mechanisms = tuple(m.upper() for m in sasl_mechanisms)
        self.plaintext_auth = plaintext_auth
        self.tls_available = tls_available
        self.tls_active = tls_active
        self.budgets = budgets
        self.auth_failures = 0
        self.bad_commands = 0
        self.username: str | None = None  # authenticated user (TRANSACTION on)

        self._in = bytearray()
        self._eof = False
        self._discarding = False  # inside an over-long line: drop up to its LF
        # Lines consumed so far; with ``partial_input`` the glue enforces a
        # command deadline that a trickle of bytes cannot extend.
        self.lines_completed = 0
        self._out: list[bytes] = []
        self.pending = 0  # octets queued in _out
        self._pending: type | None = None  # event type awaiting the glue's answer
        self._pending_event: Event | None = None
        self._user: str | None = None  # name from USER, waiting for PASS
        self._login_name: str | None = None  # name the pending login is for
        self._sasl_active = False
        self._closed_event: Closed | None = None
        self._withdrawn: str | None = None  # see withdraw()

        # The maildrop, fixed at login (RFC 1939 section 8: message numbers do not
        # change during a session).
        self._keys: Sequence[int] = ()
        self._sizes: Sequence[int] = ()
        self._uids: Sequence[str] = ()
        self._deleted: list[bool] = []
        self._live_count = 0
        self._live_size = 0

        text = f"+OK {greeting}"
        if timestamp:
            text += f" {timestamp}"
        self._reply(text)

    # --- public byte interface -------------------------------------------

    @property
    def partial_input(self) -> bool:
        """True while an incomplete command line is buffered (or being discarded)."""
        return bool(self._in) or self._discarding

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client; ``b""`` means the client closed its side."""
        if not data:
            self._eof = True
            return
        if self.state is State.CLOSED:
            return
        self._in += data

    def data_to_send(self) -> bytes:
        """Return (and forget) the bytes queued for the client."""
        if not self._out:
            return b""
        out = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        self.pending = 0
        return out

    def next_event(self) -> Event | Sentinel:
        """Process buffered commands until one needs the glue, or more bytes are needed.

        Returns an event, NEED_DATA, PAUSED while an event waits for its
        answer, or FLUSH once the replies queued pass FLUSH_AT (the next
        command waits until they are written: protocols/contract.py).
        Never raises for anything the client sent.
        """
        if self._pending is not None:
            return PAUSED
        while True:
            if self._closed_event is not None:
                return self._closed_event
            if self.pending > FLUSH_AT:
                return FLUSH
            line = self._next_line()
            if line is None:
                if self._eof:
                    return self._close("eof")
                return NEED_DATA
            if line is _TOO_LONG:
                if self._sasl_active:
                    # the answer to a challenge, dropped: the exchange ends
                    # (RFC 5034 4), and the glue settles it
                    self._sasl_active = False
                    event = SASLResponse(b"", too_long=True)
                    self._pending, self._pending_event = SASLResponse, event
                    return event
                self._bad("-ERR line too long")
                continue
            assert isinstance(line, bytes)
            if self._withdrawn is not None:
                # the answer to whatever command came next; no UPDATE state
                # (RFC 1939 section 6: nothing marked is removed)
                self._reply(f"-ERR [AUTH] {self._withdrawn}, closing connection")
                return self._close("withdrawn")
            try:
                event = self._dispatch(line)
            except Exception:  # a bug must cost one command, not the session
                event = None
                self._reply("-ERR [SYS/TEMP] internal error")
            if event is not None:
                if not isinstance(event, Closed):
                    self._pending = type(event)
                    self._pending_event = event
                return event

    # --- answers from the glue ---------------------------------------------

    def accept_login(
        self, maildrop: Maildrop | Sequence[MaildropEntry], username: str | None = None
    ) -> None:
        """Credentials are good and the maildrop is locked: enter TRANSACTION.

        ``maildrop`` lists the messages in message-number order (the engine keeps
        its sequences: do not mutate them afterwards); ``username`` is the
        authenticated name (default: the name the client gave).
        """
        self._expect(UserPassLogin, APOPLogin, SASLStart, SASLResponse)
        self._sasl_active = False
        name = username or self._login_name or ""
        self.username = name
        if not isinstance(maildrop, Maildrop):
            maildrop = Maildrop.of(maildrop)
        self._keys, self._sizes, self._uids = maildrop.keys, maildrop.sizes, maildrop.unique_ids
        self._deleted = [False] * len(self._keys)
        self._live_count = len(self._keys)
        self._live_size = sum(self._sizes)
        self.state = State.TRANSACTION
        # RFC 1939 section 7 (PASS/APOP): "+OK maildrop locked and ready".
        self._reply(
            f"+OK {name}'s maildrop has {_plural(self._live_count, 'message')} "
            f"({self._live_size} octets)"
        )

    def reject_login(self, code: str | None = "AUTH", text: str = "Authentication failed") -> None:
        """The login failed; reply ``-ERR [code] text`` and stay in AUTHORIZATION.

        ``code`` is an RFC 2449 section 8 / RFC 3206 response code: "AUTH" (bad
        credentials; the glue has already waited the throttle delay), "IN-USE"
        (maildrop locked by another session), "SYS/TEMP", "SYS/PERM",
        "LOGIN-DELAY". Only "AUTH" failures count against ``max_auth_failures``.
        """
        self._expect(UserPassLogin, APOPLogin, SASLStart, SASLResponse)
        self._refuse_login(code, text)

    @property
    def awaiting_sasl_response(self) -> bool:
        """True while an AUTH exchange waits for the client's next line (a
        challenge was sent and no event waits for an answer)."""
        return self._sasl_active and self._pending is None and self.state is State.AUTHORIZATION

    def end_sasl(self, code: str | None = "AUTH", text: str = "Authentication failed") -> None:
        """End the AUTH exchange the client has not answered, as
        `reject_login` answers one (RFC 5034 4: ``-ERR``): the glue's exchange
        deadline passed. Raises ``ProtocolMisuse`` unless
        `awaiting_sasl_response`."""
        if not self.awaiting_sasl_response:
            raise ProtocolMisuse("no AUTH exchange waits for the client")
        self._refuse_login(code, text)

    def _refuse_login(self, code: str | None, text: str) -> None:
        self._sasl_active = False
        prefix = f"-ERR [{code}] " if code else "-ERR "
        if code == "AUTH":
            self.auth_failures += 1
            if self.auth_failures >= self.budgets.max_auth_failures:
                self._reply(prefix + text + ", closing connection")
                self._close("errors")
                return
        self._reply(prefix + text)

    def withdraw(self, text: str) -> None:
        """The session's authorization was withdrawn (account removed or
        password changed): the next command gets ``-ERR [AUTH] text`` and the
        session ends. [AUTH] (RFC 3206 section 4: a problem with the user's
        credentials) makes a client ask for them again rather than retry."""
        if self.state is State.TRANSACTION and self._withdrawn is None:
            self._withdrawn = text

    def sasl_challenge(self, challenge: bytes) -> None:
        """Send a SASL server challenge ``+ base64`` (RFC 5034 section 4) and wait
        for the client's response line (event SASLResponse)."""
        self._expect(SASLStart, SASLResponse)
        self._sasl_active = True
        self._reply("+ " + base64.b64encode(challenge).decode("ascii"))

    def send_message(self, data: bytes, crlf_clean: bool = False) -> None:
        """Answer RetrieveMessage with the stored bytes of the message.

        The engine converts line endings (`pop3_message_bytes`), cuts for TOP,
        dot-stuffs and terminates the multi-line response (RFC 1939 section 3).
        ``crlf_clean`` True says the glue knows ``pop3_message_bytes(data) == data``
        (it checked this message before), which skips the check.
        """
        event = self._expect(RetrieveMessage)
        assert isinstance(event, RetrieveMessage)
        if not crlf_clean:
            data = pop3_message_bytes(data)
        if event.body_lines is None:
            # RFC 1939 section 5 RETR: "+OK 120 octets" then the message.
            head = b"+OK %d octets\r\n" % len(data)
        else:
            data = _top(data, event.body_lines)
            head = b"+OK top of message follows\r\n"
        self._put(head)
        self._put(_dot_stuff(data))
        self._put(b".\r\n")

    def message_unavailable(self, text: str = "message is no longer available") -> None:
        """Answer RetrieveMessage with -ERR (e.g. an IMAP session expunged it)."""
        self._expect(RetrieveMessage)
        self._reply(f"-ERR {text}")

    def update_done(self, ok: bool = True, remaining: int | None = None) -> None:
        """Answer Update: ``ok`` if all marked messages were removed.

        RFC 1939 section 6: "+OK" (with the count left) or "-ERR some deleted
        messages not removed". ``remaining`` overrides the count of messages left
        (e.g. new mail arrived meanwhile); by default it is the maildrop less the
        deleted messages. Then the session closes.
        """
        self._expect(Update)
        if ok:
            left = self._live_count if remaining is None else remaining
            tail = "maildrop empty" if left == 0 else f"{_plural(left, 'message')} left"
            self._reply(f"+OK {self.signoff} ({tail})")
        else:
            self._reply("-ERR [SYS/TEMP] some deleted messages not removed")
        self._close("quit")

    def tls_started(self) -> None:
        """TLS is up after STLS. RFC 2595 section 4 / RFC 3207 section 4.2: forget
        everything from before, including bytes the client pipelined after STLS
        (the command-injection attack), and restart AUTHORIZATION without a greeting."""
        self._expect(StartTLS)
        self._in.clear()
        self._discarding = False
        self._user = None
        self.tls_active = True
        self.state = State.AUTHORIZATION

    # --- internals ----------------------------------------------------------

    def _expect(self, *types: type) -> Event:
        if self._pending not in types:
            names = "/".join(t.__name__ for t in types)
            raise ProtocolMisuse(f"not waiting for an answer to {names}")
        event = self._pending_event
        self._pending = None
        self._pending_event = None
        assert event is not None
        return event

    def _put(self, data: bytes) -> None:
        self._out.append(data)
        self.pending += len(data)

    def _reply(self, text: str) -> None:
        self._put(text.encode("utf-8", "surrogateescape") + b"\r\n")

    def _multiline(self, first: str, lines: list[str]) -> None:
        # RFC 1939 section 3: multi-line responses end with a line holding ".".
        # Our generated lines (LIST, UIDL, CAPA) never start with ".".
        lines.append(".")
        self._put((first + "\r\n" + "\r\n".join(lines) + "\r\n").encode("ascii"))

    def _close(self, reason: str) -> Closed:
        self.state = State.CLOSED
        self._in.clear()
        self._closed_event = Closed(reason)
        return self._closed_event

    def _bad(self, text: str) -> None:
        """Reply -ERR for a bad command and spend one unit of the error budget."""
        self.bad_commands += 1
        if self.bad_commands >= self.budgets.max_bad_commands:
            self._reply(text + " (too many bad commands, closing connection)")
            self._close("errors")
        else:
            self._reply(text)

    def _next_line(self) -> bytes | object | None:
        """Take one line (without its CRLF or LF) from the input buffer.

        Returns None if no complete line is buffered, _TOO_LONG once for a line
        over the limit (whose bytes are discarded as they arrive, so a client
        cannot make us buffer without bound).
        """
        buf = self._in
        limit = MAX_SASL_LINE if self._sasl_active else MAX_COMMAND_LINE
        nl = buf.find(b"\n")
        if self._discarding:
            if nl < 0:
                buf.clear()
                return None
            del buf[: nl + 1]
            self._discarding = False
            self.lines_completed += 1
            return _TOO_LONG
        if nl < 0:
            if len(buf) >= limit:
                buf.clear()
                self._discarding = True
            return None
        self.lines_completed += 1
        if nl + 1 > limit:
            del buf[: nl + 1]
            return _TOO_LONG
        line = bytes(buf[:nl])
        del buf[: nl + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        return line

    def _dispatch(self, line: bytes) -> Event | None:
        if self.state is State.CLOSED:
            return None
        if self._sasl_active:
            return self._sasl_line(line)
        text = line.decode("utf-8", "surrogateescape")
        keyword, sep, arg = text.partition(" ")
        keyword = keyword.upper()
        pending_user, self._user = self._user, None
        handler = _HANDLERS.get((self.state, keyword))
        if handler is None:
            if keyword in _KNOWN:
                self._bad("-ERR command not valid in this state")
            else:
                self._bad("-ERR unknown command")
            return None
        if keyword == "PASS":
            self._user = pending_user
        return handler(self, arg if sep else "")

    # --- AUTHORIZATION state (RFC 1939 section 4, 7; RFC 2449; RFC 5034; RFC 2595) --

    def _cmd_user(self, arg: str) -> Event | None:
        # RFC 1939 section 7 USER. Always "+OK": the reply must not reveal whether
        # the user exists (else a client could probe which accounts exist);
        # PASS decides.
        if not self.plaintext_auth:
            self._reply("-ERR [AUTH] Plaintext authentication disallowed on non-secure connections")
            return None
        name = arg.strip()
        if not name or " " in name:
            self._bad("-ERR syntax: USER name")
            return None
        self._user = name
        self._reply("+OK")
        return None

    def _cmd_pass(self, arg: str) -> Event | None:
        # RFC 1939 section 7 PASS: only right after a successful USER. "Since the
        # PASS command has exactly one argument, a POP3 server may treat spaces in
        # the argument as part of the password" -- we do.
        user, self._user = self._user, None
        if user is None:
            self._bad("-ERR USER first")
            return None
        self._login_name = user
        return UserPassLogin(user, arg)

    def _cmd_apop(self, arg: str) -> Event | None:
        # RFC 1939 section 7 APOP name digest.
        if not self.timestamp:
            self._bad("-ERR APOP not available")
            return None
        name, _, digest = arg.strip().rpartition(" ")
        digest = digest.lower()
        if not name or len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest):
            self._bad("-ERR syntax: APOP name digest")
            return None
        self._login_name = name
        return APOPLogin(name, digest, self.timestamp)

    def _cmd_auth(self, arg: str) -> Event | None:
        # RFC 5034 section 4: AUTH mechanism [initial-response].
        parts = arg.split(" ") if arg else []
        if not parts:
            # Not in RFC 5034: the older RFC 1734-era listing many clients probe
            # (Dovecot and others answer it too); harmless and helps them.
            self._multiline("+OK", list(self.sasl_mechanisms))
            return None
        if len(parts) > 2:
            self._bad("-ERR syntax: AUTH mechanism [initial-response]")
            return None
        mechanism = parts[0].upper()
        if mechanism not in self.sasl_mechanisms:
            self._bad("-ERR unsupported authentication mechanism")
            return None
        if mechanism == "PLAIN" and not self.plaintext_auth:
            self._reply("-ERR [AUTH] Plaintext authentication disallowed on non-secure connections")
            return None
        initial = parts[1].encode("ascii", "replace") if len(parts) == 2 else None
        self._login_name = None
        return SASLStart(mechanism, initial)

    def _sasl_line(self, line: bytes) -> Event | None:
        # RFC 5034 section 4: the line answering a "+ " challenge is base64, or
        # "*" to cancel; auth/sasl.py interprets it.
        self._sasl_active = False
        return SASLResponse(line.strip())

    def _cmd_capa(self, arg: str) -> Event | None:
        # RFC 2449 section 5; capabilities of section 6 and RFC 3206 section 6.
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER"]
        if self.state is State.AUTHORIZATION:
            if self.plaintext_auth:
                caps.append("USER")
            mechs = [m for m in self.sasl_mechanisms if m != "PLAIN" or self.plaintext_auth]
            if mechs:
                caps.append("SASL " + " ".join(mechs))
            if self.tls_available and not self.tls_active:
                caps.append("STLS")
        self._multiline("+OK Capability list follows", caps)
        return None

    def _cmd_stls(self, arg: str) -> Event | None:
        # RFC 2595 section 4.
        if self.tls_active:
            self._bad("-ERR command not permitted when TLS active")
            return None
        if not self.tls_available:
            self._bad("-ERR TLS not available")
            return None
        self._reply("+OK Begin TLS negotiation")
        return StartTLS()

    def _cmd_quit_authorization(self, arg: str) -> Event | None:
        # RFC 1939 section 4: QUIT in AUTHORIZATION ends the session, no UPDATE.
        self._reply(f"+OK {self.signoff}")
        return self._close("quit")

    # --- TRANSACTION state (RFC 1939 section 5, 7) ----------------------------

    def _message(self, arg: str) -> int | None:
        """Parse a message number; reply -ERR and return None if it names none."""
        if not arg.isdigit() or not arg.isascii() or len(arg) > 10:
            self._bad("-ERR syntax: message number expected")
            return None
        n = int(arg)
        if n < 1 or n > len(self._keys):
            self._reply(
                f"-ERR no such message, only {_plural(len(self._keys), 'message')} in maildrop"
            )
            return None
        if self._deleted[n - 1]:
            self._reply(f"-ERR message {n} already deleted")
            return None
        return n

    def _listing(self, values: Sequence[object]) -> list[str]:
        """ "n value" lines for LIST / UIDL, leaving out messages marked deleted."""
        if self._live_count == len(values):  # nothing deleted: the common case
            return [f"{i} {v}" for i, v in enumerate(values, 1)]
        deleted = self._deleted
        return [f"{i} {v}" for i, v in enumerate(values, 1) if not deleted[i - 1]]

    def _no_args(self, arg: str) -> bool:
        if arg.strip():
            self._bad("-ERR this command takes no arguments")
            return False
        return True

    def _cmd_stat(self, arg: str) -> Event | None:
        # RFC 1939 section 5 STAT: deleted messages count in neither total.
        if self._no_args(arg):
            self._reply(f"+OK {self._live_count} {self._live_size}")
        return None

    def _cmd_list(self, arg: str) -> Event | None:
        # RFC 1939 section 5 LIST [msg].
        arg = arg.strip()
        if arg:
            n = self._message(arg)
            if n is not None:
                self._reply(f"+OK {n} {self._sizes[n - 1]}")
            return None
        lines = self._listing(self._sizes)
        self._multiline(
            f"+OK {_plural(self._live_count, 'message')} ({self._live_size} octets)", lines
        )
        return None

    def _cmd_uidl(self, arg: str) -> Event | None:
        # RFC 1939 section 7 UIDL [msg].
        arg = arg.strip()
        if arg:
            n = self._message(arg)
            if n is not None:
                self._reply(f"+OK {n} {self._uids[n - 1]}")
            return None
        lines = self._listing(self._uids)
        self._multiline("+OK", lines)
        return None

    def _cmd_retr(self, arg: str) -> Event | None:
        # RFC 1939 section 5 RETR msg.
        n = self._message(arg.strip())
        if n is None:
            return None
        return RetrieveMessage(n, self._keys[n - 1], None)

    def _cmd_top(self, arg: str) -> Event | None:
        # RFC 1939 section 7 TOP msg n: n must be non-negative.
        parts = arg.split()
        if len(parts) != 2 or not parts[1].isdigit() or not parts[1].isascii():
            self._bad("-ERR syntax: TOP msg n")
            return None
        n = self._message(parts[0])
        if n is None:
            return None
        return RetrieveMessage(n, self._keys[n - 1], int(parts[1]))

    def _cmd_dele(self, arg: str) -> Event | None:
        # RFC 1939 section 5 DELE msg: only marks; removal happens in UPDATE.
        n = self._message(arg.strip())
        if n is None:
            return None
        self._deleted[n - 1] = True
        self._live_count -= 1
        self._live_size -= self._sizes[n - 1]
        self._reply(f"+OK message {n} deleted")
        return None

    def _cmd_noop(self, arg: str) -> Event | None:
        if self._no_args(arg):
            self._reply("+OK")
        return None

    def _cmd_rset(self, arg: str) -> Event | None:
        # RFC 1939 section 5 RSET: unmark every message marked as deleted.
        if not self._no_args(arg):
            return None
        self._deleted = [False] * len(self._keys)
        self._live_count = len(self._keys)
        self._live_size = sum(self._sizes)
        self._reply(
            f"+OK maildrop has {_plural(self._live_count, 'message')} ({self._live_size} octets)"
        )
        return None

    def _cmd_quit_transaction(self, arg: str) -> Event | None:
        # RFC 1939 section 6: enter UPDATE, remove the marked messages, reply, close.
        self.state = State.UPDATE
        keys = tuple(k for k, d in zip(self._keys, self._deleted, strict=True) if d)
        return Update(keys)


_TOO_LONG = object()


A = State.AUTHORIZATION
T = State.TRANSACTION

# The state machine: (state, keyword) -> handler. A known keyword missing for a
# state gets "-ERR command not valid in this state"; an unknown one "-ERR unknown command".
_HANDLERS: dict[tuple[State, str], _Handler] = {
    (A, "USER"): POP3Server._cmd_user,
    (A, "PASS"): POP3Server._cmd_pass,
    (A, "APOP"): POP3Server._cmd_apop,
    (A, "AUTH"): POP3Server._cmd_auth,
    (A, "CAPA"): POP3Server._cmd_capa,
    (A, "STLS"): POP3Server._cmd_stls,
    (A, "QUIT"): POP3Server._cmd_quit_authorization,
    (T, "STAT"): POP3Server._cmd_stat,
    (T, "LIST"): POP3Server._cmd_list,
    (T, "RETR"): POP3Server._cmd_retr,
    (T, "DELE"): POP3Server._cmd_dele,
    (T, "NOOP"): POP3Server._cmd_noop,
    (T, "RSET"): POP3Server._cmd_rset,
    (T, "TOP"): POP3Server._cmd_top,
    (T, "UIDL"): POP3Server._cmd_uidl,
    (T, "CAPA"): POP3Server._cmd_capa,
    (T, "QUIT"): POP3Server._cmd_quit_transaction,
}
_KNOWN = frozenset(keyword for _, keyword in _HANDLERS)

del A, T
