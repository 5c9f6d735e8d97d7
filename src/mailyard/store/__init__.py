"""The store: the only path to accounts, mailboxes, messages and the queue.

store/api.py is the interface (``Store``) and its types; store/sqlite/ is the
embedded backend, store/postgresql/ the one several nodes can share
(``[store] backend = "postgresql"``). Everything outside store/ uses the interface and opens a
store with ``open_store``, so no other layer knows which backend runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import StoreConfig
    from .api import Store


def open_store(data_dir: Path, config: StoreConfig | None = None, background: bool = True,
               max_mailboxes: int | None = None) -> Store:
    """Open (creating it if need be) the store of a data directory.
    ``background``: run the idle-time indexing and compaction here (one
    process of a multi-process server does, the others do not).
    With ``[store] backend = "postgresql"`` the store is the database
    ``[store] dsn`` names; the data directory keeps the node's own files.
    ``max_mailboxes``: ``[limits] max_mailboxes`` (``Store.max_mailboxes``)."""
    store: Store
    if config is not None and config.backend == "postgresql":
        from .postgresql import PostgreSQLStore

        if not config.dsn:
            from .api import StoreError

            raise StoreError('[store] backend = "postgresql" needs [store] dsn = "postgresql://..."')
        store = PostgreSQLStore(config.dsn, config, background, pool_size=config.pool_size, data_dir=data_dir)
    else:
        from .sqlite import SQLiteStore

        store = SQLiteStore(data_dir, config, background)
    store.max_mailboxes = max_mailboxes
    return store


def migrate_store(data_dir: Path, config: StoreConfig | None = None) -> tuple[int, int]:
    """Bring the store's schema up to date (``mailyard store migrate``);
    returns (version before, version after)."""
    if config is not None and config.backend == "postgresql":
        from .postgresql.schema import migrate_sync

        return migrate_sync(config.dsn)
    import sqlite3

    from .sqlite import DB_FILE
    from .sqlite import schema as sqlite_schema

    path = Path(data_dir) / DB_FILE
    before = 0
    if path.exists():
        with sqlite3.connect(path) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            before = int(row[0]) if row else 0
        conn.close()
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys=ON")
        sqlite_schema.create(conn)
    finally:
        conn.close()
    return before, sqlite_schema.SCHEMA_VERSION


def store_exists(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds a store (``mailyard init`` made one).
    With the postgresql backend ``init`` still makes the data directory
    (config, certificates, DKIM keys) and opens the store, which leaves the
    SQLite marker file out: the config decides then (``require_data_dir``)."""
    from .sqlite import DB_FILE

    return (Path(data_dir) / DB_FILE).exists()
