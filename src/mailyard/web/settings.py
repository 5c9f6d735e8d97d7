"""The settings page: identities and signatures, the list and date
preferences, remote content allowed per sender, the spam threshold and
allow/block lists, password change and the sessions list.

Preferences are written to the account's settings (Store.set_settings) and
read back through prefs.py. An identity's address must be one the account
may send as: the submission ports' rule (policy/submission.py SenderRule),
so the page offers the account's own address, its aliases and its sender
grants. A password change goes through the login service (auth/service.py):
the old password is checked as a login attempt (same throttle and lockout),
and the new credentials move the account's epoch, which ends every session
of the account in every process; this browser gets a new session.
"""

from __future__ import annotations

import asyncio
import functools
import zoneinfo
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth.service import TryLater
from ..store.api import Account, StoreError
from . import login, pages, prefs, sessionlog
from .security import SESSION_COOKIE, Session, cookie_kwargs

MIN_PASSWORD = 8
MAX_PASSWORD = 1024


@functools.cache
def _zones() -> list[str]:
    """The IANA zone names offered, sorted: read once (listing the zone
    files takes tens of milliseconds, too long for the event loop per page)."""
    return sorted(zoneinfo.available_timezones())


async def sender_addresses(request: Request, account: Account) -> list[str]:
    """The addresses the account may send as and the page offers: its own,
    the aliases that lead to it alone, its sender grants without wildcards;
    each checked with the submission rule."""
    from ..delivery.submit import sender_rule

    services = pages.state(request).services
    store = services.store
    rule = await sender_rule(services, account)
    candidates = [account.address]
    for source, targets in (await store.list_aliases()).items():
        if not source.startswith("@") and any(t.casefold() == account.address.casefold() for t in targets):
            candidates.append(source)
    candidates += [g for g in await store.allowed_senders(account.id) if "*" not in g]
    out: list[str] = []
    for address in dict.fromkeys(candidates):
        if await rule.owns(address):
            out.append(address)
    return out


def _lines(value: Any, limit: int = prefs.MAX_LIST) -> tuple[list[str], list[str]]:
    """The entries of a list field (one per line or comma-separated) and
    those that are neither an address nor ``@domain``."""
    text = value if isinstance(value, str) else ""
    items = [x.strip() for x in text.replace(",", "\n").splitlines() if x.strip()]
    good = list(dict.fromkeys(x.casefold() for x in items if prefs.valid_list_entry(x)))
    bad = [x for x in items if not prefs.valid_list_entry(x)]
    return good[:limit], bad


async def settings_view(request: Request) -> Response:
    session = pages.current(request)
    return await _page(request, session)


async def _page(request: Request, session: Session, status: int = 200, errors: list[str] | None = None,
                notice: str | None = None) -> Response:
    web = pages.state(request)
    account = await web.services.store.get_account_by_id(session.account_id)
    if account is None:
        raise HTTPException(401)
    current = await prefs.load(web.services.store, session.account_id)
    sessions = await sessionlog.listing(web.services.store, session)  # of every process
    return pages.page(
        request, "settings.html", status=status, prefs=current, errors=errors or [],
        notice=request.query_params.get("notice", "") if notice is None else notice,
        folders=await pages.folders(request, session), senders=await sender_addresses(request, account),
        zones=_zones(), date_formats=prefs.DATE_FORMATS,
        per_page_choices=prefs.PER_PAGE_CHOICES, sessions=sessions,
    )


