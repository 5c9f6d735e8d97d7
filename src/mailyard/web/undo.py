"""Undo send: a message sent from webmail waits ``send_delay`` seconds (the
user's setting, 0-30; default 0: sent at once) before it goes to the
submission path, and an Undo button on the page shown meanwhile takes it
back into the editor.

Durability: while it waits, the message is a draft in the user's Drafts
folder (the store's own durable commit), and a record of the pending send
(``DATA/web-outbox/<token>.json``: account, mailbox, UIDVALIDITY and UID of
the draft, recipients, due time, the messages it answers or forwards) is
written to disk (fsynced) before the page answers. A server that stops
during the delay finds the record at its next start (``resume``) and sends
the message then, late rather than never. The send and the undo each claim
the record first by renaming it (atomic on one file system), so exactly one
of them wins, also between the worker processes of a multi-process server.

When its time comes, the send goes in phases, and what a store out of
reach (``StoreUnavailable``, its database down) does depends on the phase:

- reading the account, Drafts and the draft: nothing is sent yet. The
  record goes back (``.json``, due again in RETRY_AFTER seconds) and the
  send is tried again then, or by ``resume`` at the next start: late
  rather than never. The first such failure of a send is a warning in the
  log, the tries after it informational lines. While the store is out of
  reach the pages answer 503, the Undo button's too (the session is read
  from the store); once it answers again, Undo takes the record back as
  any other. A server that stops while the draft is read (its timers are
  cancelled before the store closes) leaves the record the same way. A
  record that cannot be put back leaves ``<token>.failed`` (below): not
  sent.
- the submission (``submit_message``): it is never tried again. A store
  error from it does not prove that nothing was accepted (a commit may be
  applied while its answer is lost, delivery/submit.py), so a second try
  could deliver the message twice: it leaves ``<token>.failed`` saying it
  may not have gone, and the draft stays in Drafts for the user to check.
- after the submission returned, the message is sent: a store out of
  reach while the copy is kept in Sent, the draft removed and the original
  flagged leaves the rest of those steps undone (the draft may stay in
  Drafts), says so in one warning line, and never submits it again
  (``file_sent``, which a message sent at once goes through too, its page
  naming what was left undone).

The send holds an exclusive ``flock`` on its claimed record (taken on
``<token>.json`` before the rename, which keeps the inode and so the lock)
for as long as it works on it, so a ``.sending`` no process holds is left
over: a send under way when the server stopped. ``resume`` takes such a
record only when it can take its lock at once, so the live sends of
another server started on the same data directory are left alone; it is not tried again
(at most once, never twice) and becomes ``<token>.failed`` saying it may
have gone, its draft in Drafts for the user to check. A send refused when
its time came (a recipient's mailbox full, a limit reached, its draft gone
from Drafts), or that failed on an error of the server, leaves
``<token>.failed`` with the reason (and whether it may have gone), which the
pending page shows, with a link to the draft while there is one. A send
that went but left a step undone (``file_sent``) leaves ``<token>.sent``
naming it, for the page's "Message sent". Such records older than
FAILED_KEPT seconds are removed at the next start.

Before the wait, the recipients are resolved and the sender rule checked,
so a mistake is shown on the form at once, not after the delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import logs, metrics
from ..delivery.router import Verdict
from ..delivery.submit import SenderNotAllowed, SubmissionRefused, sender_rule, submit_message
from ..fsutil import write_atomic
from ..message.compose import without_bcc
from ..store.api import NotFound, QuotaExceeded, StoreError, StoreUnavailable
from . import pages

if TYPE_CHECKING:
    from ..services import Services
    from ..store.api import Account, Mailbox

log = logging.getLogger("mailyard.web")

FAILED_KEPT = 7 * 86400  # seconds a refused send's record (or a sent one's note) is kept for its page
RETRY_AFTER = 45.0  # seconds before a send the store could not take is tried again
_TOKEN_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def outbox(services: Services) -> Path:
    return Path(services.data_dir) / "web-outbox"


def _is_token(token: str) -> bool:
    return bool(token) and len(token) <= 64 and set(token) <= _TOKEN_CHARS


def _record_path(services: Services, token: str, suffix: str = ".json") -> Path:
    if not _is_token(token):
        raise HTTPException(404, "no such message on its way")
    return outbox(services) / f"{token}{suffix}"


def _write_durably(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, data)


def _claim(services: Services, token: str, suffix: str) -> dict | None:
    """Take the record of ``token`` for an undo (rename to ``suffix``);
    None if its send took it first (``_claim_send``)."""
    src = _record_path(services, token)
    dst = _record_path(services, token, suffix)
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        return None
    try:
        return json.loads(dst.read_bytes())
    except (OSError, ValueError):
        log.warning("web: unreadable pending-send record %s", dst)
        return None


def _lock_now(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive flock, taken at
    once, or None: the file is gone, or a send holds it (in this process
    or another). The lock goes with the descriptor's close."""
    try:
        # writable: where flock() is emulated with POSIX locks (NFS), an
        # exclusive lock needs a descriptor open for writing
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with contextlib.ExitStack() as closing:
        closing.callback(os.close, fd)  # unless it is handed on
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # the name may have gone to another file meanwhile (the holder put
            # the record back to wait, or ended it): this one is not the record
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                closing.pop_all()
                return fd
        except (BlockingIOError, FileNotFoundError):
            pass
    return None


