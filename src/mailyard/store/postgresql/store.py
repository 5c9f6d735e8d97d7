"""``PostgreSQLStore``: the Store API over psycopg 3's async connection pool
(see the package docstring for the guarantees), one mixin per aggregate on
``PostgreSQLCore`` (core.py)."""

from __future__ import annotations

from .contacts import ContactsMixin
from .directory import DirectoryMixin
from .mailboxes import MailboxesMixin
from .messages import MessagesMixin
from .queue import QueueMixin
from .search import SearchMixin
from .validity import ValidityMixin

__all__ = ["PostgreSQLStore"]


# ContactsMixin first: it is no PostgreSQLCore, and its methods come before
# the abstract ones of Store
class PostgreSQLStore(ContactsMixin, DirectoryMixin, MailboxesMixin, MessagesMixin, SearchMixin, QueueMixin,
                      ValidityMixin):
    """Store backend on a PostgreSQL database named by ``dsn``."""
