"""Sans-I/O SMTP client engine (RFC 5321, the sending side).

The engine owns the dialogue of one connection: greeting, EHLO (HELO when the
server does not know EHLO), opportunistic or required STARTTLS (RFC 3207),
AUTH PLAIN / LOGIN for a smarthost (RFC 4954), then any number of mail
transactions, each MAIL + RCPT... + DATA, pipelined when the server offers
PIPELINING (RFC 2920). It never touches a socket or the clock: the glue feeds
the server's bytes with ``receive_data``, sends ``data_to_send()``, and acts on
the events ``next_event`` returns:

``SessionReady``       the session can carry a transaction (``send_mail``) or end (``quit``)
``StartTLSNeeded``     run the TLS handshake on the socket, then call ``tls_started``
``TransactionResult``  one transaction's outcome, a reply per recipient
``SessionFailed``      the server refused the session (greeting, EHLO, STARTTLS, AUTH)
``SessionClosed``      QUIT answered (or given up); close the socket

``timeout`` is the RFC 5321 4.5.3.2 time limit for the reply being awaited.
"""

from __future__ import annotations

import base64
import enum
import re
from collections import deque
from dataclasses import dataclass, field

from .events import NEED_DATA, Sentinel
from .replies import Reply

__all__ = [
    "NEED_DATA",
    "ClientState",
    "OutboundRecipient",
    "OutboundMessage",
    "SessionReady",
    "StartTLSNeeded",
    "TransactionResult",
    "SessionFailed",
    "SessionClosed",
    "SMTPClientEngine",
    "parse_reply_lines",
    "xtext_encode",
    "TIMEOUTS",
]

# RFC 5321 4.5.3.2: minimum client timeouts, seconds.
TIMEOUTS = {
    "greeting": 300.0,  # 4.5.3.2.1 initial 220 message: 5 minutes
    "command": 300.0,  # EHLO/HELO, STARTTLS, AUTH, RSET, QUIT (no RFC figure; as MAIL)
    "mail": 300.0,  # 4.5.3.2.2
    "rcpt": 300.0,  # 4.5.3.2.3
    "data": 120.0,  # 4.5.3.2.4 DATA initiation: 2 minutes
    "data_block": 180.0,  # 4.5.3.2.5 each block of data: 3 minutes
    "data_end": 600.0,  # 4.5.3.2.6 final "." reply: 10 minutes
}

_TIMEOUT_OF = {"mail": "mail", "rcpt": "rcpt", "data": "data", "body": "data_end"}

MAX_REPLY_LINE = 4096  # a server that sends longer lines is broken or hostile


class ClientState(enum.Enum):
    GREETING = "greeting"
    EHLO = "ehlo"
    HELO = "helo"
    STARTTLS = "starttls"
    TLS = "tls"  # waiting for the glue's handshake
    AUTH = "auth"
    READY = "ready"
    TRANSACTION = "transaction"
    QUIT = "quit"
    CLOSED = "closed"


@dataclass(frozen=True)
class OutboundRecipient:
    address: str
    notify: frozenset[str] | None = None  # RFC 3461 4.1
    orcpt: tuple[str, str] | None = None  # RFC 3461 4.2: (addr-type, address), decoded


@dataclass(frozen=True)
class OutboundMessage:
    """One transaction's envelope and content (``data`` not dot-stuffed, CRLF lines)."""

    reverse_path: str
    recipients: tuple[OutboundRecipient, ...]
    data: bytes = field(repr=False)
    eight_bit: bool = False  # BODY=8BITMIME needed (RFC 6152)
    smtputf8: bool = False  # SMTPUTF8 needed (RFC 6531)
    ret: str | None = None  # RFC 3461 4.3: FULL or HDRS
    envid: str | None = None  # RFC 3461 4.4


class _Event:
    pass


@dataclass(frozen=True)
class SessionReady(_Event):
    extensions: dict[str, str]
    tls: bool
    authenticated: bool


@dataclass(frozen=True)
class StartTLSNeeded(_Event):
    pass


@dataclass(frozen=True)
class TransactionResult(_Event):
    """``replies[i]`` is the final word on ``message.recipients[i]``: the RCPT
    reply when that failed, else the reply to the end of data. ``local`` is
    True when the engine refused to send (the server lacks a needed
    extension or the message is over its SIZE)."""

    message: OutboundMessage
    replies: tuple[Reply, ...]
    mail_reply: Reply | None = None
    data_reply: Reply | None = None
    local: bool = False


