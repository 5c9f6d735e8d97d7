"""Shared fixtures: a real mailyard server on 127.0.0.1 with ephemeral ports.

The server runs its own event loop in a background thread, so tests drive it
with ordinary blocking clients (smtplib, poplib, imaplib, subprocesses of
swaks/fetchmail/...) exactly as users would, and read results back through the
store API with ``server.call(coro)``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailyard.config import Config
from mailyard.server import MailServer
from mailyard.store import open_store
from mailyard.store.api import NotFound
from mailyard.store.sqlite import SQLiteStore
from tests.integration.rspamd_server import rspamd_service  # noqa: F401  (the session's rspamd)
from tests.pgcluster import pg_cluster  # noqa: F401  (the session's PostgreSQL cluster)

T = TypeVar("T")


@pytest.fixture(autouse=True)
def _fresh_log_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The log's per-process budgets for refusals (logs.EventBudget) start
    empty in every test: servers of earlier tests in this process must not
    have spent them, or a test counting log lines sees fewer."""
    from mailyard import logs
    from mailyard.net import conncaps, smtp, tls

    monkeypatch.setattr(conncaps, "_REFUSALS", logs.EventBudget())
    monkeypatch.setattr(smtp, "_ABUSE_LINES", logs.EventBudget())
    monkeypatch.setattr(smtp, "_RELAY_LINES", logs.EventBudget())
    monkeypatch.setattr(tls, "_TLS_FAILURES", logs.EventBudget())

DOMAIN = "example.test"
USERS = {
    "alice@example.test": "alice-password-1",
    "bob@example.test": "bob-password-2",
}
HOST = "127.0.0.1"


class RunningServer:
    """A started MailServer in a thread of its own."""

    def __init__(
        self, data_dir: Path, config: Config, *, ephemeral_ports: bool = True, seed_defaults: bool = True
    ) -> None:
        self.data_dir = data_dir
        self.config = config
        # Fixed ports and another loopback address (multi-host tests) with
        # ephemeral_ports=False and config.server.bind = "127.0.0.N".
        self.host = HOST if ephemeral_ports else config.server.bind
        self.ephemeral_ports = ephemeral_ports
        self.seed_defaults = seed_defaults
        # The production event loop (``mailyard serve`` runs uvloop when it is installed).
        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="mailyard-test-server", daemon=True)
        self._thread.start()
        self.server: MailServer | None = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, seed: Callable[[SQLiteStore], Coroutine[Any, Any, None]] | None = None) -> None:
        async def go() -> MailServer:
            # the configured backend ([store] backend, SQLite unless a test says otherwise)
            store = open_store(self.data_dir, self.config.store)
            if self.seed_defaults:
                await seed_store(store)
            if seed is not None:
                await seed(store)
            server = MailServer(self.data_dir, self.config, store=store, ephemeral_ports=self.ephemeral_ports)
            await server.start()
            return server

        self.server = self.call(go())

    @property
    def store(self) -> SQLiteStore:
        assert self.server is not None
        return self.server.store  # type: ignore[return-value]

    def port(self, name: str) -> int:
        assert self.server is not None
        return self.server.port(name)

    def messages(self, address: str, mailbox: str = "INBOX") -> list[bytes]:
        """The exact bytes of every message in a user's mailbox, in UID order
        (a message expunged while they are read is left out: the server may
        be working on the mailbox meanwhile)."""

        async def read() -> list[bytes]:
            account = await self.store.get_account(address)
            assert account is not None, address
            box = await self.store.get_mailbox(account.id, mailbox)
            assert box is not None
            out = []
            for m in await self.store.list_messages(box):
                try:
                    out.append(await self.store.read_message(box, m.uid))
                except NotFound:
                    continue
            return out

        return self.call(read())

    def stop(self) -> None:
        if self.server is not None:
            self.call(self.server.stop())
            self.server = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def seed_store(store: SQLiteStore) -> None:
    """The demo domain with users alice and bob (passwords in USERS)."""
    from mailyard.auth.passwords import Credentials

    await store.add_domain(DOMAIN)
    await store.add_account(f"postmaster@{DOMAIN}", "!locked")
    for address, password in USERS.items():
        creds = Credentials.from_password(password, apop="apop-" + password)
        await store.add_account(
            address, creds.password_hash, apop_secret=creds.apop_secret, scram_sha256=creds.scram_sha256
        )


def make_test_config() -> Config:
    cfg = Config()
    cfg.server.hostname = "mx.example.test"
    cfg.server.shutdown_grace = 2.0
    # The SPF / DKIM / DMARC checks of the MX port ask DNS: off unless a test
    # points [delivery] nameservers at its own DNS server and turns them on.
    cfg.authentication.inbound_checks = False
    # The spam checks ask DNS too (rDNS, HELO, blocklists): off likewise.
    cfg.spam.checks = False
    return cfg


