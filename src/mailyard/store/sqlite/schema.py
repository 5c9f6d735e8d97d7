"""The tables of the SQLite store (version 11), and how an older data
directory is brought up to date when it is opened (``create``).

The schema only adds (``CREATE ... IF NOT EXISTS``); ``migrate`` does what
adding cannot:

Version 2: the derived data of a body is split into ``body_derived`` (a small
record: ENVELOPE / BODYSTRUCTURE in IMAP syntax and as JSON, part offsets) and
``header_fields`` (decoded header fields, an index for SEARCH FROM/SUBJECT/
HEADER ...); the decoded text lives only in the full-text index
(textindex.py). ``bodies.derived`` is now just the "indexed" marker.
Subscriptions are by name in ``subscriptions`` (RFC 9051 6.3.7: a name may be
subscribed whether or not a mailbox exists).

Version 3: ``accounts``, ``mailboxes`` and ``bodies`` take AUTOINCREMENT ids,
so an id once handed out is never given to another row (sqlite_sequence keeps
the high-water mark); sessions and webmail cookies hold these ids, and a reused
one would point them at another user's data. ``accounts.epoch`` counts
password changes: a session remembers the epoch it logged in under and ends
when it moves. A version-2 directory is rebuilt in place, ids preserved.

Version 4: quotas (RFC 9208). ``accounts.quota_storage`` (octets) and
``accounts.quota_messages`` are the operator's limits, NULL for none;
``accounts.used_storage`` and ``accounts.used_messages`` are running totals
of the account's messages (RFC822.SIZE and count), kept by the triggers of
``USAGE_SCHEMA`` inside the transaction of every insert and delete of a
message row, so reading an account's usage is one row whatever its size.
``messages.save_date`` (RFC 8514) is when the message was saved into its
mailbox (delivery, APPEND, COPY, MOVE). A migrated directory gets its
totals summed once, and its rows get their INTERNALDATE as save date: the
date they were saved is not known, and NIL would tell a client that the
mailbox keeps no save dates at all (RFC 8514 3).

Version 5: ``sort_keys``, one row per derived body with the typed keys IMAP
SORT and THREAD compare (RFC 5256, RFC 5957: message/threadkeys.py
SortKeys) and the body's thread (RFC 8474 5.2 THREADID), written with its
other derived data. A SORT of 100,000 messages reads one narrow row per
message instead of parsing JSON, and no per-process cache is needed. Bodies
derived before version 5 get their row lazily: from their derived data by
the background indexer (``meta.sort_keys_backfill``: the last body id done),
or by the first SORT / THREAD / FETCH THREADID that meets them.
``meta.objectid_key`` is the store's secret for the opaque EMAILID and
THREADID (message/objectids.py), made once per data directory.

Version 6: ``account_settings``, a JSON value per key per account.

Version 7: the address book. ``contacts`` holds the entries a user keeps
(a vCard's name, addresses, phones, organisation, note, UID);
``correspondents`` the addresses a user has written to and received mail
from, counted as it happens (submission, delivery), so recipient
suggestions are one indexed read of a small table however large the
mailboxes (a query over the header data would read every message's From).

Version 8: ``web_sessions``, the webmail's sessions (a digest of each
session's id, its account, times, address and browser), so every worker
process lists the sessions of an account and ends them (web/sessionlog.py).
Version 9: ``fts_fields``, a trigram index of the address fields and Subject
for header search (textindex.py). Bodies derived before it get their rows
from the background indexer (``meta.fields_index_backfill``: the last body id
done, then "done"); until then header search reads the mailbox's rows, as
before.

Version 10: ``body_data``, the bytes of a body kept in the index instead of
a segment file (bodies.py ``INLINE_MAX``); its ``bodies`` row has segment 0
(``blobs.INLINE``: segment files are numbered from 1). Bodies written before
stay in their segments; nothing is moved. A ``body_data`` row goes with its
``bodies`` row (ON DELETE CASCADE), whatever code deletes that.

Version 11: ``mailboxes.keywords``, the keywords defined in the mailbox
(store/keywords.py: what bounds them is one look at the mailbox's row).
NULL, as every mailbox of a migrated directory has it, stands for the
keywords its messages have, read the first time a write needs them
(sqlite/keywords.py ``defined_keywords``).

A store is never downgraded: code that knows a lower version than the
directory's refuses to open it (``check_version``), since it would neither
read nor release what the later versions added (a version 9 server would
look for an inline body in a segment file, and leave its bytes behind when
the body goes).
"""

