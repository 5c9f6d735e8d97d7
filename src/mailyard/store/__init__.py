"""The store: the only path to accounts, mailboxes, messages and the queue.

store/api.py is the interface (``Store``) and its types; store/sqlite/ is the
embedded backend. Everything outside store/ uses the interface and opens a
store with ``open_store``, so no other layer knows which backend runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import StoreConfig
    from .api import Store


def open_store(data_dir: Path, config: StoreConfig | None = None, background: bool = True) -> Store:
    """Open (creating it if need be) the store of a data directory.
    ``background``: run the idle-time indexing and compaction here (one
    process of a multi-process server does, the others do not)."""
    from .sqlite import SQLiteStore

    return SQLiteStore(data_dir, config, background)


def store_exists(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds a store (``mailyard init`` made one)."""
    from .sqlite import DB_FILE

    return (Path(data_dir) / DB_FILE).exists()
