"""The address book pages: list, add (also from a message), edit, delete,
vCard 4 import and export (message/vcard.py), and the suggestions a
recipient field asks for as the user types (``/contacts/suggest``, JSON).

Every contact id from a request is looked up within the session's account
(store: another account's id is as unknown as a missing one).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..message.address import is_valid_addr_spec
from ..message.correspondents import header_mailboxes
from ..message.reading import readable_address
from ..message.vcard import Card, VCardError, parse, serialise
from ..store.api import AddressBookFull, Contact, InvalidName, Mailbox, NotFound
from . import pages, prefs

MAX_IMPORT = 5 * 1024 * 1024  # octets of a vCard file
MAX_SUGGESTIONS = 10
IMPORT_CHUNK = 200
MAX_QUERY = 100
PER_PAGE = 200  # contacts a page of /contacts lists
MAX_PAGE = 10_000  # a page number past this is the last one asked for


def remote_allowed(raw: bytes, box: Mailbox) -> bool:
    """Remote content of this message is allowed by the user's list
    (``remote_content_allowed``: addresses or ``@domain``) for its sender.
    Never in the Junk folder: a From field is easily forged, and spam that
    names a trusted sender must not get its tracking images loaded."""
    allowed = prefs.current().remote_content_allowed
    if not allowed or (box.special_use or "").lower() == "\\junk":
        return False
    senders = header_mailboxes(raw, ("from",))
    return bool(senders) and all(
        a.casefold() in allowed or "@" + a.rpartition("@")[2].casefold() in allowed for _, a in senders)


def _lines(value: Any) -> tuple[str, ...]:
    text = value if isinstance(value, str) else ""
    return tuple(x.strip() for x in text.replace(",", "\n").splitlines() if x.strip())


def _contact_from_form(form: Any, contact_id: int = 0, uid: str = "") -> tuple[Contact, list[str]]:
    emails = _lines(form.get("emails") or form.get("email"))
    errors = [f"{e!r} is not a valid address" for e in emails if not is_valid_addr_spec(e, smtputf8=True)]
    contact = Contact(name=str(form.get("name") or ""), emails=emails, phones=_lines(form.get("phones")),
                      org=str(form.get("org") or ""), note=str(form.get("note") or ""), uid=uid, id=contact_id)
    return contact, errors


async def contacts_view(request: Request) -> Response:
    session = pages.current(request)
    store = pages.state(request).services.store
    q = (request.query_params.get("q") or "").strip()[:MAX_QUERY]
    page_no = min(max(pages.to_int(request.query_params.get("page")) or 0, 0), MAX_PAGE)
    edit = None
    edit_id = pages.to_int(request.query_params.get("edit"))
    if edit_id is not None:
        edit = await store.get_contact(session.account_id, edit_id)
        if edit is None:
            raise HTTPException(404, "no such contact")
    return await _page(request, session, q=q, edit=edit, page_no=page_no)


async def _page(request: Request, session: Any, status: int = 200, q: str = "", edit: Contact | None = None,
                errors: list[str] | None = None, notice: str | None = None, page_no: int = 0) -> Response:
    store = pages.state(request).services.store
    # one page (and one more entry, to know whether there is a next page)
    items = await store.list_contacts(session.account_id, q, PER_PAGE + 1, page_no * PER_PAGE)
    return pages.page(request, "contacts.html", status=status, contacts=items[:PER_PAGE], q=q, edit=edit,
                      page_no=page_no, has_next=len(items) > PER_PAGE, errors=errors or [],
                      folders=await pages.folders(request, session),
                      notice=request.query_params.get("notice", "") if notice is None else notice)


async def contacts_action(request: Request) -> Response:
    session = pages.current(request)
    form = await pages.checked_form(request, session)
    store = pages.state(request).services.store
    action = str(form.get("action") or "")
    back = pages.safe_back(form.get("back"), "/contacts")
    try:
        if action == "add":
            contact, errors = _contact_from_form(form)
            if errors:
                return await _page(request, session, 400, errors=errors)
            added = await store.add_contact(session.account_id, contact)
            return pages.redirect(pages.notice_url(back, f"{added.name} added to contacts."))
        if action in ("update", "delete"):
            contact_id = pages.to_int(form.get("id"))
            old = await store.get_contact(session.account_id, contact_id) if contact_id is not None else None
            if old is None:
                raise HTTPException(404, "no such contact")
            if action == "delete":
                await store.delete_contact(session.account_id, old.id)
                return pages.redirect(pages.notice_url("/contacts", f"{old.name} deleted."))
            contact, errors = _contact_from_form(form, old.id, old.uid)
            if errors:
                return await _page(request, session, 400, edit=old, errors=errors)
            await store.update_contact(session.account_id, contact)
            return pages.redirect(pages.notice_url("/contacts", f"{contact.name or 'Contact'} saved."))
        if action == "import":
            return await _import(request, session, form)
    except (InvalidName, AddressBookFull) as exc:
        return await _page(request, session, 400, errors=[str(exc)])
    except NotFound:
        raise HTTPException(404, "no such contact") from None
    raise HTTPException(400, "unknown action")


async def _import(request: Request, session: Any, form: Any) -> Response:
    store = pages.state(request).services.store
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return await _page(request, session, 400, errors=["Choose a vCard file (.vcf) to import."])
    data = await upload.read(MAX_IMPORT + 1)
    if len(data) > MAX_IMPORT:
        return await _page(request, session, 400, errors=["The file is larger than 5 MB."])
    try:
        # a large file is parsed in a thread: the event loop keeps serving
        # other requests meanwhile
        cards = await asyncio.to_thread(lambda: parse(data.decode("utf-8", "replace")))
    except VCardError as exc:
        return await _page(request, session, 400, errors=[f"Not imported: {exc}."])
    existing = {c.uid: c for c in await store.list_contacts(session.account_id) if c.uid}
    added = updated = skipped = full = 0

    async def one(card: Card) -> str:
        contact = Contact(card.name, tuple(card.emails), tuple(card.phones), card.org, card.note, card.uid)
        old = existing.get(card.uid) if card.uid else None
        try:
            if old is not None:  # the same card again (RFC 6350 6.7.6 UID): replaced
                await store.update_contact(session.account_id, Contact(
                    contact.name, contact.emails, contact.phones, contact.org, contact.note, old.uid, old.id))
                return "updated"
            await store.add_contact(session.account_id, contact)
            return "added"
        except InvalidName:
            return "skipped"
        except AddressBookFull:
            return "full"

    # a chunk of writes at a time: the store's writer commits them together
    for start in range(0, len(cards), IMPORT_CHUNK):
        for outcome in await asyncio.gather(*(one(c) for c in cards[start:start + IMPORT_CHUNK])):
            added += outcome == "added"
            updated += outcome == "updated"
            skipped += outcome == "skipped"
            full += outcome == "full"
        if full:
            break
    text = f"Imported {added} new, {updated} updated" + (f", {skipped} skipped (not readable)" if skipped else "")
    if full:
        text += (f". Not added: {len(cards) - added - updated - skipped} more, the address book is full"
                 " (delete some contacts first)")
    return pages.redirect(pages.notice_url("/contacts", text + "."))


async def contacts_export(request: Request) -> Response:
    session = pages.current(request)
    store = pages.state(request).services.store
    cards = [Card(c.name, list(c.emails), list(c.phones), c.org, c.note, c.uid)
             for c in await store.list_contacts(session.account_id)]
    from .render import content_disposition

    return Response(serialise(cards).encode("utf-8"), media_type="text/vcard; charset=utf-8",
                    headers={"Content-Disposition": content_disposition("attachment", "contacts.vcf")})


async def suggest(request: Request) -> Response:
    """``{"suggestions": [{"name", "address", "label", "contact"}]}`` for the
    recipient field's text ``q``: at most MAX_SUGGESTIONS, this account's only."""
    session = pages.current(request)
    store = pages.state(request).services.store
    q = (request.query_params.get("q") or "").strip()[:MAX_QUERY]
    found = await store.suggest_addresses(session.account_id, q, MAX_SUGGESTIONS) if q else []
    return JSONResponse({"suggestions": [
        {"name": s.name, "address": s.address, "label": readable_address(s.name, s.address),
         "contact": s.contact} for s in found]})


def routes() -> list[Route]:
    return [
        Route("/contacts", contacts_view, methods=["GET"]),
        Route("/contacts", contacts_action, methods=["POST"]),
        Route("/contacts/export.vcf", contacts_export, methods=["GET"]),
        Route("/contacts/suggest", suggest, methods=["GET"]),
    ]
