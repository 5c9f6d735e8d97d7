"""The embedded store: SQLite (WAL) for the index, segment files for bodies.

Reads run on the caller's thread on a read-only connection (WAL readers never
block the writer). Writes run on the group-commit writer thread
(store/writer.py). See store/api.py for the model.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from ..config import StoreConfig
from . import textindex
from .api import (
    DERIVED_FIELDS,
    HIERARCHY_DELIMITER,
    SPECIAL_USE_MAILBOXES,
    Account,
    AlreadyExists,
    AppendItem,
    Changes,
    DeliveryTarget,
    DerivedRecord,
    FlagMode,
    InvalidName,
    Mailbox,
    MailboxGone,
    MailboxRef,
    MailboxStatus,
    MailboxSummary,
    MessageInfo,
    NotFound,
    StorageFull,
    Store,
    StoreError,
    derive_record,
)
from .blobs import SegmentFiles
from .names import check_mailbox_name, normalize_address, normalize_domain, normalize_sender_pattern
from .queue import QUEUE_SCHEMA, SQLiteQueueMixin
from .revocation import RevocationSignal
from .schema import SCHEMA, SCHEMA_VERSION
from .writer import GroupCommitWriter, WriteContext

log = logging.getLogger("mailyard.store")

INDEX_BATCH = 50
# A sealed segment whose live bytes fall below this share is rewritten (compaction).
COMPACT_LIVE_RATIO = 0.5
COMPACT_INTERVAL = 60.0
INDEX_SLICE = 0.01  # seconds of deriving the background indexer does before it looks at the write queue
INDEXED = "2"  # bodies.derived once body_derived/header_fields/the text index hold the body's data
# Disk full while indexing: first wait, doubled after each failure up to the last.
INDEX_BACKOFF = (1.0, 60.0)
INDEX_FREE_POLL = 1.0  # seconds between looks at the free space while it is below the reserve

_MAILBOX_COLS = (
    "id, account_id, name, uid_validity, uid_next, highest_modseq, special_use,"
    " EXISTS(SELECT 1 FROM subscriptions s WHERE s.account_id = mailboxes.account_id AND s.name = mailboxes.name)"
)
_MESSAGE_COLS = "mailbox_id, uid, size, flags, internal_date, modseq"
_ACCOUNT_COLS = "id, address, password_hash, apop_secret, scram_sha256, epoch"
# Tables whose ids sessions hold (directly, or through a derived-data cache
# keyed by body): version 3 gives them AUTOINCREMENT ids. For each, the
# places where an id of a row deleted above max(id) may still be seen.
_NEVER_REUSED: dict[str, tuple[str, ...]] = {
    "accounts": ("SELECT max(account_id) FROM mailboxes", "SELECT max(account_id) FROM subscriptions"),
    "mailboxes": ("SELECT max(mailbox_id) FROM messages", "SELECT max(mailbox_id) FROM expunged"),
    "bodies": ("SELECT max(body_id) FROM messages", "SELECT max(body_id) FROM body_derived",
               "SELECT max(body_id) FROM header_fields", "SELECT max(body_id) FROM search_text"),
}
_CACHE_MAX = 100_000  # entries of each validity cache
_META_KEYS = frozenset({"envelope", "bodystructure", "parts", "messages", "date", "size"})
_IMAP_COLS = {"envelope_imap": "envelope", "bodystructure_imap": "bodystructure", "body_imap": "body"}


def _flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


_FLAG_SETS: dict[str, frozenset[str]] = {}


def _flags_set(text: str) -> frozenset[str]:
    # A mailbox has few distinct flag combinations: share their frozensets
    # (SELECT / FETCH FLAGS of 10,000 messages builds 10,000 MessageInfos).
    fs = _FLAG_SETS.get(text)
    if fs is None:
        fs = frozenset(text.split()) if text else frozenset()
        if len(_FLAG_SETS) < 4096:
            _FLAG_SETS[text] = fs
    return fs


def _mailbox(row: tuple) -> Mailbox:
    return Mailbox(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]))


def _message(row: tuple) -> MessageInfo:
    return MessageInfo(row[0], row[1], row[2], _flags_set(row[3]), row[4], row[5])


class SQLiteStore(SQLiteQueueMixin, Store):
    """Store backend on SQLite + segment files in ``data_dir``."""

    def __init__(self, data_dir: Path, config: StoreConfig | None = None) -> None:
        self.config = config or StoreConfig()
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        db_path = self.data_dir / "index.sqlite3"
        self._listeners: list[Callable[[int], None]] = []
        self._claim_locks: dict[int, asyncio.Lock] = {}  # claim_recent, per mailbox
        # Validity caches (credentials_current, mailbox_current), dropped when
        # any process sharing the directory revokes something.
        self._revoked = RevocationSignal(self.data_dir / "revocations")
        self._token = self._revoked.value()
        self._live: dict[int, tuple[int, int]] = {}  # mailbox id -> (account id, UIDVALIDITY)
        self._epochs: dict[int, int | None] = {}  # account id -> epoch, None: removed
        write_conn = self._connect(db_path)
        write_conn.executescript(SCHEMA)
        write_conn.executescript(textindex.SCHEMA)
        write_conn.executescript(QUEUE_SCHEMA)
        write_conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        self._migrate(write_conn)
        textindex.drop_former(write_conn)
        # Indexing waits (monotonic time) after a disk-full failure; see _index_deferred.
        self._index_resume_at = 0.0
        self._index_backoff = 0.0
        self.blobs = SegmentFiles(self.data_dir / "blobs", self.config.segment_size, self.config.fsync)
        last = write_conn.execute("SELECT max(id) FROM segments").fetchone()[0]
        if last is None:
            last = 1
            write_conn.execute("INSERT INTO segments(id) VALUES (1)")
        self.blobs.open_for_append(last)
        self._read = self._connect(db_path, readonly=True)
        self._writer = GroupCommitWriter(
            write_conn,
            self,
            self.config.group_commit_max,
            before_commit=self._before_commit,
            after_commit=lambda changed: None,
            idle_work=self._background_work,
        )

    @staticmethod
    def _migrate(c: sqlite3.Connection) -> None:
        """Bring an older data directory to SCHEMA_VERSION (the new tables exist
        already: SCHEMA only adds, with IF NOT EXISTS)."""
        version = int(c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
        if version >= SCHEMA_VERSION:
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
                    SQLiteStore._autoincrement(c, table, evidence)
                problems = c.execute("PRAGMA foreign_key_check").fetchall()
                if problems:
                    raise StoreError(f"store migration: foreign keys broken: {problems[:5]}")
            c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        finally:
            c.execute("PRAGMA foreign_keys=ON")
        log.info("store: schema migrated from version %d to %d", version, SCHEMA_VERSION)

    @staticmethod
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

    def _connect(self, path: Path, readonly: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        # FULL: the WAL is fsynced at every commit, so an acknowledged write survives a crash.
        conn.execute(f"PRAGMA synchronous={'FULL' if self.config.fsync else 'OFF'}")
        conn.execute("PRAGMA busy_timeout=30000")
        if readonly:
            conn.execute("PRAGMA query_only=ON")
            # Reads of a whole mailbox (FETCH 1:* ENVELOPE) seek once per message:
            # through a memory map, without a pread() per page.
            conn.execute("PRAGMA mmap_size=268435456")
        return conn

    # --- plumbing ---------------------------------------------------------
    async def _write(
        self, op: Callable[[sqlite3.Connection, WriteContext], Any], directory: bool = False, revoke: bool = False
    ) -> Any:
        try:
            return await self._writer.submit(op)
        finally:
            if directory:
                self.directory_version += 1
            if revoke:
                # after the commit: a reader refilling its cache now sees it
                self._revoked.bump()

    # --- validity of session references --------------------------------------
    def _fresh(self) -> None:
        """Drop the validity caches if any process revoked something since
        they were filled (store/revocation.py). The token is read before the
        database, so a revocation committed meanwhile is seen at the next call."""
        token = self._revoked.value()
        if token != self._token:
            self._token = token
            self._live.clear()
            self._epochs.clear()

    def credentials_current(self, account_id: int, epoch: int) -> bool:
        self._fresh()
        epochs = self._epochs
        if account_id in epochs:
            return epochs[account_id] == epoch
        row = self._q1("SELECT epoch FROM accounts WHERE id = ?", (account_id,))
        if len(epochs) >= _CACHE_MAX:
            epochs.clear()
        # a removed account is remembered as None: its id is never reused
        epochs[account_id] = current = row[0] if row else None
        return current == epoch

    def mailbox_current(self, mailbox: MailboxRef) -> bool:
        self._fresh()
        key = self._live.get(mailbox.id)
        if key is None:
            row = self._q1("SELECT account_id, uid_validity FROM mailboxes WHERE id = ?", (mailbox.id,))
            if row is None:
                return False
            if len(self._live) >= _CACHE_MAX:
                self._live.clear()
            # owner and UIDVALIDITY of an id never change; only deletion
            # (which revokes) ends it
            key = self._live[mailbox.id] = (row[0], row[1])
        return key[0] == mailbox.account_id and key[1] == mailbox.uid_validity

    def _owned(self, mailbox: MailboxRef) -> int:
        """The id of ``mailbox`` for a read, after checking the reference.
        A deletion racing with the read leaves it nothing to read: the rows go
        with the mailbox and its id is never reused."""
        if not self.mailbox_current(mailbox):
            raise MailboxGone(mailbox.id)
        return mailbox.id

    @staticmethod
    def _owned_w(c: sqlite3.Connection, mailbox: MailboxRef) -> int:
        """The same check inside a write's transaction (atomic with the write)."""
        if not c.execute(
            "SELECT 1 FROM mailboxes WHERE id = ? AND account_id = ? AND uid_validity = ?",
            (mailbox.id, mailbox.account_id, mailbox.uid_validity),
        ).fetchone():
            raise MailboxGone(mailbox.id)
        return mailbox.id

    def _before_commit(self) -> None:
        self.blobs.sync()

    def translate_error(self, exc: BaseException) -> BaseException:
        """Map low-level errors to StoreError kinds the protocols can answer with."""
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
            return StorageFull("the disk is full")
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageFull("the disk is full")
        return exc

    def notify(self, mailbox_ids: Iterable[int]) -> None:
        for mailbox_id in mailbox_ids:
            for callback in list(self._listeners):
                try:
                    callback(mailbox_id)
                except Exception:
                    log.exception("store listener failed")

    def add_listener(self, callback: Callable[[int], None]) -> Callable[[], None]:
        self._listeners.append(callback)

        def remove() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return remove

    def _q(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        return self._read.execute(sql, args).fetchall()

    def _q1(self, sql: str, args: Sequence[Any] = ()) -> tuple | None:
        return self._read.execute(sql, args).fetchone()

    async def close(self) -> None:
        await asyncio.to_thread(self._writer.close)
        self.blobs.close()
        self._read.close()
        self._revoked.close()

    # --- domains ----------------------------------------------------------
    async def add_domain(self, name: str) -> None:
        domain = normalize_domain(name)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            try:
                c.execute("INSERT INTO domains(name) VALUES (?)", (domain,))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"domain {domain} exists already") from None

        await self._write(op, directory=True)

    async def remove_domain(self, name: str) -> None:
        domain = normalize_domain(name)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if not c.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone():
                raise NotFound(f"no domain {domain}")
            like = "%@" + domain
            used = c.execute("SELECT count(*) FROM accounts WHERE domain = ?", (domain,)).fetchone()[0]
            used += c.execute("SELECT count(*) FROM aliases WHERE source LIKE ?", (like,)).fetchone()[0]
            used += c.execute("SELECT count(*) FROM lists WHERE address LIKE ?", (like,)).fetchone()[0]
            if used:
                raise StoreError(
                    f"domain {domain} still has {used} account(s), alias(es) or list(s); remove them first"
                )
            c.execute("DELETE FROM domains WHERE name = ?", (domain,))

        await self._write(op, directory=True)

    async def list_domains(self) -> list[str]:
        return [r[0] for r in self._q("SELECT name FROM domains ORDER BY name")]

    async def is_local_domain(self, name: str) -> bool:
        try:
            domain = normalize_domain(name)
        except InvalidName:
            return False
        return self._q1("SELECT 1 FROM domains WHERE name = ?", (domain,)) is not None

    # --- accounts ---------------------------------------------------------
    async def add_account(
        self,
        address: str,
        password_hash: str,
        apop_secret: str | None = None,
        scram_sha256: str | None = None,
    ) -> Account:
        addr = normalize_address(address)
        domain = addr.rpartition("@")[2]

        def op(c: sqlite3.Connection, ctx: WriteContext) -> int:
            if not c.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone():
                raise NotFound(f"{domain} is not a local domain; add it first (mailyard domain add {domain})")
            if c.execute("SELECT 1 FROM aliases WHERE source = ?", (addr,)).fetchone() or c.execute(
                "SELECT 1 FROM lists WHERE address = ?", (addr,)
            ).fetchone():
                raise AlreadyExists(f"{addr} is an alias or a list already")
            try:
                cur = c.execute(
                    "INSERT INTO accounts(address, domain, password_hash, apop_secret, scram_sha256, created)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (addr, domain, password_hash, apop_secret, scram_sha256, time.time()),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"account {addr} exists already") from None
            account_id = cur.lastrowid
            assert account_id is not None
            self._insert_mailbox(c, account_id, "INBOX", None)
            for name, use in SPECIAL_USE_MAILBOXES:
                self._insert_mailbox(c, account_id, name, use)
            return account_id

        account_id = await self._write(op, directory=True)
        return Account(account_id, addr, password_hash, apop_secret, scram_sha256, 0)

    async def get_account(self, address: str) -> Account | None:
        try:
            addr = normalize_address(address)
        except InvalidName:
            return None
        row = self._q1(f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE address = ?", (addr,))
        return Account(*row) if row else None

    async def get_account_by_id(self, account_id: int) -> Account | None:
        row = self._q1(f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE id = ?", (account_id,))
        return Account(*row) if row else None

    async def list_accounts(self, domain: str | None = None) -> list[Account]:
        sql = f"SELECT {_ACCOUNT_COLS} FROM accounts"
        args: tuple = ()
        if domain is not None:
            sql += " WHERE domain = ?"
            args = (normalize_domain(domain),)
        return [Account(*r) for r in self._q(sql + " ORDER BY address", args)]

    async def set_password(
        self,
        address: str,
        password_hash: str,
        apop_secret: str | None = None,
        scram_sha256: str | None = None,
    ) -> None:
        addr = normalize_address(address)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            cur = c.execute(
                "UPDATE accounts SET password_hash = ?, apop_secret = ?, scram_sha256 = ?, epoch = epoch + 1"
                " WHERE address = ?",
                (password_hash, apop_secret, scram_sha256, addr),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no account {addr}")

        # a new password ends every session logged in under the old one
        await self._write(op, directory=True, revoke=True)

    async def remove_account(self, address: str) -> None:
        addr = normalize_address(address)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            row = c.execute("SELECT id FROM accounts WHERE address = ?", (addr,)).fetchone()
            if row is None:
                raise NotFound(f"no account {addr}")
            for (mailbox_id,) in c.execute("SELECT id FROM mailboxes WHERE account_id = ?", (row[0],)).fetchall():
                self._drop_mailbox_messages(c, mailbox_id)
                ctx.changed.add(mailbox_id)
            c.execute("DELETE FROM accounts WHERE id = ?", (row[0],))

        await self._write(op, directory=True, revoke=True)

    # --- sender grants ----------------------------------------------------
    async def allow_senders(self, address: str, patterns: Sequence[str]) -> list[str]:
        addr = normalize_address(address)
        grants = [normalize_sender_pattern(p) for p in patterns]
        if not grants:
            raise InvalidName("give at least one address or pattern")

        def op(c: sqlite3.Connection, ctx: WriteContext) -> int:
            row = c.execute("SELECT id FROM accounts WHERE address = ?", (addr,)).fetchone()
            if row is None:
                raise NotFound(f"no account {addr}")
            c.executemany(
                "INSERT OR IGNORE INTO sender_grants(account_id, pattern) VALUES (?, ?)",
                [(row[0], g) for g in grants],
            )
            return row[0]

        account_id = await self._write(op, directory=True)
        return await self.allowed_senders(account_id)

    async def disallow_senders(self, address: str, patterns: Sequence[str] = ()) -> list[str]:
        addr = normalize_address(address)
        grants = [normalize_sender_pattern(p) for p in patterns]

        def op(c: sqlite3.Connection, ctx: WriteContext) -> int:
            row = c.execute("SELECT id FROM accounts WHERE address = ?", (addr,)).fetchone()
            if row is None:
                raise NotFound(f"no account {addr}")
            if grants:
                c.executemany(
                    "DELETE FROM sender_grants WHERE account_id = ? AND pattern = ?",
                    [(row[0], g) for g in grants],
                )
            else:
                c.execute("DELETE FROM sender_grants WHERE account_id = ?", (row[0],))
            return row[0]

        account_id = await self._write(op, directory=True)
        return await self.allowed_senders(account_id)

    async def allowed_senders(self, account_id: int) -> list[str]:
        rows = self._q("SELECT pattern FROM sender_grants WHERE account_id = ? ORDER BY pattern", (account_id,))
        return [r[0] for r in rows]

    # --- aliases and lists ------------------------------------------------
    async def add_alias(self, source: str, targets: Sequence[str]) -> None:
        src = normalize_address(source)
        dests = [normalize_address(t) for t in targets]
        if not dests:
            raise InvalidName("an alias needs at least one target address")
        domain = src.rpartition("@")[2]

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if not c.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone():
                raise NotFound(f"{domain} is not a local domain; add it first (mailyard domain add {domain})")
            if c.execute("SELECT 1 FROM accounts WHERE address = ?", (src,)).fetchone() or c.execute(
                "SELECT 1 FROM lists WHERE address = ?", (src,)
            ).fetchone():
                raise AlreadyExists(f"{src} is an account or a list already")
            c.executemany("INSERT OR IGNORE INTO aliases(source, target) VALUES (?, ?)", [(src, d) for d in dests])

        await self._write(op, directory=True)

    async def remove_alias(self, source: str, targets: Sequence[str] = ()) -> None:
        src = normalize_address(source)
        dests = [normalize_address(t) for t in targets]

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if not c.execute("SELECT 1 FROM aliases WHERE source = ?", (src,)).fetchone():
                raise NotFound(f"no alias {src}")
            if dests:
                c.executemany("DELETE FROM aliases WHERE source = ? AND target = ?", [(src, d) for d in dests])
            else:
                c.execute("DELETE FROM aliases WHERE source = ?", (src,))

        await self._write(op, directory=True)

    async def get_alias(self, source: str) -> list[str] | None:
        try:
            src = normalize_address(source)
        except InvalidName:
            return None
        rows = self._q("SELECT target FROM aliases WHERE source = ? ORDER BY target", (src,))
        return [r[0] for r in rows] or None

    async def list_aliases(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for src, dst in self._q("SELECT source, target FROM aliases ORDER BY source, target"):
            out.setdefault(src, []).append(dst)
        return out

    async def add_list(self, address: str) -> None:
        addr = normalize_address(address)
        domain = addr.rpartition("@")[2]

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if not c.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone():
                raise NotFound(f"{domain} is not a local domain; add it first (mailyard domain add {domain})")
            if c.execute("SELECT 1 FROM accounts WHERE address = ?", (addr,)).fetchone() or c.execute(
                "SELECT 1 FROM aliases WHERE source = ?", (addr,)
            ).fetchone():
                raise AlreadyExists(f"{addr} is an account or an alias already")
            try:
                c.execute("INSERT INTO lists(address) VALUES (?)", (addr,))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"list {addr} exists already") from None

        await self._write(op, directory=True)

    async def remove_list(self, address: str) -> None:
        addr = normalize_address(address)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if c.execute("DELETE FROM lists WHERE address = ?", (addr,)).rowcount == 0:
                raise NotFound(f"no list {addr}")

        await self._write(op, directory=True)

    async def subscribe_list(self, address: str, member: str) -> None:
        addr = normalize_address(address)
        who = normalize_address(member)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if not c.execute("SELECT 1 FROM lists WHERE address = ?", (addr,)).fetchone():
                raise NotFound(f"no list {addr}")
            c.execute("INSERT OR IGNORE INTO list_members(list, member) VALUES (?, ?)", (addr, who))

        await self._write(op, directory=True)

    async def unsubscribe_list(self, address: str, member: str) -> None:
        addr = normalize_address(address)
        who = normalize_address(member)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if not c.execute("SELECT 1 FROM lists WHERE address = ?", (addr,)).fetchone():
                raise NotFound(f"no list {addr}")
            if c.execute("DELETE FROM list_members WHERE list = ? AND member = ?", (addr, who)).rowcount == 0:
                raise NotFound(f"{who} is not a member of {addr}")

        await self._write(op, directory=True)

    async def get_list_members(self, address: str) -> list[str] | None:
        try:
            addr = normalize_address(address)
        except InvalidName:
            return None
        if self._q1("SELECT 1 FROM lists WHERE address = ?", (addr,)) is None:
            return None
        return [r[0] for r in self._q("SELECT member FROM list_members WHERE list = ? ORDER BY member", (addr,))]

    async def list_lists(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {r[0]: [] for r in self._q("SELECT address FROM lists ORDER BY address")}
        for lst, member in self._q("SELECT list, member FROM list_members ORDER BY list, member"):
            out.setdefault(lst, []).append(member)
        return out

    # --- mailboxes --------------------------------------------------------
    @staticmethod
    def _next_uid_validity(c: sqlite3.Connection) -> int:
        """UIDVALIDITY values strictly increase across the store, so a mailbox
        deleted and recreated under the same name never repeats one (RFC 9051 2.3.1.1)."""
        row = c.execute("SELECT value FROM meta WHERE key = 'last_uid_validity'").fetchone()
        value = max(int(time.time()), int(row[0]) + 1 if row else 0)
        c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_uid_validity', ?)", (str(value),))
        return value

    def _insert_mailbox(self, c: sqlite3.Connection, account_id: int, name: str, special_use: str | None) -> int:
        try:
            cur = c.execute(
                "INSERT INTO mailboxes(account_id, name, uid_validity, special_use) VALUES (?, ?, ?, ?)",
                (account_id, name, self._next_uid_validity(c), special_use),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"mailbox {name} exists already") from None
        assert cur.lastrowid is not None
        # new mailboxes start subscribed
        c.execute("INSERT OR IGNORE INTO subscriptions(account_id, name) VALUES (?, ?)", (account_id, name))
        return cur.lastrowid

    @staticmethod
    def _canonical_name(name: str) -> str:
        check_mailbox_name(name)
        first, sep, rest = name.partition(HIERARCHY_DELIMITER)
        if first.upper() == "INBOX":
            return "INBOX" + sep + rest
        return name

    async def create_mailbox(self, account_id: int, name: str, special_use: str | None = None) -> Mailbox:
        canonical = self._canonical_name(name)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> int:
            return self._insert_mailbox(c, account_id, canonical, special_use)

        mailbox_id = await self._write(op, directory=True)
        mailbox = await self.get_mailbox_by_id(account_id, mailbox_id)
        assert mailbox is not None
        return mailbox

    async def get_mailbox(self, account_id: int, name: str) -> Mailbox | None:
        try:
            canonical = self._canonical_name(name)
        except InvalidName:
            return None
        row = self._q1(
            f"SELECT {_MAILBOX_COLS} FROM mailboxes WHERE account_id = ? AND name = ?", (account_id, canonical)
        )
        return _mailbox(row) if row else None

    async def get_mailbox_by_id(self, account_id: int, mailbox_id: int) -> Mailbox | None:
        row = self._q1(
            f"SELECT {_MAILBOX_COLS} FROM mailboxes WHERE id = ? AND account_id = ?", (mailbox_id, account_id)
        )
        return _mailbox(row) if row else None

    async def list_mailboxes(self, account_id: int) -> list[Mailbox]:
        rows = self._q(f"SELECT {_MAILBOX_COLS} FROM mailboxes WHERE account_id = ? ORDER BY name", (account_id,))
        return [_mailbox(r) for r in rows]

    async def rename_mailbox(self, account_id: int, old: str, new: str) -> None:
        old_name = self._canonical_name(old)
        new_name = self._canonical_name(new)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            src = c.execute(
                "SELECT id, uid_next, highest_modseq FROM mailboxes WHERE account_id = ? AND name = ?",
                (account_id, old_name),
            ).fetchone()
            if src is None:
                raise NotFound(f"no mailbox {old_name}")
            if c.execute(
                "SELECT 1 FROM mailboxes WHERE account_id = ? AND name = ?", (account_id, new_name)
            ).fetchone():
                raise AlreadyExists(f"mailbox {new_name} exists already")
            if new_name == old_name or new_name.startswith(old_name + HIERARCHY_DELIMITER):
                raise InvalidName("a mailbox cannot be renamed into itself")
            if old_name == "INBOX":
                # RFC 9051 6.3.6: renaming INBOX moves its messages to the new
                # mailbox and leaves INBOX empty; its inferiors stay where they are.
                new_id = self._insert_mailbox(c, account_id, new_name, None)
                c.execute("UPDATE mailboxes SET uid_next = ? WHERE id = ?", (src[1], new_id))
                modseq = self._bump_modseq(c, src[0])
                c.execute(
                    "INSERT OR REPLACE INTO expunged(mailbox_id, uid, modseq)"
                    " SELECT mailbox_id, uid, ? FROM messages WHERE mailbox_id = ?",
                    (modseq, src[0]),
                )
                c.execute("UPDATE messages SET mailbox_id = ? WHERE mailbox_id = ?", (new_id, src[0]))
                ctx.changed.update((src[0], new_id))
                return
            prefix = old_name + HIERARCHY_DELIMITER
            rows = c.execute(
                "SELECT id, name FROM mailboxes WHERE account_id = ? AND (name = ? OR substr(name, 1, ?) = ?)",
                (account_id, old_name, len(prefix), prefix),
            ).fetchall()
            for mailbox_id, name in rows:
                renamed = new_name + name[len(old_name):]
                if c.execute(
                    "SELECT 1 FROM mailboxes WHERE account_id = ? AND name = ?", (account_id, renamed)
                ).fetchone():
                    raise AlreadyExists(f"mailbox {renamed} exists already")
                c.execute("UPDATE mailboxes SET name = ? WHERE id = ?", (renamed, mailbox_id))
                # the subscription follows the mailbox
                if c.execute(
                    "DELETE FROM subscriptions WHERE account_id = ? AND name = ?", (account_id, name)
                ).rowcount:
                    c.execute(
                        "INSERT OR IGNORE INTO subscriptions(account_id, name) VALUES (?, ?)", (account_id, renamed)
                    )
                ctx.changed.add(mailbox_id)

        await self._write(op, directory=True)

    async def delete_mailbox(self, account_id: int, name: str) -> None:
        canonical = self._canonical_name(name)
        if canonical == "INBOX":
            raise StoreError("INBOX cannot be deleted")

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            row = c.execute(
                "SELECT id FROM mailboxes WHERE account_id = ? AND name = ?", (account_id, canonical)
            ).fetchone()
            if row is None:
                raise NotFound(f"no mailbox {canonical}")
            self._drop_mailbox_messages(c, row[0])
            c.execute("DELETE FROM mailboxes WHERE id = ?", (row[0],))
            # DELETE on the user's request ends the subscription too (as Cyrus and
            # Dovecot do); a name subscribed without a mailbox stays subscribed.
            c.execute("DELETE FROM subscriptions WHERE account_id = ? AND name = ?", (account_id, canonical))
            ctx.changed.add(row[0])

        # sessions that have it selected must find it gone at once
        await self._write(op, directory=True, revoke=True)

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        canonical = self._canonical_name(name)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> None:
            if subscribed:
                c.execute(
                    "INSERT OR IGNORE INTO subscriptions(account_id, name) VALUES (?, ?)", (account_id, canonical)
                )
            else:
                c.execute("DELETE FROM subscriptions WHERE account_id = ? AND name = ?", (account_id, canonical))

        await self._write(op)

    async def claim_recent(self, mailbox: MailboxRef, claim: bool = True) -> int:
        mailbox_id = self._owned(mailbox)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> int:
            self._owned_w(c, mailbox)
            row = c.execute("SELECT recent_uid, uid_next - 1 FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
            if row is None:
                raise NotFound("no such mailbox")
            if claim and row[1] > row[0]:
                c.execute("UPDATE mailboxes SET recent_uid = ? WHERE id = ?", (row[1], mailbox_id))
            return row[0]

        def peek() -> int | None:
            row = self._q1("SELECT recent_uid, uid_next - 1 FROM mailboxes WHERE id = ?", (mailbox_id,))
            if row is None:
                raise NotFound("no such mailbox")
            return row[0] if not claim or row[1] <= row[0] else None  # None: something to claim

        first = peek()
        if first is not None:
            return first  # nothing new to claim: no write
        # Many sessions learn of a delivery at once (IDLE): one claims in a write,
        # the others wait for it and then find nothing left -- no write each.
        lock = self._claim_locks.setdefault(mailbox_id, asyncio.Lock())
        try:
            async with lock:
                first = peek()
                return first if first is not None else await self._write(op)
        finally:
            if not lock.locked():
                self._claim_locks.pop(mailbox_id, None)

    async def list_subscriptions(self, account_id: int) -> list[str]:
        return [r[0] for r in self._q("SELECT name FROM subscriptions WHERE account_id = ? ORDER BY name",
                                      (account_id,))]

    async def mailbox_status(self, mailbox: MailboxRef) -> MailboxStatus:
        mailbox_id = self._owned(mailbox)
        box = self._q1("SELECT uid_next, uid_validity, highest_modseq FROM mailboxes WHERE id = ?", (mailbox_id,))
        if box is None:
            raise NotFound("no such mailbox")
        row = self._q1(
            "SELECT count(*), coalesce(sum(size), 0),"
            " coalesce(sum(instr(' ' || flags || ' ', ' \\Seen ') = 0), 0),"
            " coalesce(sum(instr(' ' || flags || ' ', ' \\Deleted ') > 0), 0)"
            " FROM messages WHERE mailbox_id = ?",
            (mailbox_id,),
        )
        assert row is not None
        return MailboxStatus(
            messages=row[0], unseen=row[2], deleted=row[3], size=row[1],
            uid_next=box[0], uid_validity=box[1], highest_modseq=box[2],
        )

    # --- messages: writes ---------------------------------------------------
    @staticmethod
    def _bump_modseq(c: sqlite3.Connection, mailbox_id: int) -> int:
        row = c.execute(
            "UPDATE mailboxes SET highest_modseq = highest_modseq + 1 WHERE id = ? RETURNING highest_modseq",
            (mailbox_id,),
        ).fetchone()
        if row is None:
            raise NotFound("no such mailbox")
        return row[0]

    @staticmethod
    def _count_segment_bytes(c: sqlite3.Connection, segment: int, length: int) -> None:
        """Account ``length`` new bytes to ``segment``, creating its row if need be.

        The row is made with the bytes rather than once at rollover: a rollover
        happens inside some op's SAVEPOINT, and if that op (or its whole batch)
        is rolled back, the blob writer still appends to the new file. The next
        body stored there then brings the row back; without it the file would
        hold committed bodies the segments table does not know, and
        ``_remove_retired_segments`` would delete it."""
        c.execute(
            "INSERT INTO segments(id, size, live) VALUES (?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET size = size + excluded.size, live = live + excluded.live",
            (segment, length, length),
        )

    def _store_body(self, c: sqlite3.Connection, body: bytes, refs: int) -> int:
        if self.blobs.needs_rollover():
            self.blobs.open_for_append(self.blobs.current_segment + 1)
        segment, offset = self.blobs.append(body)
        self._count_segment_bytes(c, segment, len(body))
        cur = c.execute(
            "INSERT INTO bodies(segment, offset, length, refs) VALUES (?, ?, ?, ?)",
            (segment, offset, len(body), refs),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def _release_bodies(self, c: sqlite3.Connection, body_ids: Iterable[int]) -> None:
        for body_id in body_ids:
            row = c.execute(
                "UPDATE bodies SET refs = refs - 1 WHERE id = ? RETURNING refs, segment, length", (body_id,)
            ).fetchone()
            if row is not None and row[0] <= 0:
                c.execute("DELETE FROM bodies WHERE id = ?", (body_id,))
                textindex.delete(c, body_id)
                c.execute("DELETE FROM body_derived WHERE body_id = ?", (body_id,))
                c.execute("DELETE FROM header_fields WHERE body_id = ?", (body_id,))
                c.execute("UPDATE segments SET live = live - ? WHERE id = ?", (row[2], row[1]))

    def _drop_mailbox_messages(self, c: sqlite3.Connection, mailbox_id: int) -> None:
        body_ids = [r[0] for r in c.execute("SELECT body_id FROM messages WHERE mailbox_id = ?", (mailbox_id,))]
        c.execute("DELETE FROM messages WHERE mailbox_id = ?", (mailbox_id,))
        c.execute("DELETE FROM expunged WHERE mailbox_id = ?", (mailbox_id,))
        self._release_bodies(c, body_ids)

    def _insert_targets(
        self, c: sqlite3.Connection, ctx: WriteContext, body_id: int, body_len: int,
        targets: Sequence[DeliveryTarget],
    ) -> list[int]:
        """Index rows for one stored body in each target mailbox (shared by
        ``deliver`` and the outbound queue's combined local+queued commit)."""
        now = time.time()
        uids = []
        for t in targets:
            row = c.execute(
                "UPDATE mailboxes SET uid_next = uid_next + 1, highest_modseq = highest_modseq + 1"
                " WHERE id = ? RETURNING uid_next - 1, highest_modseq",
                (t.mailbox_id,),
            ).fetchone()
            if row is None:
                raise NotFound(f"mailbox {t.mailbox_id} does not exist")
            uid, modseq = row
            c.execute(
                "INSERT INTO messages(mailbox_id, uid, body_id, prefix, size, flags, internal_date, modseq)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    t.mailbox_id, uid, body_id, t.trace_prefix, len(t.trace_prefix) + body_len,
                    _flags_text(t.flags), t.internal_date if t.internal_date is not None else now, modseq,
                ),
            )
            ctx.changed.add(t.mailbox_id)
            uids.append(uid)
        return uids

    async def deliver(self, body: bytes, targets: Sequence[DeliveryTarget]) -> list[int]:
        if not targets:
            return []

        def op(c: sqlite3.Connection, ctx: WriteContext) -> list[int]:
            body_id = self._store_body(c, body, len(targets))
            return self._insert_targets(c, ctx, body_id, len(body), targets)

        return await self._write(op)

    async def append_many(self, mailbox: MailboxRef, items: Sequence[AppendItem]) -> list[int]:
        if not items:
            return []
        batch = list(items)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> list[int]:
            mailbox_id = self._owned_w(c, mailbox)
            # one SAVEPOINT in one commit: every message or none (RFC 3502)
            uids: list[int] = []
            for item in batch:
                body_id = self._store_body(c, item.data, 1)
                target = DeliveryTarget(mailbox_id, b"", item.flags, item.internal_date)
                uids += self._insert_targets(c, ctx, body_id, len(item.data), [target])
            return uids

        return await self._write(op)

    async def store_flags(
        self,
        mailbox: MailboxRef,
        uids: Sequence[int],
        flags: Iterable[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> tuple[list[MessageInfo], list[int]]:
        flag_set = frozenset(flags)
        wanted = list(uids)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> tuple[list[MessageInfo], list[int]]:
            mailbox_id = self._owned_w(c, mailbox)
            changed: list[tuple[int, str]] = []
            failed: list[int] = []
            rows = _select_uids(c, "SELECT uid, flags, modseq FROM messages WHERE mailbox_id = ?", mailbox_id, wanted)
            for uid, text, modseq in rows:
                # RFC 7162 3.1.3: UNCHANGEDSINCE fails messages modified after it.
                if unchanged_since is not None and modseq > unchanged_since:
                    failed.append(uid)
                    continue
                current = _flags_set(text)
                if mode == "add":
                    new = current | flag_set
                elif mode == "remove":
                    new = current - flag_set
                else:
                    new = flag_set
                if new != current:
                    changed.append((uid, _flags_text(new)))
            if not changed:
                return [], failed
            modseq = self._bump_modseq(c, mailbox_id)
            c.executemany(
                "UPDATE messages SET flags = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?",
                [(text, modseq, mailbox_id, uid) for uid, text in changed],
            )
            ctx.changed.add(mailbox_id)
            infos = _select_uids(c, f"SELECT {_MESSAGE_COLS} FROM messages WHERE mailbox_id = ?", mailbox_id,
                                 [uid for uid, _ in changed], uid_at=1)
            return [_message(r) for r in infos], failed

        return await self._write(op)

    async def expunge(self, mailbox: MailboxRef, uids: Sequence[int]) -> list[int]:
        wanted = list(uids)

        def op(c: sqlite3.Connection, ctx: WriteContext) -> list[int]:
            mailbox_id = self._owned_w(c, mailbox)
            rows = _select_uids(c, "SELECT uid, body_id FROM messages WHERE mailbox_id = ?", mailbox_id, wanted)
            if not rows:
                return []
            modseq = self._bump_modseq(c, mailbox_id)
            c.executemany("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", [(mailbox_id, r[0]) for r in rows])
            c.executemany(
                "INSERT OR REPLACE INTO expunged(mailbox_id, uid, modseq) VALUES (?, ?, ?)",
                [(mailbox_id, r[0], modseq) for r in rows],
            )
            self._release_bodies(c, [r[1] for r in rows])
            ctx.changed.add(mailbox_id)
            return sorted(r[0] for r in rows)

        return await self._write(op)

    async def copy_messages(
        self, src: MailboxRef, uids: Sequence[int], dst: MailboxRef, move: bool = False
    ) -> list[tuple[int, int]]:
        wanted = list(uids)
        if dst.account_id != src.account_id:
            raise MailboxGone(dst.id, "the target mailbox does not exist")

        def op(c: sqlite3.Connection, ctx: WriteContext) -> list[tuple[int, int]]:
            src_mailbox_id = self._owned_w(c, src)
            try:
                dst_mailbox_id = self._owned_w(c, dst)
            except MailboxGone as exc:
                raise MailboxGone(dst.id, "the target mailbox does not exist") from exc
            rows = _select_uids(
                c,
                "SELECT uid, body_id, prefix, size, flags, internal_date FROM messages WHERE mailbox_id = ?",
                src_mailbox_id,
                wanted,
            )
            if not rows:
                return []
            rows.sort(key=lambda r: r[0])
            first = c.execute(
                "UPDATE mailboxes SET uid_next = uid_next + ?, highest_modseq = highest_modseq + 1"
                " WHERE id = ? RETURNING uid_next - ?, highest_modseq",
                (len(rows), dst_mailbox_id, len(rows)),
            ).fetchone()
            start, modseq = first
            pairs = []
            for i, (uid, body_id, prefix, size, flags, internal_date) in enumerate(rows):
                c.execute(
                    "INSERT INTO messages(mailbox_id, uid, body_id, prefix, size, flags, internal_date, modseq)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (dst_mailbox_id, start + i, body_id, prefix, size, flags, internal_date, modseq),
                )
                c.execute("UPDATE bodies SET refs = refs + 1 WHERE id = ?", (body_id,))
                pairs.append((uid, start + i))
            ctx.changed.add(dst_mailbox_id)
            if move:
                src_modseq = self._bump_modseq(c, src_mailbox_id)
                c.executemany(
                    "DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", [(src_mailbox_id, r[0]) for r in rows]
                )
                c.executemany(
                    "INSERT OR REPLACE INTO expunged(mailbox_id, uid, modseq) VALUES (?, ?, ?)",
                    [(src_mailbox_id, r[0], src_modseq) for r in rows],
                )
                self._release_bodies(c, [r[1] for r in rows])
                ctx.changed.add(src_mailbox_id)
            return pairs

        return await self._write(op)

    # --- messages: reads ------------------------------------------------------
    async def list_messages(self, mailbox: MailboxRef) -> list[MessageInfo]:
        mailbox_id = self._owned(mailbox)
        rows = self._q(f"SELECT {_MESSAGE_COLS} FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,))
        return [_message(r) for r in rows]

    async def mailbox_summary(self, mailbox: MailboxRef) -> MailboxSummary:
        mailbox_id = mailbox.id
        c = self._read
        c.execute("BEGIN")  # one read snapshot (WAL) for all four queries
        try:
            row = c.execute(
                f"SELECT {_MAILBOX_COLS} FROM mailboxes WHERE id = ? AND account_id = ? AND uid_validity = ?",
                (mailbox_id, mailbox.account_id, mailbox.uid_validity),
            ).fetchone()
            if row is None:
                raise MailboxGone(mailbox_id)
            text = c.execute(
                "SELECT group_concat(uid) FROM (SELECT uid FROM messages WHERE mailbox_id = ? ORDER BY uid)",
                (mailbox_id,),
            ).fetchone()[0]
            keywords = {
                f
                for (flags,) in c.execute("SELECT DISTINCT flags FROM messages WHERE mailbox_id = ?", (mailbox_id,))
                for f in flags.split()
                if not f.startswith("\\")
            }
            first_unseen = c.execute(
                "SELECT min(uid) FROM messages WHERE mailbox_id = ? AND instr(' ' || flags || ' ', ' \\Seen ') = 0",
                (mailbox_id,),
            ).fetchone()[0]
        finally:
            c.execute("COMMIT")
        # "1,2,3": read as a JSON array, three times faster than int() per UID
        # (a SELECT of a 10,000-message mailbox, bench/imap.py)
        uids = json.loads("[" + text + "]") if text else []
        return MailboxSummary(_mailbox(row), uids, frozenset(keywords), first_unseen)

    async def get_messages(self, mailbox: MailboxRef, uids: Sequence[int]) -> list[MessageInfo]:
        mailbox_id = self._owned(mailbox)
        rows = _select_uids(self._read, f"SELECT {_MESSAGE_COLS} FROM messages WHERE mailbox_id = ?",
                            mailbox_id, sorted(set(uids)), uid_at=1)
        rows.sort(key=lambda r: r[1])
        return [_message(r) for r in rows]

    async def read_message(self, mailbox: MailboxRef, uid: int) -> bytes:
        mailbox_id = self._owned(mailbox)
        row = self._q1(
            "SELECT m.prefix, b.segment, b.offset, b.length FROM messages m JOIN bodies b ON b.id = m.body_id"
            " WHERE m.mailbox_id = ? AND m.uid = ?",
            (mailbox_id, uid),
        )
        if row is None:
            raise NotFound(f"no message with UID {uid}")
        return bytes(row[0]) + self.blobs.read(row[1], row[2], row[3])

    async def changes_since(self, mailbox: MailboxRef, modseq: int) -> Changes:
        mailbox_id = self._owned(mailbox)
        box = self._q1("SELECT highest_modseq FROM mailboxes WHERE id = ?", (mailbox_id,))
        if box is None:
            raise NotFound("no such mailbox")
        changed = self._q(
            f"SELECT {_MESSAGE_COLS} FROM messages WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
            (mailbox_id, modseq),
        )
        vanished = self._q(
            "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid", (mailbox_id, modseq)
        )
        return Changes(box[0], [_message(r) for r in changed], [r[0] for r in vanished])

    # --- derived data and full-text search -----------------------------------
    async def get_derived(
        self, mailbox: MailboxRef, uids: Sequence[int], fields: Iterable[str] | None = None
    ) -> dict[int, dict]:
        mailbox_id = self._owned(mailbox)
        wanted = set(DERIVED_FIELDS - _IMAP_COLS.keys()) if fields is None else set(fields)
        unknown = wanted - DERIVED_FIELDS
        if unknown:
            raise ValueError(f"unknown derived fields: {', '.join(sorted(unknown))}")
        imap = [k for k in _IMAP_COLS if k in wanted]
        meta_keys = _META_KEYS & wanted
        cols = ", ".join(["m.uid", "m.body_id", "d.body_id", *(f"d.{_IMAP_COLS[k]}" for k in imap),
                          *(["d.meta"] if meta_keys else [])])
        rows = _select_uids(
            self._read,
            f"SELECT {cols} FROM messages m LEFT JOIN body_derived d ON d.body_id = m.body_id WHERE m.mailbox_id = ?",
            mailbox_id,
            list(uids),
            column="m.uid",
        )
        out: dict[int, dict] = {}
        body_of: dict[int, int] = {}
        missing: list[int] = []
        n_imap = len(imap)
        for row in rows:
            uid = row[0]
            body_of[uid] = row[1]
            if row[2] is None:  # not derived yet
                missing.append(uid)
                continue
            item: dict = {}
            for i, key in enumerate(imap):
                item[key] = row[3 + i]
            if meta_keys:
                data = json.loads(row[3 + n_imap])
                for key in meta_keys:
                    item[key] = data[key]
            out[uid] = item
        if missing:
            records, _saved = await self._derive_now([body_of[u] for u in missing])
            for uid in missing:
                rec = records.get(body_of[uid])
                if rec is None:
                    continue
                item = {k: getattr(rec, k) for k in imap}
                for key in meta_keys:
                    item[key] = rec.meta[key]
                if "headers" in wanted:
                    item["headers"] = _headers_dict(rec.headers)
                out[uid] = item
        if "headers" in wanted:
            need = [u for u in out if "headers" not in out[u]]
            by_body: dict[int, dict[str, list[str]]] = {}
            ids = sorted({body_of[u] for u in need})
            for i in range(0, len(ids), 900):
                chunk = ids[i : i + 900]
                for body_id, name, value in self._q(
                    f"SELECT body_id, name, value FROM header_fields WHERE body_id IN ({','.join('?' * len(chunk))})"
                    " ORDER BY body_id, n",
                    chunk,
                ):
                    by_body.setdefault(body_id, {}).setdefault(name, []).append(value)
            for uid in need:
                out[uid]["headers"] = by_body.get(body_of[uid], {})
        return out

    async def search_headers(self, mailbox: MailboxRef, field: str, text: str) -> set[int]:
        mailbox_id = self._owned(mailbox)
        pending = await self._ensure_indexed(mailbox_id)
        name = field.lower()
        needle = text.casefold()
        if not text:
            rows = self._q(
                "SELECT m.uid FROM messages m WHERE m.mailbox_id = ? AND EXISTS"
                " (SELECT 1 FROM header_fields h WHERE h.body_id = m.body_id AND h.name = ?)",
                (mailbox_id, name),
            )
        else:
            rows = self._q(
                "SELECT m.uid FROM messages m WHERE m.mailbox_id = ? AND EXISTS"
                " (SELECT 1 FROM header_fields h WHERE h.body_id = m.body_id AND h.name = ?"
                " AND instr(h.folded, ?) > 0)",
                (mailbox_id, name, needle),
            )
        found = {r[0] for r in rows}
        for uid, rec in pending.items():
            if any(n == name and needle in value.casefold() for n, value in rec.headers):
                found.add(uid)
        return found

    async def search_text(self, mailbox: MailboxRef, text: str, where: Literal["body", "text"]) -> set[int]:
        mailbox_id = self._owned(mailbox)
        pending = await self._ensure_indexed(mailbox_id)
        needle = text.strip()
        if not needle:
            return {r[0] for r in self._q("SELECT uid FROM messages WHERE mailbox_id = ?", (mailbox_id,))}
        found = textindex.search(self._read, mailbox_id, needle, where)
        for uid, rec in pending.items():
            if textindex.matches(rec.header_text, rec.body_text, needle, where):
                found.add(uid)
        return found

    async def _ensure_indexed(self, mailbox_id: int) -> dict[int, DerivedRecord]:
        """Derive the mailbox's bodies the indexer has not reached yet. Returns,
        by UID, the records that could not be saved (the disk is full, or
        indexing is deferred): the caller searches them itself."""
        rows = self._q(
            "SELECT m.uid, b.id FROM messages m JOIN bodies b ON b.id = m.body_id"
            " WHERE m.mailbox_id = ? AND b.derived IS NULL",
            (mailbox_id,),
        )
        if not rows:
            return {}
        records, saved = await self._derive_now([r[1] for r in rows])
        if saved:
            return {}
        return {uid: records[body_id] for uid, body_id in rows if body_id in records}

    async def _derive_now(self, body_ids: list[int]) -> tuple[dict[int, DerivedRecord], bool]:
        """Derive bodies the indexer has not reached yet (FETCH/SEARCH must
        neither wait for it nor answer without them) and store the result if
        there is room. Returns the records and whether they were stored."""
        out: dict[int, DerivedRecord] = {}
        for body_id in dict.fromkeys(body_ids):
            row = self._q1("SELECT segment, offset, length FROM bodies WHERE id = ?", (body_id,))
            if row is not None:
                out[body_id] = derive_record(self.blobs.read(row[0], row[1], row[2]))
        items = list(out.items())
        if not items:
            return out, True
        if self._index_deferred():
            return out, False
        try:
            await self._write(lambda c, ctx: self._save_derived(c, items))
        except StorageFull:
            # Derived data is a cache the indexer fills again later: a full
            # disk must not make FETCH/SEARCH of stored mail fail.
            log.warning("store: derived data not saved, the disk is full")
            self._index_failed()
            return out, False
        return out, True

    @staticmethod
    def _save_derived(c: sqlite3.Connection, items: list[tuple[int, DerivedRecord]]) -> None:
        for body_id, rec in items:
            cur = c.execute("UPDATE bodies SET derived = ? WHERE id = ? AND derived IS NULL", (INDEXED, body_id))
            if not cur.rowcount:
                continue  # gone, or derived meanwhile
            c.execute(
                "INSERT OR REPLACE INTO body_derived(body_id, envelope, bodystructure, body, meta)"
                " VALUES (?, ?, ?, ?, ?)",
                (body_id, rec.envelope_imap, rec.bodystructure_imap, rec.body_imap,
                 json.dumps(rec.meta, separators=(",", ":"))),
            )
            c.execute("DELETE FROM header_fields WHERE body_id = ?", (body_id,))
            c.executemany(
                "INSERT OR REPLACE INTO header_fields(body_id, name, n, value, folded) VALUES (?, ?, ?, ?, ?)",
                [(body_id, name, n, value, value.casefold()) for n, (name, value) in enumerate(rec.headers)],
            )
            textindex.save(c, body_id, rec.header_text, rec.body_text)

    # --- when index data may be written -----------------------------------------
    def _free_bytes(self) -> int:
        try:
            st = os.statvfs(self.data_dir)
        except OSError:
            return 1 << 62
        return st.f_bavail * st.f_frsize

    def _index_deferred(self) -> float:
        """Index data is a cache: it is written only while the disk keeps
        ``index_min_free`` bytes for mail, and not again soon after a write of
        it failed for lack of space. Reads then answer from data derived on the
        spot, and the background indexer catches up once there is room.
        Returns 0 if it may be written now, else the seconds to wait."""
        wait = self._index_resume_at - time.monotonic()
        if wait > 0:
            return wait
        if self._free_bytes() < self.config.index_min_free:
            return INDEX_FREE_POLL
        return 0.0

    def _index_failed(self) -> None:
        """A write of index data failed with the disk full: wait, longer each time."""
        first, last = INDEX_BACKOFF
        self._index_backoff = min(last, self._index_backoff * 2) if self._index_backoff else first
        self._index_resume_at = time.monotonic() + self._index_backoff

    def _index_some(self, c: sqlite3.Connection) -> bool | float:
        """Background indexing on the writer thread when it has no writes to do:
        derive bodies delivered since, so FETCH/SEARCH find them ready.

        Deriving holds the GIL and the writer thread, so it works in short
        slices and stops as soon as a write is waiting: a delivery never queues
        behind more than one body's derivation. Each slice is one commit of at
        most INDEX_BATCH bodies; when the free space falls below the reserve,
        or a commit fails with the disk full, it stops and returns the seconds
        after which to look again."""
        wait = self._index_deferred()
        if wait:
            if c.execute("SELECT 1 FROM bodies WHERE derived IS NULL LIMIT 1").fetchone() is None:
                return False
            return max(0.05, wait)
        rows = c.execute(
            "SELECT id, segment, offset, length FROM bodies WHERE derived IS NULL LIMIT ?", (INDEX_BATCH,)
        ).fetchall()
        if not rows:
            return False
        items: list[tuple[int, DerivedRecord]] = []
        started = time.monotonic()
        for body_id, segment, offset, length in rows:
            items.append((body_id, derive_record(self.blobs.read(segment, offset, length))))
            if self._writer.has_pending() or time.monotonic() - started > INDEX_SLICE:
                break
        # Derived data can always be computed again (bodies.derived stays NULL if
        # this commit is lost), so it is committed without an fsync: the next
        # durable commit syncs the WAL up to and including it. A delivery that
        # arrives meanwhile then waits for a memory write, not for a disk flush.
        c.execute("PRAGMA synchronous=OFF")
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                self._save_derived(c, items)
                c.execute("COMMIT")
            except BaseException as exc:
                # SQLite may have rolled the transaction back already (SQLITE_FULL)
                if c.in_transaction:
                    c.execute("ROLLBACK")
                if not isinstance(self.translate_error(exc), StorageFull):
                    raise
                log.warning("store: indexing paused, the disk is full")
                self._index_failed()
                return max(0.05, self._index_resume_at - time.monotonic())
        finally:
            c.execute(f"PRAGMA synchronous={'FULL' if self.config.fsync else 'OFF'}")
        self._index_backoff = 0.0
        return True


    # --- background work: indexing and compaction --------------------------------
    _next_compaction = 0.0

    def _background_work(self, c: sqlite3.Connection) -> bool | float:
        """Idle-time work on the writer thread: index new bodies first, then
        now and then reclaim the space of expunged ones. True: more to do now;
        a number: look again after that many seconds (indexing is waiting
        for disk space)."""
        more = self._index_some(c)
        if more is True:
            return True
        now = time.monotonic()
        if now >= self._next_compaction:
            self._next_compaction = now + COMPACT_INTERVAL
            if self.compact_step(c):
                return True
        return more

    def compact_step(self, c: sqlite3.Connection) -> bool:
        """Rewrite one mostly-dead sealed segment: copy its live bodies to the
        current segment, sync, repoint their rows, commit; the old file is
        deleted on a later pass, once no read that began before the commit can
        still be using it. Returns True if there may be more to do."""
        self._remove_retired_segments(c)
        current = self.blobs.current_segment
        row = c.execute(
            "SELECT id FROM segments WHERE id < ? AND size > 0 AND live < size * ? ORDER BY live LIMIT 1",
            (current, COMPACT_LIVE_RATIO),
        ).fetchone()
        if row is None:
            return False
        segment = row[0]
        bodies = c.execute(
            "SELECT id, offset, length FROM bodies WHERE segment = ? ORDER BY offset", (segment,)
        ).fetchall()
        c.execute("BEGIN IMMEDIATE")
        try:
            moved = 0
            for body_id, offset, length in bodies:
                data = self.blobs.read(segment, offset, length)
                new_segment, new_offset = self.blobs.append(data)
                c.execute(
                    "UPDATE bodies SET segment = ?, offset = ? WHERE id = ?", (new_segment, new_offset, body_id)
                )
                self._count_segment_bytes(c, new_segment, length)
                moved += length
            c.execute("DELETE FROM segments WHERE id = ?", (segment,))
            self.blobs.sync()
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:  # SQLITE_FULL may have rolled it back already
                c.execute("ROLLBACK")
            raise
        log.info("compacted segment %d: %d bodies (%d bytes) kept", segment, len(bodies), moved)
        return True

    def _remove_retired_segments(self, c: sqlite3.Connection) -> None:
        """Delete segment files no index row points to any more (compacted ones,
        and, after a crash, files whose rows were never committed)."""
        known = {r[0] for r in c.execute("SELECT id FROM segments")}
        for segment in self.blobs.existing():
            if segment not in known and segment < self.blobs.current_segment:
                # belt and braces: never a file a body row still points into
                if c.execute("SELECT 1 FROM bodies WHERE segment = ? LIMIT 1", (segment,)).fetchone():
                    log.error("segment %d has no row but holds bodies; kept", segment)
                    continue
                self.blobs.remove(segment)

    async def compact(self) -> None:
        """Reclaim the space of expunged messages now (``mailyard store compact``)."""

        def run() -> None:
            conn = self._writer._conn
            while self.compact_step(conn):
                pass

        await self._writer.run_exclusive(run)

def _headers_dict(headers: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in headers:
        out.setdefault(name, []).append(value)
    return out


def _select_uids(
    c: sqlite3.Connection, sql: str, mailbox_id: int, uids: list[int], column: str = "uid", uid_at: int = 0
) -> list[tuple]:
    """Run ``sql`` (which ends in a mailbox_id condition) for a list of UIDs,
    in chunks that stay under SQLite's bound-parameter limit; ``uid_at`` is
    the position of the UID among the selected columns."""
    out: list[tuple] = []
    if len(uids) > 64:
        lo, hi = min(uids), max(uids)
        if hi - lo < 4 * len(uids):
            # a dense set (1:*, 1000:2000): one range scan of the primary key,
            # filtered here, instead of IN lists of 900 bound parameters
            wanted = set(uids)
            rows = c.execute(f"{sql} AND {column} BETWEEN ? AND ?", (mailbox_id, lo, hi)).fetchall()
            return [r for r in rows if r[uid_at] in wanted]
    for i in range(0, len(uids), 900):
        chunk = uids[i : i + 900]
        marks = ",".join("?" * len(chunk))
        out.extend(c.execute(f"{sql} AND {column} IN ({marks})", (mailbox_id, *chunk)).fetchall())
    return out
