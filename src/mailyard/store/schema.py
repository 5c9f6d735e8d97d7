"""SQLite schema of the embedded store (version 1)."""

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS domains (
    name TEXT PRIMARY KEY COLLATE NOCASE
);
CREATE TABLE IF NOT EXISTS accounts (
    id            INTEGER PRIMARY KEY,
    address       TEXT NOT NULL UNIQUE COLLATE NOCASE,
    domain        TEXT NOT NULL COLLATE NOCASE REFERENCES domains(name),
    password_hash TEXT NOT NULL,
    apop_secret   TEXT,
    scram_sha256  TEXT,
    created       REAL NOT NULL
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
    id             INTEGER PRIMARY KEY,
    account_id     INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    uid_validity   INTEGER NOT NULL,
    uid_next       INTEGER NOT NULL DEFAULT 1,
    highest_modseq INTEGER NOT NULL DEFAULT 1,
    special_use    TEXT,
    subscribed     INTEGER NOT NULL DEFAULT 1,
    UNIQUE (account_id, name)
);
-- One row per stored body; several messages (recipients, COPY) may share it.
CREATE TABLE IF NOT EXISTS bodies (
    id       INTEGER PRIMARY KEY,
    segment  INTEGER NOT NULL,
    offset   INTEGER NOT NULL,
    length   INTEGER NOT NULL,
    refs     INTEGER NOT NULL,
    derived  TEXT              -- JSON of message.derived.Derived; NULL until indexed
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
-- Full-text index of derived text (SEARCH BODY / TEXT); rowid = bodies.id.
-- The trigram tokenizer gives case-insensitive substring matching, which is
-- what RFC 9051 6.4.4 asks of SEARCH.
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(body_text, header_text, tokenize='trigram');
"""
