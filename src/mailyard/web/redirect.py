"""Webmail's Redirect: send a stored message on, unchanged, to other
addresses ("bounce" in mutt's words), with a resent block on top (RFC 5322
3.6.6, built by message/resend.py, as the terminal client does).

The message goes through the one submission path (delivery/submit.py) with
the user as the envelope sender; the sender rule reads the resent block
(policy/submission.py): Resent-From must be the user's own. No copy is
kept in Sent: the message is the original, already in a folder.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import logs, metrics
from ..delivery.submit import SubmissionRefused, submit_message
from ..message.resend import resend, resent_block
from ..store.api import StoreError, StoreUnavailable
from . import compose, pages, sendonce, undo
from .drafts import identity

log = logging.getLogger("mailyard.web")


async def redirect_form(request: Request) -> Response:
    """The Redirect page of one message: whom to send it to."""
    session = pages.current(request)
    box = await pages.own_mailbox(request, session, request.path_params["box_id"])
    uid = request.path_params["uid"]
    if await pages.message_info(request, box, uid) is None:
        raise HTTPException(404, "no such message")
    return pages.page(request, "redirect.html", box=box, uid=uid, to="", errors=[], send_id=sendonce.new_id(),
                      folders=await pages.folders(request, session), notice="")


async def redirect_submit(request: Request) -> Response:
    """Resend the message to the addresses of the form."""
    session = pages.current(request)
    form = await pages.checked_form(request, session)
    box = await pages.own_mailbox(request, session, request.path_params["box_id"])
    uid = request.path_params["uid"]
    web = pages.state(request)
    to_text = str(form.get("to") or "")[:2000]
    errors: list[str] = []
    rcpts = [addr for _name, addr in compose.parse_recipients(to_text, "To", errors)]
    if not rcpts and not errors:
        errors.append("Add at least one recipient.")
    account = await web.services.store.get_account_by_id(session.account_id)
    if account is None:
        raise HTTPException(401)
    send_id = sendonce.form_id(str(form.get("send_id") or ""))
    if not errors:
        # one send per form (web/sendonce.py): a double click or a reload
        # sends nothing more, and gets the answer of the POST that sent
        earlier = await web.sends.claim(account.id, send_id)
        if earlier is not None:
            return await pages.sent_before(request, session, earlier.location, "Redirected already",
                                           "This message was redirected already (or may have been): "
                                           "it was not sent again.")
    took = not errors  # the form's id was taken above
    went = False  # it is given back unless the message may have gone
    try:
        if not errors:
            raw = await pages.read_raw(request, box, uid)
            name, _address = identity()
            try:
                data = resend(raw, resent_block((name, account.address), rcpts))
            except ValueError as exc:
                errors.append(str(exc))
            else:
                del raw
                client_ip = request.client.host if request.client else "127.0.0.1"
                went = True
                try:
                    await submit_message(web.services, account, data, rcpts, reverse_path=account.address,
                                         client_ip=client_ip, protocol="HTTP", helo="webmail", service="web")
                except StoreError as exc:
                    # it may have gone all the same (a commit applied, its answer lost): said, not retried
                    (log.warning if isinstance(exc, StoreUnavailable) else log.exception)(
                        "web: a redirect by %s may not have gone (%s)", account.address, exc)
                    web.sends.went(account.id, send_id)
                    return pages.page(request, "redirect.html", status=503, box=box, uid=uid, to=to_text,
                                      errors=[undo.perhaps_not_sent(exc)], send_id=sendonce.new_id(),
                                      folders=await pages.folders_if_any(request, session), notice="")
                except SubmissionRefused as exc:
                    went = False
                    logs.event(log, logging.INFO, "message_rejected", proto="web", ip=client_ip,
                               user=account.address, reason="refused", detail=str(exc))
                    metrics.count_message("web", "rejected", "refused")
                    errors.append(f"Not sent: {exc}")
                else:
                    done = pages.notice_url(f"/box/{box.id}/msg/{uid}", f"Message redirected to {', '.join(rcpts)}.")
                    web.sends.went(account.id, send_id, done)
                    return pages.redirect(done)
    finally:
        # every send ends here, so that no second POST of the form waits for it
        if took and not went:
            web.sends.give_back(account.id, send_id)
        elif took:
            web.sends.went(account.id, send_id)  # (a no-op when it ended with where it led)
    return pages.page(request, "redirect.html", status=400, box=box, uid=uid, to=to_text, errors=errors,
                      send_id=send_id, folders=await pages.folders(request, session),
                      notice="")


def routes() -> list[Route]:
    return [
        Route("/box/{box_id:int}/msg/{uid:int}/redirect", redirect_form, methods=["GET"]),
        Route("/box/{box_id:int}/msg/{uid:int}/redirect", redirect_submit, methods=["POST"]),
    ]
