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
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root}"
                " -c max_connections=200 -c shared_buffers=32MB")
        if not durable:
            opts += " -c fsync=off -c full_page_writes=off"
        self._opts = opts
        self.resume()
        self.admin_dsn = f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"
        self.template = None  # name of a template database with the schema, once made

    def pid(self) -> int:
        """The postmaster's process id (its tree: every backend), for CPU figures."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

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

    def dsn(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql)

    def new_dsn(self) -> str:
        """A new, empty-but-migrated database of its own."""
        if self.template is None:
            from mailyard.store.postgresql.schema import migrate_sync

            self._admin("CREATE DATABASE mailyard_template")
            migrate_sync(self.dsn("mailyard_template"))
            self.template = "mailyard_template"
        name = f"t{next(self._names)}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE {self.template}")
        return self.dsn(name)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)
