"""Sans-I/O SMTP engines (RFC 5321). ``server`` is the receiving side."""

from .events import (
    NEED_DATA,
    PAUSED,
    AuthCancelled,
    AuthReceived,
    AuthResponse,
    ConnectionClosed,
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
from .server import ServerConfig, SMTPServerEngine, SMTPUsageError, State

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "AuthCancelled",
    "AuthReceived",
    "AuthResponse",
    "ConnectionClosed",
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
    "SMTPUsageError",
    "State",
]
