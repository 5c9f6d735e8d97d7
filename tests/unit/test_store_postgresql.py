"""What only the PostgreSQL store has, beside the contract suite
(tests/unit/test_store.py runs that on it too): several store objects and
processes ("nodes") on one database, LISTEN/NOTIFY between them, the
versioned schema and ``mailyard store migrate``, the [store] settings."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mailyard.config import Config, ConfigError, StoreConfig
from mailyard.store import open_store
from mailyard.store.api import DeliveryTarget, Mailbox, StoreError, StoreUnavailable
from mailyard.store.postgresql import PostgreSQLStore
from mailyard.store.postgresql.schema import SCHEMA_VERSION
from tests.pgcluster import PgCluster
from tests.waiting import wait_until_async

ROOT = Path(__file__).resolve().parents[2]


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}:{ROOT}")


HELD = b"Subject: held\r\n\r\nstill here\r\n"


async def _alice_with_one_message(store: PostgreSQLStore) -> tuple[Any, Mailbox, int]:
    """example.test, alice and one message in her INBOX (the mailbox as
    before the delivery; its UID)."""
    await store.add_domain("example.test")
    alice = await store.add_account("alice@example.test", "h")
    inbox = await store.get_mailbox(alice.id, "INBOX")
    assert inbox is not None
    [uid] = await store.deliver(HELD, [DeliveryTarget(inbox.id)])
    return alice, inbox, uid


# two nodes' stores on one database, and its DSN
TwoStores = tuple[PostgreSQLStore, PostgreSQLStore, str]


@pytest.fixture
async def two_stores(pg_cluster: PgCluster, tmp_path: Path) -> AsyncIterator[TwoStores]:
    """Two nodes' stores (``a`` and ``b``) on a new database, and its DSN;
    both closed after the test."""
    dsn = pg_cluster.new_dsn()
    a = PostgreSQLStore(dsn, StoreConfig(), data_dir=tmp_path / "a")
    b = PostgreSQLStore(dsn, StoreConfig(), data_dir=tmp_path / "b")
    try:
        yield a, b, dsn
    finally:
        await a.close()
        await b.close()


async def test_a_delivery_through_one_node_wakes_listeners_of_another(two_stores: TwoStores) -> None:
    a, b, _ = two_stores
    await a.add_domain("example.test")
    alice = await a.add_account("alice@example.test", "h")
    inbox = await b.get_mailbox(alice.id, "INBOX")
    assert inbox is not None
    heard: list[int] = []
    b.add_listener(heard.append)
    await a.deliver(b"Subject: x\r\n\r\nhi\r\n", [DeliveryTarget(inbox.id)])
    await until(lambda: inbox.id in heard)
    version = b.directory_version
    await a.add_domain("other.test")
    await until(lambda: b.directory_version > version)  # caches of lookups forget on B too


async def test_a_delivery_by_another_process_is_heard(pg_cluster: PgCluster, tmp_path: Path) -> None:
    """Two processes, as two nodes: the child delivers, this process hears it."""
    dsn = pg_cluster.new_dsn()
    store = PostgreSQLStore(dsn, StoreConfig(), data_dir=tmp_path / "a")
    try:
        await store.add_domain("example.test")
        alice = await store.add_account("alice@example.test", "h")
        inbox = await store.get_mailbox(alice.id, "INBOX")
        assert inbox is not None
        heard: list[int] = []
        store.add_listener(heard.append)
        code = textwrap.dedent(f"""
            import asyncio
            from mailyard.store.api import DeliveryTarget
            from mailyard.store.postgresql import PostgreSQLStore

            async def main():
                s = PostgreSQLStore({dsn!r})
                print(await s.deliver(b"Subject: y\\r\\n\\r\\nfrom B\\r\\n", [DeliveryTarget({inbox.id})]))
                await s.close()

            asyncio.run(main())
        """)
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, env=_env(),
                                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == "[1]"
        await until(lambda: inbox.id in heard)
        assert await store.read_message(inbox, 1) == b"Subject: y\r\n\r\nfrom B\r\n"
    finally:
        await store.close()


async def test_uids_strictly_increase_under_writers_on_several_nodes(pg_cluster: PgCluster, tmp_path: Path) -> None:
    dsn = pg_cluster.new_dsn()
    nodes = [PostgreSQLStore(dsn, StoreConfig(), data_dir=tmp_path / str(i)) for i in range(3)]
    try:
        await nodes[0].add_domain("example.test")
        alice = await nodes[0].add_account("alice@example.test", "h")
        bob = await nodes[0].add_account("bob@example.test", "h")
        a_in = await nodes[0].get_mailbox(alice.id, "INBOX")
        b_in = await nodes[0].get_mailbox(bob.id, "INBOX")
        assert a_in is not None and b_in is not None

        async def writer(node: PostgreSQLStore, n: int) -> list[list[int]]:
            out = []
            for i in range(n):
                # both orders of two mailboxes: row locks in id order, no deadlock
                targets = [DeliveryTarget(a_in.id), DeliveryTarget(b_in.id)]
                out.append(await node.deliver(f"Subject: {i}\r\n\r\nx\r\n".encode(), targets[:: 1 - 2 * (i % 2)]))
            return out

        results = await asyncio.gather(*(writer(node, 15) for node in nodes))
        infos = await nodes[1].list_messages(a_in)
        assert [m.uid for m in infos] == list(range(1, 46))  # gap-free, each once
        modseqs = [m.modseq for m in infos]
        assert modseqs == sorted(modseqs) and len(set(modseqs)) == 45
        assert sum(len(r) for r in results) == 45
    finally:
        for node in nodes:
            await node.close()


def test_store_migrate_command_on_both_backends(pg_cluster: PgCluster, tmp_path: Path) -> None:
    # PostgreSQL: a new database gets every migration, a second run has nothing to do
    import psycopg

    with psycopg.connect(pg_cluster.admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE migrate_me")
    dsn = pg_cluster.dsn("migrate_me")
    data = tmp_path / "pg"
    data.mkdir()
    (data / "config.toml").write_text(f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n')
    argv = [sys.executable, "-m", "mailyard", "--data", str(data), "store", "migrate"]
    first = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"postgresql store schema migrated from version 0 to {SCHEMA_VERSION}"
    again = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=120)
    assert again.stdout.strip() == f"postgresql store schema is at version {SCHEMA_VERSION}: nothing to do"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT array_agg(version ORDER BY version) FROM schema_version").fetchone()[0] == list(
            range(1, SCHEMA_VERSION + 1))
        # a database a later mailyard migrated further is refused, not used
        conn.execute("INSERT INTO schema_version(version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    newer = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=120)
    assert newer.returncode != 0
    assert f"newer mailyard (store schema version {SCHEMA_VERSION + 1}" in newer.stderr
    assert "Traceback" not in newer.stderr
    # SQLite: the data directory's store, created and then current
    lite = tmp_path / "lite"
    argv = [sys.executable, "-m", "mailyard", "--data", str(lite), "init", "--domain", "example.test"]
    assert subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=120).returncode == 0
    argv = [sys.executable, "-m", "mailyard", "--data", str(lite), "store", "migrate"]
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("sqlite store schema is at version ")


def test_store_config_names_the_backend(tmp_path: Path) -> None:
    cfg = Config()
    cfg.apply({"store": {"backend": "PostgreSQL", "dsn": "postgresql://db/mail"}})
    assert cfg.store.backend == "postgresql" and cfg.store.dsn == "postgresql://db/mail"
    with pytest.raises(ConfigError, match="store.backend"):
        Config().apply({"store": {"backend": "mysql"}})
    with pytest.raises(StoreError, match="dsn"):
        open_store(tmp_path, StoreConfig(backend="postgresql"))
    assert isinstance(open_store(tmp_path, StoreConfig(backend="postgresql", dsn="postgresql://x/y")), PostgreSQLStore)


async def test_due_queue_entries_are_claimed_by_one_node(two_stores: TwoStores) -> None:
    """Two nodes asking for due entries at once get disjoint shares, each
    entry once; an entry whose node died (no outcome recorded) is due again
    for another node once the claim runs out."""
    from mailyard.store.api import PENDING, NewQueueEntry, NewRecipient
    from mailyard.store.postgresql.queue import QUEUE_LEASE

    a, b, _ = two_stores
    ids = []
    for n in range(40):
        _, qid = await a.queue_submit(b"x\r\n", NewQueueEntry("s@example.test", [NewRecipient(f"r{n}@b.test")],
                                                              next_attempt=1000.0))
        ids.append(qid)
    shares: list[list[int]] = [[], []]

    async def claim(node: PostgreSQLStore, share: list[int]) -> None:
        for _ in range(10):
            share += [e.id for e in await node.queue_due(2000.0, limit=3)]

    await asyncio.gather(claim(a, shares[0]), claim(b, shares[1]))
    assert sorted(shares[0] + shares[1]) == ids  # every entry once, none twice
    assert await b.queue_due(2000.0) == []  # all claimed
    # B records its attempts; A's claims run out (A died): B takes them over
    from mailyard.store.api import RecipientOutcome

    for qid in shares[1]:
        entry = await b.queue_entry(qid)
        assert entry is not None
        await b.queue_update(qid, [RecipientOutcome(entry.recipients[0].id, PENDING, "451 later", None, 1e11)])
    again = await b.queue_due(2000.0 + QUEUE_LEASE + 1)
    assert sorted(e.id for e in again) == sorted(shares[0])


async def test_a_node_keeps_its_claims_on_the_recipients_it_holds(two_stores: TwoStores) -> None:
    """The recipients a node names in ``queue_due``'s ``exclude`` (its
    runner holds them: waiting for a connection, or being delivered) stay
    its own past the lease's first term; another node takes only those it
    let go."""
    from mailyard.store.api import NewQueueEntry, NewRecipient
    from mailyard.store.postgresql.queue import QUEUE_LEASE

    a, b, _ = two_stores
    ids = []
    for n in range(2):
        _, qid = await a.queue_submit(b"x\r\n", NewQueueEntry("s@example.test", [NewRecipient(f"r{n}@b.test")],
                                                              next_attempt=1000.0))
        ids.append(qid)
    held, dropped = await a.queue_due(2000.0)
    assert [held.id, dropped.id] == ids
    assert await a.queue_due(2000.0 + QUEUE_LEASE * 0.75, limit=0, exclude=[held.recipients[0].id]) == []
    again = await b.queue_due(2000.0 + QUEUE_LEASE + 1)
    assert [e.id for e in again] == [dropped.id]


async def test_exclusive_locks_hold_across_nodes_and_go_with_a_dead_node(pg_cluster: PgCluster,
                                                                         tmp_path: Path) -> None:
    dsn = pg_cluster.new_dsn()
    a, b, c = (PostgreSQLStore(dsn, StoreConfig(), data_dir=tmp_path / n) for n in "abc")
    try:
        assert await a.lock_exclusive("pop3-maildrop", 7)
        assert not await b.lock_exclusive("pop3-maildrop", 7)
        assert await b.lock_exclusive("pop3-maildrop", 8)  # another key
        assert await b.lock_exclusive("other", 7)  # another space
        a.unlock_exclusive("pop3-maildrop", 7)
        await until(lambda: not a._background)
        assert await b.lock_exclusive("pop3-maildrop", 7)
        await b.close()  # the node dies: its locks go with its connection
        assert await c.lock_exclusive("pop3-maildrop", 7)
    finally:
        for s in (a, b, c):
            await s.close()


async def test_notifications_resume_after_the_listening_connection_is_lost(two_stores: TwoStores) -> None:
    import psycopg

    a, b, dsn = two_stores
    await a.add_domain("example.test")
    alice = await a.add_account("alice@example.test", "h")
    inbox = await b.get_mailbox(alice.id, "INBOX")
    assert inbox is not None and b._listen_conn is not None
    heard: list[int] = []
    b.add_listener(heard.append)
    b.hold_expunged(object(), inbox)  # a session of B has the INBOX selected
    pid = b._listen_conn.info.backend_pid
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    # the note of a delivery made while B was not listening is made up for
    await a.deliver(b"Subject: gap\r\n\r\nx\r\n", [DeliveryTarget(inbox.id)])
    await until(lambda: inbox.id in heard)
    await until(lambda: b._listen_conn is not None and b._listen_conn.info.backend_pid != pid)
    heard.clear()
    await a.deliver(b"Subject: after\r\n\r\nx\r\n", [DeliveryTarget(inbox.id)])
    await until(lambda: inbox.id in heard)


async def test_an_unreachable_database_raises_store_unavailable(tmp_path: Path) -> None:
    # nothing listens on this port: every call fails at once, as StoreUnavailable
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = PostgreSQLStore(f"postgresql://nobody@127.0.0.1:{port}/none", StoreConfig(pool_timeout=1.0))
    try:
        with pytest.raises(StoreUnavailable):
            await store.get_account("alice@example.test")
        with pytest.raises(StoreUnavailable):
            await store.add_domain("example.test")
        with pytest.raises(StoreUnavailable):
            await store.credentials_current(1, 0)
    finally:
        await store.close()


async def test_first_calls_from_eagerly_started_steps_share_the_opening(pg_cluster: PgCluster,
                                                                         tmp_path: Path) -> None:
    """IMAP and POP3 start each command's step by hand (net/session_protocol.py
    ``eager_steps``) and hand what it waits on to a task afterwards. Several
    sessions whose first commands reach a store still opening all wait for
    that one opening: each must get an answer, not "await wasn't used with
    future" (a future awaited by two hand-started coroutines before either
    task ran)."""
    from mailyard.net.session_protocol import _Resume

    dsn = pg_cluster.new_dsn()
    seed = PostgreSQLStore(dsn, StoreConfig())
    try:
        await seed.add_domain("example.test")
        await seed.add_account("alice@example.test", "h")
    finally:
        await seed.close()
    store = PostgreSQLStore(dsn, StoreConfig(), data_dir=tmp_path / "node")
    try:
        found: list[str] = []

        async def login() -> None:
            account = await store.get_account("alice@example.test")
            found.append(account.address if account is not None else "")

        async def run(resume: _Resume) -> None:
            await resume

        tasks = []
        for _ in range(4):  # as SessionProtocol.advance does for each session's LOGIN
            step = login()
            waiting = step.send(None)
            tasks.append(asyncio.get_running_loop().create_task(run(_Resume(step, waiting))))
        await asyncio.gather(*tasks)
        assert found == ["alice@example.test"] * 4
    finally:
        await store.close()


async def test_a_new_hold_is_written_off_the_event_loop_before_the_mailbox_is_read(two_stores: TwoStores) -> None:
    """A session's hold (RFC 2180 4.1.1) must be in the database before it
    reads the mailbox, so that an expunge through another node keeps what
    it sees. With the database slow to take the write, the event loop goes
    on meanwhile, and the read waits for the write."""
    import threading
    import time

    import psycopg

    from tests.waiting import LoopTicks

    a, b, dsn = two_stores
    locked, release = threading.Event(), threading.Event()

    def slow_database() -> None:
        with psycopg.connect(dsn) as admin:
            admin.execute("LOCK TABLE mailbox_holds IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(2)  # (without a loop left to set it, at most 2 s)
            time.sleep(0.3)  # the database stays slow a while after the hold was asked for

    alice, inbox, uid = await _alice_with_one_message(a)
    inbox = await a.get_mailbox(alice.id, "INBOX")
    assert inbox is not None
    holder = threading.Thread(target=slow_database)
    holder.start()
    try:
        await asyncio.to_thread(locked.wait, 10)
        async with LoopTicks() as ticks:
            a.hold_expunged(object(), inbox, 0)  # a session selects the INBOX
            release.set()
            summary = await a.mailbox_summary(inbox)
    finally:
        release.set()
        await asyncio.to_thread(holder.join, 10)
    assert ticks.count >= 10, f"the event loop stood still while the hold was written ({ticks.count} turns)"
    assert summary.uids == [uid]
    await b.expunge(inbox, [uid])  # through another node: kept for a's session
    assert await a.read_message(inbox, uid, expunged=True) == HELD


async def test_a_revocation_heard_while_credentials_are_read_is_not_trusted(two_stores: TwoStores) -> None:
    """A credentials check that asks the database while another node changes
    the password may read the row before that commit and get its answer
    after the revocation's note: it must read again, neither answering nor
    keeping what was true before."""
    a, b, _ = two_stores
    await b.add_domain("example.test")
    alice = await b.add_account("alice@example.test", "h")
    assert alice.epoch == 0
    read, answer = asyncio.Event(), asyncio.Event()
    real = a._q1

    async def late(sql: str, args: tuple = ()) -> tuple | None:
        row = await real(sql, args)
        if "FROM accounts" in sql and not answer.is_set():
            read.set()
            await answer.wait()  # the answer comes back late
        return row

    a._q1 = late  # type: ignore[method-assign]
    check = asyncio.ensure_future(a.credentials_current(alice.id, 0))
    await asyncio.wait_for(read.wait(), 10)  # epoch 0 read, not answered yet
    forgotten = a._forgotten
    await b.set_password("alice@example.test", "h2")  # another node; its note reaches a
    await until(lambda: a._forgotten != forgotten)
    answer.set()
    assert await check is False
    assert await a.credentials_current(alice.id, 0) is False
    assert a.credentials_known(alice.id, 1) is True


async def test_credentials_are_answered_while_revocations_keep_coming(pg_cluster: PgCluster,
                                                                      tmp_path: Path) -> None:
    """Revocations heard during every read of an account's epoch (other
    nodes changing passwords faster than this one reads) do not keep a
    credentials check reading: it is answered from its VALIDITY_REREADS-th
    read, whose answer is not kept."""
    from mailyard.store.postgresql import validity

    dsn = pg_cluster.new_dsn()
    a = PostgreSQLStore(dsn, StoreConfig(), data_dir=tmp_path / "a")
    try:
        await a.add_domain("example.test")
        alice = await a.add_account("alice@example.test", "h")
        a._forget()
        reads = 0
        real = a._q1

        async def revoked_meanwhile(sql: str, args: tuple = ()) -> tuple | None:
            nonlocal reads
            row = await real(sql, args)
            if "FROM accounts" in sql and reads < 100:  # (a bound, for a store that would read on)
                reads += 1
                a._forget()  # a note of a revocation came during the read
            return row

        a._q1 = revoked_meanwhile  # type: ignore[method-assign]
        assert await a.credentials_current(alice.id, 0) is True
        assert reads < 100, "the check read on while revocations came"
        assert reads == validity.VALIDITY_REREADS
        assert a.credentials_known(alice.id, 0) is None
    finally:
        await a.close()


async def test_a_check_after_a_revocation_does_not_share_a_read_begun_before_it(two_stores: TwoStores) -> None:
    """A read of alice's epoch rereads while revocations keep coming, and is
    answered from its VALIDITY_REREADS-th read whatever came during it.
    During that last read another node changes alice's password and this
    node hears of it; a check that asks then (an IDLE session whose
    revocation mark is past that change, or a command) must not be answered
    by the read that began before the change: it reads again, and is refused."""
    from mailyard.store.postgresql import validity

    a, b, _ = two_stores
    await b.add_domain("example.test")
    alice = await b.add_account("alice@example.test", "h")
    a._forget()
    reads = 0
    later: list[asyncio.Future[bool]] = []
    real = a._q1

    async def revoked_meanwhile(sql: str, args: tuple = ()) -> tuple | None:
        nonlocal reads
        row = await real(sql, args)
        if "FROM accounts" in sql and reads < validity.VALIDITY_REREADS:
            reads += 1
            if reads < validity.VALIDITY_REREADS:
                a._forget()  # a note of a revocation came during the read
            else:  # the last read of the first check: alice's password changes
                forgotten = a._forgotten
                await b.set_password("alice@example.test", "h2")
                await until(lambda: a._forgotten != forgotten)  # its note reaches a
                later.append(asyncio.ensure_future(a.credentials_current(alice.id, 0)))
                for _ in range(5):  # the later check asks and waits for its read
                    await asyncio.sleep(0)
        return row

    a._q1 = revoked_meanwhile  # type: ignore[method-assign]
    first = await a.credentials_current(alice.id, 0)
    assert reads == validity.VALIDITY_REREADS
    assert first is True  # (read before the change, as a check that ended just before it)
    assert len(later) == 1
    assert await later[0] is False, "a check after the revocation got the answer of a read begun before it"
    assert a.credentials_known(alice.id, 1) is True


async def test_holds_are_published_again_when_the_liveness_connection_comes_back(two_stores: TwoStores) -> None:
    """While the connection that marks node B alive is gone (the database
    restarted, or ended it), the other nodes take B's rows of mailbox_holds
    for a dead node's, and a purge of theirs deletes them. Once B opens the
    connection again, its holds are in the database again before its
    sessions read on: an expunge through node A keeps the message for B's
    session (RFC 2180 4.1.1)."""
    import psycopg

    a, b, dsn = two_stores
    alice, inbox, uid = await _alice_with_one_message(a)
    inbox = await b.get_mailbox(alice.id, "INBOX")
    assert inbox is not None
    b.hold_expunged(object(), inbox, inbox.highest_modseq)  # a session of B selects the INBOX
    assert (await b.mailbox_summary(inbox)).uids == [uid]  # after the hold is written

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        async def rows_of_b() -> int:
            cur = await admin.execute("SELECT count(*) FROM mailbox_holds WHERE node = %s"
                                      " AND seen_modseq IS NOT NULL", (b.node,))
            return (await cur.fetchone())[0]

        async def marker_connections() -> int:
            cur = await admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                      (f"mailyard-{b.node}",))
            return (await cur.fetchone())[0]

        assert await rows_of_b() == 1
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE application_name = %s", (f"mailyard-{b.node}",))
        while await marker_connections():
            await asyncio.sleep(0.01)
        await admin.execute("DELETE FROM mailbox_holds WHERE node = %s", (b.node,))  # as A's purge would
        # B uses the connection again (after a gap in listening, or its regular look)
        await asyncio.to_thread(b._sync_q1, "SELECT 1", ())
        assert (await b.mailbox_summary(inbox)).uids == [uid]  # a read waits for the holds
        assert await rows_of_b() == 1
    await a.expunge(inbox, [uid])  # through another node: kept for B's session
    assert await b.read_message(inbox, uid, expunged=True) == HELD


async def test_a_republish_that_fails_feeds_no_reconnect_loop(pg_cluster: PgCluster, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection that marks a node alive opens, but its statements fail
    (a full disk; a pooler in front of a database that is down): the holds'
    republish after the reopen must not open it again and again."""
    import psycopg

    from mailyard.store.postgresql import messages

    dsn = pg_cluster.new_dsn()
    b = PostgreSQLStore(dsn, StoreConfig(), data_dir=tmp_path / "b")
    try:
        await b.add_domain("example.test")
        alice = await b.add_account("alice@example.test", "h")
        inbox = await b.get_mailbox(alice.id, "INBOX")
        b.hold_expunged(object(), inbox, inbox.highest_modseq)
        await b.mailbox_summary(inbox)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            await admin.execute(
                "CREATE FUNCTION full4(a bigint, b text, c bigint, d bigint) RETURNS int LANGUAGE plpgsql"
                " AS $$ BEGIN RAISE EXCEPTION 'full' USING ERRCODE = 'disk_full'; END $$")
            monkeypatch.setattr(messages, "_PUBLISH_HOLD",
                                "SELECT full4(%s::bigint, %s::text, %s::bigint, %s::bigint)")
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                                (f"mailyard-{b.node}",))
        await asyncio.to_thread(b._sync_q1, "SELECT 1", ())  # opened again: the republish fails
        opens = b._sync_opens
        # the republish ran and failed: the holds are due again, nothing runs
        await wait_until_async(lambda: getattr(b, "_republish_due", False) and not b._background,
                               what="the failed republish to end")
        # a loop opens hundreds; one failed republish retries once (its second attempt)
        assert b._sync_opens - opens <= 2
        assert len(b._background) <= 2
        monkeypatch.undo()
        await asyncio.to_thread(b._sync_q1, "SELECT 1", ())  # works again: the holds are published
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            async def published() -> bool:
                cur = await admin.execute("SELECT count(*) FROM mailbox_holds WHERE mailbox_id = %s", (inbox.id,))
                return (await cur.fetchone())[0] == 1
            for _ in range(250):
                if await published():
                    break
                await asyncio.sleep(0.02)
            assert await published()
    finally:
        monkeypatch.undo()
        await b.close()


async def test_the_liveness_check_goes_on_after_a_reopen_that_failed(pg_cluster: PgCluster, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    from mailyard.store.postgresql import validity

    monkeypatch.setattr(validity, "MARKER_CHECK", 0.1)
    dsn = pg_cluster.new_dsn()
    b = PostgreSQLStore(dsn, StoreConfig(), data_dir=tmp_path / "b")
    try:
        await b.add_domain("example.test")
        await asyncio.to_thread(b._sync_q1, "SELECT 1", ())
        real = psycopg.connect
        failed: list[int] = []

        def connect(*args: object, **kwargs: object) -> psycopg.Connection:
            if len(failed) < 4:
                failed.append(1)
                raise psycopg.OperationalError("the database is down")
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(validity.psycopg, "connect", connect)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                                (f"mailyard-{b.node}",))

            async def markers() -> int:
                cur = await admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                          (f"mailyard-{b.node}",))
                return (await cur.fetchone())[0]

            for _ in range(500):
                if len(failed) >= 4 and await markers() == 1:
                    break
                await asyncio.sleep(0.02)
            assert len(failed) >= 4 and await markers() == 1  # the watcher opened it again by itself
    finally:
        monkeypatch.undo()
        await b.close()