def _claim_send(services: Services, token: str) -> tuple[int, dict] | None:
    """Take the record of ``token`` for its send, as ``_claim`` does, locked
    from before it is ``.sending`` (module doc): (the descriptor holding
    the lock, for the caller to close; the record), or None if an undo or
    another send took it first."""
    src = _record_path(services, token)
    fd = _lock_now(src)
    if fd is None:
        return None
    with contextlib.ExitStack() as closing:
        closing.callback(os.close, fd)  # unless it is handed on
        dst = _record_path(services, token, ".sending")
        try:
            os.rename(src, dst)
        except FileNotFoundError:
            return None
        try:
            record = json.loads(dst.read_bytes())
        except (OSError, ValueError):
            log.warning("web: unreadable pending-send record %s", dst)
            return None
        closing.pop_all()
        return fd, record


_REGISTRY: dict[int, dict[str, asyncio.Task]] = {}


def _tasks(services: Services) -> dict[str, asyncio.Task]:
    """The timers of this process's pending sends, by token."""
    return _REGISTRY.setdefault(id(services), {})


async def precheck(services: Services, account: Account, wire: bytes, recipients: list[str]) -> None:
    """What the submission path would refuse at once (a recipient that does
    not exist, a From that is not the user's): raised now, before the delay."""
    bad = []
    for rcpt in recipients:
        verdict = (await services.router.resolve(rcpt)).verdict
        if verdict not in (Verdict.LOCAL, Verdict.REMOTE):
            bad.append(rcpt)
    if bad:
        raise SubmissionRefused(f"no such recipient: {', '.join(bad)}", bad)
    rule = await sender_rule(services, account)
    verdict = await rule.check_header(wire)
    if verdict is not None:
        raise SenderNotAllowed(verdict)


async def hold(services: Services, account: Account, full: bytes, recipients: list[str], drafts: Mailbox,
               old_draft: int | None, refs: dict[str, str], delay: int, client_ip: str) -> tuple[str, int]:
    """Keep the message as a draft and schedule its send in ``delay``
    seconds; (the token of the pending send, the draft's UID)."""
    await precheck(services, account, without_bcc(full), recipients)
    uid = await services.store.append(drafts, full, ["\\Draft", "\\Seen"])
    if old_draft is not None:
        await services.store.expunge(drafts, [old_draft])
    token = secrets.token_urlsafe(18)
    record = {
        "account_id": account.id, "mailbox_id": drafts.id, "uid_validity": drafts.uid_validity, "uid": uid,
        "recipients": recipients, "due": time.time() + delay, "refs": refs, "client_ip": client_ip,
    }
    await asyncio.to_thread(_write_durably, _record_path(services, token), json.dumps(record).encode())
    schedule(services, token, delay)
    return token, uid


def schedule(services: Services, token: str, delay: float) -> None:
    async def later() -> None:
        await asyncio.sleep(max(0.0, delay))
        await fire(services, token)

    def done(task: asyncio.Task) -> None:
        if tasks.get(token) is task:  # not the timer of a retry it scheduled
            del tasks[token]

    tasks = _tasks(services)
    task = asyncio.ensure_future(later())
    tasks[token] = task
    task.add_done_callback(done)


async def fire(services: Services, token: str) -> None:
    """Send the held message of ``token`` unless it was undone; a store out
    of reach is answered by phase (module doc)."""
    try:
        claimed = _claim_send(services, token)
    except OSError as exc:
        # (out of descriptors, say): the record stays waiting, tried again later
        log.warning("web: a held message's record could not be claimed (%s); tried again in %d s", exc,
                    RETRY_AFTER)
        schedule(services, token, RETRY_AFTER)
        return
    if claimed is None:
        return
    lock, record = claimed
    try:
        await _send_claimed(services, token, record)
    finally:
        os.close(lock)  # ends the claim's lock, after its record was put back, ended or failed


