"""What the IMAP layer needs from the world outside it, as typing.Protocols.

The IMAP command semantics (handlers/, session.py) are answered against these
interfaces only, never against the store or a socket:

- `ImapBackend`: one authenticated account's mailboxes and messages, the
  narrow slice of the store IMAP uses (after pymap's session interface). The
  server's implementation is an adapter over store/api.py
  (net/imap_store.py); `memory.MemoryBackend` serves unit tests and fuzzing.
- `ImapLogin`: the login service (credential checks under the throttle,
  SASL exchanges, the clear-text password policy).
- `ImapIO`: the connection (flushing with back-pressure, waiting for more
  input, IDLE waits, STARTTLS); net/imap.py implements it over asyncio.

Backend calls are coroutines: a store may need to wait (a durable commit).
The IMAP layer awaits these interfaces and nothing else, so it stays
sans-I/O: it opens no socket, reads no clock (``ImapIO.now`` gives the time),
imports no store and no event loop. A backend whose reads return without
suspending (the SQLite store reads synchronously, the in-memory one always)
lets a whole FETCH run inside one ``send(None)`` of the command's coroutine,
which is what net/session_protocol.py's eager steps rely on: one read and one
write per command, no task switch.

The records are Protocols too, so the store's frozen dataclasses are used as
they are (no copy per message on FETCH 1:* of 100,000 messages).

Errors: a backend raises the exceptions below for the outcomes IMAP answers
in its own words (OVERQUOTA, ALREADYEXISTS, CANNOT); any exception of a type
in ``session.ImapConfig.failures`` (BackendError, and what the server's store
raises) is an operation refused, answered with NO and the exception's text
(LimitExceeded with the code LIMIT).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from ...message.threadkeys import SortKeys, ThreadKeys

_T = TypeVar("_T")


class BackendError(Exception):
    """An operation the backend refused; the text is fit to show a user."""


class Unavailable(BackendError):
    """The backend cannot be reached now; the client may try again later (UNAVAILABLE)."""


class NoSpace(BackendError):
    """The disk is full or a quota is reached; nothing was written (OVERQUOTA)."""


class OverQuota(NoSpace):
    """The write would take the account over its quota (RFC 9208); nothing was written."""


class LimitExceeded(BackendError):
    """The operation would pass a limit of the backend, e.g. the mailboxes
    an account or the keywords a mailbox may hold; nothing was written (RFC
    5530 3 LIMIT). ``full``: the mailbox can take no new keyword (RFC 9051
    7.1: no ``\\*`` in PERMANENTFLAGS)."""

    def __init__(self, text: str, full: bool = False) -> None:
        super().__init__(text)
        self.full = full


class PartlyStored(BackendError):
    """A flag change written in parts failed after some were applied:
    ``changed`` and ``failed`` say what was done, as ``store_flags``
    returns it; ``error`` is what failed (an exception IMAP answers, as
    from any other call)."""

    def __init__(self, changed: Sequence[MessageRecord], failed: Sequence[int], error: Exception) -> None:
        super().__init__(str(error))
        self.changed = changed
        self.failed = failed
        self.error = error


class MailboxExists(BackendError):
    """The mailbox to create (or rename to) exists already (ALREADYEXISTS)."""


class BadMailboxName(BackendError):
    """The backend does not accept this mailbox name (CANNOT)."""


class NoSuchMailbox(BackendError):
    """The named mailbox does not exist."""


class MailboxGone(NoSuchMailbox):
    """A mailbox the session holds is no longer good: deleted, or recreated
    with another UIDVALIDITY. Nothing was read or written."""

    def __init__(self, mailbox_id: int, text: str = "the mailbox no longer exists") -> None:
        super().__init__(text)
        self.mailbox_id = mailbox_id


FlagMode = Literal["add", "remove", "replace"]


class MailboxRecord(Protocol):
    """One mailbox (RFC 9051 2.3.1.1, RFC 7162 3.1)."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...  # "/"-separated, UTF-8; "INBOX" is special
    @property
    def uid_validity(self) -> int: ...
    @property
    def uid_next(self) -> int: ...
    @property
    def highest_modseq(self) -> int: ...
    @property
    def special_use(self) -> str | None: ...  # RFC 6154, e.g. "\\Sent"


class MessageRecord(Protocol):
    """Index data of one message (no bytes)."""

    @property
    def uid(self) -> int: ...
    @property
    def size(self) -> int: ...  # RFC822.SIZE
    @property
    def flags(self) -> frozenset[str]: ...
    @property
    def internal_date(self) -> float: ...  # seconds since the epoch, UTC
    @property
    def modseq(self) -> int: ...
    @property
    def save_date(self) -> float | None: ...  # RFC 8514; None: not kept (FETCH SAVEDATE NIL)


