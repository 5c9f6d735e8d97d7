"""SQLite schema of the embedded store (version 3).

Version 2 (additive; ``SQLiteStore`` migrates a version-1 data directory on
open): the derived data of a body is split into ``body_derived`` (a small
record: ENVELOPE / BODYSTRUCTURE in IMAP syntax and as JSON, part offsets) and
``header_fields`` (decoded header fields, an index for SEARCH FROM/SUBJECT/
HEADER ...); the decoded text lives only in the full-text index
(store/textindex.py). ``bodies.derived`` is now
just the "indexed" marker. Subscriptions are by name in ``subscriptions``
(RFC 9051 6.3.7: a name may be subscribed whether or not a mailbox exists).

Version 3: ``accounts``, ``mailboxes`` and ``bodies`` take AUTOINCREMENT ids,
so an id once handed out is never given to another row (sqlite_sequence keeps
the high-water mark); sessions and webmail cookies hold these ids, and a reused
one would point them at another user's data. ``accounts.epoch`` counts
password changes: a session remembers the epoch it logged in under and ends
when it moves. A version-2 directory is rebuilt in place on open
(``SQLiteStore._migrate``), ids preserved.
"""

SCHEMA_VERSION = 3

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
    epoch         INTEGER NOT NULL DEFAULT 0  -- version 3: moves with every password change
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
    UNIQUE (account_id, name)
);
-- One row per stored body; several messages (recipients, COPY) may share it.
CREATE TABLE IF NOT EXISTS bodies (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    segment  INTEGER NOT NULL,
    offset   INTEGER NOT NULL,
    length   INTEGER NOT NULL,
    refs     INTEGER NOT NULL,
    derived  TEXT              -- NULL until indexed; version 1 kept the derived JSON here, version 2 a marker
);
CREATE INDEX IF NOT EXISTS bodies_unindexed ON bodies(id) WHERE derived IS NULL;
CREATE INDEX IF NOT EXISTS bodies_segment ON bodies(segment);
CREATE TABLE IF NOT EXISTS messages (
    mailbox_id    INTEGER NOT NULL,
    uid           INTEGER NOT NULL,
    body_id       INTEGER NOT NULL,
    prefix        BLOB NOT NULL,
    size          INTEGER NOT NULL,
    flags         TEXT NOT NULL,
    internal_date REAL NOT NULL,
    modseq        INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_modseq ON messages(mailbox_id, modseq);
CREATE INDEX IF NOT EXISTS messages_body ON messages(body_id);
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
-- tables: store/textindex.py.
-- Version 2: derived data per body, computed once (at delivery or by the
-- background indexer). Rows go with the body (SQLiteStore._release_bodies).
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
"""