async def _send_claimed(services: Services, token: str, record: dict) -> None:
    """The send of ``fire``, its record claimed (``.sending``) and locked."""
    failure: str | None = None
    uncertain = False  # whether it may have gone all the same
    gone = False  # whether its draft is gone from Drafts
    try:
        held = await _read_held(services, record)
    except asyncio.CancelledError:
        # the server stops before the submission: nothing was sent, the
        # record waits for ``resume``
        with contextlib.suppress(OSError):
            os.rename(_record_path(services, token, ".sending"), _record_path(services, token))
        raise
    except StoreUnavailable as exc:
        # not sent (``_read_held`` only reads): tried again later
        tries = int(record.get("tries") or 0)
        log.log(logging.INFO if tries else logging.WARNING,
                "web: a held message is not sent yet (%s); it is tried again in %d s", exc, RETRY_AFTER)
        await _retry_later(services, token, {**record, "tries": tries + 1})
        return
    except Exception:  # noqa: BLE001 - a bug before the message was sent: it stays in Drafts; the server carries on
        log.exception("web: reading a held message failed; it is not sent, it stays in Drafts")
        failure = "an error on the server"
    else:
        try:
            if held is None:
                gone = True
                log.info("web: a held message is not sent: its draft is no longer in Drafts")
                failure = "the draft was no longer in Drafts"
            else:
                failure = await _submit_held(services, token, record, *held)
        except StoreError as exc:
            # the commit may have been applied with its answer lost: never
            # submitted again (module doc); a store out of reach is one line,
            # another store error a bug, with its traceback
            (log.warning if isinstance(exc, StoreUnavailable) else log.exception)(
                "web: a held message of %s may not have gone (%s); it is not sent again, it stays in Drafts",
                held[0].address if held else record.get("account_id"), exc)
            failure, uncertain = store_failed_while_sending(exc), True
        except Exception:  # noqa: BLE001 - a bug during the submission: never submitted again
            log.exception("web: sending a held message failed; it is not sent again, it stays in Drafts")
            failure, uncertain = "an error on the server while it was being sent", True
    if failure is not None:
        # a draft gone from Drafts: no link to it on the pending page
        await _give_up(services, token, {**record, "uid": None} if gone else record, failure, uncertain)
        return
    with contextlib.suppress(OSError):
        _record_path(services, token, ".sending").unlink()


def _record_failure(services: Services, token: str, record: dict, reason: str, uncertain: bool) -> None:
    """``<token>.failed`` for the pending page (why, whether it may have
    gone, where the draft is), then the claim (``.sending``) goes; raises
    OSError, the claim kept, if the ``.failed`` cannot be written."""
    failed = {k: record.get(k) for k in ("account_id", "mailbox_id", "uid")}
    _write_durably(_record_path(services, token, ".failed"),
                   json.dumps({**failed, "reason": reason, "uncertain": uncertain}).encode())
    with contextlib.suppress(OSError):
        _record_path(services, token, ".sending").unlink()


async def _give_up(services: Services, token: str, record: dict, reason: str, uncertain: bool = False) -> None:
    """End the claimed send of ``token`` that did not go (``uncertain``: or
    may have gone) with ``<token>.failed``. One that cannot be written
    leaves the claim (``.sending``), so that the page never says "sent";
    ``resume`` makes it a ``.failed`` saying it may have gone at the next
    start."""
    try:
        await asyncio.to_thread(_record_failure, services, token, record, reason, uncertain)
    except OSError as exc:
        log.warning("web: why a held message did not go could not be recorded (%s)", exc)


