"""Sans-I/O SMTP engines (RFC 5321). ``server`` is the receiving side."""

from ..contract import FLUSH, NEED_DATA, PAUSED, AbuseBudgets, Closed, ProtocolMisuse
from .events import (
    AuthCancelled,
    AuthReceived,
    AuthResponse,
    Event,
    ExpnReceived,
    HeloReceived,
    MailFromReceived,
    MessageData,
    MessageReceived,
    ProtocolError,
    RcptToReceived,
    StartTLSReceived,
    VrfyReceived,
)
from .replies import Reply
from .server import TRANSITIONS, ServerConfig, SMTPServerEngine, State, Transition

__all__ = [
    "FLUSH",
    "NEED_DATA",
    "PAUSED",
    "AuthCancelled",
    "AuthReceived",
    "AuthResponse",
    "AbuseBudgets",
    "Closed",
    "Event",
    "ExpnReceived",
    "HeloReceived",
    "MailFromReceived",
    "MessageData",
    "MessageReceived",
    "ProtocolError",
    "RcptToReceived",
    "StartTLSReceived",
    "VrfyReceived",
    "Reply",
    "ServerConfig",
    "SMTPServerEngine",
    "ProtocolMisuse",
    "State",
    "Transition",
    "TRANSITIONS",
]
