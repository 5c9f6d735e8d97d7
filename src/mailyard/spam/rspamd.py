"""rspamd's HTTP protocol (the normal worker's ``POST /checkv2``): the
message with the envelope and connection data in request headers, the
verdict as JSON (https://rspamd.com/doc/developers/protocol.html).

``check`` is async (httpx), bounded by a timeout; any failure (refused,
timed out, a non-200 answer, JSON that is not rspamd's) raises
``RspamdUnavailable`` and the caller falls back on the built-in score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

# rspamd's actions, mildest first.
ACTIONS = ("no action", "greylist", "add header", "rewrite subject", "soft reject", "reject")


class RspamdUnavailable(Exception):
    """rspamd did not give a verdict (the text says why)."""


@dataclass
class RspamdResult:
    action: str
    score: float
    required: float
    symbols: dict[str, float] = field(default_factory=dict)
    message: str = ""  # messages.smtp_message: the text for an SMTP reply
    subject: str | None = None  # the rewritten Subject ("rewrite subject")
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    remove_headers: list[str] = field(default_factory=list)


def _header_values(value: Any) -> list[str]:
    """milter.add_headers values: a string, {"value": ...}, or a list of them."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [str(value["value"])] if "value" in value else []
    if isinstance(value, list):
        return [v for item in value for v in _header_values(item)]
    return []


def parse_reply(doc: Any) -> RspamdResult:
    """rspamd's JSON verdict; raises ``RspamdUnavailable`` for anything else."""
    if not isinstance(doc, dict) or not isinstance(doc.get("action"), str):
        raise RspamdUnavailable("rspamd's answer has no action")
    action = doc["action"]
    if action not in ACTIONS:
        raise RspamdUnavailable(f"rspamd answered an unknown action {action!r}")
    try:
        score = float(doc.get("score", 0.0))
        required = float(doc.get("required_score", 0.0))
    except (TypeError, ValueError) as exc:
        raise RspamdUnavailable(f"rspamd's score is not a number: {exc}") from exc
    symbols: dict[str, float] = {}
    raw_symbols = doc.get("symbols")
    if isinstance(raw_symbols, dict):
        for name, sym in raw_symbols.items():
            value = sym.get("score", 0.0) if isinstance(sym, dict) else 0.0
            symbols[str(name)] = float(value) if isinstance(value, int | float) else 0.0
    messages = doc.get("messages")
    message = ""
    if isinstance(messages, dict) and isinstance(messages.get("smtp_message"), str):
        message = messages["smtp_message"]
    subject = doc.get("subject") if isinstance(doc.get("subject"), str) else None
    add: list[tuple[str, str]] = []
    remove: list[str] = []
    milter = doc.get("milter")
    if isinstance(milter, dict):
        if isinstance(milter.get("add_headers"), dict):
            for name, value in milter["add_headers"].items():
                add.extend((str(name), v) for v in _header_values(value))
        if isinstance(milter.get("remove_headers"), dict):
            remove = [str(name) for name in milter["remove_headers"]]
    return RspamdResult(action, score, required, symbols, message, subject, add, remove)


def request_headers(*, ip: str, helo: str, mail_from: str, rcpts: Sequence[str], hostname: str | None,
                    queue_id: str, user: str | None) -> list[tuple[str, str]]:
    """The protocol's request headers (one ``Rcpt`` per recipient)."""
    headers = [("IP", ip), ("Helo", helo or "unknown"), ("From", mail_from), ("Queue-Id", queue_id)]
    headers += [("Rcpt", r) for r in rcpts]
    if hostname:
        headers.append(("Hostname", hostname))
    if user:
        headers.append(("User", user))
    # A header value is one line of ASCII.
    return [(k, v.encode("ascii", "replace").decode("ascii").replace("\r", " ").replace("\n", " "))
            for k, v in headers]


class RspamdClient:
    """One connection pool to rspamd for the server's life."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/") + "/checkv2"
        self._client = httpx.AsyncClient(timeout=timeout)

    async def check(self, message: bytes, **envelope: Any) -> RspamdResult:
        try:
            response = await self._client.post(self.url, content=message, headers=request_headers(**envelope))
        except httpx.HTTPError as exc:
            raise RspamdUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise RspamdUnavailable(f"HTTP {response.status_code}")
        try:
            doc = response.json()
        except ValueError as exc:
            raise RspamdUnavailable("rspamd's answer is not JSON") from exc
        return parse_reply(doc)

    async def close(self) -> None:
        await self._client.aclose()
