"""What a write's transaction carries and the helpers run inside one, for
every aggregate of the PostgreSQL store: the write's mailboxes and notes
(``_Tx``), answers read after the COMMIT (``_AfterCommit``), the statements
on the transaction's connection (mailbox rows, UIDs and mod-sequences,
bodies and their derived rows, quotas, expunged UIDs, holds of other
nodes), and the rows of a read, kept for the listing lane when there are
more than ``LIST_INLINE`` (``_Rows``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg
from psycopg.adapt import Transformer

from ...message.address import search_value
from ...message.threadkeys import ThreadKeys, keys_from_json
from ..api import (
    AlreadyExists,
    DeliveryTarget,
    DerivedRecord,
    Mailbox,
    MailboxSummary,
    MessageInfo,
    NotFound,
    Quota,
    QuotaExceeded,
    TooManyMailboxes,
)
from ..keywords import (
    admitted,
    defined_text,
    fitted_all,
    is_full,
    keywords_of,
    parse_defined,
    spelled,
)
from ..names import superior_names
from ..rows import QUOTA_COLS, THREAD_LOOKUP_IDS, flags_set, flags_text, message_row, quota_row

_SORT_COLS = ("date", "subject", "refwd", "from_mailbox", "from_display", "to_mailbox", "to_display", "cc_mailbox",
              "message_id", "parents")
# A result of more rows than this (a whole big mailbox's message list, the
# UIDs of its SELECT, a long list of changes) is decoded off the event loop,
# on the store's listing lane (``_Rows``, ``_decoded``): some 3 ms of
# decoding per 1,000 messages; the SQLite store's ``core.LIST_INLINE``.
LIST_INLINE = 2_000
# rows turned into Python values per call of psycopg's loader (a C call that
# keeps the GIL): the event loop's thread gets its turn between slices
_DECODE_SLICE = 500


class _AfterCommit:
    """What an ``op`` of ``_write`` returns to have its answers read once
    the COMMIT went in the same round trip (pipeline mode)."""

    def __init__(self, read: Callable[[], Any]) -> None:
        self.read = read


class _Tx:
    """What a write collects besides its SQL: the mailboxes it changed, those
    where an expunge kept rows for holders, and notes for other nodes (sent
    with pg_notify inside the transaction)."""

    def __init__(self) -> None:
        self.changed: set[int] = set()
        self.held: set[int] = set()
        self.notes: set[bytes] = set()


# --- helpers inside a write's transaction ------------------------------------------------------
# A row of mailbox_holds whose store is still connected (its validity connection's name).
_LIVE_HOLD = "EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = 'mailyard-' || h.node)"


async def _remote_hold(c: psycopg.AsyncConnection, mailbox_id: int, node: str) -> int | None:
    """The lowest mod-sequence up to which the sessions of other live nodes
    holding ``mailbox_id`` have announced its expunges; None: none holds it."""
    row = await _one(c, "SELECT min(h.seen_modseq) FROM mailbox_holds h WHERE h.mailbox_id = %s AND h.node <> %s"
                        f" AND {_LIVE_HOLD}", (mailbox_id, node))
    return None if row is None else row[0]


async def _one(c: psycopg.AsyncConnection, sql: str, args: Sequence[Any] = ()) -> Any:
    return await (await c.execute(sql, args)).fetchone()


async def _all(c: psycopg.AsyncConnection, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
    return await (await c.execute(sql, args)).fetchall()


def _message_rows(rows: list[tuple]) -> list[MessageInfo]:
    return [message_row(r) for r in rows]


def _thread_keys(rows: list[tuple]) -> dict[int, ThreadKeys]:
    return {r[0]: (r[1], r[2], bool(r[3]), r[4], tuple(r[5].split()) if r[5] else ()) for r in rows}


def _summary(mailbox: Mailbox, rows: list[tuple], defined: str | None = None) -> MailboxSummary:
    """SELECT's summary of a mailbox from its (uid, flags) rows in UID order
    and its defined keywords (``mailboxes.keywords``)."""
    uids = [r[0] for r in rows]
    keywords = frozenset(f for text in {r[1] for r in rows} for f in text.split() if not f.startswith("\\"))
    first_unseen = next((r[0] for r in rows if "\\Seen" not in flags_set(r[1])), None)
    full = is_full(keywords if defined is None else parse_defined(defined))
    return MailboxSummary(mailbox, uids, keywords, first_unseen, full)


async def _defined_keywords(c: psycopg.AsyncConnection, mailbox_id: int) -> tuple[frozenset[str], bool]:
    """(the mailbox's defined keywords, whether they are saved), inside a
    write that holds the mailbox row's lock; NULL stands for the keywords
    in use (schema migration 8)."""
    row = await _one(c, "SELECT keywords FROM mailboxes WHERE id = %s", (mailbox_id,))
    if row is None:
        raise NotFound(f"mailbox {mailbox_id} does not exist")
    if row[0] is not None:
        return parse_defined(row[0]), True
    rows = await _all(c, "SELECT DISTINCT flags FROM messages WHERE mailbox_id = %s", (mailbox_id,))
    return frozenset(f for (text,) in rows for f in text.split() if not f.startswith("\\")), False


async def _save_keywords(c: psycopg.AsyncConnection, mailbox_id: int, defined: frozenset[str]) -> None:
    await c.execute("UPDATE mailboxes SET keywords = %s WHERE id = %s", (defined_text(defined), mailbox_id))


async def _define_keywords(c: psycopg.AsyncConnection, mailbox_id: int, defined: frozenset[str], saved: bool,
                           flags: Iterable[str]) -> None:
    """Define the keywords of ``flags`` (``spelled`` against ``defined``, as
    ``_defined_keywords`` read them in this write; store/keywords.py
    ``admitted``); KeywordLimit past the bounds, before anything is written."""
    new = admitted(defined, flags)
    if new is not None or not saved:
        await _save_keywords(c, mailbox_id, new if new is not None else defined)


async def _admit_keywords(c: psycopg.AsyncConnection, mailbox_id: int,
                          flag_sets: Sequence[frozenset[str]]) -> list[frozenset[str]]:
    """``flag_sets`` as the mailbox keeps flags (``spelled``), their keywords
    defined in it; KeywordLimit past its bounds, before anything is written."""
    if not any(keywords_of(flags) for flags in flag_sets):
        return list(flag_sets)
    defined, saved = await _defined_keywords(c, mailbox_id)
    out, _ = spelled(defined, flag_sets)
    await _define_keywords(c, mailbox_id, defined, saved, {f for flags in out for f in flags})
    return out


async def _fit_keywords(c: psycopg.AsyncConnection, mailbox_id: int,
                        flag_sets: Sequence[frozenset[str]]) -> tuple[list[frozenset[str]], set[str]]:
    """(``flag_sets`` as the mailbox keeps flags without the keywords it has
    no room for, the words left out), the others defined in it with one read
    and at most one write of its row (store/keywords.py ``fitted_all``:
    copied, delivered, imported or restored messages)."""
    if not any(keywords_of(flags) for flags in flag_sets):
        return list(flag_sets), set()
    defined, saved = await _defined_keywords(c, mailbox_id)
    out, new, left = fitted_all(defined, flag_sets)
    if new is not None or not saved:
        await _save_keywords(c, mailbox_id, new if new is not None else defined)
    return out, left


async def _fitted_targets(c: psycopg.AsyncConnection, targets: Sequence[DeliveryTarget]) -> list[DeliveryTarget]:
    """``targets`` with the keywords their mailboxes have no room for left
    out (store/keywords.py ``fitted_all``): the mailboxes' rows read in one
    statement and written in at most one; they are locked already."""
    by_mailbox: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        if keywords_of(t.flags):
            by_mailbox.setdefault(t.mailbox_id, []).append(i)
    if not by_mailbox:
        return list(targets)
    rows = dict(await _all(c, "SELECT id, keywords FROM mailboxes WHERE id = ANY(%s)", (list(by_mailbox),)))
    out = list(targets)
    saves: list[tuple[int, str]] = []
    for mailbox_id, at in by_mailbox.items():
        if mailbox_id not in rows:
            raise NotFound(f"mailbox {mailbox_id} does not exist")
        text = rows[mailbox_id]
        defined, saved = ((parse_defined(text), True) if text is not None
                          else await _defined_keywords(c, mailbox_id))
        fitted_sets, new, _ = fitted_all(defined, [targets[i].flags for i in at])
        if new is not None or not saved:
            saves.append((mailbox_id, defined_text(new if new is not None else defined)))
        for i, flags in zip(at, fitted_sets, strict=True):
            out[i] = dataclasses.replace(targets[i], flags=flags)
    if saves:
        await c.execute("UPDATE mailboxes m SET keywords = v.keywords FROM unnest(%s::bigint[], %s::text[])"
                        " AS v(id, keywords) WHERE m.id = v.id", ([i for i, _ in saves], [k for _, k in saves]))
    return out


class _Rows:
    """The rows of one query for ``PostgreSQLStore._decoded``: decoded
    (``rows``) when there are at most ``LIST_INLINE``, else the result as
    libpq holds it, with the loaders of its columns, to decode in a thread
    (``load``: it touches neither the connection nor the event loop)."""

    __slots__ = ("rows", "_result", "_tx")

    def __init__(self, rows: list[tuple] | None, result: Any = None, tx: Transformer | None = None) -> None:
        self.rows = rows
        self._result = result
        self._tx = tx

    def load(self) -> list[tuple]:
        if self.rows is not None:
            return self.rows
        assert self._tx is not None and self._result is not None
        n = self._result.ntuples
        rows: list[tuple] = []
        for i in range(0, n, _DECODE_SLICE):
            rows += self._tx.load_rows(i, min(i + _DECODE_SLICE, n), tuple)
        return rows


async def _rows(c: psycopg.AsyncConnection, sql: str, args: Sequence[Any] = ()) -> _Rows:
    """The rows of ``sql``: a small result decoded, a big one kept for the
    listing lane (the loaders are set up here, on the loop, since making
    them reads the connection's encoding)."""
    cur = await c.execute(sql, args)
    result = cur.pgresult
    if result is None or result.ntuples <= LIST_INLINE:
        return _Rows(await cur.fetchall())
    tx = Transformer(cur)
    tx.set_pgresult(result)
    return _Rows(None, result, tx)


async def _domain_alias_target(c: psycopg.AsyncConnection, domain: str) -> str | None:
    row = await _one(c, "SELECT target FROM aliases WHERE lower(source) = %s AND target LIKE '@%%'", ("@" + domain,))
    return row[0][1:] if row else None


async def _next_uid_validity(c: psycopg.AsyncConnection) -> int:
    """UIDVALIDITY values strictly increase across the store (RFC 9051 2.3.1.1)."""
    row = await _one(
        c, "INSERT INTO meta(key, value) VALUES ('last_uid_validity', %s) ON CONFLICT (key) DO UPDATE"
        " SET value = greatest(%s::bigint, meta.value::bigint + 1)::text RETURNING value",
        (str(int(time.time())), int(time.time())))
    return int(row[0])


async def _has_entries(c: psycopg.AsyncConnection, table: str, account_id: int, n: int) -> bool:
    """Whether the account has at least ``n`` rows in ``table`` (mailboxes
    or subscriptions): past ``n - 1`` entries of its (account_id, name)
    index, not a count of them all."""
    return n <= 0 or await _one(c, f"SELECT 1 FROM {table} WHERE account_id = %s LIMIT 1 OFFSET %s",
                                (account_id, n - 1)) is not None


async def _lock_account(c: psycopg.AsyncConnection, account_id: int) -> None:
    """Lock the account's row, so the transactions (any node) that count or
    add its mailboxes and subscriptions do so one after the other."""
    await c.execute("SELECT id FROM accounts WHERE id = %s FOR UPDATE", (account_id,))


async def _check_room(c: psycopg.AsyncConnection, account_id: int, count: int, limit: int | None) -> None:
    """TooManyMailboxes unless the account has room for ``count`` more
    mailboxes under ``limit`` (the account's row locked first)."""
    if limit is None or count <= 0:
        return
    await _lock_account(c, account_id)
    if await _has_entries(c, "mailboxes", account_id, limit - count + 1):
        raise TooManyMailboxes(f"the account has the most folders allowed ({limit})")


async def _missing_superiors(c: psycopg.AsyncConnection, account_id: int, name: str) -> list[str]:
    """The superior names of ``name`` that are not mailboxes of the account,
    outermost first (RFC 9051 6.3.4); the account's row is locked first,
    so two transactions making the same superior do so one after the other."""
    await _lock_account(c, account_id)
    wanted = superior_names(name)
    if not wanted:
        return []
    found = {r[0] for r in await _all(c, "SELECT name FROM mailboxes WHERE account_id = %s AND name = ANY(%s)",
                                      (account_id, wanted))}
    return [parent for parent in wanted if parent not in found]


async def _subscribe(c: psycopg.AsyncConnection, account_id: int, name: str, limit: int | None) -> bool:
    """Subscribe ``name`` inside the caller's transaction; False, writing
    nothing, when it is not subscribed yet and the account has ``limit``
    subscriptions already (``Store.max_subscriptions``; the account's row
    locked first)."""
    if limit is not None:
        await _lock_account(c, account_id)
        if await _has_entries(c, "subscriptions", account_id, limit) and await _one(
                c, "SELECT 1 FROM subscriptions WHERE account_id = %s AND name = %s", (account_id, name)) is None:
            return False
    await c.execute("INSERT INTO subscriptions(account_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (account_id, name))
    return True


async def _insert_mailbox(c: psycopg.AsyncConnection, account_id: int, name: str, special_use: str | None,
                          subscribe: bool = False, limit: int | None = None, subscriptions: int | None = None) -> int:
    """Create a mailbox inside the caller's transaction (subscribed if
    asked, while the account has fewer than ``subscriptions``). ``limit``:
    TooManyMailboxes when the account has that many already
    (``_check_room``)."""
    await _check_room(c, account_id, 1, limit)
    if await _one(c, "SELECT 1 FROM mailboxes WHERE account_id = %s AND name = %s", (account_id, name)):
        raise AlreadyExists(f"mailbox {name} exists already")
    row = await _one(c, "INSERT INTO mailboxes(account_id, name, uid_validity, special_use, keywords)"
                        " VALUES (%s, %s, %s, %s, '') RETURNING id", (account_id, name, await _next_uid_validity(c), special_use))
    if subscribe:
        await _subscribe(c, account_id, name, subscriptions)
    return row[0]


async def _lock_mailboxes(c: psycopg.AsyncConnection, ids: Iterable[int]) -> None:
    """Lock mailbox rows in id order, so writers of several mailboxes never deadlock."""
    await c.execute("SELECT id FROM mailboxes WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (sorted(set(ids)),))


async def _bump_modseq(c: psycopg.AsyncConnection, mailbox_id: int) -> int:
    row = await _one(c, "UPDATE mailboxes SET highest_modseq = highest_modseq + 1 WHERE id = %s"
                        " RETURNING highest_modseq", (mailbox_id,))
    if row is None:
        raise NotFound("no such mailbox")
    return row[0]


_QUOTA_SQL = (f"SELECT {QUOTA_COLS} FROM accounts WHERE id = (SELECT account_id FROM mailboxes"
              " WHERE id = %s)")


async def _mailbox_quota(c: psycopg.AsyncConnection, mailbox_id: int) -> Quota:
    row = await _one(c, _QUOTA_SQL, (mailbox_id,))
    if row is None:
        raise NotFound(f"mailbox {mailbox_id} does not exist")
    return quota_row(row)


async def _check_targets(c: psycopg.AsyncConnection, targets: Sequence[DeliveryTarget], body_len: int) -> None:
    over = [t.mailbox_id for t in targets if t.enforce_quota
            and not (await _mailbox_quota(c, t.mailbox_id)).fits(len(t.trace_prefix) + body_len, 1)]
    if over:
        raise QuotaExceeded("over quota", over)


_BODY_SQL = "INSERT INTO bodies(data, refs) VALUES (%s, %s) RETURNING id"


async def _store_body(c: psycopg.AsyncConnection, body: bytes, refs: int) -> int:
    return (await _one(c, _BODY_SQL, (body, refs)))[0]


async def _insert_targets(c: psycopg.AsyncConnection, tx: _Tx, body_id: int, body_len: int,
                          targets: Sequence[DeliveryTarget]) -> list[int]:
    now = time.time()
    uids = []
    for t in targets:
        row = await _one(c, "UPDATE mailboxes SET uid_next = uid_next + 1, highest_modseq = highest_modseq + 1"
                            " WHERE id = %s RETURNING uid_next - 1, highest_modseq", (t.mailbox_id,))
        if row is None:
            raise NotFound(f"mailbox {t.mailbox_id} does not exist")
        uid, modseq = row
        # the mailbox row is locked by the UPDATE
        flags = (await _fit_keywords(c, t.mailbox_id, [t.flags]))[0][0]
        await c.execute(
            "INSERT INTO messages(mailbox_id, uid, body_id, prefix, size, flags, internal_date, modseq, save_date)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (t.mailbox_id, uid, body_id, t.trace_prefix, len(t.trace_prefix) + body_len, flags_text(flags),
             t.internal_date if t.internal_date is not None else now, modseq, now))
        tx.changed.add(t.mailbox_id)
        uids.append(uid)
    return uids


# One statement per target: its UID and mod-sequence from the mailbox row
# (locked by the UPDATE, or before by _lock_mailboxes) and its message row.
_TARGET_SQL = (
    "WITH u AS (UPDATE mailboxes SET uid_next = uid_next + 1, highest_modseq = highest_modseq + 1"
    " WHERE id = %s RETURNING id, uid_next - 1 AS uid, highest_modseq)"
    " INSERT INTO messages(mailbox_id, uid, body_id, prefix, size, flags, internal_date, modseq, save_date)"
    " SELECT u.id, u.uid, %s, %s, %s, %s, %s, u.highest_modseq, %s FROM u RETURNING uid")


# _TARGET_SQL for one target whose quota the statement checks itself (Quota.fits):
# no UID is taken and no row written when the message does not fit.
_TARGET_QUOTA_SQL = (
    "WITH u AS (UPDATE mailboxes x SET uid_next = x.uid_next + 1, highest_modseq = x.highest_modseq + 1"
    " WHERE x.id = %s AND (NOT %s OR EXISTS (SELECT 1 FROM accounts a WHERE a.id = x.account_id"
    "  AND (a.quota_storage IS NULL OR a.used_storage + %s <= a.quota_storage)"
    "  AND (a.quota_messages IS NULL OR a.used_messages + 1 <= a.quota_messages)))"
    " RETURNING x.id, x.uid_next - 1 AS uid, x.highest_modseq)"
    " INSERT INTO messages(mailbox_id, uid, body_id, prefix, size, flags, internal_date, modseq, save_date)"
    " SELECT u.id, u.uid, %s, %s, %s, %s, %s, u.highest_modseq, %s FROM u RETURNING uid")


async def _queue_targets(c: psycopg.AsyncConnection, body_id: int, body_len: int,
                         targets: Sequence[DeliveryTarget]) -> list[tuple[int, psycopg.AsyncCursor]]:
    """Send the message rows of ``targets`` (``_TARGET_SQL``) without reading
    the answers: in pipeline mode they travel with what precedes them;
    ``_collect_targets`` reads the UIDs."""
    now = time.time()
    return [(t.mailbox_id, await c.execute(
        _TARGET_SQL, (t.mailbox_id, body_id, t.trace_prefix, len(t.trace_prefix) + body_len, flags_text(t.flags),
                      t.internal_date if t.internal_date is not None else now, now)))
            for t in targets]


async def _collect_targets(tx: _Tx, pending: Sequence[tuple[int, psycopg.AsyncCursor]]) -> list[int]:
    uids = []
    for mailbox_id, cur in pending:
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"mailbox {mailbox_id} does not exist")
        tx.changed.add(mailbox_id)
        uids.append(row[0])
    return uids


async def _save_derived(c: psycopg.AsyncConnection, body_id: int, rec: DerivedRecord) -> None:
    """A body's derived data, header fields, text index and SORT keys with
    its thread (RFC 8474 5.2), in the write that stores it, after its
    message rows (the thread is looked up among the account's messages)."""
    await _save_body_rows(c, body_id, rec)
    await _save_sort_keys(c, body_id, rec)


async def _save_body_rows(c: psycopg.AsyncConnection, body_id: int, rec: DerivedRecord) -> None:
    """The derived rows that need no message row: written before the
    mailbox rows are locked, in one round trip (pipeline mode; inside a
    pipeline already, with the statements that follow)."""
    header, body = _clean(rec.header_text.casefold()), _clean(rec.body_text.casefold())
    async with contextlib.nullcontext() if c.pgconn.pipeline_status else c.pipeline():
        await c.execute("INSERT INTO body_derived(body_id, envelope, bodystructure, body, meta)"
                        " VALUES (%s, %s, %s, %s, %s)",
                        (body_id, rec.envelope_imap, rec.bodystructure_imap, rec.body_imap, json.dumps(rec.meta)))
        if rec.headers:
            async with c.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO header_fields(body_id, name, n, value, folded) VALUES (%s, %s, %s, %s, %s)",
                    [(body_id, name, n, _clean(value), _clean(search_value(name, value).casefold()))
                     for n, (name, value) in enumerate(rec.headers)])
        await c.execute("INSERT INTO search_text(body_id, header, body, words)"
                        " VALUES (%s, %s, %s, to_tsvector('simple', left(%s, 1000000)))",
                        (body_id, header, body, body))


async def _save_sort_keys(c: psycopg.AsyncConnection, body_id: int, rec: DerivedRecord,
                          mailbox_ids: Sequence[int] | None = None) -> None:
    """The body's SORT keys and thread. The thread is looked up among the
    messages of the accounts that hold the body: those of ``mailbox_ids``
    when given (the statement may then precede the message rows), else
    those its message rows, written before, belong to."""
    k = keys_from_json(rec.meta["sort"])
    ids = list(dict.fromkeys([*k.parents[-THREAD_LOOKUP_IDS:], *([k.message_id] if k.message_id else [])]))
    accounts = ("(SELECT x2.account_id FROM mailboxes x2 WHERE x2.id = ANY(%s))" if mailbox_ids is not None else
                "(SELECT x2.account_id FROM messages m2 JOIN mailboxes x2 ON x2.id = m2.mailbox_id"
                " WHERE m2.body_id = %s)")
    # the thread: the first body of the same account(s) carrying one of the ids
    await c.execute(
        f"INSERT INTO sort_keys(body_id, {', '.join(_SORT_COLS)}, thread_id)"
        f" VALUES ({', '.join(['%s'] * 11)}, least(%s, (SELECT min(k.thread_id) FROM sort_keys k"
        " WHERE k.message_id = ANY(%s) AND k.body_id != %s"
        " AND EXISTS (SELECT 1 FROM messages m JOIN mailboxes x ON x.id = m.mailbox_id"
        f"  WHERE m.body_id = k.body_id AND x.account_id IN {accounts}))))",
        (body_id, k.date, _clean(k.subject), k.refwd, _clean(k.from_mailbox), _clean(k.from_display),
         _clean(k.to_mailbox), _clean(k.to_display), _clean(k.cc_mailbox),
         _clean(k.message_id) if k.message_id else None, _clean(" ".join(k.parents)),
         body_id, ids, body_id, list(mailbox_ids) if mailbox_ids is not None else body_id))


def _clean(text: str) -> str:
    """PostgreSQL text holds no NUL character."""
    return text.replace("\x00", "") if "\x00" in text else text


async def _release_bodies(c: psycopg.AsyncConnection, body_ids: Sequence[int]) -> None:
    """Drop one reference to each body; a body nobody uses goes with its derived data."""
    if not body_ids:
        return
    await c.execute("UPDATE bodies b SET refs = refs - v.n FROM (SELECT x AS id, count(*) AS n"
                    " FROM unnest(%s::bigint[]) x GROUP BY x) v WHERE b.id = v.id", (list(body_ids),))
    await c.execute("DELETE FROM bodies WHERE id = ANY(%s) AND refs <= 0", (list(set(body_ids)),))


async def _remember_expunged(c: psycopg.AsyncConnection, mailbox_id: int, uids: Sequence[int], modseq: int) -> None:
    """RFC 7162 3.2.10: expunged UIDs with the mod-sequence that removed them (VANISHED)."""
    await c.execute("INSERT INTO expunged(mailbox_id, uid, modseq) SELECT %s, u, %s FROM unnest(%s::bigint[]) u"
                    " ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq",
                    (mailbox_id, modseq, list(uids)))


async def _drop_mailbox_messages(c: psycopg.AsyncConnection, mailbox_id: int) -> None:
    body_ids = [r[0] for r in await _all(c, "SELECT body_id FROM messages WHERE mailbox_id IN (%s, %s)",
                                         (mailbox_id, -mailbox_id))]
    await c.execute("DELETE FROM messages WHERE mailbox_id IN (%s, %s)", (mailbox_id, -mailbox_id))
    await c.execute("DELETE FROM expunged WHERE mailbox_id = %s", (mailbox_id,))
    await _release_bodies(c, body_ids)


async def _drop_queue_entry(c: psycopg.AsyncConnection, queue_id: int, body_id: int) -> None:
    await c.execute("DELETE FROM queue WHERE id = %s", (queue_id,))
    await _release_bodies(c, [body_id])
