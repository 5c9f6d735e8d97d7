"""A session's picture of its selected mailbox, checked against the store
over random interleavings of another session's changes.

Session A (IMAP4rev1, with CONDSTORE, QRESYNC or neither) runs FETCH,
UID FETCH, FETCH BODY[] (an implicit \\Seen), STORE (.SILENT or not),
SEARCH and NOOP; session B stores flags, expunges and new mail arrives.
B's notifications to A are sometimes delayed (another worker's datagram
in flight), and B's changes also land in the middle of A's commands,
between A's reads of the changes (the index-data cache's and the
end-of-command sync's). A client model is kept from A's responses only:
EXISTS, EXPUNGE, VANISHED, and the FLAGS of every FETCH (solicited or not).

After every NOOP (all notifications delivered) the model must equal the
store: the same UIDs in the same order (RFC 9051 7.4.1, 7.5.1), the same
flags (RFC 9051 7.5.2, 6.4.6: a change from another session is
announced, with or without .SILENT), and every new message \\Recent in
exactly one of the two sessions (RFC 3501 2.3.2). No EXPUNGE is sent
during FETCH, STORE or SEARCH (RFC 9051 7.5.1)."""

from __future__ import annotations

import random
import re

from .helpers import SHORT, USER, connect, store_with_mail

FLAGS = ("\\Flagged", "\\Seen", "\\Answered")
_FETCH = re.compile(rb"^\* (\d+) FETCH \((.*)\)$", re.S)


def _lines(data: bytes) -> list[bytes]:
    """Response lines, a literal kept in its line."""
    out, i = [], 0
    while i < len(data):
        j = data.index(b"\r\n", i)
        m = re.search(rb"\{(\d+)\}$", data[i:j])
        if m:
            j = data.index(b"\r\n", j + 2 + int(m.group(1)))
        out.append(data[i:j])
        i = j + 2
    return out


def _flags(body: bytes) -> set[bytes] | None:
    if b"BODY[] {" in body:  # the FLAGS after the literal
        body = body.split(b"BODY[] {")[0] + body.rsplit(b"\n", 1)[-1]
    m = re.search(rb"FLAGS \(([^)]*)\)", body)
    return None if m is None else set(m.group(1).split()) - {b"\\Recent"}


