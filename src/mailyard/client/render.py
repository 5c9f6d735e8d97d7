"""Showing messages in the terminal: the header fields a reader sees, and
attachments saved as files.

Reading and answering mail -- body text, HTML as text, attachment names,
sizes, quoting, reply and forward rules -- is the message layer's
(``message.reading``, ``message.reply``), shared with webmail; this module
only adds what is the terminal's own.
"""

from __future__ import annotations

import os
from email.message import Message
from pathlib import Path

from ..message import reading
from ..message.reading import header_text, mailboxes, readable_addresses

HEADERS_OF_INTEREST = ("Date", "From", "Reply-To", "To", "Cc", "Bcc", "Subject")


def display_addresses(msg: Message, name: str) -> str:
    """An address header for a reader: decoded names (``readable_addresses``)."""
    boxes = mailboxes(msg, name)
    return readable_addresses(boxes) if boxes else header_text(msg, name)


# --- saving attachments ----------------------------------------------------------


def safe_filename(name: str, directory: Path) -> Path:
    """A path in ``directory`` for an attachment name from a stranger: the name
    made safe (``message.reading.safe_filename``: no directory part, no
    control or bidi characters, no leading dots, at most 200 octets), never an
    existing file or symlink (a number is added)."""
    path = directory / reading.safe_filename(name)
    stem, suffix = path.stem, path.suffix
    n = 1
    while os.path.lexists(path):
        path = directory / f"{stem}-{n}{suffix}"
        n += 1
    return path


def save_attachment(name: str, directory: Path, data: bytes) -> Path:
    """Write ``data`` under a `safe_filename` in ``directory`` and return the path.

    The file is created exclusively and a symlink is never followed
    (O_EXCL | O_NOFOLLOW), so a name that appears between the check and the
    write -- or a planted link -- cannot redirect the write outside
    ``directory``; a clash just moves on to the next free name.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = safe_filename(name, directory)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path
    raise FileExistsError(f"no free file name for {name!r} in {directory}")
