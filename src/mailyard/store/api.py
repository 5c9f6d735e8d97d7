"""The store interface: the only path to accounts, mailboxes and messages.

Every backend (SQLite, the embedded default; PostgreSQL for scale-out) implements
`Store`, and the shared test suite in tests/unit/test_store.py runs against each.

Model (names follow RFC 9051 / RFC 7162 so a reader with the RFCs open can follow):

- A *domain* is a mail domain this server is the final destination for.
- An *account* is a user (``local@domain``) with a password hash and, optionally,
  an APOP secret (RFC 1939 section 7 needs the shared secret in clear).
- An account may have *quota* limits (RFC 9208): storage in octets and a
  message count, set by the operator; its usage (the sizes and number of its
  messages) is kept as running totals in the same commit as every change, so
  reading it is cheap. APPEND and COPY over a limit raise ``QuotaExceeded``;
  a delivery does so only for targets marked ``enforce_quota``.
- An *alias* maps one address to one or more target addresses (local or remote).
- A *list* is an address that expands to its members.
- A *mailbox* belongs to an account; it has ``uid_validity``, ``uid_next`` and
  ``highest_modseq``. Every change to a mailbox (new message, flag change,
  expunge) takes the next mod-sequence value (RFC 7162 section 3.1).
- A *message* in a mailbox has a ``uid``, ``flags``, ``internal_date``, ``size``,
  ``modseq`` and ``save_date`` (RFC 8514: when it was saved into the mailbox). Its bytes are a per-delivery ``trace_prefix`` (Return-Path,
  Delivered-To: they differ per recipient) followed by a shared *body* blob (the
  bytes the client sent, with the Received header this server prepended). The
  body is stored once however many mailboxes hold it.
- The *outbound queue* holds messages on their way to remote recipients: a
  ``QueueEntry`` is one body (stored once, shared with any local copies of the
  same delivery), its envelope (reverse-path, RFC 3461 parameters) and one
  ``QueueRecipient`` per remote recipient with its attempts and next retry.

Writes are durable when their coroutine returns: bytes and index rows are on disk
(fsynced). Concurrent writes share one commit (group commit).

Backends: store/sqlite/ (the embedded default). ``open_store`` (store/__init__.py)
opens a data directory's store; nothing outside store/ names a backend.
"""

from __future__ import annotations

import abc
import datetime as _dt
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..message.dates import sent_day

if TYPE_CHECKING:
    from ..message.threadkeys import SortKeys, ThreadKeys

# RFC 6154 special-use mailboxes created with every account, besides INBOX.
SPECIAL_USE_MAILBOXES: tuple[tuple[str, str], ...] = (
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)

# Messages per get_derived call of the default ``Store.sent_dates`` and
# ``Store.object_id_hits``.
SENT_BATCH = 500

# Messages per commit of a flag change at most (``Store.store_flags``): a
# slice of messages with few keywords is some 10 ms of the SQLite writer.
FLAG_SLICE = 2000

# The hierarchy delimiter used in mailbox names (RFC 9051 section 5.1).
HIERARCHY_DELIMITER = "/"


class StoreError(Exception):
    """Base class of store errors; the message is fit to show a user."""


class NotFound(StoreError):
    """The named domain, account, alias, list, mailbox or message does not exist."""


class AlreadyExists(StoreError):
    """The thing to create exists already."""


class InvalidName(StoreError):
    """A name (address, mailbox name) is not acceptable."""


class StorageFull(StoreError):
    """The disk is full or a quota is reached; nothing was written."""


class KeywordLimit(StoreError):
    """The write would define a keyword past the mailbox's bounds
    (store/keywords.py); nothing was written. ``full``: the mailbox has as
    many keywords as it may (not merely a keyword too long)."""

    def __init__(self, text: str, full: bool = False) -> None:
        super().__init__(text)
        self.full = full


class FlagsPartlyStored(StoreError):
    """A ``store_flags`` written in slices failed (``error``) after some
    slices were committed: ``changed`` and ``failed`` say what those did, as
    ``store_flags`` returns it (a STORE is not atomic across messages, RFC
    9051 6.4.6; RFC 7162 3.1.3 MODIFIED for the committed ones)."""

    def __init__(self, changed: list[MessageInfo], failed: list[int], error: StoreError) -> None:
        super().__init__(str(error))
        self.changed = changed
        self.failed = failed
        self.error = error


class StoreUnavailable(StoreError):
    """The store cannot be reached now (a database server down or out of
    connections); nothing was written. Temporary: the same request may
    succeed later, without a restart (protocols answer it as a temporary
    failure)."""


class QuotaExceeded(StorageFull):
    """The write would take an account over its quota (RFC 9208); nothing
    was written. ``mailbox_ids``: the target mailboxes that would go over."""

    def __init__(self, text: str, mailbox_ids: Iterable[int] = ()) -> None:
        super().__init__(text)
        self.mailbox_ids = frozenset(mailbox_ids)


class AddressBookFull(StorageFull):
    """The account's address book holds the most entries allowed; the new
    one was not added."""


class TooManyMailboxes(StorageFull):
    """The account holds the most mailboxes allowed (``Store.max_mailboxes``,
    ``[limits] max_mailboxes``); the new one was not made (IMAP answers
    ``NO [LIMIT]``, RFC 5530 3)."""


class TooManySubscriptions(StorageFull):
    """The account holds the most subscriptions allowed
    (``Store.max_subscriptions``); the name was not subscribed (IMAP
    answers ``NO [LIMIT]``, RFC 5530 3)."""


class MailboxGone(NotFound):
    """A session's reference to a mailbox is no longer good: the mailbox was
    deleted (or its account removed), belongs to another account, or has
    another UIDVALIDITY. Nothing was read or written."""

    def __init__(self, mailbox_id: int, text: str = "the mailbox no longer exists") -> None:
        super().__init__(text)
        self.mailbox_id = mailbox_id


