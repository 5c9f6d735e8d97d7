"""Copying one store into another (``mailyard store copy``): an SQLite data
directory into PostgreSQL when an installation grows to several nodes, and
PostgreSQL into an SQLite data directory for a backup. Only the Store API is
used, so any backend may be either side.

What is copied: domains and domain aliases; accounts with their password
hash, APOP secret, SCRAM keys, quota limits, settings, sender grants and
contacts; aliases; lists with their members; mailboxes with their names,
UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, special use and the subscriptions;
messages with their UIDs, flags and keywords, INTERNALDATE, MODSEQ and save
date, so IMAP clients keep their caches (RFC 9051 2.3.1.1, RFC 7162 3.1);
the outbound queue's pending recipients. Not copied: the recipient
suggestions learnt from past mail (they are learnt again), the queue's
attempt log, a password's epoch (a session of the old store does not carry
over anyway).

Resumable: everything but messages is added only where missing, and the
messages of a mailbox go in batches of one commit each, above the highest
UID the target mailbox holds (its high-water mark), so a copy interrupted at
any point and run again continues where it stopped and never stores a
message twice. The source should not change meanwhile (stop the servers, or
copy again with them stopped to take the last changes: the mail that arrived
in between is above the mark).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .api import (
    PENDING,
    AlreadyExists,
    Contact,
    NewQueueEntry,
    NewRecipient,
    RestoredMessage,
    Store,
)

BATCH_MESSAGES = 200
BATCH_OCTETS = 8 * 1024 * 1024


@dataclass
class CopyCounts:
    accounts: int = 0
    mailboxes: int = 0
    messages: int = 0  # copied by this run
    octets: int = 0
    already: int = 0  # messages found in the target from an earlier run
    queued: int = 0  # queue entries copied by this run


# (messages, octets) copied: progress reporting (transfer/progress.py's Progress.advance)
Advance = Callable[[int, int], None]


async def copy_store(src: Store, dst: Store, advance: Advance | None = None,
                     add_total: Callable[[int], None] | None = None) -> CopyCounts:
    """Copy ``src`` into ``dst`` (see the module docstring)."""
    counts = CopyCounts()
    await _copy_directory(src, dst)
    for account in await src.list_accounts():
        target = await _copy_account(src, dst, account.id, account.address)
        counts.accounts += 1
        for box in await src.list_mailboxes(account.id):
            copy = await dst.restore_mailbox(target, box.name, box.uid_validity, box.uid_next, box.highest_modseq,
                                             box.special_use)
            counts.mailboxes += 1
            have = await dst.list_messages(copy)
            mark = have[-1].uid if have else 0
            infos = await src.list_messages(box)
            todo = [m for m in infos if m.uid > mark]
            counts.already += len(infos) - len(todo)
            if add_total is not None:
                add_total(len(todo))
            start = 0
            while start < len(todo):
                end, octets = start, 0
                while end < len(todo) and end - start < BATCH_MESSAGES and (octets < BATCH_OCTETS or end == start):
                    octets += todo[end].size
                    end += 1
                chunk = todo[start:end]
                start = end
                info = {m.uid: m for m in chunk}
                items = [RestoredMessage(uid, data, info[uid].flags, info[uid].internal_date, info[uid].modseq,
                                         info[uid].save_date or info[uid].internal_date)
                         for uid, data in await src.read_messages(box, [m.uid for m in chunk])]
                await dst.restore_messages(copy, items)
                size = sum(len(i.data) for i in items)
                counts.messages += len(items)
                counts.octets += size
                if advance is not None:
                    advance(len(items), size)
            # \\Recent (RFC 3501 2.3.2): claimed up to where the source's sessions claimed
            await dst.claim_recent(copy, claim=True, upto=await src.claim_recent(box, claim=False))
        wanted = set(await src.list_subscriptions(account.id))
        present = set(await dst.list_subscriptions(target))
        for name in wanted - present:
            await dst.set_subscribed(target, name, True)
        for name in present - wanted:
            await dst.set_subscribed(target, name, False)
    counts.queued = await _copy_queue(src, dst)
    return counts


async def _copy_directory(src: Store, dst: Store) -> None:
    """Domains, domain aliases, aliases and lists: each added where missing."""
    domain_aliases = await src.list_domain_aliases()
    for name in await src.list_domains():
        if name not in domain_aliases and not await dst.is_local_domain(name):
            await dst.add_domain(name)
    present = await dst.list_domain_aliases()
    for alias, target in domain_aliases.items():
        if present.get(alias) != target:
            await dst.add_domain_alias(alias, target)
    present_aliases = await dst.list_aliases()
    for source, targets in (await src.list_aliases()).items():
        missing = [t for t in targets if t not in present_aliases.get(source, [])]
        if missing:
            await dst.add_alias(source, missing)
    present_lists = await dst.list_lists()
    for address, members in (await src.list_lists()).items():
        if address not in present_lists:
            try:
                await dst.add_list(address)
            except AlreadyExists:
                pass
        for member in members:
            if member not in present_lists.get(address, []):
                try:
                    await dst.subscribe_list(address, member)
                except AlreadyExists:
                    pass


async def _copy_account(src: Store, dst: Store, account_id: int, address: str) -> int:
    """The account in ``dst`` (created, or brought to the source's
    credentials), with its quota, settings, sender grants and contacts;
    returns its id there."""
    source = await src.get_account_by_id(account_id)
    assert source is not None
    target = await dst.get_account(address)
    if target is None:
        target = await dst.add_account(address, source.password_hash, source.apop_secret, source.scram_sha256)
    elif (target.password_hash, target.apop_secret, target.scram_sha256) != (
            source.password_hash, source.apop_secret, source.scram_sha256):
        await dst.set_password(address, source.password_hash, source.apop_secret, source.scram_sha256)
    quota = await src.get_quota(account_id)
    await dst.set_quota(address, storage=quota.storage_limit, messages=quota.messages_limit)
    settings = await src.get_settings(account_id)
    if settings:
        await dst.set_settings(target.id, settings)
    grants = await src.allowed_senders(account_id)
    if grants:
        await dst.allow_senders(address, grants)
    have = {c.uid for c in await dst.list_contacts(target.id)}
    for contact in await src.list_contacts(account_id):
        if contact.uid not in have:
            await dst.add_contact(target.id, Contact(contact.name, contact.emails, contact.phones, contact.org,
                                                     contact.note, contact.uid))
    return target.id


async def _copy_queue(src: Store, dst: Store) -> int:
    """The queue's entries with pending recipients, each once: an entry the
    target holds already (same sender, envelope id, size and pending
    recipients) is not queued again. Each keeps its time of arrival, which
    its queue id, its lifetime and its delay warning count from."""

    def key(reverse_path: str, envid: str | None, size: int, addresses: list[str]) -> tuple:
        return reverse_path, envid, size, tuple(sorted(addresses))

    present = Counter(key(e.reverse_path, e.envid, e.size, [r.address for r in e.recipients if r.state == PENDING])
                      for e in await dst.queue_list())
    copied = 0
    for entry in await src.queue_list():
        pending = [r for r in entry.recipients if r.state == PENDING]
        if not pending:
            continue
        k = key(entry.reverse_path, entry.envid, entry.size, [r.address for r in pending])
        if present[k] > 0:
            present[k] -= 1
            continue
        body = await src.queue_body(entry.id)
        await dst.queue_submit(body, NewQueueEntry(
            entry.reverse_path, [NewRecipient(r.address, r.notify, r.orcpt) for r in pending], entry.envid,
            entry.ret, entry.smtputf8, entry.eight_bit, next_attempt=min(r.next_attempt for r in pending),
            created=entry.created))
        copied += 1
    return copied

