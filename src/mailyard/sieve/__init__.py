"""Sieve (RFC 5228): a mail filtering language, parsed and run without I/O.

``compile_script`` turns a script's text into a checked ``Script`` (errors
name the line and column: ``SieveError``); ``run`` takes a compiled script,
a message and its envelope and returns the actions to take (``Result``).
Nothing here touches the store, the network or files: delivery/sieve.py
applies the actions, the CLI and ManageSieve check scripts with it.
"""

from __future__ import annotations

from .actions import (
    Discard,
    DuplicateMark,
    Envelope,
    FileInto,
    Keep,
    Limits,
    Notify,
    Redirect,
    Reject,
    Result,
    Vacation,
)
from .errors import SieveError, SieveRuntimeError
from .interpreter import run
from .message import SieveMessage
from .parser import EXTENSIONS, Script, compile_script
from .spamtest import SpamVerdict, spam_levels, verdict_from_header

__all__ = [
    "EXTENSIONS",
    "Discard",
    "DuplicateMark",
    "Envelope",
    "FileInto",
    "Keep",
    "Limits",
    "Notify",
    "Redirect",
    "Reject",
    "Result",
    "Script",
    "SieveMessage",
    "SieveError",
    "SieveRuntimeError",
    "SpamVerdict",
    "Vacation",
    "compile_script",
    "run",
    "spam_levels",
    "verdict_from_header",
]
