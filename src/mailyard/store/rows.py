"""Rows as every SQL backend stores them: the column lists and the
conversions of mailbox, message, quota and queue-figure rows to
store/api.py's types, shared by store/sqlite/ and store/postgresql/ (their
tables have the same columns for these)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .api import Mailbox, MessageInfo, QueueStats, Quota

MAILBOX_COLS = (
    "id, account_id, name, uid_validity, uid_next, highest_modseq, special_use,"
    " EXISTS(SELECT 1 FROM subscriptions s WHERE s.account_id = mailboxes.account_id AND s.name = mailboxes.name)"
)


def mailbox_row(row: tuple) -> Mailbox:
    return Mailbox(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]))


MESSAGE_COLS = "mailbox_id, uid, size, flags, internal_date, modseq, save_date"


def flags_text(flags: Iterable[str]) -> str:
    """Flags as stored: sorted, space-separated."""
    return " ".join(sorted(set(flags)))


_FLAG_SETS: dict[str, frozenset[str]] = {}


def flags_set(text: str) -> frozenset[str]:
    # A mailbox has few distinct flag combinations: share their frozensets
    # (SELECT / FETCH FLAGS of 10,000 messages builds 10,000 MessageInfos).
    fs = _FLAG_SETS.get(text)
    if fs is None:
        fs = frozenset(text.split()) if text else frozenset()
        if len(_FLAG_SETS) < 4096:
            _FLAG_SETS[text] = fs
    return fs


def message_row(row: tuple) -> MessageInfo:
    return MessageInfo(row[0], row[1], row[2], flags_set(row[3]), row[4], row[5], row[6])


# The entry count and oldest entry beside each state's recipient count, one
# row per state (one row of NULLs for the state when no recipient is left).
QUEUE_STATS_SQL = (
    "SELECT e.n, e.oldest, r.state, r.n FROM (SELECT count(*) AS n, min(created) AS oldest FROM queue) AS e"
    " LEFT JOIN (SELECT state, count(*) AS n FROM queue_rcpts GROUP BY state) AS r ON 1 = 1"
)


def queue_stats_row(rows: Sequence[tuple]) -> QueueStats:
    """``QUEUE_STATS_SQL``'s rows as a ``QueueStats``."""
    entries, oldest = rows[0][0], rows[0][1]
    return QueueStats(int(entries), {r[2]: int(r[3]) for r in rows if r[2] is not None},
                      float(oldest) if oldest is not None else None)


QUOTA_COLS = "quota_storage, quota_messages, used_storage, used_messages"


def quota_row(row: tuple) -> Quota:
    return Quota(storage_limit=row[0], messages_limit=row[1], storage_used=row[2], messages_used=row[3])


# The ids a new body's thread is looked up by (RFC 8474 5.2): its own
# Message-ID and the last of its parent ids (its nearest ancestors).
THREAD_LOOKUP_IDS = 20


def merged_list(current: object, adding: Sequence[str], cap: int) -> list[str]:
    """A list setting with ``adding`` appended (entries already there, compared
    without case, are not added again), the oldest dropped past ``cap``
    (``Store.update_setting_list``); a value that is no list counts as empty."""
    entries = [str(e) for e in current] if isinstance(current, list) else []
    seen = {e.casefold() for e in entries}
    for item in adding:
        if item.casefold() not in seen:
            seen.add(item.casefold())
            entries.append(item)
    return entries[max(0, len(entries) - cap):]
