"""Derived data and search on PostgreSQL: FETCH's stored ENVELOPE,
BODYSTRUCTURE and object ids (RFC 8474), header and text search (a ``LIKE``
on the case-folded text, indexed by pg_trgm), SORT and THREAD keys.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from typing import Literal

from ...message.objectids import EMAIL, THREAD, opaque_id
from ...message.threadkeys import SortKeys, ThreadKeys
from ..api import DERIVED_FIELDS, MailboxRef
from .core import PostgreSQLCore
from .transaction import _SORT_COLS, _rows, _thread_keys

_IMAP_COLS = {"envelope_imap": "envelope", "bodystructure_imap": "bodystructure", "body_imap": "body"}
_META_KEYS = frozenset({"envelope", "bodystructure", "parts", "messages", "date", "size", "preview"})
_OBJECT_IDS = frozenset({"email_id", "thread_id"})
# SORT keys (RFC 5256 section 3, RFC 5957) over messages m and sort_keys k;
# text compares in the C collation: code point order, as i;unicode-casemap
# keys are compared (RFC 5051 2)
_ORDER_BY = {"ARRIVAL": "m.internal_date", "SIZE": "m.size", "DATE": "coalesce(k.date, m.internal_date)",
             "SUBJECT": 'k.subject COLLATE "C"', "FROM": 'k.from_mailbox COLLATE "C"',
             "TO": 'k.to_mailbox COLLATE "C"', "CC": 'k.cc_mailbox COLLATE "C"',
             "DISPLAYFROM": 'k.from_display COLLATE "C"', "DISPLAYTO": 'k.to_display COLLATE "C"'}


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matching itself anywhere."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class SearchMixin(PostgreSQLCore):
    """Derived data, SEARCH, SORT and THREAD keys."""

    # --- derived data and search ---------------------------------------------------------
    async def _object_key(self) -> bytes:
        """The secret of the opaque EMAILID and THREADID (RFC 8474), read once."""
        if self._objectid_key is None:
            row = await self._q1("SELECT value FROM meta WHERE key = 'objectid_key'")
            assert row is not None
            self._objectid_key = bytes.fromhex(row[0])
        return self._objectid_key

    async def get_derived(self, mailbox: MailboxRef, uids: Sequence[int], fields: Iterable[str] | None = None,
                          expunged: bool = False) -> dict[int, dict]:
        mailbox_id = await self._owned(mailbox)
        wanted = set(DERIVED_FIELDS - _IMAP_COLS.keys() - _OBJECT_IDS) if fields is None else set(fields)
        unknown = wanted - DERIVED_FIELDS
        if unknown:
            raise ValueError(f"unknown derived fields: {', '.join(sorted(unknown))}")
        imap = [k for k in _IMAP_COLS if k in wanted]
        meta_keys = _META_KEYS & wanted
        ids = [mailbox_id, -mailbox_id] if expunged else [mailbox_id]
        cols = ", ".join(["m.uid", "m.body_id", *(f"d.{_IMAP_COLS[k]}" for k in imap), "d.meta", "k.thread_id"])
        rows = await self._q(
            f"SELECT DISTINCT ON (m.uid) {cols} FROM messages m JOIN body_derived d ON d.body_id = m.body_id"
            " LEFT JOIN sort_keys k ON k.body_id = m.body_id"
            " WHERE m.mailbox_id = ANY(%s) AND m.uid = ANY(%s) ORDER BY m.uid, m.mailbox_id DESC",
            (ids, sorted(set(uids))))
        out: dict[int, dict] = {}
        body_of: dict[int, int] = {}
        thread_of: dict[int, int] = {}
        for row in rows:
            uid = row[0]
            body_of[uid] = row[1]
            thread_of[uid] = row[-1] if row[-1] is not None else row[1]
            item: dict = {key: bytes(row[2 + i]) for i, key in enumerate(imap)}
            if meta_keys:
                data = json.loads(row[2 + len(imap)])
                for key in meta_keys:
                    item[key] = data.get(key)
            out[uid] = item
        if "body_id" in wanted:
            for uid, item in out.items():
                item["body_id"] = body_of[uid]
        if "email_id" in wanted or "thread_id" in wanted:
            key = await self._object_key()
            for uid, item in out.items():
                if "email_id" in wanted:
                    item["email_id"] = opaque_id(key, EMAIL, body_of[uid])
                if "thread_id" in wanted:
                    item["thread_id"] = opaque_id(key, THREAD, thread_of[uid])
        if "headers" in wanted and out:
            by_body: dict[int, dict[str, list[str]]] = {}
            for body_id, name, value in await self._q(
                    "SELECT body_id, name, value FROM header_fields WHERE body_id = ANY(%s) ORDER BY body_id, n",
                    (sorted(set(body_of.values())),)):
                by_body.setdefault(body_id, {}).setdefault(name, []).append(value)
            for uid in out:
                out[uid]["headers"] = by_body.get(body_of[uid], {})
        return out

    async def search_headers(self, mailbox: MailboxRef, field: str, text: str,
                             within: Collection[int] | None = None) -> set[int]:
        mailbox_id = await self._owned(mailbox)
        sql = ("SELECT m.uid FROM messages m WHERE m.mailbox_id = %s"
               + (" AND m.uid = ANY(%s::bigint[])" if within is not None else "")
               + " AND EXISTS (SELECT 1 FROM header_fields h WHERE h.body_id = m.body_id AND h.name = %s")
        args: tuple = (mailbox_id, *([sorted(within)] if within is not None else []), field.lower())
        if not text:
            rows = await self._q(sql + ")", args)
        else:
            # LIKE on the case-folded value: the trigram index (schema.py)
            # finds the candidates, the comparison itself is the exact
            # substring test of RFC 9051 6.4.4
            rows = await self._q(sql + " AND h.folded LIKE %s)", (*args, _like(text.casefold())))
        return {r[0] for r in rows}

    async def search_text(self, mailbox: MailboxRef, text: str, where: Literal["body", "text"],
                          within: Collection[int] | None = None) -> set[int]:
        mailbox_id = await self._owned(mailbox)
        needle = text.strip()
        only = " AND m.uid = ANY(%s::bigint[])" if within is not None else ""
        some: tuple = (sorted(within),) if within is not None else ()
        if not needle:
            return {r[0] for r in await self._q(f"SELECT uid FROM messages m WHERE mailbox_id = %s{only}",
                                                (mailbox_id, *some))}
        folded = needle.casefold()
        # LIKE on the case-folded text: the trigram index (schema.py) finds
        # the candidates, the comparison itself is the exact substring test
        # of RFC 9051 6.4.4
        cond = "t.body LIKE %s" if where == "body" else "(t.body LIKE %s OR t.header LIKE %s)"
        args: tuple = (_like(folded),) if where == "body" else (_like(folded), _like(folded))
        rows = await self._q(f"SELECT m.uid FROM messages m JOIN search_text t ON t.body_id = m.body_id"
                             f" WHERE m.mailbox_id = %s{only} AND {cond}", (mailbox_id, *some, *args))
        return {r[0] for r in rows}

    async def sort_keys(self, mailbox: MailboxRef, uids: Sequence[int]) -> dict[int, SortKeys]:
        mailbox_id = await self._owned(mailbox)
        rows = await self._q(
            "SELECT m.uid, " + ", ".join(f"k.{c}" for c in _SORT_COLS) + " FROM messages m JOIN sort_keys k"
            " ON k.body_id = m.body_id WHERE m.mailbox_id = %s AND m.uid = ANY(%s)", (mailbox_id, sorted(set(uids))))
        return {r[0]: SortKeys(r[1], r[2], bool(r[3]), r[4], r[5], r[6], r[7], r[8], r[9], tuple(r[10].split()))
                for r in rows}

    async def sort_order(self, mailbox: MailboxRef, keys: Sequence[tuple[str, bool]], uids: Sequence[int]) -> list[int]:
        mailbox_id = await self._owned(mailbox)
        if not uids:
            return []
        order = ", ".join(f"{_ORDER_BY[name]}{' DESC' if reverse else ''}" for name, reverse in keys)
        rows = await self._q(
            "SELECT m.uid FROM messages m LEFT JOIN sort_keys k ON k.body_id = m.body_id"
            f" WHERE m.mailbox_id = %s AND m.uid = ANY(%s) ORDER BY {order}, m.uid",
            (mailbox_id, sorted(set(uids))))
        return [r[0] for r in rows]

    async def thread_keys(self, mailbox: MailboxRef, uids: Sequence[int]) -> dict[int, ThreadKeys]:
        mailbox_id = await self._owned(mailbox)
        async with self._conn() as c:
            rows = await _rows(
                c, "SELECT m.uid, coalesce(k.date, m.internal_date), k.subject, k.refwd, k.message_id, k.parents"
                " FROM messages m JOIN sort_keys k ON k.body_id = m.body_id WHERE m.mailbox_id = %s"
                " AND m.uid = ANY(%s)", (mailbox_id, sorted(set(uids))))
        return await self._decoded(_thread_keys, rows)
