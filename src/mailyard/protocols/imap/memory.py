"""An in-memory IMAP backend and a hand-driven connection, for unit tests and
fuzzing of the real IMAP layer (session.py, handlers/) without sockets, an
event loop or a store.

- `MemoryStore` holds accounts, mailboxes and messages, with the store's
  rules as IMAP sees them: UIDs and mod-sequences per mailbox (every write
  takes the next mod-sequence, RFC 7162 3.1), expunged UIDs remembered for
  VANISHED, \\Recent claims (RFC 3501 2.3.2), subscriptions, the special-use
  mailboxes of a new account (RFC 6154), change notification, quotas (RFC
  9208: limits per account set with ``set_quota``, refused APPEND/COPY) and
  save dates (RFC 8514: the clock when a message is saved).
- `MemoryBackend` is one account's `ImapBackend` over it; `MemoryLogin` the
  `ImapLogin` (LOGIN and SASL PLAIN, RFC 4616).
- `Conversation` drives one `ImapSession` by hand: `feed` bytes in, get the
  bytes out. It is the `ImapIO`: a command that waits (IDLE, an
  AUTHENTICATE line) stays suspended until more input arrives, `poll` is
  called after another session's change, or the input ends.

Everything is deterministic: UIDVALIDITY counts from 1, INTERNALDATE and
the SEARCH clock come from ``MemoryStore.clock``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
from collections.abc import Callable, Collection, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from ...message.address import search_value
from ...message.binary import encode_nul_parts
from ...message.dates import sent_day
from ...message.derived import Derived, body_structure, derive
from ...message.imap_syntax import body_bytes, envelope_bytes  # as the store derives them
from ...message.objectids import EMAIL, THREAD, opaque_id
from ...message.threadkeys import KEY_FIELDS, SortKeys, ThreadKeys, sort_keys
from ..contract import FLUSH, NEED_DATA, PAUSED, Closed
from .backend import (
    BackendError,
    BadMailboxName,
    FlagMode,
    LoginRefused,
    MailboxExists,
    MailboxGone,
    MailboxRecord,
    NewMessage,
    NoSpace,
    NoSuchMailbox,
    OverQuota,
    RecentClaim,
    SaslChallenge,
)
from .framing import Limits
from .handlers import HANDLERS
from .names import DELIMITER, is_inferior, name_problem, parents
from .session import ImapConfig, ImapSession

_T = TypeVar("_T")

SPECIAL_USE = (("Drafts", "\\Drafts"), ("Sent", "\\Sent"), ("Trash", "\\Trash"), ("Junk", "\\Junk"),
               ("Archive", "\\Archive"))


@dataclass(frozen=True, slots=True)
class MemMailbox:
    id: int
    name: str
    uid_validity: int
    uid_next: int
    highest_modseq: int
    special_use: str | None = None


@dataclass(frozen=True, slots=True)
class MemMessage:
    uid: int
    size: int
    flags: frozenset[str]
    internal_date: float
    modseq: int
    save_date: float | None = None


@dataclass(frozen=True, slots=True)
class MemSummary:
    mailbox: MemMailbox
    uids: list[int]
    keywords: frozenset[str]
    first_unseen: int | None
    keywords_full: bool = False


@dataclass(frozen=True, slots=True)
class MemChanges:
    highest_modseq: int
    changed: list[MemMessage]
    vanished: list[int]


@dataclass(frozen=True, slots=True)
class MemStatus:
    messages: int
    unseen: int
    deleted: int
    size: int
    uid_next: int
    uid_validity: int
    highest_modseq: int
    deleted_size: int = 0
    recent: int = 0


@dataclass(frozen=True, slots=True)
class MemQuota:
    storage_limit: int | None
    messages_limit: int | None
    storage_used: int
    messages_used: int

    def fits(self, octets: int, messages: int) -> bool:
        return ((self.storage_limit is None or self.storage_used + octets <= self.storage_limit)
                and (self.messages_limit is None or self.messages_used + messages <= self.messages_limit))


@dataclass(eq=False)
class _Box:
    id: int
    account: str
    name: str
    uid_validity: int
    special_use: str | None = None
    uid_next: int = 1
    highest_modseq: int = 0
    recent_uid: int = 0  # highest UID claimed as \Recent by some session
    messages: dict[int, tuple[bytes, MemMessage]] = field(default_factory=dict)
    expunged: dict[int, int] = field(default_factory=dict)  # uid -> modseq
    # expunged messages some session holds (RFC 2180 4.1.1): uid -> (bytes, index data)
    held: dict[int, tuple[bytes, MemMessage]] = field(default_factory=dict)
    holders: dict[object, int] = field(default_factory=dict)  # holder -> expunges seen up to

    def remove(self, uid: int, modseq: int, by: object = None) -> None:
        """Expunge ``uid`` at ``modseq``; kept readable while a session other
        than ``by`` (which announces it at once) holds the mailbox."""
        entry = self.messages.pop(uid)
        self.expunged[uid] = modseq
        if any(h is not by for h in self.holders):
            self.held[uid] = entry

    def release(self) -> None:
        """Forget held messages every holder has announced as expunged."""
        upto = min(self.holders.values()) if self.holders else None
        for uid in [u for u in self.held if upto is None or self.expunged.get(u, 0) <= upto]:
            del self.held[uid]

    def record(self) -> MemMailbox:
        return MemMailbox(self.id, self.name, self.uid_validity, self.uid_next, self.highest_modseq,
                          self.special_use)

    def add(self, data: bytes, flags: Iterable[str], internal_date: float, save_date: float) -> int:
        uid = self.uid_next
        self.uid_next += 1
        self.highest_modseq += 1
        self.messages[uid] = (data, MemMessage(uid, len(data), frozenset(flags), internal_date, self.highest_modseq,
                                               save_date))
        return uid


class MemoryStore:
    """Accounts and their mailboxes in memory (see the module docstring)."""

    def __init__(self, clock: float = 1_700_000_000.0, derived: dict[bytes, Derived] | None = None) -> None:
        self.clock = clock
        self.passwords: dict[str, str] = {}
        self.epochs: dict[str, int] = {}  # moves with every password change
        # moves with every revocation (a password changed, an account or a
        # mailbox removed), as Store.revocation_version does
        self.revocations = 0
        self.boxes: dict[int, _Box] = {}
        self.subscriptions: dict[str, set[str]] = {}
        self.full = False  # writes raise NoSpace (a full disk)
        self.quotas: dict[str, tuple[int | None, int | None]] = {}  # user -> (octets, messages)
        self._ids = 0
        self._validity = 0
        self._listeners: list[tuple[str, Callable[[int], None]]] = []
        self.held_by: dict[object, int] = {}  # hold_expunged: holder -> mailbox id
        # derive() is deterministic: a cache may be shared between stores (fuzzing)
        self._derived: dict[bytes, Derived] = derived if derived is not None else {}
        self._body_ids: dict[int, tuple[int, bytes]] = {}
        # RFC 8474 5.2: thread per body id, and per Message-ID the thread it is in
        self._threads: dict[int, int] = {}
        self._thread_of_msgid: dict[str, int] = {}
        # the secret of the opaque EMAILID / THREADID (message/objectids.py):
        # fixed, so tests can expect the ids byte for byte
        self.objectid_key = b"mailyard memory store"

    # --- set-up for tests ---------------------------------------------------------
    def add_account(self, user: str, password: str) -> None:
        """An account with INBOX and the special-use mailboxes, all subscribed."""
        self.passwords[user] = password
        self.epochs[user] = self.epochs.get(user, 0) + 1
        self.subscriptions[user] = set()
        for name, use in (("INBOX", None), *SPECIAL_USE):
            self.create(user, name, use)
            self.subscriptions[user].add(name)

    def set_password(self, user: str, password: str) -> None:
        self.passwords[user] = password
        self.epochs[user] += 1
        self.revocations += 1

    def set_quota(self, user: str, storage: int | None = None, messages: int | None = None) -> None:
        """The operator's limits for ``user`` (None: no limit), as ``mailyard user quota``."""
        self.quotas[user] = (storage, messages)

    def quota(self, user: str) -> MemQuota:
        storage, messages = self.quotas.get(user, (None, None))
        sizes = [m.size for b in self.boxes.values() if b.account == user for _, m in b.messages.values()]
        return MemQuota(storage, messages, sum(sizes), len(sizes))

    def remove_account(self, user: str) -> None:
        del self.passwords[user]
        self.revocations += 1
        for box in [b for b in self.boxes.values() if b.account == user]:
            del self.boxes[box.id]
            self.notify(box.id)

    def delete(self, user: str, name: str) -> None:
        """Delete a mailbox as another session would."""
        box = self.find(user, name)
        assert box is not None, name
        del self.boxes[box.id]
        self.revocations += 1
        self.notify(box.id)

    def create(self, user: str, name: str, special_use: str | None = None) -> _Box:
        if self.find(user, name) is not None:
            raise MailboxExists(f"mailbox {name} exists already")
        self._ids += 1
        self._validity += 1
        # RFC 9051 6.3.4 and 6.3.7: only SUBSCRIBE adds a subscription
        box = self.boxes[self._ids] = _Box(self._ids, user, _canonical(name), self._validity, special_use)
        return box

    def find(self, user: str, name: str) -> _Box | None:
        name = _canonical(name)
        for box in self.boxes.values():
            if box.account == user and box.name == name:
                return box
        return None

    def deliver(self, user: str, data: bytes, mailbox: str = "INBOX", flags: Iterable[str] = (),
                internal_date: float | None = None) -> int:
        """Add a message as a delivery would; returns its UID."""
        box = self.find(user, mailbox)
        assert box is not None, mailbox
        uid = box.add(data, flags, self.clock if internal_date is None else internal_date, self.clock)
        self.notify(box.id)
        return uid

    # --- shared by the backends ---------------------------------------------------
    def watch(self, user: str, callback: Callable[[int], None]) -> Callable[[], None]:
        entry = (user, callback)
        self._listeners.append(entry)

        def stop() -> None:
            if entry in self._listeners:
                self._listeners.remove(entry)

        return stop

    def notify(self, mailbox_id: int) -> None:
        box = self.boxes.get(mailbox_id)
        for user, callback in list(self._listeners):
            if box is None or box.account == user:
                callback(mailbox_id)

    def body_id(self, data: bytes) -> int:
        """A number per stored body, as the store's bodies.id: copies of a
        message share their bytes object, hence their number (IMAP EMAILID)."""
        known = self._body_ids.get(id(data))
        if known is None:
            known = self._body_ids[id(data)] = (len(self._body_ids) + 1, data)  # data kept: id() stays unique
        return known[0]

    def thread_id(self, data: bytes) -> int:
        """The thread of a body, as the store assigns it (store/sqlite/search.py
        ``_save_sort_keys``) but when first asked for: the lowest thread of a
        known message whose Message-ID is the body's own or one of its parent
        ids, else the body's own number."""
        body_id = self.body_id(data)
        thread = self._threads.get(body_id)
        if thread is None:
            headers = self.derived(data).headers
            k = sort_keys({n: headers[n][0] for n in KEY_FIELDS if headers.get(n)})
            ids = [*k.parents, *([k.message_id] if k.message_id else [])]
            known = [self._thread_of_msgid[i] for i in ids if i in self._thread_of_msgid]
            thread = self._threads[body_id] = min(known, default=body_id)
            if k.message_id:
                self._thread_of_msgid.setdefault(k.message_id, thread)
        return thread

    def derived(self, data: bytes) -> Derived:
        d = self._derived.get(data)
        if d is None:
            d = self._derived[data] = derive(data)
        return d