class SummaryRecord(Protocol):
    """What SELECT needs, from one snapshot (RFC 9051 6.3.2)."""

    @property
    def mailbox(self) -> MailboxRecord: ...
    @property
    def uids(self) -> Sequence[int]: ...  # ascending
    @property
    def keywords(self) -> frozenset[str]: ...  # flags in use that are not system flags
    @property
    def first_unseen(self) -> int | None: ...  # UID of the lowest message without \Seen
    @property
    def keywords_full(self) -> bool: ...  # no new keyword can be made (RFC 9051 7.1 PERMANENTFLAGS)


class ChangesRecord(Protocol):
    """What changed in a mailbox after a mod-sequence (RFC 7162)."""

    @property
    def highest_modseq(self) -> int: ...
    @property
    def changed(self) -> Sequence[MessageRecord]: ...
    @property
    def vanished(self) -> Sequence[int]: ...  # expunged UIDs


class StatusRecord(Protocol):
    """Counts for STATUS (RFC 9051 6.3.11)."""

    @property
    def messages(self) -> int: ...
    @property
    def unseen(self) -> int: ...
    @property
    def deleted(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def uid_next(self) -> int: ...
    @property
    def uid_validity(self) -> int: ...
    @property
    def highest_modseq(self) -> int: ...
    @property
    def deleted_size(self) -> int: ...  # octets of the \Deleted messages (RFC 9208 DELETED-STORAGE)
    @property
    def recent(self) -> int: ...  # messages no session claimed as \Recent yet (RFC 3501 6.3.10)


class QuotaRecord(Protocol):
    """The account's one quota root (RFC 9208 5): limits (None: none) and usage."""

    @property
    def storage_limit(self) -> int | None: ...  # octets
    @property
    def messages_limit(self) -> int | None: ...
    @property
    def storage_used(self) -> int: ...  # octets
    @property
    def messages_used(self) -> int: ...


@dataclass(frozen=True, slots=True)
class NewMessage:
    """One message of APPEND / MULTIAPPEND (RFC 3502)."""

    data: bytes
    flags: frozenset[str] = frozenset()
    internal_date: float | None = None  # None: the time of the write


@dataclass(slots=True)
class RecentClaim:
    """Asked of ``append_messages`` by a session with the mailbox selected
    read-write: claim the new messages' \\Recent (RFC 3501 2.3.2) in the
    APPEND's own write. Filled in only if claimed (no earlier message was
    unclaimed): ``first`` the last claimed UID before, ``last`` the highest
    new UID; else the session claims as usual when it announces them."""

    first: int | None = None
    last: int = 0


class ImapBackend(Protocol):
    """One logged-in account's mailboxes, as IMAP uses them.

    A mailbox is named by the record `get_mailbox` gave (its id and
    UIDVALIDITY); an implementation answers only for mailboxes of its own
    account and raises MailboxGone for a record that is no longer good. Derived data (``get_derived``) holds the
    keys named in ``fields``: ``envelope_imap``, ``bodystructure_imap`` and
    ``body_imap`` (IMAP syntax, computed once per message), ``parts``,
    ``messages`` and ``size`` (the part offsets of message/derived.py),
    ``headers`` (lower-case field name -> decoded values).
    """

    # --- mailboxes ---------------------------------------------------------
    async def get_mailbox(self, name: str) -> MailboxRecord | None:
        """By name; "INBOX" matches case-insensitively."""
        ...

    async def get_mailbox_by_id(self, mailbox_id: int) -> MailboxRecord | None: ...

    async def list_mailboxes(self) -> Sequence[MailboxRecord]: ...

    async def has_inferiors(self, name: str) -> bool:
        """Whether a mailbox lies below ``name`` (``name/...``), without
        listing every mailbox."""
        ...

    async def create_mailbox(self, name: str, special_use: str | None = None) -> None:
        """The mailbox and the superior names that are not mailboxes (RFC
        9051 6.3.4), all or none. Raises MailboxExists, BadMailboxName,
        LimitExceeded (the account has no room for them all: then none is
        made)."""
        ...

    async def rename_mailbox(self, old: str, new: str) -> None:
        """The mailbox and its inferiors (RFC 9051 6.3.6), the superior names
        of ``new`` that are not mailboxes made, all or nothing; renaming INBOX
        moves its messages. Raises MailboxExists, BadMailboxName,
        NoSuchMailbox, LimitExceeded."""
        ...

    async def delete_mailbox(self, name: str) -> None: ...

    async def set_subscribed(self, name: str, subscribed: bool) -> None:
        """The name need not exist (RFC 9051 6.3.7-8); raises BadMailboxName,
        LimitExceeded (the account has the most subscriptions allowed)."""
        ...

    async def list_subscriptions(self) -> Sequence[str]: ...

    async def mailbox_status(self, mailbox: MailboxRecord) -> StatusRecord: ...

    async def get_quota(self) -> QuotaRecord:
        """The account's limits and usage (RFC 9208 GETQUOTA), cheap to read."""
        ...

    async def claim_recent(self, mailbox: MailboxRecord, claim: bool = True, upto: int | None = None) -> int:
        """RFC 3501 2.3.2: the highest UID some session has claimed; with
        ``claim`` the UIDs up to ``upto`` (the highest the session announced;
        None: every present message) become claimed, atomically, so the
        caller's \\Recent share is exactly (returned value, upto]. Raises
        NoSpace when the claim cannot be written."""
        ...

    # --- messages ------------------------------------------------------------
    async def mailbox_summary(self, mailbox: MailboxRecord) -> SummaryRecord: ...

    async def list_messages(self, mailbox: MailboxRecord) -> Sequence[MessageRecord]:
        """Ascending UID order."""
        ...

    async def changes_since(self, mailbox: MailboxRecord, modseq: int) -> ChangesRecord: ...

    async def read_message(self, mailbox: MailboxRecord, uid: int) -> bytes | None:
        """The exact stored bytes; None if the message is gone. A message
        expunged while this session holds it (`hold_expunged`) is not gone."""
        ...

    async def expunged_messages(self, mailbox: MailboxRecord, uids: Sequence[int]) -> Sequence[MessageRecord]:
        """Index data of messages of ``uids`` expunged while this session
        holds them (`hold_expunged`), ascending UID order."""
        ...

    def hold_expunged(self, mailbox: MailboxRecord | None, seen_modseq: int = 0) -> None:
        """RFC 2180 4.1.1: this session has ``mailbox`` selected and has told
        its client of every expunge up to ``seen_modseq``; messages expunged
        after that stay readable for it (read_message, get_derived,
        expunged_messages) until it says it has announced them. None: it
        holds nothing. Answered from memory."""
        ...

    async def get_derived(
        self, mailbox: MailboxRecord, uids: Sequence[int], fields: Iterable[str]
    ) -> Mapping[int, Mapping[str, Any]]: ...

    async def store_flags(
        self, mailbox: MailboxRecord, uids: Sequence[int], flags: Iterable[str], mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> tuple[Sequence[MessageRecord], Sequence[int]]:
        """(messages whose flags changed, UIDs failing UNCHANGEDSINCE, RFC 7162 3.1.3).
        PartlyStored when it failed after a part was applied."""
        ...

    async def expunge(self, mailbox: MailboxRecord, uids: Sequence[int]) -> Sequence[int]:
        """The UIDs actually removed, ascending. The caller announces them at
        once (EXPUNGE, CLOSE, MOVE), so nothing is kept for it."""
        ...

    async def copy_messages(
        self, src: MailboxRecord, uids: Sequence[int], dst: MailboxRecord, move: bool = False
    ) -> Sequence[tuple[int, int]]:
        """(source UID, new UID) pairs (RFC 4315 COPYUID); raises NoSpace, and
        OverQuota for a copy (not a move) that would take the account over quota."""
        ...

    async def append_messages(self, mailbox: MailboxRecord, items: Sequence[NewMessage],
                              recent: RecentClaim | None = None) -> Sequence[int]:
        """All or none, durably (RFC 3502); the new UIDs in order; raises NoSpace
        (OverQuota when they would take the account over quota). ``recent``:
        see ``RecentClaim``."""
        ...

    async def encode_binary(self, data: bytes) -> bytes | None:
        """A message APPENDed in a literal8 with NUL octets, its parts holding
        NUL re-encoded as base64 (message.binary.encode_nul_parts, RFC 3516
        4.3); None if a NUL cannot be encoded away. Parsing a big message is
        CPU work: a real backend does it off the event loop."""
        ...

    async def search_headers(self, mailbox: MailboxRecord, field: str, text: str) -> set[int]:
        """UIDs with a header field ``field`` containing ``text`` (case-insensitive)."""
        ...

    async def search_text(self, mailbox: MailboxRecord, text: str, where: Literal["body", "text"]) -> set[int]:
        """UIDs whose body (or header and body) contains ``text``."""
        ...

    async def sent_dates(self, mailbox: MailboxRecord, uids: Sequence[int]) -> Mapping[int, dt.date | None]:
        """For each of ``uids`` present: the day SEARCH SENTBEFORE / SENTON /
        SENTSINCE compare (RFC 9051 6.4.4; message/dates.py ``sent_day`` of
        its Date fields), None without a readable Date. One call for a whole
        mailbox: a real backend reads it where the event loop is not held."""
        ...

    async def object_id_hits(self, mailbox: MailboxRecord, uids: Sequence[int],
                             wanted: Collection[tuple[str, str]]) -> Mapping[tuple[str, str], set[int]]:
        """For each (field, objectid) of ``wanted``, field "email_id" or
        "thread_id" (the EMAILID / THREADID ``get_derived`` gives): those of
        ``uids`` that have it (RFC 8474 6 SEARCH EMAILID / THREADID). One
        call for a whole mailbox: a real backend makes and compares the ids
        where the event loop is not held."""
        ...

    async def sort_order(self, mailbox: MailboxRecord, keys: Sequence[tuple[str, bool]],
                         uids: Sequence[int]) -> Sequence[int]:
        """Those of ``uids`` present in the order of the SORT ``keys`` ((name,
        reverse), the first most significant; sort.py SORT_KEYS), equal
        messages in UID order (RFC 5256 section 3): the store orders them
        without handing every message's keys to the session."""
        ...

    async def thread_keys(self, mailbox: MailboxRecord, uids: Sequence[int]) -> Mapping[int, ThreadKeys]:
        """THREAD's keys (RFC 5256 section 3; message/threadkeys.py
        ThreadKeys) for each of ``uids`` present, the sent date resolved."""
        ...

    async def sort_keys(self, mailbox: MailboxRecord, uids: Sequence[int]) -> Mapping[int, SortKeys]:
        """SORT and THREAD's keys (RFC 5256) for each of ``uids`` present:
        message/threadkeys.py ``sort_keys`` of the message's decoded header
        fields, from data derived once per message, without reading messages."""
        ...

    # --- validity (asked before every command; answered from memory, without
    # suspending, unless something was revoked since) -----------------------------
    async def account_current(self) -> bool:
        """Whether the account still exists under the credentials the session
        logged in with (not removed, password not changed)."""
        ...

    async def mailbox_current(self, mailbox: MailboxRecord) -> bool:
        """Whether the mailbox still exists with this id and UIDVALIDITY."""
        ...

    # --- change notification ---------------------------------------------------
    def watch(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call ``callback(mailbox_id)`` after every committed change to one
        of the account's mailboxes, by any session; returns the function that
        stops it. Untagged updates and IDLE are built on this."""
        ...


@dataclass(frozen=True, slots=True)
class SaslChallenge:
    """Send ``+ wire`` and read one more line (RFC 9051 6.2.2)."""

    wire: bytes


@dataclass(frozen=True, slots=True)
class LoginRefused:
    """A login that did not happen. ``kind``: "denied" (wrong credentials or
    unknown name, counted by the login service), "temporary" (over a login
    limit, whatever the credentials: try later), and for AUTHENTICATE
    "cancelled" (the client sent "*"), "malformed" (bad base64 or syntax) or
    "too-slow" (the login service's exchange deadline ended it after a right
    SCRAM proof, before the client's last message: try again)."""

    kind: Literal["denied", "temporary", "cancelled", "malformed", "too-slow"]


class SaslExchange(Protocol):
    def expiry(self) -> LoginRefused | None:
        """The refusal that ends the exchange once the login service's
        exchange deadline ended it while the client was to answer (settled
        by the login service: "denied", or "too-slow" for a SCRAM proof
        that was right), handed over once; None until then. The I/O side
        wakes the wait for the client's line (`ImapIO.wake`)."""
        ...

    async def step(self, response: bytes | None) -> SaslChallenge | LoginRefused | ImapBackend:
        """Feed the initial response (first call; None if the client sent
        none) or the client's next line; the next challenge, the refusal,
        or the logged-in account's backend."""
        ...


class ImapLogin(Protocol):
    """The login service as IMAP sees it."""

    # mechanism name -> whether it sends the password in the clear
    sasl_mechanisms: Mapping[str, bool]

    def plaintext_ok(self) -> bool:
        """May a password travel in the clear on this connection (RFC 9051 11.1)?"""
        ...

    async def login(self, user: str, password: str) -> ImapBackend | LoginRefused:
        """The account's backend, or why not (a failure is counted and logged)."""
        ...

    def sasl(self, mechanism: str) -> SaslExchange:
        """Start an exchange for one of ``sasl_mechanisms``."""
        ...

    def close(self) -> None:
        """The connection ended, or left an AUTHENTICATE exchange unfinished:
        an exchange in progress counts as a failed login."""
        ...


class ConnectionEnding(Exception):  # noqa: N818 (an outcome, not an error)
    """Raised by the I/O side inside a wait: end the session with ``* BYE``
    (server shutdown, command deadline, autologout)."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class ImapIO(Protocol):
    """The connection, as the IMAP layer needs it. Waits raise
    ConnectionEnding when the session must end with BYE."""

    @property
    def tls_active(self) -> bool: ...

    @property
    def can_start_tls(self) -> bool:
        """STARTTLS is configured (RFC 9051 6.2.1)."""
        ...

    async def flush(self) -> None:
        """Write what the engine has queued; wait while the client is behind."""
        ...

    async def pause(self) -> None:
        """Let the other connections be served before the command goes on
        (between the batches of a long FETCH): one turn of the event loop in
        the server, nothing in the test harness."""
        ...

    async def more_input(self) -> bool:
        """Wait for more of the current command's input (an AUTHENTICATE
        line) under the command deadline; False at the end of input (the
        engine's ``input_ended``) or once the connection is gone."""
        ...

    def revocation_mark(self) -> object:
        """What the I/O side watches for revocations, as it is now (the
        store's ``revocation_version``), read before each check of the
        session's references in IDLE and handed to `wait_idle`. None: no
        such signal; the session notices at its next command."""
        ...

    def idle_check(self, paced: bool = True) -> AbstractAsyncContextManager[bool]:
        """Held by the session while it checks its references in IDLE (read
        its `revocation_mark`, then ``ImapSession.references_current``):
        after a wait the I/O side's revocation watch ended, the checks of
        the sessions it woke take turns, a bounded number at a time, so
        that their database reads do not crowd out everything else.
        ``paced`` False: the check answers DONE, which takes no turn.

        Gives True to check now; False when input, a wake (`wake`) or the
        end of the connection came before a turn, or the connection is
        over: the session reads the engine's next event first, and its
        check after that takes no turn."""
        ...

    async def wait_idle(self, since: object, checked: bool = True) -> bool:
        """IDLE: wait until input arrives or `wake` is called; False at the
        end of input (the engine's ``input_ended``) or once the connection is
        gone. The autologout timer (RFC 9051 5.4) is the I/O side's.

        ``since`` is what `revocation_mark` gave before the session's last
        check (``ImapSession.references_current``). The wait ends at once
        if something may have been revoked since (a password changed, an
        account or a mailbox removed, in any process or node), and within
        seconds of a later revocation: the session then checks again.
        ``checked`` False: that check could not be answered (the store
        unavailable); the wait also ends within seconds, to ask again."""
        ...

    def wake(self) -> None:
        """End a pending `wait_idle`: the selected mailbox changed (the
        store's listener), or something may have been revoked (the I/O
        side's revocation watch). The session checks its references, then
        reports what changed."""
        ...

    async def begin_tls(self) -> None:
        """Run the TLS handshake after ``OK Begin TLS``; ConnectionError if it fails."""
        ...

    @property
    def compression_active(self) -> bool:
        """COMPRESS DEFLATE (RFC 4978) is on for this connection."""
        ...

    def begin_compress(self) -> None:
        """After the tagged OK of COMPRESS was flushed: from now on both
        directions are raw DEFLATE streams (RFC 4978 3, RFC 1951)."""
        ...

    def now(self) -> float:
        """Seconds since the epoch (SEARCH OLDER / YOUNGER, RFC 5032)."""
        ...

    async def compute(self, fn: Callable[[], _T]) -> _T:
        """``fn()``, CPU-heavy work of a command (the SORT or THREAD of a big
        mailbox), run where it does not hold up the other connections: a
        worker thread in the server, in place in the test harness."""
        ...

    def authenticated(self) -> None:
        """The client logged in (e.g. the longer autologout timer applies)."""
        ...

    def unauthenticated(self) -> None:
        """The client left the account with UNAUTHENTICATE (RFC 8437): what
        `authenticated` changed goes back to the not-authenticated setting."""
        ...
