"""Teaching rspamd from users' Junk moves (spam/learning.py builds the
requests), off the path of the command that moved the messages.

``Learner.submit`` is called by the IMAP backend (net/imap_store.py) and the
webmail's move action once the move is committed; it only puts a job on a
bounded queue and returns, so the IMAP reply never waits for rspamd. One
task per process takes the jobs: it reads each message back from the store,
posts it to the controller, and for ``ham`` puts the sender on the user's
allow list (account setting ``spam_allow``). A full queue drops the job
and a failed request is logged (rspamd down must not hurt mail).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .. import logs
from ..spam.learning import HAM, Controller, read_reply, request_bytes, sender_of
from ..store.api import Account, Mailbox, NotFound, Store

log = logging.getLogger("mailyard.learning")

QUEUE_SIZE = 256  # jobs waiting at most; more are dropped (and logged)
MAX_PER_JOB = 100  # messages of one move that are learned
REQUEST_TIMEOUT = 30.0  # seconds one learn request may take
MAX_REPLY = 64 * 1024
MAX_ALLOW = 1000  # entries of the allow list kept (what the webmail reads: web/prefs.py MAX_LIST)


@dataclass(frozen=True)
class _Job:
    account: Account
    mailbox: Mailbox
    uids: tuple[int, ...]
    kind: str


class Learner:
    def __init__(self, store: Store, controller: Controller) -> None:
        self.store = store
        self.controller = controller
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self.learned = 0  # messages rspamd took (tests and figures)
        self.failed = 0

    def submit(self, account: Account, mailbox: Mailbox, uids: Sequence[int], kind: str) -> None:
        """Teach the messages ``uids`` of ``mailbox`` (where they are now) as ``kind``; returns at once."""
        if not uids:
            return
        if self._queue is None:
            self._queue = asyncio.Queue(QUEUE_SIZE)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mailyard-learning")
        try:
            self._queue.put_nowait(_Job(account, mailbox, tuple(uids[:MAX_PER_JOB]), kind))
        except asyncio.QueueFull:
            logs.event(log, logging.WARNING, "learn_dropped", user=account.address, kind=kind, count=len(uids),
                       reason="the learning queue is full")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def idle(self) -> None:
        """Wait until every job submitted so far is done (tests)."""
        if self._queue is not None:
            await self._queue.join()

    async def _run(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            job = await queue.get()
            try:
                await self._learn(job)
            except Exception:
                log.exception("learning from %s's move failed", job.account.address)
            finally:
                queue.task_done()

    async def _learn(self, job: _Job) -> None:
        senders: list[str] = []
        for uid in job.uids:
            try:
                message = await self.store.read_message(job.mailbox, uid)
            except NotFound:
                continue  # moved on or expunged since
            ok, said = await self._post(job.kind, message)
            if ok:
                self.learned += 1
            else:
                self.failed += 1
            logs.event(log, logging.INFO if ok else logging.WARNING, "learned" if ok else "learn_failed",
                       user=job.account.address, kind=job.kind, uid=uid, rspamd=said)
            if job.kind == HAM:
                sender = sender_of(message)
                if sender is not None:
                    senders.append(sender)
        if senders:
            await self._allow(job.account, senders)

    async def _allow(self, account: Account, senders: list[str]) -> None:
        """"Not spam": the senders go on the user's allow list, merged in one
        store write (a settings page saved meanwhile loses nothing), the
        oldest entries dropped past MAX_ALLOW."""
        await self.store.update_setting_list(account.id, "spam_allow", senders, MAX_ALLOW)
        logs.event(log, logging.INFO, "spam_allow_added", user=account.address, senders=senders)

    async def _post(self, kind: str, message: bytes) -> tuple[bool, str]:
        c = self.controller
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                reader, writer = await asyncio.open_connection(c.host, c.port)
                try:
                    writer.write(request_bytes(c, kind, message))
                    await writer.drain()
                    data = await reader.read(MAX_REPLY)
                    while chunk := await reader.read(MAX_REPLY):
                        if len(data) < MAX_REPLY:
                            data += chunk
                finally:
                    writer.close()
        except (OSError, TimeoutError) as exc:
            return False, f"controller unreachable: {exc}"
        return read_reply(data)
