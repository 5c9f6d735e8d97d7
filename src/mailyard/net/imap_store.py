"""The IMAP backend over the store (protocols/imap/backend.py `ImapBackend`).

One `StoreBackend` per logged-in IMAP session, bound to its account. The
IMAP layer names a mailbox by name, or by the record `get_mailbox` gave it:
a store ``Mailbox``, which is the ``MailboxRef`` every store call checks
(owner and UIDVALIDITY, store/api.py), so it is passed through as it is.

Store exceptions become the backend's where IMAP answers them in its own
words: MailboxGone (the selected mailbox deleted: BYE), QuotaExceeded and
StorageFull (OVERQUOTA), TooManyMailboxes, TooManySubscriptions and
KeywordLimit (LIMIT), AlreadyExists (ALREADYEXISTS), InvalidName (CANNOT),
FlagsPartlyStored (a STORE applied in part: PartlyStored). Other
StoreErrors are answered NO with their text (session.ImapConfig.failures).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..message.binary import encode_nul_parts
from ..protocols.imap import backend as b
from ..protocols.imap.backend import NewMessage
from ..spam.learning import learn_kind
from ..store import api as store_api
from ..store.api import Account, AppendItem, Mailbox, Store

# (account, the mailbox the messages are in now, their UIDs there, "spam" or "ham")
Learn = Callable[[Account, Mailbox, Sequence[int], str], None]


def _own(exc: store_api.StoreError) -> Exception:
    """A store error of ``_checked``'s as IMAP's backend says it."""
    if isinstance(exc, store_api.MailboxGone):
        return b.MailboxGone(exc.mailbox_id, str(exc))
    if isinstance(exc, store_api.KeywordLimit):
        return b.LimitExceeded(str(exc), exc.full)
    if isinstance(exc, store_api.FlagsPartlyStored):
        return b.PartlyStored(exc.changed, exc.failed, _own(exc.error))
    return exc


def _checked(name: str, **fixed: Any) -> Callable[..., Awaitable[Any]]:
    """The store coroutine ``name`` (with the keyword arguments ``fixed``),
    with MailboxGone, KeywordLimit and FlagsPartlyStored reaching IMAP as
    the backend's own (a method of the class: nothing per session)."""

    async def call(self: StoreBackend, *args: Any, **kw: Any) -> Any:
        try:
            return await getattr(self.store, name)(*args, **kw, **fixed)
        except (store_api.MailboxGone, store_api.KeywordLimit, store_api.FlagsPartlyStored) as exc:
            raise _own(exc) from exc

    call.__name__ = call.__qualname__ = name
    return call


