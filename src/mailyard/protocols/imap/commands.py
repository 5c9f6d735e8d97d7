"""Parsed IMAP commands: one dataclass per command (RFC 9051 section 6).

The parser (parser.py) produces these; the engine hands them to the glue as
events. Field names follow the RFC 9051 formal syntax (section 9).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A sequence-set or uid-set (RFC 9051 4.1.1).

    ``ranges`` holds (low, high) pairs as written; ``None`` stands for ``*``.
    ``saved`` is the ``$`` of RFC 5182 (SEARCHRES): the last saved result.
    """

    ranges: tuple[tuple[int | None, int | None], ...] = ()
    saved: bool = False

    def resolve(self, largest: int) -> Iterator[tuple[int, int]]:
        """Yield (low, high) with ``*`` replaced by ``largest`` and low <= high."""
        for lo, hi in self.ranges:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            yield (a, b) if a <= b else (b, a)

    def contains(self, n: int, largest: int) -> bool:
        return any(a <= n <= b for a, b in self.resolve(largest))

    def uses_star(self) -> bool:
        return any(lo is None or hi is None for lo, hi in self.ranges)

    def highest(self) -> int | None:
        """The largest explicit number, ignoring ``*``."""
        nums = [x for r in self.ranges for x in r if x is not None]
        return max(nums) if nums else None


@dataclass(frozen=True, slots=True)
class Section:
    """A body section (RFC 9051 6.4.5): part numbers and a section text.

    ``text`` is one of None (the whole part), "HEADER", "HEADER.FIELDS",
    "HEADER.FIELDS.NOT", "TEXT", "MIME".
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchAtt:
    """One fetch-att. ``name`` is upper-case: FLAGS, UID, ENVELOPE, BODY,
    BODYSTRUCTURE, INTERNALDATE, RFC822, RFC822.HEADER, RFC822.SIZE,
    RFC822.TEXT, MODSEQ, BODY[] (with section), BINARY[], BINARY.SIZE[]."""

    name: str
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None  # (origin, length) of <origin.length>
    section_text: str = ""  # the section spec as the client wrote it, for the reply


@dataclass(frozen=True, slots=True)
class SearchKey:
    """A node of a search program (RFC 9051 6.4.4).

    ``name`` is the key (upper-case), ``args`` its arguments: strings, ints,
    dates (datetime.date), SequenceSet, or child SearchKeys for AND/OR/NOT.
    "AND" is the implicit conjunction of a parenthesised list or top level.
    """

    name: str
    args: tuple = ()


@dataclass(frozen=True, slots=True)
class CatPart:
    """One part of APPEND CATENATE (RFC 4469 5): a TEXT literal (``data``)
    or an IMAP URL (``url``) naming a message or part to copy."""

    data: bytes = b""
    url: str | None = None
    binary: bool = False  # TEXT sent as literal8 (RFC 4469 6, RFC 3516)


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of APPEND / MULTIAPPEND (RFC 3502)."""

    data: bytes
    flags: tuple[str, ...] = ()
    internal_date: float | None = None  # seconds since the epoch
    binary: bool = False  # sent as literal8 (RFC 3516 section 4.4)
    utf8: bool = False  # sent as UTF8 (literal8) (RFC 6855 section 4)
    catenate: tuple[CatPart, ...] | None = None  # APPEND ... CATENATE (...) (RFC 4469)


@dataclass(kw_only=True)
class Command:
    """Base class: every command has a tag; ``uid`` marks the UID form."""

    tag: str
    name: str = ""
    uid: bool = False


@dataclass(kw_only=True)
class Simple(Command):
    """CAPABILITY NOOP LOGOUT STARTTLS CHECK CLOSE UNSELECT EXPUNGE IDLE NAMESPACE."""


@dataclass(kw_only=True)
class Login(Command):
    userid: str
    password: str


@dataclass(kw_only=True)
class Authenticate(Command):
    mechanism: str  # upper-case
    initial_response: bytes | None = None  # SASL-IR as sent: base64 or "=" (RFC 4959)


@dataclass(kw_only=True)
class Enable(Command):
    capabilities: tuple[str, ...]


@dataclass(kw_only=True)
class Compress(Command):
    """COMPRESS mechanism (RFC 4978 3)."""

    mechanism: str  # upper-case


@dataclass(kw_only=True)
class Id(Command):
    params: dict[str, str | None] | None


@dataclass(kw_only=True)
class Qresync:
    """SELECT (QRESYNC (uidvalidity modseq [known-uids] [(seqs uids)])) RFC 7162 3.2.5."""

    uid_validity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(kw_only=True)
