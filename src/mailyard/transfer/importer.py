"""Writing imported messages into an account: batches through the store's
one append path, each source key remembered, nothing imported twice."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..store.api import (
    HIERARCHY_DELIMITER,
    SPECIAL_USE_MAILBOXES,
    Account,
    AppendItem,
    InvalidName,
    Mailbox,
    QuotaExceeded,
    Store,
    TooManyMailboxes,
)
from ..store.import_state import ImportState
from .progress import Progress, Summary

SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"})
# RFC 9051 9: flag-keyword = atom; atom-specials excluded
_KEYWORD = re.compile(r"^[^\x00-\x20\x7f(){%*\"\\\]]+$")


class ImportError_(Exception):
    """A source that cannot be read at all (the command stops with this text)."""


class QuotaFull(Exception):
    """The account's quota took no further message; the import stops."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message read from a source, ready to append."""

    data: bytes
    key: str  # the source key (unique within its source)
    flags: frozenset[str] = frozenset()
    internal_date: float | None = None


def to_crlf(data: bytes) -> bytes:
    """Lines end in CRLF in the store (RFC 5322 2.1, what IMAP serves); a file
    with bare LF line ends (mbox, Maildir) gets CR added before each LF."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def clean_flags(flags: set[str] | frozenset[str], summary: Summary | None = None) -> frozenset[str]:
    """System flags as they are, keywords that are valid atoms; others are dropped."""
    out = set()
    for flag in flags:
        if flag.startswith("\\"):
            title = "\\" + flag[1:].capitalize()
            if title in SYSTEM_FLAGS:
                out.add(title)
        elif _KEYWORD.match(flag):
            out.add(flag)
        elif summary is not None:
            summary.warn(f"keyword {flag!r} is not an IMAP atom; left out")
    return frozenset(out)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ContentKeys:
    """Source keys for file imports: the content hash, with a count so that
    identical copies in one source each get their own key (and a re-run
    finds every copy by the same keys)."""

    def __init__(self) -> None:
        self._seen: Counter[tuple[str, str]] = Counter()

    def key(self, folder: str, data: bytes) -> str:
        d = digest(data)
        self._seen[(folder, d)] += 1
        n = self._seen[(folder, d)]
        return d if n == 1 else f"{d}/{n}"


SPECIAL_BY_ATTRIBUTE = {use.lower(): name for name, use in SPECIAL_USE_MAILBOXES}
# Common names of the special-use folders (RFC 6154 2) in other servers and clients.
SPECIAL_BY_NAME = {
    "sent": "Sent", "sent items": "Sent", "sent messages": "Sent", "sent mail": "Sent", "outbox": "Sent",
    "drafts": "Drafts", "draft": "Drafts",
    "trash": "Trash", "deleted items": "Trash", "deleted messages": "Trash", "bin": "Trash", "deleted": "Trash",
    "junk": "Junk", "spam": "Junk", "junk e-mail": "Junk", "junk email": "Junk", "bulk mail": "Junk",
    "archive": "Archive", "archives": "Archive",
}


def target_name(parts: Sequence[str], attributes: Sequence[str] = ()) -> str:
    """The mailbox name in this store for a source folder given as its
    hierarchy parts (``["INBOX"]``, ``["Lists", "foo"]``): special-use
    folders (by RFC 6154 attribute, else by a common top-level name, also
    below INBOX as Courier keeps them) map to this store's ones."""
    for attr in attributes:
        name = SPECIAL_BY_ATTRIBUTE.get(attr.lower())
        if name and attr.lower() != "\\all":
            return name
    parts = [p for p in parts if p]
    if not parts or (len(parts) == 1 and parts[0].upper() == "INBOX"):
        return "INBOX"
    flat = parts[1:] if parts[0].upper() == "INBOX" and len(parts) == 2 else parts
    if len(flat) == 1 and flat[0].lower() in SPECIAL_BY_NAME:
        return SPECIAL_BY_NAME[flat[0].lower()]
    return HIERARCHY_DELIMITER.join(parts)


