"""Accepting a message: the one path every way in uses (the MX port, the
submission ports 587 / 465, and webmail).

``accept_message`` takes a message whose recipients are resolved already
and makes it durable: the local copies and the outbound queue entry in one
commit. For a message an authenticated user submits, it first applies the
submission policy (RFC 6409), so that whichever way a user sends, the same
rules apply:

- the user may only send as addresses they own (RFC 6409 4.3 and 8 let the
  MSA enforce the sender): the reverse-path and the From / Sender (and
  Resent-From / Resent-Sender) header addresses, by ``SenderRule`` in
  policy/submission.py; a refusal raises ``SenderNotAllowed`` carrying the
  policy's verdict, which the SMTP glue answers with ``550 5.7.1`` and
  webmail shows as a form error, with the same reason;
- a missing Date or Message-ID is added (RFC 6409 8.2 and 8.3);
- the Received field names the authenticated user (RFC 3848 ``with
  ESMTPSA``/``ESMTPA`` and an ``(Authenticated sender: ...)`` comment, as
  Postfix writes it).

Both take an ``Intake``: the store, router, queue and configuration they
use (the server's ``Services`` object, mailyard/services.py, is one).

Quotas (RFC 9208, ``mailyard user quota``): each local account is checked
in the delivery's own commit. An account the message would take over its
quota is left out and the rest still get the message (``Accepted.over_quota``
names who was left out; the caller reports them: ``report_over_quota``
sends the sender a DSN, RFC 3464, status 5.2.2 "mailbox full", RFC 3463).
When every recipient is left out nothing is stored and ``QuotaExceeded``
is raised (SMTP answers ``452 4.2.2``: the sender's server tries again).

``submit_message`` is webmail's entry: it resolves the recipients through the
router (all before anything is delivered: a submission goes to all its
recipients or to none) and then calls ``accept_message``. Bcc is never
disclosed (RFC 5322 3.6.3): the caller passes the bytes to send
(``to_bytes(msg, strip_bcc=True)``) and the recipients separately.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from .. import logs, metrics
from ..message.address import iter_mailboxes, parse_address_list
from ..message.correspondents import header_mailboxes
from ..message.headers import split_fields
from ..message.parse import split_header_body
from ..message.trace import received_header
from ..policy.submission import AddressOwners, SenderRefused, SenderRule, complete_message
from ..sieve import Envelope, Notify, SieveMessage, SpamVerdict
from ..sieve.notify import build_notification
from ..sieve.notify import decide as notify_decide
from ..sieve.vacation import build_reply, decide
from ..spam.limits import account_limits
from ..store.api import (
    Account,
    NewRecipient,
    QueueEntry,
    QueueRecipient,
    QuotaExceeded,
)
from .bounce import ReportedRecipient, make_dsn, wants_report
from .local import deliver_local, junk_mailbox_id, note_received, note_sent
from .router import Router, Verdict

if TYPE_CHECKING:
    from ..config import Config
    from ..store.api import Store
    from .queue import OutboundQueue
    from .sieve import Plan, SieveDelivery


class Intake(Protocol):
    """What accepting a message uses."""

    @property
    def config(self) -> Config: ...

    @property
    def store(self) -> Store: ...

    @property
    def router(self) -> Router: ...

    @property
    def queue(self) -> OutboundQueue | None: ...

    @property
    def sieve(self) -> SieveDelivery | None: ...

    # The accounts' submission limits (spam/limits.py ``SendLimiter.check``,
    # shared by the workers): ``await send_limits(address, recipients,
    # per_hour, per_day)`` counts a message or says why it is over. None: no
    # limits.
    @property
    def send_limits(self) -> Callable[[str, int, int, int], Awaitable[str | None]] | None: ...


class SubmissionRefused(Exception):
    """The message cannot be accepted; the text is fit to show the user."""

    def __init__(self, message: str, recipients: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.recipients = list(recipients)


class SenderNotAllowed(SubmissionRefused):
    """The submission policy refused a sender address (``verdict`` says which and why)."""

    def __init__(self, verdict: SenderRefused) -> None:
        super().__init__(verdict.reason, [verdict.address])
        self.verdict = verdict


class SieveRejected(SubmissionRefused):
    """The only recipient's Sieve script ``ereject``ed the message (RFC 5429
    2.1): refused in the protocol (SMTP 550 5.7.1) before anything is stored."""


class SubmissionLimited(SubmissionRefused):
    """The account is over its messages per hour or recipients per day
    (spam/limits.py): refused for now (SMTP 451 4.7.1), nothing stored."""


class RemoteUnavailable(SubmissionRefused):
    """Remote recipients, but this server runs no outbound queue."""


log = logging.getLogger("mailyard.submit")

# A message's id in logs and its Received field: random per process, then a
# counter, so ids from different processes and runs do not collide.
_MSGID_PREFIX = os.urandom(4).hex()
_msgid_counter = itertools.count(1)


def new_msgid() -> str:
    """A fresh message id (16 hex digits) for the logs and the Received field."""
    return f"{_MSGID_PREFIX}{next(_msgid_counter):08x}"


@dataclass(frozen=True, slots=True)
class Trace:
    """What the Received field of this hop records (RFC 5321 4.4)."""

    protocol: str  # the "with" keyword (message/trace.py with_protocol)
    helo: str | None = None
    ip: str | None = None
    id: str | None = None
    for_addr: str | None = None  # only for single-recipient transactions
    tls_info: str | None = None


@dataclass
class Accepted:
    data: bytes  # the message as accepted, Date/Message-ID completed (no trace)
    queue_id: int | None = None
    # local accounts left out: the message would have taken them over quota
    over_quota: list[Account] = field(default_factory=list)


@dataclass
class SubmitResult:
    data: bytes  # the message as submitted, with Date/Message-ID completed (no trace)
    local: list[str] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)
    queue_id: int | None = None


async def sender_rule(intake: Intake, account: Account) -> SenderRule:
    """The account's sender ownership rule, with the router expanding aliases
    and the store's grants (``mailyard user allow-from``)."""
    router = intake.router

    async def expand(address: str) -> AddressOwners | None:
        resolution = await router.resolve(address)
        if resolution.verdict is Verdict.REMOTE:
            return None
        if resolution.verdict is not Verdict.LOCAL:
            return AddressOwners(frozenset(), elsewhere=True)
        return AddressOwners(
            frozenset(a.id for a in resolution.accounts),
            # an unknown local part caught by a catch-all is nobody's own address
            elsewhere=bool(resolution.remote or resolution.dead or resolution.via_catch_all),
        )

    return SenderRule(account, expand, await intake.store.allowed_senders(account.id))


