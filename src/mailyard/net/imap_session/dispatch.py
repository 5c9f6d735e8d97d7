"""Command name -> handler (the glue's half of the engine's state table)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import auth, mailboxes, messages, searching, selection

if TYPE_CHECKING:
    from .core import Handler, ImapSession


async def _idle(s: ImapSession, cmd: object) -> None:
    await s.idle()


HANDLERS: dict[str, Handler] = {
    "CAPABILITY": auth.cmd_capability,
    "NOOP": auth.cmd_noop,
    "CHECK": auth.cmd_noop,  # RFC 3501 6.4.1; gone in rev2, harmless as NOOP
    "LOGOUT": auth.cmd_logout,
    "ID": auth.cmd_id,
    "STARTTLS": auth.cmd_starttls,
    "LOGIN": auth.cmd_login,
    "AUTHENTICATE": auth.cmd_authenticate,
    "ENABLE": auth.cmd_enable,
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
    "IDLE": _idle,
    "SEARCH": searching.cmd_search,
    "FETCH": messages.cmd_fetch,
    "STORE": messages.cmd_store,
    "COPY": messages.cmd_copy,
    "MOVE": messages.cmd_copy,
}