class Importer:
    """Appends ``Incoming`` messages into one account, in batches."""

    def __init__(self, store: Store, account: Account, state: ImportState, summary: Summary,
                 progress: Progress | None = None, batch_messages: int = 500,
                 batch_octets: int = 16 << 20) -> None:
        self.store = store
        self.account = account
        self.state = state
        self.summary = summary
        self.progress = progress
        self.batch_messages = batch_messages
        self.batch_octets = batch_octets
        self._mailboxes: dict[str, Mailbox] = {}
        self._known: dict[str, set[str]] = {}

    async def settle_pending(self) -> None:
        """Decide the batches an interrupted run left pending (see store/import_state.py)."""
        rows = self.state.pending(self.account.address)
        by_box: dict[tuple[int, int, int], list[tuple[str, str, str]]] = {}
        for source, key, mailbox_id, uid_validity, uid_from, dig in rows:
            by_box.setdefault((mailbox_id, uid_validity, uid_from), []).append((source, key, dig))
        for (mailbox_id, uid_validity, uid_from), entries in by_box.items():
            found: Counter[str] = Counter()
            box = await self.store.get_mailbox_by_id(self.account.id, mailbox_id)
            if box is not None and box.uid_validity == uid_validity:
                uids = [m.uid for m in await self.store.list_messages(box) if m.uid >= uid_from]
                for _uid, data in await self.store.read_messages(box, uids):
                    found[digest(data)] += 1
            for source, key, dig in entries:
                if found[dig] > 0:
                    found[dig] -= 1
                    self.state.commit(self.account.address, source, [key])
                else:
                    self.state.drop_pending(self.account.address, source, [key])

    async def mailbox(self, name: str) -> Mailbox:
        """The target mailbox, created (with its parents) when missing."""
        if name in self._mailboxes:
            return self._mailboxes[name]
        box = await self.store.get_mailbox(self.account.id, name)
        if box is None:
            parts = name.split(HIERARCHY_DELIMITER)
            try:
                for i in range(1, len(parts)):
                    parent = HIERARCHY_DELIMITER.join(parts[:i])
                    if await self.store.get_mailbox(self.account.id, parent) is None:
                        await self.store.create_mailbox(self.account.id, parent, subscribe=True)
                box = await self.store.create_mailbox(self.account.id, name, subscribe=True)
            except (InvalidName, TooManyMailboxes) as exc:
                # past [limits] max_mailboxes the import stops here, saying
                # why: what it imported so far stays, and is known to a rerun
                raise ImportError_(f"cannot create folder {name!r}: {exc}") from exc
        self._mailboxes[name] = box
        return box

    def known(self, source: str) -> set[str]:
        if source not in self._known:
            self._known[source] = self.state.known(self.account.address, source)
        return self._known[source]

    def is_known(self, source: str, key: str) -> bool:
        return key in self.known(source)

    async def add(self, folder: str, source: str, messages: Sequence[Incoming]) -> None:
        """Append the messages not imported before into ``folder``, in batches."""
        known = self.known(source)
        fresh = []
        for m in messages:
            if m.key in known:
                self.summary.already += 1
                if self.progress:
                    self.progress.advance(1)
            else:
                fresh.append(m)
        batch: list[Incoming] = []
        octets = 0
        for m in fresh:
            batch.append(m)
            octets += len(m.data)
            if len(batch) >= self.batch_messages or octets >= self.batch_octets:
                await self._write(folder, source, batch)
                batch, octets = [], 0
        if batch:
            await self._write(folder, source, batch)

    async def _write(self, folder: str, source: str, batch: list[Incoming]) -> None:
        box = await self.mailbox(folder)
        current = await self.store.get_mailbox_by_id(self.account.id, box.id)
        assert current is not None
        address = self.account.address
        self.state.begin(address, source, box.id, box.uid_validity, current.uid_next,
                         [(m.key, digest(m.data)) for m in batch])
        items = [AppendItem(m.data, m.flags, m.internal_date) for m in batch]
        left: set[str] = set()
        try:
            # a keyword past the folder's bounds is left out, the message kept
            await self.store.append_many(box, items, left_out=left)
        except QuotaExceeded as exc:
            self.state.drop_pending(address, source, [m.key for m in batch])
            raise QuotaFull(f"the quota of {address} is full ({exc}); raise it with "
                            f"`mailyard user quota {address} ...` and run the import again: "
                            "it goes on where it stopped") from exc
        self.state.commit(address, source, [m.key for m in batch])
        self.summary.left_out(folder, left)
        self.known(source).update(m.key for m in batch)
        size = sum(len(m.data) for m in batch)
        with self.summary.lock:
            self.summary.imported += len(batch)
            self.summary.octets += size
        if self.progress:
            self.progress.advance(len(batch), size)
