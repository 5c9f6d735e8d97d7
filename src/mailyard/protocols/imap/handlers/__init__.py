"""IMAP command handlers, one module per command group; each handler is a
coroutine ``handler(session, command)`` that queues the responses on the
session's engine (see session.py for the contract).

- auth.py: CAPABILITY NOOP CHECK LOGOUT ID STARTTLS LOGIN AUTHENTICATE UNAUTHENTICATE ENABLE IDLE COMPRESS
- mailboxes.py: CREATE DELETE RENAME (UN)SUBSCRIBE LIST LSUB NAMESPACE STATUS
- selection.py: SELECT EXAMINE (CONDSTORE, QRESYNC) CLOSE UNSELECT EXPUNGE
- messages.py: FETCH STORE COPY MOVE APPEND
- searching.py: SEARCH (ESEARCH, SEARCHRES), SORT (ESORT, SORT=DISPLAY), THREAD,
  CANCELUPDATE (CONTEXT=SEARCH, CONTEXT=SORT)
- quota.py: GETQUOTA GETQUOTAROOT SETQUOTA (RFC 9208)

`HANDLERS` is the glue's half of the engine's state table (engine.VALID_IN
says in which states a command is valid; this says what it does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import auth, mailboxes, messages, quota, searching, selection

if TYPE_CHECKING:
    from ..session import Handler

HANDLERS: dict[str, Handler] = {
    "CAPABILITY": auth.cmd_capability,
    "NOOP": auth.cmd_noop,
    "CHECK": auth.cmd_noop,
    "LOGOUT": auth.cmd_logout,
    "ID": auth.cmd_id,
    "STARTTLS": auth.cmd_starttls,
    "LOGIN": auth.cmd_login,
    "AUTHENTICATE": auth.cmd_authenticate,
    "UNAUTHENTICATE": auth.cmd_unauthenticate,
    "ENABLE": auth.cmd_enable,
    "IDLE": auth.cmd_idle,
    "COMPRESS": auth.cmd_compress,
    "SELECT": selection.cmd_select,
    "EXAMINE": selection.cmd_select,
    "CLOSE": selection.cmd_close,
    "UNSELECT": selection.cmd_close,
    "EXPUNGE": selection.cmd_expunge,
    "CREATE": mailboxes.cmd_create,
    "DELETE": mailboxes.cmd_delete,
    "RENAME": mailboxes.cmd_rename,
    "SUBSCRIBE": mailboxes.cmd_subscribe,
    "UNSUBSCRIBE": mailboxes.cmd_subscribe,
    "LIST": mailboxes.cmd_list,
    "LSUB": mailboxes.cmd_list,
    "NAMESPACE": mailboxes.cmd_namespace,
    "STATUS": mailboxes.cmd_status,
    "APPEND": messages.cmd_append,
    "SEARCH": searching.cmd_search,
    "SORT": searching.cmd_sort,
    "THREAD": searching.cmd_thread,
    "CANCELUPDATE": searching.cmd_cancelupdate,
    "FETCH": messages.cmd_fetch,
    "STORE": messages.cmd_store,
    "COPY": messages.cmd_copy,
    "MOVE": messages.cmd_copy,
    "GETQUOTA": quota.cmd_getquota,
    "GETQUOTAROOT": quota.cmd_getquotaroot,
    "SETQUOTA": quota.cmd_setquota,
}
