"""The address book: a user's contacts, and the addresses they write to and
receive mail from (recipient suggestions).

``correspondents`` is counted when mail is submitted and delivered rather
than found by a query over the header data: a suggestion is then one
indexed read of an account's few thousand rows, whatever the size of its
mailboxes. Each account keeps at most ``MAX_CORRESPONDENTS`` addresses; the
least used go first.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..api import AddressBookFull, Contact, InvalidName, NotFound, Suggestion
from .core import SQLiteCore
from .writer import WriteContext

MAX_CORRESPONDENTS = 5000
MAX_FIELD = 1000  # characters of a name, organisation, address or phone
MAX_NOTE = 10_000
MAX_VALUES = 20  # addresses or phones of one entry
MAX_CONTACTS = 10_000  # entries of one account's address book

_COLS = "id, name, emails, phones, org, note, uid"


def _row(row: tuple) -> Contact:
    return Contact(id=row[0], name=row[1], emails=tuple(json.loads(row[2])), phones=tuple(json.loads(row[3])),
                   org=row[4], note=row[5], uid=row[6])


def _clean(contact: Contact) -> Contact:
    """The entry with its text trimmed and bounded; InvalidName when it has
    neither a name nor an address, or a value holds a line break."""

    def one(value: str, limit: int = MAX_FIELD) -> str:
        value = (value or "").strip()
        if len(value) > limit:
            raise InvalidName(f"a contact's field is longer than {limit} characters")
        return value

    name = one(contact.name)
    emails = tuple(dict.fromkeys(e for e in (one(x) for x in contact.emails) if e))
    phones = tuple(dict.fromkeys(p for p in (one(x) for x in contact.phones) if p))
    if len(emails) > MAX_VALUES or len(phones) > MAX_VALUES:
        raise InvalidName(f"a contact has at most {MAX_VALUES} addresses and {MAX_VALUES} phones")
    for value in (name, contact.org, contact.uid, *emails, *phones):
        if any(c in (value or "") for c in "\r\n\0"):
            raise InvalidName("a contact's name, address or phone is one line")
    if not name and not emails:
        raise InvalidName("a contact needs a name or an address")
    return Contact(name=name or emails[0], emails=emails, phones=phones, org=one(contact.org),
                   note=one(contact.note, MAX_NOTE), uid=one(contact.uid) or f"urn:uuid:{_uuid4()}",
                   id=contact.id)


def _uuid4() -> str:
    import uuid

    return str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))


def _search_text(contact: Contact) -> str:
    """Space-separated keys a prefix may match: the name, each of its words,
    each address; casefolded, each preceded by a space."""
    name = contact.name.casefold()
    keys = [name, *name.split(), *(e.casefold() for e in contact.emails)]
    return "".join(" " + k for k in dict.fromkeys(keys))


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern for ``prefix`` at the start of a key of _search_text."""
    escaped = prefix.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"% {escaped}%"



def contact_suggestions(contacts: Sequence[Contact]) -> tuple[list[Suggestion], set[str]]:
    """Address-book entries as suggestions (each address once), and the
    case-folded addresses taken: the first part of ``suggest_addresses``."""
    out: list[Suggestion] = []
    seen: set[str] = set()
    for contact in contacts:
        for address in contact.emails:
            folded = address.casefold()
            if folded not in seen:
                seen.add(folded)
                out.append(Suggestion(contact.name, address, True))
    return out, seen


def tally_correspondents(addresses: Iterable[tuple[str, str]]) -> dict[str, tuple[str, int]]:
    """The (display name, addr-spec) pairs of ``note_correspondents`` by
    folded address: the last non-empty name and how many times the address
    was given (each time one message); unusable addresses left out."""
    rows: dict[str, tuple[str, int]] = {}
    for name, address in addresses:
        address = (address or "").strip()
        if "@" not in address or len(address) > MAX_FIELD or any(c in address for c in "\r\n\0 "):
            continue
        key = address.casefold()
        name = " ".join((name or "").split())[:MAX_FIELD]
        known = rows.get(key)
        rows[key] = (name or known[0], known[1] + 1) if known else (name, 1)
    return rows


def with_correspondents(out: list[Suggestion], seen: set[str], rows: Iterable[Sequence[Any]]) -> list[Suggestion]:
    """``out`` followed by the correspondents (address, name, sent, received)
    not among the addresses already there, in the order given."""
    for address, name, sent, received in rows:
        if address not in seen:
            seen.add(address)
            out.append(Suggestion(name, address, False, int(sent), int(received)))
    return out

