"""Events the SMTP server engine hands to the glue (h11 style).

Events marked *needs an answer* pause the engine until the glue answers
with ``engine.respond(reply)`` (``respond()`` alone: the usual positive
reply). The others are informational.

The sentinels ``NEED_DATA`` (feed more bytes) and ``PAUSED`` (an event is
still waiting for its answer) and the ``Closed`` event are the ones every
engine shares (protocols/contract.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..contract import NEED_DATA, PAUSED, Closed, Sentinel

__all__ = [
    "Event",
    "HeloReceived",
    "MailFromReceived",
    "RcptToReceived",
    "VrfyReceived",
    "ExpnReceived",
    "MessageData",
    "MessageReceived",
    "AuthReceived",
    "AuthResponse",
    "AuthCancelled",
    "StartTLSReceived",
    "Closed",
    "ProtocolError",
    "Sentinel",
    "NEED_DATA",
    "PAUSED",
]


class Event:
    """Base class of all events; ``needs_answer`` says whether the engine waits."""

    needs_answer = False


@dataclass(frozen=True)
class HeloReceived(Event):
    """HELO or EHLO (RFC 5321 4.1.1.1). Needs an answer; ``respond()`` builds
    the 250 reply (the EHLO keyword list for ``extended``)."""

    name: str
    extended: bool
    needs_answer = True


@dataclass(frozen=True)
class MailFromReceived(Event):
    """MAIL FROM (RFC 5321 4.1.1.2). ``reverse_path`` is '' for ``<>``.
    ``params`` holds every parameter as sent (keys upper-case); the
    interpreted ones are also given as fields. Needs an answer."""

    reverse_path: str
    params: dict[str, str | None]
    size: int | None = None
    body: str = "7BIT"
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None
    auth: str | None = None
    needs_answer = True


@dataclass(frozen=True)
class RcptToReceived(Event):
    """RCPT TO (RFC 5321 4.1.1.3). ``forward_path`` is ``postmaster`` for the
    domain-less ``<Postmaster>``; source routes are already stripped.
    ``notify``/``orcpt`` are RFC 3461 DSN parameters. Needs an answer."""

    forward_path: str
    params: dict[str, str | None]
    notify: frozenset[str] | None = None
    orcpt: tuple[str, str] | None = None
    needs_answer = True


@dataclass(frozen=True)
class VrfyReceived(Event):
    """VRFY with VRFY enabled (RFC 5321 4.1.1.6, 3.5). Needs an answer."""

    argument: str
    needs_answer = True


@dataclass(frozen=True)
class ExpnReceived(Event):
    """EXPN with EXPN enabled (RFC 5321 4.1.1.7, 3.5). Needs an answer."""

    argument: str
    needs_answer = True


@dataclass(frozen=True)
class MessageData(Event):
    """A part of a large message's data, in order, dot-unstuffed: the glue
    stores it (a spool file) so no transfer holds a whole message in memory.
    Parts come only for messages larger than ``ServerConfig.spill_at``; if the
    data is then refused (a ProtocolError instead of MessageReceived) or the
    session ends, the parts are to be discarded."""

    data: bytes = field(repr=False)


@dataclass(frozen=True)
class MessageReceived(Event):
    """The end of mail data was seen (RFC 5321 4.1.1.4).

    ``data`` is dot-unstuffed (4.5.2) with the CRLF line endings as sent; the
    final CRLF before ``.`` belongs to the data. With ``streamed`` it is only
    the last part, after the MessageData parts handed out before. Answer 250
    only once the message is durable; after any answer the transaction is
    reset. ``mail`` and ``rcpts`` are the accepted MAIL/RCPT events (for DSN
    parameters).
    """

    reverse_path: str
    forward_paths: list[str]
    rcpt_params: list[dict[str, str | None]]
    mail_params: dict[str, str | None]
    data: bytes = field(repr=False)
    mail: MailFromReceived | None = field(default=None, repr=False)
    rcpts: list[RcptToReceived] = field(default_factory=list, repr=False)
    streamed: bool = False
    needs_answer = True


@dataclass(frozen=True)
class AuthReceived(Event):
    """AUTH (RFC 4954 4). ``initial_response`` is None when absent, '' for
    ``=``, else the base64 text as sent (not decoded). Answer with a 334
    challenge, 235 (``respond(reply, identity=...)``) or a 5xx/4xx reply;
    failures count against the connection's ``max_auth_failures``."""

    mechanism: str
    initial_response: str | None
    needs_answer = True


@dataclass(frozen=True)
class AuthResponse(Event):
    """One client line of the SASL exchange (the text after a 334). Needs an
    answer, like ``AuthReceived``."""

    data: str
    needs_answer = True


@dataclass(frozen=True)
class AuthCancelled(Event):
    """The client sent ``*``; the engine already answered 501 (RFC 4954 4)."""


@dataclass(frozen=True)
class StartTLSReceived(Event):
    """STARTTLS (RFC 3207 4). ``respond()`` sends 220 and discards everything
    buffered; the glue then runs the TLS handshake on the socket and feeds
    the decrypted bytes. Reject with e.g. ``454 4.7.0``."""

    needs_answer = True


@dataclass(frozen=True)
class ProtocolError(Event):
    """Informational: the engine itself answered ``code`` for ``description``
    (syntax errors, sequence errors, rejected message data). For logging."""

    code: int
    description: str
