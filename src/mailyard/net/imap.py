"""IMAP service glue: the listener's session factory (DESIGN.md "net/").

The protocol lives in protocols/imap (sans-I/O); net/imap_session carries out
its commands against the store. This module is what server.py registers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .imap_session.core import ImapSession

if TYPE_CHECKING:
    from ..server import MailServer
    from .listener import Connection


async def imap_session(server: MailServer, conn: Connection) -> None:
    """Run one IMAP connection to its end."""
    await ImapSession(server, conn).run()


async def refuse(conn: Connection, reason: str) -> None:
    """Over the connection limits: RFC 9051 7.1.5 allows BYE as the greeting."""
    await conn.send(f"* BYE {reason}\r\n".encode())
