"""The IMAP backend over the store (protocols/imap/backend.py `ImapBackend`).

One `StoreBackend` per logged-in IMAP session, bound to its account: the
IMAP layer names mailboxes by name or by the id `get_mailbox` gave it, and
this adapter adds the account. Store exceptions become the backend's where
IMAP answers them in its own words (OVERQUOTA, ALREADYEXISTS, CANNOT); other
StoreErrors are answered NO with their text (session.ImapConfig.failures).

The methods that FETCH calls per message (read_message, get_derived) are the
store's own where no translation is needed, so the adapter adds no
coroutine per message to the eager FETCH path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..protocols.imap.backend import (
    BadMailboxName,
    MailboxExists,
    NewMessage,
    NoSpace,
    NoSuchMailbox,
)
from ..store.api import (
    Account,
    AlreadyExists,
    AppendItem,
    InvalidName,
    Mailbox,
    NotFound,
    StorageFull,
    Store,
)


class StoreBackend:
    """An account's mailboxes in the store, as IMAP uses them."""

    def __init__(self, store: Store, account: Account) -> None:
        self.store = store
        self.account = account
        self.account_id = account.id
        # read paths without translation: the store's coroutines themselves
        self.get_mailbox_by_id = store.get_mailbox_by_id
        self.mailbox_summary = store.mailbox_summary
        self.list_messages = store.list_messages
        self.changes_since = store.changes_since
        self.get_derived = store.get_derived
        self.mailbox_status = store.mailbox_status
        self.search_headers = store.search_headers
        self.search_text = store.search_text
        self.store_flags = store.store_flags
        self.expunge = store.expunge

    # --- mailboxes -------------------------------------------------------------
    async def get_mailbox(self, name: str) -> Mailbox | None:
        return await self.store.get_mailbox(self.account_id, name)

    async def list_mailboxes(self) -> list[Mailbox]:
        return await self.store.list_mailboxes(self.account_id)

    async def create_mailbox(self, name: str, special_use: str | None = None) -> None:
        try:
            await self.store.create_mailbox(self.account_id, name, special_use)
        except AlreadyExists as exc:
            raise MailboxExists(str(exc)) from exc
        except InvalidName as exc:
            raise BadMailboxName(str(exc)) from exc

    async def rename_mailbox(self, old: str, new: str) -> None:
        try:
            await self.store.rename_mailbox(self.account_id, old, new)
        except AlreadyExists as exc:
            raise MailboxExists(str(exc)) from exc
        except InvalidName as exc:
            raise BadMailboxName(str(exc)) from exc
        except NotFound as exc:
            raise NoSuchMailbox(str(exc)) from exc

    async def delete_mailbox(self, name: str) -> None:
        await self.store.delete_mailbox(self.account_id, name)

    async def set_subscribed(self, name: str, subscribed: bool) -> None:
        try:
            await self.store.set_subscribed(self.account_id, name, subscribed)
        except InvalidName as exc:
            raise BadMailboxName(str(exc)) from exc

    async def list_subscriptions(self) -> list[str]:
        return await self.store.list_subscriptions(self.account_id)

    async def claim_recent(self, mailbox_id: int, claim: bool = True) -> int:
        try:
            return await self.store.claim_recent(mailbox_id, claim=claim)
        except StorageFull as exc:
            raise NoSpace(str(exc)) from exc

    # --- messages ------------------------------------------------------------------
    async def read_message(self, mailbox_id: int, uid: int) -> bytes | None:
        try:
            return await self.store.read_message(mailbox_id, uid)
        except NotFound:
            return None  # expunged by another session

    async def copy_messages(
        self, src_mailbox_id: int, uids: Sequence[int], dst_mailbox_id: int, move: bool = False
    ) -> list[tuple[int, int]]:
        try:
            return await self.store.copy_messages(src_mailbox_id, uids, dst_mailbox_id, move=move)
        except StorageFull as exc:
            raise NoSpace(str(exc)) from exc

    async def append_messages(self, mailbox_id: int, items: Sequence[NewMessage]) -> list[int]:
        try:
            return await self.store.append_many(
                mailbox_id, [AppendItem(m.data, m.flags, m.internal_date) for m in items])
        except StorageFull as exc:
            raise NoSpace(str(exc)) from exc

    def watch(self, callback: Callable[[int], None]) -> Callable[[], None]:
        return self.store.add_listener(callback)