async def accept_message(
    intake: Intake,
    data: bytes,
    reverse_path: str,
    accounts: Sequence[Account],
    remote: Sequence[str | NewRecipient],
    *,
    trace: Trace,
    account: Account | None = None,
    envid: str | None = None,
    ret: str | None = None,
    smtputf8: bool = False,
    junk: bool = False,
    forwarded: Sequence[str | NewRecipient] = (),
    envelope_to: Mapping[int, str] | None = None,
    refuse_in_protocol: bool = False,
    junk_accounts: Collection[int] = (),
    fields: Mapping[int, bytes] | None = None,
    spam: Mapping[int, SpamVerdict] | None = None,
) -> Accepted:
    """Accept ``data`` for the local ``accounts`` and the ``remote`` recipients.

    ``account`` is the authenticated submitter (None on the MX port): then
    the submission policy applies first (see module doc). Raises
    ``SenderNotAllowed`` or ``RemoteUnavailable`` without storing anything,
    ``StorageFull`` (store/api.py) when the disk is full, ``QuotaExceeded``
    when every recipient is a local account the message would take over its
    quota. Returns when the message is durable (DESIGN.md "Durability").
    ``junk``: the local copies go to each account's Junk folder, not the
    INBOX (a DMARC quarantine, RFC 7489 6.3). ``forwarded``: remote
    addresses a local alias or list sends the message on to; they are
    queued apart from ``remote`` (their entry has its own, SRS-rewritten,
    reverse-path and the copy an ARC seal: ``OutboundQueue.enqueue``).

    An account with an active Sieve script (delivery/sieve.py) gets the
    copies its script chose; ``envelope_to`` names the address each account
    was reached by (the RCPT, with its ``+tag``: Sieve's envelope "to"),
    by default the account's own. Redirects, rejects and vacation replies
    go out once the delivery is durable (``_after_sieve``). With
    ``refuse_in_protocol`` (SMTP), an ``ereject`` by the script of the only
    recipient raises ``SieveRejected`` and nothing is stored (RFC 5429 2.1).

    ``junk_accounts``: these accounts' copies go to their Junk folder (the
    spam verdict, spam/filing.py), past their Sieve script; ``fields``:
    header fields of one account's copy only (its X-Spam-* verdict);
    ``spam``: the same verdict for each account's Sieve ``spamtest`` (RFC
    5235), which reads nothing else (an account without one: not tested).
    """
    auth_user = None
    if account is not None:
        rule = await sender_rule(intake, account)
        verdict = await rule.check_header(data) or await rule.check_reverse_path(reverse_path)
        if verdict is not None:
            raise SenderNotAllowed(verdict)
        await _within_limits(intake, account, len(accounts) + len(remote) + len(forwarded))
        # RFC 6409 8.2, 8.3: complete a missing Message-ID and Date.
        data, _added = complete_message(data, intake.config.server.hostname)
        auth_user = account.address
    queue = intake.queue
    if (remote or forwarded) and queue is None:
        elsewhere = list(remote) + list(forwarded)
        raise RemoteUnavailable(
            "sending to other domains is not available (no outbound queue): "
            + ", ".join(r.address if isinstance(r, NewRecipient) else r for r in elsewhere),
            [r.address if isinstance(r, NewRecipient) else r for r in elsewhere],
        )
    # the local copies travel with the first queue entry, in its commit, and
    # the copies an alias or list forwards beside remote recipients with it
    # too, as a second entry (its own SRS reverse-path and ARC seal)
    first, first_forwarded = (remote, False) if remote else (forwarded, True)
    also_forwarded = forwarded if remote else ()
    received = received_header(
        by=intake.config.server.hostname, helo=trace.helo, ip=trace.ip, protocol=trace.protocol,
        id=trace.id, for_addr=trace.for_addr, tls_info=trace.tls_info, auth_user=auth_user,
        ts=time.time(),
    )
    inbox_id: Callable[[int], Awaitable[int | None]] = intake.router.directory.inbox_id
    if junk:
        inbox_id = functools.partial(junk_mailbox_id, intake.store)
    elif junk_accounts:
        inbox_id = _junk_for(intake, frozenset(junk_accounts), inbox_id)
    started = time.monotonic()
    queue_id = None
    over_quota: list[Account] = []
    wanted = list(accounts)
    plans: dict[int, Plan] = {}
    if intake.sieve is not None and not junk:
        filtered = [a for a in wanted if a.id not in junk_accounts]
        plans = await _sieve_plans(intake, intake.sieve, received + data, reverse_path, filtered, inbox_id,
                                   envelope_to or {}, spam or {})
    if refuse_in_protocol and len({a.id for a in wanted}) == 1 and not first:
        plan = plans.get(wanted[0].id)
        if plan is not None and plan.reject is not None and plan.reject.extended:
            raise SieveRejected(" ".join(plan.reject.reason.split())[:300] or "rejected")
    # RFC 5293: a copy whose script edited the header is stored on its own, as edited
    edited = [a for a in wanted if a.id in plans and plans[a.id].message is not None]
    if edited:
        wanted = [a for a in wanted if a not in edited]
    placements = {aid: plan.targets for aid, plan in plans.items()} or None
    while True:
        if accounts and not wanted and not first and not edited:
            raise QuotaExceeded("mailbox full: " + ", ".join(a.address for a in over_quota))
        try:
            if first:
                assert queue is not None
                # Local copies and the queue entry in one durable commit (Store.queue_submit).
                queue_id = await queue.enqueue(
                    received + data, reverse_path, first, accounts=wanted, inbox_id=inbox_id,
                    enforce_quota=True, placements=placements, fields=fields, envid=envid, ret=ret,
                    smtputf8=smtputf8,
                    msgid=trace.id, forwarded=first_forwarded, forwarded_to=also_forwarded,
                )
            elif wanted:
                await deliver_local(intake.store, received + data, reverse_path, wanted, inbox_id=inbox_id,
                                    enforce_quota=True, placements=placements, fields=fields)
            break
        except QuotaExceeded as exc:
            # RFC 9208 5: these accounts are left out; the others still get it
            refused = [a for a in wanted
                       if (await inbox_id(a.id) in exc.mailbox_ids if a.id not in plans
                           else any(box in exc.mailbox_ids for box, _ in plans[a.id].targets))]
            if not refused:
                raise
            over_quota += refused
            wanted = [a for a in wanted if a not in refused]
    committed = bool(first) or bool(wanted)
    for owner in list(edited):
        plan = plans[owner.id]
        assert plan.message is not None
        try:
            await deliver_local(intake.store, plan.message, reverse_path, [owner], inbox_id=inbox_id,
                                enforce_quota=True, placements={owner.id: plan.targets}, fields=fields)
        except QuotaExceeded:
            # nothing stored: a later failure is still one before any commit
            edited.remove(owner)
            over_quota.append(owner)
        except Exception as exc:
            # Others have their copy already: raising now would make the
            # sender retry and deliver it to them twice. The unedited
            # message goes to the INBOX instead (RFC 5228 2.10.6: a script
            # that fails keeps the message), and the log says why.
            if not committed:
                raise
            edited.remove(owner)
            if not await _keep_unedited(intake, owner, received + data, reverse_path, fields, exc):
                continue
            wanted.append(owner)
            plans.pop(owner.id, None)
        else:
            committed = True
    if accounts and not wanted and not edited and not first and over_quota:
        raise QuotaExceeded("mailbox full: " + ", ".join(a.address for a in over_quota))
    wanted += edited
    # the address book's suggestions (store note_correspondents), counted
    # apart from the acceptance: its reply does not wait for them
    # (mail filed as junk is no correspondence: its senders are not counted)
    correspondents = [] if junk else [a.id for a in wanted if a.id not in junk_accounts]
    if correspondents:
        note_received(intake.store, data, correspondents)
    if account is not None:
        _note_sent(intake.store, account, data)
    if wanted:
        metrics.count_delivery("local", "delivered", len(wanted))
        metrics.observe_delivery("local", time.monotonic() - started)
    # over quota after acceptance: the sender gets a DSN
    metrics.count_delivery("local", "bounced", len(over_quota))
    for owner in wanted:
        plan = plans.pop(owner.id, None)
        if plan is not None:
            await _after_sieve(intake, owner, plan, received + data, reverse_path,
                               (envelope_to or {}).get(owner.id, owner.address))
    return Accepted(data, queue_id, over_quota)


