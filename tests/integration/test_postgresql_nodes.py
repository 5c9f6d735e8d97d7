"""Two ``mailyard serve`` nodes on one PostgreSQL database, as the README's
"Running several nodes" sets them up: node A on 127.0.0.2 and node B on
127.0.0.3 with the same ports (what DNS round robin or HAProxy in front
expects), the store in the database, and the files every node needs alike
(TLS certificate, DKIM keys, the SRS and SCRAM secrets, Sieve scripts)
shared through symbolic links to one directory.

Mail delivered through node A reaches an IDLE session on node B (LISTEN/
NOTIFY; the latency is printed), and a POP3 maildrop open on node A is
locked on node B (RFC 2449 8.1.2 IN-USE) until A's session ends."""

from __future__ import annotations

import asyncio
import imaplib
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from mailyard.config import Config
from mailyard.store.api import NewQueueEntry, NewRecipient
from mailyard.store.postgresql import PostgreSQLStore
from tests.conftest import HOST, USERS, RunningServer, make_test_config, seed_store
from tests.integration.multihost import MultiHost, shared_port
from tests.integration.serve_process import ServeProcess
from tests.pgcluster import PgCluster
from tests.waiting import wait_until

ALICE = "alice@example.test"
NODES = ("127.0.0.2", "127.0.0.3")
# what every node reads from its data directory and must find alike
SHARED = ("tls", "dkim", "sieve", "srs.secret", "scram-salt.key")
MESSAGE = (b"From: someone@remote.test\r\nTo: alice@example.test\r\nSubject: through node A\r\n"
           b"Message-ID: <nodes-1@remote.test>\r\n\r\nseen on node B\r\n")


def _node(data: Path, bind: str, ports: dict[str, int], dsn: str, shared: Path) -> ServeProcess:
    def configure(cfg: Config) -> None:
        cfg.server.bind = bind
        cfg.server.hostname = "mx.example.test"
        for name in ("smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "http", "https",
                     "managesieve"):
            setattr(cfg.ports, name, ports.get(name, 0))
        cfg.store.backend = "postgresql"
        cfg.store.dsn = dsn
        cfg.spam.checks = False

    def prepare(data: Path) -> None:
        # the node's own copies go; the shared ones take their place
        for name in SHARED:
            path = data / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            path.symlink_to(shared / name)

    return ServeProcess(data, configure, prepare)


def _shared_dir(tmp_path: Path) -> Path:
    """The directory of the files all nodes share: made once (here from a
    fresh data directory's files, as `mailyard init` makes them), then
    linked from every node."""
    shared = tmp_path / "shared"
    seed_dir = tmp_path / "seed"
    subprocess.run([sys.executable, "-m", "mailyard", "--data", str(seed_dir), "init", "--domain", "example.test"],
                   check=True, capture_output=True)
    shared.mkdir()
    for name in ("tls", "dkim"):
        shutil.copytree(seed_dir / name, shared / name)
    shutil.copy(seed_dir / "srs.secret", shared / "srs.secret")
    (shared / "sieve").mkdir()
    return shared


def _starttls_cert(host: str, port: int) -> bytes:
    """The certificate a node presents after STARTTLS (DER)."""
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        smtp.starttls(context=context)
        der = smtp.sock.getpeercert(binary_form=True)
        assert der is not None
        return der