def _canonical(name: str) -> str:
    first, sep, rest = name.partition(DELIMITER)
    return "INBOX" + sep + rest if first.upper() == "INBOX" else name


class MemoryBackend:
    """One account's `ImapBackend` over a `MemoryStore`."""

    def __init__(self, store: MemoryStore, user: str) -> None:
        self.store = store
        self.user = user
        self.epoch = store.epochs[user]

    def _box(self, mailbox: MailboxRecord) -> _Box:
        box = self.store.boxes.get(mailbox.id)
        if box is None or box.account != self.user or box.uid_validity != mailbox.uid_validity:
            raise MailboxGone(mailbox.id)
        return box

    async def account_current(self) -> bool:
        return self.user in self.store.passwords and self.store.epochs[self.user] == self.epoch

    async def mailbox_current(self, mailbox: MailboxRecord) -> bool:
        box = self.store.boxes.get(mailbox.id)
        return box is not None and box.account == self.user and box.uid_validity == mailbox.uid_validity

    def _write(self) -> None:
        if self.store.full:
            raise NoSpace("the disk is full")

    # --- mailboxes -------------------------------------------------------------
    async def get_mailbox(self, name: str) -> MemMailbox | None:
        box = self.store.find(self.user, name)
        return box.record() if box is not None else None

    async def get_mailbox_by_id(self, mailbox_id: int) -> MemMailbox | None:
        box = self.store.boxes.get(mailbox_id)
        return box.record() if box is not None and box.account == self.user else None

    async def list_mailboxes(self) -> list[MemMailbox]:
        return sorted((b.record() for b in self.store.boxes.values() if b.account == self.user),
                      key=lambda b: b.name)

    async def has_inferiors(self, name: str) -> bool:
        return any(is_inferior(b.name, name) for b in self.store.boxes.values() if b.account == self.user)

    async def create_mailbox(self, name: str, special_use: str | None = None) -> None:
        if name_problem(name):
            raise BadMailboxName(name_problem(name) or "")
        self._write()
        if self.store.find(self.user, name) is not None:
            raise MailboxExists(f"mailbox {name} exists already")
        # RFC 9051 6.3.4: the superior names that are not mailboxes too
        for parent in parents(_canonical(name)):
            if self.store.find(self.user, parent) is None:
                self.store.notify(self.store.create(self.user, parent).id)
        box = self.store.create(self.user, name, special_use)
        self.store.notify(box.id)

    async def rename_mailbox(self, old: str, new: str) -> None:
        src = self.store.find(self.user, old)
        if src is None:
            raise NoSuchMailbox(f"no mailbox {old}")
        if self.store.find(self.user, new) is not None:
            raise MailboxExists(f"mailbox {new} exists already")
        old, new = src.name, _canonical(new)
        if new == old or new.startswith(old + DELIMITER):
            raise BadMailboxName("a mailbox cannot be renamed into itself")
        self._write()
        subs = self.store.subscriptions[self.user]
        # RFC 9051 6.3.6: the superior names of the new name as needed
        for parent in parents(new):
            if self.store.find(self.user, parent) is None:
                self.store.notify(self.store.create(self.user, parent).id)
        if old == "INBOX":
            # RFC 9051 6.3.6: INBOX's messages move; INBOX stays, empty
            dst = self.store.create(self.user, new)
            dst.uid_next = src.uid_next
            dst.messages = src.messages
            src.messages = {}
            src.highest_modseq += 1
            src.expunged.update(dict.fromkeys(dst.messages, src.highest_modseq))
            self.store.notify(src.id)
            self.store.notify(dst.id)
            return
        for box in [b for b in self.store.boxes.values() if b.account == self.user]:
            if box.name == old or box.name.startswith(old + DELIMITER):
                renamed = new + box.name[len(old):]
                if box.name in subs:
                    subs.discard(box.name)
                    subs.add(renamed)
                box.name = renamed
                self.store.notify(box.id)

    async def delete_mailbox(self, name: str) -> None:
        box = self.store.find(self.user, name)
        if box is None:
            raise NoSuchMailbox(f"no mailbox {name}")
        if box.name == "INBOX":
            raise BackendError("INBOX cannot be deleted")
        del self.store.boxes[box.id]
        # RFC 9051 6.3.5 / 6.3.7: the subscription stays (LIST shows \NonExistent)
        self.store.notify(box.id)

    async def set_subscribed(self, name: str, subscribed: bool) -> None:
        if name_problem(name):
            raise BadMailboxName(name_problem(name) or "")
        subs = self.store.subscriptions[self.user]
        if subscribed:
            subs.add(_canonical(name))
        else:
            subs.discard(_canonical(name))

    async def list_subscriptions(self) -> list[str]:
        return sorted(self.store.subscriptions[self.user])

    async def mailbox_status(self, mailbox: MailboxRecord) -> MemStatus:
        box = self._box(mailbox)
        infos = [m for _, m in box.messages.values()]
        deleted = [m for m in infos if "\\Deleted" in m.flags]
        return MemStatus(len(infos), sum("\\Seen" not in m.flags for m in infos),
                         len(deleted), sum(m.size for m in infos),
                         box.uid_next, box.uid_validity, box.highest_modseq, sum(m.size for m in deleted),
                         sum(uid > box.recent_uid for uid in box.messages))

    async def get_quota(self) -> MemQuota:
        return self.store.quota(self.user)

    def _check_quota(self, octets: int, messages: int) -> None:
        """RFC 9208 5: refuse a write that would take the account over a limit."""
        if not self.store.quota(self.user).fits(octets, messages):
            raise OverQuota("over quota")

    async def claim_recent(self, mailbox: MailboxRecord, claim: bool = True, upto: int | None = None) -> int:
        box = self._box(mailbox)
        first = box.recent_uid
        last = box.uid_next - 1 if upto is None else min(upto, box.uid_next - 1)
        if claim and last > first:
            self._write()
            box.recent_uid = last
        return first

    # --- messages ----------------------------------------------------------------
    async def mailbox_summary(self, mailbox: MailboxRecord) -> MemSummary:
        box = self._box(mailbox)
        uids = sorted(box.messages)
        infos = [box.messages[u][1] for u in uids]
        keywords = frozenset(f for m in infos for f in m.flags if not f.startswith("\\"))
        unseen = [m.uid for m in infos if "\\Seen" not in m.flags]
        return MemSummary(box.record(), uids, keywords, unseen[0] if unseen else None)

    async def list_messages(self, mailbox: MailboxRecord) -> list[MemMessage]:
        box = self._box(mailbox)
        return [box.messages[u][1] for u in sorted(box.messages)]

    async def changes_since(self, mailbox: MailboxRecord, modseq: int) -> MemChanges:
        box = self._box(mailbox)
        changed = [box.messages[u][1] for u in sorted(box.messages) if box.messages[u][1].modseq > modseq]
        vanished = sorted(u for u, m in box.expunged.items() if m > modseq)
        return MemChanges(box.highest_modseq, changed, vanished)

    async def read_message(self, mailbox: MailboxRecord, uid: int) -> bytes | None:
        box = self._box(mailbox)
        entry = box.messages.get(uid) or box.held.get(uid)
        return entry[0] if entry is not None else None

    async def expunged_messages(self, mailbox: MailboxRecord, uids: Sequence[int]) -> list[MemMessage]:
        box = self._box(mailbox)
        return [box.held[u][1] for u in sorted(set(uids)) if u in box.held]

    def hold_expunged(self, mailbox: MailboxRecord | None, seen_modseq: int = 0) -> None:
        before = self.store.held_by.pop(self, None)
        if before is not None and before in self.store.boxes:
            self.store.boxes[before].holders.pop(self, None)
            self.store.boxes[before].release()
        box = self.store.boxes.get(mailbox.id) if mailbox is not None else None
        if box is not None:
            box.holders[self] = seen_modseq
            self.store.held_by[self] = box.id
            box.release()

    async def get_derived(self, mailbox: MailboxRecord, uids: Sequence[int], fields: Iterable[str]
                          ) -> dict[int, dict[str, Any]]:
        box = self._box(mailbox)
        wanted = set(fields)
        out: dict[int, dict[str, Any]] = {}
        for uid in uids:
            entry = box.messages.get(uid) or box.held.get(uid)
            if entry is None:
                continue
            d = self.store.derived(entry[0])
            values: dict[str, Any] = {
                "parts": d.parts, "messages": d.messages, "size": d.size, "headers": d.headers,
                "envelope": d.envelope, "bodystructure": d.bodystructure, "date": d.date,
                "preview": d.preview, "body_id": self.store.body_id(entry[0]),
            }
            item = {k: v for k, v in values.items() if k in wanted}
            if "email_id" in wanted:
                item["email_id"] = opaque_id(self.store.objectid_key, EMAIL, values["body_id"])
            if "thread_id" in wanted:
                item["thread_id"] = opaque_id(self.store.objectid_key, THREAD, self.store.thread_id(entry[0]))
            if "envelope_imap" in wanted:
                item["envelope_imap"] = envelope_bytes(d.envelope)
            if "bodystructure_imap" in wanted:
                item["bodystructure_imap"] = body_bytes(d.bodystructure)
            if "body_imap" in wanted:
                item["body_imap"] = body_bytes(body_structure(d.bodystructure))
            out[uid] = item
        return out

    async def store_flags(self, mailbox: MailboxRecord, uids: Sequence[int], flags: Iterable[str], mode: FlagMode,
                          unchanged_since: int | None = None) -> tuple[list[MemMessage], list[int]]:
        box = self._box(mailbox)
        flag_set = frozenset(flags)
        changes: list[tuple[int, frozenset[str]]] = []
        failed: list[int] = []
        for uid in sorted(set(uids)):
            entry = box.messages.get(uid)
            if entry is None:
                continue
            m = entry[1]
            if unchanged_since is not None and m.modseq > unchanged_since:  # RFC 7162 3.1.3
                failed.append(uid)
                continue
            new = m.flags | flag_set if mode == "add" else m.flags - flag_set if mode == "remove" else flag_set
            if new != m.flags:
                changes.append((uid, new))
        if not changes:
            return [], failed
        self._write()
        box.highest_modseq += 1
        out = []
        for uid, new in changes:
            data, m = box.messages[uid]
            m = MemMessage(uid, m.size, new, m.internal_date, box.highest_modseq, m.save_date)
            box.messages[uid] = (data, m)
            out.append(m)
        self.store.notify(box.id)
        return out, failed

    async def expunge(self, mailbox: MailboxRecord, uids: Sequence[int]) -> list[int]:
        box = self._box(mailbox)
        gone = sorted(u for u in set(uids) if u in box.messages)
        if gone:
            box.highest_modseq += 1
            for uid in gone:
                box.remove(uid, box.highest_modseq, self)
            self.store.notify(box.id)
        return gone

    async def copy_messages(self, src_mailbox: MailboxRecord, uids: Sequence[int], dst_mailbox: MailboxRecord,
                            move: bool = False) -> list[tuple[int, int]]:
        src, dst = self._box(src_mailbox), self._box(dst_mailbox)
        present = sorted(u for u in set(uids) if u in src.messages)
        if not present:
            return []
        self._write()
        if not move:  # a move within the account leaves its usage as it is
            self._check_quota(sum(src.messages[u][1].size for u in present), len(present))
        dst.highest_modseq += 1
        pairs = []
        for uid in present:
            data, m = src.messages[uid]
            new = dst.uid_next
            dst.uid_next += 1
            dst.messages[new] = (data, MemMessage(new, m.size, m.flags, m.internal_date, dst.highest_modseq,
                                                  self.store.clock))
            pairs.append((uid, new))
        self.store.notify(dst.id)
        if move:
            src.highest_modseq += 1
            for uid in present:
                src.remove(uid, src.highest_modseq, self)
            self.store.notify(src.id)
        return pairs

    async def append_messages(self, mailbox: MailboxRecord, items: Sequence[NewMessage],
                              recent: RecentClaim | None = None) -> list[int]:
        box = self._box(mailbox)
        self._write()
        self._check_quota(sum(len(m.data) for m in items), len(items))  # all or none (RFC 3502)
        uids = [box.add(m.data, m.flags, self.store.clock if m.internal_date is None else m.internal_date,
                        self.store.clock) for m in items]
        if recent is not None and uids and box.recent_uid == uids[0] - 1:
            box.recent_uid = recent.last = uids[-1]  # claimed with the write (RFC 3501 2.3.2)
            recent.first = uids[0] - 1
        self.store.notify(box.id)
        return uids

    async def encode_binary(self, data: bytes) -> bytes | None:
        return encode_nul_parts(data)

    async def search_headers(self, mailbox: MailboxRecord, field: str, text: str) -> set[int]:
        box = self._box(mailbox)
        needle = text.casefold()
        out = set()
        for uid, (data, _) in box.messages.items():
            name = field.lower()
            values = self.store.derived(data).headers.get(name)
            if values is not None and any(needle in search_value(name, v).casefold() for v in values):
                out.add(uid)
        return out

    async def search_text(self, mailbox: MailboxRecord, text: str, where: Literal["body", "text"]) -> set[int]:
        box = self._box(mailbox)
        needle = text.casefold()
        out = set()
        for uid, (data, _) in box.messages.items():
            d = self.store.derived(data)
            hay = d.body_text if where == "body" else d.header_text + "\n" + d.body_text
            if needle in hay.casefold():
                out.add(uid)
        return out

    async def object_id_hits(self, mailbox: MailboxRecord, uids: Sequence[int],
                             wanted: Collection[tuple[str, str]]) -> dict[tuple[str, str], set[int]]:
        hits: dict[tuple[str, str], set[int]] = {key: set() for key in wanted}
        fields = tuple(sorted({name for name, _ in hits}))
        for uid, d in (await self.get_derived(mailbox, uids, fields)).items():
            for name in fields:
                hit = hits.get((name, d[name]))
                if hit is not None:
                    hit.add(uid)
        return hits

    async def sent_dates(self, mailbox: MailboxRecord, uids: Sequence[int]) -> dict[int, dt.date | None]:
        box = self._box(mailbox)
        out: dict[int, dt.date | None] = {}
        for uid in uids:
            entry = box.messages.get(uid) or box.held.get(uid)
            if entry is not None:
                out[uid] = sent_day(self.store.derived(entry[0]).headers.get("date", ()))
        return out

    async def sort_order(self, mailbox: MailboxRecord, keys: Sequence[tuple[str, bool]],
                         uids: Sequence[int]) -> list[int]:
        from .sort import SortKey, SortMessage, sort_messages

        box = self._box(mailbox)
        found = await self.sort_keys(mailbox, uids)
        msgs = []
        for uid in sorted(found):
            m = box.messages[uid][1]
            msgs.append(SortMessage(uid, uid, m.size, m.internal_date, found[uid]))
        return [m.uid for m in sort_messages(msgs, [SortKey(n, r) for n, r in keys])]

    async def thread_keys(self, mailbox: MailboxRecord, uids: Sequence[int]) -> dict[int, ThreadKeys]:
        box = self._box(mailbox)
        out: dict[int, ThreadKeys] = {}
        for uid, k in (await self.sort_keys(mailbox, uids)).items():
            date = box.messages[uid][1].internal_date if k.date is None else k.date
            out[uid] = (date, k.subject, k.refwd, k.message_id, k.parents)
        return out

    async def sort_keys(self, mailbox: MailboxRecord, uids: Sequence[int]) -> dict[int, SortKeys]:
        box = self._box(mailbox)
        out: dict[int, SortKeys] = {}
        for uid in uids:
            entry = box.messages.get(uid)
            if entry is None:
                continue
            headers = self.store.derived(entry[0]).headers
            out[uid] = sort_keys({n: headers[n][0] for n in KEY_FIELDS if headers.get(n)})
        return out

    def watch(self, callback: Callable[[int], None]) -> Callable[[], None]:
        return self.store.watch(self.user, callback)


