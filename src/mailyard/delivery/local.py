"""Local delivery (the MDA): put one message into the INBOX of local accounts.

The body (with the Received header of this hop already prepended) is stored
once; each recipient's copy gets its own trace prefix: ``Return-Path`` (RFC
5321 4.4: added at final delivery) and ``Delivered-To`` (the address the
message was delivered for, which also lets loops through forwarding be seen).
All recipients get the message in one atomic, durable commit, or none does.
With ``enforce_quota`` an account the message would take over its quota
(RFC 9208) makes the store refuse the whole commit with ``QuotaExceeded``
naming its INBOX; the caller (delivery/submit.py) drops it and tries again.

``junk_mailbox_id`` finds (or makes) an account's Junk folder, the mailbox
with the RFC 6154 ``\\Junk`` attribute: mail a sender's DMARC policy asks to
quarantine (RFC 7489 6.3 p=quarantine) is filed there instead of the INBOX.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from ..message.correspondents import header_mailboxes
from ..message.trace import delivered_to_header, return_path_header
from ..store.api import Account, DeliveryTarget, NotFound, Store

log = logging.getLogger("mailyard.delivery")

JUNK = "Junk"


async def junk_mailbox_id(store: Store, account_id: int) -> int | None:
    """The id of the account's ``\\Junk`` mailbox (RFC 6154 2), created as
    ``Junk`` when it has none."""
    for box in await store.list_mailboxes(account_id):
        if box.special_use and "\\junk" in box.special_use.lower():
            return box.id
    box = await store.get_mailbox(account_id, JUNK)
    if box is None:
        try:
            box = await store.create_mailbox(account_id, JUNK, special_use="\\Junk", subscribe=True)
        except Exception:  # noqa: BLE001 - made meanwhile by another delivery
            box = await store.get_mailbox(account_id, JUNK)
    return box.id if box is not None else None


async def local_targets(
    store: Store,
    reverse_path: str,
    accounts: Sequence[Account],
    inbox_id: Callable[[int], Awaitable[int | None]] | None = None,
    *,
    enforce_quota: bool = False,
    placements: Mapping[int, Sequence[tuple[int, frozenset[str]]]] | None = None,
    fields: Mapping[int, bytes] | None = None,
) -> list[DeliveryTarget]:
    """The store targets of a local delivery: each account's INBOX once (one
    copy per mailbox, however many addresses led to it), behind its own
    Return-Path and Delivered-To fields (RFC 5321 4.4).

    ``inbox_id`` looks up an account's INBOX (the router's directory cache
    passes its cached lookup); by default the store is asked. ``placements``
    overrides the INBOX for the accounts it names: the mailboxes (and IMAP
    flags) their Sieve script chose, none when it discarded the message.
    ``fields``: header fields for one account's copy only, after its trace
    fields (its spam verdict: X-Spam-Status with its own threshold)."""
    targets: list[DeliveryTarget] = []
    return_path = return_path_header(reverse_path)
    seen: set[int] = set()
    for account in accounts:
        if account.id in seen:
            continue
        seen.add(account.id)
        own = fields.get(account.id, b"") if fields else b""
        prefix = return_path + delivered_to_header(account.address) + own
        if placements is not None and account.id in placements:
            targets.extend(DeliveryTarget(box, prefix, flags, enforce_quota=enforce_quota)
                           for box, flags in placements[account.id])
            continue
        if inbox_id is not None:
            mailbox_id = await inbox_id(account.id)
        else:
            inbox = await store.get_mailbox(account.id, "INBOX")
            mailbox_id = inbox.id if inbox is not None else None
        if mailbox_id is None:
            raise NotFound(f"account {account.address} has no INBOX")
        targets.append(DeliveryTarget(mailbox_id, prefix, enforce_quota=enforce_quota))
    return targets


async def deliver_local(
    store: Store,
    body: bytes,
    reverse_path: str,
    accounts: Sequence[Account],
    inbox_id: Callable[[int], Awaitable[int | None]] | None = None,
    *,
    enforce_quota: bool = False,
    placements: Mapping[int, Sequence[tuple[int, frozenset[str]]]] | None = None,
    fields: Mapping[int, bytes] | None = None,
) -> list[int]:
    """Deliver ``body`` to the accounts (see ``local_targets``); returns the
    UIDs in order."""
    targets = await local_targets(store, reverse_path, accounts, inbox_id, enforce_quota=enforce_quota,
                                  placements=placements, fields=fields)
    return await store.deliver(body, targets)


class _Tally:
    """The address book's counts waiting for one store, coalesced: while one
    write runs, the messages delivered meanwhile gather, and the next write
    counts them all, one per account and direction. A lone message is
    written at once; under load the writes do not grow with the messages."""

    def __init__(self, store: Store) -> None:
        # held weakly: ``_tallies`` maps the store to this weakly, which a
        # strong reference here would make a strong one for good
        self.store = weakref.ref(store)
        self.pending: dict[tuple[int, bool], list[tuple[str, str]]] = {}
        self.task: asyncio.Task | None = None

    def add(self, account_ids: Iterable[int], people: Sequence[tuple[str, str]], sent: bool) -> None:
        named: dict[str, tuple[str, str]] = {}
        for name, address in people:  # one message counts an address once, by its last given name
            key = address.casefold()
            if name or key not in named:
                named[key] = (name, address)
        once = list(named.values())
        for account_id in account_ids:
            self.pending.setdefault((account_id, sent), []).extend(once)
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, {}
                store = self.store()
                if store is None:
                    return
                for (account_id, sent), people in batch.items():
                    try:
                        await store.note_correspondents(account_id, people, sent=sent)
                    except Exception as exc:  # noqa: BLE001 - a count is not worth failing anything for (e.g. store closing)
                        log.info("correspondents of account %d not counted: %s", account_id, exc)
        finally:
            if self.task is asyncio.current_task():
                self.task = None


_tallies: weakref.WeakKeyDictionary[Store, _Tally] = weakref.WeakKeyDictionary()


def _tally(store: Store) -> _Tally:
    tally = _tallies.get(store)
    if tally is None:
        tally = _tallies[store] = _Tally(store)
    return tally


def note_received(store: Store, body: bytes, account_ids: Iterable[int]) -> None:
    """Count the message's From addresses as received by each account (the
    address book's suggestions), after the delivery and apart from it: its
    reply does not wait for this commit, and a failure here never fails it."""
    senders = header_mailboxes(body, ("from",))
    if senders:
        _tally(store).add(account_ids, senders, sent=False)


def note_sent(store: Store, account_id: int, people: list[tuple[str, str]]) -> None:
    """Count the recipients of a message the account submitted, in the background."""
    if people:
        _tally(store).add([account_id], people, sent=True)