def test_two_nodes_share_one_database(pg_cluster: PgCluster, tmp_path: Path) -> None:
    dsn = pg_cluster.new_dsn()

    async def seed() -> None:
        store = PostgreSQLStore(dsn)
        try:
            await seed_store(store)
        finally:
            await store.close()

    asyncio.run(seed())
    shared = _shared_dir(tmp_path)
    ports = {name: shared_port(list(NODES)) for name in ("smtp", "imap", "pop3")}
    a = _node(tmp_path / "node-a", NODES[0], ports, dsn, shared)
    b = None
    try:
        b = _node(tmp_path / "node-b", NODES[1], ports, dsn, shared)
        # one certificate for both (the names in DNS lead to either node)
        assert _starttls_cert(NODES[0], ports["smtp"]) == _starttls_cert(NODES[1], ports["smtp"])

        # IDLE on node B hears a delivery made through node A
        idle = imaplib.IMAP4(NODES[1], ports["imap"])
        idle.login(ALICE, USERS[ALICE])
        idle.select("INBOX")
        tag = idle._new_tag().decode()
        idle.send(f"{tag} IDLE\r\n".encode())
        assert idle.readline().startswith(b"+")
        with smtplib.SMTP(NODES[0], ports["smtp"], timeout=30) as smtp:
            smtp.ehlo("client.test")
            smtp.mail("someone@remote.test")
            smtp.rcpt(ALICE)
            sent = time.monotonic()  # the message and its final dot go now
            code, _ = smtp.data(MESSAGE)
            accepted = time.monotonic()
            assert code == 250
            idle.sock.settimeout(10)
            line = idle.readline()
            seen = time.monotonic()
        print(f"node A: message sent to 250 in {(accepted - sent) * 1000:.1f} ms; node B: EXISTS in IDLE "
              f"{(seen - sent) * 1000:.1f} ms after the message was sent")
        assert line == b"* 1 EXISTS\r\n"
        idle.send(b"DONE\r\n")
        rest = idle.readline()
        while rest.startswith(b"* "):
            rest = idle.readline()
        assert rest.startswith(tag.encode() + b" OK")
        _, data = idle.fetch("1", "(BODY.PEEK[TEXT])")
        assert data[0][1] == b"seen on node B\r\n"
        idle.logout()

        # the POP3 maildrop lock holds across the nodes
        pop_a = socket.create_connection((NODES[0], ports["pop3"]), timeout=30)
        fa = pop_a.makefile("rb")
        assert fa.readline().startswith(b"+OK")
        pop_a.sendall(f"USER {ALICE}\r\nPASS {USERS[ALICE]}\r\n".encode())
        assert fa.readline().startswith(b"+OK")
        assert fa.readline().startswith(b"+OK")

        def pop_b_login() -> bytes:
            with socket.create_connection((NODES[1], ports["pop3"]), timeout=30) as pop_b:
                fb = pop_b.makefile("rb")
                assert fb.readline().startswith(b"+OK")
                pop_b.sendall(f"USER {ALICE}\r\nPASS {USERS[ALICE]}\r\n".encode())
                assert fb.readline().startswith(b"+OK")
                reply = fb.readline()
                pop_b.sendall(b"QUIT\r\n")
                fb.readline()
                return reply

        assert pop_b_login() == b"-ERR [IN-USE] maildrop already locked by another POP3 session\r\n"
        pop_a.sendall(b"QUIT\r\n")
        assert fa.readline().startswith(b"+OK")
        pop_a.close()
        deadline = time.monotonic() + 10
        reply = pop_b_login()
        while not reply.startswith(b"+OK") and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the release, bounded: not ordering by sleep
            reply = pop_b_login()
        assert reply.startswith(b"+OK alice@example.test's maildrop has 1 message"), reply
        assert not a.tracebacks() and not b.tracebacks(), a.tracebacks() + b.tracebacks()
    finally:
        if b is not None:
            b.stop()
        a.stop()


def test_three_nodes_drain_one_queue_sending_each_message_once(pg_cluster: PgCluster, tmp_path: Path) -> None:
    """A queue shared by three nodes (claims with FOR UPDATE SKIP LOCKED and a
    lease): 1,000 messages queued while the nodes run, so every node's runner
    wakes for them at once; the receiving server sees each exactly once."""
    dsn = pg_cluster.new_dsn()
    hosts = MultiHost(tmp_path)
    sink = hosts.add_scripted("remote.test", "127.0.0.6")
    nodes: list[RunningServer] = []
    try:
        for n in range(3):
            cfg = make_test_config()
            hosts.delivery_config(cfg)
            cfg.store.backend = "postgresql"
            cfg.store.dsn = dsn
            node = RunningServer(tmp_path / f"node-{n}", cfg, seed_defaults=n == 0)
            node.start()
            nodes.append(node)
        count = 1000

        async def fill() -> None:
            store = PostgreSQLStore(dsn)
            try:
                for i in range(count):
                    body = (f"From: alice@example.test\r\nTo: far@remote.test\r\nSubject: {i}\r\n"
                            f"Message-ID: <q-{i}@example.test>\r\n\r\nmessage {i}\r\n").encode()
                    await store.queue_submit(body, NewQueueEntry(ALICE, [NewRecipient("far@remote.test")]))
            finally:
                await store.close()

        started = time.monotonic()
        asyncio.run(fill())

        def drained() -> bool:
            return len(sink.transactions) >= count and not nodes[0].call(nodes[0].store.queue_size())

        wait_until(drained, timeout=300, what=lambda: f"{len(sink.transactions)} of {count} messages sent")
        print(f"{count} queued messages sent by 3 nodes in {time.monotonic() - started:.1f} s")
        ids = Counter(re.search(rb"Message-ID: <(q-\d+)@", tx["data"]).group(1) for tx in sink.transactions)
        assert len(ids) == count and set(ids.values()) == {1}, ids.most_common(3)
    finally:
        for node in nodes:
            node.stop()
        hosts.stop()