class StoreBackend:
    """An account's mailboxes in the store, as IMAP uses them."""

    __slots__ = ("account", "account_id", "learn", "store")

    def __init__(self, store: Store, account: Account, learn: Learn | None = None) -> None:
        self.store = store
        self.account = account.without_secrets()
        self.account_id = account.id
        # Teaches the spam filter from moves into and out of Junk (net/learning.py); None: off.
        self.learn = learn

    # calls on one mailbox's messages: the store's, taking the Mailbox record as it is
    mailbox_summary = _checked("mailbox_summary")
    list_messages = _checked("list_messages")
    changes_since = _checked("changes_since")
    # RFC 2180 4.1.1: what this session may still FETCH includes messages
    # expunged elsewhere that it has not announced yet (hold_expunged)
    get_derived = _checked("get_derived", expunged=True)
    mailbox_status = _checked("mailbox_status")
    search_headers = _checked("search_headers")
    search_text = _checked("search_text")
    sent_dates = _checked("sent_dates")
    object_id_hits = _checked("object_id_hits")
    sort_keys = _checked("sort_keys")
    sort_order = _checked("sort_order")
    thread_keys = _checked("thread_keys")
    store_flags = _checked("store_flags")

    async def expunge(self, mailbox: Mailbox, uids: Sequence[int]) -> list[int]:
        # this session announces its own expunge at once: nothing is kept for it
        try:
            return await self.store.expunge(mailbox, uids, holder=self)
        except store_api.MailboxGone as exc:
            raise b.MailboxGone(exc.mailbox_id, str(exc)) from exc

    # --- validity ------------------------------------------------------------------
    async def account_current(self) -> bool:
        return await self.store.credentials_current(self.account_id, self.account.epoch)

    async def mailbox_current(self, mailbox: Mailbox) -> bool:
        return await self.store.mailbox_current(mailbox)

    def hold_expunged(self, mailbox: Mailbox | None, seen_modseq: int = 0) -> None:
        self.store.hold_expunged(self, mailbox, seen_modseq)

    async def expunged_messages(self, mailbox: Mailbox, uids: Sequence[int]) -> list[store_api.MessageInfo]:
        try:
            return await self.store.get_messages(mailbox, uids, expunged=True)
        except store_api.MailboxGone as exc:
            raise b.MailboxGone(exc.mailbox_id, str(exc)) from exc

    # --- mailboxes -------------------------------------------------------------
    async def get_mailbox(self, name: str) -> Mailbox | None:
        return await self.store.get_mailbox(self.account_id, name)

    async def get_mailbox_by_id(self, mailbox_id: int) -> Mailbox | None:
        return await self.store.get_mailbox_by_id(self.account_id, mailbox_id)

    async def list_mailboxes(self) -> list[Mailbox]:
        return await self.store.list_mailboxes(self.account_id)

    async def has_inferiors(self, name: str) -> bool:
        return await self.store.has_inferiors(self.account_id, name)

    async def create_mailbox(self, name: str, special_use: str | None = None) -> None:
        try:
            await self.store.create_mailbox(self.account_id, name, special_use, superiors=True)
        except store_api.TooManyMailboxes as exc:
            raise b.LimitExceeded(str(exc)) from exc
        except store_api.AlreadyExists as exc:
            raise b.MailboxExists(str(exc)) from exc
        except store_api.InvalidName as exc:
            raise b.BadMailboxName(str(exc)) from exc

    async def rename_mailbox(self, old: str, new: str) -> None:
        try:
            await self.store.rename_mailbox(self.account_id, old, new, superiors=True)
        except store_api.TooManyMailboxes as exc:
            raise b.LimitExceeded(str(exc)) from exc
        except store_api.AlreadyExists as exc:
            raise b.MailboxExists(str(exc)) from exc
        except store_api.InvalidName as exc:
            raise b.BadMailboxName(str(exc)) from exc
        except store_api.NotFound as exc:
            raise b.NoSuchMailbox(str(exc)) from exc

    async def delete_mailbox(self, name: str) -> None:
        await self.store.delete_mailbox(self.account_id, name)

    async def set_subscribed(self, name: str, subscribed: bool) -> None:
        try:
            await self.store.set_subscribed(self.account_id, name, subscribed)
        except store_api.TooManySubscriptions as exc:
            raise b.LimitExceeded(str(exc)) from exc
        except store_api.InvalidName as exc:
            raise b.BadMailboxName(str(exc)) from exc

    async def list_subscriptions(self) -> list[str]:
        return await self.store.list_subscriptions(self.account_id)

    async def get_quota(self) -> store_api.Quota:
        return await self.store.get_quota(self.account_id)

    async def claim_recent(self, mailbox: Mailbox, claim: bool = True, upto: int | None = None) -> int:
        try:
            return await self.store.claim_recent(mailbox, claim=claim, upto=upto)
        except store_api.MailboxGone as exc:
            raise b.MailboxGone(exc.mailbox_id, str(exc)) from exc
        except store_api.StorageFull as exc:
            raise b.NoSpace(str(exc)) from exc

    # --- messages ------------------------------------------------------------------
    async def read_message(self, mailbox: Mailbox, uid: int) -> bytes | None:
        try:
            return await self.store.read_message(mailbox, uid, expunged=True)
        except store_api.MailboxGone as exc:
            raise b.MailboxGone(exc.mailbox_id, str(exc)) from exc
        except store_api.NotFound:
            return None  # expunged, and no longer held

    async def copy_messages(
        self, src: Mailbox, uids: Sequence[int], dst: Mailbox, move: bool = False
    ) -> list[tuple[int, int]]:
        try:
            copied = await self.store.copy_messages(src, uids, dst, move=move, holder=self)
        except store_api.MailboxGone as exc:
            raise b.MailboxGone(exc.mailbox_id, str(exc)) from exc
        except store_api.QuotaExceeded as exc:
            raise b.OverQuota(str(exc)) from exc
        except store_api.StorageFull as exc:
            raise b.NoSpace(str(exc)) from exc
        kind = learn_kind(src.special_use, dst.special_use) if self.learn is not None else None
        if kind is not None and copied and self.learn is not None:
            # queued: the tagged reply does not wait for the filter
            self.learn(self.account, dst, [new for _old, new in copied], kind)
        return copied

    async def append_messages(self, mailbox: Mailbox, items: Sequence[NewMessage],
                              recent: b.RecentClaim | None = None) -> list[int]:
        claim = None if recent is None else store_api.RecentClaim()
        try:
            uids = await self.store.append_many(
                mailbox, [AppendItem(m.data, m.flags, m.internal_date) for m in items], recent=claim)
            if recent is not None and claim is not None and claim.first is not None:
                recent.first, recent.last = claim.first, claim.last
            return uids
        except store_api.MailboxGone as exc:
            raise b.MailboxGone(exc.mailbox_id, str(exc)) from exc
        except store_api.KeywordLimit as exc:
            raise b.LimitExceeded(str(exc), exc.full) from exc
        except store_api.QuotaExceeded as exc:
            raise b.OverQuota(str(exc)) from exc
        except store_api.StorageFull as exc:
            raise b.NoSpace(str(exc)) from exc

    async def encode_binary(self, data: bytes) -> bytes | None:
        # a message with thousands of parts takes a good part of a second to
        # parse: off the event loop, so the other sessions are not held up
        return await asyncio.to_thread(encode_nul_parts, data)

    def watch(self, callback: Callable[[int], None]) -> Callable[[], None]:
        return self.store.add_listener(callback)