async def _retry_later(services: Services, token: str, record: dict) -> None:
    """Give back the claim of a send that did not go: the record, due again
    in RETRY_AFTER seconds, is pending again (for the timer, Undo and
    ``resume``). If it cannot be, the send ends as not sent."""
    again = json.dumps({**record, "due": time.time() + RETRY_AFTER}).encode()
    sending, pending = _record_path(services, token, ".sending"), _record_path(services, token)

    def put_back() -> None:
        sending.stat()  # gone: not put back (the rewrite below would make it anew)
        # the new due time goes into the claimed record before it is pending
        # again: rewriting it after would race with an Undo claiming it. The
        # rewrite is a new file, locked before it takes the name, so that
        # no ``resume`` of another worker takes it for a left-over claim.
        fresh = sending.with_name(f".{token}.again")
        lock = None
        try:
            try:
                _write_durably(fresh, again)
                lock = _lock_now(fresh)  # a name no one else uses: at once
                os.replace(fresh, sending)
            except OSError:  # it keeps its due time (``resume``: at once)
                with contextlib.suppress(OSError):
                    fresh.unlink()
            os.rename(sending, pending)
        finally:
            if lock is not None:
                os.close(lock)

    try:
        # in a thread, which also ends its work when the server stops meanwhile
        await asyncio.to_thread(put_back)
    except OSError as exc:
        log.warning("web: a held message could not be put back to wait (%s); it is not sent, it stays in Drafts",
                    exc)
        # for the pending page, which would otherwise say "sent" or count down for good
        await _give_up(services, token, record, "the mail store was out of reach")
        return
    schedule(services, token, RETRY_AFTER)


async def _read_held(services: Services, record: dict) -> tuple[Account, Mailbox, int, bytes] | None:
    """The account, Drafts, UID and bytes of the held draft of ``record``;
    None when it is gone from Drafts meanwhile (then it is not sent)."""
    store = services.store
    account = await store.get_account_by_id(int(record["account_id"]))
    drafts = await store.get_mailbox_by_id(int(record["account_id"]), int(record["mailbox_id"]))
    if account is None or drafts is None or drafts.uid_validity != record["uid_validity"]:
        return None
    uid = int(record["uid"])
    try:
        return account, drafts, uid, await store.read_message(drafts, uid)
    except NotFound:
        return None  # deleted from Drafts meanwhile (by another client): not sent


async def _submit_held(services: Services, token: str, record: dict, account: Account, drafts: Mailbox, uid: int,
                       full: bytes) -> str | None:
    """Send the held draft; None when it went, else why it was refused (it
    stays in Drafts). Raises only what ``submit_message`` raises (then it
    may have gone: module doc); once that returned, a failure to file the
    message is logged here."""
    client_ip = str(record.get("client_ip") or "127.0.0.1")
    try:
        await submit_message(services, account, without_bcc(full), list(record["recipients"]), client_ip=client_ip,
                             protocol="HTTP", helo="webmail", service="web")
    except SubmissionRefused as exc:
        logs.event(log, logging.INFO, "message_rejected", proto="web", ip=client_ip, user=account.address,
                   reason="refused", detail=str(exc))
        metrics.count_message("web", "rejected", "refused")
        return str(exc)  # it stays in Drafts
    # sent: from here on, nothing may submit it again
    refs = record.get("refs")
    filed = await file_sent(services, account, full, (drafts, uid), refs if isinstance(refs, dict) else {})
    if filed.undone is not None:
        # for the pending page, before the claim goes: "sent", and what is left undone
        note = json.dumps({"account_id": account.id, "undone": filed.undone}).encode()
        try:
            await asyncio.to_thread(_write_durably, _record_path(services, token, ".sent"),
                                    note)
        except OSError as exc:
            log.warning("web: what a sent message left undone could not be recorded for its page (%s)", exc)
    return None


SENT_FULL = "no copy was kept in Sent: your mailbox is full (quota reached)"


class Filed(NamedTuple):
    """What came of ``file_sent``."""

    undone: str | None  # what was left undone, in words for the sender (None: nothing)
    store_down: bool  # the store was out of reach: the next page could not read it either