class ContactsMixin(SQLiteCore):
    """Contacts and correspondents of each account."""

    async def add_contact(self, account_id: int, contact: Contact) -> Contact:
        entry = _clean(contact)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> int:
            if c.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone() is None:
                raise NotFound(f"no account with id {account_id}")
            # the entry past the limit, if there is one (the index on account_id)
            if c.execute("SELECT 1 FROM contacts WHERE account_id = ? LIMIT 1 OFFSET ?",
                         (account_id, MAX_CONTACTS - 1)).fetchone() is not None:
                raise AddressBookFull(f"the address book is full ({MAX_CONTACTS} contacts)")
            cur = c.execute(
                "INSERT INTO contacts(account_id, name, emails, phones, org, note, uid, search, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (account_id, entry.name, json.dumps(list(entry.emails)), json.dumps(list(entry.phones)),
                 entry.org, entry.note, entry.uid, _search_text(entry), time.time()),
            )
            return int(cur.lastrowid or 0)

        new_id = await self._write(op)
        return Contact(entry.name, entry.emails, entry.phones, entry.org, entry.note, entry.uid, new_id)

    async def update_contact(self, account_id: int, contact: Contact) -> Contact:
        entry = _clean(contact)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            cur = c.execute(
                "UPDATE contacts SET name = ?, emails = ?, phones = ?, org = ?, note = ?, uid = ?, search = ?,"
                " updated = ? WHERE id = ? AND account_id = ?",
                (entry.name, json.dumps(list(entry.emails)), json.dumps(list(entry.phones)), entry.org,
                 entry.note, entry.uid, _search_text(entry), time.time(), contact.id, account_id),
            )
            if cur.rowcount == 0:
                raise NotFound("no such contact")

        await self._write(op)
        return entry

    async def delete_contact(self, account_id: int, contact_id: int) -> None:
        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            cur = c.execute("DELETE FROM contacts WHERE id = ? AND account_id = ?", (contact_id, account_id))
            if cur.rowcount == 0:
                raise NotFound("no such contact")

        await self._write(op)

    async def get_contact(self, account_id: int, contact_id: int) -> Contact | None:
        row = self._q1(f"SELECT {_COLS} FROM contacts WHERE id = ? AND account_id = ?", (contact_id, account_id))
        return _row(row) if row else None

    async def list_contacts(self, account_id: int, prefix: str = "", limit: int | None = None,
                            offset: int = 0) -> list[Contact]:
        sql = f"SELECT {_COLS} FROM contacts WHERE account_id = ?"
        args: list = [account_id]
        if prefix:
            sql += " AND search LIKE ? ESCAPE '\\'"
            args.append(_like_prefix(prefix))
        sql += " ORDER BY name COLLATE NOCASE, id"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            args += [-1 if limit is None else max(0, limit), max(0, offset)]
        return [_row(r) for r in self._q(sql, args)]

    async def note_correspondents(self, account_id: int, addresses: Sequence[tuple[str, str]],
                                  sent: bool, when: float | None = None) -> None:
        now = time.time() if when is None else when
        rows = tally_correspondents(addresses)
        if not rows:
            return
        column = "sent" if sent else "received"

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if c.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone() is None:
                return  # removed meanwhile: nothing to remember
            for address, (name, times) in rows.items():
                c.execute(
                    f"INSERT INTO correspondents(account_id, address, name, folded, {column}, last)"
                    " VALUES (?, ?, ?, ?, ?, ?)"
                    f" ON CONFLICT(account_id, address) DO UPDATE SET {column} = {column} + excluded.{column},"
                    " name = CASE WHEN excluded.name != '' THEN excluded.name ELSE name END,"
                    " folded = CASE WHEN excluded.name != '' THEN excluded.folded ELSE folded END,"
                    " last = max(last, excluded.last)",
                    (account_id, address, name, " " + name.casefold(), times, now),
                )
            count = c.execute("SELECT count(*) FROM correspondents WHERE account_id = ?", (account_id,)).fetchone()[0]
            if count > MAX_CORRESPONDENTS:
                c.execute(
                    "DELETE FROM correspondents WHERE account_id = ? AND address IN (SELECT address FROM"
                    " correspondents WHERE account_id = ? ORDER BY 2 * sent + received, last LIMIT ?)",
                    (account_id, account_id, count - MAX_CORRESPONDENTS),
                )

        await self._write(op)

    async def suggest_addresses(self, account_id: int, prefix: str, limit: int = 10) -> list[Suggestion]:
        limit = max(0, min(limit, 100))
        prefix = prefix.strip()
        if not prefix or not limit:
            return []
        out, seen = contact_suggestions(await self.list_contacts(account_id, prefix, limit))
        folded_prefix = prefix.casefold()
        pattern = _like_prefix(prefix)
        # the account's rows only (primary key prefix); the LIKE on the name
        # reads at most MAX_CORRESPONDENTS of them
        rows = self._q(
            "SELECT address, name, sent, received FROM correspondents WHERE account_id = ?"
            " AND (substr(address, 1, ?) = ? OR folded LIKE ? ESCAPE '\\')"
            " ORDER BY 2 * sent + received DESC, last DESC LIMIT ?",
            (account_id, len(folded_prefix), folded_prefix, pattern, limit + len(seen)),
        )
        return with_correspondents(out, seen, rows)[:limit]