# --- the store backend of the integration tests ----------------------------------------
#
# A module (or test) marked ``pytest.mark.both_backends`` runs every test twice,
# with ids ``[sqlite]`` and ``[postgresql]``: the servers it starts keep their
# store in their data directory or in a fresh database of the session's
# PostgreSQL cluster (tests/pgcluster.py). Unmarked tests use SQLite.
# MAILYARD_TEST_BACKEND=sqlite|postgresql forces every test onto that one
# backend (marked tests then run once, with that id).
BACKENDS = ("sqlite", "postgresql")
FORCED_BACKEND = os.environ.get("MAILYARD_TEST_BACKEND") or None
TEST_BACKEND = FORCED_BACKEND or "sqlite"
if TEST_BACKEND not in BACKENDS:
    raise ValueError(f"MAILYARD_TEST_BACKEND={TEST_BACKEND!r}: expected one of {', '.join(BACKENDS)}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_backends: run on the SQLite and the PostgreSQL store (ids [sqlite], [postgresql])"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``store_backend`` of tests marked both_backends."""
    if "store_backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_backends"):
        backends = (FORCED_BACKEND,) if FORCED_BACKEND else BACKENDS
        metafunc.parametrize("store_backend", backends, indirect=True, ids=list(backends))


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> str:
    """The store backend of this test's servers: "sqlite" or "postgresql"."""
    return str(getattr(request, "param", TEST_BACKEND))


@pytest.fixture
def use_store_backend(store_backend: str, request: pytest.FixtureRequest) -> Iterator[Callable[[Config], None]]:
    """``use_store_backend(cfg)`` points a server's ``[store]`` at this test's
    backend: nothing to change for SQLite (the data directory), a new
    database of the session's cluster for PostgreSQL at every call. Without
    PostgreSQL's binaries the test is skipped naming the Debian package, or
    fails under CI=true (the ``pg_cluster`` fixture)."""
    cluster = request.getfixturevalue("pg_cluster") if store_backend == "postgresql" else None
    handed: list[str] = []

    def apply(cfg: Config) -> None:
        if cluster is not None:
            cfg.store.backend = "postgresql"
            cfg.store.dsn = cluster.new_dsn()
            handed.append(cfg.store.dsn)

    yield apply
    # torn down after the fixtures that use it (their servers are stopped):
    # the databases are emptied for the next tests
    if cluster is not None:
        for dsn in handed:
            cluster.recycle(dsn)


# --- end of the store backend block --------------------------------------------------


@pytest.fixture
def make_server(
    tmp_path: Path, use_store_backend: Callable[[Config], None]
) -> Iterator[Callable[..., RunningServer]]:
    """Factory: ``make_server(configure=fn, seed=coro_fn)`` starts a server;
    all are stopped at the end of the test."""
    started: list[RunningServer] = []

    def factory(
        configure: Callable[[Config], None] | None = None,
        seed: Callable[[SQLiteStore], Coroutine[Any, Any, None]] | None = None,
    ) -> RunningServer:
        cfg = make_test_config()
        use_store_backend(cfg)
        if configure is not None:
            configure(cfg)
        rs = RunningServer(tmp_path / f"data{len(started)}", cfg)
        started.append(rs)
        rs.start(seed)
        return rs

    yield factory
    for rs in started:
        rs.stop()


@pytest.fixture
def mailserver(make_server: Callable[..., RunningServer]) -> RunningServer:
    """A running server for example.test with users alice and bob."""
    return make_server()


@pytest.fixture
def segment_bodies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every body a SQLite store of this process writes goes to a segment
    file, however small (store/sqlite/bodies.py ``INLINE_MAX``): for tests
    of the segment files, their compaction and backup, with small messages."""
    from mailyard.store.sqlite import bodies

    monkeypatch.setattr(bodies, "INLINE_MAX", -1)


def require_program(name: str, package: str) -> str:
    """Path of a third-party program; skip if missing (fail when CI=true)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        message = f"{name} is not installed (Debian package: {package}; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the background fills of the big-mailbox modules collected
    (tests/integration/prefill.py); an xdist worker takes the controller's."""
    from tests.integration import prefill

    workerinput = getattr(session.config, "workerinput", None)
    if workerinput is not None:
        prefill.share(workerinput["mailyard_prefill"])
    elif not session.config.option.collectonly:
        prefill.start([item.nodeid for item in session.items])


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist controller: tell each worker the folder of the fills."""
    from tests.integration import prefill

    node.workerinput["mailyard_prefill"] = str(prefill.base())


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """pytest-xdist controller: start the fills of the modules collected
    (every worker collects the same tests; ``start`` starts each fill once)."""
    from tests.integration import prefill

    if not node.config.option.collectonly:
        prefill.start(ids)


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.integration import prefill

    prefill.stop_all()