async def _keep_unedited(intake: Intake, account: Account, message: bytes, reverse_path: str,
                         fields: Mapping[int, bytes] | None, why: Exception) -> bool:
    """The unedited ``message`` into ``account``'s INBOX, when storing the
    copy its script edited failed after the delivery's commit; whether it
    was stored (a failure is logged, never raised: see the caller)."""
    logs.event(log, logging.WARNING, "sieve_edited_copy_failed", user=account.address, reason=repr(why)[:300])
    try:
        await deliver_local(intake.store, message, reverse_path, [account],
                            inbox_id=intake.router.directory.inbox_id, fields=fields)
    except Exception:  # noqa: BLE001 - the others' copies are committed; this one is logged
        log.exception("the unedited copy for %s could not be stored either", account.address)
        return False
    return True


def _junk_for(intake: Intake, junk: frozenset[int],
              inbox_id: Callable[[int], Awaitable[int | None]]) -> Callable[[int], Awaitable[int | None]]:
    """``inbox_id`` with the Junk folder for the accounts in ``junk``."""

    async def lookup(account_id: int) -> int | None:
        if account_id in junk:
            return await junk_mailbox_id(intake.store, account_id)
        return await inbox_id(account_id)

    return lookup


async def _within_limits(intake: Intake, account: Account, recipients: int) -> None:
    """Count a submission of ``account`` against its limits, or raise
    ``SubmissionLimited`` (one warning in the log and a counter) when it is
    over: both ways a user sends (SMTP submission and webmail) meet here."""
    check = intake.send_limits
    if check is None:
        return
    spam = intake.config.spam
    settings = await intake.store.get_settings(account.id)
    per_hour, per_day = account_limits(settings, spam.messages_per_hour, spam.recipients_per_day)
    if per_hour <= 0 and per_day <= 0:
        return  # no limit (spam/limits.py: 0 is none), so nothing to count
    reason = await check(account.address, recipients, per_hour, per_day)
    if reason is not None:
        logs.event(log, logging.WARNING, "submission_limited", user=account.address, recipients=recipients,
                   reason=reason)
        metrics.count_abuse("submission", "submission-limit")
        raise SubmissionLimited(reason)


