"""HTML signatures in the webmail: which identity signs a message, the
sanitised previews the compose page shows and switches with the From field
(``static/signature.js``), and a resumed draft's signature taken off again.

An identity with an HTML signature does not put its signature in the text
the user edits: it is shown under the body and added when the message is
built (``render.outgoing`` over ``message/compose.py`` ``signed_bodies``),
so the sent message is multipart/alternative with the signature once in
each part. An identity with only a plain signature keeps it in the text.
"""

from __future__ import annotations

from ..message.address import Mailbox, parse_address_list
from ..message.compose import signature_text, unsigned
from . import prefs, render
from .worker import TooComplex


def html_identity(current: prefs.Prefs, address: str) -> prefs.Identity | None:
    """The identity of ``address`` if it signs with HTML."""
    identity = current.identity_for(address)
    return identity if identity is not None and identity.signature_html.strip() else None


def for_sender(current: prefs.Prefs, address: str) -> tuple[str, str] | None:
    """(plain, HTML) signature a message from ``address`` gets when built."""
    identity = html_identity(current, address)
    return (identity.signature_text, identity.signature_html) if identity else None


def previews(current: prefs.Prefs) -> list[tuple[str, str]]:
    """(casefolded address, sanitised HTML) of every identity that signs
    with HTML, for the compose page's preview."""
    out = []
    for identity in current.identities:
        if identity.signature_html.strip():
            try:
                out.append((identity.address.casefold(), render.signature_html(identity.signature_html)))
            except TooComplex:
                continue
    return out


def address_of(field: str) -> str:
    """The address of a From field as typed ("Name <a@b>" or "a@b")."""
    items = parse_address_list(field) if field.strip() else []
    boxes = [b for b in items if isinstance(b, Mailbox)]
    return boxes[0].addr_spec if boxes else field.strip()


def unsign_draft(current: prefs.Prefs, sender_field: str, body: str) -> str:
    """A saved draft's text without the HTML-signing identity's signature,
    which building the message adds again."""
    identity = html_identity(current, address_of(sender_field))
    if identity is None:
        return body
    try:
        safe = render.signature_html(identity.signature_html)
    except TooComplex:
        return body
    return unsigned(body, signature_text(identity.signature_text, safe))
