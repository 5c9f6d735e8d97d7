"""Writing mail: the compose page (new, reply, reply all, forward, a
draft resumed) and its form, which sends, or saves a draft.

The message is built in the render pool (render.outgoing) and sent through
the one submission path (delivery/submit.py), held first for the user's
undo delay (undo.py); a copy goes to Sent. The autosave route (drafts.py)
posts the same form. A refused form keeps its chosen files in a draft, as
a browser cannot refill file inputs; the same form posted again as it was
(a double click) keeps them in that same draft (sendonce.py).

A form posted without a live session (it ended while the person wrote:
idle, logged out in another tab, ended from Settings) or with the CSRF
token of an ended one (logged in again since, in another tab) is neither
sent nor saved, and its text is not lost: the answer (``ended``) shows it
back to the browser that posted it, in a form that logs in again (or, when
another tab did, goes on under that session: its CSRF token) and puts it
back into compose (``compose_again``). Nothing of it is kept on the server
before that login: the poster is not authenticated, and anything stored
for an account on an unauthenticated request could be planted by anyone.
The origin check stands before it all (a cross-site POST is refused, so
a page elsewhere cannot fill a form here), and what refers to the account's
mail (the draft it replaces, the message forwarded or answered, the kept
attachments) goes through only to the account the form was written for.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import logs, metrics
from ..delivery.submit import SubmissionRefused, submit_message
from ..message.address import Group, is_valid_addr_spec, iter_mailboxes, parse_address_list
from ..message.reading import limit_size
from ..message.reply import forward_subject
from ..store.api import Mailbox, NotFound, QuotaExceeded, StoreError, StoreUnavailable
from . import bodies, prefs, render, sendonce, settings, undo
from . import login as logins
from . import signatures as sig
from .drafts import autosaved, named
from .pages import (
    checked_form,
    current,
    folders,
    folders_if_any,
    live_session,
    message_info,
    notice_url,
    own_mailbox,
    page,
    read_raw,
    redirect,
    sent_before,
    special,
    state,
    to_int,
    too_complex,
)
from .security import Session, same_origin, token_ok
from .worker import TooComplex

log = logging.getLogger("mailyard.web")


@dataclass
class Draft:
    sender: str = ""  # the From field; empty: the account's address
    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    body: str = ""
    in_reply_to: str = ""
    references: str = ""
    draft_uid: str = ""
    forward: str = ""  # "box_id:uid" of a message to attach as message/rfc822
    reply_to: str = ""  # "box_id:uid" answered (gets \Answered when sent)
    kept: list = field(default_factory=list)  # attachments of a resumed draft
    mode: str = ""  # what the page is: "reply", "replyall", "forward", "draft" or "" (new)
    forward_mode: str = "attached"  # a forward carries the original "attached" or "inline"
    forward_text: str = ""  # "in-body": the body holds the original's text (an inline forward)
    send_id: str = field(default_factory=sendonce.new_id)  # this form's one send (sendonce.py)


async def compose_view(request: Request) -> Response:
    session = current(request)
    qp = request.query_params
    draft = Draft(to=qp.get("to", "")[:2000])
    sent_to: list[str] = []  # the addresses an answered message was sent to
    chosen = ""
    forward_inline_text = ""  # what choosing "inline" puts in the text (compose.js)
    for mode in ("reply", "replyall", "forward", "draft"):
        ref = qp.get(mode)
        if not ref:
            continue
        draft.mode = mode
        box_id, _, uid_s = ref.partition(":")
        box = await own_mailbox(request, session, box_id)
        uid = to_int(uid_s)
        if uid is None:
            raise HTTPException(404)
        raw = await read_raw(request, box, uid)
        chosen = mode
        if mode in ("reply", "replyall"):
            sent_to = settings.sent_to(raw)
        pool = state(request).pool
        try:
            if mode in ("reply", "replyall"):
                info = await message_info(request, box, uid)
                arrived = info.internal_date if info is not None else None
                answer = await pool.run(render.reply_draft, raw, frozenset({session.address}),
                                        mode == "replyall", arrived)
            else:
                view = await pool.run(render.show, raw, f"/box/{box.id}/msg/{uid}", False, False)
                if mode == "forward":
                    # the original's header block and text, for an inline forward
                    info = await message_info(request, box, uid)
                    arrived = info.internal_date if info is not None else None
                    if qp.get("how") == "inline":
                        inline_text = await pool.run(render.forward_text, raw, arrived)
                    else:
                        # (for the "inline" choice: attached, the original may be past its bounds)
                        with contextlib.suppress(TooComplex):
                            forward_inline_text = await pool.run(render.forward_text, raw, arrived)
        except TooComplex as exc:
            return too_complex(request, box, uid, str(exc), await folders(request, session), f"/box/{box.id}")
        del raw
        if mode in ("reply", "replyall"):
            draft.to, draft.cc, draft.subject = answer.to, answer.cc, answer.subject
            draft.body = f"\n\n{answer.quoted}"
            draft.in_reply_to, draft.references = answer.in_reply_to, answer.references
            draft.reply_to = f"{box.id}:{uid}"
        elif mode == "forward":
            draft.subject = forward_subject(view.subject)
            draft.forward = f"{box.id}:{uid}"
            if qp.get("how") == "inline":
                # the original's header block and text, below the cursor
                draft.forward_mode = "inline"
                draft.forward_text = "in-body"
                draft.body = "\n\n" + inline_text
        else:  # resume a draft
            draft.sender = render.draft_addresses(view.from_)
            draft.to = render.draft_addresses(view.to)
            draft.cc = render.draft_addresses(view.cc)
            draft.bcc = render.draft_addresses(view.bcc)
            draft.subject = view.subject
            draft.body = sig.unsign_draft(prefs.current(), draft.sender, view.text or "")
            draft.in_reply_to = view.in_reply_to
            draft.references = view.references_raw
            draft.draft_uid = str(uid)
            draft.kept = [(a.spec, a.filename, a.content_type, a.size) for a in view.attachments]
    if chosen != "draft":
        settings.apply_identity(draft, prefs.current(), sent_to)
    return page(request, "compose.html", identities=prefs.current().identities, draft=draft,
                folders=await folders(request, session), errors=[],
                notice=qp.get("notice", ""), forward_inline_text=forward_inline_text)


def parse_recipients(value: str, what: str, errors: list[str]) -> list[tuple[str, str]]:
    """Addresses of a To/Cc/Bcc field; every entry must be a valid addr-spec."""
    value = value.strip()
    if not value:
        return []
    if "\r" in value or "\n" in value:
        errors.append(f"{what}: line breaks are not allowed")
        return []
    items = parse_address_list(value)
    out: list[tuple[str, str]] = []
    for item in items:
        members = item.mailboxes if isinstance(item, Group) else [item]
        for m in iter_mailboxes(members):
            if not m.domain or not is_valid_addr_spec(m.addr_spec, smtputf8=True):
                errors.append(f"{what}: {m.addr_spec!r} is not a valid address")
            else:
                out.append((m.display_name or "", m.addr_spec))
    # every '@' typed must have become an address (the parser skips junk silently)
    if value.count("@") > len(out) + len([e for e in errors if e.startswith(what)]) or not items:
        errors.append(f"{what}: cannot read the address list {value!r}")
    return out


def draft_of(form: Any) -> Draft:
    """The message a compose form holds (its files aside)."""
    draft = Draft(**{k: str(form.get(k) or "") for k in (
        "to", "cc", "bcc", "subject", "body", "in_reply_to", "references", "draft_uid", "forward",
        "reply_to")})
    draft.sender = str(form.get("from") or "")
    draft.mode = str(form.get("mode") or "")[:10]
    draft.forward_mode = "inline" if form.get("forward_mode") == "inline" else "attached"
    draft.forward_text = "in-body" if form.get("forward_text") == "in-body" else ""
    draft.send_id = sendonce.form_id(str(form.get("send_id") or ""))
    return draft


async def compose_submit(request: Request) -> Response:
    autosave = getattr(request.state, "autosave", False)
    live = live_session(request)
    if live is None:
        # nobody logged in: the text is read, no file kept (bodies.py)
        form, files_left = await signed_out_form(request)
        return ended(request, form, live, autosave, files_left=files_left)
    form = await checked_form(request)  # the origin check; the CSRF token's is next
    given = form.get("csrf") or request.headers.get("x-csrf-token")
    if not token_ok(live.csrf, given if isinstance(given, str) else None):
        return ended(request, form, live, autosave)
    session = current(request)
    web = state(request)
    store = web.services.store
    action = "save" if autosave else str(form.get("action") or "send")
    draft = draft_of(form)
    errors: list[str] = []
    # Any address may be typed; sending checks it is the user's own
    # (policy/submission.py, the same rule as the submission ports).
    author = parse_recipients(draft.sender or session.address, "From", errors)
    if len(author) > 1:
        errors.append("From: give one address.")
    to = parse_recipients(draft.to, "To", errors)
    cc = parse_recipients(draft.cc, "Cc", errors)
    bcc = parse_recipients(draft.bcc, "Bcc", errors)
    if action == "send" and not (to or cc or bcc) and not errors:
        errors.append("Add at least one recipient.")
    limit = web.services.config.smtp.max_message_size
    uploads: list[tuple[str, bytes, str | None]] = []
    for upload in form.getlist("attachment"):
        if isinstance(upload, UploadFile) and upload.filename:
            # Starlette spooled the file to disk above 1 MB; BodyLimits
            # bounded the whole form to the message size limit
            data = await upload.read()
            name = render.safe_filename(upload.filename)
            ctype = (upload.content_type or "").split(";")[0].strip().lower()
            if "/" not in ctype or any(c in ctype for c in "\r\n\"") or ctype == "application/x-unknown":
                ctype = None  # compose() guesses from the name
            uploads.append((name, data, ctype))
    drafts = await special(request, session, "\\Drafts")
    old_draft = to_int(draft.draft_uid)
    old_raw: bytes | None = None
    if old_draft is not None:
        try:
            old_raw = await store.read_message(drafts, old_draft)
        except NotFound:
            old_raw = None
    forward_raw: bytes | None = None
    record = forward_record(old_raw) if old_raw is not None else None
    draft_forward_parts = 0  # the draft's last attachments that came from the original
    if draft.forward:
        box_id, _, uid_s = draft.forward.partition(":")
        fbox = await own_mailbox(request, session, box_id)
        fuid = to_int(uid_s)
        if fuid is None:
            raise HTTPException(404)
        draft.forward = f"{fbox.id}:{fuid}"
        original: bytes | None = None
        if record is not None:
            draft_forward_parts = record[2]
        if old_raw is None or (record is not None and record[:2] != (draft.forward_mode, draft.forward)):
            # the original carried as the form says: the first time, or
            # switched (attached, inline) since the draft was saved, whose
            # parts of it ``outgoing`` then leaves out (a draft without a
            # record carries it as it was saved)
            original = forward_raw = await read_raw(request, fbox, fuid)
        if draft.forward_mode == "inline" and draft.forward_text != "in-body":
            # inline chosen, the original's text not in the body yet (the
            # page's script puts it there; without it the server does)
            original = original if original is not None else await read_raw(request, fbox, fuid)
            info = await message_info(request, fbox, fuid)
            try:
                text = await web.pool.run(render.forward_text, original,
                                          info.internal_date if info is not None else None)
            except TooComplex as exc:
                errors.append(f"The original's text could not be put in the message ({exc}).")
            else:
                draft.body = (draft.body.rstrip() + "\n\n" + text) if draft.body.strip() else "\n\n" + text
                draft.forward_text = "in-body"
        del original
    built: tuple[bytes, bytes, bytes] | str | None = None
    sender = (author[0][0] or None, author[0][1]) if author else (None, session.address)
    if sender[0] is None:
        # the address alone: the identity's display name goes with it
        sender = named(session, sender[1])
    attach_limit = render.attachment_limit(limit)

    async def build(uploads: list[tuple[str, bytes, str | None]], old_raw: bytes | None,
                    forward_raw: bytes | None) -> tuple[bytes, bytes, bytes] | str:
        # parsing the draft or the forwarded message and encoding the
        # attachments happen in a worker process (worker.py): for Sent, for
        # the wire, and the field a draft of it starts with
        try:
            built = await web.pool.run(
                render.outgoing, sender, to, cc, bcc, draft.subject, draft.body.replace("\r\n", "\n"),
                uploads, old_raw, list(form.getlist("keep")), forward_raw, draft.in_reply_to or None,
                [r for r in draft.references.split() if r.startswith("<")], attach_limit,
                too_large_attachments(attach_limit, limit), limit, draft.forward_mode == "inline",
                sig.for_sender(prefs.current(), sender[1]), draft_forward_parts)
        except TooComplex as exc:
            return f"The message could not be built ({exc})."
        if isinstance(built, str):
            return built
        full, wire, forward_parts = built
        return full, wire, forward_record_field(draft, forward_parts)

    if not errors:
        built = await build(uploads, old_raw, forward_raw)
        if isinstance(built, str):
            errors.append(built)
    elif uploads:
        built = await build(uploads, old_raw, forward_raw)  # to keep the attachments in a draft
    if errors and autosave:
        return JSONResponse({"error": "Not saved: " + " ".join(errors)}, status_code=400)
    if errors:
        # A browser cannot refill file inputs: chosen files are kept in a draft.
        if uploads and not isinstance(built, str) and built is not None:
            contents = await asyncio.to_thread(_contents, form.multi_items(), uploads)
            errors += await _keep_as_draft(request, session, draft, drafts, old_draft, built[2] + built[0], contents)
        elif uploads:
            errors.append("The chosen files were not kept; choose them again.")
        return page(request, "compose.html", status=400, draft=draft,
                    folders=await folders(request, session), errors=errors)
    # (what the form holds, should a refusal keep its files: the files go now)
    contents = await asyncio.to_thread(_contents, form.multi_items(), uploads) if uploads else b""
    del uploads, old_raw, forward_raw
    assert built is not None and not isinstance(built, str)
    full, wire, record = built
    if action == "save":
        full = record + full
        try:
            uid = await store.append(drafts, full, ["\\Draft", "\\Seen"])
        except QuotaExceeded:
            return page(request, "compose.html", status=400, draft=draft, folders=await folders(request, session),
                        errors=["Not saved: your mailbox is full (quota reached)."])
        if old_draft is not None:
            await store.expunge(drafts, [old_draft])
        draft.draft_uid = str(uid)
        if autosave:
            return await autosaved(request, drafts, uid, full)
        return redirect(notice_url(f"/compose?draft={drafts.id}:{uid}", "Draft saved."))
    recipients = [a for _, a in to + cc + bcc]
    account = await store.get_account_by_id(session.account_id)
    if account is None:
        raise HTTPException(401)
    client_ip = request.client.host if request.client else "127.0.0.1"
    delay = prefs.current().send_delay
    no_room_to_wait = False
    # one send per form (web/sendonce.py): a double click or a reload sends
    # nothing more, and gets the answer of the POST that sent
    send_id = draft.send_id
    earlier = await web.sends.claim(account.id, send_id)
    if earlier is not None:
        return await sent_before(request, session, earlier.location, "Sent already", SENT_ALREADY)
    went = False
    try:
        try:
            if delay:
                # undo send: held as a draft for ``delay`` seconds (web/undo.py);
                # with no room in Drafts to wait in, sent at once instead (and said so)
                try:
                    refs = {"reply_to": draft.reply_to, "forward": draft.forward, "send_id": draft.send_id}
                    token, _uid = await undo.hold(web.services, account, full, recipients, drafts, old_draft,
                                                  refs, delay, client_ip)
                    went = True
                    web.sends.went(account.id, send_id, f"/compose/pending/{token}")
                    return redirect(f"/compose/pending/{token}")
                except QuotaExceeded:
                    no_room_to_wait = True
            went = True  # from here on it may go: the form's id stays taken
            try:
                await submit_message(web.services, account, wire, recipients, client_ip=client_ip,
                                     protocol="HTTP", helo="webmail", service="web")
            except SubmissionRefused:
                went = False  # refused before anything was stored
                raise
            except StoreError as exc:
                # It may have gone all the same (a commit applied, its answer
                # lost): the form stays, saying so, and nothing sends it again.
                (log.warning if isinstance(exc, StoreUnavailable) else log.exception)(
                    "web: a message of %s may not have gone (%s)", account.address, exc)
                errors = [undo.perhaps_not_sent(exc)]
                if any(isinstance(u, UploadFile) and u.filename for u in form.getlist("attachment")):
                    errors.append("The chosen files were not kept; choose them again.")
                web.sends.went(account.id, send_id)
                draft.send_id = sendonce.new_id()  # a deliberate second send, from this form, is the user's
                return page(request, "compose.html", status=503, draft=draft,
                            folders=await folders_if_any(request, session), errors=errors)
        except SubmissionRefused as exc:
            logs.event(log, logging.INFO, "message_rejected", proto="web", ip=client_ip, user=account.address,
                       reason="refused", detail=str(exc))
            metrics.count_message("web", "rejected", "refused")
            errors = [f"Not sent: {exc}"]
            if form.getlist("attachment") and any(
                    isinstance(u, UploadFile) and u.filename for u in form.getlist("attachment")):
                errors += await _keep_as_draft(request, session, draft, drafts, old_draft, record + full, contents)
            return page(request, "compose.html", status=400, draft=draft,
                        folders=await folders(request, session), errors=errors)
        # it went: from here on nothing may fail the request (the sender would send it again)
        filed = await undo.file_sent(web.services, account, full,
                                     (drafts, old_draft) if old_draft is not None else None,
                                     {"reply_to": draft.reply_to, "forward": draft.forward})
        undone = filed.undone
        if no_room_to_wait:
            notice = "Message sent at once, without the delay to undo it: your mailbox is full (quota reached)"
            notice += ", and no copy was kept in Sent." if undone == undo.SENT_FULL else (f"; {undone}." if undone else ".")
        else:
            notice = f"Message sent; {undone}." if undone else "Message sent."
        inbox = None
        if not filed.store_down:
            with contextlib.suppress(StoreError):
                inbox = await store.get_mailbox(session.account_id, "INBOX")
        if inbox is None:
            # the store is out of reach: the inbox's page could not be shown,
            # and a "try again" in its place would have the sender send it again
            web.sends.went(account.id, send_id)
            return page(request, "sent.html", title="Message sent", folders=[], detail=notice)
        web.sends.went(account.id, send_id, notice_url(f"/box/{inbox.id}", notice))
        return redirect(notice_url(f"/box/{inbox.id}", notice))
    finally:
        # every send ends here: given back when nothing went, else ended (a
        # no-op when it ended with where its answer led), so that no second
        # POST of the form waits for it
        if not went:
            web.sends.give_back(account.id, send_id)
        else:
            web.sends.went(account.id, send_id)


# A forward's draft starts with a field of its own (RFC 6648: no "X-")
# naming how it carries the original: "attached" or "inline", the original
# ("box_id:uid"), and how many of its attachments, the last ones, came from
# it; so that a switch between the two after a save carries the original
# again as the form says, in place of what the draft took of it. Only a
# draft has it: not the message sent, nor its copy in Sent.
FORWARD_FIELD = "Mailyard-Forward"
_FORWARD_RECORD = re.compile(rb"(?im)^Mailyard-Forward:[ \t]*(attached|inline)[ \t]+(\d{1,18}:\d{1,18})"
                             rb"[ \t]+(\d{1,6})[ \t]*\r?$")


def forward_record_field(draft: Draft, parts: int) -> bytes:
    """The field a draft of ``draft`` starts with (empty: not a forward),
    ``parts`` its attachments that came from the original."""
    if not draft.forward:
        return b""
    return f"{FORWARD_FIELD}: {draft.forward_mode} {draft.forward} {parts}\r\n".encode("ascii")


def forward_record(raw: bytes) -> tuple[str, str, int] | None:
    """What a draft's ``Mailyard-Forward`` field says: (mode, original, the
    number of its last attachments that came from it); None without one."""
    end = raw.find(b"\r\n\r\n")
    found = _FORWARD_RECORD.search(raw, 0, end if end >= 0 else min(len(raw), 64 * 1024))
    if found is None:
        return None
    return found.group(1).decode(), found.group(2).decode(), int(found.group(3))


# what the session-ended page carries of a compose form (its files cannot
# be: a browser does not refill a file input)
CARRIED = ("from", "to", "cc", "bcc", "subject", "in_reply_to", "references", "draft_uid", "forward",
           "forward_mode", "forward_text", "reply_to", "mode", "send_id", "account")
# what refers to the account's own mail: dropped when another account logs in
OWN_REFERENCES = ("draft_uid", "forward", "reply_to", "in_reply_to", "references")


async def signed_out_form(request: Request) -> tuple[Any, int]:
    """The text of a compose form posted without a live session, after the
    origin check (403: no page elsewhere fills compose), and how many files
    it carried, which are not kept (``bodies.text_form``)."""
    if not same_origin(request):
        raise HTTPException(403, "cross-origin request refused")
    return await bodies.text_form(request)


def ended(request: Request, form: Any, live: Session | None, autosave: bool, error: str = "",
          status: int | None = None, files_left: int = 0) -> Response:
    """The answer to a compose form posted without a live session or with
    the CSRF token of an ended one: nothing sent or saved, the form's text
    shown back with a way to go on writing it (``compose_again``): a login,
    or, when this browser has a live session again, that session's token.

    Autosave (``static/compose.js``) gets JSON that says so. The status is
    401 without a session, 403 with the token of another (RFC 9110 15.5.2,
    15.5.4)."""
    if status is None:
        status = 401 if live is None else 403
    if autosave:
        return JSONResponse({"error": "Not saved: your session has ended. Press \u201cSave draft\u201d or "
                             "\u201cSend\u201d to log in again: what you wrote stays in this form.",
                             "ended": True}, status_code=status)
    carried = {name: str(form.get(name) or "") for name in CARRIED}
    keep = [str(k) for k in form.getlist("keep") if isinstance(k, str)]
    # (files chosen, not kept: read past, or left out by the page's script)
    files = bool(files_left) or form.get("files_left") == "1" or any(
        isinstance(u, UploadFile) and u.filename for u in form.getlist("attachment"))
    token = logins.login_token() if live is None else ""
    response = page(request, "compose_ended.html", status=status, carried=carried, keep=keep,
                    body=str(form.get("body") or ""), files=files, error=error,
                    action=str(form.get("action") or "send"), live_csrf=live.csrf if live else "",
                    login_token=token,
                    # what was typed in a login that failed, else the account it was written for
                    username=str(form.get("username") or "")[:320] or carried["account"])
    if token:
        logins.set_login_cookie(request, response, token)
    return response


async def compose_again(request: Request) -> Response:
    """``POST /compose/login``: the form of the session-ended page; logs in
    (or goes on under the live session whose token it carries) and shows
    the message in compose, not sent, for the person to send or save."""
    # the origin check (no page elsewhere fills compose); a form of text
    # only, read as one posted without a session is (bodies.text_form)
    form, _files = await signed_out_form(request)
    live = live_session(request)
    given = form.get("csrf")
    cookies: list[str] = []
    if live is not None and token_ok(live.csrf, given if isinstance(given, str) else None):
        session = live
    else:
        if not logins.login_token_ok(request, form):
            return ended(request, form, live, False, "" if live else "The login form expired; log in again.", 403)
        result = await logins.password_login(request, form)
        if isinstance(result, logins.Refused):
            response = ended(request, form, None, False, result.error, result.status)
            if result.retry_after is not None:
                response.headers["Retry-After"] = str(result.retry_after)
            return response
        # the new session's cookies go with the compose page
        holder = Response()
        session = await logins.open_session(request, holder, result)
        cookies = holder.headers.getlist("set-cookie")
    request.state.session = session
    request.state.since = time.time()
    prefs.use(await prefs.load(state(request).services.store, session.account_id))
    draft = draft_of(form)
    if str(form.get("account") or "").casefold() == session.address.casefold():
        keep = [str(k) for k in form.getlist("keep") if isinstance(k, str)]
        draft.kept = await _kept(request, session, to_int(draft.draft_uid), keep) if keep else []
    else:
        # written for another account: its references would name this one's mail
        for name in OWN_REFERENCES:
            setattr(draft, name, "")
        draft.mode = ""
    response = page(request, "compose.html", identities=prefs.current().identities, draft=draft,
                    folders=await folders(request, session), errors=[],
                    notice="You are logged in again. Here is your message, not sent yet: check it, "
                           "then send it or save it.")
    for cookie in cookies:
        response.headers.append("set-cookie", cookie)
    return response


async def _kept(request: Request, session: Session, uid: int | None, keep: list[str]) -> list:
    """The attachments of the draft ``uid`` (in the account's Drafts) that
    ``keep`` names, as the compose form lists them."""
    if uid is None:
        return []
    drafts = await special(request, session, "\\Drafts")
    try:
        raw = await state(request).services.store.read_message(drafts, uid)
        view = await state(request).pool.run(render.show, raw, f"/box/{drafts.id}/msg/{uid}", False, False)
    except (NotFound, TooComplex):
        return []
    return [(a.spec, a.filename, a.content_type, a.size) for a in view.attachments if a.spec in keep]


SENT_ALREADY = "This message was sent already (or may have been): it was not sent again."


def too_large_attachments(attach_limit: int, max_message_size: int) -> str:
    """The refusal of attachments over the limit (``{size}``: theirs)."""
    return (f"The attachments are {{size}} in all; at most {limit_size(attach_limit)} fit: a message "
            f"may have {limit_size(max_message_size)}, and attachments grow by a third when sent.")


_CHUNK = 1 << 20  # characters encoded at a time: the GIL is let go between chunks


def _contents(fields: list[tuple[str, object]], uploads: list[tuple[str, bytes, str | None]]) -> bytes:
    """A digest of what a form posted: its fields but the CSRF token, and
    its chosen files (up to the message size limit: run in a thread, each
    text encoded a megabyte at a time so the event loop keeps its turns)."""
    digest = hashlib.sha256()

    def text(value: str) -> None:
        digest.update(b"%d:" % len(value))
        for at in range(0, len(value), _CHUNK):
            digest.update(value[at : at + _CHUNK].encode("utf-8", "surrogatepass"))

    for key, value in fields:
        if key != "csrf" and isinstance(value, str):
            text(key)
            text(value)
    for name, data, ctype in uploads:
        text(name)
        text(ctype or "")
        digest.update(b"%d:" % len(data))
        digest.update(data)
    return digest.digest()


async def _keep_as_draft(request: Request, session: Session, draft: Draft, drafts: Mailbox,
                         old_draft: int | None, full: bytes, contents: bytes) -> list[str]:
    """Save a refused form with its new attachments as a draft (replacing the
    one it came from) and point the form at it; the words for the user.

    The same form posted again as it was (``contents``: a double click on
    a Send that is refused, a reload of the refusal) finds the draft the
    first POST kept, and shows that one rather than keeping a second copy."""
    web = state(request)
    store = web.services.store
    async with web.sends.keeping(session.account_id, draft.send_id, contents) as kept:
        uid: int | None = None
        if kept.uid is not None:
            with contextlib.suppress(NotFound):
                full = await store.read_message(drafts, kept.uid)
                uid = kept.uid
        if uid is None:
            try:
                uid = await store.append(drafts, full, ["\\Draft", "\\Seen"])
            except QuotaExceeded:
                return ["The chosen files were not kept (your mailbox is full); choose them again."]
            if old_draft is not None:
                await store.expunge(drafts, [old_draft])
            kept.uid = uid
    draft.draft_uid = str(uid)
    try:
        view = await state(request).pool.run(render.show, full, f"/box/{drafts.id}/msg/{uid}", False, False)
    except TooComplex:
        view = None
    draft.kept = [(a.spec, a.filename, a.content_type, a.size) for a in view.attachments] if view else []
    return [f"Your attachments were kept: this message is saved in {drafts.name} "
            "and they are listed under \u201cAttachments of this draft\u201d."]


def routes() -> list[Route]:
    return [
        Route("/compose", compose_view, methods=["GET"]),
        Route("/compose", compose_submit, methods=["POST"]),
        Route("/compose/login", compose_again, methods=["POST"]),
    ]