async def file_sent(services: Services, account: Account, full: bytes, draft: tuple[Mailbox, int] | None,
                    refs: dict[str, str]) -> Filed:
    """What follows a webmail message that went: a copy in Sent, its draft
    out of Drafts, \\Answered or $Forwarded on the message it answers or
    forwards (``mark_original``). It went, so nothing here raises: a page
    saying otherwise would have the sender send it again. A store out of
    reach is one warning line, another failure a logged bug; the steps
    after a failure are not tried, and the words say each step left undone
    as maybe (a write's answer may be lost after it was applied)."""
    store = services.store
    done: list[str] = []  # what is known (a Sent copy over quota)
    left = ["the copy in Sent may be missing"]
    try:
        if draft is not None:
            left.append("its draft may still be in Drafts")
        if any(refs.get(key) for key in ("reply_to", "forward")):
            left.append("the message it answers or forwards may not be marked so")
        sent = await pages.special_mailbox(store, account.id, "\\Sent")
        try:
            await store.append(sent, full, ["\\Seen"])
        except QuotaExceeded:
            done.append(SENT_FULL)
        left.pop(0)
        if draft is not None:
            await store.expunge(draft[0], [draft[1]])
            left.pop(0)
        await mark_original(services, account.id, refs)
    except StoreUnavailable as exc:
        log.warning("web: a message of %s was sent, but %s: %s", account.address, ", ".join(left), exc)
        return Filed("; ".join([*done, f"{_and(left)}: the mail store was out of reach"]), True)
    except Exception:  # noqa: BLE001 - a bug, but the message went: no page may say it did not
        log.exception("web: a message of %s was sent, but %s", account.address, ", ".join(left))
        return Filed("; ".join([*done, f"{_and(left)}: an error on the server"]), False)
    return Filed("; ".join(done) or None, False)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def perhaps_not_sent(exc: Exception) -> str:
    """The words for a sender whose message met the store error ``exc``
    while it was submitted: it may have gone, so it is not sent again."""
    return (f"Perhaps not sent: {store_failed_while_sending(exc)}, so it may have gone. "
            "Ask a recipient whether it came before you send it again.")


def store_failed_while_sending(exc: Exception) -> str:
    """Why a submission that failed with ``exc`` (a store error) may have
    gone all the same (module doc), in words for the sender."""
    what = "was out of reach" if isinstance(exc, StoreUnavailable) else "failed"
    return f"the mail store {what} while it was being sent"


async def mark_original(services: Services, account_id: int, refs: dict[str, str]) -> None:
    """\\Answered on the message replied to (RFC 9051 2.3.2), $Forwarded on
    the one forwarded (RFC 5788 keyword registry); refs name them "box:uid"."""
    for key, flag in (("reply_to", "\\Answered"), ("forward", "$Forwarded")):
        box_id, _, uid_s = str(refs.get(key) or "").partition(":")
        if not (box_id.isdigit() and uid_s.isdigit()):
            continue
        box = await services.store.get_mailbox_by_id(account_id, int(box_id))
        if box is not None and box.account_id == account_id:
            with contextlib.suppress(StoreError):
                await services.store.store_flags(box, [int(uid_s)], [flag], "add")


def cancel_all(services: Services) -> None:
    """At stop: the timers end; the records stay for ``resume``."""
    for task in _REGISTRY.pop(id(services), {}).values():
        task.cancel()