class MailboxRef(Protocol):
    """What a session holds of a mailbox, and what every store call on a
    mailbox's messages takes: its id, its owner and its UIDVALIDITY. The
    store checks all three on each call (``MailboxGone`` otherwise), so a
    stale or foreign reference never reaches another mailbox's data.
    ``Mailbox`` is one."""

    @property
    def id(self) -> int: ...

    @property
    def account_id(self) -> int: ...

    @property
    def uid_validity(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    address: str  # canonical form: local part as given, domain lower-cased
    password_hash: str  # argon2id (auth/passwords.py)
    apop_secret: str | None = None  # clear shared secret for APOP (RFC 1939 section 7)
    scram_sha256: str | None = None  # RFC 5803 form: "iterations:salt:StoredKey:ServerKey"
    epoch: int = 0  # moves with every password change (credentials_current)

    def without_secrets(self) -> Account:
        """This account as a logged-in session keeps it: the credentials
        were checked, so neither the password hash nor the APOP and SCRAM
        secrets stay in memory for the session's life (some 350 bytes per
        connection, and nothing of them in a core dump of a busy server)."""
        return replace(self, password_hash="", apop_secret=None, scram_sha256=None)


@dataclass(frozen=True, slots=True)
class Mailbox:
    id: int
    account_id: int
    name: str  # full hierarchical name, "/"-separated, UTF-8; "INBOX" is special
    uid_validity: int
    uid_next: int
    highest_modseq: int
    special_use: str | None = None  # RFC 6154 attribute, e.g. "\\Sent"
    subscribed: bool = True


@dataclass(frozen=True, slots=True)
class WebSession:
    """A webmail session as the store keeps it, so that every server
    process (and node) lists and ends it. ``key`` is a digest of the
    session's secret id, never the id itself: reading the store gives no
    cookie to present. Times are seconds since the epoch."""

    key: str
    account_id: int
    created: float
    last_seen: float
    ip: str = ""
    agent: str = ""


@dataclass(frozen=True, slots=True)
class Contact:
    """An entry of a user's address book (the fields of a vCard it keeps:
    RFC 6350 FN, EMAIL, TEL, ORG, NOTE, UID). ``id`` 0: not stored yet."""

    name: str
    emails: tuple[str, ...] = ()  # the preferred address first
    phones: tuple[str, ...] = ()
    org: str = ""
    note: str = ""
    uid: str = ""  # made by the store when empty
    id: int = 0


@dataclass(frozen=True, slots=True)
class Suggestion:
    """An address offered for a recipient field: from the address book
    (``contact`` True) or from the mail the user wrote and received."""

    name: str
    address: str
    contact: bool
    sent: int = 0
    received: int = 0


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """Index data of one message in one mailbox (no bytes)."""

    mailbox_id: int
    uid: int
    size: int  # RFC822.SIZE: octets of trace_prefix + body
    flags: frozenset[str]
    internal_date: float  # seconds since the epoch, UTC
    modseq: int
    save_date: float = 0.0  # RFC 8514: when it was saved into this mailbox


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    """Counts for IMAP STATUS / POP3 STAT (RFC 9051 section 6.3.11)."""

    messages: int
    unseen: int
    deleted: int
    size: int
    uid_next: int
    uid_validity: int
    highest_modseq: int
    deleted_size: int = 0  # octets of the \Deleted messages (RFC 9208 DELETED-STORAGE)
    recent: int = 0  # messages no session claimed as \Recent yet (RFC 3501 6.3.10 STATUS RECENT)


@dataclass(frozen=True, slots=True)
class Quota:
    """An account's limits and usage (RFC 9208 5: resources STORAGE and
    MESSAGE, one quota root per account). A limit of None is no limit."""

    storage_limit: int | None  # octets
    messages_limit: int | None
    storage_used: int  # octets: the RFC822.SIZE of every message of the account
    messages_used: int

    @property
    def full(self) -> bool:
        """At or over a limit: no further message fits (SMTP 452 4.2.2 at RCPT)."""
        return not self.fits(1, 1)

    def fits(self, octets: int, messages: int) -> bool:
        """Whether adding ``messages`` messages of ``octets`` in all stays within the limits."""
        return ((self.storage_limit is None or self.storage_used + octets <= self.storage_limit)
                and (self.messages_limit is None or self.messages_used + messages <= self.messages_limit))


KEEP: Literal["keep"] = "keep"  # set_quota: leave this limit as it is


@dataclass(frozen=True, slots=True)
class MailboxSummary:
    """What opening a mailbox needs (IMAP SELECT, RFC 9051 6.3.2), read in one
    snapshot without building a MessageInfo per message."""

    mailbox: Mailbox
    uids: Sequence[int]  # ascending
    keywords: frozenset[str]  # flags in use that are not system flags (no backslash)
    first_unseen: int | None  # UID of the lowest message without \Seen
    # no new keyword can be defined (store/keywords.py; RFC 9051 7.1: no \* in PERMANENTFLAGS)
    keywords_full: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryTarget:
    """One mailbox a delivered body goes into, with its per-recipient prefix."""

    mailbox_id: int
    trace_prefix: bytes = b""
    flags: frozenset[str] = frozenset()
    internal_date: float | None = None  # None: the time of the commit
    # Refuse this target (QuotaExceeded) rather than take its account over
    # quota: what a delivery from outside does; reports the server writes
    # itself (DSNs) go in regardless.
    enforce_quota: bool = False


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed in a mailbox since a mod-sequence (RFC 7162 CHANGEDSINCE/VANISHED)."""

    highest_modseq: int
    changed: list[MessageInfo] = field(default_factory=list)
    vanished: list[int] = field(default_factory=list)  # expunged UIDs


@dataclass(frozen=True, slots=True)
class AppendItem:
    """One message of an IMAP (MULTI)APPEND (RFC 9051 6.3.12, RFC 3502)."""

    data: bytes
    flags: frozenset[str] = frozenset()
    internal_date: float | None = None  # None: the time of the commit


@dataclass(slots=True)
class RecentClaim:
    """Asked of ``append_many`` by an IMAP session that has the mailbox
    selected read-write (RFC 3501 2.3.2: a new message is \\Recent in the
    first session told of it, and the appending session tells its client in
    the APPEND's reply): claim the new messages' \\Recent in the APPEND's
    own write instead of a write of its own after it. Filled in only when
    claimed (no earlier message was left unclaimed): ``first`` is the last
    claimed UID before, ``last`` the highest new UID. Left empty, the
    session claims as usual."""

    first: int | None = None
    last: int = 0


@dataclass(frozen=True, slots=True)
class RestoredMessage:
    """A message copied from another store with its IMAP identity: its UID,
    flags and keywords, INTERNALDATE, MODSEQ and save date
    (``restore_messages``)."""

    uid: int
    data: bytes
    flags: frozenset[str]
    internal_date: float
    modseq: int
    save_date: float


FlagMode = Literal["add", "remove", "replace"]


# --- the outbound queue ----------------------------------------------------------
# States of a queued recipient: waiting for its next attempt, or finished.
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True, slots=True)
class QueueRecipient:
    """One remote recipient of a queue entry and where its delivery stands."""

    id: int
    address: str
    domain: str
    notify: frozenset[str] | None  # RFC 3461 4.1 NOTIFY, None when not given
    orcpt: tuple[str, str] | None  # RFC 3461 4.2 (addr-type, address)
    state: str = PENDING
    attempts: int = 0
    next_attempt: float = 0.0  # seconds since the epoch
    last_reply: str | None = None
    last_host: str | None = None


@dataclass(frozen=True, slots=True)
class QueueAttempt:
    """One line of an entry's attempt log."""

    ts: float
    domain: str
    host: str | None
    outcome: str


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A message on its way to remote recipients (no bytes: ``queue_body``)."""

    id: int
    reverse_path: str  # "" for the null reverse-path (a bounce)
    envid: str | None  # RFC 3461 4.4 ENVID
    ret: str | None  # RFC 3461 4.3: FULL or HDRS
    smtputf8: bool  # RFC 6531: needs a peer announcing SMTPUTF8
    eight_bit: bool  # RFC 6152: needs a peer announcing 8BITMIME
    size: int
    created: float
    warned: bool  # a delay report (RFC 3464 "delayed") was sent
    recipients: list[QueueRecipient] = field(default_factory=list)
    attempts: list[QueueAttempt] = field(default_factory=list)  # only from queue_entry

    @property
    def pending(self) -> list[QueueRecipient]:
        return [r for r in self.recipients if r.state == PENDING]


@dataclass(frozen=True, slots=True)
class QueueStats:
    """The outbound queue in figures (``Store.queue_stats``), for monitoring."""

    entries: int
    recipients: Mapping[str, int]  # recipient rows by state (PENDING, ...); a state with none is left out
    oldest: float | None  # ``created`` of the oldest entry; None when the queue is empty


@dataclass(frozen=True, slots=True)
class NewRecipient:
    """A remote recipient to queue, with its RFC 3461 parameters."""

    address: str
    notify: frozenset[str] | None = None
    orcpt: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class NewQueueEntry:
    """What ``queue_submit`` queues besides the body."""

    reverse_path: str
    recipients: Sequence[NewRecipient]
    envid: str | None = None
    ret: str | None = None
    smtputf8: bool = False
    eight_bit: bool = False
    next_attempt: float | None = None  # None: at once
    created: float | None = None  # its ``QueueEntry.created``; None: the time of the commit


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """The result of one attempt for one recipient (``queue_update``)."""

    recipient_id: int
    state: str  # PENDING (retry at next_attempt), DELIVERED or FAILED
    reply: str
    host: str | None = None
    next_attempt: float = 0.0


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to store in the same commit as a queue update (a bounce or
    delay report): local copies (``targets``) and/or a queue entry."""

    body: bytes
    targets: Sequence[DeliveryTarget] = ()
    entry: NewQueueEntry | None = None

# Keys of get_derived(..., fields=...). The *_imap keys are the items in IMAP
# syntax (RFC 9051 9), computed once at delivery so FETCH ENVELOPE of a whole
# mailbox only concatenates bytes; the others are the JSON values of
# message.derived.Derived; "headers" maps lower-case field names to decoded
# values; "body_id" is the stored body's id (never reused; messages that share
# a body share it: IMAP EMAILID, RFC 8474 5.1). The decoded body text is not
# among them: it lives only in the full-text index (search_text).
# "email_id" and "thread_id" are the opaque RFC 8474 EMAILID and THREADID
# (message/objectids.py), given only when asked for by name.
DERIVED_FIELDS = frozenset({
    "envelope_imap", "bodystructure_imap", "body_imap",
    "envelope", "bodystructure", "parts", "messages", "date", "size", "headers", "preview", "body_id",
    "email_id", "thread_id",
})


@dataclass(frozen=True, slots=True)
class DerivedRecord:
    """What a backend stores per body (see ``derive_record``)."""

    envelope_imap: bytes
    bodystructure_imap: bytes
    body_imap: bytes
    meta: dict  # envelope, bodystructure, parts, messages, date, size, preview, sort (JSON-able)
    headers: list[tuple[str, str]]  # (lower-case name, decoded value), in header order
    body_text: str  # for the full-text index only
    header_text: str


def derive_record(raw: bytes) -> DerivedRecord:
    """Derive once what FETCH/SEARCH need of a body (DESIGN.md "Message
    handling"); the same for every backend. Never raises (``derive`` does not)."""
    from ..message.derived import body_structure, derive
    from ..message.imap_syntax import body_bytes, envelope_bytes
    from ..message.threadkeys import KEY_FIELDS, sort_keys

    d = derive(raw)
    j = d.to_json()
    meta = {k: j[k] for k in ("v", "envelope", "bodystructure", "parts", "messages", "date", "size", "preview")}
    # IMAP SORT and THREAD's keys (RFC 5256), so a SORT reads them instead of
    # parsing header fields: message/threadkeys.py SortKeys as a JSON list
    meta["sort"] = list(sort_keys({n: d.headers[n][0] for n in KEY_FIELDS if d.headers.get(n)}))
    headers = [(name, value) for name, values in d.headers.items() for value in values]
    return DerivedRecord(
        envelope_imap=envelope_bytes(d.envelope),
        bodystructure_imap=body_bytes(d.bodystructure),
        body_imap=body_bytes(body_structure(d.bodystructure)),
        meta=meta,
        headers=headers,
        body_text=d.body_text,
        header_text=d.header_text,
    )


class ChannelLike(Protocol):
    """store/notify.py ``ChangeChannel``, as the store uses it."""

    def publish(self, kind: bytes, ids: Iterable[int] = ()) -> None: ...

    def on(self, kind: bytes, handle: Callable[[list[int]], None]) -> None: ...


class Store(abc.ABC):
    """Backend-independent store API. All methods are coroutines but
    ``credentials_known`` (the validity check answered from memory),
    ``hold_expunged`` and ``add_listener``.

    Every call on a mailbox's messages takes the session's ``MailboxRef`` and
    raises ``MailboxGone`` unless that mailbox still exists with that owner
    and UIDVALIDITY; ids of accounts, mailboxes and bodies are never reused."""

    # Moves whenever this process (or, with ``[server] workers``, another
    # worker) changes domains, accounts, aliases or lists, so caches of
    # directory lookups (delivery/router.py) know to forget.
    directory_version: int = 0
    # The most mailboxes one account may have (``[limits] max_mailboxes``;
    # None: no bound): creating one more, by name or by renaming INBOX,
    # raises TooManyMailboxes. ``restore_mailbox`` (a copy of another store)
    # and a new account's own mailboxes are not counted against it.
    max_mailboxes: int | None = None
    # Called (on the event loop) when another worker queued outbound mail;
    # set in the worker that runs the queue (mailyard/workers.py).
    on_queue_note: Callable[[], None] | None = None

    @property
    def max_subscriptions(self) -> int | None:
        """The most names one account may subscribe to: twice
        ``max_mailboxes`` (None: no bound). Subscriptions are names, not
        mailboxes (RFC 9051 6.3.7), and a deleted mailbox keeps its own, so
        an account at its folder bound, every folder subscribed, still has
        room for as many names again (folders deleted, or on a server it
        moved from); and every LIST and LSUB goes over them all, so they are
        bounded like the folders are."""
        return None if self.max_mailboxes is None else 2 * self.max_mailboxes

    def attach_peers(self, channel: ChannelLike) -> None:
        """Exchange change notes with the other worker processes serving
        this store (store/notify.py)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be shared by worker processes")

    def share_holds(self, keep_expunged: bool = True) -> None:
        """Let other processes opening this store see what this process's
        sessions hold (``hold_expunged``), so that they keep it; with
        ``keep_expunged`` (several workers) also keep what theirs hold. A
        backend no other process opens has nothing to share."""
        return None

    async def lock_exclusive(self, space: str, key: int) -> bool:
        """Take the lock (``space``, ``key``) unless another process or node
        serving this store holds it (the POP3 maildrop lock, RFC 1939 8,
        held across nodes); False when it is held. Released by
        ``unlock_exclusive`` or when the process holding it dies. A backend
        only one machine opens answers True: the caller's own lock (flock)
        already excludes every process there."""
        return True

    def unlock_exclusive(self, space: str, key: int) -> None:
        """Release a lock taken with ``lock_exclusive``."""
        return None

    # --- life cycle -------------------------------------------------------
    @abc.abstractmethod
    async def close(self) -> None:
        """Finish in-flight commits and release files and connections."""

    # --- domains ----------------------------------------------------------
    @abc.abstractmethod
    async def add_domain(self, name: str) -> None: ...

    @abc.abstractmethod
    async def remove_domain(self, name: str) -> None:
        """Remove a domain; refused (StoreError) while accounts, aliases or lists use it."""

    @abc.abstractmethod
    async def list_domains(self) -> list[str]: ...

    @abc.abstractmethod
    async def is_local_domain(self, name: str) -> bool: ...

    # --- accounts ---------------------------------------------------------
    @abc.abstractmethod
    async def add_account(
        self,
        address: str,
        password_hash: str,
        apop_secret: str | None = None,
        scram_sha256: str | None = None,
    ) -> Account:
        """Create an account with INBOX and the RFC 6154 special-use mailboxes."""

    @abc.abstractmethod
    async def get_account(self, address: str) -> Account | None:
        """Look an account up by address (domain compared case-insensitively)."""

    @abc.abstractmethod
    async def get_account_by_id(self, account_id: int) -> Account | None: ...

    @abc.abstractmethod
    async def list_accounts(self, domain: str | None = None) -> list[Account]: ...

    @abc.abstractmethod
    async def set_password(
        self,
        address: str,
        password_hash: str,
        apop_secret: str | None = None,
        scram_sha256: str | None = None,
    ) -> None: ...

    @abc.abstractmethod
    async def remove_account(self, address: str) -> None:
        """Remove an account with all its mailboxes and messages; its id is
        never given to another account, and its sessions end
        (``credentials_current`` turns False)."""

    @abc.abstractmethod
    async def credentials_current(self, account_id: int, epoch: int) -> bool:
        """Whether a session that logged in to ``account_id`` under credential
        ``epoch`` may go on: False once the account is removed or its password
        changed (``set_password``), whichever process or node did it.

        Every protocol asks it before every command. It is answered from
        memory (without suspending) unless something was revoked since; then
        the backend asks its database, for a remote one without holding the
        event loop, and never answers from what it knew before the
        revocation."""

    def credentials_known(self, account_id: int, epoch: int) -> bool | None:
        """``credentials_current`` from memory, for a caller that cannot
        wait (the POP3 pump): None when only the database can tell, and the
        caller awaits ``credentials_current``."""
        return None

    @abc.abstractmethod
    async def mailbox_current(self, mailbox: MailboxRef) -> bool:
        """Whether ``mailbox`` still exists with this owner and UIDVALIDITY
        (what every call taking a MailboxRef checks); answered from memory
        unless something was revoked since, as ``credentials_current``."""

    def revocation_version(self) -> int | None:
        """A value, read from memory, that moves whenever something may have
        been revoked since it was last read: a password changed, an account
        or a mailbox removed, by any process or node sharing this store (the
        moments ``credentials_current`` and ``mailbox_current`` stop
        answering from memory). Sessions that wait without a command (IMAP
        IDLE) are woken when it moves, to ask those checks again
        (net/revocations.py). None: this backend gives no such signal, and
        such sessions notice at their next command."""
        return None

    # --- quotas (RFC 9208) ---------------------------------------------------
    @abc.abstractmethod
    async def set_quota(
        self,
        address: str,
        *,
        storage: int | None | Literal["keep"] = KEEP,
        messages: int | None | Literal["keep"] = KEEP,
    ) -> Quota:
        """Set (an int), remove (None) or keep (KEEP) the account's storage
        limit in octets and message-count limit; returns its quota."""

    @abc.abstractmethod
    async def get_quota(self, account_id: int) -> Quota:
        """The account's limits and usage, read from running totals (cheap
        whatever the account's size); NotFound for no such account."""

    # --- sender grants ----------------------------------------------------
    @abc.abstractmethod
    async def allow_senders(self, address: str, patterns: Sequence[str]) -> list[str]:
        """Let the account ``address`` also send as ``patterns`` (addresses, or
        patterns where ``*`` is any run of characters; store/names.py
        ``normalize_sender_pattern``); returns the account's grants."""

    @abc.abstractmethod
    async def disallow_senders(self, address: str, patterns: Sequence[str] = ()) -> list[str]:
        """Withdraw some grants (all of them when ``patterns`` is empty);
        returns the account's remaining grants."""

    @abc.abstractmethod
    async def allowed_senders(self, account_id: int) -> list[str]:
        """The account's sender grants, sorted."""

    # --- webmail sessions ----------------------------------------------------
    @abc.abstractmethod
    async def add_web_session(self, session: WebSession, keep_at_most: int, seen_after: float) -> None:
        """Record a new webmail session (replacing one of the same key); in
        the same commit, drop the account's sessions last seen before
        ``seen_after`` and its oldest beyond ``keep_at_most``. NotFound for
        no such account."""

    @abc.abstractmethod
    async def get_web_session(self, key: str) -> WebSession | None:
        """The session of ``key``, or None once it was removed."""

    @abc.abstractmethod
    async def list_web_sessions(self, account_id: int) -> list[WebSession]:
        """The account's sessions, the newest first."""

    @abc.abstractmethod
    async def touch_web_session(self, key: str, last_seen: float) -> bool:
        """Note that the session was used; False if it is gone."""

    @abc.abstractmethod
    async def remove_web_sessions(self, account_id: int, keys: Sequence[str] | None = None,
                                  keep: str | None = None) -> int:
        """End sessions of the account: those of ``keys``, or with None every
        one but ``keep``; how many were removed."""

    # --- account settings -------------------------------------------------
    @abc.abstractmethod
    async def get_settings(self, account_id: int) -> dict[str, Any]:
        """The account's settings (webmail preferences, spam filing, ...):
        JSON values by key; keys never set are absent, so each reader keeps
        its own defaults. Empty for no such account."""

    @abc.abstractmethod
    async def set_settings(self, account_id: int, values: Mapping[str, Any]) -> dict[str, Any]:
        """Set the given keys (a value of None removes the key), all in one
        commit; returns every setting of the account. NotFound for no such
        account; InvalidName for a value JSON cannot hold."""

    @abc.abstractmethod
    async def update_setting_list(self, account_id: int, key: str, add: Sequence[str], cap: int) -> list[str]:
        """Append ``add`` to the list of strings setting ``key`` in one
        atomic read-modify-write (a concurrent set_settings of other keys, or
        another merge, loses nothing): entries already there (compared
        without case) are skipped, and past ``cap`` entries the oldest, at
        the front, are dropped. A value that is not a list counts as empty.
        Returns the new list; NotFound for no such account."""

    def settings_version(self) -> int | None:
        """A value that moves whenever any process sharing this store commits
        a change to any account's settings (set_settings,
        update_setting_list), so a cache of ``get_settings`` (the spam
        checker's, spam/checker.py) knows to forget; read it before the
        settings cached under it. None: this backend gives no such signal,
        and nothing may be cached."""
        return None

    # --- address book ---------------------------------------------------
    @abc.abstractmethod
    async def add_contact(self, account_id: int, contact: Contact) -> Contact:
        """Store a new entry in the account's address book; returns it with
        its id (and a UID when it had none). NotFound for no such account;
        InvalidName for an entry with neither a name nor an address;
        AddressBookFull when the account has MAX_CONTACTS entries (checked
        inside the write, so concurrent adds cannot pass it)."""

    @abc.abstractmethod
    async def update_contact(self, account_id: int, contact: Contact) -> Contact:
        """Replace the entry ``contact.id``; NotFound unless it is this
        account's (another account's id is as unknown as a missing one)."""

    @abc.abstractmethod
    async def delete_contact(self, account_id: int, contact_id: int) -> None:
        """Remove an entry; NotFound unless it is this account's."""

    @abc.abstractmethod
    async def get_contact(self, account_id: int, contact_id: int) -> Contact | None:
        """One entry of this account's address book, None if there is none."""

    @abc.abstractmethod
    async def list_contacts(self, account_id: int, prefix: str = "", limit: int | None = None,
                            offset: int = 0) -> list[Contact]:
        """The account's entries sorted by name (case-insensitively); with
        ``prefix`` only those whose name, a word of the name, or an address
        starts with it (case-insensitively); ``offset`` entries skipped, at
        most ``limit`` returned (a page)."""

    @abc.abstractmethod
    async def note_correspondents(self, account_id: int, addresses: Sequence[tuple[str, str]],
                                  sent: bool, when: float | None = None) -> None:
        """Count messages the account wrote to (``sent``) or received from
        the (display name, addr-spec) pairs, for suggestions: each pair is
        one message, so an address given n times counts n (the caller's
        coalesced messages). Bounded: an account keeps its most used few
        thousand addresses."""

    @abc.abstractmethod
    async def suggest_addresses(self, account_id: int, prefix: str, limit: int = 10) -> list[Suggestion]:
        """Addresses for a recipient field starting with ``prefix`` (in the
        address, the name, or a word of the name): address book entries
        first, then the addresses written to and received from, most used
        first (written-to counting more); each address once; at most ``limit``."""

    # --- aliases and lists ------------------------------------------------
    @abc.abstractmethod
    async def add_alias(self, source: str, targets: Sequence[str]) -> None:
        """Create an alias, or add targets to an existing one. A source of
        ``@domain`` is the domain's catch-all: mail for a local part that is
        no account, alias or list goes to its targets."""

    @abc.abstractmethod
    async def remove_alias(self, source: str, targets: Sequence[str] = ()) -> None:
        """Remove some targets of an alias, or (no targets given) the whole alias."""

    @abc.abstractmethod
    async def get_alias(self, source: str) -> list[str] | None: ...

    @abc.abstractmethod
    async def list_aliases(self) -> dict[str, list[str]]:
        """Every alias (catch-alls as ``@domain``), without domain aliases."""

    @abc.abstractmethod
    async def add_domain_alias(self, alias: str, target: str) -> None:
        """Make ``alias`` a local domain whose every address is delivered as the
        same local part at the local domain ``target``."""

    @abc.abstractmethod
    async def remove_domain_alias(self, alias: str) -> None: ...

    @abc.abstractmethod
    async def list_domain_aliases(self) -> dict[str, str]:
        """Alias domain -> target domain."""

    @abc.abstractmethod
    async def remove_address_everywhere(self, address: str) -> tuple[list[str], list[str]]:
        """Take ``address`` out of every alias target and list membership
        (an alias left without targets goes); returns (aliases, lists) it was in."""

    @abc.abstractmethod
    async def add_list(self, address: str) -> None: ...

    @abc.abstractmethod
    async def remove_list(self, address: str) -> None: ...

    @abc.abstractmethod
    async def subscribe_list(self, address: str, member: str) -> None: ...

    @abc.abstractmethod
    async def unsubscribe_list(self, address: str, member: str) -> None: ...

    @abc.abstractmethod
    async def get_list_members(self, address: str) -> list[str] | None:
        """Members of a list, or None if the address is not a list."""

    @abc.abstractmethod
    async def list_lists(self) -> dict[str, list[str]]: ...

    # --- mailboxes --------------------------------------------------------
    @abc.abstractmethod
    async def create_mailbox(
        self, account_id: int, name: str, special_use: str | None = None, subscribe: bool = False,
        superiors: bool = False,
    ) -> Mailbox:
        """Create a mailbox; with ``subscribe`` its name is subscribed too
        (IMAP CREATE does not subscribe: RFC 9051 6.3.4), while the account
        has fewer than ``max_subscriptions``. With ``superiors`` the
        superior names that are not mailboxes are made too (RFC 9051
        6.3.4), unsubscribed, in the same write. TooManyMailboxes when the
        account has no room for all it would make (checked once in the
        write, so concurrent creations cannot pass it): then nothing is
        made."""

    @abc.abstractmethod
    async def get_mailbox(self, account_id: int, name: str) -> Mailbox | None:
        """Look a mailbox up by name; "INBOX" is matched case-insensitively."""

    @abc.abstractmethod
    async def get_mailbox_by_id(self, account_id: int, mailbox_id: int) -> Mailbox | None:
        """The mailbox with this id if it belongs to ``account_id``, else None."""

    @abc.abstractmethod
    async def list_mailboxes(self, account_id: int) -> list[Mailbox]: ...

    @abc.abstractmethod
    async def has_inferiors(self, account_id: int, name: str) -> bool:
        """Whether some mailbox of the account lies below ``name`` in the
        hierarchy (``name/...``): IMAP's \\HasChildren (RFC 9051 7.3.1)
        for one name, read by an index range, not a listing of them all."""

    @abc.abstractmethod
    async def restore_mailbox(self, account_id: int, name: str, uid_validity: int, uid_next: int,
                              highest_modseq: int, special_use: str | None = None) -> Mailbox:
        """The mailbox ``name`` with the given UIDVALIDITY, for a copy of a
        mailbox from another store (clients keep their caches: RFC 9051
        2.3.1.1). Created if missing; one with that UIDVALIDITY already is
        kept (a copy resumed), its UIDNEXT and HIGHESTMODSEQ raised to the
        given ones; one that never held a message (a new account's INBOX) is
        made again with the given values. AlreadyExists when one with another
        UIDVALIDITY holds or held messages. Later new mailboxes get higher
        UIDVALIDITYs still."""

    @abc.abstractmethod
    async def restore_messages(self, mailbox: MailboxRef, items: Sequence[RestoredMessage]) -> None:
        """Store copied messages with their UIDs, flags, dates and MODSEQs,
        all or none (one commit, no quota check: the account had them).
        Each UID must be above every UID in the mailbox (AlreadyExists
        otherwise: a resumed copy never doubles a message); UIDNEXT and
        HIGHESTMODSEQ rise to cover them."""

    @abc.abstractmethod
    async def rename_mailbox(self, account_id: int, old: str, new: str, superiors: bool = False) -> None:
        """Rename a mailbox and its inferiors (RFC 9051 6.3.6).

        Renaming INBOX moves its messages to a new mailbox and leaves INBOX
        empty. With ``superiors`` the superior names of ``new`` that are not
        mailboxes are made too, in the same write (RFC 9051 6.3.6).
        TooManyMailboxes when the account has no room for the mailboxes
        this makes: then nothing changes.
        """

    @abc.abstractmethod
    async def delete_mailbox(self, account_id: int, name: str) -> None: ...

    @abc.abstractmethod
    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        """Add a name to (or remove it from) the account's subscriptions. The
        name need not be an existing mailbox (RFC 9051 6.3.7-8); raises
        InvalidName for a bad name, TooManySubscriptions for a new one when
        the account has ``max_subscriptions`` already (checked in the
        write). A new account's mailboxes start
        subscribed; renaming moves the subscriptions of the mailbox and its
        inferiors; deleting a mailbox leaves its subscription (RFC 9051
        6.3.7: a server MUST NOT unilaterally remove one)."""

    @abc.abstractmethod
    async def claim_recent(self, mailbox: MailboxRef, claim: bool = True, upto: int | None = None) -> int:
        """RFC 3501 2.3.2 \\Recent: return the highest UID already claimed by
        some session; messages above it, up to ``upto``, are \\Recent for the
        caller. With ``claim`` the UIDs up to ``upto`` (the highest UID the
        caller has announced; None: every present message) become claimed
        (SELECT, or new messages announced to a read-write session),
        atomically, so exactly one session sees each message as \\Recent:
        a message delivered after the caller looked stays for the session
        that announces it. Without ``claim`` (EXAMINE) nothing changes."""

    @abc.abstractmethod
    async def list_subscriptions(self, account_id: int) -> list[str]:
        """Every subscribed name of an account, existing as a mailbox or not."""

    @abc.abstractmethod
    async def mailbox_status(self, mailbox: MailboxRef) -> MailboxStatus: ...

    async def mailbox_statuses(self, mailboxes: Sequence[MailboxRef]) -> dict[int, MailboxStatus]:
        """The counts of many mailboxes (the webmail's folder list, up to
        ``max_mailboxes`` of them), by mailbox id; a mailbox gone meanwhile
        is left out. A backend whose reads hold the event loop reads many
        at once off it."""
        out: dict[int, MailboxStatus] = {}
        for mailbox in mailboxes:
            try:
                out[mailbox.id] = await self.mailbox_status(mailbox)
            except NotFound:
                continue
        return out

    # --- messages ---------------------------------------------------------
    @abc.abstractmethod
    async def deliver(self, body: bytes, targets: Sequence[DeliveryTarget]) -> list[int]:
        """Store one body into several mailboxes atomically and durably.
        A target's keywords its mailbox has no room for are left out
        (store/keywords.py ``fitted``).

        Returns the new UID in each target, in the order of ``targets``. Either
        every target has the message when this returns, or none has and it raises.
        A target with ``enforce_quota`` whose account the message would take
        over quota makes it raise ``QuotaExceeded`` naming every such target.
        """

    async def append(
        self,
        mailbox: MailboxRef,
        data: bytes,
        flags: Iterable[str] = (),
        internal_date: float | None = None,
    ) -> int:
        """Add a message to one mailbox (IMAP APPEND); returns its UID."""
        (uid,) = await self.append_many(mailbox, [AppendItem(data, frozenset(flags), internal_date)])
        return uid

    @abc.abstractmethod
    async def append_many(self, mailbox: MailboxRef, items: Sequence[AppendItem],
                          recent: RecentClaim | None = None, left_out: set[str] | None = None) -> list[int]:
        """Add several messages to one mailbox in one atomic, durable write
        (RFC 3502 MULTIAPPEND: all or none); returns their UIDs in order.
        QuotaExceeded when they would take the account over quota (RFC 9208),
        KeywordLimit when their flags would define a keyword past the
        mailbox's bounds (store/keywords.py). ``left_out`` (an import, a
        restore): the messages go in without the keywords that do not fit,
        as a COPY's (``fitted_all``), and those are added to it. ``recent``:
        claim their \\Recent in the same write if no earlier message is
        unclaimed, and say so in it (``RecentClaim``)."""

    @abc.abstractmethod
    async def list_messages(self, mailbox: MailboxRef) -> list[MessageInfo]:
        """All messages of a mailbox in ascending UID order."""

    @abc.abstractmethod
    async def mailbox_summary(self, mailbox: MailboxRef) -> MailboxSummary:
        """The mailbox, its UIDs, keywords in use and first unseen message,
        consistent with each other (one snapshot); raises NotFound."""

    @abc.abstractmethod
    async def get_messages(
        self, mailbox: MailboxRef, uids: Sequence[int], expunged: bool = False
    ) -> list[MessageInfo]:
        """Index data of the given UIDs that exist, in ascending UID order;
        with ``expunged``, of expunged messages still held (``hold_expunged``)
        instead."""

    @abc.abstractmethod
    async def read_message(self, mailbox: MailboxRef, uid: int, expunged: bool = False) -> bytes:
        """The exact bytes of a message (trace prefix + body); with
        ``expunged`` also of an expunged message still held (``hold_expunged``)."""

    @abc.abstractmethod
    def hold_expunged(self, holder: object, mailbox: MailboxRef | None, seen_modseq: int = 0) -> None:
        """RFC 2180 4.1.1: ``holder`` (an IMAP session) has ``mailbox``
        selected and has told its client of every expunge up to the
        mod-sequence ``seen_modseq``; messages expunged after that stay
        readable for it (read_message, get_derived and get_messages with
        ``expunged``) until every holder of the mailbox has seen them go.
        ``mailbox`` None: the holder holds nothing (deselected, closed).
        A holder holds one mailbox; a new call replaces its hold. Nothing
        held survives a restart."""

    async def read_messages(self, mailbox: MailboxRef, uids: Sequence[int]) -> list[tuple[int, bytes]]:
        """(UID, exact bytes) of the given UIDs that exist, in ascending UID
        order: many messages read at once (POP3's first look at a maildrop),
        which a backend may do with less work per message than
        ``read_message`` each."""
        out = []
        for uid in sorted(set(uids)):
            try:
                out.append((uid, await self.read_message(mailbox, uid)))
            except NotFound:
                continue
        return out

    @abc.abstractmethod
    async def store_flags(
        self,
        mailbox: MailboxRef,
        uids: Sequence[int],
        flags: Iterable[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> tuple[list[MessageInfo], list[int]]:
        """Change flags; returns (messages whose flags changed, UIDs that failed
        the UNCHANGEDSINCE test of RFC 7162 section 3.1.3). KeywordLimit,
        with nothing changed, when it would define a keyword past the
        mailbox's bounds (store/keywords.py). Keywords compare without case
        (RFC 9051 2.3.2): one the mailbox has in another spelling is set
        (or taken away) in that spelling. A keyword is defined only by a
        message that gets it.

        Written in commits of at most ``FLAG_SLICE`` messages (SQLite's
        also stop at ``FLAG_SLICE_OCTETS`` of flags text), each slice with
        its own mod-sequence: a STORE over a large mailbox does not hold the writer
        (and every other session's write) for the whole of it. A STORE is
        not atomic across messages (RFC 9051 6.4.6; RFC 7162 3.1.3 applies
        UNCHANGEDSINCE per message), so a crash between slices leaves the
        earlier slices' changes, each message changed whole or not at all.
        A store error after a slice that changed or failed a message is
        raised as FlagsPartlyStored, which carries what was done."""

    @abc.abstractmethod
    async def expunge(self, mailbox: MailboxRef, uids: Sequence[int], holder: object = None) -> list[int]:
        """Remove messages; returns the UIDs actually removed (ascending).
        ``holder``: the caller, a holder (``hold_expunged``) that announces
        the expunge at once, so nothing is kept for it."""

    @abc.abstractmethod
    async def copy_messages(
        self, src: MailboxRef, uids: Sequence[int], dst: MailboxRef, move: bool = False, holder: object = None,
    ) -> list[tuple[int, int]]:
        """Copy (or move) messages between two mailboxes of one account;
        returns (source UID, new UID) pairs (RFC 4315 COPYUID). A copy that
        would take the account over quota raises QuotaExceeded; a move
        leaves the account's usage as it is and is never refused for it.
        Flags go with the messages, but for keywords the target mailbox has
        no room for (store/keywords.py ``fitted``).
        ``holder`` as for ``expunge``."""

    @abc.abstractmethod
    async def changes_since(self, mailbox: MailboxRef, modseq: int) -> Changes:
        """Messages changed and UIDs expunged after ``modseq`` (RFC 7162)."""

    @abc.abstractmethod
    async def get_derived(
        self, mailbox: MailboxRef, uids: Sequence[int], fields: Iterable[str] | None = None,
        expunged: bool = False,
    ) -> dict[int, dict]:
        """Derived data of messages, computed once per body (``derive_record``)
        and stored (DESIGN.md "Message handling").

        Each dict holds the requested ``fields`` (names in DERIVED_FIELDS; all
        but the *_imap ones when None). Computed on demand (and then stored) for
        a body the background indexer has not reached yet. With ``expunged``,
        also of expunged messages still held (``hold_expunged``).
        """

    @abc.abstractmethod
    async def search_headers(self, mailbox: MailboxRef, field: str, text: str,
                             within: Collection[int] | None = None) -> set[int]:
        """UIDs whose header has a field ``field`` (case-insensitive name)
        whose decoded value contains ``text`` (case-insensitive substring, RFC
        9051 6.4.4); an empty ``text`` matches every message having the field.
        Answered from the stored header fields, not by decoding messages.
        ``within``: only those of these UIDs (a search combining terms checks
        each later term only on what the earlier ones left)."""

    @abc.abstractmethod
    async def search_text(self, mailbox: MailboxRef, text: str, where: Literal["body", "text"],
                          within: Collection[int] | None = None) -> set[int]:
        """UIDs whose body ("body": RFC 9051 SEARCH BODY) or header+body ("text":
        SEARCH TEXT) contains ``text`` (case-insensitive substring semantics),
        answered from the full-text index. ``within``: only those of these UIDs."""

    async def sent_dates(self, mailbox: MailboxRef, uids: Sequence[int]) -> dict[int, _dt.date | None]:
        """For each of ``uids`` present (expunged messages still held too):
        the day SEARCH SENTBEFORE / SENTON / SENTSINCE compare (RFC 9051
        6.4.4), message/dates.py ``sent_day`` of its stored Date fields; None
        without a readable Date. The stored sort key ``sort_keys.date`` cannot
        answer it: it is the Date in UTC, and SENT* wants the day as written
        in the field, whatever its zone.

        This default reads the header fields a batch at a time through
        ``get_derived``, each batch an await (a store that waits for its
        database between batches, as PostgreSQL's, never holds the event
        loop for long); the SQLite store reads them in a worker thread."""
        out: dict[int, _dt.date | None] = {}
        wanted = list(uids)
        for start in range(0, len(wanted), SENT_BATCH):
            chunk = wanted[start : start + SENT_BATCH]
            for uid, d in (await self.get_derived(mailbox, chunk, ("headers",), expunged=True)).items():
                out[uid] = sent_day(d.get("headers", {}).get("date", ()))
        return out

    async def object_id_hits(self, mailbox: MailboxRef, uids: Sequence[int],
                             wanted: Collection[tuple[str, str]]) -> dict[tuple[str, str], set[int]]:
        """For each (field, objectid) of ``wanted``, field "email_id" or
        "thread_id" (RFC 8474 5.1 EMAILID, 5.2 THREADID, as ``get_derived``
        gives them): those of ``uids`` (expunged messages still held too)
        that have it; SEARCH EMAILID / THREADID (RFC 8474 6). The ids are
        keyed hashes (message/objectids.py), so each message's are made and
        compared: one call for a whole mailbox.

        This default reads them a batch at a time through ``get_derived``,
        each batch an await (as ``sent_dates``); the SQLite store reads and
        compares them in a worker thread."""
        hits: dict[tuple[str, str], set[int]] = {key: set() for key in wanted}
        fields = tuple(sorted({name for name, _ in hits}))
        if set(fields) - {"email_id", "thread_id"}:
            raise ValueError(f"not an object id: {', '.join(fields)}")
        asked = list(uids)
        for start in range(0, len(asked), SENT_BATCH):
            chunk = asked[start : start + SENT_BATCH]
            for uid, d in (await self.get_derived(mailbox, chunk, fields, expunged=True)).items():
                for name in fields:
                    hit = hits.get((name, d.get(name, "")))
                    if hit is not None:
                        hit.add(uid)
        return hits

    @abc.abstractmethod
    async def sort_order(self, mailbox: MailboxRef, keys: Sequence[tuple[str, bool]],
                         uids: Sequence[int]) -> list[int]:
        """Those of ``uids`` present, in the order of the SORT ``keys``
        ((name, reverse) pairs, the first most significant; names of RFC 5256
        section 3 and RFC 5957: ARRIVAL CC DATE FROM SIZE SUBJECT TO
        DISPLAYFROM DISPLAYTO), equal messages in UID order."""

    @abc.abstractmethod
    async def thread_keys(self, mailbox: MailboxRef, uids: Sequence[int]) -> dict[int, ThreadKeys]:
        """For each of ``uids`` present: what THREAD compares (RFC 5256
        section 3; message/threadkeys.py ThreadKeys), the sent date with the
        INTERNALDATE standing in for a missing one."""

    @abc.abstractmethod
    async def sort_keys(self, mailbox: MailboxRef, uids: Sequence[int]) -> dict[int, SortKeys]:
        """For each of ``uids`` present: the keys IMAP SORT and THREAD
        compare (message/threadkeys.py ``sort_keys``, RFC 5256), from the
        stored header fields, not by reading messages."""

    # --- the outbound queue ---------------------------------------------------
    # Every write below is one durable commit, so "queued" means durable exactly
    # like "delivered", and an attempt's outcome is recorded together with the
    # report it causes: a crash can neither lose a bounce nor send it twice.
    async def queue_submit(
        self, body: bytes, entry: NewQueueEntry | None, targets: Sequence[DeliveryTarget] = ()
    ) -> tuple[list[int], int | None]:
        """Store ``body`` once: into the local ``targets`` and (if ``entry``
        has recipients) the outbound queue, in one atomic, durable commit.
        Returns (the new UID in each target, the queue id or None)."""
        return (await self.queue_submit_all([NewMessage(body, targets, entry)]))[0]

    @abc.abstractmethod
    async def queue_submit_all(self, messages: Sequence[NewMessage]) -> list[tuple[list[int], int | None]]:
        """``queue_submit`` of several messages in one atomic, durable commit
        (one acceptance that makes two queue entries, each with its own
        body: either both are queued or neither). Returns each one's (UIDs,
        queue id or None), in order."""

    @abc.abstractmethod
    async def queue_update(
        self,
        queue_id: int,
        outcomes: Sequence[RecipientOutcome],
        attempts: Iterable[tuple[str, str | None, str]] = (),
        *,
        warned: bool = False,
        follow_up: Sequence[NewMessage] = (),
    ) -> bool:
        """Record one delivery attempt of an entry in one commit: each
        recipient's outcome (its attempt count goes up), the ``attempts`` log
        lines (domain, host, outcome), the ``warned`` mark, and the reports
        it causes (``follow_up``: stored or queued in the same commit).
        Returns True when the entry is finished (no recipient pending) and was
        removed with its log, or was deleted meanwhile."""

    @abc.abstractmethod
    async def queue_delete(self, queue_id: int) -> None:
        """Remove an entry without delivering or bouncing it (``mailyard queue
        delete``); NotFound if there is none."""

    @abc.abstractmethod
    async def queue_retry(self, queue_id: int | None = None) -> int:
        """Make the pending recipients of one entry (NotFound if there is
        none), or of every entry, due now; returns how many."""

    @abc.abstractmethod
    async def queue_entry(self, queue_id: int) -> QueueEntry | None:
        """One entry with its recipients and its attempt log."""

    @abc.abstractmethod
    async def queue_list(self) -> list[QueueEntry]:
        """Every entry with its recipients (no attempt log), oldest first."""

    @abc.abstractmethod
    async def queue_due(self, now: float, limit: int = 1000, *, exclude: Collection[int] = (),
                        skip_domains: Collection[str] = ()) -> list[QueueEntry]:
        """Entries with at least one pending recipient due at ``now`` (no
        attempt log), oldest first, at most ``limit``. Recipients that do not
        count: those in ``exclude`` (ids of recipients the caller holds
        already) and those at ``skip_domains`` (the caller has enough for
        those domains). An entry returned has all its recipients, and the
        caller takes every due one it does not hold, those at
        ``skip_domains`` too. A store that claims what it returns
        (PostgreSQL) keeps its claims on the ``exclude`` recipients, also
        when ``limit`` is 0."""

    @abc.abstractmethod
    async def queue_size(self) -> int:
        """How many entries the outbound queue holds."""

    @abc.abstractmethod
    async def queue_stats(self) -> QueueStats:
        """The queue's entry count, recipients per state and oldest entry,
        counted by the backend in one consistent read: a scrape of the
        metrics must not read every entry into the process (``queue_list``
        of 100,000 entries is most of a second)."""

    @abc.abstractmethod
    async def queue_next_due(self, after: float | None = None) -> float | None:
        """The earliest next attempt of any pending recipient (of those
        due after ``after``, when given); None when there is none."""

    @abc.abstractmethod
    async def queue_body(self, queue_id: int) -> bytes:
        """The exact bytes of an entry's message; NotFound if there is none."""

    # --- change notification ---------------------------------------------
    @abc.abstractmethod
    def add_listener(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call ``callback(mailbox_id)`` (on the event loop) after every committed
        change to a mailbox; returns a function that removes the listener.
        IMAP IDLE and the untagged updates of other sessions are built on this."""
