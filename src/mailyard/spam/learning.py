"""Learning from users: a message a user moves into Junk teaches the filter
that it is spam, one moved out of Junk that it is ham (and its sender goes
on the user's allow list, account setting ``spam_allow``).

The filter is rspamd, through its controller's HTTP interface
(``POST /learnspam`` / ``POST /learnham`` with the message as the body and
the controller password in a ``Password`` header). This module builds the
request and reads the reply; net/learning.py sends them, off the IMAP
command's path, from a bounded queue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..message.address import iter_mailboxes, parse_address_list
from ..message.headers import split_fields
from ..message.parse import split_header_body

__all__ = ["SPAM", "HAM", "learn_kind", "Controller", "request_bytes", "read_reply", "sender_of"]

SPAM = "spam"
HAM = "ham"
JUNK = "\\Junk"
TRASH = "\\Trash"


def learn_kind(source_special: str | None, target_special: str | None) -> str | None:
    """What a move or copy teaches: into Junk from elsewhere ``spam``; out of
    Junk into anything but the Trash ``ham`` (deleting spam is no "not
    spam"); anything else nothing."""
    if target_special == JUNK and source_special != JUNK:
        return SPAM
    if source_special == JUNK and target_special not in (JUNK, TRASH):
        return HAM
    return None


@dataclass(frozen=True)
class Controller:
    """Where rspamd's controller listens (``[spam] rspamd_controller_url``)."""

    host: str
    port: int
    base: str
    password: str

    @classmethod
    def parse(cls, url: str, password: str = "") -> Controller:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"rspamd controller URL must be http://host:port, not {url!r}")
        return cls(parts.hostname, parts.port or 11334, parts.path.rstrip("/"), password)


def request_bytes(controller: Controller, kind: str, message: bytes) -> bytes:
    """The HTTP/1.1 request teaching ``message`` as ``kind`` (one request per connection)."""
    path = f"{controller.base}/learn{kind}"
    head = [f"POST {path} HTTP/1.1", f"Host: {controller.host}:{controller.port}",
            f"Content-Length: {len(message)}", "Connection: close"]
    if controller.password:
        head.append(f"Password: {controller.password}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + message


def read_reply(data: bytes) -> tuple[bool, str]:
    """(learned, what rspamd said) from the controller's whole reply. A 208
    (already learned) counts as learned."""
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split(b" ", 2)
    try:
        code = int(status[1])
    except (IndexError, ValueError):
        return False, "not an HTTP reply"
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "error" in doc:
        text = str(doc["error"])
    if code == 208 or (code == 200 and not (isinstance(doc, dict) and "error" in doc)):
        return True, f"{code} {text[:200]}"
    return False, f"{code} {text[:200]}"


def sender_of(message: bytes) -> str | None:
    """The (first) From address of a message, lower-cased, for the allow list."""
    header, _body = split_header_body(message)
    for name, value in split_fields(header):
        if name.lower() == "from":
            for m in iter_mailboxes(parse_address_list(value.decode("utf-8", "replace"))):
                if "@" in m.addr_spec:
                    return m.addr_spec.lower()
    return None