def _delivered_to(message: bytes, address: str) -> bool:
    """Whether ``message`` already carries ``Delivered-To: address`` (it
    passed through this account before: a forwarding loop)."""
    header, _body = split_header_body(message)
    want = address.lower()
    return any(name.lower() == "delivered-to" and value.decode("utf-8", "replace").strip().lower() == want
               for name, value in split_fields(header))


async def _sieve_plans(intake: Intake, sieve: SieveDelivery, message: bytes, reverse_path: str,
                       accounts: Sequence[Account], inbox_id: Callable[[int], Awaitable[int | None]],
                       envelope_to: Mapping[int, str], spam: Mapping[int, SpamVerdict]) -> dict[int, Plan]:
    """Each account's Sieve plan (accounts without an active script: none);
    ``spam`` the verdict each account's ``spamtest`` sees. The scripts share
    one ``SieveMessage``: a body test's MIME parse is done once per message."""
    plans: dict[int, Plan] = {}
    shared = SieveMessage(message)
    for account in accounts:
        if account.id in plans:
            continue
        box = await inbox_id(account.id)
        if box is None:
            continue
        envelope = Envelope(reverse_path, envelope_to.get(account.id, account.address), spam.get(account.id))
        plan = await sieve.plan(account, shared, envelope, box)
        if plan is None:
            continue
        if plan.redirects and _delivered_to(message, account.address):
            # This account redirected the message before: a loop (two
            # accounts redirecting to each other). Keep it here instead.
            logs.event(log, logging.WARNING, "sieve_redirect_loop", user=account.address,
                       to=plan.redirects)
            plan.redirects = []
            if all(t[0] != box for t in plan.targets):
                plan.targets.append((box, frozenset()))
        plans[account.id] = plan
    return plans


