"""Reading Maildir folders as Dovecot and Courier write them.

- A Maildir is a directory with ``cur/``, ``new/`` and ``tmp/``; the root one
  is INBOX. Maildir++ keeps the other folders beside it as ``.Name`` with
  ``.`` between hierarchy levels (``.Lists.foo`` is ``Lists/foo``), each level
  in IMAP's modified UTF-7 (RFC 3501 5.1.3) as Dovecot and Courier store it.
  A plain sub-directory that is itself a Maildir (Dovecot's ``LAYOUT=fs``)
  is a folder too.
- Flags are the letters after ``:2,`` in a file name (D draft, F flagged,
  R replied, S seen, T trashed); lower-case letters are Dovecot keywords,
  numbered in the folder's ``dovecot-keywords`` file (``0 name`` is ``a``).
- INTERNALDATE is the file's modification time, as Dovecot keeps it; files
  are read in the folder's ``dovecot-uidlist`` order when there is one, else
  in the order of the delivery time that starts each name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..protocols.imap import utf7
from .importer import to_crlf

FLAG_LETTERS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
LETTER_OF_FLAG = {flag: letter for letter, flag in FLAG_LETTERS.items()}
_FIELD = re.compile(rb"^[!-9;-~]+:")
_TIME_PREFIX = re.compile(r"^(\d+)")


@dataclass(frozen=True)
class MaildirFolder:
    parts: tuple[str, ...]  # hierarchy levels, decoded; () is INBOX
    path: Path


@dataclass
class MaildirMessage:
    path: Path
    data: bytes  # CRLF line ends
    flags: frozenset[str]
    internal_date: float
    not_a_message: str = ""


def is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() or (path / "new").is_dir()


_ESCAPE = re.compile(r"\\([0-9a-fA-F]{2})")


def _decode(level: str) -> str:
    """A Maildir++ name level: modified UTF-7, with Dovecot listescape's
    ``\\2e``-style escapes (a "." or "/" inside a level) undone."""
    level = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), level)
    try:
        return utf7.decode(level)
    except Exception:  # a name that is not modified UTF-7 is taken as it is
        return level


def folders(root: Path) -> list[MaildirFolder]:
    """The folders of a Maildir (Maildir++ or fs layout), INBOX first."""
    out: list[MaildirFolder] = []
    if is_maildir(root):
        out.append(MaildirFolder((), root))
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name in ("cur", "new", "tmp"):
            continue
        if entry.name.startswith(".") and entry.name not in (".", "..") and is_maildir(entry):
            levels = [level for level in entry.name[1:].split(".") if level]
            if levels:
                out.append(MaildirFolder(tuple(_decode(level) for level in levels), entry))
        elif not entry.name.startswith(".") and is_maildir(entry):
            for sub in folders(entry):
                out.append(MaildirFolder((_decode(entry.name), *sub.parts), sub.path))
    return out


def keywords_file(folder: Path) -> dict[str, str]:
    """Letter -> keyword from ``dovecot-keywords`` (lines ``<number> <keyword>``)."""
    out: dict[str, str] = {}
    try:
        text = (folder / "dovecot-keywords").read_text("utf-8", "replace")
    except OSError:
        return out
    for line in text.splitlines():
        number, _, name = line.partition(" ")
        if number.isdigit() and int(number) < 26 and name:
            out[chr(ord("a") + int(number))] = name.strip()
    return out


def _uid_order(folder: Path) -> dict[str, int]:
    """Base file name -> UID from ``dovecot-uidlist`` (empty when absent)."""
    order: dict[str, int] = {}
    try:
        lines = (folder / "dovecot-uidlist").read_text("utf-8", "replace").splitlines()[1:]
    except OSError:
        return order
    for line in lines:
        uid, _, rest = line.partition(" ")
        name = rest.rpartition(":")[2] if ":" in rest else rest
        if uid.isdigit() and name:
            order[name.split(":2,")[0]] = int(uid)
    return order


def flags_of_name(name: str, keywords: dict[str, str]) -> tuple[frozenset[str], list[str]]:
    """Flags from a file name's ``:2,`` info, and letters that name no keyword."""
    _, sep, info = name.rpartition(":2,")
    flags: set[str] = set()
    unknown: list[str] = []
    if not sep:
        return frozenset(), unknown
    for letter in info:
        if letter in FLAG_LETTERS:
            flags.add(FLAG_LETTERS[letter])
        elif "a" <= letter <= "z":
            if letter in keywords:
                flags.add(keywords[letter])
            else:
                unknown.append(letter)
    return frozenset(flags), unknown


def count(folder: Path) -> int:
    """How many files a folder's ``cur/`` and ``new/`` hold (for the progress total)."""
    n = 0
    for sub in ("cur", "new"):
        try:
            n += sum(1 for e in os.scandir(folder / sub) if not e.name.startswith("."))
        except OSError:
            continue
    return n


def messages(folder: Path) -> Iterator[MaildirMessage]:
    """The messages of one Maildir folder, oldest first."""
    keywords = keywords_file(folder)
    order = _uid_order(folder)
    files: list[tuple[int, int, str, Path]] = []
    for sub in ("cur", "new"):
        try:
            entries = list(os.scandir(folder / sub))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith(".") or not e.is_file():
                continue
            base = e.name.split(":2,")[0]
            m = _TIME_PREFIX.match(e.name)
            files.append((order.get(base, 1 << 62), int(m.group(1)) if m else 0, e.name, Path(e.path)))
    files.sort()
    for _uid, _t, name, path in files:
        try:
            data = path.read_bytes()
            mtime = path.stat().st_mtime
        except OSError as exc:
            yield MaildirMessage(path, b"", frozenset(), 0.0, f"{path}: cannot be read ({exc.strerror})")
            continue
        flags, unknown = flags_of_name(name, keywords)
        msg = MaildirMessage(path, to_crlf(data), flags, mtime)
        if not data.strip():
            msg.not_a_message = f"{path}: empty file"
        elif not _FIELD.match(data):
            msg.not_a_message = f"{path}: not a message (no header field at the start: {data[:30]!r})"
        yield msg
