"""Local delivery (the MDA): put one message into the INBOX of local accounts.

The body (with the Received header of this hop already prepended) is stored
once; each recipient's copy gets its own trace prefix: ``Return-Path`` (RFC
5321 4.4: added at final delivery) and ``Delivered-To`` (the address the
message was delivered for, which also lets loops through forwarding be seen).
All recipients get the message in one atomic, durable commit, or none does.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..message.trace import delivered_to_header, return_path_header
from ..store.api import Account, DeliveryTarget, NotFound, Store


async def deliver_local(
    store: Store,
    body: bytes,
    reverse_path: str,
    accounts: Sequence[Account],
) -> list[int]:
    """Deliver ``body`` to each account's INBOX; returns the UIDs in order."""
    targets: list[DeliveryTarget] = []
    return_path = return_path_header(reverse_path)
    seen: set[int] = set()
    for account in accounts:
        if account.id in seen:
            continue  # one copy per mailbox, however many addresses led to it
        seen.add(account.id)
        inbox = await store.get_mailbox(account.id, "INBOX")
        if inbox is None:
            raise NotFound(f"account {account.address} has no INBOX")
        prefix = return_path + delivered_to_header(account.address)
        targets.append(DeliveryTarget(inbox.id, prefix))
    return await store.deliver(body, targets)
