"""Sessions whose references went stale (RFC 2180 3.2, RFC 9051 7.1.5): the
selected mailbox deleted elsewhere, the account removed or its password
changed; DELETE of the session's own selected mailbox (RFC 9051 7.1 CLOSED)."""

from __future__ import annotations

from .helpers import connect, store_with_mail
from .test_auth import LOGGED_IN


def test_selected_mailbox_deleted_elsewhere_ends_the_session() -> None:
    store = store_with_mail()
    c = connect(store, select="Sent")
    store.delete("alice", "Sent")
    c.expect("a1 NOOP", "* BYE Selected mailbox was deleted, have to disconnect")
    assert c.conv.closed


def test_selected_mailbox_recreated_is_another_mailbox() -> None:
    store = store_with_mail()
    c = connect(store, select="Sent")
    store.delete("alice", "Sent")
    store.create("alice", "Sent")  # same name, new UIDVALIDITY
    c.expect("a1 FETCH 1:* FLAGS", "* BYE Selected mailbox was deleted, have to disconnect")


def test_deleting_the_own_selected_mailbox_closes_it() -> None:
    c = connect(select="Sent")
    c.expect("a1 DELETE Sent", "* OK [CLOSED] Selected mailbox deleted", "a1 OK DELETE completed")
    c.expect("a2 FETCH 1 FLAGS", "a2 BAD FETCH is not valid in the authenticated state")


def test_copy_to_a_mailbox_deleted_meanwhile() -> None:
    store = store_with_mail()
    c = connect(store, select="INBOX")
    box = store.find("alice", "Trash")
    assert box is not None
    stale = box.record()
    store.delete("alice", "Trash")
    backend = c.session.backend

    async def stale_lookup(name: str) -> object:
        return stale  # looked up just before the deletion

    backend.get_mailbox = stale_lookup  # type: ignore[union-attr, method-assign]
    c.expect("a1 COPY 1 Trash", "a1 NO [NONEXISTENT] Mailbox does not exist")
    c.expect("a2 NOOP", "a2 OK NOOP completed")


def test_password_change_and_removal_end_sessions() -> None:
    store = store_with_mail()
    a = connect(store)
    b = connect(store, user="bob")
    store.set_password("alice", "new")
    a.expect("a1 NOOP", "* BYE Account removed or password changed; log in again")
    store.remove_account("bob")
    b.expect("b1 LIST \"\" *", "* BYE Account removed or password changed; log in again")
    fresh = connect(store, user=None)
    fresh.expect("c1 LOGIN alice new", f"c1 OK [CAPABILITY {LOGGED_IN}] Logged in")
