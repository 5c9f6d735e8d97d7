"""The store on PostgreSQL: several mailyard nodes serving one set of mailboxes.

``PostgreSQLStore`` implements store/api.py's ``Store`` with the guarantees
of the SQLite store (store/sqlite/): every write is one transaction,
committed before its coroutine returns (``synchronous_commit`` as the
server has it: on by default, so a message is durable before its 250/OK);
UIDs and mod-sequences come from ``UPDATE mailboxes ... RETURNING`` on the
mailbox row, whose row lock orders concurrent writers on any node, so they
strictly increase per mailbox; bodies are ``bytea`` rows; derived data
(store/api.py ``derive_record``) is computed before the transaction and
written in it, so FETCH and SEARCH never parse a message.

Change notification crosses nodes with LISTEN/NOTIFY: every write sends
``pg_notify`` inside its transaction (delivered at commit, never for a
rolled-back write); one listening connection per store wakes this node's
listeners (IMAP IDLE) for writes of the other nodes, and forwards the other
kinds of note (directory, queue, revocations) to the peers channel's
handlers. The driver is psycopg 3 with its async pool: no thread per call.

The module layout: schema.py (the migrations), this module (the store).
"""

from __future__ import annotations

from .store import PostgreSQLStore

__all__ = ["PostgreSQLStore"]
