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

from collections.abc import Awaitable, Callable, Mapping, Sequence

from ..message.trace import delivered_to_header, return_path_header
from ..store.api import Account, DeliveryTarget, NotFound, Store

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
    """Deliver ``body`` to each account's INBOX; returns the UIDs in order.

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
            continue  # one copy per mailbox, however many addresses led to it
        seen.add(account.id)
        own = fields.get(account.id, b"") if fields else b""
        if placements is not None and account.id in placements:
            prefix = return_path + delivered_to_header(account.address) + own
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
        prefix = return_path + delivered_to_header(account.address) + own
        targets.append(DeliveryTarget(mailbox_id, prefix, enforce_quota=enforce_quota))
    return await store.deliver(body, targets)
