"""A private PostgreSQL cluster for the tests and the benchmarks: initdb +
pg_ctl in a temporary directory, listening on 127.0.0.1 on an ephemeral port
(and a unix socket in the same directory), stopped by ``stop()``.

initdb refuses to run as root (CI runs as root), so as root the cluster
belongs to ``nobody`` and every server command runs as that user
(``setpriv``); as any other user it runs directly. Each test gets a database
of its own, created from a template holding the schema (CREATE DATABASE ...
TEMPLATE is a file copy: much faster than migrating every time).

The pytest fixture lives in tests/pgcluster.py; this module needs no pytest.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PG_PACKAGE = "postgresql"


def pg_bindir() -> Path | None:
    """The directory of initdb/pg_ctl: on PATH, else Debian's versioned place."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """One running cluster; ``new_dsn()`` gives a fresh database in it."""

    def __init__(self, bindir: Path, durable: bool = False) -> None:
        """``durable``: fsync as in production (benchmarks); tests need no crash safety."""
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="mailyard-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._names = itertools.count(1)
        self._free: list[str] = []  # databases given back by recycle(), emptied
        self._tables: list[str] = []  # the schema's tables
        self._seeded: list[tuple[str, list[str], list[tuple[object, ...]]]] = []  # rows the migrations put in
        self._prefix: list[str] = []
        self.user = pwd.getpwuid(os.getuid()).pw_name
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
            os.chmod(self.root, 0o700)
            self._prefix = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
            self.user = "nobody"
        self._run([str(bindir / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust",
                   "-E", "UTF8", "--locale=C", "--no-sync"])
        for attempt in range(3):
            opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root}"
                    " -c max_connections=200 -c shared_buffers=32MB")
            if not durable:
                opts += " -c fsync=off -c full_page_writes=off"
            self._opts = opts
            try:
                self.resume()
                break
            except RuntimeError:
                # the free port was taken meanwhile (other test sessions start
                # clusters too): another one
                log = self.root / "log"
                if attempt == 2 or not log.exists() or "could not" not in log.read_text(errors="replace"):
                    raise
                self.port = _free_port()
        self.admin_dsn = f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"
        self.template = None  # name of a template database with the schema, once made

    def pause(self) -> None:
        """Stop the server (fast shutdown: sessions are ended), keeping its
        data: the database becomes unreachable, as when its host goes down."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def resume(self) -> None:
        """Start the server (again), on the same port."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", self._opts, "-l",
                   str(self.root / "log"), "-w", "-t", "60", "start"])

    def _run(self, argv: list[str]) -> None:
        env = dict(os.environ, LC_ALL="C")
        proc = subprocess.run(self._prefix + argv, capture_output=True, text=True, env=env, cwd=self.root)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {proc.stdout}\n{proc.stderr}")

    def pid(self) -> int:
        """The postmaster's process id (its tree: every backend), for CPU figures."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def dsn(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql)

    def new_dsn(self) -> str:
        """A new, empty-but-migrated database of its own (one given back
        by ``recycle`` when there is one)."""
        if self.template is None:
            from mailyard.store.postgresql.schema import migrate_sync

            self._admin("CREATE DATABASE mailyard_template")
            migrate_sync(self.dsn("mailyard_template"))
            self._remember_template()
            self.template = "mailyard_template"
        if self._free:
            return self.dsn(self._free.pop())
        name = f"t{next(self._names)}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE {self.template}")
        return self.dsn(name)

    def _remember_template(self) -> None:
        """The template's tables, and the rows its migrations inserted
        (schema version, keys), for ``recycle`` to put back."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn("mailyard_template")) as conn:
            self._tables = [r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]
            for table in self._tables:
                cur = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
                rows = cur.fetchall()
                if rows:
                    assert cur.description is not None
                    self._seeded.append((table, [d.name for d in cur.description], rows))

    def recycle(self, dsn: str) -> None:
        """Give back a database of ``new_dsn`` that no server uses any more:
        emptied to the template's state (a few tens of ms), a later
        ``new_dsn`` hands it out again instead of copying the template
        (CREATE DATABASE copies ~8 MB: a second or more on a busy machine).
        A database that cannot be emptied is left alone."""
        import psycopg
        from psycopg import sql

        name = dsn.rsplit("/", 1)[1]
        if name == self.template or not self._tables:
            return
        try:
            # sessions a test left behind (a killed server's are gone already)
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                             " WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            with psycopg.connect(dsn) as conn:
                conn.execute("SET lock_timeout = '5s'")
                # DELETE, not TRUNCATE: a test leaves a few rows, and TRUNCATE
                # makes new files for every table; the foreign keys' triggers
                # are off for this session (as in a restore)
                conn.execute("SET session_replication_role = replica")
                for table in self._tables:
                    conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
                conn.execute("SELECT setval(format('%I.%I', schemaname, sequencename), 1, false)"
                             " FROM pg_sequences WHERE schemaname = 'public'")
                conn.execute("SET session_replication_role = DEFAULT")
                for table, columns, rows in self._seeded:
                    with conn.cursor() as cur:
                        cur.executemany(sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                            sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                            sql.SQL(", ").join(sql.Placeholder() * len(columns))), rows)
        except psycopg.Error:
            return
        self._free.append(name)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)
