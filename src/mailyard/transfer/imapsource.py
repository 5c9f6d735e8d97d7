"""Reading a live IMAP server (RFC 9051/3501) with the stdlib ``imaplib``.

Every folder LIST shows is read with EXAMINE (read-only, so the source is
left as it is) and ``UID FETCH (UID FLAGS INTERNALDATE BODY.PEEK[])`` in UID
order, in chunks; the source key of a message is ``UIDVALIDITY:UID`` under
``imap://user@host:port/folder``, so a re-run fetches only UIDs not seen
before (RFC 9051 2.3.1.1: a UID names the same message as long as
UIDVALIDITY is unchanged). Folders are read by several connections at once.
"""

from __future__ import annotations

import imaplib
import re
import ssl
from dataclasses import dataclass
from datetime import datetime

from ..protocols.imap import utf7
from .importer import Incoming

# RFC 9051 7.3.1: mailbox-list = "(" [mbx-list-flags] ")" SP (DQUOTE QUOTED-CHAR DQUOTE / nil) SP mailbox
_LIST = re.compile(rb'^\((?P<attrs>[^)]*)\) (?P<delim>"(?:\\.|[^"\\])*"|NIL) ?(?P<name>.*)$', re.IGNORECASE)
_UID = re.compile(rb"\bUID (\d+)", re.IGNORECASE)
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)", re.IGNORECASE)
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)", re.IGNORECASE)
_DATE = re.compile(rb'\bINTERNALDATE "([^"]+)"', re.IGNORECASE)


class SourceError(Exception):
    """The source server refused or failed (login, LIST, SELECT)."""


@dataclass(frozen=True)
class SourceSettings:
    host: str
    port: int
    security: str  # "tls" | "starttls" | "none"
    user: str
    password: str
    verify: bool = True
    timeout: float = 60.0


@dataclass(frozen=True)
class SourceFolder:
    name: str  # as the server names it (modified UTF-7), for EXAMINE
    parts: tuple[str, ...]  # hierarchy levels, decoded
    attributes: tuple[str, ...]
    selectable: bool


def connect(s: SourceSettings) -> imaplib.IMAP4:
    context = ssl.create_default_context()
    if not s.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        if s.security == "tls":
            conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(s.host, s.port, ssl_context=context, timeout=s.timeout)
        else:
            conn = imaplib.IMAP4(s.host, s.port, timeout=s.timeout)
            if s.security == "starttls":
                conn.starttls(context)
        conn.login(s.user, s.password)
    except (OSError, imaplib.IMAP4.error, ssl.SSLError) as exc:
        raise SourceError(f"{s.host}:{s.port}: {exc}") from exc
    return conn


def _unquote(raw: bytes) -> bytes:
    if raw.startswith(b'"') and raw.endswith(b'"'):
        return re.sub(rb"\\(.)", rb"\1", raw[1:-1])
    return raw


def list_folders(conn: imaplib.IMAP4) -> list[SourceFolder]:
    typ, data = conn.list()
    if typ != "OK":
        raise SourceError(f"LIST failed: {data!r}")
    out: list[SourceFolder] = []
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):  # the name came as a literal
            head, literal = item
            m = _LIST.match(head.rstrip())
            raw_name = literal
        else:
            m = _LIST.match(item)
            raw_name = _unquote(m["name"]) if m else b""
        if not m:
            continue
        attrs = tuple(a.decode() for a in m["attrs"].split())
        delim = _unquote(m["delim"]).decode() if m["delim"].upper() != b"NIL" else ""
        name = raw_name.decode("utf-8", "replace")
        try:
            decoded = utf7.decode(name)
        except Exception:
            decoded = name
        parts = tuple(decoded.split(delim)) if delim else (decoded,)
        lowered = {a.lower() for a in attrs}
        out.append(SourceFolder(name, parts, attrs, not ({"\\noselect", "\\nonexistent"} & lowered)))
    return out


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def examine(conn: imaplib.IMAP4, folder: str) -> tuple[int, list[tuple[int, int]]]:
    """UIDVALIDITY and the (UID, RFC822.SIZE) of every message of a folder,
    opened read-only (EXAMINE, RFC 9051 6.3.3), in UID order."""
    typ, data = conn.select(_quote(folder), readonly=True)
    if typ != "OK":
        raise SourceError(f"EXAMINE {folder}: {data!r}")
    _, validity = conn.response("UIDVALIDITY")
    if not validity or validity[0] is None:
        raise SourceError(f"EXAMINE {folder}: no UIDVALIDITY")
    if data and data[0] == b"0":
        return int(validity[0]), []
    typ, data = conn.uid("FETCH", "1:*", "(UID RFC822.SIZE)")
    if typ != "OK":
        raise SourceError(f"UID FETCH {folder}: {data!r}")
    out = []
    for item in data:
        if isinstance(item, bytes):
            uid, size = _UID.search(item), _SIZE.search(item)
            if uid and size:
                out.append((int(uid[1]), int(size[1])))
    return int(validity[0]), sorted(set(out))


def chunks(sized: list[tuple[int, int]], messages: int, octets: int) -> list[list[int]]:
    """UIDs in runs of at most ``messages`` messages and (but for a single
    larger message) ``octets`` octets, so one FETCH holds a bounded amount."""
    out: list[list[int]] = []
    run: list[int] = []
    total = 0
    for uid, size in sized:
        if run and (len(run) >= messages or total + size > octets):
            out.append(run)
            run, total = [], 0
        run.append(uid)
        total += size
    if run:
        out.append(run)
    return out


def _internal_date(text: bytes) -> float | None:
    try:
        return datetime.strptime(text.decode().strip(), "%d-%b-%Y %H:%M:%S %z").timestamp()
    except ValueError:
        return None


def fetch(conn: imaplib.IMAP4, uid_validity: int, uids: list[int]) -> list[Incoming]:
    """The messages of ``uids`` (in the selected folder), in UID order."""
    typ, data = conn.uid("FETCH", ",".join(map(str, uids)), "(UID FLAGS INTERNALDATE BODY.PEEK[])")
    if typ != "OK":
        raise SourceError(f"UID FETCH: {data!r}")
    out: list[Incoming] = []
    for i, item in enumerate(data):
        if not isinstance(item, tuple):
            continue
        head, body = item
        tail = data[i + 1] if i + 1 < len(data) and isinstance(data[i + 1], bytes) else b""
        meta = head + b" " + tail
        uid = _UID.search(meta)
        if uid is None:
            continue
        flags_m = _FLAGS.search(meta)
        flags = frozenset(f.decode() for f in (flags_m[1].split() if flags_m else [])
                          if f.lower() != b"\\recent")
        date_m = _DATE.search(meta)
        out.append(Incoming(body, f"{uid_validity}:{int(uid[1])}", flags,
                            _internal_date(date_m[1]) if date_m else None))
    out.sort(key=lambda m: int(m.key.split(":")[1]))
    return out