async def _after_sieve(intake: Intake, account: Account, plan: Plan, message: bytes, reverse_path: str,
                       rcpt: str) -> None:
    """The actions that send mail, once the delivery is durable: each
    failure is logged, the message itself is already where the script put it."""
    sieve = intake.sieve
    if sieve is not None:
        try:
            # RFC 7352 3: recorded once the message is delivered
            await sieve.record_duplicates(account, plan.duplicates)
        except Exception:  # noqa: BLE001 - the actions below go all the same
            log.exception("sieve: recording duplicates for %s failed", account.address)
    try:
        for address in plan.redirects:
            await _redirect(intake, account, plan.message or message, reverse_path, address)
        for note in plan.notifications[: sieve.limits.max_notifications if sieve is not None else 0]:
            await _notify(intake, account, note, message, reverse_path, rcpt)
        if plan.reject is not None:
            await report_rejected(intake, message, reverse_path, rcpt, plan.reject.reason)
        if plan.vacation is not None:
            await _vacation(intake, account, plan, message, reverse_path, rcpt)
    except Exception:  # noqa: BLE001 - the message is delivered; a reply that fails must not undo it
        log.exception("sieve actions for %s failed", account.address)


async def _redirect(intake: Intake, account: Account, message: bytes, reverse_path: str, address: str) -> None:
    """RFC 5228 4.2: the message, unchanged but for a ``Delivered-To`` of
    this account (which stops loops), to ``address`` with the original
    envelope sender."""
    resolution = await intake.router.resolve(address)
    if resolution.verdict not in (Verdict.LOCAL, Verdict.REMOTE):
        logs.event(log, logging.WARNING, "sieve_redirect_failed", user=account.address, to=address,
                   reason=resolution.verdict.value)
        return
    body = b"Delivered-To: " + account.address.encode() + b"\r\n" + message
    local = resolution.accounts if resolution.verdict is Verdict.LOCAL else []
    remote = list(resolution.remote)
    envelope = {a.id: resolution.address for a in local}
    await accept_message(intake, body, reverse_path, local, remote,
                         trace=Trace(protocol="local", id=new_msgid()), envelope_to=envelope)
    logs.event(log, logging.INFO, "sieve_redirected", user=account.address, to=address)