class _PlainExchange:
    """SASL PLAIN (RFC 4616) against the store's passwords."""

    def expiry(self) -> None:
        return None  # no exchange deadline here

    def __init__(self, login: MemoryLogin) -> None:
        self.login = login
        self.started = False

    async def step(self, response: bytes | None) -> SaslChallenge | LoginRefused | MemoryBackend:
        if not self.started and response is None:
            self.started = True
            self.login.open = self  # waiting for the client's line
            return SaslChallenge(b"")  # RFC 4422 5: an empty challenge asks for the initial response
        self.started = True
        self.login.open = None
        if response == b"*":
            return LoginRefused("cancelled")
        try:
            wire = b"" if response == b"=" else response or b""
            raw = base64.b64decode(wire, validate=True)
        except (binascii.Error, ValueError):
            return LoginRefused("malformed")
        if base64.b64encode(raw) != wire:  # only the canonical form, as auth/sasl.py decode_base64
            return LoginRefused("malformed")
        fields = raw.split(b"\0")
        if len(fields) != 3:
            return LoginRefused("malformed")
        return await self.login.login(fields[1].decode("utf-8", "replace"), fields[2].decode("utf-8", "replace"))


class MemoryLogin:
    """`ImapLogin` over a `MemoryStore`: LOGIN and AUTHENTICATE PLAIN."""

    sasl_mechanisms: Mapping[str, bool] = {"PLAIN": True}

    def __init__(self, store: MemoryStore, plaintext: bool = True,
                 tls_active: Callable[[], bool] = lambda: False) -> None:
        self.store = store
        self.plaintext = plaintext  # clear-text passwords allowed without TLS
        self.tls_active = tls_active
        self.failures = 0  # counted as the server's login service counts them
        self.locked = False  # over a login limit: every login refused for now
        self.open: _PlainExchange | None = None  # an AUTHENTICATE in progress

    def plaintext_ok(self) -> bool:
        return self.plaintext or self.tls_active()

    async def login(self, user: str, password: str) -> MemoryBackend | LoginRefused:
        if self.locked:
            return LoginRefused("temporary")
        if self.store.passwords.get(user) != password:
            self.failures += 1
            return LoginRefused("denied")
        return MemoryBackend(self.store, user)

    def sasl(self, mechanism: str) -> _PlainExchange:
        return _PlainExchange(self)

    def close(self) -> None:
        if self.open is not None:
            self.open = None
            self.failures += 1