def test_a_message_expunged_on_one_node_stays_readable_for_a_session_of_another(
        pg_cluster: PgCluster, tmp_path: Path) -> None:
    """RFC 2180 4.1.1: a session on node B that has not been told of an
    expunge made through node A (FETCH may not announce one: RFC 9051 7.5.1)
    still reads the message; once B announced it, the held copy goes."""
    dsn = pg_cluster.new_dsn()
    nodes: list[RunningServer] = []
    try:
        for n in range(2):
            cfg = make_test_config()
            cfg.store.backend = "postgresql"
            cfg.store.dsn = dsn
            node = RunningServer(tmp_path / f"node-{n}", cfg, seed_defaults=n == 0)
            node.start()
            nodes.append(node)
        a, b = nodes
        with smtplib.SMTP(HOST, a.port("smtp"), timeout=30) as smtp:
            smtp.sendmail("someone@remote.test", [ALICE], MESSAGE)
        on_b = imaplib.IMAP4(HOST, b.port("imap"))
        on_b.login(ALICE, USERS[ALICE])
        assert on_b.select("INBOX") == ("OK", [b"1"])
        on_a = imaplib.IMAP4(HOST, a.port("imap"))
        on_a.login(ALICE, USERS[ALICE])
        on_a.select("INBOX")
        on_a.store("1", "+FLAGS", r"(\Deleted)")
        assert on_a.expunge() == ("OK", [b"1"])
        on_a.logout()

        def gone_on_a() -> bool:
            return not a.call(a.store.list_messages(a.call(a.store.get_mailbox(
                a.call(a.store.get_account(ALICE)).id, "INBOX"))))

        wait_until(gone_on_a, what="the expunge committed")
        typ, data = on_b.fetch("1", "(BODY.PEEK[TEXT])")  # no EXPUNGE may come with a FETCH
        assert typ == "OK" and data[0][1] == b"seen on node B\r\n", data
        typ, data = on_b.noop()  # now B is told
        assert on_b.response("EXPUNGE")[1] == [b"1"]

        def purged() -> bool:
            import psycopg

            with psycopg.connect(dsn) as conn:
                return conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0

        wait_until(purged, what="the held copy purged once node B announced the expunge")
        on_b.logout()
    finally:
        for node in nodes:
            node.stop()


def test_a_node_killed_under_load_loses_no_acknowledged_message(pg_cluster: PgCluster, tmp_path: Path) -> None:
    """SIGKILL of node A while clients deliver through it: every message A
    acknowledged with 250 is in the database exactly once, readable through
    node B, which went on serving without a restart; a message whose 250 never
    came is there at most once; new mail gets UIDs above all of them."""
    import random
    import signal
    import threading

    dsn = pg_cluster.new_dsn()

    async def seed() -> None:
        store = PostgreSQLStore(dsn)
        try:
            await seed_store(store)
        finally:
            await store.close()

    asyncio.run(seed())
    shared = _shared_dir(tmp_path)
    ports = {name: shared_port(list(NODES)) for name in ("smtp", "imap", "pop3")}
    a = _node(tmp_path / "node-a", NODES[0], ports, dsn, shared)
    b = _node(tmp_path / "node-b", NODES[1], ports, dsn, shared)
    attempted: set[str] = set()
    acknowledged: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker: int) -> None:
        n = 0
        while not stop.is_set():
            try:
                with smtplib.SMTP(NODES[0], ports["smtp"], timeout=30) as smtp:
                    while not stop.is_set():
                        cid = f"w{worker}-{n}"
                        n += 1
                        body = (f"From: load@remote.test\r\nTo: {ALICE}\r\nSubject: {cid}\r\n"
                                f"Message-ID: <{cid}@remote.test>\r\n\r\n" + ("x" * 78 + "\r\n") * 25).encode()
                        with lock:
                            attempted.add(cid)
                        smtp.sendmail("load@remote.test", [ALICE], body)
                        with lock:
                            acknowledged.add(cid)
            except (OSError, smtplib.SMTPException):
                if a.alive():
                    continue
                return  # node A is gone

    threads = [threading.Thread(target=load, args=(w,), daemon=True) for w in range(4)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: len(acknowledged) >= 40, timeout=60, what="40 messages acknowledged by node A")
        time.sleep(random.uniform(0, 0.05))  # a random moment under load (not ordering: any moment is valid)
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        stop.set()
        for t in threads:
            t.join(30)
        with lock:
            acked, tried = set(acknowledged), set(attempted)
        # node B, not restarted, shows what A committed
        imap = imaplib.IMAP4(NODES[1], ports["imap"])
        imap.login(ALICE, USERS[ALICE])
        imap.select("INBOX")
        _, data = imap.uid("FETCH", "1:*", "(UID RFC822.SIZE BODY.PEEK[])")
        found: Counter[str] = Counter()
        top = 0
        for part in data:
            if not isinstance(part, tuple):
                continue
            head, body = part
            size = int(re.search(rb"RFC822.SIZE (\d+)", head).group(1))
            top = max(top, int(re.search(rb"UID (\d+)", head).group(1)))
            assert size == len(body), head  # nothing half-written
            found[re.search(rb"Subject: (\S+)", body).group(1).decode()] += 1
        print(f"node A killed after {len(acked)} acknowledged of {len(tried)} attempted messages; "
              f"node B shows {sum(found.values())}")
        assert acked <= set(found), sorted(acked - set(found))[:5]  # no acknowledged message lost
        assert set(found) <= tried and max(found.values()) == 1  # nothing invented, nothing twice
        typ, reply = imap.append("INBOX", None, None, b"Subject: after\r\n\r\nafter the kill\r\n")
        assert typ == "OK"
        uid = int(re.search(rb"APPENDUID \d+ (\d+)", reply[0]).group(1))
        assert uid > top
        imap.logout()
    finally:
        stop.set()
        b.stop()
        a.stop()