async def _notify(intake: Intake, account: Account, action: Notify, message: bytes, reverse_path: str,
                  rcpt: str) -> None:
    """RFC 5435 / RFC 5436: a notification by mail, through the same
    acceptance path as a redirect (local copies, or the outbound queue),
    from the null reverse-path so that nothing answers it (RFC 3834 3.3).

    The user writes this message, so the submission policy's rules hold:
    its From is ``:from`` only when the account may send as that address
    (``SenderRule``), else the account's (RFC 5436 2.3 lets the
    implementation override ``:from``), and it counts against the
    account's sending limits; over them it is skipped, the delivery stands."""
    why_not = notify_decide(message)
    if why_not is not None:
        logs.event(log, logging.INFO, "notify_skipped", user=account.address, reason=why_not)
        return
    rule = await sender_rule(intake, account)
    own = await _own_from(rule, action.from_, rcpt)
    if action.from_ is not None and own != action.from_:
        logs.event(log, logging.WARNING, "notify_from_refused", user=account.address, from_=action.from_[:200])
    try:
        recipients, note = build_notification(message, replace(action, from_=own),
                                              account.address, intake.config.server.hostname)
    except ValueError as exc:
        logs.event(log, logging.WARNING, "notify_failed", user=account.address, reason=str(exc)[:200])
        return
    local: list[Account] = []
    remote: list[str | NewRecipient] = []
    for address in recipients:
        resolution = await intake.router.resolve(address)
        if resolution.verdict is Verdict.LOCAL:
            local += [a for a in resolution.accounts if a not in local]
        elif resolution.verdict is Verdict.REMOTE:
            remote += list(resolution.remote)
    if not local and not remote:
        logs.event(log, logging.WARNING, "notify_failed", user=account.address, reason="no deliverable recipient")
        return
    if remote and intake.queue is None:
        remote = []
        if not local:
            return
    try:
        await _within_limits(intake, account, len(local) + len(remote))
    except SubmissionLimited as exc:
        logs.event(log, logging.WARNING, "notify_skipped", user=account.address, reason=str(exc)[:200])
        return
    await accept_message(intake, note, "", local, remote, trace=Trace(protocol="local", id=new_msgid()))
    logs.event(log, logging.INFO, "notify_sent", user=account.address, to=",".join(recipients)[:200])


async def _own_from(rule: SenderRule, wanted: str | None, rcpt: str) -> str:
    """The From of a message a script sends for the rule's account: ``wanted``
    (a ``:from``, RFC 5322 address list syntax) when the submission policy
    would pass it as the From of a message the account submits (every
    address one the account may send as, all of them readable), else
    ``rcpt`` (the address the message reached it by) when the account owns
    that, else the account's own address."""
    if wanted is not None and wanted.strip() and not any(c in wanted for c in "\r\n"):
        if await rule.check_header(b"From: " + wanted.encode("utf-8") + b"\r\n\r\n") is None:
            return wanted
    if rcpt and await rule.owns(rcpt):
        return rcpt
    return rule.account.address


