"""The address book on PostgreSQL: the same entries, validation and
suggestion order as the SQLite store's (store/sqlite/contacts.py, whose pure
helpers this module shares), in the tables of migration 2."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from ..api import AddressBookFull, Contact, NotFound, Suggestion
from ..sqlite import contacts as sqlite_contacts
from ..sqlite.contacts import (
    MAX_CORRESPONDENTS,
    _clean,
    _like_prefix,
    _row,
    _search_text,
    contact_suggestions,
    tally_correspondents,
    with_correspondents,
)

_COLS = "id, name, emails, phones, org, note, uid"
# SQLite's COLLATE NOCASE folds ASCII letters only, whatever the database's locale
_NOCASE = "translate(name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') COLLATE \"C\""


class ContactsMixin:
    """Contacts and correspondents of each account (mixed into PostgreSQLStore)."""

    _write: Any
    _q: Any
    _q1: Any

    async def add_contact(self, account_id: int, contact: Contact) -> Contact:
        entry = _clean(contact)

        async def op(c: psycopg.AsyncConnection, tx: object) -> int:
            # the account's row locked: concurrent adds count one after another
            if await (await c.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE",
                                      (account_id,))).fetchone() is None:
                raise NotFound(f"no account with id {account_id}")
            limit = sqlite_contacts.MAX_CONTACTS
            if await (await c.execute("SELECT 1 FROM contacts WHERE account_id = %s ORDER BY id LIMIT 1 OFFSET %s",
                                      (account_id, limit - 1))).fetchone() is not None:
                raise AddressBookFull(f"the address book is full ({limit} contacts)")
            row = await (await c.execute(
                "INSERT INTO contacts(account_id, name, emails, phones, org, note, uid, search, updated)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (account_id, entry.name, json.dumps(list(entry.emails)), json.dumps(list(entry.phones)),
                 entry.org, entry.note, entry.uid, _search_text(entry), time.time()),
            )).fetchone()
            return int(row[0])

        new_id = await self._write(op)
        return Contact(entry.name, entry.emails, entry.phones, entry.org, entry.note, entry.uid, new_id)

    async def update_contact(self, account_id: int, contact: Contact) -> Contact:
        entry = _clean(contact)

        async def op(c: psycopg.AsyncConnection, tx: object) -> None:
            cur = await c.execute(
                "UPDATE contacts SET name = %s, emails = %s, phones = %s, org = %s, note = %s, uid = %s,"
                " search = %s, updated = %s WHERE id = %s AND account_id = %s",
                (entry.name, json.dumps(list(entry.emails)), json.dumps(list(entry.phones)), entry.org,
                 entry.note, entry.uid, _search_text(entry), time.time(), contact.id, account_id),
            )
            if cur.rowcount == 0:
                raise NotFound("no such contact")

        await self._write(op)
        return entry

    async def delete_contact(self, account_id: int, contact_id: int) -> None:
        async def op(c: psycopg.AsyncConnection, tx: object) -> None:
            cur = await c.execute("DELETE FROM contacts WHERE id = %s AND account_id = %s", (contact_id, account_id))
            if cur.rowcount == 0:
                raise NotFound("no such contact")

        await self._write(op)

    async def get_contact(self, account_id: int, contact_id: int) -> Contact | None:
        row = await self._q1(f"SELECT {_COLS} FROM contacts WHERE id = %s AND account_id = %s",
                             (contact_id, account_id))
        return _row(row) if row else None

    async def list_contacts(self, account_id: int, prefix: str = "", limit: int | None = None,
                            offset: int = 0) -> list[Contact]:
        sql = f"SELECT {_COLS} FROM contacts WHERE account_id = %s"
        args: list = [account_id]
        if prefix:
            sql += " AND search LIKE %s ESCAPE '\\'"
            args.append(_like_prefix(prefix))
        sql += f" ORDER BY {_NOCASE}, id"
        if limit is not None:
            sql += " LIMIT %s"
            args.append(max(0, limit))
        if offset:
            sql += " OFFSET %s"
            args.append(max(0, offset))
        return [_row(r) for r in await self._q(sql, args)]

    async def note_correspondents(self, account_id: int, addresses: Sequence[tuple[str, str]],
                                  sent: bool, when: float | None = None) -> None:
        now = time.time() if when is None else when
        rows = tally_correspondents(addresses)
        if not rows:
            return
        column = "sent" if sent else "received"

        async def op(c: psycopg.AsyncConnection, tx: object) -> None:
            # Pipeline mode (``_write``): the upserts and the count in one
            # round trip, so a sender's row (every delivery from that sender
            # updates it) stays locked only for that and the COMMIT. An
            # account removed meanwhile gets no row (the INSERT selects none).
            for address in sorted(rows):  # one order for every writer: no deadlock between them
                name, times = rows[address]
                await c.execute(
                    f"INSERT INTO correspondents AS o (account_id, address, name, folded, {column}, last)"
                    " SELECT id, %s, %s, %s, %s, %s FROM accounts WHERE id = %s"
                    f" ON CONFLICT (account_id, address) DO UPDATE SET {column} = o.{column} + excluded.{column},"
                    " name = CASE WHEN excluded.name <> '' THEN excluded.name ELSE o.name END,"
                    " folded = CASE WHEN excluded.name <> '' THEN excluded.folded ELSE o.folded END,"
                    " last = greatest(o.last, excluded.last)",
                    (address, name, " " + name.casefold(), times, now, account_id),
                )
            row = await (await c.execute("SELECT count(*) FROM correspondents WHERE account_id = %s",
                                         (account_id,))).fetchone()
            count = int(row[0])
            if count > MAX_CORRESPONDENTS:
                await c.execute(
                    "DELETE FROM correspondents WHERE account_id = %s AND address IN (SELECT address FROM"
                    " correspondents WHERE account_id = %s ORDER BY 2 * sent + received, last LIMIT %s)",
                    (account_id, account_id, count - MAX_CORRESPONDENTS),
                )

        await self._write(op, pipeline=True)

    async def suggest_addresses(self, account_id: int, prefix: str, limit: int = 10) -> list[Suggestion]:
        limit = max(0, min(limit, 100))
        prefix = prefix.strip()
        if not prefix or not limit:
            return []
        out, seen = contact_suggestions(await self.list_contacts(account_id, prefix, limit))
        folded_prefix = prefix.casefold()
        rows = await self._q(
            "SELECT address, name, sent, received FROM correspondents WHERE account_id = %s"
            " AND (substr(address, 1, %s) = %s OR folded LIKE %s ESCAPE '\\')"
            " ORDER BY 2 * sent + received DESC, last DESC LIMIT %s",
            (account_id, len(folded_prefix), folded_prefix, _like_prefix(prefix), limit + len(seen)),
        )
        return with_correspondents(out, seen, rows)[:limit]
