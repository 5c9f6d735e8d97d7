"""The private PostgreSQL cluster (bench/pgcluster.py) as a pytest fixture,
one per session. Missing binaries: the tests are skipped naming Debian's
``postgresql`` package, or fail under CI=true (.ci/run installs it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from bench.pgcluster import PG_PACKAGE, PgCluster, pg_bindir

__all__ = ["PG_PACKAGE", "PgCluster", "pg_bindir", "pg_cluster"]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bindir = pg_bindir()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL binaries (initdb, pg_ctl) not found: install Debian's {PG_PACKAGE}")
        pytest.skip(f"PostgreSQL binaries (initdb, pg_ctl) not found: install Debian's {PG_PACKAGE} package")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("psycopg is not installed")
        pytest.skip("psycopg is not installed (pip install 'psycopg[binary]' psycopg-pool)")
    cluster = PgCluster(bindir)
    try:
        yield cluster
    finally:
        cluster.stop()
