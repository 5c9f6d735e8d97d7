"""The selected mailbox under other sessions' changes: \\Recent shares
(RFC 3501 2.3.2), new keywords in FLAGS (RFC 9051 7.3.5), CONDSTORE enabled
while selected (RFC 7162 3.1), FETCH of messages expunged elsewhere (RFC 2180 4.1)."""

from __future__ import annotations

from mailyard.protocols.imap.memory import MemoryBackend

from .helpers import SHORT, USER, connect, store_with_mail


def test_recent_claim_stops_at_what_the_session_announced_rfc3501_2_3_2() -> None:
    store = store_with_mail()
    a = connect(store, select="INBOX")  # takes 1:3
    b = connect(store, select="INBOX")
    backend = a.session.backend
    assert isinstance(backend, MemoryBackend)
    real = backend.changes_since
    delivered: list[int] = []

    async def racing_changes_since(mailbox, modseq):  # noqa: ANN001, ANN202
        changes = await real(mailbox, modseq)
        if not delivered:
            # a delivery commits after a's look at the mailbox and before its claim
            delivered.append(store.deliver(USER, SHORT))
        return changes

    backend.changes_since = racing_changes_since  # type: ignore[method-assign]
    store.deliver(USER, SHORT)  # UID 4
    a.expect("a1 NOOP", "* 4 EXISTS", "* 4 RECENT", "a1 OK NOOP completed")
    # UID 5 was not announced to a: it stays \Recent for the next session told of it
    b.expect("b1 NOOP", "* 5 EXISTS", "* 1 RECENT", "b1 OK NOOP completed")
    b.expect("b2 FETCH 4:5 (FLAGS)", "* 4 FETCH (FLAGS ())", "* 5 FETCH (FLAGS (\\Recent))", "b2 OK FETCH completed")
    a.expect("a2 NOOP", "* 5 EXISTS", "* 4 RECENT", "a2 OK NOOP completed")
    a.expect("a3 FETCH 4:5 (FLAGS)", "* 4 FETCH (FLAGS (\\Recent))", "* 5 FETCH (FLAGS ())", "a3 OK FETCH completed")
    c = connect(store)
    c.expect("c1 STATUS INBOX (RECENT)", "* STATUS \"INBOX\" (RECENT 0)", "c1 OK STATUS completed")
