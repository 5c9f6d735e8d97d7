"""Entering the outbound queue (delivery/queue.py ``OutboundQueue.enqueue``)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mailyard.config import DeliveryConfig, StoreConfig
from mailyard.delivery.queue import OutboundQueue, queue_name
from mailyard.mailauth.srs import SRS
from mailyard.net.tls import client_context
from mailyard.store.api import QuotaExceeded, StoreUnavailable
from mailyard.store.sqlite import SQLiteStore


async def test_nothing_after_the_commit_fails_the_enqueue_and_the_log_names_the_entry(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The entry is committed: nothing after it may reach the caller (the
    # SMTP glue would answer 451 and the client send the message again), and
    # the "queued" line names the entry as the queue's later lines do
    # (``queue_name`` of its stored creation time). A read of the entry
    # after the commit (here slow, then failing) must not be needed.
    caplog.set_level(logging.INFO, logger="mailyard")
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    queue = OutboundQueue(store, None, DeliveryConfig(), "mx.example.test",  # type: ignore[arg-type]
                          client_tls=client_context)
    queue_entry = store.queue_entry

    async def unavailable(*args: Any, **kw: Any) -> Any:
        await asyncio.sleep(0.01)
        raise StoreUnavailable("the mail store is unavailable, try again later")

    try:
        store.queue_entry = unavailable  # type: ignore[method-assign]
        queue_id = await queue.enqueue(b"From: a@example.test\r\n\r\nhi\r\n", "a@example.test", ["b@remote.test"])
        store.queue_entry = queue_entry  # type: ignore[method-assign]
        assert queue_id is not None
        entry = await store.queue_entry(queue_id)
        assert entry is not None and [r.address for r in entry.recipients] == ["b@remote.test"]
        (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("queued ")]
        assert f"queue_id={queue_name(queue_id, entry.created)}" in line, line
    finally:
        await store.close()


class _Directory:
    async def is_local_domain(self, domain: str) -> bool:
        return domain == "example.test"


async def test_forwarded_copies_beside_named_recipients_are_their_own_entry_in_the_same_commit(
        tmp_path: Path) -> None:
    # A message from another domain for a remote recipient (a trusted relay
    # client), a local account and an alias forwarding elsewhere: the named
    # recipient's entry keeps the sender, the forwarded one has an SRS
    # reverse-path and an ARC seal, the local copy is stored; a quota
    # refusal leaves none of them.
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    await store.add_domain("example.test")
    bob = await store.add_account("bob@example.test", "!locked")

    def signer(body: bytes, reverse_path: str) -> bytes:
        return b"DKIM-Signature: s=" + reverse_path.encode() + b"\r\n" + body

    def sealer(body: bytes) -> bytes:
        return b"ARC-Seal: i=1\r\n"

    queue = OutboundQueue(store, SimpleNamespace(directory=_Directory()), DeliveryConfig(),  # type: ignore[arg-type]
                          "mx.example.test", client_tls=client_context, signer=signer, sealer=sealer,
                          srs=SRS(b"secret"), srs_domain="example.test")
    body = b"From: x@far.test\r\n\r\nhi\r\n"
    try:
        await store.set_quota("bob@example.test", storage=10)
        with pytest.raises(QuotaExceeded):
            await queue.enqueue(body, "x@far.test", ["r@remote.test"], accounts=[bob], enforce_quota=True,
                                forwarded_to=["f@else.test"])
        assert await store.queue_list() == []
        await store.set_quota("bob@example.test", storage=None)
        queue_id = await queue.enqueue(body, "x@far.test", ["r@remote.test"], accounts=[bob], enforce_quota=True,
                                       forwarded_to=["f@else.test"])
        entries = {e.id: e for e in await store.queue_list()}
        assert queue_id in entries and len(entries) == 2
        named = entries.pop(queue_id)
        (forwarded,) = entries.values()
        assert named.reverse_path == "x@far.test" and [r.address for r in named.recipients] == ["r@remote.test"]
        assert forwarded.reverse_path.startswith("SRS0=") and forwarded.reverse_path.endswith("@example.test")
        assert [r.address for r in forwarded.recipients] == ["f@else.test"]
        assert await store.queue_body(named.id) == b"DKIM-Signature: s=x@far.test\r\n" + body
        assert await store.queue_body(forwarded.id) == (
            b"ARC-Seal: i=1\r\nDKIM-Signature: s=" + forwarded.reverse_path.encode() + b"\r\n" + body)
        inbox = await store.get_mailbox(bob.id, "INBOX")
        assert inbox is not None and len(await store.list_messages(inbox)) == 1
    finally:
        await store.close()
