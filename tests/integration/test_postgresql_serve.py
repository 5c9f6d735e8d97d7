"""``mailyard serve`` on the PostgreSQL store, end to end: mail accepted
over SMTP is in PostgreSQL before the 250 and is read back over IMAP, and
a second server ("node") on the same database hears the delivery in IDLE."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import time
from collections.abc import Callable
from pathlib import Path

from mailyard.config import Config
from tests.conftest import HOST, USERS, RunningServer
from tests.pgcluster import PgCluster

MESSAGE = (b"From: someone@remote.test\r\nTo: alice@example.test\r\nSubject: over postgresql\r\n"
           b"Message-ID: <pg-1@remote.test>\r\n\r\nstored in the database\r\n")


def _on(dsn: str) -> Callable[[Config], None]:
    def configure(cfg: Config) -> None:
        cfg.store.backend = "postgresql"
        cfg.store.dsn = dsn

    return configure


def test_smtp_delivery_then_imap_fetch_on_postgresql(make_server: Callable[..., RunningServer],
                                                   pg_cluster: PgCluster, tmp_path: Path) -> None:
    dsn = pg_cluster.new_dsn()
    server = make_server(configure=_on(dsn))
    # a second node on the same database: seeds nothing (the first did)
    other = RunningServer(tmp_path / "node-b", server.config)
    other.seed_defaults = False
    other.start()
    try:
        idle = imaplib.IMAP4(HOST, other.port("imap"))
        idle.login("alice@example.test", USERS["alice@example.test"])
        idle.select("INBOX")
        tag = idle._new_tag().decode()
        idle.send(f"{tag} IDLE\r\n".encode())
        assert idle.readline().startswith(b"+")

        with smtplib.SMTP(HOST, server.port("smtp"), timeout=30) as smtp:
            smtp.sendmail("someone@remote.test", ["alice@example.test"], MESSAGE)
        # in PostgreSQL when the 250 came: read back through a fresh connection
        import psycopg

        with psycopg.connect(dsn) as conn:
            (count,) = conn.execute("SELECT count(*) FROM messages").fetchone()
        assert count == 1

        # node B's IDLE session hears the delivery made through node A
        idle.sock.settimeout(10)
        seen = b""
        deadline = time.monotonic() + 10
        while b"EXISTS" not in seen and time.monotonic() < deadline:
            try:
                seen += idle.readline()
            except TimeoutError:
                break
        assert b"* 1 EXISTS" in seen
        idle.send(b"DONE\r\n")
        line = idle.readline()
        while line.startswith(b"* "):  # * 1 RECENT and the like
            line = idle.readline()
        assert line.startswith(tag.encode() + b" OK")
        idle.logout()

        imap = imaplib.IMAP4(HOST, server.port("imap"))
        imap.login("alice@example.test", USERS["alice@example.test"])
        imap.select("INBOX")
        typ, data = imap.fetch("1", "(BODY.PEEK[] ENVELOPE)")
        assert typ == "OK"
        body = data[0][1]
        assert body.endswith(MESSAGE)
        assert body.startswith(b"Return-Path: <someone@remote.test>\r\n")
        rest = b"".join(part if isinstance(part, bytes) else part[0] for part in data)
        assert b'"over postgresql"' in rest  # ENVELOPE, from the derived data in the database
        typ, data = imap.uid("SEARCH", "BODY", '"the datab"')
        assert data == [b"1"]
        imap.logout()
    finally:
        other.stop()


def test_pop3_maildrop_lock_holds_across_nodes(make_server: Callable[..., RunningServer],
                                              pg_cluster: PgCluster, tmp_path: Path) -> None:
    """RFC 1939 8 / RFC 2449 8.1.2: a maildrop open on node A is IN-USE on node B."""
    server = make_server(configure=_on(pg_cluster.new_dsn()))
    other = RunningServer(tmp_path / "node-b", server.config)
    other.seed_defaults = False
    other.start()
    try:
        a = poplib.POP3(HOST, server.port("pop3"), timeout=30)
        a.user("alice@example.test")
        assert a.pass_(USERS["alice@example.test"]).startswith(b"+OK")
        b = poplib.POP3(HOST, other.port("pop3"), timeout=30)
        b.user("alice@example.test")
        try:
            b.pass_(USERS["alice@example.test"])
            raise AssertionError("node B opened a maildrop locked on node A")
        except poplib.error_proto as exc:
            assert str(exc) == "b'-ERR [IN-USE] maildrop already locked by another POP3 session'"
        b.close()
        a.quit()  # A's lock goes; B may open the maildrop now
        deadline = time.monotonic() + 10
        while True:
            b = poplib.POP3(HOST, other.port("pop3"), timeout=30)
            b.user("alice@example.test")
            try:
                assert b.pass_(USERS["alice@example.test"]).startswith(b"+OK")
                break
            except poplib.error_proto:
                b.close()
                assert time.monotonic() < deadline, "the lock was not released"
                time.sleep(0.05)
        b.quit()
    finally:
        other.stop()
