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

``PostgreSQLStore`` (store.py) is one mixin per aggregate on a shared core,
as the SQLite store:

- core.py: the connection pool, the write transaction, change notification
  (LISTEN/NOTIFY), advisory locks across nodes;
- validity.py: the checks of session references (credentials, mailboxes),
  and the connection that marks this store alive to the other nodes;
- transaction.py: what a write's transaction carries and the helpers run
  inside one; the rows of big reads, decoded on the listing lane;
- schema.py: the migrations;
- directory.py: domains, accounts, quotas, sender grants, webmail sessions,
  account settings, aliases and lists;
- contacts.py: the address book and the addresses written to and received from;
- mailboxes.py: mailboxes, subscriptions, \\Recent, status;
- messages.py: messages, flags, UIDs, expunge, copy, changes; the expunged
  rows held for the sessions of any node;
- search.py: derived data, header and text search, SORT and THREAD keys;
- queue.py: the outbound queue.
"""

from __future__ import annotations

from .store import PostgreSQLStore

__all__ = ["PostgreSQLStore"]