@dataclass(frozen=True)
class SessionFailed(_Event):
    stage: str  # "greeting", "ehlo", "helo", "starttls", "auth", "protocol"
    reply: Reply


@dataclass(frozen=True)
class SessionClosed(_Event):
    pass


_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -]?)(.*)", re.S)
_ENHANCED = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?: |$)")


def parse_reply_lines(lines: list[bytes]) -> Reply:
    """Build a Reply from its wire lines (without CRLF). The enhanced code
    (RFC 3463) is taken from the first line when present."""
    texts = []
    code = int(lines[0][:3])
    enhanced = None
    for i, raw in enumerate(lines):
        text = raw[4:].decode("utf-8", "replace")
        if code // 100 in (2, 4, 5):
            m = _ENHANCED.match(text)
            if m and m.group(1)[0] == str(code)[0]:
                if i == 0:
                    enhanced = m.group(1)
                text = text[m.end():]
        texts.append(text)
    return Reply(code, enhanced, tuple(texts))


def xtext_encode(text: str) -> str:
    """RFC 3461 4: xtext; "+", "=" and characters outside 33..126 as +XX."""
    out = []
    for ch in text:
        o = ord(ch)
        if 33 <= o <= 126 and ch not in "+=":
            out.append(ch)
        else:
            out.extend(f"+{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def dot_stuff(data: bytes) -> bytes:
    """RFC 5321 4.5.2: double a leading "." on every line; end with CRLF.CRLF."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


class SMTPClientEngine:
    """The client side of one SMTP connection. ``starttls``: "never",
    "opportunistic" (use it when offered, carry on in clear if it fails) or
    "require". ``auth``: (username, password) for a smarthost, or None."""

    def __init__(
        self,
        local_hostname: str,
        *,
        starttls: str = "opportunistic",
        auth: tuple[str, str] | None = None,
        tls_active: bool = False,
        timeouts: dict[str, float] | None = None,
    ) -> None:
        if starttls not in ("never", "opportunistic", "require"):
            raise ValueError(f"bad starttls policy {starttls!r}")
        self.local_hostname = local_hostname
        self.starttls_policy = starttls
        self.auth_credentials = auth
        self.tls = tls_active
        self.timeouts = {**TIMEOUTS, **(timeouts or {})}
        self.state = ClientState.GREETING
        self.extensions: dict[str, str] = {}
        self.esmtp = False
        self.authenticated = False
        self._in = bytearray()
        self._out: list[bytes] = []
        self._lines: list[bytes] = []  # lines of the reply being read
        self._events: deque[_Event] = deque()
        self._expect: deque[str] = deque()  # what each awaited reply answers
        self._timeout_kind = "greeting"
        # transaction bookkeeping
        self._message: OutboundMessage | None = None
        self._mail_reply: Reply | None = None
        self._rcpt_replies: list[Reply] = []
        self._auth_steps: list[bytes] = []
        self._pipeline: deque[tuple[str, str]] = deque()  # commands still to send without PIPELINING
        self._data_sent_for = False
        self._expect.append("greeting")

    # --- I/O side ------------------------------------------------------------
    @property
    def timeout(self) -> float:
        """Seconds to wait for the next reply (RFC 5321 4.5.3.2)."""
        return self.timeouts[self._timeout_kind]

    @property
    def closed(self) -> bool:
        return self.state is ClientState.CLOSED

    def receive_data(self, data: bytes) -> None:
        """Bytes from the server; ``b""`` means the connection was closed."""
        if not data:
            if self.state is not ClientState.CLOSED:
                self._connection_lost()
            return
        self._in += data

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def next_event(self) -> _Event | Sentinel:
        while not self._events:
            if self.state is ClientState.CLOSED:
                return NEED_DATA
            line = self._next_line()
            if line is None:
                return NEED_DATA
            m = _REPLY_LINE.fullmatch(line)
            if m is None or (self._lines and line[:3] != self._lines[0][:3]):
                self._fail("protocol", Reply(421, "4.5.0", "Malformed reply from server"), close=True)
                continue
            self._lines.append(line)
            if m.group(2) == b"-":
                continue
            reply = parse_reply_lines(self._lines)
            self._lines = []
            if not self._expect:
                # RFC 5321 4.5.3.2 / 3.8: an unsolicited 421 means the server is going away
                self._fail("protocol", reply if reply.code == 421 else Reply(421, "4.5.0", "Unexpected reply"),
                           close=True)
                continue
            self._on_reply(self._expect.popleft(), reply)
        return self._events.popleft()

    def _next_line(self) -> bytes | None:
        end = self._in.find(b"\n")
        if end < 0:
            if len(self._in) > MAX_REPLY_LINE:
                self._in.clear()
                self._fail("protocol", Reply(421, "4.5.0", "Reply line too long"), close=True)
            return None
        line = bytes(self._in[:end]).rstrip(b"\r")
        del self._in[: end + 1]
        return line

    # --- the glue's commands -------------------------------------------------
    def tls_started(self) -> None:
        """The TLS handshake after ``StartTLSNeeded`` succeeded: RFC 3207 4.2,
        forget what the server said before and EHLO again."""
        if self.state is not ClientState.TLS:
            raise RuntimeError("tls_started() without StartTLSNeeded")
        self.tls = True
        self.extensions = {}
        self._in.clear()
        self._send_ehlo()

    def send_mail(self, message: OutboundMessage) -> None:
        """Start one transaction; its ``TransactionResult`` follows."""
        if self.state is not ClientState.READY:
            raise RuntimeError(f"send_mail() in state {self.state}")
        if not message.recipients:
            raise ValueError("a transaction needs at least one recipient")
        refusal = self._refusal(message)
        if refusal is not None:
            self._events.append(
                TransactionResult(message, tuple(refusal for _ in message.recipients), local=True)
            )
            return
        self._message = message
        self._mail_reply = None
        self._rcpt_replies = []
        self.state = ClientState.TRANSACTION
        mail = f"MAIL FROM:<{message.reverse_path}>"
        ext = self.extensions
        if "SIZE" in ext:
            mail += f" SIZE={len(message.data)}"
        if message.eight_bit and "8BITMIME" in ext:
            mail += " BODY=8BITMIME"
        if message.smtputf8:
            mail += " SMTPUTF8"
        if "DSN" in ext:
            if message.ret:
                mail += f" RET={message.ret}"
            if message.envid:
                mail += f" ENVID={xtext_encode(message.envid)}"
        commands = [(mail, "mail")]
        for rcpt in message.recipients:
            line = f"RCPT TO:<{rcpt.address}>"
            if "DSN" in ext:
                if rcpt.notify:
                    line += " NOTIFY=" + ",".join(sorted(rcpt.notify))
                if rcpt.orcpt:
                    line += f" ORCPT={rcpt.orcpt[0]};{xtext_encode(rcpt.orcpt[1])}"
            commands.append((line, "rcpt"))
        commands.append(("DATA", "data"))
        if "PIPELINING" in ext:
            # RFC 2920 3.1: MAIL, RCPTs and DATA may go in one batch.
            for line, kind in commands:
                self._command(line, kind)
        else:
            self._pipeline = deque(commands)
            line, kind = self._pipeline.popleft()
            self._command(line, kind)

    def quit(self) -> None:
        """End the session politely (RFC 5321 4.1.1.10)."""
        if self.state in (ClientState.CLOSED, ClientState.QUIT):
            return
        if self.state is ClientState.TLS:
            self.state = ClientState.CLOSED
            self._events.append(SessionClosed())
            return
        self.state = ClientState.QUIT
        self._command("QUIT", "quit")

    # --- internals -------------------------------------------------------------
    def _command(self, line: str, kind: str) -> None:
        self._out.append(line.encode("utf-8") + b"\r\n")
        self._expect.append(kind)
        if len(self._expect) == 1:
            self._timeout_kind = _TIMEOUT_OF.get(kind, "command")

    def _refusal(self, message: OutboundMessage) -> Reply | None:
        ext = self.extensions
        if message.smtputf8 and "SMTPUTF8" not in ext:
            # RFC 6531 3.2: no downgrade; the message cannot be delivered to this server.
            return Reply(553, "5.6.7", "The receiving server does not support SMTPUTF8")
        if message.eight_bit and "8BITMIME" not in ext:
            # RFC 6152 3: 8-bit data only to servers that announce 8BITMIME; we do not convert.
            return Reply(554, "5.6.3", "The receiving server does not support 8BITMIME; conversion not done")
        size = ext.get("SIZE", "")
        if size.isdigit() and int(size) > 0 and len(message.data) > int(size):
            # RFC 1870 6.1: the server's fixed limit is known to be exceeded.
            return Reply(552, "5.3.4", f"Message is larger than the receiving server's limit of {size} octets")
        return None

    def _fail(self, stage: str, reply: Reply, close: bool = False) -> None:
        self._events.append(SessionFailed(stage, reply))
        if self.state is ClientState.TRANSACTION and self._message is not None:
            pending = reply if reply.is_error else Reply(451, "4.4.2", "Connection lost")
            self._finish_transaction(pending, force_all=pending)
        if close:
            self.state = ClientState.CLOSED
            self._expect.clear()
            self._events.append(SessionClosed())
        else:
            self.quit()

    def _connection_lost(self) -> None:
        if self.state is ClientState.QUIT:
            self.state = ClientState.CLOSED
            self._expect.clear()
            self._events.append(SessionClosed())
            return
        self._fail("protocol", Reply(421, "4.4.2", "Connection closed by the server"), close=True)

    def _send_ehlo(self) -> None:
        self.state = ClientState.EHLO
        self._command(f"EHLO {self.local_hostname}", "ehlo")

    def _ready(self) -> None:
        self.state = ClientState.READY
        self._timeout_kind = "command"
        self._events.append(SessionReady(dict(self.extensions), self.tls, self.authenticated))

    def _after_hello(self) -> None:
        want_tls = self.starttls_policy != "never" and not self.tls
        if want_tls and "STARTTLS" in self.extensions:
            self.state = ClientState.STARTTLS
            self._command("STARTTLS", "starttls")
            return
        if want_tls and self.starttls_policy == "require":
            self._fail("starttls", Reply(530, "5.7.10", "The server does not offer STARTTLS, which is required"))
            return
        self._start_auth()

    def _start_auth(self) -> None:
        if self.auth_credentials is None or self.authenticated:
            self._ready()
            return
        user, password = self.auth_credentials
        mechanisms = set(self.extensions.get("AUTH", "").upper().split())
        self.state = ClientState.AUTH
        if "PLAIN" in mechanisms:
            # RFC 4616: authzid NUL authcid NUL passwd, as initial response (RFC 4954 4)
            token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
            self._auth_steps = []
            self._command(f"AUTH PLAIN {token}", "auth")
        elif "LOGIN" in mechanisms:
            self._auth_steps = [base64.b64encode(user.encode()), base64.b64encode(password.encode())]
            self._command("AUTH LOGIN", "auth")
        else:
            self._fail("auth", Reply(530, "5.7.0", "The server offers no AUTH mechanism we can use (PLAIN, LOGIN)"))

    def _on_reply(self, kind: str, reply: Reply) -> None:
        handler = getattr(self, f"_reply_{kind}")
        handler(reply)
        if self._expect:
            self._timeout_kind = _TIMEOUT_OF.get(self._expect[0], "command")

    def _reply_greeting(self, reply: Reply) -> None:
        if reply.code == 220:
            self._send_ehlo()
        else:
            # RFC 5321 3.1: 554 (or 421) instead of 220 means no service here; the
            # caller tries the next host. Be polite: QUIT (4.1.1.10).
            self._fail("greeting", reply)

    def _reply_ehlo(self, reply: Reply) -> None:
        if reply.code == 250:
            self.esmtp = True
            self.extensions = {}
            for line in reply.lines[1:]:
                keyword, _, value = line.strip().partition(" ")
                keyword = keyword.upper()
                if keyword.startswith("AUTH="):  # the pre-RFC 4954 form some servers still send
                    keyword, value = "AUTH", keyword[5:] + " " + value
                if keyword:
                    self.extensions[keyword] = value.strip()
            self._after_hello()
        elif reply.code in (500, 501, 502, 504, 550):
            # RFC 5321 3.2: a server that does not know EHLO -> HELO
            self.state = ClientState.HELO
            self._command(f"HELO {self.local_hostname}", "helo")
        else:
            self._fail("ehlo", reply)

    def _reply_helo(self, reply: Reply) -> None:
        if reply.code == 250:
            self.extensions = {}
            self._after_hello()
        else:
            self._fail("helo", reply)

    def _reply_starttls(self, reply: Reply) -> None:
        if reply.code == 220:
            self.state = ClientState.TLS
            self._events.append(StartTLSNeeded())
        elif self.starttls_policy == "require":
            self._fail("starttls", reply)
        else:
            self._start_auth()  # opportunistic: carry on without TLS

    def _reply_auth(self, reply: Reply) -> None:
        if reply.code == 235:
            self.authenticated = True
            self._ready()
        elif reply.code == 334 and self._auth_steps:
            self._out.append(self._auth_steps.pop(0) + b"\r\n")
            self._expect.append("auth")
        elif reply.code == 334:
            self._out.append(b"*\r\n")  # RFC 4954 4: cancel an exchange we cannot continue
            self._expect.append("auth")
        else:
            self._fail("auth", reply)

    def _reply_mail(self, reply: Reply) -> None:
        self._mail_reply = reply
        self._pipeline_next(reply.is_positive)

    def _reply_rcpt(self, reply: Reply) -> None:
        self._rcpt_replies.append(reply)
        last = len(self._rcpt_replies) == len(self._message.recipients)  # type: ignore[union-attr]
        if last and "PIPELINING" not in self.extensions and not any(r.is_positive for r in self._rcpt_replies):
            # Nothing accepted: no DATA, reset the transaction (RFC 5321 4.1.1.5).
            self._pipeline.clear()
            self._finish_transaction(None)
            self._command("RSET", "rset")
            return
        self._pipeline_next(True)

    def _pipeline_next(self, ok: bool) -> None:
        if "PIPELINING" in self.extensions:
            return
        if not ok:
            self._pipeline.clear()
            self._finish_transaction(None)
            return
        if self._pipeline:
            line, kind = self._pipeline.popleft()
            self._command(line, kind)

    def _reply_data(self, reply: Reply) -> None:
        assert self._message is not None
        mail_ok = self._mail_reply is not None and self._mail_reply.is_positive
        any_rcpt = any(r.is_positive for r in self._rcpt_replies)
        if reply.code == 354:
            if mail_ok and any_rcpt:
                self._out.append(dot_stuff(self._message.data))
            else:
                # RFC 2920 3.1: DATA was accepted although no recipient was; send
                # an empty message so the server ends the transaction.
                self._out.append(b".\r\n")
            self._expect.append("body")
            self._timeout_kind = "data_end"
            self._data_sent_for = mail_ok and any_rcpt
            return
        self._finish_transaction(reply if (mail_ok and any_rcpt) else None)

    def _reply_body(self, reply: Reply) -> None:
        if getattr(self, "_data_sent_for", False):
            self._finish_transaction(reply)
        else:
            self._finish_transaction(None)

    def _reply_rset(self, reply: Reply) -> None:
        if reply.code != 250:
            self._fail("protocol", reply)

    def _reply_quit(self, reply: Reply) -> None:
        self.state = ClientState.CLOSED
        self._expect.clear()
        self._events.append(SessionClosed())

    def _finish_transaction(self, data_reply: Reply | None, force_all: Reply | None = None) -> None:
        message = self._message
        if message is None:
            return
        mail = self._mail_reply
        replies: list[Reply] = []
        for i, _rcpt in enumerate(message.recipients):
            if force_all is not None and (i >= len(self._rcpt_replies) or self._rcpt_replies[i].is_positive):
                replies.append(force_all)
            elif mail is not None and not mail.is_positive:
                replies.append(mail)
            elif i < len(self._rcpt_replies) and not self._rcpt_replies[i].is_positive:
                replies.append(self._rcpt_replies[i])
            elif data_reply is not None:
                replies.append(data_reply)
            else:
                replies.append(Reply(451, "4.4.2", "Transaction not completed"))
        self._events.append(TransactionResult(message, tuple(replies), mail, data_reply))
        self._message = None
        self._data_sent_for = False
        if self.state is ClientState.TRANSACTION:
            self._ready_after_transaction()

    def _ready_after_transaction(self) -> None:
        self.state = ClientState.READY
        self._timeout_kind = "command"
