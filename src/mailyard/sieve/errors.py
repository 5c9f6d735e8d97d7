"""Errors of the Sieve layer."""

from __future__ import annotations


class SieveError(Exception):
    """A script that does not compile: the text names the line and column
    (1-based) of the offending token, as RFC 5804 2.6 wants a human-readable
    reason for PUTSCRIPT / CHECKSCRIPT."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        self.message = message
        self.line = line
        self.column = column
        where = f"line {line}, column {column}: " if line else ""
        super().__init__(where + message)


class SieveRuntimeError(Exception):
    """A script that failed while running (a limit reached, RFC 5228 2.10.6
    conflicting actions): the caller keeps the message in the INBOX."""