async def _vacation(intake: Intake, account: Account, plan: Plan, message: bytes, reverse_path: str,
                    rcpt: str) -> None:
    """RFC 5230: a reply unless vacation.py's rules or the record of replies say no."""
    sieve = intake.sieve
    action = plan.vacation
    assert sieve is not None and action is not None
    own = [account.address, rcpt, *action.addresses]
    why_not = decide(message, reverse_path, own)
    if why_not is None and not await asyncio.to_thread(sieve.vacations.due, account.id, action.handle, reverse_path):
        why_not = "replied to this sender within the period (RFC 5230 4.2)"
    if why_not is not None:
        logs.event(log, logging.INFO, "vacation_skipped", user=account.address, to=reverse_path[:200],
                   reason=why_not)
        return
    # RFC 5230 4.3: the server may restrict ":from", a value that fails is
    # ignored: only an address the account may send as (``SenderRule``, the
    # rule of a submission), else the account's own
    own_from = await _own_from(await sender_rule(intake, account), action.from_, rcpt)
    if action.from_ is not None and own_from != action.from_:
        logs.event(log, logging.WARNING, "vacation_from_refused", user=account.address, from_=action.from_[:200])
    reply = build_reply(message, replace(action, from_=own_from), reverse_path, account.address,
                        intake.config.server.hostname)
    resolution = await intake.router.resolve(reverse_path)
    local = resolution.accounts if resolution.verdict is Verdict.LOCAL else []
    remote = list(resolution.remote) if resolution.verdict in (Verdict.LOCAL, Verdict.REMOTE) else []
    if not local and not remote:
        return
    # RFC 3834 3.3: the reply's reverse-path is null, so nothing answers it
    await accept_message(intake, reply, "", local, remote, trace=Trace(protocol="local", id=new_msgid()))
    # RFC 5230 4.2: the sender gets no other reply within the period (a file, synced: in a thread)
    await asyncio.to_thread(sieve.vacations.record, account.id, action.handle, reverse_path, action.seconds)
    logs.event(log, logging.INFO, "vacation_sent", user=account.address, to=reverse_path[:200])


async def report_rejected(intake: Intake, original: bytes, reverse_path: str, rcpt: str, reason: str) -> bool:
    """A Sieve ``reject`` (RFC 5429 2.1): the sender gets a DSN saying the
    recipient refused the message, with the script's reason."""
    text = " ".join(reason.split())[:300] or "rejected"
    return await report_over_quota(intake, original, reverse_path, [(rcpt, None)],
                                   status="5.7.1", diagnostic=f"550 5.7.1 {text}")


async def report_over_quota(
    intake: Intake,
    original: bytes,
    reverse_path: str,
    refused: Sequence[tuple[str, NewRecipient | None]],
    *,
    envid: str | None = None,
    ret: str | None = None,
    status: str = "5.2.2",
    diagnostic: str = "552 5.2.2 Mailbox full",
) -> bool:
    """Tell the sender (a DSN, RFC 3464) that ``refused`` (address, and the
    recipient's RFC 3461 NOTIFY / ORCPT when known) did not get ``original``
    because their mailbox is full (RFC 3463 5.2.2), after the message was
    accepted for others. Nothing for the null reverse-path (RFC 5321 4.5.5)
    or recipients whose NOTIFY leaves failures out. Whether one was sent."""
    hostname = intake.config.server.hostname
    recipients = [
        QueueRecipient(0, address, address.rpartition("@")[2], p.notify if p else None, p.orcpt if p else None)
        for address, p in refused
    ]
    entry = QueueEntry(0, reverse_path, envid, ret, False, False, len(original), time.time(), False, recipients)
    # RFC 3461 4.1: only recipients whose NOTIFY asks for failures
    reported = [ReportedRecipient(r, "failed", status, diagnostic)
                for r in recipients if wants_report(r, "failed")]
    if not reverse_path or not reported:
        return False
    domain = reverse_path.rpartition("@")[2]
    if not await intake.store.is_local_domain(domain):
        domains = await intake.store.list_domains()
        domain = domains[0] if domains else hostname
    dsn = await make_dsn(reporting_mta=hostname, entry=entry, original=original, reported=reported,
                         postmaster_domain=domain)
    resolution = await intake.router.resolve(reverse_path)
    local = resolution.accounts if resolution.verdict is Verdict.LOCAL else []
    remote = resolution.remote if resolution.verdict is Verdict.LOCAL else (
        [resolution.address] if resolution.verdict is Verdict.REMOTE else [])
    if remote and intake.queue is not None:
        await intake.queue.enqueue(dsn, "", remote, accounts=local, inbox_id=intake.router.directory.inbox_id)
    elif local:
        await deliver_local(intake.store, dsn, "", local, inbox_id=intake.router.directory.inbox_id)
    else:
        return False
    return True


def _header_addresses(fields: list[tuple[str, bytes]], name: str) -> list[str]:
    out: list[str] = []
    for fname, value in fields:
        if fname.lower() == name:
            text = value.decode("utf-8", "replace")
            out.extend(m.addr_spec for m in iter_mailboxes(parse_address_list(text)))
    return out