def _run(seed: int, steps: int = 40) -> None:
    rnd = random.Random(seed)
    store = store_with_mail()
    ext = rnd.choice([None, "CONDSTORE", "QRESYNC"])
    a = connect(store, select="INBOX", enable=ext)
    b = connect(store, select="INBOX")
    box = next(x for x in store.boxes.values() if x.account == USER and x.name == "INBOX")
    mine = [e for e in store._listeners if getattr(e[1], "__self__", None) is a.session]
    delayed: list[int] = []
    inject = [True]

    def by_b(change) -> None:  # noqa: ANN001
        if rnd.random() < 0.5:
            change()
            return
        listeners = store._listeners
        store._listeners = [e for e in listeners if e not in mine]
        change()
        store._listeners = listeners
        delayed.append(box.id)

    def deliver(everything: bool = False) -> None:
        while delayed and (everything or rnd.random() < 0.5):
            mailbox_id = delayed.pop()
            for _, callback in mine:
                callback(mailbox_id)

    def b_store() -> None:
        b.send(f"b STORE {rnd.randint(1, 5)} {rnd.choice('+-')}FLAGS{rnd.choice(['', '.SILENT'])} "
               f"({rnd.choice(FLAGS)})")

    def b_expunge() -> None:
        b.send(f"b STORE {rnd.randint(1, 5)} +FLAGS.SILENT (\\Deleted)")
        b.send("b EXPUNGE")

    changes = [b_store, b_expunge, lambda: store.deliver(USER, SHORT)]
    backend = a.session.backend
    read = backend.changes_since

    async def changes_since(mailbox, modseq):  # noqa: ANN001, ANN202
        out = await read(mailbox, modseq)
        if inject[0] and rnd.random() < 0.25:
            by_b(rnd.choice(changes))  # committed after this read, during A's command
        if rnd.random() < 0.2:
            deliver()
        return out

    backend.changes_since = changes_since
    view: list[int | None] = [None] * 3  # the SELECT answered 3 EXISTS
    flags: dict[int, set[bytes]] = {}

    def command(line: str) -> None:
        lines = _lines(a.send("a " + line))
        assert lines[-1].startswith(b"a OK") or b"EXPUNGEISSUED" in lines[-1], (seed, line, lines)
        for got in lines[:-1]:
            if got.endswith(b" EXISTS"):
                view.extend([None] * (int(got.split()[1]) - len(view)))
            elif got.endswith(b" EXPUNGE"):
                assert not line.startswith(("FETCH", "STORE", "SEARCH")), (seed, line, lines)
                view.pop(int(got.split()[1]) - 1)
            elif got.startswith(b"* VANISHED ") and b"EARLIER" not in got:
                gone: set[int] = set()
                for part in got.split()[-1].decode().split(","):
                    lo, _, hi = part.partition(":")
                    gone |= set(range(int(lo), int(hi or lo) + 1))
                view[:] = [u for u in view if u not in gone]
            elif (m := _FETCH.match(got)) is not None:
                seq, body = int(m.group(1)), m.group(2)
                uid = re.search(rb"UID (\d+)", body.split(b"BODY[]")[0])
                if uid is not None:
                    assert view[seq - 1] in (None, int(uid.group(1))), (seed, line, lines, view)
                    view[seq - 1] = int(uid.group(1))
                f = _flags(body)
                if f is not None and view[seq - 1] is not None:
                    flags[view[seq - 1]] = f  # type: ignore[index]
        if ".SILENT" in line:  # the client applies its own silent change
            _, seq, mode, name = line.split()
            uid = view[int(seq) - 1]
            if uid in flags:
                (flags[uid].add if mode.startswith("+") else flags[uid].discard)(name.strip("()").encode())
        # UIDs of new messages: the server's view, position by position
        # (the model checks the order of the others, and the count)
        server = list(a.session.sel.view.uids)
        assert len(server) == len(view), (seed, line, lines, view, server)
        view[:] = [s if v is None else v for v, s in zip(view, server, strict=True)]
        assert view == server, (seed, line, lines, view, server)

    command("UID FETCH 1:* (FLAGS)")
    for _ in range(steps):
        op = rnd.randrange(9)
        if op < 3:
            by_b(changes[op])
            continue
        n = len(view)
        if op == 8 or not n:
            inject[0] = False
            deliver(everything=True)
            command("NOOP")
            for uid in [u for u in view if u not in flags]:
                command(f"UID FETCH {uid} (FLAGS)")  # a client reads a new message's flags
            assert view == sorted(box.messages), (seed, view, sorted(box.messages))
            for uid in view:
                assert flags[uid] == {f.encode() for f in box.messages[uid][1].flags}, (seed, uid, flags[uid])
            b.send("b NOOP")
            recent = []
            for c in (a, b):
                lines = c.untagged("r UID FETCH 1:* (FLAGS)")
                recent.append({int(re.search(rb"UID (\d+)", x).group(1)) for x in lines if b"\\Recent" in x})
            assert not recent[0] & recent[1], (seed, recent)
            assert {u for u in box.messages if u > 3} <= recent[0] | recent[1], (seed, recent)
            inject[0] = True
            continue
        deliver()
        command([
            f"FETCH {rnd.randint(1, n)} (FLAGS)",
            "UID FETCH 1:* (FLAGS)",
            f"FETCH {rnd.randint(1, n)} (BODY[])",
            f"STORE {rnd.randint(1, n)} {rnd.choice('+-')}FLAGS{rnd.choice(['', '.SILENT'])} ({rnd.choice(FLAGS)})",
            "SEARCH ALL",
        ][op - 3])


def test_a_session_keeps_step_with_the_store_over_random_interleavings() -> None:
    for seed in range(400):
        _run(seed)