class Select(Command):
    """SELECT and EXAMINE (``readonly``)."""

    mailbox: str
    readonly: bool = False
    condstore: bool = False
    qresync: Qresync | None = None


@dataclass(kw_only=True)
class MailboxCommand(Command):
    """CREATE DELETE SUBSCRIBE UNSUBSCRIBE."""

    mailbox: str
    special_use: tuple[str, ...] = ()  # CREATE ... (USE (\Drafts)) RFC 6154 5.2


@dataclass(kw_only=True)
class Rename(Command):
    old: str
    new: str


@dataclass(kw_only=True)
class List(Command):
    """LIST (RFC 9051 6.3.9 with RFC 5258 options) and LSUB (RFC 3501 6.3.9)."""

    reference: str
    patterns: tuple[str, ...]
    select_opts: tuple[str, ...] = ()  # SUBSCRIBED REMOTE RECURSIVEMATCH SPECIAL-USE
    return_opts: tuple[str, ...] = ()  # SUBSCRIBED CHILDREN SPECIAL-USE STATUS
    status_items: tuple[str, ...] = ()  # RETURN (STATUS (...)) RFC 5819
    extended: bool = False  # any LIST-EXTENDED syntax used (RFC 5258 3)
    lsub: bool = False


@dataclass(kw_only=True)
class Status(Command):
    mailbox: str
    items: tuple[str, ...]


@dataclass(kw_only=True)
class Quota(Command):
    """GETQUOTA and SETQUOTA name a quota ``root``, GETQUOTAROOT a ``mailbox``
    (RFC 9208 4.1); SETQUOTA's ``limits`` are (resource name, limit) pairs."""

    root: str = ""
    mailbox: str = ""
    limits: tuple[tuple[str, int], ...] = ()


@dataclass(kw_only=True)
class Append(Command):
    mailbox: str
    messages: tuple[AppendMessage, ...]


@dataclass(kw_only=True)
class Search(Command):
    """SEARCH with ESEARCH return options (RFC 9051 6.4.4, RFC 4731)."""

    key: SearchKey
    charset: str | None = None
    return_opts: tuple[str, ...] | None = None  # None: no RETURN given (rev1 form)
    partial: tuple[int, int] | None = None  # RETURN (PARTIAL m:n), RFC 5267 4.4 / RFC 9394


@dataclass(kw_only=True)
class Sort(Command):
    """SORT (RFC 5256 section 3) with ESORT return options (RFC 5267 section 3)."""

    keys: tuple[tuple[str, bool], ...]  # (sort-key, REVERSE), most significant first
    key: SearchKey
    charset: str
    return_opts: tuple[str, ...] | None = None  # None: no RETURN, a SORT response
    partial: tuple[int, int] | None = None  # RETURN (PARTIAL m:n), RFC 5267 4.4 / RFC 9394


@dataclass(kw_only=True)
class Thread(Command):
    """THREAD (RFC 5256 section 3)."""

    algorithm: str  # upper-case, e.g. REFERENCES
    key: SearchKey
    charset: str


@dataclass(kw_only=True)
class Fetch(Command):
    sequence_set: SequenceSet
    atts: tuple[FetchAtt, ...]
    changed_since: int | None = None  # RFC 7162 3.1.4.1
    vanished: bool = False  # RFC 7162 3.2.6
    macro: str | None = None  # ALL / FAST / FULL as given
    partial: tuple[int, int] | None = None  # UID FETCH modifier (PARTIAL m:n), RFC 9394 3.3


@dataclass(kw_only=True)
class Store(Command):
    sequence_set: SequenceSet
    mode: str  # "replace" | "add" | "remove"
    silent: bool
    flags: tuple[str, ...]
    unchanged_since: int | None = None  # RFC 7162 3.1.3


@dataclass(kw_only=True)
class Copy(Command):
    """COPY and MOVE (``move``; RFC 6851)."""

    sequence_set: SequenceSet
    mailbox: str
    move: bool = False


@dataclass(kw_only=True)
class UidExpunge(Command):
    sequence_set: SequenceSet


@dataclass(kw_only=True)
class CancelUpdate(Command):
    """CANCELUPDATE "tag" ... (RFC 5267 4.3.5): the contexts to stop updating."""

    tags: tuple[str, ...]


@dataclass(kw_only=True)
class Unknown(Command):
    """Never produced: unknown commands become BAD in the engine."""

    args: list = field(default_factory=list)