def _note_sent(store: Store, account: Account, data: bytes) -> None:
    """Count the people a message the account submitted is addressed to
    (its To and Cc fields, RFC 5322 3.6.3, with their display names) as
    written to. Its envelope is not used: it holds what aliases and lists
    expanded to, not what the user wrote."""
    own = account.address.casefold()
    note_sent(store, account.id, [(n, a) for n, a in header_mailboxes(data, ("to", "cc")) if a.casefold() != own])


async def submit_message(
    intake: Intake,
    account: Account,
    data: bytes,
    recipients: Sequence[str],
    *,
    reverse_path: str | None = None,
    client_ip: str = "127.0.0.1",
    protocol: str = "ESMTPSA",
    helo: str | None = None,
    service: str = "web",
) -> SubmitResult:
    """Check and deliver a message submitted by ``account`` (see module doc).

    ``data`` is the message as it will be sent (Bcc already stripped);
    ``recipients`` the forward-paths (To + Cc + Bcc); ``reverse_path`` by
    default the first From address. Raises ``SubmissionRefused`` without
    delivering anything when a check fails.

    Once ``accept_message`` returned, the message is accepted: what
    follows (the log line, the over-quota report) logs its failures and
    never raises, so that an exception from here is never one after a
    returned acceptance. It does not prove that nothing was accepted: a
    ``StoreError`` (``StoreUnavailable``) may come from a commit the store
    applied but could not confirm (the PostgreSQL store sends COMMIT with
    the statements, store/postgresql/core.py), and a copy a recipient's
    Sieve script edited is stored after the others' commit. A caller must
    not submit the message again on its own (web/undo.py leaves it in
    Drafts and says it may have gone).
    """
    if not recipients:
        raise SubmissionRefused("the message has no recipients")
    limits = intake.config.smtp
    max_rcpt = limits.max_recipients
    if len(recipients) > max_rcpt:
        raise SubmissionRefused(f"too many recipients (at most {max_rcpt})")
    if len(data) > limits.max_message_size:
        raise SubmissionRefused(f"the message is too large (at most {limits.max_message_size} octets)")
    if reverse_path is None:
        header, _body = split_header_body(data)
        senders = _header_addresses(split_fields(header), "from")
        reverse_path = senders[0] if senders else account.address

    # Resolve every recipient before delivering to any.
    accounts: list[Account] = []
    local: list[str] = []
    remote: list[str] = []
    bad: list[str] = []
    for rcpt in recipients:
        resolution = await intake.router.resolve(rcpt)
        if resolution.verdict is Verdict.LOCAL:
            accounts.extend(resolution.accounts)
            remote.extend(resolution.remote)
            local.append(rcpt)
        elif resolution.verdict is Verdict.REMOTE:
            remote.extend(resolution.remote)
        else:
            bad.append(rcpt)
    if bad:
        raise SubmissionRefused(f"no such recipient: {', '.join(bad)}", bad)

    hostname = intake.config.server.hostname
    msgid = new_msgid()
    try:
        accepted = await accept_message(
            intake, data, reverse_path, accounts, remote, account=account,
            trace=Trace(protocol=protocol, helo=helo or hostname, ip=client_ip, id=msgid),
        )
    except QuotaExceeded as exc:
        raise SubmissionRefused(f"the recipient's mailbox is full ({exc})", local) from exc
    # accepted: a failure from here on is logged, never raised (the caller
    # would take the message for not sent, and the user send it again)
    try:
        # The same line an SMTP submission logs (net/smtp.py).
        logs.event(log, logging.INFO, "accepted", proto=service, ip=client_ip, user=account.address, msgid=msgid,
                   size=len(accepted.data), delivered=len(accounts) - len(accepted.over_quota), queued=len(remote),
                   **{"from": reverse_path, "to": list(recipients)})
        metrics.count_message(service, "accepted")
    except Exception:
        log.exception("submission %s of %s: accepted, but its log line failed", msgid, account.address)
    if accepted.over_quota:
        try:
            await report_over_quota(intake, accepted.data, reverse_path,
                                    [(a.address, None) for a in accepted.over_quota])
        except Exception:
            log.exception("submission %s of %s: the mailbox-full report could not be stored", msgid,
                          account.address)
    return SubmitResult(accepted.data, local, remote, accepted.queue_id)