async def settings_action(request: Request) -> Response:
    session = pages.current(request)
    form = await pages.checked_form(request, session)
    web = pages.state(request)
    store = web.services.store
    section = str(form.get("section") or "")
    current = await prefs.load(store, session.account_id)
    errors: list[str] = []
    values: dict[str, Any] = {}
    notice = "Settings saved."
    if section == "general":
        per_page = pages.to_int(form.get("per_page"))
        if per_page not in prefs.PER_PAGE_CHOICES:
            errors.append("Messages per page: choose one of the offered numbers.")
        tz = str(form.get("timezone") or "")
        if tz and prefs.zone(tz) is None:
            errors.append(f"Time zone: {tz!r} is not a known zone.")
        date_format = str(form.get("date_format") or "auto")
        if date_format not in prefs.DATE_FORMATS:
            errors.append("Date format: choose one of the offered formats.")
        raw_delay = form.get("send_delay")
        delay = current.send_delay if raw_delay in (None, "") else pages.to_int(raw_delay)
        if delay is None or not 0 <= delay <= prefs.MAX_SEND_DELAY:
            errors.append(f"Undo send: give a number of seconds from 0 to {prefs.MAX_SEND_DELAY}.")
        values = {"conversations": form.get("conversations") == "on", "per_page": per_page,
                  "timezone": tz or None, "date_format": date_format, "send_delay": delay}
    elif section == "identity-add":
        account = await store.get_account_by_id(session.account_id)
        if account is None:
            raise HTTPException(401)
        address = str(form.get("address") or "").strip()
        allowed = {a.casefold(): a for a in await sender_addresses(request, account)}
        if address.casefold() not in allowed:
            errors.append(f"{address!r} is not an address you may send as.")
        name = " ".join(str(form.get("name") or "").split())[:200]
        if any(c in name for c in "\r\n\0"):
            errors.append("The name is one line.")
        identity = prefs.Identity(name, allowed.get(address.casefold(), address),
                                  str(form.get("signature_text") or "")[:prefs.MAX_SIGNATURE],
                                  str(form.get("signature_html") or "")[:prefs.MAX_SIGNATURE])
        kept = [i for i in current.identities if i.address.casefold() != address.casefold()]
        if len(kept) >= prefs.MAX_IDENTITIES:
            errors.append(f"At most {prefs.MAX_IDENTITIES} identities.")
        values = {"identities": [i.as_setting() for i in [*kept, identity]]}
        notice = f"Identity {address} saved."
    elif section == "identity-delete":
        address = str(form.get("address") or "").casefold()
        values = {"identities": [i.as_setting() for i in current.identities if i.address.casefold() != address]}
        notice = "Identity removed."
    elif section == "remote":
        allowed, bad = _lines(form.get("remote_content_allowed"))
        errors += [f"Remote content: {b!r} is neither an address nor @domain." for b in bad]
        values = {"remote_content_allowed": allowed}
    elif section == "allow-sender":
        # "always show remote content from this sender", from a message page
        sender = str(form.get("sender") or "").strip()
        if not prefs.valid_list_entry(sender):
            raise HTTPException(400, "not an address")
        values = {"remote_content_allowed": sorted({*current.remote_content_allowed, sender.casefold()})}
        notice = f"Remote content from {sender} will be shown."
    elif section == "spam":
        threshold = _float(form.get("spam_threshold"))
        if threshold is None or not 0 <= threshold <= 100:
            errors.append("Spam threshold: a number from 0 to 100.")
        allow, bad_allow = _lines(form.get("spam_allow"))
        block, bad_block = _lines(form.get("spam_block"))
        errors += [f"Always accept: {b!r} is neither an address nor @domain." for b in bad_allow]
        errors += [f"Always junk: {b!r} is neither an address nor @domain." for b in bad_block]
        values = {"spam_threshold": threshold, "spam_allow": allow, "spam_block": block}
    elif section == "password":
        return await _change_password(request, session, form)
    elif section == "sessions":
        # in every process: the others find their records gone (sessionlog.py)
        ended = await sessionlog.end_others(store, session)
        web.sessions.drop_others(session)
        return pages.redirect(pages.notice_url("/settings",
                                               f"Logged out {ended} other session{'s' * (ended != 1)}."))
    else:
        raise HTTPException(400, "unknown settings section")
    if errors:
        return await _page(request, session, 400, errors=errors, notice="")
    try:
        await store.set_settings(session.account_id, values)
    except StoreError as exc:
        return await _page(request, session, 400, errors=[str(exc)], notice="")
    back = pages.safe_back(form.get("back"), "/settings")
    return pages.redirect(pages.notice_url(back, notice))


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