class _Wait:
    """What a waiting `Conversation` yields to its driver."""

    def __await__(self) -> Generator[_Wait, None, None]:
        yield self


class Conversation:
    """One hand-driven IMAP connection over a `MemoryStore` (and its `ImapIO`).

    ``feed(b"a1 NOOP\\r\\n")`` returns what the server sent in answer. A
    command that waits for input (IDLE, AUTHENTICATE) stays suspended
    between calls; `poll` runs it after another session's change.
    """

    def __init__(self, store: MemoryStore, *, limits: Limits | None = None, config: ImapConfig | None = None,
                 plaintext: bool = True, can_start_tls: bool = False, tls: bool = False) -> None:
        self.store = store
        self.tls_active = tls
        self.can_start_tls = can_start_tls
        self.logged_in = False
        self.tls_started = 0
        self.compression_active = False
        self.computed = 0
        self.paused = 0
        self.login = MemoryLogin(store, plaintext, lambda: self.tls_active)
        self.session = ImapSession(self, self.login, HANDLERS, limits, config)
        self._out = bytearray()
        self._step: Any = None  # a command's coroutine, suspended on a _Wait
        self.idle_waits: list[tuple[object, bool]] = []  # wait_idle's arguments, in order
        self.session.greeting()
        self.greeting = self.output()

    # --- ImapIO ------------------------------------------------------------------------
    def now(self) -> float:
        return self.store.clock

    async def compute(self, fn: Callable[[], _T]) -> _T:
        self.computed += 1  # tests see that the work was handed over
        return fn()

    def authenticated(self) -> None:
        self.logged_in = True

    def unauthenticated(self) -> None:
        self.logged_in = False

    async def flush(self) -> None:
        self._out += self.session.engine.data_to_send()

    async def pause(self) -> None:
        self.paused += 1  # tests see where a long command let others in

    @property
    def eof(self) -> bool:
        """The client closed its side (the engine was told so)."""
        return self.session.engine.input_ended

    async def more_input(self) -> bool:
        if not self.eof:
            await _Wait()
        return not self.eof

    def revocation_mark(self) -> object:
        return self.store.revocations

    def idle_check(self, paced: bool = True) -> contextlib.AbstractAsyncContextManager[bool]:
        return contextlib.nullcontext(True)  # (one session: no turns to take)

    async def wait_idle(self, since: object, checked: bool = True) -> bool:
        # what the session handed over, for tests; the test's poll() is the
        # only wake (the server's I/O side also ends a wait that begins
        # after a revocation later than ``since``)
        self.idle_waits.append((since, checked))
        if self.eof:
            return False
        await _Wait()
        return True

    def wake(self) -> None:
        pass  # the test calls poll() to let a waiting IDLE look

    async def begin_tls(self) -> None:
        self.tls_started += 1
        self.tls_active = True

    def begin_compress(self) -> None:
        # The harness stays in clear text: it records that the switch was asked for.
        self.compression_active = True

    # --- driving ------------------------------------------------------------------------
    def output(self) -> bytes:
        out = bytes(self._out) + self.session.engine.data_to_send()
        self._out.clear()
        return out

    @property
    def closed(self) -> bool:
        return self.session.engine.closed

    def feed(self, data: bytes) -> bytes:
        """Send bytes as the client; what the server answered."""
        if data:
            self.session.engine.receive_data(data)
        self.run()
        return self.output()

    def poll(self) -> bytes:
        """Let a waiting command look at what changed (IDLE after another
        session's write); what the server sent."""
        self.run()
        return self.output()

    def end_input(self) -> bytes:
        """The client closes its side."""
        self.session.engine.receive_data(b"")
        self.run()
        return self.output()

    def run(self) -> None:
        while True:
            if self._step is not None and not self._resume():
                return  # still waiting
            ev = self.session.engine.next_event()
            if ev is FLUSH:
                self._out += self.session.engine.data_to_send()  # the client reads at once
                continue
            if ev is NEED_DATA or ev is PAUSED or isinstance(ev, Closed):
                return
            self._step = self.session.execute(ev)  # type: ignore[arg-type]  # a Command

    def _resume(self) -> bool:
        try:
            self._step.send(None)
        except StopIteration:
            self._step = None
            return True
        return False

    def close(self) -> None:
        """The connection is gone."""
        self.session.close()
        if self._step is not None:
            self._step.close()
            self._step = None