from __future__ import annotations

import logging
import re
import secrets
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from ..api import StoreError
from . import textindex

log = logging.getLogger("mailyard.store")

SCHEMA_VERSION = 11

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS domains (
    name TEXT PRIMARY KEY COLLATE NOCASE
);
CREATE TABLE IF NOT EXISTS accounts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    address       TEXT NOT NULL UNIQUE COLLATE NOCASE,
    domain        TEXT NOT NULL COLLATE NOCASE REFERENCES domains(name),
    password_hash TEXT NOT NULL,
    apop_secret   TEXT,
    scram_sha256  TEXT,
    created       REAL NOT NULL,
    epoch         INTEGER NOT NULL DEFAULT 0,  -- version 3: moves with every password change
    quota_storage  INTEGER,                    -- version 4: octets, NULL: no limit (RFC 9208 STORAGE)
    quota_messages INTEGER,                    -- version 4: NULL: no limit (RFC 9208 MESSAGE)
    used_storage   INTEGER NOT NULL DEFAULT 0, -- version 4: kept by the USAGE_SCHEMA triggers
    used_messages  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS aliases (
    source TEXT NOT NULL COLLATE NOCASE,
    target TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY (source, target)
);
CREATE TABLE IF NOT EXISTS lists (
    address TEXT PRIMARY KEY COLLATE NOCASE
);
CREATE TABLE IF NOT EXISTS list_members (
    list   TEXT NOT NULL COLLATE NOCASE REFERENCES lists(address) ON DELETE CASCADE,
    member TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY (list, member)
);
CREATE TABLE IF NOT EXISTS mailboxes (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id     INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    uid_validity   INTEGER NOT NULL,
    uid_next       INTEGER NOT NULL DEFAULT 1,
    highest_modseq INTEGER NOT NULL DEFAULT 1,
    special_use    TEXT,
    subscribed     INTEGER NOT NULL DEFAULT 1,  -- version 1; version 2 uses subscriptions
    recent_uid     INTEGER NOT NULL DEFAULT 0,  -- version 2: UIDs above are \\Recent (RFC 3501 2.3.2)
    keywords       TEXT,  -- version 11: defined keywords, space-separated; NULL: those in use (keywords.py)
    UNIQUE (account_id, name)
);
-- One row per stored body; several messages (recipients, COPY) may share it.
CREATE TABLE IF NOT EXISTS bodies (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    segment  INTEGER NOT NULL,  -- its segment file; version 10: 0 for a body kept in body_data
    offset   INTEGER NOT NULL,  -- in the segment file; 0 for a body kept in body_data
    length   INTEGER NOT NULL,
    refs     INTEGER NOT NULL,
    derived  TEXT              -- NULL until indexed; version 1 kept the derived JSON here, version 2 a marker
);
CREATE INDEX IF NOT EXISTS bodies_unindexed ON bodies(id) WHERE derived IS NULL;
CREATE INDEX IF NOT EXISTS bodies_segment ON bodies(segment);
-- Version 10: the bytes of a small body, written in the transaction of the
-- rows that use it (bodies.py); its own table, so that updating a body's
-- refs or derived marker does not rewrite its bytes.
CREATE TABLE IF NOT EXISTS body_data (
    body_id INTEGER PRIMARY KEY REFERENCES bodies(id) ON DELETE CASCADE,  -- a body of segment 0
    data    BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    mailbox_id    INTEGER NOT NULL,
    uid           INTEGER NOT NULL,
    body_id       INTEGER NOT NULL,
    prefix        BLOB NOT NULL,
    size          INTEGER NOT NULL,
    flags         TEXT NOT NULL,
    internal_date REAL NOT NULL,
    modseq        INTEGER NOT NULL,
    save_date     REAL NOT NULL DEFAULT 0,  -- version 4: RFC 8514 save date
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_modseq ON messages(mailbox_id, modseq);
CREATE INDEX IF NOT EXISTS messages_body ON messages(body_id);
-- Counts and flag facts of a mailbox without reading its messages (STATUS,
-- SELECT, LIST-STATUS; mailboxes.py): the unseen and the \\Deleted messages
-- are few, so a partial index of each is small and counted quickly; the
-- flag combinations with sizes are a narrow index read instead of the rows
-- (MESSAGES and SIZE count it; the distinct combinations, for the keywords
-- SELECT announces, are found by seeking from one to the next). The WHERE
-- terms are those of the queries (mailboxes.py UNSEEN, DELETED): SQLite uses
-- a partial index only for a query with the same term.
CREATE INDEX IF NOT EXISTS messages_unseen ON messages(mailbox_id, uid)
    WHERE instr(' ' || flags || ' ', ' \\Seen ') = 0;
CREATE INDEX IF NOT EXISTS messages_deleted ON messages(mailbox_id, uid)
    WHERE instr(' ' || flags || ' ', ' \\Deleted ') > 0;
CREATE INDEX IF NOT EXISTS messages_flags ON messages(mailbox_id, flags, size);
-- RFC 7162 3.2.10: remembered expunges, for VANISHED (EARLIER) and POP3/IMAP sync.
CREATE TABLE IF NOT EXISTS expunged (
    mailbox_id INTEGER NOT NULL,
    uid        INTEGER NOT NULL,
    modseq     INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS segments (
    id   INTEGER PRIMARY KEY,
    size INTEGER NOT NULL DEFAULT 0,
    live INTEGER NOT NULL DEFAULT 0
);
-- The full-text index of derived text (SEARCH BODY / TEXT) has its own
-- tables: textindex.py.
-- Version 2: derived data per body, computed once (at delivery or by the
-- background indexer). Rows go with the body (bodies.py release_bodies).
CREATE TABLE IF NOT EXISTS body_derived (
    body_id       INTEGER PRIMARY KEY,  -- bodies.id
    envelope      BLOB NOT NULL,        -- IMAP ENVELOPE, RFC 9051 syntax
    bodystructure BLOB NOT NULL,        -- IMAP BODYSTRUCTURE
    body          BLOB NOT NULL,        -- IMAP BODY (non-extensible form)
    meta          TEXT NOT NULL         -- JSON: envelope, bodystructure, parts, messages, date, size
);
CREATE TABLE IF NOT EXISTS header_fields (
    body_id INTEGER NOT NULL,
    name    TEXT NOT NULL,     -- lower-case field name
    n       INTEGER NOT NULL,  -- position in the header
    value   TEXT NOT NULL,     -- decoded (RFC 2047) value
    folded  TEXT NOT NULL,     -- value.casefold(), for case-insensitive substring search
    PRIMARY KEY (body_id, name, n)
) WITHOUT ROWID;
-- Version 5: SORT / THREAD keys and the thread of each derived body (see
-- the module docstring); rows go with the body (bodies.py release_bodies).
CREATE TABLE IF NOT EXISTS sort_keys (
    body_id      INTEGER PRIMARY KEY,  -- bodies.id
    date         REAL,                 -- Date header, UTC seconds; NULL: the INTERNALDATE (RFC 5256 2.2)
    subject      TEXT NOT NULL,        -- casemapped base subject (RFC 5256 2.1, RFC 5051)
    refwd        INTEGER NOT NULL,     -- the subject marked a reply or forward
    from_mailbox TEXT NOT NULL,        -- casemapped addr-mailbox of the first From address
    from_display TEXT NOT NULL,        -- casemapped display name, else the address (RFC 5957)
    to_mailbox   TEXT NOT NULL,
    to_display   TEXT NOT NULL,
    cc_mailbox   TEXT NOT NULL,
    message_id   TEXT,                 -- Message-ID's msg-id without <>, NULL: none valid
    parents      TEXT NOT NULL,        -- References, else In-Reply-To: msg-ids separated by spaces
    thread_id    INTEGER NOT NULL      -- RFC 8474 5.2: the body id of the thread's first known message
);
CREATE INDEX IF NOT EXISTS sort_keys_message_id ON sort_keys(message_id) WHERE message_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS subscriptions (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    PRIMARY KEY (account_id, name)
) WITHOUT ROWID;
-- Addresses (or patterns, with *) an account may send as besides its own and
-- its aliases, e.g. a shared role address (policy/submission.py).
CREATE TABLE IF NOT EXISTS sender_grants (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    pattern    TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY (account_id, pattern)
) WITHOUT ROWID;
-- Version 6: an account's settings, a JSON value per key (Store.get_settings).
CREATE TABLE IF NOT EXISTS account_settings (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (account_id, key)
) WITHOUT ROWID;
-- Version 8: webmail sessions (Store.add_web_session); key: a digest of the id.
CREATE TABLE IF NOT EXISTS web_sessions (
    key        TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created    REAL NOT NULL,
    last_seen  REAL NOT NULL,
    ip         TEXT NOT NULL,
    agent      TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS web_sessions_account ON web_sessions(account_id, last_seen);
-- Version 7: the address book (contacts.py).
CREATE TABLE IF NOT EXISTS contacts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,   -- vCard FN
    emails     TEXT NOT NULL,   -- JSON list, the preferred first
    phones     TEXT NOT NULL,   -- JSON list
    org        TEXT NOT NULL,
    note       TEXT NOT NULL,
    uid        TEXT NOT NULL,   -- vCard UID (RFC 6350 6.7.6), kept across export and import
    search     TEXT NOT NULL,   -- casefolded name and addresses, for prefix search
    updated    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS contacts_account ON contacts(account_id, name);
CREATE TABLE IF NOT EXISTS correspondents (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    address    TEXT NOT NULL,             -- casefolded addr-spec
    name       TEXT NOT NULL,             -- the display name last seen with it
    folded     TEXT NOT NULL,             -- ' ' + casefolded name, for prefix search of its words
    sent       INTEGER NOT NULL DEFAULT 0,  -- messages the user wrote to it
    received   INTEGER NOT NULL DEFAULT 0,  -- messages received from it
    last       REAL NOT NULL,
    PRIMARY KEY (account_id, address)
) WITHOUT ROWID;
"""

# The outbound queue (queue.py): one row per entry, one per remaining
# recipient, and the attempt log.
QUEUE_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id           INTEGER PRIMARY KEY,
    body_id      INTEGER NOT NULL,
    reverse_path TEXT NOT NULL,
    envid        TEXT,
    ret          TEXT,
    smtputf8     INTEGER NOT NULL DEFAULT 0,
    eight_bit    INTEGER NOT NULL DEFAULT 0,
    size         INTEGER NOT NULL,
    created      REAL NOT NULL,
    warned       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS queue_rcpts (
    id           INTEGER PRIMARY KEY,
    queue_id     INTEGER NOT NULL REFERENCES queue(id) ON DELETE CASCADE,
    address      TEXT NOT NULL,
    domain       TEXT NOT NULL COLLATE NOCASE,
    notify       TEXT,
    orcpt        TEXT,
    state        TEXT NOT NULL DEFAULT 'pending',
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_reply   TEXT,
    last_host    TEXT
);
CREATE INDEX IF NOT EXISTS queue_rcpts_due ON queue_rcpts(next_attempt) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS queue_rcpts_entry ON queue_rcpts(queue_id);
CREATE TABLE IF NOT EXISTS queue_attempts (
    queue_id INTEGER NOT NULL REFERENCES queue(id) ON DELETE CASCADE,
    ts       REAL NOT NULL,
    domain   TEXT NOT NULL,
    host     TEXT,
    outcome  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_attempts_entry ON queue_attempts(queue_id);
"""

# Version 4: every account's usage (RFC 9208 STORAGE and MESSAGE) follows
# its message rows in the same transaction, whichever write adds or removes
# them (delivery, APPEND, COPY, MOVE, EXPUNGE, DELETE, account removal).
# Created after ``migrate``: the columns they use exist by then.
USAGE_SCHEMA = """
CREATE TRIGGER IF NOT EXISTS messages_usage_insert AFTER INSERT ON messages BEGIN
    UPDATE accounts SET used_storage = used_storage + NEW.size, used_messages = used_messages + 1
     WHERE id = (SELECT account_id FROM mailboxes WHERE id = NEW.mailbox_id);
END;
CREATE TRIGGER IF NOT EXISTS messages_usage_delete AFTER DELETE ON messages BEGIN
    UPDATE accounts SET used_storage = used_storage - OLD.size, used_messages = used_messages - 1
     WHERE id = (SELECT account_id FROM mailboxes WHERE id = OLD.mailbox_id);
END;
"""

# Tables whose ids sessions hold (directly, or through a derived-data cache
# keyed by body): version 3 gives them AUTOINCREMENT ids. For each, the
# places where an id of a row deleted above max(id) may still be seen.
_NEVER_REUSED: dict[str, tuple[str, ...]] = {
    "accounts": ("SELECT max(account_id) FROM mailboxes", "SELECT max(account_id) FROM subscriptions"),
    "mailboxes": ("SELECT max(mailbox_id) FROM messages", "SELECT max(mailbox_id) FROM expunged"),
    "bodies": ("SELECT max(body_id) FROM messages", "SELECT max(body_id) FROM body_derived",
               "SELECT max(body_id) FROM header_fields", "SELECT max(body_id) FROM search_text"),
}


def check_version(c: sqlite3.Connection) -> int:
    """The directory's schema version (SCHEMA_VERSION for a new one); a
    StoreError if a later mailyard wrote it, before anything is changed."""
    if c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
        return SCHEMA_VERSION
    row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = SCHEMA_VERSION if row is None else int(row[0])
    if version > SCHEMA_VERSION:
        where = c.execute("PRAGMA database_list").fetchone()[2]
        directory = str(Path(where).parent) if where else "this data directory"
        raise StoreError(
            f"the data directory {directory} was written by a newer mailyard (store schema version {version};"
            f" this one knows up to {SCHEMA_VERSION}): run that version or a later one on it;"
            " a store is never downgraded"
        )
    return version


def create(c: sqlite3.Connection) -> None:
    """Create what is missing and bring an older directory to SCHEMA_VERSION
    (refused for a directory of a later version: ``check_version``)."""
    check_version(c)
    c.executescript(SCHEMA)
    c.executescript(textindex.SCHEMA)
    c.executescript(QUEUE_SCHEMA)
    c.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    c.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('objectid_key', ?)", (secrets.token_hex(32),))
    migrate(c)
    c.executescript(USAGE_SCHEMA)
    textindex.drop_former(c)
    rederive_on_new_format(c)


def rederive_on_new_format(c: sqlite3.Connection) -> bool:
    """Derived data is a cache of ``message.derived`` (FORMAT_VERSION): when
    the derivation changed since the directory was last opened, every body is
    marked for deriving again; the background indexer refills body_derived,
    header_fields and the text index, and SEARCH derives what it meets first.
    Until a body is redone FETCH answers from its former data. Not a schema
    change: the tables stay as they are. Returns True if bodies were marked."""
    from ...message.derived import FORMAT_VERSION

    row = c.execute("SELECT value FROM meta WHERE key = 'derived_format'").fetchone()
    if row is not None and row[0] == str(FORMAT_VERSION):
        return False
    c.execute("BEGIN IMMEDIATE")
    try:
        marked = c.execute("UPDATE bodies SET derived = NULL WHERE derived IS NOT NULL").rowcount
        c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('derived_format', ?)", (str(FORMAT_VERSION),))
        c.execute("COMMIT")
    except BaseException:
        if c.in_transaction:
            c.execute("ROLLBACK")
        raise
    if marked:
        log.info("store: message derivation changed; %d bodies are derived again in the background", marked)
    return bool(marked)


def migrate(c: sqlite3.Connection) -> None:
    """Bring an older data directory to SCHEMA_VERSION (the new tables exist
    already: SCHEMA only adds, with IF NOT EXISTS); a StoreError for a
    directory of a later version (``check_version``)."""
    version = check_version(c)
    if version == SCHEMA_VERSION:
        return
    # SQLite's table-rebuild procedure (lang_altertable.html, "Making
    # other kinds of table schema changes"): foreign keys off, set
    # outside the transaction, and checked before COMMIT.
    c.execute("PRAGMA foreign_keys=OFF")
    c.execute("BEGIN IMMEDIATE")
    try:
        if version < 2:
            # subscriptions move from a mailbox column to names
            c.execute(
                "INSERT OR IGNORE INTO subscriptions(account_id, name)"
                " SELECT account_id, name FROM mailboxes WHERE subscribed"
            )
            # the big derived JSON is dropped; the background indexer (and
            # on-demand derivation) fill the version-2 tables again
            c.execute("UPDATE bodies SET derived = NULL")
            columns = {r[1] for r in c.execute("PRAGMA table_info(mailboxes)")}
            if "recent_uid" not in columns:
                c.execute("ALTER TABLE mailboxes ADD COLUMN recent_uid INTEGER NOT NULL DEFAULT 0")
            c.execute("UPDATE mailboxes SET recent_uid = uid_next - 1")
        if version < 3:
            columns = {r[1] for r in c.execute("PRAGMA table_info(accounts)")}
            if "epoch" not in columns:
                c.execute("ALTER TABLE accounts ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0")
            for table, evidence in _NEVER_REUSED.items():
                _autoincrement(c, table, evidence)
            problems = c.execute("PRAGMA foreign_key_check").fetchall()
            if problems:
                raise StoreError(f"store migration: foreign keys broken: {problems[:5]}")
        if version < 4:
            _add_columns(c, "accounts", (
                ("quota_storage", "INTEGER"), ("quota_messages", "INTEGER"),
                ("used_storage", "INTEGER NOT NULL DEFAULT 0"), ("used_messages", "INTEGER NOT NULL DEFAULT 0"),
            ))
            if _add_columns(c, "messages", (("save_date", "REAL NOT NULL DEFAULT 0"),)):
                # RFC 8514: the save date of an older row is not known; its
                # INTERNALDATE stands in (see the module docstring)
                c.execute("UPDATE messages SET save_date = internal_date")
            c.execute(
                "UPDATE accounts SET"
                " used_storage = (SELECT coalesce(sum(m.size), 0) FROM messages m JOIN mailboxes b"
                "  ON b.id = m.mailbox_id WHERE b.account_id = accounts.id),"
                " used_messages = (SELECT count(*) FROM messages m JOIN mailboxes b"
                "  ON b.id = m.mailbox_id WHERE b.account_id = accounts.id)"
            )
        if version < 5:
            # sort_keys exists (SCHEMA) but is empty: bodies derived before
            # get their rows in the background, from body id 0 on
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('sort_keys_backfill', '0')")
        # version 6 only adds account_settings, version 7 contacts and
        # correspondents, version 8 web_sessions, version 10 body_data
        # (SCHEMA creates them; the bodies already stored stay in segments)
        if version < 9:
            # fts_fields exists (textindex.SCHEMA) but is empty: bodies
            # derived before get their rows in the background, from body id 0 on
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('fields_index_backfill', '0')")
        if version < 11:
            _add_columns(c, "mailboxes", (("keywords", "TEXT"),))  # NULL: read from the messages when needed
        c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise
    finally:
        c.execute("PRAGMA foreign_keys=ON")
    log.info("store: schema migrated from version %d to %d", version, SCHEMA_VERSION)


def _add_columns(c: sqlite3.Connection, table: str, columns: Sequence[tuple[str, str]]) -> bool:
    """Add the columns ``table`` lacks; whether any was added."""
    present = {r[1] for r in c.execute(f"PRAGMA table_info({table})")}
    added = False
    for name, decl in columns:
        if name not in present:
            c.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
            added = True
    return added


def _autoincrement(c: sqlite3.Connection, table: str, evidence: Sequence[str]) -> None:
    """Rebuild ``table`` with an AUTOINCREMENT id, inside the caller's
    transaction (SQLite cannot ALTER a column into one): same columns,
    same rows, same ids; then sqlite_sequence starts above every id the
    table ever visibly used, so no id is handed out again."""
    sql = c.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()[0]
    if "AUTOINCREMENT" not in sql.upper():
        new_sql, n = re.subn(r"\bid(\s+)INTEGER\s+PRIMARY\s+KEY\b", r"id\1INTEGER PRIMARY KEY AUTOINCREMENT",
                             sql, count=1, flags=re.IGNORECASE)
        if n != 1:
            raise StoreError(f"store migration: unexpected definition of {table}: {sql}")
        new_sql = re.sub(rf"^CREATE TABLE\s+(IF NOT EXISTS\s+)?\"?{table}\"?", f"CREATE TABLE {table}__v3",
                         new_sql, count=1, flags=re.IGNORECASE)
        indexes = [r[0] for r in c.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,)
        )]
        cols = ", ".join(f'"{r[1]}"' for r in c.execute(f"PRAGMA table_info({table})"))
        c.execute(new_sql)
        c.execute(f"INSERT INTO {table}__v3({cols}) SELECT {cols} FROM {table}")
        c.execute(f"DROP TABLE {table}")
        c.execute(f"ALTER TABLE {table}__v3 RENAME TO {table}")
        for index_sql in indexes:
            c.execute(index_sql)
    high = c.execute(f"SELECT max(id) FROM {table}").fetchone()[0] or 0
    for query in evidence:
        high = max(high, c.execute(query).fetchone()[0] or 0)
    if c.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (high, table)).rowcount == 0:
        c.execute("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", (table, high))