async def _change_password(request: Request, session: Session, form: Any) -> Response:
    from ..auth.passwords import Credentials

    web = pages.state(request)
    old = str(form.get("old_password") or "")
    new = str(form.get("new_password") or "")
    again = str(form.get("new_password_again") or "")
    ip = request.client.host if request.client else "unknown"
    if not login.plaintext_ok(web.services.config.auth, request, ip):
        return await _page(request, session, 403, errors=["Passwords are accepted only over HTTPS here."], notice="")
    if new != again:
        return await _page(request, session, 400, errors=["The new passwords differ."], notice="")
    if not MIN_PASSWORD <= len(new) <= MAX_PASSWORD:
        return await _page(request, session, 400, notice="",
                           errors=[f"The new password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters."])
    # the old password is checked as a login (auth/service.py): the same
    # budget, delays and lockouts as the login form and the mail protocols
    result = await web.services.login.password(ip, session.address, old, "web", request.url.scheme == "https")
    if isinstance(result, TryLater):
        return await _page(request, session, 429, errors=["Too many attempts; try again later."], notice="")
    if result is None or result.id != session.account_id:
        return await _page(request, session, 400, errors=["The current password is wrong."], notice="")
    creds = await asyncio.to_thread(Credentials.from_password, new, apop=result.apop_secret or False)
    await web.services.store.set_password(result.address, creds.password_hash, apop_secret=creds.apop_secret,
                                          scram_sha256=creds.scram_sha256)
    # the epoch moved: every session of the account has ended (all processes);
    # this browser continues under a new one
    account = await web.services.store.get_account_by_id(session.account_id)
    if account is None:
        raise HTTPException(401)
    web.sessions.drop_account(account.id)
    await web.services.store.remove_web_sessions(account.id)
    new_session, cookie = web.sessions.create(account.id, account.address, account.epoch, ip,
                                              request.headers.get("user-agent", ""))
    await sessionlog.record(web.services.store, new_session)
    response = pages.redirect(pages.notice_url("/settings", "Password changed; other sessions were logged out."))
    response.set_cookie(SESSION_COOKIE, cookie, **cookie_kwargs(request))
    del new_session
    return response


def sent_to(raw: bytes) -> list[str]:
    """The addresses a message was sent to: its To and Cc fields (RFC 5322
    3.6.3) and the Delivered-To trace fields of its delivery."""
    from ..message.correspondents import header_mailboxes

    return [a for _, a in header_mailboxes(raw, ("to", "cc", "delivered-to"))]


def apply_identity(draft: Any, current: prefs.Prefs, answered_to: list[str]) -> None:
    """Fill a new message's From with an identity and add its signature:
    for a reply the identity the answered message was sent to, else the
    first one. A plain signature follows the "-- " line (RFC 3676 4.3), above
    the quoted text; an HTML one is not put in the text (web/signatures.py)."""
    if not current.identities:
        return
    identity = next((i for a in answered_to if (i := current.identity_for(a))), current.identities[0])
    from ..message.reading import readable_address

    draft.sender = readable_address(identity.name or None, identity.address)
    if identity.signature_html.strip():
        return  # shown under the text and added once when built (signatures.py)
    if identity.signature_text.strip():
        signature = "-- \n" + identity.signature_text.replace("\r\n", "\n").strip("\n") + "\n"
        body = draft.body.lstrip("\n")
        draft.body = "\n\n" + signature + ("\n" + body if body else "")


def routes() -> list[Route]:
    return [
        Route("/settings", settings_view, methods=["GET"]),
        Route("/settings", settings_action, methods=["POST"]),
    ]