def resume(services: Services) -> int:
    """At start: schedule every pending send found on disk (those overdue
    at once); the sends that were under way when a server stopped, and
    that no process works on now, become ``.failed`` saying they may have
    gone (module doc). Returns how many were scheduled."""
    folder = outbox(services)
    if not folder.is_dir():
        return 0
    now = time.time()
    count = 0
    for path in folder.iterdir():
        if not _is_token(path.stem):
            continue  # not a record (a temporary file, something put there by hand)
        if path.suffix in (".failed", ".sent"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < now - FAILED_KEPT:
                    path.unlink()
        elif path.suffix == ".sending":
            _left_over(services, path)
        elif path.suffix == ".json":
            try:
                due = float(json.loads(path.read_bytes())["due"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            schedule(services, path.stem, due - now)
            count += 1
    return count


def _left_over(services: Services, path: Path) -> None:
    """A claimed record found at start: left alone while a send holds its
    lock (a worker process of this server sends it now); else the send was
    under way when a server stopped: perhaps sent, never tried again."""
    try:
        lock = _lock_now(path)
    except OSError as exc:
        log.warning("web: a held message's record %s could not be read (%s)", path, exc)
        return
    if lock is None:
        return
    try:
        if _record_path(services, path.stem, ".sent").exists():
            # it went (the note of what it left undone is written after the
            # submission): the claim only outlived a stop
            with contextlib.suppress(OSError):
                path.unlink()
            return
        try:
            record = json.loads(path.read_bytes())
        except (OSError, ValueError):
            record = {}
        log.warning("web: a held message was being sent when the server stopped; it may not have gone, "
                    "it stays in Drafts")
        try:
            _record_failure(services, path.stem, record if isinstance(record, dict) else {},
                            "the server stopped while it was being sent", True)
        except OSError as exc:
            log.warning("web: why a held message may not have gone could not be recorded (%s)", exc)
    finally:
        os.close(lock)


# --- the pages ---------------------------------------------------------------
async def _own_record(request: Request, token: str, suffix: str = ".json") -> tuple[Any, dict]:
    session = pages.current(request)
    path = _record_path(pages.state(request).services, token, suffix)
    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError):
        raise HTTPException(404, "no such message on its way (already sent?)") from None
    if record.get("account_id") != session.account_id:
        raise HTTPException(404, "no such message on its way (already sent?)")
    return session, record


def _own_kept(request: Request, token: str, suffix: str) -> dict | None:
    """The kept record ``<token><suffix>`` of this session's send, or None
    (none, unreadable, or another account's)."""
    try:
        record = json.loads(_record_path(pages.state(request).services, token, suffix).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("account_id") != pages.current(request).account_id:
        return None
    return record


def _own_failure(request: Request, token: str) -> dict | None:
    """The record of this session's send of ``token`` that did not go at
    its time (``reason``, ``uncertain``: it may have gone, the draft), or None."""
    record = _own_kept(request, token, ".failed")
    if record is None:
        return None
    uid = record.get("uid")
    return {"reason": str(record.get("reason") or "refused"), "uncertain": record.get("uncertain") is True,
            "draft": f"{int(record.get('mailbox_id') or 0)}:{int(uid)}" if uid is not None else None}


def _own_sent_note(request: Request, token: str) -> str | None:
    """What this session's send of ``token``, which went, left undone (a
    copy in Sent, its draft out of Drafts: ``file_sent``), or None."""
    record = _own_kept(request, token, ".sent")
    if record is None:
        return None
    return str(record.get("undone") or "") or None


async def _inbox_url(request: Request) -> str:
    session = pages.current(request)
    inbox = await pages.state(request).services.store.get_mailbox(session.account_id, "INBOX")
    return f"/box/{inbox.id}" if inbox is not None else "/"


async def pending_page(request: Request) -> Response:
    """"Sending in N seconds" with the Undo button."""
    token = request.path_params["token"]
    try:
        try:
            session, record = await _own_record(request, token)
        except HTTPException:  # being sent right now: "in 0 seconds", and the page looks again
            session, record = await _own_record(request, token, ".sending")
    except HTTPException:
        failed = _own_failure(request, token)
        if failed is not None:
            return pages.page(request, "pending.html", token=token, left=0, failed=failed,
                              folders=await pages.folders(request, pages.current(request)), notice="")
        try:
            # a send put back to wait (.sending renamed to .json in a thread)
            # between the two reads above is found now, never taken for sent
            session, record = await _own_record(request, token)
        except HTTPException:
            undone = _own_sent_note(request, token)
            return pages.redirect(pages.notice_url(await _inbox_url(request),
                                                   f"Message sent; {undone}." if undone else "Message sent."))
    left = max(0, round(float(record["due"]) - time.time()))
    return pages.page(request, "pending.html", token=token, left=left, failed=None,
                      folders=await pages.folders(request, session), notice=request.query_params.get("notice", ""))


async def undo(request: Request) -> Response:
    """Take the message back: it is not sent and opens in the editor."""
    token = request.path_params["token"]
    session = pages.current(request)
    await pages.checked_form(request, session)
    services = pages.state(request).services
    # too late when the send has it (or had it): the pending page shows what
    # comes of it (sent, refused, or waiting again: the store out of reach)
    too_late = pages.notice_url(f"/compose/pending/{token}", "Too late to undo.")
    try:
        _session, record = await _own_record(request, token)
    except HTTPException:
        if _own_failure(request, token) is None:
            await _own_record(request, token, ".sending")  # 404 unless this user's send has it
        return pages.redirect(too_late)
    claimed = _claim(services, token, ".undone")
    if claimed is None:
        return pages.redirect(too_late)
    task = _tasks(services).pop(token, None)
    if task is not None:
        task.cancel()
    with contextlib.suppress(OSError):
        _record_path(services, token, ".undone").unlink()
    # nothing went: the form it came from may send it again (web/sendonce.py)
    refs = record.get("refs")
    if isinstance(refs, dict) and isinstance(refs.get("send_id"), str):
        pages.state(request).sends.give_back(session.account_id, refs["send_id"])
    return pages.redirect(pages.notice_url(f"/compose?draft={record['mailbox_id']}:{record['uid']}",
                                           "Sending undone: the message is back in the editor."))


def routes() -> list[Route]:
    return [
        Route("/compose/pending/{token:str}", pending_page, methods=["GET"]),
        Route("/compose/pending/{token:str}/undo", undo, methods=["POST"]),
    ]
